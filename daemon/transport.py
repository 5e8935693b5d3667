"""Streams and datagrams between agents, with the connection semantics of
`overlay.io`.

Rules of this module: it moves frames and reports what happened to them; it
takes no protocol decision. Everything it learns goes to the driver as
`overlay.io` inputs through one bounded channel (the *sink*).

Theory of operation
-------------------
- **Streams** (TCP, for `Send(reliable=True)`): one task per connection, in
  its own cancel scope, running a reader and a writer (`daemon.streams`:
  the handshake, frame and idle deadlines, keepalives). Frames carry a
  4-byte length prefix (`daemon.framing`). The writer drains a bounded per-stream
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
  peer's address (`check_source`, `daemon.addresses`). The same holds for
  the frames that come back on a stream we dialled, unless we dialled a
  seed. Only an attributed stream can become the one an address's frames
  go to.
- **Limits.** Incoming streams are counted, unidentified and identified,
  in all and per source address (`daemon.limits`): past a limit a new one
  is closed, and counted.
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
  sender, a stall) closes that stream, or drops that datagram; it is
  counted in `Metrics.bad_frames` and logged through a throttle. Nothing
  from the network can stop the agent.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket as stdsocket
from functools import partial

import trio

from daemon.addresses import IPAddress, claims_source, ip_literal, may_contact
from daemon.datagrams import RECVERR, Datagrams, ReplayWindow, fmt_addr, frame_reason
from daemon.errors import os_reason
from daemon.framing import FrameCodec, FrameError
from daemon.limits import Limits
from daemon.limits import TransportSettings as TransportSettings
from daemon.logs import Throttle, event
from daemon.metrics import Metrics
from daemon.streams import Stream, read, write
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
        self._streams: dict[Addr, list[Stream]] = {}
        self._closing: dict[int, Stream] = {}
        self._limits = Limits(
            unidentified=self.settings.max_unidentified,
            unidentified_per_ip=self.settings.max_unidentified_per_ip,
            identified=self.settings.max_identified,
            identified_per_ip=self.settings.max_identified_per_ip,
        )
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
            "unidentified": self._limits.unidentified,
            "identified": self._limits.identified,  # incoming, against max_identified
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

    def _dial(self, to: NodeId, key: Addr) -> Stream:
        st = Stream(self._next_sid(), True, self.settings.send_queue, self.frames.stream(True))
        st.key = key
        st.dial_id = to
        st.remote = to.addr
        self._streams[key] = [st]
        assert self._nursery is not None
        self._nursery.start_soon(self._run_outbound, st)
        return st

    def _up_count(self, key: Addr, besides: Stream) -> int:
        return sum(1 for s in self._streams.get(key, ()) if s.up and s is not besides)

    def _remove(self, st: Stream) -> list[Stream]:
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

    async def _run_outbound(self, st: Stream) -> None:
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
                remote, ip = _peer(sock)
                refusal = self._limits.accept(ip)
                if refusal is not None:
                    self._refuse(refusal, remote, "too many connections not identified yet")
                    with trio.CancelScope(shield=True):
                        await sock.aclose()
                    continue
                self.metrics.connections["accepted"] += 1
                _set_nodelay(sock)
                st = Stream(
                    self._next_sid(), False, self.settings.send_queue, self.frames.stream(False)
                )
                st.remote, st.ip = remote, ip
                st.unidentified = True
                assert self._nursery is not None
                self._nursery.start_soon(self._serve, st, sock)

    def _settle(self, st: Stream) -> None:
        """`st` no longer counts as unidentified: its first frame came, or
        it is closing without one."""
        if st.unidentified:
            st.unidentified = False
            self._limits.settle(st.ip)

    async def _serve(self, st: Stream, sock: trio.SocketStream) -> None:
        """Run a connected stream until it ends, then report as the module
        docstring says."""
        # A fresh scope (a scope is entered once): it inherits the dial's
        # deadline and cancellation, which `close` may have set meanwhile.
        scope = trio.CancelScope(deadline=st.scope.deadline)
        if st.scope.cancel_called:
            scope.cancel()
        st.scope = scope
        s = self.settings
        ended: str | None = "broken"
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    keepalive = s.idle_timeout / 4
                    nursery.start_soon(partial(write, keepalive=keepalive), st, sock, scope)
                    ended = await read(
                        st,
                        sock,
                        max_wire=self.max_wire,
                        handshake=s.handshake_timeout,
                        frame=s.frame_timeout,
                        idle=s.idle_timeout,
                        deliver=self._deliver_stream_frame,
                        bad=self._bad,
                    )
                    nursery.cancel_scope.cancel()
        finally:
            self._settle(st)  # before the peer can see the close
            if st.held:
                st.held = False
                self._limits.release(st.ip)
            with trio.CancelScope(shield=True):
                await sock.aclose()
            st.done.set()
        if ended == "idle":
            self.metrics.connections["idle"] += 1
            event(log, logging.DEBUG, "stream idle: closed", peer=st.remote)
        self.metrics.connections["closed" if ended is None else "broken"] += 1
        was_up = st.up and st.key is not None
        remaining = self._remove(st)
        if st.closing or not was_up:
            return
        assert st.key is not None
        if not any(s.up for s in remaining):
            peer = st.peer or st.dial_id
            assert peer is not None
            event(log, logging.DEBUG, "stream down", peer=str(peer), broken=ended is not None)
            await self._report(ConnectionDown(peer))

    async def _deliver_stream_frame(self, st: Stream, raw: bytes) -> bool:
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
        except Exception as exc:  # a bug below us: the frame goes, the agent stays
            self.metrics.errors["frame"] += 1
            self._bad("tcp", "internal", st.remote, repr(exc))
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
            self._settle(st)
            refusal = self._limits.identify(st.ip)
            if refusal is not None:
                self._refuse(refusal, st.remote, "too many streams identified")
                return False
            st.held = True
            st.key = key
            st.up = True
            first = not any(s.up for s in self._streams.get(key, ()))
            self._streams.setdefault(key, []).append(st)
            if first:
                await self._report(ConnectionUp(sender))
        self.metrics.count_received(type(msg).__name__, len(raw) + 4)
        await self._report(Received(sender, msg))
        return True

    # ------------------------------------------------------------ helpers

    def _from_source(self, st: Stream, sender: NodeId) -> bool:
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

    def _refuse(self, counter: str, remote: str, why: str) -> None:
        """A connection refused by the limits: counted, logged (throttled)."""
        self.metrics.connections[counter] += 1
        allowed, held = self._throttle.allow("refused")
        if allowed:
            event(
                log, logging.WARNING, "connection refused", remote=remote, why=why, suppressed=held
            )

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
