"""Real processes: `overlay agent` started through the CLI, on loopback.

Every wait is event-driven: the test follows each agent's member list
through the control API's `monitor` stream (a snapshot, then every change),
and reads the agents' and subscribers' output as it comes. Protocol periods
are short (0.2 s) so the whole lifecycle runs in seconds. Spawned processes
are killed in `finally`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from daemon.client import open_client
from daemon.testing import bounded
from tests.helpers import TEST_MAX

WAIT = 30.0
# No test may take longer than this, whatever it awaits.
N = 10
CONFIG = """
[agent]
leave_grace = 0.5
[swim]
probe_period = 0.2
probe_timeout = 0.1
push_pull_period = 2.0
reconnect_period = 1.0
[hyparview]
shuffle_period = 2.0
repair_period = 0.4
join_retry_initial = 0.2
neighbor_timeout = 1.0
[plumtree]
anti_entropy_period = 1.0
"""


def overlay_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "daemon.cli", *args]


@dataclass
class AgentProc:
    name: str
    proc: trio.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    peer: str = ""
    control: str = ""

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)


async def _read_lines(stream: trio.abc.ReceiveStream, on_line: Callable[[str], None]) -> None:
    buf = b""
    async for chunk in stream:
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            on_line(line.decode("utf-8", "replace"))


@asynccontextmanager
async def agent_processes(
    nursery: trio.Nursery, tmp: Path, n: int
) -> AsyncIterator[list[AgentProc]]:
    cfg = tmp / "agent.toml"
    cfg.write_text(CONFIG)
    agents: list[AgentProc] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OVERLAY_CONTROL", None)

    async def spawn(i: int, join: str | None) -> trio.Event:
        name = f"p{i}"
        args = ["agent", "--bind", "127.0.0.1:0", "--control", "127.0.0.1:0"]
        args += ["--name", name, "--config", str(cfg), "--log-json", "--tag", f"index={i}"]
        if join:
            args += ["--join", join]
        proc = await trio.lowlevel.open_process(
            overlay_cmd(*args), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env
        )
        agent = AgentProc(name, proc)
        agents.append(agent)
        started = trio.Event()

        def on_line(line: str) -> None:
            try:
                record = json.loads(line)
            except ValueError:
                record = {"msg": line}
            agent.lines.append(record)
            if record.get("msg") == "agent started":
                agent.peer = record["advertise"]
                agent.control = record["control"]
                started.set()

        assert proc.stderr is not None
        nursery.start_soon(_read_lines, proc.stderr, on_line)
        return started

    try:
        # The first agent, then all the others at once, joining through it.
        with trio.fail_after(WAIT):
            await (await spawn(0, None)).wait()
            events = [await spawn(i, agents[0].peer) for i in range(1, n)]
            for started in events:
                await started.wait()
        agents.sort(key=lambda a: int(a.name[1:]))
        yield agents
    finally:
        for agent in agents:
            if agent.proc.returncode is None:
                agent.proc.kill()
        with trio.move_on_after(5):
            for agent in agents:
                await agent.proc.wait()


class ClusterView:
    """What every agent believes about every member, kept current through
    one `monitor` stream per agent."""

    def __init__(self) -> None:
        self.views: dict[str, dict[str, str]] = {}
        self.incarnations: dict[str, dict[str, int]] = {}
        self.seen: dict[str, set[tuple[str, str]]] = {}  # agent -> {(member, status)} ever
        self._changed = trio.Event()

    def _update(self, agent: str, member: dict[str, Any]) -> None:
        self.views.setdefault(agent, {})[member["name"]] = member["status"]
        self.incarnations.setdefault(agent, {})[member["name"]] = member["incarnation"]
        self.seen.setdefault(agent, set()).add((member["name"], member["status"]))
        self._changed.set()

    async def follow(
        self, agent: AgentProc, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        started = False
        try:
            async with open_client(agent.control) as client, client.monitor() as events:
                for member in await client.members():
                    self._update(agent.name, member)
                task_status.started()
                started = True
                async for member in events:
                    self._update(agent.name, member)
        except Exception:
            # The agent went away (killed, left): it has no view any more.
            self.views.pop(agent.name, None)
            self._changed.set()
            if not started:
                task_status.started()

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        try:
            with trio.fail_after(WAIT):
                while True:
                    self._changed = trio.Event()
                    if predicate():
                        return
                    await self._changed.wait()
        except trio.TooSlowError:
            raise AssertionError(f"timed out waiting for {what}: {self.views}") from None

    def everywhere(self, member: str, status: str, among: list[str]) -> bool:
        return all(self.views.get(a, {}).get(member) == status for a in among)


async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(WAIT):
        return await trio.run_process(
            overlay_cmd(*args), capture_stdout=True, capture_stderr=True, check=False
        )


@bounded(TEST_MAX)
async def test_ten_agent_processes(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery, agent_processes(nursery, tmp_path, N) as agents:
        names = [a.name for a in agents]
        view = ClusterView()
        for agent in agents:
            await nursery.start(view.follow, agent)

        # 1. Everyone sees everyone alive.
        await view.until(
            lambda: all(view.everywhere(n, "alive", names) for n in names), "all alive"
        )
        out = await cli("members", "--json", "--control", agents[3].control)
        assert out.returncode == 0, out.stderr
        members = json.loads(out.stdout)
        assert sorted(m["name"] for m in members) == sorted(names)
        assert {m["status"] for m in members} == {"alive"}
        assert {m["name"]: m["tags"] for m in members}["p7"] == {"index": "7"}
        table = await cli("members", "--control", agents[0].control)
        assert table.returncode == 0 and table.stdout.decode().count("alive") == N

        # 2. A publish reaches `overlay subscribe` on every agent, once.
        subs: list[tuple[trio.Process, list[str], trio.Event]] = []
        for agent in agents:
            proc = await trio.lowlevel.open_process(
                overlay_cmd(
                    "subscribe", "news", "--count", "1", "--json", "--control", agent.control
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            lines: list[str] = []
            ready = trio.Event()
            assert proc.stdout is not None and proc.stderr is not None
            nursery.start_soon(_read_lines, proc.stdout, lines.append)
            nursery.start_soon(
                _read_lines,
                proc.stderr,
                lambda line, ready=ready: ready.set() if "subscribed" in line else None,
            )
            subs.append((proc, lines, ready))
        try:
            with trio.fail_after(WAIT):
                for _, _, ready in subs:
                    await ready.wait()
            out = await cli("publish", "news", "hello cluster", "--control", agents[5].control)
            assert out.returncode == 0, out.stderr
            with trio.fail_after(WAIT):
                for proc, _, _ in subs:
                    assert await proc.wait() == 0
            for _, lines, _ in subs:
                assert len(lines) == 1
                got = json.loads(lines[0])
                assert got["payload"] == "hello cluster" and got["origin"] == "p5"
        finally:
            for proc, _, _ in subs:
                if proc.returncode is None:
                    proc.kill()

        # 3. SIGKILL: failed everywhere.
        others = names[:8]
        agents[9].signal(signal.SIGKILL)
        await view.until(lambda: view.everywhere("p9", "failed", others), "p9 failed")

        # 4. SIGSTOP: suspect, then failed; SIGCONT: it refutes, alive again.
        watchers = names[:7]
        agents[8].signal(signal.SIGSTOP)
        try:
            await view.until(
                lambda: all(view.views[a].get("p8") == "failed" for a in watchers),
                "p8 failed",
            )
            assert any(("p8", "suspect") in view.seen[a] for a in watchers)
            before = max(view.incarnations[a]["p8"] for a in watchers)
        finally:
            agents[8].signal(signal.SIGCONT)
        await view.until(lambda: view.everywhere("p8", "alive", watchers), "p8 alive again")
        assert min(view.incarnations[a]["p8"] for a in watchers) > before

        # 5. SIGTERM: a graceful leave, "left" everywhere; the process exits 0.
        agents[7].signal(signal.SIGTERM)
        await view.until(lambda: view.everywhere("p7", "left", names[:7]), "p7 left")
        with trio.fail_after(WAIT):
            assert await agents[7].proc.wait() == 0

        out = await cli("stats", "--json", "--control", agents[0].control)
        stats = json.loads(out.stdout)
        assert stats["members"]["failed"] == 1 and stats["members"]["left"] == 1
        assert sum(stats["bad_frames"].values()) == 0
        nursery.cancel_scope.cancel()
