"""SWIM unit tests (overlay/swim.py): one node, literal `now`, exact outputs."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from overlay import codec
from overlay.codec import state_size
from overlay.config import SwimConfig
from overlay.dissemination import retransmit_limit
from overlay.ids import NodeId
from overlay.io import (
    Announce,
    Announced,
    CancelTimer,
    CloseConnection,
    ConnectFailed,
    ConnectionDown,
    JoinCluster,
    Leave,
    LeaveComplete,
    MemberChanged,
    MemberStatus,
    Output,
    ProbeNow,
    Reappeared,
    Received,
    Send,
    SetTags,
    SetTimer,
    Timer,
    TimerFired,
    seed_id,
)
from overlay.member_rules import TagsTooLarge
from overlay.messages import (
    Ack,
    MemberState,
    MemberUpdates,
    Nack,
    Ping,
    PingReq,
    PushPull,
    WireStatus,
)
from overlay.probing import NACK_FRACTION
from overlay.push_pull import push_pull_interval
from overlay.swim import Swim
from overlay.swim_state import SwimState, SwimTimer

ALIVE, SUSPECT, FAILED, LEFT = (
    MemberStatus.ALIVE,
    MemberStatus.SUSPECT,
    MemberStatus.FAILED,
    MemberStatus.LEFT,
)
ME = NodeId("me", "10.0.0.1", 7946)
B = NodeId("b", "10.0.0.2", 7946)
C = NodeId("c", "10.0.0.3", 7946)
D = NodeId("d", "10.0.0.4", 7946)


def nid(i: int) -> NodeId:
    return NodeId(f"n{i}", f"10.1.{i // 256}.{i % 256}", 7946)


def alive(n: NodeId, inc: int = 0, tags: dict[str, str] | None = None) -> MemberState:
    return MemberState(n, inc, WireStatus.ALIVE, tags or {}, None)


def suspect(n: NodeId, inc: int, accuser: NodeId) -> MemberState:
    return MemberState(n, inc, WireStatus.SUSPECT, {}, accuser)


def failed(n: NodeId, inc: int) -> MemberState:
    return MemberState(n, inc, WireStatus.FAILED, {}, None)


def left(n: NodeId, inc: int) -> MemberState:
    return MemberState(n, inc, WireStatus.LEFT, {}, None)


# The announcement window is random (0.1-1.0 s); fixed here, and gossip
# rounds off (their own tests turn them on), so that the expected outputs
# are exact.
FIXED_WINDOW = SwimConfig(announce_max_delay=0.1, gossip_nodes=0)


def make(
    members: tuple[NodeId, ...] = (),
    cfg: SwimConfig | None = None,
    seed: int = 1,
    *,
    announce: bool = False,
) -> Swim:
    """A started node that knows `members` (all alive at 0), with an empty
    piggyback queue, so the next outputs are exact. `announce`: as in a
    node, the changes it originates leave as `Announce` outputs."""
    s = Swim(ME, cfg or FIXED_WINDOW, random.Random(seed), announce=announce)
    s.start(0.0)
    if members:
        s.handle(Received(members[0], MemberUpdates(tuple(alive(m) for m in members))), 0.0)
    s.queue.clear()
    return s


def fire(s: Swim, kind: SwimTimer, now: float, key: object = None) -> list[Output]:
    return s.handle(TimerFired(Timer(kind, key)), now)


def updates(s: Swim, msgs: list[MemberState], now: float, sender: NodeId = B) -> list[Output]:
    return s.handle(Received(sender, MemberUpdates(tuple(msgs))), now)


def status(s: Swim, n: NodeId) -> tuple[MemberStatus, int] | None:
    m = s.members.get(n)
    return None if m is None else (m.status, m.incarnation)


ANNOUNCE_T = Timer(SwimTimer.ANNOUNCE)


def declare_failed(s: Swim, n: NodeId, inc: int, now: float, sender: NodeId = C) -> None:
    """Make `s` declare `n` failed the one way it can: a suspicion (told by
    `sender`, a member), then the suspicion's timer running out."""
    updates(s, [suspect(n, inc, sender)], now, sender=sender)
    fire(s, SwimTimer.SUSPICION, now, (n, inc))
    assert status(s, n) == (FAILED, inc)


def announcements(out: list[Output]) -> MemberUpdates | None:
    """The one announced batch among `out`, if any."""
    batches = [o.updates for o in out if isinstance(o, Announce)]
    assert len(batches) <= 1
    return batches[0] if batches else None


def announced(s: Swim, now: float) -> MemberUpdates | None:
    """Let the announcement batching window close: the batch it announces."""
    return announcements(fire(s, SwimTimer.ANNOUNCE, now))


def probe_timers(seq: int, timeout: float = 0.5, period: float = 1.0) -> list[Output]:
    return [
        SetTimer(Timer(SwimTimer.PROBE_TIMEOUT, seq), timeout),
        SetTimer(Timer(SwimTimer.PROBE_END, seq), period),
    ]


# --------------------------------------------------------------------- start


def test_start_announces_self_and_arms_timers_at_random_phases() -> None:
    s = Swim(ME, SwimConfig(), random.Random(5), tags={"role": "web"})
    r = random.Random(5)
    r.getrandbits(64)  # the member list's own rng
    p1, p2, p3 = r.random(), r.random(), r.random()
    assert s.start(0.0) == [
        MemberChanged(ME, ALIVE, 0, {"role": "web"}),
        SetTimer(Timer(SwimTimer.PROBE), 1.0 * p1),
        SetTimer(Timer(SwimTimer.PUSH_PULL), 30.0 * p2),
        SetTimer(Timer(SwimTimer.RECONNECT), 30.0 * p3),
    ]
    assert [m.as_dict() for m in s.members_snapshot()] == [
        {"name": "me", "addr": "10.0.0.1:7946", "status": "alive", "incarnation": 0,
         "tags": {"role": "web"}}
    ]  # fmt: skip


def test_new_members_are_reported_and_queued() -> None:
    s = make()
    out = updates(s, [alive(B), alive(C, 3, {"k": "v"})], 1.0)
    assert out == [MemberChanged(B, ALIVE, 0, {}), MemberChanged(C, ALIVE, 3, {"k": "v"})]
    assert s.queue.get(C) == alive(C, 3, {"k": "v"})
    assert updates(s, [alive(B), alive(C, 3, {"k": "v"})], 2.0) == []  # nothing new


def test_seed_ids_are_never_members() -> None:
    s = make()
    assert updates(s, [alive(seed_id("10.0.0.9", 7946))], 1.0) == []
    assert len(s.members) == 1


# ------------------------------------------------------------------- probing


def test_probe_cycle_ping_and_ack() -> None:
    s = make((B,))
    assert fire(s, SwimTimer.PROBE, 10.0) == [
        Send(B, Ping(1, B, ()), reliable=False),
        *probe_timers(1),
        SetTimer(Timer(SwimTimer.PROBE), 1.0),
    ]
    assert s.handle(Received(B, Ack(1, ())), 10.03) == [
        CancelTimer(Timer(SwimTimer.PROBE_TIMEOUT, 1)),
        CancelTimer(Timer(SwimTimer.PROBE_END, 1)),
    ]
    # Timers that fire anyway (a race with the cancel) change nothing.
    assert fire(s, SwimTimer.PROBE_TIMEOUT, 10.5, 1) == []
    assert fire(s, SwimTimer.PROBE_END, 11.0, 1) == []
    assert status(s, B) == (ALIVE, 0)


def test_ack_from_a_stranger_or_wrong_seq_is_ignored() -> None:
    s = make((B, C))
    target = fire(s, SwimTimer.PROBE, 10.0)[0]
    assert isinstance(target, Send)
    other = C if target.to == B else B
    assert s.handle(Received(other, Ack(1, ())), 10.1) == []
    assert s.handle(Received(target.to, Ack(99, ())), 10.1) == []
    assert s.stats()["probes_in_flight"] == 1


def test_ping_is_acked_with_piggyback() -> None:
    s = make((B,))
    updates(s, [alive(C, 2)], 1.0)
    assert s.handle(Received(B, Ping(7, ME, ())), 2.0) == [
        Send(B, Ack(7, (alive(C, 2),)), reliable=False)
    ]


def test_a_member_we_do_not_list_gets_a_push_pull() -> None:
    """We missed its arrival: a full exchange fills the gap both ways, at
    most once per protocol period."""
    s = make((B,))
    assert s.handle(Received(C, Ping(7, ME, ())), 2.0) == [
        Send(C, Ack(7, ()), reliable=False),
        Send(C, PushPull(False, 0, 1, (alive(ME), alive(B)))),
    ]
    assert s.handle(Received(D, Ping(8, ME, ())), 2.5) == [Send(D, Ack(8, ()), reliable=False)]
    assert s.handle(Received(B, Ping(9, ME, ())), 3.5) == [Send(B, Ack(9, ()), reliable=False)]
    out = s.handle(Received(D, Ack(99, ())), 3.5)
    assert out == [Send(D, PushPull(False, 0, 1, (alive(ME), alive(B))))]
    assert s.stats()["strangers_met"] == 2


def test_misdirected_ping_is_ignored() -> None:
    s = make((B,))
    other_me = NodeId("someone-else", ME.host, ME.port)
    assert s.handle(Received(B, Ping(7, other_me, ())), 2.0) == []
    assert s.stats()["misdirected_pings"] == 1


def test_ping_req_path_ack_relayed() -> None:
    """No direct ack: PING-REQ to the other member; its relayed ack ends the probe."""
    s = make((B, C))
    first = fire(s, SwimTimer.PROBE, 10.0)[0]
    assert isinstance(first, Send)
    target = first.to
    helper = C if target == B else B
    assert fire(s, SwimTimer.PROBE_TIMEOUT, 10.5, 1) == [
        Send(helper, PingReq(1, target, True, ()), reliable=False)
    ]
    assert s.handle(Received(helper, Ack(1, ())), 10.6) == [
        CancelTimer(Timer(SwimTimer.PROBE_END, 1))
    ]
    assert fire(s, SwimTimer.PROBE_END, 11.0, 1) == []
    assert status(s, target) == (ALIVE, 0)
    assert s.awareness.score == 0
    # The direct stage failed, the probe did not.
    assert (s.stats()["probes_direct_failed"], s.stats().get("probes_failed", 0)) == (1, 0)


def test_ping_req_nack_spares_our_health() -> None:
    s = make((B, C))
    first = fire(s, SwimTimer.PROBE, 10.0)[0]
    assert isinstance(first, Send)
    target = first.to
    helper = C if target == B else B
    fire(s, SwimTimer.PROBE_TIMEOUT, 10.5, 1)
    assert s.handle(Received(helper, Nack(1)), 10.95) == []
    assert s.handle(Received(target, Nack(1)), 10.95) == []  # not asked: ignored
    out = fire(s, SwimTimer.PROBE_END, 11.0, 1)
    assert out[0] == MemberChanged(target, SUSPECT, 0, {})
    assert s.awareness.score == 0  # the one relay we asked answered
    assert (s.stats()["probes_direct_failed"], s.stats()["probes_failed"]) == (1, 1)
    assert s.stats()["suspicions"] == 1


def test_missing_nacks_raise_our_health_score() -> None:
    s = make((B, C, D))
    first = fire(s, SwimTimer.PROBE, 10.0)[0]
    assert isinstance(first, Send)
    fire(s, SwimTimer.PROBE_TIMEOUT, 10.5, 1)
    fire(s, SwimTimer.PROBE_END, 11.0, 1)
    assert s.awareness.score == 2  # two relays asked, no nack


def test_relay_side_pings_target_and_relays_ack() -> None:
    s = make((B, C))
    assert s.handle(Received(B, PingReq(40, C, True, ())), 5.0) == [
        Send(C, Ping(1, C, ()), reliable=False),
        SetTimer(Timer(SwimTimer.RELAY, 1), 0.5 * NACK_FRACTION),
    ]
    assert s.handle(Received(C, Ack(1, ())), 5.05) == [
        CancelTimer(Timer(SwimTimer.RELAY, 1)),
        Send(B, Ack(40, ()), reliable=False),
    ]
    assert fire(s, SwimTimer.RELAY, 5.4, 1) == []


def test_relay_side_nacks_a_silent_target() -> None:
    s = make((B, C))
    s.handle(Received(B, PingReq(40, C, True, ())), 5.0)
    assert s.handle(Received(B, Ack(1, ())), 5.1) == []  # not from the target
    assert fire(s, SwimTimer.RELAY, 5.4, 1) == [Send(B, Nack(40), reliable=False)]
    assert s.handle(Received(C, Ack(1, ())), 5.5) == []  # too late: forgotten


def test_relay_without_nack_request_stays_silent() -> None:
    s = make((B, C))
    s.handle(Received(B, PingReq(40, C, False, ())), 5.0)
    assert fire(s, SwimTimer.RELAY, 5.4, 1) == []


def test_ping_req_about_ourselves_is_answered_directly() -> None:
    s = make((B,))
    assert s.handle(Received(B, PingReq(3, ME, True, ())), 1.0) == [
        Send(B, Ack(3, ()), reliable=False)
    ]


def test_suspect_after_timeout_then_failed_after_suspicion_timeout() -> None:
    s = make((B,))
    fire(s, SwimTimer.PROBE, 10.0)
    assert fire(s, SwimTimer.PROBE_TIMEOUT, 10.5, 1) == []  # nobody else to ask
    # N = 2 live members: min = 4 * max(1, log10 2) * 1 s = 4 s; K = 0.
    assert fire(s, SwimTimer.PROBE_END, 11.0, 1) == [
        MemberChanged(B, SUSPECT, 0, {}),
        SetTimer(Timer(SwimTimer.SUSPICION, (B, 0)), 4.0),
    ]
    assert s.queue.get(B) == suspect(B, 0, ME)
    assert s.awareness.score == 1  # a failed probe with nobody to ask
    assert fire(s, SwimTimer.SUSPICION, 15.0, (B, 0)) == [MemberChanged(B, FAILED, 0, {})]
    assert status(s, B) == (FAILED, 0)
    assert s.queue.get(B) == failed(B, 0)
    assert s.stats()["declared_failed"] == 1


def test_health_score_scales_probe_timeout_and_period() -> None:
    s = make((B,))
    s.awareness.apply(2)
    assert fire(s, SwimTimer.PROBE, 10.0) == [
        Send(B, Ping(1, B, ()), reliable=False),
        *probe_timers(1, timeout=1.5, period=3.0),
        SetTimer(Timer(SwimTimer.PROBE), 3.0),
    ]
    s.handle(Received(B, Ack(1, ())), 10.1)
    assert s.awareness.score == 1  # a direct ack in time lowers it


def test_no_lifeguard_no_awareness_no_nack_fixed_timeout() -> None:
    cfg = SwimConfig(lifeguard=False)
    s = make(tuple(nid(i) for i in range(1, 20)), cfg=cfg)
    first = fire(s, SwimTimer.PROBE, 10.0)[0]
    assert isinstance(first, Send)
    target = first.to
    out = fire(s, SwimTimer.PROBE_TIMEOUT, 10.5, 1)
    assert len(out) == 3
    assert all(isinstance(o, Send) and isinstance(o.msg, PingReq) and not o.msg.nack for o in out)
    out = fire(s, SwimTimer.PROBE_END, 11.0, 1)
    # N = 20: min = 4 * log10(20) s, and no Lifeguard maximum.
    assert out == [
        MemberChanged(target, SUSPECT, 0, {}),
        SetTimer(Timer(SwimTimer.SUSPICION, (target, 0)), 4.0 * math.log10(20)),
    ]
    assert s.awareness.score == 0


def test_buddy_system_ping_to_a_suspect_carries_the_suspicion() -> None:
    s = make((B,))
    # (Hearing the suspicion, we ping B once at once: seq 1, see
    # test_hearing_a_suspicion_we_ping_the_suspect_once.)
    updates(s, [suspect(B, 0, C)], 1.0)
    s.queue.clear()
    out = fire(s, SwimTimer.PROBE, 2.0)
    assert out[0] == Send(B, Ping(2, B, (suspect(B, 0, C),)), reliable=False)


def test_probe_now_out_of_turn_once() -> None:
    s = make((B,))
    probe = [Send(B, Ping(1, B, ()), reliable=False), *probe_timers(1)]
    assert s.handle(ProbeNow(B), 3.0) == probe
    assert s.handle(ProbeNow(B), 3.1) == []  # already being probed
    assert s.handle(ProbeNow(C), 3.1) == []  # not a member
    # The regular round skips a target already in flight.
    assert fire(s, SwimTimer.PROBE, 3.2) == [SetTimer(Timer(SwimTimer.PROBE), 1.0)]


# ----------------------------------------------------------- state changes


def test_refutation_raises_incarnation_past_the_accusation() -> None:
    s = make((B,), announce=True)
    assert updates(s, [suspect(ME, 0, B)], 1.0) == [SetTimer(ANNOUNCE_T, 0.1)]
    assert s.incarnation == 1
    assert s.queue.get(ME) == alive(ME, 1)
    assert announced(s, 1.1) == MemberUpdates((alive(ME, 1),))
    assert s.awareness.score == 1
    updates(s, [failed(ME, 7)], 2.0)
    assert s.incarnation == 8
    updates(s, [suspect(ME, 3, B)], 3.0)  # older than us: stale
    assert s.incarnation == 8
    updates(s, [alive(ME, 12)], 4.0)  # an earlier life of ours got higher
    assert s.incarnation == 13
    assert status(s, ME) == (ALIVE, 13)


def test_refuted_suspicion_makes_its_timer_stale() -> None:
    s = make((B, C))
    out = updates(s, [suspect(B, 0, C)], 1.0, sender=C)
    assert out == [
        MemberChanged(B, SUSPECT, 0, {}),
        SetTimer(Timer(SwimTimer.SUSPICION, (B, 0)), 4.0),
        Send(B, Ping(1, B, (suspect(B, 0, C),)), reliable=False),
    ]
    assert updates(s, [alive(B, 1)], 2.0) == [
        CancelTimer(Timer(SwimTimer.SUSPICION, (B, 0))),
        MemberChanged(B, ALIVE, 1, {}),
    ]
    assert fire(s, SwimTimer.SUSPICION, 5.0, (B, 0)) == []
    assert status(s, B) == (ALIVE, 1)
    # Malformed or unknown keys are ignored too.
    assert fire(s, SwimTimer.SUSPICION, 5.0, (B,)) == []
    assert fire(s, SwimTimer.SUSPICION, 5.0, ("x", 0)) == []
    assert fire(s, SwimTimer.SUSPICION, 5.0, (D, 0)) == []


def test_suspicion_at_higher_incarnation_replaces_the_older_one() -> None:
    s = make((B, C))
    updates(s, [suspect(B, 0, C)], 1.0, sender=C)
    assert updates(s, [suspect(B, 2, C)], 2.0, sender=C) == [
        CancelTimer(Timer(SwimTimer.SUSPICION, (B, 0))),
        MemberChanged(B, SUSPECT, 2, {}),
        SetTimer(Timer(SwimTimer.SUSPICION, (B, 2)), 4.0),
        Send(B, Ping(2, B, (suspect(B, 2, C),)), reliable=False),
    ]
    assert updates(s, [suspect(B, 1, D)], 3.0, sender=C) == []  # stale
    assert updates(s, [alive(B, 2)], 3.0, sender=C) == []  # alive(i) does not beat suspect(i)


def test_confirmations_shrink_the_timeout_each_confirmer_once() -> None:
    others = tuple(nid(i) for i in range(1, 10))  # N = 10: min 4 s, max 24 s, K = 3
    s = make(others)
    x, a1, a2, a3, a4, a5 = others[:6]
    timer = Timer(SwimTimer.SUSPICION, (x, 0))
    assert updates(s, [suspect(x, 0, a1)], 100.0, sender=a1) == [
        MemberChanged(x, SUSPECT, 0, {}),
        SetTimer(timer, 24.0),
        Send(x, Ping(1, x, (suspect(x, 0, a1),)), reliable=False),
    ]

    # One confirmation: 24 - 20 * log 2 / log 4 = 14 s after the start.
    def confirm(s: Swim, accuser: NodeId, now: float) -> list[Output]:
        return updates(s, [suspect(x, 0, accuser)], now, sender=accuser)

    assert confirm(s, a2, 101.0) == [SetTimer(timer, pytest.approx(13.0))]
    assert confirm(s, a2, 101.5) == []  # same confirmer again
    assert confirm(s, a1, 101.5) == []  # the first accuser
    assert s.queue.get(x) == suspect(x, 0, a2)  # a confirmation is passed on
    two = 24.0 - 20.0 * math.log(3) / math.log(4)
    assert confirm(s, a3, 102.0) == [SetTimer(timer, pytest.approx(two - 2.0))]
    assert confirm(s, a4, 102.0) == [SetTimer(timer, pytest.approx(2.0))]
    assert confirm(s, a5, 102.5) == []  # K reached
    # A confirmation that arrives past the shrunken deadline fires at once.
    s2 = make(others)
    confirm(s2, a1, 100.0)
    confirm(s2, a2, 101.0)
    confirm(s2, a3, 110.0)
    assert confirm(s2, a4, 110.0) == [SetTimer(timer, 0.0)]


def test_our_own_failed_probe_confirms_to_the_first_accuser_only() -> None:
    """A confirmation is not broadcast (k+1 broadcasts per failure would be
    a storm under mass failure): it goes to the first accuser, whose timer
    decides the verdict, and piggybacks for everyone else."""
    others = tuple(nid(i) for i in range(1, 10))
    s = make(others, announce=True)
    first = fire(s, SwimTimer.PROBE, 10.0)[0]
    assert isinstance(first, Send)
    x = first.to
    accuser = nid(2) if x != nid(2) else nid(3)
    out = updates(s, [suspect(x, 0, accuser)], 10.2, sender=accuser)
    assert announcements(out) is None  # heard, not ours
    fire(s, SwimTimer.PROBE_TIMEOUT, 10.5, 1)
    out = fire(s, SwimTimer.PROBE_END, 11.0, 1)
    assert out == [
        SetTimer(Timer(SwimTimer.SUSPICION, (x, 0)), pytest.approx(13.2)),
        Send(accuser, MemberUpdates((suspect(x, 0, ME),)), reliable=False),
    ]
    assert announced(s, 11.1) is None
    assert s.queue.get(x) == suspect(x, 0, ME)


def test_our_own_first_suspicion_is_announced() -> None:
    others = tuple(nid(i) for i in range(1, 10))
    s = make(others, announce=True)
    first = fire(s, SwimTimer.PROBE, 10.0)[0]
    assert isinstance(first, Send)
    x = first.to
    fire(s, SwimTimer.PROBE_TIMEOUT, 10.5, 1)
    fire(s, SwimTimer.PROBE_END, 11.0, 1)
    assert announced(s, 11.1) == MemberUpdates((suspect(x, 0, ME),))


def test_verdict_announced_only_by_the_first_accuser() -> None:
    s = make((B,), announce=True)
    updates(s, [suspect(B, 0, C)], 1.0)
    fire(s, SwimTimer.SUSPICION, 5.0, (B, 0))
    assert announced(s, 5.1) is None
    s2 = make((B,), announce=True)
    fire(s2, SwimTimer.PROBE, 1.0)
    fire(s2, SwimTimer.PROBE_END, 2.0, 1)
    fire(s2, SwimTimer.SUSPICION, 6.0, (B, 0))
    # The window opened at 2.0 is still open: both go in one batch.
    assert announced(s2, 6.1) == MemberUpdates((suspect(B, 0, ME), failed(B, 0)))


def test_failed_about_an_alive_member_is_only_a_suspicion() -> None:
    """Issue 11: a stale verdict (the far side's member list after a
    partition heals) must not kill a live member. It starts one suspicion,
    at Lifeguard's minimum, and the accused is told so it can refute;
    further copies confirm but never end it before the minimum."""
    others = tuple(nid(i) for i in range(1, 10))  # N = 10: min 4 s, K = 3
    s = make(others)
    x, a1, a2 = others[:3]
    timer = Timer(SwimTimer.SUSPICION, (x, 0))
    assert updates(s, [failed(x, 0)], 1.0, sender=a1) == [
        MemberChanged(x, SUSPECT, 0, {}),
        SetTimer(timer, 4.0),
        Send(x, Ping(1, x, (suspect(x, 0, a1),)), reliable=False),
    ]
    assert s.queue.get(x) == suspect(x, 0, a1)
    # A second copy, and a third from someone else: not a verdict yet.
    assert updates(s, [failed(x, 0)], 1.1, sender=a1) == [SetTimer(timer, pytest.approx(3.9))]
    assert updates(s, [failed(x, 0)], 3.0, sender=a2) == [SetTimer(timer, pytest.approx(2.0))]
    assert status(s, x) == (SUSPECT, 0)
    # The accused refutes in time: alive again, the timer stale.
    updates(s, [alive(x, 1)], 4.0, sender=x)
    assert status(s, x) == (ALIVE, 1)
    assert fire(s, SwimTimer.SUSPICION, 5.0, (x, 0)) == []
    # Not refuted: our own timer decides, at the minimum.
    y = others[3]
    updates(s, [failed(y, 0)], 10.0, sender=a1)
    out = fire(s, SwimTimer.SUSPICION, 14.0, (y, 0))
    assert MemberChanged(y, FAILED, 0, {}) in out
    # A verdict about a suspicion older than the minimum ends it at once.
    z = others[4]
    updates(s, [suspect(z, 0, a1)], 20.0, sender=a1)
    assert updates(s, [failed(z, 0)], 24.5, sender=a2) == [
        SetTimer(Timer(SwimTimer.SUSPICION, (z, 0)), 0.0)
    ]


def test_left_is_applied_directly() -> None:
    s = make((B,))
    assert updates(s, [left(B, 1)], 1.0) == [MemberChanged(B, LEFT, 1, {})]
    assert updates(s, [left(C, 1)], 1.0) == []  # unknown: nothing to forget
    assert updates(s, [suspect(B, 1, C), failed(B, 1)], 2.0) == []
    # left(i) at the incarnation we hold is not the member's own goodbye
    # (a leave raises it): a verdict like any other.
    s = make((B, C))
    updates(s, [left(B, 0)], 1.0, sender=C)
    assert status(s, B) == (SUSPECT, 0)


def test_tombstones_block_resurrection_until_a_higher_incarnation() -> None:
    s = make((B, C))
    declare_failed(s, B, 3, 1.0)
    for stale in (alive(B, 0), alive(B, 3), suspect(B, 3, C), suspect(B, 9, C)):
        assert updates(s, [stale], 2.0, sender=C) == []
        assert status(s, B) == (FAILED, 3)
    out = updates(s, [alive(B, 4, {"v": "2"})], 3.0, sender=C)
    assert out == [MemberChanged(B, ALIVE, 4, {"v": "2"})]
    assert status(s, B) == (ALIVE, 4)


def test_tombstones_are_reaped_after_reap_after() -> None:
    s = make((B, C), cfg=SwimConfig(reap_after=100.0))
    declare_failed(s, B, 0, 10.0)
    fire(s, SwimTimer.PROBE, 109.0)
    assert status(s, B) == (FAILED, 0)
    fire(s, SwimTimer.PROBE, 110.0)
    assert status(s, B) is None
    assert s.stats()["reaped"] == 1


def test_tags_change_at_higher_incarnation_is_reported() -> None:
    s = make((B,))
    assert updates(s, [alive(B, 1)], 1.0) == []  # same status, same tags: silent
    assert updates(s, [alive(B, 2, {"a": "b"})], 1.0) == [MemberChanged(B, ALIVE, 2, {"a": "b"})]


def test_incarnations_never_decrease_for_others() -> None:
    s = make((B,))
    updates(s, [alive(B, 5)], 1.0)
    updates(s, [alive(B, 2), suspect(B, 4, C), failed(B, 1), left(B, 3)], 2.0)
    assert status(s, B) == (ALIVE, 5)


# ---------------------------------------------------------------- push-pull


def test_join_pushes_and_pulls_with_a_seed() -> None:
    s = make()
    seed = seed_id("10.0.0.9", 7946)
    real = NodeId("s", "10.0.0.9", 7946)
    assert s.handle(JoinCluster((seed,)), 0.0) == [
        Send(seed, PushPull(False, 0, 1, (alive(ME),))),
        SetTimer(Timer(SwimTimer.JOIN_RETRY), 1.0),
    ]
    # No answer: again, with the backoff doubled.
    assert fire(s, SwimTimer.JOIN_RETRY, 1.0) == [
        Send(seed, PushPull(False, 0, 1, (alive(ME),))),
        SetTimer(Timer(SwimTimer.JOIN_RETRY), 2.0),
    ]
    reply = PushPull(True, 0, 1, (alive(real), alive(B, 2)))
    out = s.handle(Received(real, reply), 1.5)
    # One more exchange soon, for the members that joined alongside us.
    followup = out.pop(3)
    assert isinstance(followup, SetTimer) and followup.timer == Timer(SwimTimer.PUSH_PULL)
    assert 2.25 <= followup.delay <= 3.75
    assert out == [
        MemberChanged(real, ALIVE, 0, {}),
        MemberChanged(B, ALIVE, 2, {}),
        CancelTimer(Timer(SwimTimer.JOIN_RETRY)),
        CloseConnection(real),
    ]
    # What the seed knew is news to us alone: only the seed's own state is
    # passed on.
    assert s.queue.get(real) == alive(real) and B not in s.queue
    assert fire(s, SwimTimer.JOIN_RETRY, 3.0) == []


def test_the_join_follow_up_goes_to_a_member_older_than_us() -> None:
    """Never to one that joined after us: its list may be as incomplete as
    ours."""
    seed = seed_id("10.0.0.9", 7946)
    real = NodeId("s", "10.0.0.9", 7946)
    later = tuple(nid(i) for i in range(20, 30))
    for k in range(10):
        s = make(seed=k)
        s.handle(JoinCluster((seed,)), 0.0)
        s.handle(Received(real, PushPull(True, 0, 1, (alive(real), alive(B, 2)))), 1.5)
        updates(s, [alive(n) for n in later], 3.5)
        out = fire(s, SwimTimer.PUSH_PULL, 4.5)
        assert isinstance(out[0], Send) and isinstance(out[0].msg, PushPull)
        assert out[0].to in (real, B)


def _follow_up(s: Swim, now: float) -> tuple[NodeId, list[Output]]:
    """Fire the push-pull timer: the follow-up request, and its partner."""
    out = fire(s, SwimTimer.PUSH_PULL, now)
    sends = [o for o in out if isinstance(o, Send) and isinstance(o.msg, PushPull)]
    assert len(sends) == 1 and not sends[0].msg.reply
    return sends[0].to, out


def _rearmed(out: list[Output]) -> float:
    pp = Timer(SwimTimer.PUSH_PULL)
    (delay,) = [o.delay for o in out if isinstance(o, SetTimer) and o.timer == pp]
    return delay


def test_a_follow_up_that_teaches_members_is_followed_by_another() -> None:
    """The follow-up's partner may have missed part of the burst too: while
    a follow-up brings members we did not know, one more (with another
    member), up to `join_followups`; then anti-entropy's scaled period."""
    seed = seed_id("10.0.0.9", 7946)
    real = NodeId("s", "10.0.0.9", 7946)
    s = make(cfg=SwimConfig(join_followups=3))
    s.handle(JoinCluster((seed,)), 0.0)
    s.handle(Received(real, PushPull(True, 0, 1, (alive(real), alive(B, 2)))), 1.5)
    now, fresh = 4.5, 40
    for k in range(3):
        partner, out = _follow_up(s, now)
        # A reply with a member new to us (and everything we know).
        states = (*(alive(m.node, m.incarnation) for m in s.members), alive(nid(fresh + k)))
        out = s.handle(Received(partner, PushPull(True, 0, 1, states)), now + 0.1)
        if k < 2:
            assert 2.25 <= _rearmed(out) <= 3.75, f"follow-up {k + 1} taught a member"
        else:  # the third: no more, whatever it taught
            assert not [o for o in out if isinstance(o, SetTimer)]
        now += 3.0
    # A follow-up that teaches nothing ends them at once.
    s = make()
    s.handle(JoinCluster((seed,)), 0.0)
    s.handle(Received(real, PushPull(True, 0, 1, (alive(real), alive(B, 2)))), 1.5)
    partner, out = _follow_up(s, 4.5)
    assert _rearmed(out) >= s.cfg.push_pull_period * 0.9  # the periodic one
    states = tuple(alive(m.node, m.incarnation) for m in s.members)
    out = s.handle(Received(partner, PushPull(True, 0, 1, states)), 4.6)
    assert not [o for o in out if isinstance(o, SetTimer)]


def test_join_tries_the_next_seed_when_a_dial_fails() -> None:
    s = make()
    s1, s2 = seed_id("10.0.0.8", 1), seed_id("10.0.0.9", 1)
    s.handle(JoinCluster((s1, s2, seed_id(ME.host, ME.port))), 0.0)  # our own address: skipped
    assert s.seeds == [s1, s2]
    out = s.handle(ConnectFailed(NodeId("x", "10.0.0.8", 1)), 1.0)
    assert out == [
        Send(s2, PushPull(False, 0, 1, (alive(ME),))),
        SetTimer(Timer(SwimTimer.JOIN_RETRY), 2.0),
    ]
    # Every seed tried once: wait for the retry timer.
    assert s.handle(ConnectFailed(NodeId("y", "10.0.0.9", 1)), 2.0) == []


def test_push_pull_request_is_merged_then_answered() -> None:
    s = make((B,))
    msg = PushPull(False, 0, 1, (alive(B), alive(C, 2), suspect(ME, 0, B)))
    out = s.handle(Received(B, msg), 5.0)
    assert out[0] == MemberChanged(C, ALIVE, 2, {})
    assert s.queue.get(C) == alive(C, 2)  # a gap others may share: spread it
    reply = out[1]
    assert isinstance(reply, Send) and isinstance(reply.msg, PushPull)
    assert reply.to == B and reply.reliable and reply.msg.reply
    # The refutation it provoked goes back in the answer.
    assert sorted(reply.msg.states, key=lambda m: m.node) == [alive(B), alive(C, 2), alive(ME, 1)]
    assert len(out) == 2


def test_push_pull_in_several_parts() -> None:
    cfg = SwimConfig(push_pull_part_bytes=1024)
    others = tuple(
        NodeId(f"member-with-a-long-name-{i:03d}", f"10.2.0.{i}", 7946) for i in range(1, 80)
    )
    s = make(others, cfg=cfg)
    parts = s.handle(JoinCluster((B,)), 0.0)[:-1]
    assert len(parts) > 2
    msgs = [p.msg for p in parts if isinstance(p, Send) and isinstance(p.msg, PushPull)]
    assert [m.part for m in msgs] == list(range(len(msgs)))
    assert all(m.parts == len(msgs) and not m.reply for m in msgs)
    assert sum(len(m.states) for m in msgs) == 80
    for m in msgs:
        assert len(codec.encode(ME, m)) <= 1024 + 64
    # The receiver answers only after the last part.
    r = Swim(B, cfg, random.Random(2))
    r.start(0.0)
    for m in msgs[:-1]:
        assert not any(isinstance(o, Send) for o in r.handle(Received(ME, m), 1.0))
    last = r.handle(Received(ME, msgs[-1]), 1.0)
    answers = [o for o in last if isinstance(o, Send)]
    assert answers and all(isinstance(o.msg, PushPull) and o.msg.reply for o in answers)
    assert len(r.members) == 81


def test_push_pull_stream_forgotten_when_it_breaks() -> None:
    s = make((B,))
    fire(s, SwimTimer.PUSH_PULL, 30.0)
    assert s._exchanges
    s.handle(ConnectionDown(B), 30.5)
    assert not s._exchanges


def test_anti_entropy_push_pull_with_a_random_member() -> None:
    s = make((B,))
    out = fire(s, SwimTimer.PUSH_PULL, 30.0)
    assert out[0] == Send(B, PushPull(False, 0, 1, (alive(ME), alive(B))))
    assert isinstance(out[1], SetTimer) and out[1].timer == Timer(SwimTimer.PUSH_PULL)
    assert 27.0 <= out[1].delay <= 33.0
    assert s.handle(Received(B, PushPull(True, 0, 1, (alive(B),))), 30.1) == [CloseConnection(B)]


def test_push_pull_period_scales_with_cluster_size() -> None:
    assert push_pull_interval(30.0, 10) == 30.0
    assert push_pull_interval(30.0, 32) == 30.0
    assert push_pull_interval(30.0, 33) == 60.0
    assert push_pull_interval(30.0, 1000) == 180.0
    assert push_pull_interval(30.0, 10_000) == 300.0


# ---------------------------------------------------------------- reconnect


def test_reconnect_attempts_a_failed_member_and_reports_it_back() -> None:
    s = make((B, C))
    declare_failed(s, B, 0, 10.0)
    out = fire(s, SwimTimer.RECONNECT, 40.0)
    assert out[0] == Send(B, PushPull(False, 0, 1, (alive(ME), failed(B, 0), alive(C))))
    assert isinstance(out[1], SetTimer) and out[1].timer == Timer(SwimTimer.RECONNECT)
    assert len(out) == 2
    # Across a healed partition B learns it was failed, refutes, answers.
    reply = PushPull(True, 0, 1, (alive(B, 1), alive(ME), alive(C)))
    assert s.handle(Received(B, reply), 40.1) == [
        MemberChanged(B, ALIVE, 1, {}),
        Reappeared(B),
        CloseConnection(B),
    ]
    # B answered alive: the node may bridge the overlays.
    # Nobody failed any more: nothing to try.
    out = fire(s, SwimTimer.RECONNECT, 70.0)
    assert len(out) == 1 and isinstance(out[0], SetTimer)


def test_reconnect_stops_after_reconnect_for() -> None:
    s = make((B, C), cfg=SwimConfig(reconnect_for=100.0))
    declare_failed(s, B, 0, 10.0)
    assert isinstance(fire(s, SwimTimer.RECONNECT, 100.0)[0], Send)
    s.handle(ConnectFailed(B), 101.0)  # still cut off
    out = fire(s, SwimTimer.RECONNECT, 110.0)
    assert len(out) == 1 and isinstance(out[0], SetTimer)


def test_reconnect_to_reaped_member_continues() -> None:
    s = make((B, C), cfg=SwimConfig(reap_after=20.0))
    declare_failed(s, B, 0, 10.0)
    fire(s, SwimTimer.PROBE, 31.0)
    assert status(s, B) is None
    out = fire(s, SwimTimer.RECONNECT, 40.0)
    assert isinstance(out[0], Send) and out[0].to == B


# -------------------------------------------------------------------- leave


def test_graceful_leave() -> None:
    s = make((B,))
    assert s.handle(Leave(), 50.0) == [
        Send(B, MemberUpdates((left(ME, 1),)), reliable=False),
        MemberChanged(ME, LEFT, 1, {}),
        CancelTimer(Timer(SwimTimer.PUSH_PULL)),
        CancelTimer(Timer(SwimTimer.RECONNECT)),
        CancelTimer(Timer(SwimTimer.JOIN_RETRY)),
    ]
    assert s.state is SwimState.LEAVING
    # It keeps piggybacking the goodbye on pings (no probing: no timers)...
    limit = retransmit_limit(4, 1)
    for i in range(limit):
        out = fire(s, SwimTimer.PROBE, 51.0 + i)
        assert out == [
            Send(B, Ping(i + 1, B, (left(ME, 1),)), reliable=False),
            SetTimer(Timer(SwimTimer.PROBE), 1.0),
            *([LeaveComplete()] if i == limit - 1 else []),
        ]
    assert s.state is SwimState.LEFT
    assert fire(s, SwimTimer.PROBE, 60.0) == []
    # ...answers pings, ignores everything else, never refutes "left".
    assert s.handle(Received(B, Ping(9, ME, ())), 61.0) == [Send(B, Ack(9, ()), reliable=False)]
    assert updates(s, [failed(ME, 1), alive(C)], 61.0) == []
    assert s.incarnation == 1
    assert fire(s, SwimTimer.PUSH_PULL, 62.0) == []
    assert s.handle(Leave(), 63.0) == []
    assert s.handle(JoinCluster((C,)), 63.0) == []
    # The others forget it as left.
    other = Swim(B, SwimConfig(), random.Random(3))
    other.start(0.0)
    updates(other, [alive(ME)], 1.0, sender=ME)
    assert updates(other, [left(ME, 1)], 50.1, sender=ME) == [MemberChanged(ME, LEFT, 1, {})]
    assert updates(other, [alive(ME, 1)], 50.2) == []


# --------------------------------------------------------------------- tags


def test_tags_size_limit_error() -> None:
    with pytest.raises(TagsTooLarge):
        Swim(ME, SwimConfig(), random.Random(1), tags={"k": "x" * 600})
    with pytest.raises(TagsTooLarge):
        Swim(ME, SwimConfig(max_tags_bytes=8), random.Random(1), tags={"key": "value1"})
    Swim(ME, SwimConfig(max_tags_bytes=9), random.Random(1), tags={"key": "value1"})
    s = make((B,))
    with pytest.raises(TagsTooLarge):
        s.handle(SetTags({"big": "é" * 300}), 1.0)  # 600 bytes in UTF-8
    assert s.incarnation == 0 and s.members_snapshot()[0].tags == {}


def test_set_tags_spreads_at_a_new_incarnation() -> None:
    s = make((B,), announce=True)
    assert s.handle(SetTags({"zone": "a"}), 1.0) == [
        MemberChanged(ME, ALIVE, 1, {"zone": "a"}),
        SetTimer(ANNOUNCE_T, 0.1),
    ]
    assert s.queue.get(ME) == alive(ME, 1, {"zone": "a"})
    assert announced(s, 1.1) == MemberUpdates((alive(ME, 1, {"zone": "a"}),))


def test_announcements_in_one_window_go_as_one_batch_and_leave_goes_at_once() -> None:
    s = make((B, C, D), announce=True)
    assert updates(s, [suspect(ME, 0, B)], 1.0) == [SetTimer(ANNOUNCE_T, 0.1)]
    assert updates(s, [suspect(ME, 1, C)], 1.05) == []  # the window is already open
    assert announced(s, 1.1) == MemberUpdates((alive(ME, 1), alive(ME, 2)))
    out = s.handle(Leave(), 2.0)
    assert SetTimer(ANNOUNCE_T, 0.1) not in out
    assert announcements(out) == MemberUpdates((left(ME, 3),))


def test_a_suspicion_someone_else_announced_first_is_not_announced_again() -> None:
    others = tuple(nid(i) for i in range(1, 10))
    s = make(others, announce=True)
    first = fire(s, SwimTimer.PROBE, 10.0)[0]
    assert isinstance(first, Send)
    x = first.to
    other = nid(1) if x != nid(1) else nid(2)
    fire(s, SwimTimer.PROBE_TIMEOUT, 10.5, 1)
    s.handle(Received(s._probes[1].asked[0], Nack(1)), 10.9)  # we are heard
    fire(s, SwimTimer.PROBE_END, 11.0, 1)  # our suspicion waits in its window
    # The same suspicion, piggybacked or sent to us alone: ours still goes.
    s2 = make(others, announce=True)
    fire(s2, SwimTimer.PROBE, 10.0)
    fire(s2, SwimTimer.PROBE_TIMEOUT, 10.5, 1)
    s2.handle(Received(s2._probes[1].asked[0], Nack(1)), 10.9)  # we are heard
    fire(s2, SwimTimer.PROBE_END, 11.0, 1)
    updates(s2, [suspect(x, 0, other)], 11.02, sender=other)
    assert announced(s2, 11.1) == MemberUpdates((suspect(x, 0, ME),))
    # Broadcast by another accuser within our window: everyone has it. Ours
    # goes to the announcer alone, as a confirmation.
    out = s.handle(Announced(other, MemberUpdates((suspect(x, 0, other),))), 11.02)
    assert Send(other, MemberUpdates((suspect(x, 0, ME),)), reliable=False) in out
    assert announced(s, 11.1) is None
    assert s.stats()["announcements_suppressed"] == 1
    # The announcer is now the first accuser here, so the verdict is its to
    # announce; our own timer still declares the member failed.
    out = fire(s, SwimTimer.SUSPICION, 30.0, (x, 0))
    assert MemberChanged(x, FAILED, 0, {}) in out
    assert announced(s, 30.1) is None


def test_a_suspicion_does_not_suppress_our_verdict() -> None:
    s = make((B, C), announce=True)
    fire(s, SwimTimer.PROBE, 1.0)
    target = s._probes[1].target
    fire(s, SwimTimer.PROBE_END, 2.0, 1)
    assert announced(s, 2.1) == MemberUpdates((suspect(target, 0, ME),))
    fire(s, SwimTimer.SUSPICION, 20.0, (target, 0))
    other = C if target == B else B
    s.handle(Announced(other, MemberUpdates((suspect(target, 0, other),))), 20.01)
    assert announced(s, 20.1) == MemberUpdates((failed(target, 0),))


def test_the_announcement_window_is_random_for_suspicions_only() -> None:
    delays = set()
    for seed in range(20):
        s = make((B,), SwimConfig(), seed=seed, announce=True)
        fire(s, SwimTimer.PROBE, 1.0)
        out = fire(s, SwimTimer.PROBE_END, 2.0, 1)  # we suspect B
        (timer,) = [o for o in out if isinstance(o, SetTimer) and o.timer == ANNOUNCE_T]
        assert 0.1 <= timer.delay <= 1.0
        delays.add(round(timer.delay, 3))
        # A refutation does not wait as long: the window closes sooner.
        out = updates(s, [suspect(ME, 0, B)], 2.01)
        # (B talks to us while we suspect it: we tell it so, see
        # test_a_member_we_hold_suspect_or_failed_is_told_when_it_talks.)
        tell = Send(B, MemberUpdates((suspect(B, 0, ME),)), reliable=False)
        if timer.delay > 0.11:
            assert out == [tell, SetTimer(ANNOUNCE_T, 0.1)]
        assert announced(s, 2.2) == MemberUpdates((suspect(B, 0, ME), alive(ME, 1)))
    assert len(delays) > 10
    s = make((B,), SwimConfig(), announce=True)
    assert updates(s, [suspect(ME, 0, B)], 1.0) == [SetTimer(ANNOUNCE_T, 0.1)]


ROUND_T = Timer(SwimTimer.DISSEMINATE)


def test_dissemination_rounds_run_while_updates_wait() -> None:
    """memberlist's gossip, our dissemination rounds: waiting updates go to 3 random alive members
    every 200 ms, each send counting as a transmission, until the queue is
    empty; then no round is scheduled."""
    others = tuple(nid(i) for i in range(1, 10))
    s = make(others, SwimConfig(announce_max_delay=0.1))
    assert fire(s, SwimTimer.DISSEMINATE, 0.1) == []  # nothing waits: no round
    out = updates(s, [alive(C, 5)], 1.0)
    assert out == [MemberChanged(C, ALIVE, 5, {}), SetTimer(ROUND_T, 0.2)]
    assert updates(s, [alive(D, 5)], 1.1) == [MemberChanged(D, ALIVE, 5, {})]  # armed already
    limit = retransmit_limit(4, 10)  # 8 transmissions each
    sent: list[Send] = []
    rounds = 0
    while True:
        out = fire(s, SwimTimer.DISSEMINATE, 1.2 + 0.2 * rounds)
        rounds += 1
        sends = [o for o in out if isinstance(o, Send)]
        sent += sends
        if SetTimer(ROUND_T, 0.2) not in out:
            break
        assert rounds < 10
    assert rounds == 3  # 3 + 3 + 2 sends of both updates
    assert len(sent) == limit and len({o.to for o in sent}) > 3
    for o in sent:
        assert o.reliable is False and o.to in (*others, C, D)
        assert isinstance(o.msg, MemberUpdates)
        assert sorted(u.node for u in o.msg.updates) == [C, D]
    assert len(s.queue) == 0


def test_announce_delay_zero_announces_at_once() -> None:
    s = make((B,), SwimConfig(announce_delay=0.0, announce_max_delay=0.0), announce=True)
    assert updates(s, [suspect(ME, 0, B)], 1.0) == [Announce(MemberUpdates((alive(ME, 1),)))]


def test_oversized_tags_from_the_network_are_dropped() -> None:
    s = make()
    assert updates(s, [alive(C, 0, {"k": "x" * 600})], 1.0) == []
    assert s.stats()["oversized_tags_dropped"] == 1


# --------------------------------------------------------------- piggyback


def test_piggyback_is_byte_bounded_and_each_update_sent_limit_times() -> None:
    others = tuple(nid(i) for i in range(1, 60))
    s = make(others)
    for i, n in enumerate(others):
        updates(s, [alive(n, 1, {"tag": f"{i:040d}"})], 1.0)
    sent: dict[NodeId, int] = {}
    for k in range(200):
        out = s.handle(Received(B, Ping(k, ME, ())), 2.0)
        ack = out[0]
        assert isinstance(ack, Send) and isinstance(ack.msg, Ack)
        assert sum(state_size(u) for u in ack.msg.updates) <= 1200
        assert len(codec.encode(ME, ack.msg)) <= 1400
        for u in ack.msg.updates:
            sent[u.node] = sent.get(u.node, 0) + 1
    limit = retransmit_limit(4, 60)
    assert limit == 8
    assert sent == dict.fromkeys(others, limit)


def test_stats_keys() -> None:
    s = make((B,))
    stats = s.stats()
    for key in ("members", "alive", "suspect", "failed", "left", "incarnation", "health_score"):
        assert key in stats
    assert stats["members"] == 2 and stats["alive"] == 2


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SwimConfig(probe_timeout=1.0, probe_period=1.0)
    with pytest.raises(ValueError):
        SwimConfig(suspicion_max_mult=0.5)
    assert dataclasses.replace(SwimConfig(), lifeguard=False).lifeguard is False
