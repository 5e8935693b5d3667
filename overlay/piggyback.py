"""SWIM's piggyback queue: member updates waiting to ride on probe traffic.

(Named for what it does: "broadcast" is Plumtree's word in this project.)

Rules of this module: a container, no protocol decisions. The owner
(`overlay.dissemination`) puts an update in when its member list changes and
takes a byte-limited batch out for each PING, PING-REQ and ACK it sends, and
for each dissemination round.

Theory of operation
-------------------
SWIM spreads membership changes infection-style (Das et al. sec. 4.1): each
update rides on about ``lambda * log(N)`` outgoing protocol messages, after
which, with high probability, every member has it. memberlist calls this a
transmit-limited queue; we keep its rules:

- one update per key (the member it is about): a newer update replaces the
  older one, which then counts as sent in full;
- a batch takes the least-transmitted updates first and, among equals, the
  most recently queued or sent, until the byte budget is used;
- an update is dropped once sent ``limit`` times; the limit is given at each
  take because it grows with the cluster (``retransmit_mult *
  ceil(log10(N + 1))``), and updates already past a lower limit go too.

Updates live in buckets indexed by their transmit count (insertion-ordered
dicts), so a take costs O(batch), not O(queue): the queue can hold an update
about every member of a 10,000-node cluster after a partition heals.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

# A take stops when less than this is left of the budget (no update is this
# small), or after this many updates in a row did not fit.
_MIN_SIZE = 16
_MAX_MISSES = 32


class _Entry(Generic[T]):
    __slots__ = ("item", "size", "transmits")

    def __init__(self, item: T, size: int) -> None:
        self.item = item
        self.size = size
        self.transmits = 0


class PiggybackQueue(Generic[K, T]):
    def __init__(self) -> None:
        self._entries: dict[K, _Entry[T]] = {}
        self._buckets: list[dict[K, _Entry[T]]] = [{}]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K) -> T | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.item

    def transmits(self, key: K) -> int | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.transmits

    def put(self, key: K, item: T, size: int) -> None:
        """Queue `item` about `key`, replacing any older update about it."""
        self.drop(key)
        entry = _Entry(item, size)
        self._entries[key] = entry
        self._buckets[0][key] = entry

    def drop(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            bucket = self._buckets[entry.transmits]
            del bucket[key]
            if not bucket:
                bucket.clear()  # see `take`

    def clear(self) -> None:
        self._entries.clear()
        self._buckets = [{}]

    def take(self, budget: int, limit: int, exclude: K | None = None) -> list[T]:
        """Up to `budget` bytes of updates, least-sent first; each counts as
        sent once more and leaves the queue at `limit` transmissions. The
        update about `exclude` is left where it is."""
        chosen: list[tuple[K, _Entry[T]]] = []
        remaining = budget
        misses = 0
        entries = self._entries
        for transmits, bucket in enumerate(self._buckets):
            if not bucket:
                continue
            if transmits >= limit:
                # Sent often enough for the current cluster size.
                for key in bucket:
                    del entries[key]
                bucket.clear()
                continue
            for key, entry in reversed(bucket.items()):
                if exclude is not None and key == exclude:
                    continue
                if entry.size <= remaining:
                    chosen.append((key, entry))
                    remaining -= entry.size
                    if remaining < _MIN_SIZE:
                        break
                else:
                    misses += 1
                    if misses >= _MAX_MISSES:
                        break
            if remaining < _MIN_SIZE or misses >= _MAX_MISSES:
                break
        buckets = self._buckets
        for key, entry in chosen:
            bucket = buckets[entry.transmits]
            del bucket[key]
            if not bucket:
                # A dict keeps its table when emptied by deletes; clear()
                # frees it. A bucket that once held an update about every
                # member (a burst of joins) would otherwise keep ~37 bytes a
                # member for good, in each of the `limit` buckets of every
                # node: 197 bytes a member entry at 300 simulated nodes.
                bucket.clear()
            entry.transmits += 1
            if entry.transmits >= limit:
                del entries[key]
                continue
            if entry.transmits == len(buckets):
                buckets.append({})
            buckets[entry.transmits][key] = entry
        return [entry.item for _, entry in chosen]
