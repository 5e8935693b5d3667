"""Shared test setup.

Hypothesis runs derandomized by default, so the suite is deterministic: the
same examples every run, on every machine. Set HYPOTHESIS_PROFILE=explore to
search with fresh random examples (and keep what fails in the local example
database) when hunting for bugs.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from overlay.ids import NodeId

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile(
    "explore", derandomize=False, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def nid(i: int | str) -> NodeId:
    """A node id for tests: `nid(3)` is n3 at 10.0.0.3:7946."""
    if isinstance(i, str):
        return NodeId(i, "10.9.9.9", 7946)
    return NodeId(f"n{i}", f"10.0.{i >> 8 & 255}.{i & 255}", 7946)
