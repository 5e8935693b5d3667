"""Frame encryption: AES-GCM with a keyring (the `FrameCodec` of a cluster
that has a key).

What a key proves. A sealed frame opens only with a cluster key, so it
comes from a key holder; the sender's node id is inside the ciphertext, so
it cannot be re-attributed; and every frame is bound to when and where it
was sent, so it cannot be replayed:

- **Streams** open with a handshake. Each side's first frame is a *hello*:
  a fresh random 16-byte challenge, in the clear. Every sealed frame then
  authenticates, as associated data, the *peer's* challenge, the sender's
  role (dialer or acceptor) and the frame's number on the stream: a frame
  recorded on one stream does not open on another (the challenge differs),
  nor reflected back to its sender (the role), nor out of order (the
  number). The first sealed frame also echoes the challenge in the clear,
  so a replayed stream is told apart from a wrong key. A stream is the
  peer's once that first frame opens: it has then proved the key, fresh.
- **Datagrams** carry a *stamp*: the sender's clock in microseconds, made
  strictly increasing per sender, authenticated with the frame. The
  receiver keeps a replay window per sender (`daemon.datagrams`): a stamp
  seen before, or too old, or too far from its own clock, is refused.

Formats (all big-endian; `V` is the version byte, 2; the associated data of
each seal starts with the label `trio-overlay/2`):

    hello        V 'H' challenge(16)
    first frame  V 'R' echo(16)  nonce(12) ciphertext+tag(16)
    frame        V 'S'           nonce(12) ciphertext+tag(16)
                 aad: label, the header, sender role 'D'|'A',
                      the receiver's challenge, the frame's number (8)
    datagram     V 'D' stamp(8)  nonce(12) ciphertext+tag(16)
                 aad: label, the header

Nonces are random (96 bits, as AES-GCM recommends when many senders share
one key). The primary key (the first of the keyring) seals; opening tries
every key, so a cluster can rotate keys the way Serf does: install the new
key everywhere, make it primary everywhere, then remove the old one.

A key file holds one base64 key per line (16, 24 or 32 bytes: AES-128/192/256),
the primary first; blank lines and lines starting with `#` are ignored.
`overlay keygen` prints a fresh 32-byte key.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from daemon.framing import FrameError, ReplayError, StreamSeal

VERSION = 2
NONCE_SIZE = 12
TAG_SIZE = 16
CHALLENGE_SIZE = 16
KEY_SIZES = (16, 24, 32)
HELLO, FIRST, FRAME, DATAGRAM = b"H", b"R", b"S", b"D"
DIALER, ACCEPTOR = b"D", b"A"
# Binds ciphertexts to this protocol: a frame of another system sealed with
# the same key does not open here.
_LABEL = b"trio-overlay/2"
_V = bytes((VERSION,))
_FRAME_HEADER = _V + FRAME
_HELLO_SIZE = 2 + CHALLENGE_SIZE
_FIRST_HEADER = 2 + CHALLENGE_SIZE
_STAMP_HEADER = 2 + 8


class KeyFileError(ValueError):
    """A key or key file is unusable."""


def generate_key() -> str:
    """A fresh random AES-256 key, base64-encoded."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def decode_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError("key is not valid base64") from None
    if len(key) not in KEY_SIZES:
        raise KeyFileError(f"key is {len(key)} bytes; AES needs 16, 24 or 32")
    return key


def load_key_file(path: str | os.PathLike[str]) -> list[bytes]:
    try:
        text = Path(path).read_text(encoding="ascii")
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {path} is not base64 text") from None
    keys = [
        decode_key(line)
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not keys:
        raise KeyFileError(f"key file {path} holds no key")
    return keys


class Keyring:
    """AES-GCM frame codec. The first key seals; any key opens."""

    # The largest addition: a stream's first frame.
    overhead = _FIRST_HEADER + NONCE_SIZE + TAG_SIZE
    keyed = True

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise KeyFileError("a keyring needs at least one key")
        for key in keys:
            if len(key) not in KEY_SIZES:
                raise KeyFileError(f"key is {len(key)} bytes; AES needs 16, 24 or 32")
        self._keys = [bytes(k) for k in keys]
        self._ciphers = [AESGCM(bytes(k)) for k in keys]
        self._stamp = 0  # of the last datagram sealed

    def stream(self, dialer: bool) -> StreamSeal:
        return SealedStream(self, dialer)

    # Rotation in place (cluster-wide through `daemon.keys`): the primary
    # seals from the next frame on; streams already open keep working, as
    # opening tries every key.

    def key_list(self) -> list[bytes]:
        """The keys, the primary first."""
        return list(self._keys)

    def install(self, key: bytes) -> bool:
        """Add `key` (not primary); False if it was there already."""
        if len(key) not in KEY_SIZES:
            raise KeyFileError(f"key is {len(key)} bytes; AES needs 16, 24 or 32")
        if key in self._keys:
            return False
        self._keys.append(bytes(key))
        self._ciphers.append(AESGCM(bytes(key)))
        return True

    def use(self, key: bytes) -> bool:
        """Make an installed `key` the primary; False if it was already."""
        if key not in self._keys:
            raise KeyFileError("the key is not installed: install it first")
        i = self._keys.index(key)
        self._keys.insert(0, self._keys.pop(i))
        self._ciphers.insert(0, self._ciphers.pop(i))
        return i != 0

    def remove(self, key: bytes) -> bool:
        """Remove a key that is not the primary; False if it was not there."""
        if key not in self._keys:
            return False
        if key == self._keys[0]:
            raise KeyFileError("the primary key cannot be removed: use another key first")
        i = self._keys.index(key)
        del self._keys[i]
        del self._ciphers[i]
        return True

    def seal_datagram(self, frame: bytes) -> bytes:
        # The wall clock (peers compare it with theirs), never going back
        # within this process: a step of the clock only slows the stamps.
        stamp = max(self._stamp + 1, int(time.time() * 1e6))
        self._stamp = stamp
        header = _V + DATAGRAM + stamp.to_bytes(8, "big")
        return self._seal(header, frame, _LABEL + header)

    def open_datagram(self, data: bytes) -> tuple[bytes, int]:
        if len(data) < _STAMP_HEADER + NONCE_SIZE + TAG_SIZE:
            raise FrameError("sealed datagram too short")
        _check_header(data, DATAGRAM)
        header = data[:_STAMP_HEADER]
        frame = self._open(data, _STAMP_HEADER, _LABEL + header)
        return frame, int.from_bytes(data[2:_STAMP_HEADER], "big")

    def _seal(self, header: bytes, frame: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return header + nonce + self._ciphers[0].encrypt(nonce, frame, aad)

    def _open(self, data: bytes, start: int, aad: bytes) -> bytes:
        """Open the nonce and ciphertext at `data[start:]` with any key."""
        nonce = data[start : start + NONCE_SIZE]
        body = data[start + NONCE_SIZE :]
        for cipher in self._ciphers:
            try:
                return cipher.decrypt(nonce, body, aad)
            except InvalidTag:
                continue
        raise FrameError("frame fails authentication with every key")


class SealedStream:
    """The frames of one keyed stream (see the module docstring)."""

    __slots__ = (
        "_mine",
        "_open_aad",
        "_opened",
        "_peer_role",
        "_ring",
        "_role",
        "_seal_aad",
        "_sealed",
        "_theirs",
    )

    def __init__(self, ring: Keyring, dialer: bool) -> None:
        self._ring = ring
        self._mine = os.urandom(CHALLENGE_SIZE)
        self._theirs: bytes | None = None
        self._role, self._peer_role = (DIALER, ACCEPTOR) if dialer else (ACCEPTOR, DIALER)
        self._sealed = 0
        self._opened = 0
        # The associated data of every frame but the first, less its number.
        self._seal_aad = self._open_aad = b""

    def hello(self) -> bytes | None:
        return _V + HELLO + self._mine

    @property
    def ready(self) -> bool:
        return self._theirs is not None

    def accept_hello(self, data: bytes) -> None:
        if self._theirs is not None:
            raise FrameError("a second hello")
        if len(data) != _HELLO_SIZE or data[:2] != _V + HELLO:
            raise FrameError("the stream does not open with a hello (no key on the peer?)")
        challenge = data[2:]
        if challenge == self._mine:
            raise ReplayError("our own hello, sent back")
        self._theirs = challenge
        self._seal_aad = _LABEL + _V + FRAME + self._role + challenge
        self._open_aad = _LABEL + _V + FRAME + self._peer_role + self._mine

    def seal(self, frame: bytes) -> bytes:
        theirs = self._theirs
        if theirs is None:
            raise RuntimeError("seal before the peer's hello")
        number = self._sealed
        self._sealed += 1
        if number:
            return self._ring._seal(
                _FRAME_HEADER, frame, self._seal_aad + number.to_bytes(8, "big")
            )
        header = _V + FIRST + theirs
        aad = _LABEL + header + self._role + theirs + number.to_bytes(8, "big")
        return self._ring._seal(header, frame, aad)

    def open(self, data: bytes) -> bytes:
        if self._theirs is None:
            raise FrameError("a sealed frame before the hello")
        number = self._opened
        if number:
            if data[:2] != _FRAME_HEADER:
                _check_header(data, FRAME)
            if len(data) < 2 + NONCE_SIZE + TAG_SIZE:
                raise FrameError("sealed frame too short")
            frame = self._ring._open(data, 2, self._open_aad + number.to_bytes(8, "big"))
            self._opened += 1
            return frame
        if data[:2] == _FRAME_HEADER:
            raise ReplayError("a frame from the middle of another stream")
        _check_header(data, FIRST)
        start = _FIRST_HEADER
        if len(data) < start + NONCE_SIZE + TAG_SIZE:
            raise FrameError("sealed frame too short")
        if data[2:start] != self._mine:
            raise ReplayError("the first frame answers another stream's challenge")
        aad = _LABEL + data[:start] + self._peer_role + self._mine + number.to_bytes(8, "big")
        frame = self._ring._open(data, start, aad)
        self._opened += 1
        return frame


def _check_header(data: bytes, kind: bytes) -> None:
    if len(data) < 2 or data[0] != VERSION:
        raise FrameError(f"unknown encryption version {data[0] if data else None}")
    if data[1:2] != kind:
        raise FrameError(f"expected a frame of kind {kind!r}, got {data[1:2]!r}")
