"""SWIM's rules for being right about who is alive when the network splits
and heals (issue 11), one node at a time, literal `now`, exact outputs:

- a node that alone suspects a member, in a cluster big enough to expect
  confirmations, holds its verdict;
- a node that heard nobody while its probes failed withdraws what it
  suspected when it hears from anyone again, and merges lists at once;
- a member we hold suspect or failed is told so when it talks to us;
- dissemination rounds reach suspects and the recently failed;
- a crashed process on a live host (its host refuses our datagrams) is
  declared failed at once when someone else accuses it too.
(The merge rules themselves are the table in test_swim_rules.py.)
"""

from __future__ import annotations

import random

from overlay.config import SwimConfig
from overlay.ids import NodeId
from overlay.io import (
    Announce,
    CancelTimer,
    MemberChanged,
    MemberStatus,
    Output,
    PeerRefused,
    Received,
    Send,
    SetTimer,
    Timer,
    TimerFired,
)
from overlay.members import MemberEntry, MemberList
from overlay.messages import Ack, MemberState, MemberUpdates, Nack, Ping, PushPull, WireStatus
from overlay.swim import Swim
from overlay.swim_state import SwimTimer

ALIVE, SUSPECT, FAILED = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.FAILED
ME = NodeId("me", "10.0.0.1", 7946)
OTHERS = tuple(NodeId(f"n{i}", f"10.1.0.{i}", 7946) for i in range(1, 10))  # K = 3


def make(others: tuple[NodeId, ...] = OTHERS, *, announce: bool = False, **cfg: object) -> Swim:
    config = SwimConfig(gossip_nodes=0, announce_max_delay=0.1, **cfg)  # type: ignore[arg-type]
    s = Swim(ME, config, random.Random(1), announce=announce)
    s.start(0.0)
    s.handle(Received(others[0], MemberUpdates(tuple(alive(n) for n in others))), 0.0)
    s.queue.clear()
    return s


def alive(n: NodeId, inc: int = 0) -> MemberState:
    return MemberState(n, inc, WireStatus.ALIVE, {}, None)


def fire(s: Swim, kind: SwimTimer, now: float, key: object = None) -> list[Output]:
    return s.handle(TimerFired(Timer(kind, key)), now)


def status(s: Swim, n: NodeId) -> tuple[MemberStatus, int] | None:
    m = s.members.get(n)
    return None if m is None else (m.status, m.incarnation)


def failed_probe(s: Swim, start: float, *, nack: bool) -> NodeId:
    """Probe the next member, ask helpers, and let the period end without
    an ack: with `nack`, one helper answers NACK (we are heard); without,
    nobody says anything. Returns the target, now suspected."""
    out = fire(s, SwimTimer.PROBE, start)
    ping = out[0]
    assert isinstance(ping, Send) and isinstance(ping.msg, Ping)
    seq = ping.msg.seq
    fire(s, SwimTimer.PROBE_TIMEOUT, start + 0.5, seq)
    if nack:
        s.handle(Received(s._probes[seq].asked[0], Nack(seq)), start + 0.9)
    fire(s, SwimTimer.PROBE_END, start + 1.0, seq)
    assert status(s, ping.to) == (SUSPECT, 0)
    return ping.to


def test_a_lone_accuser_holds_its_verdict_until_someone_confirms() -> None:
    s = make()
    x = failed_probe(s, 10.0, nack=True)
    # The timer (24 s: unconfirmed) runs out with nobody else suspecting x.
    assert fire(s, SwimTimer.SUSPICION, 35.0, (x, 0)) == []
    assert status(s, x) == (SUSPECT, 0)
    assert s.stats()["verdicts_held"] == 1
    # The buddy ping no longer carries a suspicion we do not believe enough.
    assert x not in s.queue
    # Someone else's confirmation, long past the deadline: the verdict now.
    other = next(n for n in OTHERS if n != x)
    out = s.handle(
        Received(other, MemberUpdates((MemberState(x, 0, WireStatus.SUSPECT, {}, other),))), 40.0
    )
    timer = Timer(SwimTimer.SUSPICION, (x, 0))
    assert SetTimer(timer, 0.0) in out
    out = fire(s, SwimTimer.SUSPICION, 40.0, (x, 0))
    assert MemberChanged(x, FAILED, 0, {}) in out


def test_a_lone_accuser_in_a_tiny_cluster_decides_alone() -> None:
    """With fewer than K + 2 members nobody could confirm (K = 0): plain
    SWIM, the prober's timer decides."""
    b, c = OTHERS[:2]
    s = make((b, c))
    x = failed_probe(s, 10.0, nack=True)
    out = fire(s, SwimTimer.SUSPICION, 14.0, (x, 0))
    assert MemberChanged(x, FAILED, 0, {}) in out


def test_a_cut_off_node_withdraws_what_it_suspected_when_it_hears_again() -> None:
    """Nobody answered, not even the helpers' nacks: we are the likelier
    culprit. On the first message from anyone: the suspicions only we
    raised since are withdrawn (never spread), the probes in flight are
    abandoned, and we push-pull with the member we heard from."""
    s = make(announce=True)
    x = failed_probe(s, 10.0, nack=False)
    assert s.stats()["silent_probes"] == 1
    y = failed_probe(s, 11.0, nack=False)
    fire(s, SwimTimer.SUSPICION, 40.0, (x, 0))  # held: still suspect
    assert status(s, x) == (SUSPECT, 0)
    out = fire(s, SwimTimer.PROBE, 41.0)
    in_flight = out[0]
    assert isinstance(in_flight, Send) and isinstance(in_flight.msg, Ping)
    seq = in_flight.msg.seq
    # The cut heals: a member pings us.
    z = next(n for n in OTHERS if n not in (x, y, in_flight.to))
    out = s.handle(Received(z, Ping(7, ME, ())), 45.0)
    assert MemberChanged(x, ALIVE, 0, {}) in out and MemberChanged(y, ALIVE, 0, {}) in out
    assert CancelTimer(Timer(SwimTimer.PROBE_END, seq)) in out
    sends = [o for o in out if isinstance(o, Send)]
    assert [type(o.msg) for o in sends] == [PushPull, Ack]
    assert sends[0].to == z and sends[1].to == z
    assert status(s, x) == (ALIVE, 0) and status(s, y) == (ALIVE, 0)
    assert s.stats()["suspicions_withdrawn"] == 2 and not s._probes
    # Our suspicions never leave this node: not piggybacked, not announced.
    assert x not in s.queue and y not in s.queue
    assert not any(isinstance(o, Announce) for o in fire(s, SwimTimer.ANNOUNCE, 45.1))
    # A later message is just a message.
    assert s.handle(Received(z, Ping(8, ME, ())), 46.0) == [Send(z, Ack(8, ()), reliable=False)]


def test_a_heard_node_keeps_its_suspicions_when_messages_come() -> None:
    s = make()
    x = failed_probe(s, 10.0, nack=True)
    other = next(n for n in OTHERS if n != x)
    s.handle(Received(other, Ping(7, ME, ())), 12.0)
    assert status(s, x) == (SUSPECT, 0)


def test_a_member_we_hold_failed_is_told_when_it_talks_to_us() -> None:
    s = make()
    x = OTHERS[0]
    other = OTHERS[1]
    s.handle(
        Received(other, MemberUpdates((MemberState(x, 0, WireStatus.SUSPECT, {}, other),))), 1.0
    )
    fire(s, SwimTimer.SUSPICION, 30.0, (x, 0))
    assert status(s, x) == (FAILED, 0)
    verdict = MemberState(x, 0, WireStatus.FAILED, {}, None)
    # It pings us (the first packet across a healed cut): the ack says so first.
    out = s.handle(Received(x, Ping(3, ME, ())), 40.0)
    assert out == [Send(x, Ack(3, (verdict,)), reliable=False)]
    # Anything else it sends: a datagram of its own, once a period.
    assert s.handle(Received(x, MemberUpdates(())), 40.1) == [
        Send(x, MemberUpdates((verdict,)), reliable=False)
    ]
    assert s.handle(Received(x, MemberUpdates(())), 40.5) == []
    # It refuted: alive again, nothing more to tell.
    assert s.handle(Received(x, MemberUpdates((alive(x, 1),))), 42.0) == [
        MemberChanged(x, ALIVE, 1, {})
    ]


def test_dissemination_reaches_suspects_and_the_recently_failed() -> None:
    ml = MemberList(ME, random.Random(4))
    members = [MemberEntry(n, 0, ALIVE, {}, 0.0) for n in OTHERS]
    for m in members:
        ml.add(m)
    ml.set_state(members[0], SUSPECT, 0, 1.0)
    ml.set_state(members[1], FAILED, 0, 1.0)  # failed at 1.0
    ml.set_state(members[2], FAILED, 0, 1.0)
    ml.set_state(members[2], ALIVE, 1, 2.0)  # and back
    seen: set[NodeId] = set()
    for _ in range(200):
        picked = ml.dissemination_targets(3, 10.0, 30.0)
        assert len(picked) == len(set(picked)) <= 3
        seen.update(picked)
    assert seen == set(OTHERS)  # the suspect and the failed one included
    # Thirty seconds after its failure, no longer.
    for _ in range(200):
        assert members[1].node not in ml.dissemination_targets(3, 31.5, 30.0)
    assert ml._deaths_from == 2 or not ml._deaths


# ------------------------------------------- crashed processes: refusals


def suspect_of(x: NodeId, by: NodeId) -> MemberUpdates:
    return MemberUpdates((MemberState(x, 0, WireStatus.SUSPECT, {}, by),))


def test_hearing_a_suspicion_we_ping_the_suspect_once() -> None:
    """The ping carries the suspicion (a live suspect refutes at once) and
    draws a refusal from a crashed process's host; `verify_max` a period."""
    s = make(verify_max=2)
    x, y, z, by = OTHERS[:4]
    out = s.handle(Received(by, suspect_of(x, by)), 1.0)
    assert (
        Send(x, Ping(1, x, (MemberState(x, 0, WireStatus.SUSPECT, {}, by),)), reliable=False) in out
    )
    s.handle(Received(by, suspect_of(y, by)), 1.1)
    out = s.handle(Received(by, suspect_of(z, by)), 1.2)
    assert not [o for o in out if isinstance(o, Send)]
    assert s.stats()["verifications"] == 2 and s.stats()["verifications_skipped"] == 1
    fire(s, SwimTimer.PROBE, 2.0)  # a new period, a new budget
    assert s._verify_budget == 2


def test_a_refusal_and_another_accuser_make_a_verdict_at_once() -> None:
    """A crashed process on a live host: the host refuses our ping (our
    own evidence), someone else suspects it too: failed now, not after
    Lifeguard's timeout."""
    for first_ours in (True, False):
        s = make(announce=True)
        x, by = OTHERS[0], OTHERS[1]
        if first_ours:
            out = s.handle(PeerRefused(x), 1.0)
            assert MemberChanged(x, SUSPECT, 0, {}) in out
            assert status(s, x) == (SUSPECT, 0)
            out = s.handle(Received(by, suspect_of(x, by)), 1.2)
        else:
            s.handle(Received(by, suspect_of(x, by)), 1.0)
            out = s.handle(PeerRefused(x), 1.2)
        assert MemberChanged(x, FAILED, 0, {}) in out
        assert CancelTimer(Timer(SwimTimer.SUSPICION, (x, 0))) in out
        assert s.stats()["refused_verdicts"] == 1
        # The first accuser announces the verdict.
        news = [o.updates for o in fire(s, SwimTimer.ANNOUNCE, 1.5) if isinstance(o, Announce)]
        verdict = MemberState(x, 0, WireStatus.FAILED, {}, None)
        assert any(verdict in n.updates for n in news) == first_ours


def test_a_refusal_alone_is_a_suspicion_and_a_verdict_confirms_it() -> None:
    s = make()
    x, by = OTHERS[0], OTHERS[1]
    s.handle(PeerRefused(x), 1.0)
    assert status(s, x) == (SUSPECT, 0)
    # Another node's verdict is an accuser too.
    out = s.handle(
        Received(by, MemberUpdates((MemberState(x, 0, WireStatus.FAILED, {}, None),))), 3.0
    )
    assert MemberChanged(x, FAILED, 0, {}) in out


def test_refusals_are_ignored_when_turned_off_and_for_non_members() -> None:
    s = make(refusal_evidence=False)
    assert s.handle(PeerRefused(OTHERS[0]), 1.0) == []
    s = make()
    assert s.handle(PeerRefused(NodeId("x", "10.9.9.9", 1)), 1.0) == []
    assert s.handle(PeerRefused(ME), 1.0) == []
