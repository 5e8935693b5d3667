"""Streams and datagrams between agents, with the connection semantics of
`overlay.io`.

Rules of this module: it moves frames and reports what happened to them; it
takes no protocol decision. Everything it learns goes to the driver as
`overlay.io` inputs through one bounded channel (the *sink*).

Theory of operation
-------------------
- **Streams** (TCP, for `Send(reliable=True)`): one task per connection, in
  its own cancel scope, running a reader and a writer. Frames carry a 4-byte
  length prefix (`daemon.framing`). The writer drains a bounded per-stream
  queue that the driver fills with `send_nowait`: the driver never blocks; a
  peer too slow to keep its queue below the bound has its stream aborted (a
  stream may not lose messages, so it breaks instead).
- **Keys.** Streams are keyed by the peer's address (host, port): a contact
  dialled as `seed_id(host, port)` and the real node at that address share
  one stream. An outgoing stream is keyed by the address dialled; an incoming
  one by the address in the sender field of its first frame, which must
  arrive within `handshake_timeout` (a peer that connects and stalls is
  dropped). Every later frame on a stream must come from the same address.
- **Who is at the other end.** The first frame attributes an incoming
  stream only if it proves its sender: with a cluster key, by opening with
  the key against the challenge we sent at the stream's start (the stream's
  `StreamSeal`: a hello each way, then frames the writer seals in order;
  `daemon.security`); without one, by naming a sender whose host is the TCP
  peer's address (`check_source`, `daemon.admission`). The same holds for
  the frames that come back on a stream we dialled, unless we dialled a
  seed. Only an attributed stream can become the one an address's frames
  go to.
- **Current stream.** Two agents that dial each other at the same moment
  end up with two streams. Both are kept and read; sends go to the newest.
  Per key, `ConnectionUp` is reported when the number of open streams goes
  from 0 to 1 and `ConnectionDown` when it goes back to 0 because a stream
  broke or the peer closed it, so a stream that closes while a newer one is
  up reports nothing. A failed dial reports `ConnectFailed` only if no other
  stream to that address exists; otherwise its queued frames move to the one
  that does.
- **Local close** (`CloseConnection`): every stream of the key leaves the
  table at once (a later send dials afresh) and each is closed gracefully:
  the writer sends what was queued before the close, then half-closes; the
  reader keeps delivering until the peer closes its side, or `linger`
  expires. A half-close, not a full close, so that a peer still writing
  never meets a reset that would destroy what it had not read yet. A local
  close reports nothing.
- **Datagrams** (UDP, `Send(reliable=False)`) are `daemon.datagrams`,
  bound on the same port number as the TCP listener.
- **Refusals.** A host that answers "nothing listens here" is evidence that
  an agent's process is gone (`overlay.io.PeerRefused`): on a dial, that is
  ECONNREFUSED (a TCP reset); datagrams read ICMP errors for the same.
- **Bad input** from the network (a length prefix over the limit, a frame
  that does not open or decode, a replayed or spoofed frame, a changed
  sender, a stall) closes that
  stream, or drops that datagram; it is counted in `Metrics.bad_frames` and
  logged through a throttle. Nothing from the network can stop the agent.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket as stdsocket
from dataclasses import dataclass

import trio

from daemon.admission import IPAddress, claims_source, ip_literal, may_contact
from daemon.datagrams import RECVERR, Datagrams, ReplayWindow, fmt_addr, frame_reason
from daemon.errors import os_reason
from daemon.framing import FrameBuffer, FrameCodec, FrameError, StreamSeal, prefixed
from daemon.logs import Throttle, event
from daemon.metrics import Metrics
from overlay import codec
from overlay.codec import DecodeError
from overlay.ids import NodeId
from overlay.io import (
    ConnectFailed,
    ConnectionDown,
    ConnectionUp,
    Input,
    PeerRefused,
    Received,
    is_seed,
)

log = logging.getLogger("overlay.transport")

Addr = tuple[str, int]

# Frames queued for one stream are written together up to this many bytes.
_BATCH_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class TransportSettings:
    # A dial that has not connected after this long fails (guess; memberlist
    # uses 10 s for TCP, we prefer a quicker repair on a LAN).
    dial_timeout: float = 5.0
    # Frames queued per stream before the peer counts as stuck (guess: a
    # second of full-rate gossip).
    send_queue: int = 1024
    # Datagrams queued for sending before new ones are dropped (guess).
    udp_queue: int = 4096
    # How long a closing stream waits for the peer's side to close (guess).
    linger: float = 5.0
    # An incoming stream must send its first frame, and any frame must
    # complete, within this long (guess; defends against stalling peers).
    handshake_timeout: float = 10.0
    # Incoming streams not yet identified, at most (guess).
    max_unidentified: int = 256
    # Without a cluster key, a frame counts as its claimed sender's only if
    # that sender's host is the address it came from (a datagram's source,
    # the peer of a stream; a stream we dialled to a seed may name any):
    # otherwise anyone could speak for any member. Turn it off where an
    # agent's packets do not leave from its advertised address (behind a
    # NAT, or bound to 0.0.0.0 on a host with several routes), at the price
    # of that protection. With a key, the key proves the sender instead.
    check_source: bool = True
    # With a cluster key, a sealed datagram stamped further than this from
    # our clock is refused as a replay (guess: NTP keeps hosts within
    # milliseconds; a minute leaves room for a drifting clock and bounds how
    # late a recorded datagram can be replayed to an agent that has not
    # heard its sender since it started).
    max_clock_skew: float = 60.0
    # A sealed datagram may arrive this long after a later one of the same
    # sender and still be taken (guess: networks reorder by milliseconds, and
    # SWIM's answers are useless after its probe timeout, 0.5 s).
    replay_reorder: float = 2.0
    # Senders whose sealed datagrams are remembered against replay, the
    # least recently heard forgotten first (guess: above the clusters we
    # target; under a kilobyte each).
    replay_senders: int = 4096


class _Stream:
    """One TCP connection and its queue."""

    __slots__ = (
        "closing",
        "dial_id",
        "done",
        "ip",
        "key",
        "outbound",
        "peer",
        "queue_recv",
        "queue_send",
        "ready",
        "remote",
        "scope",
        "seal",
        "sid",
        "unidentified",
        "up",
    )

    def __init__(self, sid: int, outbound: bool, queue_size: int, seal: StreamSeal) -> None:
        self.sid = sid
        self.outbound = outbound
        self.seal = seal  # seals and opens this stream's frames
        self.ready = trio.Event()  # the peer's hello came: frames may be sealed
        if seal.ready:
            self.ready.set()
        self.key: Addr | None = None
        self.peer: NodeId | None = None  # who is at the other end, as last seen
        self.dial_id: NodeId | None = None  # the id we dialled (outbound)
        self.queue_send, self.queue_recv = trio.open_memory_channel[bytes | None](queue_size)
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self.up = False
        self.closing = False
        self.unidentified = False  # incoming, counted until its first frame
        self.ip: IPAddress | None = None  # the TCP peer's address
        self.remote = "?"


class Transport:
    def __init__(
        self,
        bind: Addr,
        frames: FrameCodec,
        sink: trio.MemorySendChannel[Input],
        metrics: Metrics,
        *,
        max_frame: int,
        settings: TransportSettings | None = None,
    ) -> None:
        self.me: NodeId | None = None  # set by the agent once it knows its port
        self.bind_addr = bind
        self.frames = frames
        self.sink = sink
        self.metrics = metrics
        self.max_frame = max_frame  # of a decoded frame
        self.max_wire = max_frame + frames.overhead  # of a sealed frame
        self.settings = settings or TransportSettings()
        self._check_source = self.settings.check_source and not frames.keyed
        self._streams: dict[Addr, list[_Stream]] = {}
        self._closing: dict[int, _Stream] = {}
        self._unidentified = 0
        self._sid = 0
        self._nursery: trio.Nursery | None = None
        self._sockets: tuple[trio.SocketListener, trio.socket.SocketType] | None = None
        self._throttle = Throttle()
        self._datagrams = Datagrams(
            frames,
            sink,
            metrics,
            max_frame=max_frame,
            queue=self.settings.udp_queue,
            check_source=self._check_source,
            window=ReplayWindow(
                senders=self.settings.replay_senders,
                reorder=self.settings.replay_reorder,
                skew=self.settings.max_clock_skew,
            )
            if frames.keyed
            else None,
            bad=self._bad,
        )
        self.bound: Addr | None = None

    # ----------------------------------------------------------- lifecycle

    async def run(self, *, task_status: trio.TaskStatus[Addr] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, then serve until cancelled (see `bind` and `serve`)."""
        await self.bind()
        await self.serve(task_status=task_status)

    async def bind(self) -> Addr:
        """Bind TCP and UDP on the same port; the bound (host, port). Errors
        (address in use, no such address) are raised as they are."""
        if self._sockets is None:
            self._sockets = await self._bind()
        assert self.bound is not None
        return self.bound

    async def close_sockets(self) -> None:
        """Release what `bind` opened, when `serve` will not run."""
        if self._sockets is not None:
            listener, udp = self._sockets
            self._sockets = None
            await listener.aclose()
            udp.close()

    async def serve(self, *, task_status: trio.TaskStatus[Addr] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports the bound address through `task_status`."""
        listener, udp = self._sockets if self._sockets is not None else await self._bind()
        self._sockets = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._accept_loop, listener)
                nursery.start_soon(self._datagrams.receive_loop, udp)
                nursery.start_soon(self._datagrams.send_loop, udp)
                assert self.bound is not None
                task_status.started(self.bound)
        finally:
            udp.close()

    async def _bind(self) -> tuple[trio.SocketListener, trio.socket.SocketType]:
        host, port = self.bind_addr
        last: OSError | None = None
        # Port 0 asks the system for a TCP port; the UDP socket must then get
        # the same number, which another program may hold: try again.
        for _ in range(1 if port else 20):
            listeners = await trio.open_tcp_listeners(port, host=host)
            listener = listeners[0]
            for extra in listeners[1:]:
                await extra.aclose()
            sockname = listener.socket.getsockname()
            family = listener.socket.family
            raw = stdsocket.socket(family, stdsocket.SOCK_DGRAM)
            recverr = RECVERR.get(family)
            if recverr is not None:
                with contextlib.suppress(OSError):  # not Linux: no refusals by datagram
                    raw.setsockopt(recverr[0], recverr[1], 1)
            udp = trio.socket.from_stdlib_socket(raw)
            self._datagrams.raw = raw
            try:
                await udp.bind((host, sockname[1]))
            except OSError as exc:
                udp.close()
                await listener.aclose()
                last = exc
                if exc.errno != errno.EADDRINUSE or port:
                    raise
                continue
            self.bound = (host, int(sockname[1]))
            return listener, udp
        assert last is not None
        raise last

    # ------------------------------------------------------- driver side

    def send(self, to: NodeId, frame: bytes, reliable: bool) -> bool:
        """Queue an encoded frame for `to` (called by the driver; never
        blocks). False if it was dropped."""
        if not reliable:
            return self._datagrams.send(to, frame)
        key = (to.host, to.port)
        streams = self._streams.get(key)
        st = streams[-1] if streams else self._dial(to, key)
        try:
            st.queue_send.send_nowait(frame)  # sealed by the writer, in stream order
        except trio.WouldBlock:
            self.metrics.drops["stream"] += 1
            event(log, logging.WARNING, "send queue full: aborting stream", peer=st.remote)
            st.scope.cancel()
            return False
        return True

    def close(self, peer: NodeId) -> None:
        """Close every stream to `peer`'s address after what is queued."""
        self._close_key((peer.host, peer.port))

    def _close_key(self, key: Addr) -> None:
        for st in self._streams.pop(key, []):
            st.closing = True
            self._closing[st.sid] = st
            try:
                st.queue_send.send_nowait(None)
            except trio.WouldBlock:
                st.scope.cancel()
            else:
                st.scope.deadline = min(
                    st.scope.deadline, trio.current_time() + self.settings.linger
                )

    def connections(self) -> dict[str, int]:
        up = sum(1 for streams in self._streams.values() for st in streams if st.up)
        dialling = sum(1 for streams in self._streams.values() for st in streams if not st.up)
        return {
            "peers": len(self._streams),
            "streams": up,
            "dialling": dialling,
            "closing": len(self._closing),
            "unidentified": self._unidentified,
        }

    async def aclose_all(self, timeout: float) -> None:
        """Close every stream gracefully and wait (at most `timeout`) until
        they are gone: used when leaving, so the last goodbyes get out."""
        for key in list(self._streams):
            self._close_key(key)
        with trio.move_on_after(timeout):
            for st in list(self._closing.values()):
                await st.done.wait()
            await self._datagrams.flush()

    # ------------------------------------------------------------ streams

    def _next_sid(self) -> int:
        self._sid += 1
        return self._sid

    def _dial(self, to: NodeId, key: Addr) -> _Stream:
        st = _Stream(self._next_sid(), True, self.settings.send_queue, self.frames.stream(True))
        st.key = key
        st.dial_id = to
        st.remote = to.addr
        self._streams[key] = [st]
        assert self._nursery is not None
        self._nursery.start_soon(self._run_outbound, st)
        return st

    def _up_count(self, key: Addr, besides: _Stream) -> int:
        return sum(1 for s in self._streams.get(key, ()) if s.up and s is not besides)

    def _remove(self, st: _Stream) -> list[_Stream]:
        """Take `st` out of the table; the streams that remain for its key."""
        self._closing.pop(st.sid, None)
        if st.key is None:
            return []
        streams = self._streams.get(st.key)
        if streams is None:
            return []
        if st in streams:
            streams.remove(st)
        if not streams:
            del self._streams[st.key]
        return streams

    async def _run_outbound(self, st: _Stream) -> None:
        assert st.key is not None and st.dial_id is not None
        host, port = st.key
        self.metrics.connections["dial"] += 1
        sock: trio.SocketStream | None = None
        why = ""
        refused = False
        with st.scope:
            try:
                if not may_contact(st.dial_id):
                    # A name from the network: refused without asking DNS.
                    self.metrics.connections["refused_name"] += 1
                    why = "not an IP address (only seeds are resolved)"
                else:
                    with trio.fail_after(self.settings.dial_timeout):
                        sock = await trio.open_tcp_stream(host, port)
            except trio.TooSlowError:
                why = f"no answer within {self.settings.dial_timeout:g} s"
            except OSError as exc:
                why = os_reason(exc)
                refused = _is_refusal(exc)
            except Exception as exc:
                # A seed name the resolver cannot take (ValueError, UnicodeError).
                why = str(exc)[:200]
        if sock is None:
            st.done.set()
            if not why:
                why = "aborted"
            self.metrics.connections["dial_failed"] += 1
            if is_seed(st.dial_id):
                # A seed that cannot be reached is why a join fails: a
                # warning, every time (seeds are retried with a backoff).
                event(log, logging.WARNING, "dial failed", peer=str(st.dial_id), error=why)
            else:
                allowed, held = self._throttle.allow("dial-failed")
                if allowed:
                    peer = str(st.dial_id)[:300]
                    event(log, logging.INFO, "dial failed", peer=peer, error=why, suppressed=held)
            remaining = self._remove(st)
            if st.closing:
                return
            if remaining:
                # Another stream to that address came up meanwhile: use it.
                target = remaining[-1]
                while True:
                    try:
                        data = st.queue_recv.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    if data is None:
                        continue
                    try:
                        target.queue_send.send_nowait(data)
                    except trio.WouldBlock:
                        self.metrics.drops["stream"] += 1
                        target.scope.cancel()
                        break
                return
            if refused and not is_seed(st.dial_id):
                self.metrics.connections["refused_dial"] += 1
                await self._report(PeerRefused(st.dial_id))
            await self._report(ConnectFailed(st.dial_id))
            return
        _set_nodelay(sock)
        st.ip = _peer(sock)[1]
        st.up = True
        if not st.closing and self._up_count(st.key, st) == 0:
            await self._report(ConnectionUp(st.dial_id))
        await self._serve(st, sock)

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        async with listener:
            while True:
                try:
                    sock = await listener.accept()
                except OSError as exc:
                    # Out of file descriptors and the like: wait, do not spin.
                    event(log, logging.WARNING, "accept failed", error=str(exc))
                    await trio.sleep(0.1)
                    continue
                if self._unidentified >= self.settings.max_unidentified:
                    self.metrics.connections["refused"] += 1
                    await sock.aclose()
                    continue
                self.metrics.connections["accepted"] += 1
                _set_nodelay(sock)
                st = _Stream(
                    self._next_sid(), False, self.settings.send_queue, self.frames.stream(False)
                )
                st.remote, st.ip = _peer(sock)
                assert self._nursery is not None
                self._nursery.start_soon(self._run_inbound, st, sock)

    async def _run_inbound(self, st: _Stream, sock: trio.SocketStream) -> None:
        self._unidentified += 1
        st.unidentified = True
        try:
            await self._serve(st, sock)
        finally:
            self._identified(st)

    def _identified(self, st: _Stream) -> None:
        """`st` no longer counts as unidentified: its first frame came, or
        it is closing without one."""
        if st.unidentified:
            st.unidentified = False
            self._unidentified -= 1

    async def _serve(self, st: _Stream, sock: trio.SocketStream) -> None:
        """Run a connected stream until it ends, then report as the module
        docstring says."""
        # A fresh scope (a scope is entered once): it inherits the dial's
        # deadline and cancellation, which `close` may have set meanwhile.
        scope = trio.CancelScope(deadline=st.scope.deadline)
        if st.scope.cancel_called:
            scope.cancel()
        st.scope = scope
        broken = True
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, st, sock, nursery.cancel_scope)
                    broken = await self._reader(st, sock)
                    nursery.cancel_scope.cancel()
        finally:
            self._identified(st)  # before the peer can see the close
            with trio.CancelScope(shield=True):
                await sock.aclose()
            st.done.set()
        self.metrics.connections["broken" if broken else "closed"] += 1
        was_up = st.up and st.key is not None
        remaining = self._remove(st)
        if st.closing or not was_up:
            return
        assert st.key is not None
        if not any(s.up for s in remaining):
            peer = st.peer or st.dial_id
            assert peer is not None
            event(log, logging.DEBUG, "stream down", peer=str(peer), broken=broken)
            await self._report(ConnectionDown(peer))

    async def _writer(self, st: _Stream, sock: trio.SocketStream, scope: trio.CancelScope) -> None:
        try:
            hello = st.seal.hello()
            if hello is not None:
                # Our challenge first; our frames wait for the peer's.
                await sock.send_all(prefixed(hello))
                await st.ready.wait()
            seal = st.seal.seal
            async for data in st.queue_recv:
                # Whatever else is queued goes in the same write (fewer
                # syscalls under load), up to a sensible batch size.
                batch = [prefixed(seal(data))] if data is not None else []
                size = len(data) if data is not None else 0
                closing = data is None
                while not closing and size < _BATCH_BYTES:
                    try:
                        more = st.queue_recv.receive_nowait()
                    except trio.WouldBlock:
                        break
                    if more is None:
                        closing = True
                    else:
                        batch.append(prefixed(seal(more)))
                        size += len(more)
                if batch:
                    await sock.send_all(b"".join(batch) if len(batch) > 1 else batch[0])
                if closing:
                    await sock.send_eof()
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            event(log, logging.DEBUG, "stream write failed", peer=st.remote, error=str(exc))
            scope.cancel()

    async def _reader(self, st: _Stream, sock: trio.SocketStream) -> bool:
        """Deliver frames until the peer closes (False) or the stream breaks
        or misbehaves (True)."""
        buf = FrameBuffer(self.max_wire)
        timeout = self.settings.handshake_timeout
        while True:
            # Waiting for a first frame or a hello, or in the middle of a
            # frame: bounded.
            bounded = st.key is None or not st.ready.is_set() or buf.pending > 0
            try:
                if bounded:
                    with trio.move_on_after(timeout) as scope:
                        data = await sock.receive_some(65536)
                    if scope.cancelled_caught:
                        self._bad("tcp", "stalled", st.remote, "no complete frame in time")
                        return True
                else:
                    data = await sock.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                event(log, logging.DEBUG, "stream read failed", peer=st.remote, error=str(exc))
                return True
            if not data:
                if buf.pending:
                    self._bad("tcp", "truncated", st.remote, "closed in the middle of a frame")
                    return True
                return False
            try:
                for raw in buf.feed(data):
                    if not await self._deliver_stream_frame(st, raw):
                        return True
                buf.check()  # a bad length after good frames
            except FrameError as exc:
                self._bad("tcp", "length", st.remote, str(exc))
                return True

    async def _deliver_stream_frame(self, st: _Stream, raw: bytes) -> bool:
        try:
            if not st.ready.is_set():
                st.seal.accept_hello(raw)  # the peer's challenge
                st.ready.set()
                return True
            frame = st.seal.open(raw)
            sender, msg = codec.decode(frame, self.max_frame)
        except (FrameError, DecodeError) as exc:
            self._bad("tcp", frame_reason(exc), st.remote, str(exc))
            return False
        key = (sender.host, sender.port)
        if self.me is not None and key == (self.me.host, self.me.port):
            self._bad("tcp", "sender", st.remote, f"claims our address: {sender}")
            return False
        if st.peer is not None and (st.peer.host, st.peer.port) != key:
            self._bad("tcp", "sender", st.remote, f"sender changed from {st.peer} to {sender}")
            return False
        if st.peer is None and not self._from_source(st, sender):
            self._bad("tcp", "spoofed", st.remote, f"claims to be {sender}")
            return False
        st.peer = sender
        if st.key is None:
            # First frame of an incoming stream: now we know whose it is.
            st.key = key
            st.up = True
            self._identified(st)
            first = not any(s.up for s in self._streams.get(key, ()))
            self._streams.setdefault(key, []).append(st)
            if first:
                await self._report(ConnectionUp(sender))
        self.metrics.count_received(type(msg).__name__, len(raw) + 4)
        await self._report(Received(sender, msg))
        return True

    # ------------------------------------------------------------ helpers

    def _from_source(self, st: _Stream, sender: NodeId) -> bool:
        """Whether `st` may speak for `sender` (see `check_source`): its
        host is the TCP peer's address, or we dialled a seed (a contact
        from the local configuration, whose real address we learn here)."""
        if not self._check_source or (st.dial_id is not None and is_seed(st.dial_id)):
            return True
        return claims_source(sender, st.ip)

    async def _report(self, item: Input) -> None:
        """Hand `item` to the driver; wait only if its queue is full (a
        `send` that succeeds at once would still cost a trip through the
        scheduler, once per frame)."""
        try:
            self.sink.send_nowait(item)
        except trio.WouldBlock:
            await self.sink.send(item)

    def _bad(self, transport: str, reason: str, remote: str, detail: str) -> None:
        self.metrics.bad_frames[f"{transport}:{reason}"] += 1
        allowed, held = self._throttle.allow(f"bad-{transport}")
        if allowed:
            event(
                log,
                logging.WARNING,
                "bad frame",
                transport=transport,
                reason=reason,
                remote=remote,
                detail=detail[:200],
                suppressed=held,
            )


def _is_refusal(exc: OSError) -> bool:
    """A dial refused by the host (a TCP reset), as opposed to one that
    timed out or found no route. `trio.open_tcp_stream` raises an
    OSError that groups the attempts' errors."""
    if exc.errno == errno.ECONNREFUSED:
        return True
    errors = getattr(exc, "__cause__", None)
    inner = getattr(errors, "exceptions", None) or ()
    return bool(inner) and all(
        isinstance(e, OSError) and e.errno == errno.ECONNREFUSED for e in inner
    )


def _set_nodelay(sock: trio.SocketStream) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_NODELAY, 1)


def _peer(sock: trio.SocketStream) -> tuple[str, IPAddress | None]:
    """The TCP peer, printable, and its IP address."""
    try:
        addr = sock.socket.getpeername()
    except OSError:
        return "?", None
    return fmt_addr(addr), ip_literal(str(addr[0]))
