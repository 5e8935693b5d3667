"""Lifeguard suspicion timeouts (Dadgar et al. 2017, sec. IV-B).

Rules of this module: pure arithmetic on times given by the caller, and one
small record per suspected member. The owner (`overlay.swim`) sets and
replaces the timer; nothing here reads a clock.

Theory of operation
-------------------
SWIM declares a suspect failed when it has not refuted within a fixed
suspicion timeout. Too short and a slow but healthy member is declared
failed; too long and real failures take long to confirm. Lifeguard starts
high and comes down as *independent* members confirm the suspicion:

    min = suspicion_mult * max(1, log10(N)) * period
    max = suspicion_max_mult * min
    timeout(C) = max(min, max - (max - min) * log(C + 1) / log(K + 1))

where N is the number of live members, C the number of distinct members
other than the first accuser that suspect the same incarnation, and K the
number of confirmations we expect (``indirect_k``; 0 when the cluster is too
small to give that many: then the timeout is simply ``min``). Each accuser is
counted once, so one noisy member cannot hurry a verdict. The timeout is
measured from when the suspicion started here, so a confirmation only moves
the deadline. With ``C >= K`` the deadline is ``start + min``.

The scale ``max(1, log10(N))`` is memberlist's: the issue's ``log10(N)`` with
N at least 10, so that small clusters do not get a zero timeout.

Two more facts a suspicion carries (the rules that use them are in
`overlay.swim`):

- ``verdict``: another node's *failed* verdict about the member arrived.
  It stands for the confirmations its author collected, so the timeout is
  the minimum at once; but never less: a verdict, however many copies of it
  arrive, cannot end a suspicion before ``start + min``, so the member
  always has Lifeguard's shortest timeout to refute a stale one.
- ``held``: the timer expired while we were the only accuser, in a cluster
  big enough to expect confirmations (K > 0). Nobody else could confirm
  what we saw: the likelier explanation is our own isolation, so the
  verdict is held (the member stays suspect) until a confirmation, a
  verdict or a refutation settles it.
- ``refused``: the member's host told us that nothing listens at its
  address (`overlay.io.PeerRefused`): with one other accuser, the
  suspicion ends at once.
- ``leaving``: the suspicion stands for the member's goodbye relayed by
  someone else: unrefuted, it ends as *left*, not failed.
"""

from __future__ import annotations

import math
from collections.abc import Hashable


def suspicion_min(mult: float, n: int, period: float) -> float:
    """The shortest suspicion timeout for a cluster of `n` live members."""
    return mult * max(1.0, math.log10(max(1, n))) * period


def expected_confirmations(k: int, n: int) -> int:
    """K: `k` confirmations, unless the `n` live members cannot supply them
    (ourselves and the suspect do not count)."""
    return 0 if n - 2 < k else k


def suspicion_timeout(confirmations: int, k: int, min_s: float, max_s: float) -> float:
    """The total timeout after `confirmations` independent confirmations."""
    if k < 1 or max_s <= min_s:
        return min_s
    frac = math.log(confirmations + 1) / math.log(k + 1)
    return max(min_s, max_s - frac * (max_s - min_s))


class Suspicion:
    """The suspicion of one member at one incarnation, as seen here."""

    __slots__ = (
        "accusers",
        "held",
        "k",
        "leaving",
        "max_s",
        "min_s",
        "refused",
        "start",
        "verdict",
    )

    def __init__(
        self,
        accuser: Hashable,
        start: float,
        k: int,
        min_s: float,
        max_s: float,
        *,
        verdict: bool = False,
    ) -> None:
        self.start = start
        self.k = k
        self.min_s = min_s
        self.max_s = max_s
        # The first accuser, then each confirmer; a dict keeps their order.
        self.accusers: dict[Hashable, None] = {accuser: None}
        self.verdict = verdict
        self.held = False
        self.refused = False
        self.leaving = False

    @property
    def confirmations(self) -> int:
        return len(self.accusers) - 1

    def confirm(self, accuser: Hashable) -> bool:
        """Count `accuser` if it is new and more confirmations still matter
        (the second accuser is always kept: `sole` and `proven` ask for
        it). True when the deadline moved."""
        if accuser in self.accusers:
            return False
        moved = self.confirmations < self.k
        if moved or len(self.accusers) < 2:
            self.accusers[accuser] = None
        return moved

    def confirm_verdict(self, accuser: Hashable) -> None:
        """Another node declared the member failed: full confirmation (the
        timeout drops to its minimum), its author counted as an accuser."""
        self.accusers.setdefault(accuser, None)
        self.verdict = True

    def sole(self, me: Hashable) -> bool:
        """Are we the only accuser?"""
        return len(self.accusers) == 1 and me in self.accusers

    def proven(self, me: Hashable) -> bool:
        """Refused here, and accused by someone else too: the process is
        gone, seen by two observers."""
        return self.refused and any(a != me for a in self.accusers)

    def timeout(self) -> float:
        if self.verdict:
            return self.min_s
        return suspicion_timeout(self.confirmations, self.k, self.min_s, self.max_s)

    def deadline(self) -> float:
        return self.start + self.timeout()
