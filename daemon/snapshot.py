"""The snapshot: the members an agent has seen, kept in a file so that a
restarted agent rejoins through them without an operator (Serf's
`-snapshot`).

Rules of this module: reading a snapshot never stops an agent (a missing,
unreadable or corrupt file is one WARNING line, and the agent starts from
its seeds alone); writing one never blocks the driver (the file is written
from a worker thread) and never leaves a half-written file behind (a
temporary file in the same directory, flushed, then renamed over the old
one). Everything is bounded: the members kept, the file read.

Theory of operation
-------------------
The agent marks the snapshot dirty on every member change
(`Snapshot.changed`); a writer task writes the member list as the node
holds it then, at most once every `WRITE_INTERVAL` seconds, and once more
when the agent stops. The file is JSON (one object, compact):
the agent's `name` and `addr`, its SWIM `incarnation`, and `members`, a
list of `{name, addr, status, incarnation}`, live members first, at most
`MAX_MEMBERS`.

On start (`load`): the members become seeds after the configured ones
(`rejoin_seeds`: live ones first, then failed ones, at most `MAX_REJOIN`,
shuffled within each group so that restarted agents do not all knock on
the same door); and when the file is this agent's own (same name and
address), its incarnation starts one past the saved one: its alive state
then wins over its old self's at once, without a refutation round. Unlike
Serf, a graceful leave does not stop the next start from rejoining: an
agent started again is meant to be in the cluster.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from daemon.logs import Throttle, event
from daemon.subscriptions import Member
from overlay.ids import parse_addr, wire_id_ok

log = logging.getLogger("overlay.snapshot")

FORMAT = 1
# Members kept in the file (guess: more than a rejoin needs by far; a
# 4,096-member file is about 400 KB).
MAX_MEMBERS = 4096
# A file larger than this is refused as corrupt, unread (4,096 members
# take a tenth of it).
MAX_FILE_BYTES = 4 * 1024 * 1024
# Seeds taken from the snapshot on start (guess: any live one is enough;
# each dead one costs a dial attempt).
MAX_REJOIN = 16
# At most one write per this many seconds (guess: churn in a large
# cluster changes members every second; a restart loses at most this much).
WRITE_INTERVAL = 1.0


# What the agent hands the writer: its name, address, incarnation, members.
State = tuple[str, str, int, Sequence[Member]]


@dataclass(frozen=True, slots=True)
class Saved:
    """A snapshot read back."""

    name: str
    addr: str
    incarnation: int
    members: tuple[Member, ...]


def _member(obj: object) -> Member | None:
    """One valid member record of the file, or None."""
    if not isinstance(obj, dict):
        return None
    name, addr, status, inc = (obj.get(k) for k in ("name", "addr", "status", "incarnation"))
    if not isinstance(name, str) or not isinstance(addr, str):
        return None
    if status not in ("alive", "suspect", "failed") or not isinstance(inc, int):
        return None
    try:
        host, port = parse_addr(addr)
    except ValueError:
        return None
    if not wire_id_ok(name, host, port):
        return None
    return Member(name, addr, status, inc, {})


def parse(data: bytes) -> Saved:
    """A snapshot from the file's bytes; ValueError if it is not one.
    Member records that are not valid are skipped."""
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"not an overlay snapshot (format {FORMAT})")
    name, addr, inc, members = (obj.get(k) for k in ("name", "addr", "incarnation", "members"))
    if not isinstance(name, str) or not isinstance(addr, str):
        raise ValueError("no name and addr")
    if not isinstance(inc, int) or isinstance(inc, bool) or inc < 0:
        raise ValueError("no valid incarnation")
    if not isinstance(members, list):
        raise ValueError("no member list")
    kept = [m for m in (_member(o) for o in members[:MAX_MEMBERS]) if m is not None]
    return Saved(name, addr, inc, tuple(kept))


def encode(name: str, addr: str, incarnation: int, members: Sequence[Member]) -> bytes:
    """The file's bytes: live members first, then failed ones (left ones
    are gone for good), at most `MAX_MEMBERS`."""
    live = [m for m in members if m.status in ("alive", "suspect")]
    failed = [m for m in members if m.status == "failed"]
    kept = [
        {"name": m.name, "addr": m.addr, "status": m.status, "incarnation": m.incarnation}
        for m in (live + failed)[:MAX_MEMBERS]
        if (m.name, m.addr) != (name, addr)
    ]
    obj = {
        "format": FORMAT,
        "name": name,
        "addr": addr,
        "incarnation": incarnation,
        "members": kept,
    }
    # Compact (the C encoder: 4,096 members in a few milliseconds);
    # `python -m json.tool FILE` shows it to a person.
    return json.dumps(obj, separators=(",", ":")).encode()


def write_atomically(path: str, data: bytes, prefix: str = ".overlay-snapshot-") -> None:
    """`data` in `path`, all or nothing, owner-only: a temporary file next
    to it (named `prefix`...), flushed to disk, renamed over it."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Snapshot:
    """An agent's snapshot file: read once on start, written as members change."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.saved: Saved | None = None
        self._dirty = trio.Event()
        self._throttle = Throttle(burst=3)
        self.writes = 0
        self.errors = 0

    def load(self) -> Saved | None:
        """Read the file; a clear WARNING and None when it cannot be used."""
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            event(
                log,
                logging.WARNING,
                "no snapshot file yet: starting without one (normal on a first start)",
                snapshot=self.path,
            )
            return None
        except OSError as exc:
            event(
                log,
                logging.WARNING,
                "snapshot file unreadable: starting without it",
                snapshot=self.path,
                error=exc.strerror or str(exc),
            )
            return None
        try:
            self.saved = parse(data)
        except ValueError as exc:
            event(
                log,
                logging.WARNING,
                "snapshot file corrupt: starting without it (it will be rewritten)",
                snapshot=self.path,
                error=str(exc),
            )
            return None
        event(
            log,
            logging.INFO,
            "snapshot read",
            snapshot=self.path,
            members=len(self.saved.members),
            incarnation=self.saved.incarnation,
        )
        return self.saved

    def incarnation_for(self, name: str, addr: str) -> int:
        """Where this agent's incarnation starts: one past the saved one
        when the snapshot is its own, else 0."""
        saved = self.saved
        if saved is None or (saved.name, saved.addr) != (name, addr):
            return 0
        return saved.incarnation + 1

    def rejoin_seeds(self, me: str, rng: random.Random) -> list[str]:
        """HOST:PORT of saved members to rejoin through: live ones first."""
        if self.saved is None:
            return []
        groups: list[list[str]] = [[], []]
        for m in self.saved.members:
            if m.addr != me:
                groups[m.status == "failed"].append(m.addr)
        out: list[str] = []
        for group in groups:
            rng.shuffle(group)
            out += group
        return list(dict.fromkeys(out))[:MAX_REJOIN]

    def changed(self) -> None:
        """The member list changed (called by the driver: never blocks)."""
        self._dirty.set()

    async def run(self, state: Callable[[], State]) -> None:
        """Write `state()` (taken here, encoded and written in a worker
        thread) whenever it changed, at most once every `WRITE_INTERVAL`;
        once more when cancelled (the agent stops)."""
        try:
            while True:
                await self._dirty.wait()
                self._dirty = trio.Event()
                await trio.to_thread.run_sync(self._write, state())
                await trio.sleep(WRITE_INTERVAL)
        finally:
            if self._dirty.is_set():
                # Stopping: the last changes, written from here (no thread
                # may start in a cancelled scope; a write is milliseconds).
                with contextlib.suppress(Exception):
                    self._write(state())

    def _write(self, state: State) -> None:
        try:
            write_atomically(self.path, encode(*state))
        except OSError as exc:
            self.errors += 1
            allowed, held = self._throttle.allow("write")
            if allowed:
                event(
                    log,
                    logging.WARNING,
                    "cannot write the snapshot",
                    snapshot=self.path,
                    error=exc.strerror or str(exc),
                    not_logged=held,
                )
            return
        self.writes += 1
