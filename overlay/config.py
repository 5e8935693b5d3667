"""Protocol parameters, one frozen dataclass per layer.

Every default says where it comes from: "paper" with a page where the paper
gives it, "guess" where it does not and we chose.

Every numeric parameter has a range, checked when a config is built (the
`_RANGES` table of each section, then the rules that tie parameters
together, in `__post_init__`): a value out of range raises `ConfigError`,
one line that names the parameter and what it accepts, before any node
runs. Periods must be positive (a zero period is a timer that fires
forever at one instant), counts that a full structure evicts from must be at
least one, and what goes on the wire must fit its field and its frame.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

# Bytes a frame may need besides its payload (a GOSSIP) or its member states
# (a PING, a PUSH_PULL part): sender, origin and topic at their longest in
# 4-byte characters, and every number at its largest, take 3,118 bytes
# (tests/test_config.py encodes that frame). The default max_payload is
# exactly max_frame minus this.
FRAME_ENVELOPE = 4096
# The largest UDP payload over IPv4: a probe and its piggybacked member
# states go in one datagram.
MAX_DATAGRAM = 65507
# Field bounds of the wire (overlay.messages): random-walk TTLs are a byte,
# a SHUFFLE carries at most 64 nodes, a GOSSIP payload at most 64 KiB.
_MAX_TTL = 255
_SHUFFLE_NODES = 64
_MAX_WIRE_PAYLOAD = 64 * 1024


class ConfigError(ValueError):
    """A protocol parameter out of range: the message names it, says what it
    accepts and what it got, on one line."""


@dataclass(frozen=True, slots=True)
class _Range:
    """Numbers from `lo` to `hi` (None: unbounded); `*_open` excludes the
    bound itself. Floats must also be finite."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def admits(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None and not (self.lo_open or self.hi_open):
            return f"within {_show(self.lo)}..{_show(self.hi)}"
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {_show(self.lo)}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {_show(self.hi)}")
        return " and ".join(parts)


def _show(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


# Shorthands for the tables below.
_POSITIVE = _Range(0, lo_open=True)  # periods and timeouts
_NON_NEGATIVE = _Range(0)  # windows, counts that may be zero
_AT_LEAST_1 = _Range(1)


def _fail(key: str, accepts: str, value: object) -> ConfigError:
    if isinstance(value, float) and not math.isfinite(value):
        accepts = f"finite and {accepts}"
    return ConfigError(f"{key} must be {accepts}, got {value!r}")


def _check_ranges(section: str, obj: object, ranges: dict[str, _Range]) -> None:
    for name, accepted in ranges.items():
        value = getattr(obj, name)
        if not accepted.admits(value):
            raise _fail(f"{section}{name}", str(accepted), value)


@dataclass(frozen=True, slots=True)
class HyParViewConfig:
    # Active view size: log10(N)+c with c=1 covers 10,000 nodes; the paper
    # uses 5 (HyParView, DSN 2007, sec. 5).
    active_size: int = 5
    # Passive view size: k*(log10(N)+c) with k=6; the paper uses 30 (sec. 5).
    passive_size: int = 30
    # Active Random Walk Length for FORWARD_JOIN: paper uses 6 (sec. 5).
    arwl: int = 6
    # Passive Random Walk Length: the walk adds the joiner to the passive view
    # when its TTL equals this; paper uses 3 (sec. 5).
    prwl: int = 3
    # Shuffle random-walk length: the paper reuses ARWL (sec. 4.4).
    shuffle_ttl: int = 6
    # Shuffle sample: ka active + kp passive entries (paper: 3 and 4, sec. 5).
    shuffle_active: int = 3
    shuffle_passive: int = 4
    # Shuffle period. The paper counts rounds; 10 s is a guess that keeps the
    # passive view fresh at a negligible cost (iroh-gossip uses 60 s).
    shuffle_period: float = 10.0
    # Jitter applied to every period, a fraction of it (guess): stops all
    # nodes of a cluster started together from shuffling in lock-step.
    jitter: float = 0.1
    # Join: retry a seed after this long while the active view is empty,
    # doubling up to the maximum (guess, like memberlist's retry-join).
    join_retry_initial: float = 1.0
    join_retry_max: float = 30.0
    # A NEIGHBOR request with no reply within this long counts as rejected
    # (guess: comfortably above a WAN round trip).
    neighbor_timeout: float = 5.0
    # How often a node with a gap in its active view tries to fill it from the
    # passive view, beyond the immediate repair on a loss (guess).
    repair_period: float = 2.0

    def __post_init__(self) -> None:
        _check_ranges("hyparview.", self, _HYPARVIEW_RANGES)
        if self.prwl > self.arwl:
            # The walk counts down from ARWL: a larger PRWL is never met.
            raise _fail("hyparview.prwl", f"<= hyparview.arwl ({self.arwl})", self.prwl)
        if self.shuffle_active + self.shuffle_passive > _SHUFFLE_NODES - 1:
            raise ConfigError(
                "hyparview.shuffle_active + hyparview.shuffle_passive must be <= "
                f"{_SHUFFLE_NODES - 1} (a SHUFFLE carries at most {_SHUFFLE_NODES} nodes, "
                f"its sender included), got {self.shuffle_active} + {self.shuffle_passive}"
            )
        _check_backoff("hyparview.", self.join_retry_initial, self.join_retry_max)


@dataclass(frozen=True, slots=True)
class PlumtreeConfig:
    # IHAVE announcements are batched and flushed this often (guess: long
    # enough to batch a burst, short against graft_timeout_1; iroh-gossip
    # dispatches after 5 ms). New neighbours get their anti-entropy digest at
    # the same flush. Measured with the two GRAFT timeouts below
    # (docs/plumtree-timers.md): halving all three cuts the p99 latency by
    # 27-44% on 10-50 ms links at the same RMR, but raises RMR by ~0.4 on
    # 50-150 ms links; these defaults are the safe ones for an unknown network.
    ihave_flush: float = 0.2
    # GRAFT timeout after the first IHAVE for a missing message, and the
    # shorter one for each following announcer (paper sec. 3.6: timeout1 from
    # the overlay's diameter and the target recovery latency, timeout2 "in the
    # order of an average round trip time"; values a guess for 10-50 ms links).
    graft_timeout_1: float = 0.5
    graft_timeout_2: float = 0.25
    # Tree optimisation: swap an eager link for a lazy one whose announcement
    # is this many hops shorter (paper sec. 3.8; 7 in its experiments, p. 12,
    # as iroh-gossip reads it). Lower values chase every origin's shortest
    # path and churn the shared tree when senders vary.
    optimization_threshold: int = 7
    # Broadcast trees kept, one per origin, least recently used evicted
    # (overlay.trees): PRUNE and GRAFT change only the tree of the message's
    # origin, so one publisher's traffic never reshapes another's (Riak's and
    # Partisan's Plumtree). A tree costs ~150 bytes: 1,024 is 150 KB per node
    # and holds every origin of a cluster of that size, SWIM's announcements
    # included (every member is an origin). An origin beyond it starts from a
    # copy of the shared tree again. 0: the paper's single shared tree.
    origin_trees: int = 1024
    # Build every new origin's tree by flooding its first message (as
    # Partisan's per-root trees start): the fastest paths at once, at a copy
    # per link for that message. Off (the default), a new origin's first
    # message rides a copy of an existing tree and its second one floods:
    # one-shot senders cost what the paper's tree costs (overlay.trees has
    # the figures of both).
    origin_tree_flood: bool = False
    # Keep payloads this long to answer GRAFTs and anti-entropy, and refuse
    # copies older than this (issue: 60 s).
    retention: float = 60.0
    # Remember delivered ids this long (must be >= retention): a copy lives at
    # most `retention` by its age field, plus the link latencies age does not
    # count (guess: 30 s of margin). iroh-gossip keeps ids 3x its cache time.
    seen_ttl: float = 90.0
    # Memory bounds (guess): payloads cached for GRAFT/anti-entropy, by count
    # and by bytes (10,000 x 60 KiB would be 600 MB); ids remembered (100,000
    # is 60 s at ~1,600 broadcasts/s). Evicting early is counted in stats.
    cache_max_messages: int = 10_000
    cache_max_bytes: int = 64 * 1024 * 1024
    seen_max_ids: int = 100_000
    # Announced-but-missing ids tracked for GRAFT, and announcements queued
    # per lazy peer between flushes (guess: a few seconds of a heavy burst).
    # Overflow is dropped and counted; anti-entropy recovers what it costs.
    missing_max: int = 10_000
    ihave_queue_max: int = 4096
    # Anti-entropy: exchange digests with one random neighbour this often
    # (guess: a partition heals within a few periods, well inside retention).
    anti_entropy_period: float = 5.0
    # Digests leave out messages younger than this: the tree and its GRAFTs
    # are still delivering them (guess: ihave_flush + graft_timeout_1 + a few
    # graft_timeout_2), so anti-entropy does not race the tree.
    anti_entropy_delay: float = 2.0
    # Largest payload a publisher may send (bytes); frames stay under 64 KiB.
    max_payload: int = 60 * 1024
    # Per-origin ordered delivery: hold a message back until the gap before
    # it fills or the missing one can no longer arrive (its retention passed).
    ordered: bool = False
    # Messages held back per origin (guess); beyond it the gap is skipped.
    ordered_max_held: int = 1024

    def __post_init__(self) -> None:
        _check_ranges("plumtree.", self, _PLUMTREE_RANGES)
        if self.seen_ttl < self.retention:
            # Ids forgotten while their copies may still arrive: delivered twice.
            raise _fail(
                "plumtree.seen_ttl", f">= plumtree.retention ({self.retention})", self.seen_ttl
            )
        if not 0 <= self.anti_entropy_delay < self.retention:
            # A digest lists the messages older than the delay and younger
            # than the retention: none at all past it.
            raise _fail(
                "plumtree.anti_entropy_delay",
                f">= 0 and < plumtree.retention ({self.retention})",
                self.anti_entropy_delay,
            )


@dataclass(frozen=True, slots=True)
class SwimConfig:
    # Run SWIM at all. Off, a node is HyParView + Plumtree only, as in the
    # papers and iroh-gossip: no member list beyond itself, connection loss
    # the only failure detector. Full membership costs O(N) memory per node
    # and O(N^2) in a simulation, which is what keeps 100,000 simulated
    # nodes out of reach with it on.
    enabled: bool = True
    # Protocol period (SWIM paper sec. 3: T'; memberlist LAN: 1 s).
    probe_period: float = 1.0
    # Direct ping timeout before asking k others (memberlist LAN: 500 ms).
    # Must be shorter than the period: the indirect probes need the rest.
    probe_timeout: float = 0.5
    # Indirect probes via k members (SWIM paper sec. 3.1; memberlist: 3).
    # Also Lifeguard's expected number of independent suspicion confirmations.
    indirect_k: int = 3
    # Lifeguard suspicion: min = mult * max(1, log10(N)) * period, max =
    # max_mult * min (Lifeguard sec. IV-B; memberlist: mult 4, max 6x).
    suspicion_mult: float = 4.0
    suspicion_max_mult: float = 6.0
    # Retransmit each update retransmit_mult * ceil(log10(N+1)) times (SWIM
    # sec. 4.1: lambda * log N; memberlist: 4). Measured lower, 300 nodes,
    # mass-failure, seeds 1-2, 0-20% datagram loss (bench/membership_sweep.py,
    # docs/membership-over-tree.md): detection (first p50 1.02 s, full p50
    # 12.1-12.8 s) and false positives (0) do not change at 3, 2 or 1, since
    # suspicions and verdicts go over the tree; but arrivals still travel by
    # piggybacking alone (swim.announce_arrivals is off) and slow down at
    # once: p50 1.22-1.54 s at 4, 1.61-2.53 at 3, 2.56-2.76 at 2, 3.76-4.18
    # at 1 (no loss), for 12%, 24%, 39% fewer bytes. So 4 stays.
    retransmit_mult: int = 4
    # Gossip: while updates wait in the piggyback queue, send them this
    # often to this many random alive members as well, in a datagram of
    # their own (memberlist: GossipInterval 200 ms, GossipNodes 3). Probes
    # alone carry ~2 messages a second, so 1,000 joins took minutes to
    # reach every list; gossip sends the same transmissions sooner. An
    # empty queue sends nothing. 0 nodes turns it off.
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    # Gossip also goes to suspects and to members failed less than this
    # long ago, so they hear what is said of them and can refute
    # (memberlist: GossipToTheDeadTime, 30 s).
    gossip_to_the_dead: float = 30.0
    # Piggybacked member states per probe message, in bytes: a ping with its
    # updates stays one datagram under memberlist's 1,400-byte UDP budget.
    piggyback_bytes: int = 1200
    # Local health awareness: the score runs 0..awareness_max-1 and scales the
    # probe timeout and period by (score+1), so 8x at most (Lifeguard sec.
    # IV-A; memberlist AwarenessMaxMultiplier: 8).
    awareness_max: int = 8
    # Anti-entropy: full state push-pull with one random member every this
    # often, scaled up for clusters above 32 members like memberlist's
    # pushPullScale (memberlist: 30 s): the exchange costs O(N) bytes.
    push_pull_period: float = 30.0
    # After the join exchange, one more push-pull this long after it (with
    # a random member; +-25%), to learn the members that joined at the same
    # time and were gossiped about while few knew us. Measured: 100 nodes
    # joining within a second, 21 member entries still missing 4 s later
    # and until the first anti-entropy round (~40 s). A guess: longer than
    # a join takes to spread by gossip (~1 s), short against the period.
    join_followup: float = 3.0
    # Follow-ups after a join, at most (1: just the one above). Another is
    # made while the last still taught us members: its partner may have
    # missed some of the burst too. Measured with one: 300 nodes joining at
    # 100/s, a pair still missing 40 s later, left to the scaled anti-entropy
    # (2 minutes at 300 members). A guess: each extra follow-up multiplies
    # the misses by the small chance that another partner missed the same.
    join_followups: int = 3
    # A push-pull state longer than this many bytes goes in several frames
    # (guess: half the 64 KiB frame limit leaves room for the envelope).
    push_pull_part_bytes: int = 32 * 1024
    # Joining: push-pull with the next seed after this long without an
    # answer, doubling up to the maximum (guess; same as HyParView's retry).
    join_retry_initial: float = 1.0
    join_retry_max: float = 30.0
    # Failed/left members are kept as tombstones this long, so that a stale
    # alive state cannot bring them back (guess; serf keeps them far longer).
    reap_after: float = 300.0
    # Keep re-trying failed members this often, for this long, so partitions
    # merge by themselves (issue: 30 s; guess 1 h).
    reconnect_period: float = 30.0
    reconnect_for: float = 3600.0
    # A leaving node pushes its "left" state straight to this many members
    # besides gossiping it (guess: like indirect_k).
    leave_fanout: int = 3
    # Announcements (the changes this node originates, broadcast over
    # Plumtree) wait a random time between these two, so that a burst goes
    # out as one broadcast, and so that of the neighbours of a crashed node,
    # which all probe it out of turn and suspect it within milliseconds of
    # each other, the first to announce usually silences the others (who
    # strike what they hear broadcast from their own waiting batch). The
    # spread is a guess: longer than a broadcast takes to cross a few
    # overlay hops, short against the suspicion timeout (>= 4 s). Measured
    # at 1,000 nodes crashing 500: 2.3 suspicion broadcasts per failure
    # with a fixed 0.1 s, see the commit. 0 and 0 announce at once.
    announce_delay: float = 0.1
    announce_max_delay: float = 1.0
    # Announce this node's arrival over Plumtree too, once its join exchange
    # is answered (overlay.dissemination), rather than leave it to
    # piggybacking alone. Off: measured at 1,000 nodes (steady, seed 1,
    # codec on), an arrival reaches every list in p50 0.82 s / p99 1.53 s
    # instead of 1.37 / 3.33 s, but the run takes 3.71 million events
    # instead of 0.82 million (350 s of wall time instead of 130 s): a
    # thousand concurrent origins on the shared tree, while joins keep
    # adding eager links, prune each other's links (542,720 PRUNEs) and
    # 20% of deliveries come by GRAFT repair (docs/membership-over-tree.md).
    announce_arrivals: bool = False
    # Lifeguard refinements (local health, nacks, suspicion confirmations,
    # buddy system) can be turned off to measure what they buy.
    lifeguard: bool = True
    # Network coordinates (Vivaldi, `overlay.coordinates`): acks carry the
    # sender's (100 bytes), the probes' round trips update our own.
    coordinates: bool = True
    # A crashed process on a live host leaves evidence a timeout never
    # gives: its host answers that nothing listens (ICMP port unreachable,
    # TCP reset). With our own such evidence and one other accuser, a
    # suspicion ends at once instead of after Lifeguard's timeout (issue
    # 11: SIGKILL -> failed everywhere in ~1 s instead of 5-10 s). Turn it
    # off where a firewall rejects with port-unreachable, or where forged
    # ICMP is a concern: the evidence is not authenticated.
    refusal_evidence: bool = True
    # On hearing of a suspicion, ping the suspect once (the ping carries
    # the suspicion, so a live member refutes at once; a dead process's host
    # refuses it): at most this many such pings per protocol period (guess:
    # bounds the cost of a mass failure to a few datagrams a second).
    verify_max: int = 8
    # Tags: at most this many bytes of key/value metadata per member.
    max_tags_bytes: int = 512

    def __post_init__(self) -> None:
        _check_ranges("swim.", self, _SWIM_RANGES)
        if not 0 < self.probe_timeout < self.probe_period:
            # The indirect probes need the rest of the period.
            raise _fail(
                "swim.probe_timeout",
                f"> 0 and < swim.probe_period ({self.probe_period})",
                self.probe_timeout,
            )
        if self.announce_max_delay < self.announce_delay:
            raise _fail(
                "swim.announce_max_delay",
                f">= swim.announce_delay ({self.announce_delay})",
                self.announce_max_delay,
            )
        _check_backoff("swim.", self.join_retry_initial, self.join_retry_max)
        if self.max_tags_bytes > self.piggyback_bytes // 2:
            # An update that does not fit the piggyback budget is never sent;
            # half leaves room for the member's id and the tags' headers.
            raise _fail(
                "swim.max_tags_bytes",
                f"<= {self.piggyback_bytes // 2} (half of swim.piggyback_bytes: "
                "a member's state must fit in a probe)",
                self.max_tags_bytes,
            )


@dataclass(frozen=True, slots=True)
class Config:
    hyparview: HyParViewConfig = field(default_factory=HyParViewConfig)
    plumtree: PlumtreeConfig = field(default_factory=PlumtreeConfig)
    swim: SwimConfig = field(default_factory=SwimConfig)
    # Hard frame size limit for the codec (issue: 64 KiB).
    max_frame: int = 64 * 1024

    def __post_init__(self) -> None:
        _check_ranges("", self, _CONFIG_RANGES)
        room = self.max_frame - FRAME_ENVELOPE
        why = f"max_frame {self.max_frame} minus {FRAME_ENVELOPE} for the frame's envelope"
        if self.plumtree.max_payload > room:
            raise _fail("plumtree.max_payload", f"<= {room} ({why})", self.plumtree.max_payload)
        if self.swim.push_pull_part_bytes > room:
            raise _fail(
                "swim.push_pull_part_bytes", f"<= {room} ({why})", self.swim.push_pull_part_bytes
            )
        if self.max_frame > MAX_DATAGRAM:
            room = MAX_DATAGRAM - FRAME_ENVELOPE
            why = (
                f"a probe is one datagram: {MAX_DATAGRAM} bytes "
                f"minus {FRAME_ENVELOPE} for the frame's envelope"
            )
        if self.swim.piggyback_bytes > room:
            raise _fail("swim.piggyback_bytes", f"<= {room} ({why})", self.swim.piggyback_bytes)

    def replace(self, **changes: Any) -> Config:
        """A copy with dotted keys changed, e.g. `replace(**{"hyparview.arwl": 4})`.
        Values given as strings are converted to the field's type."""
        layers: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for key, value in changes.items():
            layer, _, name = key.partition(".")
            if name:
                layers.setdefault(layer, {})[name] = value
            else:
                top[layer] = _convert(self, layer, value)
        for layer, values in layers.items():
            sub = getattr(self, layer, None)
            if sub is None or not dataclasses.is_dataclass(sub):
                raise KeyError(f"unknown config section {layer!r}")
            converted = {k: _convert(sub, k, v) for k, v in values.items()}
            top[layer] = dataclasses.replace(sub, **converted)  # type: ignore[type-var]
        return dataclasses.replace(self, **top)


def _check_backoff(section: str, initial: float, maximum: float) -> None:
    if maximum < initial:
        raise _fail(
            f"{section}join_retry_max", f">= {section}join_retry_initial ({initial})", maximum
        )


# The range of every numeric parameter, section by section (rules that tie
# parameters together are in each `__post_init__`).
_HYPARVIEW_RANGES: dict[str, _Range] = {
    # A full view evicts a random entry to take a new one: it needs a slot.
    "active_size": _AT_LEAST_1,
    "passive_size": _AT_LEAST_1,
    "arwl": _Range(0, _MAX_TTL),
    "prwl": _Range(0, _MAX_TTL),
    "shuffle_ttl": _Range(0, _MAX_TTL),
    "shuffle_active": _NON_NEGATIVE,
    "shuffle_passive": _NON_NEGATIVE,
    "shuffle_period": _POSITIVE,
    # Below 1, so that a jittered period stays positive.
    "jitter": _Range(0, 1, hi_open=True),
    "join_retry_initial": _POSITIVE,
    "join_retry_max": _POSITIVE,
    "neighbor_timeout": _POSITIVE,
    "repair_period": _POSITIVE,
}
_PLUMTREE_RANGES: dict[str, _Range] = {
    "ihave_flush": _POSITIVE,
    "graft_timeout_1": _POSITIVE,
    "graft_timeout_2": _POSITIVE,
    # 0 would swap links between paths of equal length, back and forth.
    "optimization_threshold": _AT_LEAST_1,
    "origin_trees": _NON_NEGATIVE,
    "retention": _POSITIVE,
    "seen_ttl": _POSITIVE,
    "cache_max_messages": _AT_LEAST_1,
    "cache_max_bytes": _AT_LEAST_1,
    "seen_max_ids": _AT_LEAST_1,
    # 0 would never graft: lazy links would recover nothing.
    "missing_max": _AT_LEAST_1,
    # A full queue drops its oldest entry to take a new one.
    "ihave_queue_max": _AT_LEAST_1,
    "anti_entropy_period": _POSITIVE,
    # anti_entropy_delay: in __post_init__, against the retention.
    "max_payload": _Range(1, _MAX_WIRE_PAYLOAD),
    "ordered_max_held": _AT_LEAST_1,
}
_SWIM_RANGES: dict[str, _Range] = {
    "probe_period": _POSITIVE,
    # probe_timeout: in __post_init__, against the period.
    "indirect_k": _NON_NEGATIVE,
    "suspicion_mult": _POSITIVE,
    # The maximum suspicion timeout is this multiple of the minimum.
    "suspicion_max_mult": _AT_LEAST_1,
    "retransmit_mult": _AT_LEAST_1,
    "gossip_interval": _POSITIVE,
    "gossip_nodes": _NON_NEGATIVE,
    "gossip_to_the_dead": _NON_NEGATIVE,
    # No member state is smaller than this.
    "piggyback_bytes": _Range(64),
    "awareness_max": _AT_LEAST_1,
    "push_pull_period": _POSITIVE,
    "join_followup": _POSITIVE,
    "join_followups": _AT_LEAST_1,
    "push_pull_part_bytes": _Range(1024),
    "join_retry_initial": _POSITIVE,
    "join_retry_max": _POSITIVE,
    "reap_after": _NON_NEGATIVE,
    "reconnect_period": _POSITIVE,
    "reconnect_for": _NON_NEGATIVE,
    "leave_fanout": _NON_NEGATIVE,
    "announce_delay": _NON_NEGATIVE,
    "announce_max_delay": _NON_NEGATIVE,
    "verify_max": _NON_NEGATIVE,
    "max_tags_bytes": _NON_NEGATIVE,
}
_CONFIG_RANGES: dict[str, _Range] = {
    # Room for the envelope and the smallest push-pull part; at most 16 MiB,
    # the most a stream may make the agent buffer for one frame.
    "max_frame": _Range(FRAME_ENVELOPE + 1024, 16 * 1024 * 1024),
}


def _convert(obj: Any, name: str, value: Any) -> Any:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if name not in fields:
        raise KeyError(f"unknown config key {name!r} in {type(obj).__name__}")
    current = getattr(obj, name)
    if dataclasses.is_dataclass(current):
        # A whole section is given as that section's object, never as text.
        if type(value) is not type(current):
            raise ValueError(f"{name}: expected a {type(current).__name__}, got {value!r}")
        return value
    if isinstance(value, str) and not isinstance(current, str):
        if isinstance(current, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"{name}: expected a boolean, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        try:
            return type(current)(value)
        except ValueError:
            raise ValueError(f"{name}: expected {type(current).__name__}, got {value!r}") from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(current):
        raise ValueError(f"{name}: expected {type(current).__name__}, got {value!r}")
    return value
