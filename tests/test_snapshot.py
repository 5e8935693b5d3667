"""The snapshot (`daemon.snapshot`): its file, bounded and written all or
nothing; a bad file is a warning, not a crash; and a restarted agent
rejoins through it alone, past its old self's incarnation."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon import snapshot as snap
from daemon.agent import Agent, AgentSettings
from daemon.subscriptions import Member
from daemon.testing import Changes, bounded, fast_config
from overlay.config import Config
from overlay.ids import NodeId
from overlay.io import MemberChanged, MemberStatus, Send
from overlay.messages import Join
from overlay.node import Node

ROOT = Path(__file__).resolve().parent.parent
WAIT = 20.0


def _m(i: int, status: str = "alive") -> Member:
    return Member(f"n{i}", f"127.0.0.1:{1000 + i}", status, i, {"k": "v"})


def test_the_file_round_trips_live_members_first() -> None:
    members = [_m(1, "failed"), _m(2), _m(3, "left"), _m(4, "suspect"), _m(0)]
    data = snap.encode("n0", "127.0.0.1:1000", 7, members)
    saved = snap.parse(data)
    assert (saved.name, saved.addr, saved.incarnation) == ("n0", "127.0.0.1:1000", 7)
    # Itself and the left one are not kept; live before failed.
    assert [(m.name, m.status) for m in saved.members] == [
        ("n2", "alive"),
        ("n4", "suspect"),
        ("n1", "failed"),
    ]


def test_the_file_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snap, "MAX_MEMBERS", 10)
    data = snap.encode("me", "127.0.0.1:1", 0, [_m(i) for i in range(1, 50)])
    assert len(json.loads(data)["members"]) == 10
    with pytest.raises(ValueError, match="larger than"):
        snap.parse(b" " * (snap.MAX_FILE_BYTES + 1))


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff garbage",
        b"[]",
        b'{"format": 99}',
        b'{"format": 1, "name": "a", "addr": "127.0.0.1:1", "incarnation": -1, "members": []}',
        b'{"format": 1, "name": "a", "addr": "127.0.0.1:1", "incarnation": 0, "members": {}}',
    ],
)
def test_a_corrupt_file_is_refused(content: bytes) -> None:
    with pytest.raises(ValueError):
        snap.parse(content)


def test_invalid_member_records_are_skipped() -> None:
    obj = {
        "format": 1,
        "name": "a",
        "addr": "127.0.0.1:1",
        "incarnation": 3,
        "members": [
            {"name": "b", "addr": "127.0.0.1:2", "status": "alive", "incarnation": 1},
            {"name": "c", "addr": "no port", "status": "alive", "incarnation": 1},
            {"name": "d", "addr": "127.0.0.1:4", "status": "zombie", "incarnation": 1},
            {"name": "e\n", "addr": "127.0.0.1:5", "status": "alive", "incarnation": 1},
            "not a record",
        ],
    }
    saved = snap.parse(json.dumps(obj).encode())
    assert [m.name for m in saved.members] == ["b"]


def test_missing_unreadable_and_corrupt_files_are_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "overlay.snapshot")
    assert snap.Snapshot(str(tmp_path / "none.json")).load() is None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert snap.Snapshot(str(bad)).load() is None
    assert snap.Snapshot(str(tmp_path)).load() is None  # a directory: unreadable
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "no snapshot file yet: starting without one (normal on a first start)",
        "snapshot file corrupt: starting without it (it will be rewritten)",
        "snapshot file unreadable: starting without it",
    ]


def test_writes_are_atomic(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("old")
    snap.write_atomically(str(path), b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temporary left


def test_rejoin_seeds_are_bounded_live_first(tmp_path: Path) -> None:
    members = [_m(i, "failed") for i in range(1, 4)] + [_m(i) for i in range(4, 40)]
    path = tmp_path / "s.json"
    path.write_bytes(snap.encode("n0", "127.0.0.1:1000", 0, members))
    s = snap.Snapshot(str(path))
    s.load()
    seeds = s.rejoin_seeds("127.0.0.1:1000", random.Random(0))
    assert len(seeds) == snap.MAX_REJOIN
    assert not set(seeds) & {m.addr for m in members if m.status == "failed"}
    assert s.incarnation_for("n0", "127.0.0.1:1000") == 1
    assert s.incarnation_for("other", "127.0.0.1:1000") == 0


def test_a_node_starts_at_the_incarnation_it_is_given() -> None:
    me = NodeId("a", "127.0.0.1", 1)
    outs = Node(me, Config(), random.Random(0), incarnation=5).start(0.0)
    assert MemberChanged(me, MemberStatus.ALIVE, 5, {}) in outs


@bounded(90)
async def test_a_restarted_agent_rejoins_through_its_snapshot(tmp_path: Path) -> None:
    """Three agents; the third stops (no goodbye) and starts again with
    its snapshot and no seed: it rejoins, past its old incarnation."""
    config = fast_config()
    path = tmp_path / "c.json"
    async with trio.open_nursery() as nursery:
        a = Agent(AgentSettings(bind=("127.0.0.1", 0), name="a", config=config))
        await nursery.start(a.run)
        b = Agent(AgentSettings(bind=("127.0.0.1", 0), name="b", config=config, join=(a.me.addr,)))
        await nursery.start(b.run)
        c = Agent(
            AgentSettings(
                bind=("127.0.0.1", 0),
                name="c",
                config=config,
                join=(a.me.addr,),
                snapshot=str(path),
            )
        )
        await nursery.start(c.run)
        changes = Changes([a, b, c])

        def everyone_alive(agents: list[Agent]) -> bool:
            return all(
                sorted(m.name for m in x.members() if m.status == "alive") == ["a", "b", "c"]
                for x in agents
            )

        await changes.until(lambda: everyone_alive([a, b, c]), WAIT)
        # The file follows the member list (written at most once a second).
        with trio.fail_after(WAIT):
            while sorted(m["name"] for m in _members(path)) != ["a", "b"]:
                await trio.sleep(0.05)
        port = c.me.port
        old = next(m.incarnation for m in a.members() if m.name == "c")
        c.stop()
        await c.wait_stopped()
        await changes.until(
            lambda: all(
                any(m.name == "c" and m.status == "failed" for m in x.members()) for x in (a, b)
            ),
            WAIT,
        )

        saved = json.loads(path.read_text())["incarnation"]
        c2 = Agent(
            AgentSettings(bind=("127.0.0.1", port), name="c", config=config, snapshot=str(path))
        )
        # Its JOINs prove it asked (a and b reconnecting to a member they
        # hold failed would bring it back too, without a snapshot).
        joins: list[str] = []
        c2.observers.append(
            lambda now, out: (
                joins.append(out.to.addr)
                if isinstance(out, Send) and isinstance(out.msg, Join)
                else None
            )
        )
        await nursery.start(c2.run)
        # Past its old self from the start, before it heard anyone.
        assert [m.incarnation for m in c2.members() if m.name == "c"] == [saved + 1]
        changes.watch(c2)
        started = trio.current_time()
        await c2.joined(WAIT)
        joined_after = trio.current_time() - started
        await changes.until(lambda: everyone_alive([a, b, c2]), WAIT)
        assert joins and set(joins) <= {a.me.addr, b.me.addr}
        assert next(m.incarnation for m in a.members() if m.name == "c") > old
        assert c2.node.views().active
        print(f"rejoined through the snapshot in {joined_after * 1000:.0f} ms")
        nursery.cancel_scope.cancel()


def _members(path: Path) -> list[dict[str, object]]:
    try:
        members = json.loads(path.read_text())["members"]
    except (OSError, ValueError):
        return []
    assert isinstance(members, list)
    return members


def test_the_cli_warns_about_a_corrupt_snapshot_and_runs(tmp_path: Path) -> None:
    """`overlay agent --snapshot BAD` starts all the same, saying why it
    did not use the file (one WARNING line), and writes a good one."""
    bad = tmp_path / "snap.json"
    bad.write_text("{corrupt")
    script = (
        "import logging, os, sys\n"
        "class Started(logging.Handler):\n"
        "    def emit(self, record):\n"
        "        if record.getMessage() == 'agent started':\n"
        "            sys.stderr.flush(); os._exit(0)\n"
        "logging.getLogger('overlay.agent').addHandler(Started())\n"
        "from daemon.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "agent",
            "--bind",
            "127.0.0.1:0",
            "--control",
            "none",
            "--snapshot",
            str(bad),
            "--log-json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    warned = [x for x in lines if x["logger"] == "overlay.snapshot"]
    assert len(warned) == 1 and warned[0]["level"] == "warning"
    assert warned[0]["msg"].startswith("snapshot file corrupt") and warned[0]["snapshot"] == str(
        bad
    )


@given(st.binary(max_size=2000) | st.text(max_size=2000).map(str.encode))
@settings(max_examples=300, deadline=None)
def test_any_bytes_parse_or_raise_value_error(data: bytes) -> None:
    """Whatever is in the file, reading it raises ValueError or gives valid members."""
    try:
        saved = snap.parse(data)
    except ValueError:
        return
    assert all(m.status in ("alive", "suspect", "failed") for m in saved.members)


_records = st.fixed_dictionaries(
    {
        "name": st.text(max_size=20) | st.integers(),
        "addr": st.sampled_from(["127.0.0.1:7946", "[::1]:1", "x", "h:0", ""]) | st.none(),
        "status": st.sampled_from(["alive", "suspect", "failed", "left", 1]),
        "incarnation": st.integers(-5, 2**70) | st.booleans() | st.text(max_size=3),
    }
)


@given(st.lists(_records | st.integers() | st.none(), max_size=20))
@settings(max_examples=200, deadline=None)
def test_member_records_of_any_shape_are_kept_or_skipped(records: list[object]) -> None:
    obj = {"format": 1, "name": "a", "addr": "127.0.0.1:1", "incarnation": 0, "members": records}
    saved = snap.parse(json.dumps(obj).encode())
    assert len(saved.members) <= len(records)
    # What is kept round-trips.
    again = snap.parse(snap.encode("a", "127.0.0.1:1", 0, list(saved.members)))
    assert [(m.name, m.addr) for m in again.members] == [
        (m.name, m.addr) for m in saved.members if m.addr != "127.0.0.1:1" or m.name != "a"
    ]


def test_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    snap.write_atomically(str(path), b"{}")
    assert path.stat().st_mode & 0o077 == 0  # the member list: readable by the agent's user only
