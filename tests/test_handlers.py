"""Event handlers (`daemon.handlers`): the `[TYPE=]SCRIPT` grammar, and real
shell scripts run by real agents on loopback, writing to a file in tmp.

Scripts are real processes, so these tests run on the real clock; every
wait is bounded (`bounded`, `_until`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from daemon import handlers as handlers_mod
from daemon.agent import Agent, AgentSettings
from daemon.handlers import MEMBER_EVENTS, HandlerSpec, member_line, parse_handler
from daemon.subscriptions import Member
from daemon.testing import bounded, fast_config

WAIT = 20.0


def test_the_handler_grammar() -> None:
    every = frozenset(MEMBER_EVENTS)
    assert parse_handler("./h.sh") == HandlerSpec("./h.sh", every, all_topics=True)
    assert parse_handler("*=./h.sh") == HandlerSpec("./h.sh", every, all_topics=True)
    assert parse_handler("member-join=./h.sh") == HandlerSpec("./h.sh", frozenset({"member-join"}))
    assert parse_handler("member=x") == HandlerSpec("x", every)
    both = parse_handler("member-leave,member-failed=echo a=b")
    assert both == HandlerSpec("echo a=b", frozenset({"member-leave", "member-failed"}))
    user = parse_handler("user:deploy,user:db=./d.sh")
    assert user == HandlerSpec("./d.sh", topics=frozenset({"deploy", "db"}))
    assert user.wants_user("deploy") and not user.wants_user("other")
    assert parse_handler("user=./u.sh").wants_user("anything")
    # Text before "=" that is no event type list: all of it is the script.
    assert parse_handler("FOO=1 ./run.sh").script == "FOO=1 ./run.sh"


@pytest.mark.parametrize(
    "text", ["", "  ", "member-jion=./h.sh", "user:=./h.sh", "member-join=", "member-join,=x"]
)
def test_a_bad_handler_is_one_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match="event handler") as err:
        parse_handler(text)
    assert "\n" not in str(err.value)


def test_a_member_line_is_serf_s_cleaned() -> None:
    m = Member("a", "127.0.0.1:1", "alive", 0, {"role": "web", "z": "x\ty\nz\\"})
    assert member_line(m) == "a\t127.0.0.1:1\trole=web,z=x\\ty\\nz\\\\\n"


# A handler that appends what it got: its environment's OVERLAY_* values,
# then stdin, then an "end" line, to OUT.
RECORD = """{{ echo "event=$OVERLAY_EVENT self=$OVERLAY_SELF_NAME addr=$OVERLAY_SELF_ADDR \
role=$OVERLAY_TAG_ROLE topic=$OVERLAY_USER_EVENT origin=$OVERLAY_USER_ORIGIN"; cat; \
echo; echo end; }} >> {out}"""


def _agent(name: str, join: tuple[str, ...] = (), **settings: object) -> Agent:
    return Agent(
        AgentSettings(
            bind=("127.0.0.1", 0),
            name=name,
            join=join,
            config=fast_config(),
            tags={"role": "web"},
            **settings,  # type: ignore[arg-type]
        )
    )


async def _until(path: Path, text: str, count: int = 1) -> str:
    """Poll `path` (written by another process) until it holds `text`
    `count` times; bounded by the caller's `fail_after`."""
    while True:
        content = _text(path)
        if content.count(text) >= count:
            return content
        await trio.sleep(0.02)


@bounded(60)
async def test_member_events_reach_the_script(tmp_path: Path) -> None:
    out = tmp_path / "events.txt"
    script = RECORD.format(out=out)
    async with trio.open_nursery() as nursery:
        a = _agent("a", event_handlers=(f"member-join,member-failed,member-update={script}",))
        await nursery.start(a.run)
        b = _agent("b", join=(a.me.addr,))
        await nursery.start(b.run)
        with trio.fail_after(WAIT):
            seen = await _until(out, f"b\t{b.me.addr}\trole=web\n")
        # The agent's own start is a join too; the environment is Serf's.
        assert f"event=member-join self=a addr={a.me.addr} role=web" in seen
        assert f"a\t{a.me.addr}\trole=web\n" in seen
        await b.set_tags({"role": "db"})
        with trio.fail_after(WAIT):
            seen = await _until(out, f"b\t{b.me.addr}\trole=db\n")
        assert "event=member-update" in seen
        b.stop()
        with trio.fail_after(WAIT):
            seen = await _until(out, "event=member-failed")
        block = seen[seen.index("event=member-failed") :]
        assert f"b\t{b.me.addr}\trole=db\n" in block
        assert "member-leave" not in seen  # not asked for
        stats = a.stats()["handlers"][0]
        assert stats["runs"] >= 3 and stats["failed"] == 0 and stats["dropped"] == 0
        nursery.cancel_scope.cancel()


@bounded(60)
async def test_user_events_by_topic(tmp_path: Path) -> None:
    deploy, every = tmp_path / "deploy.txt", tmp_path / "all.txt"
    async with trio.open_nursery() as nursery:
        a = _agent(
            "a",
            event_handlers=(
                f"user:deploy={RECORD.format(out=deploy)}",
                f"user={RECORD.format(out=every)}",
            ),
        )
        await nursery.start(a.run)
        b = _agent("b", join=(a.me.addr,), wait_joined=True)
        await nursery.start(b.run)
        await b.joined(WAIT)
        await b.publish("other", b"not for deploy")
        await b.publish("deploy", b"v42")
        with trio.fail_after(WAIT):
            seen = await _until(deploy, "end")
            await _until(every, "end", 2)
        assert "event=user self=a" in seen and "topic=deploy origin=b" in seen
        assert "v42" in seen and "not for deploy" not in seen
        assert "topic=other" in every.read_text()
        nursery.cancel_scope.cancel()


@bounded(60)
async def test_a_slow_script_is_killed_and_failures_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pids = tmp_path / "pids"
    # Starts a child that would outlive it, then hangs: the timeout kills both.
    slow = f"sleep 300 & echo $! >> {pids}; echo $$ >> {pids}; sleep 300"
    caplog.set_level(logging.WARNING, "overlay.handlers")
    async with trio.open_nursery() as nursery:
        a = _agent(
            "a",
            event_handlers=(f"user:slow={slow}", "user:fail=echo broken; exit 3"),
            event_handler_timeout=0.5,
        )
        await nursery.start(a.run)
        await a.publish("slow", b"x")
        await a.publish("fail", b"x")
        with trio.fail_after(WAIT):
            while (
                a.stats()["handlers"][0]["timeouts"] < 1 or a.stats()["handlers"][1]["failed"] < 1
            ):
                await trio.sleep(0.05)
        for pid in map(int, pids.read_text().split()):
            with trio.fail_after(5):
                while _alive(pid):
                    await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    messages = [(r.getMessage(), getattr(r, "overlay_fields", {})) for r in caplog.records]
    assert any(m == "event handler timed out: killed" for m, _ in messages)
    failed = [f for m, f in messages if m == "event handler failed"]
    assert failed and failed[0]["exit"] == 3 and failed[0]["output"] == "broken"


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is gone for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


@bounded(60)
async def test_a_flood_is_bounded_and_never_blocks_the_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script slower than the events: one run at a time, the queue holds
    `MAX_PENDING`, the rest is dropped and counted, and the agent keeps
    delivering every message to its subscriber meanwhile."""
    monkeypatch.setattr(handlers_mod, "MAX_PENDING", 5)
    runs = tmp_path / "runs"
    script = f"echo start >> {runs}; sleep 0.2; echo stop >> {runs}"
    async with trio.open_nursery() as nursery:
        a = _agent("a", event_handlers=(f"user:flood={script}",))
        await nursery.start(a.run)
        n = 200
        async with a.subscribe("flood") as sub:
            start = trio.current_time()
            for i in range(n):
                await a.publish("flood", str(i).encode())
            got = 0
            with trio.fail_after(5):
                async for _ in sub:
                    got += 1
                    if got == n:
                        break
            assert trio.current_time() - start < 2.0  # not paced by the 0.2 s script
        stats = a.stats()["handlers"][0]
        assert stats["dropped"] >= n - 5 - 2
        # Every event not dropped runs, one after the other.
        with trio.fail_after(WAIT):
            while _text(runs).count("stop") < n - stats["dropped"]:
                await trio.sleep(0.05)
        lines = runs.read_text().split()
        # Never two at once: start and stop alternate.
        assert lines == ["start", "stop"] * (n - stats["dropped"])
        assert a.stats()["handlers"][0]["runs"] == n - stats["dropped"]
        nursery.cancel_scope.cancel()


def test_handlers_and_snapshot_from_the_file_and_flags(tmp_path: Path) -> None:
    from daemon.settings import build

    file = {
        "agent": {
            "event_handlers": ["member=./m.sh", "user:deploy=./d.sh"],
            "event_handler_timeout": 5,
            "snapshot": str(tmp_path / "s.json"),
            "publish_queue": 16,
        }
    }
    settings, _ = build(file, {}, {})
    assert settings.event_handlers == ("member=./m.sh", "user:deploy=./d.sh")
    assert settings.event_handler_timeout == 5.0
    assert settings.snapshot == str(tmp_path / "s.json")
    assert settings.publish_queue == 16
    # Flags replace the file's list.
    settings, _ = build(file, {"event_handlers": ["user=./u.sh"]}, {})
    assert settings.event_handlers == ("user=./u.sh",)


@pytest.mark.parametrize(
    ("agent", "message"),
    [
        ({"event_handlers": ["member-jion=./h.sh"]}, "unknown event type 'member-jion'"),
        ({"event_handlers": [1]}, "event_handlers must be a list"),
        ({"event_handler_timeout": 0}, "event_handler_timeout: must be above 0"),
        ({"snapshot": 3}, "snapshot must be a file path"),
    ],
)
def test_bad_handler_settings_are_one_clear_error(agent: dict[str, object], message: str) -> None:
    from daemon.settings import SettingsError, build

    with pytest.raises(SettingsError, match=message):
        build({"agent": agent}, {}, {})


def test_the_cli_refuses_a_bad_handler_with_a_usage_error() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "agent", "--event-handler", "user:=x"],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no script" not in done.stderr
    assert "unknown event type 'user:'" in done.stderr


def test_member_changes_become_serf_s_events() -> None:
    """Which change is which event, and member events of one type that
    wait together coalesce into one run (the newest line per member)."""
    spec = parse_handler("member=true")
    h = handlers_mod.EventHandlers([spec], 1.0, lambda: ("me", "127.0.0.1:1", {}))
    runner = h._runners[0]

    def m(name: str, status: str, **tags: str) -> Member:
        return Member(name, f"127.0.0.1:{ord(name[0])}", status, 0, tags)

    for change in [
        m("a", "alive"),
        m("b", "alive"),  # coalesces with a's join
        m("a", "suspect"),  # no event
        m("a", "alive"),  # refuted: no event
        m("a", "alive", role="db"),  # update
        m("a", "failed"),
        m("b", "left"),
        m("c", "failed"),  # never held live: nothing
        m("a", "alive", role="db"),  # back: a join again
        m("d", "suspect"),  # first heard of as suspect: a member (coalesces)
    ]:
        h.member_changed(change)
    got = [(e.kind, [line.split("\t")[0] for line in e.members.values()]) for e in runner.pending]
    assert got == [
        ("member-join", ["a", "b"]),
        ("member-update", ["a"]),
        ("member-failed", ["a"]),
        ("member-leave", ["b"]),
        ("member-join", ["a", "d"]),
    ]
    assert runner.counters["coalesced"] == 2


@given(st.text(max_size=30), st.dictionaries(st.text(max_size=10), st.text(max_size=10)))
def test_a_member_line_is_always_one_line_of_three_fields(name: str, tags: dict[str, str]) -> None:
    line = member_line(Member(name, "127.0.0.1:1", "alive", 0, tags))
    assert line.endswith("\n") and line.count("\n") == 1
    assert line.count("\t") == 2


@given(st.text(max_size=40))
def test_any_handler_text_parses_or_is_one_value_error(text: str) -> None:
    try:
        spec = parse_handler(text)
    except ValueError as exc:
        assert "\n" not in str(exc) or "\n" in text
        return
    assert spec.script.strip()


@bounded(30)
async def test_a_running_script_is_killed_when_the_agent_stops(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    async with trio.open_nursery() as nursery:
        a = _agent("a", event_handlers=(f"user:t=echo $$ > {pid_file}; exec sleep 300",))
        await nursery.start(a.run)
        await a.publish("t", b"x")
        with trio.fail_after(WAIT):
            while not _text(pid_file).strip():
                await trio.sleep(0.02)
        pid = int(_text(pid_file))
        assert _alive(pid)
        a.stop()
        await a.wait_stopped()
    with trio.fail_after(5):
        while _alive(pid):
            await trio.sleep(0.02)
