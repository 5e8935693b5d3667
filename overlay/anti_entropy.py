"""Plumtree's anti-entropy: digests, IWANT, and the link repair they carry.

Rules of this module: it shares Plumtree's state (the eager and lazy sets,
the seen ids, the payload cache, the counters and the rng; see
`overlay.plumtree`) and changes none of it but one thing: the link repair
below may move a lazy peer to the eager set. It sends only to the peers it
is given (the tree's dispatcher has checked that the sender of a DIGEST or
an IWANT is a neighbour), owns no timer (the tree schedules its rounds with
`next_period`), and never does I/O.

Theory of operation
-------------------
- Every `anti_entropy_period` (jittered by +-10% from the rng, so nodes
  started together do not exchange in lock-step), a DIGEST of the ids we can
  still serve goes to the next neighbour of a shuffled round: each round is
  the active view shuffled once, neighbours that left are skipped, so each
  hears one within a view's worth of periods. The digest is compact: per
  origin and epoch, ranges of seqs; messages younger than
  `anti_entropy_delay` are left to the tree, and topics in `tree_only` never
  appear (SWIM's announcements: they have an anti-entropy of their own and
  go stale). It is kept until the cache changes or an entry ages into or
  out of the window; one cut to the wire bounds (a random sample of the
  groups, the newest ranges) is drawn afresh every time, so that over rounds
  the peers hear of everything.
- The receiver asks with IWANT for the ids it never saw (at most
  `cache_max_messages` seqs examined, `IWANT_MAX_IDS` asked; with ordered
  delivery, none it has already passed), and answers with the part of its
  own digest that the first does not cover (push-pull; nothing when they
  hold the same). New neighbours exchange digests at the tree's next flush
  (`welcome`, `greet`).
- The payloads come back as GOSSIP marked `repair`, which change no
  eager/lazy set; the receiver forwards them along its tree as new
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
  The same holds per origin (`overlay.trees`): a digest also carries, for
  the origins' trees the sender holds (a random sample of `TREE_BITS_MAX`
  when it holds more), whether it holds the receiver eager; the receiver
  compares with its own tree of each origin (its shared tree where it has
  none, and the sender's shared tree for origins a complete list leaves
  out), and on a disagreement grafts in that tree: eager at both ends.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter

from overlay.config import PlumtreeConfig
from overlay.ids import NodeId
from overlay.io import Output, Send
from overlay.messages import (
    DIGEST_MAX_ENTRIES,
    DIGEST_MAX_RANGES,
    IWANT_MAX_IDS,
    TREE_BITS_MAX,
    Digest,
    DigestEntry,
    Graft,
    IWant,
    MsgId,
    TreeBit,
)
from overlay.ordering import OrderedDelivery
from overlay.seen import PayloadCache, SeenIds
from overlay.trees import Trees

# Jitter on the anti-entropy period, a fraction of it: nodes started together
# do not exchange in lock-step (as HyParView's default).
_JITTER = 0.1

# Its part of Plumtree's counters (`Plumtree.stats()`); it also counts
# `invalid` ranges and the `graft_sent` of the link repair.
ANTI_ENTROPY_COUNTERS = (
    "link_repaired",  # links found eager at one end only, made eager at both
    "anti_entropy_rounds",  # digests sent
    "digest_truncated",  # digests cut to their size bounds
    "iwant_sent",  # ids asked for by anti-entropy
    "iwant_truncated",  # ids not asked for this round: request size bound
    "repair_sent",  # payloads sent in answer to IWANT
    "repair_received",  # new payloads that came by anti-entropy (counted by the tree)
)


def covered(mine: tuple[int, ...], theirs: tuple[int, ...] | None) -> bool:
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


class AntiEntropy:
    def __init__(
        self,
        config: PlumtreeConfig,
        rng: random.Random,
        *,
        trees: Trees,
        seen: SeenIds,
        cache: PayloadCache,
        counters: Counter[str],
        ordering: OrderedDelivery | None,
        tree_only: frozenset[str],
    ) -> None:
        """The shared state is Plumtree's (see the rules above); `ordering`
        is its ordered delivery, if on; `tree_only`: topics that go over the
        tree but never through anti-entropy."""
        self.cfg = config
        self.rng = rng
        self.trees = trees
        self.eager = trees.eager
        self.lazy = trees.lazy
        self.seen = seen
        self.cache = cache
        self.counters = counters
        self.ordering = ordering
        self.tree_only = tree_only
        self.new_peers: dict[NodeId, None] = {}  # digest due at the next flush
        self._round: list[NodeId] = []  # targets left this round
        # Our last digest: (cache version, valid until, digest); see digest().
        self._memo: tuple[int, float, tuple[DigestEntry, ...]] | None = None

    # ------------------------------------------------------------- schedule

    def next_period(self) -> float:
        """The wait before the next round: the period, jittered."""
        return self.cfg.anti_entropy_period * (1.0 + _JITTER * (2.0 * self.rng.random() - 1.0))

    def run_round(self, now: float, out: list[Output]) -> None:
        """One round's exchange: our digest, asking for a reply, to the next
        neighbour of the shuffled round."""
        round_ = self._round
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
        out.append(Send(target, self._digest_for(target, self.digest(now), True)))

    def welcome(self, peer: NodeId) -> None:
        """A new neighbour: it gets our digest at the next `greet`."""
        self.new_peers[peer] = None

    def forget(self, peer: NodeId) -> None:
        self.new_peers.pop(peer, None)

    def greet(self, now: float, out: list[Output]) -> None:
        """Our digest to each new neighbour (at the tree's flush)."""
        if self.new_peers:
            digest = self.digest(now)
            if digest:
                for peer in self.new_peers:
                    out.append(Send(peer, self._digest_for(peer, digest, False)))
            self.new_peers.clear()

    def stop(self) -> None:
        """Leaving: no digest is due to anyone any more."""
        self.new_peers.clear()

    # ------------------------------------------------------------ messages

    def on_digest(self, sender: NodeId, msg: Digest, now: float, out: list[Output]) -> None:
        """DIGEST: repair the link if the two ends disagree; ask for the ids
        we never saw; answer with ours if asked."""
        self._repair_link(sender, msg.eager, out)
        if self.trees.limit:
            self._repair_trees(sender, msg, out)
        entries = msg.entries
        wants: list[MsgId] = []
        seen = self.seen
        ordering = self.ordering
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
                    if mid not in seen and not (ordering is not None and ordering.passed(mid)):
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
        if msg.reply:
            # The answer lists only the groups the asker's digest does not
            # already cover: the asker needs nothing it holds itself, and a
            # settled pair, holding the same, exchanges one message, not two.
            ours = self.digest(now)
            if ours:
                theirs = {(e.origin, e.epoch): e.ranges for e in entries}
                news = tuple(
                    e for e in ours if not covered(e.ranges, theirs.get((e.origin, e.epoch)))
                )
                if news:
                    out.append(Send(sender, self._digest_for(sender, news, False)))

    def on_iwant(
        self, sender: NodeId, ids: tuple[MsgId, ...], now: float, out: list[Output]
    ) -> None:
        """IWANT: send what we still hold, marked as repair."""
        for mid in ids:
            entry = self.cache.get(mid, now)
            if entry is not None and entry.topic not in self.tree_only:
                self.counters["repair_sent"] += 1
                out.append(Send(sender, entry.resend(mid, now, repair=True)))

    # -------------------------------------------------------------- helpers

    def _repair_link(self, sender: NodeId, theirs: bool, out: list[Output]) -> None:
        """The sender holds us eager (`theirs`) or lazy; where that
        disagrees with how we hold it, make the link eager at both ends."""
        mine = sender in self.eager
        if theirs == mine:
            return
        self.counters["link_repaired"] += 1
        if theirs:
            # It pushes to us already: push back.
            if sender in self.lazy:
                del self.lazy[sender]
                self.eager[sender] = None
        else:
            out.append(Send(sender, Graft(None)))  # we push; ask it to push
            self.counters["graft_sent"] += 1

    def _digest_for(self, peer: NodeId, entries: tuple[DigestEntry, ...], reply: bool) -> Digest:
        """A digest to `peer`: `entries` and how we hold the link to it, in
        the shared tree and in a sample of the origins' trees."""
        trees = self.trees
        shared = peer in self.eager
        if not trees.origins:
            return Digest(entries, reply, shared)
        origins: list[str] | tuple[str, ...] = tuple(trees.origins)
        complete = len(origins) <= TREE_BITS_MAX
        if not complete:
            origins = self.rng.sample(origins, TREE_BITS_MAX)
        bits = tuple(TreeBit(o, trees.is_eager(peer, o)) for o in origins)
        return Digest(entries, reply, shared, bits, complete)

    def _repair_trees(self, sender: NodeId, msg: Digest, out: list[Output]) -> None:
        """Per origin, as `_repair_link` for the shared tree: where the
        sender's tree and ours disagree on this link, graft in that tree."""
        trees = self.trees
        theirs = {bit.origin: bit.eager for bit in msg.trees}
        disagree = [o for o, eager in theirs.items() if eager != trees.is_eager(sender, o)]
        if msg.trees_complete:
            disagree += [
                o
                for o in trees.origins
                if o not in theirs and msg.eager != trees.is_eager(sender, o)
            ]
        for origin in disagree:
            self.counters["link_repaired"] += 1
            trees.make_eager(sender, origin)
            out.append(Send(sender, Graft(None, origin)))
            self.counters["graft_sent"] += 1

    def digest(self, now: float) -> tuple[DigestEntry, ...]:
        """The ids we can serve, old enough to be past the tree's own repair,
        as ranges of seqs per (origin, epoch), within the wire bounds. Kept
        until the cache changes or an entry ages into or out of the window
        (every round sends it, and a peer's round asks for it again)."""
        memo = self._memo
        if memo is not None and memo[0] == self.cache.version and now < memo[1]:
            return memo[2]
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
            self._memo = None
        else:
            self._memo = (self.cache.version, until, digest)
        return digest
