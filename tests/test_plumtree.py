"""Plumtree's tree, one node at a time: literal `now`, exact outputs, one
test per rule (its anti-entropy: test_anti_entropy.py; its ordered delivery:
test_ordering.py)."""

from __future__ import annotations

import random

import pytest

from overlay.config import Config
from overlay.io import (
    CancelTimer,
    Deliver,
    DownReason,
    Leave,
    NeighborDown,
    NeighborUp,
    Publish,
    PublishRejected,
    Received,
    Send,
    SetTimer,
    TimerFired,
    UpReason,
)
from overlay.messages import (
    Announcement,
    Disconnect,
    Gossip,
    Graft,
    IHave,
    MsgId,
    Neighbor,
    Prune,
)
from overlay.node import Node
from overlay.plumtree import PeerSets, PlumtreeState, PublishError
from tests.plumtree_helpers import (
    AE,
    FAR,
    FLUSH,
    ME,
    A,
    B,
    C,
    deliver,
    down,
    fire,
    graft_timer,
    make,
    oid,
    rx,
    up,
    with_peers,
)

# ---------------------------------------------------------------- eager push


def test_publish_delivers_locally_and_pushes_to_eager_peers() -> None:
    pt = with_peers(make(), A, B)
    out = pt.publish("news", b"hello", 1.0)
    mid = MsgId("me", pt.epoch, 1)
    g = Gossip(mid, "news", 1, 0.0, b"hello")
    assert out == [deliver(mid, 0, b"hello", "news"), Send(A, g), Send(B, g)]
    assert pt.stats()["published"] == 1
    # The next one has the next seq in the same epoch.
    assert pt.publish("news", b"again", 2.0)[0] == deliver(
        MsgId("me", pt.epoch, 2), 0, b"again", "news"
    )


def test_first_copy_is_delivered_and_forwarded_not_back_nor_to_origin() -> None:
    pt = with_peers(make(), A, B, FAR)
    mid = oid(1)
    out = rx(pt, A, Gossip(mid, "t", 3, 0.25, b"x"), 5.0)
    # Delivered with the hops it came with; pushed on with hops + 1 and the
    # same age (held for no time); not back to A, not to the origin FAR.
    assert out == [deliver(mid, 3, b"x"), Send(B, Gossip(mid, "t", 4, 0.25, b"x"))]


def test_new_copy_from_lazy_peer_makes_it_eager() -> None:
    pt = with_peers(make(), A, B, lazy=(A,))
    assert pt.peers().lazy == (A,)
    rx(pt, A, Gossip(oid(1), "t", 1, 0.0, b"x"), 1.0)
    assert pt.peers().eager == (B, A)
    assert pt.peers().lazy == ()


# ------------------------------------------------------------- IHAVE batching


def test_ihave_announcements_are_batched_per_flush() -> None:
    pt = with_peers(make(), A, B, C, lazy=(B, C))
    m1, m2 = oid(1), oid(2)
    out1 = rx(pt, A, Gossip(m1, "t", 2, 0.0, b"1"), 1.0)
    assert out1 == [deliver(m1, 2, b"1"), SetTimer(FLUSH, 0.2)]
    out2 = rx(pt, A, Gossip(m2, "t", 2, 0.0, b"2"), 1.1)
    assert out2 == [deliver(m2, 2, b"2")]  # the flush timer is already set
    batch = IHave((Announcement(m1, 3), Announcement(m2, 3)))
    assert fire(pt, FLUSH, 1.2) == [Send(B, batch), Send(C, batch)]
    assert fire(pt, FLUSH, 1.4) == []  # nothing queued any more
    assert pt.stats()["ihave_sent"] == 4
    # The receiving end counts announcements, not IHAVE messages.
    other = with_peers(make(), A, B, lazy=(B,))
    rx(other, B, batch, 1.3)
    assert other.stats()["ihave_received"] == 2


def test_ihave_queue_is_bounded_and_counts_drops() -> None:
    pt = with_peers(make(ihave_queue_max=2), A, B, lazy=(B,))
    for seq in (1, 2, 3):
        rx(pt, A, Gossip(oid(seq), "t", 1, 0.0, b""), 1.0)
    assert fire(pt, FLUSH, 1.2) == [
        Send(B, IHave((Announcement(oid(2), 2), Announcement(oid(3), 2))))
    ]
    assert pt.stats()["ihave_dropped"] == 1


def test_neighbor_down_drops_queued_announcements() -> None:
    pt = with_peers(make(), A, B, lazy=(B,))
    rx(pt, A, Gossip(oid(1), "t", 1, 0.0, b""), 1.0)
    down(pt, B, 1.1)
    assert fire(pt, FLUSH, 1.2) == []


# -------------------------------------------------------- PRUNE on duplicate


def test_duplicate_prunes_the_sender() -> None:
    pt = with_peers(make(), A, B)
    mid = oid(1)
    rx(pt, A, Gossip(mid, "t", 2, 0.0, b"x"), 1.0)
    out = rx(pt, B, Gossip(mid, "t", 3, 0.0, b"x"), 1.1)
    assert out == [Send(B, Prune())]
    assert pt.peers() == type(pt.peers())((A,), (B,))
    assert pt.stats()["duplicates"] == 1


def test_prune_received_makes_the_link_lazy() -> None:
    pt = with_peers(make(), A, B)
    assert rx(pt, A, Prune(), 1.0) == []
    assert pt.peers().eager == (B,)
    assert pt.peers().lazy == (A,)
    out = pt.publish("t", b"x", 2.0)
    mid = MsgId("me", pt.epoch, 1)
    assert out == [
        deliver(mid, 0, b"x"),
        Send(B, Gossip(mid, "t", 1, 0.0, b"x")),
        SetTimer(FLUSH, 0.2),
    ]


def test_repair_copies_change_no_peer_set() -> None:
    pt = with_peers(make(), A, B, lazy=(A,))
    mid = oid(1)
    out = rx(pt, A, Gossip(mid, "t", 2, 1.0, b"x", repair=True), 1.0)
    assert out == [deliver(mid, 2, b"x"), Send(B, Gossip(mid, "t", 3, 1.0, b"x"))]
    assert pt.peers().lazy == (A,)  # not made eager
    assert rx(pt, B, Gossip(mid, "t", 5, 1.0, b"x", repair=True), 1.1) == []  # no PRUNE
    assert pt.peers().eager == (B,)


# ------------------------------------------------------------- GRAFT timers


def test_graft_timer_1_then_timer_2_then_give_up() -> None:
    pt = with_peers(make(), A, B, C, lazy=(A, B))
    mid = oid(1)
    assert rx(pt, A, IHave((Announcement(mid, 2),)), 1.0) == [SetTimer(graft_timer(mid), 0.5)]
    assert rx(pt, B, IHave((Announcement(mid, 3),)), 1.1) == []  # one timer per id
    # Timer 1 expires: GRAFT the first announcer, which becomes eager.
    assert fire(pt, graft_timer(mid), 1.5) == [
        Send(A, Graft(mid)),
        SetTimer(graft_timer(mid), 0.25),
    ]
    assert A in pt.eager
    # Timer 2 expires: the next announcer.
    assert fire(pt, graft_timer(mid), 1.75) == [
        Send(B, Graft(mid)),
        SetTimer(graft_timer(mid), 0.25),
    ]
    # Nobody left to ask: give up (anti-entropy may still bring it).
    assert fire(pt, graft_timer(mid), 2.0) == []
    assert mid not in pt.missing
    assert pt.stats()["graft_gave_up"] == 1


def test_payload_arriving_cancels_the_graft_timer() -> None:
    pt = with_peers(make(), A, B, lazy=(A,))
    mid = oid(1)
    rx(pt, A, IHave((Announcement(mid, 2),)), 1.0)
    out = rx(pt, B, Gossip(mid, "t", 2, 0.0, b"x"), 1.2)
    # Delivered; not announced back to A, which announced it to us.
    assert out == [CancelTimer(graft_timer(mid)), deliver(mid, 2, b"x")]
    assert fire(pt, graft_timer(mid), 1.5) == []  # a stale firing does nothing


def test_announcer_that_goes_down_is_not_grafted() -> None:
    pt = with_peers(make(), A, B, C, lazy=(A, B))
    mid = oid(1)
    rx(pt, A, IHave((Announcement(mid, 2),)), 1.0)
    rx(pt, B, IHave((Announcement(mid, 2),)), 1.0)
    down(pt, A, 1.2)
    assert fire(pt, graft_timer(mid), 1.5) == [
        Send(B, Graft(mid)),
        SetTimer(graft_timer(mid), 0.25),
    ]


def test_graft_is_answered_from_the_cache() -> None:
    pt = with_peers(make(), A, B, lazy=(B,))
    mid = oid(1)
    rx(pt, A, Gossip(mid, "t", 2, 0.5, b"x"), 10.0)
    # B grafts 3 s later: eager again, and gets the payload, 3 s older.
    assert rx(pt, B, Graft(mid), 13.0) == [Send(B, Gossip(mid, "t", 3, 3.5, b"x"))]
    assert B in pt.eager
    assert rx(pt, B, Graft(oid(99)), 13.0) == []  # not held: nothing to send
    assert pt.stats()["graft_miss"] == 1


def test_ihave_from_a_non_neighbor_is_ignored() -> None:
    pt = with_peers(make(), A)
    assert rx(pt, C, IHave((Announcement(oid(1), 1),)), 1.0) == []
    assert pt.missing == {}
    assert pt.stats()["not_neighbor"] == 1


# --------------------------------------------------------- tree optimisation


def test_optimisation_when_payload_comes_after_a_shorter_announcement() -> None:
    # Paper sec. 3.8: IHAVE from L at 1 hop, then the payload from E at 9 hops.
    pt = with_peers(make(), A, B, lazy=(B,))
    mid = oid(1)
    rx(pt, B, IHave((Announcement(mid, 1),)), 1.0)
    out = rx(pt, A, Gossip(mid, "t", 9, 0.0, b"x"), 1.1)
    assert out == [
        CancelTimer(graft_timer(mid)),
        deliver(mid, 9, b"x"),
        Send(B, Graft(None)),
        Send(A, Prune()),
    ]
    assert pt.peers().eager == (B,)
    assert pt.peers().lazy == (A,)


def test_optimisation_when_announcement_comes_after_the_payload() -> None:
    pt = with_peers(make(), A, B, C, lazy=(B,))
    mid = oid(1)
    rx(pt, A, Gossip(mid, "t", 10, 0.0, b"x"), 1.0)
    # 7 hops shorter (the threshold): swap.
    assert rx(pt, B, IHave((Announcement(mid, 3),)), 1.3) == [
        Send(B, Graft(None)),
        Send(A, Prune()),
    ]
    assert pt.peers().eager == (C, B)
    assert pt.stats()["optimized"] == 1


def test_no_optimisation_below_the_threshold() -> None:
    pt = with_peers(make(), A, B, lazy=(B,))
    mid = oid(1)
    rx(pt, A, Gossip(mid, "t", 10, 0.0, b"x"), 1.0)
    assert rx(pt, B, IHave((Announcement(mid, 4),)), 1.3) == []  # only 6 shorter
    assert pt.peers().eager == (A,)


# ------------------------------------------------------- bounds and expiry


def test_cache_evicts_oldest_beyond_its_count_bound() -> None:
    pt = with_peers(make(cache_max_messages=2), A)
    ids = [oid(s) for s in (1, 2, 3)]
    for mid in ids:
        rx(pt, A, Gossip(mid, "t", 1, 0.0, b"x"), 1.0)
    assert rx(pt, A, Graft(ids[0]), 2.0) == []
    assert rx(pt, A, Graft(ids[2]), 2.0) == [Send(A, Gossip(ids[2], "t", 2, 1.0, b"x"))]
    assert pt.stats()["cache_evicted"] == 1


def test_cache_evicts_beyond_its_byte_bound() -> None:
    pt = with_peers(make(cache_max_bytes=10), A)
    rx(pt, A, Gossip(oid(1), "t", 1, 0.0, b"123456"), 1.0)
    rx(pt, A, Gossip(oid(2), "t", 1, 0.0, b"123456"), 1.0)
    assert len(pt.cache) == 1
    assert pt.cache.bytes == 6
    assert pt.stats()["cache_evicted"] == 1


def test_cache_serves_a_payload_only_while_younger_than_retention() -> None:
    pt = with_peers(make(), A, B)
    mid = oid(1)
    rx(pt, A, Gossip(mid, "t", 1, 20.0, b"x"), 100.0)  # 20 s old on arrival
    assert rx(pt, B, Graft(mid), 139.0) == [Send(B, Gossip(mid, "t", 2, 59.0, b"x"))]
    assert rx(pt, B, Graft(mid), 140.0) == []  # 60 s old: retention passed
    assert mid not in pt.cache  # and gone from memory
    assert mid in pt.seen  # the id is remembered longer


def test_seen_ids_expire_by_time() -> None:
    pt = with_peers(make(), A)
    mid = oid(1)
    rx(pt, A, Gossip(mid, "t", 1, 0.0, b"x"), 10.0)
    pt.handle(TimerFired(AE), 99.9)
    assert mid in pt.seen
    pt.handle(TimerFired(AE), 100.0)  # seen_ttl (90 s) later
    assert mid not in pt.seen
    assert pt.stats()["seen_evicted"] == 0  # expiry by time is not an early eviction


def test_seen_ids_are_bounded_by_count() -> None:
    pt = with_peers(make(seen_max_ids=2), A)
    for seq in (1, 2, 3):
        rx(pt, A, Gossip(oid(seq), "t", 1, 0.0, b"x"), 1.0)
    assert oid(1) not in pt.seen
    assert oid(3) in pt.seen
    assert pt.stats()["seen_evicted"] == 1


def test_copy_older_than_retention_is_refused() -> None:
    pt = with_peers(make(), A, B)
    assert rx(pt, A, Gossip(oid(1), "t", 1, 60.0, b"x"), 1.0) == []
    assert oid(1) not in pt.seen
    assert pt.stats()["expired"] == 1
    assert rx(pt, A, Gossip(oid(2), "t", 1, float("nan"), b"x"), 1.0) == []
    assert pt.stats()["invalid"] == 1


# ------------------------------------------------------------- publish errors


def test_payload_over_the_limit_is_refused_before_anything_is_sent() -> None:
    pt = with_peers(make(max_payload=10), A)
    with pytest.raises(PublishError, match="11 bytes, the limit is 10"):
        pt.publish("t", b"x" * 11, 1.0)
    assert pt.seq == 0
    assert pt.handle(Publish("t", b"x" * 11), 1.0) == [
        PublishRejected("t", "payload is 11 bytes, the limit is 10")
    ]
    assert pt.stats()["publish_rejected"] == 1
    assert len(pt.publish("t", b"x" * 10, 1.0)) == 2  # at the limit: fine


@pytest.mark.parametrize("topic", ["", "x" * 257])
def test_bad_topic_is_refused(topic: str) -> None:
    with pytest.raises(PublishError, match="topic"):
        make().publish(topic, b"", 0.0)


def test_node_publish_raises_and_node_handle_reports() -> None:
    node = Node(ME, Config().replace(**{"plumtree.max_payload": 4}), random.Random(0))
    node.start(0.0)
    with pytest.raises(PublishError):
        node.publish("t", b"12345", 1.0)
    assert node.handle(Publish("t", b"12345"), 1.0) == [
        PublishRejected("t", "payload is 5 bytes, the limit is 4")
    ]
    out = node.handle(Publish("t", b"1234"), 1.0)
    assert [type(o) for o in out] == [Deliver]


# ------------------------------------------ local inputs: up, down, leave


def test_neighbor_up_starts_the_peer_eager() -> None:
    pt = make()
    assert up(pt, A, 1.0) == [SetTimer(FLUSH, 0.2)]  # its digest goes at the flush
    assert up(pt, B, 1.0) == []  # the flush is already set
    assert up(pt, ME, 1.0) == []  # never itself
    assert pt.peers() == PeerSets((A, B), ())
    # A peer that comes up again (a new link after a lazy one) starts eager.
    rx(pt, A, Prune(), 1.1)
    assert pt.peers() == PeerSets((B,), (A,))
    up(pt, A, 1.2)
    assert pt.peers() == PeerSets((B, A), ())


def test_neighbor_down_forgets_the_peer_everywhere() -> None:
    """Its peer set, its queued announcements, the digest due to it, and its
    place among the announcers of a missing id (paper sec. 3.7)."""
    pt = with_peers(make(), A, B, C, lazy=(B,))
    mid = oid(1)
    rx(pt, B, IHave((Announcement(mid, 2),)), 1.0)
    rx(pt, A, Gossip(oid(2), "t", 1, 0.0, b""), 1.0)  # queues an IHAVE for B
    up(pt, B, 1.0)  # B again: a digest is due to it
    rx(pt, A, Prune(), 1.0)
    assert down(pt, B, 1.1) == []
    assert down(pt, A, 1.1) == []
    assert pt.peers() == PeerSets((C,), ())
    assert pt.missing == {mid: []}
    assert pt.anti_entropy.new_peers == {}
    assert fire(pt, FLUSH, 1.2) == []


def test_leave_pushes_what_it_meant_to_announce_then_stops() -> None:
    """A leaving node will answer no GRAFT: lazy peers get the payload
    itself; then its timers stop."""
    pt = with_peers(make(), A, B, lazy=(B,))
    out = pt.publish("bye", b"left", 1.0)
    mid = MsgId("me", pt.epoch, 1)
    assert Send(A, Gossip(mid, "bye", 1, 0.0, b"left")) in out
    assert SetTimer(FLUSH, 0.2) in out  # B would have heard of it in an IHAVE
    assert pt.handle(Leave(), 1.0) == [
        Send(B, Gossip(mid, "bye", 1, 0.0, b"left")),
        CancelTimer(AE),
        CancelTimer(FLUSH),
    ]
    assert pt.state is PlumtreeState.LEFT
    assert pt.handle(Leave(), 1.0) == []  # once
    assert fire(pt, FLUSH, 1.2) == []  # nothing left to announce
    assert fire(pt, AE, 10.0) == []  # no more rounds


def test_publish_after_leave_is_refused() -> None:
    pt = with_peers(make(), A)
    assert pt.handle(Leave(), 1.0) == [CancelTimer(AE)]
    with pytest.raises(PublishError, match="left"):
        pt.check_publish("t", b"")
    with pytest.raises(PublishError, match="left"):
        pt.publish("t", b"", 1.0)
    assert pt.handle(Publish("t", b""), 1.0) == [
        PublishRejected("t", "this node has left the cluster")
    ]


def test_after_leave_no_neighbour_comes_up_and_those_going_down_are_dropped() -> None:
    """HyParView's `NeighborDown`s follow the node's `Leave`: they still
    empty the peer sets."""
    pt = with_peers(make(), A, B, lazy=(B,))
    pt.handle(Leave(), 1.0)
    assert up(pt, C, 1.0) == []
    assert down(pt, A, 1.0) == []
    assert down(pt, B, 1.0) == []
    assert pt.peers() == PeerSets((), ())


# ------------------------------------------------------------- identities


def test_a_restarted_node_draws_a_new_epoch() -> None:
    first = make(seed=1)
    second = make(seed=2)  # same name, new process: a new rng
    assert first.epoch != second.epoch
    assert first.publish("t", b"", 0.0)[0] != second.publish("t", b"", 0.0)[0]


def test_same_seed_same_outputs() -> None:
    def run() -> list[object]:
        pt = with_peers(make(seed=5), A, B, C, lazy=(C,))
        out: list[object] = []
        out += pt.start(0.0)
        out += pt.publish("t", b"x", 1.0)
        out += fire(pt, AE, 5.0)
        out += rx(pt, A, IHave((Announcement(oid(1), 1),)), 6.0)
        return out

    assert run() == run()


# ----------------------------------------------------- composed in the node


def test_node_feeds_neighbor_changes_and_checks_links() -> None:
    node = Node(ME, Config(), random.Random(0))
    node.start(0.0)
    out = node.handle(Received(A, Neighbor(high_priority=True, join=True)), 1.0)
    assert node.plumtree.peers().eager == (A,)
    # Plumtree's outputs come after HyParView's.
    assert out.index(NeighborUp(A, UpReason.JOINED)) < out.index(SetTimer(FLUSH, 0.2))
    # A Plumtree message from a non-neighbour: HyParView tells it the link is gone.
    out = node.handle(Received(B, Prune()), 2.0)
    assert out == [Send(B, Disconnect(alive=True))]
    # A Plumtree timer reaches Plumtree.
    assert node.handle(TimerFired(FLUSH), 2.0) == []
    # Leave: Plumtree stops before HyParView's goodbyes, whose NeighborDowns
    # still empty its peer sets.
    out = node.handle(Leave(), 3.0)
    assert out.index(CancelTimer(AE)) < out.index(NeighborDown(A, DownReason.LEAVING))
    assert node.plumtree.peers() == PeerSets((), ())


# ------------------------------------------------------ a tree per origin


def test_a_prune_changes_only_the_tree_of_its_origin() -> None:
    """Issue 14: one publisher's duplicates never reshape another's tree."""
    pt = with_peers(make(origin_trees=1024), A, B)
    o1, p1 = oid(1), MsgId("p", 3, 1)
    rx(pt, A, Gossip(o1, "t", 2, 0.0, b"x"), 1.0)
    rx(pt, A, Gossip(p1, "t", 2, 0.0, b"y"), 1.0)
    assert rx(pt, A, Prune("o"), 1.1) == []
    assert pt.peers("o") == PeerSets((B,), (A,))
    assert pt.peers("p") == PeerSets((A, B), ())
    # p's next message still goes to A at once; o's is announced to it.
    assert Send(A, Gossip(MsgId("p", 3, 2), "t", 3, 0.0, b"z")) in rx(
        pt, B, Gossip(MsgId("p", 3, 2), "t", 2, 0.0, b"z"), 1.2
    )
    out = rx(pt, B, Gossip(oid(2), "t", 2, 0.0, b"w"), 1.2)
    assert not any(isinstance(o, Send) and o.to == A for o in out)
    assert fire(pt, FLUSH, 1.4) == [Send(A, IHave((Announcement(oid(2), 3),)))]
    # Nor does it change the shared tree (origins without a tree of their own).
    assert pt.peers() == PeerSets((A, B), ())
    assert pt.stats()["trees"] == 2


def test_a_new_origins_tree_is_a_copy_and_its_second_message_floods() -> None:
    """The first origin's tree floods; the next origins' start as copies of
    the oldest tree (a one-shot sender pays no flood), and their second
    message floods (a publisher pays one, then rides its own tree)."""
    pt = with_peers(make(origin_trees=1024), A, B, C)
    out = rx(pt, A, Gossip(oid(1), "t", 2, 0.0, b"x"), 1.0)
    assert [o.to for o in out if isinstance(o, Send)] == [B, C]  # no tree yet: flood
    rx(pt, C, Gossip(oid(1), "t", 2, 0.0, b"x"), 1.1)  # duplicate: C lazy in o's tree
    assert pt.peers("o") == PeerSets((A, B), (C,))
    p1, p2 = MsgId("p", 1, 1), MsgId("p", 1, 2)
    out = rx(pt, A, Gossip(p1, "t", 2, 0.0, b"y"), 2.0)
    assert [o.to for o in out if isinstance(o, Send)] == [B]  # o's tree, copied
    assert pt.peers("p") == PeerSets((A, B), (C,))
    out = rx(pt, A, Gossip(p2, "t", 2, 0.0, b"z"), 3.0)
    assert [o.to for o in out if isinstance(o, Send)] == [B, C]  # its second: flood
    assert pt.stats()["trees_created"] == 2 and pt.stats()["trees_rebuilt"] == 1


def test_with_origin_tree_flood_every_new_tree_floods() -> None:
    pt = with_peers(make(origin_trees=1024, origin_tree_flood=True), A, B, C)
    rx(pt, A, Gossip(oid(1), "t", 2, 0.0, b"x"), 1.0)
    rx(pt, C, Gossip(oid(1), "t", 2, 0.0, b"x"), 1.1)
    out = rx(pt, A, Gossip(MsgId("p", 1, 1), "t", 2, 0.0, b"y"), 2.0)
    assert [o.to for o in out if isinstance(o, Send)] == [B, C]


def test_origin_trees_are_bounded_and_idle_ones_make_room() -> None:
    pt = with_peers(make(origin_trees=2), A, B)

    def heard(origin: str, now: float) -> None:
        rx(pt, A, Gossip(MsgId(origin, 1, int(now * 10)), "t", 2, 0.0, b"x"), now)

    heard("o", 1.0)
    heard("p", 2.0)
    heard("q", 3.0)  # no room, both in use: q shares the shared tree
    assert list(pt.trees.origins) == ["o", "p"]
    assert pt.stats()["trees_shared"] == 1
    assert pt.peers("q") == pt.peers()
    heard("p", 50.0)
    heard("q", 62.0)  # o idle for the retention window: evicted, q gets its own
    assert list(pt.trees.origins) == ["p", "q"]
    assert pt.stats()["trees_evicted"] == 1


def test_single_tree_mode_speaks_the_papers_messages() -> None:
    """`origin_trees = 0`: the paper's one tree, PRUNE and GRAFT name no origin."""
    pt = with_peers(make(origin_trees=0), A, B)
    rx(pt, A, Gossip(oid(1), "t", 2, 0.0, b"x"), 1.0)
    assert rx(pt, B, Gossip(oid(1), "t", 3, 0.0, b"x"), 1.1) == [Send(B, Prune())]
    # A PRUNE naming an origin changes the one tree.
    rx(pt, A, Prune("p"), 1.2)
    assert pt.peers() == PeerSets((), (B, A))
    assert pt.stats()["trees"] == 0


def test_a_copy_from_a_peer_held_lazy_grafts_it_back() -> None:
    """Our PRUNE crossed its push: the first copy makes it eager here, and
    a GRAFT makes us eager there, so the link is eager at both ends."""
    pt = with_peers(make(origin_trees=1024), A, B)
    rx(pt, A, Gossip(oid(1), "t", 2, 0.0, b"x"), 1.0)
    rx(pt, B, Gossip(oid(1), "t", 2, 0.0, b"x"), 1.0)  # duplicate: B pruned in o's tree
    out = rx(pt, B, Gossip(oid(2), "t", 2, 0.0, b"y"), 2.0)
    assert out[0] == Send(B, Graft(None, "o"))
    assert pt.peers("o").eager == (A, B)
    assert pt.stats()["link_graft_back"] == 1


def test_prunes_and_grafts_naming_made_up_origins_make_no_tree() -> None:
    """A neighbour cannot fill the table of trees with control messages:
    one naming an origin we hold no tree for changes the shared tree, the
    one we use for that origin."""
    pt = with_peers(make(origin_trees=8), A, B)
    for i in range(2000):
        rx(pt, A, Prune(f"ghost{i}"), 1.0)
        rx(pt, A, Graft(None, f"ghost{i}"), 1.0)
    assert pt.stats()["trees"] == 0
    rx(pt, A, Prune("ghost"), 1.0)
    assert pt.peers() == PeerSets((B,), (A,))
