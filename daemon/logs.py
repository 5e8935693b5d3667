"""Structured logs.

Every log call of the daemon names an event and its fields:
`event(log, logging.INFO, "peer up", peer="b@10.0.0.2:7946")`. With
`--log-json` each record is one JSON object per line (`ts`, `level`,
`logger`, `msg` and the fields); otherwise a readable line with the fields as
`key=value`. Noisy events (garbage from the network) go through `Throttle`,
so a flood cannot flood the log: the count of what was held back is logged
with the next record let through.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from overlay.ids import NodeId

_FIELDS = "overlay_fields"


def event(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={_FIELDS: fields})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, _FIELDS, None)
    return fields if isinstance(fields, dict) else {}


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, NodeId):  # a tuple underneath: print it as name@addr
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def record_map(record: logging.LogRecord) -> dict[str, Any]:
    """A record as a map: the `--log-json` line's fields, and the `logs`
    stream's records (`daemon.monitor`)."""
    obj: dict[str, Any] = {
        "ts": round(record.created, 6),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in _fields(record).items():
        obj.setdefault(key, _plain(value))
    return obj


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj = record_map(record)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        parts = [f"{stamp}.{int(record.msecs):03d}", record.levelname, f"{record.name}:"]
        parts.append(record.getMessage())
        for key, value in _fields(record).items():
            text = str(_plain(value))
            if not text or any(c in text for c in " =\"'"):
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(*, json_lines: bool, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Configure the `overlay` loggers for a process (the CLI calls it once)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger("overlay")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class Throttle:
    """Lets at most `burst` records per `window` seconds through, per key."""

    def __init__(self, burst: int = 5, window: float = 60.0) -> None:
        self.burst = burst
        self.window = window
        self._state: dict[str, tuple[float, int, int]] = {}  # key -> (start, passed, held)

    def allow(self, key: str) -> tuple[bool, int]:
        """(let this one through?, how many were held back before it)."""
        now = time.monotonic()
        start, passed, held = self._state.get(key, (now, 0, 0))
        if now - start >= self.window:
            start, passed = now, 0
        if passed < self.burst:
            self._state[key] = (start, passed + 1, 0)
            return True, held
        self._state[key] = (start, passed, held + 1)
        if len(self._state) > 1024:
            self._state.clear()
        return False, 0
