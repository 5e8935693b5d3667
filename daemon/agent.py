"""The agent: one protocol node run over real sockets, and the embedded API.

Rules of this module: it executes the node's outputs and feeds it inputs;
every protocol decision stays in `overlay/`. It reads the node's state only
through its read-only views (`views()`, `members()`, `stats()`), to answer
queries. It acts on what the node says: `LeaveComplete` ends a leave,
`Isolated` starts and stops resolving the seeds again, `check_publish`
refuses a publish. The control API and the metrics endpoint are not the
agent's: `daemon.service` runs them next to it (as `overlay agent` does).

Theory of operation
-------------------
One *driver* task owns the node. Everything that happens reaches it through
one bounded channel, one item at a time: frames decoded by the transport's
connection tasks and UDP loop (`daemon.transport`), expired timers from the
timer task (`daemon.timers`), requests from the application or the control
API. For each item the driver calls `node.handle(input, trio.current_time())`
and executes the outputs in order, without awaiting anything: sends go to
bounded per-peer queues with `send_nowait`, timers into the timer heap,
deliveries into bounded subscriber queues (full: dropped and counted). So
the node needs no lock, and trio's `MockClock` drives an agent in tests too.

Embedding::

    async with Agent(AgentSettings(bind=("127.0.0.1", 0), join=("10.0.0.1:7946",))) as agent:
        await agent.publish("news", b"hello")
        async with agent.subscribe("news") as sub:
            async for msg in sub:
                ...

Leaving the `async with` normally leaves the cluster gracefully; leaving it
with an exception stops the agent at once. A publish made before the agent
has joined waits in it and goes out once joined (`joined`, `wait_joined`;
examples/embedded.py runs as is).
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import math
import os
import random
import socket as stdsocket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import trio

from daemon.addresses import format_addr
from daemon.discovery import SeedSpec, parse_seed, resolve_seeds
from daemon.errors import naming
from daemon.framing import FrameCodec, PlainFrames
from daemon.handlers import EventHandlers
from daemon.handlers import build as build_handlers
from daemon.logs import Throttle, event
from daemon.metrics import Metrics, sample_forever
from daemon.notices import SeedWatch, warn_no_key
from daemon.queries import Handler, QueryHandle, QueryRequest, QueryResult, QueryService
from daemon.snapshot import Snapshot
from daemon.snapshot import State as SnapshotState

# Re-exported: the embedded API's types, long imported from here.
from daemon.subscriptions import Delivery as Delivery
from daemon.subscriptions import Member as Member
from daemon.subscriptions import Subscription as Subscription
from daemon.timers import Expired, TimerQueue
from daemon.transport import Addr, Transport, TransportSettings
from overlay import codec
from overlay.backoff import Backoff
from overlay.codec import EncodeError
from overlay.config import Config
from overlay.ids import NodeId, wire_id_ok
from overlay.io import (
    CancelTimer,
    CloseConnection,
    ConnectFailed,
    ConnectionDown,
    ConnectionUp,
    Deliver,
    Input,
    Isolated,
    JoinCluster,
    Leave,
    LeaveComplete,
    MemberChanged,
    NameConflict,
    NeighborDown,
    NeighborUp,
    Output,
    PeerRefused,
    Publish,
    PublishRejected,
    QueryAnswer,
    QueryAsked,
    QueryDone,
    Received,
    Send,
    SetTimer,
    TimerFired,
    seed_id,
)
from overlay.node import Node
from overlay.plumtree import PublishError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("overlay.agent")


class AgentError(RuntimeError):
    """The agent cannot do what was asked (not running, already left)."""


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Everything an agent needs besides the protocol `Config`."""

    # Where to listen (TCP and UDP on the same port; port 0: any free one).
    bind: Addr = ("127.0.0.1", 7946)
    # The address peers dial, when it differs from `bind` (NAT, containers);
    # port 0 means the bound port.
    advertise: Addr | None = None
    # Member name; default: host name and port.
    name: str | None = None
    # Seeds: HOST:PORT, DNS names, or _service._proto.name SRV names.
    join: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    config: Config = field(default_factory=Config)
    # Cluster keys for frame encryption, the primary first (none: plain).
    keys: tuple[bytes, ...] = ()
    # Where `keys` came from: cluster-wide key changes (`overlay keys`) are
    # written back there, so a restart keeps them. None: memory only.
    key_file: str | None = None
    transport: TransportSettings = field(default_factory=TransportSettings)
    # Items waiting for the driver, at most (guess: a burst of a few
    # thousand frames; producers then wait, UDP drops).
    input_queue: int = 4096
    # Deliveries waiting per subscriber before new ones are dropped (guess).
    subscriber_queue: int = 1024
    # After `Leave`, keep running until the node says the leave is complete
    # (`LeaveComplete`: SWIM has spread our "left" state), at most this long;
    # None: ten SWIM probe periods.
    leave_grace: float | None = None
    # Then wait at most this long for the streams to flush.
    leave_timeout: float = 5.0
    # Seed of the node's random generator (tests); None: from the OS.
    seed: int | None = None
    # Name servers for SRV queries ("1.2.3.4", "1.2.3.4#5353"); None: the system's.
    dns_servers: tuple[str, ...] | None = None
    # Scripts run on member and user events, `[TYPE=]SCRIPT` (daemon.handlers).
    event_handlers: tuple[str, ...] = ()
    # An event handler running longer than this is killed (guess: Serf's
    # handlers are short scripts; a minute is plenty and bounds a hung one).
    event_handler_timeout: float = 60.0
    # A file keeping the members seen, to rejoin through on restart (daemon.snapshot).
    snapshot: str | None = None
    # `async with Agent(...)` returns once joined (`Agent.joined`): True
    # waits as long as it takes, a number of seconds at most that long.
    wait_joined: bool | float = False
    # Publishes made before the agent joined, waiting to be sent once it
    # has (guess; more wait for room).
    publish_queue: int = 1024
    # Where each setting came from, for `overlay info` (`daemon.info`):
    # {"sources": {key: "file"|"flag"}, "config_file": path, "process": {...}}.
    origins: Mapping[str, Any] = field(default_factory=dict)


class _Call:
    """A request that needs the node itself (not an input), run by the
    driver between two inputs: `fn(now)` returns outputs to execute."""

    __slots__ = ("done", "error", "fn")

    def __init__(self, fn: Callable[[float], list[Output]]) -> None:
        self.fn = fn
        self.done = trio.Event()
        self.error: Exception | None = None


_Item = Input | Expired | _Call
# What the transport reports: inputs a remote peer can shape.
_NETWORK_INPUTS = (Received, ConnectionUp, ConnectionDown, ConnectFailed, PeerRefused)
# Inputs the driver takes in a row before it yields to other tasks (guess:
# enough to absorb a burst, short enough to keep the control API responsive).
_DRIVER_BATCH = 64
# The layers' counters that count refused input (for the metrics).
_REFUSAL_COUNTERS = {
    "swim": (
        "states_refused",
        "refused_from_strangers",
        "admissions_refused",
        "name_conflicts",
        "accusations_passed_on",
    ),
    "plumtree": ("conflicts", "invalid", "expired"),
}
# How long a local publish waits before it looks again whether the driver
# has caught up (its queue below `_publish_room`): a few of its batches.
_PUBLISH_BACKOFF = 0.001
# Default bound on how long a leaving agent keeps gossiping its "left":
# this many SWIM probe periods (guess: a few retransmissions' worth).
_LEAVE_GRACE_PERIODS = 10


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


async def _ip_literal(host: str) -> str:
    """`host` (a name from local configuration) as an IP literal."""
    try:
        infos = await trio.socket.getaddrinfo(host, None, type=stdsocket.SOCK_STREAM)
    except OSError as exc:
        raise AgentError(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
    if not infos:
        raise AgentError(f"cannot resolve {host!r}")
    return str(infos[0][4][0])


def _outbound_ip(family: int) -> str:
    """The local address of the default route (no packet is sent)."""
    probe = ("192.0.2.1", 9) if family == stdsocket.AF_INET else ("2001:db8::1", 9)
    try:
        with stdsocket.socket(family, stdsocket.SOCK_DGRAM) as s:
            s.connect(probe)
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1" if family == stdsocket.AF_INET else "::1"


def _default_name(port: int) -> str:
    host = stdsocket.gethostname() or "overlay"
    return f"{host[:100]}-{port}"


class Agent:
    def __init__(self, settings: AgentSettings | None = None, **changes: Any) -> None:
        settings = settings or AgentSettings()
        if changes:
            settings = dataclasses.replace(settings, **changes)
        self.settings = settings
        self.metrics = Metrics()
        self._error_throttle = Throttle()
        self._seed_watch = SeedWatch(log, keyed=bool(settings.keys))
        self._frames: FrameCodec = PlainFrames()
        if settings.keys:
            # Imported only when needed: the crypto library costs an agent
            # without a key about 7 MB of memory.
            from daemon.security import Keyring

            self._frames = Keyring(settings.keys)
        self._inputs, self._inputs_recv = trio.open_memory_channel[_Item](settings.input_queue)
        # Local publishes may fill the driver's queue up to here, no further:
        # the rest stays for the network, whose datagrams (SWIM's probes)
        # are dropped, not awaited, when the queue is full.
        self._publish_room = max(1, settings.input_queue // 2)
        self._timer_send, self._timer_recv = trio.open_memory_channel[Expired](0)
        self._timers = TimerQueue(self._timer_send)
        self._transport = Transport(
            settings.bind,
            self._frames,
            self._inputs,
            self.metrics,
            max_frame=settings.config.max_frame,
            settings=settings.transport,
        )
        self._node: Node | None = None
        self._me: NodeId | None = None
        self._subs: dict[str, dict[int, Subscription[Delivery]]] = {}
        self._watchers: dict[int, Subscription[Member]] = {}
        self._sub_seq = 0
        self._nursery: trio.Nursery | None = None
        # Set while the node is isolated (`Isolated` outputs): a node starts alone.
        self._alone = trio.Event()
        self._alone.set()
        self._discovery: trio.CancelScope | None = None
        self._leaving = False
        self._started_at = 0.0
        self._running = False
        self._stopped = trio.Event()
        # Why the agent stopped by itself, if it had to (a name conflict).
        self.failure: str | None = None
        self._leave_complete = trio.Event()
        self._bound = False
        self._cm_nursery: Any = None
        # Called with (now, output) for every output the node produces, after
        # it is executed: for tests and instrumentation. Must not block.
        self.observers: list[Callable[[float, Output], None]] = []
        # Event handlers and the snapshot, when configured (issue 15).
        self._handlers: EventHandlers | None = build_handlers(
            settings.event_handlers, settings.event_handler_timeout, self._self_info
        )
        self._snapshot = Snapshot(settings.snapshot) if settings.snapshot else None
        # Set once the node has its first neighbour, or founds a cluster
        # (`joined`); publishes before that wait in `_early` (bounded).
        self._joined = trio.Event()
        self._join_news = trio.Event()  # joined, or stopped
        self._early: deque[tuple[str, bytes]] = deque()
        self._early_room = trio.Event()
        # Queries (daemon.queries), and the cluster-wide keyring on top.
        self.queries = QueryService(self)
        if settings.keys:
            from daemon.keys import KeyService

            KeyService(self, self._frames).install_handlers()  # type: ignore[arg-type]

    # ------------------------------------------------------------- identity

    @property
    def me(self) -> NodeId:
        if self._me is None:
            raise AgentError("the agent has not started")
        return self._me

    @property
    def node(self) -> Node:
        if self._node is None:
            raise AgentError("the agent has not started")
        return self._node

    @property
    def running(self) -> bool:
        return self._running

    @property
    def max_payload(self) -> int:
        """The largest payload a publish may carry."""
        return self.settings.config.plumtree.max_payload

    # ------------------------------------------------------------ lifecycle

    async def bind(self) -> None:
        """Bind the peer port (TCP and UDP); errors such as an address in
        use are raised here, as they are. `run` calls it when it was not
        called before."""
        if self._bound:
            return
        s = self.settings
        with naming("peer port", format_addr(s.bind)):
            bound = await self._transport.bind()
        self._me = await self._identity(bound)
        self._transport.me = self._me
        try:
            seed = s.seed if s.seed is not None else int.from_bytes(os.urandom(8), "big")
            incarnation = 0
            if self._snapshot is not None:
                self._snapshot.load()
                incarnation = self._snapshot.incarnation_for(self._me.name, self._me.addr)
            self._node = Node(
                self._me, s.config, random.Random(seed), dict(s.tags), incarnation=incarnation
            )
        except BaseException:
            await self._transport.close_sockets()
            raise
        self._bound = True

    async def unbind(self) -> None:
        """Close the sockets of an agent that was bound but will not run."""
        if self._bound and not self._running and not self._stopped.is_set():
            await self._transport.close_sockets()
            self._bound = False
            self._node = None

    async def run(
        self,
        *,
        servers: Mapping[str, str | None] | None = None,
        task_status: trio.TaskStatus[Agent] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until the agent has left (or is cancelled). With
        `nursery.start(agent.run)`, returns once the agent is up. `servers`:
        where its control API and metrics endpoint answer, for the "agent
        started" log line (`daemon.service` serves them)."""
        if self._running or self._stopped.is_set():
            raise AgentError("an Agent runs once")
        s = self.settings
        try:
            await self.bind()
            me = self.me
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._transport.serve)
                node = self.node
                nursery.start_soon(self._timers.run)
                nursery.start_soon(self._forward_timers)
                nursery.start_soon(sample_forever, self.metrics)
                self._started_at = trio.current_time()
                if self._handlers is not None:
                    nursery.start_soon(self._handlers.run)
                if self._snapshot is not None:
                    nursery.start_soon(self._snapshot.run, self._snapshot_state)
                self._execute(node.start(self._started_at), self._started_at)
                self._running = True
                seeds = list(s.join)
                if self._snapshot is not None:
                    seeds += self._snapshot.rejoin_seeds(me.addr, random.Random())
                if seeds:
                    self._start_discovery(seeds)
                else:
                    self._found()
                event(
                    log,
                    logging.INFO,
                    "agent started",
                    name=me.name,
                    bind=format_addr(self._transport.bound),
                    advertise=me.addr,
                    **{"control": None, "metrics": None, **(servers or {})},
                    encrypted=bool(s.keys),
                )
                if not s.keys:
                    warn_no_key(log, format_addr(self._transport.bound))
                task_status.started(self)
                await self._drive()
        finally:
            self._running = False
            self._join_news.set()
            self._early_room.set()
            for subs in self._subs.values():
                for sub in list(subs.values()):
                    sub._end()
            for watcher in list(self._watchers.values()):
                watcher._end()
            self.queries.close()
            self._stopped.set()

    async def __aenter__(self) -> Agent:
        # Bind before the nursery: a bind error comes out as itself, not
        # wrapped in an exception group.
        await self.bind()
        self._cm_nursery = trio.open_nursery()
        nursery = await self._cm_nursery.__aenter__()
        try:
            await nursery.start(self.run)
        except BaseException as exc:
            await self._cm_nursery.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        wait = self.settings.wait_joined
        if wait is not False:
            try:
                await self.joined(None if wait is True else float(wait))
            except BaseException:
                # Not joined in time (or cancelled): stop, and raise the
                # error itself, not wrapped in the nursery's group.
                self.stop()
                await self._cm_nursery.__aexit__(None, None, None)
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            if exc_type is None:
                await self.leave()
            else:
                self.stop()
        finally:
            try:
                result: bool | None = await self._cm_nursery.__aexit__(exc_type, exc, tb)
            except BaseExceptionGroup as group:
                # The body's own exception, merely wrapped by the nursery:
                # let it propagate as itself.
                if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                    return False
                raise
        return result

    def stop(self) -> None:
        """Stop at once: no goodbyes (the cluster will notice a failure)."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def leave(self) -> None:
        """Leave the cluster gracefully, then stop. Returns when stopped."""
        if not self._running:
            if self._stopped.is_set():
                return
            raise AgentError("the agent is not running")
        if not self._leaving:
            self._leaving = True
            assert self._nursery is not None
            self._nursery.start_soon(self._leave)
        await self._stopped.wait()

    async def _leave(self) -> None:
        event(log, logging.INFO, "leaving the cluster")
        s = self.settings
        if self._early:
            # Publishes made before the agent joined go out first: wait for
            # the join as long as a leave may take (the grace), no longer.
            grace = s.leave_grace if s.leave_grace is not None else 10 * s.config.swim.probe_period
            with trio.move_on_after(grace):
                await self._joined.wait()
            if self._early:
                event(log, logging.WARNING, "not joined: publishes lost", count=len(self._early))
                self._early.clear()
        if self._discovery is not None:
            self._discovery.cancel()
        await self._inputs.send(Leave())
        # The node says when the leave is complete (`LeaveComplete`: SWIM
        # has spread our "left"). The grace is a safety bound only, for a
        # node that never says so (a network that swallows every ping).
        grace = (
            s.leave_grace
            if s.leave_grace is not None
            else _LEAVE_GRACE_PERIODS * (s.config.swim.probe_period)
        )
        with trio.move_on_after(grace):
            await self._leave_complete.wait()
        await self._transport.aclose_all(s.leave_timeout)
        event(log, logging.INFO, "left the cluster")
        self.stop()

    # --------------------------------------------------------------- driver

    async def _forward_timers(self) -> None:
        async for expired in self._timer_recv:
            await self._inputs.send(expired)

    async def _drive(self) -> None:
        """Feed the node every item, one at a time. Items already queued are
        taken without a trip through the scheduler (a burst of frames costs
        one wake-up, not one per frame), but at most `_DRIVER_BATCH` in a row
        before other tasks get their turn."""
        recv = self._inputs_recv
        batch = 0
        while True:
            if batch >= _DRIVER_BATCH:
                await trio.lowlevel.checkpoint()
                batch = 0
            try:
                item = recv.receive_nowait()
            except trio.WouldBlock:
                item = await recv.receive()
                batch = 0
            batch += 1
            self._step(item, trio.current_time())
            if self._early and self._joined.is_set():
                self._flush_early(trio.current_time())

    def _step(self, item: _Item, now: float) -> None:
        node = self.node
        if isinstance(item, Expired):
            if not self._timers.take(item):
                return
            self._execute(node.handle(TimerFired(item.timer), now), now)
        elif isinstance(item, _Call):
            try:
                outputs = item.fn(now)
            except (ValueError, TypeError) as exc:  # a refused request, state unchanged
                item.error = exc
            else:
                self._execute(outputs, now)
            item.done.set()
        elif isinstance(item, _NETWORK_INPUTS):
            self._seed_watch.observe(item)
            try:
                outputs = node.handle(item, now)
            except Exception as exc:
                # A protocol bug that a peer's message reached: nothing from
                # the network may stop the agent. Logged with its traceback
                # (throttled) and counted; the input is dropped.
                self.metrics.errors["handler"] += 1
                allowed, held = self._error_throttle.allow("handler")
                if allowed:
                    log.error(
                        "input %s failed: %r (%d similar errors not logged)",
                        type(item).__name__,
                        exc,
                        held,
                        exc_info=exc,
                    )
                return
            self._execute(outputs, now)
        else:
            self._execute(node.handle(item, now), now)

    def _execute(self, outputs: list[Output], now: float) -> None:
        me = self.me
        max_frame = self.settings.config.max_frame
        encoded: dict[int, tuple[object, bytes]] = {}
        for out in outputs:
            match out:
                case Send(to, msg, reliable):
                    # A broadcast goes to several peers as one object: encode once.
                    cached = encoded.get(id(msg))
                    if cached is not None and cached[0] is msg:
                        frame = cached[1]
                    else:
                        try:
                            frame = codec.encode(me, msg, max_frame)
                        except EncodeError as exc:
                            self.metrics.drops["encode"] += 1
                            event(log, logging.ERROR, "message not encodable", error=str(exc))
                            continue
                        encoded[id(msg)] = (msg, frame)
                    self.metrics.count_sent(type(msg).__name__, len(frame) + (4 if reliable else 0))
                    self._transport.send(to, frame, reliable)
                case CloseConnection(peer):
                    self._transport.close(peer)
                case SetTimer(timer, delay):
                    self._timers.set(timer, now + delay)
                case CancelTimer(timer):
                    self._timers.cancel(timer)
                case Deliver():
                    self._deliver(out)
                case MemberChanged():
                    self._member_changed(out)
                case NeighborUp(peer, reason):
                    event(log, logging.INFO, "neighbour up", peer=str(peer), reason=reason.value)
                case NeighborDown(peer, reason):
                    event(log, logging.INFO, "neighbour down", peer=str(peer), reason=reason.value)
                case PublishRejected(topic, reason):
                    event(log, logging.WARNING, "publish rejected", topic=topic, reason=reason)
                case NameConflict(name, holder, claimant):
                    self._name_conflict(name, holder, claimant)
                case LeaveComplete():
                    self._leave_complete.set()
                case QueryAsked() | QueryAnswer() | QueryDone():
                    self.queries.output(out, now)
                case Isolated(isolated):
                    if not isolated:
                        self._alone = trio.Event()
                        self._set_joined()
                    elif not self._alone.is_set():
                        self._alone.set()
            for observer in self.observers:
                observer(now, out)

    def _name_conflict(self, name: str, holder: NodeId, claimant: NodeId) -> None:
        """A live member holds a name someone claims (`overlay.io.NameConflict`).
        When the claimant is us, we are the newcomer: stop, saying why
        (`failure`, which `overlay agent` prints and exits with)."""
        if claimant != self.me:
            event(
                log,
                logging.WARNING,
                "refused a node that claims a live member's name",
                name=name,
                claimant=claimant.addr,
                holder=holder.addr,
            )
            return
        self.failure = (
            f"the name {name!r} is held by a live member at {holder.addr}: "
            "choose another --name, or stop that agent first"
        )
        event(log, logging.ERROR, "name taken", name=name, holder=holder.addr)
        self.stop()

    def _deliver(self, d: Deliver) -> None:
        self.metrics.delivered += 1
        if self._handlers is not None:
            self._handlers.delivered(d.topic, d.payload, d.origin, d.seq)
        subs = self._subs.get(d.topic)
        if not subs:
            return
        item = Delivery(d.topic, d.payload, d.origin, d.seq, d.hops, d.id.epoch, time.time())
        for sub in list(subs.values()):
            if not sub._push(item):
                self.metrics.drops["subscriber"] += 1

    def _member_changed(self, change: MemberChanged) -> None:
        member = Member(
            change.member.name,
            change.member.addr,
            change.status.value,
            change.incarnation,
            dict(change.tags),
        )
        level = logging.INFO if change.member != self._me else logging.DEBUG
        event(
            log,
            level,
            "member changed",
            member=str(change.member),
            status=member.status,
            incarnation=member.incarnation,
        )
        for watcher in list(self._watchers.values()):
            if not watcher._push(member):
                self.metrics.drops["watcher"] += 1
        if self._handlers is not None:
            self._handlers.member_changed(member)
        if self._snapshot is not None:
            self._snapshot.changed()

    # ------------------------------------------------------------ discovery

    async def _identity(self, bound: Addr) -> NodeId:
        """This agent's node id. Node ids carry IP literals on the wire (peers
        refuse names, which they would have to resolve), so an advertised
        or bound name from local configuration is resolved here, once."""
        s = self.settings
        host, port = bound
        if s.advertise is not None:
            adv_host, adv_port = s.advertise
            adv_port = adv_port or port
        else:
            adv_host, adv_port = host, port
            if _unspecified(host):
                family = stdsocket.AF_INET6 if ":" in host else stdsocket.AF_INET
                adv_host = _outbound_ip(family)
        name = s.name or _default_name(adv_port)
        if not wire_id_ok(name, adv_host, adv_port):
            adv_host = await _ip_literal(adv_host)
            if not wire_id_ok(name, adv_host, adv_port):
                raise AgentError(
                    f"cannot advertise {name!r} at {adv_host}:{adv_port}: a node name must be "
                    "printable and a port 1-65535"
                )
        return NodeId(name, adv_host, adv_port)

    def _start_discovery(self, seeds: list[str]) -> None:
        me = self.me
        specs = [parse_seed(text, me.port) for text in seeds]
        if self._discovery is not None:
            self._discovery.cancel()
        scope = trio.CancelScope()
        self._discovery = scope
        assert self._nursery is not None
        self._nursery.start_soon(self._discover, specs, scope)

    async def _discover(self, specs: list[SeedSpec], scope: trio.CancelScope) -> None:
        """Resolve the seeds and hand them to the node; while the node says
        it is isolated, resolve them again every round (with backoff) and
        hand them over again if they changed. HyParView retries the seeds
        itself."""
        cfg = self.settings.config.hyparview
        me = self.me
        mine = {(me.host, me.port), self._transport.bound}
        family = stdsocket.AF_INET6 if ":" in me.host else stdsocket.AF_INET
        servers = list(self.settings.dns_servers) if self.settings.dns_servers else None
        resolving = any(s.needs_resolving for s in specs)
        backoff = Backoff(cfg.join_retry_initial, cfg.join_retry_max)
        last: list[Addr] | None = None
        with scope:
            while True:
                addrs, errors = await resolve_seeds(specs, family=family, servers=servers)
                for error in errors:
                    event(log, logging.WARNING, "seed not resolved", error=error)
                addrs = [a for a in addrs if a not in mine]
                if addrs and addrs != last:
                    last = addrs
                    event(log, logging.INFO, "joining", seeds=[format_addr(a) for a in addrs])
                    await self._inputs.send(JoinCluster(tuple(seed_id(h, p) for h, p in addrs)))
                elif not addrs and not errors:
                    event(log, logging.INFO, "no seed besides this agent: starting a cluster")
                    self._found()
                    return
                if last is not None and not resolving:
                    return
                await trio.sleep(backoff.next())
                if not self._alone.is_set():
                    await self._alone.wait()
                    backoff.reset()

    # -------------------------------------------------------- embedded API

    async def join(self, *seeds: str) -> None:
        """Join through these seeds (HOST:PORT, DNS names, SRV names)."""
        self._check_running()
        self._start_discovery(list(seeds))

    async def publish(self, topic: str, payload: bytes) -> None:
        """Broadcast `payload` to every subscriber of `topic` in the cluster
        (this agent's included). Raises `PublishError` if the node refuses it
        (payload too large, bad topic, one of the overlay's own, left)."""
        self._check_running()
        # The node would refuse a bad `Publish` as a logged
        # `PublishRejected`, after we returned: checked here, the caller
        # gets the error.
        self.node.check_publish(topic, payload)
        self.metrics.published += 1
        if not self._joined.is_set() and await self._publish_early(topic, payload):
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        # Without a trip through the scheduler when the driver's queue has
        # room (it would cost more than the publish: issue 14); the driver
        # runs at the caller's next wait, or when the queue is full.
        if await self._publish_input(Publish(topic, payload)):
            await trio.lowlevel.checkpoint_if_cancelled()

    async def _publish_input(self, item: Publish) -> bool:
        """Queue a local publish for the driver; False if that took a wait
        (the driver is behind: its queue holds `_publish_room` items)."""
        inputs = self._inputs
        if inputs.statistics().current_buffer_used < self._publish_room:
            inputs.send_nowait(item)
            return True
        while inputs.statistics().current_buffer_used >= self._publish_room:
            await trio.sleep(_PUBLISH_BACKOFF)
        await inputs.send(item)
        return False

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> list[tuple[int, str]]:
        """Publish each (topic, payload) in order, as `publish` would one by
        one, and return the refused ones as (index, reason): a refused
        message costs only itself. The inputs go to the driver without a
        trip through the scheduler each; when the driver is behind (its
        queue half full: the other half stays for the network), this waits
        for it. Raises `AgentError` (nothing published)
        if the agent is not running or is leaving; if it starts leaving in
        the middle, the rest are refused with that reason."""
        self._check_running()
        refused: list[tuple[int, str]] = []
        check = self.node.check_publish
        for index, (topic, payload) in enumerate(messages):
            if not self._running or self._leaving:
                refused.append((index, "the agent is leaving"))
                continue
            try:
                check(topic, payload)
            except PublishError as exc:
                refused.append((index, str(exc)))
                continue
            self.metrics.published += 1
            if not self._joined.is_set() and await self._publish_early(topic, payload):
                continue
            await self._publish_input(Publish(topic, payload))
        await trio.lowlevel.checkpoint_if_cancelled()
        return refused

    # ------------------------------------------------- joined (issue 15)

    async def joined(self, timeout: float | None = None) -> None:
        """Return once the agent has joined: its first neighbour is up
        (HyParView's active view is no longer empty: `Isolated(False)`, the
        signal that a broadcast now reaches the cluster), or it found a
        cluster (no seed but itself). It does not wait again if the agent
        is later isolated. `trio.TooSlowError` after `timeout` seconds;
        `AgentError` if the agent stops first."""
        with trio.fail_after(math.inf if timeout is None else timeout):
            await self._join_news.wait()
        if not self._joined.is_set():
            raise AgentError("the agent stopped before it joined")

    @property
    def is_joined(self) -> bool:
        return self._joined.is_set()

    def _set_joined(self) -> None:
        if not self._joined.is_set():
            event(log, logging.INFO, "joined", queued_publishes=len(self._early))
            self._joined.set()
            self._join_news.set()

    def _found(self) -> None:
        """No seed but this agent: it founds the cluster, it is joined."""
        self._set_joined()

    async def _publish_early(self, topic: str, payload: bytes) -> bool:
        """Queue a publish made before the agent joined (waiting for room
        when `publish_queue` are waiting); False once it has joined: then
        it goes as any other."""
        while not self._joined.is_set():
            self._check_running()
            if len(self._early) < self.settings.publish_queue:
                self._early.append((topic, payload))
                return True
            await self._early_room.wait()
        return False

    def _flush_early(self, now: float) -> None:
        """The publishes made before the agent joined, in order, right
        after the input that joined it (and before any publish made after)."""
        node = self.node
        while self._early:
            topic, payload = self._early.popleft()
            self._execute(node.handle(Publish(topic, payload), now), now)
        self._early_room.set()
        self._early_room = trio.Event()

    def _self_info(self) -> tuple[str, str, Mapping[str, str]]:
        """(name, addr, tags) of this member, for the event handlers."""
        return self.me.name, self.me.addr, self.tags

    def _snapshot_state(self) -> SnapshotState:
        me = self.me
        members = self.members()
        mine = next((m.incarnation for m in members if (m.name, m.addr) == (me.name, me.addr)), 0)
        return me.name, me.addr, mine, members

    def subscribe(self, topic: str) -> Subscription[Delivery]:
        """Deliveries on `topic` from now on."""
        if not topic:
            raise PublishError("topic must not be empty")
        self._sub_seq += 1
        return Subscription(
            self._subs.setdefault(topic, {}), self._sub_seq, self.settings.subscriber_queue
        )

    def watch_members(self) -> Subscription[Member]:
        """Every member change from now on."""
        self._sub_seq += 1
        return Subscription(self._watchers, self._sub_seq, self.settings.subscriber_queue)

    def members(self) -> list[Member]:
        """The member list as this agent knows it, this agent included."""
        return [
            Member(m.node.name, m.node.addr, m.status.value, m.incarnation, dict(m.tags))
            for m in self.node.members()
        ]

    def coordinate(self, name: str | None = None) -> dict[str, Any]:
        """This agent's network coordinate, or the last one member `name`
        sent (`daemon.coordinates.describe`; ValueError if none)."""
        from daemon.coordinates import describe

        return describe(self.node, name)

    @property
    def tags(self) -> dict[str, str]:
        """This member's tags."""
        me = self.me
        return next((dict(m.tags) for m in self.node.members() if m.node == me), {})

    async def set_tags(self, tags: Mapping[str, str], delete: Sequence[str] = ()) -> dict[str, str]:
        """Change this member's tags (spread to the cluster); returns them.
        Raises `overlay.member_rules.TagsTooLarge` (a ValueError) over the limit."""
        self._check_running()
        new = {**self.tags, **tags}
        for key in delete:
            new.pop(key, None)
        await self._call(lambda now: self.node.set_tags(new, now))
        return self.tags

    async def force_leave(self, name: str, prune: bool = False) -> None:
        """Force the member `name`, which this agent holds failed, to left
        (spread to the cluster); `prune`: forget it here once that is
        spread. Raises `overlay.member_rules.ForceLeaveRefused` (a
        ValueError) for an unknown name, this agent, or a live member."""
        self._check_running()
        await self._call(lambda now: self.node.force_leave(name, prune, now))

    def info(self) -> dict[str, Any]:
        """Effective settings with their sources, versions, uptime (`daemon.info`)."""
        from daemon.info import agent_info

        return agent_info(self, trio.current_time() - self._started_at)

    async def query(self, name: str, payload: bytes = b"", **kw: Any) -> QueryResult:
        """Send a query (keywords: nodes, tags {K: REGEX}, timeout, ack) and
        collect its acks and responses until its timeout (`daemon.queries`)."""
        return await self.queries.query(name, payload, **kw)

    async def open_query(self, name: str, payload: bytes = b"", **kw: Any) -> QueryHandle:
        """Send a query; iterate the handle for each answer as it comes."""
        return await self.queries.open(name, payload, **kw)

    def on_query(self, name: str, handler: Handler | None) -> None:
        """Answer queries called `name`: `await handler(QueryRequest)`
        returns the response (bytes), or None for none."""
        self.queries.on_query(name, handler)

    async def respond(self, request: QueryRequest, payload: bytes) -> None:
        """Answer a query delivered to this member (`watch_queries`)."""
        await self.queries.respond(request.origin, request.id, payload)

    async def _call(self, fn: Callable[[float], list[Output]]) -> None:
        """Run `fn(now)` in the driver, between two inputs; re-raise its error."""
        call = _Call(fn)
        await self._inputs.send(call)
        await call.done.wait()
        if call.error is not None:
            raise call.error

    def _check_running(self) -> None:
        if not self._running:
            raise AgentError("the agent is not running")
        if self._leaving:
            raise AgentError("the agent is leaving")

    # ---------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        """Views, member counts, message and byte rates, queue drops."""
        node = self.node
        now = trio.current_time()
        views = node.views()
        layers = node.stats()
        layers["queries"].update(self.queries.counters)  # the agent's side of them
        members = self.members()
        counts: dict[str, int] = {"alive": 0, "suspect": 0, "failed": 0, "left": 0}
        for m in members:
            counts[m.status] = counts.get(m.status, 0) + 1
        inputs = self._inputs.statistics()
        return {
            "name": self.me.name,
            "addr": self.me.addr,
            "uptime": round(now - self._started_at, 3),
            "encrypted": bool(self.settings.keys),
            "views": {
                "active": [str(p) for p in views.active],
                "passive": len(views.passive),
                "pending": len(views.pending),
            },
            "members": counts,
            # The layers' counters, and (`refused`) the inputs the protocol
            # refused by where they came from (issue 12).
            **layers,
            "transport": self._transport.connections(),
            "queues": {
                "inputs": inputs.current_buffer_used,
                "inputs_max": inputs.max_buffer_size,
                "timers": len(self._timers),
                "subscribers": sum(len(s) for s in self._subs.values()),
            },
            **self.metrics.snapshot(now),
            **({"handlers": self._handlers.stats()} if self._handlers is not None else {}),
            **(
                {"snapshot": {"writes": self._snapshot.writes, "errors": self._snapshot.errors}}
                if self._snapshot is not None
                else {}
            ),
        }

    @functools.cached_property
    def prometheus_registry(self) -> CollectorRegistry:
        """This agent's Prometheus registry (its own, not the process-wide
        one), made at the first scrape: prometheus_client is imported only
        then (`daemon.prometheus`)."""
        from daemon.prometheus import agent_registry

        return agent_registry(self.stats, self._refusals)

    def prometheus(self) -> str:
        """The Prometheus text exposition of this agent."""
        from daemon.prometheus import text

        return text(self.prometheus_registry)

    @staticmethod
    def _refusals(stats: Mapping[str, Any]) -> dict[str, int]:
        """Every protocol counter of what was refused, under one name each."""
        out = {f"node_{k}": v for k, v in stats["refused"].items()}
        out.update((f"hyparview_{k}", v) for k, v in stats["hyparview"].items())
        for layer in ("swim", "plumtree"):
            for key in _REFUSAL_COUNTERS[layer]:
                if stats[layer].get(key):
                    out[f"{layer}_{key}"] = stats[layer][key]
        return out
