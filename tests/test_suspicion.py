"""Lifeguard suspicion timeout maths (overlay/suspicion.py): table tests."""

from __future__ import annotations

import math

import pytest

from overlay.suspicion import (
    Suspicion,
    expected_confirmations,
    suspicion_min,
    suspicion_timeout,
)


@pytest.mark.parametrize(
    ("mult", "n", "period", "expected"),
    [
        (4.0, 0, 1.0, 4.0),  # no members: the scale is at least 1
        (4.0, 1, 1.0, 4.0),
        (4.0, 5, 1.0, 4.0),  # log10(5) < 1: clamped
        (4.0, 10, 1.0, 4.0),
        (4.0, 100, 1.0, 8.0),
        (4.0, 1000, 1.0, 12.0),
        (4.0, 10_000, 1.0, 16.0),
        (4.0, 1000, 0.5, 6.0),
        (5.0, 100, 2.0, 20.0),
        (4.0, 200, 1.0, 4.0 * math.log10(200)),
    ],
)
def test_suspicion_min(mult: float, n: int, period: float, expected: float) -> None:
    assert suspicion_min(mult, n, period) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [(3, 1, 0), (3, 2, 0), (3, 4, 0), (3, 5, 3), (3, 1000, 3), (0, 1000, 0), (1, 3, 1)],
)
def test_expected_confirmations(k: int, n: int, expected: int) -> None:
    assert expected_confirmations(k, n) == expected


# min 10, max 60, K = 3: timeout = 60 - 50 * log(C+1) / log(4), floored at min.
@pytest.mark.parametrize(
    ("c", "k", "expected"),
    [
        (0, 3, 60.0),
        (1, 3, 60.0 - 50.0 * math.log(2) / math.log(4)),  # 35.0
        (2, 3, 60.0 - 50.0 * math.log(3) / math.log(4)),  # 20.75
        (3, 3, 10.0),
        (4, 3, 10.0),  # beyond K: clamped at min
        (50, 3, 10.0),
        (0, 0, 10.0),  # no confirmations expected: min at once
        (5, 0, 10.0),
        (0, 1, 60.0),
        (1, 1, 10.0),
    ],
)
def test_suspicion_timeout(c: int, k: int, expected: float) -> None:
    assert suspicion_timeout(c, k, 10.0, 60.0) == pytest.approx(expected)


def test_one_confirmation_halves_the_range_when_k_is_3() -> None:
    assert suspicion_timeout(1, 3, 10.0, 60.0) == pytest.approx(35.0)


def test_timeout_when_max_equals_min() -> None:
    assert suspicion_timeout(0, 3, 12.0, 12.0) == 12.0


def test_suspicion_counts_each_confirmer_once() -> None:
    s = Suspicion("a", start=100.0, k=3, min_s=10.0, max_s=60.0)
    assert s.deadline() == pytest.approx(160.0)
    assert not s.confirm("a")  # the first accuser is not a confirmation
    assert s.confirm("b")
    assert not s.confirm("b")
    assert s.confirmations == 1
    assert s.deadline() == pytest.approx(135.0)
    assert s.confirm("c")
    assert s.confirm("d")
    assert s.deadline() == pytest.approx(110.0)
    assert not s.confirm("e")  # K reached: nothing moves any more
    assert s.confirmations == 3
    assert list(s.accusers) == ["a", "b", "c", "d"]


def test_suspicion_deadline_never_below_min() -> None:
    s = Suspicion("a", start=0.0, k=1, min_s=5.0, max_s=30.0)
    assert s.confirm("b")
    assert s.deadline() == pytest.approx(5.0)
