"""Who the transport talks to: the address rules.

Rules of this module: pure functions, no I/O; the transport (streams and
datagrams) asks, this module answers.

Theory of operation
-------------------
- **Addresses are IP literals.** A node id learned from the network carries
  its host as an IP address literal; the transport sends and dials only
  those, so nothing a peer says makes the agent query DNS for a name it
  chose, and a host that no socket call can take (a NUL byte, a name too
  long for IDNA) is refused before any socket sees it. Only seed
  placeholders (`overlay.io.is_seed`), which come from the local
  configuration, may be names.
- **A sender is where it sends from.** Without a cluster key nothing in a
  frame proves who sent it, so the transport takes the network's word
  instead: a frame speaks for the sender it names only if that sender's
  host is the address the frame came from (`claims_source`). It does not
  tell apart agents that share an address (one host, or one NAT), and an
  attacker who can forge source addresses defeats it; the cluster key does
  not have these limits.
"""

from __future__ import annotations

import ipaddress

from overlay.ids import NodeId
from overlay.io import is_seed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def ip_literal(host: str) -> IPAddress | None:
    """The address `host` spells if it is an IP literal, else None. An
    IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a dual-stack socket
    reports for an IPv4 peer) is its IPv4 address, so the two compare equal."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def may_contact(peer: NodeId) -> bool:
    """Whether the transport may send to or dial `peer` as it is: its host
    is an IP literal, or it is a seed from the local configuration."""
    return is_seed(peer) or ip_literal(peer.host) is not None


def claims_source(sender: NodeId, source: IPAddress | None) -> bool:
    """Whether `sender`'s host is the IP address `source` a frame came from."""
    return source is not None and ip_literal(sender.host) == source


def format_addr(addr: tuple[str, int] | None) -> str:
    """HOST:PORT, with an IPv6 host in brackets; "" for None."""
    if addr is None:
        return ""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
