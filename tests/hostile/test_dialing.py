"""Issue 12, weakness 8: the agent dials and resolves what the network says.

- Forged JOINs made the agents dial the joiners they named (2,000 JOINs,
  3,641 dials). Here 2,000 JOIN datagrams and 200 JOIN streams from
  127.0.0.66, each naming another joiner at 127.0.0.66. After: the whole
  cluster dials at most `MAX_DIALS` times because of them (a joiner is
  welcome; two thousand a second from one address are not), counted both
  by the agents' `connections.dial` and by the attacker's own listeners.
- Hosts in node ids were resolved as names, so a datagram could make the
  agent query DNS for a name of the attacker's choosing. The name used
  here is `localhost` (resolved from /etc/hosts: no query leaves the
  machine), pointing at the attacker's own port: a connection or a
  datagram arriving there proves a name was resolved. After: none arrives,
  and the frames are refused and counted.
"""

from __future__ import annotations

import socket as stdsocket
from pathlib import Path

import trio

from daemon.testing import bounded
from overlay.messages import ForwardJoin, Join, Ping, PingReq, Shuffle
from tests.helpers import TEST_MAX
from tests.hostile.helpers import (
    ALIVE,
    ATTACKER_HOST,
    Datagrams,
    connect,
    frame,
    open_cluster,
    prefixed,
    send_quietly,
    state,
)

JOIN_DATAGRAMS = 2000
JOIN_STREAMS = 200
LISTENERS = 20
MAX_DIALS = 200


async def _count_accepts(listener: trio.SocketListener, counter: list[int]) -> None:
    while True:
        try:
            stream = await listener.accept()
        except OSError:
            await trio.sleep(0.05)
            continue
        counter[0] += 1
        await stream.aclose()


@bounded(TEST_MAX)
async def test_w8_forged_joins_make_no_storm_of_dials(tmp_path: Path) -> None:
    async with (
        open_cluster(tmp_path, 4) as cluster,
        Datagrams(ATTACKER_HOST) as mallory,
        trio.open_nursery() as nursery,
    ):
        accepts = [0]
        ports = []
        for _ in range(LISTENERS):
            listener = (await trio.open_tcp_listeners(0, host=ATTACKER_HOST))[0]
            ports.append(listener.socket.getsockname()[1])
            nursery.start_soon(_count_accepts, listener, accepts)

        async def dials() -> int:
            total = 0
            for agent in cluster.agents:
                total += int((await cluster.stats(agent)).get("connections", {}).get("dial", 0))
            return total

        dials0 = await dials()
        agents = cluster.agents
        for i in range(JOIN_DATAGRAMS):
            joiner = (f"j{i}", ATTACKER_HOST, ports[i % LISTENERS])
            await mallory.send(agents[i % len(agents)].addr, frame(joiner, Join))
            if i % 50 == 49:
                await trio.sleep(0.01)
        streams = []
        for i in range(JOIN_DATAGRAMS, JOIN_DATAGRAMS + JOIN_STREAMS):
            joiner = (f"j{i}", ATTACKER_HOST, ports[i % LISTENERS])
            try:
                stream = await connect(agents[i % len(agents)].addr, ATTACKER_HOST)
            except (OSError, trio.TooSlowError):
                continue
            streams.append(stream)
            await send_quietly(stream, prefixed(frame(joiner, Join)))
        await trio.sleep(3.0)
        for stream in streams:
            await stream.aclose()
        cluster.check_running()
        made = await dials() - dials0
        nursery.cancel_scope.cancel()
    assert made <= MAX_DIALS and accepts[0] <= MAX_DIALS, (
        f"{JOIN_DATAGRAMS + JOIN_STREAMS} forged JOINs from {ATTACKER_HOST}: the agents counted "
        f"{made} dials, the attacker's listeners accepted {accepts[0]} (bound {MAX_DIALS})"
    )


@bounded(TEST_MAX)
async def test_w8_names_in_node_ids_are_not_resolved(tmp_path: Path) -> None:
    async with (
        open_cluster(tmp_path, 4) as cluster,
        Datagrams("127.0.0.1") as spoofer,
        trio.open_nursery() as nursery,
    ):
        # The attacker's port on 127.0.0.1, TCP and UDP: only resolving
        # "localhost" leads an agent there.
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        udp = trio.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
        await udp.bind(("127.0.0.1", port))
        accepts = [0]
        datagrams = [0]

        async def count_datagrams() -> None:
            while True:
                try:
                    await udp.recvfrom(70000)
                except OSError:
                    continue
                datagrams[0] += 1

        nursery.start_soon(_count_accepts, listener, accepts)
        nursery.start_soon(count_datagrams)
        before = await cluster.refusals()
        named = ("evil", "localhost", port)
        for i, target in enumerate(cluster.agents):
            claimed = cluster.agents[(i + 1) % len(cluster.agents)].node
            # Datagrams: probe this target for me; I am at a name; a member
            # at a name is alive.
            await spoofer.send(
                target.addr,
                frame(claimed, PingReq, seq=7, target=list(named), nack=False, updates=[]),
            )
            await spoofer.send(
                target.addr, frame(named, Ping, seq=8, target=list(target.node), updates=[])
            )
            await spoofer.send(
                target.addr,
                frame(
                    claimed,
                    Ping,
                    seq=9,
                    target=list(target.node),
                    updates=[state(named, 1, ALIVE)],
                ),
            )
            # Streams: a joiner at a name, and a walk and a shuffle naming it.
            for first in (
                frame(named, Join),
                frame(claimed, ForwardJoin, joiner=list(named), ttl=3),
                frame(claimed, Shuffle, origin=list(named), ttl=3, nonce=5, nodes=[list(named)]),
            ):
                try:
                    stream = await connect(target.addr, "127.0.0.1")
                except (OSError, trio.TooSlowError):
                    continue
                await send_quietly(stream, prefixed(first))
                await trio.sleep(0.2)
                await stream.aclose()
        await trio.sleep(3.0)
        cluster.check_running()
        after = await cluster.refusals()
        reached = (accepts[0], datagrams[0])
        nursery.cancel_scope.cancel()
        listener.socket.close()
        udp.close()
    assert reached == (0, 0), (
        f"agents resolved 'localhost' from node ids: {reached[0]} connections and "
        f"{reached[1]} datagrams reached the attacker's port"
    )
    assert all(after[n] > before[n] for n in after), f"not counted: {before} -> {after}"
