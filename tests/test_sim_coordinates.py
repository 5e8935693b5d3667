"""Network coordinates in the simulator (sim/coordinate_metrics.py): on a
grid underlay, whose latencies have a geometry to learn, the nodes'
coordinates must predict the modelled round trips far better than the
initial coordinates (all at the origin: ~100% error) and than the best
constant guess."""

from __future__ import annotations

from sim import report, runner, scenario

SMALL = [
    "nodes=30",
    "join_rate=50",
    "settle=60",
    "broadcasts=1",
    "drain=1",
    "network.underlay.generator=grid",
    "network.underlay.vertices=100",
]


def _run(*more: str) -> dict[str, object]:
    sc = scenario.override(scenario.load("steady"), [*SMALL, *more])
    rep: dict[str, object] = runner.run(sc, 1, use_codec=False).report
    return rep


def test_coordinates_learn_the_underlay() -> None:
    rep = _run()
    m = rep["membership"]
    assert isinstance(m, dict)
    assert m["coord_pairs"] == 2000  # random live pairs: every pair has a latency
    p50, p90, constant = m["coord_error_p50"], m["coord_error_p90"], m["coord_baseline_error_p50"]
    assert 0 <= p50 <= p90
    # The origin's estimates are 20 us for round trips of several ms: ~100%.
    assert p50 < 0.15, m
    assert p50 < constant / 2, m
    assert "rtt from coordinates: error p50" in report.summary(rep)


def test_without_coordinates_the_report_says_nothing_of_them() -> None:
    rep = _run("swim.coordinates=false", "settle=2")
    m = rep["membership"]
    assert isinstance(m, dict)
    assert m["coord_error_p50"] is None and m["coord_pairs"] == 0
    assert "rtt from coordinates" not in report.summary(rep)
