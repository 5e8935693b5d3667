"""`overlay sim`: run a scenario in the simulator and report on it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import networkx as nx

from sim.engine import Simulation


def register(sub: Any) -> None:
    p = sub.add_parser("sim", help="simulate a cluster in-process and report on it")
    p.add_argument("--nodes", type=int, default=1000, help="cluster size (default 1000)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--json", metavar="FILE|-", help="write every figure as JSON")
    p.set_defaults(func=run)


def overlay_figures(sim: Simulation) -> dict[str, Any]:
    g = nx.Graph()
    live = sim.live()
    g.add_nodes_from(live)
    for n in live:
        for p in sim.node(n).hyparview.active:
            g.add_edge(n, p)
    degrees = [len(sim.node(n).hyparview.active) for n in live]
    return {
        "connected": nx.is_connected(g),
        "components": nx.number_connected_components(g),
        "active_degree_mean": sum(degrees) / len(degrees),
        "active_degree_max": max(degrees),
        "diameter": nx.diameter(g) if nx.is_connected(g) else None,
    }


def run(args: argparse.Namespace) -> int:
    if args.nodes < 1:
        print("overlay sim: --nodes must be at least 1", file=sys.stderr)
        return 2
    started = time.perf_counter()
    sim = Simulation(seed=args.seed)
    ids = [sim.add_node(f"n{i}") for i in range(args.nodes)]
    for i, n in enumerate(ids[1:]):
        sim.join(n, [ids[0]], at=0.01 * i)
    sim.run_until(0.01 * args.nodes + 30.0)
    report = {
        "scenario": "steady",
        "nodes": args.nodes,
        "seed": args.seed,
        "run": {"events": sim.events, "wall_s": time.perf_counter() - started},
        "overlay": overlay_figures(sim),
    }
    if args.json:
        text = json.dumps(report, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    o = report["overlay"]
    print(
        f"steady: {args.nodes} nodes, seed {args.seed}: connected={o['connected']} "
        f"degree mean {o['active_degree_mean']:.2f} max {o['active_degree_max']} "
        f"diameter {o['diameter']} ({sim.events} events, {report['run']['wall_s']:.1f} s)"
    )
    return 0
