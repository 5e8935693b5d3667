"""Benchmark: trio-overlay against HashiCorp Serf, on loopback, in one run.

Prints figures and the ratio overlay/Serf; never fails on time. Installs
Serf from the distribution's packages when it is missing (as root), and
reports both `serf version` (the Debian 0.9.4 package says 0.8.2-dev) and
`dpkg-query -W serf`.

For each N (`--sizes`, default 10, 50, 100) and each repetition
(`--repeat`, default 2), N Serf agents and N overlay agents run one system
at a time, the order alternating between repetitions, and each is measured
by the same code, in this order:

1. Join convergence. The N agents start alone; the bench then issues the
   N-1 joins back to back, as `serf join` does, each through the first
   agent (`--join-seeds random`: through a random earlier agent, the same
   draws for both systems): seconds from the first join issued until every
   agent lists all N alive. (With random seeds a burst leaves Serf with
   members that some agents learn of only at a push-pull, tens of seconds
   later; through one seed it converges in about a second.) Member lists are
   followed through each agent's stream: overlay's `monitor`; for Serf its
   RPC log stream at INFO, whose `EventMemberJoin/Failed/Leave` lines Serf
   writes when it changes the member's state (the agent's member *events*
   are coalesced for up to 3 s, its log is not).
2. Broadcast latency at 2/s and at 10/s, from rotating origins (each agent
   in turn, a shuffled order the same for both): Serf user events with
   coalescing off; overlay publishes on a topic. A payload carries its send
   time and 100 random bytes (Serf compresses its packets: random bytes
   give it nothing to gain). Latency is the time the bench reads the
   delivery from the agent's stream minus the send time: the same clock
   point for both, Serf's stream carrying no delivery time. p50/p99/max
   over every delivery of every repetition. The overlay's own delivery
   stamps (what bench/cluster.py reports) are in the JSON, for reference.
3. Idle cost over `--idle-window` seconds, after a settling pause: CPU %
   and RSS per agent from /proc (bench/cluster.py's idle phase), and bytes
   sent per second per agent as each agent counts what its protocol hands
   to its sockets: overlay's `stats` (every frame, + 4 bytes per stream
   frame), Serf's memberlist counters `memberlist.udp.sent` +
   `memberlist.tcp.sent` (after compression), read from the metrics dump
   the agent writes on SIGUSR1. Serf aggregates them in 10-second
   intervals, so its figure covers the whole intervals inside the window.
   Neither counts IP, UDP or TCP headers, nor the control/RPC connections.
4. SIGKILL of one agent: seconds until the first agent lists it failed, and
   until every other agent does. On loopback a killed agent's port refuses
   what is sent to it, which the overlay takes as a hint (issue 11) and
   memberlist does not; so then SIGSTOP of another (a silent member, the
   full suspicion path for both), measured the same way.
5. Graceful leave of a third agent (overlay `leave`, Serf `leave`): seconds
   until every other agent lists it left.

Then, once per repetition and system, on a separate 10-agent cluster: the
sustained publish rate, steps of increasing rate of 1 KiB random payloads
from one agent, each counted at a subscriber on every agent; the figure is
the highest step with nothing lost anywhere (bench/cluster.py's rate
phase, for both systems; Serf's `user_event_size_limit` is raised to 2048
to accept 1 KiB).

Both systems run with their defaults (Serf's `lan` profile). Targets of
issue 14: every time and cost ratio at most 1.0, RSS at most 2.0, the
publish rate at least 1.0; rotating-origin p99 under 100 ms at 50 agents.

Usage: python bench/vs_serf.py [--sizes 10,50,100] [--repeat 2] [--quick] [--json]
       --quick: N=10, one repetition, short phases (a few minutes).

The bench process follows 2N streams and shares the CPU with the agents:
on a small machine the figures are upper bounds, for both systems alike.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import msgpack
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cluster
from bench.cluster import CONVERGE_MAX, START_MAX, Proc, Views
from daemon.client import ControlClient
from daemon.control import ControlError

REPO = Path(__file__).resolve().parent.parent
SYSTEMS = ("overlay", "serf")
# Serf's in-memory metrics: 10-second intervals, one minute kept
# (cmd/serf/command/agent/command.go: NewInmemSink(10*time.Second, time.Minute)).
SERF_INTERVAL = 10.0
SERF_RETAINED = 60.0
# Serf refuses user events over 512 bytes (name + payload) by default.
SERF_EVENT_LIMIT = 2048
RATE_PAYLOAD = 1024
LATENCY_PADDING = 100
# Time for each agent's stream to deliver what is still in flight after
# the last publish of a step.
DRAIN_MAX = 10.0


# --------------------------------------------------------------------------
# Pure helpers (tests/test_bench_vs_serf.py)

_SERF_EVENT = re.compile(r"serf: EventMember(Join|Leave|Failed|Reap)(?: \(forced\))?: (\S+)")
_SERF_STATUS = {"Join": "alive", "Leave": "left", "Failed": "failed", "Reap": "reaped"}


def parse_serf_log(line: str) -> tuple[str, str] | None:
    """(member, status) from a Serf log line that changes a member's state:
    `... [INFO] serf: EventMemberJoin: s3 127.0.0.1` -> ("s3", "alive")."""
    m = _SERF_EVENT.search(line)
    if m is None:
        return None
    return m.group(2), _SERF_STATUS[m.group(1)]


def serf_members(body: dict[str, Any]) -> dict[str, str]:
    """name -> status from the body of Serf's `members` RPC answer."""
    return {m["Name"]: m["Status"] for m in body.get("Members") or []}


_DUMP_COUNTER = re.compile(r"^\[(?P<start>[^\]]+)\]\[C\] '(?P<name>[^']+)': .*?\bSum: (?P<sum>\S+)")


def _interval_start(text: str) -> float:
    """Unix time of a go-metrics interval stamp, `2026-11-26 21:48:20 +0000 UTC`."""
    stamp = " ".join(text.split()[:3])
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S %z").timestamp()


def serf_sent_bytes(
    lines: Iterable[str], t0: float, t1: float, now: float | None = None
) -> tuple[float, float]:
    """(bytes, seconds): what memberlist sent (UDP + TCP) over the whole
    10-second intervals inside [t0, t1] (Unix times), from the agent's
    SIGUSR1 metrics dump. An interval without a counter line sent nothing;
    intervals older than the sink keeps (a minute before `now`, the time of
    the dump) are left out rather than counted as zero."""
    oldest = -float("inf") if now is None else now - SERF_RETAINED + SERF_INTERVAL
    first = max(t0, oldest)
    start = -(-first // SERF_INTERVAL) * SERF_INTERVAL  # ceil to an interval
    starts: list[float] = []
    while start + SERF_INTERVAL <= t1:
        starts.append(start)
        start += SERF_INTERVAL
    sums = dict.fromkeys(starts, 0.0)
    for line in lines:
        m = _DUMP_COUNTER.match(line)
        if m is None:
            continue
        name = m.group("name").split(";")[0]  # labels, if any, after ';'
        if not name.endswith(("memberlist.udp.sent", "memberlist.tcp.sent")):
            continue
        begin = _interval_start(m.group("start"))
        if begin in sums:
            sums[begin] += float(m.group("sum"))
    return sum(sums.values()), len(starts) * SERF_INTERVAL


class SerfFrames:
    """The framing of Serf's RPC protocol, without IO.

    A request is a msgpack map {Command, Seq}, then a body for the commands
    that take one; the agent answers {Seq, Error}, then a body for the
    commands that return one (`members`, `join`). A stream (`monitor`,
    `stream`) is answered once with a bare header, then sends a header and a
    record per item. Objects arrive back to back, without lengths: which
    header has a body follows from its Seq. Fed bytes, it calls `answered`
    with each request's (header, body) and each stream's handler with its
    records.
    """

    def __init__(self, answered: Callable[[int, dict[str, Any], Any], None]) -> None:
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=16 << 20)
        self._answered = answered
        self._has_body: dict[int, bool] = {}  # requests awaiting an answer
        self._headers: dict[int, dict[str, Any]] = {}
        self.streams: dict[int, Callable[[dict[str, Any]], None]] = {}
        self._body_for: int | None = None
        self._seq = 0

    def request(
        self, command: str, body: Any = None, *, has_body: bool = False
    ) -> tuple[int, bytes]:
        self._seq += 1
        seq = self._seq
        self._has_body[seq] = has_body
        data = msgpack.packb({"Command": command, "Seq": seq}, use_bin_type=True)
        if body is not None:
            data += msgpack.packb(body, use_bin_type=True)
        return seq, data

    def feed(self, data: bytes) -> None:
        self._unpacker.feed(data)
        for obj in self._unpacker:
            self._on_object(obj)

    def _on_object(self, obj: Any) -> None:
        seq = self._body_for
        if seq is not None:
            self._body_for = None
            if seq in self._headers:
                self._answered(seq, self._headers.pop(seq), obj)
            elif seq in self.streams and isinstance(obj, dict):
                self.streams[seq](obj)
            return
        if not isinstance(obj, dict) or not isinstance(obj.get("Seq"), int):
            return
        seq = obj["Seq"]
        if seq in self._has_body:
            if self._has_body.pop(seq):
                self._headers[seq] = obj
                self._body_for = seq
            else:
                self._answered(seq, obj, None)
        elif seq in self.streams:
            self._body_for = seq


def join_seeds(how: str, n: int, rng: random.Random) -> list[int]:
    """The agent each agent joins through: the first one ("first", as
    `serf join ADDR` run on every host with the same address), or a random
    earlier one ("random", as bench/cluster.py starts its clusters)."""
    if how == "first":
        return [0] * n
    return [0] + [rng.randrange(i) for i in range(1, n)]


def median(values: Sequence[float | None]) -> float | None:
    done = [v for v in values if v is not None]
    return statistics.median(done) if done else None


def ratio(overlay: float | None, serf: float | None) -> float | None:
    if overlay is None or serf is None or serf == 0:
        return None
    return overlay / serf


def verdict(value: float | None, target: tuple[str, float] | None) -> str:
    """`<= 1.0 ok`, `<= 1.0 MISS`, or '' without a target or a value."""
    if target is None:
        return ""
    how, limit = target
    if value is None:
        return f"{how} {limit:g} ?"
    ok = value <= limit if how == "<=" else value >= limit if how == ">=" else value < limit
    return f"{how} {limit:g} {'ok' if ok else 'MISS'}"


@dataclass
class Row:
    label: str
    overlay: float | None
    serf: float | None
    target: tuple[str, float] | None = ("<=", 1.0)  # on the ratio
    digits: int = 2

    @property
    def ratio(self) -> float | None:
        return ratio(self.overlay, self.serf)


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def format_table(title: str, rows: Sequence[Row]) -> str:
    header = ["", "overlay", "Serf", "overlay/Serf", "target (ratio)"]
    body = [
        [
            r.label,
            _cell(r.overlay, r.digits),
            _cell(r.serf, r.digits),
            _cell(r.ratio, 2),
            verdict(r.ratio, r.target),
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    out = [title]
    for line in [header, *body]:
        cells = [line[0].ljust(widths[0])]
        cells += [line[i].rjust(widths[i]) for i in range(1, 4)]
        cells.append(line[4].ljust(widths[4]))
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def pooled_ms(runs: Sequence[dict[str, Any]], key: str) -> dict[str, float]:
    """p50/p99/max (ms) over the latencies of every run under `key`."""
    return cluster.ms([x for run in runs for x in run.get(key, [])])


def _lost(runs: list[dict[str, Any]], key: str) -> float | None:
    """Lost deliveries summed over the repetitions that measured them (a
    cluster that never converged skips the later phases)."""
    counts = [r[key] for r in runs if r.get(key) is not None]
    return float(sum(counts)) if counts else None


def summary_rows(n: int, runs: dict[str, list[dict[str, Any]]], join: str = "first") -> list[Row]:
    """The table's rows for one N: runs[system] is that system's list of
    repetitions (the figures of `run_once`)."""

    def med(system: str, *path: str) -> float | None:
        values = []
        for run in runs.get(system, []):
            v: Any = run
            for key in path:
                v = v.get(key) if isinstance(v, dict) else None
            values.append(v)
        return median(values)

    def both(label: str, *path: str, **kw: Any) -> Row:
        return Row(label, med("overlay", *path), med("serf", *path), **kw)

    rows = [both(f"join convergence ({join} seed), s", "join", "converge_s")]
    for rate in ("2", "10"):
        lat = {s: pooled_ms(runs.get(s, []), f"latency_{rate}") for s in SYSTEMS}
        for q in ("p50", "p99", "max"):
            rows.append(
                Row(f"broadcast {rate}/s {q}, ms", lat["overlay"][q], lat["serf"][q], digits=1)
            )
        stamped = pooled_ms(runs.get("overlay", []), f"latency_stamped_{rate}")
        for q in ("p50", "p99"):
            if stamped[q] == stamped[q]:  # not NaN: the overlay ran
                rows.append(
                    Row(f"  overlay's own stamps, {q}", stamped[q], None, target=None, digits=1)
                )
        rows.append(
            Row(
                f"broadcast {rate}/s lost deliveries",
                *(_lost(runs.get(s, []), f"lost_{rate}") for s in SYSTEMS),
                target=None,
                digits=0,
            )
        )
    rows += [
        both("SIGKILL -> failed first, s", "kill", "failed_first_s"),
        both("SIGKILL -> failed everywhere, s", "kill", "failed_everywhere_s"),
        both("SIGSTOP -> failed first, s", "stop", "failed_first_s"),
        both("SIGSTOP -> failed everywhere, s", "stop", "failed_everywhere_s"),
        both("leave -> left everywhere, s", "leave", "left_everywhere_s"),
        both("RSS per agent, MB", "idle", "rss_mb_mean", target=("<=", 2.0), digits=1),
        both("idle CPU per agent, %", "idle", "cpu_pct_mean"),
        both("bytes sent/s per agent (idle)", "idle", "bytes_per_s_mean", digits=0),
    ]
    return rows


def rate_rows(runs: dict[str, list[dict[str, Any]]]) -> list[Row]:
    values = {s: median([r["max_zero_loss_per_s"] for r in runs.get(s, [])]) for s in SYSTEMS}
    return [
        Row(
            "sustained publishes/s, 1 KiB, none lost",
            values["overlay"],
            values["serf"],
            target=(">=", 1.0),
            digits=0,
        )
    ]


# --------------------------------------------------------------------------
# Serf: install, versions, RPC client


def ensure_serf() -> dict[str, str]:
    """Install Serf from the distribution if missing; its versions."""
    if shutil.which("serf") is None:
        if os.geteuid() != 0:
            sys.exit("serf is not installed: run as root, or `apt-get install -y serf` first")
        print("installing serf from the distribution's packages ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "serf"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            subprocess.run(install, env=env, check=True, capture_output=True)
    version = subprocess.run(["serf", "version"], capture_output=True, text=True).stdout
    dpkg = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "serf"], capture_output=True, text=True
    ).stdout
    return {"serf_version": version.splitlines()[0] if version else "?", "dpkg": dpkg or "?"}


class SerfError(Exception):
    pass


class SerfRPC:
    """A client of one Serf agent's RPC port (see SerfFrames)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._frames = SerfFrames(self._answered)
        self._answers: dict[int, tuple[trio.Event, list[Any]]] = {}
        self._lock = trio.Lock()
        self.closed = trio.Event()

    def _answered(self, seq: int, header: dict[str, Any], body: Any) -> None:
        waiter = self._answers.pop(seq, None)
        if waiter is not None:
            waiter[1][:] = [header, body]
            waiter[0].set()

    async def read_loop(self) -> None:
        try:
            while data := await self._stream.receive_some(65536):
                self._frames.feed(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self.closed.set()
            for event, _ in self._answers.values():
                event.set()

    async def request(
        self,
        command: str,
        body: Any = None,
        *,
        has_body: bool = False,
        timeout: float = 10.0,
        stream: Callable[[dict[str, Any]], None] | None = None,
    ) -> Any:
        seq, data = self._frames.request(command, body, has_body=has_body)
        event, answer = trio.Event(), []
        self._answers[seq] = (event, answer)
        if stream is not None:
            self._frames.streams[seq] = stream
        try:
            if self.closed.is_set():
                raise SerfError(f"{command}: connection closed")
            async with self._lock:
                await self._stream.send_all(data)
            with trio.fail_after(timeout):
                await event.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise SerfError(f"{command}: {exc}") from None
        except trio.TooSlowError:
            raise SerfError(f"{command}: no answer within {timeout:g} s") from None
        finally:
            self._answers.pop(seq, None)
        if not answer:
            raise SerfError(f"{command}: connection closed")
        if answer[0].get("Error"):
            raise SerfError(f"{command}: {answer[0]['Error']}")
        return answer[1]


def free_port(taken: set[int]) -> int:
    """A loopback port free for both TCP and UDP now."""
    for _ in range(200):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            if port in taken:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        taken.add(port)
        return port
    raise RuntimeError("no free loopback port")


async def connect_when_up(address: str, timeout: float) -> trio.SocketStream:
    host, _, port = address.rpartition(":")
    with trio.fail_after(timeout):
        while True:
            try:
                return await trio.open_tcp_stream(host, int(port))
            except OSError:
                await trio.sleep(0.05)


# --------------------------------------------------------------------------
# The two systems, behind one interface

OnEvent = Callable[
    [str, bytes, float, float | None], None
]  # agent, payload, read at, agent's stamp


class Run(Protocol):
    """N agents of one system, running, followed by the bench."""

    procs: list[Proc]
    views: Views

    async def join(self, i: int, seed: int) -> None: ...
    async def publish(self, i: int, topic: str, payload: bytes) -> None: ...
    def subscribe(self, topic: str, on_event: OnEvent) -> Any: ...  # async context manager
    async def leave(self, i: int) -> None: ...
    async def traffic_mark(self) -> Any: ...
    async def traffic_rates(self, mark: Any, t0: float, t1: float) -> list[float]: ...


class OverlayRun:
    def __init__(self, procs: list[Proc], views: Views, clients: dict[str, ControlClient]) -> None:
        self.procs, self.views, self.clients = procs, views, clients

    def _client(self, i: int) -> ControlClient:
        return self.clients[self.procs[i].name]

    async def join(self, i: int, seed: int) -> None:
        await self._client(i).join([self.procs[seed].peer])

    async def publish(self, i: int, topic: str, payload: bytes) -> None:
        await self._client(i).publish(topic, payload)

    @asynccontextmanager
    async def subscribe(self, topic: str, on_event: OnEvent) -> AsyncIterator[None]:
        def on_delivery(name: str, ev: dict[str, Any]) -> None:
            on_event(name, ev["payload"], time.time(), ev["time"])

        async with trio.open_nursery() as subs:
            await cluster.subscribe_all(subs, self.clients, topic, on_delivery)
            try:
                yield
            finally:
                subs.cancel_scope.cancel()

    async def leave(self, i: int) -> None:
        await self._client(i).leave()

    async def _sent(self) -> dict[str, int]:
        out = {}
        for name, client in self.clients.items():
            stats = await client.stats()
            out[name] = sum(stats["bytes"]["sent"].values())
        return out

    async def traffic_mark(self) -> dict[str, int]:
        return await self._sent()

    async def traffic_rates(self, mark: dict[str, int], t0: float, t1: float) -> list[float]:
        after = await self._sent()
        return [(after[name] - mark[name]) / (t1 - t0) for name in after]


class OverlaySystem:
    name = "overlay"

    def __init__(self, tmp: Path) -> None:
        self.config = tmp / "agent.toml"
        self.config.write_text("")  # the defaults

    @asynccontextmanager
    async def run(self, n: int) -> AsyncIterator[OverlayRun]:
        async with trio.open_nursery() as nursery:
            async with cluster.cluster(nursery, n, self.config, "o", [], join=False) as procs:
                views = Views()
                for p in procs:
                    await nursery.start(views.follow, p)
                async with cluster.clients_for(procs) as clients:
                    yield OverlayRun(procs, views, clients)
            nursery.cancel_scope.cancel()


class SerfRun:
    def __init__(self, procs: list[Proc], views: Views, rpcs: dict[str, SerfRPC]) -> None:
        self.procs, self.views, self.rpcs = procs, views, rpcs
        self.handlers: dict[str, OnEvent] = {}
        self.dumps: dict[str, list[str]] = {p.name: [] for p in procs}

    def _rpc(self, i: int) -> SerfRPC:
        return self.rpcs[self.procs[i].name]

    def on_user_event(self, agent: str, record: dict[str, Any]) -> None:
        handler = self.handlers.get(record.get("Name", ""))
        if handler is not None:
            handler(agent, record.get("Payload") or b"", time.time(), None)

    async def join(self, i: int, seed: int) -> None:
        body = {"Existing": [self.procs[seed].peer], "Replay": False}
        await self._rpc(i).request("join", body, has_body=True)

    async def publish(self, i: int, topic: str, payload: bytes) -> None:
        body = {"Name": topic, "Payload": payload, "Coalesce": False}
        await self._rpc(i).request("event", body)

    @asynccontextmanager
    async def subscribe(self, topic: str, on_event: OnEvent) -> AsyncIterator[None]:
        # Every agent streams every user event from its start: route by name.
        self.handlers[topic] = on_event
        try:
            yield
        finally:
            self.handlers.pop(topic, None)

    async def leave(self, i: int) -> None:
        await self._rpc(i).request("leave", timeout=30)

    async def traffic_mark(self) -> None:
        return None

    async def traffic_rates(self, mark: None, t0: float, t1: float) -> list[float]:
        # The intervals counted end by t1: they are complete by now.
        live = [p for p in self.procs if p.proc.returncode is None]
        for p in live:
            self.dumps[p.name] = []
            p.proc.send_signal(signal.SIGUSR1)
        now = time.time()
        with trio.move_on_after(5):
            while not all(self.dumps[p.name] for p in live):
                await trio.sleep(0.05)
            await trio.sleep(0.3)  # the rest of each dump
        rates = []
        for p in live:
            sent, seconds = serf_sent_bytes(self.dumps[p.name], t0, t1, now)
            if seconds > 0:
                rates.append(sent / seconds)
        return rates


class SerfSystem:
    name = "serf"

    def __init__(self, tmp: Path) -> None:
        self.config = tmp / "serf.json"
        self.config.write_text(json.dumps({"user_event_size_limit": SERF_EVENT_LIMIT}))
        self.ports: set[int] = set()

    async def _serve(self, run: SerfRun, p: Proc, *, task_status: trio.TaskStatus[SerfRPC]) -> None:
        """The agent's RPC connection: its log stream feeds the views, its
        user-event stream the subscriptions, until the agent goes away."""
        stream = await connect_when_up(p.control, START_MAX)
        rpc = SerfRPC(stream)
        views = run.views

        def on_log(record: dict[str, Any]) -> None:
            change = parse_serf_log(record.get("Log", ""))
            if change is not None and change[1] != "reaped":
                views.update(p.name, {"name": change[0], "status": change[1]})

        async with stream, trio.open_nursery() as inner:
            inner.start_soon(rpc.read_loop)
            await rpc.request("handshake", {"Version": 1})
            await rpc.request("monitor", {"LogLevel": "INFO"}, stream=on_log)
            members = await rpc.request("members", has_body=True)
            for name, status in serf_members(members).items():
                views.update(p.name, {"name": name, "status": status})
            await rpc.request(
                "stream", {"Type": "user"}, stream=lambda rec: run.on_user_event(p.name, rec)
            )
            p.started_at = time.monotonic()
            task_status.started(rpc)
            await rpc.closed.wait()
            inner.cancel_scope.cancel()

    def _on_stderr(self, run: SerfRun, p: Proc, line: str) -> None:
        if "][C] '" in line:  # a counter of the metrics dump
            run.dumps[p.name].append(line)
        elif line.strip() and len(p.log) < 100:
            p.log.append(line)

    @asynccontextmanager
    async def run(self, n: int) -> AsyncIterator[SerfRun]:
        procs: list[Proc] = []
        run = SerfRun(procs, Views(), {})
        async with trio.open_nursery() as nursery:
            try:
                for i in range(n):
                    name = f"s{i}"
                    port, rpc_port = free_port(self.ports), free_port(self.ports)
                    cmd = ["serf", "agent", "-node", name, "-bind", f"127.0.0.1:{port}"]
                    cmd += ["-rpc-addr", f"127.0.0.1:{rpc_port}", "-config-file", str(self.config)]
                    proc = await trio.lowlevel.open_process(
                        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                    )
                    p = Proc(name, proc, f"127.0.0.1:{port}", f"127.0.0.1:{rpc_port}")
                    procs.append(p)  # before anything waits: the finally kills it
                    run.dumps[name] = []
                    assert proc.stderr is not None
                    nursery.start_soon(
                        cluster._lines, proc.stderr, lambda line, p=p: self._on_stderr(run, p, line)
                    )
                for p in procs:
                    run.rpcs[p.name] = await nursery.start(self._serve, run, p)
                yield run
            finally:
                for p in procs:
                    if p.proc.returncode is None:
                        p.proc.kill()
                with trio.move_on_after(10):
                    for p in procs:
                        await p.proc.wait()
                nursery.cancel_scope.cancel()
                self.ports.clear()


# --------------------------------------------------------------------------
# The phases, the same for both systems


def _names(run: Run) -> list[str]:
    return [p.name for p in run.procs]


async def join_phase(run: Run, seeds: list[int]) -> dict[str, Any]:
    names = _names(run)
    errors = 0
    t0 = time.monotonic()
    for i in range(1, len(names)):
        try:
            await run.join(i, seeds[i])
        except (SerfError, ControlError):
            errors += 1
    issued = time.monotonic() - t0
    done = await run.views.until(lambda: run.views.all_alive(names), CONVERGE_MAX)
    out: dict[str, Any] = {
        "issued_s": round(issued, 3),
        "converge_s": round(time.monotonic() - t0, 3) if done is not None else None,
        "join_errors": errors,
    }
    if done is None:
        out["gaps"] = run.views.gaps(names)
    return out


async def latency_phase(run: Run, per_s: float, messages: int, order: list[int]) -> dict[str, Any]:
    n = len(run.procs)
    topic = f"lat{per_s:g}"
    got: dict[int, dict[str, float]] = {}
    stamped: list[float] = []
    duplicates = errors = 0

    def on_event(agent: str, payload: bytes, read_at: float, agent_at: float | None) -> None:
        nonlocal duplicates
        if len(payload) < 12:
            return
        sent_at, index = struct.unpack(">dI", payload[:12])
        seen = got.setdefault(index, {})
        if agent in seen:
            duplicates += 1
            return
        seen[agent] = read_at - sent_at
        if agent_at is not None:
            stamped.append(agent_at - sent_at)

    async with run.subscribe(topic, on_event):
        start = trio.current_time()
        for i in range(messages):
            payload = struct.pack(">dI", time.time(), i) + os.urandom(LATENCY_PADDING)
            try:
                await run.publish(order[i % n], topic, payload)
            except (SerfError, ControlError):
                errors += 1
            await trio.sleep_until(start + (i + 1) / per_s)
        with trio.move_on_after(DRAIN_MAX):
            while sum(len(v) for v in got.values()) < messages * n:
                await trio.sleep(0.05)
    latencies = [x for v in got.values() for x in v.values()]
    delivered = len(latencies)
    out = {
        "latency": latencies,
        "stamped": stamped,
        "lost": messages * n - delivered,
        "duplicates": duplicates,
        "publish_errors": errors,
        "ms": cluster.ms(latencies),
    }
    if stamped:
        out["agent_stamped_ms"] = cluster.ms(stamped)
    return out


async def kill_phase(run: Run, victim: Proc, sig: int, gone: set[str]) -> dict[str, Any]:
    views = run.views
    others = [p.name for p in run.procs if p is not victim and p.name not in gone]
    views.first.pop((victim.name, "failed"), None)
    t0 = time.monotonic()
    victim.proc.send_signal(sig)
    everywhere = await views.until(
        lambda: all(views.views.get(a, {}).get(victim.name) == "failed" for a in others),
        CONVERGE_MAX,
    )
    first = views.first.get((victim.name, "failed"))
    return {
        "failed_first_s": round(first - t0, 3) if first is not None else None,
        "failed_everywhere_s": round(everywhere, 3) if everywhere is not None else None,
    }


async def leave_phase(run: Run, index: int, gone: set[str]) -> dict[str, Any]:
    views = run.views
    victim = run.procs[index]
    others = [p.name for p in run.procs if p is not victim and p.name not in gone]
    error: list[str] = []

    async def leave() -> None:
        try:
            await run.leave(index)
        except (SerfError, ControlError) as exc:
            error.append(str(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leave)
        everywhere = await views.until(
            lambda: all(views.views.get(a, {}).get(victim.name) == "left" for a in others),
            CONVERGE_MAX,
        )
        nursery.cancel_scope.cancel()
    out: dict[str, Any] = {
        "left_everywhere_s": round(everywhere, 3) if everywhere is not None else None
    }
    if error:
        out["error"] = error[0]
    return out


async def idle_phase(run: Run, window: float, settle: float) -> dict[str, Any]:
    await trio.sleep(settle)
    mark = await run.traffic_mark()
    t0 = time.time()
    report: dict[str, Any] = {}
    await cluster.idle_phase(argparse.Namespace(idle_window=window), run.procs, report)
    t1 = time.time()
    rates = await run.traffic_rates(mark, t0, t1)
    idle = report["idle"]
    idle["bytes_per_s_mean"] = round(statistics.mean(rates), 1) if rates else None
    idle["bytes_per_s_max"] = round(max(rates), 1) if rates else None
    return dict(idle)


async def run_once(
    system: OverlaySystem | SerfSystem, n: int, args: argparse.Namespace, rng: random.Random
) -> dict[str, Any]:
    """Every phase on N fresh agents of one system. `rng` draws the joins'
    seeds and the origins' order: the caller gives both systems the same."""
    seeds = join_seeds(args.join_seeds, n, rng)
    order = list(range(n))
    rng.shuffle(order)
    out: dict[str, Any] = {}
    t_start = time.monotonic()
    async with system.run(n) as run:
        out["start_s"] = round(time.monotonic() - t_start, 2)
        out["join"] = await join_phase(run, seeds)
        say(system.name, n, "join", out["join"])
        if out["join"]["converge_s"] is None:
            return out
        for per_s in (2, 10):
            lat = await latency_phase(run, per_s, args.messages, order)
            out[f"latency_{per_s}"] = lat.pop("latency")
            out[f"latency_stamped_{per_s}"] = lat.pop("stamped")
            out[f"lost_{per_s}"] = lat["lost"]
            out[f"broadcast_{per_s}"] = lat
            say(system.name, n, f"broadcast {per_s}/s", lat)
        out["idle"] = await idle_phase(run, args.idle_window, args.settle)
        say(system.name, n, "idle", out["idle"])
        killed, stopped = run.procs[-1], run.procs[-2]
        out["kill"] = await kill_phase(run, killed, signal.SIGKILL, set())
        say(system.name, n, "SIGKILL", out["kill"])
        await trio.sleep(2.0)  # let the verdict settle
        out["stop"] = await kill_phase(run, stopped, signal.SIGSTOP, {killed.name})
        say(system.name, n, "SIGSTOP", out["stop"])
        stopped.proc.kill()  # no refutation to disturb the leave
        await trio.sleep(2.0)
        gone = {killed.name, stopped.name}
        out["leave"] = await leave_phase(run, len(run.procs) - 3, gone)
        say(system.name, n, "leave", out["leave"])
        problems = [line for p in run.procs for line in p.log[:3]]
        if problems:
            out["agent_log_sample"] = problems[:10]
    return out


async def rate_once(
    system: OverlaySystem | SerfSystem, args: argparse.Namespace, rng: random.Random
) -> dict[str, Any]:
    """bench/cluster.py's rate phase, for either system: 1 KiB publishes
    from one agent at increasing rates until one is lost or the publisher
    falls behind."""
    n = 10
    seeds = join_seeds(args.join_seeds, n, rng)
    results: list[dict[str, Any]] = []
    async with system.run(n) as run:
        join = await join_phase(run, seeds)
        if join["converge_s"] is None:
            return {"steps": [], "max_zero_loss_per_s": None, "join": join}
        await trio.sleep(args.settle)
        names = _names(run)
        for rate in args.rates:
            topic = f"rate{rate}"
            got: dict[str, set[int]] = {name: set() for name in names}
            errors = 0

            def on_event(
                agent: str, payload: bytes, *_: Any, got: dict[str, set[int]] = got
            ) -> None:
                got[agent].add(struct.unpack(">I", payload[:4])[0])

            async def publish_one(
                i: int, limiter: trio.CapacityLimiter, topic: str = topic
            ) -> None:
                nonlocal errors
                try:
                    payload = struct.pack(">I", i) + os.urandom(RATE_PAYLOAD - 4)
                    await run.publish(0, topic, payload)
                except (SerfError, ControlError):
                    errors += 1
                finally:
                    limiter.release_on_behalf_of(i)

            total = int(rate * args.rate_seconds)
            async with run.subscribe(topic, on_event):
                limiter = trio.CapacityLimiter(64)  # requests in flight, as bench/cluster.py
                t0 = time.monotonic()
                async with trio.open_nursery() as pubs:
                    for i in range(total):
                        delay = t0 + i / rate - time.monotonic()
                        if delay > 0:
                            await trio.sleep(delay)
                        await limiter.acquire_on_behalf_of(i)
                        pubs.start_soon(publish_one, i, limiter)
                elapsed = time.monotonic() - t0
                with trio.move_on_after(DRAIN_MAX):
                    while any(len(s) < total for s in got.values()):
                        await trio.sleep(0.05)
            lost = sum(total - len(s) for s in got.values())
            achieved = total / elapsed
            step = {
                "target_per_s": rate,
                "achieved_per_s": round(achieved, 1),
                "lost": lost,
                "publish_errors": errors,
            }
            results.append(step)
            say(system.name, n, f"rate {rate}/s", step)
            if lost or errors or achieved < rate * 0.9:
                break
    ok = [r for r in results if r["lost"] == 0 and r["publish_errors"] == 0]
    return {
        "steps": results,
        "max_zero_loss_per_s": max((r["achieved_per_s"] for r in ok), default=0),
    }


def say(system: str, n: int, what: str, figures: dict[str, Any]) -> None:
    brief = {k: v for k, v in figures.items() if not isinstance(v, list)}
    print(f"  [{system} N={n}] {what}: {brief}", flush=True)


# --------------------------------------------------------------------------
# Main


def machine() -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gb": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "overlay_commit": commit or "?",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


async def main_async(args: argparse.Namespace, report: dict[str, Any]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="vs-serf-"))
    try:
        await _main(args, report, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _main(args: argparse.Namespace, report: dict[str, Any], tmp: Path) -> None:
    systems = {"overlay": OverlaySystem(tmp), "serf": SerfSystem(tmp)}
    report["runs"] = {}
    for n in args.sizes:
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}
        for rep in range(args.repeat):
            order = SYSTEMS if rep % 2 == 0 else SYSTEMS[::-1]
            for s in order:
                print(f"N={n}, repetition {rep + 1}/{args.repeat}: {s}", flush=True)
                # The same draws (join seeds, origins) for both systems.
                rng = random.Random(f"{args.seed}-{n}-{rep}")
                runs[s].append(await run_once(systems[s], n, args, rng))
        report["runs"][str(n)] = runs
        table = format_table(
            f"\nN = {n}: {args.repeat} repetition(s) per system, alternating; medians of the "
            "repetitions,\nlatency percentiles over every delivery of every repetition",
            summary_rows(n, runs, args.join_seeds),
        )
        print(table, flush=True)
        if n == 50:
            p99 = {s: pooled_ms(runs["overlay"], f"latency_{s}")["p99"] for s in ("2", "10")}
            print(
                "target at 50 agents, overlay rotating-origin p99 < 100 ms: "
                + ", ".join(f"{s}/s {v:g} ms {'ok' if v < 100 else 'MISS'}" for s, v in p99.items())
            )
        report.setdefault("tables", []).append(table)
        report.setdefault("summary", {})[str(n)] = [
            {**asdict(r), "ratio": r.ratio} for r in summary_rows(n, runs, args.join_seeds)
        ]
    if not args.skip_rate:
        rates: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}
        for rep in range(args.repeat):
            order = SYSTEMS if rep % 2 == 0 else SYSTEMS[::-1]
            for s in order:
                print(f"publish rate, 10 agents, repetition {rep + 1}/{args.repeat}: {s}")
                rng = random.Random(f"{args.seed}-rate-{rep}")
                rates[s].append(await rate_once(systems[s], args, rng))
        report["rate"] = rates
        report.setdefault("summary", {})["rate"] = [
            {**asdict(r), "ratio": r.ratio} for r in rate_rows(rates)
        ]
        table = format_table(
            f"\nsustained publish rate, 10 agents, one publisher (median of {args.repeat})",
            rate_rows(rates),
        )
        print(table, flush=True)
        report.setdefault("tables", []).append(table)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="10,50,100", help="cluster sizes, comma-separated")
    p.add_argument("--repeat", type=int, default=2, help="repetitions of each configuration")
    p.add_argument("--messages", type=int, default=50, help="broadcasts per latency run")
    p.add_argument("--idle-window", type=float, default=30.0, help="seconds (20..50)")
    p.add_argument("--settle", type=float, default=5.0, help="quiet seconds before the idle window")
    p.add_argument(
        "--rates",
        default="5,10,25,50,100,200,400,1000,2000,4000",
        help="publish rate steps, per s",
    )
    p.add_argument("--rate-seconds", type=float, default=5.0, help="seconds per rate step")
    p.add_argument("--skip-rate", action="store_true")
    p.add_argument(
        "--join-seeds",
        choices=("first", "random"),
        default="first",
        help="each agent joins through the first agent (default), or a random earlier one",
    )
    p.add_argument("--seed", default="14", help="seed of the joins' and the origins' draws")
    p.add_argument("--quick", action="store_true", help="N=10, one repetition, short phases")
    p.add_argument("--json", action="store_true", help="print the report as JSON at the end")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.repeat, args.messages = "10", 1, 20
        args.idle_window, args.settle = 20.0, 2.0
        args.rates, args.rate_seconds = "5,25,100,400,1600", 2.0
    try:
        args.sizes = [int(x) for x in args.sizes.split(",")]
        args.rates = [int(x) for x in args.rates.split(",")]
    except ValueError:
        p.error("--sizes and --rates: comma-separated integers")
    if any(not 4 <= n <= 200 for n in args.sizes):
        p.error("--sizes: 4..200 agents (one to kill, one to stop, one to leave, one to watch)")
    if not 20 <= args.idle_window <= 50:
        # At least one whole 10-second interval of Serf's counters inside
        # the window, and none older than the minute Serf keeps.
        p.error("--idle-window: 20..50 seconds")
    if args.repeat < 1 or args.messages < 1:
        p.error("--repeat and --messages: at least 1")
    report: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        **ensure_serf(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    m = report["machine"]
    print(
        f"{m['date']}, {m['cpu']}, {m['cpus']} CPUs, {m['memory_gb']} GB, Linux {m['kernel']}, "
        f"Python {m['python']}, overlay {m['overlay_commit']}; serf version: "
        f"{report['serf_version']}, dpkg-query -W serf: {report['dpkg']}\n"
        f"command: {report['command']}; load average {report['loadavg_before']}",
        flush=True,
    )
    trio.run(main_async, args, report)
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average before {report['loadavg_before']}, after {report['loadavg_after']}")
    if args.json:
        print(json.dumps(without_samples(report), indent=2, default=str))


def without_samples(obj: Any) -> Any:
    """The report without the raw latency samples (their percentiles stay)."""
    if isinstance(obj, dict):
        return {k: without_samples(v) for k, v in obj.items() if not str(k).startswith("latency_")}
    if isinstance(obj, list):
        return [without_samples(v) for v in obj]
    return obj


if __name__ == "__main__":
    main()
