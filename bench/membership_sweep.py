"""Benchmark: how few piggyback retransmissions SWIM needs once its
changes go over the tree (issue 14). Prints one JSON line per run and a
table per (loss, retransmit_mult); never fails on time.

Each run is the mass-failure scenario (joins at 100/s, 20 s to settle,
half the nodes crashed, broadcasts), which gives in one run: how long an
arrival takes to reach every member list and when the lists were first
complete after the joins (convergence), the first and full detection of
the crashes, false suspicions and false positives. Datagram loss applies
to the whole run (streams, and so the tree, are not lossy).

    .venv/bin/python bench/membership_sweep.py [--nodes 300]
        [--mults 4,3,2,1] [--losses 0,0.05,0.1,0.2] [--seeds 1,2]
        [--scenario mass-failure] [--set KEY=VALUE ...] [--out FILE.jsonl]

docs/membership-over-tree.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from typing import Any

from sim import runner, scenario


def one(
    name: str, nodes: int, mult: int, loss: float, seed: int, sets: list[str]
) -> dict[str, Any]:
    keys = [f"swim.retransmit_mult={mult}", f"network.loss={loss}", *sets]
    sc = scenario.override(scenario.load(name).with_param("nodes", nodes), keys)
    started = time.perf_counter()
    rep = runner.run(sc, seed, use_codec=True).report
    m = rep["membership"]
    return {
        "nodes": nodes,
        "mult": mult,
        "loss": loss,
        "seed": seed,
        "sets": sets,
        "wall_s": round(time.perf_counter() - started, 1),
        "events": rep["run"]["events"],
        "complete": m.get("complete_after_s"),
        "spread_p50": m.get("join_spread_p50_s"),
        "spread_p99": m.get("join_spread_p99_s"),
        "spread_members": m.get("join_spread_members"),
        "first_p50": m.get("first_detection_p50_s"),
        "full_p50": m.get("full_detection_p50_s"),
        "full_p99": m.get("full_detection_p99_s"),
        "undetected": m.get("undetected"),
        "fp": m.get("false_positives"),
        "false_susp": m.get("false_suspicions"),
        "converged": m.get("converged"),
        "bytes": rep["messages"].get("bytes_per_node_per_s"),
    }


def _span(values: list[Any], fmt: str = "{:.2f}") -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    lo, hi = min(present), max(present)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}-{fmt.format(hi)}"


def table(rows: list[dict[str, Any]]) -> str:
    groups: dict[tuple[float, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["loss"], r["mult"])].append(r)
    lines = [
        "| loss | mult | runs | complete after joins (s) | arrival p50 / p99 (s) "
        "| first detection p50 (s) | full detection p50 / p99 (s) | undetected "
        "| false positives | false suspicions | converged | events | bytes/node/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (loss, mult), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1])):

        def col(k: str, f: str = "{:.2f}", rs: list[dict[str, Any]] = rs) -> str:
            return _span([r[k] for r in rs], f)

        lines.append(
            f"| {loss:.0%} | {mult} | {len(rs)} | {col('complete')} "
            f"| {col('spread_p50')} / {col('spread_p99')} | {col('first_p50')} "
            f"| {col('full_p50', '{:.1f}')} / {col('full_p99', '{:.1f}')} "
            f"| {col('undetected', '{:d}')} | {col('fp', '{:d}')} | {col('false_susp', '{:d}')} "
            f"| {sum(bool(r['converged']) for r in rs)}/{len(rs)} "
            f"| {statistics.mean(r['events'] for r in rs) / 1e3:.0f} k "
            f"| {statistics.mean(r['bytes'] for r in rs):,.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=300)
    p.add_argument("--mults", default="4,3,2,1")
    p.add_argument("--losses", default="0,0.05,0.1,0.2")
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--scenario", default="mass-failure")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="", metavar="FILE.jsonl", help="append each run here")
    args = p.parse_args()
    rows = []
    for loss in (float(x) for x in args.losses.split(",")):
        for mult in (int(x) for x in args.mults.split(",")):
            for seed in (int(x) for x in args.seeds.split(",")):
                row = one(args.scenario, args.nodes, mult, loss, seed, args.sets)
                rows.append(row)
                line = json.dumps(row)
                print(line, flush=True)
                if args.out:
                    with open(args.out, "a", encoding="utf-8") as f:
                        f.write(line + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
