"""SWIM: the member list and failure detection, with Lifeguard.

References: Das, Gupta, Motivala, "SWIM: Scalable Weakly-consistent
Infection-style Process Group Membership Protocol", DSN 2002; Dadgar,
Phillips, Currey, "Lifeguard: Local Health Awareness for More Accurate
Failure Detection", 2017. hashicorp/memberlist is the reference for
behaviour (not for style: nothing here reads a clock or holds a lock).

Rules of this module: it owns the member list (`overlay.members`), the
piggyback queue (`overlay.broadcasts`), local health (`overlay.awareness`)
and the suspicion timers (`overlay.suspicion`). It never does I/O; every
decision comes back as outputs (`overlay.io`). Randomness comes from the
injected `random.Random` only. Which state of a member wins is decided here,
in `_merge_all` and the `_on_alive` / `_on_suspect` / `_on_verdict` /
`_on_dead` rules, and nowhere else (tests/test_swim_rules.py has them as a
table).

Theory of operation
-------------------
- Member states: alive, suspect, failed, left, each at an *incarnation*
  that only the member itself raises. A state about a member replaces the
  one we hold when (SWIM sec. 4.2, memberlist):
  alive(i) beats anything at a lower incarnation; suspect(i) beats alive(j)
  for j <= i and suspect(j) for j < i; left(i) beats alive or suspect at
  j < i (the member's own goodbye); a failed(i) from another node is never
  applied as it is (see "Verdicts"). Failed and left members are
  *tombstones*: nothing but
  an alive at a higher incarnation brings them back (the member restarted,
  or a partition healed and it refuted), and they are reaped after
  `reap_after`. Incarnations never decrease.
- Refutation: whenever we hear we are suspect, failed or left (while not
  leaving), or alive at an incarnation above ours (we restarted), we go
  past it, ``incarnation = max(ours, theirs) + 1``, and spread alive. So a
  node never believes itself failed.
- Probing (sec. 3.1, 4.3): each protocol period, one member from a shuffled
  round-robin is pinged (a datagram). No ack within the probe timeout: k
  other members are asked with PING-REQ to ping it for us; they relay its
  ack, or answer NACK when it stays silent (Lifeguard). No ack by the end of
  the period: we suspect it, and Lifeguard's suspicion timer starts (see
  `overlay.suspicion`): it is declared failed unless it refutes in time;
  each distinct member that suspects it too shortens the wait.
- Local health (Lifeguard, `overlay.awareness`): failed probes without the
  expected nacks, and refuting, raise our score; direct acks lower it. The
  probe timeout and the period are multiplied by score + 1.
- Buddy system (Lifeguard sec. IV-C): a ping to a suspect carries the
  suspicion first, so it can refute at once. The other way round too: a
  member we hold suspect or failed that talks to us (a ping, an ack,
  anything) is told, on the ack or in a datagram of its own, once a
  period; after a heal, the first packet across the cut makes its sender
  refute.
- Dissemination (sec. 4.1): every accepted change is queued and piggybacks
  on our PINGs, PING-REQs and ACKs (`piggyback_bytes` per message, each
  update sent ``retransmit_mult * ceil(log10(N+1))`` times), and on gossip
  rounds to random members, suspects and members failed within
  `gossip_to_the_dead` included (memberlist), so that what is said of a
  member reaches the member. Changes this
  node originates (its own suspicions, the verdicts on suspicions it
  started first, its refutations, leave and tags; not its arrival: a burst
  of joins announced at once sets off concurrent broadcasts from many
  origins, whose mutual PRUNEs cut Plumtree's eager graph into pieces,
  measured: 20 components of 100 nodes, until later broadcasts GRAFT it
  whole) are also collected in `take_announcements()`
  when `announce` is on: the node broadcasts them over Plumtree so the whole
  cluster hears in a few hundred milliseconds (see `overlay.node`). Every
  other node then runs the same suspicion timer and reaches the same
  verdict at about the same time. A confirmation of someone else's
  suspicion goes to that first accuser alone; a suspicion another accuser
  broadcast while ours waited in its batching window is not broadcast
  again (`handle_announcement`).
- Anti-entropy: full-state push-pull over the stream with one random alive
  member every `push_pull_period` (scaled by cluster size as memberlist
  does), with a seed on join (retried with backoff, next seed on a failed
  dial), and with one random recently failed member every
  `reconnect_period` for `reconnect_for`: when a partition heals, that
  exchange tells the far side it was thought failed, it refutes, and the
  two member lists merge.
- Verdicts (issue 11): a member is declared failed here only by our own
  suspicion timer. Another node's failed(i) is evidence, not a decision:
  about a member we hold alive it starts one suspicion at Lifeguard's
  minimum timeout, and the accused is told directly; about one we hold
  suspect it confirms, moving the deadline to ``start + min`` but never
  before. So however many copies of a stale verdict arrive (the member
  list of the other side of a healed partition), a live member has the
  minimum timeout to refute, and hears of it at once. (memberlist turns
  failed into suspect for push-pull only, and lets a second copy kill.)
- Who may accuse: an accusation (suspect, failed, left at our incarnation)
  is believed only from a member we hold live. One from a member we hold
  failed, or do not know, comes from across a cut (after a heal, each
  side's list holds the other side failed): it changes nothing here, and
  is passed on to the accused, which refutes it for the far side.
- Holding verdicts (Lifeguard's local health carried to its end): when our
  timer expires and we are the only accuser, in a cluster big enough for
  Lifeguard to expect K confirmations, nobody else saw what we saw; the
  member stays suspect until a confirmation, a verdict or a refutation.
  And when our probes fail while we hear nobody at all, not even the
  helpers' nacks, the likelier explanation is our own isolation: on the
  first message from anyone we withdraw every suspicion only we raised
  since, abandon the probes in flight, and push-pull with that member, so
  a node that was cut off condemns nobody and learns at once that it was
  itself declared failed. In a cluster too small for confirmations
  (K = 0) a lone prober decides, as in plain SWIM.
- Graceful leave: our state becomes left at a higher incarnation, pushed to
  `leave_fanout` members, announced, and piggybacked on pings we keep
  sending until the update has been sent as often as any other.

`MemberChanged` is emitted whenever a member's status or tags change (and
once for this node at start).
"""

from __future__ import annotations

import enum
import math
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from overlay.awareness import Awareness
from overlay.broadcasts import BroadcastQueue
from overlay.config import SwimConfig
from overlay.ids import NodeId
from overlay.io import (
    SEED_NAME,
    CancelTimer,
    CloseConnection,
    ConnectFailed,
    ConnectionDown,
    Input,
    JoinCluster,
    Leave,
    MemberChanged,
    MemberStatus,
    NameConflict,
    Output,
    PeerRefused,
    Received,
    Send,
    SetTimer,
    Timer,
    TimerFired,
)
from overlay.members import DEAD, LIVE, Member, MemberInfo, MemberList
from overlay.messages import (
    PUSH_PULL_MAX_STATES,
    SWIM_MAX_UPDATES,
    Ack,
    MemberState,
    MemberUpdates,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
)
from overlay.ratelimit import RateLimit
from overlay.suspicion import Suspicion, expected_confirmations, suspicion_min

ALIVE, SUSPECT, FAILED, LEFT = (
    MemberStatus.ALIVE,
    MemberStatus.SUSPECT,
    MemberStatus.FAILED,
    MemberStatus.LEFT,
)
# The wire codes of `MemberState.status`: append only.
STATUS_CODES: dict[MemberStatus, int] = {ALIVE: 0, SUSPECT: 1, FAILED: 2, LEFT: 3}
STATUS_OF_CODE: tuple[MemberStatus, ...] = (ALIVE, SUSPECT, FAILED, LEFT)

# A relay (PING-REQ receiver) answers NACK after this fraction of the probe
# timeout, so the nack reaches the prober before its period ends (Lifeguard
# sec. IV-A: 80%).
NACK_FRACTION = 0.8
# Push-pull exchanges with no answer are forgotten after this long (guess:
# far beyond any connect timeout).
_EXCHANGE_TIMEOUT = 60.0
# memberlist's pushPullScaleThreshold: above this many members the push-pull
# period grows with log2(N).
_PUSH_PULL_SCALE_FROM = 32
# Wire codes of the states that accuse a member (suspect, failed, left).
_ACCUSING_CODES = (1, 2, 3)
# Members remembered for the once-a-period rate limit of direct messages
# (`Swim._may_tell`); the memo drops stale entries when it reaches this.
_TOLD_MAX = 4096
# Incarnations (issue 12). Only a member raises its own, by one per
# refutation, tag change or leave, so a state far above what we hold is
# not one it could have had. States above INCARNATION_MAX, or more than
# INCARNATION_STEP above the one we hold for that member (ourselves
# included), are refused and counted (`states_refused`): refuting
# (``theirs + 1``) then never leaves the wire's range (the codec takes up to
# 2**63 - 1), and one datagram cannot push a member to where it could not
# refute any more. A member restarted after 2**32 refutations would need
# two exchanges to catch up with its old incarnation; nothing else changes.
INCARNATION_MAX = 2**62
INCARNATION_STEP = 2**32
# New members learned second-hand, per sender host (see `_merge_all`): a
# join burst of 100 nodes a second brings each node ~100 new members a
# second, from many senders; exchanges we start ourselves are not limited.
_ADMIT_PER_HOST = 128.0
_ADMIT_BURST = 512


def _covers(theirs: MemberState, mine: MemberState) -> bool:
    """Does the accusation `theirs` make our pending `mine` redundant? The
    same member, at our incarnation or later, as grave or graver (suspect <
    failed/left). A suspicion never covers a verdict."""
    if mine.status not in _ACCUSING_CODES or theirs.incarnation < mine.incarnation:
        return False
    return theirs.incarnation > mine.incarnation or theirs.status >= mine.status


class SwimTimer(enum.Enum):
    PROBE = "probe"  # the protocol period
    PROBE_TIMEOUT = "probe_timeout"  # key: probe seq; no direct ack -> PING-REQ
    PROBE_END = "probe_end"  # key: probe seq; no ack at all -> suspect
    RELAY = "relay"  # key: our seq towards the target; NACK the prober
    SUSPICION = "suspicion"  # key: (member, incarnation)
    PUSH_PULL = "push_pull"
    RECONNECT = "reconnect"
    JOIN_RETRY = "join_retry"
    ANNOUNCE = "announce"  # the announcement batch is due
    GOSSIP = "gossip"  # send waiting updates to a few random members


_PROBE_TIMER = Timer(SwimTimer.PROBE)
_PUSH_PULL_TIMER = Timer(SwimTimer.PUSH_PULL)
_RECONNECT_TIMER = Timer(SwimTimer.RECONNECT)
_JOIN_TIMER = Timer(SwimTimer.JOIN_RETRY)
_ANNOUNCE_TIMER = Timer(SwimTimer.ANNOUNCE)
_GOSSIP_TIMER = Timer(SwimTimer.GOSSIP)


class TagsTooLarge(ValueError):
    """Local misuse: this node's tags exceed `max_tags_bytes`."""


class _Exchange(enum.Enum):
    JOIN = "join"
    FOLLOWUP = "followup"  # after our join: the members that joined alongside us
    ANTI_ENTROPY = "anti_entropy"
    RECONNECT = "reconnect"


@dataclass(slots=True)
class _Probe:
    target: NodeId
    incarnation: int  # the target's, when the probe began: what we accuse
    started: float
    asked: tuple[NodeId, ...] = ()  # PING-REQ sent to these
    nacks: dict[NodeId, None] = field(default_factory=dict)


@dataclass(slots=True)
class _Relay:
    origin: NodeId
    origin_seq: int
    target: NodeId
    nack: bool


# ------------------------------------------------------------------ sizes


def _str_size(s: str) -> int:
    n = len(s) if s.isascii() else len(s.encode())
    return n + (1 if n < 32 else 2 if n < 256 else 3 if n < 65536 else 5)


def _int_size(i: int) -> int:
    return 1 if i < 128 else 2 if i < 256 else 3 if i < 65536 else 5 if i < 2**32 else 9


_NODE_SIZES: dict[NodeId, int] = {}
_NODE_SIZES_MAX = 1 << 16  # the memo starts over when full


def node_size(n: NodeId) -> int:
    """Bytes of a NodeId in a msgpack frame (memoised: every push-pull and
    every queued update asks it of the same few thousand ids)."""
    size = _NODE_SIZES.get(n)
    if size is None:
        size = 1 + _str_size(n.name) + _str_size(n.host) + _int_size(n.port)
        if len(_NODE_SIZES) >= _NODE_SIZES_MAX:
            _NODE_SIZES.clear()
        _NODE_SIZES[n] = size
    return size


def tags_bytes(tags: Mapping[str, str]) -> int:
    """The size of tags as `max_tags_bytes` counts it: keys and values in UTF-8."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in tags.items())


def state_size(s: MemberState) -> int:
    """Bytes of a MemberState in a msgpack frame (exact for maps under 16
    entries, an upper bound otherwise)."""
    size = 3 + node_size(s.node) + _int_size(s.incarnation)
    if s.tags:
        size += 0 if len(s.tags) < 16 else 2
        for k, v in s.tags.items():
            size += _str_size(k) + _str_size(v)
    return size + (1 if s.accuser is None else node_size(s.accuser))


def check_tags(tags: Mapping[str, str], max_bytes: int) -> dict[str, str]:
    """A copy of `tags`, or TagsTooLarge."""
    size = tags_bytes(tags)
    if size > max_bytes:
        raise TagsTooLarge(f"tags are {size} bytes, the limit is {max_bytes} (swim.max_tags_bytes)")
    if len(tags) > 64:
        raise TagsTooLarge("at most 64 tags")
    return dict(tags)


def push_pull_interval(period: float, n: int) -> float:
    """memberlist's pushPullScale: the period times ceil(log2(n) - log2(32)) + 1
    above 32 members, so the O(N)-byte exchange stays affordable."""
    if n <= _PUSH_PULL_SCALE_FROM:
        return period
    return period * (math.ceil(math.log2(n) - math.log2(_PUSH_PULL_SCALE_FROM)) + 1)


def retransmit_limit(mult: int, n: int) -> int:
    """How many times an update is piggybacked: mult * ceil(log10(n + 1))."""
    return mult * math.ceil(math.log10(n + 1))


class Swim:
    def __init__(
        self,
        me: NodeId,
        config: SwimConfig,
        rng: random.Random,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.me = me
        self.cfg = config
        self.rng = rng
        my_tags = check_tags(tags or {}, config.max_tags_bytes)
        self.incarnation = 0
        self.members = MemberList(me, random.Random(rng.getrandbits(64)))
        self._self = Member(me, 0, ALIVE, my_tags, 0.0)
        self.members.add(self._self)
        self.awareness = Awareness(config.awareness_max if config.lifeguard else 1)
        self.queue: BroadcastQueue[NodeId, MemberState] = BroadcastQueue()
        self._seq = 0
        self._probes: dict[int, _Probe] = {}
        self._probing: dict[NodeId, int] = {}  # target -> seq of its probe in flight
        self._relays: dict[int, _Relay] = {}
        self._suspicions: dict[NodeId, Suspicion] = {}
        # Push-pull exchanges we started, by address (seeds are known by it).
        self._exchanges: dict[tuple[str, int], tuple[_Exchange, NodeId, float]] = {}
        self._reconnect: dict[NodeId, float] = {}  # failed member -> when, oldest first
        self.seeds: list[NodeId] = []
        self._seed_index = 0
        self._join_backoff = config.join_retry_initial
        self._joined = False
        self.left = False
        # Set by the node when a broadcast layer carries our announcements.
        self.announce = False
        self._announcements: list[MemberState] = []
        self._announce_armed = False  # the ANNOUNCE timer is pending...
        self._announce_at = 0.0  # ...and fires then
        self._gossip_armed = False
        self._next_meeting = 0.0  # see _meet
        self._elders: list[NodeId] = []  # our seed's members, for the follow-up
        self._followups = 0  # follow-up exchanges done since we joined
        self._followup_due = False  # the last follow-up taught us members: one more
        self._followup_news = 0  # members new to us in the follow-up under way
        self._announce_due = False  # take_announcements() hands the batch out
        self._rejoined: list[NodeId] = []
        self._told: dict[NodeId, float] = {}  # see _may_tell
        self._verify_budget = config.verify_max  # see _verify
        self._admit = RateLimit(_ADMIT_PER_HOST, _ADMIT_BURST)  # see _merge_all
        # When a message from another member last arrived, and when we last
        # suspected a member after a probe during which we heard nobody
        # (see `_reconnected`).
        self._last_heard = -math.inf
        self._last_silent_accusation = -math.inf
        self.counters: Counter[str] = Counter()

    # ----------------------------------------------------------------- API

    def start(self, now: float) -> list[Output]:
        self._self.since = now
        # Our own alive state rides on our first probes and gossip rounds
        # (memberlist does the same at start): the founder of a cluster
        # joins nobody, and a joiner's seed may itself be too new to know
        # many members, so neither can count on others to spread it.
        self._spread(self._state_of(self._self), local=False)
        period = self.cfg.probe_period
        return [
            MemberChanged(self.me, ALIVE, self.incarnation, self._self.tags),
            # A random phase, so that nodes started together do not probe in step.
            SetTimer(_PROBE_TIMER, period * self.rng.random()),
            SetTimer(_PUSH_PULL_TIMER, self._push_pull_period() * self.rng.random()),
            SetTimer(_RECONNECT_TIMER, self.cfg.reconnect_period * self.rng.random()),
        ]

    def handle(self, inp: Input, now: float) -> list[Output]:
        out: list[Output] = []
        match inp:
            case Received(sender, msg, datagram):
                if datagram and sender not in self.members.by_id:
                    self.on_stranger_datagram(sender, msg, now, out)
                else:
                    self.on_message(sender, msg, now, out)
            case TimerFired(timer):
                if not self.left or timer.kind is SwimTimer.PROBE:
                    self.on_timer(timer, now, out)
            case JoinCluster(seeds):
                if not self.left:
                    self.handle_join_cluster(seeds, now, out)
            case Leave():
                self.handle_leave(now, out)
            case ConnectFailed(peer):
                self.handle_connect_failed(peer, now, out)
            case PeerRefused(peer):
                self.handle_refused(peer, now, out)
            case ConnectionDown(peer):
                self._exchanges.pop((peer.host, peer.port), None)
            case _:
                pass
        self._arm_announce(out, now)
        self._arm_gossip(out)
        return out

    def probe_now(self, peer: NodeId, now: float) -> list[Output]:
        """Probe `peer` out of turn (its connection broke): a failure is then
        suspected within one period instead of whenever its turn comes."""
        out: list[Output] = []
        member = self.members.get(peer)
        if self.left or member is None or member.status not in LIVE or peer in self._probing:
            return out
        self.counters["probes_out_of_turn"] += 1
        self._start_probe(member, now, out)
        self._arm_announce(out, now)
        return out

    def set_tags(self, tags: Mapping[str, str], now: float) -> list[Output]:
        """Replace this node's tags (TagsTooLarge if over the limit, before
        anything changes) and spread them at a new incarnation."""
        new = check_tags(tags, self.cfg.max_tags_bytes)
        out: list[Output] = []
        if self.left:
            return out
        self._self.tags = new
        self.incarnation += 1
        self.members.set_state(self._self, ALIVE, self.incarnation, now)
        self._spread(self._state_of(self._self), local=True)
        out.append(MemberChanged(self.me, ALIVE, self.incarnation, new))
        self._arm_announce(out, now)
        return out

    def members_snapshot(self) -> tuple[MemberInfo, ...]:
        """Every member, this node included, sorted by id: an immutable snapshot."""
        return self.members.snapshot()

    def random_alive(self, k: int, exclude: tuple[NodeId, ...] = ()) -> list[NodeId]:
        return self.members.random_alive(k, exclude)

    def take_announcements(self) -> MemberUpdates | None:
        """Changes this node originated, for a broadcast: a batch once the
        `announce_delay` after the first of them has passed (at once on a
        leave), None otherwise. Call until None."""
        if not self._announce_due or not self._announcements:
            self._announce_due = False
            return None
        batch = tuple(self._announcements[:SWIM_MAX_UPDATES])
        del self._announcements[:SWIM_MAX_UPDATES]
        return MemberUpdates(batch)

    def handle_announcement(self, origin: NodeId, msg: MemberUpdates, now: float) -> list[Output]:
        """A batch `origin` broadcast to the whole cluster: merged like any
        updates. Then what it told everyone is struck from our own batch
        still waiting in its window: the neighbours of a crashed node all
        probe it out of turn and suspect it within a few milliseconds of
        each other, and one broadcast of the suspicion is enough. The
        suspicion we keep names the announcer as its first accuser, so the
        verdict is announced once too (by the announcer; everyone's own
        timer still reaches it if the announcer dies)."""
        out: list[Output] = []
        self.on_message(origin, msg, now, out)
        if self._announcements:
            told = {s.node: s for s in msg.updates if s.status in _ACCUSING_CODES}
            if told:
                kept = []
                for mine in self._announcements:
                    theirs = told.get(mine.node)
                    if theirs is not None and _covers(theirs, mine):
                        self._yield_first_accuser(mine.node, theirs, mine, out)
                        self.counters["announcements_suppressed"] += 1
                    else:
                        kept.append(mine)
                self._announcements = kept
        self._arm_announce(out, now)
        return out

    def _yield_first_accuser(
        self, node: NodeId, theirs: MemberState, mine: MemberState, out: list[Output]
    ) -> None:
        """Make the announcer of a suspicion we also raised its first accuser
        here, and send it our own as a confirmation (Lifeguard: it shortens
        the timer that decides the verdict)."""
        suspicion = self._suspicions.get(node)
        accuser = theirs.accuser
        if suspicion is None or accuser is None or accuser == self.me:
            return
        rest = {a: None for a in suspicion.accusers if a != accuser}
        suspicion.accusers = {accuser: None, **rest}
        if mine.status == 1 and mine.accuser == self.me:
            out.append(Send(accuser, MemberUpdates((mine,)), reliable=False))

    def _arm_announce(self, out: list[Output], now: float) -> None:
        """Open the batching window when announcements wait and none is open.
        Suspicions wait a random time in [announce_delay,
        announce_max_delay], so that racing accusers hear each other first;
        anything else (a verdict, a refutation, tags) waits the minimum, and
        shortens a window already open."""
        if not self._announcements or self._announce_due:
            return
        lo, hi = self.cfg.announce_delay, self.cfg.announce_max_delay
        urgent = any(a.status != 1 for a in self._announcements)
        if self._announce_armed and (not urgent or self._announce_at <= now + lo):
            return
        if hi <= 0:
            self._announce_due = True
            return
        delay = lo if urgent else lo + (hi - lo) * self.rng.random()
        self._announce_armed = True
        self._announce_at = now + delay
        out.append(SetTimer(_ANNOUNCE_TIMER, delay))

    def take_rejoined(self) -> list[NodeId]:
        """Members we had as failed that answered our reconnect push-pull
        alive (a partition healed) since the last call."""
        rejoined, self._rejoined = self._rejoined, []
        return rejoined

    def leave_done(self) -> bool:
        """After `Leave`: our "left" state has been piggybacked as often as
        any update is; a driver can exit."""
        return self.left and self.me not in self.queue

    def stats(self) -> dict[str, int]:
        m = self.members
        stats = {
            "members": len(m),
            "alive": m.count(ALIVE),
            "suspect": m.count(SUSPECT),
            "failed": m.count(FAILED),
            "left": m.count(LEFT),
            "incarnation": self.incarnation,
            "health_score": self.awareness.score,
            "queued_updates": len(self.queue),
            "probes_in_flight": len(self._probes),
        }
        stats.update(self.counters)
        return stats

    # ------------------------------------------------------------- messages

    def on_message(self, sender: NodeId, msg: Message, now: float, out: list[Output]) -> None:
        if self.left:
            # Still answer pings: the acks carry our "left" state.
            if isinstance(msg, Ping) and msg.target == self.me:
                self.on_ping(sender, msg.seq, out)
            return
        if sender != self.me:
            silent_since, self._last_heard = self._last_heard, now
            if silent_since < self._last_silent_accusation:
                self._reconnected(sender, silent_since, now, out)
        match msg:
            case Ping(seq, target, updates):
                self._merge_all(updates, sender, now, out)
                if target == self.me:
                    self.on_ping(sender, seq, out)
                else:
                    self.counters["misdirected_pings"] += 1
            case PingReq(seq, target, nack, updates):
                self._merge_all(updates, sender, now, out)
                self.on_ping_req(sender, seq, target, nack, out)
            case Ack(seq, updates):
                self._merge_all(updates, sender, now, out)
                self.on_ack(sender, seq, out)
            case Nack(seq):
                self.on_nack(sender, seq)
            case PushPull(reply, part, parts, states):
                self.on_push_pull(sender, reply, part, parts, states, now, out)
            case MemberUpdates(updates):
                self._merge_all(updates, sender, now, out)
            case _:
                return
        if sender not in self.members and isinstance(msg, Ping | PingReq | Ack):
            self._meet(sender, now, out)
        else:
            self._tell_accused_sender(sender, msg, now, out)

    def on_stranger_datagram(
        self, sender: NodeId, msg: Message, now: float, out: list[Output]
    ) -> None:
        """A datagram from a node we do not list: its sender is only what it
        claims. A ping is acked, without piggybacked states (we may not know
        a member that joined a moment ago, and its probe must not fail; an
        empty ack is no bigger than the ping, so there is nothing to
        amplify), and we push-pull with it over a stream, which proves its
        address (`_meet`, once a period). An ack may finish a ping we relay
        for a member we do not list. Anything else (piggybacked states,
        ping requests, member updates) is refused and counted."""
        if not self.left:
            if isinstance(msg, Ping) and msg.target == self.me:
                out.append(Send(sender, Ack(msg.seq, ()), reliable=False))
                self._meet(sender, now, out)
                return
            if isinstance(msg, Ack):
                relay = self._relays.get(msg.seq)
                if relay is not None and relay.target == sender:
                    self.on_ack(sender, msg.seq, out)
                    return
        self.counters["refused_from_strangers"] += 1

    def _tell_accused_sender(
        self, sender: NodeId, msg: Message, now: float, out: list[Output]
    ) -> None:
        """A member we hold suspect or failed talks to us: it cannot know, or
        it would have refuted. Tell it (on the ack, if it pinged us; else in
        a datagram of its own, once a period), so the refutation comes from
        the member itself, at once: after a partition heals, the first
        packet across the cut makes its sender refute."""
        member = self.members.get(sender)
        if member is None or member.status not in (SUSPECT, FAILED) or sender == self.me:
            return
        if isinstance(msg, Ping) and msg.target == self.me:
            return  # on_ping put the state first on the ack
        if self._may_tell(sender, now):
            self.counters["accused_told"] += 1
            out.append(Send(sender, MemberUpdates((self._state_of(member),)), reliable=False))

    def _reconnected(
        self, sender: NodeId, silent_since: float, now: float, out: list[Output]
    ) -> None:
        """We hear from a member again, the first message since
        `silent_since`, after a probe during which we heard nobody at all
        (no ack, and no nack from the members we asked to help) made us
        suspect its target. Our silence, not theirs, failed such probes
        (Lifeguard's local health, carried to its end): withdraw every
        suspicion only we raised since we last heard anyone, held or still
        running (nobody heard them), and merge member lists with the member
        we heard from, which tells us at once if the others declared *us*
        failed meanwhile. The probes still in flight were sent while nobody
        could hear us: they are abandoned, not failed."""
        self._last_silent_accusation = -math.inf
        for seq in self._probes:
            out.append(CancelTimer(Timer(SwimTimer.PROBE_TIMEOUT, seq)))
            out.append(CancelTimer(Timer(SwimTimer.PROBE_END, seq)))
        self.counters["probes_abandoned"] += len(self._probes)
        self._probes.clear()
        self._probing.clear()
        withdrawn = [
            node
            for node, suspicion in self._suspicions.items()
            if suspicion.start > silent_since and suspicion.sole(self.me)
        ]
        for node in withdrawn:
            member = self.members.by_id[node]
            self._drop_own_suspicion(member)
            self._end_suspicion(member, out)
            self.members.set_state(member, ALIVE, member.incarnation, now)
            out.append(MemberChanged(node, ALIVE, member.incarnation, member.tags))
        self.counters["suspicions_withdrawn"] += len(withdrawn)
        peer = self.members.get(sender)
        if withdrawn and peer is not None and peer.status in LIVE:
            self._push_pull(sender, _Exchange.ANTI_ENTROPY, now, out)

    def _drop_own_suspicion(self, member: Member) -> None:
        """Stop spreading our suspicion of `member`: out of the piggyback
        queue, and out of the announcement batch still in its window."""
        state = self._state_of(member)
        if self.queue.get(member.node) == state:
            self.queue.drop(member.node)
        if state in self._announcements:
            self._announcements.remove(state)

    def _meet(self, stranger: NodeId, now: float, out: list[Output]) -> None:
        """A member we do not list at all talks to us: we missed its arrival
        (in a burst of joins, an early joiner's alive state ran out of
        retransmissions while the cluster was small, and later joiners
        inherited the gap from their seeds: measured, 2 of 9,900 entries
        still missing 40 s after 100 joins). A push-pull with it fills the
        gap both ways; at most one such exchange per protocol period."""
        if stranger.name == SEED_NAME or now < self._next_meeting:
            return
        self._next_meeting = now + self.cfg.probe_period
        self.counters["strangers_met"] += 1
        self._push_pull(stranger, _Exchange.ANTI_ENTROPY, now, out)

    def on_ping(self, sender: NodeId, seq: int, out: list[Output]) -> None:
        """PING (sec. 3.1): ack at once, with piggybacked updates; to a
        member we hold suspect or failed, its own state first, so that it
        refutes (see `_tell_accused_sender`)."""
        member = None if self.left else self.members.get(sender)
        first = None
        if member is not None and member.status in (SUSPECT, FAILED):
            first = self._state_of(member)
        out.append(Send(sender, Ack(seq, self._piggyback(first)), reliable=False))

    def on_ping_req(
        self, sender: NodeId, seq: int, target: NodeId, nack: bool, out: list[Output]
    ) -> None:
        """PING-REQ (sec. 3.1): ping the target under a seq of our own and
        remember whom to relay its ack to; NACK by the deadline (Lifeguard)."""
        if target == self.me:
            out.append(Send(sender, Ack(seq, self._piggyback()), reliable=False))
            return
        self._seq += 1
        ours = self._seq
        self._relays[ours] = _Relay(sender, seq, target, nack)
        out.append(Send(target, Ping(ours, target, self._piggyback()), reliable=False))
        out.append(SetTimer(Timer(SwimTimer.RELAY, ours), self.cfg.probe_timeout * NACK_FRACTION))

    def on_ack(self, sender: NodeId, seq: int, out: list[Output]) -> None:
        """ACK: relay it if it answers a ping we sent for someone else;
        otherwise it ends our probe, if it comes from the target or from one
        of the members we asked. A direct ack in time lowers our health
        score (Lifeguard)."""
        relay = self._relays.get(seq)
        if relay is not None:
            if sender == relay.target:
                del self._relays[seq]
                out.append(CancelTimer(Timer(SwimTimer.RELAY, seq)))
                ack = Ack(relay.origin_seq, self._piggyback())
                out.append(Send(relay.origin, ack, reliable=False))
            return
        probe = self._probes.get(seq)
        if probe is None or (sender != probe.target and sender not in probe.asked):
            return
        del self._probes[seq]
        self._probing.pop(probe.target, None)
        if not probe.asked:
            out.append(CancelTimer(Timer(SwimTimer.PROBE_TIMEOUT, seq)))
            if sender == probe.target:
                self.awareness.apply(-1)
        out.append(CancelTimer(Timer(SwimTimer.PROBE_END, seq)))

    def on_nack(self, sender: NodeId, seq: int) -> None:
        probe = self._probes.get(seq)
        if probe is not None and sender in probe.asked:
            probe.nacks[sender] = None

    def on_push_pull(
        self,
        sender: NodeId,
        reply: bool,
        part: int,
        parts: int,
        states: tuple[MemberState, ...],
        now: float,
        out: list[Output],
    ) -> None:
        """PUSH-PULL: merge the sender's state; after the last part of a
        request, answer with ours (merged first, so a refutation it
        provoked goes back at once). After the last part of a reply, the
        exchange we started is over."""
        exchange = self._exchanges.get((sender.host, sender.port)) if reply else None
        kind = exchange[0] if exchange is not None else None
        joining = kind is _Exchange.JOIN
        known = len(self.members.by_id)
        self._merge_all(states, sender, now, out, joining=joining, ours=kind is not None)
        if kind is _Exchange.FOLLOWUP:
            self._followup_news += len(self.members.by_id) - known
        if joining and not self._joined:
            self._elders += [st.node for st in states if st.status == 0 and st.node != self.me]
        if part != parts - 1:
            return
        if not reply:
            self.counters["push_pulls_answered"] += 1
            out.extend(Send(sender, msg) for msg in self._state_parts(reply=True))
            return
        exchange = self._exchanges.pop((sender.host, sender.port), None)
        if exchange is None:
            return
        kind = exchange[0]
        if kind is _Exchange.JOIN and not self._joined:
            self._joined = True
            out.append(CancelTimer(_JOIN_TIMER))
            # We hold the whole list as the seed knew it, but not the members
            # that joined alongside us: while we were new, few members knew
            # us, and their arrivals were gossiped to others. One more
            # exchange once the burst has spread (join_followup) fills that
            # in; then anti-entropy every (scaled) period. (The timer armed
            # at start was scaled for a cluster of one.)
            self._arm_followup(out)
        elif kind is _Exchange.FOLLOWUP:
            # The member we followed up with may itself have missed some of
            # the burst. While a follow-up still teaches us members, one more
            # with another member (at most `join_followups`): the chance of
            # two partners missing the same member is small, and the next
            # anti-entropy exchange may be minutes away in a large cluster.
            news, self._followup_news = self._followup_news, 0
            if news and self._followups < self.cfg.join_followups:
                self._followup_due = True
                self._arm_followup(out)
        elif kind is _Exchange.RECONNECT:
            member = self.members.get(sender)
            if member is not None and member.status is ALIVE:
                self.counters["reconnected"] += 1
                self._rejoined.append(sender)
        # The stream was only for this exchange (the node keeps it when
        # another layer uses it).
        out.append(CloseConnection(sender))

    # ------------------------------------------------------- local inputs

    def on_timer(self, timer: Timer, now: float, out: list[Output]) -> None:
        key = timer.key
        match timer.kind:
            case SwimTimer.PROBE:
                self._probe_tick(now, out)
            case SwimTimer.PROBE_TIMEOUT if isinstance(key, int):
                self._probe_timeout(key, out)
            case SwimTimer.PROBE_END if isinstance(key, int):
                self._probe_end(key, now, out)
            case SwimTimer.RELAY if isinstance(key, int):
                relay = self._relays.pop(key, None)
                if relay is not None and relay.nack:
                    out.append(Send(relay.origin, Nack(relay.origin_seq), reliable=False))
            case SwimTimer.SUSPICION if isinstance(key, tuple):
                self._suspicion_expired(key, now, out)
            case SwimTimer.PUSH_PULL:
                self._anti_entropy(now, out)
            case SwimTimer.RECONNECT:
                self._try_reconnect(now, out)
            case SwimTimer.JOIN_RETRY:
                if not self._joined and self.seeds:
                    self._join_attempt(now, out)
            case SwimTimer.ANNOUNCE:
                self._announce_armed = False
                self._announce_due = True
            case SwimTimer.GOSSIP:
                self._gossip_armed = False
                self._gossip(now, out)
            case _:
                pass

    def handle_join_cluster(self, seeds: tuple[NodeId, ...], now: float, out: list[Output]) -> None:
        """Join: push-pull with a seed (one at a time, the next one at once
        if the dial fails), retried with capped exponential backoff until a
        seed answers."""
        mine = (self.me.host, self.me.port)
        self.seeds = [s for s in seeds if (s.host, s.port) != mine]
        self._seed_index = 0
        self._join_backoff = self.cfg.join_retry_initial
        if self.seeds:
            self._joined = False
            self._join_attempt(now, out)

    def handle_connect_failed(self, peer: NodeId, now: float, out: list[Output]) -> None:
        exchange = self._exchanges.pop((peer.host, peer.port), None)
        if exchange is None or exchange[0] is not _Exchange.JOIN or self._joined:
            return
        if self.seeds and self._seed_index % len(self.seeds) != 0:
            # Do not wait for the retry timer: the next seed may be up.
            self._join_attempt(now, out)

    def handle_leave(self, now: float, out: list[Output]) -> None:
        """Graceful leave: left at a higher incarnation, pushed to a few
        members, announced, and piggybacked on the pings we keep sending
        until it has been sent as often as any update."""
        if self.left:
            return
        self.left = True
        self.incarnation += 1
        self.members.set_state(self._self, LEFT, self.incarnation, now)
        state = self._state_of(self._self)
        self._spread(state, local=True)
        self._announce_due = True  # now, while the links are up
        push = MemberUpdates((state,))
        for peer in self.members.random_alive(self.cfg.leave_fanout):
            out.append(Send(peer, push, reliable=False))
        out.append(MemberChanged(self.me, LEFT, self.incarnation, self._self.tags))
        out.extend(CancelTimer(t) for t in (_PUSH_PULL_TIMER, _RECONNECT_TIMER, _JOIN_TIMER))

    # ------------------------------------------------------------- probing

    def _probe_tick(self, now: float, out: list[Output]) -> None:
        """The protocol period: reap old tombstones, probe the next member."""
        self._verify_budget = self.cfg.verify_max
        if self.left:
            if self.me in self.queue:
                target = self.members.next_probe_target()
                if target is not None:
                    self._seq += 1
                    ping = Ping(self._seq, target.node, self._piggyback())
                    out.append(Send(target.node, ping, reliable=False))
                out.append(SetTimer(_PROBE_TIMER, self.cfg.probe_period))
            return
        for node in self.members.reap(now, self.cfg.reap_after):
            self.queue.drop(node)
            self.counters["reaped"] += 1
        target = self.members.next_probe_target()
        if target is not None and target.node not in self._probing:
            self._start_probe(target, now, out)
        out.append(SetTimer(_PROBE_TIMER, self.awareness.scale(self.cfg.probe_period)))

    def _start_probe(self, target: Member, now: float, out: list[Output]) -> None:
        self._seq += 1
        seq = self._seq
        self._probes[seq] = _Probe(target.node, target.incarnation, now)
        self._probing[target.node] = seq
        buddy = None
        if self.cfg.lifeguard and target.status is SUSPECT:
            suspicion = self._suspicions.get(target.node)
            if suspicion is None or not suspicion.held:
                buddy = self._state_of(target)
        ping = Ping(seq, target.node, self._piggyback(buddy))
        out.append(Send(target.node, ping, reliable=False))
        self.counters["probes"] += 1
        scale = self.awareness.scale
        out.append(SetTimer(Timer(SwimTimer.PROBE_TIMEOUT, seq), scale(self.cfg.probe_timeout)))
        out.append(SetTimer(Timer(SwimTimer.PROBE_END, seq), scale(self.cfg.probe_period)))

    def _probe_timeout(self, seq: int, out: list[Output]) -> None:
        """No direct ack in time: ask k random alive members (sec. 3.1)."""
        probe = self._probes.get(seq)
        if probe is None:
            return
        probe.asked = tuple(self.members.random_alive(self.cfg.indirect_k, (probe.target,)))
        for helper in probe.asked:
            req = PingReq(seq, probe.target, self.cfg.lifeguard, self._piggyback())
            out.append(Send(helper, req, reliable=False))
        self.counters["ping_reqs"] += len(probe.asked)

    def _probe_end(self, seq: int, now: float, out: list[Output]) -> None:
        """The period ended without an ack: suspect the target. Lifeguard:
        every missing nack raises our health score (the relays could not
        reach us either, so the trouble may be ours); with nobody to ask,
        the failed probe itself does."""
        probe = self._probes.pop(seq, None)
        if probe is None:
            return
        if self._probing.get(probe.target) == seq:
            del self._probing[probe.target]
        self.counters["probes_failed"] += 1
        if self.cfg.lifeguard:
            expected = len(probe.asked)
            self.awareness.apply(expected - len(probe.nacks) if expected else 1)
            if expected and self._last_heard < probe.started:
                self._last_silent_accusation = now  # see _reconnected
                self.counters["silent_probes"] += 1
        self._on_suspect(probe.target, probe.incarnation, self.me, now, out, local=True)

    def _suspicion_expired(self, key: tuple[object, ...], now: float, out: list[Output]) -> None:
        """No refutation in time: failed. A timer from an older suspicion
        (the member refuted, or was suspected again at a higher
        incarnation) is stale and ignored."""
        if len(key) != 2:
            return
        node, incarnation = key
        if not isinstance(node, NodeId) or not isinstance(incarnation, int):
            return
        member = self.members.get(node)
        if member is None or member.status is not SUSPECT or member.incarnation != incarnation:
            return
        suspicion = self._suspicions.get(node)
        if suspicion is not None and self._hold(suspicion):
            if not suspicion.held:
                suspicion.held = True
                self.counters["verdicts_held"] += 1
                self._drop_own_suspicion(member)  # not believed enough to spread
            return
        self._suspicions.pop(node, None)
        self.counters["declared_failed"] += 1
        # Every node that heard the suspicion runs this timer, and they all
        # expire within a broadcast's latency of each other: only the first
        # accuser announces the verdict, or a failure would cost N broadcasts.
        first = suspicion is not None and next(iter(suspicion.accusers)) == self.me
        leaving = suspicion is not None and suspicion.leaving
        self._on_dead(node, incarnation, LEFT if leaving else FAILED, now, out, local=first)

    def _hold(self, suspicion: Suspicion) -> bool:
        """Hold our verdict? When we are the only accuser although the
        cluster is big enough to expect confirmations (Lifeguard's K > 0),
        and no other node's verdict came: nobody else saw what we saw.
        Either only we cannot reach the member, and it will hear our
        suspicion and refute it, or we are cut off ourselves, and our
        verdicts would be wrong about everyone (after the heal they would
        reach the others as stale verdicts). The suspicion stays until a
        confirmation, a verdict or a refutation settles it, or, if we heard
        from nobody since it began, until we hear from anyone (then it is
        withdrawn: `_reconnected`). In a cluster too small for confirmations
        (K = 0) a lone prober decides, as in plain SWIM."""
        return suspicion.k > 0 and not suspicion.verdict and suspicion.sole(self.me)

    # -------------------------------------------------------- anti-entropy

    def _anti_entropy(self, now: float, out: list[Output]) -> None:
        for key in [k for k, (_, _, t) in self._exchanges.items() if now - t > _EXCHANGE_TIMEOUT]:
            del self._exchanges[key]
        elders, self._elders = self._elders, []
        if elders:
            # The follow-up after our join: with a member that was there
            # before us (its list had time to take in the joins we missed);
            # a random one could be as new as we are.
            live = [
                e for e in elders if (m := self.members.get(e)) is not None and m.status is ALIVE
            ]
            peers = [self.rng.choice(live)] if live else self.members.random_alive(1)
        else:
            peers = self.members.random_alive(1)
        followup = bool(elders) or self._followup_due
        self._followup_due = False
        if followup:
            self._followups += 1
            self._followup_news = 0
        kind = _Exchange.FOLLOWUP if followup else _Exchange.ANTI_ENTROPY
        for peer in peers:
            self._push_pull(peer, kind, now, out)
        period = self._push_pull_period()
        out.append(SetTimer(_PUSH_PULL_TIMER, period * (0.9 + 0.2 * self.rng.random())))

    def _arm_followup(self, out: list[Output]) -> None:
        """The next push-pull is a follow-up, `join_followup` (+-25%) away."""
        delay = self.cfg.join_followup * (0.75 + 0.5 * self.rng.random())
        out.append(SetTimer(_PUSH_PULL_TIMER, delay))

    def _try_reconnect(self, now: float, out: list[Output]) -> None:
        """Push-pull with one random member that failed within
        `reconnect_for` (and is still failed, or was reaped since)."""
        candidates = self._reconnect
        while candidates:
            node, since = next(iter(candidates.items()))
            if since + self.cfg.reconnect_for > now:
                break
            del candidates[node]
        live = [n for n in candidates if (m := self.members.get(n)) is None or m.status is FAILED]
        if live:
            self._push_pull(self.rng.choice(live), _Exchange.RECONNECT, now, out)
        period = self.cfg.reconnect_period
        out.append(SetTimer(_RECONNECT_TIMER, period * (0.9 + 0.2 * self.rng.random())))

    def _join_attempt(self, now: float, out: list[Output]) -> None:
        seed = self.seeds[self._seed_index % len(self.seeds)]
        self._seed_index += 1
        self._exchanges.pop((seed.host, seed.port), None)
        self._push_pull(seed, _Exchange.JOIN, now, out)
        out.append(SetTimer(_JOIN_TIMER, self._join_backoff))
        self._join_backoff = min(self._join_backoff * 2, self.cfg.join_retry_max)

    def _push_pull(self, peer: NodeId, kind: _Exchange, now: float, out: list[Output]) -> None:
        key = (peer.host, peer.port)
        if key in self._exchanges:
            return
        self._exchanges[key] = (kind, peer, now)
        self.counters["push_pulls"] += 1
        out.extend(Send(peer, msg) for msg in self._state_parts(reply=False))

    def _state_parts(self, reply: bool) -> list[PushPull]:
        """Our whole member list, tombstones included, in frames of at most
        `push_pull_part_bytes`."""
        budget = self.cfg.push_pull_part_bytes
        parts: list[list[MemberState]] = [[]]
        size = 0
        for member in self.members:
            if member.status is ALIVE:
                state, n = self._alive_state(member)
            else:
                state = self._state_of(member)
                n = state_size(state)
            if parts[-1] and (size + n > budget or len(parts[-1]) >= PUSH_PULL_MAX_STATES):
                parts.append([])
                size = 0
            parts[-1].append(state)
            size += n
        return [PushPull(reply, i, len(parts), tuple(p)) for i, p in enumerate(parts)]

    def _push_pull_period(self) -> float:
        return push_pull_interval(self.cfg.push_pull_period, self.members.live)

    # ----------------------------------------------------- the state rules

    def _merge_all(
        self,
        states: tuple[MemberState, ...],
        sender: NodeId,
        now: float,
        out: list[Output],
        *,
        joining: bool = False,
        ours: bool = False,
    ) -> None:
        """Merge `states` from `sender` (`joining`: the reply to our join;
        `ours`: the reply to an exchange we started, with a member we
        chose). Members new to us that arrive otherwise are admitted at most
        `_ADMIT_PER_HOST` a second per sender host: one member could
        otherwise fill every list with fabricated members (5,000 of them
        kept a paused member unprobed for 45 s, issue 12)."""
        known = self.members.by_id
        # Accusations are believed only from a member we hold live, judged
        # before this message changes anything (see `_pass_on`).
        author = known.get(sender)
        trusted = author is not None and author.status in LIVE
        for state in states:
            node = state.node
            status = STATUS_OF_CODE[state.status]
            member = known.get(node)
            if status is ALIVE and member is not None and state.incarnation <= member.incarnation:
                continue  # the common case: nothing new
            if state.incarnation > INCARNATION_MAX or (
                member is not None and state.incarnation - member.incarnation > INCARNATION_STEP
            ):
                self.counters["states_refused"] += 1
                continue
            if status is ALIVE:
                if node.name == SEED_NAME:
                    continue
                if member is None and not ours and not self._admit.allow(sender.host, now):
                    self.counters["admissions_refused"] += 1
                    continue
                if state.tags and tags_bytes(state.tags) > self.cfg.max_tags_bytes:
                    self.counters["oversized_tags_dropped"] += 1
                    continue
                # A joiner learns the whole cluster from its seed's reply:
                # none of that is news to anyone but itself, so only the
                # seed's own state is passed on. Members new to us in any
                # other exchange (our follow-up after joining, anti-entropy,
                # a reconnect) are gaps others may share: spread them.
                news = member is not None or not joining or node == sender
                self._on_alive(node, state.incarnation, state.tags, now, out, spread=news)
                continue
            if node.name == SEED_NAME:
                continue
            if node == self.me:
                self._accused(state.incarnation, sender, now, out)
            elif not trusted:
                self._pass_on(state, now, out)
            elif status is SUSPECT:
                accuser = state.accuser or sender
                self._on_suspect(node, state.incarnation, accuser, now, out, local=False)
            else:
                self._on_verdict(node, state.incarnation, status, sender, now, out)

    def _accused(self, incarnation: int, sender: NodeId, now: float, out: list[Output]) -> None:
        """Someone says we are suspect, failed or left: refute it if it is
        about our incarnation or later. An accusation we already refuted
        means the sender missed our refutation: send it our alive state
        directly, so it does not hold us suspect (or let its timer end us)
        while the refutation finds its way."""
        if incarnation >= self.incarnation:
            self._refute(incarnation, now)
        elif self._may_tell(sender, now):
            self.counters["refutations_resent"] += 1
            state = self._state_of(self._self)
            out.append(Send(sender, MemberUpdates((state,)), reliable=False))

    def _pass_on(self, state: MemberState, now: float, out: list[Output]) -> None:
        """An accusation from a member we hold failed, or do not know: it
        could not reach the accused (we could, or we would hold it failed
        too), as after a partition heals, when each side's member list holds
        the other side failed. It is not evidence, so it changes nothing
        here; but the accused must refute it for the accuser's side to take
        it back, so it is passed on to the accused, once a protocol period
        at most."""
        member = self.members.get(state.node)
        if member is None or member.status not in LIVE or state.incarnation < member.incarnation:
            return
        self.counters["accusations_passed_on"] += 1
        if self._may_tell(state.node, now):
            out.append(Send(state.node, MemberUpdates((state,)), reliable=False))

    def _may_tell(self, node: NodeId, now: float) -> bool:
        """Rate limit for the direct messages above: once per protocol
        period per member. The memo forgets old entries as it grows."""
        told = self._told
        last = told.get(node)
        if last is not None and now - last < self.cfg.probe_period:
            return False
        if len(told) >= _TOLD_MAX:
            horizon = now - self.cfg.probe_period
            self._told = told = {n: t for n, t in told.items() if t >= horizon}
        told[node] = now
        return True

    def _on_verdict(
        self,
        node: NodeId,
        incarnation: int,
        status: MemberStatus,
        accuser: NodeId,
        now: float,
        out: list[Output],
    ) -> None:
        """failed(i) or left(i) about another member, from a member we hold
        live. The rule (issue 11; memberlist applies it to push-pull only,
        we to every path):

        - a verdict never kills a member at once: about a member we hold
          alive (at i or below) it starts one suspicion, whose timer is
          Lifeguard's minimum (the verdict stands for the confirmations its
          author collected), and the accused is told directly so it can
          refute;
        - about a member we hold suspect at i it is a confirmation: the
          deadline moves to ``start + min`` at the earliest, so however
          many copies of a stale verdict arrive, the member has the
          minimum timeout to refute; a suspicion older than that ends now;
        - left(j) above the incarnation we hold, from the member itself (its
          push to a few members as it leaves, its announcement), is its
          goodbye: applied as it is. Relayed by anyone else it is taken on
          trust only once the member had the time to deny it: a suspicion
          at Lifeguard's minimum that ends as *left* (a forged goodbye
          repeated every half second kept a live member shown left 89% of
          the time: now it refutes each one, and is never shown left).
          left(i) at our incarnation cannot be the member's and is a verdict.

        Stale or older states (j below what we hold, or about tombstones)
        change nothing."""
        member = self.members.get(node)
        if member is None or member.status in DEAD or incarnation < member.incarnation:
            return
        if status is LEFT and incarnation > member.incarnation:
            if accuser == node:
                self._on_dead(node, incarnation, LEFT, now, out, local=False)
                return
            self.counters["goodbyes_relayed"] += 1
            self._on_suspect(node, incarnation, accuser, now, out, local=False, verdict=True)
            relayed = self._suspicions.get(node)
            if relayed is not None:
                relayed.leaving = True
            state = MemberState(node, incarnation, 1, {}, accuser)
            self._verify(node, state, now, out, budget=False)
            return
        suspicion = None
        if member.status is SUSPECT and incarnation == member.incarnation:
            suspicion = self._suspicions.get(node)
        if suspicion is not None:
            suspicion.confirm_verdict(accuser)
            self.counters["verdicts_confirming"] += 1
            if suspicion.proven(self.me):
                self._declare_proven(member, suspicion, now, out)
                return
            timer = Timer(SwimTimer.SUSPICION, (node, incarnation))
            out.append(SetTimer(timer, max(0.0, suspicion.deadline() - now)))
            return
        self.counters["verdicts_as_suspicions"] += 1
        self._on_suspect(node, incarnation, accuser, now, out, local=False, verdict=True)
        self._verify(node, MemberState(node, incarnation, 1, {}, accuser), now, out, budget=False)

    def _on_alive(
        self,
        node: NodeId,
        incarnation: int,
        tags: dict[str, str],
        now: float,
        out: list[Output],
        *,
        spread: bool = True,
    ) -> None:
        """alive(i): new members join; a known one takes it when i is above
        what we hold, whatever its status (a refutation, a restart, a
        healed partition). About us: we restarted and an older self went
        higher; go past it."""
        if node == self.me:
            if incarnation > self.incarnation:
                self._refute(incarnation, now)
            return
        member = self.members.get(node)
        if member is None:
            if self._name_taken(node, now, out):
                return
            member = Member(node, incarnation, ALIVE, tags, now)
            self.members.add(member)
            out.append(MemberChanged(node, ALIVE, incarnation, tags))
            if spread:
                self._spread(self._state_of(member), local=False)
            return
        if incarnation <= member.incarnation:
            return
        old = member.status
        self._end_suspicion(member, out)
        self.members.set_state(member, ALIVE, incarnation, now)
        changed = old is not ALIVE or tags != member.tags
        member.tags = tags
        if changed:
            out.append(MemberChanged(node, ALIVE, incarnation, tags))
        if old in DEAD:
            self._reconnect.pop(node, None)
        self._spread(self._state_of(member), local=False)

    def _name_taken(self, node: NodeId, now: float, out: list[Output]) -> bool:
        """Does a live member already hold `node`'s name at another address?
        Then `node` is refused (a second agent started under a member's
        name was listed twice, issue 12), and the driver hears of it once a
        period: the holder's side logs it; when the holder is this node and
        we only just joined, *we* are the newcomer (our seed knew the name
        first) and the claimant is us. A name whose holder failed or left
        passes to the new address (a member restarted elsewhere)."""
        holder = self.members.named(node.name)
        if holder is None or holder.node == node or holder.status not in LIVE:
            return False
        self.counters["name_conflicts"] += 1
        if holder.node == self.me and not self._joined and self.seeds:
            conflict = NameConflict(node.name, holder=node, claimant=self.me)
        else:
            conflict = NameConflict(node.name, holder=holder.node, claimant=node)
        if self._may_tell(node, now):
            out.append(conflict)
        return True

    def _on_suspect(
        self,
        node: NodeId,
        incarnation: int,
        accuser: NodeId,
        now: float,
        out: list[Output],
        *,
        local: bool,
        verdict: bool = False,
    ) -> None:
        """suspect(i): an alive member at i or below becomes suspect and its
        suspicion timer starts; for a member already suspect at i, a new
        accuser is a confirmation that brings the deadline closer
        (Lifeguard), and is passed on. (`verdict`: the suspicion stands for
        another node's verdict, see `_on_verdict`.)"""
        member = self.members.get(node)
        if member is None or member.status in DEAD or incarnation < member.incarnation:
            return
        if member.status is SUSPECT and incarnation == member.incarnation:
            suspicion = self._suspicions.get(node)
            if suspicion is None:
                return
            if suspicion.confirm(accuser):
                self.counters["confirmations"] += 1
                delay = max(0.0, suspicion.deadline() - now)
                out.append(SetTimer(Timer(SwimTimer.SUSPICION, (node, incarnation)), delay))
                state = MemberState(node, incarnation, 1, {}, accuser)
                self._spread(state, local=False)
                if local:
                    self._confirm_to_first_accuser(suspicion, state, out)
            if suspicion.proven(self.me):
                self._declare_proven(member, suspicion, now, out)
            return
        self._end_suspicion(member, out)
        self.members.set_state(member, SUSPECT, incarnation, now)
        n = self.members.live
        lifeguard = self.cfg.lifeguard
        k = expected_confirmations(self.cfg.indirect_k, n) if lifeguard else 0
        lo = suspicion_min(self.cfg.suspicion_mult, n, self.cfg.probe_period)
        hi = lo * self.cfg.suspicion_max_mult if lifeguard else lo
        suspicion = Suspicion(accuser, now, k, lo, hi, verdict=verdict)
        self._suspicions[node] = suspicion
        self.counters["suspicions"] += 1
        out.append(MemberChanged(node, SUSPECT, incarnation, member.tags))
        out.append(SetTimer(Timer(SwimTimer.SUSPICION, (node, incarnation)), suspicion.timeout()))
        state = MemberState(node, incarnation, 1, {}, accuser)
        self._spread(state, local=local)
        if accuser != self.me and not verdict:
            self._verify(node, state, now, out, budget=True)

    def handle_refused(self, peer: NodeId, now: float, out: list[Output]) -> None:
        """`peer`'s host says nothing listens at its address (a crashed
        process on a live host; `overlay.io.PeerRefused`). That is our own
        evidence: we suspect it at once (or confirm a suspicion someone
        else raised), and with one other accuser it is declared failed now
        instead of after Lifeguard's timeout. A silent member (host down,
        network cut, process paused) gives no such evidence and keeps the
        full Lifeguard path."""
        member = self.members.get(peer)
        if not self.cfg.refusal_evidence or self.left or member is None or peer == self.me:
            return
        if member.status not in LIVE:
            return
        self.counters["refusals"] += 1
        self._on_suspect(peer, member.incarnation, self.me, now, out, local=True)
        suspicion = self._suspicions.get(peer)
        if suspicion is None:  # refuted meanwhile? (not in one call; kept for safety)
            return
        suspicion.refused = True
        if suspicion.proven(self.me):
            self._declare_proven(member, suspicion, now, out)

    def _declare_proven(
        self, member: Member, suspicion: Suspicion, now: float, out: list[Output]
    ) -> None:
        """Failed now: refused here and accused elsewhere (see
        `handle_refused`). The first accuser announces it, as for a timer."""
        first = next(iter(suspicion.accusers)) == self.me
        self.counters["refused_verdicts"] += 1
        self.counters["declared_failed"] += 1
        self._on_dead(member.node, member.incarnation, FAILED, now, out, local=first)

    def _verify(
        self, node: NodeId, state: MemberState, now: float, out: list[Output], *, budget: bool
    ) -> None:
        """Ping a member we just heard accused, the accusation first on the
        ping: a live member refutes at once (Lifeguard's buddy system, from
        every node that hears the suspicion, not only from its next
        prober), and a crashed process's host refuses it, which is our own
        evidence (`handle_refused`). Once a period per member, and at most
        `verify_max` a period in all when `budget` (the ack is not awaited:
        a missing one proves nothing a probe would not)."""
        if budget:
            if self._verify_budget <= 0:
                self.counters["verifications_skipped"] += 1
                return
            self._verify_budget -= 1
        if not self._may_tell(node, now):
            return
        self.counters["verifications"] += 1
        self._seq += 1
        out.append(Send(node, Ping(self._seq, node, self._piggyback(state)), reliable=False))

    def _confirm_to_first_accuser(
        self, suspicion: Suspicion, state: MemberState, out: list[Output]
    ) -> None:
        """Our own probe confirms a suspicion someone else raised. Only the
        first accuser announces the verdict (see `_suspicion_expired`), so
        its timer is the one a confirmation must shorten: tell it directly,
        one datagram, instead of broadcasting to every member. A
        confirmation broadcast per confirmer cost k+1 cluster-wide
        broadcasts per failure, which under a mass failure is a storm.
        Everyone else still hears it piggybacked."""
        first = next(iter(suspicion.accusers))
        if isinstance(first, NodeId) and first != self.me:
            out.append(Send(first, MemberUpdates((state,)), reliable=False))

    def _on_dead(
        self,
        node: NodeId,
        incarnation: int,
        status: MemberStatus,
        now: float,
        out: list[Output],
        *,
        local: bool,
    ) -> None:
        """failed(i) / left(i), as decided here (our suspicion timer ran
        out) or by `_on_verdict`: a live member at i or below becomes a
        tombstone."""
        member = self.members.get(node)
        if member is None or member.status in DEAD or incarnation < member.incarnation:
            return
        self._end_suspicion(member, out)
        self.members.set_state(member, status, incarnation, now)
        out.append(MemberChanged(node, status, incarnation, member.tags))
        if status is FAILED:
            self._reconnect[node] = now
        self._spread(self._state_of(member), local=local)

    def _refute(self, accused: int, now: float) -> None:
        """Someone holds a state about us at `accused` that is not ours: go
        past it and spread alive (SWIM sec. 4.2). Lifeguard: having to
        refute means others could not hear us; raise our health score.
        (`_merge_all` refuses states above INCARNATION_MAX: this stays in
        the wire's range.)"""
        self.incarnation = max(self.incarnation, accused) + 1
        self.members.set_state(self._self, ALIVE, self.incarnation, now)
        self.awareness.apply(1)
        self.counters["refutations"] += 1
        self._spread(self._state_of(self._self), local=True)

    def _end_suspicion(self, member: Member, out: list[Output]) -> None:
        if self._suspicions.pop(member.node, None) is not None:
            key = (member.node, member.incarnation)
            out.append(CancelTimer(Timer(SwimTimer.SUSPICION, key)))

    # ---------------------------------------------------------- spreading

    def _alive_state(self, member: Member) -> tuple[MemberState, int]:
        """An alive member's wire state and its size, memoised on the member:
        every push-pull sends the whole list, mostly unchanged."""
        memo = member.wire
        if memo is not None and memo[0] == member.incarnation and memo[1] is member.tags:
            return memo[2], memo[3]
        state = MemberState(member.node, member.incarnation, 0, member.tags, None)
        size = state_size(state)
        member.wire = (member.incarnation, member.tags, state, size)
        return state, size

    def _state_of(self, member: Member) -> MemberState:
        if member.status is ALIVE:
            return self._alive_state(member)[0]
        code = STATUS_CODES[member.status]
        accuser = None
        if member.status is SUSPECT:
            suspicion = self._suspicions.get(member.node)
            first = None if suspicion is None else next(iter(suspicion.accusers))
            accuser = first if isinstance(first, NodeId) else self.me
        return MemberState(member.node, member.incarnation, code, {}, accuser)

    def _spread(self, state: MemberState, *, local: bool) -> None:
        """Queue a change for piggybacking; announce it too when this node
        originated it."""
        self.queue.put(state.node, state, state_size(state))
        if local and self.announce:
            self._announcements.append(state)

    def _arm_gossip(self, out: list[Output]) -> None:
        """Gossip rounds run while the piggyback queue holds updates."""
        if self._gossip_armed or not self.queue or self.cfg.gossip_nodes <= 0:
            return
        if self.members.live < 2:  # nobody to tell yet
            return
        self._gossip_armed = True
        out.append(SetTimer(_GOSSIP_TIMER, self.cfg.gossip_interval))

    def _gossip(self, now: float, out: list[Output]) -> None:
        """One gossip round (memberlist's gossip): the waiting updates, as
        much as a datagram holds, to a few random members, suspects and the
        recently failed included (`MemberList.gossip_targets`); each counts
        as a transmission like a piggyback does."""
        cfg = self.cfg
        for peer in self.members.gossip_targets(cfg.gossip_nodes, now, cfg.gossip_to_the_dead):
            updates = self._piggyback()
            if not updates:
                break
            out.append(Send(peer, MemberUpdates(updates), reliable=False))
            self.counters["gossip_sent"] += 1

    def _piggyback(self, first: MemberState | None = None) -> tuple[MemberState, ...]:
        budget = self.cfg.piggyback_bytes
        limit = retransmit_limit(self.cfg.retransmit_mult, self.members.live)
        if first is None:
            updates = self.queue.take(budget, limit)
        else:
            updates = [first, *self.queue.take(budget - state_size(first), limit, first.node)]
        return tuple(updates[:SWIM_MAX_UPDATES])
