"""Plumtree's broadcast trees: the eager/lazy split of the active view, one
per origin plus a shared one (issue 14).

Rules of this module: it holds the split and nothing else; `overlay.plumtree`
decides when a link changes, and this module only applies it. Every tree
splits the same peers, the active view: a peer is eager or lazy in every
tree iff it is an active neighbour. Pure data, no I/O; the caller passes
the time.

Theory of operation
-------------------
- The paper (Leitao et al., sec. 3) keeps one tree for every origin: a
  duplicate of origin A's message prunes the link it came by for origin B
  too. With many publishers at once, their messages prune each other's
  links: the eager graph falls apart and messages wait for IHAVE and GRAFT,
  and what is left is a spanning tree shaped for no one in particular
  (measured at 1,000 nodes: 32 hops to the last delivery on an overlay of
  diameter 7). Riak's and Partisan's Plumtree keep eager/lazy peers per
  root instead; so do we. PRUNE and GRAFT name the origin whose tree they
  change, and a message is pushed along its origin's tree only.
- Building a tree takes a flood: with every neighbour eager, an origin's
  message reaches every node by the fastest paths, and the duplicates prune
  the tree down to those paths, the origin's own shortest-path tree (what
  one sender gets in the paper). A flood costs a copy per link instead of a
  copy per node, which a one-shot sender does not repay. So a new origin's
  tree starts as a copy of the oldest tree held (the template: a tree some
  origin built by flooding, the first one heard, mostly the same at every
  node), and only its second message floods it (`rebuilt`): a random
  sender pays what the paper's tree costs and rides an existing
  shortest-path tree (at most twice its depth); a publisher pays one
  flood and then rides its own. Measured at 1,000 nodes (bench/sim_scale.py
  --senders): random senders p99 315 ms against one sender's 169, LDH 16
  on an overlay of diameter 7, RMR 0.02; a flood for every new origin
  (`flood`, as Partisan's per-root trees start) gives 170 ms and LDH 10 at
  RMR 2.96; rotating publishers ride their own trees, p99 as one sender's
  from their third message. The first origin of all floods (no template).
- Bounded memory: trees are kept for at most `limit` origins. A tree idle
  for `idle` seconds is evicted to make room, the least recently used
  first (counted in `evicted`); when every tree is in use, the new origin
  shares the shared tree (counted in `shared`), the paper's single tree,
  which the traffic of such origins shapes as the paper says. Churning
  trees in use would flood the overlay at every comeback. A tree stores
  only its lazy peers, as a tuple (eager = active view minus those), so a
  new neighbour is eager in every tree, as the paper says of a new
  neighbour, at no cost, and a tree costs ~150 bytes. `limit` 0 keeps the
  shared tree alone: the paper's behaviour, for its reproduction.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from overlay.ids import NodeId


class Trees:
    def __init__(self, limit: int, idle: float, *, flood: bool = False) -> None:
        self.limit = limit
        self.idle = idle
        self.flood = flood
        # The active view, in the order the neighbours came (every pick
        # reproducible), and the shared tree's split of it.
        self.active: dict[NodeId, None] = {}
        self.eager: dict[NodeId, None] = {}
        self.lazy: dict[NodeId, None] = {}
        # origin -> its lazy peers; least recently used first, with when.
        self.origins: OrderedDict[str, tuple[NodeId, ...]] = OrderedDict()
        self.used: dict[str, float] = {}
        # When each tree was made (a counter): the oldest one held is the
        # template of new ones (see `touch`).
        self.born: dict[str, int] = {}
        # Trees copied from the template that have carried no message yet of
        # their own beyond the first (see `touch`).
        self.copied: dict[str, None] = {}
        self.created = 0
        self.rebuilt = 0
        self.evicted = 0
        self.shared = 0

    def __len__(self) -> int:
        return len(self.origins)

    # ------------------------------------------------------------ neighbours

    def up(self, peer: NodeId) -> None:
        """A new neighbour: eager in every tree (paper sec. 3.6). A peer that
        went `down` is in no tree already; only one that comes up again
        while still active can be lazy somewhere."""
        if peer in self.active:
            self._forget(peer)
        self.active[peer] = None
        self.lazy.pop(peer, None)
        self.eager[peer] = None

    def down(self, peer: NodeId) -> None:
        """A neighbour gone: out of every tree."""
        self.active.pop(peer, None)
        self.eager.pop(peer, None)
        self.lazy.pop(peer, None)
        self._forget(peer)

    def _forget(self, peer: NodeId) -> None:
        for origin, lazy in self.origins.items():
            if peer in lazy:
                self.origins[origin] = tuple(p for p in lazy if p != peer)

    # ----------------------------------------------------------------- reads

    def _lazy(self, origin: str | None) -> tuple[NodeId, ...] | None:
        """`origin`'s own tree (its lazy peers), or None: the shared tree."""
        return self.origins.get(origin) if origin is not None else None

    def is_neighbor(self, peer: NodeId) -> bool:
        return peer in self.active

    def is_eager(self, peer: NodeId, origin: str | None) -> bool:
        """Is `peer` eager in `origin`'s tree (the shared one if it has none)?"""
        lazy = self._lazy(origin)
        if lazy is None:
            return peer in self.eager
        return peer in self.active and peer not in lazy

    def eager_of(self, origin: str | None) -> Iterator[NodeId]:
        lazy = self._lazy(origin)
        if lazy is None:
            return iter(self.eager)
        if not lazy:
            return iter(self.active)
        return (p for p in self.active if p not in lazy)

    def lazy_of(self, origin: str | None) -> Iterator[NodeId]:
        lazy = self._lazy(origin)
        if lazy is None:
            return iter(self.lazy)
        return iter(lazy)

    def split(self, origin: str) -> tuple[tuple[NodeId, ...], tuple[NodeId, ...]]:
        """`origin`'s tree as (eager, lazy), the shared one if it has none."""
        return tuple(self.eager_of(origin)), tuple(self.lazy_of(origin))

    # --------------------------------------------------------------- changes

    def refresh(self, origin: str, now: float) -> None:
        """A PRUNE or GRAFT names `origin`: its tree, if we hold one, becomes
        the most recently used. Without one, the change applies to the
        shared tree, the one this node uses for that origin: a control
        message never makes a tree, so a neighbour naming made-up origins
        cannot fill the table (only messages, which it must deliver, can)."""
        if origin in self.origins:
            self.origins.move_to_end(origin)
            self.used[origin] = now

    def touch(self, origin: str, now: float, *, message: bool = False) -> None:
        """A message of `origin` is on its way (`message`; else a repair
        naming it): its tree becomes the most recently used, made from the
        template if there is room; a copied tree's second message floods it
        (see the theory above)."""
        if self.limit == 0:
            return
        if origin in self.origins:
            self.origins.move_to_end(origin)
            self.used[origin] = now
            if message and origin in self.copied:
                del self.copied[origin]
                self.origins[origin] = ()
                self.rebuilt += 1
            return
        if len(self.origins) >= self.limit:
            oldest = next(iter(self.origins))
            if now - self.used[oldest] < self.idle:
                self.shared += 1
                return
            del self.origins[oldest]
            del self.used[oldest]
            del self.born[oldest]
            self.copied.pop(oldest, None)
            self.evicted += 1
        self.origins[origin] = self._template()
        if self.born and not self.flood:
            self.copied[origin] = None
        self.used[origin] = now
        self.born[origin] = self.created
        self.created += 1

    def _template(self) -> tuple[NodeId, ...]:
        """A new tree's lazy peers: none (a flood) with `flood` or with no
        tree yet, else those of the oldest tree held."""
        if self.flood or not self.born:
            return ()
        return self.origins[next(iter(self.born))]  # born: in creation order

    def make_eager(self, peer: NodeId, origin: str | None) -> None:
        """`peer` becomes eager in `origin`'s tree (the shared one if it has none)."""
        if peer not in self.active:
            return
        lazy = self._lazy(origin)
        if lazy is None:
            if peer in self.lazy:
                del self.lazy[peer]
                self.eager[peer] = None
        elif peer in lazy:
            self.origins[origin] = tuple(p for p in lazy if p != peer)  # type: ignore[index]

    def make_lazy(self, peer: NodeId, origin: str | None) -> None:
        """`peer` becomes lazy in `origin`'s tree (the shared one if it has none)."""
        if peer not in self.active:
            return
        lazy = self._lazy(origin)
        if lazy is None:
            if peer in self.eager:
                del self.eager[peer]
                self.lazy[peer] = None
        elif peer not in lazy:
            self.origins[origin] = (*lazy, peer)  # type: ignore[index]
