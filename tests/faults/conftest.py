"""Fixtures of the fault suite: skip (with the reason) where the rig cannot
run; a fresh rig per test, torn down whatever happens."""

from __future__ import annotations

import atexit
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.rig import Rig, clean_stale, unavailable

_open: list[Rig] = []


def _close_all() -> None:
    # Last resort (e.g. ^C out of pytest): the fixture's finaliser normally
    # closes each rig; this runs at interpreter exit for any left open.
    for rig in list(_open):
        rig.close()


atexit.register(_close_all)


@pytest.fixture(scope="session")
def rig_ready() -> None:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    clean_stale()


@pytest.fixture
def rig(rig_ready: None, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    """A rig whose folder (agent logs, control sockets) is the test's
    tmp_path (pytest keeps the last three runs), or a folder of its own in
    $OVERLAY_FAULT_LOGS when set (kept), or a short folder in /tmp when the
    path is too long for unix sockets (108 bytes)."""
    workdir = tmp_path / "rig"
    keep = os.environ.get("OVERLAY_FAULT_LOGS")
    if keep:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        workdir = Path(keep) / f"{request.node.name}-{stamp}-{os.getpid()}"
    if len(str(workdir)) > 80:
        workdir = Path(tempfile.mkdtemp(prefix="ovrig-"))
    r = Rig(workdir)
    _open.append(r)
    try:
        r.open()
        yield r
    finally:
        r.close()
        _open.remove(r)
        print(f"\n(agent logs in {workdir})")
