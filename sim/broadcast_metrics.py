"""Broadcast figures for a simulation: reliability, RMR, LDH, latency.

Use::

    tracker = BroadcastTracker(sim)      # registers itself as an observer
    ...                                  # sim.publish(...), sim.run_until(...)
    figures = tracker.summary(sim.live())

`BroadcastTracker(sim)` appends its `observe` to `sim.observers`, so it sees
every output of every node. It records

- a *publish* when a node delivers its own broadcast (a `Deliver` with
  hops 0 whose origin is that node): time, origin, and who was live then;
- every other `Deliver`: time, node, message id, hops;
- every Plumtree payload message sent (`Send` of a `Gossip`: tree pushes,
  GRAFT answers and anti-entropy repairs alike), by message id.

`summary(live_nodes, *, since=0.0, until=inf)` covers the broadcasts
published at or after `since` and before `until`, and returns a dict with exactly these keys:

- `sent` (int): broadcasts published.
- `reliability` (float): mean over broadcasts of delivered / expected, where
  the expected receivers of a broadcast are the nodes live when it was
  published and still in `live_nodes`, the origin excluded. 1.0 when there
  is no broadcast.
- `rmr` (float): Relative Message Redundancy (Plumtree paper, sec. 5):
  m / (n - 1) - 1, summed over broadcasts: payload messages sent divided by
  deliveries (origins excluded), minus one. 0 means one payload per delivery
  (a perfect tree). 0.0 when nothing was delivered.
- `ldh_max` (int): Last Delivery Hop, the largest hop count of any delivery.
- `latency_p50_s`, `latency_p99_s` (float): delivery time minus publish
  time over the deliveries to nodes live at the publish (origins excluded;
  a node that joined later and caught up by anti-entropy has no latency to
  speak of), nearest-rank percentiles; 0.0 when nothing was delivered.
- `reliability_by_broadcast` (list[float]): per broadcast, in publish order.
- `undelivered` (int): (broadcast, expected node) pairs not delivered.
- `duplicates` (int): deliveries of an id a node had already delivered.
  Must be 0.

The tracker reads `sim.live()` at each publish and nothing else of the
simulator; it never changes the simulation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from overlay.ids import NodeId
from overlay.io import Deliver, Output, Send
from overlay.messages import Gossip, MsgId
from sim.engine import Simulation


@dataclass(slots=True)
class Broadcast:
    id: MsgId
    origin: NodeId
    time: float
    live: frozenset[NodeId]  # live at publish time (shared between broadcasts when unchanged)
    deliveries: dict[NodeId, tuple[float, int]] = field(default_factory=dict)  # node -> (t, hops)
    payloads: int = 0
    duplicates: int = 0

    def latencies(self) -> list[float]:
        """Delivery times after the publish, for the nodes live at it (a
        node that joined later and caught up has no latency to speak of)."""
        live = self.live
        return [t - self.time for n, (t, _) in self.deliveries.items() if n in live]


class BroadcastTracker:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.broadcasts: dict[MsgId, Broadcast] = {}
        self._live: frozenset[NodeId] = frozenset()
        # Payload sends and deliveries seen before their publish (cannot
        # happen in one simulation; kept for honesty rather than dropped).
        self.orphans = 0
        sim.observers.append(self)

    wants = (Send, Deliver)  # the outputs the engine shows us (see sim.engine)

    def observe(self, t: float, node: NodeId, out: Output) -> None:
        if isinstance(out, Send):
            if isinstance(out.msg, Gossip):
                b = self.broadcasts.get(out.msg.id)
                if b is None:
                    self.orphans += 1
                else:
                    b.payloads += 1
            return
        if not isinstance(out, Deliver):
            return
        if out.hops == 0 and out.origin == node.name:
            live = frozenset(self.sim.live())
            if live != self._live:
                self._live = live
            self.broadcasts[out.id] = Broadcast(out.id, node, t, self._live)
            return
        b = self.broadcasts.get(out.id)
        if b is None:
            self.orphans += 1
            return
        if node in b.deliveries:
            b.duplicates += 1
            return
        b.deliveries[node] = (t, out.hops)

    __call__ = observe

    def summary(
        self, live_nodes: Iterable[NodeId], *, since: float = 0.0, until: float = math.inf
    ) -> dict[str, Any]:
        live = frozenset(live_nodes)
        chosen = [b for b in self.broadcasts.values() if since <= b.time < until]
        by_broadcast: list[float] = []
        undelivered = 0
        payloads = 0
        deliveries = 0
        duplicates = 0
        ldh = 0
        latencies: list[float] = []
        for b in chosen:
            expected = (b.live & live) - {b.origin}
            got = sum(1 for n in expected if n in b.deliveries)
            undelivered += len(expected) - got
            by_broadcast.append(got / len(expected) if expected else 1.0)
            payloads += b.payloads
            deliveries += len(b.deliveries)
            duplicates += b.duplicates
            ldh = max(ldh, max((hops for _, hops in b.deliveries.values()), default=0))
            latencies += b.latencies()
        latencies.sort()
        return {
            "sent": len(chosen),
            "reliability": sum(by_broadcast) / len(by_broadcast) if by_broadcast else 1.0,
            "rmr": payloads / deliveries - 1.0 if deliveries else 0.0,
            "ldh_max": ldh,
            "latency_p50_s": _percentile(latencies, 50),
            "latency_p99_s": _percentile(latencies, 99),
            "reliability_by_broadcast": by_broadcast,
            "undelivered": undelivered,
            "duplicates": duplicates,
        }


def _percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]
