"""Plumtree's anti-entropy (overlay/anti_entropy.py): digests, IWANT, the
shuffled rounds and the link repair, one node at a time."""

from __future__ import annotations

from overlay.anti_entropy import covered
from overlay.io import Received, Send, SetTimer
from overlay.messages import Digest, DigestEntry, Gossip, Graft, IWant, MsgId, TreeBit
from overlay.plumtree import PeerSets
from tests.plumtree_helpers import (
    AE,
    FLUSH,
    ME,
    A,
    B,
    C,
    deliver,
    down,
    fire,
    make,
    oid,
    rx,
    up,
    with_peers,
)


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
    assert covered((1, 3), (1, 3))
    assert covered((1, 3, 7, 7), (5, 9, 0, 4))  # theirs unsorted
    assert not covered((1, 3, 7, 7), (1, 3))
    assert not covered((1, 3), (2, 9))
    assert not covered((1, 3), None)
    assert not covered((1, 3), (1, 3, 5))  # malformed: odd length


def test_tree_only_topics_stay_out_of_anti_entropy() -> None:
    """They go over the tree and answer GRAFTs, but are never offered in a
    digest nor served to an IWANT (SWIM's announcements: stale after a
    partition, and SWIM has an anti-entropy of its own)."""
    x = with_peers(make(A, seed=1, tree_only=frozenset({"$members"})), B)
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
    assert up(pt, A, 5.0) == [SetTimer(FLUSH, 0.2)]
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
    down(x, C, 70.0)
    rest = [o.to for o in fire(x, AE, 80.0) + fire(x, AE, 90.0) if isinstance(o, Send)]
    assert C not in rest and set(rest) <= {B, ME}


def test_a_digest_repairs_an_origins_tree_eager_at_one_end_only() -> None:
    """The same per origin: the digest says how its sender holds the link
    in each origin's tree it holds."""
    x = with_peers(make(A, seed=1, origin_trees=1024), B, C)
    rx(x, B, Gossip(MsgId("o", 1, 1), "t", 2, 0.0, b"x"), 1.0)
    rx(x, C, Gossip(MsgId("o", 1, 1), "t", 2, 0.0, b"x"), 1.0)  # C pruned in o's tree
    assert x.peers("o") == PeerSets((B,), (C,))
    # Our digests say so.
    out = fire(x, AE, 5.0)
    assert [(o.to, o.msg.trees) for o in out if isinstance(o, Send)] in (
        [(B, (TreeBit("o", True),))],
        [(C, (TreeBit("o", False),))],
    )
    # B holds us lazy in o's tree: graft in o's tree.
    out = rx(x, B, Digest((), False, True, (TreeBit("o", False),), True), 6.0)
    assert out == [Send(B, Graft(None, "o"))]
    # C, with a complete empty list, holds us in its shared tree for o:
    # eager, and we hold it lazy in o's tree: eager at both ends.
    out = rx(x, C, Digest((), False, True, (), True), 6.0)
    assert Send(C, Graft(None, "o")) in out
    assert x.peers("o") == PeerSets((B, C), ())
    assert x.stats()["link_repaired"] == 2
    # An incomplete list tells nothing of the origins it leaves out.
    x.trees.make_lazy(C, "o")
    assert rx(x, C, Digest((), False, True, (), False), 7.0) == []
