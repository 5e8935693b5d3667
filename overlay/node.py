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
    Output,
    Publish,
    Received,
    TimerFired,
)
from overlay.messages import HYPARVIEW_MESSAGES


class Node:
    def __init__(self, me: NodeId, config: Config, rng: random.Random) -> None:
        self.me = me
        self.config = config
        self.hyparview = HyParView(me, config.hyparview, random.Random(rng.getrandbits(64)))

    def start(self, now: float) -> list[Output]:
        return self.hyparview.start(now)

    def handle(self, inp: Input, now: float) -> list[Output]:
        match inp:
            case Received(_, msg) if isinstance(msg, HYPARVIEW_MESSAGES):
                return self.hyparview.handle(inp, now)
            case Received():
                return []
            case TimerFired(timer) if isinstance(timer.kind, HvTimer):
                return self.hyparview.handle(inp, now)
            case TimerFired():
                return []
            case ConnectionUp() | ConnectionDown() | ConnectFailed() | JoinCluster() | Leave():
                return self.hyparview.handle(inp, now)
            case Publish():
                return []
