"""Issue 12, weakness 3: identity is whatever a frame claims.

- Spoofed DISCONNECT datagrams, claiming each neighbour of an agent,
  emptied its active view. After the fix a datagram cannot end a link:
  the view keeps every neighbour throughout the attack, whether the
  datagrams come from another host or from the members' own.
- A stream from another host whose first frame names a member became the
  stream that member's frames went to (broadcasts, push-pull member lists).
  After the fix that stream receives nothing meant for the member, and the
  member receives everything.
- With a cluster key, a recorded sealed stream replayed by someone on the
  path did the same. After the fix the replayed stream receives no more
  than a handshake's bytes, the member receives every broadcast, and a
  replayed sealed datagram is refused and counted as `replay`.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from daemon.testing import bounded
from overlay.messages import Disconnect, Gossip, IHave, PushPull
from tests.helpers import TEST_MAX
from tests.hostile.helpers import (
    ATTACKER_HOST,
    Datagrams,
    Tap,
    connect,
    decoded,
    frame,
    free_port,
    open_cluster,
    prefixed,
    read_all,
    replays,
    send_quietly,
    split_frames,
    state,
    until,
)

ATTACK = 4.0


@bounded(TEST_MAX)
async def test_w3_spoofed_disconnect_datagrams_leave_the_view_alone(tmp_path: Path) -> None:
    async with (
        open_cluster(tmp_path, 4) as cluster,
        Datagrams(ATTACKER_HOST) as far,
        Datagrams("127.0.0.1") as near,
    ):
        target = cluster[0]
        view = set((await cluster.stats(target))["views"]["active"])
        assert len(view) == 3, view
        before = await cluster.refusals()
        losses: list[set[str]] = []
        with trio.move_on_after(ATTACK):
            while True:
                for peer in cluster.agents[1:]:
                    for sock in (far, near):
                        # "I, your neighbour, drop you" to the target, and
                        # "I, the target, drop you" to the neighbour.
                        await sock.send(target.addr, frame(peer.node, Disconnect, alive=True))
                        await sock.send(peer.addr, frame(target.node, Disconnect, alive=True))
                now = set((await cluster.stats(target))["views"]["active"])
                if view - now:
                    losses.append(view - now)
                await trio.sleep(0.1)
        cluster.check_running()
        assert not losses, (
            f"neighbours dropped on forged datagrams ({len(losses)} samples): {losses}"
        )
        after = await cluster.refusals()
        assert after[target.name] > before[target.name], f"not counted: {before} -> {after}"


@bounded(TEST_MAX)
async def test_w3_a_stream_claiming_a_member_gets_nothing_meant_for_it(tmp_path: Path) -> None:
    async with open_cluster(tmp_path, 4) as cluster:
        target, victim = cluster[0], cluster[1]
        pull = frame(
            victim.node, PushPull, reply=False, part=0, parts=1, states=[state(victim.node, 0)]
        )
        stream = await connect(target.addr, ATTACKER_HOST)
        got = bytearray()
        payloads = [f"for-{victim.name}-{i}".encode() * 50 for i in range(5)]
        async with (
            cluster.subscription(victim, "news") as delivered,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(read_all, stream, ATTACK, got)
            # Claim the victim's name, and ask for the target's member list.
            await stream.send_all(prefixed(pull))
            await trio.sleep(0.5)
            for payload in payloads:
                await cluster.publish(target, "news", payload)
                await trio.sleep(0.2)
            await send_quietly(stream, prefixed(pull))
            await until(lambda: len(delivered) >= len(payloads), ATTACK, "the victim's deliveries")
        await stream.aclose()
        leaked = [
            type(m).__name__ for _, m in decoded(split_frames(bytes(got))) if _meant_for_member(m)
        ]
        cluster.check_running()
        assert not leaked, f"the impostor's stream received {leaked}"
        assert sorted(bytes(d["payload"]) for d in delivered) == sorted(payloads)


def _meant_for_member(msg: object) -> bool:
    return isinstance(msg, Gossip | IHave | PushPull)


@bounded(TEST_MAX)
async def test_w3_a_replayed_sealed_stream_claims_no_one(tmp_path: Path) -> None:
    key = os.urandom(32)
    async with open_cluster(tmp_path, 0, key=key) as cluster, trio.open_nursery() as nursery:
        # x advertises a tap in front of it: n1 reaches x through the tap,
        # which records what n1 sends, sealed, as anyone on the path could.
        real = free_port()
        tap = Tap(("127.0.0.1", real))
        await tap.bind()
        await nursery.start(tap.run)
        x = await cluster.spawn(
            "x", bind=f"127.0.0.1:{real}", extra=["--advertise", f"127.0.0.1:{tap.port}"]
        )
        n1 = await cluster.spawn("n1", join=f"127.0.0.1:{tap.port}")
        await cluster.converge()
        await until(
            lambda: bool(tap.streams and tap.streams[0] and tap.datagrams),
            10,
            "n1's frames through the tap",
        )
        recorded = bytes(max(tap.streams, key=len))

        # Replay n1's stream to x, from n1's own host.
        stream = await connect(("127.0.0.1", real), "127.0.0.1")
        got = bytearray()
        payloads = [os.urandom(8000) for _ in range(5)]
        async with cluster.subscription(n1, "news") as delivered, trio.open_nursery() as inner:
            inner.start_soon(read_all, stream, ATTACK, got)
            await send_quietly(stream, recorded)
            await trio.sleep(0.5)
            for payload in payloads:
                await cluster.publish(x, "news", payload)
                await trio.sleep(0.1)
            with trio.move_on_after(ATTACK):
                await until(lambda: len(delivered) >= len(payloads), ATTACK, "deliveries")
        await stream.aclose()
        cluster.check_running()
        # A handshake's challenge may come back; no broadcast may.
        assert len(got) < 4096 and len(delivered) == len(payloads), (
            f"the replayed stream received {len(got)} bytes meant for n1, "
            f"and n1 received {len(delivered)} of {len(payloads)} broadcasts"
        )

        # Replay sealed datagrams n1 sent x: refused, counted as replays.
        before = replays(await cluster.stats(x))
        async with Datagrams("127.0.0.1") as replayer:
            for data in tap.datagrams[:10]:
                await replayer.send(("127.0.0.1", real), data)
        await trio.sleep(1.0)
        after = replays(await cluster.stats(x))
        assert after > before, "replayed sealed datagrams were not counted as replays"
        await cluster.converge(timeout=10)
        nursery.cancel_scope.cancel()
