"""Seeds: parsing, DNS (A/AAAA through the system resolver), SRV (dnspython)
through a fake name server on 127.0.0.1 (UDP, and TCP after a truncated
answer): the queries never leave the loopback."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon import dns as seeds_dns
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


def srv_response(
    query: bytes,
    records: list[tuple[int, int, int, str]],
    *,
    tc: bool = False,
    additional: dict[str, str] | None = None,
    rcode: int = 0,
) -> bytes:
    """The answer to `query` (wire format): SRV `records` (priority, weight,
    port, target), A/AAAA records of `additional` (name: address), flags."""
    request = dns.message.from_wire(query)
    response = dns.message.make_response(request)
    question = request.question[0].name
    if records:
        response.answer.append(
            dns.rrset.from_text_list(
                question, 30, "IN", "SRV", [f"{p} {w} {port} {t}." for p, w, port, t in records]
            )
        )
    for host, ip in (additional or {}).items():
        kind = "AAAA" if ":" in ip else "A"
        response.additional.append(dns.rrset.from_text(f"{host}.", 30, "IN", kind, ip))
    response.set_rcode(dns.rcode.Rcode(rcode))
    if tc:
        response.flags |= dns.flags.TC
    return response.to_wire(max_size=65535)


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
            answer = await seeds_dns.query_srv("_g._tcp.example", servers=[f"127.0.0.1#{port}"])
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
            answer = await seeds_dns.query_srv("_g._tcp.svc.example", servers=[f"127.0.0.1#{port}"])
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


def _query_bytes() -> bytes:
    return dns.message.make_query("_g._tcp.example", "SRV").to_wire()


@settings(max_examples=60, deadline=None)
@given(
    garbage=st.one_of(
        st.binary(max_size=600),
        # A good answer cut and followed by noise: past the header checks.
        st.tuples(st.integers(0, 400), st.binary(max_size=200)).map(
            lambda cut: (lambda good: good[: cut[0] % len(good)] + cut[1])(
                srv_response(
                    _query_bytes(),
                    [(0, 1, 7001, "a.example")],
                    additional={"a.example": "10.0.0.1"},
                )
            )
        ),
    )
)
def test_garbage_from_a_name_server_is_one_clear_error(garbage: bytes) -> None:
    """Garbage from a name server (over TCP, after a truncated UDP answer)
    ends the query with DnsError, never anything else, and at once."""

    def respond(query: bytes, tcp: bool) -> bytes:
        if not tcp:
            return srv_response(query, [], tc=True)
        # Some garbage carries the query's id: it gets past the id check.
        return query[:2] + garbage[2:] if len(garbage) >= 2 else garbage

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(fake_dns, respond)
            with trio.fail_after(WAIT), contextlib.suppress(seeds_dns.DnsError):
                await seeds_dns.query_srv(
                    "_g._tcp.example", servers=[f"127.0.0.1#{port}"], timeout=1.0
                )
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_name_servers_are_addresses() -> None:
    assert seeds_dns.split_server("127.0.0.1#5353") == ("127.0.0.1", 5353)
    assert seeds_dns.split_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert seeds_dns.split_server("[::1]:5353") == ("::1", 5353)
    assert seeds_dns.split_server("::1") == ("::1", 53)
    for bad in ("ns.example", "127.0.0.1#x", "127.0.0.1#70000", "[::1]:0"):
        with pytest.raises(seeds_dns.DnsError, match="bad name server"):
            seeds_dns.split_server(bad)


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


@bounded(TEST_MAX)
async def test_srv_targets_without_addresses_are_asked_of_the_same_servers() -> None:
    """No additional section: each target's A/AAAA records are asked of the
    configured name servers (not the system's), by the agent's family."""
    asked: list[tuple[str, str]] = []
    zone = {("a.example.", "A"): "10.0.0.1", ("b.example.", "AAAA"): "2001:db8::2"}

    def respond(query: bytes, tcp: bool) -> bytes:
        request = dns.message.from_wire(query)
        q = request.question[0]
        kind = dns.rdatatype.to_text(q.rdtype)
        asked.append((q.name.to_text(), kind))
        if kind == "SRV":
            return srv_response(query, [(0, 1, 7001, "a.example"), (1, 1, 7002, "b.example")])
        response = dns.message.make_response(request)
        if (q.name.to_text(), kind) in zone:
            response.answer.append(
                dns.rrset.from_text(q.name, 30, "IN", kind, zone[(q.name.to_text(), kind)])
            )
        return response.to_wire()

    async with trio.open_nursery() as nursery:
        port = await nursery.start(fake_dns, respond)
        spec = parse_seed("_g._tcp.example", 1)
        servers = [f"127.0.0.1#{port}"]
        with trio.fail_after(WAIT):
            v4, errors4 = await resolve_seeds([spec], servers=servers, family=socket.AF_INET)
        assert (v4, errors4) == ([("10.0.0.1", 7001)], [])
        assert asked == [("_g._tcp.example.", "SRV"), ("a.example.", "A"), ("b.example.", "A")]
        with trio.fail_after(WAIT):
            both, errors = await resolve_seeds([spec], servers=servers)
        assert (both, errors) == ([("10.0.0.1", 7001), ("2001:db8::2", 7002)], [])
        nursery.cancel_scope.cancel()
