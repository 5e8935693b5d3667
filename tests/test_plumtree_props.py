"""Plumtree properties over small simulated clusters, with hypothesis.

A scenario is a small cluster that joins and settles, then a few seconds of
publishes, crashes and a partition that heals, then quiescence (no
publishes for 30 s: anti-entropy rounds, well inside the retention window).
Checked:

- eager and lazy partition the active view, on every node, after every
  input it handles (checked from the observer, which runs after `handle`);
- no node ever delivers the same id twice;
- after quiescence, every live node delivers every broadcast that some live
  node of its connected component (of the active-view graph) delivered;
- after quiescence, eager sets are symmetric: on every active link, each
  end holds the other eager, or both hold it lazy, in the shared tree and in
  the tree of every origin either end holds (`overlay.trees`).

The properties run with the default per-origin trees and with the paper's
single tree (`origin_trees = 0`); the first two also with a bound of two
trees, where most origins share the shared tree. (Not the symmetry: there
two ends may file one origin differently, under its own tree at one and the
shared tree at the other, and their digests bring the link to eager at both
ends over more rounds than the 30 s of quiescence hold.)
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from overlay.config import Config, PlumtreeConfig
from overlay.ids import NodeId
from overlay.io import Deliver, Output
from overlay.messages import MsgId
from sim.engine import Simulation
from tests.helpers import components


@dataclass(frozen=True)
class Step:
    at: float  # seconds after the cluster settled
    kind: str  # "publish" | "crash" | "partition"
    node: int  # index into the cluster (taken modulo its size)


@dataclass
class Outcome:
    sim: Simulation
    ids: list[NodeId]
    deliveries: dict[NodeId, list[MsgId]]
    violations: list[str]


steps = st.lists(
    st.builds(
        Step,
        at=st.floats(0.0, 8.0, allow_nan=False),
        kind=st.sampled_from(["publish", "publish", "publish", "crash", "partition"]),
        node=st.integers(0, 63),
    ),
    min_size=1,
    max_size=14,
)


def run(n: int, seed: int, scenario: list[Step], trees: int = 1024) -> Outcome:
    config = Config(plumtree=PlumtreeConfig(origin_trees=trees))
    sim = Simulation(config, seed=seed, use_codec=False)
    ids = [sim.add_node(f"n{i}") for i in range(n)]
    for i, nid in enumerate(ids[1:]):
        sim.join(nid, [ids[0]], at=0.02 * i)
    deliveries: dict[NodeId, list[MsgId]] = {nid: [] for nid in ids}
    violations: list[str] = []

    def observe(t: float, node: NodeId, out: Output) -> None:
        if isinstance(out, Deliver):
            deliveries[node].append(out.id)
        nd = sim.node(node)
        eager, lazy = set(nd.plumtree.eager), set(nd.plumtree.lazy)
        active = set(nd.hyparview.views().active)
        if eager & lazy or eager | lazy != active:
            violations.append(f"{node.name} at {t:.3f}: eager/lazy != active view")
        for origin in nd.plumtree.trees.origins:
            sets = nd.plumtree.peers(origin)
            e, lz = set(sets.eager), set(sets.lazy)
            if e & lz or e | lz != active:
                violations.append(f"{node.name} at {t:.3f}: {origin}'s tree != active view")
        if len(nd.plumtree.trees) > max(trees, 0):
            violations.append(f"{node.name} at {t:.3f}: more trees than the bound")

    sim.observers.append(observe)
    sim.run_until(0.02 * n + 10.0)
    t0 = sim.now
    crashed = 0
    partitioned = False
    for step in sorted(scenario, key=lambda s: s.at):
        nid = ids[step.node % n]
        at = t0 + step.at
        if step.kind == "publish":
            sim.publish(nid, "t", b"%d" % step.node, at=at)
        elif step.kind == "crash" and crashed < n // 2:
            crashed += 1
            sim.crash(nid, at=at)
        elif step.kind == "partition" and not partitioned:
            partitioned = True
            cut = 1 + step.node % (n - 1)
            sim.partition([ids[:cut], ids[cut:]], at=at)
            sim.heal(at=at + 3.0)
    sim.run_until(t0 + 8.0 + 30.0)
    return Outcome(sim, ids, deliveries, violations)


SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


@SETTINGS
@given(
    n=st.integers(4, 12),
    seed=st.integers(0, 2**16),
    scenario=steps,
    trees=st.sampled_from([1024, 2, 0]),
)
def test_peer_sets_follow_the_view_and_nothing_is_delivered_twice(
    n: int, seed: int, scenario: list[Step], trees: int
) -> None:
    out = run(n, seed, scenario, trees)
    assert out.violations == []
    for nid, got in out.deliveries.items():
        assert len(got) == len(set(got)), f"{nid.name} delivered an id twice"


@SETTINGS
@given(
    n=st.integers(4, 12),
    seed=st.integers(0, 2**16),
    scenario=steps,
    trees=st.sampled_from([1024, 2, 0]),
)
def test_every_live_connected_node_delivers_every_broadcast(
    n: int, seed: int, scenario: list[Step], trees: int
) -> None:
    out = run(n, seed, scenario, trees)
    for comp in components(out.sim):
        known = set().union(*(set(out.deliveries[nid]) for nid in comp))
        for nid in sorted(comp):
            missing = known - set(out.deliveries[nid])
            assert not missing, f"{nid.name} missed {sorted(missing)}"


@SETTINGS
@given(
    n=st.integers(4, 12),
    seed=st.integers(0, 2**16),
    scenario=steps,
    trees=st.sampled_from([1024, 0]),
)
# Found by CI: after the heal, n4's PRUNE and n9's push crossed; n4 made n9
# eager again on the new copy, n9 kept n4 lazy, and no traffic followed.
@example(n=12, seed=1, scenario=[Step(0.0, "publish", 0), Step(6.25, "partition", 36)], trees=0)
@example(n=12, seed=1, scenario=[Step(0.0, "publish", 0), Step(6.25, "partition", 36)], trees=1024)
def test_eager_sets_are_symmetric_after_quiescence(
    n: int, seed: int, scenario: list[Step], trees: int
) -> None:
    out = run(n, seed, scenario, trees)
    sim = out.sim
    live = set(sim.live())
    for a in sorted(live):
        na = sim.node(a)
        for b in na.hyparview.views().active:
            nb = sim.node(b)
            if b not in live or a not in nb.hyparview.views().active:
                continue  # not a link at both ends: HyParView's business
            assert (b in na.plumtree.eager) == (a in nb.plumtree.eager), (
                f"{a.name}-{b.name}: eager at one end only"
            )
            ta, tb = na.plumtree.trees, nb.plumtree.trees
            for origin in sorted(set(ta.origins) | set(tb.origins)):
                assert ta.is_eager(b, origin) == tb.is_eager(a, origin), (
                    f"{a.name}-{b.name}: eager at one end only in {origin}'s tree"
                )
