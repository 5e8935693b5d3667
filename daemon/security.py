"""Frame encryption: AES-GCM with a keyring (the `FrameCodec` of a cluster
that has a key).

Format of a sealed frame: one version byte (1), a 12-byte random nonce, then
the AES-GCM ciphertext of the frame with its 16-byte tag. The primary key
(the first of the keyring) seals; `open` tries every key, so a cluster can
rotate keys the way Serf does: install the new key everywhere, make it
primary everywhere, then remove the old one.

A key file holds one base64 key per line (16, 24 or 32 bytes: AES-128/192/256),
the primary first; blank lines and lines starting with `#` are ignored.
`overlay keygen` prints a fresh 32-byte key.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from daemon.framing import FrameError

VERSION = 1
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZES = (16, 24, 32)
# Binds ciphertexts to this protocol: a frame of another system sealed with
# the same key does not open here.
_AAD = b"trio-overlay/1"


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

    overhead = 1 + NONCE_SIZE + TAG_SIZE
    keyed = True

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise KeyFileError("a keyring needs at least one key")
        for key in keys:
            if len(key) not in KEY_SIZES:
                raise KeyFileError(f"key is {len(key)} bytes; AES needs 16, 24 or 32")
        self._ciphers = [AESGCM(bytes(k)) for k in keys]

    def seal(self, frame: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return bytes((VERSION,)) + nonce + self._ciphers[0].encrypt(nonce, frame, _AAD)

    def open(self, data: bytes) -> bytes:
        if len(data) < self.overhead:
            raise FrameError("sealed frame too short")
        if data[0] != VERSION:
            raise FrameError(f"unknown encryption version {data[0]}")
        nonce = data[1 : 1 + NONCE_SIZE]
        body = data[1 + NONCE_SIZE :]
        for cipher in self._ciphers:
            try:
                return cipher.decrypt(nonce, body, _AAD)
            except InvalidTag:
                continue
        raise FrameError("frame fails authentication with every key")
