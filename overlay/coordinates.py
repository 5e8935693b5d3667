"""Network coordinates: Vivaldi with height, as Serf computes them.

Rules of this module: sans-IO and pure arithmetic on plain floats (no
numpy: one update runs per probe, in the agent and by the thousand per
simulated second). Nothing here trusts a peer: a coordinate from the
network is checked (`valid`) before it is used, a round trip outside
(0, `MAX_RTT`] is refused, and our own coordinate is reset if it ever
stops being finite and bounded.

Theory of operation
-------------------
- Vivaldi (Dabek, Cox, Kaashoek, Morris, SIGCOMM 2004): each node holds a
  point in an 8-dimensional Euclidean space plus a *height* (the access
  link, which every path to the node pays); the estimated round trip
  between two nodes is the distance between their points plus both
  heights. Each measured round trip to a peer is a spring between the two
  points: our point moves along the line to the peer's by a step that
  grows with the error of the estimate and with our confidence relative to
  the peer's (`error`, sec. 4 "adaptive timestep": cc = ce = 0.25).
- Adjustment (Serf, from "Network Coordinates in the Wild", Ledlie,
  Gardner, Seltzer, NSDI 2007): the mean of the last `ADJUSTMENT_WINDOW`
  residuals (rtt - distance), halved, added to every estimate involving
  this node; a non-Euclidean correction that is not fed back into the
  spring.
- Gravity (ibid.): a pull toward the origin, growing as the square of the
  distance over `GRAVITY_RHO`, so the whole system does not drift away.
- Latency filter (ibid.): each peer's round trips go through a moving
  median of the last `LATENCY_FILTER` samples, which drops the occasional
  slow probe (a queued datagram, a paused process).
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Hashable
from typing import NamedTuple

DIMENSIONS = 8
ERROR_MAX = 1.5  # initial and largest error (Serf VivaldiErrorMax)
CE = 0.25  # error's moving-average weight (Vivaldi ce)
CC = 0.25  # timestep factor (Vivaldi cc)
ADJUSTMENT_WINDOW = 20
HEIGHT_MIN = 10e-6  # seconds
LATENCY_FILTER = 3
GRAVITY_RHO = 150.0
ZERO = 1e-6  # below this a length counts as zero

# Sanity bounds on what a peer may send and on what we measure. No link on
# Earth has a round trip of 10 s (Serf refuses those too); a coordinate
# component or a height beyond `MAX_COORD` seconds can only be garbage or
# malice. An adjustment is at most half a round trip.
MAX_RTT = 10.0
MAX_COORD = 100.0
MAX_ADJUSTMENT = MAX_RTT

# Peers whose latency samples we keep: the filter is bounded, whatever the
# number of distinct senders.
MAX_FILTERED_PEERS = 4096


class Coordinate(NamedTuple):
    """A node's network coordinate (also the wire record the acks carry):
    seconds throughout."""

    vec: tuple[float, ...]
    height: float
    error: float
    adjustment: float


ORIGIN = Coordinate((0.0,) * DIMENSIONS, HEIGHT_MIN, ERROR_MAX, 0.0)


def _finite(x: object, lo: float, hi: float) -> bool:
    return type(x) is float and lo <= x <= hi  # NaN fails both comparisons


def valid(c: object) -> bool:
    """Whether `c` is a coordinate we may use: the right shape and
    dimension, every number a finite float within its bounds."""
    if type(c) is not Coordinate:
        return False
    vec, height, error, adjustment = c
    if type(vec) is not tuple or len(vec) != DIMENSIONS or set(map(type, vec)) != _FLOAT:
        return False
    # A NaN or an infinity makes the sum non-finite (so does an overflow,
    # of values refused anyway); then min and max can be trusted.
    if not math.isfinite(sum(vec)) or min(vec) < -MAX_COORD or max(vec) > MAX_COORD:
        return False
    return (
        _finite(height, 0.0, MAX_COORD)
        and _finite(error, 0.0, ERROR_MAX)
        and _finite(adjustment, -MAX_ADJUSTMENT, MAX_ADJUSTMENT)
    )


_FLOAT = {float}


def raw_distance(a: Coordinate, b: Coordinate) -> float:
    """The Vivaldi estimate: Euclidean distance plus both heights."""
    s = 0.0
    for x, y in zip(a.vec, b.vec, strict=True):
        d = x - y
        s += d * d
    return math.sqrt(s) + a.height + b.height


def distance(a: Coordinate, b: Coordinate) -> float:
    """Estimated round trip between the owners of `a` and `b`, in seconds,
    with both adjustments (dropped if they would make it non-positive, as
    Serf does)."""
    dist = raw_distance(a, b)
    adjusted = dist + a.adjustment + b.adjustment
    return adjusted if adjusted > 0.0 else dist


def _apply_force(
    c: Coordinate, force: float, other: Coordinate, rng: Callable[[], random.Random]
) -> tuple[tuple[float, ...], float]:
    """(vec, height) of `c` pushed by `force` seconds away from `other`
    (toward it when negative)."""
    diff = [x - y for x, y in zip(c.vec, other.vec, strict=True)]
    mag = math.sqrt(sum([d * d for d in diff]))
    if mag > ZERO:
        step = force / mag
        height = max((c.height + other.height) * step + c.height, HEIGHT_MIN)
        return tuple([x + d * step for x, d in zip(c.vec, diff, strict=True)]), height
    # Same point: push in a random direction (so two new nodes part).
    draw = rng()
    unit = [draw.random() - 0.5 for _ in diff]
    norm = math.sqrt(sum(u * u for u in unit)) or 1.0
    step = force / norm
    return tuple([x + u * step for x, u in zip(c.vec, unit, strict=True)]), c.height


class Vivaldi:
    """One node's Vivaldi client: its coordinate, updated from measured
    round trips to peers and their coordinates."""

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._rng: random.Random | None = None  # made when first needed (rarely)
        self.coord = ORIGIN
        self._samples: dict[Hashable, list[float]] = {}  # peer -> last rtts
        self._residuals = [0.0] * ADJUSTMENT_WINDOW
        self._residual_at = 0
        self.updates = 0
        self.refused = 0  # invalid coordinates or implausible round trips
        self.resets = 0  # our coordinate went bad and started over

    def rng(self) -> random.Random:
        if self._rng is None:
            self._rng = random.Random(self._seed)
        return self._rng

    def update(self, peer: Hashable, other: object, rtt: float) -> bool:
        """A round trip of `rtt` seconds to `peer`, whose coordinate is
        `other`. False, and nothing changed, when either is not plausible.

        One probe, one call: the arithmetic is inlined on plain floats
        (tests/test_coordinates.py checks it against a step-by-step
        reference written with `raw_distance`, `distance` and the force)."""
        if not valid(other) or not _finite(rtt, 0.0, MAX_RTT) or rtt <= 0.0:
            self.refused += 1
            return False
        assert isinstance(other, Coordinate)
        rtt = self._filter(peer, rtt)
        if rtt < ZERO:
            rtt = ZERO
        vec, height, error, adjustment = self.coord
        ovec, oheight, oerror, _ = other
        # Vivaldi with the adaptive timestep: a spring toward (or away
        # from) the peer, the step weighted by our error against theirs.
        diff = [x - y for x, y in zip(vec, ovec, strict=True)]
        mag = math.sqrt(sum([d * d for d in diff]))
        dist = mag + height + oheight
        total = error + oerror
        weight = error / (total if total > ZERO else ZERO)
        cew = CE * weight
        error = cew * abs(dist - rtt) / rtt + error * (1.0 - cew)
        if error > ERROR_MAX:
            error = ERROR_MAX
        force = CC * weight * (rtt - dist)
        if mag > ZERO:
            step = force / mag
            moved = [x + d * step for x, d in zip(vec, diff, strict=True)]
            height = (height + oheight) * step + height
            if height < HEIGHT_MIN:
                height = HEIGHT_MIN
        else:
            pushed, height = _apply_force(self.coord, force, other, self.rng)
            moved = list(pushed)
        # Adjustment: the residuals' windowed mean, halved (each end adds its own).
        residual = rtt - (
            math.sqrt(sum([(x - y) * (x - y) for x, y in zip(moved, ovec, strict=True)]))
            + height
            + oheight
        )
        at = self._residual_at
        self._residuals[at] = residual
        self._residual_at = (at + 1) % ADJUSTMENT_WINDOW
        adjustment = sum(self._residuals) / (2.0 * ADJUSTMENT_WINDOW)
        if not -MAX_ADJUSTMENT <= adjustment <= MAX_ADJUSTMENT:
            adjustment = MAX_ADJUSTMENT if adjustment > 0 else -MAX_ADJUSTMENT
        # Gravity toward the origin.
        mag = math.sqrt(sum([x * x for x in moved]))
        to_origin = mag + height + HEIGHT_MIN
        if to_origin + adjustment > 0.0:
            to_origin += adjustment
        pull = to_origin / GRAVITY_RHO
        if mag > ZERO:
            step = -pull * pull / mag
            final = tuple([x + x * step for x in moved])
            height = (height + HEIGHT_MIN) * step + height
            if height < HEIGHT_MIN:
                height = HEIGHT_MIN
        else:
            here = Coordinate(tuple(moved), height, error, adjustment)
            final, height = _apply_force(here, -pull * pull, ORIGIN, self.rng)
        c = Coordinate(final, height, error, adjustment)
        self.updates += 1
        if valid(c):
            self.coord = c
        else:  # cannot happen with valid input; never keep a poisoned coordinate
            self.reset()
            self.resets += 1
        return True

    def _filter(self, peer: Hashable, rtt: float) -> float:
        """The median of `peer`'s last `LATENCY_FILTER` round trips."""
        samples = self._samples.get(peer)
        if samples is None:
            if len(self._samples) >= MAX_FILTERED_PEERS:
                del self._samples[next(iter(self._samples))]  # the oldest entry
            samples = self._samples[peer] = []
        samples.append(rtt)
        if len(samples) > LATENCY_FILTER:
            del samples[0]
        ordered = sorted(samples)
        return ordered[len(ordered) // 2]

    def forget(self, peer: Hashable) -> None:
        """`peer` left the member list: drop its latency samples."""
        self._samples.pop(peer, None)

    def reset(self) -> None:
        self.coord = ORIGIN
        self._residuals = [0.0] * ADJUSTMENT_WINDOW
        self._residual_at = 0

    def filtered_peers(self) -> int:
        return len(self._samples)


MAX_CACHED = 4096  # members' coordinates kept; the least recently heard go first


class PeerCoordinates:
    """A SWIM node's coordinates: its own Vivaldi client and the last valid
    coordinate each member sent (a bounded cache, emptied of a member when
    the member list forgets it). `enabled` False: no coordinate is sent,
    and none is learned."""

    def __init__(self, me: Hashable, enabled: bool = True) -> None:
        self.enabled = enabled
        # A generator of its own, seeded by the name: the protocol's random
        # choices stay what they were without coordinates.
        self.vivaldi = Vivaldi(zlib.crc32(repr(me).encode()))
        self.peers: dict[Hashable, Coordinate] = {}

    def own(self) -> Coordinate | None:
        """Ours, to send on an ack (None when disabled)."""
        return self.vivaldi.coord if self.enabled else None

    def observe(self, peer: Hashable, coord: object, rtt: float) -> bool:
        """`peer` answered our probe after `rtt` seconds with `coord`:
        update ours and remember its. False when refused."""
        if not self.enabled or coord is None:
            return False
        if not self.vivaldi.update(peer, coord, rtt):
            return False
        assert isinstance(coord, Coordinate)
        self.remember(peer, coord)
        return True

    def remember(self, peer: Hashable, coord: Coordinate) -> None:
        peers = self.peers
        if peers.pop(peer, None) is None and len(peers) >= MAX_CACHED:
            del peers[next(iter(peers))]
        peers[peer] = coord

    def get(self, peer: Hashable) -> Coordinate | None:
        return self.peers.get(peer)

    def forget(self, peer: Hashable) -> None:
        self.peers.pop(peer, None)
        self.vivaldi.forget(peer)
