"""What the plots draw over time (`overlay sim --plot`), recorded cheaply.

`Timeline` samples the cluster every `INTERVAL` simulated seconds while the
runner advances: nodes live, overlay components (over live active links),
and SWIM's view - how many members each healthy node counts alive (mean,
min, max) and, when a small group is cut off (`isolate`), how many nodes
outside it still count its members alive. A sample reads state only (no
randomness), so it changes nothing in the run; at 1,000 nodes it costs a
few milliseconds per simulated second.

`marks` are the scenario's events as `(label, start, end)`, `end == start`
for an instant: the joins, each publish step, a crash, a cut (until its
heal), a churn. `broadcast_series` turns the broadcast tracker into one
point per broadcast. None of this is in the JSON report.
"""

from __future__ import annotations

import math
from typing import Any

from overlay.ids import NodeId
from overlay.io import MemberStatus
from sim.analysis import component_count
from sim.broadcast_metrics import BroadcastTracker
from sim.engine import Simulation

INTERVAL = 1.0  # simulated seconds between samples
WATCH_GROUP_MAX = 8  # a cut-off group this small is followed member by member

Mark = tuple[str, float, float]


class Timeline:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.next_at = 0.0
        self.series: dict[str, list[float]] = {
            k: []
            for k in (
                "t",
                "live",
                "components",
                "alive_seen_mean",
                "alive_seen_min",
                "alive_seen_max",
                "cut_off_seen_alive",
            )
        }
        self.marks: list[Mark] = []
        self.cut_off: list[NodeId] = []  # the small group followed, if any

    def mark(self, label: str, start: float, end: float | None = None) -> None:
        self.marks.append((label, start, start if end is None else end))

    def close_mark(self, label: str, end: float) -> None:
        """End the latest open `label` mark (a cut, at its heal)."""
        for i in range(len(self.marks) - 1, -1, -1):
            name, start, stop = self.marks[i]
            if name == label and stop == math.inf:
                self.marks[i] = (name, start, end)
                return

    def maybe_sample(self) -> None:
        now = self.sim.now
        if now < self.next_at:
            return
        self.next_at = (math.floor(now / INTERVAL) + 1) * INTERVAL
        self.sample()

    def sample(self) -> None:
        sim = self.sim
        live = sim.live()
        s = self.series
        s["t"].append(sim.now)
        s["live"].append(len(live))
        s["components"].append(component_count(sim, live))
        healthy = [
            sn
            for sn in sim.nodes.values()
            if sn.alive and not sn.paused and sn.started_at is not None
        ]
        if sim.config.swim.enabled and healthy:
            counts = [sn.node.swim.members.count(MemberStatus.ALIVE) for sn in healthy]
            s["alive_seen_mean"].append(sum(counts) / len(counts))
            s["alive_seen_min"].append(min(counts))
            s["alive_seen_max"].append(max(counts))
        else:
            for k in ("alive_seen_mean", "alive_seen_min", "alive_seen_max"):
                s[k].append(math.nan)
        s["cut_off_seen_alive"].append(self._cut_off_seen(healthy) if self.cut_off else math.nan)

    def _cut_off_seen(self, healthy: list[Any]) -> float:
        """Nodes outside the cut-off group counting its members alive (mean
        over the group's members)."""
        group = set(self.cut_off)
        total = 0
        for sn in healthy:
            members = sn.node.swim.members
            if sn.node.me in group:
                continue
            for m in self.cut_off:
                e = members.get(m)
                total += e is not None and e.status is MemberStatus.ALIVE
        return total / len(self.cut_off)


def broadcast_series(tracker: BroadcastTracker, live_nodes: list[NodeId]) -> dict[str, list[float]]:
    """One point per broadcast, in publish order: its time, reliability
    (delivered / expected, as the report counts it) and latency p50 / p99."""
    live = frozenset(live_nodes)
    out: dict[str, list[float]] = {"bc_t": [], "bc_reliability": [], "bc_p50": [], "bc_p99": []}
    for b in sorted(tracker.broadcasts.values(), key=lambda b: b.time):
        expected = (b.live & live) - {b.origin}
        got = sum(1 for n in expected if n in b.deliveries)
        lat = sorted(b.latencies())
        out["bc_t"].append(b.time)
        out["bc_reliability"].append(got / len(expected) if expected else 1.0)
        out["bc_p50"].append(lat[len(lat) // 2] if lat else math.nan)
        out["bc_p99"].append(
            lat[min(len(lat) - 1, math.ceil(0.99 * len(lat)) - 1)] if lat else math.nan
        )
    return out
