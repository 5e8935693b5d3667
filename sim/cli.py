"""`overlay sim`: run a scenario in the simulator and report on it.

Registered as the `sim` subcommand through the `overlay.commands` entry
point, so `daemon/` never imports `sim/`. Bad input (an unknown scenario, bad
TOML, a bad --set key, a missing file, an output path that cannot be
written) is one line on stderr and exit code 2, checked before the run
starts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from sim import report, runner, scenario
from sim.progress import Bar
from sim.scenario import Scenario, ScenarioError

USAGE_ERROR = 2


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sim",
        help="simulate a cluster in-process and report on it",
        usage=(
            "%(prog)s [--nodes N] [--seed S | --seeds S,S,...] [--scenario NAME|FILE.toml]\n"
            "       [--set KEY=VALUE ...] [--json FILE|-] [--plot FILE.png] [--graphml FILE]\n"
            "       [--progress/--no-progress] [--no-codec] [--jobs N] [--list-scenarios]"
        ),
        description=(
            "Run a scenario on the discrete-event simulator (the real protocol nodes over a "
            "modelled network) and report on the overlay, broadcasts, membership and traffic. "
            f"Built-in scenarios: {', '.join(scenario.builtin_names())} (default steady)."
        ),
    )
    p.add_argument(
        "--nodes", type=int, metavar="N", help="cluster size (the scenario's 'nodes' parameter)"
    )
    p.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default 1)")
    p.add_argument(
        "--seeds", metavar="S,S,...", help="run once per seed, in parallel, and aggregate"
    )
    p.add_argument("--scenario", default="steady", metavar="NAME|FILE.toml", help="default: steady")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario parameter, network.KEY, or a config key (swim.probe_period)",
    )
    p.add_argument("--json", metavar="FILE|-", help="write every figure as JSON ('-': stdout)")
    p.add_argument("--plot", metavar="FILE.png", help="write the figures as an image")
    p.add_argument("--graphml", metavar="FILE", help="export the final overlay (.gexf: GEXF)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    p.add_argument("--no-codec", action="store_true", help="skip the wire codec (faster)")
    p.add_argument(
        "--jobs", type=int, metavar="N", help="processes for --seeds (default: CPU count)"
    )
    p.add_argument(
        "--list-scenarios", action="store_true", help="list the built-in scenarios and exit"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ScenarioError as exc:
        print(f"overlay sim: {exc}", file=sys.stderr)
        return USAGE_ERROR


def _run(args: argparse.Namespace) -> int:
    if args.list_scenarios:
        for name in scenario.builtin_names():
            sc = scenario.load(name)
            params = ", ".join(f"{k}={v}" for k, v in sc.params.items())
            print(f"{name:15} {sc.description}\n{'':15} {params}")
        return 0
    sc = _prepare(args)
    seeds = _seeds(args)
    for path in (args.json, args.plot, args.graphml):
        if path is not None and path != "-":
            _check_writable(path)
    use_codec = not args.no_codec
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    bar = Bar(enabled=show)
    try:
        if len(seeds) == 1:
            outcomes = [
                runner.run(
                    sc, seeds[0], use_codec=use_codec, progress=bar.sim, graph_path=args.graphml
                )
            ]
        else:
            outcomes = _parallel(sc, seeds, use_codec, args.graphml, args.jobs, bar)
    finally:
        bar.close()
    reports = [o.report for o in outcomes]
    final = reports[0] if len(reports) == 1 else report.aggregate(reports)
    if args.json is not None:
        text = json.dumps(final, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    if args.plot is not None:
        from sim import plot

        plot.write(outcomes, args.plot)
    print(report.summary(final), file=sys.stderr if args.json == "-" else sys.stdout)
    return 0


def _prepare(args: argparse.Namespace) -> Scenario:
    """The scenario with --nodes and --set applied, checked through."""
    sc = scenario.load(args.scenario)
    if args.nodes is not None:
        if args.nodes < 1:
            raise ScenarioError("--nodes must be at least 1")
        sc = sc.with_param("nodes", args.nodes)
    sc = scenario.override(sc, args.sets)
    scenario.steps(sc)
    scenario.config_of(sc)
    runner.network_of(sc, 0)
    return sc


def _seeds(args: argparse.Namespace) -> list[int]:
    if args.seeds is None:
        return [args.seed]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ScenarioError(f"--seeds {args.seeds!r}: expected integers, comma separated") from None
    if not seeds:
        raise ScenarioError("--seeds lists no seed")
    if len(set(seeds)) != len(seeds):
        raise ScenarioError("--seeds lists a seed twice")
    return seeds


def _check_writable(path: str) -> None:
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise ScenarioError(f"cannot write {path}: no directory {parent}")
    if not os.access(parent, os.W_OK) or Path(path).is_dir():
        raise ScenarioError(f"cannot write {path}")


def _one(sc: Scenario, seed: int, use_codec: bool, graph_path: str | None) -> runner.Outcome:
    return runner.run(sc, seed, use_codec=use_codec, graph_path=graph_path)


def _parallel(
    sc: Scenario,
    seeds: list[int],
    use_codec: bool,
    graph_path: str | None,
    jobs: int | None,
    bar: Bar,
) -> list[runner.Outcome]:
    """One process per seed (at most `jobs` at a time); the overlay of the
    first seed is the one exported. Reports come back in seed order."""
    workers = max(1, min(jobs or os.cpu_count() or 1, len(seeds)))
    done: dict[int, runner.Outcome] = {}
    bar.update(0.0, f"0/{len(seeds)} seeds")
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {
            pool.submit(_one, sc, seed, use_codec, graph_path if i == 0 else None): seed
            for i, seed in enumerate(seeds)
        }
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            bar.update(len(done) / len(seeds), f"{len(done)}/{len(seeds)} seeds")
    return [done[s] for s in seeds]
