"""HyParView properties: over whole simulated clusters, and for one node fed
anything at all.

Cluster runs use `sim.engine.Simulation` (the real nodes, the real codec, a
modelled network), with SWIM switched off: these are HyParView's properties
(with Plumtree riding on it), and SWIM's coupling has its own cluster
properties in test_swim_props.py. Hypothesis draws the cluster: size, join order and times,
seeds, link latencies, datagram loss, nodes dead from the start, crashes and
graceful leaves. The per-node invariants are checked after every step of
every node; the global ones (symmetry, connectivity, no dead neighbours) once
the network has been quiet for long enough.

What the scenarios leave out, on purpose: crashes and leaves during the join
phase. A node that joins through a contact whose own join has not spread yet
knows nobody else; if that contact dies within the first seconds, the newcomer
(and whoever joined through it meanwhile) is an island that HyParView alone
cannot find its way back from: its passive view holds only fellow islanders.
The way back is outside HyParView (the SWIM member list offering candidates
through `OfferPassive`), so disruptions start `SETTLE` seconds after the last
join, once shuffles have spread knowledge of the overlay.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay import codec
from overlay.config import Config, HyParViewConfig
from overlay.hyparview import HvState, HvTimer, HyParView
from overlay.ids import NodeId
from overlay.io import (
    ConnectFailed,
    ConnectionDown,
    ConnectionUp,
    Input,
    Isolated,
    JoinCluster,
    Leave,
    NeighborDown,
    NeighborUp,
    OfferPassive,
    Output,
    PeerFailed,
    Received,
    Send,
    StrayMessage,
    Timer,
    TimerFired,
    is_seed,
    seed_id,
)
from overlay.messages import (
    Disconnect,
    ForwardJoin,
    Join,
    Message,
    Neighbor,
    NeighborReply,
    Shuffle,
    ShuffleReply,
)
from sim.engine import NetworkModel, Simulation
from tests.conftest import nid

JOIN_WINDOW = 20.0  # joins happen in [0, JOIN_WINDOW]
SETTLE = 30.0  # then three shuffle periods before any crash or leave
DISRUPT_WINDOW = 30.0  # crashes and leaves happen in this window after SETTLE
# Without SWIM (see the module's docstring); with it, a run costs 8x more.
CONFIG = Config().replace(**{"swim.enabled": False})
QUIET = 120.0  # the overlay must be whole within this long after the last disruption
QUIET_STEP = 5.0  # how often the run stops to check whether it already is
# Then this much longer: the longest Lifeguard suspicion timeout of a
# 60-node cluster (6 x 4 x log10(60) x 1 s = 43 s) and a little more.
AFTERMATH = 45.0


def check_node(hv: HyParView, cfg: HyParViewConfig) -> None:
    """What holds for one node at every moment."""
    views = hv.views()
    active, passive, pending = set(views.active), set(views.passive), set(views.pending)
    assert hv.me not in active and hv.me not in passive, "a node in its own view"
    assert len(active) <= cfg.active_size, "active view over its size"
    assert len(passive) <= cfg.passive_size, "passive view over its size"
    assert not active & passive, "active and passive views overlap"
    assert not active & pending, "an active peer still pending"
    assert not any(is_seed(p) for p in (*active, *passive, *pending))
    assert all(hv.is_neighbor(p) for p in (*active, *pending))
    if hv.state is HvState.LEFT:
        assert not active and not pending


# --------------------------------------------------------------------------
# Whole clusters


@dataclass
class Scenario:
    seed: int
    n: int
    order: list[int]  # join order; order[0] founds the cluster and stays up
    join_at: list[float]  # per position in `order`, ascending
    seeds: list[list[int]]  # per position: contacts, earlier nodes, founder last-resort
    dead: list[bool]  # per position: never starts (a dead seed for later joiners)
    fate: list[tuple[str, float]]  # per position: ("stay"|"crash"|"leave", when)
    latency_min: float
    latency_max: float
    loss: float


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(2, 60))
    order = draw(st.permutations(range(n)))
    join_at = sorted(draw(st.lists(st.floats(0, JOIN_WINDOW), min_size=n, max_size=n)))
    seeds: list[list[int]] = [[]]
    for k in range(1, n):
        earlier = draw(st.lists(st.sampled_from(order[:k]), max_size=3, unique=True))
        if order[0] not in earlier:
            earlier.insert(draw(st.integers(0, len(earlier))), order[0])
        seeds.append(earlier)
    dead = [False] + [draw(st.integers(0, 9)) == 0 for _ in range(n - 1)]
    t0 = JOIN_WINDOW + SETTLE
    fate: list[tuple[str, float]] = [("stay", 0.0)]
    for _ in range(n - 1):
        kind = draw(st.sampled_from(["stay", "stay", "stay", "crash", "crash", "leave"]))
        fate.append((kind, draw(st.floats(t0, t0 + DISRUPT_WINDOW))))
    lo = draw(st.floats(0.0005, 0.05))
    return Scenario(
        seed=draw(st.integers(0, 2**32 - 1)),
        n=n,
        order=list(order),
        join_at=join_at,
        seeds=seeds,
        dead=dead,
        fate=fate,
        latency_min=lo,
        latency_max=lo + draw(st.floats(0, 0.5)),
        loss=draw(st.sampled_from([0.0, 0.0, 0.05, 0.3, 1.0])),
    )


def run_cluster(
    sc: Scenario, config: Config = CONFIG
) -> tuple[Simulation, list[NodeId], set[NodeId]]:
    net = NetworkModel(latency_min=sc.latency_min, latency_max=sc.latency_max, loss=sc.loss)
    sim = Simulation(config, seed=sc.seed, network=net)
    ids = [sim.add_node(f"n{i}", at=0.0) for i in range(sc.n)]

    last: list[tuple[float, NodeId] | None] = [None]

    def observe(t: float, who: NodeId, _out: Output) -> None:
        # The outputs of one step share (t, who) and the state after it:
        # one check per step is as strict as one per output.
        if last[0] != (t, who):
            last[0] = (t, who)
            check_node(sim.node(who).hyparview, config.hyparview)

    sim.observers.append(observe)
    gone: set[NodeId] = set()
    end = JOIN_WINDOW + SETTLE
    for k, i in enumerate(sc.order):
        me = ids[i]
        if sc.dead[k]:
            sim.crash(me, at=0.0)
            gone.add(me)
            continue
        if k > 0:
            sim.join(me, [ids[s] for s in sc.seeds[k]], at=sc.join_at[k])
        kind, when = sc.fate[k]
        if kind == "crash":
            sim.crash(me, at=when)
        elif kind == "leave":
            sim.leave(me, at=when)
        if kind != "stay":
            gone.add(me)
            end = max(end, when)
    # Quiet until the overlay is whole, checked every few seconds, for at
    # most QUIET; then AFTERMATH more, so that what comes late (SWIM's
    # verdicts on the last crashes) has happened too: the test asserts on
    # that final state. Most clusters are whole long before QUIET.
    sim.run_until(end + QUIET_STEP)
    deadline = end + QUIET
    while sim.now < deadline and not cluster_ok(sim, ids, gone):
        sim.run_until(min(deadline, sim.now + QUIET_STEP))
    sim.run_until(sim.now + AFTERMATH)
    return sim, ids, gone


def cluster_ok(sim: Simulation, ids: list[NodeId], gone: set[NodeId]) -> bool:
    try:
        check_cluster(sim, ids, gone)
    except AssertionError:
        return False
    return True


def check_cluster(sim: Simulation, ids: list[NodeId], gone: set[NodeId]) -> None:
    up = [n for n in ids if n not in gone]
    assert set(sim.live()) >= set(up)
    graph = nx.Graph()
    graph.add_nodes_from(up)
    for me in up:
        hv = sim.node(me).hyparview
        check_node(hv, sim.node(me).config.hyparview)
        assert hv.state is not HvState.LEFT
        for peer in hv.views().active:
            assert peer not in gone, f"{me} keeps {peer}, crashed or left, as active"
            assert me in sim.node(peer).hyparview.views().active, f"{me} -> {peer} is one-way"
            graph.add_edge(me, peer)
    assert nx.is_connected(graph), [sorted(map(str, c)) for c in nx.connected_components(graph)]


@settings(max_examples=200, deadline=None)
@given(sc=scenarios())
def test_cluster_converges_to_a_connected_symmetric_overlay(sc: Scenario) -> None:
    sim, ids, gone = run_cluster(sc)
    check_cluster(sim, ids, gone)


@settings(max_examples=20, deadline=None)
@given(sc=scenarios())
def test_with_swim_too(sc: Scenario) -> None:
    """The composed node: SWIM's verdicts and refills act on the views, and
    the overlay still converges (fewer examples: SWIM costs 8x per run)."""
    sim, ids, gone = run_cluster(sc, Config())
    check_cluster(sim, ids, gone)


def test_a_larger_cluster_with_heavy_churn() -> None:
    """One bigger fixed run: 150 nodes, a third of them crash or leave."""
    rng = random.Random(2024)
    n = 150
    order = list(range(n))
    rng.shuffle(order)
    t0 = JOIN_WINDOW + SETTLE
    fate = [("stay", 0.0)] + [
        (rng.choice(["stay", "stay", "crash", "leave"]), rng.uniform(t0, t0 + DISRUPT_WINDOW))
        for _ in range(n - 1)
    ]
    sc = Scenario(
        seed=11,
        n=n,
        order=order,
        join_at=sorted(rng.uniform(0, JOIN_WINDOW) for _ in range(n)),
        seeds=[[]] + [[*rng.sample(order[:k], min(k, 2)), order[0]] for k in range(1, n)],
        dead=[False] * n,
        fate=fate,
        latency_min=0.005,
        latency_max=0.1,
        loss=0.05,
    )
    sim, ids, gone = run_cluster(sc)
    assert len(gone) > n // 4
    check_cluster(sim, ids, gone)


def test_cluster_checks_can_fail() -> None:
    """The global checks are not vacuous: a cut link and a one-way link are
    caught."""
    sim = Simulation(Config(), seed=1)
    a, b, c = (sim.add_node(f"n{i}") for i in range(3))
    sim.join(b, [a], at=0.1)
    sim.join(c, [a], at=0.2)
    sim.run_until(5.0)
    check_cluster(sim, [a, b, c], set())
    hv_b = sim.node(b).hyparview
    peer = hv_b.views().active[0]
    del hv_b._active[peer]
    try:
        check_cluster(sim, [a, b, c], set())
    except AssertionError:
        pass
    else:
        raise AssertionError("a one-way link went unnoticed")


# --------------------------------------------------------------------------
# One node, any inputs


ME = nid(0)
POOL = [nid(i) for i in range(1, 9)]
SEEDS = [seed_id(p.host, p.port) for p in POOL[:2]]
NONCES = st.sampled_from([0, 1, 2]) | st.integers(0, 2**63 - 1)
peers = st.sampled_from([*POOL, ME])
node_lists = st.lists(st.sampled_from([*POOL, ME, *SEEDS]), max_size=8).map(tuple)

hv_messages: st.SearchStrategy[Message] = st.one_of(
    st.just(Join()),
    st.builds(ForwardJoin, peers | st.sampled_from(SEEDS), st.integers(0, 255)),
    st.builds(Neighbor, st.booleans(), st.booleans(), NONCES),
    st.builds(NeighborReply, st.booleans(), NONCES),
    st.builds(Disconnect, st.booleans()),
    st.builds(Shuffle, peers, st.integers(0, 255), NONCES, node_lists),
    st.builds(ShuffleReply, NONCES, node_lists),
)

timer_keys = st.one_of(st.none(), peers, st.just("junk"))
inputs: st.SearchStrategy[Input] = st.one_of(
    st.builds(Received, peers | st.sampled_from(SEEDS), hv_messages),
    st.builds(Received, peers, hv_messages),
    st.builds(TimerFired, st.builds(Timer, st.sampled_from(list(HvTimer)), timer_keys)),
    st.builds(ConnectionUp, peers),
    st.builds(ConnectionDown, peers),
    st.builds(ConnectFailed, peers | st.sampled_from(SEEDS)),
    st.builds(JoinCluster, st.lists(st.sampled_from([*POOL, ME, *SEEDS]), max_size=4).map(tuple)),
    st.just(Leave()),
    st.builds(PeerFailed, peers),
    st.builds(OfferPassive, node_lists),
    st.builds(StrayMessage, peers),
)

# prwl <= arwl: the config refuses a passive walk longer than the active one.
configs = st.integers(0, 7).flatmap(
    lambda arwl: st.builds(
        HyParViewConfig,
        active_size=st.integers(1, 5),
        passive_size=st.integers(1, 8),
        arwl=st.just(arwl),
        prwl=st.integers(0, arwl),
        shuffle_ttl=st.integers(0, 7),
        shuffle_active=st.integers(0, 4),
        shuffle_passive=st.integers(0, 5),
        jitter=st.sampled_from([0.0, 0.1, 0.5]),
    )
)


@settings(max_examples=400, deadline=None)
@given(
    cfg=configs,
    seed=st.integers(0, 2**32 - 1),
    steps=st.lists(inputs, max_size=60),
)
def test_any_input_in_any_state(cfg: HyParViewConfig, seed: int, steps: list[Input]) -> None:
    """Totality: never raises, the views stay valid after every step, every
    message it sends can go on the wire, its NeighborUp/NeighborDown stream
    always describes its active view exactly, and its `Isolated` outputs
    tell every change between an empty and a non-empty view, once, until
    it leaves (and nothing after)."""
    hv = HyParView(ME, cfg, random.Random(seed))
    up: set[NodeId] = set()
    isolated = True  # the view starts empty, and that is not announced
    now = 0.0
    outputs = hv.start(now)
    for step in steps:
        now += 0.25
        outputs = hv.handle(step, now)
        for out in outputs:
            match out:
                case Send(to, msg):
                    assert to != ME, f"sends {msg} to itself"
                    codec.encode(ME, msg)
                case NeighborUp(peer):
                    assert peer not in up, f"{peer} up twice"
                    up.add(peer)
                case NeighborDown(peer):
                    assert peer in up, f"{peer} down but never up"
                    up.remove(peer)
                case _:
                    pass
        check_node(hv, cfg)
        assert up == set(hv.views().active)
        told = [o.isolated for o in outputs if isinstance(o, Isolated)]
        if hv.state is HvState.LEFT:
            assert told == [], "Isolated after Leave"
        else:
            assert told == ([] if isolated == (not up) else [not up]), told
            isolated = not up


def test_totality_checks_can_fail() -> None:
    """check_node is not vacuous."""
    hv_cfg = dataclasses.replace(HyParViewConfig(), active_size=1)
    hv = HyParView(ME, hv_cfg, random.Random(1))
    hv._active[POOL[0]] = None
    check_node(hv, hv_cfg)
    hv._passive.add(POOL[0], ())  # what HyParView would never do
    try:
        check_node(hv, hv_cfg)
    except AssertionError:
        return
    raise AssertionError("overlapping views went unnoticed")
