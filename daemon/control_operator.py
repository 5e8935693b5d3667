"""The operator's control ops (issue 15): `info`, `force_leave`, `logs`
(the log stream behind `overlay monitor`), and `join` with `wait` (each
seed's outcome). Registered in `daemon.control`'s table when that module
loads; the protocol is in docs/control-api.md.

The agent is reached only through the methods below (`OperatorAgent`);
every protocol decision (who may be forced out) stays in `overlay/`.
"""

from __future__ import annotations

import logging
import socket as stdsocket
from typing import TYPE_CHECKING, Any, Protocol, cast

import trio

from daemon.control import _EVENT_BATCH, _OPS, _STREAMING, _op, _str_arg, pack
from daemon.monitor import HUB, parse_level
from daemon.subscriptions import Member

if TYPE_CHECKING:
    from daemon.control import _Connection

# Longest a `join` may wait for its seeds (its `wait` argument), seconds.
MAX_JOIN_WAIT = 60.0
# Seeds in one `join`, at most.
MAX_SEEDS = 64


class OperatorAgent(Protocol):
    """What these ops ask of an agent (`daemon.agent.Agent` is one)."""

    def members(self) -> list[Member]: ...

    async def join(self, *seeds: str) -> None: ...

    async def force_leave(self, name: str, prune: bool = False) -> None: ...

    def info(self) -> dict[str, Any]: ...


def _agent(conn: _Connection) -> OperatorAgent:
    return cast(OperatorAgent, conn.agent)


@_op("info")
async def _info(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    return _agent(conn).info()


@_op("force_leave")
async def _force_leave(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    name = _str_arg(args, "name")
    prune = args.get("prune", False)
    if not isinstance(prune, bool):
        raise ValueError("prune must be true or false")
    agent = _agent(conn)
    await agent.force_leave(name, prune)
    after = next((m for m in agent.members() if m.name == name), None)
    return {
        "name": name,
        "status": after.status if after is not None else None,
        "pruned": prune and after is None,
    }


@_op("logs")
async def _logs(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    level = parse_level(args.get("level", "info"))
    monitor = HUB.open(level)
    try:
        await conn.send({"seq": seq, "ok": True, "result": {"level": logging.getLevelName(level)}})
    except BaseException:
        monitor.close()
        raise

    async def body() -> None:
        try:
            while True:
                records = await monitor.take()
                for start in range(0, len(records), _EVENT_BATCH):
                    frames = b"".join(
                        pack({"seq": seq, "event": r})
                        for r in records[start : start + _EVENT_BATCH]
                    )
                    await conn.out_send.send((frames, None))
        finally:
            monitor.close()

    conn.start_stream(seq, body)
    return _STREAMING


_plain_join = _OPS["join"]


@_op("join")
async def _join(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    """`join` as it was; with `wait`, each seed's outcome (`overlay join`)."""
    if "wait" not in args:
        return await _plain_join(conn, seq, args)
    seeds = args.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, str) for s in seeds):
        raise ValueError("seeds must be a non-empty list of strings")
    return await join_and_wait(conn.agent, seeds, args["wait"])


async def join_and_wait(agent: Any, seeds: list[str], wait: object) -> dict[str, Any]:
    """Join through `seeds` and wait up to `wait` seconds for each to answer:
    {seeds: [{seed, ok, addrs, member, error}]}. A seed answers when a
    member at one of its addresses is alive in the agent's list (already a
    member counts). Bad or unresolvable seeds are reported, not raised;
    the agent keeps retrying the others as any join does."""
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 < wait <= MAX_JOIN_WAIT:
        raise ValueError(f"wait must be a number of seconds in (0, {MAX_JOIN_WAIT:g}]")
    if len(seeds) > MAX_SEEDS:
        raise ValueError(f"at most {MAX_SEEDS} seeds")
    from daemon.discovery import SeedError, parse_seed, resolve_seeds

    me = agent.me
    family = stdsocket.AF_INET6 if ":" in me.host else stdsocket.AF_INET
    results: list[dict[str, Any]] = []
    good: list[str] = []
    for text in seeds:
        row: dict[str, Any] = {"seed": text, "ok": False, "addrs": [], "member": None}
        try:
            spec = parse_seed(text, me.port)
        except SeedError as exc:
            row["error"] = f"bad seed: {exc}"
            results.append(row)
            continue
        addrs, errors = await resolve_seeds([spec], family=family)
        row["addrs"] = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in addrs]
        if not addrs:
            row["error"] = "; ".join(errors) or "not resolved"
        else:
            good.append(text)
        results.append(row)
    if good:
        await agent.join(*good)
    pending = [r for r in results if r["addrs"]]
    with trio.move_on_after(float(wait)):
        while pending:
            alive = {m.addr: m.name for m in agent.members() if m.status == "alive"}
            for row in list(pending):
                found = next((alive[a] for a in row["addrs"] if a in alive), None)
                if found is not None:
                    row["ok"], row["member"] = True, found
                    pending.remove(row)
            if pending:
                await trio.sleep(0.05)
    for row in pending:
        row["error"] = f"no answer within {float(wait):g} s"
    return {"seeds": results}
