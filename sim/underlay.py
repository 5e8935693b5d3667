"""Link latency from an underlay: a weighted networkx graph of routers.

Theory of operation: every simulated host attaches to one vertex of the
underlay graph (drawn from a seeded generator, in the order the hosts are
added, so a run is reproducible). The latency between two hosts is the
weighted shortest path between their vertices plus an access latency at each
end (two hosts on one router still pay the two access hops). Shortest paths
are computed lazily, one Dijkstra per source vertex, and cached: memory grows
with (vertices used as sources) x (vertices), so keep underlays to a few
thousand vertices.

Graphs come from a spec (the `[network.underlay]` table of a scenario):

- `generator = "barabasi_albert"` (default; `vertices`, `m`): a scale-free,
  internet-like router graph;
- `generator = "grid"` (`vertices`, rounded to a square): a 2-D mesh, long
  paths, for latency-sensitive experiments;
- `generator = "file"` (`path`): a GraphML or GML file read with networkx.

Generated graphs draw each edge's latency uniformly from
[`edge_latency_min`, `edge_latency_max`] seconds; a file's edges must carry a
`latency` (seconds) or `weight` attribute.
"""

from __future__ import annotations

import math
import random
from typing import Any

import networkx as nx

Addr = tuple[str, int]

GENERATORS = ("barabasi_albert", "grid", "file")

DEFAULTS: dict[str, Any] = {
    "generator": "barabasi_albert",
    "vertices": 200,
    "m": 2,
    "edge_latency_min": 0.001,
    "edge_latency_max": 0.010,
    "access_latency": 0.001,
    "path": "",
}


class UnderlayError(ValueError):
    """An underlay spec or file that cannot be used."""


class Underlay:
    def __init__(self, graph: Any, rng: random.Random, *, access_latency: float = 0.001) -> None:
        if graph.number_of_nodes() == 0:
            raise UnderlayError("underlay graph has no vertices")
        if not nx.is_connected(graph):
            raise UnderlayError("underlay graph is not connected")
        for u, v, data in graph.edges(data=True):
            lat = data.get("latency")
            if not isinstance(lat, int | float) or lat < 0 or math.isnan(lat):
                raise UnderlayError(f"underlay edge {u}-{v} has no valid 'latency'")
        self.graph = graph
        self.rng = rng
        self.access_latency = access_latency
        self.vertices = list(graph.nodes)
        self.attached: dict[Addr, Any] = {}
        self._dist: dict[Any, dict[Any, float]] = {}

    def attach(self, addr: Addr) -> None:
        if addr not in self.attached:
            self.attached[addr] = self.vertices[self.rng.randrange(len(self.vertices))]

    def latency(self, a: Addr, b: Addr) -> float:
        self.attach(a)
        self.attach(b)
        va, vb = self.attached[a], self.attached[b]
        dist = self._dist.get(va)
        if dist is None:
            dist = self._dist[va] = nx.single_source_dijkstra_path_length(
                self.graph, va, weight="latency"
            )
        return float(dist[vb]) + 2 * self.access_latency


def build(spec: dict[str, Any], seed: int) -> Underlay:
    """An underlay from a spec (see the module docstring); `UnderlayError`
    for a bad spec or file."""
    unknown = sorted(set(spec) - set(DEFAULTS))
    if unknown:
        raise UnderlayError(f"unknown underlay key(s): {', '.join(unknown)}")
    s = {**DEFAULTS, **spec}
    rng = random.Random(seed)
    generator = s["generator"]
    lo, hi = float(s["edge_latency_min"]), float(s["edge_latency_max"])
    if not 0 <= lo <= hi:
        raise UnderlayError("underlay: need 0 <= edge_latency_min <= edge_latency_max")
    n = int(s["vertices"])
    if generator == "barabasi_albert":
        m = int(s["m"])
        if not 1 <= m < n:
            raise UnderlayError("underlay: barabasi_albert needs 1 <= m < vertices")
        graph = nx.barabasi_albert_graph(n, m, seed=rng.getrandbits(32))
    elif generator == "grid":
        side = max(1, round(math.sqrt(n)))
        graph = nx.convert_node_labels_to_integers(nx.grid_2d_graph(side, side))
    elif generator == "file":
        graph = _read(str(s["path"]))
    else:
        raise UnderlayError(
            f"unknown underlay generator {generator!r} (one of {', '.join(GENERATORS)})"
        )
    if generator != "file":
        for u, v in graph.edges():
            graph.edges[u, v]["latency"] = rng.uniform(lo, hi)
    return Underlay(graph, rng, access_latency=float(s["access_latency"]))


def _read(path: str) -> Any:
    if not path:
        raise UnderlayError("underlay: generator 'file' needs a path")
    try:
        graph = nx.read_gml(path) if path.endswith(".gml") else nx.read_graphml(path)
    except FileNotFoundError:
        raise UnderlayError(f"underlay file not found: {path}") from None
    except Exception as exc:  # networkx raises many kinds on a bad file
        raise UnderlayError(f"cannot read underlay {path}: {exc}") from None
    graph = nx.Graph(graph)
    for u, v, data in graph.edges(data=True):
        if "latency" not in data and "weight" in data:
            data["latency"] = data["weight"]
        if "latency" in data:
            try:
                data["latency"] = float(data["latency"])
            except (TypeError, ValueError):
                raise UnderlayError(f"underlay edge {u}-{v}: latency is not a number") from None
    return graph
