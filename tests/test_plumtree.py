"""Plumtree, one node at a time: literal `now`, exact outputs, one test per rule."""

from __future__ import annotations

import random

import pytest

from overlay.config import Config, PlumtreeConfig
from overlay.ids import NodeId
from overlay.io import (
    CancelTimer,
    Deliver,
    NeighborUp,
    Publish,
    PublishRejected,
    Received,
    Send,
    SetTimer,
    Timer,
    TimerFired,
    UpReason,
)
from overlay.messages import (
    Announcement,
    Digest,
    DigestEntry,
    Disconnect,
    Gossip,
    Graft,
    IHave,
    IWant,
    MsgId,
    Neighbor,
    Prune,
)
from overlay.node import Node
from overlay.plumtree import Plumtree, PtTimer, PublishError, _covered

ME = NodeId("me", "10.0.0.1", 7946)
A = NodeId("a", "10.0.0.2", 7946)
B = NodeId("b", "10.0.0.3", 7946)
C = NodeId("c", "10.0.0.4", 7946)
FAR = NodeId("o", "10.0.0.9", 7946)  # an origin far away

FLUSH = Timer(PtTimer.FLUSH)
AE = Timer(PtTimer.ANTI_ENTROPY)


def graft_timer(mid: MsgId) -> Timer:
    return Timer(PtTimer.GRAFT, mid)


def make(me: NodeId = ME, *, seed: int = 0, **cfg: object) -> Plumtree:
    return Plumtree(me, PlumtreeConfig(**cfg), random.Random(seed))  # type: ignore[arg-type]


def with_peers(pt: Plumtree, *peers: NodeId, lazy: tuple[NodeId, ...] = ()) -> Plumtree:
    """Neighbours up (eager), then those in `lazy` pruned; outputs dropped."""
    for p in peers:
        pt.neighbor_up(p, 0.0)
    for p in lazy:
        pt.handle(Received(p, Prune()), 0.0)
    pt.new_peers.clear()  # their digests are a separate rule (see test_new_neighbor_digest)
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
    pt.neighbor_down(B, 1.1)
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
    pt.neighbor_down(A, 1.2)
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


# -------------------------------------------------------------- anti-entropy


def test_anti_entropy_fetches_what_a_neighbor_missed() -> None:
    x = with_peers(make(A, seed=1), B)
    y = with_peers(make(B, seed=2), A)
    for payload in (b"1", b"2", b"3"):
        x.publish("t", payload, 0.0)  # y never got them (say, partitioned)
    x.publish("t", b"young", 9.5)  # too young for a digest at 10.0: left to the tree
    out = fire(x, AE, 10.0)
    digest = Digest((DigestEntry("a", x.epoch, (1, 3)),), reply=True, eager=True)
    assert out[0] == Send(B, digest)
    assert isinstance(out[1], SetTimer)
    assert out[1].timer == AE
    # y asks for the three; it holds nothing x lacks, so it sends no digest back.
    ids = tuple(MsgId("a", x.epoch, s) for s in (1, 2, 3))
    assert rx(y, A, digest, 10.05) == [Send(A, IWant(ids))]
    # x answers with repair copies; y delivers them.
    answers = rx(x, B, IWant(ids), 10.1)
    assert answers == [
        Send(B, Gossip(mid, "t", 1, 10.1, p, repair=True))
        for mid, p in zip(ids, (b"1", b"2", b"3"), strict=True)
    ]
    delivered = []
    for s in answers:
        assert isinstance(s, Send)
        delivered += rx(y, A, s.msg, 10.15)
    assert delivered == [deliver(mid, 1, p) for mid, p in zip(ids, (b"1", b"2", b"3"), strict=True)]
    assert y.peers().eager == (A,)  # unchanged
    # Nothing left to fetch on the next round, and nothing to answer: the
    # two hold the same.
    assert rx(y, A, digest, 15.0) == []


def test_digest_answer_lists_only_what_the_asker_lacks() -> None:
    y = with_peers(make(B, seed=2), A)
    for seq in (1, 2, 3):
        rx(y, A, Gossip(MsgId("a", 9, seq), "t", 1, 0.0, b""), 0.0)
    rx(y, A, Gossip(MsgId("c", 4, 1), "t", 1, 0.0, b""), 0.0)
    y.publish("t", b"own", 0.0)
    asked = Digest(
        (DigestEntry("a", 9, (1, 5)), DigestEntry("c", 4, (2, 2))), reply=True, eager=True
    )  # covers a's 1-3 (within 1-5), not c's 1, not y's own
    out = rx(y, A, asked, 10.0)
    assert out[0] == Send(A, IWant((MsgId("a", 9, 4), MsgId("a", 9, 5), MsgId("c", 4, 2))))
    assert out[1] == Send(
        A,
        Digest(
            (DigestEntry("c", 4, (1, 1)), DigestEntry("b", y.epoch, (1, 1))),
            reply=False,
            eager=True,
        ),
    )


def test_covered_checks_every_range_and_distrusts_the_peer() -> None:
    assert _covered((1, 3), (1, 3))
    assert _covered((1, 3, 7, 7), (5, 9, 0, 4))  # theirs unsorted
    assert not _covered((1, 3, 7, 7), (1, 3))
    assert not _covered((1, 3), (2, 9))
    assert not _covered((1, 3), None)
    assert not _covered((1, 3), (1, 3, 5))  # malformed: odd length


def test_tree_only_topics_stay_out_of_anti_entropy() -> None:
    """They go over the tree and answer GRAFTs, but are never offered in a
    digest nor served to an IWANT (SWIM's announcements: stale after a
    partition, and SWIM has an anti-entropy of its own)."""
    x = with_peers(make(A, seed=1), B)
    x.tree_only = frozenset({"$members"})
    x.publish("t", b"1", 0.0)
    x.publish("$members", b"m", 0.0)
    x.publish("t", b"3", 0.0)
    out = fire(x, AE, 10.0)
    assert out[0] == Send(
        B, Digest((DigestEntry("a", x.epoch, (1, 1, 3, 3)),), reply=True, eager=True)
    )
    m = MsgId("a", x.epoch, 2)
    assert rx(x, B, IWant((m,)), 10.1) == []
    assert rx(x, B, Graft(m), 10.2) == [Send(B, Gossip(m, "$members", 1, 10.2, b"m"))]


def test_digest_compacts_sequences_to_ranges() -> None:
    pt = with_peers(make(), A)
    for seq in (1, 2, 3, 5, 7, 8):
        rx(pt, A, Gossip(oid(seq), "t", 1, 0.0, b""), 0.0)
    rx(pt, A, Gossip(MsgId("p", 1, 4), "t", 1, 0.0, b""), 0.0)
    assert pt.handle(Received(A, Digest((), reply=True, eager=True)), 10.0) == [
        Send(
            A,
            Digest(
                (DigestEntry("o", 7, (1, 3, 5, 5, 7, 8)), DigestEntry("p", 1, (4, 4))),
                reply=False,
                eager=True,
            ),
        )
    ]


def test_new_neighbor_gets_our_digest_at_the_next_flush() -> None:
    pt = make()
    pt.publish("t", b"x", 0.0)
    assert pt.neighbor_up(A, 5.0) == [SetTimer(FLUSH, 0.2)]
    assert fire(pt, FLUSH, 5.2) == [
        Send(A, Digest((DigestEntry("me", pt.epoch, (1, 1)),), False, True))
    ]


def test_digest_with_a_huge_range_is_bounded() -> None:
    pt = with_peers(make(cache_max_messages=100), A)
    out = rx(pt, A, Digest((DigestEntry("o", 1, (1, 2**62)),), reply=False, eager=True), 1.0)
    assert len(out) == 1
    assert isinstance(out[0], Send) and isinstance(out[0].msg, IWant)
    assert len(out[0].msg.ids) == 100  # the newest 100 seqs examined, and asked
    assert out[0].msg.ids[-1] == MsgId("o", 1, 2**62)
    assert pt.stats()["digest_truncated"] == 1


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


def test_publish_after_leave_is_refused() -> None:
    pt = with_peers(make(), A)
    assert pt.leave() == [CancelTimer(AE)]
    with pytest.raises(PublishError, match="left"):
        pt.publish("t", b"", 1.0)


def test_a_leaving_node_pushes_what_it_meant_to_announce() -> None:
    """It will answer no GRAFT: lazy peers get the payload itself."""
    pt = with_peers(make(), A, B, lazy=(B,))
    out = pt.publish("bye", b"left", 1.0)
    mid = MsgId("me", pt.epoch, 1)
    assert Send(A, Gossip(mid, "bye", 1, 0.0, b"left")) in out
    assert SetTimer(FLUSH, 0.2) in out  # B would have heard of it in an IHAVE
    assert pt.push_announced(1.0) == [Send(B, Gossip(mid, "bye", 1, 0.0, b"left"))]
    assert pt.push_announced(1.0) == []
    assert fire(pt, FLUSH, 1.2) == []  # nothing left to announce


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


# ---------------------------------------------------------- ordered delivery


def test_ordered_delivery_holds_back_until_the_gap_fills() -> None:
    pt = with_peers(make(ordered=True), A)
    release = Timer(PtTimer.RELEASE, ("o", 7))
    assert rx(pt, A, Gossip(oid(1), "t", 1, 0.0, b"1"), 1.0) == [deliver(oid(1), 1, b"1")]
    # seq 3 before 2: held, with a release due when it is 60 s old.
    assert rx(pt, A, Gossip(oid(3), "t", 1, 0.5, b"3"), 2.0) == [SetTimer(release, 59.5)]
    assert rx(pt, A, Gossip(oid(4), "t", 1, 0.0, b"4"), 2.1) == []
    # seq 2 fills the gap: 2, 3, 4 in order, and the release is cancelled.
    assert rx(pt, A, Gossip(oid(2), "t", 1, 0.0, b"2"), 3.0) == [
        deliver(oid(2), 1, b"2"),
        deliver(oid(3), 1, b"3"),
        deliver(oid(4), 1, b"4"),
        CancelTimer(release),
    ]
    assert pt.stats()["held"] == 2


def test_ordered_delivery_releases_when_the_gap_can_no_longer_fill() -> None:
    pt = with_peers(make(ordered=True), A)
    release = Timer(PtTimer.RELEASE, ("o", 7))
    rx(pt, A, Gossip(oid(1), "t", 1, 0.0, b"1"), 1.0)
    assert rx(pt, A, Gossip(oid(3), "t", 1, 0.0, b"3"), 2.0) == [SetTimer(release, 60.0)]
    assert rx(pt, A, Gossip(oid(5), "t", 1, 0.0, b"5"), 4.0) == []
    # 3 is now 60 s old: 2 cannot arrive any more. Deliver 3, re-arm for 5.
    assert fire(pt, release, 62.0) == [deliver(oid(3), 1, b"3"), SetTimer(release, 2.0)]
    assert fire(pt, release, 64.0) == [deliver(oid(5), 1, b"5")]
    assert pt.stats()["gaps_skipped"] == 2
    # 2 arriving now is too late for ordered delivery (its age is past retention anyway).
    assert rx(pt, A, Gossip(oid(4), "t", 1, 0.0, b"4"), 64.5) == []
    assert pt.stats()["ordered_late"] == 1


def test_ordered_delivery_bounds_what_it_holds() -> None:
    pt = with_peers(make(ordered=True, ordered_max_held=2), A)
    rx(pt, A, Gossip(oid(1), "t", 1, 0.0, b"1"), 1.0)
    rx(pt, A, Gossip(oid(3), "t", 1, 0.0, b"3"), 1.0)
    rx(pt, A, Gossip(oid(4), "t", 1, 0.0, b"4"), 1.0)
    out = rx(pt, A, Gossip(oid(6), "t", 1, 0.0, b"6"), 1.0)
    assert out[:2] == [deliver(oid(3), 1, b"3"), deliver(oid(4), 1, b"4")]
    assert pt.stats()["gaps_skipped"] == 1


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


def test_a_digest_repairs_a_link_eager_at_one_end_only() -> None:
    """PRUNE and a push can cross and leave a link eager at one end; the
    digest says how its sender holds us, and a disagreement ends eager at
    both ends."""
    x = with_peers(make(A, seed=1), B, C, lazy=(C,))
    # B holds us lazy while we push to it: ask it to push too.
    assert rx(x, B, Digest((), reply=False, eager=False), 1.0) == [Send(B, Graft(None))]
    assert B in x.eager
    # C holds us eager while we hold it lazy: take it eager, nothing to say.
    assert rx(x, C, Digest((), reply=False, eager=True), 1.0) == []
    assert C in x.eager and C not in x.lazy
    assert x.stats()["link_repaired"] == 2
    # Agreement changes nothing.
    assert rx(x, C, Digest((), reply=False, eager=True), 2.0) == []
    assert x.stats()["link_repaired"] == 2


def test_anti_entropy_visits_every_neighbour_once_a_round() -> None:
    x = with_peers(make(A, seed=3), B, C, ME, lazy=(ME,))
    targets = []
    for i in range(6):
        out = fire(x, AE, 10.0 * (i + 1))
        targets += [o.to for o in out if isinstance(o, Send)]
    assert sorted(targets[:3]) == sorted([B, C, ME]) == sorted(targets[3:])
    # A neighbour that left is skipped, not sent to.
    x.neighbor_down(C, 70.0)
    rest = [o.to for o in fire(x, AE, 80.0) + fire(x, AE, 90.0) if isinstance(o, Send)]
    assert C not in rest and set(rest) <= {B, ME}
