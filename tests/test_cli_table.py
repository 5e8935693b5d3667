"""The CLI's tables (`overlay members`, `overlay stats`), drawn by rich:
plain, aligned and never cut off a terminal; bold header on one."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from daemon.cli import _table

HEADER = ["NAME", "ADDR", "STATUS", "INC", "TAGS"]
ROWS = [
    ["n1", "127.0.0.1:7946", "alive", "3", "a=[b],role=web"],  # [b]: no rich markup
    ["node-long-name", "[::1]:7000", "suspect", "12", ""],
]


def test_plain_off_a_terminal() -> None:
    assert _table(ROWS, HEADER).split("\n") == [
        "NAME            ADDR            STATUS   INC  TAGS",
        "n1              127.0.0.1:7946  alive    3    a=[b],role=web",
        "node-long-name  [::1]:7000      suspect  12",
    ]


def test_a_wide_row_is_never_cut_or_wrapped_off_a_terminal() -> None:
    tags = ",".join(f"k{i}=v{i}" for i in range(60))  # far wider than 80 columns
    lines = _table([["n1", "127.0.0.1:1", "alive", "1", tags]], HEADER).split("\n")
    assert len(lines) == 2 and lines[1].endswith(tags)


def test_bold_header_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Tty())
    text = _table(ROWS, HEADER)
    assert "\x1b[1m" in text and "a=[b],role=web" in text


def test_the_cli_module_loads_rich_only_for_a_table() -> None:
    script = (
        "import sys, daemon.cli; a = 'rich' in sys.modules;"
        " daemon.cli._table([['x']], ['H']); print(a, 'rich' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "True"]
