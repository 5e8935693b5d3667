"""Protocol parameters out of range, given to the agent (flags, TOML) or to
the simulator (--set, a scenario's [config]): one line on stderr naming the
parameter and its range, exit status 2, before anything runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import run_cli
from tests.test_sim_runner import TINY

ACTIVE_SIZE = "hyparview.active_size must be >= 1, got 0"
MAX_PAYLOAD = (
    "plumtree.max_payload must be <= 61440 "
    "(max_frame 65536 minus 4096 for the frame's envelope), got 65000"
)


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    """`overlay agent` as a process: a wrong value must stop it at once (it
    used to run on, raising IndexError in a loop)."""
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", "agent", "--bind", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--hyparview.active-size", "0", "--join", "127.0.0.1:9"], ACTIVE_SIZE),
        (["--plumtree.max-payload", "65000"], MAX_PAYLOAD),
    ],
)
def test_agent_flag_out_of_range(flags: list[str], line: str) -> None:
    done = agent("--control", "none", *flags)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"overlay agent: {line}\n")


def test_agent_file_out_of_range(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\ncontrol = "none"\n[hyparview]\nactive_size = 0\n')
    done = agent("--config", str(cfg))
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"overlay agent: {ACTIVE_SIZE}\n")


SIM = ["sim", "--no-progress", "--no-codec", *(f"--set={s}" for s in TINY["steady"])]


@pytest.mark.parametrize(
    ("setting", "line"),
    [
        ("hyparview.active_size=0", f"--set hyparview.active_size: {ACTIVE_SIZE}"),
        (
            "hyparview.passive_size=-1",
            "--set hyparview.passive_size: hyparview.passive_size must be >= 1, got -1",
        ),
        ("plumtree.max_payload=65000", f"--set plumtree.max_payload: {MAX_PAYLOAD}"),
    ],
)
def test_sim_set_out_of_range(setting: str, line: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli([*SIM, "--set", setting], capsys)
    assert (code, out, err) == (2, "", f"overlay sim: {line}\n")


def test_sim_scenario_config_out_of_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(
        'name = "tiny"\ndescription = "too small a view"\n'
        "[params]\nnodes = 5\n"
        "[config]\nhyparview = { active_size = 0 }\n"
        '[[timeline]]\ndo = "join"\ncount = "$nodes"\n'
    )
    code, out, err = run_cli(["sim", "--no-progress", "--scenario", str(scenario)], capsys)
    assert (code, out, err) == (2, "", f"overlay sim: {scenario}: config: {ACTIVE_SIZE}\n")
