"""The wire codec: messages <-> msgpack frames.

A frame is one msgpack array: `[VERSION, sender, tag, field1, field2, ...]`,
the sender a `[name, host, port]` array and the fields in declaration order.
Encoders and decoders are built once per message class from its field
annotations (see `overlay.messages` for the schema rules), so adding a
message is adding a dataclass and a tag.

Decoding trusts nothing: any malformed, truncated, oversized, unknown-tag,
wrong-type or out-of-range input raises `DecodeError` with a reason, and no
other exception escapes `decode`. Encoding holds local messages to the same
schema: a value the peer would refuse (wrong type, out of range, too long) or
a frame over the limit raises `EncodeError` at the sender, naming the field,
instead of leaving the peer to drop the frame.

Speed: every message is checked field by field, and a push-pull carries
thousands of member states, so the checks are the codec's hot path. They are
compiled: for each record class the schema is turned once into the source
of one decoder and one encoder function with every check inlined (the way
`dataclasses` writes `__init__`), instead of a chain of closures per field.
Error paths (the field's dotted name) are built only when a check fails.
Decoded node ids are interned: a cluster has few distinct ones, and equal
frames then give identical `NodeId` objects without re-validating them.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable
from typing import Any

import msgpack

from overlay.ids import MAX_HOST_LEN, MAX_NAME_LEN, NodeId, wire_id_ok
from overlay.messages import (
    MAX_ITEMS,
    MAX_STR,
    TAGS,
    MemberState,
    Message,
    WireStatus,
    is_record,
    record_fields,
)

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 64 * 1024
INT_MAX = 2**63 - 1
DICT_MAX = 64  # default cap on dict[str, str] entries


class DecodeError(ValueError):
    """The bytes are not a valid frame of this protocol."""


class EncodeError(ValueError):
    """A local message cannot be encoded (too large, or a bad value)."""


# --------------------------------------------------------------------------
# Helpers the generated functions call (on the error paths, mostly)


def _fail(where: str, why: str) -> DecodeError:
    return DecodeError(f"{where}: {why}")


def _type_fail(where: str, expected: str, v: Any) -> DecodeError:
    return _fail(where, f"expected {expected}, got {type(v).__name__}")


def _int_fail(where: str, v: Any, lo: int, hi: int) -> DecodeError:
    if type(v) is not int:
        return _type_fail(where, "int", v)
    return _fail(where, f"{v} not in [{lo}, {hi}]")


def _len_fail(where: str, v: Any, kind: str, cap: int) -> DecodeError:
    if type(v).__name__ != kind:
        return _type_fail(where, {"tuple": "array", "dict": "map"}.get(kind, kind), v)
    unit = {"tuple": "items", "dict": "entries"}.get(kind)
    return _fail(where, f"more than {cap} {unit}" if unit else f"longer than {cap}")


def _float_dec(v: Any, where: str) -> float:
    if type(v) is int:
        return float(v)
    raise _type_fail(where, "float", v)


_NODES: dict[tuple[str, str, int], NodeId] = {}
_NODES_MAX = 1 << 16  # distinct ids remembered; the table starts over when full


def _node(v: Any, where: str, suffix: str = "") -> NodeId:
    # The table is keyed by the decoded array itself: a NodeId is a tuple,
    # and equal tuples hash alike. A port of True or 1.0 would equal 1: the
    # type check keeps those out. (A hostile array holding a map is not
    # hashable: it falls through to the checks.) The error's path is
    # `where + suffix`, joined only on failure (this runs for every member
    # state: joining it every time cost a tenth of decoding one).
    try:
        node = _NODES.get(v)
    except TypeError:
        node = None
    if node is not None and type(v[2]) is int:
        return node
    if type(v) is tuple and len(v) == 3:
        name, host, port = v
        if (
            type(name) is str
            and type(host) is str
            and type(port) is int
            and 0 < len(name) <= MAX_NAME_LEN
            and 0 < len(host) <= MAX_HOST_LEN
            and wire_id_ok(name, host, port)
        ):
            node = NodeId(name, host, port)
            if len(_NODES) >= _NODES_MAX:
                _NODES.clear()
            _NODES[v] = node  # the array is (name, host, port) itself
            return node
    raise _node_fail(v, where + suffix)


def _node_fail(v: Any, where: str) -> DecodeError:
    if type(v) is not tuple or len(v) != 3:
        return _fail(where, "node id must be [name, host, port]")
    name, host, _ = v
    if type(name) is not str or not 0 < len(name) <= MAX_NAME_LEN:
        return _fail(where, "bad node name")
    if type(host) is not str or not 0 < len(host) <= MAX_HOST_LEN:
        return _fail(where, "bad node host")
    if type(v[2]) is not int or not 0 < v[2] <= 65535:
        return _fail(where, "bad node port")
    if not name.isprintable():
        return _fail(where, "node name holds control characters")
    return _fail(where, "node host must be an IP address literal")


def _strmap(v: Any, cap: int, where: str) -> dict[str, str]:
    if type(v) is not dict:
        raise _type_fail(where, "map", v)
    if len(v) > cap:
        raise _fail(where, f"more than {cap} entries")
    for k, x in v.items():
        if type(k) is not str or type(x) is not str or len(k) > MAX_STR or len(x) > MAX_STR:
            raise _fail(where, "map entries must be short strings")
    return v


def _enc_fail(where: str, why: str) -> EncodeError:
    return EncodeError(f"{where}: {why}")


def _enc_type(where: str, expected: str, v: Any) -> EncodeError:
    return _enc_fail(where, f"expected {expected}, got {type(v).__name__}")


def _enc_int(where: str, v: Any, lo: int, hi: int) -> EncodeError:
    return _enc_fail(where, f"{v!r} is not an int in [{lo}, {hi}]")


def _enc_float(v: Any, where: str) -> float:
    if type(v) is int and -INT_MAX - 1 <= v <= INT_MAX:
        return float(v)
    raise _enc_type(where, "float", v)


def _enc_strmap(v: Any, cap: int, where: str) -> dict[str, str]:
    if not isinstance(v, dict):
        raise _enc_type(where, "dict", v)
    if len(v) > cap:
        raise _enc_fail(where, f"more than {cap} entries")
    for k, x in v.items():
        if type(k) is not str or type(x) is not str or len(k) > MAX_STR or len(x) > MAX_STR:
            raise _enc_fail(where, "map entries must be short strings")
    return v


# Decoded member states, interned: the last one decoded per node, when it
# has no tags and no accuser (an alive, failed or left state; suspects name
# their accuser). SWIM sends the same few states over and over (each update
# piggybacked 4 x ceil(log10 N) times by every node, every member in every
# push-pull), so most arrive as a state decoded before: one dict lookup and
# three comparisons give the same checked record, instead of building it
# (measured in a 1,000-node run, member states were 60% of all decoding).
# Receivers then share one record (and one empty tags map, `_NO_TAGS`) per
# state instead of a copy each: a member list holds N of them, and a
# simulation N lists. Records are immutable and tags are never changed in
# place (see `MemberState`), so sharing is safe.
_STATES: dict[Any, MemberState] = {}
_STATES_MAX = 1 << 16  # the table starts over when full
# The same records by id(): the encoder skips its checks for them (they
# passed the decoder's, which are the same). Holding the record keeps its
# id from being reused.
_DECODED: dict[int, MemberState] = {}
_NO_TAGS: dict[str, str] = {}

# The hit, at the top of `dec_MemberState` (f0..f4 hold the raw fields). The
# table is keyed by the raw node array (a tuple, like the NodeId it equals),
# so a hit proves the node, the incarnation and the status equal those of a
# record that passed every check, once three types are checked as well (a
# port or an int of True or 1.0 would compare equal). An unhashable node
# (holding a map) falls through to the checks.
_STATE_HIT = [
    "    if f4 is None and type(f3) is dict and not f3 and type(f1) is int and type(f2) is int:",
    "        try:",
    "            s = _states.get(f0)",
    "        except TypeError:",
    "            s = None",
    "        if s is not None and s[1] == f1 and s[2] == f2 and type(f0[2]) is int:",
    "            return s",
]


# --------------------------------------------------------------------------
# The compiler: schema -> source of one decoder and one encoder per class


def _is_int_enum(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, enum.IntEnum)


def _enum_members(tp: type[enum.IntEnum]) -> tuple[enum.IntEnum, ...]:
    """The members of a wire enum, indexed by value: its values must be
    0..n-1 (decoding is then one bounds check and one index)."""
    members = tuple(sorted(tp, key=int))
    if [int(m) for m in members] != list(range(len(members))):
        raise TypeError(f"wire enum {tp.__name__} must number its members 0..n-1")
    return members


def _passes(tp: Any) -> bool:
    """Does a value of this wire type go to msgpack as it is, once checked?
    (Scalars, node ids, string maps, tuples of those, and named-tuple records
    made of them; not floats, which an int must become, nor dataclasses.)"""
    if tp in (int, bool, str, bytes, NodeId) or _is_int_enum(tp):
        return True  # an IntEnum member packs as its int
    origin = typing.get_origin(tp)
    if origin is dict:
        return True
    if origin is tuple:
        return _passes(typing.get_args(tp)[0])
    if origin in (types.UnionType, typing.Union):
        return all(_passes(a) for a in typing.get_args(tp) if a is not type(None))
    if is_record(tp) and issubclass(tp, tuple):
        hints = typing.get_type_hints(tp)
        return all(_passes(hints[name]) for name, _ in record_fields(tp))
    return False


class _Compiler:
    """Writes `dec_<Class>(v, where)` and `enc_<Class>(v, where)` for a
    record class and every record class it contains. `where` is the dotted
    path of the value being checked, used only to word an error."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {
            "NodeId": NodeId,
            "_tuple_new": tuple.__new__,
            "_fail": _fail,
            "_type_fail": _type_fail,
            "_int_fail": _int_fail,
            "_len_fail": _len_fail,
            "_float_dec": _float_dec,
            "_node": _node,
            "_states": _STATES,
            "_decoded": _DECODED,
            "_STATES_MAX": _STATES_MAX,
            "_NO_TAGS": _NO_TAGS,
            "_strmap": _strmap,
            "_enc_fail": _enc_fail,
            "_enc_type": _enc_type,
            "_enc_int": _enc_int,
            "_enc_float": _enc_float,
            "_enc_strmap": _enc_strmap,
        }
        self.sources: list[str] = []
        self.done: set[type] = set()
        self._n = 0

    def _const(self, value: Any) -> str:
        self._n += 1
        name = f"_k{self._n}"
        self.env[name] = value
        return name

    def record(self, cls: type) -> None:
        if cls in self.done:
            return
        self.done.add(cls)
        hints = typing.get_type_hints(cls)
        fields = record_fields(cls)
        n = len(fields)
        name = cls.__name__
        cls_ref = self._const(cls)
        dec = [
            f"def dec_{name}(v, where):",
            f"    if type(v) is not tuple or len(v) != {n}:",
            f"        raise _fail(where, {name + ' must be an array of ' + str(n)!r})",
        ]
        if n:
            dec.append(f"    {', '.join(f'f{i}' for i in range(n))}{',' if n == 1 else ''} = v")
        if cls is MemberState:
            dec += _STATE_HIT
        enc = [f"def enc_{name}(v, where):"]
        named_tuple = issubclass(cls, tuple)
        unpack = named_tuple and n > 0  # one step instead of n attribute reads
        if unpack:
            enc += [
                f"    if type(v) is not {cls_ref}:",
                f"        raise _enc_type(where, {name!r}, v)",
                f"    {', '.join(f'f{i}' for i in range(n))}{',' if n == 1 else ''} = v",
            ]
        for i, (fname, meta) in enumerate(fields):
            path = f"where + {'.' + fname!r}"
            dec += self._dec(f"f{i}", hints[fname], meta, path, "    ")
            if not unpack:
                enc.append(f"    f{i} = v.{fname}")
            enc += self._enc(f"f{i}", hints[fname], meta, path, "    ")
        args = ", ".join(f"f{i}" for i in range(n))
        if cls is MemberState:
            # Keep the record for the next time (f0 is the NodeId now).
            dec += [
                "    if f4 is None and not f3:",
                f"        s = _tuple_new({cls_ref}, (f0, f1, f2, _NO_TAGS, None))",
                "        if len(_states) >= _STATES_MAX:",
                "            _states.clear()",
                "            _decoded.clear()",
                "        old = _states.get(f0)",
                "        if old is not None:",
                "            del _decoded[id(old)]",
                "        _states[f0] = s",
                "        _decoded[id(s)] = s",
                "        return s",
            ]
        if named_tuple:
            # Build it as tuple.__new__ does, without the
            # generated __new__'s extra call (records come by the thousand).
            dec.append(f"    return _tuple_new({cls_ref}, ({args}{',' if n == 1 else ''}))")
        else:
            dec.append(f"    return {cls_ref}({args})")
        if _passes(cls):
            enc.append("    return v  # checked; msgpack packs a tuple as an array")
        else:
            enc.append(f"    return [{args}]")
        self.sources += ["\n".join(dec), "\n".join(enc)]

    def _dec(
        self, x: str, tp: Any, meta: typing.Mapping[str, Any], path: str, ind: str
    ) -> list[str]:
        """Lines that check `x` against `tp` and, where needed, convert it."""
        origin = typing.get_origin(tp)
        cap = meta.get("max_len")
        if tp is int:
            lo, hi = meta.get("lo", 0), meta.get("hi", INT_MAX)
            return [
                f"{ind}if type({x}) is not int or not {lo} <= {x} <= {hi}:",
                f"{ind}    raise _int_fail({path}, {x}, {lo}, {hi})",
            ]
        if tp is bool:
            return [
                f"{ind}if type({x}) is not bool:",
                f"{ind}    raise _type_fail({path}, 'bool', {x})",
            ]
        if _is_int_enum(tp):
            members = _enum_members(tp)
            hi = len(members) - 1
            return [
                f"{ind}if type({x}) is not int or not 0 <= {x} <= {hi}:",
                f"{ind}    raise _int_fail({path}, {x}, 0, {hi})",
                f"{ind}{x} = {self._const(members)}[{x}]",
            ]
        if tp is float:
            return [f"{ind}if type({x}) is not float:", f"{ind}    {x} = _float_dec({x}, {path})"]
        if tp in (str, bytes):
            kind = tp.__name__
            if tp is str and cap is None:
                cap = MAX_STR
            if cap is None:
                return [
                    f"{ind}if type({x}) is not {kind}:",
                    f"{ind}    raise _type_fail({path}, {kind!r}, {x})",
                ]
            return [
                f"{ind}if type({x}) is not {kind} or len({x}) > {cap}:",
                f"{ind}    raise _len_fail({path}, {x}, {kind!r}, {cap})",
            ]
        if tp is NodeId:
            base, _, suffix = path.partition(" + ")
            return [f"{ind}{x} = _node({x}, {base}{', ' + suffix if suffix else ''})"]
        if origin is tuple:
            args = typing.get_args(tp)
            if len(args) != 2 or args[1] is not Ellipsis:
                raise TypeError(f"only tuple[T, ...] is supported, not {tp}")
            cap = cap if cap is not None else MAX_ITEMS
            lines = [
                f"{ind}if type({x}) is not tuple or len({x}) > {cap}:",
                f"{ind}    raise _len_fail({path}, {x}, 'tuple', {cap})",
            ]
            item = args[0]
            # The items' path, joined once for all of them.
            each = f"p_{x}"
            if item is NodeId:
                return [
                    *lines,
                    f"{ind}{each} = {path}",
                    f"{ind}{x} = tuple([_node(i, {each}) for i in {x}])",
                ]
            if is_record(item):
                self.record(item)
                return [
                    *lines,
                    f"{ind}{each} = {path}",
                    f"{ind}{x} = tuple([dec_{item.__name__}(i, {each}) for i in {x}])",
                ]
            lines.append(f"{ind}for i in {x}:")
            return lines + self._dec("i", item, {}, path, ind + "    ")  # already a tuple
        if origin is dict:
            if typing.get_args(tp) != (str, str):
                raise TypeError(f"only dict[str, str] is supported, not {tp}")
            cap = cap if cap is not None else DICT_MAX
            # Most maps (member tags) are empty: check those inline.
            return [
                f"{ind}if type({x}) is not dict or {x}:",
                f"{ind}    {x} = _strmap({x}, {cap}, {path})",
            ]
        if origin in (types.UnionType, typing.Union):
            inner = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(inner) != 1:
                raise TypeError(f"only T | None unions are supported, not {tp}")
            return [f"{ind}if {x} is not None:", *self._dec(x, inner[0], meta, path, ind + "    ")]
        if is_record(tp):
            self.record(tp)
            return [f"{ind}{x} = dec_{tp.__name__}({x}, {path})"]
        raise TypeError(f"unsupported wire type {tp!r}")

    def _enc(
        self, x: str, tp: Any, meta: typing.Mapping[str, Any], path: str, ind: str
    ) -> list[str]:
        """Lines that check local value `x` against `tp` and make it wire-ready."""
        origin = typing.get_origin(tp)
        cap = meta.get("max_len")
        if tp is int:
            lo, hi = meta.get("lo", 0), meta.get("hi", INT_MAX)
            return [
                f"{ind}if type({x}) is not int or not {lo} <= {x} <= {hi}:",
                f"{ind}    raise _enc_int({path}, {x}, {lo}, {hi})",
            ]
        if tp is bool:
            return [
                f"{ind}if type({x}) is not bool:",
                f"{ind}    raise _enc_type({path}, 'bool', {x})",
            ]
        if _is_int_enum(tp):
            return [
                f"{ind}if type({x}) is not {self._const(tp)}:",
                f"{ind}    raise _enc_type({path}, {tp.__name__!r}, {x})",
            ]
        if tp is float:
            return [f"{ind}if type({x}) is not float:", f"{ind}    {x} = _enc_float({x}, {path})"]
        if tp in (str, bytes):
            kind = tp.__name__
            if tp is str and cap is None:
                cap = MAX_STR
            lines = [
                f"{ind}if type({x}) is not {kind}:",
                f"{ind}    raise _enc_type({path}, {kind!r}, {x})",
            ]
            if cap is not None:
                lines += [
                    f"{ind}if len({x}) > {cap}:",
                    f"{ind}    raise _enc_fail({path}, 'longer than {cap}')",
                ]
            return lines
        if tp is NodeId:  # a tuple: msgpack packs it as [name, host, port]
            return [
                f"{ind}if type({x}) is not NodeId:",
                f"{ind}    raise _enc_type({path}, 'NodeId', {x})",
            ]
        if origin is tuple:
            cap = cap if cap is not None else MAX_ITEMS
            lines = [
                f"{ind}if type({x}) is not tuple and type({x}) is not list:",
                f"{ind}    raise _enc_type({path}, 'tuple', {x})",
                f"{ind}if len({x}) > {cap}:",
                f"{ind}    raise _enc_fail({path}, 'more than {cap} items')",
            ]
            item = typing.get_args(tp)[0]
            if item is not NodeId and is_record(item):
                self.record(item)
                each = f"p_{x}"  # the items' path, joined once for all of them
                if _passes(item):  # checked in place: the items go as they are
                    # A member state in the interning table passed the
                    # decoder's checks, which are these: skip them.
                    skip = "_decoded.get(id(i)) is not i and " if item is MemberState else ""
                    return [
                        *lines,
                        f"{ind}{each} = {path}",
                        f"{ind}for i in {x}:",
                        f"{ind}    {skip}enc_{item.__name__}(i, {each})",
                    ]
                return [
                    *lines,
                    f"{ind}{each} = {path}",
                    f"{ind}{x} = [enc_{item.__name__}(i, {each}) for i in {x}]",
                ]
            if item is float:  # an int item must become a float: a new list
                return [
                    *lines,
                    f"{ind}{x} = [i if type(i) is float else _enc_float(i, {path}) for i in {x}]",
                ]
            if not _passes(item):
                raise TypeError(f"tuple items must go as they are, not {item!r}")
            return [*lines, f"{ind}for i in {x}:", *self._enc("i", item, {}, path, ind + "    ")]
        if origin is dict:
            cap = cap if cap is not None else DICT_MAX
            return [
                f"{ind}if type({x}) is not dict or {x}:",
                f"{ind}    {x} = _enc_strmap({x}, {cap}, {path})",
            ]
        if origin in (types.UnionType, typing.Union):
            inner = next(a for a in typing.get_args(tp) if a is not type(None))
            return [f"{ind}if {x} is not None:", *self._enc(x, inner, meta, path, ind + "    ")]
        if is_record(tp):
            self.record(tp)
            return [
                f"{ind}if type({x}) is not {self._const(tp)}:",
                f"{ind}    raise _enc_type({path}, {tp.__name__!r}, {x})",
                f"{ind}{x} = enc_{tp.__name__}({x}, {path})",
            ]
        raise TypeError(f"unsupported wire type {tp!r}")

    def build(self, cls: type) -> tuple[Callable[[Any, str], Any], Callable[[Any, str], list[Any]]]:
        self.record(cls)
        exec("\n\n".join(self.sources), self.env)  # our own schema's source, never input
        self.sources.clear()
        return self.env[f"dec_{cls.__name__}"], self.env[f"enc_{cls.__name__}"]


class _Kind:
    __slots__ = ("cls", "dec", "enc", "n", "name", "tag")

    def __init__(self, tag: int, cls: type[Message]) -> None:
        self.tag = tag
        self.cls = cls
        self.name = cls.__name__
        self.n = len(record_fields(cls))
        # A class of its own per message: the record names stay unique.
        self.dec, self.enc = _Compiler().build(cls)


_BY_TAG: dict[int, _Kind] = {}
_BY_CLS: dict[type, _Kind] = {}


def _build_tables() -> None:
    for tag, cls in TAGS.items():
        if tag in _BY_TAG:
            continue
        kind = _Kind(tag, cls)
        _BY_TAG[tag] = kind
        _BY_CLS[cls] = kind


_build_tables()


# One Packer for every frame: `msgpack.packb` builds a new one per call,
# which cost half of packing a small frame (673 ns against 299). Sharing it
# is safe under the GIL: `pack` runs in C from start to reset, calling no
# Python code (there is no `default` hook).
_PACKER = msgpack.Packer(use_bin_type=True)


def encode(sender: NodeId, msg: Message, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """One frame for `msg` from `sender`. Raises EncodeError if it is too big."""
    kind = _BY_CLS.get(type(msg))
    if kind is None:
        _build_tables()
        kind = _BY_CLS.get(type(msg))
        if kind is None:
            raise EncodeError(f"{type(msg).__name__} has no wire tag")
    if type(sender) is not NodeId:
        raise EncodeError(f"sender: expected NodeId, got {type(sender).__name__}")
    body: list[Any] = [PROTOCOL_VERSION, sender, kind.tag]  # a NodeId packs as an array
    body += kind.enc(msg, kind.name)
    try:
        data: bytes = _PACKER.pack(body)  # resets itself on an error too
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a lone surrogate in a str
        raise EncodeError(f"{kind.name}: {type(exc).__name__}: {exc}") from None
    if len(data) > max_frame:
        raise EncodeError(f"{kind.name} frame is {len(data)} bytes, limit {max_frame}")
    return data


def decode(data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> tuple[NodeId, Message]:
    """(sender, message) from one frame, or DecodeError."""
    if len(data) > max_frame:
        raise DecodeError(f"frame is {len(data)} bytes, limit {max_frame}")
    if not data:
        raise DecodeError("empty frame")
    try:
        # Arrays as tuples: records are built from them without a copy, and
        # a node id array is its own key in the interning table.
        obj = msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo of types on bad input
        raise DecodeError(f"not msgpack: {type(exc).__name__}: {exc}") from None
    if type(obj) is not tuple or len(obj) < 3:
        raise DecodeError("frame must be an array [version, sender, tag, ...]")
    version, sender_raw, tag = obj[0], obj[1], obj[2]
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise DecodeError(f"unsupported protocol version {version!r}")
    sender = _node(sender_raw, "sender")
    if type(tag) is not int:
        raise DecodeError(f"tag must be int, got {type(tag).__name__}")
    kind = _BY_TAG.get(tag)
    if kind is None:
        _build_tables()
        kind = _BY_TAG.get(tag)
        if kind is None:
            raise DecodeError(f"unknown message tag {tag}")
    if len(obj) != 3 + kind.n:
        raise DecodeError(f"{kind.name} has {kind.n} fields, frame has {len(obj) - 3}")
    try:
        return sender, kind.dec(obj[3:], kind.name)
    except DecodeError:
        raise
    except (ValueError, TypeError) as exc:  # a constructor's own validation
        raise DecodeError(f"{kind.name}: {exc}") from None


# --------------------------------------------------------------------------
# Sizes without encoding: what a record adds to a frame
#
# SWIM fills each probe datagram with member states up to a byte budget, and
# splits its push-pull into frames of a bounded size, for thousands of
# states a second: encoding each one to measure it would cost more than the
# probe. These functions give the exact size msgpack gives a record (an
# upper bound for a map of 16 entries or more); tests/test_codec_sizes.py
# checks them against real encodings.


def str_size(s: str) -> int:
    """Bytes of a msgpack str: its UTF-8 length and the header."""
    n = len(s) if s.isascii() else len(s.encode())
    return n + (1 if n < 32 else 2 if n < 256 else 3 if n < 65536 else 5)


def int_size(i: int) -> int:
    """Bytes of a non-negative msgpack int."""
    return 1 if i < 128 else 2 if i < 256 else 3 if i < 65536 else 5 if i < 2**32 else 9


NODE_SIZES: dict[NodeId, int] = {}  # public for hot paths that read it inline
_NODE_SIZES_MAX = 1 << 16  # the memo starts over when full


def node_size(n: NodeId) -> int:
    """Bytes of a NodeId in a frame (memoised: every push-pull and every
    queued update asks it of the same few thousand ids)."""
    size = NODE_SIZES.get(n)
    if size is None:
        size = 1 + str_size(n.name) + str_size(n.host) + int_size(n.port)
        if len(NODE_SIZES) >= _NODE_SIZES_MAX:
            NODE_SIZES.clear()
        NODE_SIZES[n] = size
    return size


def shared_alive_state(node: NodeId, incarnation: int, tags: dict[str, str]) -> MemberState:
    """The alive state of `node` at `incarnation` with `tags`: the record
    decoded last for that node when it is this one (shared, as decoded
    states are), otherwise a new one. A member list keeps one per member,
    so in a simulation, where every node lists every other, sharing them
    saves a record per entry (N^2 of them). Only decoded records are in
    the table: decoding trusts them as checked."""
    if not tags:
        s = _STATES.get(node)
        if s is not None and s[1] == incarnation and s[2] is WireStatus.ALIVE:
            return s
    return MemberState(node, incarnation, WireStatus.ALIVE, tags, None)


def state_size(s: MemberState) -> int:
    """Bytes of a MemberState in a frame: the array header, the node, the
    incarnation, the status (one byte), the tags map, the accuser (exact
    for maps under 16 entries, an upper bound otherwise)."""
    size = 3 + node_size(s.node) + int_size(s.incarnation)
    if s.tags:
        size += 0 if len(s.tags) < 16 else 2
        for k, v in s.tags.items():
            size += str_size(k) + str_size(v)
    return size + (1 if s.accuser is None else node_size(s.accuser))
