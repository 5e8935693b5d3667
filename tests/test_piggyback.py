"""The piggyback retransmit queue (overlay/piggyback.py)."""

from __future__ import annotations

from overlay.piggyback import PiggybackQueue


def test_each_update_is_sent_limit_times() -> None:
    q: PiggybackQueue[str, str] = PiggybackQueue()
    q.put("a", "A", 10)
    sent = [q.take(100, limit=3) for _ in range(5)]
    assert sent == [["A"], ["A"], ["A"], [], []]
    assert len(q) == 0


def test_least_sent_first_then_newest() -> None:
    q: PiggybackQueue[str, str] = PiggybackQueue()
    q.put("a", "A", 10)
    assert q.take(100, limit=5) == ["A"]
    q.put("b", "B", 10)
    q.put("c", "C", 10)
    assert q.take(30, limit=5) == ["C", "B"]  # never sent go first, newest first
    # All sent once now; among equals the most recently sent goes first.
    assert q.take(16, limit=5) == ["B"]
    assert q.take(16, limit=5) == ["C"]
    assert q.take(16, limit=5) == ["A"]
    assert q.transmits("a") == 2 and q.transmits("b") == 2


def test_budget_is_respected_and_small_items_fill_gaps() -> None:
    q: PiggybackQueue[str, str] = PiggybackQueue()
    q.put("small", "s", 20)
    q.put("big", "B", 90)
    assert q.take(100, limit=5) == ["B"]  # newest first; then 10 bytes left
    assert q.take(100, limit=5) == ["s"]  # least sent first; B no longer fits
    for _ in range(20):
        assert sum({"s": 20, "B": 90}[x] for x in q.take(100, limit=5)) <= 100
    assert len(q) == 0
    q2: PiggybackQueue[str, str] = PiggybackQueue()
    q2.put("small", "s", 20)
    q2.put("big", "B", 200)
    assert q2.take(100, limit=5) == ["s"]  # too big is skipped, not blocking


def test_newer_update_replaces_older_and_resets_count() -> None:
    q: PiggybackQueue[str, str] = PiggybackQueue()
    q.put("a", "A1", 10)
    q.take(100, limit=3)
    q.take(100, limit=3)
    q.put("a", "A2", 10)
    assert q.get("a") == "A2" and q.transmits("a") == 0
    assert [q.take(100, limit=3) for _ in range(4)] == [["A2"], ["A2"], ["A2"], []]


def test_lower_limit_drops_updates_sent_enough() -> None:
    q: PiggybackQueue[str, str] = PiggybackQueue()
    q.put("a", "A", 10)
    for _ in range(4):
        q.take(100, limit=8)
    assert q.transmits("a") == 4
    assert q.take(100, limit=3) == []
    assert "a" not in q


def test_exclude_and_drop() -> None:
    q: PiggybackQueue[str, str] = PiggybackQueue()
    q.put("a", "A", 10)
    q.put("b", "B", 10)
    assert q.take(100, limit=5, exclude="b") == ["A"]
    q.drop("b")
    q.drop("zzz")
    assert q.take(100, limit=5) == ["A"]
    q.clear()
    assert len(q) == 0 and q.take(100, limit=5) == []


def test_take_cost_is_bounded_by_misses() -> None:
    q: PiggybackQueue[int, int] = PiggybackQueue()
    for i in range(10_000):
        q.put(i, i, 500)
    q.put(-1, -1, 10)  # oldest-but-one... newest: fits
    got = q.take(100, limit=5)
    assert got == [-1]


def test_buckets_give_their_memory_back_once_emptied() -> None:
    # A burst of updates about 2,000 members passes through every bucket; a
    # dict emptied by deletes keeps its table (~74 KB here) unless cleared,
    # in each bucket of every node, for good.
    import sys

    q: PiggybackQueue[int, int] = PiggybackQueue()
    limit = 4
    for key in range(2000):
        q.put(key, key, 20)
    for key in range(0, 2000, 2):
        q.drop(key)  # replaced or forgotten, as members change
    for _ in range(1000):
        if not q.take(1000, limit):
            break
    assert len(q) == 0
    empty = sys.getsizeof({})
    assert all(sys.getsizeof(b) == empty for b in q._buckets)
