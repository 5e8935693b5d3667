"""The engine's additions for scenarios: underlay latency, loss changes at
given times, stopping a node after a graceful leave, running time."""

from __future__ import annotations

import random
from pathlib import Path

import networkx as nx
import pytest

from overlay.config import Config
from overlay.io import LeaveComplete, MemberStatus
from overlay.messages import Ping
from sim import underlay
from sim.engine import NetworkModel, Simulation
from sim.underlay import Underlay, UnderlayError


def line_graph() -> nx.Graph:
    g = nx.Graph()
    g.add_edge("a", "b", latency=0.010)
    g.add_edge("b", "c", latency=0.020)
    g.add_edge("a", "c", latency=0.050)  # longer than a-b-c
    return g


def test_underlay_latency_is_the_shortest_path_plus_access() -> None:
    u = Underlay(line_graph(), random.Random(0), access_latency=0.001)
    u.attached = {("h1", 1): "a", ("h2", 1): "c", ("h3", 1): "a"}
    assert u.latency(("h1", 1), ("h2", 1)) == pytest.approx(0.032)
    assert u.latency(("h2", 1), ("h1", 1)) == pytest.approx(0.032)
    assert u.latency(("h1", 1), ("h3", 1)) == pytest.approx(0.002)  # same router


def test_underlay_rejects_bad_graphs() -> None:
    g = line_graph()
    g.add_node("island")
    with pytest.raises(UnderlayError, match="not connected"):
        Underlay(g, random.Random(0))
    g = nx.path_graph(3)
    with pytest.raises(UnderlayError, match="no valid 'latency'"):
        Underlay(g, random.Random(0))


@pytest.mark.parametrize("generator", ["barabasi_albert", "grid"])
def test_generated_underlays_are_reproducible(generator: str) -> None:
    spec = {"generator": generator, "vertices": 36, "edge_latency_min": 0.002}
    a, b = underlay.build(spec, 7), underlay.build(spec, 7)
    for k in range(20):
        a.attach(("h", k))
        b.attach(("h", k))
    assert a.attached == b.attached
    lat = a.latency(("h", 0), ("h", 1))
    assert lat == b.latency(("h", 0), ("h", 1)) and lat >= 0.002


def test_underlay_from_a_file(tmp_path: Path) -> None:
    g = nx.Graph()
    g.add_edge("r1", "r2", weight=0.03)
    path = tmp_path / "net.graphml"
    nx.write_graphml(g, path)
    u = underlay.build({"generator": "file", "path": str(path), "access_latency": 0.0}, 1)
    u.attached = {("x", 1): "r1", ("y", 1): "r2"}
    assert u.latency(("x", 1), ("y", 1)) == pytest.approx(0.03)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"generator": "file"}, "needs a path"),
        ({"generator": "file", "path": "/nonexistent.graphml"}, "not found"),
        ({"generator": "ring"}, "unknown underlay generator"),
        ({"generator": "barabasi_albert", "vertices": 3, "m": 3}, "1 <= m < vertices"),
        ({"edge_latency_min": 0.5, "edge_latency_max": 0.1}, "edge_latency_min"),
        ({"colour": "red"}, "unknown underlay key"),
    ],
)
def test_bad_underlay_specs(spec: dict[str, object], needle: str) -> None:
    with pytest.raises(UnderlayError, match=needle):
        underlay.build(spec, 1)


def test_a_simulation_over_an_underlay_uses_its_latencies() -> None:
    u = underlay.build({"generator": "grid", "vertices": 9}, 3)
    sim = Simulation(seed=1, network=NetworkModel(underlay=u), use_codec=False)
    ids = [sim.add_node(f"n{i}") for i in range(4)]
    assert set(u.attached) == {(n.host, n.port) for n in ids}
    a, b = ((n.host, n.port) for n in ids[:2])
    assert sim.latency(a, b) == u.latency(a, b)


def test_loss_changes_at_the_given_time() -> None:
    # Without SWIM: b would answer a's pings, and then probe, on its own.
    sim = Simulation(Config().replace(**{"swim.enabled": False}), seed=1, use_codec=False)
    a, b = sim.add_node("a"), sim.add_node("b")
    sim.set_loss(1.0, at=5.0)
    sim.run_until(1.0)

    def ping(seq: int) -> None:
        sim._send((a.host, a.port), a, (b.host, b.port), Ping(seq, b, ()), False)

    ping(1)
    assert sim.traffic.dropped["Ping"] == 0
    sim.run_until(6.0)
    ping(2)
    assert sim.traffic.dropped["Ping"] == 1
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        sim.set_loss(1.5)


def test_stop_after_leave_and_running_time() -> None:
    sim = Simulation(seed=1, use_codec=False)
    ids = [sim.add_node(f"n{i}") for i in range(5)]
    late = sim.add_node("late", at=10.0)
    for nid in [*ids[1:], late]:
        sim.join(nid, [ids[0]], at=10.0 if nid == late else 0.1)
    sim.run_until(5.0)
    assert late not in sim.live()  # not started yet
    sim.leave(ids[4], at=20.0)
    sim.stop(ids[4], at=22.0)
    sim.run_until(30.0)
    assert ids[4] not in sim.live() and late in sim.live()
    assert sim.node_seconds() == pytest.approx(4 * 30 + 22 + 20)
    for nid in ids[:4]:
        assert ids[4] not in sim.node(nid).hyparview.views().active


def test_a_leaving_process_exits_when_the_node_says_its_leave_is_complete() -> None:
    """As the agent does: on `LeaveComplete`, with `exit_within` only a bound."""
    sim = Simulation(seed=2, use_codec=False)
    ids = [sim.add_node(f"n{i}") for i in range(6)]
    for nid in ids[1:]:
        sim.join(nid, [ids[0]], at=0.1)
    done: list[float] = []
    sim.observers.append(
        lambda t, node, out: (
            done.append(t) if node == ids[5] and isinstance(out, LeaveComplete) else None
        )
    )
    sim.leave(ids[5], at=20.0, exit_within=30.0)
    sim.run_until(60.0)
    assert len(done) == 1 and 20.0 < done[0] < 50.0
    assert ids[5] not in sim.live()
    assert sim.nodes[(ids[5].host, ids[5].port)].stopped_at == pytest.approx(done[0])
    for nid in ids[:5]:
        m = sim.node(nid).swim.members.get(ids[5])
        assert m is not None and m.status is MemberStatus.LEFT


def test_a_late_joiner_catching_up_is_no_latency() -> None:
    """Anti-entropy hands a node that joined after a broadcast the message
    seconds later: a delivery, but not a broadcast latency."""
    from sim.broadcast_metrics import BroadcastTracker

    sim = Simulation(seed=2, use_codec=False)
    ids = [sim.add_node(f"n{i}") for i in range(8)]
    for nid in ids[1:]:
        sim.join(nid, [ids[0]], at=0.1)
    tracker = BroadcastTracker(sim)
    sim.publish(ids[3], "t", b"hello", at=10.0)
    late = sim.add_node("late", at=15.0)
    sim.join(late, [ids[0]], at=15.0)
    sim.run_until(40.0)
    (b,) = tracker.broadcasts.values()
    assert late in b.deliveries and b.deliveries[late][0] > 15.0
    s = tracker.summary(sim.live())
    assert s["reliability"] == 1.0 and s["latency_p99_s"] < 2.0
