"""Local health awareness (Lifeguard, Dadgar et al. 2017, sec. IV-A).

Rules of this module: one clamped integer and the arithmetic on it. Whoever
owns it (`overlay.swim`) decides when the score moves; nothing here reads a
clock or draws a random number.

Theory of operation
-------------------
SWIM assumes the prober is healthy: a missed ack means the *target* is slow.
When the prober itself is slow (CPU starved, paused, its network overloaded)
it misses acks from healthy members and accuses them. Lifeguard lets a node
notice its own trouble and slow down accordingly: a score in
``0 .. max_multiplier - 1`` that

- rises (+1) for each probe that failed without the expected nacks from the
  indirect probers (the nacks would have proved our own path works), for
  each probe that failed with nobody to ask, and when we must refute a
  suspicion about ourselves (others could not hear from us);
- falls (-1) for each probe answered directly in time.

Probe timeouts and the protocol period are multiplied by ``score + 1``, so an
unhealthy node waits longer before it suspects anyone and probes less often,
which keeps its false accusations off the healthy members. Same as
memberlist's awareness.go, whose maximum multiplier is 8.
"""

from __future__ import annotations


def scale_timeout(timeout: float, score: int) -> float:
    """A timeout scaled by local health: ``timeout * (score + 1)``."""
    return timeout * (score + 1)


class Awareness:
    """The health score: 0 is healthy, ``max_multiplier - 1`` the worst.

    With ``max_multiplier == 1`` the score is pinned at 0: awareness is off
    (that is how SWIM runs with ``lifeguard=False``)."""

    __slots__ = ("max_multiplier", "score")

    def __init__(self, max_multiplier: int) -> None:
        if max_multiplier < 1:
            raise ValueError("max_multiplier must be >= 1")
        self.max_multiplier = max_multiplier
        self.score = 0

    def apply(self, delta: int) -> int:
        """Move the score by `delta`, clamped to its range; the new score."""
        self.score = min(max(self.score + delta, 0), self.max_multiplier - 1)
        return self.score

    def scale(self, timeout: float) -> float:
        return scale_timeout(timeout, self.score)
