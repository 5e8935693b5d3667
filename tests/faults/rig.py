"""A rig of real `overlay agent` processes, each in its own network namespace.

Layout (all of it created by the rig, nothing on the host's own network)::

    namespace ovrig-<pid>-<tag>-br           namespace ovrig-<pid>-<tag>-n1
    +-----------------------------+          +---------------------------+
    | br0 (bridge)                |          | eth0 10.199.X.1/24        |
    |   v1 --------- veth ------------------ |   overlay agent :7946     |
    |   v2 --------- veth ---- ...           | lo                        |
    | nftables: table bridge rig  |          +---------------------------+
    |   chain forward (hook fwd)  |          ... one namespace per host
    +-----------------------------+

* One namespace per host, with `eth0` holding an address of a private /24
  (10.199.X.0/24, X picked per run) and `lo`; the other end of its veth pair
  is a port of the bridge `br0`, which lives in a namespace of its own. The
  host's namespace gets nothing but the unix control sockets of the agents
  (files in the rig's folder), so traffic never leaves the rig.
* No ARP: every host gets permanent neighbour entries for the whole /24
  (MAC addresses are derived from the host's number). The kernel's ARP
  table is shared by all namespaces and holds at most gc_thresh3 (1024)
  learnt entries, so 50 hosts that each talk to 49 others overflow it
  ("neighbor table overflow!" in dmesg) and the last hosts started reach
  nobody; permanent entries are not counted against that limit (Linux
  4.19+). It also keeps ARP out of every fault: only IP is dropped.
* Names carry the creating pid and a random tag (`ovrig-<pid>-<tag>-...`),
  so runs never collide. `Rig.open()` first removes what an earlier run left
  behind: namespaces with the rig's prefix whose creating pid is gone (their
  processes are killed by pid first, from `ip netns pids`). Nothing without
  the prefix is touched, nor anything of a live run.
* Faults on the network are nftables rules in one bridge-family table in
  the bridge's namespace, chain hooked on `forward`, so they act on frames
  crossing the bridge between two hosts, as a switch would drop them (a drop
  in the sender's OUTPUT chain would fail its `sendto`, which no lossy
  network does). One-way cut A->B: `ip saddr A ip daddr B counter drop`;
  random loss: `ether type ip numgen random mod 100 < P counter drop` (ARP
  is left alone, so neighbours never vanish for reasons foreign to the
  test); a partition is both directions between groups. The counters show
  that a fault did drop something (`Rig.counted()`). Every change is one
  `nft -f` transaction that flushes the chain and writes the rules of the
  faults now in force. Heal = flush the chain (leaving only the counting
  rules below, which accept).
* Process faults: SIGKILL (crash), SIGSTOP/SIGCONT (frozen, sockets stay
  open), SIGTERM (graceful leave), always by pid. `ip netns exec` execs the
  command, so the pid the rig holds is the agent's own.
* Timeline: every fault, heal, start and signal is recorded with its Unix
  time (`time.time()`, the clock the agents' `--log-json` lines use), so a
  log line can be judged against what the network was at that instant:
  `Rig.reachable(a, b, t)` says whether a and b could exchange messages at
  time t (both processes running, and each reaches the other through the
  links not cut at t, possibly relayed by third hosts: a one-way cut A->B
  leaves A and B reachable, as SWIM's indirect probes go around it).

First packet across a healed cut
--------------------------------
`heal()` replaces the drop rules, in the same nft transaction, with
`counter accept` rules matching exactly the traffic the cut was dropping
(per source host: `ip saddr A ip daddr { B, C } counter accept`), so no
cross-cut packet goes uncounted. `first_cross_packet()` then reads those
counters (`nft -j list chain`, ~10 ms each) every 50 ms until one is
non-zero: the first cross-cut packet crossed the bridge between the last
poll that read zero and the first that read non-zero. Both bounds are kept
(`Heal.first_lo`, `Heal.first_hi`); durations "from the first cross-cut
packet" are measured from `first_lo`, the earlier bound, so they are never
flattered by the polling (at most one poll, ~60 ms, too long). The counter
is in the kernel's forwarding path, so it cannot miss a packet, unlike a
log or a trace listener that has to be subscribed in time. Durations "from
the heal command" are measured from `Heal.t_done`, when the nft
transaction that lifted the cut had returned.

Agent logs (`--log-json` on stderr) go to `<dir>/<name>.log` (a restarted
agent appends to the same file); `member_changes()` parses the "member
changed" lines into `Change` records (time, observer, member, status,
incarnation) and `verdicts()` judges each suspect/failed against the
timeline.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

PREFIX = "ovrig-"
REPO = Path(__file__).resolve().parents[2]
PORT = 7946
TABLE = "rig"
CHAIN = "forward"
POLL = 0.05  # seconds between counter reads while waiting for a cross-cut packet
CMD_TIMEOUT = 20.0  # any ip/nft command, at most


class RigError(RuntimeError):
    """A rig command failed."""


def unavailable() -> str | None:
    """Why the rig cannot run here (None: it can): root, `ip` and `nft`, and
    the right to create a network namespace."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "fault tests need root (network namespaces, nftables)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"fault tests need `{tool}` ({package}; `make fault-deps` installs it as root)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    done = subprocess.run(
        ["ip", "netns", "add", probe], capture_output=True, text=True, timeout=CMD_TIMEOUT
    )
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    try:
        table = (
            f"table bridge {TABLE} {{ chain {CHAIN} {{ type filter hook forward priority 0; }}; }}"
        )
        done = subprocess.run(
            ["ip", "netns", "exec", probe, "nft", "-f", "-"],
            input=table,
            capture_output=True,
            text=True,
            timeout=CMD_TIMEOUT,
        )
        if done.returncode != 0:
            return f"nftables bridge family unavailable: {done.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=CMD_TIMEOUT)
    return None


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
    """Run a command (bounded in time); its stdout, or RigError."""
    try:
        done = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=CMD_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise RigError(f"timed out: {' '.join(argv)}") from None
    if check and done.returncode != 0:
        raise RigError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_names() -> list[str]:
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_netns(ns: str) -> None:
    """SIGKILL every process in namespace `ns` (by pid), then delete it."""
    for _ in range(5):
        pids = [int(p) for p in run(["ip", "netns", "pids", ns], check=False).split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    run(["ip", "netns", "del", ns], check=False)


def clean_stale() -> list[str]:
    """Remove namespaces an earlier rig left behind: only those named with
    the rig's prefix whose creating process is gone. Returns their names."""
    removed = []
    for ns in _netns_names():
        m = re.match(re.escape(PREFIX) + r"(\d+)-", ns)
        if m and not _pid_alive(int(m.group(1))):
            _kill_netns(ns)
            removed.append(ns)
    return removed


# ---------------------------------------------------------------------------
# Hosts, agents, the fault timeline


@dataclass
class Host:
    name: str
    ns: str
    ip: str
    port_name: str  # the bridge-side veth


@dataclass
class Agent:
    host: Host
    name: str
    control: str  # unix:PATH
    log_path: Path
    popen: subprocess.Popen[bytes]
    started: float  # Unix time of the start command
    addr: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def member(self) -> str:
        return f"{self.name}@{self.addr}"


@dataclass(frozen=True)
class NetState:
    """The network from time `t` on: cut directed host pairs, loss %."""

    t: float
    cut: frozenset[tuple[str, str]] = frozenset()
    loss: int = 0


@dataclass
class Heal:
    """A heal: when it was commanded and done, and the first cross-cut
    packet (between `first_lo` and `first_hi`; None until seen)."""

    t_command: float
    t_done: float
    pairs: frozenset[tuple[str, str]]
    first_lo: float | None = None
    first_hi: float | None = None
    packets: int = 0


@dataclass(frozen=True)
class Change:
    """One "member changed" line of an agent's log."""

    t: float
    observer: str
    member: str  # the member's name
    status: str
    incarnation: int


@dataclass(frozen=True)
class Verdict:
    """A suspect/failed change, judged against the rig's timeline."""

    change: Change
    reachable: bool  # the observer could reach the member at that moment
    # ... and could also during the `window` seconds before it (see verdicts())
    reachable_before: bool

    def as_dict(self, t0: float) -> dict[str, Any]:
        c = self.change
        return {
            "t": round(c.t - t0, 3),
            "observer": c.observer,
            "member": c.member,
            "status": c.status,
            "incarnation": c.incarnation,
        }


@dataclass
class Rig:
    """Hosts in namespaces on a bridge, faults, agents. Use as a context
    manager, or call `open()` and (always, in a `finally`) `close()`."""

    workdir: Path
    subnet: int = field(default_factory=lambda: random.randrange(1, 255))
    hosts: dict[str, Host] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)
    net: list[NetState] = field(default_factory=list)
    # per host: (time, "running"|"stopped"|"dead")
    procs: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    heals: list[Heal] = field(default_factory=list)
    extra_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tag: str = field(default_factory=lambda: f"{os.getpid()}-{random.randrange(16**4):04x}")
    _opened: bool = False

    # ------------------------------------------------------------ lifecycle

    @property
    def bridge_ns(self) -> str:
        return f"{PREFIX}{self.tag}-br"

    def open(self) -> Rig:
        self.workdir.mkdir(parents=True, exist_ok=True)
        clean_stale()
        self._opened = True
        ns = self.bridge_ns
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", ns, "link", "set", "br0", "up"])
        self.nft(
            f"add table bridge {TABLE}\n"
            f"add chain bridge {TABLE} {CHAIN} "
            "{ type filter hook forward priority 0; policy accept; }\n"
        )
        self.net.append(NetState(time.time()))
        return self

    def close(self) -> None:
        """Kill every agent and helper process (by pid), delete every
        namespace of this rig. Safe to call twice, and on a half-built rig."""
        for agent in self.agents.values():
            self._reap(agent.popen)
        for popen in self.extra_procs:
            self._reap(popen)
        if not self._opened:
            return
        for host in self.hosts.values():
            _kill_netns(host.ns)
        _kill_netns(self.bridge_ns)
        self._opened = False

    @staticmethod
    def _reap(popen: subprocess.Popen[bytes]) -> None:
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, signal.SIGCONT)
                os.kill(popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5)

    def __enter__(self) -> Rig:
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- hosts

    def add_host(self, name: str) -> Host:
        """A namespace with eth0 (10.199.X.i/24) on the bridge, and lo."""
        if name in self.hosts:
            raise RigError(f"host {name} exists")
        index = len(self.hosts) + 1
        if index > 250:
            raise RigError("at most 250 hosts")
        host = Host(
            name, f"{PREFIX}{self.tag}-{name}", f"10.199.{self.subnet}.{index}", f"v{index}"
        )
        self.hosts[name] = host  # before creating it: close() deletes it on failure
        run(["ip", "netns", "add", host.ns])
        br = self.bridge_ns
        veth = ["type", "veth", "peer", "name", "eth0", "address", self.mac(index)]
        run(["ip", "-n", br, "link", "add", host.port_name, *veth, "netns", host.ns])
        run(["ip", "-n", br, "link", "set", host.port_name, "master", "br0", "up"])
        # Static neighbours for the whole /24 (see the module's docstring).
        neigh = "".join(
            f"neigh replace 10.199.{self.subnet}.{i} lladdr {self.mac(i)} dev eth0 nud permanent\n"
            for i in range(1, 251)
            if i != index
        )
        batch = f"addr add {host.ip}/24 dev eth0\nlink set eth0 up\nlink set lo up\n{neigh}"
        run(["ip", "-n", host.ns, "-batch", "-"], input=batch)
        return host

    def mac(self, index: int) -> str:
        """The MAC address of host number `index` (1..250) of this rig."""
        return f"02:00:0a:c7:{self.subnet:02x}:{index:02x}"

    def exec_in(self, host: str | Host, argv: Sequence[str], *, check: bool = True) -> str:
        """Run a command in a host's namespace (bounded); its stdout."""
        h = self.hosts[host] if isinstance(host, str) else host
        return run(["ip", "netns", "exec", h.ns, *argv], check=check)

    def popen_in(self, host: str | Host, argv: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
        """Start a process in a host's namespace; close() kills it."""
        h = self.hosts[host] if isinstance(host, str) else host
        popen = subprocess.Popen(["ip", "netns", "exec", h.ns, *argv], start_new_session=True, **kw)
        self.extra_procs.append(popen)
        return popen

    def host_of(self, ip: str) -> Host:
        for host in self.hosts.values():
            if host.ip == ip:
                return host
        raise KeyError(ip)

    # --------------------------------------------------------------- agents

    def start_agent(
        self,
        host: str,
        *,
        join: Sequence[str] = (),
        config: Path | None = None,
        extra: Sequence[str] = (),
    ) -> Agent:
        """Start `overlay agent` in `host`'s namespace (on eth0's address,
        port 7946), joining `join` (host names or HOST:PORT). Returns at
        once: `await wait_started(agent)` for its "agent started" line."""
        h = self.hosts[host]
        name = host  # one agent per host, named after it (the timeline's key)
        if name in self.agents and self.agents[name].popen.poll() is None:
            raise RigError(f"agent {name} is running")
        sock = self.workdir / f"{name}.sock"
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        log_path = self.workdir / f"{name}.log"
        seeds = [f"{self.hosts[j].ip}:{PORT}" if j in self.hosts else j for j in join]
        argv = [sys.executable, "-m", "daemon.cli", "agent", "--bind", f"{h.ip}:{PORT}"]
        argv += ["--name", name, "--control", f"unix:{sock}", "--log-json"]
        if seeds:
            argv += ["--join", *seeds]
        if config is not None:
            argv += ["--config", str(config)]
        argv += list(extra)
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", h.ns, *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=REPO,
                start_new_session=True,  # a ^C at the terminal is for the test, not the agents
            )
        agent = Agent(h, name, f"unix:{sock}", log_path, popen, time.time())
        self.agents[name] = agent
        self._proc_event(name, "running")
        return agent

    async def wait_started(self, agent: Agent, timeout: float = 30.0) -> None:
        """Until the agent's log has "agent started" (for this process)."""
        with trio.fail_after(timeout):
            while True:
                if agent.popen.poll() is not None:
                    raise RigError(f"agent {agent.name} exited: {self.tail(agent)}")
                for rec in _json_lines(agent.log_path):
                    if rec.get("msg") == "agent started" and rec.get("ts", 0) >= agent.started - 1:
                        agent.addr = str(rec["advertise"])
                        return
                await trio.sleep(0.05)

    def tail(self, agent: Agent, lines: int = 5) -> str:
        try:
            return " | ".join(agent.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _signal(self, name: str, sig: signal.Signals, state: str) -> float:
        agent = self.agents[name]
        t = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent.pid, sig)
        self._proc_event(name, state, t)
        return t

    def kill(self, *names: str) -> float:
        """SIGKILL these agents (as close to at once as signals go)."""
        t = time.time()
        for name in names:
            self._signal(name, signal.SIGKILL, "dead")
        for name in names:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.agents[name].popen.wait(timeout=5)
        return t

    def stop(self, *names: str) -> float:
        t = time.time()
        for name in names:
            self._signal(name, signal.SIGSTOP, "stopped")
        return t

    def cont(self, *names: str) -> float:
        t = time.time()
        for name in names:
            self._signal(name, signal.SIGCONT, "running")
        return t

    def term(self, *names: str) -> float:
        """SIGTERM: a graceful leave (the process exits by itself)."""
        t = time.time()
        for name in names:
            self._signal(name, signal.SIGTERM, "leaving")
        return t

    def _proc_event(self, name: str, state: str, t: float | None = None) -> None:
        self.procs.setdefault(name, []).append((time.time() if t is None else t, state))

    def rss(self, name: str) -> int | None:
        """Resident set size of an agent, bytes (None when not running)."""
        agent = self.agents.get(name)
        if agent is None or agent.popen.poll() is not None:
            return None
        try:
            for line in Path(f"/proc/{agent.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    # --------------------------------------------------------------- faults

    def nft(self, script: str) -> str:
        """Run an nft script (one transaction) in the bridge's namespace."""
        return run(["ip", "netns", "exec", self.bridge_ns, "nft", "-f", "-"], input=script)

    def _ips(self, names: Iterable[str]) -> str:
        return "{ " + ", ".join(sorted(self.hosts[n].ip for n in names)) + " }"

    def _rules(self, cut: frozenset[tuple[str, str]], loss: int, verdict: str) -> str:
        rules = []
        by_src: dict[str, list[str]] = {}
        for src, dst in sorted(cut):
            by_src.setdefault(src, []).append(dst)
        for src, dsts in by_src.items():
            rules.append(
                f"add rule bridge {TABLE} {CHAIN} ip saddr {self.hosts[src].ip} "
                f"ip daddr {self._ips(dsts)} {verdict}"
            )
        if loss:
            rules.append(
                f"add rule bridge {TABLE} {CHAIN} ether type ip numgen random mod 100 < {loss} "
                "counter drop"
            )
        return "\n".join(rules)

    def _apply(self, cut: frozenset[tuple[str, str]], loss: int) -> float:
        script = f"flush chain bridge {TABLE} {CHAIN}\n"
        script += self._rules(cut, loss, "counter drop") + "\n"
        self.nft(script)
        t = time.time()
        self.net.append(NetState(t, cut, loss))
        return t

    @property
    def state(self) -> NetState:
        return self.net[-1]

    def one_way(self, a: str, b: str) -> float:
        """Drop everything from a to b (b to a still flows). Adds to the
        faults in place; returns the time the rule was in force."""
        return self._apply(self.state.cut | {(a, b)}, self.state.loss)

    def partition(self, groups: Sequence[Iterable[str]]) -> float:
        """Cut both directions between every two groups; hosts in no group
        form one more group."""
        sets = [set(g) for g in groups]
        rest = set(self.hosts) - set().union(*sets)
        if rest:
            sets.append(rest)
        cut = {
            (a, b)
            for i, ga in enumerate(sets)
            for j, gb in enumerate(sets)
            if i != j
            for a in ga
            for b in gb
        }
        return self._apply(self.state.cut | frozenset(cut), self.state.loss)

    def isolate(self, name: str) -> float:
        return self.partition([[name]])

    def loss(self, percent: int) -> float:
        """Drop this percentage of IP frames crossing the bridge, at random
        (ARP untouched)."""
        if not 0 <= percent <= 100:
            raise ValueError(percent)
        return self._apply(self.state.cut, percent)

    def heal(self) -> Heal:
        """Remove every fault at once; the traffic the cuts were dropping is
        counted from now on (see the module's docstring)."""
        cut = self.state.cut
        t_command = time.time()
        script = f"flush chain bridge {TABLE} {CHAIN}\n" + self._rules(cut, 0, "counter accept")
        self.nft(script + "\n")
        t_done = time.time()
        self.net.append(NetState(t_done))
        heal = Heal(t_command, t_done, cut)
        self.heals.append(heal)
        return heal

    def counted(self) -> int:
        """Packets counted by the chain's rules now: dropped by the faults
        in force, or (after a heal) crossed the healed cut."""
        nft = ["nft", "-j", "list", "chain", "bridge", TABLE, CHAIN]
        out = run(["ip", "netns", "exec", self.bridge_ns, *nft])
        total = 0
        for item in json.loads(out).get("nftables", []):
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    total += int(expr["counter"]["packets"])
        return total

    async def first_cross_packet(self, heal: Heal, timeout: float) -> Heal:
        """Poll the heal's counters every 50 ms (at most `timeout` s) until
        one has counted a packet; fills heal.first_lo/first_hi."""
        if not heal.pairs:
            heal.first_lo = heal.first_hi = heal.t_done
            return heal
        last_zero = heal.t_command
        deadline = trio.current_time() + timeout
        for _ in range(int(timeout / POLL) + 2):
            before = time.time()
            packets = await trio.to_thread.run_sync(self.counted)
            if packets:
                heal.first_lo, heal.first_hi, heal.packets = last_zero, time.time(), packets
                return heal
            last_zero = before
            if trio.current_time() >= deadline:
                break
            await trio.sleep(POLL)
        return heal

    # ---------------------------------------------------------- the timeline

    def _proc_state(self, name: str, t: float) -> str:
        state = "absent"
        for when, what in self.procs.get(name, []):
            if when > t:
                break
            state = what
        return state

    def _net_at(self, t: float) -> NetState:
        current = self.net[0]
        for ns in self.net:
            if ns.t > t:
                break
            current = ns
        return current

    def reachable(self, a: str, b: str, t: float) -> bool:
        """Could a and b exchange messages at time t: both processes
        running, and each reaches the other over links not cut at t
        (relayed through running hosts if need be)."""
        up = ("running", "leaving")
        if self._proc_state(a, t) not in up or self._proc_state(b, t) not in up:
            return False
        cut = self._net_at(t).cut
        if not cut:
            return True
        running = {n for n in self.hosts if self._proc_state(n, t) in up}

        def reaches(x: str, y: str) -> bool:
            seen, todo = {x}, [x]
            while todo:
                u = todo.pop()
                if u == y:
                    return True
                for v in running - seen:
                    if (u, v) not in cut:
                        seen.add(v)
                        todo.append(v)
            return False

        return reaches(a, b) and reaches(b, a)

    def reachable_during(self, a: str, b: str, start: float, end: float) -> bool:
        """reachable() at every change of the timeline within [start, end]."""
        times = {start, end}
        times.update(ns.t for ns in self.net if start <= ns.t <= end)
        for n in (a, b):
            times.update(t for t, _ in self.procs.get(n, []) if start <= t <= end)
        return all(self.reachable(a, b, t) for t in times)

    # ------------------------------------------------------------------ logs

    def member_changes(self, since: float = 0.0) -> list[Change]:
        """Every "member changed" line of every agent's log, by time."""
        out = []
        for agent in self.agents.values():
            for rec in _json_lines(agent.log_path):
                if rec.get("msg") != "member changed" or rec.get("ts", 0) < since:
                    continue
                member = str(rec.get("member", "")).split("@", 1)[0]
                out.append(
                    Change(
                        float(rec["ts"]),
                        agent.name,
                        member,
                        str(rec.get("status")),
                        int(rec.get("incarnation", 0)),
                    )
                )
        out.sort(key=lambda c: c.t)
        return out

    def log_records(self, name: str, since: float = 0.0) -> Iterator[dict[str, Any]]:
        for rec in _json_lines(self.agents[name].log_path):
            if rec.get("ts", 0) >= since:
                yield rec

    def verdicts(self, since: float = 0.0, window: float = 30.0) -> list[Verdict]:
        """Every suspect/failed change since `since`, judged: `reachable`
        (the issue's false verdict: the observer could reach the member at
        that moment) and `reachable_before` (... and during the `window`
        seconds before it: no outage the verdict could be a late echo of)."""
        return self.judge(self.member_changes(since), window)

    def judge(self, changes: Iterable[Change], window: float = 30.0) -> list[Verdict]:
        """The suspect/failed changes among `changes`, judged (verdicts())."""
        out = []
        for c in changes:
            if c.status not in ("suspect", "failed") or c.member not in self.hosts:
                continue
            now = self.reachable(c.observer, c.member, c.t)
            before = now and self.reachable_during(c.observer, c.member, c.t - window, c.t)
            out.append(Verdict(c, now, before))
        return out


class ChangeLog:
    """The "member changed" lines of a rig's agents, read incrementally
    (each call parses only what the logs gained since the last one): for
    long runs, where re-reading every log would cost the agents CPU."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.changes: list[Change] = []
        self._offsets: dict[str, int] = {}

    def update(self) -> list[Change]:
        """Read what is new; returns the new changes (also appended to
        `changes`, which stays sorted by time per observer only)."""
        new = []
        for agent in list(self.rig.agents.values()):
            offset = self._offsets.get(agent.name, 0)
            try:
                with open(agent.log_path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except OSError:
                continue
            end = data.rfind(b"\n") + 1  # complete lines only
            self._offsets[agent.name] = offset + end
            for line in data[:end].splitlines():
                if b'"member changed"' not in line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                new.append(
                    Change(
                        float(rec["ts"]),
                        agent.name,
                        str(rec.get("member", "")).split("@", 1)[0],
                        str(rec.get("status")),
                        int(rec.get("incarnation", 0)),
                    )
                )
        new.sort(key=lambda c: c.t)
        self.changes.extend(new)
        return new


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return
    for line in data.splitlines():
        if not line.startswith(b"{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line still being written
        if isinstance(rec, dict):
            yield rec


def statuses_at(changes: Sequence[Change], t: float) -> dict[tuple[str, str], tuple[str, float]]:
    """(observer, member) -> (status, since when) as of time t, from logs."""
    out: dict[tuple[str, str], tuple[str, float]] = {}
    for c in changes:
        if c.t > t:
            break
        out[(c.observer, c.member)] = (c.status, c.t)
    return out
