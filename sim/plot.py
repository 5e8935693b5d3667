"""`--plot FILE.png`: the report's figures as a matplotlib figure (Agg, no
display needed): active in-degree histogram, reliability per broadcast (after
the failure, for a scenario that crashes nodes) and the delivery latency
CDF. Several seeds draw one line each."""

from __future__ import annotations

from typing import Any

from sim.runner import Outcome


def write(outcomes: list[Outcome], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (deg, rel, cdf) = plt.subplots(1, 3, figsize=(15, 4.2))
    first = outcomes[0].report
    fig.suptitle(f"{first['scenario']}: {first['nodes']} nodes")

    hist: dict[int, int] = {}
    for o in outcomes:
        for k, v in o.report["overlay"]["in_degree_hist"].items():
            hist[int(k)] = hist.get(int(k), 0) + v
    total = sum(hist.values()) or 1
    xs = sorted(hist)
    deg.bar(xs, [hist[x] / total for x in xs], color="tab:blue")
    deg.set(title="active view in-degree", xlabel="in-degree", ylabel="fraction of nodes")
    if xs and xs[-1] - xs[0] < 30:
        deg.set_xticks(range(xs[0], xs[-1] + 1))

    for o in outcomes:
        r = o.report
        values = _reliability(r)
        rel.plot(range(1, len(values) + 1), values, marker=".", label=f"seed {r['seed']}")
    label = "after the failure" if "failure" in first else "per broadcast"
    rel.set(title=f"reliability {label}", xlabel="broadcast", ylabel="delivered / expected")
    rel.set_ylim(-0.02, 1.02)

    for o in outcomes:
        lat = o.series.get("latency_cdf_s", [])
        if lat:
            n = len(lat) - 1
            cdf.plot(lat, [i / n for i in range(n + 1)], label=f"seed {o.report['seed']}")
    cdf.set(title="delivery latency CDF", xlabel="seconds", ylabel="fraction of deliveries")
    if len(outcomes) > 1:
        rel.legend(fontsize="small")
        cdf.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _reliability(report: dict[str, Any]) -> list[float]:
    if "failure" in report:
        values: list[float] = report["failure"]["reliability_by_broadcast"]
    else:
        values = report["broadcast"]["reliability_by_broadcast"]
    return values
