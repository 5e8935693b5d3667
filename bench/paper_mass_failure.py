"""The HyParView paper's mass-failure experiment on the simulator (issue 3,
section 5; Leitao, Pereira, Rodrigues, DSN 2007, sec. 5).

A settled overlay loses `fail_fraction` of its nodes at once; 50 broadcasts
from random live senders follow, 0.2 s apart, the first at the instant of
the crash. For each fail fraction and cluster size the `mass-failure`
scenario runs with `swim.enabled=false` (HyParView + Plumtree alone, the
paper's setting: no failure detector beyond the broken connection), plus a
few runs of the full stack (SWIM on) for comparison. Per run it records:

- `first`: reliability of the first broadcast after the crash (delivered /
  expected, the expected receivers being the nodes live at the publish and
  at the end), whenever it arrived before the end of the run (20 s drain);
- `mean`, `min`: over the 50 broadcasts after the crash;
- `first_1s`, `mean_1s`: the same counting only deliveries within 1 s of
  the publish: close to what a gossip without repair (the paper's flooding)
  would have delivered, since Plumtree's GRAFT and anti-entropy repairs
  come later than that;
- `first_done_s`: when the first broadcast reached its last receiver;
- `recovered_after_s`: time until the overlay (active views of the live
  nodes) is one connected component again, checked every 0.25 s.

A benchmark, not a test: it prints figures and never fails. Each run is a
fresh spawned process (at most --jobs at once, default 2), under an
address-space cap and a wall-clock limit; results are cached in a JSON file
(default /tmp/paper_mass_failure.json) as soon as each run ends, so an
interrupted sweep resumes where it stopped. --budget bounds the whole sweep:
runs not started by then are listed as missing.

    .venv/bin/python bench/paper_mass_failure.py [--jobs 2] [--budget 7200]
        [--cache FILE.json] [--fresh] [--only 1000,10000,swim]
        [--plot docs/mass-failure.png] [--table-only]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
CONTROL = 0.0  # no crash: the same broadcasts on the intact overlay, for comparison
DEADLINE_S = 1.0  # the "timely" delivery deadline
# What issue 3 quotes of the paper (HyParView, 10,000 nodes): about 100%
# delivery up to 80% simultaneous failure. Nothing else is plotted for it.
PAPER_POINTS = ((0.8, 1.0),)


@dataclass(frozen=True, slots=True)
class Task:
    nodes: int
    fraction: float
    seed: int
    swim: bool
    codec: bool

    @property
    def key(self) -> str:
        return (
            f"n{self.nodes}-f{self.fraction:g}-s{self.seed}-"
            f"{'swim' if self.swim else 'noswim'}-{'codec' if self.codec else 'nocodec'}"
        )

    @property
    def group(self) -> str:
        return f"{self.nodes}{' swim' if self.swim else ''}"


def plan(only: set[str]) -> list[Task]:
    """The sweep, cheapest first so that short budgets still fill the table."""
    tasks: list[Task] = []
    if "1000" in only:
        tasks += [Task(1000, f, s, False, True) for s in (1, 2) for f in (CONTROL, *FRACTIONS)]
    if "swim" in only:
        tasks += [Task(1000, f, 1, True, True) for f in (0.5, 0.8)]
    if "10000" in only:
        tasks += [Task(10_000, f, 1, False, False) for f in (*FRACTIONS, CONTROL)]
    if "10000b" in only:  # a second seed at 10,000 when there is time
        tasks += [Task(10_000, f, 2, False, False) for f in FRACTIONS]
    return tasks


# ------------------------------------------------------------------ worker


def _delivered_within(bc: Any, expected: frozenset[Any], deadline: float) -> float:
    if not expected:
        return 1.0
    got = sum(
        1
        for n in expected
        if (d := bc.deliveries.get(n)) is not None and d[0] - bc.time <= deadline
    )
    return got / len(expected)


def measure(task: Task) -> dict[str, Any]:
    """One run of mass-failure; the figures the sweep keeps."""
    from sim import runner, scenario

    sets = [f"fail_fraction={task.fraction}"]
    if not task.swim:
        sets.append("swim.enabled=false")
    sc = scenario.override(scenario.load("mass-failure").with_param("nodes", task.nodes), sets)
    r = runner.Runner(sc, task.seed, use_codec=task.codec)
    rep = r.run().report
    f = rep["failure"]
    by = f["reliability_by_broadcast"]
    live = frozenset(r.sim.live())
    after = [b for b in r.broadcasts.broadcasts.values() if b.time >= f["at_s"]]
    timely: list[float] = []
    first_done: float | None = None
    for i, b in enumerate(after):
        expected = (b.live & live) - {b.origin}
        timely.append(_delivered_within(b, expected, DEADLINE_S))
        if i == 0:
            times = [b.deliveries[n][0] - b.time for n in expected if n in b.deliveries]
            first_done = max(times) if times else None
    return {
        **asdict(task),
        "crashed": f["crashed"],
        "first": by[0] if by else None,
        "mean": f["reliability"],
        "min": min(by) if by else None,
        "below_1": sum(1 for x in by if x < 1.0),
        "first_1s": timely[0] if timely else None,
        "mean_1s": sum(timely) / len(timely) if timely else None,
        "first_done_s": first_done,
        "by_broadcast": [round(x, 4) for x in by],
        "by_broadcast_1s": [round(x, 4) for x in timely],
        "recovered_after_s": f["recovered_after_s"],
        "first_publish_after_crash_s": after[0].time - f["at_s"] if after else None,
        "sent_after": len(after),
        "latency_p99_s": rep["broadcast"]["latency_p99_s"],
        "end_connected": rep["overlay"]["connected"],
        "end_components": rep["overlay"]["components"],
        "wall_s": rep["run"]["wall_s"],
        "events": rep["run"]["events"],
        "peak_rss_mb": rep["run"]["peak_rss_mb"],
    }


def _child(task: Task, conn: Connection, max_gb: float) -> None:
    limit = int(max_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        conn.send(("ok", measure(task)))
    except MemoryError:
        conn.send(("error", f"out of memory (over {max_gb:g} GB)"))
    except Exception as exc:  # a benchmark reports, never fails
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


# ------------------------------------------------------------------ cache


def load_cache(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_cache(path: Path, cache: dict[str, dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------- scheduler


@dataclass(slots=True)
class Running:
    task: Task
    proc: multiprocessing.process.BaseProcess
    conn: Connection
    started: float


def sweep(
    tasks: list[Task],
    cache: dict[str, dict[str, Any]],
    cache_path: Path,
    *,
    jobs: int,
    budget: float,
    timeout: float,
    max_gb: float,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    todo = [t for t in tasks if t.key not in cache or "error" in cache[t.key]]
    start = time.monotonic()
    running: list[Running] = []
    print(f"{len(tasks) - len(todo)} of {len(tasks)} runs cached; {len(todo)} to run", flush=True)
    while todo or running:
        now = time.monotonic()
        while todo and len(running) < jobs and now - start < budget:
            task = todo.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(task, child, max_gb), daemon=True)
            proc.start()
            child.close()
            running.append(Running(task, proc, parent, now))
            print(f"  start {task.key}", flush=True)
        if todo and now - start >= budget and not running:
            break
        for r in list(running):
            result: tuple[str, Any] | None = None
            if r.conn.poll():
                try:
                    result = r.conn.recv()
                except EOFError:
                    result = ("error", f"worker died (exit {r.proc.exitcode})")
            elif not r.proc.is_alive():
                result = ("error", f"worker died (exit {r.proc.exitcode})")
            elif now - r.started > timeout:
                r.proc.kill()
                result = ("error", f"over the {timeout:.0f} s limit")
            if result is None:
                continue
            r.proc.join(5)
            running.remove(r)
            status, value = result
            wall = time.monotonic() - r.started
            if status == "ok":
                cache[r.task.key] = value
                print(f"  done  {r.task.key} in {wall:.0f} s: {_brief(value)}", flush=True)
            else:
                cache[r.task.key] = {**asdict(r.task), "error": value}
                print(f"  FAIL  {r.task.key} after {wall:.0f} s: {value}", flush=True)
            save_cache(cache_path, cache)
        time.sleep(0.5)
    for t in todo:
        print(f"  skipped {t.key}: over the {budget:.0f} s budget", flush=True)


def _brief(v: dict[str, Any]) -> str:
    return (
        f"first {_pct(v['first'])}, mean {_pct(v['mean'])}, min {_pct(v['min'])}, "
        f"first<=1s {_pct(v['first_1s'])}, recovered {_sec(v['recovered_after_s'])}"
    )


# ------------------------------------------------------------------ report


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _sec(x: float | None) -> str:
    return "never" if x is None else f"{x:.2f} s"


def _mean(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def aggregate(tasks: list[Task], cache: dict[str, dict[str, Any]]) -> dict[str, dict[float, Any]]:
    """group -> fraction -> figures over the seeds that ran (mean; min of min)."""
    out: dict[str, dict[float, Any]] = {}
    runs: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for t in tasks:
        v = cache.get(t.key)
        if v is not None and "error" not in v:
            runs.setdefault((t.group, t.fraction), []).append(v)
    for (group, frac), vs in sorted(runs.items()):
        rec = [v["recovered_after_s"] for v in vs]
        out.setdefault(group, {})[frac] = {
            "seeds": len(vs),
            "first": _mean(v["first"] for v in vs),
            "first_min": min(v["first"] for v in vs),
            "mean": _mean(v["mean"] for v in vs),
            "min": min(v["min"] for v in vs),
            "below_1": sum(v["below_1"] for v in vs),
            "first_1s": _mean(v["first_1s"] for v in vs),
            "mean_1s": _mean(v["mean_1s"] for v in vs),
            "first_done_s": _mean(v["first_done_s"] for v in vs),
            "recovered_after_s": None if any(x is None for x in rec) else _mean(rec),
            "recovered_max_s": None if any(x is None for x in rec) else max(rec),
            "never_recovered": sum(1 for x in rec if x is None),
            "wall_s": _mean(v["wall_s"] for v in vs),
            "peak_rss_mb": max(v["peak_rss_mb"] for v in vs),
            "crashed": vs[0]["crashed"],
        }
    return out


def table(agg: dict[str, dict[float, Any]]) -> str:
    lines = [
        "| nodes | fail | crashed | seeds | first | mean (50) | min | <100% | first <=1 s "
        "| mean <=1 s | first done | whole again (mean / max) | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group, rows in agg.items():
        for frac, a in rows.items():
            rec = (
                f"never ({a['never_recovered']} of {a['seeds']})"
                if a["recovered_after_s"] is None
                else f"{a['recovered_after_s']:.2f} / {a['recovered_max_s']:.2f} s"
            )
            lines.append(
                f"| {group} | {frac:.0%} | {a['crashed']:,} | {a['seeds']} | {_pct(a['first'])} "
                f"| {_pct(a['mean'])} | {_pct(a['min'])} | {a['below_1']} | {_pct(a['first_1s'])} "
                f"| {_pct(a['mean_1s'])} | {_sec(a['first_done_s'])} | {rec} | {a['wall_s']:.0f} |"
            )
    return "\n".join(lines)


def plot(agg: dict[str, dict[float, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    styles = {"1000": ("tab:blue", "o"), "10000": ("tab:red", "s")}
    for group, rows in agg.items():
        xs = [100 * f for f in rows]
        if group in styles:
            color, marker = styles[group]
            label = f"{int(group):,} nodes, HyParView+Plumtree"
            curves = (
                (axes[0], "first", "-", "first broadcast"),
                (axes[0], "first_1s", ":", "first, delivered <= 1 s"),
                (axes[1], "mean", "-", "mean of 50"),
                (axes[1], "min", "--", "min of 50"),
                (axes[1], "mean_1s", ":", "mean, delivered <= 1 s"),
            )
            for ax, key, line, what in curves:
                ax.plot(
                    xs,
                    [100 * a[key] for a in rows.values()],
                    marker=marker,
                    color=color,
                    linestyle=line,
                    label=f"{label}: {what}",
                )
            rec = [a["recovered_after_s"] for a in rows.values()]
            axes[2].plot(
                [x for x, r in zip(xs, rec, strict=True) if r is not None],
                [r for r in rec if r is not None],
                marker=marker,
                color=color,
                label=f"{int(group):,} nodes",
            )
        else:  # the full stack, SWIM on: a few points
            for ax, key in ((axes[0], "first"), (axes[1], "mean")):
                ax.plot(
                    xs,
                    [100 * a[key] for a in rows.values()],
                    linestyle="none",
                    marker="*",
                    markersize=13,
                    color="tab:green",
                    label="1,000 nodes, full stack (SWIM on)",
                )
            rec = [a["recovered_after_s"] for a in rows.values()]
            axes[2].plot(
                [x for x, r in zip(xs, rec, strict=True) if r is not None],
                [r for r in rec if r is not None],
                linestyle="none",
                marker="*",
                markersize=13,
                color="tab:green",
                label="1,000 nodes, full stack",
            )
    for ax in axes[:2]:
        ax.plot(
            [100 * x for x, _ in PAPER_POINTS],
            [100 * y for _, y in PAPER_POINTS],
            linestyle="none",
            marker="D",
            markersize=10,
            markerfacecolor="none",
            markeredgecolor="black",
            label="paper (HyParView, 10,000): about 100% at 80%",
        )
        ax.set_xlabel("nodes crashed at once (%)")
        ax.set_ylabel("reliability (%)")
        ax.set_xlim(5, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0].set_title("first broadcast after the crash")
    axes[1].set_title("50 broadcasts after the crash (0.2 s apart)")
    axes[2].set_title("overlay connected again after")
    axes[2].set_xlabel("nodes crashed at once (%)")
    axes[2].set_ylabel("seconds")
    axes[2].set_xlim(5, 100)
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.suptitle("mass-failure on the simulator (swim.enabled=false unless marked)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=2, help="runs at once (default 2)")
    p.add_argument("--budget", type=float, default=4 * 3600.0, help="seconds for the sweep")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    p.add_argument("--max-gb", type=float, default=6.0, help="address space per run (GB)")
    p.add_argument("--cache", default="/tmp/paper_mass_failure.json")
    p.add_argument("--fresh", action="store_true", help="ignore the cache")
    p.add_argument(
        "--only",
        default="1000,10000,swim",
        help="groups: 1000, 10000, swim, 10000b (a second seed at 10,000)",
    )
    p.add_argument("--plot", default="", metavar="FILE.png")
    p.add_argument("--table-only", action="store_true", help="print from the cache, run nothing")
    args = p.parse_args()
    tasks = plan({s.strip() for s in args.only.split(",") if s.strip()})
    cache_path = Path(args.cache)
    cache = {} if args.fresh else load_cache(cache_path)
    if not args.table_only:
        sweep(
            tasks,
            cache,
            cache_path,
            jobs=args.jobs,
            budget=args.budget,
            timeout=args.timeout,
            max_gb=args.max_gb,
        )
    # every group the cache holds, not only this invocation's
    everything = plan({"1000", "swim", "10000", "10000b"})
    agg = aggregate(everything, cache)
    print(table(agg))
    missing = [t.key for t in tasks if t.key not in cache]
    if missing:
        print(f"missing: {', '.join(missing)}")
    failed = {k: v["error"] for k, v in cache.items() if "error" in v}
    for k, e in failed.items():
        print(f"failed: {k}: {e}")
    if args.plot:
        plot(agg, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
