"""Issue 12, weaknesses 1 and 2: one datagram must not end an agent.

1. A membership update at the largest incarnation the codec accepts made
   the member it names refute past it; the refutation could not be encoded
   and the agent exited 1, and the poisoned entry stayed in every other
   list. After the fix: every agent runs, no member sits at an incarnation
   near the limit (within 2**20 of it: from there a member could not
   refute much longer), every member is listed alive, and the state was
   refused and counted.
2. A PING whose sender host holds a NUL character made the answer fail in
   the UDP send loop (`ValueError`), and the agent exited 1. After the fix:
   every agent runs, the frame was refused (counted), the cluster is whole.

The attacker sends from 127.0.0.66 and, in test 1, claims to be a member
(no key: a datagram's sender is whatever it says), so that the agent's
incarnation rules, not a sender check, must stop it.
"""

from __future__ import annotations

from pathlib import Path

import trio

from daemon.testing import bounded
from overlay.messages import MemberUpdates, Ping, PingReq
from tests.helpers import TEST_MAX
from tests.hostile.helpers import (
    ALIVE,
    INT_MAX,
    SUSPECT,
    Datagrams,
    Puppet,
    frame,
    open_cluster,
    state,
)

# "Near the limit": a member this close to INT_MAX could refute only this
# many more times, and an attacker could then accuse it for good.
NEAR_LIMIT = INT_MAX - 2**20
# How long the agents are watched after the attack: 15 probe periods.
WATCH = 3.0


@bounded(TEST_MAX)
async def test_w1_incarnation_at_the_limit_kills_nobody(tmp_path: Path) -> None:
    async with (
        open_cluster(tmp_path, 4) as cluster,
        trio.open_nursery() as nursery,
        Datagrams(host="127.0.0.1") as spoofer,
    ):
        # The attacker joins (no key: anyone may), so what it says comes
        # from a member at the address its id names.
        puppet = Puppet()
        await nursery.start(puppet.run)
        await puppet.join(cluster[0].addr)
        await cluster.converge([*cluster.names, puppet.name])
        before = await cluster.refusals()
        agents = cluster.agents
        for value in (INT_MAX, INT_MAX - 1, INT_MAX - 1000):
            for i, target in enumerate(agents):
                third = agents[(i + 2) % len(agents)].node
                # As a member: the target is suspect at `value` (it would
                # refute past it), and a third member is alive at `value`
                # (that one would refute when it hears).
                me = puppet.node
                accusation = state(target.node, value, SUSPECT, accuser=me)
                await puppet.send_udp(
                    target.addr,
                    frame(me, Ping, seq=4242, target=list(target.node), updates=[accusation]),
                )
                await puppet.send_udp(
                    target.addr, frame(me, MemberUpdates, updates=[state(third, value, ALIVE)])
                )
                # The same, from the members' own host, claiming a member.
                claimed = agents[(i + 1) % len(agents)].node
                accusation = state(target.node, value, SUSPECT, accuser=claimed)
                await spoofer.send(
                    target.addr,
                    frame(claimed, Ping, seq=4243, target=list(target.node), updates=[accusation]),
                )
                await spoofer.send(
                    target.addr,
                    frame(
                        claimed,
                        PingReq,
                        seq=4244,
                        target=list(third),
                        nack=True,
                        updates=[state(third, value, ALIVE)],
                    ),
                )
            await trio.sleep(0.3)

        await trio.sleep(WATCH)
        cluster.check_running()
        views = await cluster.views()
        high = {
            (viewer, name): m["incarnation"]
            for viewer, view in views.items()
            for name, m in view.items()
            if m["incarnation"] >= NEAR_LIMIT
        }
        assert not high, f"members near the incarnation limit (viewer, member): {high}"
        await cluster.converge(timeout=10)
        after = await cluster.refusals()
        assert any(after[n] > before[n] for n in after), (
            f"no agent counted the refused states: {before} -> {after}"
        )
        nursery.cancel_scope.cancel()


# Hosts an attacker may write in a node id that no socket call can take.
BAD_HOSTS = ("127.0.0.1\x00", "\x00", "127.0.0.1\x00evil", "127.0.0.\x001")


@bounded(TEST_MAX)
async def test_w2_nul_in_a_sender_host_kills_nobody(tmp_path: Path) -> None:
    async with open_cluster(tmp_path, 4) as cluster, Datagrams() as attacker:
        before = await cluster.refusals()
        for target in cluster.agents:
            for n, host in enumerate(BAD_HOSTS):
                sender = ("evil", host, attacker.port)
                # A probe from a sender no socket can answer...
                await attacker.send(
                    target.addr,
                    frame(sender, Ping, seq=n + 1, target=list(target.node), updates=[]),
                )
                # ... and, from a member, a probe request for such a target.
                claimed = cluster.agents[0 if target is not cluster.agents[0] else 1].node
                await attacker.send(
                    target.addr,
                    frame(
                        claimed, PingReq, seq=100 + n, target=list(sender), nack=False, updates=[]
                    ),
                )
        await trio.sleep(WATCH)
        cluster.check_running()
        await cluster.converge(timeout=10)
        after = await cluster.refusals()
        refused = {n: after[n] - before[n] for n in after}
        assert all(v > 0 for v in refused.values()), (
            f"every agent should count the frames it refused: {before} -> {after}"
        )
