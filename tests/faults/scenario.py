"""The frame shared by the fault scenarios: a cluster of agents on a rig,
named checks collected then asserted together (so a failing run still
records every figure), and the scenario's record."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from tests.faults.cluster import Cluster, all_see, record, start_agents
from tests.faults.figures import false_verdicts, settling, verdict_report
from tests.faults.rig import Heal, Rig

FORM_TIMEOUT = 60.0
HEAL_MAX = 2.0  # issue: alive everywhere within 2 s of the first cross-cut packet
# After a heal, how long the agents may take to send the first packet across
# the cut (SWIM retries failed members every reconnect_period, 30 s) and to
# merge: a bound for the waits, not a requirement.
HEAL_WAIT = 45.0
# After the merge, how long to keep watching for late verdicts and flaps.
QUIET = 10.0


def names(n: int) -> list[str]:
    return [f"n{i}" for i in range(1, n + 1)]


@dataclass
class Scenario:
    name: str
    rig: Rig
    cluster: Cluster
    names: list[str]
    t_start: float  # first agent started
    t_formed: float  # every agent listed every other alive
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    # Verdict times are printed from t_fault (the fault's start) and, after
    # a heal, from the heal and from the first cross-cut packet.
    t_fault: float | None = None
    heal: Heal | None = None
    no_false_failed: bool = False  # finish() checks it

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        """Record a required outcome; the test asserts them all at the end."""
        self.checks[what] = bool(ok)
        if not ok:
            self.failures.append(f"{what}: {detail}" if detail else what)
        return ok

    async def heal_and_settle(self, t_cut: float) -> Heal:
        """Heal the network; wait (bounded) for the first packet across the
        healed cut and for every agent to list every member alive, then
        watch QUIET seconds more (a verdict may come late: a suspicion
        timer started before the heal, stale gossip); record the heal
        figures and check the issue's outcomes: one cluster, all alive
        everywhere within 2 s of the first cross-cut packet (the last
        change of any pair after the heal counts, so a flap after the
        merge counts too), and (in finish()) no false failed verdict."""
        rig, c = self.rig, self.cluster
        everyone_alive = all_see(self.names, dict.fromkeys(self.names, "alive"))
        dropped = rig.counted()
        heal = rig.heal()
        self.heal, self.t_fault, self.no_false_failed = heal, t_cut, True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rig.first_cross_packet, heal, HEAL_WAIT)
            merged, t_poll, views = await c.wait_views(
                self.names, everyone_alive, HEAL_WAIT, interval=0.25
            )
        await trio.sleep(QUIET)
        later = await c.views(self.names)
        settled = settling(rig.member_changes(), self.names, heal.t_command)
        figures = settled.from_heal(heal)
        self.figures.update(
            cut_s=round(heal.t_command - t_cut, 1),
            dropped_by_the_cut=dropped,
            heal=figures,
            merged_by_poll_from_heal_s=round(t_poll - heal.t_done, 2) if merged else None,
        )
        self.check(
            f"one cluster, all alive everywhere (within {HEAL_WAIT:.0f} s)",
            merged,
            f"not alive: {_not_alive(views, self.names)}",
        )
        self.check(
            f"still all alive everywhere {QUIET:.0f} s later",
            everyone_alive(later),
            f"not alive: {_not_alive(later, self.names)}",
        )
        self.check("the cut dropped packets", dropped > 0, "none dropped: the rig is broken")
        self.check(
            "a packet crossed the healed cut", heal.first_lo is not None, "none within the wait"
        )
        from_packet = figures["alive_everywhere_from_first_cross_packet_s"]
        self.check(
            f"all alive everywhere within {HEAL_MAX} s of the first cross-cut packet",
            from_packet is not None and from_packet <= HEAL_MAX,
            f"{from_packet} s (from the heal command: "
            f"{figures['alive_everywhere_from_heal_command_s']} s)",
        )
        return heal

    def finish(self) -> None:
        """Judge every suspect/failed verdict since the start, record the
        figures (printed, appended to the results file), then assert every
        check."""
        false_failed, false_suspect = false_verdicts(self.rig, self.t_start)
        t0 = self.t_fault if self.t_fault is not None else self.t_start
        if self.no_false_failed:
            self.check(
                "no false failed verdict",
                not false_failed,
                f"{len(false_failed)}: "
                + "; ".join(verdict_report(false_failed, t0, self.heal, limit=5)),
            )
        result = {
            "scenario": self.name,
            "when": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.t_start)),
            "agents": len(self.names),
            "wall_s": round(time.time() - self.t_start, 1),
            "formed_s": round(self.t_formed - self.t_start, 2),
            "passed": not self.failures,
            "checks": self.checks,
            "failures": self.failures,
            **self.figures,
            "false_failed": verdict_report(false_failed, t0, self.heal),
            "false_suspect": verdict_report(false_suspect, t0, self.heal),
            "logs": str(self.rig.workdir),
        }
        record(result)
        assert not self.failures, "; ".join(self.failures)


def _not_alive(views: dict[str, dict[str, str] | None], names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for o in names:
        v = views.get(o)
        if v is None:
            out[o] = "no answer"
        else:
            bad = {m: v.get(m, "absent") for m in names if v.get(m) != "alive"}
            if bad:
                out[o] = bad
    return out


@asynccontextmanager
async def scenario(rig: Rig, name: str, n: int = 10) -> AsyncIterator[Scenario]:
    """n agents (n1 founds the cluster, the others join it), connected and
    subscribed to the scenario's topic, every one listing every other
    alive."""
    members = names(n)
    t_start = time.time()
    await start_agents(rig, members)
    async with trio.open_nursery() as nursery:
        cluster = Cluster(rig, nursery, f"faults/{name}")
        try:
            for m in members:
                await cluster.connect(m)
            ok, t_formed, views = await cluster.wait_views(
                members, all_see(members, dict.fromkeys(members, "alive")), FORM_TIMEOUT
            )
            assert ok, f"the cluster did not form in {FORM_TIMEOUT} s: {views}"
            yield Scenario(name, rig, cluster, members, t_start, t_formed)
        finally:
            cluster.close()


async def sleep_until(t: float) -> None:
    """Sleep until Unix time t (bounded by the caller's fail_after)."""
    delay = t - time.time()
    if delay > 0:
        await trio.sleep(delay)


def sides_see(
    groups: Sequence[Sequence[str]], status: str
) -> Any:  # a predicate over Cluster.views()
    """Every member of each group lists every member of the other groups
    with `status` (and answered)."""

    def pred(views: dict[str, dict[str, str] | None]) -> bool:
        for i, g in enumerate(groups):
            others = [m for j, h in enumerate(groups) if j != i for m in h]
            for o in g:
                v = views.get(o)
                if v is None or any(v.get(m) != status for m in others):
                    return False
        return True

    return pred
