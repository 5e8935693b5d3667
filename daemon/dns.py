"""DNS queries for seeds: SRV (RFC 2782), and A/AAAA at configured servers,
with dnspython's resolver on trio's event loop.

dnspython does the protocol: EDNS0, a TCP retry when the UDP answer is
truncated (a Kubernetes headless service with hundreds of ready pods
answers with one SRV record per pod, the pods' addresses in the additional
section), response ids and question matching, name compression, the search
list and `ndots` of /etc/resolv.conf. This module only chooses the servers,
bounds the time and turns every failure into one `DnsError` whose text an
operator reads in the "seed not resolved" log line.

Imported only when a seed needs DNS (`daemon.discovery` imports it lazily):
an agent that joins by address, or by a name the system resolver answers,
never loads dnspython.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
import trio

DNS_PORT = 53
# The UDP payload we accept (EDNS0). 1232 bytes is the DNS flag day 2020
# value: no IP fragmentation on any usual path; bigger answers come over TCP.
EDNS_PAYLOAD = 1232


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


def split_server(server: str) -> tuple[str, int]:
    """`1.2.3.4`, `1.2.3.4#5353`, `1.2.3.4:5353`, `::1` or `[::1]:5353`."""
    host, port = server, DNS_PORT
    try:
        if "#" in server:
            host, _, text = server.partition("#")
            port = int(text)
        elif server.startswith("["):
            host, _, rest = server[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else DNS_PORT
        elif server.count(":") == 1:
            host, _, text = server.partition(":")
            port = int(text)
        ipaddress.ip_address(host)
    except ValueError:
        raise DnsError(
            f"bad name server {server!r}: want an IP address, optionally a port"
        ) from None
    if not 0 < port < 65536:
        raise DnsError(f"bad name server {server!r}: port out of range")
    return host, port


def _resolver(servers: list[str] | None, timeout: float) -> dns.asyncresolver.Resolver:
    """A resolver asking `servers`, or the system's (/etc/resolv.conf, read
    again at every call: a changed configuration is seen at the next round)."""
    if servers is None:
        try:
            resolver = dns.asyncresolver.Resolver(configure=True)
        except dns.resolver.NoResolverConfiguration:
            # No usable /etc/resolv.conf: what the C library does.
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = ["127.0.0.1"]
    elif not servers:
        raise DnsError("no name server")
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*split_server(s)) for s in servers]
    resolver.use_edns(0, 0, EDNS_PAYLOAD)
    # `timeout` bounds one attempt at one server; the whole query may try
    # each server, or one server twice, within the lifetime.
    resolver.timeout = timeout
    resolver.lifetime = timeout * 2
    return resolver


def _describe(exc: Exception) -> str:
    """One clause for the log, without the name (the caller knows it)."""
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return "no such name"
    if isinstance(exc, dns.resolver.NoNameservers):
        parts = [
            f"{str(err[0]).removeprefix('Do53:')}: {err[3]}" for err in exc.kwargs.get("errors", [])
        ]
        return "; ".join(parts) or "no name server answered"
    if isinstance(exc, dns.resolver.NoResolverConfiguration):
        return "no name server configured"
    text = str(exc).strip()
    return text or type(exc).__name__


def _servers_text(resolver: dns.asyncresolver.Resolver) -> str:
    return ", ".join(
        f"{ns.answer_nameserver()}#{ns.answer_port()}"
        if ns.answer_port() != DNS_PORT
        else ns.answer_nameserver()
        for ns in resolver.nameservers
        if isinstance(ns, dns.nameserver.Nameserver)
    )


async def _resolve(
    resolver: dns.asyncresolver.Resolver, name: str, rdtype: str, search: bool
) -> dns.resolver.Answer | None:
    """The answer, None when the name has no record of that type, or
    DnsError. Bounded by the resolver's lifetime on trio's clock (dnspython
    checks it only between attempts, after a backoff)."""
    lifetime = float(resolver.lifetime)
    try:
        with trio.fail_after(lifetime):
            return await resolver.resolve(
                name,
                rdtype,
                search=search,
                raise_on_no_answer=False,
                backend=dns.asyncbackend.get_backend("trio"),
            )
    except dns.resolver.NoAnswer:
        return None
    except (trio.TooSlowError, dns.resolver.LifetimeTimeout):
        raise DnsError(f"{_servers_text(resolver)}: no answer within {lifetime:g} s") from None
    except (dns.exception.DNSException, ValueError, OSError) as exc:
        # DNSException: every failure of the query, a malformed name
        # included; ValueError and OSError: a bad server address.
        raise DnsError(_describe(exc)) from None


def _owner(name: dns.name.Name) -> str:
    return str(name.to_text(omit_final_dot=True)).lower()


async def query_srv(
    name: str, *, servers: list[str] | None = None, timeout: float = 2.0
) -> SrvAnswer:
    """The SRV records of `name`, sorted by priority then weight (highest
    first), with the addresses the additional section gives. With `servers`
    None the system's servers and search list are used; else the name is
    asked as is, of these servers only."""
    resolver = _resolver(servers, timeout)
    answer = await _resolve(resolver, name, "SRV", search=servers is None)
    if answer is None or answer.rrset is None:
        return SrvAnswer((), {})
    records: list[SrvRecord] = []
    for rdata in answer.rrset:
        target = _owner(rdata.target)
        if target and rdata.port:  # "." is "no such service here" (RFC 2782)
            records.append(SrvRecord(rdata.priority, rdata.weight, rdata.port, target))
    addresses: dict[str, list[str]] = {}
    for rrset in answer.response.additional:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            found = addresses.setdefault(_owner(rrset.name), [])
            found.extend(r.address for r in rrset if r.address not in found)
    return SrvAnswer(
        tuple(sorted(records, key=lambda r: (r.priority, -r.weight, r.target, r.port))),
        {k: tuple(v) for k, v in addresses.items()},
    )


async def query_addresses(
    name: str, *, family: int = 0, servers: list[str] | None = None, timeout: float = 2.0
) -> list[str]:
    """The A (family AF_INET), AAAA (AF_INET6) or both (0) addresses of
    `name`, asked of `servers` (the system's when None). DnsError when
    there is no answer at all; an empty list when the name has none of
    these records."""
    resolver = _resolver(servers, timeout)
    kinds = {int(socket.AF_INET): ["A"], int(socket.AF_INET6): ["AAAA"]}.get(family, ["A", "AAAA"])
    out: list[str] = []
    error: DnsError | None = None
    for kind in kinds:
        try:
            answer = await _resolve(resolver, name, kind, search=servers is None)
        except DnsError as exc:
            error = exc
            continue
        if answer is not None and answer.rrset is not None:
            out.extend(r.address for r in answer.rrset if r.address not in out)
    if not out and error is not None:
        raise error
    return out
