"""`overlay rtt NODE [NODE]`: a round trip estimated from network
coordinates, like `serf rtt`.

With one node: between this agent and NODE; with two: between them. The
coordinates come from the agent's control API (op `coordinate`: its own,
and the last one each member sent on its acks), and the distance is
computed here (`overlay.coordinates.distance`), as Serf's client does.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from overlay.coordinates import distance


def add_rtt(sub: Any, control_flag: Any, client: Any) -> None:
    """Register the `rtt` subcommand (from `daemon.cli._add_clients`)."""
    p = sub.add_parser(
        "rtt", help="estimated round trip to NODE (or between two nodes), from coordinates"
    )
    p.add_argument("node", metavar="NODE", help="a member's name")
    p.add_argument("other", metavar="NODE2", nargs="?", help="estimate between NODE and NODE2")
    control_flag(p)
    p.add_argument("--json", action="store_true", help="print {a, b, rtt_s, rtt_ms}")
    p.set_defaults(func=client(_rtt))


async def _coordinate(client: Any, name: str | None) -> dict[str, Any]:
    args = {} if name is None else {"node": name}
    result: dict[str, Any] = await client.request("coordinate", **args)
    return result


async def _rtt(client: Any, args: argparse.Namespace) -> int:
    from daemon.coordinates import from_map

    a = await _coordinate(client, None if args.other is None else args.node)
    b = await _coordinate(client, args.other if args.other is not None else args.node)
    seconds = distance(from_map(a["coordinate"]), from_map(b["coordinate"]))
    if args.json:
        answer = {"a": a["node"], "b": b["node"], "rtt_s": seconds, "rtt_ms": seconds * 1e3}
        print(json.dumps(answer))
    else:
        print(f"estimated {a['node']} <-> {b['node']} rtt: {seconds * 1e3:.3f} ms")
    return 0
