"""The operator's commands (issue 15) through the CLI and the control API,
against real agents on loopback: `join`, `force-leave [--prune]`, `tags`,
`members --status/--tag/--name`, `info`, `--version`, `monitor`. The CLI
runs in a worker thread with its own trio loop, as in its own process."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from daemon import logs
from daemon.agent import Agent, AgentSettings
from daemon.cli import _agent_settings as agent_settings
from daemon.cli import build_parser
from daemon.client import open_client
from daemon.control import ControlError
from daemon.monitor import HUB, LogHub
from daemon.service import Service
from daemon.testing import Changes, bounded, fast_config, statuses
from overlay import codec
from overlay.messages import MemberState, MemberUpdates, WireStatus
from tests.helpers import TEST_MAX
from tests.test_cli import _cli, run_cli

WAIT = 15.0


@asynccontextmanager
async def cluster(n: int, prefix: str = "n", **kw: object) -> AsyncIterator[list[Service]]:
    """`n` agents, each with a control API, each joining through the first."""
    services: list[Service] = []
    async with trio.open_nursery() as nursery:
        for i in range(n):
            join = (services[0].agent.me.addr,) if services else ()
            agent = Agent(
                AgentSettings(
                    bind=("127.0.0.1", 0),
                    name=f"{prefix}{i}",
                    join=join,
                    config=fast_config(),
                    seed=i,
                    tags={"index": str(i), "role": "web" if i % 2 else "db"},
                    leave_grace=0.05,
                    **kw,  # type: ignore[arg-type]
                )
            )
            service = Service(agent, control="127.0.0.1:0")
            await nursery.start(service.run)
            services.append(service)
        try:
            yield services
        finally:
            nursery.cancel_scope.cancel()


def ctl(service: Service) -> list[str]:
    return ["--control", str(service.control_address)]


async def until_all(agents: list[Agent], pred: object, timeout: float = WAIT) -> None:
    changes = Changes(agents)
    await changes.until(pred, timeout)  # type: ignore[arg-type]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0
    assert out.startswith("overlay 0.") and "protocol 1" in out and "control API 1" in out
    with pytest.raises(SystemExit) as exc:  # the flag is in the parser too (and --help)
        build_parser(["--version", "members"]).parse_args(["--version"])
    assert exc.value.code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tags", "--set", "novalue"], "expected K=V"),
        (["tags", "--set", "=v"], "expected K=V"),
        (["tags", "--delete", "a=b"], "expected a tag name"),
        (["members", "--name", "("], "bad regular expression"),
        (["members", "--tag", "role"], "expected K=REGEX"),
        (["members", "--tag", "role=[", "--json"], "bad regular expression"),
        (["members", "--status", "dead"], "invalid choice"),
        (["join", "a:b:c:d"], "bad seed"),
        (["join", "127.0.0.1:1", "--wait", "0"], "--wait"),
        (["monitor", "--log-level", "loud"], "invalid choice"),
        (["force-leave"], "required"),
    ],
)
def test_usage_errors_before_any_agent_is_asked(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on port 1: a usage error must come before the connection.
    code, out, err = run_cli([*args, "--control", "127.0.0.1:1"], capsys)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and not out


@bounded(TEST_MAX)
async def test_join_reports_each_seed(capsys: pytest.CaptureFixture[str]) -> None:
    async with cluster(1) as (a,), cluster(1, "b") as (b,):
        # A dead seed (a port nothing listens on) and a live one.
        with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as s:
            await s.bind(("127.0.0.1", 0))
            dead = f"127.0.0.1:{s.getsockname()[1]}"
        live = a.agent.me.addr
        code, out, err = await _cli(["join", dead, live, "--wait", "3", "--json", *ctl(b)], capsys)
        assert code == 0, err
        rows = {r["seed"]: r for r in json.loads(out)}
        assert rows[live]["ok"] and rows[live]["member"] == "n0"
        assert not rows[dead]["ok"] and "no answer within 3 s" in rows[dead]["error"]
        assert statuses(b.agent).get("n0") == "alive"
        # Only dead seeds: exit 1, each reported, the agent unharmed.
        code, out, err = await _cli(["join", dead, "--wait", "0.5", *ctl(b)], capsys)
        assert code == 1 and f"{dead}: failed: no answer" in out
        assert "no seed answered" in err
        assert b.agent.running


@bounded(TEST_MAX)
async def test_tags_set_delete_and_spread(capsys: pytest.CaptureFixture[str]) -> None:
    async with cluster(2) as (a, b):
        code, out, err = await _cli(
            ["tags", "--set", "zone=eu", "--set", "x=1", "--delete", "role", "--json", *ctl(a)],
            capsys,
        )
        assert code == 0, err
        assert json.loads(out) == {"tags": {"index": "0", "zone": "eu", "x": "1"}}
        await until_all(
            [a.agent, b.agent],
            lambda: any(m.name == "n0" and m.tags.get("zone") == "eu" for m in b.agent.members()),
        )
        code, out, _ = await _cli(["tags", *ctl(a)], capsys)
        assert code == 0 and out.splitlines() == ["index=0", "x=1", "zone=eu"]
        code, _, err = await _cli(["tags", "--set", "big=" + "x" * 5000, *ctl(a)], capsys)
        assert code == 1 and "max_tags_bytes" in err


@bounded(TEST_MAX)
async def test_members_filters(capsys: pytest.CaptureFixture[str]) -> None:
    async with cluster(4) as services:
        agents = [s.agent for s in services]
        await until_all(agents, lambda: all(len(a.members()) == 4 for a in agents))
        services[3].agent.stop()
        await until_all(agents[:3], lambda: statuses(agents[0]).get("n3") == "failed")

        async def names(*args: str) -> list[str]:
            code, out, err = await _cli(["members", "--json", *args, *ctl(services[0])], capsys)
            assert code == 0, err
            return [m["name"] for m in json.loads(out)]

        assert await names("--status", "alive") == ["n0", "n1", "n2"]
        assert await names("--status", "failed") == ["n3"]
        assert await names("--tag", "role=web") == ["n1", "n3"]
        assert await names("--tag", "role=w") == []  # the whole value must match
        assert await names("--tag", "role=web", "--status", "alive") == ["n1"]
        assert await names("--name", "n[02]") == ["n0", "n2"]
        assert await names("--tag", "missing=.*") == []
        code, out, _ = await _cli(["members", "--name", "n1", *ctl(services[0])], capsys)
        assert code == 0 and out.splitlines()[1].startswith("n1 ") and len(out.splitlines()) == 2


@bounded(TEST_MAX)
async def test_force_leave_spreads_and_prunes(capsys: pytest.CaptureFixture[str]) -> None:
    async with cluster(3) as services:
        a, b, c = (s.agent for s in services)
        await until_all([a, b, c], lambda: all(len(x.members()) == 3 for x in (a, b, c)))
        # A live member and an unknown name: clear errors, nothing changed.
        code, _, err = await _cli(["force-leave", "n1", *ctl(services[0])], capsys)
        assert code == 1 and "n1" in err and "is alive" in err
        code, _, err = await _cli(["force-leave", "nobody", *ctl(services[0])], capsys)
        assert code == 1 and "no member named 'nobody'" in err
        code, _, err = await _cli(["force-leave", "n0", *ctl(services[0])], capsys)
        assert code == 1 and "overlay leave" in err
        assert statuses(b)["n1"] == "alive"

        c.stop()
        await until_all([a, b], lambda: statuses(a)["n2"] == statuses(b)["n2"] == "failed")
        code, out, err = await _cli(["force-leave", "n2", "--json", *ctl(services[0])], capsys)
        assert code == 0, err
        assert json.loads(out) == {"name": "n2", "status": "left", "pruned": False}
        # Spread: b turns its tombstone left too.
        await until_all([a, b], lambda: statuses(b)["n2"] == "left")
        assert a.node.swim._reconnect.get(c.me) is None
        # Again, with --prune: forgotten here once the state is spread.
        code, out, err = await _cli(["force-leave", "n2", "--prune", *ctl(services[0])], capsys)
        assert code == 0, err
        await until_all([a, b], lambda: "n2" not in statuses(a))
        assert statuses(b)["n2"] == "left"  # elsewhere: reaped after swim.reap_after


@bounded(TEST_MAX)
async def test_a_replayed_force_leave_cannot_evict_a_live_member() -> None:
    """A hostile process replays a forged force-leave of n1 (left at n1's
    incarnation, claiming to come from n0) to n2 every 0.2 s for 3 s: n2
    holds n1 at most suspect, n1 refutes each time, and at the end every
    member holds n1 alive, at a higher incarnation."""
    async with cluster(3) as services:
        a, b, c = (s.agent for s in services)
        await until_all([a, b, c], lambda: all(len(x.members()) == 3 for x in (a, b, c)))
        seen: list[str] = []
        c.observers.append(
            lambda now, out: seen.extend(
                m.status for m in c.members() if m.name == "n1" and m.status != "alive"
            )
        )
        start = b.node.swim.incarnation
        with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as sock:
            await sock.bind(("127.0.0.1", 0))
            for _ in range(15):
                inc = next(m.incarnation for m in c.members() if m.name == "n1")
                forged = MemberUpdates((MemberState(b.me, inc, WireStatus.LEFT, {}, None),))
                await sock.sendto(codec.encode(a.me, forged), (c.me.host, c.me.port))
                await trio.sleep(0.2)
        await until_all(
            [a, b, c], lambda: all(statuses(x)["n1"] == "alive" for x in (a, b, c)), timeout=10
        )
        assert b.node.swim.incarnation > start  # it refuted
        assert "left" not in seen and "failed" not in seen
        assert b.running and statuses(c)["n1"] == "alive"


@bounded(TEST_MAX)
async def test_info_shows_each_setting_with_its_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        "[agent]\nleave_timeout = 3.0\n"
        "[swim]\nprobe_period = 0.3\nprobe_timeout = 0.1\nsuspicion_mult = 5\n"
    )
    args = build_parser(["agent"]).parse_args(
        ["agent", "--bind", "127.0.0.1:0", "--config", str(cfg), "--name", "inf",
         "--swim.probe-period", "0.25", "--control", "127.0.0.1:0"]
    )  # fmt: skip
    settings, extra = agent_settings(args)
    service = Service(Agent(settings), control=extra["control"])
    async with service:
        code, out, err = await _cli(["info", "--json", *ctl(service)], capsys)
        assert code == 0, err
        info = json.loads(out)
        s = info["settings"]
        assert info["name"] == "inf" and info["addr"] == service.agent.me.addr
        assert info["config_file"] == str(cfg)
        assert s["swim.probe_period"] == {"value": 0.25, "source": "flag"}  # flag over file
        assert s["swim.suspicion_mult"] == {"value": 5, "source": "file"}
        assert s["leave_timeout"] == {"value": 3.0, "source": "file"}
        assert s["name"] == {"value": "inf", "source": "flag"}
        assert s["swim.indirect_k"]["source"] == "default"
        assert s["transport.dial_timeout"]["source"] == "default"
        assert s["keys"] == {"value": 0, "source": "default"}
        assert s["control"]["source"] == "flag"
        v = info["versions"]
        assert v["protocol"] == 1 and v["control_api"] == 1 and v["package"].startswith("0.")
        assert v["trio"] == trio.__version__ and v["python"].startswith("3.")
        assert info["uptime"] >= 0
        code, out, _ = await _cli(["info", *ctl(service)], capsys)
        assert code == 0 and "inf at" in out and "versions: overlay" in out
        assert any(
            line.split()[:3] == ["swim.probe_period", "0.25", "flag"] for line in out.splitlines()
        )


@pytest.fixture
def agent_log() -> Iterator[io.StringIO]:
    """The `overlay` logger set up as `overlay agent` does (INFO, to a
    buffer standing for stderr), restored afterwards."""
    root = logging.getLogger("overlay")
    saved = (root.handlers[:], root.level, root.propagate)
    stream = io.StringIO()
    logs.setup(json_lines=True, level=logging.INFO, stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


@bounded(TEST_MAX)
async def test_monitor_streams_logs_to_several_clients(
    agent_log: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    async with cluster(1) as (a,):
        async with (
            open_client(a.control_address) as c1,
            open_client(a.control_address) as c2,
            c1.logs("debug") as debug,
            c2.logs("warning") as warnings,
        ):
            assert len(HUB.monitors) == 2
            logging.getLogger("overlay.test").debug("quiet one")
            logs.event(logging.getLogger("overlay.test"), logging.WARNING, "loud one", n=3)
            with trio.fail_after(WAIT):
                got = [await debug.__anext__(), await debug.__anext__()]
                loud = await warnings.__anext__()
            assert [r["msg"] for r in got] == ["quiet one", "loud one"]
            assert loud["msg"] == "loud one" and loud["n"] == 3 and loud["level"] == "warning"
            # The debug monitor did not make the agent's own log verbose.
            assert "quiet one" not in agent_log.getvalue()
            assert "loud one" in agent_log.getvalue()
            with pytest.raises(ControlError, match="level must be"):
                async with c1.logs("loud"):
                    pass
        # Closing the clients closes their monitors, and the level comes back.
        with trio.fail_after(WAIT):
            while HUB.monitors:
                await trio.sleep(0.01)
        assert logging.getLogger("overlay").level == logging.INFO

        # The CLI: a record, printed as a line; --json as an object.
        async def emit_later() -> None:
            while not HUB.monitors:
                await trio.sleep(0.01)
            logs.event(logging.getLogger("overlay.test"), logging.ERROR, "for the cli", k="v")
            await trio.sleep(0.2)
            # End the command: the agent leaves, its streams end.
            await a.agent.leave()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(emit_later)
            code, out, err = await _cli(["monitor", "--log-level", "error", *ctl(a)], capsys)
        assert code == 1 and "closed the control connection" in err  # the agent stopped
        assert "for the cli" in out and "k=v" in out and "ERROR" in out


async def test_a_slow_monitor_drops_and_counts_never_blocks() -> None:
    hub = LogHub("overlay.hubtest")
    logger = logging.getLogger("overlay.hubtest")
    logger.propagate = False
    slow = hub.open(logging.INFO, size=3)
    other = hub.open(logging.INFO, size=100)
    for i in range(10):
        logger.info("record %d", i)  # never waits, whatever the buffers hold
    got = await slow.take()
    assert [r["msg"] for r in got] == ["record 0", "record 1", "record 2"]
    assert got[0]["dropped"] == 7 and slow.dropped_total == 7
    assert len(await other.take()) == 10
    logger.info("after")
    again = await slow.take()
    assert [r["msg"] for r in again] == ["after"] and "dropped" not in again[0]
    slow.close()
    other.close()
    assert hub.monitors == [] and hub._handler not in logger.handlers


@bounded(TEST_MAX)
async def test_operator_commands_against_agent_processes(tmp_path: Path) -> None:
    """`overlay agent` processes (the CLI as installed: `python -m
    daemon.cli`), and the commands as separate processes: join two
    agents, read `info`'s sources, filter members, force a killed member
    out."""
    from tests.test_cli_cluster import agent_processes, overlay_cmd

    async def run(*args: str) -> tuple[int, str, str]:
        with trio.fail_after(WAIT):
            done = await trio.run_process(
                overlay_cmd(*args), capture_stdout=True, capture_stderr=True, check=False
            )
        return done.returncode, done.stdout.decode(), done.stderr.decode()

    code, out, _ = await run("--version")
    assert code == 0 and out.startswith("overlay 0.") and "protocol 1" in out
    async with trio.open_nursery() as nursery, agent_processes(nursery, tmp_path, 3) as agents:
        p0, p1, p2 = agents
        code, out, err = await run("info", "--json", "--control", p1.control)
        assert code == 0, err
        s = json.loads(out)["settings"]
        assert s["swim.probe_period"] == {"value": 0.2, "source": "file"}
        assert s["name"] == {"value": "p1", "source": "flag"}
        assert s["tags"] == {"value": {"index": "1"}, "source": "flag"}
        assert s["swim.indirect_k"]["source"] == "default"

        async def members(*args: str) -> list[dict[str, object]]:
            code, out, err = await run("members", "--json", "--control", p0.control, *args)
            assert code == 0, err
            return list(json.loads(out))

        with trio.fail_after(WAIT):
            while len(await members("--status", "alive")) < 3:
                await trio.sleep(0.2)
        assert [m["name"] for m in await members("--tag", "index=[12]")] == ["p1", "p2"]
        p2.proc.kill()
        with trio.fail_after(WAIT):
            while [m["name"] for m in await members("--status", "failed")] != ["p2"]:
                await trio.sleep(0.2)
        code, out, err = await run("force-leave", "p2", "--control", p0.control)
        assert code == 0 and out.strip() == "p2: left", err
        with trio.fail_after(WAIT):
            while True:
                code, out, _ = await run(
                    "members", "--json", "--status", "left", "--control", p1.control
                )
                if [m["name"] for m in json.loads(out)] == ["p2"]:
                    break
                await trio.sleep(0.2)
