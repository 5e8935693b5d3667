"""How the simulator scales: the steady scenario at 1,000 and 10,000 nodes
(100,000 with --huge). Prints wall time, events per second, peak RSS and
bytes per node; never fails on time (issue 3, section 4: targets on a 2-core
machine are 1,000 nodes <= 10 s, 10,000 <= 120 s, 100,000 within 8 GB).

SWIM keeps the full member list on every node, so a simulation holding all
of them is O(N^2) in memory (1.9 GB peak at 2,000 nodes): sizes above
--swim-max (default 2,000) run with `swim.enabled=false` (HyParView +
Plumtree alone) and their row says `off` in the swim column. --swim-max 0
turns SWIM off everywhere; a huge value keeps it on everywhere.

Each size runs in a fresh process (spawned, not forked), so its peak RSS is
its own, under an address-space cap (--max-gb, default 8: the issue's
budget) so that a size that does not fit stops with a line saying so rather
than swapping a shared machine to a halt. `make bench` runs the defaults.

--entry-bytes N measures what SWIM's lists cost without simulating the
joins: N nodes each merge every member's alive state, decoded from real
push-pull frames (their own copy, as in a run), and answer one push-pull;
it prints the RSS growth per member entry (N^2 of them), the figure that
decides whether N nodes with SWIM on fit (issue 14: 413 bytes at 1,000
before the wire states were shared, 171 after; 195 at 3,000, where the
dicts are emptier).

    .venv/bin/python bench/sim_scale.py [--sizes 1000,10000] [--huge]
        [--scenario steady] [--seed 1] [--no-codec] [--set KEY=VALUE ...]
        [--max-gb 8] [--swim-max 2000] [--timeout SECONDS]
        [--profile FILE.txt]   # pyinstrument, first size only
    .venv/bin/python bench/sim_scale.py --entry-bytes 1000 [--max-gb 8]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from pathlib import Path
from typing import Any

from sim import runner, scenario
from sim.progress import Bar


def _cap(max_gb: float) -> None:
    limit = int(max_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def one(name: str, sets: list[str], nodes: int, seed: int, codec: bool, profile: str) -> Any:
    sc = scenario.override(scenario.load(name).with_param("nodes", nodes), sets)
    bar = Bar(enabled=sys.stderr.isatty())
    try:
        if not profile:
            return runner.run(sc, seed, use_codec=codec, progress=bar.sim).report
        from pyinstrument import Profiler

        with Profiler() as prof:
            rep = runner.run(sc, seed, use_codec=codec, progress=bar.sim).report
        Path(profile).write_text(prof.output_text(show_all=False), encoding="utf-8")
        return rep
    finally:
        bar.close()


def _rss() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def entry_bytes(n: int) -> str:
    """Full member lists on `n` nodes (see the module notes): bytes per entry."""
    import gc

    from overlay import codec
    from overlay.config import Config
    from overlay.messages import MemberState, PushPull, WireStatus
    from sim.engine import Simulation

    gc.disable()  # nothing to collect: the lists are what is measured
    sim = Simulation(Config(), 1)
    ids = [sim.add_node(f"n{i}") for i in range(n)]
    sim.run_until(0.0)
    big = 1 << 30
    frames = [
        codec.encode(
            ids[0],
            PushPull(
                True, 0, 1, tuple(MemberState(x, 0, WireStatus.ALIVE, {}, None) for x in chunk)
            ),
            big,
        )
        for chunk in (ids[k : k + 1000] for k in range(0, n, 1000))
    ]
    base = _rss()
    started = time.perf_counter()
    for i, nid in enumerate(ids):
        swim = sim.node(nid).swim
        out: list[Any] = []
        for frame in frames:
            msg = codec.decode(frame, big)[1]
            assert isinstance(msg, PushPull)
            swim._merge_all(msg.states, ids[1 if i == 0 else 0], 1.0, out, joining=True, ours=True)
        swim._state_parts(reply=True)
    entries = sum(len(sim.node(x).swim.members) for x in ids)
    grown = _rss() - base
    return (
        f"{n:,} nodes: {entries:,} member entries, RSS +{grown / 2**20:,.0f} MB, "
        f"{grown / entries:.0f} bytes per entry ({time.perf_counter() - started:.0f} s)"
    )


def row(n: int, swim: bool, rep: dict[str, Any]) -> str:
    r, m = rep["run"], rep["messages"]
    size = m["bytes_per_node_per_s"]
    return (
        f"{n:>8,} {'on' if swim else 'off':>4} {r['wall_s']:>8.1f} {r['events']:>11,} "
        f"{r['events_per_s']:>9,.0f} "
        f"{r['sim_time_s']:>6.0f} {r['peak_rss_mb']:>7.0f} {r['peak_rss_mb'] * 1024 / n:>8.1f} "
        f"{m['per_node_per_s']:>10.1f} {'-' if size is None else f'{size:,.0f}':>9} "
        f"{rep['broadcast']['reliability']:>8.2%}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000", help="node counts (default 1000,10000)")
    p.add_argument("--huge", action="store_true", help="also 100,000 nodes")
    p.add_argument("--scenario", default="steady")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-codec", action="store_true")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--max-gb", type=float, default=8.0, help="address space per run (GB)")
    p.add_argument(
        "--swim-max",
        type=int,
        default=2000,
        help="largest size run with SWIM; larger ones get swim.enabled=false (default 2000)",
    )
    p.add_argument(
        "--timeout", type=float, default=0.0, help="wall seconds per size (default: no limit)"
    )
    p.add_argument("--profile", default="", metavar="FILE.txt")
    p.add_argument(
        "--entry-bytes",
        type=int,
        default=0,
        metavar="N",
        help="only measure bytes per member entry with full lists on N nodes",
    )
    args = p.parse_args()
    if args.entry_bytes:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1, initializer=_cap, initargs=(args.max_gb,)) as pool:
            try:
                print(pool.apply(entry_bytes, (args.entry_bytes,)), flush=True)
            except MemoryError:
                print(f"{args.entry_bytes:,} nodes: out of memory (over {args.max_gb:g} GB)")
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.huge:
        sizes.append(100_000)
    ctx = multiprocessing.get_context("spawn")
    print(
        f"{args.scenario}, seed {args.seed}, codec {'off' if args.no_codec else 'on'}, "
        f"cap {args.max_gb:g} GB, SWIM up to {args.swim_max:,} nodes"
        f"{''.join(' --set ' + s for s in args.sets)}"
    )
    print(
        f"{'nodes':>8} {'swim':>4} {'wall s':>8} {'events':>11} {'events/s':>9} {'sim s':>6} "
        f"{'RSS MB':>7} {'KB/node':>8} {'msg/node/s':>10} {'B/node/s':>9} {'reliab.':>8}",
        flush=True,
    )
    for i, n in enumerate(sizes):
        started = time.perf_counter()
        swim = n <= args.swim_max
        sets = args.sets if swim else [*args.sets, "swim.enabled=false"]
        task = (args.scenario, sets, n, args.seed, not args.no_codec)
        try:
            with ctx.Pool(1, initializer=_cap, initargs=(args.max_gb,)) as pool:
                pending = pool.apply_async(one, (*task, args.profile if i == 0 else ""))
                rep = pending.get(args.timeout or None)
        except MemoryError:
            wall = time.perf_counter() - started
            print(f"{n:>8,} out of memory (over {args.max_gb:g} GB) after {wall:.0f} s", flush=True)
            continue
        except multiprocessing.TimeoutError:
            # leaving the `with` terminated the worker
            print(f"{n:>8,} not done within the {args.timeout:.0f} s limit", flush=True)
            continue
        print(row(n, swim, rep), flush=True)
    if args.profile:
        print(f"profile of {sizes[0]:,} nodes: {args.profile}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
