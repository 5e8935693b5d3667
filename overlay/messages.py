"""Wire messages of all three protocols.

Every message is a small frozen dataclass. The codec (`overlay.codec`) turns
them into msgpack frames and back, driven by the field annotations below and
the numeric tags in `TAGS`.

Rules:
- Tags are the protocol: only append, never renumber or reuse. HyParView owns
  1-15, Plumtree 16-31, SWIM 32-63.
- Field types are the wire schema. Supported: int, bool, float, str, bytes,
  NodeId, the record dataclasses below, `tuple[T, ...]`, `dict[str, str]`
  and `T | None`. An int is non-negative and below 2**63 unless its field
  metadata says otherwise (`field(metadata=bounds(lo, hi))`); a str, bytes, tuple or dict
  field is capped by `max_len` (see `limit`).
- The sender is not a field: every frame carries it in its envelope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from overlay.ids import NodeId

# Default caps, per field, for what arrives from the network.
MAX_STR = 1024
MAX_ITEMS = 1024


class Message:
    """Base of every wire message."""

    __slots__ = ()


def bounds(lo: int, hi: int) -> dict[str, Any]:
    """Field metadata: an int in [lo, hi]. Use as `field(metadata=bounds(0, 9))`."""
    return {"lo": lo, "hi": hi}


def limit(max_len: int) -> dict[str, Any]:
    """Field metadata: at most `max_len` characters, bytes or items."""
    return {"max_len": max_len}


# --------------------------------------------------------------------------
# HyParView (Leitão, Pereira, Rodrigues, DSN 2007)


@dataclass(frozen=True, slots=True)
class Join(Message):
    """Sender asks the receiver (its contact) to bring it into the overlay."""


@dataclass(frozen=True, slots=True)
class ForwardJoin(Message):
    """Random walk announcing `joiner`; `ttl` counts down from ARWL."""

    joiner: NodeId
    ttl: int = field(metadata=bounds(0, 255))


@dataclass(frozen=True, slots=True)
class Neighbor(Message):
    """Sender wants the receiver in its active view. High priority: the
    sender has no active peer at all (or has already added the receiver), so
    the receiver must accept. `join`: sent at the end of a join walk, so the
    receiver reports the new neighbour as joined rather than replaced."""

    high_priority: bool
    join: bool = False
    nonce: int = 0  # echoed by the reply; a join notice (join=True) gets none


@dataclass(frozen=True, slots=True)
class NeighborReply(Message):
    accepted: bool
    nonce: int = 0


@dataclass(frozen=True, slots=True)
class Disconnect(Message):
    """Sender dropped the receiver from its active view. `alive`: the sender
    stays in the cluster (keep it in the passive view); false when leaving."""

    alive: bool


@dataclass(frozen=True, slots=True)
class Shuffle(Message):
    """Random walk carrying a sample of `origin`'s views."""

    origin: NodeId
    ttl: int = field(metadata=bounds(0, 255))
    nonce: int
    nodes: tuple[NodeId, ...] = field(metadata=limit(64))


@dataclass(frozen=True, slots=True)
class ShuffleReply(Message):
    """Sent straight back to the shuffle's origin with a sample of the
    receiver's passive view."""

    nonce: int
    nodes: tuple[NodeId, ...] = field(metadata=limit(64))


HYPARVIEW_MESSAGES: tuple[type[Message], ...] = (
    Join,
    ForwardJoin,
    Neighbor,
    NeighborReply,
    Disconnect,
    Shuffle,
    ShuffleReply,
)

# --------------------------------------------------------------------------
# Plumtree (Leitão, Pereira, Rodrigues, SRDS 2007): tags 16-31

# --------------------------------------------------------------------------
# SWIM (Das, Gupta, Motivala, DSN 2002) with Lifeguard: tags 32-63


# --------------------------------------------------------------------------
# The tag table: append only.

TAGS: dict[int, type[Message]] = {
    1: Join,
    2: ForwardJoin,
    3: Neighbor,
    4: NeighborReply,
    5: Disconnect,
    6: Shuffle,
    7: ShuffleReply,
}
