from __future__ import annotations

import random

import pytest

from overlay.backoff import Backoff


def test_doubles_up_to_the_cap_and_resets() -> None:
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5


def test_jitter_spreads_each_wait_but_not_the_doubling() -> None:
    b = Backoff(1.0, 8.0, jitter=0.25, rng=random.Random(3))
    waits = [b.next() for _ in range(4)]
    for wait, base in zip(waits, [1.0, 2.0, 4.0, 8.0], strict=True):
        assert base * 0.75 <= wait <= base * 1.25
    assert b.current == 8.0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="initial <= maximum"):
        Backoff(2.0, 1.0)
    with pytest.raises(ValueError, match="needs an rng"):
        Backoff(1.0, 2.0, jitter=0.1)
