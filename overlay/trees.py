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
- A new origin's tree starts with every neighbour eager, as a new
  neighbour does in the paper: its first message floods the overlay, so it
  reaches every node by the fastest paths, and the duplicates prune the
  tree down to those paths, the origin's own shortest-path tree. The first
  message costs a flood (a copy per link); every later one a copy per node.
  In the full stack each member's first message is its join announcement,
  so a publisher's tree is built before it publishes.
- Bounded memory: trees are kept for at most `limit` origins. A tree idle
  for `idle` seconds is evicted to make room, the least recently used
  first (counted in `evicted`); when every tree is in use, the new origin
  shares the shared tree (counted in `shared`), the paper's single tree,
  which the traffic of such origins shapes as the paper says. Churning
  trees in use would flood the overlay at every comeback. A tree stores
  only its lazy peers, as a tuple (eager = active view minus those), so a
  new neighbour is eager in every tree at no cost and a tree costs ~150
  bytes. `limit` 0 keeps the shared tree alone: the paper's behaviour,
  for its reproduction.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from overlay.ids import NodeId


class Trees:
    def __init__(self, limit: int, idle: float) -> None:
        self.limit = limit
        self.idle = idle
        # The active view, in the order the neighbours came (every pick
        # reproducible), and the shared tree's split of it.
        self.active: dict[NodeId, None] = {}
        self.eager: dict[NodeId, None] = {}
        self.lazy: dict[NodeId, None] = {}
        # origin -> its lazy peers; least recently used first, with when.
        self.origins: OrderedDict[str, tuple[NodeId, ...]] = OrderedDict()
        self.used: dict[str, float] = {}
        self.created = 0
        self.evicted = 0
        self.shared = 0

    def __len__(self) -> int:
        return len(self.origins)

    # ------------------------------------------------------------ neighbours

    def up(self, peer: NodeId) -> None:
        """A new neighbour: eager in every tree (paper sec. 3.6)."""
        self.active[peer] = None
        self.lazy.pop(peer, None)
        self.eager[peer] = None
        self._forget(peer)

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

    def is_neighbor(self, peer: NodeId) -> bool:
        return peer in self.active

    def is_eager(self, peer: NodeId, origin: str | None) -> bool:
        """Is `peer` eager in `origin`'s tree (the shared one if it has none)?"""
        lazy = self.origins.get(origin) if origin is not None else None
        if lazy is None:
            return peer in self.eager
        return peer in self.active and peer not in lazy

    def eager_of(self, origin: str | None) -> Iterator[NodeId]:
        lazy = self.origins.get(origin) if origin is not None else None
        if lazy is None:
            return iter(self.eager)
        if not lazy:
            return iter(self.active)
        return (p for p in self.active if p not in lazy)

    def lazy_of(self, origin: str | None) -> Iterator[NodeId]:
        lazy = self.origins.get(origin) if origin is not None else None
        if lazy is None:
            return iter(self.lazy)
        return iter(lazy)

    def split(self, origin: str) -> tuple[tuple[NodeId, ...], tuple[NodeId, ...]]:
        """`origin`'s tree as (eager, lazy), the shared one if it has none."""
        return tuple(self.eager_of(origin)), tuple(self.lazy_of(origin))

    # --------------------------------------------------------------- changes

    def touch(self, origin: str, now: float) -> None:
        """A message of `origin` is on its way: its tree becomes the most
        recently used, created (every neighbour eager) if there is room."""
        if self.limit == 0:
            return
        if origin in self.origins:
            self.origins.move_to_end(origin)
            self.used[origin] = now
            return
        if len(self.origins) >= self.limit:
            oldest = next(iter(self.origins))
            if now - self.used[oldest] < self.idle:
                self.shared += 1
                return
            del self.origins[oldest]
            del self.used[oldest]
            self.evicted += 1
        self.origins[origin] = ()
        self.used[origin] = now
        self.created += 1

    def make_eager(self, peer: NodeId, origin: str | None) -> None:
        """`peer` becomes eager in `origin`'s tree (the shared one if it has none)."""
        if peer not in self.active:
            return
        lazy = self.origins.get(origin) if origin is not None else None
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
        lazy = self.origins.get(origin) if origin is not None else None
        if lazy is None:
            if peer in self.eager:
                del self.eager[peer]
                self.lazy[peer] = None
        elif peer not in lazy:
            self.origins[origin] = (*lazy, peer)  # type: ignore[index]
