"""A one-line progress bar on stderr, redrawn at most ten times a second."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 24


class Bar:
    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.started = time.perf_counter()
        self._last = 0.0
        self._drawn = False

    def update(self, fraction: float, text: str = "") -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and fraction < 1.0:
            return
        self._last = now
        fraction = min(1.0, max(0.0, fraction))
        filled = round(fraction * WIDTH)
        elapsed = now - self.started
        line = (
            f"\r[{'#' * filled}{'.' * (WIDTH - filled)}] {fraction:4.0%} {text}"
            f" {int(elapsed) // 60}:{int(elapsed) % 60:02d}"
        )
        self.stream.write(line + "\x1b[K")
        self.stream.flush()
        self._drawn = True

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
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
