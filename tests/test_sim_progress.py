"""The simulator's progress (sim/progress.py): a rich bar on a terminal,
plain lines elsewhere, nothing when disabled."""

from __future__ import annotations

import io

from sim.progress import STEPS, Bar


def test_plain_lines_off_a_terminal() -> None:
    out = io.StringIO()
    bar = Bar(out)  # a StringIO is no terminal
    assert not bar.live
    for i in range(1001):
        bar.sim(i / 10, 100.0, i * 7)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == STEPS + 1  # 0%, 10%, ..., 100%: one line per tenth
    assert lines[0].startswith("progress 0% 0/100 s simulated, 0 events")
    assert lines[5].startswith("progress 50% 50/100 s simulated, 3,500 events")
    assert lines[-1].startswith("progress 100% 100/100 s simulated")
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


def test_rich_bar_on_a_terminal_is_erased_at_the_end() -> None:
    out = io.StringIO()
    bar = Bar(out, live=True)
    bar.update(0.25, "25/100 s simulated")
    assert bar._progress is not None
    drawn = out.getvalue()
    assert "25%" in drawn and "25/100 s simulated" in drawn and "\x1b" in drawn
    assert "━" in drawn  # rich's bar
    bar.update(0.3, "30/100 s simulated")  # within 0.1 s of the last redraw: skipped
    assert "30/100" not in out.getvalue()
    bar.update(1.0, "100/100 s simulated")  # the end is always drawn
    assert "100/100 s simulated" in out.getvalue()
    bar.close()
    assert bar._progress is None
    tail = out.getvalue().rsplit("100/100 s simulated", 1)[1]
    assert "\x1b[?25h" in tail and tail.endswith("\x1b[2K")  # cursor shown, bar erased


def test_disabled_writes_nothing() -> None:
    out = io.StringIO()
    bar = Bar(out, enabled=False, live=True)
    bar.sim(50.0, 100.0, 10)
    bar.update(1.0)
    bar.close()
    assert out.getvalue() == ""
