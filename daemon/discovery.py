"""Seeds: from what an operator writes after `--join` to addresses to dial.

Three forms:

- `HOST:PORT` or `[V6]:PORT` with a literal address: used as is;
- `NAME[:PORT]`: a DNS name, resolved to every A/AAAA address with the
  system resolver (`trio.socket.getaddrinfo`); the port defaults to the
  agent's own;
- `_SERVICE._PROTO.NAME`: an SRV query (`daemon.dns`, dnspython); each
  record gives a target and a port, the target's addresses taken from the
  answer's additional section, else asked of the same name servers (A/AAAA)
  when servers are configured, else resolved like a name. A Kubernetes
  headless service works as is: `_gossip._tcp.overlay.default.svc.cluster.local`.

Names go to the system resolver because it is what an operator configured
(/etc/hosts, nsswitch); DNS proper (SRV, and any query to configured name
servers) goes through dnspython, imported only then: an agent joining by
address or by name never loads it.

Names are resolved again every round while the agent is alone (see
`daemon.agent`), so a seed that moves, or a service whose pods are not ready
yet, is found when it comes up. HyParView does the retrying itself.
"""

from __future__ import annotations

import ipaddress
import socket as stdsocket
from dataclasses import dataclass

import trio

from overlay.ids import parse_addr

Addr = tuple[str, int]


class SeedError(ValueError):
    """A seed that cannot be used (bad syntax) or resolved now."""


@dataclass(frozen=True, slots=True)
class SeedSpec:
    text: str
    kind: str  # "addr", "dns" or "srv"
    host: str
    port: int  # 0 for SRV (the records give it)

    @property
    def needs_resolving(self) -> bool:
        return self.kind != "addr"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_seed(text: str, default_port: int) -> SeedSpec:
    text = text.strip()
    if not text:
        raise SeedError("empty seed")
    if text.startswith("_") and "._" in text and ":" not in text:
        return SeedSpec(text, "srv", text.rstrip("."), 0)
    if text.startswith("[") or text.count(":") == 1:
        try:
            host, port = parse_addr(text)
        except ValueError as exc:
            raise SeedError(str(exc)) from None
    elif text.count(":") > 1:
        if not _is_ip(text):
            raise SeedError(f"not an address: {text!r}")
        host, port = text, default_port
    else:
        host, port = text, default_port
    return SeedSpec(text, "addr" if _is_ip(host) else "dns", host, port)


async def resolve_name(host: str, port: int, family: int = 0) -> list[Addr]:
    try:
        infos = await trio.socket.getaddrinfo(host, port, family, stdsocket.SOCK_STREAM)
    except stdsocket.gaierror as exc:
        raise SeedError(f"{host}: {exc.strerror or exc}") from None
    except OSError as exc:
        raise SeedError(f"{host}: {exc}") from None
    out: list[Addr] = []
    for info in infos:
        addr = (str(info[4][0]), int(info[4][1]))
        if addr not in out:
            out.append(addr)
    return out


async def resolve_seed(
    spec: SeedSpec,
    *,
    family: int = 0,
    servers: list[str] | None = None,
    timeout: float = 2.0,
) -> list[Addr]:
    """The addresses of one seed, or SeedError saying why there are none."""
    if spec.kind == "addr":
        return [(spec.host, spec.port)]
    if spec.kind == "dns":
        return await resolve_name(spec.host, spec.port, family)
    from daemon import dns  # dnspython: only for a seed that needs DNS

    try:
        answer = await dns.query_srv(spec.host, servers=servers, timeout=timeout)
    except dns.DnsError as exc:
        raise SeedError(f"{spec.text}: {exc}") from None
    if not answer.records:
        raise SeedError(f"{spec.text}: no SRV records")
    out: list[Addr] = []
    for rec in answer.records:
        known = answer.addresses.get(rec.target.lower())
        if known:
            hosts = [h for h in known if not family or _family(h) == family]
            addrs = [(h, rec.port) for h in hosts]
        elif servers is not None:
            try:
                found = await dns.query_addresses(
                    rec.target, family=family, servers=servers, timeout=timeout
                )
            except dns.DnsError:
                continue
            addrs = [(h, rec.port) for h in found]
        else:
            try:
                addrs = await resolve_name(rec.target, rec.port, family)
            except SeedError:
                continue
        out.extend(a for a in addrs if a not in out)
    if not out:
        raise SeedError(f"{spec.text}: no SRV target resolves")
    return out


def _family(host: str) -> int:
    return stdsocket.AF_INET6 if ":" in host else stdsocket.AF_INET


async def resolve_seeds(
    specs: list[SeedSpec],
    *,
    family: int = 0,
    servers: list[str] | None = None,
    timeout: float = 2.0,
) -> tuple[list[Addr], list[str]]:
    """Every address of every seed (in order, without repeats), and one
    message per seed that gave none."""
    addrs: list[Addr] = []
    errors: list[str] = []
    for spec in specs:
        try:
            with trio.fail_after(timeout * 3):
                found = await resolve_seed(spec, family=family, servers=servers, timeout=timeout)
        except SeedError as exc:
            errors.append(str(exc))
            continue
        except trio.TooSlowError:
            errors.append(f"{spec.text}: resolution timed out")
            continue
        addrs.extend(a for a in found if a not in addrs)
    return addrs, errors
