"""Counters of the agent, their rates, and the Prometheus text format.

Everything the agent counts lives in one `Metrics` object: messages and
bytes sent and received by message type, bad frames by transport, drops by
queue, connection events. Rates are computed over a sliding window of
periodic samples (`sample`), so `overlay stats` shows what the agent is
doing now, not an average since it started.

The Prometheus endpoint (`--metrics HOST:PORT`, `MetricsServer`) is a small
HTTP/1.0 server on trio that answers any GET with whatever its `answer`
function returns: it knows nothing of the agent nor of the exposition
format (`daemon.service` gives it `daemon.prometheus.answer` over the
agent's registry).
"""

from __future__ import annotations

import collections
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

log = logging.getLogger("overlay.metrics")

# Rates are averaged over the last RATE_WINDOW seconds, sampled every
# SAMPLE_PERIOD (guess: short enough to follow a burst, long enough to smooth).
SAMPLE_PERIOD = 2.0
RATE_WINDOW = 30.0


@dataclass(slots=True)
class Metrics:
    sent_messages: Counter[str] = field(default_factory=Counter)
    sent_bytes: Counter[str] = field(default_factory=Counter)
    recv_messages: Counter[str] = field(default_factory=Counter)
    recv_bytes: Counter[str] = field(default_factory=Counter)
    # Frames refused, by "tcp"/"udp" and reason class.
    bad_frames: Counter[str] = field(default_factory=Counter)
    # Items dropped because a bounded queue was full, by queue name.
    drops: Counter[str] = field(default_factory=Counter)
    # Connection events: dial, dial_failed, accepted, closed, broken.
    connections: Counter[str] = field(default_factory=Counter)
    # Inputs the node failed on (a bug; the input was dropped), by kind.
    errors: Counter[str] = field(default_factory=Counter)
    # Application traffic.
    published: int = 0
    delivered: int = 0
    _samples: collections.deque[tuple[float, dict[str, Counter[str]]]] = field(
        default_factory=lambda: collections.deque(maxlen=int(RATE_WINDOW / SAMPLE_PERIOD) + 1)
    )

    def count_sent(self, kind: str, size: int) -> None:
        self.sent_messages[kind] += 1
        self.sent_bytes[kind] += size

    def count_received(self, kind: str, size: int) -> None:
        self.recv_messages[kind] += 1
        self.recv_bytes[kind] += size

    def _totals(self) -> dict[str, Counter[str]]:
        return {
            "sent_messages": Counter(self.sent_messages),
            "sent_bytes": Counter(self.sent_bytes),
            "recv_messages": Counter(self.recv_messages),
            "recv_bytes": Counter(self.recv_bytes),
        }

    def sample(self, now: float) -> None:
        """Record the totals at `now` (called every SAMPLE_PERIOD)."""
        self._samples.append((now, self._totals()))

    def rates(self, now: float) -> dict[str, dict[str, float]]:
        """Per-second rates by message type over the sampled window."""
        if not self._samples:
            return {}
        t0, old = self._samples[0]
        dt = now - t0
        if dt <= 0:
            return {}
        current = self._totals()
        out: dict[str, dict[str, float]] = {}
        for name, counter in current.items():
            base = old.get(name, Counter())
            out[name] = {
                kind: round((counter[kind] - base[kind]) / dt, 3)
                for kind in sorted(counter)
                if counter[kind] != base[kind]
            }
        return out

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "messages": {
                "sent": dict(sorted(self.sent_messages.items())),
                "received": dict(sorted(self.recv_messages.items())),
            },
            "bytes": {
                "sent": dict(sorted(self.sent_bytes.items())),
                "received": dict(sorted(self.recv_bytes.items())),
            },
            "rates": self.rates(now),
            "bad_frames": dict(sorted(self.bad_frames.items())),
            "drops": dict(sorted(self.drops.items())),
            "connections": dict(sorted(self.connections.items())),
            "errors": dict(sorted(self.errors.items())),
            "published": self.published,
            "delivered": self.delivered,
        }


async def sample_forever(metrics: Metrics) -> None:
    while True:
        metrics.sample(trio.current_time())
        await trio.sleep(SAMPLE_PERIOD)


# --------------------------------------------------------------------------
# The Prometheus endpoint

# Scrapes answered at once (guess: a Prometheus server or two, and an
# operator's curl); a connection beyond that is answered 503 and closed.
MAX_SCRAPES = 8
# A request's head (request line and headers) is at most this many bytes,
# and must arrive within REQUEST_TIMEOUT seconds.
MAX_REQUEST = 16384
REQUEST_TIMEOUT = 5.0
# How long an answered connection waits for the client to close.
LINGER = 1.0

# What answers a GET: (target, headers with lower-case names) -> (body, headers).
Answer = Callable[[str, Mapping[str, str]], tuple[bytes, list[tuple[str, str]]]]


def _response(status: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = [f"HTTP/1.0 {status}", *(f"{k}: {v}" for k, v in headers)]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def parse_request(raw: bytes) -> tuple[str, str, dict[str, str]] | None:
    """(method, target, headers) of an HTTP request head, or None."""
    lines = raw.decode("latin-1").replace("\r\n", "\n").split("\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


async def _linger(stream: trio.SocketStream) -> None:
    """After the answer: half-close, and read what the client still sends
    (bounded) until it closes, so that unread input does not make the close
    a reset that destroys the answer in flight."""
    await stream.send_eof()
    with trio.move_on_after(LINGER):
        left = MAX_REQUEST * 4
        while left > 0 and (chunk := await stream.receive_some(4096)):
            left -= len(chunk)


class MetricsServer:
    """The Prometheus endpoint, an HTTP/1.0 server on trio. `await
    MetricsServer.open(addr)` binds it (errors such as an address in use
    come out there); `serve(answer)` answers every GET with `answer(target,
    headers)` until cancelled (`daemon.prometheus.answer`: this module
    knows nothing of the agent nor of prometheus_client)."""

    def __init__(self, listeners: list[trio.SocketListener]) -> None:
        self.listeners = listeners
        sockname = listeners[0].socket.getsockname()
        self.address: tuple[str, int] = (str(sockname[0]), int(sockname[1]))
        self._scrapes = trio.Semaphore(MAX_SCRAPES)

    @classmethod
    async def open(cls, addr: tuple[str, int]) -> MetricsServer:
        return cls(await trio.open_tcp_listeners(addr[1], host=addr[0]))

    async def aclose(self) -> None:
        for listener in self.listeners:
            await listener.aclose()

    async def serve(
        self,
        answer: Answer,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Answer every HTTP GET with `answer`, until cancelled."""

        async def handler(stream: trio.SocketStream) -> None:
            try:
                try:
                    self._scrapes.acquire_nowait()
                except trio.WouldBlock:
                    body = b"too many scrapes at once\n"
                    await stream.send_all(_response("503 Service Unavailable", [], body))
                    await _linger(stream)
                    return
                try:
                    with trio.move_on_after(REQUEST_TIMEOUT):
                        await stream.send_all(await self._respond(stream, answer))
                        await _linger(stream)
                finally:
                    self._scrapes.release()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                log.debug("metrics client went away: %s", exc)
            finally:
                await stream.aclose()

        task_status.started()
        await trio.serve_listeners(handler, self.listeners)

    @staticmethod
    async def _respond(stream: trio.SocketStream, answer: Answer) -> bytes:
        raw = b""
        while b"\r\n\r\n" not in raw and b"\n\n" not in raw:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            raw += chunk
            if len(raw) > MAX_REQUEST:
                return _response("431 Request Header Fields Too Large", [], b"")
        request = parse_request(raw)
        if request is None:
            return _response("400 Bad Request", [], b"not an HTTP request\n")
        method, target, headers = request
        if method != "GET":
            return _response("405 Method Not Allowed", [("Allow", "GET")], b"only GET\n")
        body, out = answer(target, headers)
        return _response("200 OK", out, body)
