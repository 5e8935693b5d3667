"""Bounded memory for Plumtree: the ids a node has seen, and the payloads it
keeps to answer GRAFTs and anti-entropy (and sends on from there).

Rules: both stores are bounded by time *and* by count (the cache by bytes
too), so memory stays flat whatever the load; whatever leaves a store before
its time is counted (`evicted`), never silent. Neither reads a clock: `now`
comes from the caller.

Theory of operation: entries are kept in dicts in insertion order, which is
the order of `now` at insertion (the driver's clock never goes back), so
expiry by time and eviction by count both pop from the front, in amortised
O(1). A cached payload expires when its *age* reaches the retention window,
not when it has been held that long: a copy that arrived already old leaves
sooner. Such an entry may sit behind a younger one at the front of the dict;
`get` and `window` check the deadline, so it is never served, and the count
bound still caps it. Each store remembers when its front entry is due, so
the expiry run before every input costs one comparison until then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from overlay.ids import NodeId
from overlay.messages import MAX_HOPS, Gossip, MsgId


@dataclass(slots=True)
class Seen:
    """What a node remembers of a delivered message."""

    at: float  # when it was first received (or published)
    hops: int  # the hop count it arrived with (0: published here)
    parent: NodeId | None  # the eager peer that pushed it, for tree optimisation


class SeenIds:
    """Ids delivered here, forgotten `ttl` seconds later or, beyond
    `max_ids`, oldest first."""

    def __init__(self, ttl: float, max_ids: int) -> None:
        self.ttl = ttl
        self.max_ids = max(1, max_ids)
        self._ids: dict[MsgId, Seen] = {}
        self.evicted = 0  # forgotten before their ttl because of the count bound
        self._due = math.inf  # when the front entry expires (or earlier)

    def __contains__(self, mid: object) -> bool:
        return mid in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, mid: MsgId) -> Seen | None:
        return self._ids.get(mid)

    def add(self, mid: MsgId, record: Seen) -> None:
        ids = self._ids
        if not ids:
            self._due = record.at + self.ttl
        ids[mid] = record
        while len(ids) > self.max_ids:
            del ids[next(iter(ids))]
            self.evicted += 1

    def expire(self, now: float) -> None:
        if now < self._due:
            return
        ids = self._ids
        limit = now - self.ttl
        while ids:
            first = next(iter(ids))
            at = ids[first].at
            if at > limit:
                self._due = at + self.ttl
                return
            del ids[first]
        self._due = math.inf


@dataclass(slots=True)
class Cached:
    """A payload kept to answer GRAFT and IWANT."""

    topic: str
    payload: bytes
    hops: int  # as delivered here (0: published here)
    age: float  # its age when it arrived
    at: float  # when it arrived

    def age_at(self, now: float) -> float:
        return self.age + (now - self.at)

    def resend(self, mid: MsgId, now: float, *, repair: bool) -> Gossip:
        """This payload as sent on from here (to a GRAFT, an IWANT, or by a
        leaving node): one hop further, aged by the time it was held."""
        hops = min(self.hops + 1, MAX_HOPS)
        return Gossip(mid, self.topic, hops, self.age_at(now), self.payload, repair)


class PayloadCache:
    """Payloads by id, until their age reaches `retention`, and at most
    `max_messages` of them totalling at most `max_bytes` of payload."""

    def __init__(self, retention: float, max_messages: int, max_bytes: int) -> None:
        self.retention = retention
        self.max_messages = max(1, max_messages)
        self.max_bytes = max_bytes
        self._items: dict[MsgId, Cached] = {}
        self.bytes = 0
        self.evicted = 0  # dropped before their retention because of a bound
        # Bumped whenever the set of entries changes: what a digest of them
        # was computed from.
        self.version = 0
        self._due = math.inf  # when the front entry expires (or earlier)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, mid: object) -> bool:
        return mid in self._items

    def put(self, mid: MsgId, entry: Cached) -> None:
        if len(entry.payload) > self.max_bytes:
            self.evicted += 1
            return
        items = self._items
        old = items.pop(mid, None)
        if old is not None:
            self.bytes -= len(old.payload)
            self._due = -math.inf  # it may have been the front: look again
        elif not items:
            self._due = entry.at + self.retention - entry.age
        items[mid] = entry
        self.version += 1
        self.bytes += len(entry.payload)
        while len(items) > self.max_messages or self.bytes > self.max_bytes:
            first = next(iter(items))
            self.bytes -= len(items.pop(first).payload)
            self.evicted += 1
            self._due = -math.inf  # the front changed: look again

    def get(self, mid: MsgId, now: float) -> Cached | None:
        entry = self._items.get(mid)
        if entry is None or entry.age_at(now) >= self.retention:
            return None
        return entry

    def window(self, now: float, min_age: float) -> tuple[list[tuple[MsgId, Cached]], float]:
        """Entries still inside retention and at least `min_age` old, and
        the time until which that list stays the same unless `version`
        changes: when the next entry ages into it or out of it."""
        retention = self.retention
        chosen: list[tuple[MsgId, Cached]] = []
        until = math.inf
        for mid, entry in self._items.items():
            age = entry.age_at(now)
            if age < min_age:
                until = min(until, now + min_age - age)
            elif age < retention:
                chosen.append((mid, entry))
                until = min(until, now + retention - age)
        return chosen, until

    def expire(self, now: float) -> None:
        if now < self._due:
            return
        items = self._items
        while items:
            first = next(iter(items))
            entry = items[first]
            if entry.age_at(now) < self.retention:
                self._due = entry.at + self.retention - entry.age
                return
            del items[first]
            self.bytes -= len(entry.payload)
            self.version += 1
        self._due = math.inf
