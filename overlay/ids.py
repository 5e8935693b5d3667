"""Node identities.

A `NodeId` names one running node: a human name plus the address its peers
dial (the *advertised* address, which may differ from the bound one behind a
NAT or in a container). It is hashable and totally ordered, so it can key
dicts and be sorted for deterministic iteration, and it packs to a plain
three-element list on the wire.

On the wire a node id names a host by an IP literal, never a DNS name
(`wire_id_ok`, checked by the codec on every decoded id): what arrives from
the network must not make a node resolve names an attacker chose. Only
seeds from local configuration are resolved, as `seed_id` placeholders
(`overlay.io`), which never travel.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

MAX_NAME_LEN = 128
MAX_HOST_LEN = 255


class _Fields(NamedTuple):
    name: str
    host: str
    port: int


class NodeId(_Fields):
    """`name`, `host`, `port`: immutable, equal, hashed and ordered by value.

    A tuple underneath rather than a frozen dataclass, because node ids key
    most of the protocol's dicts: a tuple hashes and compares in C, where a
    dataclass calls Python-level `__hash__`/`__eq__` (a tenth of a
    1,000-node simulation, profiled). `__new__` validates, so every NodeId
    in the program is well-formed."""

    __slots__ = ()

    def __new__(cls, name: str, host: str, port: int) -> NodeId:
        if type(name) is not str or not name or len(name) > MAX_NAME_LEN:
            raise ValueError(f"node name must be 1..{MAX_NAME_LEN} characters: {name!r}")
        if type(host) is not str or not host or len(host) > MAX_HOST_LEN:
            raise ValueError(f"host must be 1..{MAX_HOST_LEN} characters: {host!r}")
        if type(port) is not int or not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {port!r}")
        return super().__new__(cls, name, host, port)

    def __getnewargs__(self) -> tuple[str, str, int]:
        return (self.name, self.host, self.port)

    @property
    def addr(self) -> str:
        """`host:port`, with brackets around an IPv6 literal."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.name}@{self.addr}"


def wire_id_ok(name: str, host: str, port: int) -> bool:
    """May a node id with these parts come from the network? A printable
    name (no control characters), an IP literal host (no zone index, the
    form `ipaddress` prints), a port a node can listen on (1-65535). The
    lengths are checked by `NodeId` itself."""
    if not name.isprintable() or not 0 < port <= 65535 or "%" in host:
        return False
    try:
        return str(ipaddress.ip_address(host)) == host
    except ValueError:
        return False


def parse_addr(text: str) -> tuple[str, int]:
    """Split `host:port` or `[v6]:port` into its parts, with a clear error."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"expected [IPv6]:PORT, got {text!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        if ":" in host:
            # "fe80::1" would read as host "fe80:" and port 1.
            raise ValueError(f"an IPv6 address needs brackets, [ADDR]:PORT: {text!r}")
    if not host:
        raise ValueError(f"missing host in {text!r}")
    # Plain ASCII digits only: int() would also take "+80", " 80" and "8_0".
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"port is not a number in {text!r}")
    port = int(port_text)
    if not 0 < port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, port
