"""Node identities.

A `NodeId` names one running node: a human name plus the address its peers
dial (the *advertised* address, which may differ from the bound one behind a
NAT or in a container). It is hashable and totally ordered, so it can key
dicts and be sorted for deterministic iteration, and it packs to a plain
three-element list on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_NAME_LEN = 128
MAX_HOST_LEN = 255


@dataclass(frozen=True, slots=True, order=True)
class NodeId:
    name: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > MAX_NAME_LEN:
            raise ValueError(f"node name must be 1..{MAX_NAME_LEN} characters: {self.name!r}")
        if not self.host or len(self.host) > MAX_HOST_LEN:
            raise ValueError(f"host must be 1..{MAX_HOST_LEN} characters: {self.host!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port out of range: {self.port}")

    @property
    def addr(self) -> str:
        """`host:port`, with brackets around an IPv6 literal."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.name}@{self.addr}"


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
