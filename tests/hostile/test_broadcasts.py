"""Issue 12, weaknesses 5 and 6: broadcasts forged, suppressed, replayed.

5. A GOSSIP from a non-neighbour was delivered and forwarded with any
   origin; taking a publisher's epoch and its next sequence numbers
   suppressed its next real messages. The attacker here is no neighbour and
   no member (mallory@127.0.0.66), sending over a stream of its own and in
   datagrams. After: nothing it sends is delivered anywhere, and every real
   message of the publisher is delivered everywhere.
6. With a key, a sealed GOSSIP replayed after the seen-id window was
   delivered a second time. The window is shortened here (retention 3 s,
   seen ids 4 s) so the replay comes 6 s later, not 100 s: it must still
   be refused, over a stream and as a datagram.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import trio

from daemon.testing import bounded
from overlay.messages import Gossip
from tests.helpers import TEST_MAX
from tests.hostile.helpers import (
    ATTACKER_HOST,
    Cluster,
    Datagrams,
    Tap,
    connect,
    frame,
    free_port,
    msg_id,
    open_cluster,
    prefixed,
    send_quietly,
    split_frames,
    until,
)

TOPIC = "news"


def _payloads(got: list[dict[str, Any]]) -> list[bytes]:
    return [bytes(d["payload"]) for d in got]


@contextlib.asynccontextmanager
async def _everyone_subscribed(cluster: Cluster) -> Any:
    async with contextlib.AsyncExitStack() as stack:
        subs = {}
        for agent in cluster.agents:
            subs[agent.name] = await stack.enter_async_context(cluster.subscription(agent, TOPIC))
        yield subs


@bounded(TEST_MAX)
async def test_w5_gossip_from_a_non_neighbour_is_not_delivered(tmp_path: Path) -> None:
    async with (
        open_cluster(tmp_path, 4) as cluster,
        Datagrams(ATTACKER_HOST) as mallory,
        _everyone_subscribed(cluster) as subs,
    ):
        before = await cluster.refusals()
        stream = await connect(cluster[0].addr, ATTACKER_HOST)
        for seq in range(1, 4):
            # In the name of n2, a publisher the agents know.
            forged = frame(
                mallory.node,
                Gossip,
                id=msg_id("n2", 777, seq),
                topic=TOPIC,
                hops=1,
                age=0.0,
                payload=b"forged",
            )
            await send_quietly(stream, prefixed(forged))
            for target in cluster.agents:
                await mallory.send(target.addr, forged)
        await trio.sleep(2.0)
        await stream.aclose()
        forged_at = {n: _payloads(got).count(b"forged") for n, got in subs.items()}
        # The cluster still carries real broadcasts.
        await cluster.publish(cluster[2], TOPIC, b"real")
        await until(
            lambda: all(b"real" in _payloads(got) for got in subs.values()), 10, "the real one"
        )
        cluster.check_running()
        assert not any(forged_at.values()), f"forged broadcasts delivered, per agent: {forged_at}"
        after = await cluster.refusals()
        assert any(after[n] > before[n] for n in after), f"not counted: {before} -> {after}"


@bounded(TEST_MAX)
async def test_w5_forged_sequence_numbers_suppress_nothing(tmp_path: Path) -> None:
    async with (
        open_cluster(tmp_path, 4) as cluster,
        Datagrams(ATTACKER_HOST) as mallory,
        _everyone_subscribed(cluster) as subs,
    ):
        publisher = cluster[1]
        await cluster.publish(publisher, TOPIC, b"first")
        await until(
            lambda: all(b"first" in _payloads(got) for got in subs.values()), 10, "the first one"
        )
        # Anyone subscribed learns the publisher's epoch and sequence number.
        first = next(d for d in subs[cluster[0].name] if bytes(d["payload"]) == b"first")
        epoch, seq = int(first["epoch"]), int(first["seq"])

        stream = await connect(cluster[0].addr, ATTACKER_HOST)
        for n in range(1, 11):
            forged = frame(
                mallory.node,
                Gossip,
                id=msg_id(publisher.name, epoch, seq + n),
                topic=TOPIC,
                hops=1,
                age=0.0,
                payload=b"junk",
            )
            await send_quietly(stream, prefixed(forged))
            for target in cluster.agents:
                await mallory.send(target.addr, forged)
        await trio.sleep(1.0)
        await stream.aclose()

        real = [f"real-{n}".encode() for n in range(10)]
        for payload in real:
            await cluster.publish(publisher, TOPIC, payload)
        with trio.move_on_after(8):
            await until(
                lambda: all(set(real) <= set(_payloads(got)) for got in subs.values()), 8, "real"
            )
        cluster.check_running()
        missing = {
            n: sorted(p.decode() for p in set(real) - set(_payloads(got)))
            for n, got in subs.items()
        }
        junk = {n: _payloads(got).count(b"junk") for n, got in subs.items()}
        assert not any(missing.values()) and not any(junk.values()), (
            f"real broadcasts missing, per agent: {missing}; forged ones delivered: {junk}"
        )


# Shortened so that the replay comes after the seen-id window in seconds.
WINDOW = {"plumtree": {"retention": 3.0, "seen_ttl": 4.0}}


@bounded(TEST_MAX)
async def test_w6_a_sealed_gossip_replayed_later_is_not_delivered_again(tmp_path: Path) -> None:
    key = os.urandom(32)
    async with (
        open_cluster(tmp_path, 0, key=key, config=WINDOW) as cluster,
        trio.open_nursery() as nursery,
    ):
        # n1 reaches x through a tap that records what n1 sends, sealed.
        real = free_port()
        tap = Tap(("127.0.0.1", real))
        await tap.bind()
        await nursery.start(tap.run)
        x = await cluster.spawn(
            "x", bind=f"127.0.0.1:{real}", extra=["--advertise", f"127.0.0.1:{tap.port}"]
        )
        n1 = await cluster.spawn("n1", join=f"127.0.0.1:{tap.port}")
        await cluster.converge()
        payload = os.urandom(3000)
        async with cluster.subscription(x, TOPIC) as got:
            await cluster.publish(n1, TOPIC, payload)
            await until(lambda: payload in _payloads(got), 10, "the broadcast at x")
            await until(
                lambda: bool(tap.streams) and max(len(s) for s in tap.streams) > len(payload),
                5,
                "the sealed broadcast in the tap",
            )
            recorded = bytes(max(tap.streams, key=len))
            before = await cluster.refusals()
            # After the seen-id window: the copy's age says it is fresh.
            await trio.sleep(6.0)
            stream = await connect(("127.0.0.1", real), "127.0.0.1")
            await send_quietly(stream, recorded)
            async with Datagrams("127.0.0.1") as replayer:
                for sealed in split_frames(recorded):
                    if len(sealed) >= len(payload):
                        await replayer.send(("127.0.0.1", real), sealed)
            await trio.sleep(3.0)
            await stream.aclose()
            cluster.check_running()
            copies = _payloads(got).count(payload)
            assert copies == 1, f"the broadcast was delivered {copies} times at x"
            after = await cluster.refusals()
            assert after[x.name] > before[x.name], f"not counted: {before} -> {after}"
        nursery.cancel_scope.cancel()
