"""One TCP stream between agents: its state, its writer and its reader. The
table of streams and what they mean to the driver are `daemon.transport`.

Rules of this module: a stream's two loops move frames and enforce the
stream's deadlines; whatever a frame means is the transport's `deliver`.
Nothing here raises for bad input: the reader returns, and the transport
closes the stream.

Theory of operation
-------------------
- **Writer.** It opens with the stream's hello when its `StreamSeal` has
  one (a cluster key), then waits for the peer's before it seals anything:
  frames are sealed here, in stream order, so each is bound to this stream.
  Whatever else is queued goes out in the same write. `None` in the queue
  means half-close after what came before it.
- **Keepalives.** A stream on which we wrote nothing for `keepalive`
  seconds gets a zero-length frame, which the peer's reader counts as life
  and otherwise ignores. So an active HyParView link stays open however
  quiet the protocol is, and a peer that is gone (or never meant to talk)
  shows as silence.
- **Reader deadlines**, each for a whole stretch, never per read (a peer
  that drips a byte at a time gets no more time than one that stalls):
  * `handshake`: from the connection, for the hellos and, on an incoming
    stream, its first frame (while it is unidentified);
  * `frame`: from the first byte of a frame to its last, once identified;
  * `idle`: between frames, from the last bytes received; keepalives count.
  A stalled handshake or frame is a bad frame ("tcp:stalled"); an idle
  stream is closed and counted (connections "idle").
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from daemon.addresses import IPAddress
from daemon.framing import HEADER, FrameBuffer, FrameError, StreamSeal, prefixed
from daemon.logs import event
from overlay.ids import NodeId

log = logging.getLogger("overlay.transport")

Addr = tuple[str, int]
# A frame of length zero: "still here".
KEEPALIVE = HEADER.pack(0)
# Frames queued for one stream are written together up to this many bytes.
_BATCH_BYTES = 256 * 1024


class Stream:
    """One TCP connection, its queue and what we know of its peer."""

    __slots__ = (
        "closing",
        "dial_id",
        "done",
        "held",
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
        self.held = False  # incoming, identified, counted against the caps
        self.ip: IPAddress | None = None  # the TCP peer's address
        self.remote = "?"


async def write(
    st: Stream, sock: trio.SocketStream, scope: trio.CancelScope, *, keepalive: float
) -> None:
    """Write `st`'s queue to `sock` until a half-close or a failure (which
    cancels `scope`, the stream's)."""
    try:
        hello = st.seal.hello()
        if hello is not None:
            # Our challenge first; our frames wait for the peer's.
            await sock.send_all(prefixed(hello))
            await st.ready.wait()
        seal = st.seal.seal
        while True:
            data: bytes | None = KEEPALIVE
            with trio.move_on_after(keepalive):
                data = await st.queue_recv.receive()
            if data is KEEPALIVE:
                await sock.send_all(KEEPALIVE)
                continue
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
    except trio.EndOfChannel:
        return
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        event(log, logging.DEBUG, "stream write failed", peer=st.remote, error=str(exc))
        scope.cancel()


Deliver = Callable[[Stream, bytes], Awaitable[bool]]
BadFrame = Callable[[str, str, str, str], None]


async def read(
    st: Stream,
    sock: trio.SocketStream,
    *,
    max_wire: int,
    handshake: float,
    frame: float,
    idle: float,
    deliver: Deliver,
    bad: BadFrame,
) -> str | None:
    """Hand each frame of `st` to `deliver` until the peer closes (None) or
    the stream must end: "broken" (a failure, or `deliver` said no), "bad"
    (counted here as a bad frame) or "idle"."""
    buf = FrameBuffer(max_wire)
    now = trio.current_time()
    handshake_end = now + handshake
    frame_end = last = now
    while True:
        if st.key is None or not st.ready.is_set():
            deadline, late = handshake_end, "no handshake in time"
        elif buf.pending:
            deadline, late = frame_end, "no complete frame in time"
        else:
            deadline, late = last + idle, ""
        data: bytes | None = None
        with trio.CancelScope(deadline=deadline):
            try:
                data = await sock.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                event(log, logging.DEBUG, "stream read failed", peer=st.remote, error=str(exc))
                return "broken"
        if data is None:  # the deadline passed
            if not late:
                return "idle"
            bad("tcp", "stalled", st.remote, late)
            return "bad"
        if not data:
            if buf.pending:
                bad("tcp", "truncated", st.remote, "closed in the middle of a frame")
                return "bad"
            return None
        last = trio.current_time()
        before = buf.pending
        try:
            for raw in buf.feed(data):
                if not await deliver(st, raw):
                    return "broken"
            buf.check()  # a bad length after good frames
        except FrameError as exc:
            bad("tcp", "length", st.remote, str(exc))
            return "bad"
        if buf.pending and (not before or buf.ended):
            frame_end = last + frame  # a frame began in these bytes
