"""Cluster-wide keys, as `serf keys` has them: list, install, use, remove
on every live member at once, over internal queries (`daemon.queries`).

The origin sends the query `$overlay.keys.<op>` with the key (base64) as
payload; every member (the origin included) applies it to its keyring
(`daemon.security.Keyring`), writes the ring back to its key file when it
has one, and answers `{"ok": true, "keys": [...]}` or `{"ok": false,
"error": ...}` (JSON). The origin waits until every live member has
answered, or the timeout. Queries and their answers travel in sealed
frames: only key holders see the key, and each answer is its sender's own.

Rotation, as in Serf: `install NEW` everywhere, `use NEW` everywhere,
`remove OLD` everywhere. Removing the primary key is refused.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import trio

from daemon.queries import QueryRequest
from daemon.security import KeyFileError, Keyring, decode_key
from daemon.snapshot import write_atomically

# The agent (`daemon.agent.Agent`) is typed loosely here: it imports this
# module. What is used of it: settings, queries, members(), open_query().
Agent = Any

log = logging.getLogger("overlay.keys")

OPS = ("list", "install", "use", "remove")
PREFIX = "$overlay.keys."
DEFAULT_TIMEOUT = 5.0
NO_KEY = "no cluster key is configured: start the agents with --key-file to use cluster keys"


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


@dataclass(slots=True)
class KeysResult:
    op: str
    members: int  # live members when the query was sent
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        errors = {n: a["error"] for n, a in self.answers.items() if not a.get("ok")}
        out: dict[str, Any] = {
            "op": self.op,
            "members": self.members,
            "responses": len(self.answers),
            "answers": {n: a.get("error", "ok") for n, a in sorted(self.answers.items())},
            "errors": errors,
            "ok": not errors and len(self.answers) >= self.members,
        }
        if self.op == "list":
            counts: dict[str, int] = {}
            primary: dict[str, int] = {}
            for a in self.answers.values():
                keys = a.get("keys") or []
                for k in keys:
                    counts[k] = counts.get(k, 0) + 1
                if keys:
                    primary[keys[0]] = primary.get(keys[0], 0) + 1
            out["keys"] = [
                {"key": k, "members": n, "primary": primary.get(k, 0)}
                for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            ]
        return out


class KeyService:
    """One agent's keyring, changed by the cluster's key queries."""

    def __init__(self, agent: Agent, ring: Keyring) -> None:
        self.agent = agent
        self.ring = ring

    def install_handlers(self) -> None:
        for op in OPS:
            self.agent.queries.on_internal(PREFIX + op, self._handler(op))

    def _handler(self, op: str) -> Any:
        async def handle(req: QueryRequest) -> bytes:
            return json.dumps(self.apply(op, req.payload)).encode()

        return handle

    def apply(self, op: str, payload: bytes) -> dict[str, Any]:
        """Apply one key operation here; the answer sent back."""
        try:
            if op != "list":
                key = decode_key(payload.decode("ascii", "replace"))
                changed = {
                    "install": self.ring.install,
                    "use": self.ring.use,
                    "remove": self.ring.remove,
                }[op](key)
                if changed:
                    self._save()
                    log.info("keyring changed: %s", op)
        except (KeyFileError, OSError, KeyError) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "keys": [_b64(k) for k in self.ring.key_list()]}

    def _save(self) -> None:
        """Write the ring back to the key file, atomically, owner-only."""
        path = self.agent.settings.key_file
        if not path:
            return
        text = "".join(_b64(k) + "\n" for k in self.ring.key_list())
        header = "# the primary key first; written by overlay keys\n"
        write_atomically(path, (header + text).encode("ascii"), prefix=".keyring-")


async def cluster_keys(
    agent: Agent, op: str, key: str | None = None, timeout: float | None = None
) -> KeysResult:
    """Run a key operation on every live member; `ValueError` (with a clear
    message) when it cannot be sent."""
    if op not in OPS:
        raise ValueError(f"unknown keys operation {op!r}: one of {', '.join(OPS)}")
    if not agent.settings.keys:
        raise ValueError(NO_KEY)
    if op == "list":
        payload = b""
    else:
        if not key:
            raise ValueError(f"keys {op} needs a KEY")
        decode_key(key)  # KeyFileError (a ValueError) for a bad one
        payload = key.strip().encode("ascii")
    alive = {m.name for m in agent.members() if m.status == "alive"}
    result = KeysResult(op, len(alive))
    handle = await agent.open_query(
        PREFIX + op,
        payload,
        timeout=timeout or DEFAULT_TIMEOUT,
        ack=False,
        internal=True,
    )
    async for answer in handle:
        try:
            body = json.loads(answer.payload)
            if not isinstance(body, dict):
                raise ValueError("not a map")
        except ValueError:
            body = {"ok": False, "error": "unreadable answer"}
        result.answers[answer.responder] = body
        if alive <= set(result.answers):
            break
    await trio.lowlevel.checkpoint()
    return result
