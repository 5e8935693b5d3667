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
"""

from __future__ import annotations

import random

from overlay.config import Config
from overlay.hyparview import HvTimer, HyParView
from overlay.ids import NodeId
from overlay.io import (
    ConnectFailed,
    ConnectionDown,
    ConnectionUp,
    Input,
    JoinCluster,
    Leave,
    NeighborDown,
    NeighborUp,
    Output,
    Publish,
    Received,
    TimerFired,
)
from overlay.messages import HYPARVIEW_MESSAGES, PLUMTREE_MESSAGES
from overlay.plumtree import Plumtree, PtTimer


class Node:
    def __init__(self, me: NodeId, config: Config, rng: random.Random) -> None:
        self.me = me
        self.config = config
        self.hyparview = HyParView(me, config.hyparview, random.Random(rng.getrandbits(64)))
        self.plumtree = Plumtree(me, config.plumtree, random.Random(rng.getrandbits(64)))

    def start(self, now: float) -> list[Output]:
        return self.hyparview.start(now) + self.plumtree.start(now)

    def publish(self, topic: str, payload: bytes, now: float) -> list[Output]:
        """Broadcast on `topic`. Raises `overlay.plumtree.PublishError`, with
        nothing sent, if the payload is over `max_payload`, the topic is not
        1-256 characters, or the node has left. (A `Publish` input returns a
        `PublishRejected` output instead of raising.)"""
        return self.plumtree.publish(topic, payload, now)

    def _neighbors(self, outs: list[Output], now: float) -> list[Output]:
        """Feed HyParView's neighbour changes to Plumtree, so that its eager
        and lazy sets stay exactly the active view. Every HyParView output
        list goes through here. Plumtree's outputs come after HyParView's:
        the NEIGHBOR that makes a link active is sent before anything
        Plumtree sends over it."""
        extra: list[Output] = []
        for o in outs:
            if isinstance(o, NeighborUp):
                extra += self.plumtree.neighbor_up(o.peer, now)
            elif isinstance(o, NeighborDown):
                extra += self.plumtree.neighbor_down(o.peer, now)
        return outs + extra if extra else outs

    def handle(self, inp: Input, now: float) -> list[Output]:
        match inp:
            case Received(_, msg) if isinstance(msg, HYPARVIEW_MESSAGES):
                return self._neighbors(self.hyparview.handle(inp, now), now)
            case Received(sender, msg) if isinstance(msg, PLUMTREE_MESSAGES):
                # Plumtree travels over active links only: a sender that is
                # not our neighbour is told so, and the asymmetry repairs.
                out: list[Output] = []
                self.hyparview.check_link(sender, out)
                return out + self.plumtree.handle(inp, now)
            case Received():
                return []
            case TimerFired(timer) if isinstance(timer.kind, HvTimer):
                return self._neighbors(self.hyparview.handle(inp, now), now)
            case TimerFired(timer) if isinstance(timer.kind, PtTimer):
                return self.plumtree.handle(inp, now)
            case TimerFired():
                return []
            case Leave():
                return self._neighbors(self.hyparview.handle(inp, now), now) + self.plumtree.leave()
            case ConnectionUp() | ConnectionDown() | ConnectFailed() | JoinCluster():
                return self._neighbors(self.hyparview.handle(inp, now), now)
            case Publish():
                return self.plumtree.handle(inp, now)
