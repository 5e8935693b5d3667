"""Plumtree's ordered delivery: per (origin, epoch), in seq order.

Rules of this module: it sits between Plumtree's tree and the application
when `PlumtreeConfig.ordered` is on, and nowhere else. It takes each first
copy's `Deliver` (the tree has already checked that it is new and young
enough), and gives back, in `out`, the deliveries that may go now, in order,
plus the RELEASE timer of each origin whose messages it holds back (the
owner's timer kind, so the node routes it to the owner). It sends nothing,
counts in the owner's counters (`delivered`, `held`, `gaps_skipped`,
`ordered_late`), and never reads a clock.

Theory of operation
-------------------
- Per (origin, epoch), a message after a gap is held back until the gap
  fills, or until the missing one could no longer arrive: the held
  message's age reaches `retention`, and the missing one, published
  earlier, is older (Plumtree refuses a copy older than `retention`, and
  stops serving it). One RELEASE timer per origin is due when its lowest
  held message's deadline passes; then the gap is skipped (counted in
  `gaps_skipped`) and what follows is delivered.
- The first message heard from an origin sets where its sequence starts; an
  earlier seq arriving later is dropped and counted (`ordered_late`), and
  anti-entropy does not ask for it (`passed`).
- Bounds: at most `ordered_max_held` messages are held per origin; beyond
  that the gap is given up at once. An origin silent for `seen_ttl`, holding
  nothing, is forgotten (it cannot send anything older than its last
  message any more: that would be past retention).
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

from overlay.config import PlumtreeConfig
from overlay.io import CancelTimer, Deliver, Output, SetTimer, Timer
from overlay.messages import MsgId

# Timers that fire "at" a deadline computed from floats may land a hair early.
_EPSILON = 1e-9

OrderKey = tuple[str, int]  # (origin, epoch)

# Its part of Plumtree's counters (`Plumtree.stats()`); it also counts what
# it lets through in `delivered`.
ORDERING_COUNTERS = (
    "held",  # deliveries held back for order
    "gaps_skipped",  # seqs given up on by ordered delivery
    "ordered_late",  # messages dropped by ordered delivery: seq already passed
)


@dataclass(slots=True)
class _Order:
    """Per-(origin, epoch) state of ordered delivery."""

    next: int  # the seq to deliver next
    last: float  # when a message of this origin last arrived
    held: dict[int, tuple[Deliver, float]] = field(default_factory=dict)  # seq -> (d, deadline)


class OrderedDelivery:
    def __init__(
        self, config: PlumtreeConfig, counters: Counter[str], release_kind: enum.Enum
    ) -> None:
        """`release_kind`: the timer kind of the RELEASE timers this sets
        (keyed by (origin, epoch)); their firings come back to `on_release`."""
        self.cfg = config
        self.counters = counters
        self.release_kind = release_kind
        # Most recently active last, for expiry.
        self.order: dict[OrderKey, _Order] = {}

    def deliver(self, d: Deliver, age: float, now: float, out: list[Output]) -> None:
        """A first copy, `age` seconds old on arrival: deliver it now if it
        is next, hold it back after a gap, drop it if its seq has passed."""
        mid = d.id
        key = (mid.origin, mid.epoch)
        state = self.order.pop(key, None)
        if state is None:
            state = _Order(mid.seq, now)
        state.last = now
        self.order[key] = state  # most recently active last, for expiry
        if mid.seq < state.next:
            self.counters["ordered_late"] += 1
            return
        if mid.seq > state.next:
            lowest_before = min(state.held) if state.held else None
            state.held[mid.seq] = (d, now + self.cfg.retention - age)
            self.counters["held"] += 1
            if len(state.held) > self.cfg.ordered_max_held:
                # Too much held back: give up on the gap now.
                self._skip_to(state, min(state.held), out)
            self._arm_release(key, state, lowest_before, now, out)
            return
        lowest_before = min(state.held) if state.held else None
        self.counters["delivered"] += 1
        out.append(d)
        state.next += 1
        self._drain(state, out)
        self._arm_release(key, state, lowest_before, now, out)

    def on_release(self, key: OrderKey, now: float, out: list[Output]) -> None:
        """The lowest held message's deadline passed: what is missing before
        it can no longer arrive. Skip the gap and deliver what follows."""
        state = self.order.get(key)
        if state is None:
            return
        while state.held:
            lowest = min(state.held)
            if state.held[lowest][1] > now + _EPSILON:
                break
            self._skip_to(state, lowest, out)
        if state.held:
            lowest = min(state.held)
            out.append(SetTimer(Timer(self.release_kind, key), state.held[lowest][1] - now))

    def passed(self, mid: MsgId) -> bool:
        """Ordered delivery has moved past this id: fetching it is useless."""
        state = self.order.get((mid.origin, mid.epoch))
        return state is not None and mid.seq < state.next

    def held(self) -> int:
        """Messages held back now, over every origin."""
        return sum(len(o.held) for o in self.order.values())

    def expire(self, now: float) -> None:
        """Forget the origins silent for `seen_ttl` that hold nothing."""
        order = self.order
        while order:
            key = next(iter(order))
            state = order[key]
            if state.held or state.last + self.cfg.seen_ttl > now:
                break
            del order[key]

    def _drain(self, state: _Order, out: list[Output]) -> None:
        while state.next in state.held:
            d, _ = state.held.pop(state.next)
            self.counters["delivered"] += 1
            out.append(d)
            state.next += 1

    def _skip_to(self, state: _Order, seq: int, out: list[Output]) -> None:
        self.counters["gaps_skipped"] += seq - state.next
        state.next = seq
        self._drain(state, out)

    def _arm_release(
        self,
        key: OrderKey,
        state: _Order,
        lowest_before: int | None,
        now: float,
        out: list[Output],
    ) -> None:
        """Keep one RELEASE timer per origin, due when the lowest held
        message's deadline passes."""
        lowest = min(state.held) if state.held else None
        if lowest == lowest_before:
            return
        timer = Timer(self.release_kind, key)
        if lowest is None:
            out.append(CancelTimer(timer))
            return
        out.append(SetTimer(timer, max(0.0, state.held[lowest][1] - now)))
