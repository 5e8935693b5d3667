"""`overlay agent --snapshot --event-handler`, as an operator runs them:
real processes on loopback. Three agents; the third is killed (SIGKILL, no
goodbye), declared failed, and started again with its snapshot and no
`--join`: it rejoins, and its handler sees the members it rejoined."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import trio

from daemon.client import open_client
from daemon.testing import bounded
from tests.test_cli_cluster import CONFIG, _read_lines, overlay_cmd

WAIT = 30.0


class Proc:
    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.started = trio.Event()
        self.peer = ""
        self.control = ""
        self.lines: list[dict[str, Any]] = []

    def on_line(self, line: str) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            record = {"msg": line}
        self.lines.append(record)
        if record.get("msg") == "agent started":
            self.peer, self.control = record["advertise"], record["control"]
            self.started.set()


async def _spawn(nursery: trio.Nursery, procs: list[Proc], *args: str) -> Proc:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OVERLAY_CONTROL", None)
    cmd = overlay_cmd("agent", "--control", "127.0.0.1:0", "--log-json", *args)
    proc = await trio.lowlevel.open_process(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env
    )
    p = Proc(proc)
    procs.append(p)
    assert proc.stderr is not None
    nursery.start_soon(_read_lines, proc.stderr, p.on_line)
    with trio.fail_after(WAIT):
        await p.started.wait()
    return p


async def _statuses(control: str) -> dict[str, str]:
    async with open_client(control) as client:
        return {m["name"]: m["status"] for m in await client.members()}


async def _until_status(control: str, want: dict[str, str]) -> None:
    """Poll the agent's member list until it holds `want` (bounded)."""
    with trio.fail_after(WAIT):
        while True:
            got = await _statuses(control)
            if all(got.get(k) == v for k, v in want.items()):
                return
            await trio.sleep(0.1)


@bounded(120)
async def test_a_killed_agent_restarted_with_its_snapshot_rejoins(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(CONFIG)
    snapshot = tmp_path / "c.snapshot.json"
    joins = tmp_path / "joins.txt"
    # One line per member: "<this agent> <member>" (a run may carry several).
    handler = f'member-join=cut -f1 | sed "s/^/$OVERLAY_SELF_NAME /" >> {joins}'
    procs: list[Proc] = []
    try:
        async with trio.open_nursery() as nursery:
            common = ("--config", str(cfg))
            a = await _spawn(nursery, procs, "--bind", "127.0.0.1:0", "--name", "a", *common)
            await _spawn(nursery, procs, "--bind", "127.0.0.1:0", "--name", "b", "--join", a.peer)
            c_args = ("--name", "c", "--snapshot", str(snapshot), "--event-handler", handler)
            c = await _spawn(
                nursery, procs, "--bind", "127.0.0.1:0", "--join", a.peer, *c_args, *common
            )
            everyone = {"a": "alive", "b": "alive", "c": "alive"}
            await _until_status(a.control, everyone)
            with trio.fail_after(WAIT):
                while not (
                    snapshot.exists()
                    and sorted(m["name"] for m in json.loads(snapshot.read_text())["members"])
                    == ["a", "b"]
                ):
                    await trio.sleep(0.1)

            c.proc.send_signal(signal.SIGKILL)
            await c.proc.wait()
            await _until_status(a.control, {"c": "failed"})

            assert {"c a", "c b"} <= set(_text(joins).splitlines())  # its first life
            joins.unlink()
            port = c.peer.rpartition(":")[2]
            restarted = await _spawn(
                nursery, procs, "--bind", f"127.0.0.1:{port}", *c_args, *common
            )
            await _until_status(a.control, everyone)
            await _until_status(restarted.control, everyone)
            # Its handler ran for the members it rejoined.
            with trio.fail_after(WAIT):
                while not {"c a", "c b"} <= set(_text(joins).splitlines()):
                    await trio.sleep(0.1)
            # It read its snapshot (one INFO line, no warning) and joined.
            msgs = [r.get("msg") for r in restarted.lines]
            assert "snapshot read" in msgs and "joined" in msgs
            assert not [
                r
                for r in restarted.lines
                if r.get("logger") == "overlay.snapshot" and r.get("level") == "warning"
            ]
            nursery.cancel_scope.cancel()
    finally:
        for p in procs:
            if p.proc.returncode is None:
                p.proc.kill()
        with trio.move_on_after(5):
            for p in procs:
                await p.proc.wait()


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""
