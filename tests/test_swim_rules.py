"""SWIM's merge rules as a table (issue 11): every (state we hold, state we
receive, incarnation order) pair, from a member we hold alive and from one
we hold failed, with the status that results and the suspicion timer it
sets. The rules themselves are written at their handlers in overlay/swim.py
(`_merge_all`, `_on_verdict`, `_pass_on`).

A 10-member cluster, so Lifeguard's suspicion timeout runs from 4 s (min,
and what a verdict stands for) to 24 s (max, an unconfirmed suspicion).
"""

from __future__ import annotations

import random
from typing import Literal

import pytest

from overlay.config import SwimConfig
from overlay.ids import NodeId
from overlay.io import Output, Received, Send, SetTimer, Timer, TimerFired
from overlay.messages import MemberState, MemberUpdates, Ping, WireStatus
from overlay.swim import Swim
from overlay.swim_state import SwimTimer

ME = NodeId("me", "10.0.0.1", 7946)
OTHERS = tuple(NodeId(f"n{i}", f"10.1.0.{i}", 7946) for i in range(1, 10))
X, TRUSTED, ACCUSER, FAR = OTHERS[0], OTHERS[1], OTHERS[2], OTHERS[3]
STRANGER = NodeId("far", "10.2.0.1", 7946)
MIN, MAX = 4.0, 24.0
HELD_AT = 5
CODES = {
    "alive": WireStatus.ALIVE,
    "suspect": WireStatus.SUSPECT,
    "failed": WireStatus.FAILED,
    "left": WireStatus.LEFT,
}
Status = Literal["alive", "suspect", "failed", "left"]


def state(status: Status, inc: int, node: NodeId = X, by: NodeId = ACCUSER) -> MemberState:
    return MemberState(node, inc, CODES[status], {}, by if status == "suspect" else None)


def node_holding(held: Status | None) -> Swim:
    """A node of the cluster that holds X in state `held` at incarnation 5
    (None: X is unknown), and holds FAR failed."""
    s = Swim(ME, SwimConfig(gossip_nodes=0), random.Random(1))
    s.start(0.0)
    s.handle(Received(TRUSTED, MemberUpdates(tuple(state("alive", 0, n) for n in OTHERS))), 0.0)

    def recv(st: MemberState, sender: NodeId = TRUSTED) -> None:
        s.handle(Received(sender, MemberUpdates((st,))), 1.0)

    recv(state("suspect", 0, FAR), ACCUSER)
    s.handle(TimerFired(Timer(SwimTimer.SUSPICION, (FAR, 0))), 1.0)
    if held is None:
        s.members._members.pop(X)  # forget X entirely
    else:
        recv(state("alive", HELD_AT - 1 if held == "left" else HELD_AT))
        if held == "left":
            recv(state("left", HELD_AT), X)  # its own goodbye
        elif held in ("suspect", "failed"):
            recv(state("suspect", HELD_AT), ACCUSER)  # starts at 1.0, timer MAX
            if held == "failed":
                s.handle(TimerFired(Timer(SwimTimer.SUSPICION, (X, HELD_AT))), 1.0)
    s.queue.clear()
    return s


def suspicion_timer(out: list[Output]) -> float | None:
    delays = [
        o.delay for o in out if isinstance(o, SetTimer) and o.timer.kind is SwimTimer.SUSPICION
    ]
    return delays[-1] if delays else None


def told_x(out: list[Output]) -> bool:
    """Was X sent what it is accused of (on a ping, or on its own)?"""
    return any(
        isinstance(o, Send)
        and o.to == X
        and isinstance(o.msg, Ping | MemberUpdates)
        and any(u.node == X and u.status is not WireStatus.ALIVE for u in o.msg.updates)
        for o in out
    )


# (held, received, incarnation received) -> (status, incarnation, suspicion
# timer set now, or None; X told what it is accused of, directly). Received at now = 2.0 from a
# member we hold alive. A suspicion held since 1.0 has its deadline at
# 1.0 + timeout: a confirmation (one accuser more) moves it to 15.0, a
# verdict to 5.0 (the minimum).
TABLE: list[tuple[Status | None, Status, int, tuple[str | None, int, float | None, bool]]] = [
    # Unknown member: only alive adds it; accusations about strangers are dropped.
    (None, "alive", 4, ("alive", 4, None, False)),
    (None, "suspect", 5, (None, 0, None, False)),
    (None, "failed", 5, (None, 0, None, False)),
    (None, "left", 5, (None, 0, None, False)),
    # Alive at 5.
    ("alive", "alive", 4, ("alive", 5, None, False)),
    ("alive", "alive", 5, ("alive", 5, None, False)),
    ("alive", "alive", 6, ("alive", 6, None, False)),
    ("alive", "suspect", 4, ("alive", 5, None, False)),
    ("alive", "suspect", 5, ("suspect", 5, MAX, True)),  # told on a ping (see _verify)
    ("alive", "suspect", 6, ("suspect", 6, MAX, True)),
    ("alive", "failed", 4, ("alive", 5, None, False)),
    ("alive", "failed", 5, ("suspect", 5, MIN, True)),  # a stale verdict cannot kill
    ("alive", "failed", 6, ("suspect", 6, MIN, True)),
    ("alive", "left", 4, ("alive", 5, None, False)),
    ("alive", "left", 5, ("suspect", 5, MIN, True)),  # not its own goodbye: a verdict
    ("alive", "left", 6, ("suspect", 6, MIN, True)),  # a goodbye relayed: see below
    # Suspect at 5 (since 1.0, one accuser).
    ("suspect", "alive", 4, ("suspect", 5, None, False)),
    ("suspect", "alive", 5, ("suspect", 5, None, False)),
    ("suspect", "alive", 6, ("alive", 6, None, False)),  # refuted
    ("suspect", "suspect", 4, ("suspect", 5, None, False)),
    ("suspect", "suspect", 5, ("suspect", 5, 13.0, False)),  # a confirmation
    ("suspect", "suspect", 6, ("suspect", 6, MAX, True)),
    ("suspect", "failed", 4, ("suspect", 5, None, False)),
    ("suspect", "failed", 5, ("suspect", 5, 3.0, False)),  # never before start + min
    ("suspect", "failed", 6, ("suspect", 6, MIN, True)),
    ("suspect", "left", 4, ("suspect", 5, None, False)),
    ("suspect", "left", 5, ("suspect", 5, 3.0, False)),
    ("suspect", "left", 6, ("suspect", 6, MIN, True)),
    # Failed at 5: only a higher alive brings it back.
    *[
        ("failed", r, i, ("failed", 5, None, False))
        for r in CODES
        for i in (4, 5, 6)
        if (r, i) not in (("left", 5), ("left", 6))
    ],
    # ... but a force-leave (left at or above) turns it left (no more reconnects).
    ("failed", "left", 5, ("left", 5, None, False)),
    ("failed", "left", 6, ("left", 6, None, False)),
    # Left at 5: the same.
    *[("left", r, i, ("left", 5, None, False)) for r in CODES for i in (4, 5, 6)],
]
# Higher alive states revive tombstones.
TABLE = [
    (
        h,
        r,
        i,
        ("alive", 6, None, False) if h in ("failed", "left") and r == "alive" and i == 6 else e,
    )
    for h, r, i, e in TABLE
]


@pytest.mark.parametrize(("held", "received", "inc", "expected"), TABLE)
def test_merge_rule_from_a_live_member(
    held: Status | None,
    received: Status,
    inc: int,
    expected: tuple[str | None, int, float | None, bool],
) -> None:
    s = node_holding(held)
    out = s.handle(Received(TRUSTED, MemberUpdates((state(received, inc, by=TRUSTED),))), 2.0)
    member = s.members.get(X)
    got = (None, 0) if member is None else (member.status.value, member.incarnation)
    status, incarnation, timer, told = expected
    assert got == (status, incarnation)
    delay = suspicion_timer(out)
    assert (delay is None) == (timer is None) and (timer is None or delay == pytest.approx(timer))
    assert told_x(out) == told


@pytest.mark.parametrize("sender", [FAR, STRANGER], ids=["failed", "unknown"])
@pytest.mark.parametrize("held", ["alive", "suspect"])
@pytest.mark.parametrize(
    ("received", "inc"), [("suspect", 5), ("suspect", 6), ("failed", 5), ("failed", 6), ("left", 6)]
)
def test_accusations_from_a_member_we_hold_failed_are_passed_on_not_believed(
    sender: NodeId, held: Status, received: Status, inc: int
) -> None:
    """After a partition heals, each side's list holds the other side's
    members failed: a member of the far side (failed here) accusing one we
    hold live was cut off from it, and is no evidence. Nothing changes here;
    the accused is told, once a period, so it refutes for the far side."""
    s = node_holding(held)
    before = (s.members.by_id[X].status, s.members.by_id[X].incarnation)
    out = s.handle(Received(sender, MemberUpdates((state(received, inc),))), 2.0)
    assert (s.members.by_id[X].status, s.members.by_id[X].incarnation) == before
    assert suspicion_timer(out) is None
    assert told_x(out)
    again = s.handle(Received(sender, MemberUpdates((state(received, inc),))), 2.5)
    assert not told_x(again)  # once a protocol period
    assert told_x(s.handle(Received(sender, MemberUpdates((state(received, inc),))), 3.1))


def test_an_accusation_we_already_refuted_gets_our_alive_state_back() -> None:
    s = node_holding("alive")
    s.handle(
        Received(TRUSTED, MemberUpdates((MemberState(ME, 0, WireStatus.SUSPECT, {}, TRUSTED),))),
        2.0,
    )
    assert s.incarnation == 1
    out = s.handle(
        Received(ACCUSER, MemberUpdates((MemberState(ME, 0, WireStatus.FAILED, {}, None),))), 2.1
    )
    assert out == [
        Send(
            ACCUSER,
            MemberUpdates((MemberState(ME, 1, WireStatus.ALIVE, {}, None),)),
            reliable=False,
        )
    ]
    assert s.incarnation == 1


def test_a_goodbye_from_the_member_itself_is_applied_relayed_it_waits() -> None:
    """left(j) from the leaver itself is applied at once; relayed by a third
    party it is a suspicion at the minimum that ends as left unrefuted (a
    forged goodbye is refuted instead of shown)."""
    s = node_holding("alive")
    s.handle(Received(X, MemberUpdates((state("left", 6),))), 2.0)
    assert (s.members.by_id[X].status.value, s.members.by_id[X].incarnation) == ("left", 6)
    s = node_holding("alive")
    s.handle(Received(TRUSTED, MemberUpdates((state("left", 6),))), 2.0)
    assert s.members.by_id[X].status.value == "suspect"
    s.handle(TimerFired(Timer(SwimTimer.SUSPICION, (X, 6))), 6.0)
    assert (s.members.by_id[X].status.value, s.members.by_id[X].incarnation) == ("left", 6)
