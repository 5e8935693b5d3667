"""How SWIM's member list and HyParView's views help each other.

Rules of this module: it holds the cross-layer policy and nothing else; the
node (`overlay.node`) calls it around every SWIM step. No I/O, no clock.

Theory of operation
-------------------
HyParView knows a few peers well (the active view, a partial passive view);
SWIM knows every member a little (alive or not). Each fills the other's gaps:

- Verdicts: a member SWIM declares failed, or that left, leaves HyParView's
  active and passive views at once (HyParView's input `PeerFailed`), which
  repairs the active view from the passive one.
- Hints: a connection to an active (or requested) HyParView peer that
  breaks or cannot be opened makes SWIM probe that member out of turn, so a
  crash is suspected within one protocol period.
- Thin passive view: at every SWIM protocol period, a passive view under
  half full is topped up with random alive members (HyParView's input
  `OfferPassive` only fills free slots).
- A way back in for a node cut off from its neighbours: with an empty active
  view, HyParView's repair asks its passive peers with high-priority
  NEIGHBOR, which must be accepted; the refill above keeps that passive view
  stocked from the member list even when every known peer failed, so no new
  message is needed. HyParView itself falls back to its seeds.
- A way back together after a partition: each half's overlay is whole and
  stable, so nothing in HyParView would ever link them again. When a member
  we held as failed answers our SWIM reconnect push-pull alive (SWIM's
  `Reappeared` output, consumed here; the proof
  that the network between us is back), we send it HyParView's JOIN: it
  takes us in and its FORWARD_JOIN walks link us into its half, exactly as a
  joining node. At most one such bridge per `reconnect_period` per node, and
  none to a peer already in our views, bounds the churn: only the few nodes
  whose reconnect lands before the member lists have merged send one.
- SWIM's push-pull opens a stream only for the exchange and closes it after
  the reply; the close is dropped when HyParView uses that connection.
"""

from __future__ import annotations

from overlay.hyparview import HvState, HyParView
from overlay.ids import NodeId
from overlay.io import (
    CloseConnection,
    MemberChanged,
    MemberStatus,
    OfferPassive,
    Output,
    PeerFailed,
    Reappeared,
    Send,
)
from overlay.messages import Join
from overlay.swim import Swim

_VERDICTS = (MemberStatus.FAILED, MemberStatus.LEFT)


class SwimHyParView:
    def __init__(self, swim: Swim, hyparview: HyParView, passive_size: int) -> None:
        self.swim = swim
        self.hyparview = hyparview
        self._passive_size = passive_size
        self._last_bridge: float | None = None
        self.bridges = 0

    def watched(self, peer: NodeId) -> bool:
        """Is `peer` a HyParView neighbour (or being asked to become one)?"""
        return self.hyparview.is_neighbor(peer)

    def after_swim(self, outs: list[Output], now: float) -> list[Output]:
        """Apply SWIM's verdicts to HyParView, keep connections HyParView
        uses, and bridge back to members that reappeared."""
        hv = self.hyparview
        result: list[Output] = []
        extra: list[Output] = []
        rejoined: list[NodeId] = []
        for o in outs:
            if isinstance(o, Reappeared):
                rejoined.append(o.peer)
                continue
            if isinstance(o, MemberChanged):
                if o.status in _VERDICTS and o.member != self.swim.me:
                    extra += hv.handle(PeerFailed(o.member), now)
            elif isinstance(o, CloseConnection) and self.watched(o.peer):
                continue
            result.append(o)
        if rejoined and hv.state is not HvState.LEFT:
            period = self.swim.cfg.reconnect_period
            if self._last_bridge is None or now - self._last_bridge >= period:
                for peer in rejoined:
                    if not hv.is_neighbor(peer):
                        self._last_bridge = now
                        self.bridges += 1
                        extra.append(Send(peer, Join()))
                        break
        return result + extra if extra else result

    def on_probe_period(self, now: float) -> list[Output]:
        """Top up a passive view under half full with random alive members."""
        hv = self.hyparview
        size = self._passive_size
        views = hv.views()
        if hv.state is HvState.LEFT or len(views.passive) * 2 >= size:
            return []
        exclude = (*views.active, *views.pending, *views.passive)
        offered = self.swim.random_alive(size - len(views.passive), exclude)
        return hv.handle(OfferPassive(tuple(offered)), now)
