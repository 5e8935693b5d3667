"""The attacker's kit: real `overlay agent` processes on loopback, sockets
on other loopback source addresses, frames built without the codec's checks,
and a relay that records what a member sends.

Rules of this module, for every hostile test:

- Agents are real processes (`python -m daemon.cli agent`), bound to
  127.0.0.1 with a unix control socket in the test's temporary folder and
  JSON logs on stderr; the test watches them from outside: exit status,
  `/proc` (RSS, file descriptors), the control API (members, stats,
  subscriptions) and their log lines.
- The attacker sends from 127.0.0.66 (`ATTACKER_HOST`) unless a test says
  otherwise: another source address on the same loopback, nothing leaves
  the machine. Every node id the attacker writes names a 127.0.0.0/8
  address, so an agent that dials or pings it stays on loopback too.
- Frames are built by `frame()`, straight into msgpack from the message
  classes' field order, never through `overlay.codec.encode` nor the
  classes' constructors: a value the codec or `NodeId` refuses (an
  incarnation at the limit, a NUL in a host, a name instead of an address)
  still goes out as the attacker wants it. `tests/hostile/test_kit.py`
  checks that `frame()` gives byte for byte what the codec gives for
  ordinary values, so the attacks keep speaking the agents' protocol.
- Every wait is bounded, every request to an agent has a timeout, and every
  process started here is killed when its `open_cluster` block ends,
  whatever happened inside.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import signal
import socket as stdsocket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import trio

from daemon.client import ControlClient, open_client
from daemon.control import ControlError
from overlay import codec, messages

# The attacker's source address: another address on the loopback.
ATTACKER_HOST = "127.0.0.66"
# Waits for a cluster to form or a condition to hold.
WAIT = 30.0
# Every request to an agent's control API.
REQUEST_TIMEOUT = 5.0
# The largest incarnation or sequence number the codec accepts.
INT_MAX = 2**63 - 1

# Member status codes on the wire (overlay.messages.MemberState).
ALIVE, SUSPECT, FAILED, LEFT = 0, 1, 2, 3

# Protocol periods shortened so that a loopback cluster converges, probes
# and repairs in a fraction of a second (as in tests/test_cli_cluster.py).
BASE_CONFIG: dict[str, dict[str, Any]] = {
    "agent": {"leave_grace": 0.5},
    "swim": {
        "probe_period": 0.2,
        "probe_timeout": 0.1,
        "push_pull_period": 2.0,
        "reconnect_period": 1.0,
    },
    "hyparview": {
        "shuffle_period": 2.0,
        "repair_period": 0.4,
        "join_retry_initial": 0.2,
        "neighbor_timeout": 1.0,
    },
    "plumtree": {"anti_entropy_period": 1.0},
}

NodeTuple = tuple[str, str, int]
Addr = tuple[str, int]


# --------------------------------------------------------------------------
# Frames


_TAG_OF: dict[type, int] = {cls: tag for tag, cls in messages.TAGS.items()}


def _wire(value: Any) -> Any:
    """A Python value as msgpack should carry it: records and tuples as
    arrays, dataclass messages as the array of their fields."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [_wire(getattr(value, f.name)) for f in dataclasses.fields(value)]
    if isinstance(value, tuple | list):
        return [_wire(v) for v in value]
    raise TypeError(f"cannot put {type(value).__name__} on the wire")


def fields_of(cls: type, values: Mapping[str, Any]) -> list[Any]:
    """The wire fields of message class `cls`, in order, from `values` and
    the class's defaults (no constructor runs: nothing is validated)."""
    out: list[Any] = []
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    for f in dataclasses.fields(cls):
        if f.name in values:
            v = values[f.name]
        elif f.default is not dataclasses.MISSING:
            v = f.default
        elif f.default_factory is not dataclasses.MISSING:
            v = f.default_factory()
        else:
            raise TypeError(f"{cls.__name__}.{f.name} needs a value")
        out.append(_wire(v))
    return out


def frame(sender: Sequence[Any], cls: type, **values: Any) -> bytes:
    """One frame of message `cls` from `sender` ([name, host, port]), with
    whatever values the attacker chooses."""
    body = [codec.PROTOCOL_VERSION, list(sender), _TAG_OF[cls], *fields_of(cls, values)]
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


def state(
    node: Sequence[Any],
    incarnation: int,
    status: int = ALIVE,
    tags: Mapping[str, str] | None = None,
    accuser: Sequence[Any] | None = None,
) -> list[Any]:
    """A member state ([node, incarnation, status, tags, accuser])."""
    return [list(node), incarnation, status, dict(tags or {}), list(accuser) if accuser else None]


def msg_id(origin: str, epoch: int, seq: int) -> list[Any]:
    return [origin, epoch, seq]


def prefixed(data: bytes) -> bytes:
    """A frame as it goes on a stream: 4-byte big-endian length first."""
    return struct.pack(">I", len(data)) + data


# --------------------------------------------------------------------------
# Agent processes


def toml_text(config: Mapping[str, Mapping[str, Any]]) -> str:
    lines: list[str] = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, int | float):
                text = repr(value)
            else:
                text = json.dumps(str(value))
            lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def merged(*configs: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for config in configs:
        for section, values in (config or {}).items():
            out.setdefault(section, {}).update(values)
    return out


@dataclass
class AgentProc:
    """One `overlay agent` process, as the test sees it from outside."""

    name: str
    proc: trio.Process
    control: str  # unix:PATH
    lines: list[dict[str, Any]] = field(default_factory=list)
    peer: str = ""  # the advertised HOST:PORT, from its "agent started" line
    client: ControlClient | None = None
    stopped: bool = False  # SIGSTOPped by the test

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def host(self) -> str:
        return self.peer.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.peer.rpartition(":")[2])

    @property
    def addr(self) -> Addr:
        return (self.host, self.port)

    @property
    def node(self) -> NodeTuple:
        """Its node id as it goes on the wire."""
        return (self.name, self.host, self.port)

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def rss_kb(self) -> int:
        """Resident memory, from /proc (0 once the process is gone)."""
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def fds(self) -> int:
        """Open file descriptors, from /proc."""
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return 0

    def tail(self, n: int = 15) -> str:
        """Its last log lines (a traceback comes as plain lines)."""
        out = []
        for record in self.lines[-n:]:
            out.append(record.get("msg", "") if set(record) == {"msg"} else json.dumps(record))
        return "\n".join(out)

    def describe(self) -> str:
        code = self.proc.returncode
        state = "running" if code is None else f"exited with code {code}"
        return f"agent {self.name} (pid {self.pid}) {state}; last log lines:\n{self.tail()}"

    def logged(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [r for r in self.lines if pred(r)]


async def _read_lines(stream: trio.abc.ReceiveStream, on_line: Callable[[str], None]) -> None:
    buf = b""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        async for chunk in stream:
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                on_line(line.decode("utf-8", "replace"))


class Cluster:
    """Agent processes started by one test, and a control connection to each."""

    def __init__(
        self,
        nursery: trio.Nursery,
        tmp: Path,
        config: Mapping[str, Mapping[str, Any]],
        key_file: Path | None,
    ) -> None:
        self.nursery = nursery
        self.tmp = tmp
        self.config_file = tmp / "agent.toml"
        self.config_file.write_text(toml_text(config))
        self.key_file = key_file
        self.agents: list[AgentProc] = []

    def __getitem__(self, i: int) -> AgentProc:
        return self.agents[i]

    def by_name(self, name: str) -> AgentProc:
        return next(a for a in self.agents if a.name == name)

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.agents]

    async def spawn(
        self,
        name: str,
        *,
        join: str | None = None,
        bind: str = "127.0.0.1:0",
        extra: Sequence[str] = (),
        connect: bool = True,
    ) -> AgentProc:
        """Start an agent and wait for its "agent started" line; with
        `connect`, open its control connection."""
        sock = self.tmp / f"{name}.sock"
        args = ["agent", "--bind", bind, "--control", f"unix:{sock}", "--name", name]
        args += ["--config", str(self.config_file), "--log-json"]
        if self.key_file is not None:
            args += ["--key-file", str(self.key_file)]
        if join:
            args += ["--join", join]
        args += list(extra)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("OVERLAY_CONTROL", None)
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "daemon.cli", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        agent = AgentProc(name, proc, f"unix:{sock}")
        self.agents.append(agent)
        started = trio.Event()

        def on_line(line: str) -> None:
            try:
                record = json.loads(line)
            except ValueError:
                record = {"msg": line}
            if not isinstance(record, dict):
                record = {"msg": line}
            agent.lines.append(record)
            if record.get("msg") == "agent started" and not started.is_set():
                agent.peer = str(record["advertise"])
                started.set()

        assert proc.stderr is not None
        self.nursery.start_soon(_read_lines, proc.stderr, on_line)
        with trio.move_on_after(WAIT):
            while not started.is_set() and agent.running:
                with trio.move_on_after(0.1):
                    await started.wait()
        if not started.is_set():
            raise AssertionError(f"agent {name} did not start: {agent.describe()}")
        if connect:
            await self.connect(agent)
        return agent

    async def connect(self, agent: AgentProc) -> None:
        """Open `agent`'s control connection (from the test's own task: the
        connection lives until the cluster closes)."""
        path = Path(agent.control.removeprefix("unix:"))
        with trio.move_on_after(WAIT):
            while agent.running and not path.exists():
                await trio.sleep(0.05)
        if not path.exists():
            raise AssertionError(f"no control socket: {agent.describe()}")
        # The connection lives in a task of the cluster's nursery, whatever
        # the test opens and closes meanwhile.
        agent.client = await self.nursery.start(self._hold_client, agent)

    async def _hold_client(
        self, agent: AgentProc, task_status: trio.TaskStatus[ControlClient]
    ) -> None:
        started = False
        try:
            async with open_client(agent.control, timeout=REQUEST_TIMEOUT) as client:
                task_status.started(client)
                started = True
                await trio.sleep_forever()
        except Exception:
            if not started:
                raise

    async def start(self, n: int, prefix: str = "n") -> list[AgentProc]:
        """`n` agents: the first, then the others joining through it."""
        first = await self.spawn(f"{prefix}0")
        rest = []
        async with trio.open_nursery() as nursery:

            async def one(i: int) -> None:
                rest.append(await self.spawn(f"{prefix}{i}", join=first.peer, connect=False))

            for i in range(1, n):
                nursery.start_soon(one, i)
        rest.sort(key=lambda a: int(a.name[len(prefix) :]))
        for agent in rest:
            await self.connect(agent)
        self.agents = [a for a in self.agents if a not in rest] + rest
        return [first, *rest]

    # ------------------------------------------------------------- queries

    async def request(self, agent: AgentProc, op: str, **args: Any) -> Any:
        """A control request, bounded; a dead agent is an AssertionError
        that says how it died."""
        if agent.client is None:
            raise AssertionError(f"no control connection to {agent.name}")
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                return await agent.client.request(op, **args)
        except (ControlError, trio.TooSlowError) as exc:
            await trio.sleep(0.2)  # let the exit status and last lines arrive
            raise AssertionError(
                f"{op} at {agent.name} failed ({exc}): {agent.describe()}"
            ) from None

    async def members(self, agent: AgentProc) -> dict[str, dict[str, Any]]:
        """name -> {name, addr, status, incarnation, tags}, as `agent` lists them."""
        result = await self.request(agent, "members")
        return {m["name"]: m for m in result}

    async def stats(self, agent: AgentProc) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(agent, "stats")
        return result

    async def publish(self, agent: AgentProc, topic: str, payload: bytes) -> None:
        await self.request(agent, "publish", topic=topic, payload=payload)

    def live(self) -> list[AgentProc]:
        return [a for a in self.agents if a.running and not a.stopped]

    def check_running(self, agents: Iterable[AgentProc] | None = None) -> None:
        """AssertionError naming every agent process that has exited."""
        dead = [a for a in (agents if agents is not None else self.agents) if not a.running]
        if dead:
            raise AssertionError("\n\n".join(a.describe() for a in dead))

    async def all_alive(self, names: Iterable[str] | None = None) -> bool:
        """Every running agent lists every one of `names` alive."""
        want = list(names) if names is not None else self.names
        for agent in self.live():
            view = await self.members(agent)
            if any(view.get(n, {}).get("status") != "alive" for n in want):
                return False
        return True

    async def converge(self, names: Iterable[str] | None = None, timeout: float = WAIT) -> None:
        want = list(names) if names is not None else self.names
        await until(lambda: self.all_alive(want), timeout, f"all of {want} alive everywhere")

    async def views(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {a.name: await self.members(a) for a in self.live()}

    async def refusals(self) -> dict[str, int]:
        """Per running agent, everything its stats count as refused."""
        return {a.name: refusals(await self.stats(a)) for a in self.live()}

    @contextlib.asynccontextmanager
    async def subscription(
        self, agent: AgentProc, topic: str
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Deliveries on `topic` at `agent`, collected into a list as they come."""
        got: list[dict[str, Any]] = []
        assert agent.client is not None
        with trio.fail_after(REQUEST_TIMEOUT):
            cm = agent.client.subscribe(topic)
            events = await cm.__aenter__()

        async def collect() -> None:
            with contextlib.suppress(ControlError):
                async for event in events:
                    got.append(event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            try:
                yield got
            finally:
                nursery.cancel_scope.cancel()
                with trio.move_on_after(1), contextlib.suppress(Exception):
                    await cm.__aexit__(None, None, None)

    def signal(self, agent: AgentProc, sig: int) -> None:
        if agent.running:
            agent.proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            agent.stopped = True
        elif sig == signal.SIGCONT:
            agent.stopped = False


@contextlib.asynccontextmanager
async def open_cluster(
    tmp: Path,
    n: int = 4,
    *,
    config: Mapping[str, Mapping[str, Any]] | None = None,
    key: bytes | None = None,
    converge: bool = True,
) -> AsyncIterator[Cluster]:
    """`n` agent processes on 127.0.0.1 (none if n is 0), joined into one
    cluster, with the short protocol periods of `BASE_CONFIG` changed by
    `config`; with `key`, a cluster key. Every process is killed at the end."""
    key_file = None
    if key is not None:
        import base64

        key_file = tmp / "cluster.key"
        key_file.write_text(base64.b64encode(key).decode() + "\n")
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, tmp, merged(BASE_CONFIG, config), key_file)
        try:
            if n:
                await cluster.start(n)
                if converge:
                    await cluster.converge()
            yield cluster
        finally:
            for agent in cluster.agents:
                if agent.running:
                    with contextlib.suppress(ProcessLookupError):
                        agent.proc.kill()
            with trio.move_on_after(5):
                for agent in cluster.agents:
                    await agent.proc.wait()
            # The control connections and log readers end with the nursery.
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------
# Waiting and counting


async def until(
    predicate: Callable[[], Awaitable[bool] | bool], timeout: float, what: str, every: float = 0.1
) -> None:
    """Poll `predicate` (plain or async) until it holds; AssertionError
    after `timeout` s."""
    with trio.move_on_after(timeout):
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await trio.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# Words of a counter's name (at any depth of `stats`) that say it counts
# input refused. Exact names are the fixers' to choose; `bad_frames` and
# `drops` count as a whole.
_REFUSAL_WORDS = (
    "refus",
    "reject",
    "replay",
    "forg",
    "spoof",
    "denied",
    "invalid",
    "bad",
    "limit",
    "unauth",
    "stranger",
    "member",
    "ignored",
    "untrusted",
    "not_allowed",
    "disallowed",
    "throttl",
)
_NOT_COUNTERS = ("messages", "bytes", "rates", "views", "members", "queues", "uptime")


def refusals(stats: Mapping[str, Any]) -> int:
    """The sum of every counter in an agent's stats that counts refused
    input: all of `bad_frames` and `drops`, and any number whose key path
    has a word like "refused", "rejected", "replay" or "invalid"."""
    total = 0

    def walk(value: Any, path: str, counted: bool) -> None:
        nonlocal total
        if isinstance(value, Mapping):
            for k, v in value.items():
                key = str(k).lower()
                walk(v, f"{path}.{key}", counted or any(w in key for w in _REFUSAL_WORDS))
        elif isinstance(value, int) and not isinstance(value, bool) and counted:
            total += value

    for key, value in stats.items():
        if key in _NOT_COUNTERS:
            continue
        walk(value, key, key in ("bad_frames", "drops") or any(w in key for w in _REFUSAL_WORDS))
    return total


def replays(stats: Mapping[str, Any]) -> int:
    """Frames refused as replays: `bad_frames` reasons ending in ":replay"."""
    bad = stats.get("bad_frames", {}) or {}
    return sum(v for k, v in bad.items() if str(k).endswith(":replay"))


# --------------------------------------------------------------------------
# The attacker's sockets


class Datagrams:
    """A UDP socket on the attacker's address; `node` is an id naming it."""

    def __init__(self, host: str = ATTACKER_HOST, name: str = "mallory") -> None:
        self.sock = trio.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
        self.host = host
        self.name = name
        self.port = 0

    async def __aenter__(self) -> Datagrams:
        await self.sock.bind((self.host, 0))
        self.port = self.sock.getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sock.close()

    @property
    def node(self) -> NodeTuple:
        return (self.name, self.host, self.port)

    async def send(self, to: Addr, data: bytes) -> None:
        with contextlib.suppress(OSError):  # an ICMP error from an earlier datagram
            await self.sock.sendto(data, to)

    async def receive(self, timeout: float) -> list[bytes]:
        """Every datagram that arrives within `timeout` s."""
        got: list[bytes] = []
        with trio.move_on_after(timeout):
            while True:
                try:
                    data, _ = await self.sock.recvfrom(70000)
                except OSError:
                    continue
                got.append(data)
        return got


async def connect(to: Addr, source: str = ATTACKER_HOST) -> trio.SocketStream:
    with trio.fail_after(REQUEST_TIMEOUT):
        return await trio.open_tcp_stream(to[0], to[1], local_address=source)


async def read_all(stream: trio.SocketStream, timeout: float, into: bytearray) -> bool:
    """Append what arrives on `stream` for `timeout` s to `into`; True if
    the other end closed it meanwhile."""
    with trio.move_on_after(timeout):
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return True
                into += data
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return True
    return False


def split_frames(data: bytes) -> list[bytes]:
    """Length-prefixed frames from a recorded stream (stops at the first
    length that does not fit)."""
    out = []
    pos = 0
    while pos + 4 <= len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        if size == 0 or pos + 4 + size > len(data):
            break
        out.append(bytes(data[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    return out


def decoded(frames: Iterable[bytes]) -> list[tuple[Any, Any]]:
    """(sender, message) of each frame the codec can read; others skipped."""
    out = []
    for f in frames:
        try:
            out.append(codec.decode(f, 1 << 20))
        except codec.DecodeError:
            continue
    return out


def free_port(host: str = "127.0.0.1") -> int:
    """A port number free for both TCP and UDP on `host` (for an agent's
    --bind when the test must know it in advance)."""
    for _ in range(50):
        tcp = stdsocket.socket(stdsocket.AF_INET, stdsocket.SOCK_STREAM)
        udp = stdsocket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
        try:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            udp.bind((host, port))
            return int(port)
        except OSError:
            continue
        finally:
            tcp.close()
            udp.close()
    raise RuntimeError("no free port")


class Tap:
    """A relay in front of one agent, as an attacker on the path sees it:
    TCP and UDP on one port number, forwarded to `target`, recording the
    bytes each client sends (`streams`) and every datagram (`datagrams`).
    The agent advertises the tap's address, so its peers reach it through
    the tap; the tap forwards bytes and never reads a key."""

    def __init__(self, target: Addr, host: str = "127.0.0.1") -> None:
        self.target = target
        self.host = host
        self.port = 0
        self.streams: list[bytearray] = []
        self.datagrams: list[bytes] = []
        self._listener: trio.SocketListener | None = None
        self._udp: trio.socket.SocketType | None = None

    async def bind(self) -> int:
        for _ in range(20):
            listeners = await trio.open_tcp_listeners(0, host=self.host)
            listener = listeners[0]
            port = listener.socket.getsockname()[1]
            udp = trio.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
            try:
                await udp.bind((self.host, port))
            except OSError:
                udp.close()
                await listener.aclose()
                continue
            self._listener, self._udp, self.port = listener, udp, int(port)
            return self.port
        raise RuntimeError("no port for the tap")

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self._listener is not None and self._udp is not None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._udp_loop)
                nursery.start_soon(self._accept_loop, nursery)
                task_status.started()
        finally:
            self._udp.close()
            await self._listener.aclose()

    async def _udp_loop(self) -> None:
        assert self._udp is not None
        while True:
            try:
                data, _ = await self._udp.recvfrom(70000)
            except OSError:
                continue
            self.datagrams.append(data)
            with contextlib.suppress(OSError):
                await self._udp.sendto(data, self.target)

    async def _accept_loop(self, nursery: trio.Nursery) -> None:
        assert self._listener is not None
        while True:
            try:
                client = await self._listener.accept()
            except OSError:
                await trio.sleep(0.05)
                continue
            record = bytearray()
            self.streams.append(record)
            nursery.start_soon(self._relay, client, record)

    async def _relay(self, client: trio.SocketStream, record: bytearray) -> None:
        try:
            server = await trio.open_tcp_stream(*self.target)
        except OSError:
            await client.aclose()
            return

        async def pump(
            src: trio.SocketStream, dst: trio.SocketStream, rec: bytearray | None
        ) -> None:
            try:
                while data := await src.receive_some(65536):
                    if rec is not None:
                        rec += data
                    await dst.send_all(data)
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await dst.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, server, record)
                nursery.start_soon(pump, server, client, None)
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()
                await server.aclose()


class Puppet:
    """A member the attacker runs itself, from its own address. In a
    cluster without a key anyone may join: the puppet joins the way an agent
    does (JOIN and a push-pull over a stream to a seed), answers probes,
    push-pulls and NEIGHBOR requests with the least an agent would, and
    ignores the rest. Every agent then lists it alive, and the attacker
    speaks through its sockets as a member, from the very address its node
    id names, so no sender or source check can tell it from an honest one:
    only the protocol's own rules can refuse what it says."""

    def __init__(self, name: str = "mallory", host: str = ATTACKER_HOST) -> None:
        self.name = name
        self.host = host
        self.port = 0
        self.incarnation = 0
        self.received: list[tuple[Any, Any]] = []  # (sender, message) over streams
        self._listener: trio.SocketListener | None = None
        self._udp: trio.socket.SocketType | None = None
        self._nursery: trio.Nursery | None = None

    @property
    def node(self) -> NodeTuple:
        return (self.name, self.host, self.port)

    def _frame(self, cls: type, **values: Any) -> bytes:
        return frame(self.node, cls, **values)

    def own_state(self) -> list[Any]:
        return state(self.node, self.incarnation, ALIVE)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        for _ in range(20):
            listeners = await trio.open_tcp_listeners(0, host=self.host)
            listener = listeners[0]
            port = listener.socket.getsockname()[1]
            udp = trio.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
            try:
                await udp.bind((self.host, port))
            except OSError:
                udp.close()
                await listener.aclose()
                continue
            break
        else:
            raise RuntimeError("no port for the puppet")
        self._listener, self._udp, self.port = listener, udp, int(port)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._udp_loop)
                nursery.start_soon(self._accept_loop)
                task_status.started()
        finally:
            udp.close()
            await listener.aclose()

    async def send_udp(self, to: Addr, data: bytes) -> None:
        assert self._udp is not None
        with contextlib.suppress(OSError):
            await self._udp.sendto(data, to)

    async def _udp_loop(self) -> None:
        from overlay.messages import Ack, Ping

        assert self._udp is not None
        while True:
            try:
                data, _ = await self._udp.recvfrom(70000)
            except OSError:
                continue
            try:
                sender, msg = codec.decode(data, 1 << 20)
            except codec.DecodeError:
                continue
            if isinstance(msg, Ping):
                await self.send_udp(
                    (sender.host, sender.port), self._frame(Ack, seq=msg.seq, updates=[])
                )

    async def _accept_loop(self) -> None:
        assert self._listener is not None and self._nursery is not None
        while True:
            try:
                stream = await self._listener.accept()
            except OSError:
                await trio.sleep(0.05)
                continue
            self._nursery.start_soon(self._serve, stream)

    async def _serve(self, stream: trio.SocketStream, first: bytes = b"") -> None:
        """Answer what an agent expects of a member on a stream."""
        from overlay.messages import Neighbor, NeighborReply, PushPull

        buf = bytearray()
        try:
            if first:
                await stream.send_all(first)
            while data := await stream.receive_some(65536):
                buf += data
                frames = split_frames(bytes(buf))
                consumed = sum(4 + len(f) for f in frames)
                del buf[:consumed]
                for sender, msg in decoded(frames):
                    self.received.append((sender, msg))
                    if isinstance(msg, PushPull) and not msg.reply and msg.part + 1 == msg.parts:
                        answer = self._frame(
                            PushPull, reply=True, part=0, parts=1, states=[self.own_state()]
                        )
                        await stream.send_all(prefixed(answer))
                    elif isinstance(msg, Neighbor) and not msg.join:
                        reply = self._frame(NeighborReply, accepted=True, nonce=msg.nonce)
                        await stream.send_all(prefixed(reply))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def join(self, seed: Addr) -> None:
        """JOIN through `seed` and push-pull with it, as a new agent does."""
        from overlay.messages import Join, PushPull

        assert self._nursery is not None
        stream = await connect(seed, self.host)
        hello = prefixed(self._frame(Join)) + prefixed(
            self._frame(PushPull, reply=False, part=0, parts=1, states=[self.own_state()])
        )
        self._nursery.start_soon(self._serve, stream, hello)


async def send_quietly(stream: trio.SocketStream, data: bytes) -> bool:
    """Send on an attacker's stream; False if the agent has closed it (a
    refusal, which is fine)."""
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return False
    return True
