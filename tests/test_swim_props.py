"""SWIM properties (hypothesis): totality of one node under arbitrary inputs,
and, over small simulated clusters with random crashes and loss, that
incarnations never decrease, no node believes itself failed, and member
lists converge once the network is quiet."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlay.config import Config, SwimConfig
from overlay.ids import NodeId
from overlay.io import (
    ConnectFailed,
    ConnectionDown,
    Input,
    JoinCluster,
    Leave,
    MemberChanged,
    MemberStatus,
    Output,
    ProbeNow,
    Received,
    TimerFired,
)
from overlay.io import Timer as IoTimer
from overlay.members import DEAD
from overlay.messages import Ack, MemberState, MemberUpdates, Nack, Ping, PingReq, PushPull
from overlay.swim import Swim
from overlay.swim_state import SwimTimer
from sim.engine import NetworkModel, Simulation
from sim.membership_metrics import MembershipTracker

ME = NodeId("me", "10.0.0.1", 7946)
POOL = [ME] + [NodeId(f"p{i}", f"10.0.0.{i + 2}", 7946) for i in range(5)]

nodes = st.sampled_from(POOL)
incs = st.integers(0, 6)
states = st.builds(
    MemberState,
    node=nodes,
    incarnation=incs,
    status=st.integers(0, 3),
    tags=st.dictionaries(st.sampled_from(["a", "b"]), st.text(max_size=3), max_size=2),
    accuser=st.none() | nodes,
)
updates = st.lists(states, max_size=4).map(tuple)
seqs = st.integers(0, 8)
messages = st.one_of(
    st.builds(Ping, seq=seqs, target=nodes, updates=updates),
    st.builds(PingReq, seq=seqs, target=nodes, nack=st.booleans(), updates=updates),
    st.builds(Ack, seq=seqs, updates=updates),
    st.builds(Nack, seq=seqs),
    st.builds(
        PushPull,
        reply=st.booleans(),
        part=st.integers(0, 1),
        parts=st.integers(1, 2),
        states=updates,
    ),
    st.builds(MemberUpdates, updates=updates),
)
timer_keys = st.one_of(
    st.none(), seqs, st.tuples(nodes, incs), st.tuples(st.integers(), st.text(max_size=2))
)
inputs: st.SearchStrategy[Input] = st.one_of(
    st.builds(Received, sender=nodes, msg=messages),
    st.builds(
        lambda k, key: TimerFired(IoTimer(k, key)), st.sampled_from(list(SwimTimer)), timer_keys
    ),
    st.builds(ConnectFailed, nodes),
    st.builds(ConnectionDown, nodes),
    st.builds(lambda s: JoinCluster(tuple(s)), st.lists(nodes, max_size=3)),
    st.just(Leave()),
    st.builds(ProbeNow, nodes),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(inputs, max_size=60), seed=st.integers(0, 3))
def test_any_input_sequence_keeps_invariants(steps: list[Input], seed: int) -> None:
    """Whatever arrives, nothing raises; our incarnation and every member's
    never decrease; we never hold ourselves suspect or failed; counts agree
    with the entries."""
    s = Swim(ME, SwimConfig(), random.Random(seed))
    s.start(0.0)
    seen: dict[NodeId, int] = {}
    my_inc = 0
    was_left = False
    for i, step in enumerate(steps):
        now = float(i)
        outs: list[Output] = s.handle(step, now)
        was_left = was_left or isinstance(step, Leave)
        me = s.members.get(ME)
        assert me is not None
        assert me.status is (MemberStatus.LEFT if was_left else MemberStatus.ALIVE)
        assert s.incarnation >= my_inc and me.incarnation == s.incarnation
        my_inc = s.incarnation
        for o in outs:
            if isinstance(o, MemberChanged) and o.member == ME:
                assert o.status in (MemberStatus.ALIVE, MemberStatus.LEFT)
        counts = dict.fromkeys(MemberStatus, 0)
        for m in s.members:
            counts[m.status] += 1
            if m.node in seen:
                assert m.incarnation >= seen[m.node], m
            seen[m.node] = m.incarnation
        assert all(s.members.count(k) == v for k, v in counts.items())
        for node in s._suspicions:
            member = s.members.get(node)
            assert member is not None and member.status is MemberStatus.SUSPECT


def _cluster(n: int, seed: int, loss: float) -> tuple[Simulation, list[NodeId]]:
    cfg = Config().replace(**{"swim.reap_after": 10_000.0})
    sim = Simulation(cfg, seed=seed, network=NetworkModel(loss=loss), use_codec=False)
    ids = [sim.add_node(f"n{i}") for i in range(n)]
    for i, nid in enumerate(ids[1:], start=1):
        sim.join(nid, [ids[i - 1], ids[0]], at=0.1 * i)
    return sim, ids


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(3, 10),
    seed=st.integers(0, 10_000),
    loss=st.sampled_from([0.0, 0.05, 0.2]),
    crash_picks=st.lists(st.integers(1, 9), max_size=3, unique=True),
    crash_times=st.lists(st.floats(5.0, 40.0), min_size=3, max_size=3),
)
def test_cluster_converges_and_invariants_hold(
    n: int, seed: int, loss: float, crash_picks: list[int], crash_times: list[float]
) -> None:
    sim, ids = _cluster(n, seed, loss)
    tracker = MembershipTracker(sim)
    crashed = [ids[i] for i in crash_picks if i < n][: max(0, (n - 1) // 3)]
    for nid, t in zip(crashed, crash_times, strict=False):
        sim.crash(nid, at=t)
        tracker.note_failure(nid, t, "crash")
    # Never believing ourselves failed, seen as outputs.
    bad: list[tuple[float, NodeId, Output]] = []

    def watch(t: float, node: NodeId, out: Output) -> None:
        if (
            isinstance(out, MemberChanged)
            and out.member == node
            and out.status is not MemberStatus.ALIVE
        ):
            bad.append((t, node, out))

    sim.observers.append(watch)
    seen: dict[tuple[NodeId, NodeId], int] = {}
    for step in range(1, 13):
        sim.run_until(5.0 * step)
        for observer in sim.live():
            swim = sim.node(observer).swim
            assert swim.members.get(observer).status is MemberStatus.ALIVE  # type: ignore[union-attr]
            for m in swim.members:
                key = (observer, m.node)
                assert m.incarnation >= seen.get(key, 0)
                seen[key] = m.incarnation
    # Quiet network: no more loss, no more failures; then they must agree.
    sim.net.loss = 0.0
    sim.run_until(60.0 + 90.0)
    assert bad == []
    summary = tracker.summary()
    assert summary["converged"], summary
    assert summary["undetected"] == 0
    live = set(sim.live())
    for observer in live:
        swim = sim.node(observer).swim
        for other in ids:
            m = swim.members.get(other)
            if other in live:
                assert m is not None and m.status is MemberStatus.ALIVE
            else:
                assert m is not None and m.status in DEAD
