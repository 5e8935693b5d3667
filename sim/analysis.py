"""Figures of a simulation's state, with networkx: the overlay graph and the
traffic.

The overlay graph has one vertex per live node (named by node name) and a
directed edge u -> v when v is in u's active view and v is live. HyParView
keeps active views symmetric, so the undirected version is what a broadcast
travels over; `symmetric_fraction` says how true that is. Entries naming
nodes that are no longer live (not yet detected) are counted as stale, not
drawn.

Shortest paths are exact up to `EXACT_PATHS_MAX` live nodes (one BFS per
node, O(N * E)); above it they are estimated from `PATH_SAMPLES` BFS sources
drawn with a fixed seed, the diameter being the largest eccentricity found
from them and from a second sweep out of the farthest node seen (a lower
bound, usually exact on these graphs). `paths_exact` says which.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from typing import Any

import networkx as nx

from overlay.ids import NodeId
from overlay.io import MemberStatus
from sim.engine import Simulation

EXACT_PATHS_MAX = 2000
PATH_SAMPLES = 200


def active_graph(sim: Simulation) -> Any:
    """The live overlay as an `nx.DiGraph` over node names."""
    live = sim.live()
    alive = set(live)
    g = nx.DiGraph()
    g.add_nodes_from(n.name for n in live)
    for n in live:
        active = sim.node(n).hyparview.views().active
        g.add_edges_from((n.name, p.name) for p in active if p in alive)
    return g


def overlay_whole(sim: Simulation) -> bool:
    """Every live node reaches every other over live active links (either
    direction): the cheap check run while watching a recovery."""
    live = sim.live()
    return len(live) <= 1 or component_count(sim, live) == 1


def component_count(sim: Simulation, live: list[NodeId]) -> int:
    """Connected components of the live overlay (active links, either way),
    without building a graph: run every simulated second by the timeline."""
    alive = set(live)
    adj: dict[NodeId, list[NodeId]] = {n: [] for n in live}
    for n in live:
        for p in sim.node(n).hyparview.views().active:
            if p in alive:
                adj[n].append(p)
                adj[p].append(n)
    seen: set[NodeId] = set()
    count = 0
    for start in live:
        if start in seen:
            continue
        count += 1
        seen.add(start)
        todo = [start]
        while todo:
            for p in adj[todo.pop()]:
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
    return count


def members_merged(sim: Simulation) -> bool:
    """Every node has started, and every live, unpaused one counts exactly
    the live, unpaused nodes as alive (itself included): the cheap O(N)
    check of SWIM's view after the joins or a heal; the report's
    `membership.converged` is the exact one."""
    healthy = [sn for sn in sim.nodes.values() if sn.alive and not sn.paused]
    if any(sn.started_at is None for sn in healthy):
        return False  # nodes still to start: not complete yet
    n = len(healthy)
    return all(sn.node.swim.members.count(MemberStatus.ALIVE) == n for sn in healthy)


def _hist(values: Iterable[int]) -> dict[str, int]:
    counts = Counter(values)
    return {str(k): counts[k] for k in sorted(counts)}


def overlay_figures(sim: Simulation) -> dict[str, Any]:
    live = sim.live()
    alive = set(live)
    g = active_graph(sim)
    u = g.to_undirected(as_view=False)
    n = len(live)
    views = [sim.node(x).hyparview.views() for x in live]
    degrees = [len(v.active) for v in views]
    stale = sum(1 for v in views for p in v.active if p not in alive)
    edges = g.number_of_edges()
    symmetric = sum(1 for a, b in g.edges() if g.has_edge(b, a))
    components = list(nx.connected_components(u)) if n else []
    largest = max(components, key=len) if components else set()
    # A copy, not a subgraph view: a view filters every adjacency lookup,
    # which made the BFS five times slower (15 s of a 10,000-node run).
    core = u if len(components) == 1 else u.subgraph(largest).copy()
    paths = _paths(core) if len(largest) > 1 else (0.0, 0, True)
    figures: dict[str, Any] = {
        "live": n,
        "connected": n > 0 and len(components) == 1,
        "components": len(components),
        "largest_component": len(largest),
        "isolated": sum(1 for x in u if u.degree(x) == 0),
        "active_degree_mean": sum(degrees) / n if n else 0.0,
        "active_degree_max": max(degrees, default=0),
        "in_degree_hist": _hist(d for _, d in g.in_degree()),
        "clustering": float(nx.average_clustering(u)) if n else 0.0,
        "avg_shortest_path": paths[0],
        "diameter": paths[1],
        "paths_exact": paths[2],
        "symmetric_fraction": symmetric / edges if edges else 1.0,
        "stale_active": stale,
        "passive": _passive_figures(sim, live, alive),
    }
    return figures


def _paths(g: Any) -> tuple[float, int, bool]:
    """(average shortest path, diameter, exact) of a connected graph."""
    nodes = list(g)
    exact = len(nodes) <= EXACT_PATHS_MAX
    sources = nodes if exact else random.Random(0).sample(nodes, PATH_SAMPLES)
    total = 0
    pairs = 0
    diameter = 0
    far = sources[0]
    for s in sources:
        lengths = nx.single_source_shortest_path_length(g, s)
        total += sum(lengths.values())
        pairs += len(lengths) - 1
        ecc_node = max(lengths, key=lengths.__getitem__)
        if lengths[ecc_node] > diameter:
            diameter, far = lengths[ecc_node], ecc_node
    if not exact:  # double sweep from the farthest node found
        lengths = nx.single_source_shortest_path_length(g, far)
        diameter = max(diameter, max(lengths.values()))
    return (total / pairs if pairs else 0.0), diameter, exact


def _passive_figures(sim: Simulation, live: list[NodeId], alive: set[NodeId]) -> dict[str, Any]:
    """Passive views as a directed graph: sizes, how many entries name dead
    nodes, in-degree spread, and whether the union of passive links alone
    would still connect the live nodes (weakly)."""
    g = nx.DiGraph()
    g.add_nodes_from(n.name for n in live)
    sizes: list[int] = []
    stale = 0
    for n in live:
        passive = sim.node(n).hyparview.views().passive
        sizes.append(len(passive))
        for p in passive:
            if p in alive:
                g.add_edge(n.name, p.name)
            else:
                stale += 1
    entries = sum(sizes)
    return {
        "degree_mean": entries / len(live) if live else 0.0,
        "degree_max": max(sizes, default=0),
        "in_degree_hist": _hist(d for _, d in g.in_degree()),
        "components": nx.number_weakly_connected_components(g) if live else 0,
        "stale_fraction": stale / entries if entries else 0.0,
    }


def message_figures(sim: Simulation) -> dict[str, Any]:
    """Messages and bytes sent, per node per second of running time, in
    total and by message type (bytes are None when the codec is off); and
    what the nodes' own rules refused (`Node.refused`, summed): in a
    simulation every sender is honest, so anything there but a race is a
    protocol bug."""
    t = sim.traffic
    refused: Counter[str] = Counter()
    for sn in sim.nodes.values():
        refused.update(sn.node.refused)
    node_s = sim.node_seconds()
    rate = 1.0 / node_s if node_s > 0 else 0.0
    total = sum(t.messages.values())
    total_bytes = sum(t.bytes.values())
    codec = sim.use_codec
    by_type = {
        name: {
            "messages": count,
            "bytes": t.bytes[name] if codec else None,
            "dropped": t.dropped[name],
            "per_node_per_s": count * rate,
            "bytes_per_node_per_s": t.bytes[name] * rate if codec else None,
        }
        for name, count in sorted(t.messages.items(), key=lambda kv: (-kv[1], kv[0]))
    }
    return {
        "total": total,
        "bytes": total_bytes if codec else None,
        "dropped": sum(t.dropped.values()),
        "node_seconds": node_s,
        "per_node_per_s": total * rate,
        "bytes_per_node_per_s": total_bytes * rate if codec else None,
        "by_type": by_type,
        "refused": dict(sorted((+refused).items())),
    }


def write_graph(sim: Simulation, path: str) -> None:
    """The live overlay (active links) as GraphML, or GEXF when `path` ends
    in .gexf; node attributes: address, active and passive view sizes."""
    g = active_graph(sim)
    for n in sim.live():
        views = sim.node(n).hyparview.views()
        g.nodes[n.name].update(
            addr=f"{n.host}:{n.port}", active=len(views.active), passive=len(views.passive)
        )
    for a, b in g.edges():
        g.edges[a, b]["symmetric"] = g.has_edge(b, a)
    if path.endswith(".gexf"):
        nx.write_gexf(g, path)
    else:
        nx.write_graphml(g, path)
