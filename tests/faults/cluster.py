"""What the agents of a rig believe and deliver, through the control API.

One persistent control connection per agent (a CLI process per poll costs
~0.3 s of CPU and would starve the agents of a 2-core machine), each with a
subscription to the scenario's topic that counts deliveries per payload.
Every wait is bounded (`trio.fail_after` or a deadline) and every request to
an agent has a timeout, so a frozen (SIGSTOPped) agent costs a timeout, not
a hang. Transition times come from the agents' logs (`Rig.member_changes`);
polls tell what each agent believes now.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from daemon.client import ControlClient, open_client
from daemon.control import ControlError
from tests.faults.rig import Rig

REQUEST_TIMEOUT = 2.0
View = dict[str, str]  # member name -> status, as one agent lists them


class Cluster:
    """Control connections to a rig's agents, and their deliveries."""

    def __init__(self, rig: Rig, nursery: trio.Nursery, topic: str) -> None:
        self.rig = rig
        self.nursery = nursery
        self.topic = topic
        self.clients: dict[str, ControlClient] = {}
        self.deliveries: dict[str, Counter[str]] = {}
        self.first_delivery: dict[str, dict[str, float]] = {}
        self.published: dict[str, tuple[str, float]] = {}  # payload -> (origin, time)
        # When each agent's current subscription started: deliveries count
        # per subscription (an agent restarted gets a new one, from zero).
        self.link_started: dict[str, float] = {}
        self._scopes: dict[str, trio.CancelScope] = {}

    # ---------------------------------------------------------- connections

    async def connect(self, name: str, timeout: float = 10.0) -> None:
        """Open the agent's persistent connection and its subscription."""
        self.disconnect(name)
        with trio.fail_after(timeout):
            await self.nursery.start(self._link, name)

    def disconnect(self, name: str) -> None:
        scope = self._scopes.pop(name, None)
        if scope is not None:
            scope.cancel()
        self.clients.pop(name, None)

    async def _link(self, name: str, task_status: trio.TaskStatus[None]) -> None:
        agent = self.rig.agents[name]
        counts: Counter[str] = Counter()
        firsts: dict[str, float] = {}
        with trio.CancelScope() as scope:
            self._scopes[name] = scope
            try:
                async with (
                    open_client(agent.control) as client,
                    client.subscribe(self.topic) as events,
                ):
                    self.clients[name] = client
                    self.deliveries[name], self.first_delivery[name] = counts, firsts
                    self.link_started[name] = time.time()
                    task_status.started()
                    async for ev in events:
                        payload = bytes(ev["payload"]).decode("utf-8", "replace")
                        counts[payload] += 1
                        firsts.setdefault(payload, float(ev.get("time") or time.time()))
            except (ControlError, OSError, trio.BrokenResourceError):
                pass  # the agent went away (killed): its link ends
            finally:
                if self._scopes.get(name) is scope:
                    self._scopes.pop(name, None)
                    self.clients.pop(name, None)

    def close(self) -> None:
        for name in list(self._scopes):
            self.disconnect(name)

    # ------------------------------------------------------------ questions

    async def view(self, name: str, timeout: float = REQUEST_TIMEOUT) -> View | None:
        """What `name` lists (member -> status); None if it did not answer."""
        client = self.clients.get(name)
        if client is None:
            return None
        with trio.move_on_after(timeout):
            try:
                members = await client.members()
            except ControlError:
                return None
            return {str(m["name"]): str(m["status"]) for m in members}
        return None

    async def views(
        self, names: Iterable[str], timeout: float = REQUEST_TIMEOUT
    ) -> dict[str, View | None]:
        """Every agent's view at once (concurrent requests)."""
        out: dict[str, View | None] = {}

        async def one(name: str) -> None:
            out[name] = await self.view(name, timeout)

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(one, name)
        return out

    async def wait_views(
        self,
        names: Sequence[str],
        predicate: Callable[[dict[str, View | None]], bool],
        timeout: float,
        interval: float = 0.25,
    ) -> tuple[bool, float, dict[str, View | None]]:
        """Poll the views of `names` until `predicate` holds or `timeout`
        passes: (held, Unix time of the poll that saw it, last views)."""
        deadline = trio.current_time() + timeout
        last: dict[str, View | None] = {}
        for _ in range(int(timeout / interval) + 2):
            last = await self.views(names)
            if predicate(last):
                return True, time.time(), last
            if trio.current_time() >= deadline:
                break
            await trio.sleep(interval)
        return False, time.time(), last

    async def publish(self, name: str, payload: str) -> float:
        client = self.clients[name]
        with trio.fail_after(REQUEST_TIMEOUT):
            t = time.time()
            await client.publish(self.topic, payload.encode())
        self.published[payload] = (name, t)
        return t

    def missing(self, payloads: Iterable[str], names: Iterable[str]) -> dict[str, list[str]]:
        """payload -> subscribers that have not delivered it yet."""
        out: dict[str, list[str]] = {}
        for p in payloads:
            lacking = [n for n in names if self.deliveries.get(n, Counter())[p] == 0]
            if lacking:
                out[p] = lacking
        return out

    def duplicates(self, names: Iterable[str]) -> dict[str, dict[str, int]]:
        """subscriber -> {payload: count} for every payload delivered twice+."""
        out: dict[str, dict[str, int]] = {}
        for n in names:
            dup = {p: c for p, c in self.deliveries.get(n, Counter()).items() if c > 1}
            if dup:
                out[n] = dup
        return out

    async def wait_delivered(
        self, payloads: Sequence[str], names: Sequence[str], timeout: float
    ) -> bool:
        """Until every one of `names` has delivered every payload (bounded)."""
        deadline = trio.current_time() + timeout
        for _ in range(int(timeout / 0.1) + 2):
            if not self.missing(payloads, names):
                return True
            if trio.current_time() >= deadline:
                return False
            await trio.sleep(0.1)
        return not self.missing(payloads, names)

    def delivery_figures(self, payloads: Sequence[str], names: Sequence[str]) -> dict[str, Any]:
        """Per payload: origin, subscribers reached, copies, latency of the
        last delivery (from the publish, agents' clocks)."""
        out: dict[str, Any] = {}
        for p in payloads:
            origin, t = self.published.get(p, ("?", 0.0))
            times = [self.first_delivery.get(n, {}).get(p) for n in names]
            got = [x for x in times if x is not None]
            out[p] = {
                "origin": origin,
                "reached": len(got),
                "of": len(names),
                "copies": sum(self.deliveries.get(n, Counter())[p] for n in names),
                "last_s": round(max(got) - t, 3) if got and t else None,
            }
        return out


# ---------------------------------------------------------------------------
# Helpers for scenarios


def all_see(
    names: Sequence[str], statuses: Mapping[str, str]
) -> Callable[[dict[str, View | None]], bool]:
    """Predicate: every agent of `names` answered, and lists each member of
    `statuses` with that status."""

    def pred(views: dict[str, View | None]) -> bool:
        for n in names:
            v = views.get(n)
            if v is None:
                return False
            for member, status in statuses.items():
                if v.get(member) != status:
                    return False
        return True

    return pred


async def start_agents(
    rig: Rig,
    names: Sequence[str],
    *,
    config: Path | None = None,
    seeds: Sequence[str] | None = None,
    timeout: float = 60.0,
) -> None:
    """Add a host per name and start an agent on each: the first without a
    seed (it founds the cluster) unless `seeds` are given, the others
    joining the first. Returns once every one has logged "agent started"."""
    with trio.fail_after(timeout):
        for name in names:
            if name not in rig.hosts:
                rig.add_host(name)
        first, rest = names[0], names[1:]
        join = list(seeds) if seeds is not None else []
        rig.start_agent(first, join=join, config=config)
        await rig.wait_started(rig.agents[first])
        for name in rest:
            rig.start_agent(name, join=join or [first], config=config)
        for name in rest:
            await rig.wait_started(rig.agents[name])


def results_file() -> Path:
    """Where scenarios append their figures: $OVERLAY_FAULT_RESULTS, else
    overlay-fault-results.jsonl in the temporary folder."""
    env = os.environ.get("OVERLAY_FAULT_RESULTS")
    return Path(env) if env else Path(tempfile.gettempdir()) / "overlay-fault-results.jsonl"


def record(result: dict[str, Any]) -> Path:
    """Print a scenario's figures and append them as one JSON line."""
    path = results_file()
    line = json.dumps(result, sort_keys=False, default=str)
    with open(path, "a") as f:
        f.write(line + "\n")
    print(f"\n=== {result.get('scenario')}")
    for key, value in result.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            print(f"  {key}:")
            for k, v in value.items():
                print(f"    {k}: {json.dumps(v, default=str)}")
        elif isinstance(value, list) and len(json.dumps(value, default=str)) > 100:
            print(f"  {key}: ({len(value)})")
            for v in value:
                print(f"    {json.dumps(v, default=str) if not isinstance(v, str) else v}")
        else:
            print(f"  {key}: {json.dumps(value, default=str)}")
    print(f"(figures appended to {path})")
    return path
