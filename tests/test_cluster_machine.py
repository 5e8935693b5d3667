"""The three layers together, as a hypothesis state machine over a small
simulated cluster (sim.engine, no codec): nodes join, crash, pause and
resume, the network splits and heals, broadcasts go out, time passes; after
every step the invariants of all three layers are checked on every running
node, and at the end, with everything healed and resumed and the network
quiet, the cluster must be one again.

After every step:
- HyParView: no node in its own views; the active and passive views within
  their sizes, disjoint, and no pending peer already active; a link that is
  one-way between two healthy nodes (running, unpaused, on the same side of
  any cut) is repaired within `ONE_WAY_GRACE` (the other end may hold the
  peer as pending: it asked with NEIGHBOR and the answer is on its way).
- Plumtree: the eager and lazy sets are disjoint and together exactly the
  active view; no node delivers a broadcast twice.
- SWIM: every node lists itself alive; no member is listed twice by name;
  the incarnation a node holds for a member never goes down (while the
  member stays in its list: a reaped tombstone is forgotten by design).

At the end (`teardown`): heal, resume, and let the protocols settle; then
the overlay is connected over live nodes with symmetric active views, and
every live node counts exactly the live nodes as alive.

Small and fast on purpose (`SETTINGS`): a failure prints the steps that
reproduce it.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from overlay.config import Config
from overlay.hyparview import Views
from overlay.ids import NodeId
from overlay.io import Deliver, MemberStatus, Output
from overlay.members import MemberSnapshot
from overlay.messages import MsgId
from overlay.node import Node
from overlay.plumtree import PeerSets
from sim.engine import Simulation
from tests.helpers import components, describe, overlay_connected

CONFIG = Config().replace(**{"hyparview.active_size": 3, "hyparview.passive_size": 6})
MAX_NODES = 10
MIN_LIVE = 2  # crashes stop here
# How long a link may stay one-way between healthy nodes: while a NEIGHBOR
# or DISCONNECT is in flight it is (for one latency), and a stream cut by a
# partition healed before it broke reports its end `break_after` later; a
# one-way link that no connection event ends is repaired when Plumtree's
# anti-entropy digest, sent to each neighbour in turn, reaches the end that
# dropped it (a neighbour's message from a stranger: `StrayMessage`).
ONE_WAY_GRACE = (CONFIG.hyparview.active_size + 1) * CONFIG.plumtree.anti_entropy_period
SETTLE_STEP = 5.0  # final quiescence: checked every SETTLE_STEP seconds ...
SETTLE_MAX = 200.0  # ... for at most this long after the heal

SETTINGS = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


# What the checks read of a node: one place to follow the node's API.


def views(node: Node) -> Views:
    return node.hyparview.views()


def peer_sets(node: Node) -> PeerSets:
    return node.plumtree.peers()


def members(node: Node) -> tuple[MemberSnapshot, ...]:
    return node.members()


class ClusterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sim = Simulation(CONFIG, seed=0, use_codec=False)
        self.ids: list[NodeId] = []
        self.paused: set[NodeId] = set()
        self.sides: dict[NodeId, int] = {}  # partition side per node; absent: 0
        self.published = 0
        self.delivered: Counter[tuple[NodeId, MsgId]] = Counter()
        self.twice: list[tuple[NodeId, MsgId]] = []
        self.incarnations: dict[tuple[NodeId, NodeId], int] = {}
        self.one_way_since: dict[tuple[NodeId, NodeId], float] = {}

    # ------------------------------------------------------------ building

    @initialize(seed=st.integers(0, 2**16), n=st.integers(3, 6))
    def start(self, seed: int, n: int) -> None:
        self.sim = Simulation(CONFIG, seed=seed, use_codec=False)
        self.sim.observers.append(self._observe)
        for i in range(n):
            self._add(self.ids[:1], at=0.05 * i)
        self.sim.run_until(0.05 * n + 5.0)

    def _observe(self, now: float, node: NodeId, out: Output) -> None:
        if isinstance(out, Deliver):
            key = (node, out.id)
            self.delivered[key] += 1
            if self.delivered[key] == 2:
                self.twice.append(key)

    def _add(self, seeds: list[NodeId], at: float | None = None) -> NodeId:
        nid = self.sim.add_node(f"n{len(self.ids)}", at=at)
        if seeds:
            self.sim.join(nid, seeds, at=at)
        self.ids.append(nid)
        return nid

    def live(self) -> list[NodeId]:
        return self.sim.live()

    def healthy(self) -> list[NodeId]:
        return [n for n in self.live() if n not in self.paused]

    def _pick(self, pool: list[NodeId], i: int) -> NodeId:
        return pool[i % len(pool)]

    # --------------------------------------------------------------- rules

    @precondition(lambda self: len(self.ids) < MAX_NODES)
    @rule(first=st.integers(0, 99))
    def join(self, first: int) -> None:
        """A new node with every node created before as its seeds (the
        crashed ones too, as a static seed list would), from any of them:
        with one contact only, a crash of that contact before it answered
        would leave the newcomer alone for good, rightly."""
        k = first % len(self.ids)
        self._add(self.ids[k:] + self.ids[:k])
        self.sim.run_until(self.sim.now)

    @precondition(lambda self: len(self.live()) > MIN_LIVE)
    @rule(i=st.integers(0, 99), host_down=st.booleans())
    def crash(self, i: int, host_down: bool) -> None:
        victim = self._pick(self.live(), i)
        self.sim.crash(victim, host_down=host_down)
        self.paused.discard(victim)
        self.sim.run_until(self.sim.now)

    @precondition(lambda self: len(self.healthy()) > 1)
    @rule(i=st.integers(0, 99))
    def pause(self, i: int) -> None:
        victim = self._pick(self.healthy(), i)
        self.sim.pause(victim)
        self.paused.add(victim)
        self.sim.run_until(self.sim.now)

    @precondition(lambda self: bool(self.paused))
    @rule()
    def resume(self) -> None:
        self._resume_all()

    def _resume_all(self) -> None:
        for nid in sorted(self.paused):
            self.sim.resume(nid)
        self.paused.clear()
        self.sim.run_until(self.sim.now)

    @precondition(lambda self: len(self.live()) > 1)
    @rule(cut=st.integers(0, 99))
    def partition(self, cut: int) -> None:
        live = self.live()
        k = 1 + cut % (len(live) - 1)
        groups = [live[:k], live[k:]]
        self.sim.partition(groups)
        self.sides = {n: i + 1 for i, g in enumerate(groups) for n in g}
        self.sim.run_until(self.sim.now)

    @rule()
    def heal(self) -> None:
        self.sim.heal()
        self.sides = {}
        self.sim.run_until(self.sim.now)

    @precondition(lambda self: bool(self.healthy()))
    @rule(i=st.integers(0, 99))
    def publish(self, i: int) -> None:
        self.published += 1
        self.sim.publish(self._pick(self.healthy(), i), "t", b"%d" % self.published)
        self.sim.run_until(self.sim.now)

    @rule(seconds=st.sampled_from([0.01, 0.1, 0.5, 2.0, 5.0, 15.0]))
    def advance(self, seconds: float) -> None:
        self.sim.run_for(seconds)

    # ---------------------------------------------------------- invariants

    @invariant()
    def hyparview_views(self) -> None:
        cfg = CONFIG.hyparview
        now = self.sim.now
        live = set(self.live())
        healthy = set(self.healthy())
        one_way: set[tuple[NodeId, NodeId]] = set()
        for me in live:
            v = views(self.sim.node(me))
            active, passive, pending = set(v.active), set(v.passive), set(v.pending)
            assert me not in active | passive | pending, f"{me.name} in its own view"
            assert len(v.active) <= cfg.active_size, f"{me.name}: active view {v.active}"
            assert len(v.passive) <= cfg.passive_size, f"{me.name}: passive view {v.passive}"
            assert not active & passive, f"{me.name}: active and passive share {active & passive}"
            assert not active & pending, f"{me.name}: pending and active {active & pending}"
            if me not in healthy:
                continue
            for peer in v.active:
                if peer not in healthy or self.sides.get(me, 0) != self.sides.get(peer, 0):
                    continue
                theirs = views(self.sim.node(peer))
                if me not in theirs.active and me not in theirs.pending:
                    one_way.add((me, peer))
        self.one_way_since = {link: self.one_way_since.get(link, now) for link in one_way}
        for (a, b), since in self.one_way_since.items():
            assert now - since <= ONE_WAY_GRACE, (
                f"{a.name} -> {b.name} one-way since {since:.2f} (now {now:.2f})"
            )

    @invariant()
    def plumtree_peers(self) -> None:
        for me in self.live():
            node = self.sim.node(me)
            p = peer_sets(node)
            eager, lazy = set(p.eager), set(p.lazy)
            assert not eager & lazy, f"{me.name}: eager and lazy share {eager & lazy}"
            assert eager | lazy == set(views(node).active), (
                f"{me.name}: eager {p.eager} + lazy {p.lazy} != active {views(node).active}"
            )
        assert not self.twice, f"delivered twice: {[(n.name, m) for n, m in self.twice]}"

    @invariant()
    def swim_members(self) -> None:
        for me in self.live():
            listed = members(self.sim.node(me))
            names = Counter(m.name for m in listed)
            assert all(c == 1 for c in names.values()), f"{me.name} lists twice: {names}"
            mine = [m for m in listed if m.node == me]
            assert len(mine) == 1 and mine[0].status is MemberStatus.ALIVE, (
                f"{me.name} lists itself as {mine}"
            )
            seen = {m.node for m in listed}
            for key in [k for k in self.incarnations if k[0] == me and k[1] not in seen]:
                del self.incarnations[key]  # reaped: forgotten
            for m in listed:
                before = self.incarnations.get((me, m.node), -1)
                assert m.incarnation >= before, (
                    f"{me.name} holds {m.name} at incarnation {m.incarnation} after {before}"
                )
                self.incarnations[(me, m.node)] = m.incarnation

    # ----------------------------------------------------------- the end

    def teardown(self) -> None:
        if not self.ids:
            return
        self.sim.heal()
        self.sides = {}
        self._resume_all()
        deadline = self.sim.now + SETTLE_MAX
        while self.sim.now < deadline and not self._settled():
            self.sim.run_for(SETTLE_STEP)
        self.sim.run_for(SETTLE_STEP)
        live = set(self.live())
        assert overlay_connected(self.sim), f"not one overlay: {describe(components(self.sim))}"
        for me in sorted(live):
            for peer in views(self.sim.node(me)).active:
                assert peer in live, f"{me.name} keeps {peer.name}, gone, active"
                assert me in views(self.sim.node(peer)).active, f"{me.name} -> {peer.name} one-way"
        for me in sorted(live):
            alive = {m.node for m in members(self.sim.node(me)) if m.status is MemberStatus.ALIVE}
            assert alive == live, (
                f"{me.name} counts alive {sorted(n.name for n in alive)}, "
                f"live are {sorted(n.name for n in live)}"
            )

    def _settled(self) -> bool:
        live = set(self.live())
        if not overlay_connected(self.sim):
            return False
        return all(
            {m.node for m in members(self.sim.node(me)) if m.status is MemberStatus.ALIVE} == live
            for me in live
        )


ClusterMachine.TestCase.settings = SETTINGS
TestCluster = ClusterMachine.TestCase
