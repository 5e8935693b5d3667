"""One Plumtree node driven by hand, for the unit tests of the tree
(test_plumtree.py), its anti-entropy (test_anti_entropy.py) and its ordered
delivery (test_ordering.py): literal `now`, exact outputs."""

from __future__ import annotations

import random

from overlay.config import PlumtreeConfig
from overlay.ids import NodeId
from overlay.io import (
    Deliver,
    DownReason,
    NeighborDown,
    NeighborUp,
    Output,
    Received,
    Timer,
    TimerFired,
    UpReason,
)
from overlay.messages import MsgId, Prune
from overlay.plumtree import Plumtree, PtTimer

ME = NodeId("me", "10.0.0.1", 7946)
A = NodeId("a", "10.0.0.2", 7946)
B = NodeId("b", "10.0.0.3", 7946)
C = NodeId("c", "10.0.0.4", 7946)
FAR = NodeId("o", "10.0.0.9", 7946)  # an origin far away

FLUSH = Timer(PtTimer.FLUSH)
AE = Timer(PtTimer.ANTI_ENTROPY)


def graft_timer(mid: MsgId) -> Timer:
    return Timer(PtTimer.GRAFT, mid)


def make(
    me: NodeId = ME, *, seed: int = 0, tree_only: frozenset[str] = frozenset(), **cfg: object
) -> Plumtree:
    """A node with the paper's single tree unless `origin_trees` says
    otherwise: most rules are the paper's, and the per-origin trees have
    tests of their own."""
    cfg.setdefault("origin_trees", 0)
    return Plumtree(
        me,
        PlumtreeConfig(**cfg),  # type: ignore[arg-type]
        random.Random(seed),
        tree_only=tree_only,
    )


def up(pt: Plumtree, peer: NodeId, now: float) -> list[Output]:
    """HyParView's `NeighborUp`, as the node forwards it."""
    return pt.handle(NeighborUp(peer, UpReason.JOINED), now)


def down(pt: Plumtree, peer: NodeId, now: float) -> list[Output]:
    """HyParView's `NeighborDown`, as the node forwards it."""
    return pt.handle(NeighborDown(peer, DownReason.PEER_FAILED), now)


def with_peers(pt: Plumtree, *peers: NodeId, lazy: tuple[NodeId, ...] = ()) -> Plumtree:
    """Neighbours up (eager), then those in `lazy` pruned; outputs dropped."""
    for p in peers:
        up(pt, p, 0.0)
    for p in lazy:
        pt.handle(Received(p, Prune()), 0.0)
    # Their digests are a separate rule (test_anti_entropy.py).
    pt.anti_entropy.new_peers.clear()
    pt.handle(TimerFired(FLUSH), 0.0)  # the flush their arrival armed
    return pt


def rx(pt: Plumtree, sender: NodeId, msg: object, now: float) -> list[object]:
    return list(pt.handle(Received(sender, msg), now))  # type: ignore[arg-type]


def fire(pt: Plumtree, timer: Timer, now: float) -> list[object]:
    return list(pt.handle(TimerFired(timer), now))


def oid(seq: int, epoch: int = 7) -> MsgId:
    return MsgId("o", epoch, seq)


def deliver(mid: MsgId, hops: int, payload: bytes, topic: str = "t") -> Deliver:
    return Deliver(topic, mid.origin, mid.seq, hops, payload, mid)
