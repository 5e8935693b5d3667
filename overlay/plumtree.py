"""Plumtree: broadcast over the active view (Leitão, Pereira, Rodrigues,
"Epidemic Broadcast Trees", SRDS 2007): the tree, with per-origin sequence
numbers; its anti-entropy is in `overlay.anti_entropy`, its optional ordered
delivery in `overlay.ordering`.

Rules of this module: it owns the eager and lazy peer sets, the seen ids,
the payload cache and the local delivery of broadcasts (the two helper
modules work on that same state). Its peers are exactly HyParView's active
view: the node forwards every `NeighborUp`/`NeighborDown` of HyParView as
an input, a new neighbour starts eager, and in every tree (the shared
`eager`/`lazy` and each origin's, `overlay.trees`) a peer is in exactly one
of eager/lazy iff it is an active neighbour. It sends only to those peers,
ignores control messages from anyone else (the node has already told such
a sender, through HyParView, that the link is gone), and never does I/O.

Inputs (`handle(input, now)`): `Received` (GOSSIP, IHAVE, PRUNE, GRAFT,
DIGEST, IWANT), `TimerFired` (a `PtTimer`), `Publish`, `NeighborUp`,
`NeighborDown`, `Leave`. Outputs: `Send`, `SetTimer`, `CancelTimer`,
`Deliver`, `PublishRejected`. Read-only: `peers()`, `stats()`,
`check_publish()`.

Theory of operation
-------------------
- Broadcast (paper sec. 3.6, Alg. 1): the publisher delivers locally (hops
  0), pushes the payload (GOSSIP) to its eager peers and queues an IHAVE
  announcement for its lazy peers; a receiver that sees the id for the first
  time delivers it, makes the sender eager, and does the same with hops + 1,
  leaving out the sender and the origin. Announcements are batched: one
  IHAVE per lazy peer every `ihave_flush` (one FLUSH timer at a time).
- A duplicate GOSSIP means two tree paths reach us: the sender is moved to
  the lazy set and told with PRUNE, which makes the link lazy at both ends.
  The eager links left form a spanning tree; a steady overlay then carries
  each broadcast once per node (RMR 0).
- Trees per origin (`overlay.trees`, issue 14): the eager/lazy split above
  is kept per origin, and PRUNE and GRAFT name the origin whose tree they
  change, so one publisher's duplicates never prune another's links (the
  paper's single tree, `origin_trees = 0`, lets concurrent publishers cut
  it into pieces). A new origin's first message rides a copy of the oldest
  tree held; its second floods, and the duplicates prune its tree to its
  own fastest paths. SWIM's tree-only topics, changes from all over the
  cluster and mostly an origin's only message, ride the shared tree.
- Repair (sec. 3.6): an IHAVE for an id we never received starts a timer
  (`graft_timeout_1`). If it expires first, the first announcer is made eager
  and sent GRAFT(id), which makes it eager too and sends the payload; a
  second, shorter timer (`graft_timeout_2`) moves on to the next announcer.
  An announcer that goes down is forgotten (sec. 3.7).
- Tree optimisation (sec. 3.8): when an announcement says a lazy peer would
  deliver with at least `optimization_threshold` fewer hops than the eager
  path did, graft that peer (GRAFT without id) and prune the eager parent.
  The paper checks this when the payload arrives after IHAVEs; we also check
  when an IHAVE arrives after the payload, since announcements are batched
  and usually come second.
- Ids: (origin name, epoch, seq). The epoch is a random 32-bit number drawn
  from the injected rng at construction, so a node restarted under the same
  name never reuses an id; seq counts from 1 within the epoch, so
  subscribers see gaps.
- Age: every GOSSIP carries the seconds since publication, as the path
  measures it (each node adds how long it held the copy). A copy older than
  `retention` is refused; payloads are served only while younger than that;
  ids are remembered `seen_ttl` >= `retention`. Together these make a late
  duplicate delivery impossible while the bounds hold (an early eviction
  by count is counted in `stats()["seen_evicted"]`).
- Anti-entropy (`overlay.anti_entropy`): periodic digests to each neighbour
  in turn, IWANT for what they lack, repair copies that change no peer set,
  and the repair of a link left eager at one end only.
- Ordered delivery (`overlay.ordering`, with `ordered`): per (origin,
  epoch), a message after a gap is held back until the gap fills or can no
  longer fill.
- Lifecycle (`PlumtreeState`): RUNNING, then LEFT for good on `Leave`. A
  leaving node will answer no GRAFT, so what it still meant to announce
  lazily it pushes at once, payload and all (its goodbye, published just
  before, is one of them whenever its eager set is empty, as it often is
  after a burst of broadcasts); then its timers stop, and it refuses
  publishes and new neighbours; HyParView's `NeighborDown`s still come.
- Backpressure: every queue and store is bounded by `PlumtreeConfig`; what a
  bound drops is counted in `stats()`.
- Local errors: `publish()` raises `PublishError` (payload over
  `max_payload`, bad topic, node left) before anything is sent; the same
  request as a `Publish` input returns a `PublishRejected` output instead.
"""

from __future__ import annotations

import enum
import math
import random
from collections import Counter
from dataclasses import dataclass

from overlay.anti_entropy import ANTI_ENTROPY_COUNTERS, AntiEntropy
from overlay.config import PlumtreeConfig
from overlay.ids import NodeId
from overlay.io import (
    CancelTimer,
    Deliver,
    Input,
    Leave,
    NeighborDown,
    NeighborUp,
    Output,
    Publish,
    PublishRejected,
    Received,
    Send,
    SetTimer,
    Timer,
    TimerFired,
)
from overlay.messages import (
    IHAVE_MAX_ITEMS,
    MAX_HOPS,
    MAX_TOPIC,
    Announcement,
    Digest,
    Gossip,
    Graft,
    IHave,
    IWant,
    Message,
    MsgId,
    Prune,
)
from overlay.ordering import ORDERING_COUNTERS, OrderedDelivery
from overlay.seen import Cached, PayloadCache, Seen, SeenIds
from overlay.trees import Trees

# Conflicting copies (one id, two payloads) remembered, so each spreads once
# (guess: far more than honest traffic ever makes, which is none).
_CONFLICTS_MAX = 1024


class PtTimer(enum.Enum):
    FLUSH = "flush"  # send queued IHAVEs and new neighbours' digests
    GRAFT = "graft"  # key: the missing MsgId
    ANTI_ENTROPY = "anti_entropy"
    RELEASE = "release"  # key: (origin, epoch) with messages held back (overlay.ordering)


_FLUSH_TIMER = Timer(PtTimer.FLUSH)
_AE_TIMER = Timer(PtTimer.ANTI_ENTROPY)


class PlumtreeState(enum.Enum):
    RUNNING = "running"  # from construction
    LEFT = "left"  # after Leave, for good: no timers, no publish, no new neighbour


COUNTERS = (
    "published",  # broadcasts this node originated
    "publish_rejected",  # Publish inputs refused (see PublishRejected)
    "delivered",  # Deliver outputs, own broadcasts included
    "gossip_received",  # payload messages received, duplicates included
    "duplicates",  # payloads received for an id already seen
    "expired",  # payloads refused: older than retention
    "invalid",  # messages refused: malformed beyond what the codec checks
    "not_neighbor",  # control messages from a peer outside the active view
    "eager_sent",  # payloads pushed along the tree
    "ihave_sent",  # announcements sent (one IHAVE carries many)
    "ihave_received",  # announcements received from neighbours
    "ihave_dropped",  # announcements dropped: a lazy peer's queue was full
    "missing_dropped",  # announcements ignored: too many ids already missing
    "prune_sent",
    "prune_received",
    "graft_sent",
    "graft_received",
    "graft_answered",  # payloads sent in answer to a GRAFT
    "graft_miss",  # GRAFTs for a payload no longer cached
    "graft_gave_up",  # missing ids whose announcers all failed us
    "optimized",  # tree optimisations (a lazy link replaced an eager one)
    "link_graft_back",  # tree copies from a peer held lazy: made eager at both ends
    "trees_created",  # origins' trees started from the shared one (overlay.trees)
    "trees_evicted",  # idle origins' trees dropped to make room (origin_trees)
    "trees_shared",  # messages of an origin left to the shared tree: no room
    "trees_rebuilt",  # copied trees flooded at their origin's second message
    *ANTI_ENTROPY_COUNTERS,
    "cache_evicted",  # payloads dropped before retention: count/bytes bound
    "seen_evicted",  # ids forgotten before seen_ttl: count bound
    *ORDERING_COUNTERS,
)


class PublishError(ValueError):
    """A publish this node refuses (a local misuse, not a network error)."""


@dataclass(frozen=True, slots=True)
class PeerSets:
    eager: tuple[NodeId, ...]
    lazy: tuple[NodeId, ...]


class Plumtree:
    def __init__(
        self,
        me: NodeId,
        config: PlumtreeConfig,
        rng: random.Random,
        *,
        tree_only: frozenset[str] = frozenset(),
    ) -> None:
        """`tree_only`: topics that go over the tree (eager push, IHAVE,
        GRAFT) but never through anti-entropy, for messages that have an
        anti-entropy of their own and go stale (SWIM's, see `overlay.node`).
        They ride the shared tree, never an origin's own (see `_tree`)."""
        self.me = me
        self.cfg = config
        self.rng = rng
        self.tree_only = tree_only
        self.epoch = rng.getrandbits(32)
        self.seq = 0
        self.state = PlumtreeState.RUNNING
        # The trees: one per origin and the shared one, whose split of the
        # active view `eager`/`lazy` are (dicts, not sets: insertion order
        # keeps every pick reproducible).
        # A tree idle for the retention window has no message left that
        # anyone could graft: it may make room for another origin's.
        self.trees = Trees(config.origin_trees, config.retention, flood=config.origin_tree_flood)
        self.eager = self.trees.eager
        self.lazy = self.trees.lazy
        self.seen = SeenIds(config.seen_ttl, config.seen_max_ids)
        self.cache = PayloadCache(
            config.retention, config.cache_max_messages, config.cache_max_bytes
        )
        # Announced but not received: the announcers, first first, with the
        # hop count each announced. A GRAFT timer is pending for each key.
        self.missing: dict[MsgId, list[tuple[NodeId, int]]] = {}
        # (id, hash of topic and payload) of conflicting copies handled.
        self.conflicts: dict[tuple[MsgId, int], None] = {}
        self.lazy_queue: dict[NodeId, list[Announcement]] = {}  # IHAVEs due at the flush
        self._flush_set = False  # a FLUSH timer is pending: the queues go out then
        self.counters: Counter[str] = Counter({name: 0 for name in COUNTERS})
        self.ordering = (
            OrderedDelivery(config, self.counters, PtTimer.RELEASE) if config.ordered else None
        )
        self.anti_entropy = AntiEntropy(
            config,
            rng,
            trees=self.trees,
            seen=self.seen,
            cache=self.cache,
            counters=self.counters,
            ordering=self.ordering,
            tree_only=tree_only,
        )

    # ----------------------------------------------------------------- API

    def start(self, now: float) -> list[Output]:
        return [SetTimer(_AE_TIMER, self.anti_entropy.next_period())]

    def handle(self, inp: Input, now: float) -> list[Output]:
        out: list[Output] = []
        self._expire(now)
        if isinstance(inp, Received):  # the commonest, without `match`
            self.handle_received(inp.sender, inp.msg, now, out)
            return out
        match inp:
            case TimerFired(timer):
                self.handle_timer_fired(timer, now, out)
            case Publish(topic, payload):
                self.handle_publish(topic, payload, now, out)
            case NeighborUp(peer):
                self.handle_neighbor_up(peer, out)
            case NeighborDown(peer):
                self.handle_neighbor_down(peer)
            case Leave():
                self.handle_leave(now, out)
        return out

    def publish(self, topic: str, payload: bytes, now: float) -> list[Output]:
        """Broadcast `payload` on `topic`: deliver here, push to the eager
        peers, announce to the lazy ones. Raises `PublishError`, having sent
        nothing, if the request is not acceptable."""
        self.check_publish(topic, payload)
        self._expire(now)
        out: list[Output] = []
        self.seq += 1
        mid = MsgId(self.me.name, self.epoch, self.seq)
        self.seen.add(mid, Seen(now, 0, None))
        self.cache.put(mid, Cached(topic, payload, 0, 0.0, now))
        self.counters["published"] += 1
        self.counters["delivered"] += 1
        out.append(Deliver(topic, mid.origin, mid.seq, 0, payload, mid))
        self._forward(mid, self._tree(mid, topic), topic, payload, 1, 0.0, None, out, touch=now)
        return out

    def check_publish(self, topic: str, payload: bytes) -> None:
        """Raises `PublishError` if `publish` would refuse this; changes nothing."""
        if self.state is PlumtreeState.LEFT:
            raise PublishError("this node has left the cluster")
        if not isinstance(topic, str) or not 0 < len(topic) <= MAX_TOPIC:
            raise PublishError(f"topic must be a string of 1 to {MAX_TOPIC} characters")
        if not isinstance(payload, bytes):
            raise PublishError("payload must be bytes")
        if len(payload) > self.cfg.max_payload:
            raise PublishError(
                f"payload is {len(payload)} bytes, the limit is {self.cfg.max_payload}"
            )

    def peers(self, origin: str | None = None) -> PeerSets:
        """The shared tree's split of the active view, or `origin`'s."""
        if origin is None:
            return PeerSets(tuple(self.eager), tuple(self.lazy))
        return PeerSets(*self.trees.split(origin))

    def stats(self) -> dict[str, int]:
        """Counters since start (see `COUNTERS`), and current sizes."""
        self.counters["cache_evicted"] = self.cache.evicted
        self.counters["trees_created"] = self.trees.created
        self.counters["trees_evicted"] = self.trees.evicted
        self.counters["trees_shared"] = self.trees.shared
        self.counters["trees_rebuilt"] = self.trees.rebuilt
        self.counters["seen_evicted"] = self.seen.evicted
        stats = dict(self.counters)
        stats.update(
            eager=len(self.eager),
            lazy=len(self.lazy),
            trees=len(self.trees),
            cached=len(self.cache),
            cached_bytes=self.cache.bytes,
            seen=len(self.seen),
            missing=len(self.missing),
            held_now=self.ordering.held() if self.ordering is not None else 0,
        )
        return stats

    # -------------------------------------------------------- local inputs

    def handle_publish(self, topic: str, payload: bytes, now: float, out: list[Output]) -> None:
        try:
            out.extend(self.publish(topic, payload, now))
        except PublishError as exc:
            self.counters["publish_rejected"] += 1
            out.append(PublishRejected(topic, str(exc)))

    def handle_neighbor_up(self, peer: NodeId, out: list[Output]) -> None:
        """HyParView took `peer` into the active view: it starts eager, and
        we exchange digests with it at the next flush."""
        if peer == self.me or self.state is PlumtreeState.LEFT:
            return
        self.trees.up(peer)
        self.anti_entropy.welcome(peer)
        self._arm_flush(out)

    def handle_neighbor_down(self, peer: NodeId) -> None:
        """`peer` left the active view: forget it everywhere, its pending
        announcements included (paper sec. 3.7)."""
        self.trees.down(peer)
        self.lazy_queue.pop(peer, None)
        self.anti_entropy.forget(peer)
        for announcers in self.missing.values():
            announcers[:] = [a for a in announcers if a[0] != peer]

    def handle_leave(self, now: float, out: list[Output]) -> None:
        """The node is leaving: push what was still to be announced, then
        stop the periodic work. (HyParView's `NeighborDown`s, which follow,
        empty the peer sets.)"""
        if self.state is PlumtreeState.LEFT:
            return
        for peer, items in self.lazy_queue.items():
            for ann in items:
                entry = self.cache.get(ann.id, now)
                if entry is not None:
                    out.append(Send(peer, entry.resend(ann.id, now, repair=False)))
                    self.counters["eager_sent"] += 1
        self.lazy_queue.clear()
        self.state = PlumtreeState.LEFT
        out.append(CancelTimer(_AE_TIMER))
        if self._flush_set:
            self._flush_set = False
            out.append(CancelTimer(_FLUSH_TIMER))
        self.anti_entropy.stop()

    def handle_timer_fired(self, timer: Timer, now: float, out: list[Output]) -> None:
        match timer.kind:
            case PtTimer.FLUSH:
                self._flush(now, out)
            case PtTimer.GRAFT:
                if isinstance(timer.key, MsgId):
                    self._graft_timeout(timer.key, out)
            case PtTimer.ANTI_ENTROPY:
                if self.state is PlumtreeState.LEFT:
                    return
                self.anti_entropy.run_round(now, out)
                out.append(SetTimer(_AE_TIMER, self.anti_entropy.next_period()))
            case PtTimer.RELEASE:
                key = timer.key
                if isinstance(key, tuple) and self.ordering is not None:
                    self.ordering.on_release(key, now, out)

    def handle_received(self, sender: NodeId, msg: Message, now: float, out: list[Output]) -> None:
        if isinstance(msg, Gossip):
            self.on_gossip(sender, msg, now, out)
            return
        if sender not in self.eager and sender not in self.lazy:
            self.counters["not_neighbor"] += 1
            return
        match msg:
            case IHave(items):
                self.on_ihave(sender, items, now, out)
            case Prune(origin):
                self.on_prune(sender, origin, now)
            case Graft(mid, origin):
                self.on_graft(sender, mid, origin, now, out)
            case Digest():
                self.anti_entropy.on_digest(sender, msg, now, out)
            case IWant(ids):
                self.anti_entropy.on_iwant(sender, ids, now, out)

    # ------------------------------------------------------------- messages

    def on_gossip(self, sender: NodeId, msg: Gossip, now: float, out: list[Output]) -> None:
        """GOSSIP (Alg. 1): first copy -> deliver, make the sender eager,
        forward, optimise; a duplicate -> PRUNE the sender. A copy from a
        non-neighbour (sent before it dropped us) is still delivered if new,
        but changes no peer set; so does a `repair` copy."""
        self.counters["gossip_received"] += 1
        neighbor = sender in self.eager or sender in self.lazy
        mid = msg.id
        if mid in self.seen:
            cached = self.cache.get(mid, now)
            if cached is not None and (cached.payload != msg.payload or cached.topic != msg.topic):
                self._on_conflict(sender, msg, now, out)
                return
            self.counters["duplicates"] += 1
            if neighbor and not msg.repair:
                key = self._tree(mid, msg.topic)
                self._make_lazy(sender, key)
                out.append(Send(sender, Prune(key)))
                self.counters["prune_sent"] += 1
            return
        if not math.isfinite(msg.age) or msg.age < 0:
            self.counters["invalid"] += 1
            return
        if msg.age >= self.cfg.retention:
            self.counters["expired"] += 1
            return
        tree = neighbor and not msg.repair
        self.seen.add(mid, Seen(now, msg.hops, sender if tree else None))
        self.cache.put(mid, Cached(msg.topic, msg.payload, msg.hops, msg.age, now))
        announcers = self.missing.pop(mid, None)
        if announcers is not None:
            out.append(CancelTimer(Timer(PtTimer.GRAFT, mid)))
        if msg.repair:
            self.counters["repair_received"] += 1
        key = self._tree(mid, msg.topic)
        if key is not None:
            self.trees.touch(key, now, message=True)
        if tree:
            if key is not None and not self.trees.is_eager(sender, key):
                # It pushes to us along this tree while we hold it lazy (a
                # PRUNE of ours crossed its push): eager at both ends, or
                # the link stays eager at its end only until the next copy.
                self.counters["link_graft_back"] += 1
                out.append(Send(sender, Graft(None, key)))
            self._make_eager(sender, key)
        self._deliver(msg, now, out)
        hops = min(msg.hops + 1, MAX_HOPS)
        # Peers that announced it have it: neither push nor announce to them.
        skip = {peer for peer, _ in announcers} if announcers else None
        self._forward(mid, key, msg.topic, msg.payload, hops, msg.age, sender, out, skip)
        if tree and announcers:
            # Paper sec. 3.8: an announcer on a much shorter path replaces
            # the eager link this copy came by.
            best_peer, best_hops = min(announcers, key=lambda a: a[1])
            if best_peer != sender and msg.hops - best_hops >= self.cfg.optimization_threshold:
                self._optimize(mid, key, sender, best_peer, best_hops, out)

    def _on_conflict(self, sender: NodeId, msg: Gossip, now: float, out: list[Output]) -> None:
        """A GOSSIP with an id we delivered, but another topic or payload:
        two messages claim one id, and one of them is forged (a neighbour
        that took a publisher's epoch and next sequence numbers silently
        suppressed its next real messages, issue 12). Which one is true
        cannot be told without a key, so neither is suppressed: the second
        is delivered too and pushed on along the tree, once (a bounded memo
        of the conflicting copies already handled), and counted."""
        key = (msg.id, hash((msg.topic, msg.payload)))
        if key in self.conflicts:
            self.counters["duplicates"] += 1
            return
        if len(self.conflicts) >= _CONFLICTS_MAX:
            del self.conflicts[next(iter(self.conflicts))]
        self.conflicts[key] = None
        self.counters["conflicts"] += 1
        if not math.isfinite(msg.age) or not 0 <= msg.age < self.cfg.retention:
            return
        self._deliver(msg, now, out)
        hops = min(msg.hops + 1, MAX_HOPS)
        for peer in self.trees.eager_of(self._tree(msg.id, msg.topic)):
            if peer != sender:
                out.append(Send(peer, Gossip(msg.id, msg.topic, hops, msg.age, msg.payload)))

    def on_ihave(
        self, sender: NodeId, items: tuple[Announcement, ...], now: float, out: list[Output]
    ) -> None:
        """IHAVE (Alg. 1): for each id never received, remember the
        announcer and start the GRAFT timer if it is the first. For an id we
        already have, check the tree optimisation."""
        self.counters["ihave_received"] += len(items)
        for ann in items:
            mid = ann.id
            seen = self.seen.get(mid)
            if seen is not None:
                if (
                    seen.parent is not None
                    and seen.parent != sender
                    and seen.hops - ann.hops >= self.cfg.optimization_threshold
                    and self.trees.is_neighbor(sender)
                ):
                    cached = self.cache.get(mid, now)
                    key = self._tree(mid, cached.topic if cached is not None else None)
                    if self.trees.is_eager(seen.parent, key) and not self.trees.is_eager(
                        sender, key
                    ):
                        self._optimize(mid, key, seen.parent, sender, ann.hops, out)
                continue
            announcers = self.missing.get(mid)
            if announcers is None:
                if len(self.missing) >= self.cfg.missing_max:
                    self.counters["missing_dropped"] += 1
                    continue
                self.missing[mid] = [(sender, ann.hops)]
                out.append(SetTimer(Timer(PtTimer.GRAFT, mid), self.cfg.graft_timeout_1))
            elif all(peer != sender for peer, _ in announcers):
                announcers.append((sender, ann.hops))

    def on_prune(self, sender: NodeId, origin: str | None, now: float) -> None:
        """PRUNE (Alg. 1): the link becomes lazy in the origin's tree."""
        self.counters["prune_received"] += 1
        if origin is not None:
            self.trees.refresh(origin, now)
        self._make_lazy(sender, origin)

    def on_graft(
        self, sender: NodeId, mid: MsgId | None, origin: str | None, now: float, out: list[Output]
    ) -> None:
        """GRAFT (Alg. 1): the link becomes eager in the origin's tree; send
        the payload asked for if we still hold it."""
        self.counters["graft_received"] += 1
        entry = self.cache.get(mid, now) if mid is not None else None
        if mid is not None:
            origin = self._tree(mid, entry.topic if entry is not None else None)
        if origin is not None:
            self.trees.refresh(origin, now)
        self._make_eager(sender, origin)
        if mid is None:
            return
        if entry is None:
            self.counters["graft_miss"] += 1
            return
        self.counters["graft_answered"] += 1
        out.append(Send(sender, entry.resend(mid, now, repair=False)))

    # --------------------------------------------------------------- timers

    def _flush(self, now: float, out: list[Output]) -> None:
        """Send each peer its queued announcements in IHAVE batches, and
        each new neighbour our digest."""
        self._flush_set = False
        for peer, items in self.lazy_queue.items():
            for i in range(0, len(items), IHAVE_MAX_ITEMS):
                out.append(Send(peer, IHave(tuple(items[i : i + IHAVE_MAX_ITEMS]))))
            self.counters["ihave_sent"] += len(items)
        self.lazy_queue.clear()
        self.anti_entropy.greet(now, out)

    def _graft_timeout(self, mid: MsgId, out: list[Output]) -> None:
        """Timer 1 or 2 expired without the payload: GRAFT the next announcer
        still in the active view, and wait `graft_timeout_2` (sec. 3.6)."""
        announcers = self.missing.get(mid)
        if announcers is None or mid in self.seen:
            self.missing.pop(mid, None)
            return
        while announcers:
            peer, _ = announcers.pop(0)
            if peer in self.eager or peer in self.lazy:
                self._make_eager(peer, self._tree(mid, None))
                out.append(Send(peer, Graft(mid)))
                out.append(SetTimer(Timer(PtTimer.GRAFT, mid), self.cfg.graft_timeout_2))
                self.counters["graft_sent"] += 1
                return
        del self.missing[mid]
        self.counters["graft_gave_up"] += 1

    # ------------------------------------------------------------ helpers

    def _deliver(self, msg: Gossip, now: float, out: list[Output]) -> None:
        mid = msg.id
        d = Deliver(msg.topic, mid.origin, mid.seq, msg.hops, msg.payload, mid)
        if self.ordering is not None:
            self.ordering.deliver(d, msg.age, now, out)
            return
        self.counters["delivered"] += 1
        out.append(d)

    def _forward(
        self,
        mid: MsgId,
        key: str | None,
        topic: str,
        payload: bytes,
        hops: int,
        age: float,
        sender: NodeId | None,
        out: list[Output],
        skip: set[NodeId] | None = None,
        touch: float | None = None,
    ) -> None:
        """Eager push to the eager peers, announcements queued for the lazy
        ones, in the message's tree `key` (made the most recent one at
        `touch`); never back to the sender, to the origin, nor to `skip`."""
        origin = mid.origin
        if key is not None and touch is not None:
            self.trees.touch(key, touch, message=True)
        msg: Gossip | None = None
        for peer in self.trees.eager_of(key):
            if peer != sender and peer.name != origin and not (skip and peer in skip):
                if msg is None:
                    msg = Gossip(mid, topic, hops, age, payload)
                out.append(Send(peer, msg))
                self.counters["eager_sent"] += 1
        ann: Announcement | None = None
        for peer in self.trees.lazy_of(key):
            if peer == sender or peer.name == origin or (skip and peer in skip):
                continue
            if ann is None:
                ann = Announcement(mid, hops)
            queue = self.lazy_queue.setdefault(peer, [])
            if len(queue) >= self.cfg.ihave_queue_max:
                del queue[0]
                self.counters["ihave_dropped"] += 1
            queue.append(ann)
        if ann is not None:
            self._arm_flush(out)

    def _optimize(
        self,
        mid: MsgId,
        key: str | None,
        parent: NodeId,
        better: NodeId,
        better_hops: int,
        out: list[Output],
    ) -> None:
        """Tree optimisation (sec. 3.8): graft `better`, prune `parent`, in
        the tree `key` (see `_tree`)."""
        self.counters["optimized"] += 1
        if not self.trees.is_eager(better, key):
            self._make_eager(better, key)
            out.append(Send(better, Graft(None, key)))
            self.counters["graft_sent"] += 1
        self._make_lazy(parent, key)
        out.append(Send(parent, Prune(key)))
        self.counters["prune_sent"] += 1
        seen = self.seen.get(mid)
        if seen is not None:
            seen.parent, seen.hops = better, better_hops

    def _make_eager(self, peer: NodeId, origin: str | None) -> None:
        self.trees.make_eager(peer, origin)

    def _make_lazy(self, peer: NodeId, origin: str | None) -> None:
        self.trees.make_lazy(peer, origin)

    def _tree(self, mid: MsgId, topic: str | None) -> str | None:
        """The tree a message rides, as PRUNE and GRAFT name it: its
        origin's, or the shared one (None) for the tree-only topics and with
        the single tree. SWIM's announcements: changes from all over the
        cluster, most origins' only message, which would cost a flood each
        (`overlay.trees`) and a tree for every member; they shape the shared
        tree, as in the paper. Topic unknown (None): the origin's."""
        if not self.trees.limit or (topic is not None and topic in self.tree_only):
            return None
        return mid.origin

    def _arm_flush(self, out: list[Output]) -> None:
        if not self._flush_set:
            self._flush_set = True
            out.append(SetTimer(_FLUSH_TIMER, self.cfg.ihave_flush))

    def _expire(self, now: float) -> None:
        self.seen.expire(now)
        self.cache.expire(now)
        if self.ordering is not None:
            self.ordering.expire(now)
