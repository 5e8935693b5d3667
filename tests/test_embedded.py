"""The embedded API's join (issue 15): `agent.joined()`, `wait_joined`, and
publishes made before the join, queued (bounded) and sent once joined; and
examples/embedded.py, the README's example, run as written."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from daemon.agent import Agent, AgentError, AgentSettings
from daemon.testing import bounded, fast_config

ROOT = Path(__file__).resolve().parent.parent
WAIT = 20.0
# Anti-entropy this slow cannot be what delivers a message in these tests:
# only the tree (after the join) can, in time.
NO_ANTI_ENTROPY = fast_config(**{"plumtree.anti_entropy_period": 600.0})


def _settings(name: str, join: tuple[str, ...] = (), **kw: object) -> AgentSettings:
    return AgentSettings(
        bind=("127.0.0.1", 0),
        name=name,
        join=join,
        config=NO_ANTI_ENTROPY,
        **kw,  # type: ignore[arg-type]
    )


def _dead_port() -> int:
    """A loopback port where nothing listens (TCP and UDP: bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@bounded(30)
async def test_a_founder_is_joined_at_once_a_joiner_once_it_has_a_neighbour() -> None:
    async with trio.open_nursery() as nursery:
        a = Agent(_settings("a"))
        await nursery.start(a.run)
        with trio.fail_after(1):
            await a.joined()
        b = Agent(_settings("b", (a.me.addr,)))
        await nursery.start(b.run)
        assert not b.is_joined  # nothing has answered yet
        await b.joined(WAIT)
        assert b.node.views().active
        nursery.cancel_scope.cancel()


@bounded(30)
async def test_joined_times_out_and_an_agent_that_stops_is_an_error() -> None:
    async with trio.open_nursery() as nursery:
        lonely = Agent(_settings("lonely", (f"127.0.0.1:{_dead_port()}",)))
        await nursery.start(lonely.run)
        with pytest.raises(trio.TooSlowError):
            await lonely.joined(0.5)
        nursery.start_soon(_stop_soon, lonely)
        with pytest.raises(AgentError, match="stopped before it joined"):
            await lonely.joined(WAIT)
        nursery.cancel_scope.cancel()


async def _stop_soon(agent: Agent) -> None:
    await trio.sleep(0.1)
    agent.stop()


@bounded(30)
async def test_a_publish_right_after_start_arrives_by_the_tree() -> None:
    """Published before the join (queued), it goes out right after it:
    well before any anti-entropy could carry it, and in order."""
    async with trio.open_nursery() as nursery:
        a = Agent(_settings("a"))
        await nursery.start(a.run)
        async with a.subscribe("news") as sub:
            b = Agent(_settings("b", (a.me.addr,)))
            await nursery.start(b.run)
            for i in range(3):
                await b.publish("news", b"early %d" % i)
            assert not b.is_joined
            got = []
            with trio.fail_after(5):
                async for msg in sub:
                    got.append(msg.payload)
                    if len(got) == 3:
                        break
            assert got == [b"early 0", b"early 1", b"early 2"]
        nursery.cancel_scope.cancel()


@bounded(30)
async def test_the_queue_is_bounded_and_publishers_wait_for_room() -> None:
    async with trio.open_nursery() as nursery:
        b = Agent(_settings("b", (f"127.0.0.1:{_dead_port()}",), publish_queue=2))
        await nursery.start(b.run)
        await b.publish("t", b"1")
        await b.publish("t", b"2")
        with trio.move_on_after(0.3) as waited:
            await b.publish("t", b"3")
        assert waited.cancelled_caught  # no room: the third waits
        assert len(b._early) == 2
        nursery.cancel_scope.cancel()


@bounded(30)
async def test_wait_joined_and_a_leave_sends_what_was_queued() -> None:
    async with trio.open_nursery() as nursery:
        a = Agent(_settings("a"))
        await nursery.start(a.run)
        async with a.subscribe("bye") as sub:
            async with Agent(_settings("w", (a.me.addr,), wait_joined=WAIT)) as w:
                assert w.is_joined and w.node.views().active
            # Published at once, then left at once: sent before the goodbye.
            async with Agent(_settings("b", (a.me.addr,), leave_grace=2.0)) as b:
                await b.publish("bye", b"last words")
            with trio.fail_after(5):
                msg = await sub.__anext__()
            assert (msg.payload, msg.origin) == (b"last words", "b")
        nursery.cancel_scope.cancel()


@bounded(60)
async def test_the_readme_example_runs_as_written() -> None:
    """examples/embedded.py: a subscriber, then a publisher that joins it,
    publishes right after it starts and exits; the subscriber prints it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    example = str(ROOT / "examples" / "embedded.py")
    py = sys.executable
    sub = await trio.lowlevel.open_process(
        [py, example, "--bind", "127.0.0.1:0", "--name", "s", "subscribe", "deploys"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert sub.stdout is not None
        lines = _lines(sub.stdout)
        with trio.fail_after(WAIT):
            first = await lines.__anext__()
        assert first.startswith("listening on 127.0.0.1:")
        addr = first.split()[-1]
        with trio.fail_after(WAIT):
            publisher = ["--bind", "127.0.0.1:0", "--name", "p", "--join", addr]
            pub = await trio.run_process(
                [py, example, *publisher, "publish", "deploys", "v42"],
                capture_stdout=True,
                capture_stderr=True,
                env=env,
            )
        assert pub.stdout.decode() == "published 'v42' on 'deploys'\n"
        with trio.fail_after(WAIT):
            assert await lines.__anext__() == "p v42"
            assert await sub.wait() == 0  # --count 1: it exits after it
    finally:
        if sub.returncode is None:
            sub.kill()
            await sub.wait()


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    buf = b""
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode()
        chunk = await stream.receive_some()
        if not chunk:
            return
        buf += chunk


@bounded(30)
async def test_wait_joined_raises_too_slow_and_stops_the_agent() -> None:
    agent = Agent(_settings("lonely", (f"127.0.0.1:{_dead_port()}",), wait_joined=0.3))
    with pytest.raises(trio.TooSlowError):
        async with agent:
            raise AssertionError("not joined: the block must not run")
    assert not agent.running
