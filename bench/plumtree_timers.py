"""Benchmark: Plumtree's timer defaults (`ihave_flush`, `graft_timeout_1`,
`graft_timeout_2`), measured in the simulator. Prints figures; never fails
on time.

Why: broadcasts from different origins that run concurrently PRUNE each
other's eager links, so Plumtree's eager graph is cut into pieces; each cut
is repaired by IHAVE + GRAFT, i.e. after up to ``ihave_flush`` (the IHAVE
batching) plus ``graft_timeout_1`` plus a round trip, and the p99 broadcast
latency is set by those repairs. Shorter timers repair sooner but GRAFT
more often while an eager copy is merely slow (more payloads per delivery:
higher RMR). This sweeps a few triples over a few cases:

``steady-100``, ``steady-1000``
    The built-in steady scenario (50 broadcasts from random senders, 0.2 s
    apart), 10-50 ms links.
``burst-100``, ``burst-1000``
    ``bench/plumtree_burst.toml``: 10 warm-up broadcasts, then every live
    node publishes at once (3 rounds 2 s apart at 100 nodes, 1 round at
    1,000). Only the burst's broadcasts are measured.
``massfail-1000``
    The built-in mass-failure scenario, fail_fraction 0.5: half the nodes
    crash at once, 50 broadcasts follow right after (SWIM's suspicions of
    the 500 crashed nodes go over Plumtree at the same time).
``wan-100``, ``wan-1000``
    Steady with WAN-like links: 50-150 ms.

For each (case, triple) it reports, over the seeds (pooled where it says
so): reliability (mean of the runs; the worst single broadcast), RMR
(pooled: payload messages / deliveries - 1), LDH (largest; mean of the
runs' largest), latency p50 / p99 / max over the pooled deliveries and the
p99 range of the runs, GRAFTs (with an id) per 100 deliveries, the share of
deliveries that came after the receiver had sent a GRAFT for the id,
anti-entropy repairs, the pieces of the eager graph at the end (connected
components of the symmetric eager links among live nodes; 1 = a spanning
structure), and the wall and CPU time of the runs. A summary then shows
each triple's p99 and RMR relative to the current defaults, case by case.

Method: each run is one simulation (the real nodes, `sim.runner.Runner`),
SWIM on (the default), without the codec (it does not change Plumtree's
behaviour, only byte counts); one worker process per run (``--jobs``,
default: CPU count): the small runs first, then the large ones largest
first. Each run has a wall budget (``--run-budget``: a run that runs out
stops and says so) and no run starts after the overall budget
(``--budget``: the rest are listed as skipped). ``--runs FILE`` appends each
run's result to FILE as a JSON line; with ``--reuse`` the runs already there
are not run again (so an interrupted sweep, or one with a triple added,
picks up where it was).

Usage:
    .venv/bin/python bench/plumtree_timers.py [--quick] [--jobs 2]
        [--cases steady-100,steady-1000,burst-100,burst-1000,massfail-1000,wan-100,wan-1000]
        [--triples 0.2/0.5/0.25,0.1/0.25/0.12,...] [--seeds 1,2,3]
        [--budget 2700] [--run-budget 1200] [--codec] [--no-swim] [--json FILE]
        [--runs FILE.jsonl [--reuse | --report-only]]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hashlib

from overlay.ids import NodeId
from overlay.io import Deliver, Output, Send
from overlay.messages import Gossip, Graft, IHave, MsgId, Prune
from sim import runner, scenario
from sim.scenario import Scenario

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BURST = HERE / "plumtree_burst.toml"

Triple = tuple[float, float, float]
Result = dict[str, Any]

CURRENT: Triple = (0.2, 0.5, 0.25)
TRIPLES: list[Triple] = [
    CURRENT,
    (0.1, 0.25, 0.12),
    (0.05, 0.15, 0.075),
    (0.02, 0.1, 0.05),
    (0.005, 0.08, 0.04),  # iroh-gossip: 5 ms dispatch, 80 ms, 40 ms
]
WAN = ("network.latency_min=0.05", "network.latency_max=0.15")


@dataclass(frozen=True, slots=True)
class Case:
    key: str
    scenario: str  # a built-in name or a TOML path
    nodes: int
    sets: tuple[str, ...]
    seeds: tuple[int, ...]
    measure_from_all: bool = False  # measure from the first `from = "all"` publish
    cost: float = 1.0  # relative CPU cost of one run, for scheduling largest first


CASES: dict[str, Case] = {
    c.key: c
    for c in (
        Case("steady-100", "steady", 100, (), (1, 2, 3), cost=1),
        Case("steady-1000", "steady", 1000, (), (1, 2, 3), cost=25),
        Case("burst-100", str(BURST), 100, (), (1, 2, 3), True, cost=2),
        Case("burst-1000", str(BURST), 1000, ("rounds=1",), (1,), True, cost=70),
        Case("massfail-1000", "mass-failure", 1000, ("fail_fraction=0.5",), (1,), cost=100),
        Case("wan-100", "steady", 100, WAN, (1, 2, 3), cost=1),
        Case("wan-1000", "steady", 1000, WAN, (1,), cost=25),
    )
}
QUICK = ("steady-100", "burst-100", "wan-100")
# (case, triple, seed, codec, SWIM on, wall budget of the run, start deadline)
Task = tuple[Case, Triple, int, bool, bool, float, float]


# ------------------------------------------------------------- one run


class OutOfTime(Exception):
    """Raised from the progress callback when a run's wall budget is spent."""

    def __init__(self, at: float) -> None:
        super().__init__(at)
        self.at = at


class Repairs:
    """Observer of every output: GRAFTs (with an id) and PRUNEs sent, and
    anti-entropy repair payloads, for the broadcasts the tracker measures;
    and which (node, id) had sent a GRAFT for the id before it delivered."""

    def __init__(self, broadcasts: dict[MsgId, Any]) -> None:
        self.broadcasts = broadcasts
        self.grafts: list[tuple[float, MsgId]] = []
        self.grafted: set[tuple[NodeId, MsgId]] = set()
        self.prunes: list[float] = []
        self.ihaves: list[float] = []
        self.ae_repairs: list[MsgId] = []
        self.grafted_deliveries: list[MsgId] = []

    def observe(self, t: float, node: NodeId, out: Output) -> None:
        if isinstance(out, Send):
            msg = out.msg
            if isinstance(msg, Graft):
                if msg.id is not None and msg.id in self.broadcasts:
                    self.grafts.append((t, msg.id))
                    self.grafted.add((node, msg.id))
            elif isinstance(msg, Prune):
                self.prunes.append(t)
            elif isinstance(msg, IHave):
                self.ihaves.append(t)
            elif isinstance(msg, Gossip) and msg.repair and msg.id in self.broadcasts:
                self.ae_repairs.append(msg.id)
        elif isinstance(out, Deliver) and (node, out.id) in self.grafted:
            self.grafted_deliveries.append(out.id)


def measure_start(sc: Scenario, from_all: bool) -> float:
    """Simulated time of the first publish step (`from = "all"` when asked)."""
    t = 0.0
    for step in scenario.steps(sc):
        if step.at is not None:
            t = max(t, step.at)
        if isinstance(step, scenario.Publish) and (not from_all or step.sender == "all"):
            return t
        t += scenario.step_length(step)
    return 0.0


def eager_pieces(rn: runner.Runner) -> int:
    """Connected components of the eager graph among live nodes (a link
    counts when both ends hold each other eager)."""
    sim = rn.sim
    live = sim.live()
    alive = set(live)
    parent: dict[NodeId, NodeId] = {n: n for n in live}

    def find(x: NodeId) -> NodeId:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for n in live:
        eager = sim.node(n).plumtree.eager
        for m in eager:
            if m in alive and n in sim.node(m).plumtree.eager:
                a, b = find(n), find(m)
                if a != b:
                    parent[a] = b
    return len({find(n) for n in live})


def code_fingerprint() -> str:
    """A hash of the code and scenarios a run depends on (overlay/, sim/,
    the burst scenario): runs from other code are not reused."""
    h = hashlib.sha1()
    files = [*sorted((ROOT / "overlay").rglob("*.py")), *sorted((ROOT / "sim").rglob("*.py"))]
    files += [*sorted((ROOT / "sim" / "scenarios").glob("*.toml")), BURST]
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


CODE = code_fingerprint()


def run_key(case: Case, triple: Triple, seed: int, codec: bool, swim: bool) -> str:
    """What identifies a run's result in the `--runs` file."""
    sets = ",".join(case.sets)
    return (
        f"{case.key}|{case.scenario.rsplit('/', 1)[-1]}|{case.nodes}|{sets}|"
        f"{fmt_triple(triple)}|seed {seed}|codec {codec}|swim {swim}|code {CODE}"
    )


def run_one(task: Task) -> Result:
    case, triple, seed, codec, swim, run_budget, deadline = task
    base: Result = {
        "key": run_key(case, triple, seed, codec, swim),
        "case": case.key,
        "triple": list(triple),
        "seed": seed,
    }
    if time.time() > deadline:
        return {**base, "status": "skipped"}
    started = time.perf_counter()
    flush, t1, t2 = triple
    sets = [
        *case.sets,
        f"plumtree.ihave_flush={flush}",
        f"plumtree.graft_timeout_1={t1}",
        f"plumtree.graft_timeout_2={t2}",
    ]
    if not swim:
        sets.append("swim.enabled=false")
    try:
        sc = scenario.override(scenario.load(case.scenario).with_param("nodes", case.nodes), sets)
        since = measure_start(sc, case.measure_from_all)
        rn = runner.Runner(sc, seed, use_codec=codec)
        limit = time.perf_counter() + run_budget

        def progress(now: float, total: float, events: int) -> None:
            if time.perf_counter() > limit:
                raise OutOfTime(now)

        rn.progress = progress
        repairs = Repairs(rn.broadcasts.broadcasts)
        rn.sim.observers.append(repairs.observe)
        outcome = rn.run()
    except OutOfTime as exc:
        return {
            **base,
            "status": "cut",
            "cut_at_s": exc.at,
            "wall_s": time.perf_counter() - started,
        }
    except Exception as exc:  # a benchmark reports, it does not fail
        return {**base, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    live = frozenset(rn.sim.live())
    summary = rn.broadcasts.summary(live, since=since)
    chosen = [b for b in rn.broadcasts.broadcasts.values() if b.time >= since]
    latencies: list[float] = []
    payloads = deliveries = 0
    for b in chosen:
        payloads += b.payloads
        deliveries += len(b.deliveries)
        latencies.extend(t - b.time for n, (t, _) in b.deliveries.items() if n in b.live)
    latencies.sort()
    measured = {b.id for b in chosen}
    failure = outcome.report.get("failure")
    return {
        **base,
        "status": "ok",
        "sent": summary["sent"],
        "reliability": summary["reliability"],
        "worst_broadcast": min(summary["reliability_by_broadcast"], default=1.0),
        "undelivered": summary["undelivered"],
        "duplicates": summary["duplicates"],
        "rmr": summary["rmr"],
        "payloads": payloads,
        "deliveries": deliveries,
        "ldh": summary["ldh_max"],
        "p50": summary["latency_p50_s"],
        "p99": summary["latency_p99_s"],
        "latencies": latencies,
        "grafts": sum(1 for t, mid in repairs.grafts if mid in measured),
        "grafted_deliveries": sum(1 for mid in repairs.grafted_deliveries if mid in measured),
        "ae_repairs": sum(1 for mid in repairs.ae_repairs if mid in measured),
        "prunes": sum(1 for t in repairs.prunes if t >= since),
        "ihaves": sum(1 for t in repairs.ihaves if t >= since),
        "eager_pieces": eager_pieces(rn),
        "overlay_connected": outcome.report["overlay"]["connected"],
        "recovered_after_s": failure["recovered_after_s"] if failure else None,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


# ------------------------------------------------------------- aggregation


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile (as `sim.broadcast_metrics` computes it)."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(1, math.ceil(p / 100 * len(sorted_values))) - 1]


def merge_sorted(lists: Iterable[list[float]]) -> list[float]:
    out = [x for values in lists for x in values]
    out.sort()
    return out


def aggregate(runs: list[Result]) -> Result:
    ok = [r for r in runs if r["status"] == "ok"]
    agg: Result = {
        "runs": len(runs),
        "ok": len(ok),
        "not_ok": [f"seed {r['seed']}: {r['status']}" for r in runs if r["status"] != "ok"],
        "wall_s": sum(r.get("wall_s", 0.0) for r in runs),
    }
    if not ok:
        return agg
    lat = merge_sorted(r["latencies"] for r in ok)
    payloads = sum(r["payloads"] for r in ok)
    deliveries = sum(r["deliveries"] for r in ok)
    agg.update(
        sent=sum(r["sent"] for r in ok),
        reliability=sum(r["reliability"] for r in ok) / len(ok),
        worst_broadcast=min(r["worst_broadcast"] for r in ok),
        undelivered=sum(r["undelivered"] for r in ok),
        duplicates=sum(r["duplicates"] for r in ok),
        rmr=payloads / deliveries - 1.0 if deliveries else 0.0,
        rmr_runs=[r["rmr"] for r in ok],
        ldh=max(r["ldh"] for r in ok),
        ldh_mean=sum(r["ldh"] for r in ok) / len(ok),
        p50=pct(lat, 50),
        p90=pct(lat, 90),
        p99=pct(lat, 99),
        max=lat[-1] if lat else 0.0,
        p99_runs=[r["p99"] for r in ok],
        grafts_per_100=100.0 * sum(r["grafts"] for r in ok) / deliveries if deliveries else 0.0,
        grafted_share=sum(r["grafted_deliveries"] for r in ok) / deliveries if deliveries else 0.0,
        ae_repairs=sum(r["ae_repairs"] for r in ok),
        ihave_per_delivery=sum(r["ihaves"] for r in ok) / deliveries if deliveries else 0.0,
        prunes_per_bcast=sum(r["prunes"] for r in ok) / max(1, sum(r["sent"] for r in ok)),
        eager_pieces=[r["eager_pieces"] for r in ok],
        overlay_connected=all(r["overlay_connected"] for r in ok),
        recovered_after_s=[
            r["recovered_after_s"] for r in ok if r["recovered_after_s"] is not None
        ],
        cpu_s=sum(r["cpu_s"] for r in ok),
        peak_rss_mb=max(r["peak_rss_mb"] for r in ok),
    )
    return agg


# ------------------------------------------------------------- printing


def fmt_triple(t: Triple) -> str:
    return "/".join(f"{x:g}" for x in t)


def ms(x: float) -> str:
    return f"{x * 1000:.0f}"


def print_case(case: Case, rows: dict[Triple, Result]) -> None:
    ok_any = next((a for a in rows.values() if a.get("ok")), None)
    seeds = ",".join(map(str, case.seeds))
    extra = f" ({', '.join(case.sets)})" if case.sets else ""
    print(
        f"\n## {case.key}: {case.scenario.rsplit('/', 1)[-1]}, {case.nodes} nodes{extra}, "
        f"seeds {seeds}" + (f", {ok_any['sent']} broadcasts measured" if ok_any else "")
    )
    print(
        f"{'flush/t1/t2 (s)':<18} {'rel':>7} {'worst':>6} {'RMR':>6} {'RMR runs':>17} "
        f"{'LDH':>4} {'LDHm':>5} {'p50':>5} {'p90':>5} {'p99':>5} {'max':>5} "
        f"{'p99 runs (ms)':>15} {'graft%':>6} {'viaG%':>6} {'AE':>4} {'ih/d':>5} {'prn/b':>6} "
        f"{'pieces':>9} {'wall':>6} {'cpu':>6}"
    )
    for triple, a in rows.items():
        name = fmt_triple(triple)
        if not a.get("ok"):
            print(f"{name:<18} no result: {'; '.join(a['not_ok']) or 'not run'}")
            continue
        rmr_runs = "/".join(f"{x:.3f}" for x in a["rmr_runs"])
        p99_runs = "/".join(ms(x) for x in a["p99_runs"])
        pieces = "/".join(map(str, a["eager_pieces"]))
        print(
            f"{name:<18} {a['reliability']:>7.4f} {a['worst_broadcast']:>6.3f} {a['rmr']:>6.3f} "
            f"{rmr_runs:>17} {a['ldh']:>4} {a['ldh_mean']:>5.1f} {ms(a['p50']):>5} "
            f"{ms(a['p90']):>5} {ms(a['p99']):>5} {ms(a['max']):>5} {p99_runs:>15} "
            f"{a['grafts_per_100']:>6.2f} {100 * a['grafted_share']:>6.2f} {a['ae_repairs']:>4} "
            f"{a['ihave_per_delivery']:>5.2f} {a['prunes_per_bcast']:>6.1f} {pieces:>9} "
            f"{a['wall_s']:>6.0f} {a['cpu_s']:>6.0f}"
        )
        notes = []
        if a["not_ok"]:
            notes.append("; ".join(a["not_ok"]))
        if a["undelivered"] or a["duplicates"]:
            notes.append(f"undelivered {a['undelivered']}, duplicate deliveries {a['duplicates']}")
        if not a["overlay_connected"]:
            notes.append("overlay NOT connected at the end")
        if a["recovered_after_s"]:
            rec = "/".join(f"{x:.2f}" for x in a["recovered_after_s"])
            notes.append(f"overlay whole again after {rec} s")
        if notes:
            print(f"{'':<18}   {' | '.join(notes)}")


def print_relative(cases: list[Case], table: dict[str, dict[Triple, Result]]) -> None:
    triples = list(next(iter(table.values())).keys()) if table else []
    if not triples:
        return
    base = triples[0]
    print(f"\n## relative to {fmt_triple(base)}: p99 ratio / RMR difference, per case")
    print(f"{'flush/t1/t2 (s)':<18} " + " ".join(f"{c.key:>17}" for c in cases))
    for triple in triples:
        cells = []
        for c in cases:
            a, b = table[c.key][triple], table[c.key][base]
            if a.get("ok") and b.get("ok") and b["p99"] > 0:
                cells.append(f"{a['p99'] / b['p99']:>7.2f} {a['rmr'] - b['rmr']:>+9.3f}")
            else:
                cells.append(f"{'-':>17}")
        print(f"{fmt_triple(triple):<18} " + " ".join(cells))


# ------------------------------------------------------------- main


def parse_triples(text: str) -> list[Triple]:
    out: list[Triple] = []
    for item in text.split(","):
        parts = [float(x) for x in item.strip().split("/")]
        if len(parts) != 3 or min(parts) <= 0:
            raise SystemExit(f"--triples: {item!r} is not FLUSH/T1/T2 with positive values")
        out.append((parts[0], parts[1], parts[2]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated case keys")
    ap.add_argument("--quick", action="store_true", help="the 100-node cases, seed 1 only")
    ap.add_argument("--triples", help="FLUSH/T1/T2,... (default: the five of the docstring)")
    ap.add_argument("--seeds", help="S,S,...: these seeds for every case (default: per case)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--budget", type=float, default=2700.0, help="no run starts after (s)")
    ap.add_argument("--run-budget", type=float, default=1200.0, help="wall budget per run (s)")
    ap.add_argument("--codec", action="store_true", help="run the wire codec (slower)")
    ap.add_argument("--no-swim", action="store_true", help="HyParView + Plumtree alone")
    ap.add_argument("--json", metavar="FILE", help="write the aggregates (no raw latencies)")
    ap.add_argument("--runs", metavar="FILE", help="append each run's result (JSON lines)")
    ap.add_argument(
        "--reuse", action="store_true", help="take the runs already in --runs FILE as done"
    )
    ap.add_argument(
        "--report-only", action="store_true", help="run nothing: tables from --runs FILE"
    )
    args = ap.parse_args(argv)

    keys = list(QUICK) if args.quick else [k.strip() for k in args.cases.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CASES]
    if unknown:
        print(f"unknown case(s) {unknown}; known: {', '.join(CASES)}", file=sys.stderr)
        return 2
    cases = [CASES[k] for k in keys]
    if args.quick:
        cases = [
            Case(c.key, c.scenario, c.nodes, c.sets, (1,), c.measure_from_all, c.cost)
            for c in cases
        ]
    if args.seeds:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
        cases = [
            Case(c.key, c.scenario, c.nodes, c.sets, seeds, c.measure_from_all, c.cost)
            for c in cases
        ]
    triples = parse_triples(args.triples) if args.triples else list(TRIPLES)

    t0 = time.time()
    deadline = t0 + args.budget
    tasks = [
        (c, t, s, args.codec, not args.no_swim, args.run_budget, deadline)
        for c in cases
        for t in triples
        for s in c.seeds
    ]
    # The small runs first (their figures come early), then the large ones
    # largest first (so that the processes finish together).
    tasks.sort(key=lambda t: (0, t[0].cost) if t[0].cost < 10 else (1, -t[0].cost))
    done: dict[str, Result] = {}
    if args.runs and (args.reuse or args.report_only) and Path(args.runs).exists():
        for line in Path(args.runs).read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("status") == "ok":
                    done[r["key"]] = r
    keyed = [(run_key(t[0], t[1], t[2], t[3], t[4]), t) for t in tasks]
    reused = [done[k] for k, _ in keyed if k in done]
    tasks = [task for k, task in keyed if k not in done]
    if args.report_only:
        tasks = []
    print(
        f"plumtree_timers: {len(tasks)} runs to do, {len(reused)} reused from {args.runs} "
        f"({len(cases)} cases x {len(triples)} triples x seeds), {args.jobs} processes, "
        f"codec {'on' if args.codec else 'off'}, "
        f"SWIM {'off' if args.no_swim else 'on'}, budget {args.budget:.0f} s "
        f"(per run {args.run_budget:.0f} s), code {CODE}",
        file=sys.stderr,
    )
    results: list[Result] = list(reused)
    ctx = multiprocessing.get_context("fork")
    # One run per process: its peak RSS and CPU time are its own.
    with ctx.Pool(processes=max(1, args.jobs), maxtasksperchild=1) as pool:
        for r in pool.imap_unordered(run_one, tasks):
            results.append(r)
            if args.runs:
                with open(args.runs, "a", encoding="utf-8") as f:
                    f.write(json.dumps(r) + "\n")
            tag = f"{r['case']} {fmt_triple(tuple(r['triple']))} seed {r['seed']}"
            if r["status"] == "ok":
                info = (
                    f"rel {r['reliability']:.4f} RMR {r['rmr']:.3f} LDH {r['ldh']} "
                    f"p50 {ms(r['p50'])} ms p99 {ms(r['p99'])} ms, {r['wall_s']:.0f} s wall"
                )
            else:
                info = r["status"] + (f" ({r.get('error') or r.get('cut_at_s')})")
            print(
                f"[{len(results)}/{len(tasks)} {time.time() - t0:6.0f} s] {tag}: {info}",
                file=sys.stderr,
                flush=True,
            )

    table: dict[str, dict[Triple, Result]] = {}
    for c in cases:
        table[c.key] = {}
        for t in triples:
            runs = [r for r in results if r["case"] == c.key and tuple(r["triple"]) == t]
            table[c.key][t] = aggregate(runs)
    print(
        f"# Plumtree timers: ihave_flush / graft_timeout_1 / graft_timeout_2, code {CODE} "
        f"(codec {'on' if args.codec else 'off'}, SWIM {'off' if args.no_swim else 'on'})"
    )
    print(
        "rel: reliability (mean of runs); worst: worst single broadcast; RMR pooled; "
        "LDH max, LDHm mean of runs; latencies in ms over pooled deliveries;\n"
        "graft%: GRAFTs with an id per 100 deliveries; viaG%: deliveries after the "
        "receiver GRAFTed the id; AE: anti-entropy repair payloads;\nih/d: IHAVE messages "
        "sent per delivery (all traffic from the first measured broadcast on); prn/b: PRUNEs sent "
        "per measured broadcast (all traffic); pieces: eager-graph components at the end, "
        "per run; wall, cpu: seconds, summed over runs"
    )
    for c in cases:
        print_case(c, table[c.key])
    print_relative(cases, table)
    total = time.time() - t0
    skipped = sum(1 for r in results if r["status"] != "ok")
    print(f"\ntotal wall {total:.0f} s, {len(results) - skipped}/{len(results)} runs ok")
    if args.json:
        data = {c.key: {fmt_triple(t): a for t, a in table[c.key].items()} for c in cases}
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
