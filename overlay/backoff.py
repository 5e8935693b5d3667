"""Capped exponential backoff: the one retry schedule of the project.

HyParView's and SWIM's join retries and the agent's seed resolution all
wait `initial`, then twice as long each time, up to `maximum`, and start
again from `initial` after `reset()`. With `jitter` (a fraction, drawn from
the caller's `random.Random`), each wait is spread by +-jitter so that
nodes started together do not retry in lock-step; the doubling itself is
never jittered.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial}, {maximum}")
        if jitter and rng is None:
            raise ValueError("a jittered backoff needs an rng")
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self._rng = rng
        self.current = initial

    def next(self) -> float:
        """The next wait, and double the one after (up to `maximum`)."""
        delay = self.current
        if self._rng is not None:  # one draw per wait, even at jitter 0
            delay *= 1.0 + self.jitter * (2.0 * self._rng.random() - 1.0)
        self.current = min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.initial
