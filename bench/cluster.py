"""Benchmark: a cluster of real `overlay agent` processes on loopback.

Prints figures; never fails on time. Phases:

1. N agents (default 100, at most 200), each joining through the first:
   seconds from the last start until every agent lists N alive.
2. Broadcast latency: the bench subscribes on every agent and publishes
   messages stamped with the send time; p50/p99/max of each delivery, and of
   the time until the last of the N agents has it.
3. Failure detection: SIGKILL one agent; seconds until the first agent
   suspects it and until every agent lists it failed.
4. Idle cost: CPU % (from /proc, over a quiet window) and RSS per agent.
5. On a separate 10-agent cluster: the highest sustained rate of 1 KiB
   publishes (steps of increasing rate) with zero loss at every subscriber.

Usage: python bench/cluster.py [--nodes 100] [--messages 50] [--skip-rate]

The bench process itself follows N monitor streams and N subscriptions, so
on a small machine it competes with the agents for CPU: the figures are an
upper bound of what the agents need.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.client import ControlClient, open_client

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Proc:
    name: str
    proc: trio.Process
    peer: str = ""
    control: str = ""
    started_at: float = 0.0
    log: list[str] = field(default_factory=list)


def overlay_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "daemon.cli", *args]


async def _lines(stream: trio.abc.ReceiveStream, on_line: Callable[[str], None]) -> None:
    buf = b""
    async for chunk in stream:
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            on_line(line.decode("utf-8", "replace"))


@asynccontextmanager
async def cluster(
    nursery: trio.Nursery, n: int, config: Path, prefix: str
) -> AsyncIterator[list[Proc]]:
    procs: list[Proc] = []
    try:
        for i in range(n):
            args = ["agent", "--bind", "127.0.0.1:0", "--control", "127.0.0.1:0"]
            args += ["--name", f"{prefix}{i}", "--config", str(config), "--log-json"]
            if procs:
                # Join through a random earlier agent: no single hot seed.
                args += ["--join", random.choice(procs[: max(1, len(procs))]).peer]
            p = Proc(
                f"{prefix}{i}",
                await trio.lowlevel.open_process(
                    overlay_cmd(*args), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
                ),
            )
            started = trio.Event()

            def on_line(line: str, p: Proc = p, started: trio.Event = started) -> None:
                try:
                    rec = json.loads(line)
                except ValueError:
                    p.log.append(line)
                    return
                if rec.get("msg") == "agent started":
                    p.peer, p.control = rec["advertise"], rec["control"]
                    p.started_at = time.monotonic()
                    started.set()
                elif len(p.log) < 100:
                    p.log.append(line)

            procs.append(p)  # before waiting: the finally kills whatever was spawned
            assert p.proc.stderr is not None
            nursery.start_soon(_lines, p.proc.stderr, on_line)
            with trio.fail_after(30):
                await started.wait()
        yield procs
    finally:
        for p in procs:
            if p.proc.returncode is None:
                p.proc.kill()
        with trio.move_on_after(10):
            for p in procs:
                await p.proc.wait()


class Views:
    """Every agent's member list, followed through `monitor`."""

    def __init__(self) -> None:
        self.views: dict[str, dict[str, str]] = {}
        self.first: dict[tuple[str, str], float] = {}  # (member, status) -> first time seen
        self.changed = trio.Event()

    def update(self, agent: str, m: dict[str, Any]) -> None:
        self.views.setdefault(agent, {})[m["name"]] = m["status"]
        self.first.setdefault((m["name"], m["status"]), time.monotonic())
        self.changed.set()

    async def follow(
        self, p: Proc, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        started = False
        try:
            async with open_client(p.control) as c, c.monitor() as events:
                for m in await c.members():
                    self.update(p.name, m)
                task_status.started()
                started = True
                async for m in events:
                    self.update(p.name, m)
        except Exception:
            if not started:
                task_status.started()

    async def until(self, predicate: Callable[[], bool], timeout: float) -> float | None:
        """Seconds until `predicate` held (None: not within `timeout`)."""
        t0 = time.monotonic()
        with trio.move_on_after(timeout):
            while True:
                self.changed = trio.Event()
                if predicate():
                    return time.monotonic() - t0
                await self.changed.wait()
        return None


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


async def subscribe_all(
    nursery: trio.Nursery,
    clients: dict[str, ControlClient],
    topic: str,
    on_event: Callable[[str, dict[str, Any]], None],
) -> None:
    for name, client in clients.items():
        ready = trio.Event()

        async def run(
            name: str = name, client: ControlClient = client, ready: trio.Event = ready
        ) -> None:
            async with client.subscribe(topic) as events:
                ready.set()
                async for ev in events:
                    on_event(name, ev)

        nursery.start_soon(run)
        await ready.wait()


@asynccontextmanager
async def clients_for(procs: list[Proc]) -> AsyncIterator[dict[str, ControlClient]]:
    async with trio.open_nursery() as nursery:
        clients: dict[str, ControlClient] = {}
        done = trio.Event()

        async def hold(p: Proc, task_status: trio.TaskStatus[None]) -> None:
            async with open_client(p.control) as c:
                clients[p.name] = c
                task_status.started()
                await done.wait()

        for p in procs:
            await nursery.start(hold, p)
        try:
            yield clients
        finally:
            done.set()


async def main_phases(args: argparse.Namespace, report: dict[str, Any]) -> None:
    n = args.nodes
    tmp = Path(tempfile.mkdtemp(prefix="overlay-bench-"))
    config = tmp / "agent.toml"
    config.write_text(args.config_text)
    async with trio.open_nursery() as nursery:
        print(f"starting {n} agents ...", flush=True)
        t_start = time.monotonic()
        async with cluster(nursery, n, config, "a") as procs:
            last_start = max(p.started_at for p in procs)
            report["start_all_s"] = round(last_start - t_start, 2)
            views = Views()
            for p in procs:
                await nursery.start(views.follow, p)
            names = [p.name for p in procs]

            def converged() -> bool:
                return all(
                    len(v) >= n and all(v.get(x) == "alive" for x in names)
                    for v in (views.views.get(a, {}) for a in names)
                )

            t = await views.until(converged, 120)
            report["converge_s_after_last_start"] = (
                round(time.monotonic() - last_start, 2) if t is not None else None
            )
            print(f"converged: {report['converge_s_after_last_start']} s after the last start")

            # Broadcast latency.
            async with clients_for(procs) as clients:
                got: dict[int, list[float]] = {}

                def on_event(name: str, ev: dict[str, Any]) -> None:
                    sent_at, index = struct.unpack(">dI", ev["payload"][:12])
                    got.setdefault(index, []).append(time.monotonic() - sent_at)

                async with trio.open_nursery() as subs:
                    await subscribe_all(subs, clients, "lat", on_event)
                    for i in range(args.messages):
                        origin = random.choice(names)
                        payload = struct.pack(">dI", time.monotonic(), i) + b"x" * 100
                        await clients[origin].publish("lat", payload)
                        await trio.sleep(args.interval)
                    with trio.move_on_after(10):
                        while sum(len(v) for v in got.values()) < args.messages * n:
                            await trio.sleep(0.05)
                    subs.cancel_scope.cancel()
                per_delivery = [x for v in got.values() for x in v]
                to_all = [max(v) for v in got.values() if len(v) == n]
                report["broadcast"] = {
                    "messages": args.messages,
                    "deliveries": len(per_delivery),
                    "expected": args.messages * n,
                    "delivery_ms": {
                        "p50": round(pct(per_delivery, 0.5) * 1e3, 1),
                        "p99": round(pct(per_delivery, 0.99) * 1e3, 1),
                        "max": round(max(per_delivery, default=math.nan) * 1e3, 1),
                    },
                    "all_n_ms": {
                        "p50": round(pct(to_all, 0.5) * 1e3, 1),
                        "p99": round(pct(to_all, 0.99) * 1e3, 1),
                        "max": round(max(to_all, default=math.nan) * 1e3, 1),
                    },
                }
                print(f"broadcast: {report['broadcast']}")

            # Idle cost (before the kill, the cluster quiet).
            pids = [p.proc.pid for p in procs]
            c0 = {pid: cpu_seconds(pid) for pid in pids}
            t0 = time.monotonic()
            await trio.sleep(args.idle_window)
            dt = time.monotonic() - t0
            cpu = [(cpu_seconds(pid) - c0[pid]) / dt * 100 for pid in pids]
            rss = [rss_mb(pid) for pid in pids]
            report["idle"] = {
                "window_s": args.idle_window,
                "cpu_pct_mean": round(statistics.mean(cpu), 2),
                "cpu_pct_max": round(max(cpu), 2),
                "rss_mb_mean": round(statistics.mean(rss), 1),
                "rss_mb_max": round(max(rss), 1),
            }
            print(f"idle: {report['idle']}")

            # Failure detection.
            victim = procs[-1]
            others = names[:-1]
            t_kill = time.monotonic()
            victim.proc.send_signal(signal.SIGKILL)
            t_all = await views.until(
                lambda: all(views.views.get(a, {}).get(victim.name) == "failed" for a in others),
                120,
            )
            first_suspect = views.first.get((victim.name, "suspect"))
            report["failure"] = {
                "first_suspicion_s": round(first_suspect - t_kill, 2) if first_suspect else None,
                "failed_everywhere_s": round(t_all, 2) if t_all is not None else None,
            }
            print(f"failure detection: {report['failure']}")
            nursery.cancel_scope.cancel()

    if not args.skip_rate:
        report["publish_rate"] = await rate_phase(args, config)
        print(f"sustained publish rate: {report['publish_rate']}")


async def rate_phase(args: argparse.Namespace, config: Path) -> dict[str, Any]:
    n = 10
    results: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery, cluster(nursery, n, config, "r") as procs:
        views = Views()
        for p in procs:
            await nursery.start(views.follow, p)
        names = [p.name for p in procs]
        await views.until(
            lambda: all(
                all(views.views.get(a, {}).get(x) == "alive" for x in names) for a in names
            ),
            60,
        )
        async with clients_for(procs) as clients:
            for rate in args.rates:
                got: dict[str, set[int]] = {name: set() for name in names}

                def on_event(name: str, ev: dict[str, Any], got: dict[str, set[int]] = got) -> None:
                    got[name].add(struct.unpack(">I", ev["payload"][:4])[0])

                total = int(rate * args.rate_seconds)
                async with trio.open_nursery() as subs:
                    await subscribe_all(subs, clients, f"rate{rate}", on_event)
                    publisher = clients[names[0]]
                    t0 = time.monotonic()
                    sent = 0
                    async with trio.open_nursery() as pubs:
                        limiter = trio.CapacityLimiter(64)

                        async def one(
                            i: int,
                            limiter: trio.CapacityLimiter = limiter,
                            publisher: ControlClient = publisher,
                            topic: str = f"rate{rate}",
                        ) -> None:
                            async with limiter:
                                payload = struct.pack(">I", i) + b"x" * 1020
                                await publisher.publish(topic, payload)

                        for i in range(total):
                            target = t0 + i / rate
                            delay = target - time.monotonic()
                            if delay > 0:
                                await trio.sleep(delay)
                            await limiter.acquire_on_behalf_of(i)
                            limiter.release_on_behalf_of(i)
                            pubs.start_soon(one, i)
                            sent += 1
                    elapsed = time.monotonic() - t0
                    with trio.move_on_after(10):
                        while any(len(s) < total for s in got.values()):
                            await trio.sleep(0.05)
                    subs.cancel_scope.cancel()
                lost = sum(total - len(s) for s in got.values())
                achieved = sent / elapsed
                results.append(
                    {"target_per_s": rate, "achieved_per_s": round(achieved, 1), "lost": lost}
                )
                print(f"  rate {rate}/s: achieved {achieved:.0f}/s, lost {lost}", flush=True)
                if lost or achieved < rate * 0.9:
                    break
        nursery.cancel_scope.cancel()
    ok = [r for r in results if r["lost"] == 0 and r["achieved_per_s"] >= 0.9 * r["target_per_s"]]
    return {
        "steps": results,
        "max_zero_loss_per_s": max((r["achieved_per_s"] for r in ok), default=0),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--messages", type=int, default=50, help="broadcasts for the latency phase")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between them")
    p.add_argument("--idle-window", type=float, default=10.0)
    p.add_argument("--rates", type=int, nargs="+", default=[100, 200, 500, 1000, 2000])
    p.add_argument("--rate-seconds", type=float, default=5.0)
    p.add_argument("--skip-rate", action="store_true")
    p.add_argument("--probe-period", type=float, default=1.0, help="swim.probe_period")
    p.add_argument("--json", action="store_true", help="print the report as JSON at the end")
    args = p.parse_args()
    if not 1 < args.nodes <= 200:
        p.error("--nodes must be 2..200")
    args.config_text = (
        f"[swim]\nprobe_period = {args.probe_period}\nprobe_timeout = {args.probe_period / 2}\n"
    )
    report: dict[str, Any] = {"nodes": args.nodes, "cpus": os.cpu_count()}
    trio.run(main_phases, args, report)
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
