"""Stream framing and the frame codecs (plain, AES-GCM keyring)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.framing import FrameBuffer, FrameError, PlainFrames, prefixed
from daemon.security import (
    KeyFileError,
    Keyring,
    decode_key,
    generate_key,
    load_key_file,
)

frames_st = st.lists(st.binary(min_size=1, max_size=300), max_size=20)


@settings(max_examples=100, deadline=None)
@given(frames=frames_st, cuts=st.lists(st.integers(min_value=0, max_value=8000), max_size=30))
def test_frames_survive_any_split(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(prefixed(f) for f in frames)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    buf = FrameBuffer(1000)
    got: list[bytes] = []
    last = 0
    for p in [*points, len(stream)]:
        got += buf.feed(stream[last:p])
        last = p
    assert got == frames
    assert buf.pending == 0


def test_oversized_length_is_refused_before_the_body() -> None:
    buf = FrameBuffer(1000)
    with pytest.raises(FrameError, match="1001"):
        buf.feed((1001).to_bytes(4, "big"))


def test_zero_length_is_refused() -> None:
    with pytest.raises(FrameError):
        FrameBuffer(1000).feed(b"\x00\x00\x00\x00")


def test_huge_prefix_never_allocates() -> None:
    with pytest.raises(FrameError):
        FrameBuffer(64 * 1024).feed(b"\xff\xff\xff\xff" + b"x" * 10)


def test_partial_frame_is_pending() -> None:
    buf = FrameBuffer(100)
    assert buf.feed(prefixed(b"abcdef")[:7]) == []
    assert buf.pending == 7
    assert buf.feed(b"de") == []
    assert buf.pending == 9
    assert buf.feed(b"f") == [b"abcdef"]
    assert buf.pending == 0


def test_plain_frames_pass_through() -> None:
    codec = PlainFrames()
    assert codec.open(codec.seal(b"frame")) == b"frame"
    assert codec.overhead == 0


def test_keyring_roundtrip_and_overhead() -> None:
    ring = Keyring([decode_key(generate_key())])
    sealed = ring.seal(b"hello")
    assert sealed != b"hello"
    assert len(sealed) == len(b"hello") + ring.overhead
    assert ring.open(sealed) == b"hello"
    # A fresh nonce every time.
    assert ring.seal(b"hello") != sealed


def test_keyring_rotation_opens_with_any_key() -> None:
    old, new = decode_key(generate_key()), decode_key(generate_key())
    sealed_old = Keyring([old]).seal(b"x")
    during = Keyring([new, old])
    assert during.open(sealed_old) == b"x"
    # The new key seals: a node that has only the old one cannot open it.
    with pytest.raises(FrameError):
        Keyring([old]).open(during.seal(b"y"))
    assert Keyring([new]).open(during.seal(b"y")) == b"y"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:-1],  # truncated tag
        lambda b: b[:10],  # shorter than the overhead
        lambda b: bytes([2]) + b[1:],  # unknown version
        lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:],  # flipped ciphertext bit
        lambda b: b"",
    ],
)
def test_tampered_frames_fail_authentication(mutate: object) -> None:
    ring = Keyring([decode_key(generate_key())])
    sealed = ring.seal(b"some frame bytes")
    with pytest.raises(FrameError):
        ring.open(mutate(sealed))  # type: ignore[operator]


def test_wrong_key_fails() -> None:
    a = Keyring([decode_key(generate_key())])
    b = Keyring([decode_key(generate_key())])
    with pytest.raises(FrameError):
        b.open(a.seal(b"secret"))


def test_key_sizes() -> None:
    for size in (16, 24, 32):
        assert len(decode_key(base64.b64encode(b"k" * size).decode())) == size
    with pytest.raises(KeyFileError, match="17 bytes"):
        decode_key(base64.b64encode(b"k" * 17).decode())
    with pytest.raises(KeyFileError, match="base64"):
        decode_key("not base64!!")


def test_key_file(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "keys"
    k1, k2 = generate_key(), generate_key()
    path.write_text(f"# primary first\n{k1}\n\n{k2}\n")
    assert load_key_file(path) == [decode_key(k1), decode_key(k2)]
    path.write_text("# nothing\n")
    with pytest.raises(KeyFileError, match="no key"):
        load_key_file(path)
    with pytest.raises(KeyFileError, match="cannot read"):
        load_key_file(Path(str(tmp_path)) / "missing")


def test_frames_before_a_bad_length_come_out_first() -> None:
    buf = FrameBuffer(1000)
    assert buf.feed(prefixed(b"one") + prefixed(b"two") + (5000).to_bytes(4, "big")) == [
        b"one",
        b"two",
    ]
    with pytest.raises(FrameError, match="5000"):
        buf.check()
    clean = FrameBuffer(1000)
    clean.feed(prefixed(b"x")[:3])
    clean.check()  # an incomplete header is not an error
