"""Replay with a cluster key (issue 12, items 3 and 6): a sealed frame
recorded on the network and sent again, on a new stream or as a new
datagram, is refused and counted (`bad_frames` "tcp:replay"/"udp:replay"),
however late (a GOSSIP replayed 100 s later, after the protocol's seen-id
window, was delivered a second time)."""

from __future__ import annotations

import socket
import time

import pytest
import trio

from daemon.security import decode_key, generate_key
from daemon.testing import bounded
from overlay.ids import NodeId
from overlay.io import ConnectionDown, ConnectionUp, Received
from overlay.messages import Gossip, Join, MsgId
from tests.test_daemon_transport import TEST_MAX, WAIT, endpoint

GOSSIP = Gossip(MsgId("a", 7, 1), "news", 1, 0.0, b"sent once")


class StreamRecorder:
    """A TCP port that forwards to `target` and records what clients send
    (an on-path attacker's capture)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sent = bytearray()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", self.target)
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, server, client, None)
            await self._pump(client, server, self.sent)
            nursery.cancel_scope.cancel()

    @staticmethod
    async def _pump(src: trio.SocketStream, dst: trio.SocketStream, log: bytearray | None) -> None:
        try:
            while data := await src.receive_some(65536):
                if log is not None:
                    log += data
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def _closed_on_us(stream: trio.SocketStream) -> None:
    with trio.fail_after(WAIT):
        while True:
            try:
                if not await stream.receive_some(65536):
                    return
            except trio.BrokenResourceError:
                return


@bounded(TEST_MAX)
async def test_a_recorded_stream_replayed_on_a_new_connection_is_refused() -> None:
    """Today the replayed stream is attributed to the member whose frames it
    carries, and becomes the stream that member's frames go to."""
    key = decode_key(generate_key())
    async with (
        trio.open_nursery() as nursery,
        endpoint(nursery, "a", key=key) as a,
        endpoint(nursery, "b", key=key) as b,
    ):
        recorder = StreamRecorder(b.me.port)
        port = await nursery.start(recorder.run)
        via = NodeId("b", "127.0.0.1", port)
        a.send(via, Join())
        a.send(via, GOSSIP)
        assert await a.next() == ConnectionUp(via)
        assert await b.next() == ConnectionUp(a.me)
        assert await b.next() == Received(a.me, Join())
        assert await b.next() == Received(a.me, GOSSIP)
        a.transport.close(via)
        assert await b.next() == ConnectionDown(a.me)
        # The attacker sends what it recorded, on a connection of its own.
        replay = await trio.open_tcp_stream(b.me.host, b.me.port)
        await replay.send_all(bytes(recorder.sent))
        await _closed_on_us(replay)
        assert b.metrics.bad_frames["tcp:replay"] == 1
        assert b.empty()
        await replay.aclose()
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_a_sealed_gossip_datagram_replayed_100_s_later_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = decode_key(generate_key())
    async with (
        trio.open_nursery() as nursery,
        endpoint(nursery, "a", key=key) as a,
        endpoint(nursery, "b", key=key) as b,
    ):
        with (
            trio.socket.socket(type=socket.SOCK_DGRAM) as relay,
            trio.socket.socket(type=socket.SOCK_DGRAM) as out,
        ):
            await relay.bind(("127.0.0.1", 0))
            via = NodeId("b", "127.0.0.1", relay.getsockname()[1])
            a.send(via, GOSSIP, reliable=False)
            with trio.fail_after(WAIT):
                recorded, _ = await relay.recvfrom(65536)
            await out.sendto(recorded, (b.me.host, b.me.port))  # delivered once
            assert await b.next() == Received(a.me, GOSSIP, datagram=True)
            # 100 s later, on every clock (the protocol has forgotten the id).
            real = time.time
            monkeypatch.setattr(time, "time", lambda: real() + 100.0)
            await out.sendto(recorded, (b.me.host, b.me.port))
            await out.sendto(recorded, (b.me.host, b.me.port))
        # A fresh datagram from a: after the replays (loopback keeps order).
        a.send(b.me, Join(), reliable=False)
        assert await b.next() == Received(a.me, Join(), datagram=True)
        assert b.metrics.bad_frames["udp:replay"] == 2
        assert b.empty()
        nursery.cancel_scope.cancel()
