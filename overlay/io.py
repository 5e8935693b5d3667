"""The vocabulary between a protocol node and whatever drives it.

Theory of operation: a driver (the trio daemon or the simulator) owns all
I/O. It feeds *inputs* into `Node.handle(input, now)` one at a time and
executes the *outputs* it gets back, in order. Nothing here blocks, sleeps,
reads a clock or draws a random number: `now` is given by the driver, and
randomness comes from the `random.Random` the node was built with.

Connection semantics every driver must honour (the simulator and the daemon
alike):

- `Send(to, msg, reliable=True)` goes over the stream to `to`, opening it if
  there is none. Messages on one stream arrive in order.
- `Send(..., reliable=False)` is a datagram: it may be lost, and opens nothing.
- A stream that could not be opened gives `ConnectFailed(peer)`; one that was
  up and broke gives `ConnectionDown(peer)`. When the peer's host answered
  that nothing listens at the peer's address (a TCP reset on a dial, an
  ICMP port-unreachable for a datagram), the driver also reports
  `PeerRefused(peer)`, first: the network works, the process is gone.
  Messages already in flight on a stream are delivered before its
  `ConnectionDown`. A stream that closes
  after a newer stream to the same peer has opened reports nothing: the
  inputs speak of the peer's *current* connection, never of an old one.
- `CloseConnection(peer)` closes the stream after the sends queued before it.
- `SetTimer(timer, delay)` replaces a pending timer equal to `timer`;
  `CancelTimer(timer)` removes it; an expired timer comes back as
  `TimerFired(timer)`.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

from overlay.ids import NodeId
from overlay.messages import MemberUpdates, Message, MsgId

# --------------------------------------------------------------------------
# Timers


@dataclass(frozen=True, slots=True)
class Timer:
    """A named timer. `kind` is an enum member of the layer that owns it (the
    node routes a fired timer by the enum's type); `key` tells instances
    apart, for example a message id, or (member, incarnation) so that a timer
    from an older generation is recognised as stale."""

    kind: enum.Enum
    key: Hashable = None


# --------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, slots=True)
class Received:
    """A decoded message from `sender`; `datagram` when it came as one (a
    datagram's sender is only what it claims: the protocol accepts
    HyParView and Plumtree messages only over a stream)."""

    sender: NodeId
    msg: Message
    datagram: bool = False


@dataclass(frozen=True, slots=True)
class TimerFired:
    timer: Timer


@dataclass(frozen=True, slots=True)
class ConnectionUp:
    """A stream to `peer` is open (we dialled it, or it dialled us)."""

    peer: NodeId


@dataclass(frozen=True, slots=True)
class ConnectionDown:
    """An open stream to `peer` broke or was closed by the peer."""

    peer: NodeId


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """A stream to `peer` could not be opened (refused, timed out, unreachable)."""

    peer: NodeId


@dataclass(frozen=True, slots=True)
class PeerRefused:
    """`peer`'s host answered that nothing listens at `peer`'s address: a
    TCP reset to our dial, or an ICMP port-unreachable for our datagram.
    Evidence that its process is gone, where a timeout only says that no
    answer came (host down, network cut, process paused)."""

    peer: NodeId


@dataclass(frozen=True, slots=True)
class JoinCluster:
    """Application request: join through these contacts. A contact whose name
    is not known yet is given as `seed_id(host, port)`."""

    seeds: tuple[NodeId, ...]


@dataclass(frozen=True, slots=True)
class Publish:
    """Application request: broadcast `payload` on `topic`."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Leave:
    """Application request: leave the cluster gracefully."""


SEED_NAME = "<seed>"


def seed_id(host: str, port: int) -> NodeId:
    """A contact known only by its address. Its real name arrives with its
    first reply; drivers route by `host` and `port` alone."""
    return NodeId(SEED_NAME, host, port)


def is_seed(peer: NodeId) -> bool:
    return peer.name == SEED_NAME


# --------------------------------------------------------------------------
# Outputs


@dataclass(frozen=True, slots=True)
class Send:
    to: NodeId
    msg: Message
    reliable: bool = True


@dataclass(frozen=True, slots=True)
class CloseConnection:
    peer: NodeId


@dataclass(frozen=True, slots=True)
class SetTimer:
    timer: Timer
    delay: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: Timer


class UpReason(enum.Enum):
    JOINED = "joined"  # the peer joined through us, or we joined through it
    REPLACED = "replaced"  # promoted from the passive view to fill a gap


class DownReason(enum.Enum):
    PEER_FAILED = "peer_failed"  # connection lost, or failure detector said so
    PEER_LEFT = "peer_left"  # the peer said it is leaving the cluster
    SHUFFLED_OUT = "shuffled_out"  # moved to the passive view to make room
    LEAVING = "leaving"  # we are leaving


@dataclass(frozen=True, slots=True)
class NeighborUp:
    peer: NodeId
    reason: UpReason


@dataclass(frozen=True, slots=True)
class NeighborDown:
    peer: NodeId
    reason: DownReason


class MemberStatus(enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    FAILED = "failed"
    LEFT = "left"


@dataclass(frozen=True, slots=True)
class MemberChanged:
    """The member list changed: `member` is now `status` at `incarnation`."""

    member: NodeId
    status: MemberStatus
    incarnation: int
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Deliver:
    """A broadcast for the local subscribers of `topic`. `origin` and `seq`
    repeat `id.origin` and `id.seq` (a subscriber sees gaps in `seq`; a
    restarted origin starts a new `id.epoch` at seq 1). `hops` is 0 on the
    node that published it: every node delivers, the publisher included."""

    topic: str
    origin: str
    seq: int
    hops: int
    payload: bytes
    id: MsgId


@dataclass(frozen=True, slots=True)
class PublishRejected:
    """A `Publish` input that was refused (payload too large, bad topic, node
    left) and sent nowhere. `Node.publish()` raises `PublishError` instead."""

    topic: str
    reason: str


@dataclass(frozen=True, slots=True)
class NameConflict:
    """A node claims `name`, which a live member (`holder`) already holds at
    another address: the claim is refused (the member list never lists a
    name twice while its holder lives). When `claimant` is this node, we
    are the newcomer: the driver should stop and say so."""

    name: str
    holder: NodeId
    claimant: NodeId


# Outputs one layer gives the node, which acts on them (never reach a driver).


@dataclass(frozen=True, slots=True)
class Announce:
    """From SWIM: broadcast these member changes over the tree (the node
    publishes them on the overlay's own members topic)."""

    updates: MemberUpdates


@dataclass(frozen=True, slots=True)
class Reappeared:
    """From SWIM: `peer`, held failed, answered our reconnect push-pull
    alive: the network between us is back (the node may bridge the two
    overlays with a JOIN)."""

    peer: NodeId


# Outputs that tell the driver what to do.


@dataclass(frozen=True, slots=True)
class LeaveComplete:
    """After `Leave`: our goodbye has reached the cluster (or there is no
    live member left to tell). The driver closes its connections and stops."""


@dataclass(frozen=True, slots=True)
class Isolated:
    """The active view became empty (`isolated`) or has a neighbour again.
    While isolated, a driver that found its seeds by name resolves them again
    and gives them to the node (`JoinCluster`)."""

    isolated: bool


# Outputs of the query layer (overlay/queries.py), to the driver.


@dataclass(frozen=True, slots=True)
class QueryAsked:
    """A query for this member's application: answer with
    `Node.respond(origin, id, payload)` before `deadline` (driver time)."""

    origin: NodeId
    id: int
    name: str
    payload: bytes
    deadline: float


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    """At the origin: `responder` acked (`ack`) or answered query `id`."""

    id: int
    responder: NodeId
    ack: bool
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class QueryDone:
    """At the origin: query `id`'s time is up; nothing more is taken."""

    id: int
    acks: int
    responses: int


Output = (
    Send
    | CloseConnection
    | SetTimer
    | CancelTimer
    | NeighborUp
    | NeighborDown
    | MemberChanged
    | Deliver
    | PublishRejected
    | NameConflict
    | Announce
    | Reappeared
    | LeaveComplete
    | Isolated
    | QueryAsked
    | QueryAnswer
    | QueryDone
)


@dataclass(frozen=True, slots=True)
class SetTags:
    """Application request: this member's metadata is now `tags`."""

    tags: Mapping[str, str]


# Inputs the node gives one layer about another's facts (never from a driver).


@dataclass(frozen=True, slots=True)
class PeerFailed:
    """To HyParView: the failure detector declared `peer` failed, or it
    left: drop it from both views."""

    peer: NodeId


@dataclass(frozen=True, slots=True)
class ProbeNow:
    """To SWIM: a link to `peer` broke or could not be opened: probe it out
    of turn."""

    peer: NodeId


@dataclass(frozen=True, slots=True)
class OfferPassive:
    """To HyParView: members known alive, for the free slots of its
    passive view."""

    peers: tuple[NodeId, ...]


@dataclass(frozen=True, slots=True)
class StrayMessage:
    """To HyParView: a message meant for a neighbour came from `peer`, which
    is not one: tell it the link is gone."""

    peer: NodeId


@dataclass(frozen=True, slots=True)
class Announced:
    """To SWIM: member changes that `origin` announced, delivered over the
    broadcast tree (the node checked the inner sender is the origin)."""

    origin: NodeId
    updates: MemberUpdates


Input = (
    Received
    | TimerFired
    | ConnectionUp
    | ConnectionDown
    | ConnectFailed
    | PeerRefused
    | JoinCluster
    | Publish
    | Leave
    | SetTags
    | PeerFailed
    | ProbeNow
    | OfferPassive
    | StrayMessage
    | Announced
    | NeighborUp
    | NeighborDown
)
