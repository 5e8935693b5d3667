"""The wire codec: round trips for every tagged message, and hostile input.

The message strategies are built at test time from each class's field
annotations and metadata (the schema rules of `overlay.messages`), so a
message another layer adds to `TAGS` is covered without touching this file.
Decoding is checked to be total: whatever the bytes, `decode` returns a
message or raises `DecodeError`, never anything else; and what it accepts it
can encode again, unchanged.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlay import codec
from overlay.codec import DecodeError, EncodeError, decode, encode
from overlay.ids import MAX_HOST_LEN, MAX_NAME_LEN, NodeId
from overlay.messages import (
    MAX_ITEMS,
    MAX_STR,
    TAGS,
    Disconnect,
    ForwardJoin,
    Join,
    Message,
    Neighbor,
    NeighborReply,
    Shuffle,
    ShuffleReply,
    bounds,
    is_record,
    limit,
    record_fields,
)

INT_MAX = 2**63 - 1  # the schema's default int range is [0, 2**63 - 1]
DICT_MAX = 64  # the codec's default cap on dict[str, str] entries
BIG = 1 << 22  # a frame limit no generated message reaches
SENDER = NodeId("sender", "10.0.0.1", 7946)

# Strategies get slow on long values; the caps themselves are tested apart.
SMALL = 24


# --------------------------------------------------------------------------
# Strategies from field annotations


def node_ids() -> st.SearchStrategy[NodeId]:
    """Node ids as the wire carries them: printable names, IP literals."""
    return st.builds(
        NodeId,
        st.text(
            st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cf", "Co", "Cn")),
            min_size=1,
            max_size=MAX_NAME_LEN,
        ).filter(str.isprintable),
        st.ip_addresses().map(str),
        st.integers(1, 65535),
    )


def _build(cls: type) -> Callable[[dict[str, Any]], Any]:
    def build(kwargs: dict[str, Any]) -> Any:
        try:
            return cls(**kwargs)
        except (ValueError, TypeError):  # a record's own validation said no
            return None

    return build


def value_strategy(tp: Any, meta: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Every value the schema allows for `tp` with field metadata `meta`."""
    origin = typing.get_origin(tp)
    max_len = meta.get("max_len")
    if tp is int:
        return st.integers(meta.get("lo", 0), meta.get("hi", INT_MAX))
    if tp is bool:
        return st.booleans()
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        return st.sampled_from(tp)
    if tp is float:
        return st.floats(allow_nan=False)  # NaN != NaN: tested apart
    if tp is str:
        return st.text(max_size=min(max_len if max_len is not None else MAX_STR, SMALL))
    if tp is bytes:
        return st.binary(max_size=min(max_len if max_len is not None else SMALL, SMALL))
    if tp is NodeId:
        return node_ids()
    if origin is tuple:
        (item, _ellipsis) = typing.get_args(tp)
        cap = max_len if max_len is not None else MAX_ITEMS
        return st.lists(value_strategy(item, {}), max_size=min(cap, 6)).map(tuple)
    if origin is dict:
        cap = max_len if max_len is not None else DICT_MAX
        text = st.text(max_size=SMALL)
        return st.dictionaries(text, text, max_size=min(cap, 4))
    if origin in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return st.none() | value_strategy(inner, meta)
    if is_record(tp):
        return record_strategy(tp)
    raise AssertionError(f"no strategy for wire type {tp!r}: extend value_strategy")


def record_strategy(cls: type) -> st.SearchStrategy[Any]:
    """A message or nested record, each field drawn from its annotation."""
    hints = typing.get_type_hints(cls)
    fields = {name: value_strategy(hints[name], meta) for name, meta in record_fields(cls)}
    return st.fixed_dictionaries(fields).map(_build(cls)).filter(lambda v: v is not None)


def messages() -> st.SearchStrategy[Message]:
    return st.sampled_from(sorted(TAGS)).flatmap(lambda tag: record_strategy(TAGS[tag]))


def frames() -> st.SearchStrategy[bytes]:
    return st.tuples(node_ids(), messages()).map(lambda sm: encode(sm[0], sm[1], BIG))


# Any value msgpack can carry, to put where the schema expects something else.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=4) | st.binary(max_size=4), children, max_size=3)
    ),
    max_leaves=12,
)


def decode_or_none(data: bytes, max_frame: int = BIG) -> tuple[NodeId, Message] | None:
    """decode, where DecodeError is an answer too. Anything else fails the
    test; so does an accepted frame that does not survive a re-encode."""
    try:
        sender, msg = decode(data, max_frame)
    except DecodeError:
        return None
    assert type(sender) is NodeId
    assert type(msg) in TAGS.values()
    again = encode(sender, msg, BIG)
    resender, remsg = decode(again, BIG)
    assert encode(resender, remsg, BIG) == again
    return sender, msg


def pack(*items: Any) -> bytes:
    data: bytes = msgpack.packb(list(items), use_bin_type=True)
    return data


S = ["sender", "10.0.0.1", 7946]  # SENDER as the wire has it
J = ["joiner", "10.0.0.2", 7946]


# --------------------------------------------------------------------------
# A test-only message with every supported field type, registered under a
# tag no protocol uses, so the schema machinery is tested on its own.


@dataclass(frozen=True, slots=True)
class Inner:
    who: NodeId
    n: int = field(metadata=bounds(-5, 5))


@dataclass(frozen=True, slots=True)
class Kitchen(Message):
    small: int = field(metadata=bounds(-3, 300))
    big: int
    flag: bool
    ratio: float
    text: str
    short: str = field(metadata=limit(4))
    blob: bytes
    capped: bytes = field(metadata=limit(8))
    node: NodeId
    ints: tuple[int, ...] = field(metadata=limit(3))
    nodes: tuple[NodeId, ...]
    tags: dict[str, str] = field(metadata=limit(2))
    maybe: int | None = field(metadata=bounds(1, 9))
    inner: Inner
    inners: tuple[Inner, ...] = field(metadata=limit(2))
    maybe_inner: Inner | None


KITCHEN_TAG = 250
N1 = NodeId("a", "10.0.0.8", 1)


def kitchen(**changes: Any) -> Kitchen:
    base = Kitchen(
        small=-3,
        big=INT_MAX,
        flag=True,
        ratio=-1.5,
        text="é" * MAX_STR,
        short="abcd",
        blob=b"\x00\xff",
        capped=b"12345678",
        node=N1,
        ints=(0, 1, INT_MAX),
        nodes=(N1, NodeId("b", "10.0.0.9", 2)),
        tags={"k": "v", "": ""},
        maybe=None,
        inner=Inner(N1, -5),
        inners=(Inner(N1, 5),),
        maybe_inner=None,
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def kitchen_tag() -> Iterator[int]:
    assert KITCHEN_TAG not in TAGS
    TAGS[KITCHEN_TAG] = Kitchen
    try:
        yield KITCHEN_TAG
    finally:
        del TAGS[KITCHEN_TAG]
        codec._BY_TAG.pop(KITCHEN_TAG, None)
        codec._BY_CLS.pop(Kitchen, None)


def kitchen_body(**changes: Any) -> list[Any]:
    """The wire fields of `kitchen(**changes)`, in order."""
    k = kitchen(**changes)
    frame = msgpack.unpackb(encode(SENDER, k, BIG), raw=False)
    return list(frame[3:])


# --------------------------------------------------------------------------
# Round trips


def test_tags_are_in_their_layer_ranges_and_unique() -> None:
    assert len(set(TAGS.values())) == len(TAGS)
    for tag in TAGS:
        assert 1 <= tag <= 63, tag
    hv = {Join, ForwardJoin, Neighbor, NeighborReply, Disconnect, Shuffle, ShuffleReply}
    assert all(1 <= t <= 15 for t, c in TAGS.items() if c in hv)


@pytest.mark.parametrize("tag", sorted(TAGS))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_round_trip_every_message(tag: int, data: st.DataObject) -> None:
    msg = data.draw(record_strategy(TAGS[tag]))
    sender = data.draw(node_ids())
    frame = encode(sender, msg, BIG)
    assert decode(frame, BIG) == (sender, msg)
    assert msgpack.unpackb(frame, raw=False)[:3] == [
        codec.PROTOCOL_VERSION,
        [sender.name, sender.host, sender.port],
        tag,
    ]


@settings(
    max_examples=100,
    deadline=None,
    # the fixture only registers a tag: nothing to reset between examples
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_round_trip_every_supported_field_type(kitchen_tag: int, data: st.DataObject) -> None:
    msg = data.draw(record_strategy(Kitchen))
    assert decode(encode(SENDER, msg, BIG), BIG) == (SENDER, msg)


def test_kitchen_limits_round_trip(kitchen_tag: int) -> None:
    for k in (
        kitchen(),
        kitchen(small=300, big=0, maybe=9, maybe_inner=Inner(N1, 0), tags={"a": "b" * MAX_STR}),
        kitchen(ratio=float("inf"), flag=False, text="", short="", capped=b"", ints=()),
    ):
        assert decode(encode(SENDER, k, BIG), BIG) == (SENDER, k)


def test_frame_layout() -> None:
    joiner = NodeId("joiner", "10.0.0.2", 7946)
    frame = encode(SENDER, ForwardJoin(joiner, 5))
    assert msgpack.unpackb(frame, raw=False) == [1, S, 2, J, 5]
    assert msgpack.unpackb(encode(SENDER, Join()), raw=False) == [1, S, 1]


def test_nan_decodes_as_a_float(kitchen_tag: int) -> None:
    body = kitchen_body()
    body[3] = float("nan")
    result = decode(pack(1, S, KITCHEN_TAG, *body))
    assert isinstance(result[1], Kitchen) and result[1].ratio != result[1].ratio


def test_an_int_is_accepted_where_a_float_is_expected(kitchen_tag: int) -> None:
    body = kitchen_body()
    body[3] = 7
    _, msg = decode(pack(1, S, KITCHEN_TAG, *body))
    assert isinstance(msg, Kitchen) and msg.ratio == 7.0 and type(msg.ratio) is float


# --------------------------------------------------------------------------
# Totality: anything in, a message or DecodeError out


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes(data: bytes) -> None:
    decode_or_none(data)


@settings(max_examples=300, deadline=None)
@given(frame=frames(), data=st.data())
def test_mutated_frames(frame: bytes, data: st.DataObject) -> None:
    assert decode_or_none(frame) is not None
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice", "overwrite"]))
    buf = bytearray(frame)
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        del buf[data.draw(st.integers(0, len(buf) - 1)) :]
    elif kind == "extend":
        buf += data.draw(st.binary(min_size=1, max_size=16))
    elif kind == "splice":
        other = data.draw(frames())
        i = data.draw(st.integers(0, len(buf)))
        j = data.draw(st.integers(0, len(other)))
        buf = buf[:i] + bytearray(other[j:])
    else:
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i : i + 4] = data.draw(st.binary(min_size=1, max_size=4))
    result = decode_or_none(bytes(buf))
    if kind == "truncate" or (kind == "extend" and len(buf) > len(frame)):
        assert result is None  # a prefix is incomplete; trailing bytes are not one frame


@settings(max_examples=300, deadline=None)
@given(
    tag=st.sampled_from(sorted(TAGS)) | st.integers(-(2**63), 2**64 - 1),
    fields=st.lists(msgpack_values, max_size=6),
    sender=st.sampled_from([S, ["", "h", 1], ["a", "h", 70000], ["a", "h"], "a@h:1"]),
)
def test_arbitrary_fields_under_a_valid_header(tag: int, fields: list[Any], sender: Any) -> None:
    decode_or_none(pack(1, sender, tag, *fields))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_one_field_replaced_by_anything(data: st.DataObject) -> None:
    """The sharpest fuzz: a valid frame with one field, or one nested value,
    swapped for an arbitrary msgpack value."""
    with_fields = sorted(tag for tag, cls in TAGS.items() if dataclasses.fields(cls))
    tag = data.draw(st.sampled_from(with_fields))
    msg = data.draw(record_strategy(TAGS[tag]))
    body = msgpack.unpackb(encode(SENDER, msg, BIG), raw=False)
    path = [data.draw(st.integers(3, len(body) - 1))]
    node = body[path[0]]
    while isinstance(node, list) and node and data.draw(st.booleans()):
        path.append(data.draw(st.integers(0, len(node) - 1)))
        node = node[path[-1]]
    target = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = data.draw(msgpack_values)
    decode_or_none(pack(*body))


# --------------------------------------------------------------------------
# Explicit hostile cases


def test_empty_frame() -> None:
    with pytest.raises(DecodeError, match="empty"):
        decode(b"")


def test_every_truncation_of_a_valid_frame_is_rejected() -> None:
    nodes = tuple(NodeId(f"n{i}", f"10.0.0.{i}", 7946) for i in range(5))
    frame = encode(SENDER, Shuffle(SENDER, 6, 2**40, nodes))
    for n in range(len(frame)):
        with pytest.raises(DecodeError):
            decode(frame[:n])


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(DecodeError):
        decode(encode(SENDER, Join()) + b"\xc0")


def test_oversized_frames_default_64_kib(kitchen_tag: int) -> None:
    assert codec.DEFAULT_MAX_FRAME == 64 * 1024
    big = kitchen(blob=b"x" * (64 * 1024))
    with pytest.raises(EncodeError, match="limit 65536"):
        encode(SENDER, big)
    frame = encode(SENDER, big, max_frame=128 * 1024)
    with pytest.raises(DecodeError, match="limit 65536"):
        decode(frame)
    assert decode(frame, max_frame=128 * 1024) == (SENDER, big)


def test_frame_limit_is_configurable_and_inclusive() -> None:
    nodes = tuple(NodeId(f"n{i}", f"10.0.0.{i}", 7946) for i in range(64))
    msg = Shuffle(SENDER, 6, 1, nodes)
    size = len(encode(SENDER, msg))
    assert decode(encode(SENDER, msg, max_frame=size), max_frame=size) == (SENDER, msg)
    with pytest.raises(EncodeError):
        encode(SENDER, msg, max_frame=size - 1)
    with pytest.raises(DecodeError):
        decode(encode(SENDER, msg), max_frame=size - 1)


def test_unknown_tags() -> None:
    unused = [t for t in (0, 8, 15, 63, 64, 255, 2**63, 2**64 - 1, -1) if t not in TAGS]
    for tag in unused:
        with pytest.raises(DecodeError, match="unknown message tag"):
            decode(pack(1, S, tag))
    for tag in ("1", 1.0, True, None, [1]):
        with pytest.raises(DecodeError, match="tag"):
            decode(pack(1, S, tag))


@pytest.mark.parametrize("version", [0, 2, -1, 2**64 - 1, True, 1.0, "1", None, [1], b"\x01"])
def test_wrong_version(version: Any) -> None:
    with pytest.raises(DecodeError, match="version"):
        decode(pack(version, S, 1))


@pytest.mark.parametrize(
    "frame",
    [
        pack(),
        pack(1),
        pack(1, S),
        msgpack.packb({"v": 1}),
        msgpack.packb(1),
        msgpack.packb("frame"),
        msgpack.packb(None),
    ],
)
def test_not_a_frame(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(frame)


@pytest.mark.parametrize(
    "sender",
    [
        ["", "h", 1],
        ["x" * (MAX_NAME_LEN + 1), "h", 1],
        ["a", "", 1],
        ["a", "h" * (MAX_HOST_LEN + 1), 1],
        ["a", "h", -1],
        ["a", "h", 65536],
        ["a", "h", True],
        ["a", "h", 1.0],
        [b"a", "h", 1],
        ["a", b"h", 1],
        ["a", "h"],
        ["a", "h", 1, 2],
        {"name": "a", "host": "h", "port": 1},
        "a@h:1",
        None,
    ],
)
def test_bad_sender(sender: Any) -> None:
    with pytest.raises(DecodeError, match="sender"):
        decode(pack(1, sender, 1))


@pytest.mark.parametrize(
    "frame",
    [
        pack(1, S, 2, J, True),  # bool where int
        pack(1, S, 2, J, 1.0),  # float where int
        pack(1, S, 2, J, "1"),  # str where int
        pack(1, S, 2, J, None),  # None where a required int
        pack(1, S, 3, 1, False, 0),  # int where bool
        pack(1, S, 3, None, False, 0),
        pack(1, S, 5, "yes"),  # str where bool
        pack(1, S, 2, [b"joiner", "10.0.0.2", 7946], 1),  # bytes where str
        pack(1, S, 2, "joiner@10.0.0.2:7946", 1),  # str where a node id
        pack(1, S, 2, [J], 1),
        pack(1, S, 6, S, 1, 1, J),  # a node id where a tuple of them
        pack(1, S, 6, S, 1, 1, {"a": "b"}),  # a map where a tuple
        pack(1, S, 6, S, 1, 1, [J, "x"]),  # a bad item
        pack(1, S, 2, J, msgpack.ExtType(1, b"\x01")),  # ext types
        pack(1, S, 6, S, 1, 1, msgpack.ExtType(3, b"")),
        pack(1, S, 2, msgpack.Timestamp(1, 0), 1),
        pack(1, S, 2, J),  # too few fields
        pack(1, S, 2, J, 1, 1),  # too many
        pack(1, S, 1, None),  # JOIN has none
    ],
)
def test_wrong_field_types(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(frame)


@pytest.mark.parametrize(
    "frame",
    [
        pack(1, S, 2, J, -1),  # TTL below 0
        pack(1, S, 2, J, 256),  # TTL above 255
        pack(1, S, 3, True, False, -1),  # negative nonce
        pack(1, S, 3, True, False, 2**63),  # above 2**63 - 1
        pack(1, S, 3, True, False, 2**64 - 1),
        pack(1, S, 4, True, -(2**63)),
        pack(1, S, 6, S, 300, 1, []),
    ],
)
def test_out_of_range_ints(frame: bytes) -> None:
    with pytest.raises(DecodeError, match="not in"):
        decode(frame)


@pytest.mark.parametrize(
    ("node", "why"),
    [
        (["a", "example.com", 7946], "IP address literal"),  # never resolved: issue 12
        (["a", "10.0.0.1\x00", 7946], "IP address literal"),
        (["a", "fe80::1%eth0", 7946], "IP address literal"),  # no zone index
        (["a", "010.0.0.1", 7946], "IP address literal"),  # not the canonical form
        (["a", "FE80::1", 7946], "IP address literal"),
        (["a\x00b", "10.0.0.1", 7946], "control characters"),
        (["a\nb", "10.0.0.1", 7946], "control characters"),
        (["a", "10.0.0.1", 0], "bad node port"),
    ],
)
def test_wire_node_ids_are_printable_names_at_ip_literals(node: list[Any], why: str) -> None:
    """Nothing from the network may make a node resolve an attacker's name
    or carry control characters into logs and sends (issue 12)."""
    with pytest.raises(DecodeError, match=why):
        decode(pack(1, node, 1))
    with pytest.raises(DecodeError, match=why):
        decode(pack(1, S, 2, node, 3))
    assert decode(pack(1, ["a", "::1", 1], 1))[0] == NodeId("a", "::1", 1)


def test_in_range_int_extremes() -> None:
    assert decode(pack(1, S, 3, True, False, 2**63 - 1))[1] == Neighbor(True, False, 2**63 - 1)
    assert decode(pack(1, S, 2, J, 255))[1] == ForwardJoin(NodeId(*J), 255)
    assert decode(pack(1, S, 2, J, 0))[1] == ForwardJoin(NodeId(*J), 0)


def test_too_many_items() -> None:
    assert decode(pack(1, S, 7, 1, [J] * 64))[1] == ShuffleReply(1, (NodeId(*J),) * 64)
    with pytest.raises(DecodeError, match="more than 64"):
        decode(pack(1, S, 7, 1, [J] * 65))
    with pytest.raises(DecodeError, match="more than 64"):
        decode(pack(1, S, 6, S, 1, 1, [J] * 65))


def test_length_caps_of_strings_bytes_tuples_and_maps(kitchen_tag: int) -> None:
    ok = {
        "text": "x" * MAX_STR,
        "short": "abcd",
        "capped": b"x" * 8,
        "ints": (1, 2, 3),
        "tags": {"a": "", "b": ""},
        "nodes": (N1,) * MAX_ITEMS,
    }
    too_long = {
        "text": "x" * (MAX_STR + 1),
        "short": "abcde",
        "capped": b"x" * 9,
        "ints": (1, 2, 3, 4),
        "tags": {"a": "", "b": "", "c": ""},
        "nodes": (N1,) * (MAX_ITEMS + 1),
    }
    names = [f.name for f in dataclasses.fields(Kitchen)]
    for name, value in ok.items():
        k = kitchen(**{name: value})
        assert decode(encode(SENDER, k, BIG), BIG) == (SENDER, k)
        wire = msgpack.unpackb(encode(SENDER, kitchen(), BIG), raw=False)
        wire[3 + names.index(name)] = _wire(too_long[name])
        with pytest.raises(DecodeError, match=f"Kitchen.{name}"):
            decode(pack(*wire), BIG)
        with pytest.raises(EncodeError, match=f"Kitchen.{name}"):
            encode(SENDER, kitchen(**{name: too_long[name]}), BIG)


def _wire(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_wire(v) for v in value]
    if isinstance(value, NodeId):
        return [value.name, value.host, value.port]
    return value


def test_map_keys_must_be_strings(kitchen_tag: int) -> None:
    names = [f.name for f in dataclasses.fields(Kitchen)]
    i = 3 + names.index("tags")
    for bad in ({1: "v"}, {b"k": "v"}, {"k": b"v"}, {"k": 1}, {None: "v"}, {"k": "v" * 1025}):
        wire = msgpack.unpackb(encode(SENDER, kitchen(), BIG), raw=False)
        wire[i] = bad
        with pytest.raises(DecodeError):
            decode(pack(*wire), BIG)
    # a non-string key anywhere in the frame stops the unpacker itself
    with pytest.raises(DecodeError, match="not msgpack"):
        decode(pack(1, S, 5, {1: 2}))


def test_nested_records_are_checked(kitchen_tag: int) -> None:
    names = [f.name for f in dataclasses.fields(Kitchen)]
    for name, bad in [
        ("inner", [S, 6]),  # out of its bounds
        ("inner", [S]),  # too short
        ("inner", [S, 1, 2]),
        ("inner", None),  # not optional
        ("maybe_inner", [S, "1"]),
        ("inners", [[S, 0], [S, 0], [S, 0]]),  # over its limit of 2
        ("inners", [[S, 0], "x"]),
        ("maybe", 0),  # optional, but its bounds still hold
        ("maybe", 10),
    ]:
        wire = msgpack.unpackb(encode(SENDER, kitchen(), BIG), raw=False)
        wire[3 + names.index(name)] = bad
        with pytest.raises(DecodeError, match=f"Kitchen.{name}"):
            decode(pack(*wire), BIG)


def test_str_where_bytes_and_bytes_where_str(kitchen_tag: int) -> None:
    names = [f.name for f in dataclasses.fields(Kitchen)]
    for name, bad in [("blob", "text"), ("text", b"bytes"), ("short", b"x")]:
        wire = msgpack.unpackb(encode(SENDER, kitchen(), BIG), raw=False)
        wire[3 + names.index(name)] = bad
        with pytest.raises(DecodeError, match=f"Kitchen.{name}"):
            decode(pack(*wire), BIG)


@pytest.mark.parametrize("depth", [10, 100, 5000, 100_000])
def test_deep_nesting(depth: int) -> None:
    # FORWARD_JOIN whose joiner is [[[...[nil]...]]]: past some depth the
    # unpacker's own stack gives out, before that the schema says no.
    head = b"\x95" + msgpack.packb(1) + msgpack.packb(S) + msgpack.packb(2)
    frame = head + b"\x91" * depth + b"\xc0" + msgpack.packb(1)
    with pytest.raises(DecodeError):
        decode(frame, max_frame=1 << 20)
    with pytest.raises(DecodeError):
        decode(b"\x91" * depth + b"\xc0", max_frame=1 << 20)


def test_invalid_utf8_is_rejected() -> None:
    frame = pack(1, ["a", "h", 1], 1).replace(b"\xa1a", b"\xa1\xff")
    with pytest.raises(DecodeError, match="not msgpack"):
        decode(frame)


def test_huge_declared_lengths() -> None:
    # array32 / str32 / bin32 headers claiming 4 GiB with nothing behind them
    for head in (b"\xdd", b"\xdb", b"\xc6", b"\xdf"):
        with pytest.raises(DecodeError):
            decode(head + b"\xff\xff\xff\xff")


# --------------------------------------------------------------------------
# Encoding holds local messages to the schema


@pytest.mark.parametrize(
    ("msg", "where"),
    [
        (ForwardJoin(SENDER, 256), "ForwardJoin.ttl"),
        (ForwardJoin(SENDER, -1), "ForwardJoin.ttl"),
        (ForwardJoin(SENDER, True), "ForwardJoin.ttl"),
        (ForwardJoin("joiner", 1), "ForwardJoin.joiner"),  # type: ignore[arg-type]
        (Neighbor(1, False, 0), "Neighbor.high_priority"),  # type: ignore[arg-type]
        (Neighbor(True, False, 2**63), "Neighbor.nonce"),
        (Shuffle(SENDER, 1, 1, (SENDER,) * 65), "Shuffle.nodes"),
        (Shuffle(SENDER, 1, 1, [SENDER]), None),  # a list is fine as a tuple
        (ShuffleReply(1, (SENDER, None)), "ShuffleReply.nodes"),  # type: ignore[arg-type]
    ],
)
def test_encode_checks_the_schema(msg: Message, where: str | None) -> None:
    if where is None:
        encode(SENDER, msg)
        return
    with pytest.raises(EncodeError, match=where.replace(".", r"\.")):
        encode(SENDER, msg)


def test_encode_rejects_what_msgpack_cannot_carry(kitchen_tag: int) -> None:
    with pytest.raises(EncodeError):
        encode(SENDER, kitchen(text="\ud800"))  # a lone surrogate is not UTF-8
    # The failed frame leaves nothing behind in the reused packer.
    ok = kitchen(text="after")
    assert decode(encode(SENDER, ok)) == (SENDER, ok)
    with pytest.raises(EncodeError):
        encode(NodeId("\udfff", "10.0.0.8", 1), Join())
    with pytest.raises(EncodeError, match=r"Kitchen\.tags"):
        encode(SENDER, kitchen(tags={1: "x"}))
    with pytest.raises(EncodeError, match=r"Kitchen\.inner"):
        encode(SENDER, kitchen(inner=N1))
    with pytest.raises(EncodeError, match=r"Kitchen\.ratio"):
        encode(SENDER, kitchen(ratio="1.0"))
    with pytest.raises(EncodeError):
        encode("sender", Join())  # type: ignore[arg-type]


def test_encode_unknown_message() -> None:
    @dataclass(frozen=True, slots=True)
    class Stray(Message):
        pass

    with pytest.raises(EncodeError, match="no wire tag"):
        encode(SENDER, Stray())


def test_a_message_added_to_tags_later_is_picked_up(kitchen_tag: int) -> None:
    # The codec builds its tables once; a tag appended afterwards (as the
    # other layers do at import) must still encode and decode.
    assert decode(encode(SENDER, kitchen(), BIG), BIG)[1] == kitchen()


def test_encode_names_a_wrong_item_in_a_tuple_of_records() -> None:
    from overlay.messages import MemberUpdates

    with pytest.raises(
        EncodeError, match=r"MemberUpdates\.updates: expected MemberState, got dict"
    ):
        encode(SENDER, MemberUpdates(({"node": SENDER},)))  # type: ignore[arg-type]
    with pytest.raises(
        EncodeError, match=r"MemberUpdates\.updates: expected MemberState, got tuple"
    ):
        encode(SENDER, MemberUpdates(((SENDER, 1, 0, {}, None),)))  # type: ignore[arg-type]


def test_interned_member_states_are_checked_like_new_ones() -> None:
    """A state decoded before comes back from the interning table: the same
    record, shared, and only when the raw fields are exactly a valid one's
    (a port, incarnation or status of True or 1.0 compares equal to 1)."""
    from overlay.messages import MemberState, MemberUpdates, WireStatus

    node = NodeId("n1", "10.0.0.2", 1)
    first = decode(
        encode(SENDER, MemberUpdates((MemberState(node, 1, WireStatus.ALIVE, {}, None),)))
    )
    again = decode(
        encode(SENDER, MemberUpdates((MemberState(node, 1, WireStatus.ALIVE, {}, None),)))
    )
    assert again[1].updates[0] is first[1].updates[0]
    assert again[1].updates[0] == (node, 1, WireStatus.ALIVE, {}, None)
    newer = decode(
        encode(SENDER, MemberUpdates((MemberState(node, 2, WireStatus.ALIVE, {}, None),)))
    )
    assert newer[1].updates[0].incarnation == 2
    raw = [1, list(SENDER), 37]
    for bad in (
        [["n1", "10.0.0.2", True], 2, 0, {}, None],
        [["n1", "10.0.0.2", 1.0], 2, 0, {}, None],
        [["n1", "10.0.0.2", 1], 2.0, 0, {}, None],
        [["n1", "10.0.0.2", 1], 2, False, {}, None],
        [["n1", "10.0.0.2", 1], 2, 0, [], None],
    ):
        with pytest.raises(DecodeError):
            decode(msgpack.packb([*raw, [bad]]))


def test_a_decoded_state_encodes_as_it_came() -> None:
    """The encoder skips its checks for interned records (they passed the
    decoder's): the frame is the same, and a lookalike is still checked."""
    from overlay.messages import MemberState, MemberUpdates, WireStatus

    node = NodeId("n2", "10.0.0.3", 1)
    frame = encode(SENDER, MemberUpdates((MemberState(node, 0, WireStatus.ALIVE, {}, None),)))
    _, msg = decode(frame)
    assert encode(SENDER, msg) == frame
    lookalike = MemberState(node, 0, 0, {}, None)  # type: ignore[arg-type]  # an int status
    with pytest.raises(EncodeError, match="status"):
        encode(SENDER, MemberUpdates((lookalike,)))
