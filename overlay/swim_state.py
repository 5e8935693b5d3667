"""SWIM's state: the fields every part of SWIM shares, and its small records.

Rules of this module: data and the few lookups every part uses (a member's
wire state, the once-a-period rate limit of direct messages); no protocol
step. The parts build on it in dependency order, each a module of one job:

    SwimBase (here)   the state, the lifecycle, timers and records
    Dissemination     the piggyback queue, dissemination rounds, announcements
    Merging           applying the merge rules (`overlay.member_rules`)
    Exchanges         push-pull: joining, anti-entropy, reconnecting
    Probing           ping, ping-req, suspicion timers, local health
    Swim              the entry point: lifecycle and dispatch (`overlay.swim`)

Each part is a class that inherits the one before, so a part calls only
what lies below it; `Swim` is the one class anyone builds.
"""

from __future__ import annotations

import enum
import math
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from overlay.awareness import Awareness
from overlay.backoff import Backoff
from overlay.codec import NODE_SIZES, int_size, node_size, shared_alive_state, state_size
from overlay.config import SwimConfig
from overlay.coordinates import PeerCoordinates
from overlay.ids import NodeId
from overlay.io import MemberStatus, Timer
from overlay.member_rules import INCARNATION_MAX, WIRE_OF_STATUS, check_tags
from overlay.members import MemberEntry, MemberList
from overlay.messages import MemberState
from overlay.piggyback import PiggybackQueue
from overlay.ratelimit import RateLimit
from overlay.suspicion import Suspicion

# Members remembered for the once-a-period rate limit of direct messages
# (`SwimBase._may_tell`); the memo drops stale entries when it reaches this.
_TOLD_MAX = 4096
# New members learned second-hand, per sender host (see `Merging._merge_all`):
# a join burst of 100 nodes a second brings each node ~100 new members a
# second, from many senders; exchanges we start ourselves are not limited.
_ADMIT_PER_HOST = 128.0
_ADMIT_BURST = 512


class SwimState(enum.Enum):
    """SWIM's lifecycle.

    IDLE -> JOINING on `JoinCluster` with a seed; JOINING -> JOINED when a
    seed answers our push-pull (IDLE -> JOINED too: the founder of a
    cluster joins nobody, but a join may be answered after its seeds were
    withdrawn); JOINED -> JOINING on a new `JoinCluster`; any -> LEAVING on
    `Leave`; LEAVING -> LEFT once our goodbye has been sent as often as any
    update, or no live member is left (`LeaveComplete` goes out then)."""

    IDLE = "idle"
    JOINING = "joining"
    JOINED = "joined"
    LEAVING = "leaving"
    LEFT = "left"


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
    DISSEMINATE = "disseminate"  # send waiting updates to a few random members


PROBE_TIMER = Timer(SwimTimer.PROBE)
PUSH_PULL_TIMER = Timer(SwimTimer.PUSH_PULL)
RECONNECT_TIMER = Timer(SwimTimer.RECONNECT)
JOIN_TIMER = Timer(SwimTimer.JOIN_RETRY)
ANNOUNCE_TIMER = Timer(SwimTimer.ANNOUNCE)
DISSEMINATE_TIMER = Timer(SwimTimer.DISSEMINATE)


class Exchange(enum.Enum):
    """Why we started a push-pull."""

    JOIN = "join"
    FOLLOWUP = "followup"  # after our join: the members that joined alongside us
    ANTI_ENTROPY = "anti_entropy"
    RECONNECT = "reconnect"


@dataclass(slots=True)
class Probe:
    """A probe of ours in flight."""

    target: NodeId
    incarnation: int  # the target's, when the probe began: what we accuse
    started: float
    asked: tuple[NodeId, ...] = ()  # PING-REQ sent to these
    nacks: dict[NodeId, None] = field(default_factory=dict)


@dataclass(slots=True)
class Relay:
    """A ping we send for another member's PING-REQ."""

    origin: NodeId
    origin_seq: int
    target: NodeId
    nack: bool


class SwimBase:
    def __init__(
        self,
        me: NodeId,
        config: SwimConfig,
        rng: random.Random,
        tags: Mapping[str, str] | None = None,
        *,
        announce: bool = False,
        incarnation: int = 0,
    ) -> None:
        """`announce`: a broadcast layer carries the changes this node
        originates (`overlay.io.Announce` outputs); off, they only
        piggyback. `tags`: this member's metadata (TagsTooLarge if over
        `max_tags_bytes`). `incarnation`: where ours starts (a restarted
        node starts past its old self's, from its snapshot: its alive state
        then wins at once, without a refutation round)."""
        self.me = me
        self.cfg = config
        self.rng = rng
        my_tags = check_tags(tags or {}, config.max_tags_bytes)
        self.state = SwimState.IDLE
        self.incarnation = min(max(incarnation, 0), INCARNATION_MAX)
        self.members = MemberList(me, random.Random(rng.getrandbits(64)))
        self._self = MemberEntry(me, self.incarnation, MemberStatus.ALIVE, my_tags, 0.0)
        self.members.add(self._self)
        self.awareness = Awareness(config.awareness_max if config.lifeguard else 1)
        self.queue: PiggybackQueue[NodeId, MemberState] = PiggybackQueue()
        self.counters: Counter[str] = Counter()
        # Probing: our probes and the pings we relay, by seq.
        self._seq = 0
        self._probes: dict[int, Probe] = {}
        self._probing: dict[NodeId, int] = {}  # target -> seq of its probe in flight
        self._relays: dict[int, Relay] = {}
        self._suspicions: dict[NodeId, Suspicion] = {}
        self._verify_budget = config.verify_max  # see Merging._verify
        # When a message from another member last arrived, and when we last
        # suspected a member after a probe during which we heard nobody
        # (see `Probing._reconnected`).
        self._last_heard = -math.inf
        self._last_silent_accusation = -math.inf
        # Push-pull exchanges we started, by address (seeds are known by it).
        self._exchanges: dict[tuple[str, int], tuple[Exchange, NodeId, float]] = {}
        self._reconnect: dict[NodeId, float] = {}  # failed member -> when, oldest first
        self._pruning: list[NodeId] = []  # forced out with prune: forgotten once spread
        self.seeds: list[NodeId] = []
        self._seed_index = 0
        # Network coordinates (`overlay.coordinates`): ours, from the probes'
        # round trips, and the members' last ones, from their acks.
        self.coords = PeerCoordinates(me, config.coordinates)
        self._join_backoff = Backoff(config.join_retry_initial, config.join_retry_max)
        self._next_meeting = 0.0  # see Exchanges._meet
        self._elders: list[NodeId] = []  # our seed's members, for the follow-up
        self._followups = 0  # follow-up exchanges done since we joined
        self._another_followup = False  # the last follow-up taught us members: one more
        self._followup_news = 0  # members new to us in the follow-up under way
        # Dissemination: the changes we originated, waiting for their batch.
        self.announce = announce
        self._announcements: list[MemberState] = []
        self._announce_window: float | None = None  # when the open window closes
        self._announce_now = False  # the batch goes out at the end of this step
        self._round_armed = False  # the DISSEMINATE timer is pending
        self._told: dict[NodeId, float] = {}  # see _may_tell
        self._admit = RateLimit(_ADMIT_PER_HOST, _ADMIT_BURST)  # see Merging._merge_all

    @property
    def gone(self) -> bool:
        """Leaving or left: we speak only to say goodbye."""
        return self.state is SwimState.LEAVING or self.state is SwimState.LEFT

    def _alive_state(self, member: MemberEntry) -> tuple[MemberState, int]:
        """An alive member's wire state and its size. The state is memoised
        on the member (every push-pull sends the whole list, mostly
        unchanged), and shared with other holders when it was decoded
        (`codec.shared_alive_state`): a record per member per node was a
        third of a member list's memory."""
        state = member.wire
        tags = member.tags
        if (
            state is None
            or state[1] != member.incarnation
            or (state[3] is not tags and (tags or state[3]))  # both empty will do
        ):
            state = shared_alive_state(member.node, member.incarnation, member.tags)
            member.wire = state
        if tags:
            return state, state_size(state)
        # state_size without tags, inline (every push-pull asks it of every member).
        size = NODE_SIZES.get(member.node) or node_size(member.node)
        inc = state[1]
        return state, size + (5 if inc < 128 else 4 + int_size(inc))

    def _state_of(self, member: MemberEntry) -> MemberState:
        """The wire state of a member as we hold it; a suspect's names its
        first accuser."""
        if member.status is MemberStatus.ALIVE:
            return self._alive_state(member)[0]
        accuser = None
        if member.status is MemberStatus.SUSPECT:
            suspicion = self._suspicions.get(member.node)
            first = None if suspicion is None else next(iter(suspicion.accusers))
            accuser = first if isinstance(first, NodeId) else self.me
        return MemberState(
            member.node, member.incarnation, WIRE_OF_STATUS[member.status], {}, accuser
        )

    def _may_tell(self, node: NodeId, now: float) -> bool:
        """Rate limit for direct messages to one member (telling it it is
        accused, passing an accusation on, verifying one, a name conflict):
        once per protocol period per member. The memo forgets old entries as
        it grows."""
        told = self._told
        last = told.get(node)
        if last is not None and now - last < self.cfg.probe_period:
            return False
        if len(told) >= _TOLD_MAX:
            horizon = now - self.cfg.probe_period
            self._told = told = {n: t for n, t in told.items() if t >= horizon}
        told[node] = now
        return True
