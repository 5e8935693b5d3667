"""Plumtree's ordered delivery (overlay/ordering.py), one node at a time."""

from __future__ import annotations

from overlay.io import CancelTimer, SetTimer, Timer
from overlay.messages import Gossip
from overlay.plumtree import PtTimer
from tests.plumtree_helpers import A, deliver, fire, make, oid, rx, with_peers


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
