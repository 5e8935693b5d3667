"""The node: HyParView, Plumtree and SWIM composed behind one entry point.

Theory of operation: a driver calls `node.start(now)` once, then
`node.handle(input, now)` for every input, and executes the outputs in order.
The node routes each input to the layer that owns it (wire messages by type,
timers by the enum type of their kind) and lets the layers talk to each other
through outputs: HyParView's `NeighborUp`/`NeighborDown` feed Plumtree's
eager/lazy sets, and SWIM's "failed" verdicts make HyParView drop the peer.
Those cross-layer outputs are still returned, so drivers and operators see
them too.

Randomness: each layer gets its own `random.Random` seeded from the node's,
so adding draws in one layer does not change another's choices.

Where each message may come from (issue 12: a datagram's sender is only what
it claims, and anyone can open a stream): HyParView's and Plumtree's
messages only over a stream, Plumtree's only from an active (or pending)
neighbour; SWIM's push-pull only over a stream (its datagrams are checked by
SWIM itself: strangers get an ack and nothing else). Topics starting with
`$overlay.` are the overlay's own: refused from applications, and on the
wire delivered to nobody but the layer that owns them (`$overlay.members`:
SWIM, which applies its own rules to every state, and only when the
announcement's inner sender is its origin). What is refused is counted in
`Node.refused` (`stats()["refused"]` in the agent).
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Mapping

from overlay import codec
from overlay.config import Config
from overlay.coupling import SwimHyParView
from overlay.hyparview import HvTimer, HyParView, Views
from overlay.ids import NodeId
from overlay.io import (
    Announce,
    Announced,
    ConnectFailed,
    ConnectionDown,
    ConnectionUp,
    Deliver,
    Input,
    JoinCluster,
    Leave,
    LeaveComplete,
    NeighborDown,
    NeighborUp,
    Output,
    PeerRefused,
    ProbeNow,
    Publish,
    PublishRejected,
    Received,
    SetTags,
    StrayMessage,
    TimerFired,
)
from overlay.member_rules import check_tags
from overlay.members import LIVE, MemberSnapshot
from overlay.messages import (
    HYPARVIEW_MESSAGES,
    PLUMTREE_MESSAGES,
    QUERY_MESSAGES,
    SWIM_MESSAGES,
    MemberUpdates,
    PushPull,
    Query,
    ShuffleReply,
)
from overlay.plumtree import Plumtree, PtTimer, PublishError
from overlay.queries import QUERY_TOPIC, QTimer, Queries, QueryError, QueryLimits
from overlay.swim import Swim
from overlay.swim_state import SwimTimer

# SWIM announces the changes it originates (suspicions, verdicts,
# refutations, leaves) on this Plumtree topic; the node consumes those
# deliveries itself, applications never see them.
MEMBERS_TOPIC = "$overlay.members"
# Topics with this prefix belong to the overlay itself.
RESERVED_PREFIX = "$overlay."
# SWIM's announcements made while Plumtree has no neighbour yet (a joiner's
# arrival: its join exchange is often answered before HyParView's JOIN):
# the newest this many batches wait for the first neighbour (guess: a node
# without neighbours originates a batch or two; the rest is piggybacked).
HELD_ANNOUNCEMENTS = 4


_RESERVED = f"topics starting with {RESERVED_PREFIX!r} are the overlay's own"


def _reserved(topic: object) -> bool:
    return isinstance(topic, str) and topic.startswith(RESERVED_PREFIX)


class Node:
    def __init__(
        self,
        me: NodeId,
        config: Config,
        rng: random.Random,
        tags: Mapping[str, str] | None = None,
        *,
        incarnation: int = 0,
    ) -> None:
        """`tags`: this member's metadata; `overlay.member_rules.TagsTooLarge`
        if over `swim.max_tags_bytes`. `incarnation`: SWIM's starting one
        (a restarted node's, past its old self's: see `overlay.swim_state`)."""
        self.me = me
        self.config = config
        self.hyparview = HyParView(me, config.hyparview, random.Random(rng.getrandbits(64)))
        # SWIM's announcements ride the tree, but anti-entropy must not
        # replay them: SWIM has its own (push-pull), and after a partition
        # heals, each side's old verdicts about the other would reach it and
        # make it suspect its own members again (364 such stale verdicts in
        # a 60-node partition-heal run, and a broadcast storm).
        self.plumtree = Plumtree(
            me,
            config.plumtree,
            random.Random(rng.getrandbits(64)),
            tree_only=frozenset({MEMBERS_TOPIC, QUERY_TOPIC}),
        )
        self.swim = Swim(
            me,
            config.swim,
            random.Random(rng.getrandbits(64)),
            tags,
            announce=True,
            incarnation=incarnation,
        )
        # Queries (overlay.queries): broadcast on QUERY_TOPIC, answered
        # straight to their origin.
        self.queries = Queries(me, QueryLimits(), random.Random(rng.getrandbits(64)))
        self.coupling = SwimHyParView(self.swim, self.hyparview, config.hyparview.passive_size)
        # Without SWIM (`swim.enabled = false`) the node is HyParView and
        # Plumtree alone, as in the papers: connection loss is the only
        # failure detector and the member list holds this node only.
        self.swim_enabled = config.swim.enabled
        # Inputs refused by the rules of where each message may come from.
        self.refused: Counter[str] = Counter()
        self._left = False  # a Leave was handled
        # Announcements waiting for Plumtree's first neighbour (encoded).
        self._held: list[bytes] = []

    def start(self, now: float) -> list[Output]:
        outs = self.hyparview.start(now) + self.plumtree.start(now)
        return outs + self.swim.start(now) if self.swim_enabled else outs

    def members(self) -> tuple[MemberSnapshot, ...]:
        """SWIM's member list, this node included: an immutable snapshot."""
        return self.swim.members_snapshot()

    def views(self) -> Views:
        """HyParView's active, passive and pending views: a snapshot."""
        return self.hyparview.views()

    def stats(self) -> dict[str, dict[str, int]]:
        """The counters of every layer, and the inputs the node refused."""
        return {
            "hyparview": self.hyparview.stats(),
            "plumtree": self.plumtree.stats(),
            "swim": self.swim.stats(),
            "queries": self.queries.stats(),
            "refused": dict(self.refused),
        }

    def check_publish(self, topic: str, payload: bytes) -> None:
        """Raise `PublishError` if `publish(topic, payload)` would."""
        if _reserved(topic):
            raise PublishError(f"topic {topic!r} is reserved: {_RESERVED}")
        self.plumtree.check_publish(topic, payload)

    def set_tags(self, tags: Mapping[str, str], now: float) -> list[Output]:
        """New metadata for this member (`TagsTooLarge`, nothing changed, if
        over the limit), spread to the cluster."""
        check_tags(tags, self.config.swim.max_tags_bytes)
        return self._internal(self._after_swim(self.swim.handle(SetTags(tags), now), now), now)

    def force_leave(self, name: str, prune: bool, now: float) -> list[Output]:
        """`overlay force-leave NAME [--prune]`: see `Swim.force_leave`
        (`overlay.member_rules.ForceLeaveRefused`, nothing changed, when
        the member is unknown, this node, or not failed)."""
        outs = self.swim.force_leave(name, prune, now)
        return self._internal(self._after_swim(outs, now), now)

    def publish(self, topic: str, payload: bytes, now: float) -> list[Output]:
        """Broadcast on `topic`. Raises `overlay.plumtree.PublishError`, with
        nothing sent, if the payload is over `max_payload`, the topic is not
        1-256 characters, starts with `$overlay.` (the overlay's own), or the
        node has left. (A `Publish` input returns a `PublishRejected` output
        instead of raising.)"""
        if _reserved(topic):
            raise PublishError(f"topic {topic!r} is reserved: {_RESERVED}")
        return self.plumtree.publish(topic, payload, now)

    def query(
        self,
        name: str,
        payload: bytes,
        now: float,
        nodes: tuple[str, ...] = (),
        tags: Mapping[str, str] | None = None,
        timeout: float | None = None,
        ack: bool = False,
        internal: bool = False,
    ) -> tuple[int, list[Output]]:
        """Send a query (`overlay.queries`): its id, and the outputs that
        broadcast it; we answer it too if we match. `QueryError`, nothing
        sent, if a field is out of bounds or too many queries are open."""
        if self._left:
            raise QueryError("the node has left")
        q = self.queries.make(name, payload, nodes, tags, timeout, ack, internal)
        frame = codec.encode(self.me, q, self.config.max_frame)
        try:
            outs = self.plumtree.publish(QUERY_TOPIC, frame, now)
        except PublishError as exc:
            self.queries.open.pop(q.id, None)
            raise QueryError(str(exc)) from None
        outs = self._internal(outs, now)  # drops our own delivery (hops 0)
        outs += self.queries.started(q)
        outs += self.queries.received(self.me, q, self.swim.own_tags(), now)
        return q.id, outs

    def respond(self, origin: NodeId, qid: int, payload: bytes, now: float) -> list[Output]:
        """Answer a query delivered to us (`QueryAsked`); `QueryError` if
        it is not awaiting an answer."""
        return self.queries.respond(origin, qid, payload, now)

    def _neighbors(self, outs: list[Output], now: float) -> list[Output]:
        """Feed HyParView's neighbour changes to Plumtree, so that its eager
        and lazy sets stay exactly the active view. Every HyParView output
        list goes through here. Plumtree's outputs come after HyParView's:
        the NEIGHBOR that makes a link active is sent before anything
        Plumtree sends over it."""
        extra: list[Output] = []
        for o in outs:
            if isinstance(o, NeighborUp | NeighborDown):
                extra += self.plumtree.handle(o, now)
        if self._held and self.plumtree.trees.active:
            held, self._held = self._held, []
            for payload in held:
                extra += self._announce(payload, now)
        return outs + extra if extra else outs

    def _announce(self, payload: bytes, now: float) -> list[Output]:
        with contextlib.suppress(PublishError):  # left: piggybacking still spreads them
            return self.plumtree.publish(MEMBERS_TOPIC, payload, now)
        return []

    def _after_swim(self, outs: list[Output], now: float) -> list[Output]:
        """SWIM's verdicts and hints to HyParView (`overlay.coupling`), and
        the changes SWIM originated broadcast on `MEMBERS_TOPIC`; while
        Plumtree has no neighbour (a joiner's arrival, announced when its
        join exchange is answered, mostly comes before HyParView's first
        link), the newest `HELD_ANNOUNCEMENTS` batches wait for the first
        one: published to nobody, they would reach nobody."""
        news = [o for o in outs if isinstance(o, Announce)]
        if news:
            outs = [o for o in outs if not isinstance(o, Announce)]
        outs = self._neighbors(self.coupling.after_swim(outs, now), now)
        for announce in news:
            payload = codec.encode(self.me, announce.updates)
            if self.plumtree.trees.active:
                outs += self._announce(payload, now)
            else:
                self._held.append(payload)
                del self._held[:-HELD_ANNOUNCEMENTS]
        return outs

    def _swim(self, inp: Input, now: float) -> list[Output]:
        if not self.swim_enabled:
            return []
        return self._after_swim(self.swim.handle(inp, now), now)

    def _internal(self, outs: list[Output], now: float) -> list[Output]:
        """Consume deliveries on the overlay's own topics: on
        `MEMBERS_TOPIC`, SWIM merges them like any member update from their
        origin (our own, hops 0, need nothing); any other `$overlay.` topic
        is delivered to nobody."""
        for o in outs:
            if isinstance(o, Deliver) and o.topic.startswith(RESERVED_PREFIX):
                break
        else:
            return outs
        kept: list[Output] = []
        more: list[Output] = []
        for o in outs:
            if not isinstance(o, Deliver) or not o.topic.startswith(RESERVED_PREFIX):
                kept.append(o)
            elif o.topic == QUERY_TOPIC:
                if o.hops > 0:
                    more += self._query_delivered(o, now)
            elif o.topic != MEMBERS_TOPIC:
                self.refused["reserved_topic"] += 1
            elif o.hops > 0:
                try:
                    origin, msg = codec.decode(o.payload, self.config.max_frame)
                except codec.DecodeError:
                    self.refused["announcement_undecodable"] += 1
                    continue
                if origin.name != o.origin or not isinstance(msg, MemberUpdates):
                    # Someone else's words under this origin's name.
                    self.refused["announcement_forged"] += 1
                elif self.swim_enabled:
                    announced = Announced(origin, msg)
                    more += self._after_swim(self.swim.handle(announced, now), now)
        # What SWIM answers may hold our own announcement's local delivery.
        return kept + self._internal(more, now)

    def _query_delivered(self, o: Deliver, now: float) -> list[Output]:
        try:
            origin, msg = codec.decode(o.payload, self.config.max_frame)
        except codec.DecodeError:
            self.refused["query_undecodable"] += 1
            return []
        if origin.name != o.origin or not isinstance(msg, Query):
            self.refused["query_forged"] += 1
            return []
        if self.swim_enabled:
            # Answers go to the origin's address: only to a live member's,
            # so a forged query cannot aim the cluster's answers at a
            # stranger (a reflection).
            entry = self.swim.members.get(origin)
            if entry is None or entry.status not in LIVE:
                self.refused["query_origin_not_member"] += 1
                return []
        return self.queries.received(origin, msg, self.swim.own_tags(), now)

    def handle(self, inp: Input, now: float) -> list[Output]:
        return self._internal(self._route(inp, now), now)

    def _route(self, inp: Input, now: float) -> list[Output]:
        # The two commonest inputs first, without `match`: a message for
        # Plumtree, and a timer.
        if isinstance(inp, Received):
            msg = inp.msg
            if isinstance(msg, PLUMTREE_MESSAGES):
                # Plumtree travels over active links only. A sender that is
                # not our neighbour is refused, and told over its stream, so
                # that an asymmetric view repairs.
                hv = self.hyparview
                if inp.datagram:
                    self.refused["plumtree_datagram"] += 1
                    return []
                if not hv.is_neighbor(inp.sender):
                    self.refused["plumtree_not_neighbour"] += 1
                    return hv.handle(StrayMessage(inp.sender), now)
                return self.plumtree.handle(inp, now)
            if isinstance(msg, SWIM_MESSAGES):
                if inp.datagram and isinstance(msg, PushPull):
                    self.refused["push_pull_datagram"] += 1
                    return []
                return self._swim(inp, now)
            if isinstance(msg, HYPARVIEW_MESSAGES):
                # SHUFFLE_REPLY is the one HyParView datagram: it goes to a
                # walk's origin, rarely a neighbour, and is taken only with
                # the walk's random nonce.
                if inp.datagram and not isinstance(msg, ShuffleReply):
                    self.refused["hyparview_datagram"] += 1
                    return []
                return self._neighbors(self.hyparview.handle(inp, now), now)
            if isinstance(msg, QUERY_MESSAGES):
                return self.queries.answered(inp.sender, msg)  # type: ignore[arg-type]
            return []
        if isinstance(inp, TimerFired):
            kind = inp.timer.kind
            if isinstance(kind, PtTimer):
                return self.plumtree.handle(inp, now)
            if isinstance(kind, HvTimer):
                return self._neighbors(self.hyparview.handle(inp, now), now)
            if isinstance(kind, SwimTimer):
                outs = self._swim(inp, now)
                if kind is SwimTimer.PROBE:
                    outs += self.coupling.on_probe_period(now)
                return outs
            if isinstance(kind, QTimer):
                return self.queries.done(inp.timer.key)  # type: ignore[arg-type]
            return []
        match inp:
            case Leave():
                # SWIM first: its goodbye goes out while the links are up,
                # to every neighbour (Plumtree pushes what it meant to
                # announce: we will not be there to answer GRAFTs).
                outs = self._swim(inp, now)
                outs += self.plumtree.handle(inp, now)
                outs += self._neighbors(self.hyparview.handle(inp, now), now)
                if not self.swim_enabled and not self._left:
                    # No member list, no goodbye to spread: the leave is done.
                    outs.append(LeaveComplete())
                self._left = True
                return outs
            case ConnectionDown(peer) | ConnectFailed(peer):
                # A lost HyParView link is a hint for SWIM: probe at once.
                watched = self.swim_enabled and self.coupling.watched(peer)
                outs = self._neighbors(self.hyparview.handle(inp, now), now)
                outs += self._swim(inp, now)
                if watched:
                    outs += self._after_swim(self.swim.handle(ProbeNow(peer), now), now)
                return outs
            case JoinCluster():
                outs = self._neighbors(self.hyparview.handle(inp, now), now)
                return outs + self._swim(inp, now)
            case ConnectionUp():
                return self._neighbors(self.hyparview.handle(inp, now), now)
            case Publish(topic):
                if _reserved(topic):
                    return [PublishRejected(topic, _RESERVED)]
                return self.plumtree.handle(inp, now)
            case PeerRefused():
                # SWIM's evidence; a refused dial also comes as ConnectFailed.
                return self._swim(inp, now)
            case _:
                return []  # inputs between layers never come from a driver
