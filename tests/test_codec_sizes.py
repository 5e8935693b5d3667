"""The codec's size arithmetic and the wire status enum (overlay/codec.py):
each size against a real encoding, and WireStatus on the wire."""

from __future__ import annotations

import msgpack
import pytest

from overlay import codec
from overlay.codec import DecodeError, EncodeError, int_size, node_size, state_size, str_size
from overlay.ids import NodeId
from overlay.messages import TAGS, MemberState, MemberUpdates, WireStatus

ME = NodeId("me", "10.0.0.1", 7946)
B = NodeId("b", "10.0.0.2", 7946)


@pytest.mark.parametrize("s", ["", "a", "x" * 31, "x" * 32, "y" * 255, "z" * 256, "é" * 40])
def test_str_size(s: str) -> None:
    assert str_size(s) == len(msgpack.packb(s, use_bin_type=True))


@pytest.mark.parametrize("i", [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1])
def test_int_size(i: int) -> None:
    assert int_size(i) == len(msgpack.packb(i))


@pytest.mark.parametrize("n", [ME, NodeId("x" * 40, "fe80::1", 65535), NodeId("ünï", "h", 1)])
def test_node_size(n: NodeId) -> None:
    assert node_size(n) == len(msgpack.packb(n))


@pytest.mark.parametrize(
    "state",
    [
        MemberState(ME, 0, WireStatus.ALIVE, {}, None),
        MemberState(B, 2**40, WireStatus.ALIVE, {"role": "db", "zone": "eu-west-1"}, None),
        MemberState(NodeId("x" * 40, "fe80::1", 65535), 70000, WireStatus.SUSPECT, {}, B),
        MemberState(NodeId("ünïcode", "h", 1), 300, WireStatus.LEFT, {}, None),
        MemberState(B, 5, WireStatus.ALIVE, {f"k{i}": "v" * i for i in range(15)}, None),
    ],
)
def test_state_size_is_exact(state: MemberState) -> None:
    empty = len(codec.encode(ME, MemberUpdates(())))
    assert len(codec.encode(ME, MemberUpdates((state,)))) - empty == state_size(state)


def _updates_frame(status: object) -> bytes:
    tag = next(t for t, cls in TAGS.items() if cls is MemberUpdates)
    return msgpack.packb([1, ME, tag, [[B, 0, status, {}, None]]], use_bin_type=True)


@pytest.mark.parametrize("status", list(WireStatus))
def test_wire_status_is_its_int_on_the_wire_and_decodes_to_the_enum(status: WireStatus) -> None:
    frame = codec.encode(ME, MemberUpdates((MemberState(B, 0, status, {}, None),)))
    assert frame == _updates_frame(int(status))
    _, msg = codec.decode(frame)
    assert isinstance(msg, MemberUpdates)
    assert msg.updates[0].status is status


@pytest.mark.parametrize("bad", [-1, 4, 2**40, "alive", 1.0, True, None])
def test_a_status_outside_the_enum_is_refused(bad: object) -> None:
    with pytest.raises(DecodeError):
        codec.decode(_updates_frame(bad))


def test_a_plain_int_status_is_refused_at_the_sender() -> None:
    with pytest.raises(EncodeError, match="WireStatus"):
        codec.encode(ME, MemberUpdates((MemberState(B, 0, 1, {}, None),)))  # type: ignore[arg-type]
