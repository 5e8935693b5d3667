"""The `overlay` CLI: flags, settings precedence, error handling, and the
client commands against an agent in this process (the CLI runs in a worker
thread with its own trio loop, as it would in its own process)."""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
from pathlib import Path

import pytest
import trio

from daemon.agent import Agent, AgentSettings
from daemon.cli import build_parser, main
from daemon.service import Service
from daemon.settings import SettingsError, build
from daemon.testing import bounded, fast_config
from tests.helpers import TEST_MAX

WAIT = 10.0
# No test may take longer than this, whatever it awaits.


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["keygen"], capsys)
    assert code == 0 and len(base64.b64decode(out.strip())) == 32
    code, out, _ = run_cli(["keygen", "--json"], capsys)
    assert code == 0 and len(base64.b64decode(json.loads(out)["key"])) == 32


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["members", "--bogus"], "unrecognized arguments"),
        (["agent", "--config", "/nonexistent/overlay.toml"], "config file not found"),
        (["agent", "--key-file", "/nonexistent/keys"], "cannot read key file"),
        (["agent", "--swim.probe-period", "soon"], "probe_period"),
        (["agent", "--swim.probe-timeout", "5"], "probe_timeout"),
        (["agent", "--bind", "nowhere"], "bind"),
        (["agent", "--tag", "novalue"], "K=V"),
        (["members", "--control", "127.0.0.1:1"], "no agent at 127.0.0.1:1"),
        (["stats", "--control", "unix:/nonexistent/sock"], "no agent"),
        (["subscribe", "t", "--count", "0", "--control", "127.0.0.1:1"], "no agent"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(args, capsys)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err
    assert "Traceback" not in err


def test_control_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERLAY_CONTROL", "127.0.0.1:2")
    code, _, err = run_cli(["members"], capsys)
    assert code == 2 and "127.0.0.1:2" in err


def _agent_parser() -> argparse.ArgumentParser:
    # The help texts are read (from the settings' source) only when help is asked.
    parser = build_parser(["agent", "--help"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    agent: argparse.ArgumentParser = sub.choices["agent"]
    return agent


def test_transport_and_agent_flags_override_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[agent]\nleave_grace = 3.0\ninput_queue = 10\n[transport]\nlinger = 2.0\n")
    args = _agent_parser().parse_args(
        [
            "--config",
            str(cfg),
            "--leave-grace",
            "0.5",
            "--transport.dial-timeout",
            "1.5",
            "--subscriber-queue",
            "7",
        ]
    )
    from daemon.cli import _agent_settings

    settings, _ = _agent_settings(args)
    assert settings.leave_grace == 0.5 and settings.input_queue == 10
    assert settings.subscriber_queue == 7
    assert settings.transport.dial_timeout == 1.5 and settings.transport.linger == 2.0
    for bad, needle in (
        ({"transport": {"dial_timeout": "soon"}}, "transport.dial_timeout"),
        ({"transport": {"dial_timeout": 0}}, "out of range"),
        ({"transport": {"colour": 1}}, "unknown key"),
        ({"agent": {"input_queue": 1.5}}, "input_queue"),
        ({"agent": {"leave_grace": -1}}, "out of range"),
    ):
        with pytest.raises(SettingsError, match=needle):
            build(bad, {}, {})


def test_file_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        """
max_frame = 131072
[agent]
bind = "127.0.0.1:7000"
name = "from-file"
join = ["10.0.0.1:7946"]
control = "none"
[agent.tags]
role = "web"
zone = "a"
[swim]
probe_period = 0.5
probe_timeout = 0.2
[transport]
dial_timeout = 1.5
"""
    )
    from daemon.settings import load_toml

    flags = {"name": "from-flag", "tags": ["zone=b"], "bind": None}
    settings, extra = build(load_toml(str(cfg)), flags, {"hyparview.active_size": "4"})
    assert settings.bind == ("127.0.0.1", 7000)
    assert settings.name == "from-flag"
    assert settings.join == ("10.0.0.1:7946",)
    assert dict(settings.tags) == {"role": "web", "zone": "b"}
    assert settings.config.swim.probe_period == 0.5
    assert settings.config.hyparview.active_size == 4
    assert settings.config.max_frame == 131072
    assert settings.transport.dial_timeout == 1.5
    assert extra == {"log_json": False, "log_level": "info", "control": None, "metrics": None}
    with pytest.raises(SettingsError, match="unknown key"):
        build({"agent": {"colour": "blue"}}, {}, {})
    with pytest.raises(SettingsError, match="unknown section"):
        build({"gossip": {"x": 1}}, {}, {})
    with pytest.raises(SettingsError, match="unknown config key"):
        build({"swim": {"probe_periodd": 1.0}}, {}, {})


def test_parser_has_the_contract_subcommands() -> None:
    parser = build_parser()
    for argv in (
        ["agent", "--bind", "127.0.0.1:0"],
        ["members", "--json"],
        ["publish", "t", "m"],
        ["subscribe", "t", "--json", "--count", "3"],
        ["stats", "--json"],
        ["leave"],
        ["keygen"],
    ):
        assert parser.parse_args(argv).command == argv[0]


# ----------------------------------------------- client commands, in-process


async def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with trio.fail_after(WAIT):
        return await trio.to_thread.run_sync(run_cli, args, capsys)


@bounded(TEST_MAX)
async def test_publish_subscribe_stats_leave_through_the_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = Agent(
        AgentSettings(
            bind=("127.0.0.1", 0),
            name="cli",
            config=fast_config(),
            leave_grace=0.05,
        )
    )
    service = Service(agent, control="127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        ctl = ["--control", str(service.control_address)]

        # overlay publish: MESSAGE from the command line or from stdin.
        async with agent.subscribe("t") as sub:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin\n")))
            assert (await _cli(["publish", "t", *ctl], capsys))[0] == 0
            assert (await _cli(["publish", "t", "second", *ctl], capsys))[0] == 0
            with trio.fail_after(WAIT):
                got = [(await sub.__anext__()).payload for _ in range(2)]
            assert got == [b"from stdin\n", b"second"]

        # overlay subscribe: one JSON line per delivery, exits after --count.
        attached = trio.Event()
        subscribe = agent.subscribe

        def spy(topic: str) -> object:
            try:
                return subscribe(topic)
            finally:
                attached.set()

        monkeypatch.setattr(agent, "subscribe", spy)
        done = trio.Event()
        results: list[tuple[int, str, str]] = []

        async def subscriber() -> None:
            results.append(await _cli(["subscribe", "t", "--json", "--count", "2", *ctl], capsys))
            done.set()

        nursery.start_soon(subscriber)
        with trio.fail_after(WAIT):
            await attached.wait()
        await agent.publish("t", b"one")
        await agent.publish("t", b"\xff binary")
        with trio.fail_after(WAIT):
            await done.wait()
        code, out, err = results[0]
        assert code == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert [d["payload"] for d in lines] == ["one", "\\xff binary"]
        assert base64.b64decode(lines[1]["payload_b64"]) == b"\xff binary"
        assert lines[0]["origin"] == "cli" and lines[0]["hops"] == 0

        code, out, _ = await _cli(["stats", "--json", *ctl], capsys)
        stats = json.loads(out)
        assert code == 0 and stats["name"] == "cli" and stats["published"] == 4
        code, out, _ = await _cli(["stats", *ctl], capsys)
        assert code == 0 and "cli at" in out and "problems: none" in out

        code, out, err = await _cli(
            ["publish", "t", "x" * (agent.settings.config.plumtree.max_payload + 1), *ctl], capsys
        )
        assert code == 1 and "payload is" in err and len(err.strip().splitlines()) == 1

        code, out, _ = await _cli(["leave", *ctl], capsys)
        assert code == 0 and "left" in out
        with trio.fail_after(WAIT):
            await agent.wait_stopped()
