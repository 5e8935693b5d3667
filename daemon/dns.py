"""A small DNS client for SRV records (RFC 2782), over UDP with EDNS0 and a
TCP retry when the answer is truncated.

Why not a library: the agent needs one query type, and SRV answers are the
simple part of DNS (the A/AAAA lookups go through the system resolver with
`trio.socket.getaddrinfo`). A Kubernetes headless service answers
`_port._proto.service.namespace.svc.cluster.local` with one SRV record per
ready pod, often with the pods' addresses in the additional section; with
hundreds of pods the answer exceeds 512 bytes, hence EDNS0 (4096) and TCP.

Everything read from the network is checked: a malformed answer raises
`DnsError`, never anything else.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket as stdsocket
import struct
from dataclasses import dataclass

import trio

TYPE_A = 1
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_OPT = 41
CLASS_IN = 1
EDNS_PAYLOAD = 4096
DNS_PORT = 53


class DnsError(Exception):
    """The query failed: no server answered, or the answer is an error or
    malformed."""


@dataclass(frozen=True, slots=True, order=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class SrvAnswer:
    records: tuple[SrvRecord, ...]
    # Addresses of the targets given in the additional section, if any.
    addresses: dict[str, tuple[str, ...]]


def nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """The system's name servers (127.0.0.1 when none is configured)."""
    servers: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    servers.append(parts[1].split("%")[0])
    except OSError:
        pass
    return servers or ["127.0.0.1"]


def search_domains(path: str = "/etc/resolv.conf") -> list[str]:
    domains: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] in ("search", "domain"):
                    domains = parts[1:]
    except OSError:
        pass
    return domains


def encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if label else b""
        if not raw or len(raw) > 63:
            raise DnsError(f"bad DNS name {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise DnsError(f"DNS name too long: {name!r}")
    return bytes(out)


def build_query(qid: int, name: str, qtype: int) -> bytes:
    # Header: id, flags (RD), 1 question, 0 answers, 0 authority, 1 additional (OPT).
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 1)
    question = encode_name(name) + struct.pack(">HH", qtype, CLASS_IN)
    # EDNS0 OPT pseudo-record: root name, type OPT, class = UDP payload size.
    opt = b"\x00" + struct.pack(">HHIH", TYPE_OPT, EDNS_PAYLOAD, 0, 0)
    return header + question + opt


def _read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """The (possibly compressed) name at `pos`, and the position after it."""
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        if pos >= len(msg):
            raise DnsError("name runs past the message")
        length = msg[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise DnsError("truncated compression pointer")
            if end < 0:
                end = pos + 2
            jumps += 1
            if jumps > 64:
                raise DnsError("compression loop")
            pos = ((length & 0x3F) << 8) | msg[pos + 1]
            continue
        if length & 0xC0:
            raise DnsError("unsupported label type")
        pos += 1
        if length == 0:
            break
        if pos + length > len(msg):
            raise DnsError("label runs past the message")
        labels.append(msg[pos : pos + length].decode("ascii", "replace"))
        pos += length
    return ".".join(labels).lower(), (end if end >= 0 else pos)


def parse_response(msg: bytes, qid: int) -> tuple[bool, SrvAnswer]:
    """(truncated?, answer) of a response to query `qid`."""
    if len(msg) < 12:
        raise DnsError("response shorter than a header")
    rid, flags, qd, an, ns, ar = struct.unpack_from(">HHHHHH", msg, 0)
    if rid != qid:
        raise DnsError("response id does not match the query")
    if not flags & 0x8000:
        raise DnsError("not a response")
    truncated = bool(flags & 0x0200)
    rcode = flags & 0x000F
    if rcode == 3:
        raise DnsError("no such name (NXDOMAIN)")
    if rcode != 0:
        raise DnsError(f"server error (rcode {rcode})")
    pos = 12
    for _ in range(qd):
        _, pos = _read_name(msg, pos)
        pos += 4
    records: list[SrvRecord] = []
    addresses: dict[str, list[str]] = {}
    for index in range(an + ns + ar):
        owner, pos = _read_name(msg, pos)
        if pos + 10 > len(msg):
            raise DnsError("record header runs past the message")
        rtype, rclass, _ttl, rdlen = struct.unpack_from(">HHIH", msg, pos)
        pos += 10
        rdata_at = pos
        pos += rdlen
        if pos > len(msg):
            raise DnsError("record data runs past the message")
        if rtype == TYPE_SRV and index < an:
            if rdlen < 7:
                raise DnsError("SRV record too short")
            prio, weight, port = struct.unpack_from(">HHH", msg, rdata_at)
            target, _ = _read_name(msg, rdata_at + 6)
            if target and port:
                records.append(SrvRecord(prio, weight, port, target))
        elif rclass == CLASS_IN and rtype in (TYPE_A, TYPE_AAAA):
            raw = msg[rdata_at:pos]
            if rtype == TYPE_A and rdlen == 4:
                addresses.setdefault(owner, []).append(str(ipaddress.IPv4Address(raw)))
            elif rtype == TYPE_AAAA and rdlen == 16:
                addresses.setdefault(owner, []).append(str(ipaddress.IPv6Address(raw)))
    answer = SrvAnswer(
        tuple(sorted(records, key=lambda r: (r.priority, -r.weight, r.target, r.port))),
        {k: tuple(v) for k, v in addresses.items()},
    )
    return truncated, answer


async def _query_tcp(host: str, port: int, query: bytes, timeout: float) -> bytes:
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(struct.pack(">H", len(query)) + query)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                chunk = await stream.receive_some(65535)
                if not chunk:
                    raise DnsError("TCP answer cut short")
                buf += chunk
            return buf[2 : 2 + struct.unpack(">H", buf[:2])[0]]


def _split_server(server: str) -> tuple[str, int]:
    """`1.2.3.4`, `1.2.3.4#5353` or `[::1]:5353` style server specs."""
    if "#" in server:
        host, _, port = server.partition("#")
        return host, int(port)
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else DNS_PORT
    if server.count(":") == 1:
        host, _, port = server.partition(":")
        return host, int(port)
    return server, DNS_PORT


async def query_srv(
    name: str,
    *,
    servers: list[str] | None = None,
    timeout: float = 2.0,
    rng: random.Random | None = None,
) -> SrvAnswer:
    """The SRV records of `name`, asking each server in turn. The error
    says what went wrong, without the name (the caller knows it)."""
    rng = rng or random.Random(os.urandom(8))
    errors: list[str] = []
    for server in servers if servers is not None else nameservers():
        host, port = _split_server(server)
        qid = rng.getrandbits(16)
        query = build_query(qid, name, TYPE_SRV)
        try:
            data = await _udp_exchange(host, port, query, timeout)
            truncated, answer = parse_response(data, qid)
            if truncated:
                data = await _query_tcp(host, port, query, timeout)
                _, answer = parse_response(data, qid)
            return answer
        except trio.TooSlowError:
            errors.append(f"{server}: no answer within {timeout:g} s")
        except OSError as exc:
            errors.append(f"{server}: {exc.strerror or exc}")
        except DnsError as exc:
            if "NXDOMAIN" in str(exc):
                raise DnsError("no such name") from None
            errors.append(f"{server}: {exc}")
    raise DnsError("; ".join(errors or ["no name server"]))


async def _udp_exchange(host: str, port: int, query: bytes, timeout: float) -> bytes:
    family = stdsocket.AF_INET6 if ":" in host else stdsocket.AF_INET
    with trio.socket.socket(family, stdsocket.SOCK_DGRAM) as sock:
        await sock.connect((host, port))
        await sock.send(query)
        with trio.fail_after(timeout):
            while True:
                data = await sock.recv(65535)
                if data[:2] == query[:2]:
                    return data
