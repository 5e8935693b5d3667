"""`overlay force-leave` in the protocol (overlay/member_rules.py,
overlay/swim.py): only a member held failed is forced to left; the left
state spreads and turns the tombstone left elsewhere; a live member refutes
it, so replaying a force-leave cannot evict a live member."""

from __future__ import annotations

import random

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from overlay.io import MemberChanged, MemberStatus, Received, Send, Timer, TimerFired
from overlay.member_rules import ForceLeaveRefused, force_leave_rule
from overlay.messages import MemberState, MemberUpdates, Ping, WireStatus
from overlay.swim import Swim
from overlay.swim_state import SwimTimer
from tests.test_swim_rules import HELD_AT, ME, TRUSTED, X, node_holding

A, S, F, L = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.FAILED, MemberStatus.LEFT


@pytest.mark.parametrize(
    ("held", "about_me", "result"),
    [
        ((F, 3), False, True),
        ((L, 3), False, False),  # left already: nothing to do
        ((A, 3), False, "is alive"),
        ((S, 3), False, "is suspect"),
        (None, False, "no member named"),
        ((A, 3), True, "this agent"),
    ],
)
def test_force_leave_rule(
    held: tuple[MemberStatus, int] | None, about_me: bool, result: bool | str
) -> None:
    if isinstance(result, bool):
        assert force_leave_rule("x", held, about_me=about_me) is result
    else:
        with pytest.raises(ForceLeaveRefused, match=result):
            force_leave_rule("x", held, about_me=about_me)


def left_about_x(out: list[object]) -> list[MemberState]:
    return [
        u
        for o in out
        if isinstance(o, Send) and isinstance(o.msg, MemberUpdates | Ping)
        for u in o.msg.updates
        if u.node == X and u.status is WireStatus.LEFT
    ]


def test_a_failed_member_is_forced_left_and_the_state_spreads() -> None:
    s = node_holding("failed")
    out = s.force_leave(X.name, False, 3.0)
    member = s.members.by_id[X]
    assert (member.status, member.incarnation) == (L, HELD_AT)
    assert MemberChanged(X, L, HELD_AT, {}) in out
    assert X not in s._reconnect
    assert X in s.queue  # piggybacked on the next probes
    # Another node that holds X failed applies it: the tombstone turns left.
    other = node_holding("failed")
    other.handle(Received(TRUSTED, MemberUpdates((s._state_of(member),))), 3.0)
    assert other.members.by_id[X].status is L
    # Again: nothing to do, no error.
    assert s.force_leave(X.name, False, 3.5) == []


@pytest.mark.parametrize("held", ["alive", "suspect"])
def test_a_live_member_cannot_be_forced_out(held: str) -> None:
    s = node_holding(held)  # type: ignore[arg-type]
    with pytest.raises(ForceLeaveRefused):
        s.force_leave(X.name, True, 3.0)
    assert s.members.by_id[X].status.value == held
    with pytest.raises(ForceLeaveRefused, match="no member"):
        s.force_leave("nobody", False, 3.0)
    with pytest.raises(ForceLeaveRefused, match="this agent"):
        s.force_leave(ME.name, False, 3.0)


def test_prune_forgets_the_member_once_its_left_state_is_spread() -> None:
    s = node_holding("failed")
    s.force_leave(X.name, True, 3.0)
    assert X in s.members  # still spreading
    s.queue.clear()  # sent as often as any update
    s.handle(Received(TRUSTED, MemberUpdates(())), 4.0)
    assert X not in s.members
    assert s.counters["pruned"] == 1
    # A member left already is forgotten at once.
    t = node_holding("left")
    t.queue.clear()
    t.force_leave(X.name, True, 3.0)
    assert X not in t.members


def test_a_replayed_force_leave_cannot_evict_a_live_member() -> None:
    """A hostile member replays the force-leave (left at X's incarnation)
    every half second to a node that holds X alive: each copy is at most a
    verdict that X refutes, and once X has refuted, the copies are stale."""
    victim_view = node_holding("alive")
    forced = MemberUpdates((MemberState(X, HELD_AT, WireStatus.LEFT, {}, None),))
    out = victim_view.handle(Received(TRUSTED, forced), 2.0)
    assert victim_view.members.by_id[X].status is S  # a suspicion, not a death
    told = left_about_x(out) or [
        u
        for o in out
        if isinstance(o, Send) and o.to == X and isinstance(o.msg, Ping)
        for u in o.msg.updates
        if u.node == X
    ]
    assert told  # X is told at once, on a ping
    # X hears it about itself: it refutes, one incarnation higher.
    xs = Swim(X, victim_view.cfg, random.Random(2))
    xs.start(0.0)
    xs.incarnation = HELD_AT
    xs.handle(Received(TRUSTED, forced), 2.0)
    assert xs.incarnation == HELD_AT + 1
    assert xs.members.by_id[X].status is A
    # The refutation reaches the node; the replays change nothing any more.
    refutation = MemberUpdates((xs._state_of(xs._self),))
    victim_view.handle(Received(X, refutation), 2.1)
    for k in range(20):
        victim_view.handle(Received(TRUSTED, forced), 2.5 + 0.5 * k)
        assert victim_view.members.by_id[X].status is A
    assert victim_view.members.by_id[X].incarnation == HELD_AT + 1


OTHER = TRUSTED


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["alive", "suspect", "failed", "left", "force", "prune", "timer"]),
            st.integers(min_value=0, max_value=8),
        ),
        max_size=25,
    )
)
def test_force_leave_never_touches_a_live_member_and_incarnations_only_grow(
    steps: list[tuple[str, int]],
) -> None:
    """Any mix of received states about X and force-leaves: a force-leave
    changes only a member held failed (to left), never this node, and
    X's incarnation never goes down."""
    s = node_holding("alive")
    codes = {"alive": WireStatus.ALIVE, "suspect": WireStatus.SUSPECT}
    codes |= {"failed": WireStatus.FAILED, "left": WireStatus.LEFT}
    now = 2.0
    last = HELD_AT
    for kind, inc in steps:
        now += 0.3
        before = s.members.get(X)
        held = None if before is None else (before.status, before.incarnation)
        if kind == "timer":  # the suspicion we hold runs out
            if before is not None and before.status is S:
                timer = Timer(SwimTimer.SUSPICION, (X, before.incarnation))
                s.handle(TimerFired(timer), now)
        elif kind in ("force", "prune"):
            try:
                s.force_leave(X.name, kind == "prune", now)
            except ForceLeaveRefused:
                assert held is None or held[0] in (A, S)
            else:
                assert held is not None and held[0] in (F, L)
                event(f"forced from {held[0].value}")
                after = s.members.get(X)
                assert after is None or (after.status, after.incarnation) == (L, held[1])
        else:
            accuser = OTHER if kind == "suspect" else None
            state = MemberState(X, inc, codes[kind], {}, accuser)
            s.handle(Received(OTHER, MemberUpdates((state,))), now)
        member = s.members.get(X)
        if member is not None:
            assert member.incarnation >= last or before is None
            last = member.incarnation
        assert s.members.by_id[ME].status is A
