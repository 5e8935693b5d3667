"""Network coordinates (overlay/coordinates.py): Vivaldi learns a metric,
refuses what a hostile peer sends, and rides on SWIM's acks."""

from __future__ import annotations

import math
import random

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay import codec
from overlay.config import SwimConfig
from overlay.coordinates import (
    DIMENSIONS,
    ERROR_MAX,
    MAX_CACHED,
    MAX_FILTERED_PEERS,
    MAX_RTT,
    ORIGIN,
    Coordinate,
    PeerCoordinates,
    Vivaldi,
    distance,
    raw_distance,
    valid,
)
from overlay.ids import NodeId
from overlay.io import Received, Send, Timer, TimerFired
from overlay.messages import Ack, MemberState, MemberUpdates, Ping, WireStatus
from overlay.swim import Swim
from overlay.swim_state import SwimTimer

ME = NodeId("me", "10.0.0.1", 7946)
B = NodeId("b", "10.0.0.2", 7946)


def coord(*vec: float, height: float = 1e-5, error: float = 1.0, adj: float = 0.0) -> Coordinate:
    v = tuple(float(x) for x in vec) + (0.0,) * (DIMENSIONS - len(vec))
    return Coordinate(v, height, error, adj)


# ------------------------------------------------------------- arithmetic


def test_distance_is_euclidean_plus_heights_plus_adjustments() -> None:
    a = coord(0.003, height=0.001, adj=0.0005)
    b = coord(0.0, 0.004, height=0.002, adj=-0.0002)
    assert math.isclose(raw_distance(a, b), 0.005 + 0.003)
    assert math.isclose(distance(a, b), 0.008 + 0.0003)
    assert math.isclose(distance(b, a), distance(a, b))
    # An adjustment that would make the estimate non-positive is dropped.
    c = coord(0.001, height=0.0, adj=-0.01)
    assert math.isclose(distance(c, coord(height=0.0)), 0.001)


def _learn(n: int, rounds: int, seed: int) -> tuple[float, float]:
    """Nodes at random points of a plane with access heights probe random
    others; the median relative error of the estimates, before and after."""
    rng = random.Random(seed)
    points = [
        (rng.uniform(0, 0.05), rng.uniform(0, 0.05), rng.uniform(0.0005, 0.003)) for _ in range(n)
    ]

    def rtt(i: int, j: int) -> float:
        (x1, y1, h1), (x2, y2, h2) = points[i], points[j]
        return math.hypot(x1 - x2, y1 - y2) + h1 + h2

    nodes = [Vivaldi(i) for i in range(n)]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]

    def median_error() -> float:
        errs = sorted(
            abs(distance(nodes[i].coord, nodes[j].coord) - rtt(i, j)) / rtt(i, j) for i, j in pairs
        )
        return errs[len(errs) // 2]

    before = median_error()
    for _ in range(rounds):
        for i in range(n):
            j = rng.randrange(n - 1)
            j += j >= i
            assert nodes[i].update(j, nodes[j].coord, rtt(i, j) * rng.uniform(1.0, 1.05))
    return before, median_error()


def test_vivaldi_learns_a_planar_metric() -> None:
    before, after = _learn(n=40, rounds=200, seed=3)
    assert before > 0.95  # every coordinate at the origin: estimates ~0
    assert after < 0.10


def test_the_latency_filter_takes_the_median_of_the_last_three() -> None:
    v = Vivaldi(1)
    assert v._filter(B, 0.010) == 0.010
    assert v._filter(B, 0.500) == 0.500  # two samples: the larger of the middle two
    assert v._filter(B, 0.012) == 0.012  # the 0.5 s outlier is filtered out
    assert v._filter(B, 0.011) == 0.012  # window: 0.5, 0.012, 0.011 -> 0.012
    assert v._filter(B, 0.013) == 0.012
    v.forget(B)
    assert v.filtered_peers() == 0


def test_the_latency_filter_is_bounded() -> None:
    v = Vivaldi(1)
    for i in range(MAX_FILTERED_PEERS + 10):
        v.update(i, ORIGIN, 0.01)
    assert v.filtered_peers() == MAX_FILTERED_PEERS


# --------------------------------------------------------- hostile input

BAD_COORDS = [
    coord(math.nan),
    coord(math.inf),
    coord(-math.inf),
    coord(1e300),
    coord(1e308, 1e308),  # their sum overflows
    coord(math.inf, -math.inf),
    coord(height=math.nan),
    coord(height=-0.001),
    coord(height=1e9),
    coord(error=math.nan),
    coord(error=-1.0),
    coord(error=ERROR_MAX * 2),
    coord(adj=math.inf),
    coord(adj=-1e6),
    Coordinate((0.0,) * (DIMENSIONS - 1), 1e-5, 1.0, 0.0),  # wrong dimension
    Coordinate((0.0,) * (DIMENSIONS + 1), 1e-5, 1.0, 0.0),
    Coordinate((0,) * DIMENSIONS, 1e-5, 1.0, 0.0),  # ints: not what we send
    None,
    (0.0,) * 11,
]


def test_invalid_coordinates_and_implausible_round_trips_are_refused() -> None:
    v = Vivaldi(1)
    good = coord(0.01)
    for bad in BAD_COORDS:
        assert not valid(bad)
        assert not v.update(B, bad, 0.02)
    for rtt in (0.0, -0.01, math.nan, math.inf, MAX_RTT * 1.01, 1e300):
        assert not v.update(B, good, rtt)
    assert v.coord == ORIGIN and v.updates == 0
    assert v.refused == len(BAD_COORDS) + 6
    assert v.filtered_peers() == 0  # refused samples never reach the filter


floats = st.floats(allow_nan=True, allow_infinity=True)
wild = st.one_of(floats, st.floats(-200.0, 200.0), st.floats(-0.1, 0.1))
coords = st.builds(
    Coordinate,
    st.one_of(
        st.tuples(*[wild] * DIMENSIONS),
        st.lists(wild, max_size=10).map(tuple),
    ),
    wild,
    st.one_of(wild, st.floats(0.0, ERROR_MAX)),
    wild,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), coords, wild), max_size=60))
def test_a_hostile_peer_cannot_poison_our_coordinate(
    steps: list[tuple[int, Coordinate, float]],
) -> None:
    """Whatever arrives, our coordinate stays valid (finite, bounded), and
    the estimate to any valid coordinate is a finite non-negative number."""
    v = Vivaldi(7)
    for peer, c, rtt in steps:
        v.update(peer, c, rtt)
        assert valid(v.coord)
        assert 0.0 <= distance(v.coord, ORIGIN) < math.inf


# ------------------------------------------------------ the member cache


def test_peer_cache_is_bounded_and_forgets() -> None:
    pc = PeerCoordinates(ME)
    for i in range(MAX_CACHED + 5):
        pc.remember(i, ORIGIN)
    assert len(pc.peers) == MAX_CACHED and pc.get(0) is None and pc.get(MAX_CACHED + 4) == ORIGIN
    assert pc.observe(B, coord(0.01), 0.02) and pc.get(B) == coord(0.01)
    pc.forget(B)
    assert pc.get(B) is None and B not in pc.vivaldi._samples
    off = PeerCoordinates(ME, enabled=False)
    assert off.own() is None and not off.observe(B, coord(0.01), 0.02)


# ------------------------------------------------------------ on the wire


def test_an_ack_carries_a_coordinate_of_a_hundred_bytes() -> None:
    c = coord(0.01, -0.02, height=0.001, error=0.3, adj=-0.0001)
    with_c, without = codec.encode(ME, Ack(5, (), c)), codec.encode(ME, Ack(5, ()))
    assert len(with_c) - len(without) == 100
    _, back = codec.decode(with_c)
    assert isinstance(back, Ack) and back.coord == c
    # Non-finite numbers decode (msgpack floats) but are never used.
    tag = codec._BY_CLS[Ack].tag
    raw = msgpack.packb([1, ME, tag, 5, [], [[math.nan] * DIMENSIONS, 0.0, 1.0, 0.0]])
    _, bad = codec.decode(raw)
    assert isinstance(bad, Ack) and not valid(bad.coord)


def _probe_and_ack(s: Swim, at: float, rtt: float, c: object) -> None:
    out = s.handle(TimerFired(Timer(SwimTimer.PROBE)), at)
    ping = next(o.msg for o in out if isinstance(o, Send))
    assert isinstance(ping, Ping)
    s.handle(Received(B, Ack(ping.seq, (), c)), at + rtt)  # type: ignore[arg-type]


def _swim(cfg: SwimConfig | None = None) -> Swim:
    s = Swim(ME, cfg or SwimConfig(gossip_nodes=0), random.Random(1))
    s.start(0.0)
    s.handle(Received(B, MemberUpdates((MemberState(B, 0, WireStatus.ALIVE, {}, None),))), 0.0)
    return s


def test_swim_acks_carry_our_coordinate_and_probes_update_it() -> None:
    s = _swim()
    out = s.handle(Received(B, Ping(9, ME, ())), 1.0)
    ack = out[0]
    assert isinstance(ack, Send) and isinstance(ack.msg, Ack) and ack.msg.coord == ORIGIN
    theirs = coord(0.02, height=0.001, error=0.2)
    for k in range(5):
        _probe_and_ack(s, 10.0 + 2 * k, 0.03, theirs)
    assert s.coords.vivaldi.updates == 5 and s.coords.get(B) == theirs
    assert s.coords.own() != ORIGIN
    assert abs(distance(s.coords.vivaldi.coord, theirs) - 0.03) < 0.015
    # A hostile coordinate is refused and counted; ours is untouched.
    before = s.coords.own()
    _probe_and_ack(s, 30.0, 0.03, coord(math.nan))
    assert s.coords.own() == before and s.stats()["coordinates_refused"] == 1
    assert s.coords.get(B) == theirs


def test_swim_without_coordinates_sends_none() -> None:
    s = _swim(SwimConfig(gossip_nodes=0, coordinates=False))
    ack = s.handle(Received(B, Ping(9, ME, ())), 1.0)[0]
    assert isinstance(ack, Send) and isinstance(ack.msg, Ack) and ack.msg.coord is None
    _probe_and_ack(s, 10.0, 0.03, coord(0.02))
    assert s.coords.vivaldi.updates == 0 and s.coords.get(B) is None


# ------------------------------------------------ the inlined arithmetic


def _reference(v: Vivaldi, residuals: list[float], other: Coordinate, rtt: float) -> Coordinate:
    """One update written step by step, as Serf's client does it."""
    from overlay.coordinates import ADJUSTMENT_WINDOW, CC, CE, ZERO, _apply_force

    c = v.coord
    dist = raw_distance(c, other)
    rtt = max(rtt, ZERO)
    total = max(c.error + other.error, ZERO)
    weight = c.error / total
    error = min(CE * weight * abs(dist - rtt) / rtt + c.error * (1.0 - CE * weight), ERROR_MAX)
    vec, height = _apply_force(c, CC * weight * (rtt - dist), other, v.rng)
    c = Coordinate(vec, height, error, c.adjustment)
    residuals.append(rtt - raw_distance(c, other))
    window = residuals[-ADJUSTMENT_WINDOW:]
    c = Coordinate(c.vec, c.height, c.error, sum(window) / (2.0 * ADJUSTMENT_WINDOW))
    pull = distance(ORIGIN, c) / 150.0
    vec, height = _apply_force(c, -pull * pull, ORIGIN, v.rng)
    return Coordinate(vec, height, c.error, c.adjustment)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.tuples(*[st.floats(-0.2, 0.2)] * DIMENSIONS),
            st.floats(0.0, 0.05),
            st.floats(0.0, ERROR_MAX),
            st.floats(-0.05, 0.05),
            st.floats(0.0001, 1.0),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_the_inlined_update_is_the_reference_arithmetic(
    steps: list[tuple[tuple[float, ...], float, float, float, float]],
) -> None:
    v = Vivaldi(3)
    v.update(B, coord(0.001), 0.01)  # off the origin: no random push below
    residuals = [v._residuals[0]]  # the first update's
    for vec, height, error, adj, rtt in steps:
        other = Coordinate(vec, height, error, adj)
        expected = _reference(v, residuals, other, rtt)
        v.forget(B)  # one sample: the filter passes the rtt as it is
        assert v.update(B, other, rtt)
        got = v.coord
        if not valid(expected):
            assert got == ORIGIN  # reset
            return
        for a, b in zip(
            (*got.vec, got.height, got.error, got.adjustment),
            (*expected.vec, expected.height, expected.error, expected.adjustment),
            strict=True,
        ):
            assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (got, expected)


def test_a_reaped_member_is_forgotten() -> None:
    s = _swim(SwimConfig(gossip_nodes=0, reap_after=20.0))
    _probe_and_ack(s, 10.0, 0.03, coord(0.02))
    assert s.coords.get(B) is not None and B in s.coords.vivaldi._samples
    left = MemberState(B, 1, WireStatus.LEFT, {}, None)
    s.handle(Received(B, MemberUpdates((left,))), 11.0)
    s.handle(TimerFired(Timer(SwimTimer.PROBE)), 40.0)
    assert B not in s.members.by_id
    assert s.coords.get(B) is None and B not in s.coords.vivaldi._samples
