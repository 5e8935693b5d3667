"""The attacker's frames are the agents' protocol: for ordinary values,
`helpers.frame` gives byte for byte what `overlay.codec.encode` gives, for
every message type. If the codec's layout changes, this fails first, and the
attacks of this folder must follow (else they would be refused for being
malformed, and pass without testing anything)."""

from __future__ import annotations

import dataclasses

from overlay import codec
from overlay.coordinates import Coordinate
from overlay.ids import NodeId
from overlay.messages import (
    TAGS,
    Announcement,
    DigestEntry,
    MemberState,
    MsgId,
    TreeBit,
    WireStatus,
)
from tests.hostile.helpers import frame, prefixed, split_frames

ME = NodeId("n1", "127.0.0.1", 7946)
OTHER = NodeId("n2", "127.0.0.2", 7947)
MID = MsgId("n1", 12345, 7)


def _sample(tp: object, name: str) -> object:
    """An ordinary value of a field's type."""
    text = str(tp)
    if "NodeId" in text and "tuple" in text:
        return (OTHER,)
    if "NodeId" in text:
        return OTHER
    if "MemberState" in text:
        return (MemberState(OTHER, 3, WireStatus.SUSPECT, {"role": "web"}, ME),)
    if "Announcement" in text:
        return (Announcement(MID, 2),)
    if "DigestEntry" in text:
        return (DigestEntry("n1", 12345, (1, 4)),)
    if "TreeBit" in text:
        return (TreeBit("n1", True),)
    if "Coordinate" in text:
        return Coordinate((0.5, -0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 1e-3), 1e-4, 0.4, -0.002)
    if "MsgId" in text and "tuple" in text:
        return (MID,)
    if "dict[str, str]" in text:
        return {"role": "^web"}
    if "tuple[str" in text:
        return ("n1",)
    if "MsgId" in text:
        return MID
    if "bytes" in text:
        return b"payload"
    if "bool" in text:
        return True
    if "float" in text:
        return 1.5
    if "str" in text:
        return "topic"
    if "int" in text:
        return 1 if name in ("hops", "parts", "ttl", "seq", "timeout_ms") else 0
    raise AssertionError(f"no sample for {name}: {text}")


def test_frames_match_the_codec_for_every_message_type() -> None:
    for cls in TAGS.values():
        hints = {f.name: f.type for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        values = {name: _sample(tp, name) for name, tp in hints.items()}
        msg = cls(**values)
        assert frame(ME, cls, **values) == codec.encode(ME, msg), cls.__name__
        sender, back = codec.decode(frame(ME, cls, **values))
        assert sender == ME and back == msg


def test_split_frames_reads_a_recorded_stream() -> None:
    a = frame(ME, TAGS[1])
    b = frame(ME, TAGS[35], seq=4)
    assert split_frames(prefixed(a) + prefixed(b) + b"\x00\x00") == [a, b]
