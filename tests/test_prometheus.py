"""The Prometheus endpoint of real agents over loopback, read with
prometheus_client's own parser: the protocol's counters are there, and
they move when the protocol works (broadcasts, a member that dies)."""

from __future__ import annotations

import gzip

import trio
from prometheus_client.parser import text_string_to_metric_families

from daemon.agent import Agent, AgentSettings
from daemon.metrics import MAX_SCRAPES, MetricsServer
from daemon.service import Service
from daemon.testing import Changes, all_alive, bounded, fast_config, local_cluster
from tests.helpers import TEST_MAX

WAIT = 30.0
# No test may take longer than this, whatever it awaits.

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def http_get(
    addr: tuple[str, int], head: bytes = b"GET /metrics HTTP/1.0\r\n\r\n"
) -> tuple[str, dict[str, str], bytes]:
    """(status line, headers, body) of one request."""
    stream = await trio.open_tcp_stream(*addr)
    async with stream:
        await stream.send_all(head)
        data = b""
        with trio.fail_after(WAIT):
            while chunk := await stream.receive_some(65536):
                data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    status, *lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    return status, headers, body


def parse(text: str) -> Samples:
    """Every sample of the exposition, by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(addr: tuple[str, int]) -> Samples:
    status, headers, body = await http_get(addr)
    assert status == "HTTP/1.0 200 OK"
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(body.decode())


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples[(metric, tuple(sorted(labels.items())))]


PLUMTREE = (
    "overlay_plumtree_grafts_sent_total",
    "overlay_plumtree_grafts_received_total",
    "overlay_plumtree_prunes_sent_total",
    "overlay_plumtree_prunes_received_total",
    "overlay_plumtree_ihave_sent_total",
    "overlay_plumtree_ihave_received_total",
)


@bounded(TEST_MAX)
async def test_a_real_agents_endpoint_shows_the_protocol_at_work() -> None:
    config = fast_config()
    async with local_cluster(2, config=config) as (a, b), trio.open_nursery() as nursery:
        watched = Agent(
            AgentSettings(bind=("127.0.0.1", 0), name="watched", join=(a.me.addr,), config=config)
        )
        service = Service(watched, metrics=("127.0.0.1", 0))
        await nursery.start(service.run)
        addr = service.metrics_address
        assert addr is not None and addr[0] == "127.0.0.1"
        agents = [a, b, watched]
        changes = Changes(agents)
        names = ["n0", "n1", "watched"]
        await changes.until(lambda: all_alive(agents, names), WAIT)
        await changes.until(lambda: len(watched.node.views().active) == 2, WAIT)

        first = await scrape(addr)
        for name in (*PLUMTREE, "overlay_swim_probes_total", "overlay_swim_suspicions_total"):
            assert (name, ()) in first, name
        for name in ("overlay_swim_refutations_total", "overlay_plumtree_trees_evicted_total"):
            assert (name, ()) in first, name
        assert value(first, "overlay_members", status="alive") == 3
        assert value(first, "overlay_active_view_size") == 2
        assert value(first, "overlay_swim_health_score") == 0
        assert value(first, "overlay_agent_info", name="watched", addr=watched.me.addr) == 1
        assert value(first, "overlay_plumtree_trees") >= 0
        assert ("process_resident_memory_bytes", ()) in first  # prometheus_client's own

        # Broadcasts from elsewhere: the first copies over the full mesh make
        # duplicates (PRUNEs), later ones IHAVEs on the lazy links.
        for i in range(10):
            await a.publish("t", b"%d" % i)
        probes = value(first, "overlay_swim_probes_total")
        await changes.until(
            lambda: _moved(watched) and watched.node.swim.stats().get("probes", 0) > probes, WAIT
        )
        second = await scrape(addr)
        assert sum(second[(n, ())] for n in PLUMTREE) > sum(first[(n, ())] for n in PLUMTREE)
        assert value(second, "overlay_swim_probes_total") > value(
            first, "overlay_swim_probes_total"
        )
        assert value(second, "overlay_messages_received_total", type="Gossip") >= 1

        # A member dies: the watched agent's probes of it fail, it is
        # suspected, then declared failed.
        b.stop()

        def failed_probes() -> bool:
            swim = watched.node.swim.stats()
            return swim.get("probes_direct_failed", 0) >= 1 and swim.get("probes_failed", 0) >= 1

        await changes.until(failed_probes, WAIT)
        third = await scrape(addr)
        assert value(third, "overlay_swim_probe_failures_total", stage="direct") >= 1
        assert value(third, "overlay_swim_probe_failures_total", stage="indirect") >= 1
        assert value(third, "overlay_swim_suspicions_total") >= 1
        assert value(third, "overlay_members", status="alive") <= 2
        watched.stop()
        nursery.cancel_scope.cancel()


def _moved(agent: Agent) -> bool:
    stats = agent.node.plumtree.stats()
    return sum(stats[k] for k in ("prune_sent", "prune_received", "ihave_received")) > 0


@bounded(TEST_MAX)
async def test_each_agent_has_its_own_registry() -> None:
    async with local_cluster(2) as agents:
        texts = [parse(agent.prometheus()) for agent in agents]
        for agent, samples in zip(agents, texts, strict=True):
            infos = [k for k in samples if k[0] == "overlay_agent_info"]
            assert infos == [
                ("overlay_agent_info", (("addr", agent.me.addr), ("name", agent.me.name)))
            ]


@bounded(TEST_MAX)
async def test_the_endpoint_speaks_http_as_prometheus_expects() -> None:
    async with local_cluster(1) as (agent,), trio.open_nursery() as nursery:
        from daemon.prometheus import answer

        server = await MetricsServer.open(("127.0.0.1", 0))
        await nursery.start(server.serve, lambda t, h: answer(agent.prometheus_registry, t, h))
        addr = server.address

        status, headers, body = await http_get(
            addr, b"GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\nHost: x\r\n\r\n"
        )
        assert status == "HTTP/1.0 200 OK" and headers["content-encoding"] == "gzip"
        assert "overlay_swim_probes_total" in gzip.decompress(body).decode()

        status, headers, body = await http_get(
            addr, b"GET / HTTP/1.0\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n"
        )
        assert headers["content-type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")

        status, _, body = await http_get(
            addr, b"GET /metrics?name[]=overlay_swim_health_score HTTP/1.0\r\n\r\n"
        )
        assert [k[0] for k in parse(body.decode())] == ["overlay_swim_health_score"]

        status, headers, _ = await http_get(addr, b"POST /metrics HTTP/1.0\r\n\r\n")
        assert status.startswith("HTTP/1.0 405") and headers["allow"] == "GET"
        status, _, _ = await http_get(addr, b"\x00\xff garbage\r\n\r\n")
        assert status.startswith("HTTP/1.0 400")
        status, _, _ = await http_get(addr, b"GET / HTTP/1.0\r\nX: " + b"a" * 20000)
        assert status.startswith("HTTP/1.0 431")

        # Clients that say nothing hold a slot each (up to the request
        # timeout); one more is turned away at once, not queued.
        idle = [await trio.open_tcp_stream(*addr) for _ in range(MAX_SCRAPES)]
        await trio.sleep(0.1)
        status, _, _ = await http_get(addr)
        assert status.startswith("HTTP/1.0 503")
        for stream in idle:
            await stream.aclose()
        await trio.sleep(0.1)
        status, _, _ = await http_get(addr)
        assert status == "HTTP/1.0 200 OK"
        await server.aclose()
        nursery.cancel_scope.cancel()
