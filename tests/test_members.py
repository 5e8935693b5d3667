"""The member list container (overlay/members.py)."""

from __future__ import annotations

import random

from overlay.ids import NodeId
from overlay.io import MemberStatus
from overlay.members import MemberEntry, MemberList, MemberSnapshot

ALIVE, SUSPECT, FAILED, LEFT = (
    MemberStatus.ALIVE,
    MemberStatus.SUSPECT,
    MemberStatus.FAILED,
    MemberStatus.LEFT,
)


def nid(i: int) -> NodeId:
    return NodeId(f"n{i}", f"10.0.0.{i}", 7946)


ME = nid(0)


def make(n: int, seed: int = 1) -> MemberList:
    ml = MemberList(ME, random.Random(seed))
    ml.add(MemberEntry(ME, 0, ALIVE, {}, 0.0))
    for i in range(1, n):
        ml.add(MemberEntry(nid(i), 0, ALIVE, {}, 0.0))
    return ml


def test_counts_and_live() -> None:
    ml = make(5)
    assert len(ml) == 5
    assert ml.live == 5
    m = ml.get(nid(1))
    assert m is not None
    ml.set_state(m, SUSPECT, 0, 1.0)
    assert ml.live == 5 and ml.count(SUSPECT) == 1
    ml.set_state(m, FAILED, 0, 2.0)
    assert ml.live == 4 and ml.count(FAILED) == 1 and ml.count(ALIVE) == 4
    assert m.since == 2.0


def test_set_state_same_status_keeps_since() -> None:
    ml = make(2)
    m = ml.get(nid(1))
    assert m is not None
    ml.set_state(m, ALIVE, 3, 9.0)
    assert m.incarnation == 3 and m.since == 0.0


def test_round_robin_visits_every_live_member_once_per_round() -> None:
    ml = make(20)
    for _ in range(3):
        seen = [ml.next_probe_target() for _ in range(19)]
        nodes = [m.node for m in seen if m is not None]
        assert sorted(nodes) == sorted(nid(i) for i in range(1, 20))


def test_round_robin_skips_dead_and_never_returns_me() -> None:
    ml = make(6)
    for i in (2, 4):
        m = ml.get(nid(i))
        assert m is not None
        ml.set_state(m, FAILED, 0, 1.0)
    targets = [ml.next_probe_target() for _ in range(9)]
    nodes = {m.node for m in targets if m is not None}
    assert nodes == {nid(1), nid(3), nid(5)}


def test_round_robin_empty() -> None:
    ml = make(1)
    assert ml.next_probe_target() is None


def test_new_member_is_probed_within_the_round() -> None:
    ml = make(10)
    ml.next_probe_target()
    ml.add(MemberEntry(nid(50), 0, ALIVE, {}, 0.0))
    # The new member sits somewhere in this round or the next: within 2 rounds.
    nodes = [m.node for m in (ml.next_probe_target() for _ in range(20)) if m is not None]
    assert nid(50) in nodes


def test_resurrected_member_reenters_probe_order() -> None:
    ml = make(3)
    m = ml.get(nid(1))
    assert m is not None
    ml.set_state(m, FAILED, 0, 1.0)
    for _ in range(4):  # rounds rebuilt without it
        ml.next_probe_target()
    ml.set_state(m, ALIVE, 1, 2.0)
    nodes = [t.node for t in (ml.next_probe_target() for _ in range(4)) if t is not None]
    assert nid(1) in nodes


def test_random_alive_excludes_and_is_distinct() -> None:
    for n in (5, 40, 300):
        ml = make(n, seed=n)
        for _ in range(20):
            picked = ml.random_alive(3, exclude=(nid(1),))
            assert len(picked) == min(3, n - 2)
            assert len(set(picked)) == len(picked)
            assert ME not in picked and nid(1) not in picked


def test_random_alive_only_alive() -> None:
    ml = make(100)
    for i in range(1, 100):
        if i % 10:
            m = ml.get(nid(i))
            assert m is not None
            ml.set_state(m, SUSPECT if i % 2 else FAILED, 0, 1.0)
    alive = {nid(i) for i in range(10, 100, 10)}
    for _ in range(30):
        for p in ml.random_alive(3):
            assert p in alive


def test_random_alive_is_reproducible() -> None:
    a, b = make(200, seed=7), make(200, seed=7)
    assert [a.random_alive(3) for _ in range(10)] == [b.random_alive(3) for _ in range(10)]


def test_reap_forgets_old_tombstones_in_order() -> None:
    ml = make(5)
    for i, t in ((1, 10.0), (2, 20.0), (3, 30.0)):
        m = ml.get(nid(i))
        assert m is not None
        ml.set_state(m, FAILED if i != 2 else LEFT, 0, t)
    assert ml.reap(100.0, after=100.0) == []
    assert ml.reap(120.0, after=100.0) == [nid(1), nid(2)]
    assert nid(1) not in ml and nid(3) in ml
    assert ml.count(FAILED) == 1 and ml.count(LEFT) == 0
    # A member that came back is no tombstone any more.
    m3 = ml.get(nid(3))
    assert m3 is not None
    ml.set_state(m3, ALIVE, 1, 40.0)
    assert ml.reap(1000.0, after=100.0) == []


def test_snapshot_is_immutable_and_sorted() -> None:
    ml = make(4)
    m = ml.get(nid(2))
    assert m is not None
    m.tags = {"role": "db"}
    snap = ml.snapshot()
    assert [i.node for i in snap] == sorted(nid(i) for i in range(4))
    info = snap[2]
    assert isinstance(info, MemberSnapshot)
    assert info.as_dict() == {
        "name": "n2",
        "addr": "10.0.0.2:7946",
        "status": "alive",
        "incarnation": 0,
        "tags": {"role": "db"},
    }
    assert info.name == "n2" and info.addr == "10.0.0.2:7946"
    try:
        info.tags["x"] = "y"  # type: ignore[index]
    except TypeError:
        pass
    else:
        raise AssertionError("tags must be read-only")
