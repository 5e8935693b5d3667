"""Network coordinates for the control API: this agent's own, or the last
one a member sent (`overlay.coordinates`), as JSON-ready maps.

The protocol state is read, never changed: the lookup runs on the agent's
task, between two inputs of the node, like `members` and `stats`.
"""

from __future__ import annotations

from typing import Any

from overlay.coordinates import Coordinate
from overlay.node import Node


class NoCoordinate(ValueError):
    """An unknown member, or no coordinate for it yet: the message says which."""


def coordinate_map(c: Coordinate) -> dict[str, Any]:
    return {"vec": list(c.vec), "height": c.height, "error": c.error, "adjustment": c.adjustment}


def from_map(obj: Any) -> Coordinate:
    """A coordinate back from `coordinate_map`'s form (what a client gets);
    ValueError when it is not one."""
    try:
        vec = tuple(float(x) for x in obj["vec"])
        return Coordinate(vec, float(obj["height"]), float(obj["error"]), float(obj["adjustment"]))
    except (TypeError, KeyError, ValueError):
        raise ValueError("the agent sent a malformed coordinate") from None


def describe(node: Node, name: str | None) -> dict[str, Any]:
    """{node, addr, coordinate, updates (own only)}; NoCoordinate when the
    member is unknown, or it (or, for our own, any probe) gave none yet."""
    if not node.swim_enabled or not node.swim.coords.enabled:
        raise NoCoordinate("network coordinates are off on this agent (swim.coordinates)")
    coords = node.swim.coords
    me = node.swim.me
    if name is None or name == me.name:
        if coords.vivaldi.updates == 0:
            raise NoCoordinate(f"no coordinate for {me.name} yet: no probe answered so far")
        return {
            "node": me.name,
            "addr": me.addr,
            "coordinate": coordinate_map(coords.vivaldi.coord),
            "updates": coords.vivaldi.updates,
        }
    member = next((m.node for m in node.members() if m.node.name == name), None)
    if member is None:
        raise NoCoordinate(f"unknown node {name!r}")
    theirs = coords.get(member)
    if theirs is None:
        raise NoCoordinate(f"no coordinate for {name} yet: it has not answered a probe of ours")
    return {"node": member.name, "addr": member.addr, "coordinate": coordinate_map(theirs)}
