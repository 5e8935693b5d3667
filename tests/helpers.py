"""Helpers shared by the tests: one timeout budget, one overlay connectivity
check over a simulation.

- `TEST_MAX`: the trio time an async test may take (`@bounded(TEST_MAX)`,
  from `daemon.testing`) before it fails instead of hanging the suite. A
  test with a different budget says why next to its own constant.
- `components(sim)` and `overlay_connected(sim)`: the overlay as a graph
  over the *live* nodes only, with an undirected edge a - b when b is in
  a's active view (or a in b's) and both are live. An entry naming a
  crashed or stopped peer is not yet detected and is no link: counting it
  would let a dead node join two live halves. It is the graph
  `sim.analysis.overlay_whole` walks, with the components kept for
  assertion messages. (`daemon.testing.overlay_connected` is the same
  check over running agents.)
"""

from __future__ import annotations

import networkx as nx

from overlay.ids import NodeId
from sim.engine import Simulation

TEST_MAX = 120.0  # seconds of trio time for one async test


def components(sim: Simulation) -> list[set[NodeId]]:
    """The connected components of the live overlay, largest first."""
    live = sim.live()
    alive = set(live)
    g = nx.Graph()
    g.add_nodes_from(live)
    for nid in live:
        g.add_edges_from((nid, p) for p in sim.node(nid).views().active if p in alive)
    return sorted((set(c) for c in nx.connected_components(g)), key=len, reverse=True)


def overlay_connected(sim: Simulation) -> bool:
    """Every live node reaches every other over active links between live
    nodes (true of an empty or one-node cluster)."""
    return len(components(sim)) <= 1


def describe(parts: list[set[NodeId]]) -> list[list[str]]:
    """Components as sorted name lists, for an assertion message."""
    return [sorted(n.name for n in part) for part in parts]
