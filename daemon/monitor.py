"""Log streaming for `overlay monitor`: the agent's log records, as maps,
to any number of control clients.

Theory of operation: `LogHub.open(level)` gives a `LogMonitor`, a bounded
buffer the control API's `logs` stream reads. While at least one monitor is
open, a handler on the `overlay` logger copies each record at or above a
monitor's level into its buffer; a full buffer drops the record and counts
it (the next record sent says how many were dropped), so a slow client
never holds the agent up. A monitor asking for a more verbose level than
the agent logs lowers the `overlay` logger's level while it is open; the
agent's own output (stderr) keeps its level through its handlers' levels.
Records come from the trio thread; one from another thread is handed over
through the trio token, never touching the buffers from that thread.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from typing import Any

import trio

from daemon.logs import record_map

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
# Records a monitor holds for its client before it drops new ones (guess:
# a burst of warnings under a flood, a few seconds of debug).
MONITOR_BUFFER = 512
# Monitors open at once, at most, per agent (each costs a buffer).
MAX_MONITORS = 64


def parse_level(text: object) -> int:
    if not isinstance(text, str) or text.lower() not in LEVELS:
        raise ValueError("level must be one of debug, info, warning, error")
    return LEVELS[text.lower()]


class LogMonitor:
    """One client's view of the log: a bounded buffer."""

    def __init__(self, hub: LogHub, level: int, size: int) -> None:
        self.hub = hub
        self.level = level
        self._buffer: collections.deque[dict[str, Any]] = collections.deque()
        self._size = size
        self._ready = trio.Event()
        self.dropped = 0  # since the last record handed out
        self.dropped_total = 0

    def push(self, record: dict[str, Any]) -> None:
        if len(self._buffer) >= self._size:
            self.dropped += 1
            self.dropped_total += 1
            return
        self._buffer.append(record)
        self._ready.set()

    async def take(self) -> list[dict[str, Any]]:
        """The records waiting (at least one); the first carries `dropped`
        when records were dropped before it."""
        while not self._buffer:
            self._ready = trio.Event()
            await self._ready.wait()
        records = list(self._buffer)
        self._buffer.clear()
        if self.dropped:
            records[0] = {**records[0], "dropped": self.dropped}
            self.dropped = 0
        return records

    def close(self) -> None:
        self.hub._close(self)


class _Handler(logging.Handler):
    def __init__(self, hub: LogHub) -> None:
        super().__init__(logging.DEBUG)
        self.hub = hub

    def emit(self, record: logging.LogRecord) -> None:
        hub = self.hub
        try:
            trio.lowlevel.current_task()
        except RuntimeError:  # another thread: hand it to the trio thread
            token = hub.token
            if token is not None:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(hub.dispatch, record)
            return
        hub.dispatch(record)


class LogHub:
    """The monitors of one process's `overlay` logger."""

    def __init__(self, logger: str = "overlay") -> None:
        self.logger = logging.getLogger(logger)
        self.monitors: list[LogMonitor] = []
        self.token: trio.lowlevel.TrioToken | None = None
        self._handler = _Handler(self)
        # (logger's level, its effective level, its handlers and their levels)
        self._saved: tuple[int, int, list[tuple[logging.Handler, int]]] | None = None

    def open(self, level: int, size: int = MONITOR_BUFFER) -> LogMonitor:
        if len(self.monitors) >= MAX_MONITORS:
            raise RuntimeError(f"at most {MAX_MONITORS} log monitors at once")
        monitor = LogMonitor(self, level, size)
        if not self.monitors:
            self.token = trio.lowlevel.current_trio_token()
            # Pin each existing handler to the level the logger had, so
            # that a verbose monitor does not make the agent's output verbose.
            # (Only when the logger does not pass records on to the root's
            # handlers, as `overlay agent`'s does not: those cannot be pinned.)
            original = self.logger.getEffectiveLevel()
            handlers = [(h, h.level) for h in self.logger.handlers]
            if not self.logger.propagate:
                for h, old in handlers:
                    h.setLevel(max(old, original))
            self._saved = (self.logger.level, original, handlers)
            self.logger.addHandler(self._handler)
        self.monitors.append(monitor)
        self._adjust()
        return monitor

    def dispatch(self, record: logging.LogRecord) -> None:
        wanted = [m for m in self.monitors if record.levelno >= m.level]
        if not wanted:
            return
        item = record_map(record)
        for m in wanted:
            m.push(item)

    def _close(self, monitor: LogMonitor) -> None:
        if monitor not in self.monitors:
            return
        self.monitors.remove(monitor)
        if self.monitors:
            self._adjust()
            return
        self.logger.removeHandler(self._handler)
        if self._saved is not None:
            level, _, handlers = self._saved
            self.logger.setLevel(level)
            for h, old in handlers:
                h.setLevel(old)
            self._saved = None

    def _adjust(self) -> None:
        assert self._saved is not None
        base = self._saved[1]
        if self.logger.propagate:
            return  # the root's handlers would print what we let through
        self.logger.setLevel(min([base, *(m.level for m in self.monitors)]))


# The process's hub: every agent of a process logs to the same loggers.
HUB = LogHub()
