"""Addresses learned from the network, on the send paths (issue 12, items 2
and 8): a bad host in a node id never ends the agent, and the transport
dials and sends only to IP literals; only seed placeholders (local
configuration) are resolved as names."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio

from daemon.agent import Agent
from daemon.framing import prefixed
from daemon.testing import Changes, all_alive, bounded, local_cluster
from overlay import codec
from overlay.ids import NodeId
from overlay.io import ConnectFailed, ConnectionUp, PeerRefused, Received, seed_id
from overlay.messages import Join, Ping
from tests.test_daemon_transport import TEST_MAX, WAIT, endpoint

# Hosts a forged node id can carry: a NUL byte (getaddrinfo raises
# ValueError), names (a DNS query), junk, an IPv6 literal on an IPv4
# socket, a character the IDNA codec refuses.
BAD_HOSTS = ["ho\x00st", "attacker.example", "1.2.3.4.5", "::1", "a..b", "\udcff", "x" * 255]


class RecordingResolver(trio.abc.HostnameResolver):
    """Answers every name with 127.0.0.1 at `port`, and remembers it."""

    def __init__(self) -> None:
        self.asked: list[Any] = []

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        self.asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port or 0)))]

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        raise OSError("not used")


@bounded(TEST_MAX)
async def test_datagrams_to_bad_hosts_are_dropped_and_the_transport_lives() -> None:
    trio.socket.set_custom_hostname_resolver(RecordingResolver())  # no real DNS query
    async with (
        trio.open_nursery() as nursery,
        endpoint(nursery, "a") as a,
        endpoint(nursery, "b") as b,
    ):
        for host in BAD_HOSTS:
            a.send(NodeId("x", host, 7946), Join(), reliable=False)
        a.send(b.me, Join(), reliable=False)  # after the bad ones: still sent
        assert await b.next() == Received(a.me, Join(), datagram=True)
        dropped = a.metrics.drops["udp_address"] + a.metrics.drops["udp_error"]
        assert dropped == len(BAD_HOSTS), a.metrics.drops
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_dials_to_bad_hosts_fail_and_the_transport_lives() -> None:
    trio.socket.set_custom_hostname_resolver(RecordingResolver())  # no real DNS query
    async with (
        trio.open_nursery() as nursery,
        endpoint(nursery, "a") as a,
        endpoint(nursery, "b") as b,
    ):
        bad = [NodeId(f"x{i}", host, 7946) for i, host in enumerate(BAD_HOSTS)]
        for peer in bad:
            a.send(peer, Join())
        failed: set[NodeId] = set()
        while len(failed) < len(bad):
            got = await a.next()
            if isinstance(got, PeerRefused):
                continue  # "::1" is an IP literal: dialled, and nobody listens
            assert isinstance(got, ConnectFailed), got
            failed.add(got.peer)
        assert failed == set(bad)
        # Names are refused without a lookup; the rest fail as dials do.
        assert a.metrics.connections["refused_name"] == len(bad) - 1
        a.send(b.me, Join())
        assert await a.next() == ConnectionUp(b.me)
        assert await b.next() == ConnectionUp(a.me)
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_node_id_hosts_are_never_resolved_but_seeds_are() -> None:
    resolver = RecordingResolver()
    trio.socket.set_custom_hostname_resolver(resolver)
    async with (
        trio.open_nursery() as nursery,
        endpoint(nursery, "a") as a,
        endpoint(nursery, "b") as b,
    ):
        name = NodeId("evil", "lookup-me.attacker.example", b.me.port)
        a.send(name, Join(), reliable=False)
        a.send(name, Join())
        assert await a.next() == ConnectFailed(name)
        assert a.metrics.connections["refused_name"] == 1
        assert a.metrics.drops["udp_address"] == 1
        assert resolver.asked == []
        # A seed from the local configuration may be a name: it is resolved.
        seed = seed_id("seed.cluster.example", b.me.port)
        a.send(seed, Join())
        assert await a.next() == ConnectionUp(seed)
        assert await b.next() == ConnectionUp(a.me)
        assert await b.next() == Received(a.me, Join())
        assert resolver.asked == [b"seed.cluster.example"]
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_a_ping_from_a_nul_host_does_not_end_the_agent() -> None:
    """Issue 12, item 2: the reply to a PING whose sender host holds a NUL
    byte made `sendto` raise ValueError out of the UDP send loop: exit 1."""
    async with local_cluster(2) as agents:
        changes = Changes(agents)
        await changes.until(lambda: all_alive(agents, ["n0", "n1"]), WAIT)
        target: Agent = agents[0]
        evil = NodeId("evil", "10.0.0.1\x00", 7946)
        frame = codec.encode(evil, Ping(1, target.me, ()))
        with trio.socket.socket(type=socket.SOCK_DGRAM) as u:
            for _ in range(3):
                await u.sendto(frame, (target.me.host, target.me.port))

        def answered() -> bool:
            m = target.metrics
            # Refused at decode, or answered and the answer dropped.
            return sum(m.bad_frames.values()) + m.drops["udp_address"] >= 3

        await changes.until(answered, WAIT)
        # Still alive, still a member of a working cluster.
        async with target.subscribe("t") as sub:
            await agents[1].publish("t", b"still here")
            with trio.fail_after(WAIT):
                assert (await sub.__anext__()).payload == b"still here"
        assert target.running and all_alive(agents, ["n0", "n1"])


@bounded(TEST_MAX)
async def test_a_decoder_bug_drops_the_frame_not_the_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defence in depth: the codec promises DecodeError only; should it ever
    raise something else, that frame is dropped and counted."""
    real = codec.decode

    def buggy(frame: bytes, max_size: int = codec.DEFAULT_MAX_FRAME) -> Any:
        sender, msg = real(frame, max_size)
        if sender.name == "poison":
            raise RuntimeError("a bug")
        return sender, msg

    monkeypatch.setattr(codec, "decode", buggy)
    async with (
        trio.open_nursery() as nursery,
        endpoint(nursery, "a") as a,
        endpoint(nursery, "b") as b,
    ):
        poison = NodeId("poison", "127.0.0.1", 9)
        with trio.socket.socket(type=socket.SOCK_DGRAM) as u:
            await u.sendto(codec.encode(poison, Join()), (b.me.host, b.me.port))
        stream = await trio.open_tcp_stream(b.me.host, b.me.port)
        await stream.send_all(prefixed(codec.encode(poison, Join())))
        with trio.fail_after(WAIT):
            assert await stream.receive_some(10) == b""  # closed on it
        a.send(b.me, Join(), reliable=False)
        assert await b.next() == Received(a.me, Join(), datagram=True)
        assert b.metrics.bad_frames["udp:internal"] == b.metrics.bad_frames["tcp:internal"] == 1
        assert b.metrics.errors["frame"] == 2
        await stream.aclose()
        nursery.cancel_scope.cancel()
