"""`--plot FILE.png`: what the scenario is about, drawn from the run (Agg
backend, no display needed).

Six panels, every time axis in simulated seconds with the scenario's events
marked (the joins, each publish step, a crash, the cut until its heal, a
churn; `sim.timeline`):

- members alive as seen: nodes live, and how many members the healthy nodes
  count alive (mean, min-max band); for a small cut-off group (`isolate`),
  how many other nodes still count it alive;
- overlay components over time (2 during a clean two-way cut, 1 when whole);
- reliability per broadcast at its publish time (the crash or the cut marked);
- latency per broadcast (p50, p99), coloured by publish step (`senders`);
- active view in-degree histogram; delivery latency CDF.

Several seeds draw one line (or set of points) each. `figure(outcomes)`
returns the figure (tests read its titles); `write` saves it.
"""

from __future__ import annotations

import math
from typing import Any

from sim.runner import Outcome

# The panels' titles (tests look for them).
MEMBERS = "members alive as seen"
COMPONENTS = "overlay components"
RELIABILITY = "reliability per broadcast"
LATENCY = "latency per broadcast"
DEGREE = "active view in-degree"
CDF = "delivery latency CDF"

_MARK_COLOURS = {"joins": "0.6", "cut": "tab:red", "churn": "tab:orange", "publish": "tab:blue"}


def write(outcomes: list[Outcome], path: str) -> None:
    import matplotlib.pyplot as plt

    fig = figure(outcomes)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure(outcomes: list[Outcome]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig = plt.figure(figsize=(16, 8.5))
    grid = fig.add_gridspec(2, 3)
    members = fig.add_subplot(grid[0, 0:2])
    comps = fig.add_subplot(grid[0, 2], sharex=members)
    rel = fig.add_subplot(grid[1, 0], sharex=members)
    lat = fig.add_subplot(grid[1, 1], sharex=members)
    sub = grid[1, 2].subgridspec(2, 1, hspace=0.6)
    deg = fig.add_subplot(sub[0])
    cdf = fig.add_subplot(sub[1])

    first = outcomes[0]
    r = first.report
    fig.suptitle(f"{r['scenario']}: {r['nodes']} nodes - {_story(first)}")
    several = len(outcomes) > 1

    for o in outcomes:
        tag = f" (seed {o.report['seed']})" if several else ""
        s = o.series
        t = s.get("t", [])
        members.plot(t, s.get("live", []), color="black", lw=1.2, label=f"nodes live{tag}")
        mean = s.get("alive_seen_mean", [])
        if any(not math.isnan(x) for x in mean):
            members.plot(t, mean, color="tab:green", label=f"alive as seen, mean{tag}")
            members.fill_between(
                t,
                s["alive_seen_min"],
                s["alive_seen_max"],
                color="tab:green",
                alpha=0.2,
                label=f"alive as seen, min-max{tag}",
            )
        cut_off = s.get("cut_off_seen_alive", [])
        if any(not math.isnan(x) for x in cut_off):
            members.plot(
                t,
                cut_off,
                color="tab:red",
                lw=1.5,
                label=f"nodes that see the cut-off one alive{tag}",
            )
        comps.step(t, s.get("components", []), where="post", label=f"seed {o.report['seed']}")
        _per_broadcast(o, rel, lat, tag)

    members.set(title=_members_title(first), ylabel="nodes", xlabel="simulated seconds")
    members.set_ylim(bottom=0)
    comps.set(title=COMPONENTS, ylabel="components", xlabel="simulated seconds")
    comps.set_ylim(bottom=0)
    comps.yaxis.set_major_locator(MaxNLocator(integer=True))
    rel.set(
        title=_reliability_title(first), xlabel="publish time (s)", ylabel="delivered / expected"
    )
    rel.set_ylim(-0.02, 1.02)
    lat.set(title=LATENCY + " (p50 dots, p99 crosses)", xlabel="publish time (s)", ylabel="seconds")
    for ax in (members, comps, rel, lat):
        _draw_marks(ax, first.marks)
    if not any(o.series.get("bc_t") for o in outcomes):
        for ax in (rel, lat, cdf):
            ax.text(0.5, 0.5, "no broadcasts in this scenario", ha="center", transform=ax.transAxes)
    members.legend(fontsize="small", loc="lower right")
    if len({label for label, _, _ in first.marks if label.startswith("publish")}) > 1:
        lat.legend(fontsize="x-small")

    _degree(outcomes, deg)
    for o in outcomes:
        values = o.series.get("latency_cdf_s", [])
        if values:
            n = len(values) - 1
            cdf.plot(values, [i / n for i in range(n + 1)], label=f"seed {o.report['seed']}")
    cdf.set_title(CDF, fontsize="medium")
    cdf.set(xlabel="seconds", ylabel="fraction")
    fig.tight_layout()
    return fig


def _per_broadcast(o: Outcome, rel: Any, lat: Any, tag: str) -> None:
    s = o.series
    t = s.get("bc_t", [])
    if not t:
        return
    steps = [(label, a, b) for label, a, b in o.marks if label.startswith("publish")]
    groups: list[tuple[str, list[int]]] = []
    for label, a, b in steps:
        idx = [i for i, x in enumerate(t) if a - 1e-9 <= x <= b + 1e-9]
        if idx:
            groups.append((label, idx))
    if not groups:
        groups = [("broadcasts", list(range(len(t))))]
    for label, idx in groups:
        xs = [t[i] for i in idx]
        rel.plot(xs, [s["bc_reliability"][i] for i in idx], ".", label=f"{label}{tag}")
        dots = lat.plot(xs, [s["bc_p50"][i] for i in idx], ".", label=f"{label}{tag}")
        lat.plot(xs, [s["bc_p99"][i] for i in idx], "x", ms=4, color=dots[0].get_color())


def _degree(outcomes: list[Outcome], ax: Any) -> None:
    hist: dict[int, int] = {}
    for o in outcomes:
        for k, v in o.report["overlay"]["in_degree_hist"].items():
            hist[int(k)] = hist.get(int(k), 0) + v
    total = sum(hist.values()) or 1
    xs = sorted(hist)
    ax.bar(xs, [hist[x] / total for x in xs], color="tab:blue")
    ax.set_title(DEGREE + " (at the end)", fontsize="medium")
    ax.set(xlabel="in-degree", ylabel="fraction")
    if xs and xs[-1] - xs[0] < 30:
        ax.set_xticks(range(xs[0], xs[-1] + 1))


def _draw_marks(ax: Any, marks: list[tuple[str, float, float]]) -> None:
    for label, start, end in marks:
        kind = label.split()[0]
        colour = _MARK_COLOURS.get(kind, "black")
        if end > start:
            alpha = 0.06 if kind == "publish" else 0.12
            ax.axvspan(start, end, color=colour, alpha=alpha, lw=0)
        else:
            ax.axvline(start, color=colour if kind != "heal" else "tab:green", ls="--", lw=1)
        if ax.get_title().startswith(MEMBERS) and kind != "publish":
            ax.annotate(
                label,
                (start, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -10),
                textcoords="offset points",
                fontsize="small",
                color=colour,
            )


def _find(marks: list[tuple[str, float, float]], kind: str) -> tuple[str, float, float] | None:
    return next((m for m in marks if m[0].split()[0] == kind), None)


def _members_title(o: Outcome) -> str:
    cut, crash, churn = _find(o.marks, "cut"), _find(o.marks, "crash"), _find(o.marks, "churn")
    if cut is not None:
        return f"{MEMBERS}: cut at {cut[1]:.0f} s, healed at {cut[2]:.0f} s"
    if crash is not None:
        return f"{MEMBERS}: {crash[0]} at {crash[1]:.0f} s"
    if churn is not None:
        return f"{MEMBERS}: churn from {churn[1]:.0f} s to {churn[2]:.0f} s"
    return MEMBERS


def _reliability_title(o: Outcome) -> str:
    crash, cut = _find(o.marks, "crash"), _find(o.marks, "cut")
    if crash is not None:
        return f"{RELIABILITY} (crash at {crash[1]:.0f} s)"
    if cut is not None:
        return f"{RELIABILITY} (cut {cut[1]:.0f}-{cut[2]:.0f} s)"
    return RELIABILITY


def _story(o: Outcome) -> str:
    """A line on what happened, from the report."""
    r = o.report
    part, fail = r.get("partition"), r.get("failure")
    if part is not None:
        merged = part.get("members_merged_after_s")
        after = "never" if merged is None else f"{merged:.1f} s"
        return f"sides {'/'.join(map(str, part['groups']))}, members merged {after} after the heal"
    if fail is not None:
        return f"{fail['crashed']} crashed, reliability after {100 * fail['reliability']:.1f}%"
    b = r["broadcast"]
    return (
        f"{b['sent']} broadcasts, reliability {100 * b['reliability']:.1f}%,"
        f" p99 {b['latency_p99_s'] * 1000:.0f} ms"
    )
