"""Bounded resources on the TCP port (issue 12, item 7): a deadline per
frame, not per read, for streams not yet identified; per-address limits; a
cap and an idle timeout for identified streams that spare a quiet but
healthy neighbour link. Attackers connect from 127.0.0.2 and up."""

from __future__ import annotations

import pytest
import trio

from daemon.framing import prefixed
from daemon.security import decode_key, generate_key
from daemon.testing import bounded
from daemon.transport import TransportSettings
from overlay import codec
from overlay.ids import NodeId
from overlay.io import ConnectionDown, ConnectionUp, Received
from overlay.messages import Disconnect, Join
from tests.test_daemon_transport import TEST_MAX, WAIT, End, endpoint

# The per-address limits by default (TransportSettings).
UNIDENTIFIED_PER_IP = 16
IDENTIFIED_PER_IP = 128


async def _from(end: End, host: str) -> trio.SocketStream:
    return await trio.open_tcp_stream(end.me.host, end.me.port, local_address=host)


async def _closed(stream: trio.SocketStream) -> bool:
    """Read until the agent closes `stream` (True), or it breaks."""
    try:
        while await stream.receive_some(65536):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    return True


async def _identify(stream: trio.SocketStream, name: str) -> NodeId:
    """A valid first frame, from the stream's own address."""
    host, port = stream.socket.getsockname()[:2]
    me = NodeId(name, host, port)
    await stream.send_all(prefixed(codec.encode(me, Join())))
    return me


@bounded(TEST_MAX)
async def test_a_slow_drip_first_frame_is_cut_at_the_handshake_deadline() -> None:
    """Each byte came before the per-read timeout, so 300 slow-drip
    connections held every unidentified slot for 35 s."""
    quick = TransportSettings(handshake_timeout=0.6)
    async with trio.open_nursery() as nursery, endpoint(nursery, "a", quick) as a:
        stream = await _from(a, "127.0.0.2")
        frame = prefixed(codec.encode(NodeId("x", "127.0.0.2", 9), Join()))

        async def drip() -> None:
            for byte in frame:  # one byte every 0.1 s: each read well in time
                await stream.send_all(bytes((byte,)))
                await trio.sleep(0.1)

        started = trio.current_time()
        async with trio.open_nursery() as inner:
            inner.start_soon(drip)
            with trio.fail_after(3.0):
                await _closed(stream)
            inner.cancel_scope.cancel()
        assert trio.current_time() - started < 2.0
        assert a.metrics.bad_frames["tcp:stalled"] == 1
        assert a.transport.connections()["unidentified"] == 0
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_one_address_holds_few_unidentified_slots() -> None:
    """A flood of silent connections from one address cannot keep the
    agent's unidentified slots: past the per-address limit they are closed
    at once, and another peer still gets in."""
    patient = TransportSettings(handshake_timeout=60.0)
    async with trio.open_nursery() as nursery, endpoint(nursery, "a", patient) as a:
        limit = UNIDENTIFIED_PER_IP
        silent = [await _from(a, "127.0.0.2") for _ in range(limit + 10)]
        closed = 0

        async def watch(stream: trio.SocketStream) -> None:
            nonlocal closed
            await _closed(stream)
            closed += 1

        async with trio.open_nursery() as inner:
            for stream in silent:
                inner.start_soon(watch, stream)
            with trio.fail_after(WAIT):
                while closed < 10:
                    await trio.sleep(0.01)
            await trio.sleep(0.2)  # no more than those
            assert closed == 10
            assert a.transport.connections()["unidentified"] == limit
            assert a.metrics.connections["refused_ip"] == 10
            # Someone else, from another address, identifies as usual.
            other = await _from(a, "127.0.0.3")
            me = await _identify(other, "other")
            assert await a.next() == ConnectionUp(me)
            assert await a.next() == Received(me, Join())
            inner.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_one_address_holds_a_bounded_number_of_identified_streams() -> None:
    """2,000 streams that each sent one valid frame stayed open (2,000 file
    descriptors, +24 MB)."""
    async with trio.open_nursery() as nursery, endpoint(nursery, "a") as a:
        limit = IDENTIFIED_PER_IP
        kept = []
        for i in range(limit):
            stream = await _from(a, "127.0.0.2")
            me = await _identify(stream, f"x{i}")
            assert await a.next() == ConnectionUp(me)
            assert await a.next() == Received(me, Join())
            kept.append(stream)
        for i in range(8):
            stream = await _from(a, "127.0.0.2")
            await _identify(stream, f"y{i}")
            with trio.fail_after(WAIT):
                await _closed(stream)
            await stream.aclose()
        assert a.metrics.connections["refused_ip"] == 8
        assert a.empty()
        # Another address is not held back by this one's.
        other = await _from(a, "127.0.0.3")
        me = await _identify(other, "other")
        assert await a.next() == ConnectionUp(me)
        for stream in [*kept, other]:
            await stream.aclose()
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_identified_streams_are_capped_in_all() -> None:
    caps = TransportSettings(max_identified=3)
    async with trio.open_nursery() as nursery, endpoint(nursery, "a", caps) as a:
        kept = []
        for i, host in enumerate(["127.0.0.2", "127.0.0.3", "127.0.0.4"]):
            stream = await _from(a, host)
            me = await _identify(stream, f"x{i}")
            assert await a.next() == ConnectionUp(me)
            assert await a.next() == Received(me, Join())
            kept.append(stream)
        late = await _from(a, "127.0.0.5")
        await _identify(late, "late")
        with trio.fail_after(WAIT):
            await _closed(late)
        assert a.metrics.connections["refused_cap"] == 1
        assert a.transport.connections()["identified"] == 3
        # A slot frees when a stream ends.
        await kept.pop().aclose()
        assert isinstance(await a.next(), ConnectionDown)
        again = await _from(a, "127.0.0.5")
        me = await _identify(again, "again")
        assert await a.next() == ConnectionUp(me)
        for stream in [*kept, late, again]:
            await stream.aclose()
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_an_identified_stream_that_falls_silent_is_closed() -> None:
    quick = TransportSettings(idle_timeout=0.5)
    async with trio.open_nursery() as nursery, endpoint(nursery, "a", quick) as a:
        stream = await _from(a, "127.0.0.2")
        me = await _identify(stream, "mute")
        assert await a.next() == ConnectionUp(me)
        assert await a.next() == Received(me, Join())
        started = trio.current_time()
        assert await a.next() == ConnectionDown(me)  # it never wrote again
        assert 0.4 <= trio.current_time() - started < 2.0
        assert a.metrics.connections["idle"] == 1
        await stream.aclose()
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_an_identified_stream_dripping_a_frame_is_cut_at_the_frame_deadline() -> None:
    quick = TransportSettings(frame_timeout=0.5)
    async with trio.open_nursery() as nursery, endpoint(nursery, "a", quick) as a:
        stream = await _from(a, "127.0.0.2")
        me = await _identify(stream, "drip")
        assert await a.next() == ConnectionUp(me)
        assert await a.next() == Received(me, Join())
        frame = prefixed(codec.encode(me, Disconnect(alive=True)))

        async def drip() -> None:
            for byte in frame:
                await stream.send_all(bytes((byte,)))
                await trio.sleep(0.1)

        async with trio.open_nursery() as inner:
            inner.start_soon(drip)
            assert await a.next() == ConnectionDown(me)
            inner.cancel_scope.cancel()
        assert a.metrics.bad_frames["tcp:stalled"] == 1
        await stream.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("keyed", [False, True])
@bounded(TEST_MAX)
async def test_a_quiet_neighbour_link_stays_open(keyed: bool) -> None:
    """An active HyParView link can be quiet for minutes: keepalives keep it
    open past any number of idle timeouts, both ways."""
    quick = TransportSettings(idle_timeout=0.4)
    key = decode_key(generate_key()) if keyed else None
    async with (
        trio.open_nursery() as nursery,
        endpoint(nursery, "a", quick, key) as a,
        endpoint(nursery, "b", quick, key) as b,
    ):
        a.send(b.me, Join())
        assert await a.next() == ConnectionUp(b.me)
        assert await b.next() == ConnectionUp(a.me)
        assert await b.next() == Received(a.me, Join())
        await trio.sleep(2.0)  # five idle timeouts without a frame
        assert a.empty() and b.empty()
        b.send(a.me, Disconnect(alive=True))
        assert await a.next() == Received(b.me, Disconnect(alive=True))
        assert a.metrics.connections["dial"] == 1 and b.metrics.connections["dial"] == 0
        assert a.metrics.connections["idle"] == b.metrics.connections["idle"] == 0
        nursery.cancel_scope.cancel()
