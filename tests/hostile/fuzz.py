"""Hostile frames by the thousand, and a driver that throws them at live
agents: shared by tests/hostile/test_fuzz.py and bench/hostile.py.

What `Frames` makes, from one `random.Random` (same seed, same frames):

- *valid* frames of every message type of `overlay.messages.TAGS`, with
  ordinary values: the field types and bounds are read from the message
  classes, so a message added later is fuzzed too;
- *extreme* frames: the same schema with every value at or near its
  bounds (0, the field's maximum, 2**63-1; floats nan, inf, -1; strings and
  arrays at their caps; 64-entry tag maps), and, unless `lethal=False`,
  the two values issue 12 found lethal (an incarnation at the limit about a
  real member, a NUL in a host);
- *mutated* frames: a valid or extreme frame with bits flipped, cut short,
  bytes inserted or deleted, or two frames spliced;
- *junk*: random bytes, msgpack that is not a frame (wrong arity, unknown
  tag or version, nesting thousands deep), and for streams, length prefixes
  that are zero, over the limit, or promise bytes that never come.

Safety: whatever an agent can decode is checked here first, with the same
codec: every node id in it (payloads that are frames themselves included)
must name a real member of the cluster under test, an address in
127.99.0.0/16 where nothing listens, or (lethal only) a host with a NUL,
which no socket call accepts. Anything else is made again. So no agent is
led to dial or resolve anything outside the test: not a name (DNS), not
another address, not another test's agents on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import math
import random
import socket as stdsocket
import struct
import time
import types
import typing
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import trio

from overlay import codec, messages
from overlay.ids import NodeId
from tests.hostile.helpers import (
    ATTACKER_HOST,
    INT_MAX,
    AgentProc,
    NodeTuple,
    frame,
    prefixed,
)

# The largest datagram we send (IPv4 UDP payload limit).
MAX_DATAGRAM = 65507
# Frames stay under the agents' default frame limit (64 KiB), except the
# junk meant to be over it.
MAX_FRAME = 64 * 1024
FAKE_NET = ipaddress.ip_network("127.99.0.0/16")
TOPICS = ("news", "t", "$overlay.members", "a" * 256, "", "$overlay.query")
# Control API operations the junk may name: none that changes the agent
# (leave, join, tags, keys...), whatever arguments it is given.
CONTROL_OPS = (
    "members",
    "stats",
    "handshake",
    "publish",
    "subscribe",
    "unsubscribe",
    "monitor",
    "info",
    "logs",
)
CONTROL_FORBIDDEN = frozenset(
    {"leave", "join", "tags", "keys", "force-leave", "force_leave", "query", "rtt"}
)


def _pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def _fake_ids(rng: random.Random, n: int) -> list[NodeTuple]:
    """Ids in 127.99.0.0/16 with two-digit octets (a flipped bit cannot
    turn one into 127.0.0.1: the length differs)."""
    return [
        (f"fake{i}", f"127.99.{rng.randrange(10, 99)}.{rng.randrange(10, 99)}", 9 + i % 3)
        for i in range(n)
    ]


class Frames:
    """A seeded source of hostile frames for a cluster of `members`."""

    def __init__(
        self, rng: random.Random, members: Sequence[NodeTuple], *, lethal: bool = True
    ) -> None:
        self.rng = rng
        self.members: list[NodeTuple] = [(str(m[0]), str(m[1]), int(m[2])) for m in members]
        self.lethal = lethal
        self.fakes = _fake_ids(rng, 50)
        self.nul_ids: list[NodeTuple] = [
            ("evil", "127.0.0.1\x00", 7946),
            ("evil2", "\x00", 1),
            (self.members[0][0], "127.99.10.10\x00x", 9) if self.members else ("e", "\x00", 2),
        ]
        self.classes = list(messages.TAGS.values())
        self.member_ports = {(m[1], m[2]) for m in self.members}
        self.kinds: Counter[str] = Counter()

    # ------------------------------------------------------------- values

    def node(self, extreme: bool = False) -> NodeTuple:
        if extreme and self.lethal and self.rng.random() < 0.1:
            return self.rng.choice(self.nul_ids)
        if self.members and self.rng.random() < 0.5:
            return self.rng.choice(self.members)
        return self.rng.choice(self.fakes)

    def value(self, tp: Any, meta: typing.Mapping[str, Any], extreme: bool, depth: int = 0) -> Any:
        rng = self.rng
        origin = typing.get_origin(tp)
        cap = meta.get("max_len")
        if tp is NodeId:
            return list(self.node(extreme))
        if tp is bool:
            return rng.random() < 0.5
        if tp is int:
            lo, hi = meta.get("lo", 0), meta.get("hi", INT_MAX)
            if extreme:
                return rng.choice([lo, hi, max(lo, hi - 1), min(hi, lo + 1), rng.randint(lo, hi)])
            return rng.randint(lo, min(hi, lo + 1000))
        if tp is float:
            if extreme:
                return rng.choice([0.0, -1.0, -0.0, 1e308, -1e308, math.inf, -math.inf, math.nan])
            return rng.random() * 10
        if tp is str:
            cap = cap if cap is not None else messages.MAX_STR
            if extreme:
                return rng.choice(
                    [
                        "x" * cap,
                        "\U0001f600" * min(cap, 200),
                        "",
                        "\x00\n\r\t",
                        rng.choice(TOPICS)[:cap],
                    ]
                )
            if self.members and rng.random() < 0.5:
                return rng.choice(self.members)[0][:cap]
            return rng.choice((*TOPICS[:3], TOPICS[-1]))[:cap]
        if tp is bytes:
            if extreme:
                n = rng.choice([0, 1, 1024, 16 * 1024, 60 * 1024])
            else:
                n = rng.choice([0, 8, 64, 256])
            if cap is not None:
                n = min(n, cap)
            if not extreme and rng.random() < 0.1:
                if rng.random() < 0.3:
                    # A query, as $overlay.query carries.
                    return frame(
                        self.node(),
                        messages.Query,
                        id=rng.getrandbits(63),
                        name=rng.choice(TOPICS)[:128],
                        payload=rng.randbytes(rng.choice([0, 8, 1024])),
                        nodes=[],
                        tags=rng.choice([{}, {"role": "^w"}, {"role": "(a+)+$"}]),
                        timeout_ms=rng.choice([1, 1000, 600_000]),
                        ack=True,
                    )
                # Sometimes a frame inside (what $overlay.members carries).
                return frame(
                    self.node(),
                    messages.MemberUpdates,
                    updates=[self.state(False)],
                )
            return rng.randbytes(n)
        if origin is tuple:
            item = typing.get_args(tp)[0]
            cap = cap if cap is not None else messages.MAX_ITEMS
            if extreme:
                # At the cap now and then; big arrays of records cost time to
                # build, and most would not fit a frame.
                big = cap if rng.random() < 0.05 else min(cap, 128)
                n = rng.choice([0, 1, min(cap, 16), big])
            else:
                n = rng.randint(0, min(3, cap))
            if depth > 1:
                n = min(n, 4)
            if n > 16 and not messages.is_record(item) and item is not NodeId:
                one = self.item(item, extreme, depth + 1)
                return [one] * n  # the same scalar n times: cheap, as big on the wire
            return [self.item(item, extreme, depth + 1) for _ in range(n)]
        if origin is dict:
            cap = cap if cap is not None else 64
            if extreme:
                return {
                    f"k{i}" * 4: "v" * rng.choice([1, 100]) for i in range(rng.choice([cap, 1]))
                }
            return rng.choice([{}, {"role": "web"}])
        if origin in (types.UnionType, typing.Union):
            inner = next(a for a in typing.get_args(tp) if a is not type(None))
            if rng.random() < 0.3:
                return None
            return self.value(inner, meta, extreme, depth)
        if messages.is_record(tp):
            return self.record(tp, extreme, depth + 1)
        raise TypeError(f"no generator for {tp!r}")

    def item(self, tp: Any, extreme: bool, depth: int) -> Any:
        if messages.is_record(tp):
            return self.record(tp, extreme, depth)
        return self.value(tp, {}, extreme, depth)

    def record(self, cls: type, extreme: bool, depth: int = 0) -> list[Any]:
        if cls is messages.MemberState:
            return self.state(extreme)
        hints = _hints(cls)
        return [
            self.value(hints[name], meta, extreme, depth)
            for name, meta in messages.record_fields(cls)
        ]

    def state(self, extreme: bool) -> list[Any]:
        """A member state; extreme: an incarnation at or near the limit
        (about a real member when lethal), any status, big tags."""
        rng = self.rng
        node = list(self.node(extreme))
        if extreme:
            if self.lethal and self.members and rng.random() < 0.3:
                node = list(rng.choice(self.members))
            inc = rng.choice([0, 1, INT_MAX, INT_MAX - 1, 2**62, 2**32])
            if not self.lethal and tuple(node) in self.members:
                inc = rng.randint(0, 5)  # at the limit, it ends today's agents
            tags = {f"k{i}": "v" * 30 for i in range(64)} if rng.random() < 0.1 else {}
        else:
            inc, tags = rng.randint(0, 5), rng.choice([{}, {"role": "web"}])
        status = rng.randint(0, 3)
        accuser = list(self.node()) if status == 1 and rng.random() < 0.5 else None
        return [node, inc, status, tags, accuser]

    # ------------------------------------------------------------- frames

    def message(self, extreme: bool) -> bytes:
        cls = self.rng.choice(self.classes)
        hints = _hints(cls)
        # The values are wire-ready already: packed as they are.
        values = [self.value(hints[f.name], f.metadata, extreme) for f in _fields(cls)]
        body = [codec.PROTOCOL_VERSION, list(self.node(extreme)), _TAG_OF[cls], *values]
        data: bytes = _pack(body)
        if len(data) > MAX_DATAGRAM - 100:
            return frame(self.node(), messages.Nack, seq=self.rng.randint(0, INT_MAX))
        return data

    def mutate(self, data: bytes) -> bytes:
        rng = self.rng
        buf = bytearray(data)
        how = rng.randrange(6)
        if how == 0 and buf:
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(buf))
                buf[i] ^= 1 << rng.randrange(8)
        elif how == 1 and buf:
            del buf[rng.randrange(len(buf)) :]
        elif how == 2:
            buf += rng.randbytes(rng.randint(1, 64))
        elif how == 3 and buf:
            i = rng.randrange(len(buf))
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        elif how == 4 and buf:
            i = rng.randrange(len(buf))
            del buf[i : i + rng.randint(1, 8)]
        else:
            other = self.message(rng.random() < 0.5)
            buf = buf[: rng.randint(0, len(buf))] + other[rng.randint(0, len(other)) :]
        return bytes(buf)

    def junk(self) -> bytes:
        rng = self.rng
        how = rng.randrange(7)
        if how == 0:
            return rng.randbytes(rng.randint(1, 2000))
        if how == 1:  # nested thousands deep
            return b"\x91" * rng.choice([100, 5000, 60000]) + b"\xc0"
        if how == 2:  # unknown tag or version
            tag = rng.choice([0, 8, 15, 22, 31, 38, 63, 64, 255, 2**40, -1])
            return _pack([codec.PROTOCOL_VERSION, list(self.node()), tag])
        if how == 3:
            version = rng.choice([0, 2, 255, -1, "1", None])
            return _pack([version, list(self.node()), 32, 1, list(self.node()), []])
        if how == 4:  # a known tag with the wrong arity or types
            tag = rng.choice(list(messages.TAGS))
            odd: list[Any] = [None, 1.5, "x", b"y", [], {}, -5, 2**64 - 1]
            extra = [rng.choice(odd)] * rng.randint(0, 8)
            return _pack([codec.PROTOCOL_VERSION, list(self.node()), tag, *extra])
        if how == 5:  # not an array at all
            return _pack(rng.choice([{"a": 1}, 5, "frame", b"\x00" * 10, None, [1] * 70000]))
        # A sender that is not a node id.
        sender = rng.choice([[], ["n", "h"], [1, 2, 3], ["n", "h", -1], ["n" * 500, "h", 1]])
        return _pack([codec.PROTOCOL_VERSION, sender, 35, 1])

    def next(self) -> bytes:
        """One hostile frame (safe for the machine, see the module doc)."""
        for _ in range(100):
            r = self.rng.random()
            if r < 0.3:
                kind, data = "valid", self.message(False)
            elif r < 0.5:
                kind, data = "extreme", self.message(True)
            elif r < 0.8:
                kind, data = "mutated", self.mutate(self.message(self.rng.random() < 0.3))
            else:
                kind, data = "junk", self.junk()
            if len(data) <= MAX_DATAGRAM and self.safe(data):
                self.kinds[kind] += 1
                return data
        self.kinds["fallback"] += 1
        return b"\xc1"  # never a valid msgpack byte

    def stream_prefix(self) -> bytes:
        """A length prefix no agent should accept."""
        size = self.rng.choice([0, MAX_FRAME + 1024, 2**31, 2**32 - 1, 10 * 2**20])
        return struct.pack(">I", size) + self.rng.randbytes(self.rng.randint(0, 100))

    # ------------------------------------------------------------- safety

    def safe(self, data: bytes, depth: int = 0) -> bool:
        """Every node id an agent could read from `data` is harmless."""
        try:
            sender, msg = codec.decode(data, 1 << 20)
        except Exception:  # the codec's contract is DecodeError; trust nothing here
            return True  # an agent cannot read it either
        if not self._safe_id(sender):
            return False
        return all(self._safe_value(v, depth) for v in _values(msg))

    def _safe_value(self, v: Any, depth: int) -> bool:
        if isinstance(v, NodeId):
            return self._safe_id(v)
        if isinstance(v, bytes | bytearray) and depth < 2:
            return self.safe(bytes(v), depth + 1)
        return True

    def _safe_id(self, node: Any) -> bool:
        host, port = str(node[1]), node[2]
        if "\x00" in host:
            return self.lethal
        if (host, port) in self.member_ports:
            return True
        try:
            return ipaddress.ip_address(host) in FAKE_NET
        except ValueError:
            return False


_HINTS: dict[type, dict[str, Any]] = {}
_FIELDS: dict[type, tuple[dataclasses.Field[Any], ...]] = {}
_TAG_OF = {cls: tag for tag, cls in messages.TAGS.items()}


def _fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = dataclasses.fields(cls)
    return fields


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


_SCALARS = (int, float, str, bool, type(None))


def _values(msg: Any) -> list[Any]:
    """The node ids and byte strings inside a decoded message."""
    out: list[Any] = []
    stack = [msg]
    while stack:
        v = stack.pop()
        t = type(v)
        if t in _SCALARS or t is dict:  # tag maps hold strings only
            continue
        if t is NodeId or t is bytes:
            out.append(v)
        elif t is tuple or isinstance(v, tuple):  # arrays and records
            stack.extend(x for x in v if type(x) not in _SCALARS)
        elif dataclasses.is_dataclass(v):
            stack.extend(getattr(v, f.name) for f in _fields(type(v)))
    return out


# --------------------------------------------------------------------------
# Control API junk


def control_junk(rng: random.Random) -> bytes:
    """One message for the control API that no agent should act on
    (malformed, or a harmless operation with bad arguments)."""
    header = struct.Struct(">I")
    how = rng.randrange(6)
    if how == 0:
        return rng.randbytes(rng.randint(1, 500))
    if how == 1:
        return header.pack(rng.choice([0, 2**31, 2**32 - 1, 2 * 2**20])) + rng.randbytes(20)
    if how == 2:
        body = rng.randbytes(rng.randint(1, 200))
        return header.pack(len(body)) + body
    if how == 3:
        body = _pack(rng.choice([[1, 2], 5, "x", None, b"\x00"]))
        return header.pack(len(body)) + body
    if how == 4:
        op = rng.choice([*CONTROL_OPS, "", "x" * 300, "LEAVE ", "nope"])
        request: dict[str, Any] = {
            "seq": rng.choice([1, -1, "1", None, 2**63, 1.5]),
            "op": op if op not in CONTROL_FORBIDDEN else "nope",
            "args": rng.choice([{}, [], "a", None, {"topic": 5}, {"version": 99}]),
        }
    else:
        op = rng.choice(CONTROL_OPS)
        request = {  # a harmless operation, bad arguments
            "seq": rng.randint(1, 1000),
            "op": op,
            "args": rng.choice(
                [
                    {"topic": ""},
                    {"topic": None, "payload": 3},
                    {"topic": "$overlay.members", "payload": "x"},
                    {"topic": "x" * 5000},
                    {"stream": "s"},
                    {"version": -1},
                    {"count": -5, "topic": "t"},
                    {"level": 5},
                    {"level": "loud"},
                ]
            ),
        }
    body = _pack(request)
    return header.pack(len(body)) + body


# --------------------------------------------------------------------------
# The driver


class FrameSource(typing.Protocol):
    """What the senders need: `Frames`, or frames made in advance."""

    rng: random.Random

    def next(self) -> bytes: ...

    def stream_prefix(self) -> bytes: ...


@dataclass
class Report:
    """What a fuzz run sent, and what the agents looked like meanwhile."""

    seed: int
    sent: Counter[str] = field(default_factory=Counter)  # frames per transport
    seconds: dict[str, float] = field(default_factory=dict)  # per phase
    tcp_sessions: int = 0
    tcp_closed_early: int = 0  # sessions the agent closed before we were done
    control_sessions: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    rss: list[tuple[float, dict[str, int]]] = field(default_factory=list)  # (t, name -> kB)

    def peak_growth_kb(self) -> dict[str, int]:
        if not self.rss:
            return {}
        first = self.rss[0][1]
        return {
            name: max(sample.get(name, 0) for _, sample in self.rss) - base
            for name, base in first.items()
        }

    def rate(self, transport: str) -> float:
        s = self.seconds.get(transport, 0.0)
        return self.sent[transport] / s if s > 0 else 0.0


async def sample_rss(
    agents: Sequence[AgentProc],
    report: Report,
    every: float,
    on_sample: Callable[[float, dict[str, int]], None] | None = None,
) -> None:
    t0 = time.monotonic()
    while True:
        sample = {a.name: a.rss_kb() for a in agents}
        t = round(time.monotonic() - t0, 2)
        report.rss.append((t, sample))
        if on_sample is not None:
            on_sample(t, sample)
        await trio.sleep(every)


async def fuzz_udp(
    agents: Sequence[AgentProc], frames: FrameSource, count: int, report: Report, burst: int = 100
) -> None:
    """`count` datagrams, from the attacker's address and from the
    members' own, to the agents in turn; a pause between bursts so that the
    agents process most of them rather than drop them all."""
    socks = []
    for host in (ATTACKER_HOST, "127.0.0.1"):
        sock = trio.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
        await sock.bind((host, 0))
        socks.append(sock)
    t0 = time.monotonic()
    try:
        for i in range(count):
            live = [a for a in agents if a.running]
            if not live:
                break  # every agent has died: nothing left to absorb
            data = frames.next()
            target = live[i % len(live)]
            with contextlib.suppress(OSError):
                await socks[i % 2].sendto(data, target.addr)
            report.sent["udp"] += 1
            if i % burst == burst - 1:
                await trio.sleep(0.01)
    finally:
        for sock in socks:
            sock.close()
    report.seconds["udp"] = time.monotonic() - t0


async def fuzz_tcp(
    agents: Sequence[AgentProc],
    frames: FrameSource,
    count: int,
    report: Report,
    concurrency: int = 8,
) -> None:
    """`count` frames over streams: sessions of 1-20 frames from one
    source address, most of them whole frames, the last one often a bad
    prefix, a frame cut short or junk; the agent may close a session early
    (that is a refusal, fine)."""
    rng = frames.rng
    send, recv = trio.open_memory_channel[tuple[AgentProc, str, list[bytes]]](concurrency)

    async def plan() -> None:
        # Sessions are planned in order from the seeded generator, until
        # `count` frames have gone out (a session the agent closes early
        # sends fewer than planned).
        async with send:
            # Bounded in sessions too: if no agent accepts any more (dead),
            # the plan still ends.
            for _ in range(count):
                live = [a for a in agents if a.running]
                if report.sent["tcp"] >= count or not live:
                    break
                n = rng.randint(1, 20)
                target = rng.choice(live)
                source = rng.choice((ATTACKER_HOST, "127.0.0.1"))
                chunks = [prefixed(frames.next()) for _ in range(n)]
                end = rng.random()
                if end < 0.15:
                    chunks[-1] = frames.stream_prefix()
                elif end < 0.3:
                    whole = chunks[-1]
                    chunks[-1] = whole[: rng.randint(1, max(1, len(whole) - 1))]
                await send.send((target, source, chunks))

    async def worker() -> None:
        async for target, source, chunks in recv:
            report.tcp_sessions += 1
            try:
                with trio.fail_after(5):
                    stream = await trio.open_tcp_stream(*target.addr, local_address=source)
            except (OSError, trio.TooSlowError):
                report.tcp_closed_early += 1
                continue
            try:
                with trio.fail_after(5):
                    for chunk in chunks:
                        await stream.send_all(chunk)
                        report.sent["tcp"] += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, trio.TooSlowError):
                report.tcp_closed_early += 1
            finally:
                with trio.move_on_after(1):
                    await stream.aclose()

    t0 = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(plan)
        for _ in range(concurrency):
            nursery.start_soon(worker)
    report.seconds["tcp"] = time.monotonic() - t0


async def fuzz_control(
    agents: Sequence[AgentProc], rng: random.Random, sessions: int, report: Report
) -> None:
    """`sessions` connections to the control APIs, each with a few junk
    messages; whatever comes back is read and dropped."""
    t0 = time.monotonic()
    for i in range(sessions):
        live = [a for a in agents if a.running]
        if not live:
            break
        agent = live[i % len(live)]
        path = agent.control.removeprefix("unix:")
        try:
            with trio.fail_after(5):
                stream = await trio.open_unix_socket(path)
        except (OSError, trio.TooSlowError):
            continue
        report.control_sessions += 1
        try:
            with trio.move_on_after(1):
                for _ in range(rng.randint(1, 5)):
                    await stream.send_all(control_junk(rng))
                with trio.move_on_after(0.02):
                    while await stream.receive_some(65536):
                        pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            with trio.move_on_after(1):
                await stream.aclose()
        report.sent["control"] += 1
    report.seconds["control"] = time.monotonic() - t0


async def run(
    agents: Sequence[AgentProc],
    frames: int,
    seed: int,
    *,
    lethal: bool = True,
    control_sessions: int = 200,
    sample_every: float = 0.5,
    on_sample: Callable[[float, dict[str, int]], None] | None = None,
) -> Report:
    """Half the frames by datagram, half over streams, then junk to the
    control APIs; RSS of every agent sampled throughout."""
    rng = random.Random(seed)
    factory = Frames(rng, [a.node for a in agents], lethal=lethal)
    report = Report(seed)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_rss, agents, report, sample_every, on_sample)
        await fuzz_udp(agents, factory, frames // 2, report)
        await fuzz_tcp(agents, factory, frames - frames // 2, report)
        await fuzz_control(agents, rng, control_sessions, report)
        await trio.sleep(sample_every)
        nursery.cancel_scope.cancel()
    report.kinds = factory.kinds
    return report
