"""Issue 12, weakness 4: forged membership.

The attacker is not a member: it sends from 127.0.0.66 under an id of its
own (`mallory@127.0.0.66`), which no agent lists. What it may do is
introduce itself; it may not speak about other members. (A member may:
without a key, anyone can join and then gossip like any member. That is the
exposure the README documents, and not what these tests attack.)

- A forged ALIVE added a fake member to every list. After: no fake member
  is listed anywhere, and the refusal is counted.
- 5,000 fabricated members kept a paused member unsuspected for 45 s
  (1.6 s without them). After: a paused member is suspected within
  `DETECT` seconds by every other agent, with the same flood going on, and
  no list holds the fabricated members.
- A forged LEFT repeated every 0.5 s kept a live member shown `left` most
  of the time. After: no agent ever shows it anything but alive.
- A GOSSIP on the internal `$overlay.members` topic injected members, from
  the network (a stream and a datagram from a non-neighbour) and through
  the control API's `publish`. After: no fake member anywhere, and the
  control API refuses the publish with an error.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import trio

from daemon.control import ControlError
from daemon.testing import bounded
from overlay.messages import Ack, Gossip, MemberUpdates, Ping
from tests.helpers import TEST_MAX
from tests.hostile.helpers import (
    ALIVE,
    ATTACKER_HOST,
    LEFT,
    Datagrams,
    NodeTuple,
    Puppet,
    connect,
    frame,
    msg_id,
    open_cluster,
    prefixed,
    send_quietly,
    state,
)

MEMBERS_TOPIC = "$overlay.members"


def ghost(i: int) -> NodeTuple:
    """A fabricated member: a loopback address where nothing listens."""
    return (f"ghost{i}", f"127.1.{i // 250}.{i % 250 + 1}", 9)


async def _ghosts_listed(cluster: object, prefix: str = "ghost") -> dict[str, int]:
    from tests.hostile.helpers import Cluster

    assert isinstance(cluster, Cluster)
    out = {}
    for agent in cluster.live():
        names = await cluster.members(agent)
        out[agent.name] = sum(1 for n in names if n.startswith(prefix))
    return out


@bounded(TEST_MAX)
async def test_w4_a_forged_alive_adds_no_member(tmp_path: Path) -> None:
    async with open_cluster(tmp_path, 4) as cluster, Datagrams(ATTACKER_HOST) as mallory:
        before = await cluster.refusals()
        ghosts = [state(ghost(i), 1, ALIVE) for i in range(10)]
        for _ in range(3):
            for target in cluster.agents:
                me = mallory.node
                await mallory.send(
                    target.addr, frame(me, Ping, seq=1, target=list(target.node), updates=ghosts)
                )
                await mallory.send(target.addr, frame(me, MemberUpdates, updates=ghosts))
                await mallory.send(target.addr, frame(me, Ack, seq=1, updates=ghosts))
            await trio.sleep(0.5)
        await trio.sleep(2.0)
        cluster.check_running()
        listed = await _ghosts_listed(cluster)
        assert not any(listed.values()), f"fake members listed, per agent: {listed}"
        after = await cluster.refusals()
        assert all(after[n] > before[n] for n in after), f"not counted: {before} -> {after}"


FABRICATED = 5000
# A paused member is suspected within this long (probe period 0.2 s: about
# a second without the attack; the issue measured 45 s with it).
DETECT = 5.0


@bounded(TEST_MAX)
async def test_w4_fabricated_members_do_not_hide_a_paused_one(tmp_path: Path) -> None:
    async with open_cluster(tmp_path, 4) as cluster, Datagrams(ATTACKER_HOST) as mallory:
        me = mallory.node
        states = [state(ghost(i), 1, ALIVE) for i in range(FABRICATED)]
        for target in cluster.agents:
            for i in range(0, FABRICATED, 100):
                batch = states[i : i + 100]
                await mallory.send(target.addr, frame(me, MemberUpdates, updates=batch))
                await mallory.send(
                    target.addr, frame(me, Ping, seq=i + 1, target=list(target.node), updates=batch)
                )
                await trio.sleep(0.002)
        await trio.sleep(1.0)
        listed = await _ghosts_listed(cluster)

        paused = cluster[3]
        watchers = cluster.agents[:3]
        cluster.signal(paused, signal.SIGSTOP)
        t0 = time.monotonic()
        seen: dict[str, float] = {}
        with trio.move_on_after(DETECT * 2):
            while len(seen) < len(watchers):
                for agent in watchers:
                    if agent.name not in seen:
                        status = (await cluster.members(agent))[paused.name]["status"]
                        if status != "alive":
                            seen[agent.name] = round(time.monotonic() - t0, 2)
                await trio.sleep(0.1)
        cluster.signal(paused, signal.SIGCONT)
        cluster.check_running()
        late = {a.name: seen.get(a.name) for a in watchers}
        assert all(t is not None and t <= DETECT for t in late.values()), (
            f"paused member suspected after (s, None: not within {2 * DETECT} s): {late}; "
            f"fabricated members listed per agent: {listed}"
        )
        assert not any(listed.values()), f"fabricated members listed, per agent: {listed}"


@bounded(TEST_MAX)
async def test_w4_a_forged_left_does_not_show_a_live_member_left(tmp_path: Path) -> None:
    """Only a member itself may say it left. The forgery comes from a member
    (the attacker joined: no key) and, spoofed, from the members' own host
    in another member's name; it names an incarnation above the victim's,
    as the victim's own goodbye would."""
    async with (
        open_cluster(tmp_path, 4) as cluster,
        trio.open_nursery() as nursery,
        Datagrams("127.0.0.1") as spoofer,
    ):
        puppet = Puppet()
        await nursery.start(puppet.run)
        await puppet.join(cluster[0].addr)
        await cluster.converge([*cluster.names, puppet.name])
        victim = cluster[3]
        watchers = cluster.agents[:3]
        samples = 0
        shown: list[tuple[str, str]] = []
        round_ = 0
        t_end = trio.current_time() + 5.0
        next_forgery = trio.current_time()
        while trio.current_time() < t_end:
            if trio.current_time() >= next_forgery:
                # Above anything the victim has refuted so far.
                left = [state(victim.node, 1000 + 10 * round_, LEFT)]
                claimed = cluster[1].node
                for target in watchers:
                    for sender, send in ((puppet.node, puppet.send_udp), (claimed, spoofer.send)):
                        await send(target.addr, frame(sender, MemberUpdates, updates=left))
                        ping = frame(
                            sender, Ping, seq=round_ + 1, target=list(target.node), updates=left
                        )
                        await send(target.addr, ping)
                round_ += 1
                next_forgery += 0.5
            for agent in watchers:
                status = (await cluster.members(agent))[victim.name]["status"]
                samples += 1
                if status in ("left", "failed"):
                    shown.append((agent.name, status))
            await trio.sleep(0.05)
        cluster.check_running()
        assert not shown, (
            f"{victim.name} shown left or failed in {len(shown)} of {samples} samples: "
            f"{sorted(set(shown))}"
        )
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_w4_the_members_topic_from_the_network_adds_no_member(tmp_path: Path) -> None:
    async with open_cluster(tmp_path, 4) as cluster, Datagrams(ATTACKER_HOST) as mallory:
        before = await cluster.refusals()
        me = mallory.node
        stream = await connect(cluster[0].addr, ATTACKER_HOST)
        for seq in range(1, 4):
            news = frame(me, MemberUpdates, updates=[state(ghost(seq), 1, ALIVE)])
            gossip = frame(
                me,
                Gossip,
                id=msg_id(me[0], 99, seq),
                topic=MEMBERS_TOPIC,
                hops=1,
                age=0.0,
                payload=news,
            )
            await send_quietly(stream, prefixed(gossip))
            for target in cluster.agents:
                await mallory.send(target.addr, gossip)
            await trio.sleep(0.2)
        await trio.sleep(2.0)
        await stream.aclose()
        cluster.check_running()
        listed = await _ghosts_listed(cluster)
        assert not any(listed.values()), f"fake members listed, per agent: {listed}"
        after = await cluster.refusals()
        assert any(after[n] > before[n] for n in after), f"not counted: {before} -> {after}"


@bounded(TEST_MAX)
async def test_w4_the_members_topic_is_refused_by_the_control_api(tmp_path: Path) -> None:
    async with open_cluster(tmp_path, 4) as cluster:
        agent = cluster[0]
        news = frame(agent.node, MemberUpdates, updates=[state(ghost(7), 1, ALIVE)])
        assert agent.client is not None
        refused: str | None = None
        try:
            with trio.fail_after(5):
                await agent.client.publish(MEMBERS_TOPIC, news)
        except ControlError as exc:
            refused = str(exc)
        await trio.sleep(2.0)
        cluster.check_running()
        listed = await _ghosts_listed(cluster)
        assert refused is not None and not any(listed.values()), (
            f"publish on {MEMBERS_TOPIC} accepted by the control API; "
            f"fake members listed, per agent: {listed}"
        )
        assert MEMBERS_TOPIC in refused or "internal" in refused.lower() or "$" in refused, refused
