"""Counters of the agent, their rates, and the Prometheus text format.

Everything the agent counts lives in one `Metrics` object: messages and
bytes sent and received by message type, bad frames by transport, drops by
queue, connection events. Rates are computed over a sliding window of
periodic samples (`sample`), so `overlay stats` shows what the agent is
doing now, not an average since it started.

The Prometheus endpoint (`--metrics HOST:PORT`, `MetricsServer`) is a
minimal HTTP/1.0 server that answers any GET with the text exposition format
(version 0.0.4) of whatever its `render` function returns: it knows nothing
of the agent (`daemon.service` gives it `Agent.prometheus`).
"""

from __future__ import annotations

import collections
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
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
# Prometheus text format


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[Mapping[str, str], float]],
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            number = repr(float(value)) if isinstance(value, float) else str(value)
            self.lines.append(f"{name}{_labels(labels)} {number}")


def prometheus_text(
    metrics: Metrics, gauges: Mapping[str, Any], refused: Mapping[str, int] | None = None
) -> str:
    """The exposition text: the counters of `metrics` plus `gauges`, a map of
    gauge name to a number or to {label value: number} (label `status`), and
    `refused`: what the protocol refused, by reason (issue 12)."""
    out = _Exposition()
    out.family(
        "overlay_protocol_refused_total",
        "counter",
        "Inputs the protocol refused (out of place, rate-limited, out of range), by reason.",
        [({"reason": k}, v) for k, v in sorted((refused or {}).items())],
    )

    def by(label: str, counter: Counter[str]) -> list[tuple[Mapping[str, str], float]]:
        return [({label: k}, v) for k, v in sorted(counter.items())]

    out.family(
        "overlay_messages_sent_total",
        "counter",
        "Protocol messages sent, by type.",
        by("type", metrics.sent_messages),
    )
    out.family(
        "overlay_bytes_sent_total",
        "counter",
        "Frame bytes sent, by message type.",
        by("type", metrics.sent_bytes),
    )
    out.family(
        "overlay_messages_received_total",
        "counter",
        "Protocol messages received, by type.",
        by("type", metrics.recv_messages),
    )
    out.family(
        "overlay_bytes_received_total",
        "counter",
        "Frame bytes received, by message type.",
        by("type", metrics.recv_bytes),
    )
    out.family(
        "overlay_bad_frames_total",
        "counter",
        "Frames refused (malformed, oversized, unauthenticated), by transport and reason.",
        [
            ({"transport": k.partition(":")[0], "reason": k.partition(":")[2]}, v)
            for k, v in sorted(metrics.bad_frames.items())
        ],
    )
    out.family(
        "overlay_queue_drops_total",
        "counter",
        "Items dropped because a bounded queue was full, by queue.",
        by("queue", metrics.drops),
    )
    out.family(
        "overlay_connection_events_total",
        "counter",
        "Stream connection events, by event.",
        by("event", metrics.connections),
    )
    out.family(
        "overlay_errors_total",
        "counter",
        "Inputs the protocol failed on (dropped; a bug worth reporting), by kind.",
        by("kind", metrics.errors),
    )
    out.family(
        "overlay_published_total",
        "counter",
        "Broadcasts published here.",
        [({}, metrics.published)],
    )
    out.family(
        "overlay_delivered_total",
        "counter",
        "Broadcasts delivered to local subscribers' topics.",
        [({}, metrics.delivered)],
    )
    for name, value in gauges.items():
        if isinstance(value, Mapping):
            samples = [({"status": str(k)}, float(v)) for k, v in sorted(value.items())]
        else:
            samples = [({}, float(value))]
        out.family(f"overlay_{name}", "gauge", f"Current {name.replace('_', ' ')}.", samples)
    return "\n".join(out.lines) + "\n"


class MetricsServer:
    """The Prometheus endpoint. `await MetricsServer.open(addr)` binds it
    (errors such as an address in use come out there); `serve(render)`
    answers every HTTP request with `render()` until cancelled."""

    def __init__(self, listeners: list[trio.SocketListener]) -> None:
        self.listeners = listeners
        sockname = listeners[0].socket.getsockname()
        self.address: tuple[str, int] = (str(sockname[0]), int(sockname[1]))

    @classmethod
    async def open(cls, addr: tuple[str, int]) -> MetricsServer:
        return cls(await trio.open_tcp_listeners(addr[1], host=addr[0]))

    async def aclose(self) -> None:
        for listener in self.listeners:
            await listener.aclose()

    async def serve(
        self,
        render: Callable[[], str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Answer every HTTP request with `render()`, until cancelled."""

        async def handler(stream: trio.SocketStream) -> None:
            try:
                with trio.move_on_after(5):
                    request = b""
                    while b"\r\n\r\n" not in request and b"\n\n" not in request:
                        chunk = await stream.receive_some(4096)
                        if not chunk:
                            break
                        request += chunk
                        if len(request) > 16384:
                            break
                    line = request.split(b"\r\n", 1)[0].decode("latin-1", "replace")
                    if line.startswith("GET "):
                        body = render().encode()
                        head = (
                            "HTTP/1.0 200 OK\r\n"
                            "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                            f"Content-Length: {len(body)}\r\n\r\n"
                        ).encode()
                    else:
                        body = b"only GET\n"
                        head = (
                            "HTTP/1.0 405 Method Not Allowed\r\n"
                            f"Content-Length: {len(body)}\r\n\r\n"
                        ).encode()
                    await stream.send_all(head + body)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                log.debug("metrics client went away: %s", exc)
            finally:
                await stream.aclose()

        task_status.started()
        await trio.serve_listeners(handler, self.listeners)
