"""An honest cluster in the simulator: every message a node sends is one
its peers accept. The refusal rules (issue 12) count what they drop in
`Node.refused`; a refusal of honest traffic is a protocol bug that the
delivery and membership metrics may not show (a lost SHUFFLE_REPLY only
starves the passive views), so it is checked here directly."""

from __future__ import annotations

from sim.analysis import message_figures
from sim.engine import Simulation
from sim.report import _refused


def test_an_honest_cluster_refuses_none_of_its_own_messages() -> None:
    sim = Simulation(seed=4)
    ids = [sim.add_node(f"n{i}") for i in range(40)]
    for i, nid in enumerate(ids[1:]):
        sim.join(nid, [ids[0]], at=0.05 * i)
    sim.publish(ids[3], "t", b"x", at=20.0)
    sim.run_until(80.0)  # several shuffle, push-pull and anti-entropy periods
    refused = message_figures(sim)["refused"]  # what the report shows
    # A message from a neighbour that just dropped us is a race, not a rule
    # refusing honest traffic; every other refusal is.
    refused.pop("plumtree_not_neighbour", None)
    assert refused == {}
    assert sim.traffic.messages["ShuffleReply"] > 0


def test_the_report_shows_refusals() -> None:
    assert _refused({}) == ""
    assert _refused({"hyparview_datagram": 296}) == "; refused: hyparview_datagram 296"
