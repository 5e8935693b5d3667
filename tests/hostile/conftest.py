"""Every test of this folder carries the `hostile` marker (registered in
pyproject.toml): attacks on live agents over loopback, issue 12."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.hostile)
