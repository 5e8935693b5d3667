"""`overlay sim --plot`: each built-in scenario's figure shows what the
scenario is about (issue 15), drawn from series the run recorded."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import pytest

from daemon.cli import main
from sim import plot, scenario
from sim.runner import Outcome
from tests.test_sim_runner import TINY, run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _titles(fig: Any) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 800 and height >= 400
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND"
    assert len(data) > 20_000  # six panels of lines and text, not a blank image


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    assert set(TINY) == set(scenario.builtin_names())  # every built-in scenario is covered
    return {name: run(name) for name in TINY}


def _series(o: Outcome, key: str) -> list[float]:
    return [x for x in o.series[key] if not math.isnan(x)]


def test_partition_heal_marks_the_cut_and_the_heal(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["partition-heal"]
    cut = next(m for m in o.marks if m[0] == "cut")
    heal = next(m for m in o.marks if m[0] == "heal")
    assert cut[1] < cut[2] == heal[1]
    t, comps, seen = o.series["t"], o.series["components"], o.series["alive_seen_mean"]
    during = [i for i, x in enumerate(t) if cut[1] + 10 <= x < cut[2]]
    assert during and all(comps[i] >= 2 for i in during)  # two sides, two components
    assert max(seen[i] for i in during) < 0.6 * 40  # each side counts its half alive
    assert comps[-1] == 1 and seen[-1] == 40  # one cluster again by the end
    titles = _titles(plot.figure([o]))
    assert any(t.startswith(plot.MEMBERS) and "cut at" in t and "healed at" in t for t in titles)
    assert plot.COMPONENTS in titles


def test_mass_failure_marks_the_crash_on_reliability(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["mass-failure"]
    crash = next(m for m in o.marks if m[0].startswith("crash"))
    assert crash[0] == "crash of 20"
    live = o.series["live"]
    assert live[0] <= 40 and live[-1] == 20
    rel = o.series["bc_reliability"]
    assert len(rel) == 10 and all(t >= crash[1] for t in o.series["bc_t"])
    assert rel == o.report["failure"]["reliability_by_broadcast"]  # the report's figures
    titles = _titles(plot.figure([o]))
    assert any(t.startswith(plot.RELIABILITY) and "crash at" in t for t in titles)


def test_senders_latency_per_step(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["senders"]
    steps = [m for m in o.marks if m[0].startswith("publish")]
    assert [m[0] for m in steps] == [
        "publish from one",
        "publish from random",
        "publish from 10 named",
    ]
    assert len(_series(o, "bc_p99")) == 30
    fig = plot.figure([o])
    lat = next(ax for ax in fig.axes if ax.get_title().startswith(plot.LATENCY))
    legend = lat.get_legend()
    assert legend is not None and len(legend.get_texts()) == 3


def test_isolate_follows_the_cut_off_node(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["isolate"]
    seen = o.series["cut_off_seen_alive"]
    t = o.series["t"]
    cut = next(m for m in o.marks if m[0] == "cut")
    during = [x for x, at in zip(seen, t, strict=True) if cut[1] <= at < cut[2]]
    assert min(x for x in during if not math.isnan(x)) == 0  # the others declared it failed
    assert seen[-1] == 29  # everyone else counts it alive again


def test_churn_marks_the_churn(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["churn"]
    assert any(m[0] == "churn" and m[2] - m[1] == 20 for m in o.marks)
    assert any(t.startswith(plot.MEMBERS + ": churn") for t in _titles(plot.figure([o])))


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_builtin_scenario_plots(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / f"{name}.png"
    args = ["sim", "--no-progress", "--no-codec", "--scenario", name, "--plot", str(png)]
    assert main([*args, *(f"--set={s}" for s in TINY[name])]) == 0
    capsys.readouterr()
    _check_png(png)
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"
