"""Benchmark: a cluster of real `overlay agent` processes on loopback.

Prints figures; never fails on time. Phases:

1. N agents (default 100, at most 200), each joining through a random
   earlier one: seconds from the last start until every agent lists N alive
   (followed through each agent's `monitor` stream).
2. Broadcast latency: the bench subscribes on every agent and publishes
   messages stamped with the send time (Unix time) from random agents; each
   agent stamps its delivery (the `time` of the delivery event), so the
   figures do not include the bench's own delay in reading them: p50/p99/max
   of each delivery, and of the time until the last of the N agents has it.
   Two runs: a broadcast every 0.5 s (one in flight at a time) and every
   0.1 s (several in flight, from different origins, at once).
3. Idle cost: CPU % (from /proc, over a quiet window) and memory per agent:
   RSS, and PSS/USS (RSS counts the shared libraries of every process in
   full; PSS shares them out, USS leaves them out).
4. Failure detection: SIGKILL `--kills` agents, one at a time (a crashed
   process on a live host: its host refuses what is sent to it, the fast
   path of issue 11), then SIGSTOP `--stops` agents (a silent member: the
   full Lifeguard path); for each, seconds until the first agent suspects
   it and until every other agent lists it failed, and any verdict about a
   member that was not a victim (a false positive). `--failure-only` runs
   just this phase (after the cluster converges).
5. On a separate 10-agent cluster: the highest sustained rate of 1 KiB
   publishes (steps of increasing rate, from one agent) with zero loss at
   every subscriber (one on every agent), and the CPU each process used.
   `--publish-mode pipelined` (the default) publishes through the client's
   `publisher()` (batched, pipelined); `single` sends one `publish` request
   per message, at most 64 unanswered. `--rate-only` runs just this
   phase.

Usage: python bench/cluster.py [--nodes 100] [--messages 50] [--skip-rate | --rate-only]
                               [--set swim.probe_period=0.5 ...] [--json]

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
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.client import ControlClient, open_client

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# How long each wait of the bench may take, at most (seconds).
CONVERGE_MAX = 120.0
START_MAX = 30.0


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
    nursery: trio.Nursery,
    n: int,
    config: Path,
    prefix: str,
    extra: list[str],
    *,
    join: bool = True,
) -> AsyncIterator[list[Proc]]:
    """`n` agents started one after the other, each joining through a random
    earlier one (no single hot seed); with `join=False` each starts alone
    (bench/vs_serf.py then issues the joins back to back, as `serf join`
    does)."""
    procs: list[Proc] = []
    try:
        for i in range(n):
            args = ["agent", "--bind", "127.0.0.1:0", "--control", "127.0.0.1:0"]
            args += ["--name", f"{prefix}{i}", "--config", str(config), "--log-json", *extra]
            if procs and join:
                args += ["--join", random.choice(procs).peer]
            p = Proc(
                f"{prefix}{i}",
                await trio.lowlevel.open_process(
                    overlay_cmd(*args), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
                ),
            )
            started = trio.Event()

            def on_line(line: str, p: Proc = p, started: trio.Event = started) -> None:
                # Parse only the line we need: the agents log every member
                # change, and the bench shares the CPU with them.
                if '"agent started"' in line:
                    rec = json.loads(line)
                    p.peer, p.control = rec["advertise"], rec["control"]
                    p.started_at = time.monotonic()
                    started.set()
                elif '"level":"info"' not in line and len(p.log) < 100:
                    p.log.append(line)

            procs.append(p)  # before waiting: the finally kills whatever was spawned
            assert p.proc.stderr is not None
            nursery.start_soon(_lines, p.proc.stderr, on_line)
            with trio.fail_after(START_MAX):
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

    def all_alive(self, names: list[str]) -> bool:
        return all(
            all(v.get(x) == "alive" for x in names) for v in (self.views.get(a, {}) for a in names)
        )

    def gaps(self, names: list[str]) -> dict[str, dict[str, str | None]]:
        """agent -> {member: status} for every member not listed alive there."""
        out: dict[str, dict[str, str | None]] = {}
        for a in names:
            view = self.views.get(a, {})
            missing = {x: view.get(x) for x in names if view.get(x) != "alive"}
            if missing:
                out[a] = missing
        return out


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def ms(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(pct(values, 0.5) * 1e3, 1),
        "p99": round(pct(values, 0.99) * 1e3, 1),
        "max": round(max(values, default=math.nan) * 1e3, 1),
    }


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory_mb(pid: int) -> dict[str, float]:
    """RSS, PSS and USS (private pages) in MB."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                values[parts[0][:-1]] = int(parts[1])
    uss = values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)
    return {
        "rss": values.get("Rss", 0) / 1024,
        "pss": values.get("Pss", 0) / 1024,
        "uss": uss / 1024,
    }


def udp_receive_errors() -> int:
    """The kernel's count of datagrams dropped for a full receive buffer."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    header, values = rows[0], rows[1]
    return int(values[header.index("RcvbufErrors")])


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
        with trio.fail_after(START_MAX):
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


async def totals(clients: dict[str, ControlClient]) -> dict[str, Any]:
    """Summed over the agents: Plumtree and SWIM counters, drops, bad
    frames, errors."""
    plumtree: Counter[str] = Counter()
    swim: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    for client in clients.values():
        stats = await client.stats()
        plumtree.update({k: v for k, v in stats["plumtree"].items() if isinstance(v, int)})
        swim.update({k: v for k, v in stats["swim"].items() if isinstance(v, int)})
        problems.update({f"drop:{k}": v for k, v in stats["drops"].items()})
        problems.update({f"bad:{k}": v for k, v in stats["bad_frames"].items()})
        problems.update({f"error:{k}": v for k, v in stats.get("errors", {}).items()})
    return {"plumtree": plumtree, "swim": swim, "problems": problems}


def delta(after: Counter[str], before: Counter[str], keys: list[str]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in keys}


async def converge(
    nursery: trio.Nursery, procs: list[Proc], report: dict[str, Any], key: str
) -> Views:
    last_start = max(p.started_at for p in procs)
    views = Views()
    for p in procs:
        await nursery.start(views.follow, p)
    names = [p.name for p in procs]
    gaps: dict[str, dict[str, str | None]] = {}
    t = await views.until(lambda: views.all_alive(names), 10 - (time.monotonic() - last_start))
    if t is None:
        gaps = views.gaps(names)
        t = await views.until(lambda: views.all_alive(names), CONVERGE_MAX)
    report[key] = round(time.monotonic() - last_start, 2) if t is not None else None
    print(f"converged: {report[key]} s after the last start", flush=True)
    if report[key] is None or report[key] > 10:
        # Who was missing whom at 10 s. With the SWIM counters below: a
        # member that joins while its seed holds another as suspect drops
        # that entry, and learns of it only at a later push-pull.
        print(f"  gaps at 10 s: {gaps}")
    async with clients_for(procs) as clients:
        swim = (await totals(clients))["swim"]
    report[f"{key}_swim"] = {k: swim[k] for k in ("suspicions", "refutations")}
    print(f"  during the start: {report[f'{key}_swim']}", flush=True)
    return views


async def latency_phase(
    args: argparse.Namespace, procs: list[Proc], interval: float, report: dict[str, Any]
) -> None:
    n = len(procs)
    names = [p.name for p in procs]
    async with clients_for(procs) as clients:
        before = await totals(clients)
        got: dict[int, list[float]] = {}
        hops: list[int] = []

        def on_event(name: str, ev: dict[str, Any]) -> None:
            sent_at, index = struct.unpack(">dI", ev["payload"][:12])
            got.setdefault(index, []).append(ev["time"] - sent_at)
            hops.append(ev["hops"])

        topic = f"lat{interval}"
        async with trio.open_nursery() as subs:
            await subscribe_all(subs, clients, topic, on_event)
            for i in range(args.messages):
                origin = random.choice(names)
                payload = struct.pack(">dI", time.time(), i) + b"x" * 100
                await clients[origin].publish(topic, payload)
                await trio.sleep(interval)
            with trio.move_on_after(10):
                while sum(len(v) for v in got.values()) < args.messages * n:
                    await trio.sleep(0.05)
            subs.cancel_scope.cancel()
        after = await totals(clients)
    per_delivery = [x for v in got.values() for x in v]
    to_all = [max(v) for v in got.values() if len(v) == n]
    counters = delta(
        after["plumtree"],
        before["plumtree"],
        ["eager_sent", "duplicates", "prune_sent", "graft_sent", "optimized", "ihave_sent"],
    )
    # A GRAFT is either a tree optimisation (no id) or a repair after
    # `graft_timeout_1`: a delivery that the eager tree missed.
    counters["repair_grafts"] = counters["graft_sent"] - counters["optimized"]
    key = f"broadcast_every_{interval:g}s"
    report[key] = {
        "messages": args.messages,
        "deliveries": len(per_delivery),
        "expected": args.messages * n,
        "delivery_ms": ms(per_delivery),
        "all_n_ms": ms(to_all),
        "over_100ms": sum(1 for x in per_delivery if x > 0.1),
        "hops": {"p50": pct(hops, 0.5), "max": max(hops, default=0)},
        "plumtree": counters,
    }
    print(f"{key}: {report[key]}", flush=True)


async def idle_phase(args: argparse.Namespace, procs: list[Proc], report: dict[str, Any]) -> None:
    pids = [p.proc.pid for p in procs]
    c0 = {pid: cpu_seconds(pid) for pid in pids}
    t0 = time.monotonic()
    await trio.sleep(args.idle_window)
    dt = time.monotonic() - t0
    cpu = [(cpu_seconds(pid) - c0[pid]) / dt * 100 for pid in pids]
    mem = [memory_mb(pid) for pid in pids]
    report["idle"] = {
        "window_s": args.idle_window,
        "cpu_pct_mean": round(statistics.mean(cpu), 2),
        "cpu_pct_max": round(max(cpu), 2),
        **{
            f"{kind}_mb_{how}": round(fn(m[kind] for m in mem), 1)
            for kind in ("rss", "pss", "uss")
            for how, fn in (("mean", statistics.mean), ("max", max))
        },
    }
    print(f"idle: {report['idle']}", flush=True)


async def failure_phase(
    args: argparse.Namespace, procs: list[Proc], views: Views, report: dict[str, Any]
) -> None:
    """Kill (then stop) victims one at a time; the survivors' views say
    when each was suspected and failed everywhere."""
    victims: list[Proc] = []
    runs: list[dict[str, Any]] = []
    plan = [("kill", signal.SIGKILL)] * args.kills + [("stop", signal.SIGSTOP)] * args.stops
    for k, (how, sig) in enumerate(plan):
        victim = procs[-1 - k]
        victims.append(victim)
        others = [p.name for p in procs if p not in victims]
        views.first.pop((victim.name, "suspect"), None)
        t0 = time.monotonic()
        victim.proc.send_signal(sig)
        t_all = await views.until(
            lambda v=victim.name, o=others: all(  # type: ignore[misc]
                views.views.get(a, {}).get(v) == "failed" for a in o
            ),
            CONVERGE_MAX,
        )
        first = views.first.get((victim.name, "suspect"))
        run = {
            "how": how,
            "victim": victim.name,
            "first_suspicion_s": round(first - t0, 2) if first else None,
            "failed_everywhere_s": round(t_all, 2) if t_all is not None else None,
        }
        runs.append(run)
        print(f"  {how} {victim.name}: {run}", flush=True)
        await trio.sleep(2.0)  # let the verdict settle before the next victim
    gone = {v.name for v in victims}
    survivors = [p.name for p in procs if p.name not in gone]
    false = sorted(
        (a, m)
        for a in survivors
        for m, st in views.views.get(a, {}).items()
        if m not in gone and st == "failed"
    )
    for v in victims:
        if v.proc.returncode is None:
            v.proc.send_signal(signal.SIGCONT)
    summary: dict[str, Any] = {"runs": runs, "false_verdicts_standing": len(false)}
    for how in ("kill", "stop"):
        times = [r["failed_everywhere_s"] for r in runs if r["how"] == how]
        done = [t for t in times if t is not None]
        if times:
            summary[f"{how}_failed_everywhere_s"] = {
                "median": round(statistics.median(done), 2) if done else None,
                "max": round(max(done), 2) if done else None,
                "undetected": len(times) - len(done),
            }
    report["failure"] = summary
    brief = {k: v for k, v in summary.items() if k != "runs"}
    print(f"failure detection: {brief}", flush=True)
    return victims[: args.kills]


async def main_phases(args: argparse.Namespace, report: dict[str, Any]) -> None:
    n = args.nodes
    tmp = Path(tempfile.mkdtemp(prefix="overlay-bench-"))
    config = tmp / "agent.toml"
    config.write_text(args.config_text)
    if args.rate_only:
        report["publish_rate"] = await rate_phase(args, config)
        print(f"sustained publish rate: {report['publish_rate']}", flush=True)
        return
    udp_errors = udp_receive_errors()
    async with trio.open_nursery() as nursery:
        print(f"starting {n} agents ...", flush=True)
        t_start = time.monotonic()
        async with cluster(nursery, n, config, "a", args.extra) as procs:
            report["start_all_s"] = round(max(p.started_at for p in procs) - t_start, 2)
            views = await converge(nursery, procs, report, "converge_s_after_last_start")
            if not args.failure_only:
                for interval in args.intervals:
                    await latency_phase(args, procs, interval, report)
                await idle_phase(args, procs, report)
            killed = await failure_phase(args, procs, views, report)
            async with clients_for([p for p in procs if p not in killed]) as clients:
                report["problems"] = dict((await totals(clients))["problems"])
            nursery.cancel_scope.cancel()
    report["kernel_udp_rcvbuf_errors"] = udp_receive_errors() - udp_errors
    print(
        f"problems: {report['problems']}, kernel UDP receive-buffer drops: "
        f"{report['kernel_udp_rcvbuf_errors']}",
        flush=True,
    )

    if not args.skip_rate and not args.failure_only:
        report["publish_rate"] = await rate_phase(args, config)
        print(f"sustained publish rate: {report['publish_rate']}", flush=True)


async def _publish_one(
    publisher: ControlClient, topic: str, i: int, limiter: trio.CapacityLimiter
) -> None:
    try:
        await publisher.publish(topic, struct.pack(">I", i) + b"x" * 1020)
    finally:
        limiter.release_on_behalf_of(i)


async def rate_phase(args: argparse.Namespace, config: Path) -> dict[str, Any]:
    """Publish 1 KiB messages from one agent at increasing rates; each step
    counts what every subscriber got. Stops at the first loss, or when the
    publisher (the bench and the publishing agent) cannot keep the pace."""
    n = 10
    results: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    async with (
        trio.open_nursery() as nursery,
        cluster(nursery, n, config, "r", args.extra) as procs,
    ):
        await converge(nursery, procs, report, "converge_s")
        names = [p.name for p in procs]
        async with clients_for(procs) as clients:
            for rate in args.rates:
                topic = f"rate{rate}"
                got: dict[str, set[int]] = {name: set() for name in names}

                def on_event(name: str, ev: dict[str, Any], got: dict[str, set[int]] = got) -> None:
                    got[name].add(struct.unpack(">I", ev["payload"][:4])[0])

                total = int(rate * args.rate_seconds)
                pids = [p.proc.pid for p in procs] + [os.getpid()]
                before = await totals(clients)
                async with trio.open_nursery() as subs:
                    await subscribe_all(subs, clients, topic, on_event)
                    publisher = clients[names[0]]
                    c0 = {pid: cpu_seconds(pid) for pid in pids}
                    t0 = time.monotonic()
                    if args.publish_mode == "single":
                        # One `publish` request per message, 64 unanswered at most.
                        limiter = trio.CapacityLimiter(64)
                        async with trio.open_nursery() as pubs:
                            for i in range(total):
                                delay = t0 + i / rate - time.monotonic()
                                if delay > 0:
                                    await trio.sleep(delay)
                                await limiter.acquire_on_behalf_of(i)
                                pubs.start_soon(_publish_one, publisher, topic, i, limiter)
                    else:
                        # The pipelined publisher: batches of whatever is
                        # queued, acknowledged per batch, several in flight.
                        async with publisher.publisher() as pub:
                            for i in range(total):
                                delay = t0 + i / rate - time.monotonic()
                                if delay > 0:
                                    await trio.sleep(delay)
                                await pub.publish(topic, struct.pack(">I", i) + b"x" * 1020)
                    elapsed = time.monotonic() - t0
                    c1 = {pid: cpu_seconds(pid) for pid in pids}
                    with trio.move_on_after(10):
                        while any(len(s) < total for s in got.values()):
                            await trio.sleep(0.05)
                    c2 = {pid: cpu_seconds(pid) for pid in pids}
                    subs.cancel_scope.cancel()
                # CPU while publishing, in % of one core.
                cpu = {pid: (c1[pid] - c0[pid]) / elapsed * 100 for pid in pids}
                # CPU per message, publishing and delivering it everywhere
                # included (microseconds): what the machine's cores bound
                # the rate to, whatever else runs on them.
                per_msg = {pid: (c2[pid] - c0[pid]) / total * 1e6 for pid in pids}
                problems = (await totals(clients))["problems"] - before["problems"]
                lost = sum(total - len(s) for s in got.values())
                achieved = total / elapsed
                step = {
                    "target_per_s": rate,
                    "achieved_per_s": round(achieved, 1),
                    "lost": lost,
                    # CPU % of one core while publishing: the publishing
                    # agent, the others (mean), this bench process.
                    "cpu_pct": {
                        "publisher": round(cpu[pids[0]]),
                        "others_mean": round(statistics.mean(cpu[p] for p in pids[1:-1])),
                        "bench": round(cpu[pids[-1]]),
                    },
                    "cpu_us_per_msg": {
                        "publisher": round(per_msg[pids[0]]),
                        "others_mean": round(statistics.mean(per_msg[p] for p in pids[1:-1])),
                        "all_agents": round(sum(per_msg[p] for p in pids[:-1])),
                        "bench": round(per_msg[pids[-1]]),
                    },
                    # Drops and errors in the agents during the step
                    # (drop:subscriber: a subscriber's queue was full).
                    "problems": dict(problems),
                }
                results.append(step)
                print(
                    f"  rate {rate}/s: achieved {achieved:.0f}/s, lost {lost}, "
                    f"cpu % {step['cpu_pct']}, cpu us/msg {step['cpu_us_per_msg']}, "
                    f"problems {step['problems']}",
                    flush=True,
                )
                if lost or achieved < rate * 0.9:
                    break
        nursery.cancel_scope.cancel()
    ok = [r for r in results if r["lost"] == 0]
    return {
        "steps": results,
        "max_zero_loss_per_s": max((r["achieved_per_s"] for r in ok), default=0),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--messages", type=int, default=50, help="broadcasts per latency run")
    p.add_argument(
        "--intervals",
        type=float,
        nargs="+",
        default=[0.5, 0.1],
        help="seconds between broadcasts, one latency run each (0.5: one broadcast at a "
        "time through 100 agents; 0.1: several in flight at once)",
    )
    p.add_argument("--idle-window", type=float, default=20.0)
    p.add_argument("--rates", type=int, nargs="+", default=[100, 200, 400, 800, 1600])
    p.add_argument("--rate-seconds", type=float, default=5.0)
    p.add_argument("--skip-rate", action="store_true")
    p.add_argument("--rate-only", action="store_true", help="phase 5 only (its own 10 agents)")
    p.add_argument(
        "--publish-mode",
        choices=("pipelined", "single"),
        default="pipelined",
        help="phase 5: the client's pipelined publisher (batches, several in flight), or one "
        "`publish` request per message with 64 unanswered at most",
    )
    p.add_argument("--kills", type=int, default=1, help="agents SIGKILLed, one at a time")
    p.add_argument("--stops", type=int, default=0, help="agents SIGSTOPped after the kills")
    p.add_argument("--failure-only", action="store_true", help="converge, then failures only")
    p.add_argument(
        "--set",
        metavar="SECTION.NAME=VALUE",
        action="append",
        default=[],
        help="a protocol or transport parameter for every agent (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON at the end")
    args = p.parse_args()
    if not 1 < args.nodes <= 200:
        p.error("--nodes must be 2..200")
    if args.kills < 0 or args.stops < 0 or args.kills + args.stops > args.nodes - 2:
        p.error("--kills and --stops: at least 0 each, and two agents must survive")
    args.extra = []
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            p.error(f"--set {item!r}: expected SECTION.NAME=VALUE")
        section, _, name = key.partition(".")
        args.extra += [f"--{section}.{name.replace('_', '-')}", value]
    args.config_text = ""
    report: dict[str, Any] = {"nodes": args.nodes, "cpus": os.cpu_count(), "set": args.set}
    # What else the machine was doing: the figures mean little under load.
    report["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
    trio.run(main_phases, args, report)
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average before {report['loadavg_before']}, after {report['loadavg_after']}")
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
