"""`overlay agent` as a process: startup errors, signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from daemon.testing import bounded
from tests.helpers import TEST_MAX

WAIT = 30.0
# No test may take longer than this, whatever it awaits.


def overlay_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "daemon.cli", *args]


async def _follow(
    proc: trio.Process, records: list[dict[str, object]], wanted: dict[str, trio.Event]
) -> None:
    assert proc.stderr is not None
    buf = b""
    async for chunk in proc.stderr:
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                record = json.loads(line)
            except ValueError:
                record = {"msg": line.decode()}
            records.append(record)
            event = wanted.get(str(record.get("msg")))
            if event is not None:
                event.set()


@bounded(TEST_MAX)
async def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    sock = tmp_path / "ctl.sock"
    proc = await trio.lowlevel.open_process(
        overlay_cmd(
            "agent",
            "--bind",
            "127.0.0.1:0",
            "--control",
            f"unix:{sock}",
            "--log-json",
            "--metrics",
            "127.0.0.1:0",
            "--leave-grace",
            "600",
        ),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    records: list[dict[str, object]] = []
    started, leaving, forced = trio.Event(), trio.Event(), trio.Event()
    linked = trio.Event()
    other: trio.Process | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                _follow,
                proc,
                records,
                {
                    "agent started": started,
                    "neighbour up": linked,
                    "signal: leaving": leaving,
                    "second signal: exiting now": forced,
                },
            )
            with trio.fail_after(WAIT):
                await started.wait()
            start = next(r for r in records if r.get("msg") == "agent started")
            assert start["control"] == f"unix:{sock}" and start["metrics"]
            # A member to say goodbye to: alone, an agent's leave is complete
            # at once (nobody to tell), and the second signal would race the
            # exit. With one member, the goodbye goes out over several
            # protocol periods (seconds), which the 600 s grace does not cut.
            other = await trio.lowlevel.open_process(
                overlay_cmd(
                    "agent",
                    "--bind",
                    "127.0.0.1:0",
                    "--control",
                    "none",
                    "--join",
                    str(start["bind"]),
                ),
                stderr=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
            with trio.fail_after(WAIT):
                await linked.wait()
            proc.send_signal(signal.SIGINT)
            with trio.fail_after(WAIT):
                await leaving.wait()
            # Leaving would take 600 s (leave grace): a second signal cuts it.
            proc.send_signal(signal.SIGINT)
            with trio.fail_after(WAIT):
                await forced.wait()
                assert await proc.wait() == 1
    finally:
        for p in (proc, other):
            if p is not None and p.returncode is None:
                p.kill()
                await p.wait()
    assert not sock.exists()


@pytest.mark.parametrize("which", ["peer port", "control API", "metrics endpoint"])
@bounded(TEST_MAX)
async def test_port_in_use_is_one_line_naming_the_socket_and_exit_1(which: str) -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        args = {"--bind": "127.0.0.1:0", "--control": "none"}
        flag = {"peer port": "--bind", "control API": "--control"}.get(which, "--metrics")
        args[flag] = busy
        with trio.fail_after(WAIT):
            result = await trio.run_process(
                overlay_cmd("agent", *[x for kv in args.items() for x in kv]),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    err = result.stderr.decode()
    assert result.returncode == 1
    assert len(err.strip().splitlines()) == 1, err
    assert f"cannot bind: {which} {busy}: " in err, err
