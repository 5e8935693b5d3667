"""Seeds: parsing, DNS (A/AAAA through the system resolver), SRV through a
fake name server on 127.0.0.1 (UDP, and TCP after a truncated answer)."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon import dns
from daemon.discovery import SeedError, parse_seed, resolve_seeds
from daemon.testing import bounded
from tests.helpers import TEST_MAX

WAIT = 10.0
# No test may take longer than this, whatever it awaits.


def test_parse_seed_forms() -> None:
    assert parse_seed("10.0.0.1:7946", 1).kind == "addr"
    assert parse_seed("[::1]:7946", 1).host == "::1"
    assert parse_seed("::1", 7000).port == 7000
    s = parse_seed("seed.example.com", 7000)
    assert (s.kind, s.host, s.port) == ("dns", "seed.example.com", 7000)
    s = parse_seed("seed.example.com:8000", 7000)
    assert (s.kind, s.port) == ("dns", 8000)
    s = parse_seed("_gossip._tcp.overlay.default.svc.cluster.local", 7000)
    assert s.kind == "srv" and s.needs_resolving
    for bad in ("", "host:notaport", "host:70000", ":7946"):
        with pytest.raises(SeedError):
            parse_seed(bad, 7000)


# ------------------------------------------------------------ fake server


def _name(n: str) -> bytes:
    return dns.encode_name(n)


def _address(host: str, ip: str) -> bytes:
    """An A record, or AAAA for an IPv6 address."""
    if ":" in ip:
        return _rr(_name(host), 28, socket.inet_pton(socket.AF_INET6, ip))
    return _rr(_name(host), 1, socket.inet_aton(ip))


def _rr(name: bytes, rtype: int, rdata: bytes) -> bytes:
    return name + struct.pack(">HHIH", rtype, 1, 30, len(rdata)) + rdata


def srv_response(
    query: bytes,
    records: list[tuple[int, int, int, str]],
    *,
    tc: bool = False,
    additional: dict[str, str] | None = None,
    rcode: int = 0,
) -> bytes:
    qid = query[:2]
    # The question, copied (up to and including QTYPE/QCLASS).
    end = 12
    while query[end] != 0:
        end += query[end] + 1
    question = query[12 : end + 5]
    answers = b"".join(
        # Owner compressed to the question name (offset 12).
        _rr(b"\xc0\x0c", 33, struct.pack(">HHH", p, w, port) + _name(target))
        for p, w, port, target in records
    )
    extra = b"".join(_address(host, ip) for host, ip in (additional or {}).items())
    flags = 0x8180 | (0x0200 if tc else 0) | rcode
    header = qid + struct.pack(">HHHHH", flags, 1, len(records), 0, len(additional or {}))
    return header + question + answers + extra


async def fake_dns(
    respond: Callable[[bytes, bool], bytes],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A name server on 127.0.0.1 (UDP and TCP on one port)."""
    # The system picks a free UDP port; the same TCP port may be taken by
    # another program: pick again (as the agent's transport does).
    for attempt in range(20):
        udp = trio.socket.socket(type=socket.SOCK_DGRAM)
        await udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        try:
            listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
            break
        except OSError:
            udp.close()
            if attempt == 19:
                raise

    async def tcp_handler(stream: trio.SocketStream) -> None:
        data = b""
        while len(data) < 2 or len(data) < 2 + struct.unpack(">H", data[:2])[0]:
            data += await stream.receive_some(4096)
        answer = respond(data[2:], True)
        await stream.send_all(struct.pack(">H", len(answer)) + answer)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, tcp_handler, listeners)
        task_status.started(port)
        with udp:
            while True:
                query, addr = await udp.recvfrom(4096)
                await udp.sendto(respond(query, False), addr)


@bounded(TEST_MAX)
async def test_srv_with_additional_addresses() -> None:
    def respond(query: bytes, tcp: bool) -> bytes:
        return srv_response(
            query,
            [(10, 5, 7002, "b.example"), (0, 5, 7001, "a.example")],
            additional={"a.example": "10.0.0.1", "b.example": "10.0.0.2"},
        )

    async with trio.open_nursery() as nursery:
        port = await nursery.start(fake_dns, respond)
        with trio.fail_after(WAIT):
            answer = await dns.query_srv("_g._tcp.example", servers=[f"127.0.0.1#{port}"])
        # Sorted by priority.
        assert [(r.target, r.port) for r in answer.records] == [
            ("a.example", 7001),
            ("b.example", 7002),
        ]
        spec = parse_seed("_g._tcp.example", 1)
        with trio.fail_after(WAIT):
            addrs, errors = await resolve_seeds(
                [spec], servers=[f"127.0.0.1#{port}"], family=socket.AF_INET
            )
        assert errors == []
        assert addrs == [("10.0.0.1", 7001), ("10.0.0.2", 7002)]
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_truncated_answer_is_retried_over_tcp() -> None:
    many = [(0, 1, 7000 + i, f"pod-{i}.svc.example") for i in range(200)]
    seen: list[bool] = []

    def respond(query: bytes, tcp: bool) -> bytes:
        seen.append(tcp)
        if not tcp:
            return srv_response(query, many[:3], tc=True)
        return srv_response(
            query, many, additional={f"pod-{i}.svc.example": f"10.1.0.{i}" for i in range(200)}
        )

    async with trio.open_nursery() as nursery:
        port = await nursery.start(fake_dns, respond)
        with trio.fail_after(WAIT):
            answer = await dns.query_srv("_g._tcp.svc.example", servers=[f"127.0.0.1#{port}"])
        assert seen == [False, True]
        assert len(answer.records) == 200
        assert answer.addresses["pod-7.svc.example"] == ("10.1.0.7",)
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_nxdomain_and_dead_servers_are_reported() -> None:
    def respond(query: bytes, tcp: bool) -> bytes:
        return srv_response(query, [], rcode=3)

    async with trio.open_nursery() as nursery:
        port = await nursery.start(fake_dns, respond)
        spec = parse_seed("_g._tcp.nothing.example", 1)
        with trio.fail_after(WAIT):
            addrs, errors = await resolve_seeds([spec], servers=[f"127.0.0.1#{port}"])
        assert addrs == [] and len(errors) == 1 and "no such name" in errors[0]
        nursery.cancel_scope.cancel()
    with socket.socket(type=socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        silent = s.getsockname()[1]  # bound, never answers
        with trio.fail_after(WAIT):
            addrs, errors = await resolve_seeds(
                [spec], servers=[f"127.0.0.1#{silent}"], timeout=0.2
            )
    assert addrs == [] and "no answer" in errors[0]


@bounded(TEST_MAX)
async def test_dns_names_resolve_through_the_system() -> None:
    specs = [parse_seed("localhost:7001", 1), parse_seed("10.0.0.9:7002", 1)]
    with trio.fail_after(WAIT):
        addrs, errors = await resolve_seeds(specs, family=socket.AF_INET)
    assert errors == []
    assert addrs == [("127.0.0.1", 7001), ("10.0.0.9", 7002)]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), qid=st.integers(0, 65535))
def test_parser_is_total(data: bytes, qid: int) -> None:
    """Garbage from a name server raises DnsError, never anything else."""
    with contextlib.suppress(dns.DnsError):
        dns.parse_response(data, qid)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=200), cut=st.integers(0, 400))
def test_parser_is_total_on_mangled_answers(data: bytes, cut: int) -> None:
    query = dns.build_query(7, "_g._tcp.example", dns.TYPE_SRV)
    good = srv_response(query, [(0, 1, 7001, "a.example")], additional={"a.example": "10.0.0.1"})
    mangled = good[: cut % len(good)] + data
    with contextlib.suppress(dns.DnsError):
        dns.parse_response(mangled, 7)


@bounded(TEST_MAX)
async def test_srv_targets_with_a_and_aaaa_records_match_the_agents_family() -> None:
    """A dual-stack service: an IPv4 agent dials the A addresses, an IPv6
    agent the AAAA ones (nothing is dialled here: addresses are data)."""
    additional = {"a.example": "10.0.0.1", "b.example": "2001:db8::2"}

    def respond(query: bytes, tcp: bool) -> bytes:
        records = [(0, 1, 7001, "a.example"), (0, 1, 7002, "b.example")]
        return srv_response(query, records, additional=additional)

    async with trio.open_nursery() as nursery:
        port = await nursery.start(fake_dns, respond)
        spec = parse_seed("_g._tcp.example", 1)
        servers = [f"127.0.0.1#{port}"]
        with trio.fail_after(WAIT):
            v4, errors4 = await resolve_seeds([spec], servers=servers, family=socket.AF_INET)
            v6, errors6 = await resolve_seeds([spec], servers=servers, family=socket.AF_INET6)
            both, _ = await resolve_seeds([spec], servers=servers)
        assert (v4, errors4) == ([("10.0.0.1", 7001)], [])
        assert (v6, errors6) == ([("2001:db8::2", 7002)], [])
        assert both == [("10.0.0.1", 7001), ("2001:db8::2", 7002)]
        nursery.cancel_scope.cancel()
