"""Issue 12, weakness 7: connection exhaustion.

- The handshake timeout was per read, not per frame: slow-drip connections
  (a length prefix, then a byte a second) held every unidentified slot, and
  a new node could not join for as long as the drip went on. The attacker
  here reconnects whenever a connection is closed, as a real one would, so
  a per-frame deadline alone does not save the joiner; limits per source
  address must. After: a node joining from another address gets in within
  `JOIN_WITHIN` seconds while the drip goes on.
- Identified streams (after one valid frame) had no cap: 2,000 from one
  address stayed open (2,000 descriptors, +24 MB). After: the agent holds
  at most `FD_GROWTH` more descriptors at any moment of the attack, grows
  by less than `RSS_GROWTH_KB`, and the cluster is whole afterwards.
"""

from __future__ import annotations

import resource
import struct
from pathlib import Path

import pytest
import trio

from daemon.testing import bounded
from overlay.messages import Nack
from tests.helpers import TEST_MAX
from tests.hostile.helpers import (
    ATTACKER_HOST,
    connect,
    frame,
    open_cluster,
    prefixed,
    send_quietly,
    until,
)

DRIPPERS = 300
# The default handshake timeout is 10 s: a joiner must get in well within
# a few of them, while the drip goes on.
JOIN_WITHIN = 15.0


@bounded(TEST_MAX)
async def test_w7_slow_drip_connections_do_not_lock_out_a_joiner(tmp_path: Path) -> None:
    async with open_cluster(tmp_path, 2) as cluster:
        seed = cluster[0]
        counts = {"opened": 0, "closed_by_agent": 0}

        async def drip() -> None:
            while True:
                try:
                    stream = await connect(seed.addr, ATTACKER_HOST)
                except (OSError, trio.TooSlowError):
                    await trio.sleep(0.5)
                    continue
                counts["opened"] += 1
                # A frame announced, never completed: a byte a second.
                if await send_quietly(stream, struct.pack(">I", 60000)):
                    while await send_quietly(stream, b"x"):
                        await trio.sleep(1.0)
                counts["closed_by_agent"] += 1
                await stream.aclose()
                await trio.sleep(0.5)

        async def joined() -> bool:
            a = (await cluster.members(seed)).get("late", {}).get("status")
            b = (await cluster.members(late)).get(seed.name, {}).get("status")
            return a == b == "alive"

        failure = None
        async with trio.open_nursery() as attack:
            for _ in range(DRIPPERS):
                attack.start_soon(drip)
            await trio.sleep(3.0)
            held = dict(counts)
            late = await cluster.spawn("late", join=seed.peer)
            try:
                await until(joined, JOIN_WITHIN, "the joiner and the seed to list each other alive")
            except AssertionError as exc:
                failure = str(exc)
            attack.cancel_scope.cancel()
        cluster.check_running()
        stats = await cluster.stats(seed)
        assert failure is None, (
            f"{failure}: {DRIPPERS} drippers from {ATTACKER_HOST}, {held} after 3 s, "
            f"{counts} at the end; the seed's transport: {stats.get('transport')}, "
            f"connections: {stats.get('connections')}"
        )


IDLE_STREAMS = 2000
# The agent may keep some of the attacker's streams (a per-address
# allowance), not most of them.
FD_GROWTH = 500
RSS_GROWTH_KB = 12 * 1024


@bounded(TEST_MAX)
async def test_w7_identified_streams_from_one_address_are_capped(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = IDLE_STREAMS + 1000
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    async with open_cluster(tmp_path, 2) as cluster:
        target = cluster[0]
        await trio.sleep(0.5)
        fds0, rss0 = target.fds(), target.rss_kb()
        peak = fds0
        streams = []
        refused = 0
        try:
            for i in range(IDLE_STREAMS):
                try:
                    stream = await connect(target.addr, ATTACKER_HOST)
                except (OSError, trio.TooSlowError):
                    refused += 1
                    continue
                streams.append(stream)
                # One valid frame: the stream is identified, then idle.
                ident = (f"idle{i}", ATTACKER_HOST, 20000 + i)
                await send_quietly(stream, prefixed(frame(ident, Nack, seq=1)))
                if i % 100 == 99:
                    peak = max(peak, target.fds())
            for _ in range(20):
                await trio.sleep(0.1)
                peak = max(peak, target.fds())
            rss1 = target.rss_kb()
        finally:
            for stream in streams:
                await stream.aclose()
        cluster.check_running()
        await until(lambda: cluster.all_alive(), 10, "the cluster whole again")
        stats = await cluster.stats(target)
        assert peak - fds0 <= FD_GROWTH and rss1 - rss0 <= RSS_GROWTH_KB, (
            f"{IDLE_STREAMS} idle identified streams from {ATTACKER_HOST} ({refused} refused at "
            f"connect): the agent's descriptors {fds0} -> peak {peak} (bound +{FD_GROWTH}), "
            f"RSS {rss0} -> {rss1} kB (bound +{RSS_GROWTH_KB}); transport: "
            f"{stats.get('transport')}"
        )
