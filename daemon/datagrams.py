"""Datagrams between agents (UDP), for `Send(reliable=False)`: the half of
`daemon.transport` that has no connections.

Rules of this module: one frame per datagram; nothing waits on the network
on the driver's behalf (a full queue drops, and counts); nothing a peer
sends or makes us send can end the loops (a bad datagram is refused, a send
that fails is dropped, each counted and logged through a throttle).

Theory of operation
-------------------
- **Sending.** The driver queues (address, sealed frame) with `send`, which
  never blocks; one task drains the queue into the socket, bound on the same
  port number as the TCP listener. A send that fails for any reason (no
  route, a host the socket cannot use) drops that datagram only.
- **Receiving.** One task reads the socket and hands every datagram that
  opens and decodes to the driver's sink with `send_nowait` (full: dropped
  and counted): datagrams may be lost.
- **Refusals by ICMP.** The socket asks the kernel for its ICMP errors
  (Linux `IP_RECVERR`): a port-unreachable from the destination host itself
  (not a router's host- or net-unreachable) is reported for the member the
  datagram went to (`overlay.io.PeerRefused`; the last few thousand
  datagram destinations are remembered for that).
- **Sources.** Without a cluster key, a datagram whose claimed sender's
  host is not its source address is refused (`check_source`).
- **Replays.** With a key, a sealed datagram carries its sender's stamp (a
  clock in microseconds, strictly increasing per sender: see
  `daemon.security`). `ReplayWindow` remembers, per sender, the highest
  stamp and the stamps taken within `replay_reorder` below it: a stamp
  taken before, or older than that, or further than `max_clock_skew` from
  our clock, is refused (`udp:replay`). The senders are an LRU of
  `replay_senders` entries; an entry is made only for a datagram that
  opened with the key, so only a key holder can push others out. A sender
  forgotten (or heard first after we started) is covered by the clock
  bound alone: a recorded datagram could be replayed once to it within
  `max_clock_skew`.
- **Addresses.** Datagrams go only to IP literals (or seeds from the local
  configuration): `daemon.addresses`. Anything else is dropped before the
  socket sees it, so a peer cannot make us query DNS or raise.
"""

from __future__ import annotations

import logging
import socket as stdsocket
import struct
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Hashable

import trio

from daemon.addresses import claims_source, ip_literal, may_contact
from daemon.framing import FrameCodec, FrameError, ReplayError
from daemon.logs import Throttle, event
from daemon.metrics import Metrics
from overlay import codec
from overlay.codec import DecodeError
from overlay.ids import NodeId
from overlay.io import Input, PeerRefused, Received

log = logging.getLogger("overlay.transport")

Addr = tuple[str, int]

# The largest UDP payload over IPv4.
MAX_DATAGRAM = 65507
# A marker in the send queue: everything before it has been sent.
_FLUSH: Addr = ("", 0)
# Linux socket options and ICMP codes for datagram errors (the socket
# module has no names for them): IP_RECVERR / IPV6_RECVERR, and the
# origin, type and code of a port-unreachable in `sock_extended_err`.
RECVERR = {stdsocket.AF_INET: (stdsocket.IPPROTO_IP, 11), stdsocket.AF_INET6: (41, 25)}
_PORT_UNREACHABLE = {(2, 3, 3), (3, 1, 4)}  # (SO_EE_ORIGIN_ICMP, 3, 3), (..._ICMP6, 1, 4)
_EXTENDED_ERR = struct.Struct("=IBBBBII")
# Datagram destinations remembered to name the member an ICMP error is about.
_DESTINATIONS_MAX = 4096

BadFrame = Callable[[str, str, str, str], None]


class Datagrams:
    """The UDP side of a `Transport`: its queue, its loops, its refusals."""

    def __init__(
        self,
        frames: FrameCodec,
        sink: trio.MemorySendChannel[Input],
        metrics: Metrics,
        *,
        max_frame: int,
        queue: int,
        check_source: bool,
        window: ReplayWindow | None,
        bad: BadFrame,
    ) -> None:
        self.frames = frames
        self.sink = sink
        self.metrics = metrics
        self.max_frame = max_frame
        self.max_wire = max_frame + frames.overhead
        self.raw: stdsocket.socket | None = None  # for its ICMP error queue
        self.check_source = check_source
        self.window = window
        self._bad = bad
        self._send, self._recv = trio.open_memory_channel[tuple[Addr, bytes]](queue)
        self._flushed = trio.Event()
        self._destinations: dict[Addr, NodeId] = {}  # datagram address -> member
        self._throttle = Throttle()

    # ------------------------------------------------------- driver side

    def send(self, to: NodeId, frame: bytes) -> bool:
        """Queue an encoded frame for `to` (never blocks). False if dropped."""
        if not may_contact(to):
            self.metrics.drops["udp_address"] += 1
            self._warn("udp-address", "datagram not sent: not an IP address", to.addr, "")
            return False
        data = self.frames.seal_datagram(frame)
        if len(data) > MAX_DATAGRAM:
            self.metrics.drops["udp_oversize"] += 1
            return False
        key = (to.host, to.port)
        dests = self._destinations
        if dests.get(key) != to:
            dests.pop(key, None)
            if len(dests) >= _DESTINATIONS_MAX:
                del dests[next(iter(dests))]
            dests[key] = to
        try:
            self._send.send_nowait((key, data))
        except trio.WouldBlock:
            self.metrics.drops["udp_send"] += 1
            return False
        return True

    async def flush(self) -> None:
        """Return once the datagrams queued before now have been sent."""
        self._flushed = trio.Event()
        await self._send.send((_FLUSH, b""))
        await self._flushed.wait()

    # ------------------------------------------------------------- loops

    async def receive_loop(self, udp: trio.socket.SocketType) -> None:
        while True:
            try:
                data, addr = await udp.recvfrom(MAX_DATAGRAM + 1)
            except OSError as exc:
                # An ICMP error about a datagram we sent: read the details.
                event(log, logging.DEBUG, "udp receive error", error=str(exc))
                await self._read_icmp_errors()
                continue
            remote = fmt_addr(addr)
            if len(data) > self.max_wire:
                self._bad("udp", "length", remote, f"datagram of {len(data)} bytes")
                continue
            try:
                frame, stamp = self.frames.open_datagram(data)
                sender, msg = codec.decode(frame, self.max_frame)
                if self.window is not None:
                    self.window.admit(sender, stamp, time.time())
            except (FrameError, DecodeError) as exc:
                self._bad("udp", frame_reason(exc), remote, str(exc))
                continue
            except Exception as exc:  # a bug below us: the datagram goes, the agent stays
                self.metrics.errors["frame"] += 1
                self._bad("udp", "internal", remote, repr(exc))
                continue
            if self.check_source and not claims_source(sender, ip_literal(str(addr[0]))):
                self._bad("udp", "spoofed", remote, f"claims to be {sender}")
                continue
            self.metrics.count_received(type(msg).__name__, len(data))
            try:
                self.sink.send_nowait(Received(sender, msg, datagram=True))
            except trio.WouldBlock:
                self.metrics.drops["inputs"] += 1

    async def send_loop(self, udp: trio.socket.SocketType) -> None:
        async for addr, data in self._recv:
            if addr == _FLUSH:
                self._flushed.set()
                continue
            try:
                await udp.sendto(data, addr)
            except Exception as exc:
                # No route, a family this socket cannot reach, a host the
                # resolver refuses (ValueError, UnicodeError): this one only.
                self.metrics.drops["udp_error"] += 1
                error = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
                self._warn("udp-send", "datagram not sent", fmt_addr(addr), error)

    def _warn(self, key: str, msg: str, to: str, error: str) -> None:
        allowed, held = self._throttle.allow(key)
        if allowed:
            event(log, logging.WARNING, msg, to=to[:300], error=error[:200], suppressed=held)

    async def _read_icmp_errors(self) -> None:
        """Drain the UDP socket's error queue (`IP_RECVERR`): report every
        port-unreachable that the destination host itself sent about a
        datagram to a member (`PeerRefused`)."""
        raw = self.raw
        if raw is None:
            return
        flags = getattr(stdsocket, "MSG_ERRQUEUE", 0) | stdsocket.MSG_DONTWAIT
        for _ in range(64):
            try:
                _, ancdata, _, dest = raw.recvmsg(1, 512, flags)
            except OSError:  # empty (EAGAIN), or no error queue on this system
                return
            for level, kind, data in ancdata:
                refused = _refusal(level, kind, data, dest)
                node = self._destinations.get(refused) if refused else None
                if node is not None:
                    self.metrics.connections["refused_datagram"] += 1
                    try:
                        self.sink.send_nowait(PeerRefused(node))
                    except trio.WouldBlock:
                        await self.sink.send(PeerRefused(node))


class ReplayWindow:
    """Which sealed datagrams each sender has had taken (see the module
    docstring): `admit` raises ReplayError for a stamp not fresh."""

    # Stamps remembered per sender below its highest, at most: a datagram
    # overtaken by more than this many later ones is refused (guess: far
    # more reordering than a network shows, and 64 ints per sender).
    DEPTH = 64

    def __init__(self, *, senders: int, reorder: float, skew: float) -> None:
        self.senders = senders
        self.reorder = int(reorder * 1e6)
        self.skew = int(skew * 1e6)
        self._seen: OrderedDict[Hashable, _Seen] = OrderedDict()

    def admit(self, sender: Hashable, stamp: int, now: float) -> None:
        lag = int(now * 1e6) - stamp
        if abs(lag) > self.skew:
            raise ReplayError(
                f"stamped {lag / 1e6:+.1f} s from our clock: replayed, or the clocks "
                f"differ by more than max_clock_skew ({self.skew / 1e6:g} s)"
            )
        seen = self._seen.get(sender)
        if seen is None:
            if len(self._seen) >= self.senders:
                self._seen.popitem(last=False)
            self._seen[sender] = _Seen(stamp)
            return
        self._seen.move_to_end(sender)
        seen.admit(stamp, self.reorder, self.DEPTH)

    def __len__(self) -> int:
        return len(self._seen)


class _Seen:
    """One sender's stamps: the highest, those taken within the window below
    it (sorted), and a floor under which nothing is taken."""

    __slots__ = ("floor", "highest", "recent")

    def __init__(self, stamp: int) -> None:
        self.highest = stamp
        self.floor = 0
        self.recent = [stamp]

    def admit(self, stamp: int, reorder: int, depth: int) -> None:
        recent = self.recent
        if stamp > self.highest:  # in order: the usual case
            recent.append(stamp)
            self.highest = stamp
            edge = stamp - reorder
            if recent[0] < edge:
                del recent[: bisect_left(recent, edge)]
        else:
            if stamp <= self.floor or stamp < self.highest - reorder:
                raise ReplayError("older than the replay window")
            i = bisect_left(recent, stamp)
            if i < len(recent) and recent[i] == stamp:
                raise ReplayError("a datagram taken before")
            recent.insert(i, stamp)
        if len(recent) > depth:
            self.floor = max(self.floor, recent.pop(0))


def frame_reason(exc: Exception) -> str:
    """The `bad_frames` reason for a frame that did not open or decode."""
    if isinstance(exc, ReplayError):
        return "replay"
    return "sealed" if isinstance(exc, FrameError) else "decode"


def _refusal(level: int, kind: int, data: bytes, dest: object) -> Addr | None:
    """The (host, port) a datagram went to, if this control message of the
    error queue says the destination host refused it: an ICMP
    port-unreachable whose sender (the "offender") is that host."""
    if (level, kind) not in RECVERR.values() or len(data) < _EXTENDED_ERR.size + 8:
        return None
    _, origin, icmp_type, code, _, _, _ = _EXTENDED_ERR.unpack_from(data)
    if (origin, icmp_type, code) not in _PORT_UNREACHABLE:
        return None
    if not isinstance(dest, tuple) or len(dest) < 2:
        return None
    host, port = str(dest[0]), int(dest[1])
    offender = data[_EXTENDED_ERR.size :]
    (family,) = struct.unpack_from("=H", offender)
    try:
        if family == stdsocket.AF_INET:
            sender = stdsocket.inet_ntop(stdsocket.AF_INET, offender[4:8])
        elif family == stdsocket.AF_INET6:
            sender = stdsocket.inet_ntop(stdsocket.AF_INET6, offender[8:24])
        else:
            return None
    except (ValueError, OSError):
        return None
    return (host, port) if sender == host else None


def fmt_addr(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)
