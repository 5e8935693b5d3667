"""Token buckets per key: how much unauthenticated input may make a node do.

Rules of this module: pure arithmetic on the times the caller gives; no
clock, no randomness, no protocol decision (the layers decide what to
limit, and by which key: usually the source host of what arrived).

Theory of operation
-------------------
Each key has a bucket of at most `burst` tokens that refills at `rate`
tokens a second; an action costs one token and is allowed while one is
left. Buckets live in an insertion-ordered dict bounded by `keys`: when it
is full the least recently used key is forgotten, so an attacker cycling
through addresses costs memory O(keys) and, at worst, a fresh bucket per
forgotten key (which is why `burst` must stay small against what it
guards).
"""

from __future__ import annotations

from collections.abc import Hashable


class RateLimit:
    __slots__ = ("_buckets", "burst", "keys", "rate")

    def __init__(self, rate: float, burst: float, keys: int = 4096) -> None:
        if rate <= 0 or burst < 1 or keys < 1:
            raise ValueError("RateLimit needs rate > 0, burst >= 1, keys >= 1")
        self.rate = rate
        self.burst = burst
        self.keys = keys
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: Hashable, now: float) -> bool:
        """Spend a token of `key`'s bucket if it has one."""
        buckets = self._buckets
        entry = buckets.pop(key, None)
        if entry is None:
            tokens = self.burst
        else:
            tokens, at = entry
            tokens = min(self.burst, tokens + (now - at) * self.rate) if now > at else tokens
        if tokens < 1:
            buckets[key] = (tokens, now)
            return False
        if len(buckets) >= self.keys:
            del buckets[next(iter(buckets))]
        buckets[key] = (tokens - 1, now)
        return True
