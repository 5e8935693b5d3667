"""Benchmark: the CPU one publish costs an agent (issue 14), measured in one
process, so that other work on the machine changes the figure little.

Prints figures; never fails. Two measures:

``cluster``
    `--agents` agents (default 10, as bench/cluster.py phase 5) run in this
    process over real loopback sockets with the default protocol settings,
    each with an embedded subscriber (no control API). One agent publishes
    `--messages` 1 KiB messages with `Agent.publish_many` in batches, paced
    so that no subscriber queue overflows. Figures: CPU microseconds per
    message per agent (the process's CPU over messages and agents), the wall
    rate, and losses.
``control``
    One agent with its control API, and a client in this process: CPU per
    publish through the control API, one `publish` request at a time and
    with the client's pipelined `publisher()`. Client and agent share the
    process: the figure is both sides' cost.

With `--profile FILE.html` (pyinstrument, from the `bench` extra) the
cluster run is profiled; the top functions by own time are printed too.

Usage: python bench/publish_path.py [--agents 10] [--messages 5000] [--profile out.html]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.agent import Agent, AgentSettings
from daemon.client import open_client
from daemon.service import Service
from daemon.testing import all_alive, local_cluster, overlay_connected
from overlay.config import Config

PAYLOAD = b"x" * 1020


async def cluster_run(agents_n: int, messages: int, batch: int) -> dict[str, Any]:
    async with local_cluster(agents_n, config=Config(), subscriber_queue=65536) as agents:
        names = [a.me.name for a in agents]
        with trio.fail_after(60):
            while not (all_alive(agents, names) and overlay_connected(agents)):
                await trio.sleep(0.1)
        await trio.sleep(1.0)  # let the join traffic settle
        got = [0] * agents_n
        done = trio.Event()

        async with trio.open_nursery() as nursery:
            for i, agent in enumerate(agents):
                sub = agent.subscribe("bench")

                async def drain(i: int = i, sub: Any = sub) -> None:
                    async with sub:
                        async for _ in sub:
                            got[i] += 1
                            if got[i] == messages and all(g >= messages for g in got):
                                done.set()

                nursery.start_soon(drain)
            publisher = agents[0]
            sent_before = sum((a.metrics.sent_messages for a in agents), Counter[str]())
            c0, t0 = time.process_time(), time.monotonic()
            sent = 0
            while sent < messages:
                n = min(batch, messages - sent)
                refused = await publisher.publish_many(
                    [("bench", sent.to_bytes(4, "big") + PAYLOAD) for sent in range(sent, sent + n)]
                )
                assert not refused, refused
                sent += n
                # Pace: no more than a few batches ahead of the slowest subscriber.
                while sent - min(got) > 4 * batch:
                    await trio.sleep(0.001)
            with trio.move_on_after(30):
                await done.wait()
            cpu, wall = time.process_time() - c0, time.monotonic() - t0
            frames = sum((a.metrics.sent_messages for a in agents), Counter[str]()) - sent_before
            nursery.cancel_scope.cancel()
    return {
        "agents": agents_n,
        "messages": messages,
        "wall_rate_per_s": round(messages / wall),
        "cpu_us_per_msg_per_agent": round(cpu / messages / agents_n * 1e6, 1),
        "lost": sum(messages - g for g in got),
        # Frames sent in the cluster per message published, by type (IHave:
        # a frame of announcements; Plumtree batches them).
        "frames_per_msg": {k: round(v / messages, 2) for k, v in sorted(frames.items())},
    }


async def control_run(messages: int) -> dict[str, Any]:
    agent = Agent(AgentSettings(bind=("127.0.0.1", 0), name="solo", seed=1))
    out: dict[str, Any] = {}
    async with (
        Service(agent, control="127.0.0.1:0") as service,
        open_client(service.control_address) as client,
    ):
        c0 = time.process_time()
        for _ in range(messages // 5):
            await client.publish("bench", PAYLOAD)
        out["one_request_each_cpu_us"] = round((time.process_time() - c0) / (messages // 5) * 1e6)
        c0 = time.process_time()
        async with client.publisher() as pub:
            for _ in range(messages):
                await pub.publish("bench", PAYLOAD)
        out["pipelined_cpu_us"] = round((time.process_time() - c0) / messages * 1e6)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--agents", type=int, default=10)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--batch", type=int, default=100, help="messages per publish_many")
    p.add_argument("--profile", metavar="FILE.html", help="profile the cluster run (pyinstrument)")
    args = p.parse_args()
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005, async_mode="disabled")
        profiler.start()
    result = trio.run(cluster_run, args.agents, args.messages, args.batch)
    if profiler is not None:
        profiler.stop()
        Path(args.profile).write_text(profiler.output_html())
        _print_top(profiler)
    print(f"cluster: {result}", flush=True)
    print(f"control API: {trio.run(control_run, args.messages)}", flush=True)


def _print_top(profiler: Any, n: int = 25) -> None:
    """The functions with the most own time, in % of the run."""
    own: dict[str, float] = {}
    root = profiler.last_session.root_frame()

    by_area: dict[str, float] = {}

    def area(path: str | None) -> str:
        """Where a function lives: our modules by name, the rest by package."""
        if not path or path.startswith("<"):
            return "generated code (codec, dataclasses)" if path == "<string>" else "builtins"
        parts = Path(path).parts
        for top in ("overlay", "daemon", "trio", "msgpack", "outcome", "bench"):
            if top in parts:
                if top not in ("overlay", "daemon"):
                    return top
                i = len(parts) - 1 - parts[::-1].index(top)
                return ".".join(parts[i:]).removesuffix(".py")
        return "stdlib/other"

    def walk(frame: Any, parent: str, parent_area: str) -> None:
        # pyinstrument shows a function's own time as a "[self]" child.
        if frame.function.startswith("["):
            own[parent] = own.get(parent, 0.0) + frame.time
            by_area[parent_area] = by_area.get(parent_area, 0.0) + frame.time
            return
        key = f"{frame.function} ({Path(frame.file_path or '?').name}:{frame.line_no})"
        where = area(frame.file_path)
        if not frame.children:
            own[key] = own.get(key, 0.0) + frame.time
            by_area[where] = by_area.get(where, 0.0) + frame.time
        for child in frame.children:
            walk(child, key, where)

    if root is not None:
        walk(root, "?", "?")
    total = sum(own.values()) or 1.0
    print("own time by function:")
    for key, t in sorted(own.items(), key=lambda kv: -kv[1])[:n]:
        print(f"{100 * t / total:5.1f}%  {key}")
    print("own time by module (ours) or package:")
    for key, t in sorted(by_area.items(), key=lambda kv: -kv[1])[:n]:
        print(f"{100 * t / total:5.1f}%  {key}")


if __name__ == "__main__":
    main()
