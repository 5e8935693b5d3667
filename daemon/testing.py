"""Helpers to run agents in one trio program: for tests, benchmarks and
examples. Nothing here is used by the agent itself.

`Changes` wakes a waiter whenever any watched agent produces an output, so a
test waits for a condition without sleeping: `await changes.until(pred)`.
Protocol timers keep every agent producing outputs, so a condition that
becomes true is seen within one timer period.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, ParamSpec, TypeVar

import trio

from daemon.agent import Agent, AgentSettings
from overlay.config import Config
from overlay.io import Output

P = ParamSpec("P")
R = TypeVar("R")


def bounded(
    seconds: float,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Run an async test inside `trio.fail_after(seconds)`: whatever it
    awaits, it cannot hang the suite (trio time: a `MockClock` test gets
    that many virtual seconds)."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with trio.fail_after(seconds):
                return await fn(*args, **kwargs)

        return run

    return decorate


class Changes:
    def __init__(self, agents: Iterable[Agent] = ()) -> None:
        self._event = trio.Event()
        for agent in agents:
            self.watch(agent)

    def watch(self, agent: Agent) -> None:
        agent.observers.append(self._poke)

    def _poke(self, now: float, out: Output) -> None:
        self._event.set()

    async def until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Return once `predicate()` holds; TooSlowError after `timeout`."""
        with trio.fail_after(timeout):
            while True:
                self._event = trio.Event()
                if predicate():
                    return
                await self._event.wait()


def fast_config(period: float = 0.2, **changes: Any) -> Config:
    """Protocol periods shortened for a loopback cluster in a test."""
    base = {
        "swim.probe_period": period,
        "swim.probe_timeout": period / 2,
        "swim.push_pull_period": period * 10,
        "hyparview.shuffle_period": period * 10,
        "hyparview.repair_period": period * 2,
        "hyparview.join_retry_initial": period,
        "hyparview.neighbor_timeout": period * 5,
        "plumtree.anti_entropy_period": period * 5,
    }
    base.update(changes)
    cfg = Config()
    valid = {k: v for k, v in base.items() if _has(cfg, k)}
    return cfg.replace(**valid)


def _has(cfg: Config, key: str) -> bool:
    section, _, name = key.partition(".")
    return hasattr(getattr(cfg, section, None), name)


def overlay_connected(agents: list[Agent]) -> bool:
    """The active views of the running agents form one connected graph."""
    live = [a for a in agents if a.running]
    if not live:
        return True
    ids = {a.me for a in live}
    adjacency = {a.me: [p for p in a.node.views().active if p in ids] for a in live}
    seen = {live[0].me}
    stack = [live[0].me]
    while stack:
        for peer in adjacency[stack.pop()]:
            if peer not in seen:
                seen.add(peer)
                stack.append(peer)
    return len(seen) == len(live)


def statuses(agent: Agent) -> dict[str, str]:
    """name -> status in `agent`'s member list."""
    return {m.name: m.status for m in agent.members()}


def all_alive(agents: list[Agent], names: Iterable[str]) -> bool:
    expected = set(names)
    for a in agents:
        if not a.running:
            continue
        st = statuses(a)
        if any(st.get(n) != "alive" for n in expected):
            return False
    return True


@contextlib.asynccontextmanager
async def local_cluster(
    n: int,
    *,
    config: Config | None = None,
    seed: int = 0,
    **settings: Any,
) -> AsyncIterator[list[Agent]]:
    """`n` agents on 127.0.0.1 (free ports), each joining through the first.
    Leaving the block stops them all at once (no graceful leave)."""
    config = config or fast_config()
    agents: list[Agent] = []
    async with trio.open_nursery() as nursery:
        for i in range(n):
            join = (agents[0].me.addr,) if agents else ()
            agent = Agent(
                AgentSettings(
                    bind=("127.0.0.1", 0),
                    name=f"n{i}",
                    join=join,
                    config=config,
                    seed=seed * 100_000 + i,
                    **settings,
                )
            )
            await nursery.start(agent.run)
            agents.append(agent)
        try:
            yield agents
        finally:
            nursery.cancel_scope.cancel()
