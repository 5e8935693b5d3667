"""The agent's runtime, one requirement at a time: trio time drives the node,
the advertised address, seeds that are down, hostile input, bounded queues.
Loopback only; every wait is for a condition, bounded by `fail_after`."""

from __future__ import annotations

import ipaddress
import logging
import math
import random
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio
import trio.testing

from daemon.agent import Agent, AgentSettings, Delivery, _outbound_ip
from daemon.framing import prefixed
from daemon.testing import Changes, all_alive, bounded, fast_config, local_cluster
from overlay import codec
from overlay.config import Config
from overlay.ids import NodeId
from overlay.io import (
    CancelTimer,
    Input,
    Isolated,
    LeaveComplete,
    Output,
    Received,
    SetTimer,
    Timer,
    TimerFired,
)
from overlay.messages import Disconnect, Join, Neighbor
from tests.helpers import TEST_MAX
from tests.test_daemon_discovery import fake_dns, srv_response

WAIT = 30.0
# No test may take longer than this, whatever it awaits.


@contextmanager
def captured(logger: str = "overlay") -> Iterator[list[logging.LogRecord]]:
    """Records of `logger` at INFO and above, whatever the root logger does
    (the CLI's `logs.setup` stops propagation)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    target = logging.getLogger(logger)
    handler = Keep(logging.INFO)
    old = target.level
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    try:
        yield records
    finally:
        target.removeHandler(handler)
        target.setLevel(old)


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields = getattr(record, "overlay_fields", {})
    return fields if isinstance(fields, dict) else {}


# ---------------------------------------------------------------- time


@bounded(3600)  # virtual seconds: the test lives ten minutes of them
async def test_trio_time_drives_the_node(autojump_clock: trio.testing.MockClock) -> None:
    """`node.handle(input, trio.current_time())`: under a MockClock a lone
    agent lives ten virtual minutes in a moment, every timer firing exactly
    at the deadline the node asked for."""
    agent = Agent(AgentSettings(bind=("127.0.0.1", 0), name="solo", config=Config(), seed=7))
    await agent.bind()
    node = agent.node
    inner = node.handle
    fired: list[tuple[float, Timer, float | None]] = []  # (now, timer, its deadline)
    due: dict[Timer, float] = {}

    def handle(inp: Input, now: float) -> list[Output]:
        if isinstance(inp, TimerFired):
            fired.append((now, inp.timer, due.pop(inp.timer, None)))
        return inner(inp, now)

    def observe(now: float, out: Output) -> None:
        match out:
            case SetTimer(timer, delay):
                due[timer] = now + delay
            case CancelTimer(timer):
                due.pop(timer, None)

    node.handle = handle  # type: ignore[method-assign]
    agent.observers.append(observe)
    t0 = trio.current_time()
    async with agent:
        await trio.sleep(600)
    assert len(fired) > 500  # SWIM probes alone: one a second
    for now, timer, deadline in fired:
        assert deadline is not None and now == pytest.approx(deadline, abs=1e-9), timer
    assert fired[-1][0] - t0 == pytest.approx(600, abs=2)


# ------------------------------------------------------- what the node says


@pytest.mark.parametrize("node_says_so", [True, False])
@bounded(3600)  # virtual seconds
async def test_a_leave_ends_when_the_node_says_so(
    autojump_clock: trio.testing.MockClock, node_says_so: bool
) -> None:
    """The agent ends a leave on the node's `LeaveComplete` (a lone node
    has nobody to tell: at once); its grace only bounds a node that never
    says so."""
    agent = Agent(
        AgentSettings(bind=("127.0.0.1", 0), name="solo", config=Config(), leave_grace=600.0)
    )
    await agent.bind()
    if not node_says_so:
        inner = agent.node.handle

        def handle(inp: Input, now: float) -> list[Output]:
            return [o for o in inner(inp, now) if not isinstance(o, LeaveComplete)]

        agent.node.handle = handle  # type: ignore[method-assign]
    said: list[Output] = []
    agent.observers.append(lambda now, out: said.append(out))
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        t0 = trio.current_time()
        await agent.leave()
        took = trio.current_time() - t0
    assert (LeaveComplete() in said) is node_says_so
    assert took < 1.0 if node_says_so else took == pytest.approx(600.0, abs=1.0)


@bounded(TEST_MAX)
async def test_alone_follows_what_the_node_says() -> None:
    """The agent resolves its seeds again while the node says it is
    isolated: it never reads the views itself."""
    agent = Agent(AgentSettings(bind=("127.0.0.1", 0), name="solo", config=Config()))
    await agent.bind()
    assert agent._alone.is_set()  # a node starts isolated
    agent._execute([Isolated(False)], 0.0)
    assert not agent._alone.is_set()
    agent._execute([Isolated(True)], 0.0)
    assert agent._alone.is_set()
    await agent.unbind()


# ------------------------------------------------------------- addresses


async def _pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
    try:
        async for chunk in src:
            await dst.send_all(chunk)
        await dst.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


class Forwarder:
    """A port on 127.0.0.1 that forwards TCP and UDP to another one, like a
    NAT or a container port mapping: the agent behind it must advertise
    the forwarder's address, which it cannot bind."""

    def __init__(self) -> None:
        self.target = 0
        self.port = 0
        self.streams = 0
        self.datagrams = 0

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        for _ in range(20):  # the UDP port of that number may be taken
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            udp = trio.socket.socket(type=socket.SOCK_DGRAM)
            try:
                await udp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                udp.close()
                for listener in listeners:
                    await listener.aclose()
        out = trio.socket.socket(type=socket.SOCK_DGRAM)
        with udp, out:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, self._stream, listeners)
                task_status.started(self.port)
                while True:
                    data, _ = await udp.recvfrom(65535)
                    self.datagrams += 1
                    await out.sendto(data, ("127.0.0.1", self.target))

    async def _stream(self, client: trio.SocketStream) -> None:
        self.streams += 1
        async with client:
            try:
                server = await trio.open_tcp_stream("127.0.0.1", self.target)
            except OSError:
                return
            async with server, trio.open_nursery() as nursery:
                nursery.start_soon(_pump, client, server)
                nursery.start_soon(_pump, server, client)


async def test_identity_takes_the_advertised_address() -> None:
    async def me(**kw: object) -> NodeId:
        agent = Agent(AgentSettings(name="a", **kw))  # type: ignore[arg-type]
        return await agent._identity(("127.0.0.1", 7946))

    assert await me() == NodeId("a", "127.0.0.1", 7946)
    assert await me(advertise=("203.0.113.7", 9000)) == NodeId("a", "203.0.113.7", 9000)
    # Port 0: the bound port, at the advertised host.
    assert await me(advertise=("203.0.113.7", 0)) == NodeId("a", "203.0.113.7", 7946)


async def test_a_wildcard_bind_advertises_a_real_address() -> None:
    """Bound to 0.0.0.0 (or ::) with no --advertise, the agent must not tell
    peers to dial 0.0.0.0: it advertises its default route's address (found
    with an unsent UDP connect), or loopback on a machine without a route."""
    agent = Agent(AgentSettings(name="a"))
    for wildcard, family in (("0.0.0.0", socket.AF_INET), ("::", socket.AF_INET6)):
        me = await agent._identity((wildcard, 7946))
        assert me.port == 7946
        host = ipaddress.ip_address(me.host)
        assert not host.is_unspecified
        assert host.version == (4 if family == socket.AF_INET else 6)
        assert me.host == _outbound_ip(family)


@bounded(TEST_MAX)
async def test_peers_reach_an_agent_at_its_advertised_address() -> None:
    forwarder = Forwarder()
    config = fast_config()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(forwarder.run)
        hidden = Agent(
            AgentSettings(
                bind=("127.0.0.1", 0),
                advertise=("127.0.0.1", port),
                name="hidden",
                config=config,
            )
        )
        await hidden.bind()
        assert hidden.me == NodeId("hidden", "127.0.0.1", port)
        assert hidden._transport.bound is not None
        forwarder.target = hidden._transport.bound[1]
        async with local_cluster(2, config=config) as agents, hidden:
            everyone = [*agents, hidden]
            changes = Changes(everyone)
            await hidden.join(agents[0].me.addr)
            names = ["n0", "n1", "hidden"]
            await changes.until(lambda: all_alive(everyone, names), WAIT)
            for agent in agents:
                listed = {m.name: m.addr for m in agent.members()}
                assert listed["hidden"] == f"127.0.0.1:{port}"
            # Its peers dial and probe it through the forwarder only.
            await changes.until(lambda: forwarder.streams >= 1 and forwarder.datagrams >= 1, WAIT)
            async with hidden.subscribe("t") as sub:
                await agents[1].publish("t", b"through the forwarder")
                with trio.fail_after(WAIT):
                    got = await sub.__anext__()
            assert got.payload == b"through the forwarder"
            hidden.stop()
        nursery.cancel_scope.cancel()


# ----------------------------------------------------------------- seeds


@bounded(TEST_MAX)
async def test_a_dead_seed_is_retried_and_each_failure_logged() -> None:
    """While alone the agent keeps dialling its seed (HyParView's backoff),
    logging why each attempt failed; once the seed is up, it joins. A seed
    name that does not resolve is logged with the reason too, every round."""

    def nxdomain(query: bytes, tcp: bool) -> bytes:
        return srv_response(query, [], rcode=3)

    with socket.socket() as s:  # a free port: nobody listens there yet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = fast_config(**{"hyparview.join_retry_max": 0.4})
    with captured() as records:
        async with trio.open_nursery() as nursery:
            dns_port = await nursery.start(fake_dns, nxdomain)
            joiner = Agent(
                AgentSettings(
                    bind=("127.0.0.1", 0),
                    name="joiner",
                    join=(f"127.0.0.1:{port}", "_overlay._tcp.nowhere.test"),
                    config=config,
                    dns_servers=(f"127.0.0.1#{dns_port}",),
                )
            )

            def failures() -> list[logging.LogRecord]:
                return [r for r in records if r.getMessage() == "dial failed"]

            def unresolved() -> list[logging.LogRecord]:
                return [r for r in records if r.getMessage() == "seed not resolved"]

            async with joiner:
                changes = Changes([joiner])
                await changes.until(lambda: len(failures()) >= 3 and len(unresolved()) >= 2, WAIT)
                for record in failures():
                    assert record.levelno == logging.WARNING
                    assert _fields(record)["error"] == "connection refused"
                    assert str(_fields(record)["peer"]).endswith(f"@127.0.0.1:{port}")
                assert _fields(unresolved()[0])["error"] == (
                    "_overlay._tcp.nowhere.test: no such name"
                )
                assert joiner.node.views().active == ()
                # The seed comes up at that address: the next attempt joins.
                seed = Agent(AgentSettings(bind=("127.0.0.1", port), name="seed", config=config))
                async with seed:
                    changes.watch(seed)
                    await changes.until(lambda: all_alive([joiner, seed], ["joiner", "seed"]), WAIT)
                    seed.stop()
                joiner.stop()
            nursery.cancel_scope.cancel()


# --------------------------------------------------------- hostile input


def _garbage(rng: random.Random, frames: list[bytes]) -> Iterator[bytes]:
    """Frames that must not decode: random bytes, valid frames cut short or
    with bytes appended, msgpack of the wrong shape."""
    for _ in range(100):
        yield rng.randbytes(rng.randrange(1, 300))
    for frame in frames:
        for cut in range(1, len(frame), max(1, len(frame) // 8)):
            yield frame[:cut]
        yield frame + b"\x00"
        yield frame + rng.randbytes(20)
    yield b"\x93\x01\x02\x03"  # [1, 2, 3]
    yield b"\x80"  # {}
    yield b"\xc1" * 10  # never used in msgpack


@bounded(TEST_MAX)
async def test_garbage_on_both_ports_never_stops_the_agent() -> None:
    rng = random.Random(0)
    async with local_cluster(2) as agents:
        target, peer = agents
        changes = Changes(agents)
        await changes.until(lambda: all_alive(agents, ["n0", "n1"]), WAIT)
        # Valid frames from a real member, to cut and extend.
        frames = [
            codec.encode(peer.me, msg)
            for msg in (Join(), Neighbor(high_priority=True), Disconnect(alive=True))
        ]
        junk = list(_garbage(rng, frames))
        junk = [j for j in junk if not _decodes(j)]
        host, port = target.me.host, target.me.port
        with trio.socket.socket(type=socket.SOCK_DGRAM) as udp:
            for data in junk:
                await udp.sendto(data, (host, port))
        for i in range(0, len(junk), 40):
            stream = await trio.open_tcp_stream(host, port)
            chunk = b"".join(prefixed(j) for j in junk[i : i + 40])
            with trio.fail_after(WAIT):
                try:
                    await stream.send_all(chunk + struct.pack(">I", 2**31))
                    while await stream.receive_some(4096):
                        pass  # the agent closes it at the first bad frame
                except trio.BrokenResourceError:
                    pass  # or resets it while we still write
            await stream.aclose()
        await changes.until(lambda: sum(target.metrics.bad_frames.values()) >= 5, WAIT)
        assert target.running
        assert target.metrics.bad_frames["udp:decode"] >= 1
        assert target.metrics.bad_frames["tcp:decode"] >= 1, target.metrics.bad_frames
        # Still a member of a working cluster.
        async with target.subscribe("t") as sub:
            await peer.publish("t", b"still here")
            with trio.fail_after(WAIT):
                assert (await sub.__anext__()).payload == b"still here"
        assert all_alive(agents, ["n0", "n1"])


def _decodes(data: bytes) -> bool:
    try:
        codec.decode(data)
    except codec.DecodeError:
        return False
    return True


@bounded(TEST_MAX)
async def test_an_input_the_protocol_fails_on_is_dropped_and_counted() -> None:
    """A bug that a peer's message reaches must not stop the agent: the input
    is dropped, logged with its traceback and counted."""
    async with local_cluster(2) as agents:
        target = agents[0]
        changes = Changes(agents)
        await changes.until(lambda: all_alive(agents, ["n0", "n1"]), WAIT)
        node = target.node
        inner = node.handle
        failures = 3

        def handle(inp: Input, now: float) -> list[Output]:
            nonlocal failures
            if isinstance(inp, Received) and failures > 0:
                failures -= 1
                raise RuntimeError("a bug")
            return inner(inp, now)

        node.handle = handle  # type: ignore[method-assign]
        with captured() as records:
            await changes.until(lambda: target.metrics.errors["handler"] == 3, WAIT)
        assert target.running
        errors = [r for r in records if r.levelno == logging.ERROR]
        assert errors and errors[0].exc_info is not None
        assert "a bug" in errors[0].getMessage()
        assert target.stats()["errors"] == {"handler": 3}
        assert "overlay_errors_total" in target.prometheus()
        await changes.until(lambda: all_alive(agents, ["n0", "n1"]), WAIT)


# ---------------------------------------------------------------- queues


@bounded(TEST_MAX)
async def test_a_slow_subscriber_loses_the_newest_never_blocks_the_node() -> None:
    async with Agent(
        AgentSettings(bind=("127.0.0.1", 0), config=fast_config(), subscriber_queue=2)
    ) as agent:
        changes = Changes([agent])
        sub = agent.subscribe("t")
        for i in range(5):
            await agent.publish("t", b"%d" % i)
        await changes.until(lambda: agent.metrics.delivered == 5, WAIT)
        assert sub.dropped == 3 and agent.metrics.drops["subscriber"] == 3
        got: list[Delivery] = []
        with trio.fail_after(WAIT):
            got = [await sub.__anext__() for _ in range(2)]
        assert [d.payload for d in got] == [b"0", b"1"]
        sub.close()
        assert math.isfinite(agent.stats()["uptime"])
