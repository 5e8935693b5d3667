"""Frames on the wire, below the message codec.

A *frame* is what `overlay.codec.encode` makes: one msgpack message with its
sender. The transport moves frames two ways:

- on a TCP stream, each frame is preceded by its length as a 4-byte
  big-endian unsigned integer; `FrameBuffer` cuts a byte stream back into
  frames and refuses a length over the limit before reading the body, so a
  hostile prefix cannot make the agent allocate;
- in a UDP datagram, one frame per datagram, no prefix.

Between the two sits a `FrameCodec`: it seals frames on the way out and
opens them on the way in, with one `StreamSeal` per stream (a stream may
open with a handshake and number its frames) and its own calls for
datagrams. `PlainFrames` passes frames through; `daemon.security.Keyring`
encrypts and authenticates them with AES-GCM and proves who sent each one
and that it is fresh. The transport knows only the protocol below, so a new
scheme is a new codec object and nothing else.
"""

from __future__ import annotations

import struct
from typing import Protocol

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size


class FrameError(ValueError):
    """Bytes from the network that are not a frame: a bad length prefix, a
    frame that fails authentication, a truncated datagram."""


class ReplayError(FrameError):
    """A frame that authenticates but is not fresh: sent before, or sealed
    for another stream."""


class StreamSeal(Protocol):
    """The frames of one stream, both ways. Frames must be sealed and opened
    in stream order."""

    def hello(self) -> bytes | None:
        """The frame this side opens the stream with, before any other
        (None: this codec has no handshake)."""
        ...

    @property
    def ready(self) -> bool:
        """Whether the peer's hello has come (always, without a handshake):
        `seal` and `open` need it."""
        ...

    def accept_hello(self, data: bytes) -> None:
        """Take the peer's first frame as its hello, or FrameError."""
        ...

    def seal(self, frame: bytes) -> bytes: ...

    def open(self, data: bytes) -> bytes:
        """The frame inside `data`, or FrameError (ReplayError: not fresh)."""
        ...


class FrameCodec(Protocol):
    """Seals outgoing frames and opens incoming ones."""

    # Bytes sealing adds to a frame, at most (the limits account for it).
    overhead: int
    # Whether frames prove their sender (a cluster key).
    keyed: bool

    def stream(self, dialer: bool) -> StreamSeal:
        """A codec for a new stream; `dialer`: we opened the connection."""
        ...

    def seal_datagram(self, frame: bytes) -> bytes: ...

    def open_datagram(self, data: bytes) -> tuple[bytes, int]:
        """The frame inside `data` and its stamp (microseconds since the
        epoch on the sender's clock, strictly increasing per sender; 0 when
        the codec has none), or FrameError."""
        ...


class _PlainStream:
    ready = True

    def hello(self) -> bytes | None:
        return None

    def accept_hello(self, data: bytes) -> None:
        raise FrameError("no handshake without a key")

    def seal(self, frame: bytes) -> bytes:
        return frame

    def open(self, data: bytes) -> bytes:
        return data


_PLAIN_STREAM = _PlainStream()


class PlainFrames:
    """No encryption: frames go out as they are."""

    overhead = 0
    keyed = False

    def stream(self, dialer: bool) -> StreamSeal:
        return _PLAIN_STREAM

    def seal_datagram(self, frame: bytes) -> bytes:
        return frame

    def open_datagram(self, data: bytes) -> tuple[bytes, int]:
        return data, 0


def prefixed(data: bytes) -> bytes:
    """`data` with its length prefix, ready for a stream."""
    return HEADER.pack(len(data)) + data


class FrameBuffer:
    """Reassembles length-prefixed frames from a byte stream.

    `feed` returns the frames completed by the new bytes, in order. A frame
    of length zero is a keepalive: it ends there, and is not returned. A
    length above `max_size` raises FrameError, before any byte of that
    frame's body is kept: the stream is then unusable (its framing is lost)
    and must be closed. Frames complete before the bad length are returned
    first; the error is raised by the next `feed` or `check`.
    """

    __slots__ = ("_buf", "_need", "ended", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._need = -1  # body length of the frame being read, -1 while reading a header
        self.ended = 0  # frames (keepalives included) the last `feed` completed

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        ended = 0
        pos = 0
        while True:
            if self._need < 0:
                if len(buf) - pos < HEADER_SIZE:
                    break
                (size,) = HEADER.unpack_from(buf, pos)
                if size > self.max_size:
                    if ended:
                        break  # deliver these first; `check` raises next
                    raise FrameError(f"frame length {size} over the limit of {self.max_size}")
                pos += HEADER_SIZE
                if size == 0:
                    ended += 1  # a keepalive
                    continue
                self._need = size
            if len(buf) - pos < self._need:
                break
            frames.append(bytes(buf[pos : pos + self._need]))
            ended += 1
            pos += self._need
            self._need = -1
        if pos:
            del buf[:pos]
        self.ended = ended
        return frames

    def check(self) -> None:
        """FrameError if the next header is already known to be bad."""
        ended = self.ended
        self.feed(b"")  # returns nothing new: the last `feed` stopped only at a bad length
        self.ended = ended

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete frame (a header
        already read counts: the stream is in the middle of a frame)."""
        return len(self._buf) + (HEADER_SIZE if self._need >= 0 else 0)
