"""How well the nodes' network coordinates (overlay/coordinates.py) predict
the modelled round trips, at the end of a run.

Theory of operation: a sample of pairs of live nodes, each pair's modelled
round trip (twice the one-way link latency the engine delivers with; no
processing time is modelled) against the distance between the two nodes'
own coordinates. With an underlay every pair has a latency: the pairs are
drawn at random. Without one, the engine draws a pair's latency on its
first message, and a pair that never talked has none yet (and a random,
independent one when it first talks, which nothing could predict): the
pairs are drawn from those the engine has fixed. Two baselines keep the
figure honest: the error of the initial coordinates (all at the origin:
~100%) and of the best constant guess (every pair estimated at the
sample's median round trip), which coordinates must beat to be worth
anything.
"""

from __future__ import annotations

import random
from typing import Any

from overlay.coordinates import distance
from overlay.ids import NodeId

MAX_PAIRS = 2000


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def coordinate_errors(sim: Any, live: list[NodeId], seed: int) -> dict[str, Any]:
    """Median and p90 relative estimation error over a sample of live pairs
    (None when there is no pair to judge, or coordinates are off)."""
    empty: dict[str, Any] = {
        "coord_error_p50": None,
        "coord_error_p90": None,
        "coord_baseline_error_p50": None,
        "coord_pairs": 0,
    }
    if not sim.config.swim.coordinates or len(live) < 2:
        return empty
    rng = random.Random(f"coordinates-{seed}")
    addrs = {(n.host, n.port): n for n in live}
    pairs: list[tuple[NodeId, NodeId]] = []
    if sim.net.underlay is not None:
        nodes = sorted(live)
        for _ in range(MAX_PAIRS):
            a, b = rng.sample(nodes, 2)
            pairs.append((a, b))
    else:
        known = [
            (addrs[a], addrs[b])
            for a, row in sim._latency.items()
            if a in addrs
            for b in row
            if b in addrs and a < b
        ]
        known.sort()
        pairs = rng.sample(known, min(MAX_PAIRS, len(known)))
    if not pairs:
        return empty
    coords = {n: sim.node(n).swim.coords.vivaldi.coord for n in live}
    rtts = [2.0 * sim.latency((a.host, a.port), (b.host, b.port)) for a, b in pairs]
    errors = [
        abs(distance(coords[a], coords[b]) - rtt) / rtt
        for (a, b), rtt in zip(pairs, rtts, strict=True)
    ]
    guess = _quantile(rtts, 0.5)
    baseline = [abs(guess - rtt) / rtt for rtt in rtts]
    return {
        "coord_error_p50": _quantile(errors, 0.5),
        "coord_error_p90": _quantile(errors, 0.9),
        "coord_baseline_error_p50": _quantile(baseline, 0.5),
        "coord_pairs": len(pairs),
    }
