"""Lifeguard local health awareness (overlay/awareness.py): table tests."""

from __future__ import annotations

import pytest

from overlay.awareness import Awareness, scale_timeout


@pytest.mark.parametrize(
    ("timeout", "score", "expected"),
    [(0.5, 0, 0.5), (0.5, 1, 1.0), (0.5, 7, 4.0), (1.0, 3, 4.0), (2.0, 0, 2.0)],
)
def test_scale_timeout(timeout: float, score: int, expected: float) -> None:
    assert scale_timeout(timeout, score) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("deltas", "expected"),
    [
        ([], 0),
        ([1], 1),
        ([1, 1, 1], 3),
        ([-1], 0),  # never below 0
        ([5, 5], 7),  # never above max - 1
        ([3, -1, 2], 4),
        ([10, -2], 5),
        ([2, -5, 1], 1),
    ],
)
def test_apply_is_clamped(deltas: list[int], expected: int) -> None:
    a = Awareness(8)
    for d in deltas:
        a.apply(d)
    assert a.score == expected


def test_scale_follows_score() -> None:
    a = Awareness(8)
    assert a.scale(0.5) == 0.5
    a.apply(3)
    assert a.scale(0.5) == 2.0
    a.apply(100)
    assert a.scale(1.0) == 8.0  # at most max_multiplier times


def test_multiplier_one_disables() -> None:
    a = Awareness(1)
    assert a.apply(5) == 0
    assert a.scale(0.5) == 0.5


def test_bad_multiplier() -> None:
    with pytest.raises(ValueError):
        Awareness(0)
