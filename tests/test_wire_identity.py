"""Identity without a cluster key (issue 12, item 3): a frame's claimed
sender must be where it came from. Other source addresses are loopback
ones (127.0.0.2, 127.0.0.3), so these tests need no namespaces."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

from daemon.framing import prefixed
from daemon.testing import bounded
from daemon.transport import TransportSettings
from overlay import codec
from overlay.ids import NodeId
from overlay.io import ConnectionDown, ConnectionUp, Received
from overlay.messages import Disconnect, Join, Neighbor
from tests.test_daemon_transport import TEST_MAX, WAIT, End, endpoint


async def _closed_on_us(stream: trio.SocketStream) -> None:
    with trio.fail_after(WAIT):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return  # reset: closed as well
            if not data:
                return


async def _connected(a: End, b: End) -> None:
    """`a` dials `b`; both see the stream."""
    a.send(b.me, Join())
    assert await a.next() == ConnectionUp(b.me)
    assert await b.next() == ConnectionUp(a.me)
    assert await b.next() == Received(a.me, Join())


@bounded(TEST_MAX)
async def test_a_datagram_claiming_another_host_is_refused() -> None:
    async with (
        trio.open_nursery() as nursery,
        endpoint(nursery, "a") as a,
        endpoint(nursery, "b") as b,
    ):
        with trio.socket.socket(type=socket.SOCK_DGRAM) as u:
            await u.bind(("127.0.0.2", 0))
            own = NodeId("x", "127.0.0.2", u.getsockname()[1])
            # Claims to be a (127.0.0.1), sent from 127.0.0.2: a forged
            # DISCONNECT emptied an agent's active view for 10 s.
            await u.sendto(codec.encode(a.me, Disconnect(alive=False)), (b.me.host, b.me.port))
            # The same socket under its own name: arrives after the forgery.
            await u.sendto(codec.encode(own, Join()), (b.me.host, b.me.port))
            assert await b.next() == Received(own, Join(), datagram=True)
        assert b.metrics.bad_frames["udp:spoofed"] == 1
        assert b.empty()
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_a_stream_claiming_a_member_from_another_host_does_not_take_its_place() -> None:
    """A TCP stream was attributed to whatever its first frame claimed, and
    the newest stream of an address became the one its frames went to: a
    stream claiming a member's name received the broadcasts and member
    lists meant for that member."""
    async with (
        trio.open_nursery() as nursery,
        endpoint(nursery, "a") as a,
        endpoint(nursery, "b") as b,
    ):
        await _connected(a, b)
        thief = await trio.open_tcp_stream(b.me.host, b.me.port, local_address="127.0.0.2")
        await thief.send_all(prefixed(codec.encode(a.me, Neighbor(high_priority=True))))
        await _closed_on_us(thief)  # refused at its first frame
        assert b.metrics.bad_frames["tcp:spoofed"] == 1
        # b's frames for a still go to a.
        b.send(a.me, Disconnect(alive=True))
        assert await a.next() == Received(b.me, Disconnect(alive=True))
        assert b.empty()
        await thief.aclose()
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_a_stream_we_dialled_cannot_speak_for_another_host() -> None:
    async with trio.open_nursery() as nursery, endpoint(nursery, "a") as a:
        with trio.socket.socket() as listener:
            await listener.bind(("127.0.0.2", 0))
            listener.listen(1)
            peer = NodeId("p", "127.0.0.2", listener.getsockname()[1])
            a.send(peer, Join())
            assert await a.next() == ConnectionUp(peer)
            conn, _ = await listener.accept()
            with conn:
                # The peer we dialled at 127.0.0.2 speaks for 127.0.0.3.
                other = NodeId("q", "127.0.0.3", 7946)
                await conn.send(prefixed(codec.encode(other, Disconnect(alive=False))))
                assert await a.next() == ConnectionDown(peer)
        assert a.metrics.bad_frames["tcp:spoofed"] == 1
        assert a.empty()
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_without_the_source_check_the_claim_is_trusted() -> None:
    """`check_source=False` is for agents whose packets do not leave from
    their advertised address (a NAT): they are taken at their word."""
    trusting = TransportSettings(check_source=False)
    async with trio.open_nursery() as nursery, endpoint(nursery, "b", trusting) as b:
        claimed = NodeId("behind-nat", "192.0.2.7", 7946)
        with trio.socket.socket(type=socket.SOCK_DGRAM) as u:
            await u.bind(("127.0.0.2", 0))
            await u.sendto(codec.encode(claimed, Join()), (b.me.host, b.me.port))
            assert await b.next() == Received(claimed, Join(), datagram=True)
        stream = await trio.open_tcp_stream(b.me.host, b.me.port, local_address="127.0.0.2")
        await stream.send_all(prefixed(codec.encode(claimed, Join())))
        assert await b.next() == ConnectionUp(claimed)
        assert await b.next() == Received(claimed, Join())
        await stream.aclose()
        assert await b.next() == ConnectionDown(claimed)
        assert sum(b.metrics.bad_frames.values()) == 0
        nursery.cancel_scope.cancel()


def test_the_source_check_is_a_switch_in_the_file_and_on_the_command_line(
    tmp_path: Path,
) -> None:
    from daemon.cli import _agent_settings, build_parser
    from daemon.settings import SettingsError, build

    assert build(None, {}, {})[0].transport.check_source is True
    assert build({"transport": {"check_source": False}}, {}, {})[0].transport.check_source is False
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[transport]\ncheck_source = true\n")
    argv = ["agent", "--config", str(cfg), "--transport.check-source", "off"]
    args = build_parser(argv).parse_args(argv)
    assert _agent_settings(args)[0].transport.check_source is False
    with pytest.raises(SettingsError, match="true or false"):
        build({"transport": {"check_source": "maybe"}}, {}, {})
