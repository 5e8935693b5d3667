"""Network coordinates through real agents: three `overlay agent` processes
on loopback probe each other; the control API's `coordinate` op and
`overlay rtt` then give estimates (docs/control-api.md, "Network
coordinates")."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import trio

from daemon.client import ControlError, open_client
from daemon.coordinates import NoCoordinate, describe
from daemon.testing import bounded
from overlay.config import Config
from overlay.ids import NodeId
from overlay.node import Node
from tests.helpers import TEST_MAX
from tests.test_cli_cluster import WAIT, agent_processes, cli


async def _wait_coordinate(control: str, node: str | None) -> dict[str, object]:
    """Ask until the agent has the coordinate (probes run every 0.2 s; a
    member that just joined may not be in the agent's list yet)."""
    async with open_client(control) as client:
        with trio.fail_after(WAIT):
            while True:
                args = {} if node is None else {"node": node}
                try:
                    result: dict[str, object] = await client.request("coordinate", **args)
                    return result
                except ControlError as exc:
                    # Not yet probed, or not yet in this agent's member list.
                    assert "yet" in str(exc) or "unknown node" in str(exc), exc
                await trio.sleep(0.1)


@bounded(TEST_MAX)
async def test_rtt_between_three_agents(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery, agent_processes(nursery, tmp_path, 3) as agents:
        p0 = agents[0].control
        own = await _wait_coordinate(p0, None)
        assert own["node"] == "p0" and isinstance(own["updates"], int) and own["updates"] >= 1
        for other in ("p1", "p2"):
            theirs = await _wait_coordinate(p0, other)
            assert theirs["node"] == other
            coord = theirs["coordinate"]
            assert isinstance(coord, dict) and len(coord["vec"]) == 8

        done = await cli("rtt", "p1", "--control", p0, "--json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["a"] == "p0" and answer["b"] == "p1"
        # Loopback: well under a second, and positive (heights are > 0).
        assert 0 < answer["rtt_s"] < 1.0 and answer["rtt_ms"] == answer["rtt_s"] * 1e3

        done = await cli("rtt", "p1", "p2", "--control", p0)
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode().startswith("estimated p1 <-> p2 rtt: ")
        assert done.stdout.decode().rstrip().endswith(" ms")

        done = await cli("rtt", "nobody", "--control", p0)
        assert done.returncode == 1
        assert done.stderr.decode() == "overlay rtt: unknown node 'nobody'\n"
        done = await cli("rtt", "--control", p0)
        assert done.returncode == 2 and b"required: NODE" in done.stderr

        async with open_client(p0) as client:
            with pytest.raises(ControlError, match="node must be a non-empty string"):
                await client.request("coordinate", node=7)


def test_no_coordinate_yet_is_a_clear_error() -> None:
    me = NodeId("solo", "127.0.0.1", 7946)
    node = Node(me, Config(), random.Random(1), {})
    node.start(0.0)
    with pytest.raises(NoCoordinate, match="no coordinate for solo yet"):
        describe(node, None)
    with pytest.raises(NoCoordinate, match="unknown node 'b'"):
        describe(node, "b")
    off = Node(me, Config().replace(**{"swim.coordinates": False}), random.Random(1), {})
    with pytest.raises(NoCoordinate, match="coordinates are off"):
        describe(off, None)
