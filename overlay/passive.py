"""HyParView's passive view: the reserve of known peers (Leitão, Pereira,
Rodrigues, DSN 2007, sec. 4.2-4.4).

Rules of this module: it holds the passive view's entries, the rules by
which entries come in and go out, and the samples of our recent shuffles.
When to add, what to shuffle and whom to ask are HyParView's decisions
(`overlay.hyparview`). Every random pick uses the generator it is given (the
node's HyParView one), so the picks stay in the node's order.

Theory of operation
-------------------
- Entries keep insertion order (a dict, not a set): every pick is
  reproducible. Never this node, an address-only seed placeholder
  (`overlay.io.seed_id`), or a peer of the active view.
- Adding to a full view drops a random entry first (sec. 4.2).
- `offer` (candidates from elsewhere: the member list) only fills free
  slots, never evicts.
- A shuffle's merge drops first the entries we just sent away (the other
  end has them now), then random ones (sec. 4.4). The samples of our last
  few shuffles are remembered by nonce, to prefer dropping those entries
  when the reply arrives; a reply with an unknown nonce is not ours, or too
  old, and is ignored rather than trusted.
"""

from __future__ import annotations

import random
from collections.abc import Container, Iterable, Iterator

from overlay.ids import NodeId
from overlay.io import is_seed

# How many shuffles we remember the samples of, to prefer dropping those
# entries when the reply arrives (one per period is usual; a few cover
# replies that arrive late).
_SHUFFLE_MEMORY = 4


def sample(rng: random.Random, items: list[NodeId], k: int) -> list[NodeId]:
    """`k` random distinct entries of `items`, or all of them shuffled."""
    if k >= len(items):
        out = list(items)
        rng.shuffle(out)
        return out
    return rng.sample(items, k)


class PassiveView:
    def __init__(self, me: NodeId, size: int, rng: random.Random) -> None:
        self._me = me
        self._size = size
        self._rng = rng
        self._peers: dict[NodeId, None] = {}
        self._shuffles: dict[int, tuple[NodeId, ...]] = {}

    def __contains__(self, peer: object) -> bool:
        return peer in self._peers

    def __iter__(self) -> Iterator[NodeId]:
        return iter(self._peers)

    def __len__(self) -> int:
        return len(self._peers)

    def add(self, peer: NodeId, active: Container[NodeId]) -> None:
        """Take `peer` in, dropping a random entry if full (sec. 4.2)."""
        if peer == self._me or peer in active or peer in self._peers or is_seed(peer):
            return
        if len(self._peers) >= self._size:
            del self._peers[self._rng.choice(list(self._peers))]
        self._peers[peer] = None

    def offer(self, peers: Iterable[NodeId], active: Container[NodeId]) -> None:
        """Candidates for the free slots only: never evicts."""
        for peer in peers:
            if len(self._peers) >= self._size:
                return
            self.add(peer, active)

    def discard(self, peer: NodeId) -> None:
        self._peers.pop(peer, None)

    def remember(self, nonce: int, sent: tuple[NodeId, ...]) -> None:
        """The sample our shuffle `nonce` sent away."""
        self._shuffles[nonce] = sent
        while len(self._shuffles) > _SHUFFLE_MEMORY:
            del self._shuffles[next(iter(self._shuffles))]

    def recall(self, nonce: int) -> tuple[NodeId, ...] | None:
        """What our shuffle `nonce` sent, once; None if not ours or too old."""
        return self._shuffles.pop(nonce, None)

    def merge(
        self, nodes: tuple[NodeId, ...], sent: tuple[NodeId, ...], active: Container[NodeId]
    ) -> None:
        """Merge shuffled entries; when full, drop an entry we just sent
        away first, else a random one (sec. 4.4)."""
        peers = self._peers
        droppable = [p for p in sent if p in peers]
        for peer in nodes:
            if peer == self._me or peer in active or peer in peers or is_seed(peer):
                continue
            if len(peers) >= self._size:
                victim = droppable.pop() if droppable else self._rng.choice(list(peers))
                peers.pop(victim, None)
            peers[peer] = None
