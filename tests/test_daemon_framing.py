"""Stream framing, the frame codecs (plain, AES-GCM keyring) and the replay
window of sealed datagrams."""

from __future__ import annotations

import base64
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.datagrams import ReplayWindow
from daemon.framing import FrameBuffer, FrameError, PlainFrames, ReplayError, StreamSeal, prefixed
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


def test_zero_length_frames_are_keepalives() -> None:
    buf = FrameBuffer(1000)
    keepalive = b"\x00\x00\x00\x00"
    assert buf.feed(keepalive) == [] and buf.ended == 1 and buf.pending == 0
    assert buf.feed(keepalive + prefixed(b"x") + keepalive + keepalive[:2]) == [b"x"]
    assert buf.ended == 3 and buf.pending == 2
    assert buf.feed(keepalive[2:]) == [] and buf.ended == 1


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
    assert codec.open_datagram(codec.seal_datagram(b"frame")) == (b"frame", 0)
    stream = codec.stream(dialer=True)
    assert stream.hello() is None and stream.ready
    assert stream.open(stream.seal(b"frame")) == b"frame"
    assert codec.overhead == 0 and not codec.keyed


def _ring() -> Keyring:
    return Keyring([decode_key(generate_key())])


def _pair(dialer: Keyring, acceptor: Keyring | None = None) -> tuple[StreamSeal, StreamSeal]:
    """Two ends of a keyed stream, after their hellos."""
    d, a = dialer.stream(dialer=True), (acceptor or dialer).stream(dialer=False)
    d_hello, a_hello = d.hello(), a.hello()
    assert d_hello is not None and a_hello is not None
    assert (d.ready, a.ready) == (False, False)
    d.accept_hello(a_hello)
    a.accept_hello(d_hello)
    assert (d.ready, a.ready) == (True, True)
    return d, a


def test_keyring_datagram_roundtrip_overhead_and_stamps() -> None:
    ring = _ring()
    before = int(time.time() * 1e6)
    sealed = [ring.seal_datagram(b"hello") for _ in range(3)]
    assert all(len(s) <= len(b"hello") + ring.overhead for s in sealed)
    opened = [ring.open_datagram(s) for s in sealed]
    assert [frame for frame, _ in opened] == [b"hello"] * 3
    stamps = [stamp for _, stamp in opened]
    assert stamps == sorted(set(stamps)) and stamps[0] >= before  # strictly increasing
    assert len(set(sealed)) == 3  # a fresh nonce every time


def test_keyed_stream_roundtrip_both_ways() -> None:
    d, a = _pair(_ring())
    for i in range(3):
        frame = f"frame {i}".encode()
        sealed = d.seal(frame)
        assert len(sealed) <= len(frame) + Keyring.overhead
        assert a.open(sealed) == frame
        assert d.open(a.seal(frame)) == frame


def test_a_frame_of_another_stream_is_a_replay() -> None:
    ring = _ring()
    d1, a1 = _pair(ring)
    first, second = d1.seal(b"one"), d1.seal(b"two")
    assert a1.open(first) == b"one"
    _, a2 = _pair(ring)
    with pytest.raises(ReplayError, match="another stream's challenge"):
        a2.open(first)
    with pytest.raises(ReplayError, match="middle of another stream"):
        a2.open(second)
    # Nor in the wrong order on its own stream (a replayed frame).
    with pytest.raises(FrameError):
        a1.open(first)


def test_a_reflected_hello_or_frame_does_not_open() -> None:
    ring = _ring()
    d = ring.stream(dialer=True)
    hello = d.hello()
    assert hello is not None
    with pytest.raises(ReplayError, match="own hello"):
        d.accept_hello(hello)
    # Two dialers (roles alike) that swapped hellos: frames do not open.
    x, y = ring.stream(dialer=True), ring.stream(dialer=True)
    x_hello, y_hello = x.hello(), y.hello()
    assert x_hello is not None and y_hello is not None
    x.accept_hello(y_hello)
    y.accept_hello(x_hello)
    with pytest.raises(FrameError):
        y.open(x.seal(b"frame"))


def test_a_stream_must_open_with_a_hello() -> None:
    a = _ring().stream(dialer=False)
    with pytest.raises(FrameError, match="hello"):
        a.accept_hello(b"\x93\x01\x02\x03")  # a plain frame: no key on the peer
    with pytest.raises(FrameError, match="before the hello"):
        a.open(b"\x02S" + bytes(40))


def test_keyring_rotation_opens_with_any_key() -> None:
    old, new = decode_key(generate_key()), decode_key(generate_key())
    during = Keyring([new, old])
    assert during.open_datagram(Keyring([old]).seal_datagram(b"x"))[0] == b"x"
    # The new key seals: a node that has only the old one cannot open it.
    with pytest.raises(FrameError):
        Keyring([old]).open_datagram(during.seal_datagram(b"y"))
    assert Keyring([new]).open_datagram(during.seal_datagram(b"y"))[0] == b"y"
    # Streams, at each step of a rotation: the new key installed next to the
    # old one, then made primary on some nodes before others.
    installed, switched = Keyring([old, new]), Keyring([new, old])
    for x, y in ((Keyring([old]), installed), (installed, switched), (switched, Keyring([new]))):
        d, a = _pair(x, y)
        assert a.open(d.seal(b"there")) == b"there"
        assert d.open(a.seal(b"back")) == b"back"


def test_rotation_refuses_a_peer_without_the_primary() -> None:
    old, new = decode_key(generate_key()), decode_key(generate_key())
    d, a = _pair(Keyring([old]), Keyring([new]))
    with pytest.raises(FrameError, match="every key"):
        a.open(d.seal(b"x"))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:-1],  # truncated tag
        lambda b: b[:10],  # shorter than the overhead
        lambda b: bytes([1]) + b[1:],  # the previous version
        lambda b: b[:5] + bytes([b[5] ^ 1]) + b[6:],  # another stamp
        lambda b: b[:30] + bytes([b[30] ^ 1]) + b[31:],  # flipped ciphertext bit
        lambda b: b"",
    ],
)
def test_tampered_datagrams_fail_authentication(mutate: object) -> None:
    ring = _ring()
    sealed = ring.seal_datagram(b"some frame bytes")
    with pytest.raises(FrameError):
        ring.open_datagram(mutate(sealed))  # type: ignore[operator]


def test_wrong_key_fails() -> None:
    with pytest.raises(FrameError):
        _ring().open_datagram(_ring().seal_datagram(b"secret"))


# ------------------------------------------------------------ replay window

SECOND = 1_000_000  # stamps are microseconds


def _window(**kw: float) -> ReplayWindow:
    args: dict[str, float] = {"senders": 3, "reorder": 2.0, "skew": 60.0}
    args.update(kw)
    return ReplayWindow(senders=int(args["senders"]), reorder=args["reorder"], skew=args["skew"])


def test_replay_window_takes_each_stamp_once_and_tolerates_reordering() -> None:
    w = _window()
    now = 1000.0
    t = int(now * SECOND)
    w.admit("a", t, now)
    with pytest.raises(ReplayError, match="taken before"):
        w.admit("a", t, now)
    w.admit("a", t + 10, now)
    w.admit("a", t + 5, now)  # overtaken, within the window: taken once
    with pytest.raises(ReplayError):
        w.admit("a", t + 5, now)
    w.admit("a", t + 3 * SECOND, now)
    with pytest.raises(ReplayError, match="older than"):
        w.admit("a", t + 7, now)  # more than `reorder` below the highest
    w.admit("b", t, now)  # senders are apart


@pytest.mark.parametrize("lag", [-61.0, 61.0, 100.0])
def test_replay_window_refuses_stamps_far_from_our_clock(lag: float) -> None:
    now = 5000.0
    with pytest.raises(ReplayError, match="max_clock_skew"):
        _window().admit("a", int((now - lag) * SECOND), now)


def test_replay_window_memory_is_bounded() -> None:
    w = _window(senders=3)
    now = 1000.0
    t = int(now * SECOND)
    for i in range(10):
        w.admit(f"s{i}", t, now)
    assert len(w) == 3
    # A sender's remembered stamps are bounded too: the oldest become a floor.
    for i in range(ReplayWindow.DEPTH * 3):
        w.admit("s9", t + 1 + i, now)  # all within the reorder window
    seen = w._seen["s9"]
    assert len(seen.recent) <= ReplayWindow.DEPTH
    with pytest.raises(ReplayError):
        w.admit("s9", seen.floor, now)


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
