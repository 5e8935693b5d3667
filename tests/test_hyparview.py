"""HyParView, one node at a time: literal `now`, exact outputs, one test per rule.

Views are set up directly, then one input goes in and the complete list of
outputs is compared. Where the protocol picks at random, either the situation
leaves one choice, or the expected pick is drawn from an identically seeded
`random.Random` making the same calls as the node (`mirror`).
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from overlay.config import HyParViewConfig
from overlay.hyparview import HvState, HvTimer, HyParView, Views
from overlay.ids import NodeId
from overlay.io import (
    CancelTimer,
    CloseConnection,
    ConnectFailed,
    ConnectionDown,
    ConnectionUp,
    DownReason,
    Input,
    Isolated,
    JoinCluster,
    Leave,
    NeighborDown,
    NeighborUp,
    OfferPassive,
    Output,
    PeerFailed,
    Publish,
    Received,
    Send,
    SetTimer,
    StrayMessage,
    Timer,
    TimerFired,
    UpReason,
    seed_id,
)
from overlay.messages import (
    Disconnect,
    ForwardJoin,
    Join,
    Message,
    Neighbor,
    NeighborReply,
    Shuffle,
    ShuffleReply,
)
from tests.conftest import nid

SEED = 7
# No jitter: timer delays are the configured values exactly.
CFG = HyParViewConfig(jitter=0.0)
ME = nid(0)
A, B, C, D, E, F = (nid(i) for i in range(1, 7))
J = nid(50)  # a joiner
ORIG = nid(60)  # a shuffle origin
P, Q = nid(70), nid(71)  # passive peers
S1, S2 = nid(90), nid(91)  # seeds

SHUFFLE_T = Timer(HvTimer.SHUFFLE)
REPAIR_T = Timer(HvTimer.REPAIR)
JOIN_T = Timer(HvTimer.JOIN_RETRY)


def NT(peer: NodeId) -> Timer:
    return Timer(HvTimer.NEIGHBOR_TIMEOUT, peer)


def make(
    active: tuple[NodeId, ...] = (),
    passive: tuple[NodeId, ...] = (),
    pending: dict[NodeId, int] | None = None,
    cfg: HyParViewConfig = CFG,
    seed: int = SEED,
) -> HyParView:
    hv = HyParView(ME, cfg, random.Random(seed))
    hv._active.update(dict.fromkeys(active))
    hv._passive.offer(passive, ())
    hv._pending.update(pending or {})
    return hv


def mirror(seed: int = SEED) -> random.Random:
    """The node's generator, to replay its draws."""
    return random.Random(seed)


def recv(hv: HyParView, sender: NodeId, msg: Message, now: float = 1.0) -> list[Output]:
    return hv.handle(Received(sender, msg), now)


def views(hv: HyParView) -> tuple[list[NodeId], list[NodeId], dict[NodeId, int]]:
    return list(hv._active), list(hv._passive), dict(hv._pending)


# --------------------------------------------------------------------------
# Start


def test_start_sets_the_periodic_timers() -> None:
    assert make().start(0.0) == [SetTimer(SHUFFLE_T, 10.0), SetTimer(REPAIR_T, 2.0)]


def test_periods_are_jittered_from_the_injected_rng() -> None:
    cfg = HyParViewConfig(jitter=0.1)
    m = mirror()
    expected = [
        SetTimer(SHUFFLE_T, 10.0 * (1 + 0.1 * (2 * m.random() - 1))),
        SetTimer(REPAIR_T, 2.0 * (1 + 0.1 * (2 * m.random() - 1))),
    ]
    assert make(cfg=cfg).start(0.0) == expected
    for out in expected:
        assert isinstance(out, SetTimer)
    assert 9.0 <= expected[0].delay <= 11.0  # type: ignore[union-attr]


# --------------------------------------------------------------------------
# JOIN (Alg. 1)


def test_join_at_contact() -> None:
    hv = make(active=(A, B))
    assert recv(hv, J, Join(), now=3.5) == [
        NeighborUp(J, UpReason.JOINED),
        Send(J, Neighbor(high_priority=True, join=True)),
        Send(A, ForwardJoin(J, 6)),
        Send(B, ForwardJoin(J, 6)),
    ]
    assert views(hv) == ([A, B, J], [], {})


def test_join_at_a_full_contact_evicts_a_random_active_peer() -> None:
    hv = make(active=(A, B, C, D, E))
    victim = mirror().choice([A, B, C, D, E])
    rest = [p for p in (A, B, C, D, E) if p != victim]
    assert recv(hv, J, Join()) == [
        Send(victim, Disconnect(alive=True)),
        CloseConnection(victim),
        NeighborDown(victim, DownReason.SHUFFLED_OUT),
        NeighborUp(J, UpReason.JOINED),
        Send(J, Neighbor(high_priority=True, join=True)),
        *[Send(p, ForwardJoin(J, 6)) for p in rest],
    ]
    assert views(hv) == ([*rest, J], [victim], {})


def test_join_retry_from_an_active_joiner_repeats_the_notice_only() -> None:
    hv = make(active=(A, J))
    assert recv(hv, J, Join()) == [Send(J, Neighbor(high_priority=True, join=True))]
    assert views(hv) == ([A, J], [], {})


def test_join_from_ourselves_or_a_placeholder_is_ignored() -> None:
    hv = make(active=(A,))
    assert recv(hv, ME, Join()) == []
    assert recv(hv, seed_id("10.0.0.50", 7946), Join()) == []
    assert views(hv) == ([A], [], {})


def test_join_takes_a_passive_peer_out_of_the_passive_view() -> None:
    hv = make(active=(A,), passive=(J, P))
    assert recv(hv, J, Join()) == [
        NeighborUp(J, UpReason.JOINED),
        Send(J, Neighbor(high_priority=True, join=True)),
        Send(A, ForwardJoin(J, 6)),
    ]
    assert views(hv) == ([A, J], [P], {})


# --------------------------------------------------------------------------
# FORWARD_JOIN (Alg. 1)


def test_forward_join_at_ttl_zero_adds_the_joiner() -> None:
    hv = make(active=(A, B))
    assert recv(hv, A, ForwardJoin(J, 0)) == [
        NeighborUp(J, UpReason.JOINED),
        Send(J, Neighbor(high_priority=True, join=True)),
    ]
    assert views(hv) == ([A, B, J], [], {})


def test_forward_join_at_a_node_with_a_single_neighbour_adds_the_joiner() -> None:
    hv = make(active=(A,))
    assert recv(hv, A, ForwardJoin(J, 5)) == [
        NeighborUp(J, UpReason.JOINED),
        Send(J, Neighbor(high_priority=True, join=True)),
    ]
    assert views(hv) == ([A, J], [], {})


def test_forward_join_at_prwl_adds_to_passive_and_forwards() -> None:
    hv = make(active=(A, B, C))
    nxt = mirror().choice([B, C])
    assert recv(hv, A, ForwardJoin(J, 3)) == [Send(nxt, ForwardJoin(J, 2))]
    assert views(hv) == ([A, B, C], [J], {})


def test_forward_join_elsewhere_only_forwards() -> None:
    hv = make(active=(A, B, C))
    nxt = mirror().choice([B, C])
    assert recv(hv, A, ForwardJoin(J, 5)) == [Send(nxt, ForwardJoin(J, 4))]
    assert views(hv) == ([A, B, C], [], {})


@pytest.mark.parametrize("seed", range(20))
def test_forward_join_never_goes_back_to_its_sender(seed: int) -> None:
    hv = make(active=(A, B), seed=seed)
    assert recv(hv, A, ForwardJoin(J, 5)) == [Send(B, ForwardJoin(J, 4))]
    hv = make(active=(B, A), seed=seed)
    assert recv(hv, A, ForwardJoin(J, 5)) == [Send(B, ForwardJoin(J, 4))]


def test_forward_join_with_nowhere_else_to_go_ends_here() -> None:
    # The only other active peer is the joiner itself: the walk ends, and
    # the joiner is already a neighbour.
    hv = make(active=(A, J))
    assert recv(hv, A, ForwardJoin(J, 5)) == []
    assert views(hv) == ([A, J], [], {})


def test_forward_join_about_ourselves_is_dropped() -> None:
    hv = make(active=(A, B))
    assert recv(hv, A, ForwardJoin(ME, 0)) == []
    assert recv(hv, A, ForwardJoin(seed_id("h", 1), 0)) == []
    assert views(hv) == ([A, B], [], {})


def test_forward_join_at_a_full_node_evicts() -> None:
    hv = make(active=(A, B, C, D, E))
    victim = mirror().choice([A, B, C, D, E])
    assert recv(hv, A, ForwardJoin(J, 0)) == [
        Send(victim, Disconnect(alive=True)),
        CloseConnection(victim),
        NeighborDown(victim, DownReason.SHUFFLED_OUT),
        NeighborUp(J, UpReason.JOINED),
        Send(J, Neighbor(high_priority=True, join=True)),
    ]
    assert J in hv._active and victim in hv._passive and len(hv._active) == 5


# --------------------------------------------------------------------------
# Stray messages: walks travel active links only


def test_forward_join_from_a_non_neighbour_is_told_to_disconnect() -> None:
    hv = make(active=(A, B))
    assert recv(hv, C, ForwardJoin(J, 0)) == [
        Send(C, Disconnect(alive=True)),
        NeighborUp(J, UpReason.JOINED),
        Send(J, Neighbor(high_priority=True, join=True)),
    ]


def test_shuffle_from_a_non_neighbour_is_told_to_disconnect() -> None:
    hv = make(active=(A,))
    assert recv(hv, C, Shuffle(ORIG, 1, 5, ())) == [
        Send(C, Disconnect(alive=True)),
        Send(ORIG, ShuffleReply(5, ()), reliable=False),
    ]


def test_stray_message() -> None:
    hv = make(active=(A,), pending={P: 1})
    assert hv.handle(StrayMessage(A), 1.0) == []  # a neighbour
    assert hv.handle(StrayMessage(P), 1.0) == []  # asked to become one
    assert hv.handle(StrayMessage(C), 1.0) == [Send(C, Disconnect(alive=True))]
    assert hv.is_neighbor(A) and hv.is_neighbor(P) and not hv.is_neighbor(C)


# --------------------------------------------------------------------------
# NEIGHBOR (sec. 4.3)


def test_neighbor_high_priority_is_accepted_when_full() -> None:
    hv = make(active=(A, B, C, D, E), passive=(P,))
    victim = mirror().choice([A, B, C, D, E])
    assert recv(hv, P, Neighbor(high_priority=True, nonce=77)) == [
        Send(victim, Disconnect(alive=True)),
        CloseConnection(victim),
        NeighborDown(victim, DownReason.SHUFFLED_OUT),
        NeighborUp(P, UpReason.REPLACED),
        Send(P, NeighborReply(True, 77)),
    ]
    assert P in hv._active and victim in hv._passive and P not in hv._passive


def test_neighbor_low_priority_is_accepted_with_a_free_slot() -> None:
    hv = make(active=(A,), passive=(P,))
    assert recv(hv, P, Neighbor(high_priority=False, nonce=8)) == [
        NeighborUp(P, UpReason.REPLACED),
        Send(P, NeighborReply(True, 8)),
    ]
    assert views(hv) == ([A, P], [], {})


def test_neighbor_low_priority_is_rejected_when_full() -> None:
    hv = make(active=(A, B, C, D, E))
    assert recv(hv, P, Neighbor(high_priority=False, nonce=8)) == [
        Send(P, NeighborReply(False, 8)),
    ]
    assert views(hv) == ([A, B, C, D, E], [P], {})


def test_neighbor_from_an_active_peer_is_simply_accepted() -> None:
    hv = make(active=(A, B))
    assert recv(hv, A, Neighbor(high_priority=False, nonce=3)) == [Send(A, NeighborReply(True, 3))]
    assert views(hv) == ([A, B], [], {})


def test_crossing_neighbor_requests_both_accept() -> None:
    # We asked P (nonce 99) and P asked us (nonce 5) at the same time, and
    # joins filled our view meanwhile: P's slot is reserved, so we accept.
    hv = make(active=(A, B, C, D, E), passive=(P,), pending={P: 99})
    victim = mirror().choice([A, B, C, D, E])
    assert recv(hv, P, Neighbor(high_priority=False, nonce=5)) == [
        CancelTimer(NT(P)),
        Send(victim, Disconnect(alive=True)),
        CloseConnection(victim),
        NeighborDown(victim, DownReason.SHUFFLED_OUT),
        NeighborUp(P, UpReason.REPLACED),
        Send(P, NeighborReply(True, 5)),
    ]
    # ... and P's accept of our own request then changes nothing.
    assert recv(hv, P, NeighborReply(True, 99)) == []
    assert P in hv._active and hv._pending == {}


def test_neighbor_join_notice_adds_the_sender() -> None:
    hv = make(active=(A,), passive=(B,))
    assert recv(hv, B, Neighbor(high_priority=True, join=True)) == [
        NeighborUp(B, UpReason.JOINED),
    ]
    assert views(hv) == ([A, B], [], {})


def test_neighbor_from_ourselves_is_ignored() -> None:
    hv = make(active=(A,))
    assert recv(hv, ME, Neighbor(high_priority=True, nonce=1)) == []
    assert recv(hv, ME, NeighborReply(True, 1)) == []
    assert views(hv) == ([A], [], {})


# --------------------------------------------------------------------------
# NEIGHBOR_REPLY


def test_neighbor_reply_accept() -> None:
    hv = make(active=(A,), passive=(P,), pending={P: 42})
    assert recv(hv, P, NeighborReply(True, 42)) == [
        CancelTimer(NT(P)),
        NeighborUp(P, UpReason.REPLACED),
    ]
    assert views(hv) == ([A, P], [], {})


def test_neighbor_reply_reject_keeps_the_peer_passive_and_waits() -> None:
    hv = make(active=(A,), passive=(P, Q), pending={P: 42})
    assert recv(hv, P, NeighborReply(False, 42)) == [CancelTimer(NT(P)), CloseConnection(P)]
    assert views(hv) == ([A], [P, Q], {})


def test_neighbor_reply_reject_when_alone_asks_again_with_high_priority() -> None:
    hv = make(passive=(P,), pending={P: 42})
    m = mirror()
    nonce = m.getrandbits(32)  # a single candidate: the shuffle draws nothing
    assert recv(hv, P, NeighborReply(False, 42)) == [
        CancelTimer(NT(P)),
        CloseConnection(P),
        Send(P, Neighbor(high_priority=True, nonce=nonce)),
        SetTimer(NT(P), 5.0),
    ]
    assert hv._pending == {P: nonce}


def test_stale_accept_is_undone() -> None:
    # An accept for a request we no longer wait for: the peer counts us as
    # active, so tell it otherwise.
    hv = make(active=(A,), passive=(Q,))
    assert recv(hv, P, NeighborReply(True, 42)) == [
        Send(P, Disconnect(alive=True)),
        CloseConnection(P),
    ]
    assert views(hv) == ([A], [Q, P], {})


def test_stale_accept_while_a_newer_request_is_out_waits_for_that_one() -> None:
    hv = make(active=(A,), passive=(P,), pending={P: 2})
    assert recv(hv, P, NeighborReply(True, 1)) == []
    assert views(hv) == ([A], [P], {P: 2})
    assert recv(hv, P, NeighborReply(True, 2)) == [
        CancelTimer(NT(P)),
        NeighborUp(P, UpReason.REPLACED),
    ]


def test_stale_reject_is_ignored() -> None:
    hv = make(active=(A,), passive=(P,), pending={P: 2})
    assert recv(hv, P, NeighborReply(False, 1)) == []
    assert recv(hv, Q, NeighborReply(False, 1)) == []
    assert views(hv) == ([A], [P], {P: 2})


def test_accept_from_an_active_peer_changes_nothing() -> None:
    hv = make(active=(A, B))
    assert recv(hv, A, NeighborReply(True, 5)) == []
    assert views(hv) == ([A, B], [], {})


def test_neighbor_timeout_then_late_accept() -> None:
    hv = make(active=(A,), passive=(P,), pending={P: 42})
    assert hv.handle(TimerFired(NT(P)), 6.0) == [CloseConnection(P)]
    assert views(hv) == ([A], [], {})
    assert recv(hv, P, NeighborReply(True, 42), now=7.0) == [
        Send(P, Disconnect(alive=True)),
        CloseConnection(P),
    ]
    assert views(hv) == ([A], [P], {})


def test_neighbor_timeout_asks_the_next_candidate() -> None:
    hv = make(active=(A, B, C, D), passive=(P, Q), pending={P: 42})
    nonce = mirror().getrandbits(32)
    assert hv.handle(TimerFired(NT(P)), 6.0) == [
        CloseConnection(P),
        Send(Q, Neighbor(high_priority=False, nonce=nonce)),
        SetTimer(NT(Q), 5.0),
    ]
    assert views(hv) == ([A, B, C, D], [Q], {Q: nonce})


def test_stale_neighbor_timeout_is_ignored() -> None:
    hv = make(active=(A,), passive=(P,))
    assert hv.handle(TimerFired(NT(P)), 6.0) == []
    assert hv.handle(TimerFired(Timer(HvTimer.NEIGHBOR_TIMEOUT, "junk")), 6.0) == []
    assert views(hv) == ([A], [P], {})


# --------------------------------------------------------------------------
# DISCONNECT (sec. 4.2)


def test_disconnect_alive_moves_the_peer_to_passive_and_repairs_elsewhere() -> None:
    hv = make(active=(A, B), passive=(P,))
    nonce = mirror().getrandbits(32)
    assert recv(hv, A, Disconnect(alive=True)) == [
        CloseConnection(A),
        NeighborDown(A, DownReason.SHUFFLED_OUT),
        Send(P, Neighbor(high_priority=False, nonce=nonce)),
        SetTimer(NT(P), 5.0),
    ]
    assert views(hv) == ([B], [P, A], {P: nonce})


def test_disconnect_alive_does_not_ask_the_sender_straight_back() -> None:
    # Alone after the sender dropped us: asking it back with high priority
    # would force it to evict someone else.
    hv = make(active=(A,))
    assert recv(hv, A, Disconnect(alive=True)) == [
        CloseConnection(A),
        NeighborDown(A, DownReason.SHUFFLED_OUT),
        Isolated(True),
    ]
    assert views(hv) == ([], [A], {})


def test_disconnect_not_alive_forgets_the_peer() -> None:
    hv = make(active=(A, B), passive=(P,))
    nonce = mirror().getrandbits(32)
    assert recv(hv, A, Disconnect(alive=False)) == [
        CloseConnection(A),
        NeighborDown(A, DownReason.PEER_LEFT),
        Send(P, Neighbor(high_priority=False, nonce=nonce)),
        SetTimer(NT(P), 5.0),
    ]
    assert views(hv) == ([B], [P], {P: nonce})


def test_disconnect_not_alive_from_a_passive_peer() -> None:
    hv = make(active=(A, B, C, D, E), passive=(P, Q))
    assert recv(hv, P, Disconnect(alive=False)) == []
    assert views(hv) == ([A, B, C, D, E], [Q], {})


def test_disconnect_from_a_pending_peer() -> None:
    hv = make(active=(A, B, C, D), passive=(P,), pending={P: 3})
    assert recv(hv, P, Disconnect(alive=False)) == [CancelTimer(NT(P))]
    assert views(hv) == ([A, B, C, D], [], {})


# --------------------------------------------------------------------------
# Connection events (sec. 4.3)


def test_connection_down_of_an_active_peer_replaces_it_at_once() -> None:
    hv = make(active=(A, B), passive=(P,))
    nonce = mirror().getrandbits(32)
    assert hv.handle(ConnectionDown(A), 2.0) == [
        CloseConnection(A),
        NeighborDown(A, DownReason.PEER_FAILED),
        Send(P, Neighbor(high_priority=False, nonce=nonce)),
        SetTimer(NT(P), 5.0),
    ]
    assert views(hv) == ([B], [P], {P: nonce})


def test_connection_down_of_the_last_active_peer_asks_with_high_priority() -> None:
    hv = make(active=(A,), passive=(P,))
    nonce = mirror().getrandbits(32)
    assert hv.handle(ConnectionDown(A), 2.0) == [
        CloseConnection(A),
        NeighborDown(A, DownReason.PEER_FAILED),
        Send(P, Neighbor(high_priority=True, nonce=nonce)),
        SetTimer(NT(P), 5.0),
        Isolated(True),
    ]


def test_connection_down_repair_fills_every_free_slot() -> None:
    hv = make(active=(A, B, C), passive=(P, Q))
    m = mirror()
    order = [P, Q]
    m.shuffle(order)
    n1, n2 = m.getrandbits(32), m.getrandbits(32)
    assert hv.handle(ConnectionDown(A), 2.0) == [
        CloseConnection(A),
        NeighborDown(A, DownReason.PEER_FAILED),
        Send(order[0], Neighbor(high_priority=False, nonce=n1)),
        SetTimer(NT(order[0]), 5.0),
        Send(order[1], Neighbor(high_priority=False, nonce=n2)),
        SetTimer(NT(order[1]), 5.0),
    ]


def test_connection_down_of_a_pending_peer() -> None:
    hv = make(active=(A, B, C, D), passive=(P, Q), pending={P: 1})
    nonce = mirror().getrandbits(32)
    assert hv.handle(ConnectionDown(P), 2.0) == [
        CancelTimer(NT(P)),
        Send(Q, Neighbor(high_priority=False, nonce=nonce)),
        SetTimer(NT(Q), 5.0),
    ]
    assert views(hv) == ([A, B, C, D], [Q], {Q: nonce})


def test_connection_down_of_a_stranger_or_passive_peer_tells_nothing() -> None:
    hv = make(active=(A,), passive=(P,))
    assert hv.handle(ConnectionDown(P), 2.0) == []
    assert hv.handle(ConnectionDown(C), 2.0) == []
    assert hv.handle(ConnectionUp(C), 2.0) == []
    assert views(hv) == ([A], [P], {})


def test_connect_failed_to_a_passive_peer_forgets_it() -> None:
    hv = make(active=(A,), passive=(P, Q))
    assert hv.handle(ConnectFailed(P), 2.0) == []
    assert views(hv) == ([A], [Q], {})


def test_connect_failed_to_a_pending_peer_asks_the_next() -> None:
    hv = make(active=(A, B, C, D), passive=(P, Q), pending={P: 1})
    nonce = mirror().getrandbits(32)
    assert hv.handle(ConnectFailed(P), 2.0) == [
        CancelTimer(NT(P)),
        Send(Q, Neighbor(high_priority=False, nonce=nonce)),
        SetTimer(NT(Q), 5.0),
    ]
    assert views(hv) == ([A, B, C, D], [Q], {Q: nonce})


def test_connect_failed_to_an_active_peer() -> None:
    hv = make(active=(A, B, C, D, E))
    assert hv.handle(ConnectFailed(A), 2.0) == [
        CloseConnection(A),
        NeighborDown(A, DownReason.PEER_FAILED),
    ]
    assert views(hv) == ([B, C, D, E], [], {})


# --------------------------------------------------------------------------
# PeerFailed and OfferPassive (the failure detector's facts)


def test_peer_failed_of_an_active_peer() -> None:
    hv = make(active=(A, B), passive=(P,))
    nonce = mirror().getrandbits(32)
    assert hv.handle(PeerFailed(A), 3.0) == [
        CloseConnection(A),
        NeighborDown(A, DownReason.PEER_FAILED),
        Send(P, Neighbor(high_priority=False, nonce=nonce)),
        SetTimer(NT(P), 5.0),
    ]
    assert views(hv) == ([B], [P], {P: nonce})


def test_peer_failed_of_a_pending_or_passive_peer() -> None:
    hv = make(active=(A, B, C, D), passive=(P, Q), pending={P: 1})
    nonce = mirror().getrandbits(32)
    assert hv.handle(PeerFailed(P), 3.0) == [
        CancelTimer(NT(P)),
        Send(Q, Neighbor(high_priority=False, nonce=nonce)),
        SetTimer(NT(Q), 5.0),
    ]
    hv = make(active=(A, B, C, D, E), passive=(P, Q))
    assert hv.handle(PeerFailed(Q), 3.0) == []
    assert views(hv) == ([A, B, C, D, E], [P], {})


def test_offer_passive_fills_free_slots_only() -> None:
    cfg = dataclasses.replace(CFG, passive_size=3)
    hv = make(active=(A,), passive=(P,), cfg=cfg)
    offered = (ME, A, P, seed_id("h", 1), Q, B, C, D)
    assert hv.handle(OfferPassive(offered), 1.0) == []
    assert views(hv) == ([A], [P, Q, B], {})
    assert hv.handle(OfferPassive((E,)), 1.0) == []  # full: nothing is evicted
    assert views(hv) == ([A], [P, Q, B], {})


# --------------------------------------------------------------------------
# REPAIR timer


def test_repair_timer_fills_gaps_counting_pending_requests() -> None:
    hv = make(active=(A, B, C), passive=(P, Q), pending={P: 1})
    nonce = mirror().getrandbits(32)
    assert hv.handle(TimerFired(REPAIR_T), 4.0) == [
        Send(Q, Neighbor(high_priority=False, nonce=nonce)),
        SetTimer(NT(Q), 5.0),
        SetTimer(REPAIR_T, 2.0),
    ]
    # Now the view and the requests fill every slot: nothing more to ask.
    assert hv.handle(TimerFired(REPAIR_T), 6.0) == [SetTimer(REPAIR_T, 2.0)]


def test_repair_timer_with_a_full_view() -> None:
    hv = make(active=(A, B, C, D, E), passive=(P,))
    assert hv.handle(TimerFired(REPAIR_T), 4.0) == [SetTimer(REPAIR_T, 2.0)]


# --------------------------------------------------------------------------
# SHUFFLE / SHUFFLE_REPLY (sec. 4.4)


def test_shuffle_is_forwarded_while_ttl_lasts() -> None:
    hv = make(active=(A, B, C))
    nxt = mirror().choice([B, C])
    nodes = (ORIG, P)
    assert recv(hv, A, Shuffle(ORIG, 4, 9, nodes)) == [Send(nxt, Shuffle(ORIG, 3, 9, nodes))]
    assert views(hv) == ([A, B, C], [], {})


@pytest.mark.parametrize("seed", range(10))
def test_shuffle_forwarding_skips_sender_and_origin(seed: int) -> None:
    hv = make(active=(A, ORIG, B), seed=seed)
    assert recv(hv, A, Shuffle(ORIG, 4, 9, (ORIG,))) == [Send(B, Shuffle(ORIG, 3, 9, (ORIG,)))]


def test_shuffle_accepted_at_the_end_of_its_walk() -> None:
    hv = make(active=(A, B), passive=(P, Q, ORIG))
    m = mirror()
    reply = tuple(m.sample([P, Q], 1))  # as many as it got, never the origin
    assert recv(hv, A, Shuffle(ORIG, 1, 9, (ORIG,))) == [
        Send(ORIG, ShuffleReply(9, reply), reliable=False),
    ]
    assert views(hv) == ([A, B], [P, Q, ORIG], {})


def test_shuffle_accepted_at_a_node_with_one_neighbour() -> None:
    hv = make(active=(A,), passive=(P,))
    assert recv(hv, A, Shuffle(ORIG, 5, 9, (ORIG, C))) == [
        Send(ORIG, ShuffleReply(9, (P,)), reliable=False),
    ]
    assert views(hv) == ([A], [P, ORIG, C], {})


def test_shuffle_accepted_when_the_only_way_on_is_the_origin() -> None:
    hv = make(active=(A, ORIG))
    assert recv(hv, A, Shuffle(ORIG, 5, 9, (ORIG, C))) == [
        Send(ORIG, ShuffleReply(9, ()), reliable=False),
    ]
    assert views(hv) == ([A, ORIG], [C], {})  # ORIG is active: not merged


def test_our_own_shuffle_coming_back_is_dropped() -> None:
    hv = make(active=(A, B))
    assert recv(hv, A, Shuffle(ME, 3, 9, (ME,))) == []


def test_shuffle_merge_drops_the_entries_it_sent_first() -> None:
    cfg = dataclasses.replace(CFG, passive_size=4)
    p1, p2, p3, p4 = (nid(i) for i in range(70, 74))
    hv = make(active=(A,), passive=(p1, p2, p3, p4), cfg=cfg)
    m = mirror()
    reply = tuple(m.sample([p1, p2, p3, p4], 3))
    kept = next(p for p in (p1, p2, p3, p4) if p not in reply)
    x, y = nid(80), nid(81)
    assert recv(hv, A, Shuffle(ORIG, 1, 9, (ORIG, x, y))) == [
        Send(ORIG, ShuffleReply(9, reply), reliable=False),
    ]
    # Full: each new entry replaced one we sent, the last sent first.
    assert set(hv._passive) == {kept, ORIG, x, y}


def test_shuffle_merge_skips_ourselves_active_known_and_placeholders() -> None:
    hv = make(active=(A,), passive=(P,))
    recv(hv, A, Shuffle(ORIG, 1, 9, (ME, A, P, seed_id("h", 1), ORIG, ORIG)))
    assert views(hv) == ([A], [P, ORIG], {})


def test_shuffle_timer_sends_a_sample_and_merges_the_reply() -> None:
    hv = make(active=(A, B, C, D), passive=(P, Q))
    m = mirror()
    active_part = m.sample([A, B, C, D], 3)
    passive_part = [P, Q]
    m.shuffle(passive_part)
    nonce = m.getrandbits(32)
    target = m.choice([A, B, C, D])
    sample = (ME, *active_part, *passive_part)
    assert hv.handle(TimerFired(SHUFFLE_T), 10.0) == [
        Send(target, Shuffle(ME, 6, nonce, sample)),
        SetTimer(SHUFFLE_T, 10.0),
    ]
    x, y = nid(80), nid(81)
    assert recv(hv, F, ShuffleReply(nonce, (x, ME, A, y)), now=10.5) == []
    assert views(hv) == ([A, B, C, D], [P, Q, x, y], {})
    # The nonce is used up: a replay merges nothing.
    assert recv(hv, F, ShuffleReply(nonce, (nid(82),)), now=11.0) == []
    assert nid(82) not in hv._passive


def test_shuffle_reply_drops_what_we_sent_first() -> None:
    cfg = dataclasses.replace(CFG, passive_size=3)
    hv = make(active=(A,), passive=(P, Q, E), cfg=cfg)
    out = hv.handle(TimerFired(SHUFFLE_T), 10.0)
    shuffle = out[0]
    assert isinstance(shuffle, Send) and isinstance(shuffle.msg, Shuffle)
    sent = shuffle.msg.nodes
    assert set(sent) == {ME, A, P, Q, E}
    x, y = nid(80), nid(81)
    recv(hv, A, ShuffleReply(shuffle.msg.nonce, (x, y)))
    assert len(hv._passive) == 3 and {x, y} <= set(hv._passive)


def test_unknown_shuffle_reply_is_ignored() -> None:
    hv = make(active=(A,), passive=(P,))
    assert recv(hv, A, ShuffleReply(1234, (nid(80),))) == []
    assert views(hv) == ([A], [P], {})


def test_only_the_last_few_shuffles_are_remembered() -> None:
    hv = make(active=(A,))
    nonces = []
    for i in range(5):
        out = hv.handle(TimerFired(SHUFFLE_T), 10.0 * (i + 1))
        assert isinstance(out[0], Send) and isinstance(out[0].msg, Shuffle)
        nonces.append(out[0].msg.nonce)
    recv(hv, A, ShuffleReply(nonces[0], (nid(80),)))
    assert nid(80) not in hv._passive  # forgotten
    recv(hv, A, ShuffleReply(nonces[4], (nid(81),)))
    assert nid(81) in hv._passive


def test_shuffle_timer_when_alone_only_rearms() -> None:
    hv = make(passive=(P,))
    assert hv.handle(TimerFired(SHUFFLE_T), 10.0) == [SetTimer(SHUFFLE_T, 10.0)]


# --------------------------------------------------------------------------
# Joining through seeds


def test_join_cluster_contacts_the_first_seed() -> None:
    hv = make()
    assert hv.handle(JoinCluster((S1, S2)), 0.0) == [Send(S1, Join()), SetTimer(JOIN_T, 1.0)]


def test_join_cluster_skips_our_own_address() -> None:
    hv = make()
    me_as_seed = seed_id(ME.host, ME.port)
    assert hv.handle(JoinCluster((me_as_seed, ME, S1)), 0.0) == [
        Send(S1, Join()),
        SetTimer(JOIN_T, 1.0),
    ]
    assert make().handle(JoinCluster((me_as_seed,)), 0.0) == []
    assert make().handle(JoinCluster(()), 0.0) == []


def test_join_retry_walks_the_seeds_with_capped_exponential_backoff() -> None:
    hv = make()
    out = hv.handle(JoinCluster((S1, S2)), 0.0)
    sent, delays = [S1], [1.0]
    for i in range(7):
        out = hv.handle(TimerFired(JOIN_T), float(i + 1))
        assert len(out) == 2 and isinstance(out[0], Send) and isinstance(out[1], SetTimer)
        assert out[0].msg == Join() and out[1].timer == JOIN_T
        sent.append(out[0].to)
        delays.append(out[1].delay)
    assert sent == [S1, S2] * 4
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_join_goes_to_the_next_seed_when_one_cannot_be_reached() -> None:
    hv = make()
    hv.handle(JoinCluster((S1, S2)), 0.0)
    assert hv.handle(ConnectFailed(S1), 1.0) == [
        CancelTimer(JOIN_T),
        Send(S2, Join()),
        SetTimer(JOIN_T, 2.0),
    ]
    # Every seed tried once: back off before the next round.
    assert hv.handle(ConnectFailed(S2), 2.0) == [CancelTimer(JOIN_T), SetTimer(JOIN_T, 4.0)]
    assert hv.handle(TimerFired(JOIN_T), 6.0) == [Send(S1, Join()), SetTimer(JOIN_T, 8.0)]


def test_seed_known_by_address_only_matches_its_real_id() -> None:
    s1, s2 = seed_id(S1.host, S1.port), seed_id(S2.host, S2.port)
    hv = make()
    assert hv.handle(JoinCluster((s1, s2)), 0.0) == [Send(s1, Join()), SetTimer(JOIN_T, 1.0)]
    # The driver reports the failure under the name it knows, or the real one.
    assert hv.handle(ConnectFailed(S1), 1.0) == [
        CancelTimer(JOIN_T),
        Send(s2, Join()),
        SetTimer(JOIN_T, 2.0),
    ]


def test_a_seed_that_left_sends_us_to_the_next() -> None:
    hv = make()
    hv.handle(JoinCluster((S1, S2)), 0.0)
    assert recv(hv, S1, Disconnect(alive=False)) == [
        CancelTimer(JOIN_T),
        Send(S2, Join()),
        SetTimer(JOIN_T, 2.0),
    ]


def test_join_completes_on_the_contacts_notice() -> None:
    hv = make()
    hv.handle(JoinCluster((S1, S2)), 0.0)
    assert recv(hv, S1, Neighbor(high_priority=True, join=True), now=0.1) == [
        NeighborUp(S1, UpReason.JOINED),
        CancelTimer(JOIN_T),
        Isolated(False),
    ]
    assert hv.state is HvState.JOINED
    # Joined: no more seeds, and a later join request changes nothing.
    assert hv.handle(ConnectFailed(S2), 0.5) == []
    assert hv.handle(JoinCluster((S2,)), 1.0) == []


def test_being_contacted_before_our_own_join_is_answered_does_not_end_it() -> None:
    # J joins through us while our JOIN is still out. Taking J in does not
    # connect us to the cluster: without this rule the two of us stay an
    # island.
    hv = make()
    hv.handle(JoinCluster((S1, S2)), 0.0)
    assert recv(hv, J, Join(), now=0.2) == [
        NeighborUp(J, UpReason.JOINED),
        Send(J, Neighbor(high_priority=True, join=True)),
        Isolated(False),
    ]
    assert hv.state is HvState.JOINING
    assert hv.handle(TimerFired(JOIN_T), 1.0) == [Send(S2, Join()), SetTimer(JOIN_T, 2.0)]
    assert hv.handle(ConnectFailed(S2), 1.5) == [CancelTimer(JOIN_T), SetTimer(JOIN_T, 4.0)]


def test_alone_again_the_repair_tick_goes_back_to_the_seeds() -> None:
    hv = make()
    hv.handle(JoinCluster((S1,)), 0.0)
    recv(hv, S1, Neighbor(high_priority=True, join=True), now=0.1)
    hv.handle(ConnectionDown(S1), 5.0)  # the passive view is empty: nothing to ask
    assert views(hv) == ([], [], {})
    assert hv.handle(TimerFired(REPAIR_T), 6.0) == [
        Send(S1, Join()),
        SetTimer(JOIN_T, 1.0),  # backoff starts over
        SetTimer(REPAIR_T, 2.0),
    ]
    # A JOIN is out: the next tick waits for it.
    assert hv.handle(TimerFired(REPAIR_T), 8.0) == [SetTimer(REPAIR_T, 2.0)]


def test_the_repair_tick_without_seeds_only_rearms() -> None:
    hv = make()
    assert hv.handle(TimerFired(REPAIR_T), 2.0) == [SetTimer(REPAIR_T, 2.0)]


# --------------------------------------------------------------------------
# Leave


def test_leave_says_goodbye_to_every_active_peer_and_stops() -> None:
    hv = make(active=(A, B), passive=(P, Q), pending={P: 1})
    assert hv.handle(Leave(), 9.0) == [
        Send(A, Disconnect(alive=False)),
        CloseConnection(A),
        NeighborDown(A, DownReason.LEAVING),
        Send(B, Disconnect(alive=False)),
        CloseConnection(B),
        NeighborDown(B, DownReason.LEAVING),
        CancelTimer(NT(P)),
        CloseConnection(P),
        CancelTimer(SHUFFLE_T),
        CancelTimer(REPAIR_T),
        CancelTimer(JOIN_T),
    ]
    assert hv.state is HvState.LEFT and hv._active == {} and hv._pending == {}


@pytest.mark.parametrize(
    "msg",
    [
        Join(),
        Neighbor(high_priority=True, nonce=3),
        Neighbor(high_priority=False),
        Neighbor(high_priority=True, join=True),
        NeighborReply(True, 3),
        ForwardJoin(J, 2),
        Shuffle(ORIG, 2, 1, (ORIG,)),
    ],
)
def test_after_leaving_requests_get_a_goodbye(msg: Message) -> None:
    hv = make(active=(A,))
    hv.handle(Leave(), 9.0)
    assert recv(hv, C, msg, now=10.0) == [Send(C, Disconnect(alive=False))]
    assert hv._active == {}


@pytest.mark.parametrize(
    "inp",
    [
        Received(C, NeighborReply(False, 3)),
        Received(C, Disconnect(alive=True)),
        Received(C, ShuffleReply(1, (ORIG,))),
        TimerFired(SHUFFLE_T),
        TimerFired(REPAIR_T),
        TimerFired(JOIN_T),
        ConnectionDown(A),
        ConnectFailed(A),
        JoinCluster((S1,)),
        Leave(),
    ],
)
def test_after_leaving_everything_else_is_ignored(inp: Input) -> None:
    hv = make(active=(A,), passive=(P,))
    hv.handle(Leave(), 9.0)
    assert hv.handle(inp, 10.0) == []
    assert hv.handle(PeerFailed(P), 3.0) == []
    assert hv._active == {} and hv._pending == {}


# --------------------------------------------------------------------------
# Isolated: once per change between an empty and a non-empty active view


def isolated(out: list[Output]) -> list[bool]:
    return [o.isolated for o in out if isinstance(o, Isolated)]


def test_isolated_follows_the_active_view_from_the_first_neighbour_on() -> None:
    hv = make(passive=(P,))
    assert hv.state is HvState.IDLE
    assert hv.start(0.0) == [SetTimer(SHUFFLE_T, 10.0), SetTimer(REPAIR_T, 2.0)]
    assert isolated(hv.handle(JoinCluster((S1,)), 0.0)) == []  # empty from the start: no news
    assert isolated(recv(hv, S1, Neighbor(high_priority=True, join=True))) == [False]
    assert isolated(recv(hv, J, Join())) == []  # a second neighbour: no change
    assert isolated(hv.handle(ConnectionDown(S1), 2.0)) == []  # and P is asked
    nonce = hv._pending[P]
    assert hv.handle(PeerFailed(J), 3.0) == [  # the last one
        CloseConnection(J),
        NeighborDown(J, DownReason.PEER_FAILED),
        Isolated(True),
    ]
    assert isolated(hv.handle(TimerFired(REPAIR_T), 4.0)) == []  # still alone: no news
    assert recv(hv, P, NeighborReply(True, nonce)) == [
        CancelTimer(NT(P)),
        NeighborUp(P, UpReason.REPLACED),
        Isolated(False),
    ]


def test_a_swap_within_one_input_is_no_change() -> None:
    # A full view of one: the joiner evicts the only neighbour, in one step.
    hv = make(active=(A,), cfg=dataclasses.replace(CFG, active_size=1))
    assert isolated(recv(hv, J, Join())) == []
    assert views(hv) == ([J], [A], {})


def test_leaving_is_not_isolation() -> None:
    hv = make(active=(A, B))
    assert isolated(hv.handle(Leave(), 1.0)) == []
    assert hv.state is HvState.LEFT
    assert isolated(hv.handle(ConnectionDown(A), 2.0)) == []


# --------------------------------------------------------------------------
# Odds and ends


def test_inputs_for_other_layers_are_ignored() -> None:
    hv = make(active=(A,))
    assert hv.handle(Publish("t", b"x"), 1.0) == []

    class Other(Message):
        __slots__ = ()

    assert recv(hv, A, Other()) == []
    assert views(hv) == ([A], [], {})


def test_views() -> None:
    hv = make(active=(A, B), passive=(P,), pending={P: 1})
    assert hv.views() == Views((A, B), (P,), (P,))


def test_passive_view_is_capped_with_random_replacement() -> None:
    cfg = dataclasses.replace(CFG, passive_size=2, active_size=1)
    hv = make(active=(A,), passive=(P, Q), cfg=cfg)
    victim = mirror().choice([P, Q])
    recv(hv, B, Neighbor(high_priority=False, nonce=1))  # rejected: B goes passive
    assert set(hv._passive) == ({P, Q} - {victim}) | {B}


def test_same_seed_same_outputs() -> None:
    def run(seed: int) -> list[Output]:
        hv = make(active=(A, B, C, D, E), passive=(P, Q, F), seed=seed)
        out = hv.start(0.0)
        out += recv(hv, J, Join())
        out += hv.handle(TimerFired(SHUFFLE_T), 10.0)
        out += hv.handle(ConnectionDown(B), 11.0)
        return out

    assert run(3) == run(3)
    assert run(3) != run(4)
