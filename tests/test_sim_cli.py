"""`overlay sim` (sim/cli.py): flags, output files, --seeds, exit codes, and
reproducibility across processes with different hash seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.cli import main
from tests.test_sim_runner import TINY, check_contract, without_wall_clock

STEADY = ["sim", "--no-progress", "--no-codec", *(f"--set={s}" for s in TINY["steady"])]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_on_stdout_and_summary_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli([*STEADY, "--json", "-", "--seed", "4"], capsys)
    assert code == 0
    rep = json.loads(out)
    check_contract(rep)
    assert rep["seed"] == 4 and rep["nodes"] == 30
    assert err.startswith("steady: 30 nodes, seed 4, no codec")


def test_summary_plot_graph_and_json_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = {k: tmp_path / f"out.{k}" for k in ("json", "png", "graphml")}
    code, out, err = run_cli(
        [
            *STEADY,
            "--scenario",
            "mass-failure",
            *(f"--set={s}" for s in TINY["mass-failure"]),
            "--json",
            str(paths["json"]),
            "--plot",
            str(paths["png"]),
            "--graphml",
            str(paths["graphml"]),
        ],
        capsys,
    )
    assert code == 0, err
    assert out.startswith("mass-failure: 40 nodes") and "failure" in out and err == ""
    rep = json.loads(paths["json"].read_text())
    check_contract(rep)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import networkx as nx

    g = nx.read_graphml(paths["graphml"])
    assert g.number_of_nodes() == rep["overlay"]["live"] == 20
    assert all("addr" in d and "active" in d for _, d in g.nodes(data=True))


def test_gexf_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "overlay.gexf"
    code, _, err = run_cli([*STEADY, "--nodes", "12", "--graphml", str(path)], capsys)
    assert code == 0, err
    assert b"<gexf" in path.read_bytes()[:400]


def test_seeds_run_in_processes_and_aggregate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "seeds.png"
    code, out, err = run_cli(
        [*STEADY, "--seeds", "1,2,3", "--jobs", "2", "--json", "-", "--plot", str(plot)], capsys
    )
    assert code == 0, err
    agg = json.loads(out)
    assert agg["seed"] == [1, 2, 3] and [r["seed"] for r in agg["runs"]] == [1, 2, 3]
    for r in agg["runs"]:
        check_contract(r)
    rel = agg["broadcast"]["reliability"]
    assert set(rel) == {"mean", "min", "max"} and rel["min"] <= rel["mean"] <= rel["max"]
    assert agg["overlay"]["connected"]["mean"] == 1.0
    assert "seeds 1,2,3" in err and plot.stat().st_size > 0
    # The same seed alone gives the same figures as inside the batch.
    code, out, _ = run_cli([*STEADY, "--seed", "2", "--json", "-"], capsys)
    assert without_wall_clock(json.loads(out)) == without_wall_clock(agg["runs"][1])


def test_list_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["sim", "--list-scenarios"], capsys)
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[::2]] == [
        "churn",
        "isolate",
        "mass-failure",
        "partition-heal",
        "senders",
        "steady",
    ]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scenario", "nope"], "unknown scenario 'nope'"),
        (["--scenario", "/nonexistent/x.toml"], "scenario file not found"),
        (["--scenario", "BAD"], "bad TOML"),
        (["--set", "bogus=1"], "--set bogus: unknown key"),
        (["--set", "swim.probe_period=soon"], "probe_period"),
        (["--set", "nodes"], "expected KEY=VALUE"),
        (["--nodes", "0"], "--nodes must be at least 1"),
        (["--seeds", "1,x"], "--seeds"),
        (["--seeds", "1,1"], "twice"),
        (["--json", "/nonexistent/dir/out.json"], "cannot write"),
        (["--plot", "/nonexistent/dir/out.png"], "cannot write"),
        (["--set", "network.underlay.generator=file"], "needs a path"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[params\n")
    args = [str(bad) if a == "BAD" else a for a in args]
    code, out, err = run_cli(["sim", "--no-progress", *args], capsys)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == ""


def run_process(seed_env: str, args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONHASHSEED": seed_env}
    done = subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args, "--json", "-"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_same_report_under_different_hash_seeds() -> None:
    """String hashing is salted per process: a report that depended on set
    order would differ between these two runs."""
    args = [
        "sim",
        "--no-progress",
        "--scenario",
        "churn",
        *(f"--set={s}" for s in TINY["churn"]),
    ]
    a = run_process("1", args)
    b = run_process("2", args)
    assert without_wall_clock(a) == without_wall_clock(b)


def test_progress_bar_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli([*STEADY[:1], "--progress", *STEADY[2:]], capsys)
    assert code == 0 and out.startswith("steady: 30 nodes")
    # stderr is no terminal here (as in a CI log): plain lines, no control characters.
    lines = err.splitlines()
    assert 2 <= len(lines) <= 11 and lines[-1].startswith("progress 100% ")  # once a tenth
    assert all("simulated" in line for line in lines) and "\x1b" not in err and "\r" not in err
