"""Wire messages of all three protocols.

Every message is a small frozen dataclass; the records nested in them
(`MsgId`, `Announcement`, `DigestEntry`, `MemberState`) are named tuples,
which a node builds, hashes and compares by the thousand per second at C
speed (a frozen dataclass builds and hashes in Python: MsgId lookups were
five times slower). The codec (`overlay.codec`) turns them into msgpack
frames and back, driven by the field annotations below, the limits in
`RECORD_LIMITS` and the numeric tags in `TAGS`.

Rules:
- Tags are the protocol: only append, never renumber or reuse. HyParView owns
  1-15, Plumtree 16-31, SWIM 32-63.
- Field types are the wire schema. Supported: int, bool, float, str, bytes,
  NodeId, an `enum.IntEnum` whose values are 0..n-1 (an int on the wire,
  checked against its range), the records below, `tuple[T, ...]`,
  `dict[str, str]` and `T | None`. An int is non-negative and below 2**63 unless its field
  metadata says otherwise (`field(metadata=bounds(lo, hi))`, or for a record
  its entry in `RECORD_LIMITS`); a str, bytes, tuple or dict field is capped
  by `max_len` (see `limit`).
- The sender is not a field: every frame carries it in its envelope.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from overlay.coordinates import DIMENSIONS, Coordinate
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

MAX_TOPIC = 256  # characters in a topic name
MAX_WIRE_PAYLOAD = 64 * 1024  # the frame limit caps it anyway; config.max_payload is lower
MAX_HOPS = 65535
IHAVE_MAX_ITEMS = 1024  # announcements per IHAVE; a longer batch is split
DIGEST_MAX_ENTRIES = 256  # (origin, epoch) groups per anti-entropy digest
DIGEST_MAX_RANGES = 64  # seq ranges per group: 2 ints each
IWANT_MAX_IDS = 256  # ids per anti-entropy request
TREE_BITS_MAX = 64  # origins' trees whose link state one digest carries


class MsgId(NamedTuple):
    """A broadcast's identity: the origin's name, the origin's boot epoch (a
    random 32-bit number drawn when the node starts, so that a node restarted
    under the same name never reuses an id) and a per-epoch sequence number
    counting from 1."""

    origin: str
    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class Gossip(Message):
    """A broadcast payload, pushed along the tree, or sent in answer to a
    GRAFT or an anti-entropy IWANT. `hops`: links travelled, this one
    included. `age`: seconds since publication as the path measures it (the
    time each node held it, summed; link latency is not counted), so every
    node refuses a copy older than the retention window. `repair`: sent by
    anti-entropy, off the tree: receiving it changes no eager/lazy set."""

    id: MsgId
    topic: str = field(metadata=limit(MAX_TOPIC))
    hops: int = field(metadata=bounds(1, MAX_HOPS))
    age: float
    payload: bytes = field(metadata=limit(MAX_WIRE_PAYLOAD))
    repair: bool = False


class Announcement(NamedTuple):
    """One IHAVE entry: the sender has `id`, and would deliver it to the
    receiver with this hop count."""

    id: MsgId
    hops: int


@dataclass(frozen=True, slots=True)
class IHave(Message):
    """Lazy push: a batch of announcements (paper sec. 3.6)."""

    items: tuple[Announcement, ...] = field(metadata=limit(IHAVE_MAX_ITEMS))


@dataclass(frozen=True, slots=True)
class Prune(Message):
    """The receiver should move the sender to its lazy set (sec. 3.6), in
    `origin`'s tree and the shared one (`overlay.trees`); no origin: the
    shared tree only (the paper's single tree)."""

    origin: str | None = field(default=None, metadata=limit(128))


@dataclass(frozen=True, slots=True)
class Graft(Message):
    """The receiver should move the sender to its eager set and, when `id` is
    given, send that message (sec. 3.6). No id: a tree optimisation or a
    link repair. The tree changed is `id.origin`'s, else `origin`'s, and the
    shared one; neither: the shared one only."""

    id: MsgId | None
    origin: str | None = field(default=None, metadata=limit(128))


class TreeBit(NamedTuple):
    """Whether the sender holds the receiver eager in `origin`'s tree."""

    origin: str
    eager: bool


class DigestEntry(NamedTuple):
    """The sequence numbers of one (origin, epoch) held by the sender, as
    inclusive ranges flattened to first1, last1, first2, last2, ..."""

    origin: str
    epoch: int
    ranges: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Digest(Message):
    """Anti-entropy: the ids the sender can still serve. The receiver asks
    with IWANT for those it never saw; with `reply`, it answers with the
    part of its own digest that this one does not cover, so the exchange is
    push-pull. `eager` says whether the sender holds the receiver eager, so
    a link left eager at one end only (a PRUNE and a push crossed) is seen
    and repaired; `trees` says the same for the origins' trees the sender
    holds (a sample of at most `TREE_BITS_MAX`; `trees_complete`: all of
    them, so an origin not listed is in the sender's shared tree)."""

    entries: tuple[DigestEntry, ...] = field(metadata=limit(DIGEST_MAX_ENTRIES))
    reply: bool
    eager: bool
    trees: tuple[TreeBit, ...] = field(default=(), metadata=limit(TREE_BITS_MAX))
    trees_complete: bool = True


@dataclass(frozen=True, slots=True)
class IWant(Message):
    """Anti-entropy request: send these (as repair Gossip)."""

    ids: tuple[MsgId, ...] = field(metadata=limit(IWANT_MAX_IDS))


PLUMTREE_MESSAGES: tuple[type[Message], ...] = (Gossip, IHave, Prune, Graft, Digest, IWant)

# --------------------------------------------------------------------------
# SWIM (Das, Gupta, Motivala, DSN 2002) with Lifeguard: tags 32-63

SWIM_MAX_UPDATES = 128  # piggybacked member states per probe message
PUSH_PULL_MAX_STATES = 8192  # member states per push-pull part; more go in more parts


class WireStatus(enum.IntEnum):
    """A member's status as `MemberState` carries it. The numbers are the
    protocol: only append. The ordering is used: an accusation (SUSPECT and
    above) is graver the higher its code (`overlay.member_rules.covers`)."""

    ALIVE = 0
    SUSPECT = 1
    FAILED = 2
    LEFT = 3


class MemberState(NamedTuple):
    """One member's state as SWIM spreads it (the wire record; the member
    list's own entry is `overlay.members.Member`). `tags` travel
    with alive states only (never change the dict: states are shared).
    `accuser`: for a suspect state, the member whose probe failed (Lifeguard
    counts each accuser once); None otherwise."""

    node: NodeId
    incarnation: int
    status: WireStatus
    tags: dict[str, str]
    accuser: NodeId | None


@dataclass(frozen=True, slots=True)
class Ping(Message):
    """Probe (SWIM sec. 3.1), a datagram. `target`: the member the sender
    means to reach; a node with another name at that address ignores it."""

    seq: int
    target: NodeId
    updates: tuple[MemberState, ...] = field(metadata=limit(SWIM_MAX_UPDATES))


@dataclass(frozen=True, slots=True)
class PingReq(Message):
    """Indirect probe (SWIM sec. 3.1): ping `target` for the sender and relay
    the ack; with `nack` (Lifeguard sec. IV-A), answer NACK when the target
    stays silent, so the sender learns the path to us works."""

    seq: int
    target: NodeId
    nack: bool
    updates: tuple[MemberState, ...] = field(metadata=limit(SWIM_MAX_UPDATES))


@dataclass(frozen=True, slots=True)
class Ack(Message):
    """Answer to PING, or relayed answer to PING-REQ, with the same `seq`.
    `coord`: the sender's network coordinate (`overlay.coordinates`), or
    None; the prober measures the round trip and updates its own. It is
    not part of the ack's identity (compare=False): two acks that say the
    same to SWIM are equal whatever coordinate rides on them."""

    seq: int
    updates: tuple[MemberState, ...] = field(metadata=limit(SWIM_MAX_UPDATES))
    coord: Coordinate | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Nack(Message):
    """The relay of PING-REQ `seq` heard nothing from the target in time."""

    seq: int


@dataclass(frozen=True, slots=True)
class PushPull(Message):
    """Full-state exchange over the stream (anti-entropy, join, reconnect).
    A state too large for one frame goes in `parts` messages; the receiver
    merges each as it comes and, after the last part of a request
    (`reply=False`), answers with its own state (`reply=True`)."""

    reply: bool
    part: int = field(metadata=bounds(0, 65535))
    parts: int = field(metadata=bounds(1, 65536))
    states: tuple[MemberState, ...] = field(metadata=limit(PUSH_PULL_MAX_STATES))


@dataclass(frozen=True, slots=True)
class MemberUpdates(Message):
    """Member states pushed outside the probe cycle: to a few members on a
    graceful leave, and as the payload of SWIM's internal Plumtree topic."""

    updates: tuple[MemberState, ...] = field(metadata=limit(SWIM_MAX_UPDATES))


SWIM_MESSAGES: tuple[type[Message], ...] = (Ping, PingReq, Ack, Nack, PushPull, MemberUpdates)

# --------------------------------------------------------------------------
# Queries (Serf's, over Plumtree; see overlay/queries.py): tags 48-55

QUERY_MAX_NAME = 128  # characters in a query's name
QUERY_MAX_PAYLOAD = 4096  # bytes in a query or a response (config caps it lower)
QUERY_MAX_NODES = 64  # node names one query may be filtered to
QUERY_MAX_TAG_FILTERS = 8  # tag=regex filters in one query


@dataclass(frozen=True, slots=True)
class Query(Message):
    """A request for the members that match its filters: broadcast over the
    tree inside a frame whose sender is the origin (who collects answers).
    `nodes`: only these names answer (empty: any); `tags`: a member answers
    only if, for each key, it has the tag and its value matches the regex;
    `timeout_ms`: how long the origin waits; `ack`: ask for acks."""

    id: int
    name: str = field(metadata=limit(QUERY_MAX_NAME))
    payload: bytes = field(metadata=limit(QUERY_MAX_PAYLOAD))
    nodes: tuple[str, ...] = field(metadata=limit(QUERY_MAX_NODES))
    tags: dict[str, str] = field(metadata=limit(QUERY_MAX_TAG_FILTERS))
    timeout_ms: int = field(metadata=bounds(1, 600_000))
    ack: bool = False


@dataclass(frozen=True, slots=True)
class QueryAck(Message):
    """The sender got query `id` (sent straight to the origin)."""

    id: int


@dataclass(frozen=True, slots=True)
class QueryResponse(Message):
    """The sender's answer to query `id` (sent straight to the origin)."""

    id: int
    payload: bytes = field(metadata=limit(QUERY_MAX_PAYLOAD))


QUERY_MESSAGES: tuple[type[Message], ...] = (QueryAck, QueryResponse)

# --------------------------------------------------------------------------
# The tag table: append only.

# Field limits of the records (named tuples carry no field metadata).
RECORD_LIMITS: dict[type, dict[str, dict[str, Any]]] = {
    MsgId: {"origin": limit(128), "epoch": bounds(0, 2**32 - 1), "seq": bounds(1, 2**63 - 1)},
    Announcement: {"hops": bounds(1, MAX_HOPS)},
    TreeBit: {"origin": limit(128)},
    DigestEntry: {
        "origin": limit(128),
        "epoch": bounds(0, 2**32 - 1),
        "ranges": limit(2 * DIGEST_MAX_RANGES),
    },
    MemberState: {"tags": limit(64)},
    Coordinate: {"vec": limit(DIMENSIONS)},
}


def is_record(tp: Any) -> bool:
    """A message or a nested record: a class the codec encodes field by field."""
    return isinstance(tp, type) and (dataclasses.is_dataclass(tp) or tp in RECORD_LIMITS)


def record_fields(cls: type) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, metadata) of each wire field of a message or record, in order."""
    if dataclasses.is_dataclass(cls):
        return [(f.name, f.metadata) for f in dataclasses.fields(cls)]
    limits = RECORD_LIMITS[cls]
    return [(name, limits.get(name, {})) for name in cls._fields]  # type: ignore[attr-defined]


TAGS: dict[int, type[Message]] = {
    1: Join,
    2: ForwardJoin,
    3: Neighbor,
    4: NeighborReply,
    5: Disconnect,
    6: Shuffle,
    7: ShuffleReply,
    16: Gossip,
    17: IHave,
    18: Prune,
    19: Graft,
    20: Digest,
    21: IWant,
    32: Ping,
    33: PingReq,
    34: Ack,
    35: Nack,
    36: PushPull,
    37: MemberUpdates,
    48: Query,
    49: QueryAck,
    50: QueryResponse,
}
