"""The transport over loopback: connection semantics of overlay.io, framing,
and robustness against whatever arrives on the TCP and UDP ports."""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import pytest
import trio

from daemon.framing import PlainFrames, prefixed
from daemon.metrics import Metrics
from daemon.security import Keyring, decode_key, generate_key
from daemon.testing import bounded
from daemon.transport import Transport, TransportSettings
from overlay import codec
from overlay.ids import NodeId
from overlay.io import (
    ConnectFailed,
    ConnectionDown,
    ConnectionUp,
    Input,
    PeerRefused,
    Received,
    seed_id,
)
from overlay.messages import Disconnect, Join, Neighbor
from tests.helpers import TEST_MAX

WAIT = 10.0
# No test may take longer than this, whatever it awaits.


@dataclass
class End:
    transport: Transport
    inputs: trio.MemoryReceiveChannel[Input]
    metrics: Metrics

    @property
    def me(self) -> NodeId:
        assert self.transport.me is not None
        return self.transport.me

    async def next(self) -> Input:
        with trio.fail_after(WAIT):
            return await self.inputs.receive()

    def send(self, to: NodeId, msg: object, reliable: bool = True) -> None:
        self.transport.send(to, codec.encode(self.me, msg), reliable)  # type: ignore[arg-type]

    def empty(self) -> bool:
        return self.inputs.statistics().current_buffer_used == 0


@asynccontextmanager
async def endpoint(
    nursery: trio.Nursery,
    name: str,
    settings: TransportSettings | None = None,
    key: bytes | None = None,
) -> AsyncIterator[End]:
    send, recv = trio.open_memory_channel[Input](math.inf)
    metrics = Metrics()
    frames = Keyring([key]) if key else PlainFrames()
    t = Transport(("127.0.0.1", 0), frames, send, metrics, max_frame=64 * 1024, settings=settings)
    host, port = await nursery.start(t.run)
    t.me = NodeId(name, host, port)
    yield End(t, recv, metrics)


@bounded(TEST_MAX)
async def test_stream_roundtrip_and_connection_events() -> None:
    async with (
        trio.open_nursery() as nursery,
        endpoint(nursery, "a") as a,
        endpoint(nursery, "b") as b,
    ):
        a.send(b.me, Join())
        a.send(b.me, Neighbor(high_priority=True))
        assert await a.next() == ConnectionUp(b.me)
        assert await b.next() == ConnectionUp(a.me)
        assert await b.next() == Received(a.me, Join())
        assert await b.next() == Received(a.me, Neighbor(high_priority=True))
        # The reply rides on the same stream: no second ConnectionUp.
        b.send(a.me, Disconnect(alive=True))
        assert await a.next() == Received(b.me, Disconnect(alive=True))
        assert a.transport.connections()["streams"] == 1
        assert a.metrics.connections["dial"] == 1 and b.metrics.connections["dial"] == 0
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_seed_id_and_real_id_share_the_stream() -> None:
    async with (
        trio.open_nursery() as nursery,
        endpoint(nursery, "a") as a,
        endpoint(nursery, "b") as b,
    ):
        seed = seed_id(b.me.host, b.me.port)
        a.send(seed, Join())
        assert await a.next() == ConnectionUp(seed)
        assert await b.next() == ConnectionUp(a.me)
        assert await b.next() == Received(a.me, Join())
        a.send(b.me, Disconnect(alive=True))  # the real id: same address
        assert await b.next() == Received(a.me, Disconnect(alive=True))
        assert a.metrics.connections["dial"] == 1
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_local_close_delivers_queued_frames_then_reports_down_to_peer() -> None:
    async with (
        trio.open_nursery() as nursery,
        endpoint(nursery, "a") as a,
        endpoint(nursery, "b") as b,
    ):
        a.send(b.me, Join())
        for _ in range(50):
            a.send(b.me, Disconnect(alive=False))
        a.transport.close(b.me)  # while dialling: the stream still carries them
        assert await b.next() == ConnectionUp(a.me)
        assert await b.next() == Received(a.me, Join())
        for _ in range(50):
            assert await b.next() == Received(a.me, Disconnect(alive=False))
        # In-flight messages first, then the down; the closer hears
        # nothing about a stream it closed (not even that it came up).
        assert await b.next() == ConnectionDown(a.me)
        await a.transport.aclose_all(WAIT)  # waits for the closing streams
        assert a.transport.connections()["closing"] == 0
        assert a.empty()
        # A send after the close dials a new stream.
        a.send(b.me, Join())
        assert await a.next() == ConnectionUp(b.me)
        assert await b.next() == ConnectionUp(a.me)
        assert await b.next() == Received(a.me, Join())
        assert a.metrics.connections["dial"] == 2
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_dial_failure_reports_connect_failed() -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with trio.open_nursery() as nursery, endpoint(nursery, "a") as a:
        nobody = NodeId("nobody", "127.0.0.1", port)
        a.send(nobody, Join())
        # The host answered with a reset: nothing listens (issue 11).
        assert await a.next() == PeerRefused(nobody)
        assert await a.next() == ConnectFailed(nobody)
        assert a.metrics.connections["dial_failed"] == 1
        assert a.metrics.connections["refused_dial"] == 1
        assert a.transport.connections()["peers"] == 0
        # A seed is not a member: its refusal is only a failed dial.
        a.send(seed_id("127.0.0.1", port), Join())
        assert await a.next() == ConnectFailed(seed_id("127.0.0.1", port))
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_a_datagram_to_a_dead_process_is_reported_refused() -> None:
    """A crashed agent's host answers our datagrams with ICMP
    port-unreachable; the transport reads it from the socket's error queue
    and names the member the datagram went to."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with (
        trio.open_nursery() as nursery,
        endpoint(nursery, "a") as a,
        endpoint(nursery, "b") as b,
    ):
        dead = NodeId("dead", "127.0.0.1", port)
        a.send(dead, Join(), reliable=False)
        assert await a.next() == PeerRefused(dead)
        assert a.metrics.connections["refused_datagram"] == 1
        # Datagrams to a live member still flow both ways afterwards.
        a.send(b.me, Join(), reliable=False)
        assert await b.next() == Received(a.me, Join(), datagram=True)
        b.send(a.me, Join(), reliable=False)
        assert await a.next() == Received(b.me, Join(), datagram=True)
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_crossing_dials_give_one_up_and_no_spurious_down() -> None:
    async with (
        trio.open_nursery() as nursery,
        endpoint(nursery, "a") as a,
        endpoint(nursery, "b") as b,
    ):
        # Both dial at once: two TCP streams for one pair.
        a.send(b.me, Join())
        b.send(a.me, Join())
        got_a = [await a.next(), await a.next()]
        got_b = [await b.next(), await b.next()]
        assert got_a.count(ConnectionUp(b.me)) == 1
        assert got_b.count(ConnectionUp(a.me)) == 1
        assert Received(b.me, Join()) in got_a and Received(a.me, Join()) in got_b
        assert a.transport.connections()["streams"] == 2
        # Messages flow both ways over whichever stream is current.
        a.send(b.me, Disconnect(alive=True))
        assert await b.next() == Received(a.me, Disconnect(alive=True))
        # Closing closes both; the peer hears one ConnectionDown.
        a.transport.close(b.me)
        assert await b.next() == ConnectionDown(a.me)  # after both streams ended
        assert b.transport.connections()["streams"] == 0
        await a.transport.aclose_all(WAIT)
        assert a.transport.connections()["closing"] == 0
        assert a.empty() and b.empty()
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_peer_crash_reports_down() -> None:
    async with trio.open_nursery() as nursery, endpoint(nursery, "a") as a:
        with trio.socket.socket() as raw:
            await raw.bind(("127.0.0.1", 0))
            raw.listen(1)
            port = raw.getsockname()[1]
            peer = NodeId("p", "127.0.0.1", port)
            a.send(peer, Join())
            assert await a.next() == ConnectionUp(peer)
            conn, _ = await raw.accept()
            conn.close()  # the peer "crashes"
        assert await a.next() == ConnectionDown(peer)
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_datagrams_roundtrip() -> None:
    async with (
        trio.open_nursery() as nursery,
        endpoint(nursery, "a") as a,
        endpoint(nursery, "b") as b,
    ):
        a.send(b.me, Join(), reliable=False)
        assert await b.next() == Received(a.me, Join(), datagram=True)
        assert a.transport.connections()["peers"] == 0  # opened nothing
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_encrypted_endpoints_talk_and_strangers_are_refused() -> None:
    key = decode_key(generate_key())
    async with (
        trio.open_nursery() as nursery,
        endpoint(nursery, "a", key=key) as a,
        endpoint(nursery, "b", key=key) as b,
        endpoint(nursery, "c", key=decode_key(generate_key())) as c,
    ):
        a.send(b.me, Join())
        a.send(b.me, Join(), reliable=False)
        got = [await b.next() for _ in range(3)]  # datagram and stream race
        assert sorted(map(repr, got)) == sorted(
            map(
                repr,
                [ConnectionUp(a.me), Received(a.me, Join()), Received(a.me, Join(), datagram=True)],
            )
        )
        c.send(b.me, Join(), reliable=False)
        c.send(b.me, Join())
        # b refuses c's stream: c sees it come up, then go down.
        assert await c.next() == ConnectionUp(b.me)
        assert await c.next() == ConnectionDown(b.me)
        assert b.metrics.bad_frames["tcp:sealed"] == 1
        # A datagram sent after c's arrives after it (loopback is FIFO).
        a.send(b.me, Disconnect(alive=True), reliable=False)
        assert await b.next() == Received(a.me, Disconnect(alive=True), datagram=True)
        assert b.metrics.bad_frames["udp:sealed"] == 1
        assert b.empty()
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------- robustness


async def _raw_stream(end: End) -> trio.SocketStream:
    return await trio.open_tcp_stream(end.me.host, end.me.port)


async def _closed_on_us(stream: trio.SocketStream) -> None:
    with trio.fail_after(WAIT):
        assert await stream.receive_some(10) == b""


async def _still_works(end: End, nursery: trio.Nursery) -> None:
    """A well-behaved peer still gets through."""
    async with endpoint(nursery, "probe") as probe:
        probe.send(end.me, Join())
        ups = [await end.next(), await end.next()]
        assert ups == [ConnectionUp(probe.me), Received(probe.me, Join())]


@bounded(TEST_MAX)
async def test_garbage_on_the_tcp_port_closes_that_stream_only() -> None:
    async with trio.open_nursery() as nursery, endpoint(nursery, "a") as a:
        s = await _raw_stream(a)
        await s.send_all(prefixed(b"\xc1 not msgpack"))
        await _closed_on_us(s)
        assert a.metrics.bad_frames["tcp:decode"] == 1
        await _still_works(a, nursery)
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_oversized_length_prefix_closes_that_stream() -> None:
    async with trio.open_nursery() as nursery, endpoint(nursery, "a") as a:
        s = await _raw_stream(a)
        await s.send_all(b"\xff\xff\xff\xf0")
        await _closed_on_us(s)
        assert a.metrics.bad_frames["tcp:length"] == 1
        await _still_works(a, nursery)
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_a_stalling_peer_is_dropped() -> None:
    quick = TransportSettings(handshake_timeout=0.2)
    async with trio.open_nursery() as nursery, endpoint(nursery, "a", quick) as a:
        silent = await _raw_stream(a)  # connects and says nothing
        half = await _raw_stream(a)  # starts a frame and stalls
        await half.send_all(prefixed(codec.encode(NodeId("x", "127.0.0.1", 9), Join()))[:6])
        await _closed_on_us(silent)
        await _closed_on_us(half)
        assert a.metrics.bad_frames["tcp:stalled"] == 2
        assert a.transport.connections()["unidentified"] == 0
        await _still_works(a, nursery)
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_a_sender_that_changes_identity_is_dropped() -> None:
    async with trio.open_nursery() as nursery, endpoint(nursery, "a") as a:
        s = await _raw_stream(a)
        x = NodeId("x", "127.0.0.1", 9)
        y = NodeId("y", "127.0.0.1", 10)
        await s.send_all(prefixed(codec.encode(x, Join())) + prefixed(codec.encode(y, Join())))
        assert await a.next() == ConnectionUp(x)
        assert await a.next() == Received(x, Join())
        assert await a.next() == ConnectionDown(x)
        assert a.metrics.bad_frames["tcp:sender"] == 1
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_garbage_on_the_udp_port_is_dropped() -> None:
    async with trio.open_nursery() as nursery, endpoint(nursery, "a") as a:
        with trio.socket.socket(type=socket.SOCK_DGRAM) as u:
            for junk in (b"\x00", b"\xc1" * 100, b"\x93\x01\x02\x03", b"x" * 60000):
                await u.sendto(junk, (a.me.host, a.me.port))
            # A good datagram after the junk: it arrives after it.
            x = NodeId("x", "127.0.0.1", 9)
            await u.sendto(codec.encode(x, Join()), (a.me.host, a.me.port))
            assert await a.next() == Received(x, Join(), datagram=True)
        assert a.metrics.bad_frames["udp:decode"] == 4
        assert a.empty()
        await _still_works(a, nursery)
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_full_send_queue_aborts_the_stream() -> None:
    small = TransportSettings(send_queue=4)
    async with trio.open_nursery() as nursery, endpoint(nursery, "a", small) as a:
        with trio.socket.socket() as raw:
            await raw.bind(("127.0.0.1", 0))
            raw.listen(1)
            peer = NodeId("p", "127.0.0.1", raw.getsockname()[1])
            for _ in range(10):  # queued while dialling: more than fit
                a.send(peer, Join())
            assert a.metrics.drops["stream"] >= 1
            got = await a.next()
            assert got == ConnectFailed(peer) or got == ConnectionUp(peer)
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_a_dial_that_hangs_fails_after_the_dial_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer that never completes the handshake (a dropped SYN) costs at
    most `dial_timeout`, then counts as a failed dial."""

    async def hang(host: str, port: int) -> trio.SocketStream:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    quick = TransportSettings(dial_timeout=0.2)
    async with trio.open_nursery() as nursery, endpoint(nursery, "a", quick) as a:
        monkeypatch.setattr(trio, "open_tcp_stream", hang)
        peer = NodeId("silent", "127.0.0.1", 9)
        a.send(peer, Join())
        assert await a.next() == ConnectFailed(peer)
        assert a.metrics.connections["dial_failed"] == 1
        assert a.transport.connections()["peers"] == 0
        nursery.cancel_scope.cancel()


@contextmanager
def listener_with_a_full_backlog() -> Iterator[int]:
    """A loopback port whose accept queue is full, so the kernel drops new
    SYNs: a dial hangs in the handshake, like one to a firewalled host."""
    server = socket.socket()
    fillers: list[socket.socket] = []
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        for _ in range(8):  # Linux queues backlog + 1; a few more for other kernels
            s = socket.socket()
            fillers.append(s)
            s.settimeout(0.3)
            try:
                s.connect(("127.0.0.1", port))
            except OSError:
                break  # this one hung: the queue is full
        else:
            pytest.skip("the kernel never dropped a SYN on a full accept queue")
        yield port
    finally:
        for s in fillers:
            s.close()
        server.close()


@bounded(TEST_MAX)
async def test_a_dropped_syn_fails_after_the_dial_timeout() -> None:
    """The same through the kernel: no monkeypatch, a real SYN that nobody
    answers."""
    with listener_with_a_full_backlog() as port:
        quick = TransportSettings(dial_timeout=0.3)
        async with trio.open_nursery() as nursery, endpoint(nursery, "a", quick) as a:
            peer = NodeId("firewalled", "127.0.0.1", port)
            started = trio.current_time()
            a.send(peer, Join())
            assert await a.next() == ConnectFailed(peer)
            assert trio.current_time() - started >= 0.3
            assert a.metrics.connections["dial_failed"] == 1
            nursery.cancel_scope.cancel()
