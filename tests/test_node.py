"""The composed node: the sans-IO contract, determinism, and SWIM switched off.

- Nothing in `overlay/` may do I/O, read a clock or draw from the global
  random generator: checked on the source itself, with `ast`.
- Same seed and same inputs give the same outputs, also across processes
  whose string hashing is salted differently (a set iterated where order
  matters would show here).
"""

from __future__ import annotations

import ast
import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

from overlay import codec
from overlay.config import Config
from overlay.ids import NodeId
from overlay.io import (
    ConnectionUp,
    Deliver,
    JoinCluster,
    Output,
    Received,
    Send,
    TimerFired,
)
from overlay.messages import (
    SWIM_MESSAGES,
    Gossip,
    Join,
    MemberState,
    MemberUpdates,
    PushPull,
    WireStatus,
)
from overlay.node import MEMBERS_TOPIC, Node
from overlay.swim_state import ANNOUNCE_TIMER
from sim.engine import Simulation

OVERLAY = Path(__file__).resolve().parent.parent / "overlay"
FORBIDDEN_MODULES = {"trio", "asyncio", "socket", "time", "anyio", "threading", "select"}
GLOBAL_RANDOM = {
    "random",
    "choice",
    "choices",
    "shuffle",
    "sample",
    "randint",
    "randrange",
    "uniform",
    "getrandbits",
    "seed",
    "gauss",
}


def test_overlay_is_sans_io() -> None:
    problems: list[str] = []
    files = sorted(OVERLAY.glob("*.py"))
    assert len(files) > 10
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
                if names[0] == "random":
                    problems.append(f"{path.name}:{node.lineno}: from random import ...")
            else:
                names = []
            for name in names:
                if name in FORBIDDEN_MODULES or name in ("daemon", "sim"):
                    problems.append(f"{path.name}:{node.lineno}: imports {name}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "random"
                and node.func.attr in GLOBAL_RANDOM
            ):
                problems.append(f"{path.name}:{node.lineno}: random.{node.func.attr}()")
    assert problems == []


def trace_digest(seed: int, n: int = 25) -> str:
    """A digest of every output of every node of a small run: joins, a
    crash, a partition, publishes."""
    sim = Simulation(seed=seed)
    ids = [sim.add_node(f"n{i}") for i in range(n)]
    for i, nid in enumerate(ids[1:]):
        sim.join(nid, [ids[0]], at=0.01 * i)
    h = hashlib.sha256()

    def record(t: float, who: NodeId, out: Output) -> None:
        h.update(f"{t:.9f} {who} {out!r}\n".encode())

    sim.observers.append(record)
    sim.crash(ids[3], at=5.0)
    sim.partition([ids[: n // 2], ids[n // 2 :]], at=8.0)
    sim.heal(at=12.0)
    for k in range(5):
        sim.publish(ids[k + 5], "t", b"m%d" % k, at=6.0 + k)
    sim.run_until(20.0)
    return h.hexdigest()


def test_same_seed_same_trace_in_process() -> None:
    assert trace_digest(3) == trace_digest(3)
    assert trace_digest(3) != trace_digest(4)


def test_same_seed_same_trace_across_hash_seeds() -> None:
    """Two interpreters with different PYTHONHASHSEED give the same trace."""
    code = "from tests.test_node import trace_digest; print(trace_digest(3))"
    root = OVERLAY.parent
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        digests.add(out.stdout.strip())
    assert digests == {trace_digest(3)}


def test_without_swim_the_node_is_hyparview_and_plumtree_alone() -> None:
    config = Config().replace(**{"swim.enabled": False})
    sim = Simulation(config, seed=5)
    ids = [sim.add_node(f"n{i}") for i in range(40)]
    for i, nid in enumerate(ids[1:]):
        sim.join(nid, [ids[0]], at=0.01 * i)
    sent: list[Send] = []
    delivered: dict[NodeId, int] = {}

    def watch(_t: float, who: NodeId, out: Output) -> None:
        if isinstance(out, Send):
            sent.append(out)
        elif isinstance(out, Deliver) and out.topic == "t":
            delivered[who] = delivered.get(who, 0) + 1

    sim.observers.append(watch)
    sim.run_until(10.0)
    sim.publish(ids[9], "t", b"hello")
    sim.run_until(15.0)
    assert not [s for s in sent if isinstance(s.msg, SWIM_MESSAGES)]
    assert delivered == dict.fromkeys(ids, 1)
    assert [m.node for m in sim.node(ids[0]).members()] == [ids[0]]
    # Connection loss still repairs the overlay: crash a node's neighbour.
    victim = next(iter(sim.node(ids[5]).hyparview.views().active))
    sim.crash(victim)
    sim.run_until(25.0)
    for nid in sim.live():
        assert victim not in sim.node(nid).hyparview.views().active


def test_without_swim_a_leave_is_complete_at_once_and_said_once() -> None:
    """With `swim.enabled = false` there is no goodbye to spread: the node
    says `LeaveComplete` on the `Leave` itself, and only the first time."""
    import random

    from overlay.io import Leave, LeaveComplete
    from overlay.node import Node

    node = Node(
        NodeId("me", "10.0.0.1", 7946),
        Config().replace(**{"swim.enabled": False}),
        random.Random(1),
    )
    node.start(0.0)
    assert node.handle(Leave(), 1.0).count(LeaveComplete()) == 1
    assert LeaveComplete() not in node.handle(Leave(), 2.0)


# ------------------------------------------------- arrivals over the tree

ME = NodeId("me", "10.0.0.1", 7946)
SEED = NodeId("seed", "10.0.0.2", 7946)
ARRIVALS = Config().replace(**{"swim.announce_arrivals": True})


def announced(outs: list[Output]) -> list[tuple[NodeId, MemberUpdates]]:
    """The announcements among `outs`: (peer, decoded batch) per GOSSIP
    sent on the members topic."""
    found = []
    for o in outs:
        if isinstance(o, Send) and isinstance(o.msg, Gossip) and o.msg.topic == MEMBERS_TOPIC:
            origin, batch = codec.decode(o.msg.payload, 1 << 20)
            assert origin == ME and isinstance(batch, MemberUpdates)
            found.append((o.to, batch))
    return found


def joined(node: Node, now: float) -> list[Output]:
    """JoinCluster through SEED, and SEED's reply to our join push-pull."""
    outs = node.handle(JoinCluster((SEED,)), now)
    assert any(isinstance(o, Send) and isinstance(o.msg, PushPull) for o in outs)
    reply = PushPull(True, 0, 1, (MemberState(SEED, 0, WireStatus.ALIVE, {}, None),))
    return node.handle(Received(SEED, reply), now + 0.05)


def test_arrival_is_announced_over_the_tree_when_the_join_exchange_completes() -> None:
    """A node whose join push-pull is answered announces its own alive
    state on the members topic when the batching window closes; a
    neighbour already there gets it eagerly."""
    node = Node(ME, ARRIVALS, random.Random(1))
    node.start(0.0)
    node.handle(ConnectionUp(SEED), 0.1)
    node.handle(Received(SEED, Join()), 0.1)  # SEED is our neighbour first
    assert SEED in node.plumtree.trees.active
    before = node.handle(JoinCluster((SEED,)), 0.2)
    assert announced(before) == []  # nothing before the exchange is answered
    reply = PushPull(True, 0, 1, (MemberState(SEED, 0, WireStatus.ALIVE, {}, None),))
    outs = node.handle(Received(SEED, reply), 0.25)
    assert announced(outs) == []  # the window is open
    outs = node.handle(TimerFired(ANNOUNCE_TIMER), 0.35)
    assert announced(outs) == [
        (SEED, MemberUpdates((MemberState(ME, 0, WireStatus.ALIVE, {}, None),)))
    ]
    assert node.swim.stats()["queued_updates"] >= 1  # still piggybacked: the backstop


def test_arrival_waits_for_the_first_neighbour() -> None:
    """Answered before HyParView gave us a neighbour (the common order), the
    announcement waits for the first one instead of going to nobody."""
    node = Node(ME, ARRIVALS, random.Random(1))
    node.start(0.0)
    joined(node, 0.1)
    outs = node.handle(TimerFired(ANNOUNCE_TIMER), 0.3)
    assert announced(outs) == []
    assert not node.plumtree.trees.active
    node.handle(ConnectionUp(SEED), 0.4)
    outs = node.handle(Received(SEED, Join()), 0.4)  # the first neighbour
    assert announced(outs) == [
        (SEED, MemberUpdates((MemberState(ME, 0, WireStatus.ALIVE, {}, None),)))
    ]
    # Once: the next neighbour does not get it again as a new broadcast.
    other = NodeId("other", "10.0.0.3", 7946)
    node.handle(ConnectionUp(other), 0.5)
    assert announced(node.handle(Received(other, Join()), 0.5)) == []


def test_arrival_is_not_announced_with_the_switch_off() -> None:
    """`swim.announce_arrivals` off (the default): piggybacking alone."""
    node = Node(ME, Config(), random.Random(1))
    node.start(0.0)
    node.handle(ConnectionUp(SEED), 0.1)
    node.handle(Received(SEED, Join()), 0.1)
    joined(node, 0.2)
    assert announced(node.handle(TimerFired(ANNOUNCE_TIMER), 0.4)) == []
