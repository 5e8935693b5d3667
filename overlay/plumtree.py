"""Plumtree: broadcast over the active view (Leitão, Pereira, Rodrigues,
"Epidemic Broadcast Trees", SRDS 2007), with anti-entropy, per-origin
sequence numbers and optional ordered delivery.

Rules of this module: it owns the eager and lazy peer sets, the seen ids,
the payload cache and the local delivery of broadcasts. Its peers are exactly
HyParView's active view: the node feeds it every `NeighborUp`/`NeighborDown`,
a new neighbour starts eager, and a peer is in exactly one of `eager`/`lazy`
iff it is an active neighbour. It sends only to those peers, ignores control
messages from anyone else (the node has already told such a sender, through
`HyParView.check_link`, that the link is gone), and never does I/O.

Theory of operation
-------------------
- Broadcast (paper sec. 3.6, Alg. 1): the publisher delivers locally (hops
  0), pushes the payload (GOSSIP) to its eager peers and queues an IHAVE
  announcement for its lazy peers; a receiver that sees the id for the first
  time delivers it, makes the sender eager, and does the same with hops + 1,
  leaving out the sender and the origin. Announcements are batched: one
  IHAVE per lazy peer every `ihave_flush`.
- A duplicate GOSSIP means two tree paths reach us: the sender is moved to
  the lazy set and told with PRUNE, which makes the link lazy at both ends.
  The eager links left form a spanning tree; a steady overlay then carries
  each broadcast once per node (RMR 0).
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
- Anti-entropy: every `anti_entropy_period`, a DIGEST of the ids we can
  still serve (compact: per origin and epoch, ranges of seqs; messages
  younger than `anti_entropy_delay` are left to the tree) goes to the next
  neighbour of a shuffled round (so each hears one within a view's worth of
  periods), which asks with IWANT for the ids it never saw, and answers
  with the part of its own digest that the first does not cover
  (push-pull; nothing when they hold the same). New neighbours exchange digests at the
  next flush. The payloads come back as GOSSIP marked `repair`, which change
  no eager/lazy set; the receiver forwards them along its tree as new
  broadcasts. So what a partition or a burst of failures hid from a node
  reaches it after the heal, within the retention window.
- Link repair: PRUNE and GRAFT each change one end and tell the other, so
  two that cross (or a PRUNE crossing a push, which makes the receiver
  eager again) can leave a link eager at one end only; the paper has no
  rule that undoes it while no broadcast crosses the link. Every DIGEST says
  whether its sender holds the receiver eager; on a disagreement the link
  becomes eager at both ends (the receiver grafts, or takes the sender
  eager), the safe side: a redundant eager link costs one duplicate and a
  PRUNE at the next broadcast, a missing one an IHAVE and a GRAFT timeout.
- Ordered delivery (`ordered`): per (origin, epoch), a message after a gap
  is held back until the gap fills, or until the missing one could no longer
  arrive (the held message's age reaches `retention`, and the missing one,
  published earlier, is older). The first message heard from an origin sets
  where its sequence starts; an earlier seq arriving later is dropped and
  counted (`ordered_late`).
- Backpressure: every queue and store is bounded by `PlumtreeConfig`; what a
  bound drops is counted in `stats()`.
- Local errors: `publish()` raises `PublishError` (payload over
  `max_payload`, bad topic, node left) before anything is sent; the same
  request as a `Publish` input returns a `PublishRejected` output instead.
"""

from __future__ import annotations

import bisect
import enum
import math
import random
from collections import Counter
from dataclasses import dataclass, field

from overlay.config import PlumtreeConfig
from overlay.ids import NodeId
from overlay.io import (
    CancelTimer,
    Deliver,
    Input,
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
    DIGEST_MAX_ENTRIES,
    DIGEST_MAX_RANGES,
    IHAVE_MAX_ITEMS,
    IWANT_MAX_IDS,
    MAX_HOPS,
    MAX_TOPIC,
    Announcement,
    Digest,
    DigestEntry,
    Gossip,
    Graft,
    IHave,
    IWant,
    Message,
    MsgId,
    Prune,
)
from overlay.seen import Cached, PayloadCache, Seen, SeenIds

# Jitter on the anti-entropy period, a fraction of it: nodes started together
# do not exchange in lock-step (as HyParView's default).
_JITTER = 0.1
# Timers that fire "at" a deadline computed from floats may land a hair early.
_EPSILON = 1e-9
# Conflicting copies (one id, two payloads) remembered, so each spreads once
# (guess: far more than honest traffic ever makes, which is none).
_CONFLICTS_MAX = 1024


def _covered(mine: tuple[int, ...], theirs: tuple[int, ...] | None) -> bool:
    """Does the range list `theirs` (a peer's, so unchecked) contain every
    seq of `mine` (ours: sorted, disjoint)? Each of our ranges must lie
    within one of theirs."""
    if theirs is None:
        return False
    if mine == theirs:
        return True
    if len(theirs) % 2:
        return False
    spans = sorted(zip(theirs[::2], theirs[1::2], strict=True))
    starts = [first for first, _ in spans]
    for i in range(0, len(mine), 2):
        first, last = mine[i], mine[i + 1]
        j = bisect.bisect_right(starts, first) - 1
        if j < 0 or spans[j][1] < last:
            return False
    return True


class PtTimer(enum.Enum):
    FLUSH = "flush"  # send queued IHAVEs and new neighbours' digests
    GRAFT = "graft"  # key: the missing MsgId
    ANTI_ENTROPY = "anti_entropy"
    RELEASE = "release"  # key: (origin, epoch) with messages held back


_FLUSH_TIMER = Timer(PtTimer.FLUSH)
_AE_TIMER = Timer(PtTimer.ANTI_ENTROPY)

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
    "link_repaired",  # links found eager at one end only, made eager at both
    "anti_entropy_rounds",  # digests sent
    "digest_truncated",  # digests cut to their size bounds
    "iwant_sent",  # ids asked for by anti-entropy
    "iwant_truncated",  # ids not asked for this round: request size bound
    "repair_sent",  # payloads sent in answer to IWANT
    "repair_received",  # new payloads that came by anti-entropy
    "cache_evicted",  # payloads dropped before retention: count/bytes bound
    "seen_evicted",  # ids forgotten before seen_ttl: count bound
    "held",  # deliveries held back for order
    "gaps_skipped",  # seqs given up on by ordered delivery
    "ordered_late",  # messages dropped by ordered delivery: seq already passed
)


class PublishError(ValueError):
    """A publish this node refuses (a local misuse, not a network error)."""


@dataclass(frozen=True, slots=True)
class PeerSets:
    eager: tuple[NodeId, ...]
    lazy: tuple[NodeId, ...]


@dataclass(slots=True)
class _Order:
    """Per-(origin, epoch) state of ordered delivery."""

    next: int  # the seq to deliver next
    last: float  # when a message of this origin last arrived
    held: dict[int, tuple[Deliver, float]] = field(default_factory=dict)  # seq -> (d, deadline)


class Plumtree:
    def __init__(self, me: NodeId, config: PlumtreeConfig, rng: random.Random) -> None:
        self.me = me
        self.cfg = config
        self.rng = rng
        self.epoch = rng.getrandbits(32)
        self.seq = 0
        # dicts, not sets: insertion order keeps every pick reproducible.
        self.eager: dict[NodeId, None] = {}
        self.lazy: dict[NodeId, None] = {}
        self.seen = SeenIds(config.seen_ttl, config.seen_max_ids)
        self.cache = PayloadCache(
            config.retention, config.cache_max_messages, config.cache_max_bytes
        )
        # Announced but not received: the announcers, first first, with the
        # hop count each announced. A GRAFT timer is pending for each key.
        self.missing: dict[MsgId, list[tuple[NodeId, int]]] = {}
        # (id, hash of topic and payload) of conflicting copies handled.
        self.conflicts: dict[tuple[MsgId, int], None] = {}
        self.lazy_queue: dict[NodeId, list[Announcement]] = {}
        # Topics that go over the tree (eager push, IHAVE, GRAFT) but never
        # through anti-entropy: set by the owner for a topic whose messages
        # have an anti-entropy of their own and go stale (SWIM's, see
        # `overlay.node`).
        self.tree_only: frozenset[str] = frozenset()
        self.new_peers: dict[NodeId, None] = {}  # digest due at the next flush
        self._ae_round: list[NodeId] = []  # anti-entropy targets left this round
        # Our last digest: (cache version, valid until, digest); see _digest.
        self._digest_memo: tuple[int, float, tuple[DigestEntry, ...]] | None = None
        self._flush_armed = False
        self.order: dict[tuple[str, int], _Order] = {}
        self.counters: Counter[str] = Counter({name: 0 for name in COUNTERS})
        self.left = False

    # ----------------------------------------------------------------- API

    def start(self, now: float) -> list[Output]:
        return [SetTimer(_AE_TIMER, self._jittered(self.cfg.anti_entropy_period))]

    def handle(self, inp: Input, now: float) -> list[Output]:
        out: list[Output] = []
        self._expire(now)
        if isinstance(inp, Received):  # the commonest, without `match`
            self.on_message(inp.sender, inp.msg, now, out)
            return out
        match inp:
            case TimerFired(timer):
                self.on_timer(timer, now, out)
            case Publish(topic, payload):
                try:
                    out.extend(self.publish(topic, payload, now))
                except PublishError as exc:
                    self.counters["publish_rejected"] += 1
                    out.append(PublishRejected(topic, str(exc)))
            case _:
                pass
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
        self._forward(mid, topic, payload, 1, 0.0, None, out)
        return out

    def check_publish(self, topic: str, payload: bytes) -> None:
        if self.left:
            raise PublishError("this node has left the cluster")
        if not isinstance(topic, str) or not 0 < len(topic) <= MAX_TOPIC:
            raise PublishError(f"topic must be a string of 1 to {MAX_TOPIC} characters")
        if not isinstance(payload, bytes):
            raise PublishError("payload must be bytes")
        if len(payload) > self.cfg.max_payload:
            raise PublishError(
                f"payload is {len(payload)} bytes, the limit is {self.cfg.max_payload}"
            )

    def neighbor_up(self, peer: NodeId, now: float) -> list[Output]:
        """HyParView took `peer` into the active view: it starts eager, and
        we exchange digests with it at the next flush."""
        out: list[Output] = []
        if peer == self.me or self.left:
            return out
        self.lazy.pop(peer, None)
        self.eager[peer] = None
        self.new_peers[peer] = None
        self._arm_flush(out)
        return out

    def neighbor_down(self, peer: NodeId, now: float) -> list[Output]:
        """`peer` left the active view: forget it everywhere, its pending
        announcements included (paper sec. 3.7)."""
        self.eager.pop(peer, None)
        self.lazy.pop(peer, None)
        self.lazy_queue.pop(peer, None)
        self.new_peers.pop(peer, None)
        for announcers in self.missing.values():
            announcers[:] = [a for a in announcers if a[0] != peer]
        return []

    def push_announced(self, now: float) -> list[Output]:
        """The node is about to leave and will answer no GRAFT: what it still
        meant to announce lazily, it pushes now, payload and all. (Its
        goodbye, published just before, is one of them whenever its eager
        set is empty, as it often is after a burst of broadcasts.)"""
        out: list[Output] = []
        for peer, items in self.lazy_queue.items():
            for ann in items:
                entry = self.cache.get(ann.id, now)
                if entry is not None:
                    out.append(Send(peer, self._gossip(ann.id, entry, now, repair=False)))
                    self.counters["eager_sent"] += 1
        self.lazy_queue.clear()
        return out

    def leave(self) -> list[Output]:
        """The node is leaving: stop the periodic work. (HyParView's
        `NeighborDown`s empty the peer sets.)"""
        self.left = True
        out: list[Output] = [CancelTimer(_AE_TIMER)]
        if self._flush_armed:
            self._flush_armed = False
            out.append(CancelTimer(_FLUSH_TIMER))
        self.lazy_queue.clear()
        self.new_peers.clear()
        return out

    def peers(self) -> PeerSets:
        return PeerSets(tuple(self.eager), tuple(self.lazy))

    def stats(self) -> dict[str, int]:
        """Counters since start (see `COUNTERS`), and current sizes."""
        self.counters["cache_evicted"] = self.cache.evicted
        self.counters["seen_evicted"] = self.seen.evicted
        stats = dict(self.counters)
        stats.update(
            eager=len(self.eager),
            lazy=len(self.lazy),
            cached=len(self.cache),
            cached_bytes=self.cache.bytes,
            seen=len(self.seen),
            missing=len(self.missing),
            held_now=sum(len(o.held) for o in self.order.values()),
        )
        return stats

    # ------------------------------------------------------------- messages

    def on_message(self, sender: NodeId, msg: Message, now: float, out: list[Output]) -> None:
        if isinstance(msg, Gossip):
            self.on_gossip(sender, msg, now, out)
            return
        if sender not in self.eager and sender not in self.lazy:
            self.counters["not_neighbor"] += 1
            return
        match msg:
            case IHave(items):
                self.on_ihave(sender, items, out)
            case Prune():
                self.on_prune(sender)
            case Graft(mid):
                self.on_graft(sender, mid, now, out)
            case Digest(entries, reply, eager):
                self._check_link(sender, eager, out)
                self.on_digest(sender, entries, reply, now, out)
            case IWant(ids):
                self.on_iwant(sender, ids, now, out)
            case _:
                pass

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
                self._make_lazy(sender)
                out.append(Send(sender, Prune()))
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
        if tree:
            self._make_eager(sender)
        self._deliver(mid, msg.topic, msg.hops, msg.payload, msg.age, now, out)
        hops = min(msg.hops + 1, MAX_HOPS)
        # Peers that announced it have it: neither push nor announce to them.
        skip = {peer for peer, _ in announcers} if announcers else None
        self._forward(mid, msg.topic, msg.payload, hops, msg.age, sender, out, skip)
        if tree and announcers:
            # Paper sec. 3.8: an announcer on a much shorter path replaces
            # the eager link this copy came by.
            best_peer, best_hops = min(announcers, key=lambda a: a[1])
            if best_peer != sender and msg.hops - best_hops >= self.cfg.optimization_threshold:
                self._optimize(mid, sender, best_peer, best_hops, out)

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
        self._deliver(msg.id, msg.topic, msg.hops, msg.payload, msg.age, now, out)
        hops = min(msg.hops + 1, MAX_HOPS)
        for peer in self.eager:
            if peer != sender:
                out.append(Send(peer, Gossip(msg.id, msg.topic, hops, msg.age, msg.payload)))

    def on_ihave(self, sender: NodeId, items: tuple[Announcement, ...], out: list[Output]) -> None:
        """IHAVE (Alg. 1): for each id never received, remember the
        announcer and start the GRAFT timer if it is the first. For an id we
        already have, check the tree optimisation."""
        for ann in items:
            mid = ann.id
            seen = self.seen.get(mid)
            if seen is not None:
                if (
                    seen.parent is not None
                    and seen.parent != sender
                    and seen.parent in self.eager
                    and sender in self.lazy
                    and seen.hops - ann.hops >= self.cfg.optimization_threshold
                ):
                    self._optimize(mid, seen.parent, sender, ann.hops, out)
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

    def on_prune(self, sender: NodeId) -> None:
        """PRUNE (Alg. 1): the link becomes lazy."""
        self.counters["prune_received"] += 1
        self._make_lazy(sender)

    def on_graft(self, sender: NodeId, mid: MsgId | None, now: float, out: list[Output]) -> None:
        """GRAFT (Alg. 1): the link becomes eager; send the payload asked for
        if we still hold it."""
        self.counters["graft_received"] += 1
        self._make_eager(sender)
        if mid is None:
            return
        entry = self.cache.get(mid, now)
        if entry is None:
            self.counters["graft_miss"] += 1
            return
        self.counters["graft_answered"] += 1
        out.append(Send(sender, self._gossip(mid, entry, now, repair=False)))

    def _check_link(self, sender: NodeId, theirs: bool, out: list[Output]) -> None:
        """Link repair: the sender holds us eager (`theirs`) or lazy; where
        that disagrees with how we hold it, make the link eager at both ends."""
        mine = sender in self.eager
        if theirs == mine:
            return
        self.counters["link_repaired"] += 1
        if theirs:
            self._make_eager(sender)  # it pushes to us already: push back
        else:
            out.append(Send(sender, Graft(None)))  # we push; ask it to push
            self.counters["graft_sent"] += 1

    def on_digest(
        self,
        sender: NodeId,
        entries: tuple[DigestEntry, ...],
        reply: bool,
        now: float,
        out: list[Output],
    ) -> None:
        """DIGEST: ask for the ids we never saw; answer with ours if asked."""
        wants: list[MsgId] = []
        seen = self.seen
        ordered = self.cfg.ordered
        budget = self.cfg.cache_max_messages  # seqs examined: a digest cannot list more
        truncated = False
        for entry in entries:
            ranges = entry.ranges
            if len(ranges) % 2:
                self.counters["invalid"] += 1
                continue
            for i in range(0, len(ranges), 2):
                first, last = ranges[i], ranges[i + 1]
                if first < 1 or last < first:
                    self.counters["invalid"] += 1
                    continue
                if last - first >= budget:
                    first = last - budget + 1  # keep the newest
                    truncated = True
                budget -= last - first + 1
                origin, epoch = entry.origin, entry.epoch
                for seq in range(first, last + 1):
                    mid = MsgId(origin, epoch, seq)
                    if mid not in seen and not (ordered and self._passed(mid)):
                        wants.append(mid)
                if budget <= 0:
                    break
            if budget <= 0:
                break
        if len(wants) > IWANT_MAX_IDS:
            self.counters["iwant_truncated"] += len(wants) - IWANT_MAX_IDS
            del wants[IWANT_MAX_IDS:]
        if truncated:
            self.counters["digest_truncated"] += 1
        if wants:
            self.counters["iwant_sent"] += len(wants)
            out.append(Send(sender, IWant(tuple(wants))))
        if reply:
            # The answer lists only the groups the asker's digest does not
            # already cover: the asker needs nothing it holds itself, and a
            # settled pair, holding the same, exchanges one message, not two.
            ours = self._digest(now)
            if ours:
                theirs = {(e.origin, e.epoch): e.ranges for e in entries}
                news = tuple(
                    e for e in ours if not _covered(e.ranges, theirs.get((e.origin, e.epoch)))
                )
                if news:
                    out.append(Send(sender, Digest(news, False, sender in self.eager)))

    def on_iwant(
        self, sender: NodeId, ids: tuple[MsgId, ...], now: float, out: list[Output]
    ) -> None:
        """IWANT: send what we still hold, marked as repair."""
        for mid in ids:
            entry = self.cache.get(mid, now)
            if entry is not None and entry.topic not in self.tree_only:
                self.counters["repair_sent"] += 1
                out.append(Send(sender, self._gossip(mid, entry, now, repair=True)))

    # --------------------------------------------------------------- timers

    def on_timer(self, timer: Timer, now: float, out: list[Output]) -> None:
        match timer.kind:
            case PtTimer.FLUSH:
                self._flush(now, out)
            case PtTimer.GRAFT:
                if isinstance(timer.key, MsgId):
                    self._graft_timeout(timer.key, out)
            case PtTimer.ANTI_ENTROPY:
                if self.left:
                    return
                self._anti_entropy(now, out)
                out.append(SetTimer(_AE_TIMER, self._jittered(self.cfg.anti_entropy_period)))
            case PtTimer.RELEASE:
                key = timer.key
                if isinstance(key, tuple):
                    self._release(key, now, out)
            case _:
                pass

    def _flush(self, now: float, out: list[Output]) -> None:
        """Send each peer its queued announcements in IHAVE batches, and
        each new neighbour our digest."""
        self._flush_armed = False
        for peer, items in self.lazy_queue.items():
            for i in range(0, len(items), IHAVE_MAX_ITEMS):
                out.append(Send(peer, IHave(tuple(items[i : i + IHAVE_MAX_ITEMS]))))
            self.counters["ihave_sent"] += len(items)
        self.lazy_queue.clear()
        if self.new_peers:
            digest = self._digest(now)
            if digest:
                for peer in self.new_peers:
                    out.append(Send(peer, Digest(digest, False, peer in self.eager)))
            self.new_peers.clear()

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
                self._make_eager(peer)
                out.append(Send(peer, Graft(mid)))
                out.append(SetTimer(Timer(PtTimer.GRAFT, mid), self.cfg.graft_timeout_2))
                self.counters["graft_sent"] += 1
                return
        del self.missing[mid]
        self.counters["graft_gave_up"] += 1

    def _anti_entropy(self, now: float, out: list[Output]) -> None:
        round_ = self._ae_round
        while round_ and round_[-1] not in self.eager and round_[-1] not in self.lazy:
            round_.pop()  # no longer a neighbour
        if not round_:
            round_.extend(self.eager)
            round_.extend(self.lazy)
            if not round_:
                return
            self.rng.shuffle(round_)
        target = round_.pop()
        self.counters["anti_entropy_rounds"] += 1
        out.append(Send(target, Digest(self._digest(now), True, target in self.eager)))

    # ------------------------------------------------------------ helpers

    def _deliver(
        self,
        mid: MsgId,
        topic: str,
        hops: int,
        payload: bytes,
        age: float,
        now: float,
        out: list[Output],
    ) -> None:
        d = Deliver(topic, mid.origin, mid.seq, hops, payload, mid)
        if not self.cfg.ordered:
            self.counters["delivered"] += 1
            out.append(d)
            return
        key = (mid.origin, mid.epoch)
        state = self.order.pop(key, None)
        if state is None:
            state = _Order(mid.seq, now)
        state.last = now
        self.order[key] = state  # most recently active last, for expiry
        if mid.seq < state.next:
            self.counters["ordered_late"] += 1
            return
        if mid.seq > state.next:
            lowest_before = min(state.held) if state.held else None
            state.held[mid.seq] = (d, now + self.cfg.retention - age)
            self.counters["held"] += 1
            if len(state.held) > self.cfg.ordered_max_held:
                # Too much held back: give up on the gap now.
                self._skip_to(state, min(state.held), out)
            self._arm_release(key, state, lowest_before, now, out)
            return
        lowest_before = min(state.held) if state.held else None
        self.counters["delivered"] += 1
        out.append(d)
        state.next += 1
        self._drain(state, out)
        self._arm_release(key, state, lowest_before, now, out)

    def _drain(self, state: _Order, out: list[Output]) -> None:
        while state.next in state.held:
            d, _ = state.held.pop(state.next)
            self.counters["delivered"] += 1
            out.append(d)
            state.next += 1

    def _skip_to(self, state: _Order, seq: int, out: list[Output]) -> None:
        self.counters["gaps_skipped"] += seq - state.next
        state.next = seq
        self._drain(state, out)

    def _arm_release(
        self,
        key: tuple[str, int],
        state: _Order,
        lowest_before: int | None,
        now: float,
        out: list[Output],
    ) -> None:
        """Keep one RELEASE timer per origin, due when the lowest held
        message's deadline passes."""
        lowest = min(state.held) if state.held else None
        if lowest == lowest_before:
            return
        timer = Timer(PtTimer.RELEASE, key)
        if lowest is None:
            out.append(CancelTimer(timer))
            return
        out.append(SetTimer(timer, max(0.0, state.held[lowest][1] - now)))

    def _release(self, key: tuple[str, int], now: float, out: list[Output]) -> None:
        """The lowest held message's deadline passed: what is missing before
        it can no longer arrive. Skip the gap and deliver what follows."""
        state = self.order.get(key)
        if state is None:
            return
        while state.held:
            lowest = min(state.held)
            if state.held[lowest][1] > now + _EPSILON:
                break
            self._skip_to(state, lowest, out)
        if state.held:
            lowest = min(state.held)
            out.append(SetTimer(Timer(PtTimer.RELEASE, key), state.held[lowest][1] - now))

    def _passed(self, mid: MsgId) -> bool:
        """Ordered delivery has moved past this id: fetching it is useless."""
        if not self.cfg.ordered:
            return False
        state = self.order.get((mid.origin, mid.epoch))
        return state is not None and mid.seq < state.next

    def _forward(
        self,
        mid: MsgId,
        topic: str,
        payload: bytes,
        hops: int,
        age: float,
        sender: NodeId | None,
        out: list[Output],
        skip: set[NodeId] | None = None,
    ) -> None:
        """Eager push to the eager peers, announcements queued for the lazy
        ones; never back to the sender, to the origin, nor to `skip`."""
        origin = mid.origin
        msg: Gossip | None = None
        for peer in self.eager:
            if peer != sender and peer.name != origin and not (skip and peer in skip):
                if msg is None:
                    msg = Gossip(mid, topic, hops, age, payload)
                out.append(Send(peer, msg))
                self.counters["eager_sent"] += 1
        ann: Announcement | None = None
        for peer in self.lazy:
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
        self, mid: MsgId, parent: NodeId, better: NodeId, better_hops: int, out: list[Output]
    ) -> None:
        """Tree optimisation (sec. 3.8): graft `better`, prune `parent`."""
        self.counters["optimized"] += 1
        if better not in self.eager:
            self._make_eager(better)
            out.append(Send(better, Graft(None)))
            self.counters["graft_sent"] += 1
        self._make_lazy(parent)
        out.append(Send(parent, Prune()))
        self.counters["prune_sent"] += 1
        seen = self.seen.get(mid)
        if seen is not None:
            seen.parent, seen.hops = better, better_hops

    def _gossip(self, mid: MsgId, entry: Cached, now: float, *, repair: bool) -> Gossip:
        hops = min(entry.hops + 1, MAX_HOPS)
        return Gossip(mid, entry.topic, hops, entry.age_at(now), entry.payload, repair)

    def _digest(self, now: float) -> tuple[DigestEntry, ...]:
        """The ids we can serve, old enough to be past the tree's own repair,
        as ranges of seqs per (origin, epoch), within the wire bounds. Kept
        until the cache changes or an entry ages into or out of the window
        (every round sends it, and a peer's round asks for it again)."""
        cached = self._digest_memo
        if cached is not None and cached[0] == self.cache.version and now < cached[1]:
            return cached[2]
        groups: dict[tuple[str, int], list[int]] = {}
        tree_only = self.tree_only
        live, until = self.cache.window(now, self.cfg.anti_entropy_delay)
        for mid, entry in live:
            if entry.topic not in tree_only:
                groups.setdefault((mid.origin, mid.epoch), []).append(mid.seq)
        keys = list(groups)
        truncated = False
        if len(keys) > DIGEST_MAX_ENTRIES:
            keys = self.rng.sample(keys, DIGEST_MAX_ENTRIES)
            truncated = True
        entries: list[DigestEntry] = []
        for origin, epoch in keys:
            seqs = sorted(groups[(origin, epoch)])
            ranges: list[int] = []
            for seq in seqs:
                if ranges and ranges[-1] == seq - 1:
                    ranges[-1] = seq
                else:
                    ranges += (seq, seq)
            if len(ranges) > 2 * DIGEST_MAX_RANGES:
                ranges = ranges[-2 * DIGEST_MAX_RANGES :]  # the newest
                truncated = True
            entries.append(DigestEntry(origin, epoch, tuple(ranges)))
        digest = tuple(entries)
        if truncated:
            # Not kept: each round samples afresh, so that over rounds the
            # peers hear of everything.
            self.counters["digest_truncated"] += 1
            self._digest_memo = None
        else:
            self._digest_memo = (self.cache.version, until, digest)
        return digest

    def _make_eager(self, peer: NodeId) -> None:
        if peer in self.lazy:
            del self.lazy[peer]
            self.eager[peer] = None

    def _make_lazy(self, peer: NodeId) -> None:
        if peer in self.eager:
            del self.eager[peer]
            self.lazy[peer] = None

    def _arm_flush(self, out: list[Output]) -> None:
        if not self._flush_armed:
            self._flush_armed = True
            out.append(SetTimer(_FLUSH_TIMER, self.cfg.ihave_flush))

    def _expire(self, now: float) -> None:
        self.seen.expire(now)
        self.cache.expire(now)
        # An origin silent for seen_ttl cannot send anything older than its
        # last message any more (it would be past retention): forget it.
        order = self.order
        while order:
            key = next(iter(order))
            state = order[key]
            if state.held or state.last + self.cfg.seen_ttl > now:
                break
            del order[key]

    def _jittered(self, period: float) -> float:
        return period * (1.0 + _JITTER * (2.0 * self.rng.random() - 1.0))
