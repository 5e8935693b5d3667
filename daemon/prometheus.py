"""The agent's metrics in Prometheus' terms, with prometheus_client.

Rules of this module: it reads, and counts nothing. Everything exposed is
read at scrape time from one `stats()` mapping (`Agent.stats`, what
`overlay stats --json` prints): the agent's own counters (`daemon.metrics`)
and the protocol's (`Node.stats`: HyParView, Plumtree, SWIM). So the
exposition and `overlay stats` never disagree, and the hot paths do not pay
for a second set of counters.

Each agent has its own `CollectorRegistry` (`agent_registry`), not
prometheus_client's global one: several agents may run in one process (the
tests do, an embedding program may), each served on its own endpoint. The
registry also holds prometheus_client's process, platform and GC
collectors (`process_resident_memory_bytes`, ...), the figures an operator
graphs next to the protocol's.

prometheus_client's own servers are WSGI or threads; the agent serves the
exposition from trio instead (`daemon.metrics.MetricsServer`), calling
`answer` here: it honours `Accept` (the text format, or OpenMetrics),
`Accept-Encoding: gzip` and `?name[]=` filters, as prometheus_client's
servers do.

Imported only when the agent has a metrics endpoint (`--metrics`) or
someone asks for the text (`Agent.prometheus`): an agent without
`--metrics` never loads prometheus_client.
"""

from __future__ import annotations

import gzip
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Stats = Mapping[str, Any]

# The protocol's counters (Node.stats), as (layer, key, metric, help).
PROTOCOL_COUNTERS: tuple[tuple[str, str, str, str], ...] = (
    (
        "plumtree",
        "graft_sent",
        "overlay_plumtree_grafts_sent",
        "GRAFTs sent (a missing payload asked for, or a link made eager).",
    ),
    ("plumtree", "graft_received", "overlay_plumtree_grafts_received", "GRAFTs received."),
    (
        "plumtree",
        "prune_sent",
        "overlay_plumtree_prunes_sent",
        "PRUNEs sent (a duplicate made its link lazy).",
    ),
    ("plumtree", "prune_received", "overlay_plumtree_prunes_received", "PRUNEs received."),
    (
        "plumtree",
        "ihave_sent",
        "overlay_plumtree_ihave_sent",
        "IHAVE announcements sent (one IHAVE message carries many).",
    ),
    (
        "plumtree",
        "ihave_received",
        "overlay_plumtree_ihave_received",
        "IHAVE announcements received.",
    ),
    ("plumtree", "trees_created", "overlay_plumtree_trees_created", "Per-origin trees started."),
    (
        "plumtree",
        "trees_evicted",
        "overlay_plumtree_trees_evicted",
        "Idle origins' trees dropped to make room.",
    ),
    ("swim", "probes", "overlay_swim_probes", "Probes started (a ping to one member)."),
    (
        "swim",
        "suspicions",
        "overlay_swim_suspicions",
        "Suspicions started, by this node or heard from others.",
    ),
    (
        "swim",
        "refutations",
        "overlay_swim_refutations",
        "Suspicions of this node it refuted (incarnation raised).",
    ),
    (
        "swim",
        "declared_failed",
        "overlay_swim_declared_failed",
        "Members this node declared failed.",
    ),
)

# Probe failures by stage: "direct" (no ack to the ping within the probe
# timeout: PING-REQs go out) and "indirect" (no ack by the end of the
# period, relayed or not: the member is suspected).
PROBE_FAILURES = (("direct", "probes_direct_failed"), ("indirect", "probes_failed"))

# Gauges of `stats` (a path of keys), as (metric, path, help).
GAUGES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("overlay_passive_view_size", ("views", "passive"), "Members in the HyParView passive view."),
    ("overlay_streams", ("transport", "streams"), "Open peer streams."),
    ("overlay_input_queue_used", ("queues", "inputs"), "Inputs waiting for the protocol."),
    ("overlay_uptime_seconds", ("uptime",), "Seconds since the agent started."),
    ("overlay_plumtree_trees", ("plumtree", "trees"), "Per-origin broadcast trees held."),
    (
        "overlay_swim_health_score",
        ("swim", "health_score"),
        "Lifeguard local health (awareness): 0 is healthy; probe timeouts scale by score + 1.",
    ),
    ("overlay_swim_incarnation", ("swim", "incarnation"), "This node's SWIM incarnation number."),
)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _get(stats: Stats, path: tuple[str, ...]) -> float:
    value: Any = stats
    for key in path:
        if not isinstance(value, Mapping):
            return 0.0
        value = value.get(key, 0)
    return _number(value)


def _by(name: str, doc: str, label: str, counts: Mapping[str, Any]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(counts.items()):
        family.add_metric([str(key)], _number(value))
    return family


class AgentCollector(Collector):
    """Reads `stats()` once per scrape; `refusals(stats)` gives the
    protocol's refused inputs by reason (issue 12)."""

    def __init__(
        self, stats: Callable[[], Stats], refusals: Callable[[Stats], Mapping[str, int]]
    ) -> None:
        self._stats = stats
        self._refusals = refusals

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield from self._agent(stats, self._refusals(stats))
        yield from self._protocol(stats)

    def describe(self) -> Iterator[Metric]:
        """The families without samples: the registry learns the names
        (clashes refused at registration, `name[]` filters work) without
        reading the agent."""
        yield from self._agent({}, {})
        yield from self._protocol({})

    def _agent(self, stats: Stats, refused: Mapping[str, int]) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "overlay_agent_info", "This agent's name and address.", labels=["name", "addr"]
        )
        info.add_metric([str(stats.get("name", "")), str(stats.get("addr", ""))], 1.0)
        yield info
        yield _by(
            "overlay_protocol_refused_total",
            "Inputs the protocol refused (out of place, rate-limited, out of range), by reason.",
            "reason",
            refused,
        )
        messages, sizes = stats.get("messages", {}), stats.get("bytes", {})
        for way, key in (("sent", "sent"), ("received", "received")):
            yield _by(
                f"overlay_messages_{way}_total",
                f"Protocol messages {way}, by type.",
                "type",
                messages.get(key, {}),
            )
            yield _by(
                f"overlay_bytes_{way}_total",
                f"Frame bytes {way}, by message type.",
                "type",
                sizes.get(key, {}),
            )
        bad = CounterMetricFamily(
            "overlay_bad_frames_total",
            "Frames refused (malformed, oversized, unauthenticated), by transport and reason.",
            labels=["transport", "reason"],
        )
        for key, value in sorted(stats.get("bad_frames", {}).items()):
            transport, _, reason = str(key).partition(":")
            bad.add_metric([transport, reason], _number(value))
        yield bad
        yield _by(
            "overlay_queue_drops_total",
            "Items dropped because a bounded queue was full, by queue.",
            "queue",
            stats.get("drops", {}),
        )
        yield _by(
            "overlay_connection_events_total",
            "Stream connection events, by event.",
            "event",
            stats.get("connections", {}),
        )
        yield _by(
            "overlay_errors_total",
            "Inputs the protocol failed on (dropped; a bug worth reporting), by kind.",
            "kind",
            stats.get("errors", {}),
        )
        yield CounterMetricFamily(
            "overlay_published_total", "Broadcasts published here.", _number(stats.get("published"))
        )
        yield CounterMetricFamily(
            "overlay_delivered_total",
            "Broadcasts delivered to local subscribers' topics.",
            _number(stats.get("delivered")),
        )

    def _protocol(self, stats: Stats) -> Iterable[Metric]:
        members = GaugeMetricFamily(
            "overlay_members", "Members known, by SWIM status.", labels=["status"]
        )
        for status, count in sorted(stats.get("members", {}).items()):
            members.add_metric([str(status)], _number(count))
        yield members
        views = stats.get("views", {})
        yield GaugeMetricFamily(
            "overlay_active_view_size",
            "Peers in the HyParView active view (open links).",
            float(len(views.get("active", ()))),
        )
        for name, path, doc in GAUGES:
            yield GaugeMetricFamily(name, doc, _get(stats, path))
        for layer, key, name, doc in PROTOCOL_COUNTERS:
            yield CounterMetricFamily(name, doc, _get(stats, (layer, key)))
        failures = CounterMetricFamily(
            "overlay_swim_probe_failures",
            "Probes without an ack, by stage: direct (no ack to the ping in time: "
            "PING-REQs sent) and indirect (none by the end of the period: suspected).",
            labels=["stage"],
        )
        for stage, key in PROBE_FAILURES:
            failures.add_metric([stage], _get(stats, ("swim", key)))
        yield failures


def agent_registry(
    stats: Callable[[], Stats], refusals: Callable[[Stats], Mapping[str, int]]
) -> CollectorRegistry:
    """A registry of one agent's metrics, and the process' own."""
    registry = CollectorRegistry()
    registry.register(AgentCollector(stats, refusals))
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        # The default instances (registered in the global registry too):
        # they read the process, which every agent of it shares.
        registry.register(collector)
    return registry


def text(registry: CollectorRegistry) -> str:
    """The exposition in the text format (0.0.4)."""
    encoder, _ = choose_encoder("")
    return encoder(registry).decode()


def answer(
    registry: CollectorRegistry, target: str, headers: Mapping[str, str]
) -> tuple[bytes, list[tuple[str, str]]]:
    """The body and headers answering a GET of `target` (path and query)
    with `headers` (names lower case): the format `Accept` asks for,
    gzipped if `Accept-Encoding` allows, only the families named by
    `name[]` parameters when there are some."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
    names = query.get("name[]")
    source: Any = registry.restricted_registry(names) if names else registry
    encoder, content_type = choose_encoder(headers.get("accept", ""))
    body = encoder(source)
    out = [("Content-Type", content_type)]
    if gzip_accepted(headers.get("accept-encoding", "")):
        body = gzip.compress(body)
        out.append(("Content-Encoding", "gzip"))
    return body, out
