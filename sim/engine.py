"""The discrete-event engine: real `overlay.Node`s over a modelled network.

Theory of operation
-------------------
One heap of `(time, seq, kind, ...)` entries; `seq` breaks ties so two runs
with the same seed pop events in the same order. Every simulated node is a
real `overlay.node.Node`; the engine gives it the inputs a daemon would
(`overlay.io`) and interprets the outputs it returns:

- `Send` becomes a delivery after the link's latency (drawn once per pair),
  through the real codec unless `codec=False`, so byte counts are real.
- Streams are modelled per unordered pair of addresses, as the daemon keys
  them. A reliable send with no stream dials: the dial fails
  (`ConnectFailed`) when the target is crashed or the pair is partitioned.
- A crash drops the node; each of its streams breaks for the peer one link
  latency later (`ConnectionDown`), after the messages already in flight.
  A crash takes the host down by default (silence: what is sent to it is
  lost, a dial times out); `crash(..., host_down=False)` kills only the
  process, and its live host refuses what is sent to it: a datagram comes
  back as `PeerRefused` one round trip later, a dial fails as fast, with
  `PeerRefused` first (a real host answers ICMP port-unreachable and TCP
  resets). A process that exits after a leave (`stop`) is the same.
- A partition drops datagrams and new dials between the groups; streams
  across it break for both ends `break_after` seconds later. After a heal,
  `first_across_heal` is when the first packet across the healed cut
  arrived: the moment the two sides could start to merge.
- A paused node (SIGSTOP: the gray failure) processes nothing and sends
  nothing, but its streams stay up; what reaches it waits until it resumes.
- Datagram loss is a probability per datagram (`set_loss` changes it at a
  given time). Streams are not lossy: a real one retransmits, and shows loss
  only as delay.
- Latency: drawn once per pair, uniform in [latency_min, latency_max], or
  given by an underlay (`sim.underlay.Underlay`: shortest paths in a
  weighted networkx graph whose vertices the hosts attach to).
- `stop` ends a node's process (after a graceful `leave`, say): like a crash
  for the network, its streams close one link latency later.

Observers see every output of every node (with its time), which is how the
analysis measures broadcasts, detections and views without the protocol
knowing. An observer with a `wants` attribute (a tuple of output classes)
is called for those outputs only: most outputs interest nobody, and a call
per observer per output was 2% of a run. (Observers are appended, never
removed: the engine notices a longer list.)
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from overlay import codec
from overlay.config import Config
from overlay.ids import NodeId
from overlay.io import (
    CancelTimer,
    CloseConnection,
    ConnectFailed,
    ConnectionDown,
    ConnectionUp,
    Input,
    JoinCluster,
    Leave,
    LeaveComplete,
    Output,
    PeerRefused,
    Publish,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from overlay.messages import Message
from overlay.node import Node

Addr = tuple[str, int]
Observer = Callable[[float, NodeId, Output], None]

# Heap entry kinds.
_DELIVER = 0  # (t, seq, _DELIVER, dst_addr, input)
_TIMER = 1  # (t, seq, _TIMER, dst_addr, (timer, generation))
_ACTION = 2  # (t, seq, _ACTION, None, callable)
_DOWN = 3  # (t, seq, _DOWN, dst_addr, (pair, ConnectionDown)): dropped if a newer stream is up


class LatencySource(Protocol):
    """Where link latencies come from when not drawn per pair (an underlay)."""

    def attach(self, addr: Addr) -> None: ...

    def latency(self, a: Addr, b: Addr) -> float: ...


@dataclass(slots=True)
class NetworkModel:
    """Link behaviour. Latency per unordered pair is drawn once, uniform in
    [latency_min, latency_max], unless `fixed_latency` names the pair or an
    `underlay` gives it."""

    latency_min: float = 0.010
    latency_max: float = 0.050
    loss: float = 0.0  # datagram loss probability
    connect_timeout: float = 1.0  # a dial to a dead or cut-off host fails after this
    break_after: float = 2.0  # a stream across a new partition breaks after this
    fixed_latency: dict[tuple[Addr, Addr], float] = field(default_factory=dict)
    underlay: LatencySource | None = None


@dataclass(slots=True)
class SimNode:
    node: Node
    alive: bool = True
    started_at: float | None = None  # when start() ran
    stopped_at: float | None = None  # crashed or stopped
    paused: bool = False
    refuses: bool = False  # the process is gone, its host answers (see crash)
    backlog: list[Input] = field(default_factory=list)
    # The generation of each pending timer, keyed by (id(kind), key): equal
    # exactly when the Timers are (a kind is an Enum member, a singleton),
    # without Timer's and the Enum's __hash__, both in Python (~1 us a
    # lookup, three lookups per timer).
    timers: dict[tuple[int, Any], int] = field(default_factory=dict)


@dataclass(slots=True)
class Traffic:
    """What crossed the network: counts and bytes by message type."""

    messages: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)


def _wants(observer: Observer, cls: type) -> bool:
    wants = getattr(observer, "wants", None)
    return wants is None or issubclass(cls, wants)


def _pair(a: Addr, b: Addr) -> tuple[Addr, Addr]:
    return (a, b) if a <= b else (b, a)


class Simulation:
    def __init__(
        self,
        config: Config | None = None,
        seed: int = 0,
        *,
        network: NetworkModel | None = None,
        use_codec: bool = True,
    ) -> None:
        self.config = config or Config()
        self.seed = seed
        self.rng = random.Random(seed)
        self.net = network or NetworkModel()
        self.use_codec = use_codec
        self.now = 0.0
        self.events = 0
        self._heap: list[tuple[float, int, int, Any, Any]] = []
        self._seq = 0
        self.nodes: dict[Addr, SimNode] = {}
        self.ids: dict[Addr, NodeId] = {}
        self._latency: dict[Addr, dict[Addr, float]] = {}  # a -> b -> seconds
        # Open streams per pair: (opener, time the other end learns of it).
        self._streams: dict[tuple[Addr, Addr], tuple[Addr, float]] = {}
        self._group: dict[Addr, int] = {}  # partition group per node; absent = 0
        self._one_way: set[tuple[int, int]] = set()  # (from group, to group) blocked
        # After a heal: the groups of the cut that was healed, until the
        # first packet crosses it (`first_across_heal`, its arrival time).
        self._healed: dict[Addr, int] | None = None
        self.first_across_heal: float | None = None
        self.traffic = Traffic()
        self.observers: list[Observer] = []
        # The observers of each output class (see `wants`), for a list of
        # `_observed` observers.
        self._watching: dict[type, tuple[Observer, ...]] = {}
        self._observed = 0
        # Nodes that exit once their leave is complete (see `leave`).
        self._exit_on_leave: set[Addr] = set()
        # The last message encoded: (message, sender, size, decoded sender,
        # decoded message); see _send.
        self._frame_memo: tuple[Message, NodeId, int, NodeId, Message] | None = None

    # ------------------------------------------------------------ building

    def add_node(self, name: str, *, at: float | None = None) -> NodeId:
        """Create a node (started at `at`, default now)."""
        index = len(self.nodes)
        me = NodeId(name, f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}", 7946)
        addr = (me.host, me.port)
        if addr in self.nodes:
            raise ValueError(f"duplicate node address {addr}")
        node = Node(me, self.config, random.Random(self.rng.getrandbits(64)))
        self.nodes[addr] = SimNode(node)
        self.ids[addr] = me
        if self.net.underlay is not None:
            self.net.underlay.attach(addr)
        self.call_at(self.now if at is None else at, lambda: self._start(addr))
        return me

    def node(self, nid: NodeId) -> Node:
        return self.nodes[(nid.host, nid.port)].node

    def live(self) -> list[NodeId]:
        """Nodes running now: started, and not crashed or stopped."""
        return [self.ids[a] for a, s in self.nodes.items() if s.alive and s.started_at is not None]

    def node_seconds(self) -> float:
        """Seconds of running time summed over nodes, up to now: the
        denominator of per-node rates."""
        total = 0.0
        for sn in self.nodes.values():
            if sn.started_at is not None:
                end = self.now if sn.stopped_at is None else sn.stopped_at
                total += max(0.0, end - sn.started_at)
        return total

    # ------------------------------------------------------- the timeline

    def call_at(self, t: float, fn: Callable[[], None]) -> None:
        self._push(t, _ACTION, None, fn)

    def join(self, nid: NodeId, seeds: Iterable[NodeId], *, at: float | None = None) -> None:
        self.inject(nid, JoinCluster(tuple(seeds)), at=at)

    def publish(self, nid: NodeId, topic: str, payload: bytes, *, at: float | None = None) -> None:
        self.inject(nid, Publish(topic, payload), at=at)

    def leave(
        self, nid: NodeId, *, at: float | None = None, exit_within: float | None = None
    ) -> None:
        """A graceful leave. With `exit_within`, the process then exits as
        the agent's does: when the node says the leave is complete
        (`LeaveComplete`), or `exit_within` seconds after the leave at the
        latest."""
        self.inject(nid, Leave(), at=at)
        if exit_within is not None:
            self._exit_on_leave.add((nid.host, nid.port))
            self.stop(nid, at=(self.now if at is None else at) + exit_within)

    def inject(self, nid: NodeId, inp: Input, *, at: float | None = None) -> None:
        self._push(self.now if at is None else at, _DELIVER, (nid.host, nid.port), inp)

    def crash(self, nid: NodeId, *, at: float | None = None, host_down: bool = True) -> None:
        """The node stops: its host goes down (silence), or with
        `host_down=False` only its process dies (its host refuses)."""
        addr = (nid.host, nid.port)
        self.call_at(self.now if at is None else at, lambda: self._crash(addr, not host_down))

    def stop(self, nid: NodeId, *, at: float | None = None) -> None:
        """The node's process exits (after a graceful `leave`, typically): a
        crash of the process, its host still up."""
        self.crash(nid, at=at, host_down=False)

    def set_loss(self, loss: float, *, at: float | None = None) -> None:
        """Datagram loss probability from `at` on."""
        if not 0.0 <= loss <= 1.0:
            raise ValueError(f"loss must be within 0..1, not {loss}")

        def apply() -> None:
            self.net.loss = loss

        self.call_at(self.now if at is None else at, apply)

    def pause(self, nid: NodeId, *, at: float | None = None) -> None:
        self.call_at(self.now if at is None else at, lambda: self._set_paused(nid, True))

    def resume(self, nid: NodeId, *, at: float | None = None) -> None:
        self.call_at(self.now if at is None else at, lambda: self._set_paused(nid, False))

    def partition(self, groups: list[list[NodeId]], *, at: float | None = None) -> None:
        """Split into groups (group i+1 for the i-th list; unlisted nodes stay
        in group 0). Traffic between different groups is cut both ways."""
        self.call_at(self.now if at is None else at, lambda: self._partition(groups, set()))

    def partition_one_way(
        self, src: list[NodeId], dst: list[NodeId], *, at: float | None = None
    ) -> None:
        """Cut traffic from `src` to `dst` only (each a group of its own)."""
        self.call_at(self.now if at is None else at, lambda: self._partition([src, dst], {(1, 2)}))

    def heal(self, *, at: float | None = None) -> None:
        self.call_at(self.now if at is None else at, self._heal)

    def run_until(self, t_end: float) -> None:
        heap = self._heap
        pop = heapq.heappop
        nodes = self.nodes
        while heap and heap[0][0] <= t_end:
            t, _, kind, dst, payload = pop(heap)
            self.now = t
            self.events += 1
            if kind == _DELIVER:
                self._deliver(dst, payload)
            elif kind == _TIMER:
                timer, gen = payload
                sn = nodes[dst]
                key = (id(timer.kind), timer.key)
                if sn.timers.get(key) == gen:
                    del sn.timers[key]
                    self._deliver(dst, TimerFired(timer))
            elif kind == _DOWN:
                pair, inp = payload
                if pair not in self._streams:
                    self._deliver(dst, inp)
            else:
                payload()
        self.now = max(self.now, t_end)

    def run_for(self, dt: float) -> None:
        self.run_until(self.now + dt)

    # ------------------------------------------------------------ internals

    def _push(self, t: float, kind: int, dst: object, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, dst, payload))

    def _start(self, addr: Addr) -> None:
        sn = self.nodes[addr]
        if not sn.alive or sn.started_at is not None:
            return
        sn.started_at = self.now
        self._execute(addr, sn.node.start(self.now))

    def _deliver(self, addr: Addr, inp: Input) -> None:
        sn = self.nodes.get(addr)
        if sn is None or not sn.alive:
            return
        if sn.paused:
            sn.backlog.append(inp)
            return
        self._execute(addr, sn.node.handle(inp, self.now))

    def latency(self, a: Addr, b: Addr) -> float:
        row = self._latency.get(a)
        if row is not None:
            lat = row.get(b)
            if lat is not None:
                return lat
        key = _pair(a, b)
        lat = self.net.fixed_latency.get(key)
        if lat is None:
            if self.net.underlay is not None:
                lat = self.net.underlay.latency(a, b)
            else:
                lat = self.rng.uniform(self.net.latency_min, self.net.latency_max)
        # Both directions, one row per node: no pair tuple to build per send.
        self._latency.setdefault(a, {})[b] = lat
        self._latency.setdefault(b, {})[a] = lat
        return lat

    def _cut(self, a: Addr, b: Addr) -> bool:
        ga, gb = self._group.get(a, 0), self._group.get(b, 0)
        if ga == gb:
            return False
        if self._one_way:
            return (ga, gb) in self._one_way
        return True

    def _execute(self, src: Addr, outputs: list[Output]) -> None:
        if not outputs:
            return
        sn = self.nodes[src]
        me = self.ids[src]
        observers = self.observers
        if len(observers) != self._observed:
            self._watching = {}
            self._observed = len(observers)
        by_class = self._watching
        now = self.now
        for out in outputs:
            # isinstance, not `match`: this loop runs for every output of
            # every node, and a class pattern with arguments costs more.
            if isinstance(out, Send):
                to = out.to
                self._send(src, me, (to.host, to.port), out.msg, out.reliable)
            elif isinstance(out, SetTimer):
                timer = out.timer
                self._seq = seq = self._seq + 1
                sn.timers[(id(timer.kind), timer.key)] = seq
                heapq.heappush(self._heap, (now + out.delay, seq, _TIMER, src, (timer, seq)))
            elif isinstance(out, CancelTimer):
                timer = out.timer
                sn.timers.pop((id(timer.kind), timer.key), None)
            elif isinstance(out, CloseConnection):
                peer = out.peer
                self._close(src, me, (peer.host, peer.port))
            elif isinstance(out, LeaveComplete) and src in self._exit_on_leave:
                self._exit_on_leave.discard(src)
                self.stop(me)
            cls = out.__class__
            watching = by_class.get(cls)
            if watching is None:
                watching = by_class[cls] = tuple(o for o in observers if _wants(o, cls))
            for obs in watching:
                obs(now, me, out)

    def _send(self, src: Addr, me: NodeId, dst: Addr, msg: Message, reliable: bool) -> None:
        name = type(msg).__name__
        if self.use_codec:
            memo = self._frame_memo
            if memo is not None and memo[0] is msg and memo[1] is me:
                # The same message object to another peer (a broadcast's
                # eager push): the same bytes, decoded once. Messages are
                # immutable, so the receivers may share the decoded copy.
                _, _, size, sender, msg = memo
            else:
                frame = codec.encode(me, msg, self.config.max_frame)
                size = len(frame)
                original = msg
                sender, msg = codec.decode(frame, self.config.max_frame)
                self._frame_memo = (original, me, size, sender, msg)
        else:
            sender, size = me, 0
        traffic = self.traffic
        traffic.messages[name] += 1
        traffic.bytes[name] += size
        target = self.nodes.get(dst)
        # self.latency(src, dst), its common case inline
        row = self._latency.get(src)
        lat = row.get(dst) if row is not None else None
        if lat is None:
            lat = self.latency(src, dst)
        now = self.now
        if not reliable:
            if (
                target is None
                or (self._group and self._cut(src, dst))
                or (self.net.loss and self.rng.random() < self.net.loss)
            ):
                traffic.dropped[name] += 1
                return
            if not target.alive:
                traffic.dropped[name] += 1
                if target.refuses:  # ICMP port unreachable, one round trip later
                    self._push(now + 2 * lat, _DELIVER, src, PeerRefused(self.ids[dst]))
                return
            if self._healed is not None:
                self._crossing(src, dst, lat)
            self._seq = seq = self._seq + 1
            heapq.heappush(self._heap, (now + lat, seq, _DELIVER, dst, Received(sender, msg, True)))
            return
        key = (src, dst) if src <= dst else (dst, src)
        if key not in self._streams:
            if target is None or not target.alive or self._cut(src, dst) or self._cut(dst, src):
                traffic.dropped[name] += 1
                peer = self.ids.get(dst) or NodeId("?", dst[0], dst[1])
                after = self.net.connect_timeout
                if target is not None and target.refuses and not self._cut(src, dst):
                    after = 2 * lat  # a TCP reset
                    self._push(now + after, _DELIVER, src, PeerRefused(peer))
                self._push(now + after, _DELIVER, src, ConnectFailed(peer))
                return
            self._streams[key] = (src, now + lat)
            if self._healed is not None:
                self._crossing(src, dst, lat)
            self._push(now + 2 * lat, _DELIVER, src, ConnectionUp(self.ids[dst]))
            self._push(now + lat, _DELIVER, dst, ConnectionUp(me))
        self._seq = seq = self._seq + 1
        heapq.heappush(self._heap, (now + lat, seq, _DELIVER, dst, Received(sender, msg)))

    def _close(self, src: Addr, me: NodeId, dst: Addr) -> None:
        key = _pair(src, dst)
        stream = self._streams.get(key)
        if stream is not None:
            opener, accepted_at = stream
            if opener != src and self.now < accepted_at:
                # The peer opened a new stream whose first bytes have not
                # reached us: our close is for the old one, already gone.
                return
            del self._streams[key]
            self._push(self.now + self.latency(src, dst), _DOWN, dst, (key, ConnectionDown(me)))

    def _break_streams(self, addr: Addr, delay: Callable[[Addr], float]) -> None:
        """Break every stream of `addr`: the peer hears ConnectionDown."""
        me = self.ids[addr]
        for key in [k for k in self._streams if addr in k]:
            del self._streams[key]
            other = key[1] if key[0] == addr else key[0]
            self._push(self.now + delay(other), _DOWN, other, (key, ConnectionDown(me)))

    def _crash(self, addr: Addr, refuses: bool = False) -> None:
        sn = self.nodes[addr]
        if not sn.alive:
            return
        sn.alive = False
        sn.refuses = refuses
        sn.stopped_at = self.now
        sn.timers.clear()
        sn.backlog.clear()
        self._break_streams(addr, lambda other: self.latency(addr, other))

    def _set_paused(self, nid: NodeId, paused: bool) -> None:
        addr = (nid.host, nid.port)
        sn = self.nodes[addr]
        if not sn.alive or sn.paused == paused:
            return
        sn.paused = paused
        if not paused:
            backlog, sn.backlog = sn.backlog, []
            for inp in backlog:
                self._deliver(addr, inp)

    def _partition(self, groups: list[list[NodeId]], one_way: set[tuple[int, int]]) -> None:
        self._healed = None
        self._group = {(n.host, n.port): i + 1 for i, g in enumerate(groups) for n in g}
        self._one_way = one_way
        for key in [k for k in self._streams if self._cut(*k) or self._cut(k[1], k[0])]:
            del self._streams[key]
            a, b = key
            t = self.now + self.net.break_after
            self._push(t, _DOWN, a, (key, ConnectionDown(self.ids[b])))
            self._push(t, _DOWN, b, (key, ConnectionDown(self.ids[a])))

    def _heal(self) -> None:
        self._healed = self._group or None
        self.first_across_heal = None
        self._group = {}
        self._one_way = set()

    def _crossing(self, src: Addr, dst: Addr, lat: float) -> None:
        """A packet leaves `src` for `dst` after a heal: note when the first
        one to cross the healed cut arrives (the earliest arrival; once the
        clock passes it, no later packet can arrive before it)."""
        healed = self._healed
        assert healed is not None
        first = self.first_across_heal
        if first is not None and self.now >= first:
            self._healed = None
            return
        arrival = self.now + lat
        if (first is None or arrival < first) and healed.get(src, 0) != healed.get(dst, 0):
            self.first_across_heal = arrival
