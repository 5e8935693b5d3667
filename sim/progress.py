"""The simulator's progress on stderr.

On a terminal: a `rich` progress bar (bar, percentage, what is simulated,
elapsed time), redrawn at most ten times a second and erased at the end.
Elsewhere (a CI log, a file): plain lines, one each time another tenth of
the run is done, with no control characters. `rich` is imported only when
a bar is drawn.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

REDRAW_S = 0.1  # at most ten redraws a second on a terminal
STEPS = 10  # plain lines per run elsewhere


class Bar:
    def __init__(
        self, stream: TextIO | None = None, *, enabled: bool = True, live: bool | None = None
    ) -> None:
        """`live`: draw a bar (default: when `stream` is a terminal)."""
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = self.stream.isatty() if live is None else live
        self.started = time.perf_counter()
        self._last = 0.0
        self._next_step = 0  # plain output: the next tenth to report
        self._progress: Any = None  # rich.progress.Progress, once drawn
        self._task: Any = None

    def update(self, fraction: float, text: str = "") -> None:
        if not self.enabled:
            return
        fraction = min(1.0, max(0.0, fraction))
        if self.live:
            self._draw(fraction, text)
            return
        step = math.floor(fraction * STEPS + 1e-9)
        if step < self._next_step:
            return
        self._next_step = step + 1
        elapsed = time.perf_counter() - self.started
        parts = (f"progress {fraction:.0%}", text, f"({_clock(elapsed)})")
        self.stream.write(" ".join(p for p in parts if p) + "\n")
        self.stream.flush()

    def _draw(self, fraction: float, text: str) -> None:
        now = time.perf_counter()
        if now - self._last < REDRAW_S and fraction < 1.0:
            return
        self._last = now
        if self._progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            # auto_refresh=False: no refresh thread (--seeds forks workers).
            self._progress = Progress(
                BarColumn(bar_width=24),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[text]}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream, force_terminal=True, highlight=False),
                auto_refresh=False,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("sim", total=1.0, text="")
        self._progress.update(self._task, completed=fraction, text=text)
        self._progress.refresh()

    def sim(self, now: float, total: float, events: int) -> None:
        """The runner's progress callback: simulated time over planned."""
        if not self.enabled:
            return
        wall = time.perf_counter() - self.started
        rate = events / wall if wall > 0 else 0.0
        self.update(
            now / total if total > 0 else 1.0,
            f"{now:.0f}/{total:.0f} s simulated, {events:,} events ({rate / 1000:.1f}k/s)",
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()  # transient: the bar is erased
            self._progress = None


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"
