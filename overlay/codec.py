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
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

import msgpack

from overlay.ids import MAX_HOST_LEN, MAX_NAME_LEN, NodeId
from overlay.messages import MAX_ITEMS, MAX_STR, TAGS, Message

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 64 * 1024
INT_MAX = 2**63 - 1


class DecodeError(ValueError):
    """The bytes are not a valid frame of this protocol."""


class EncodeError(ValueError):
    """A local message cannot be encoded (too large, or a bad value)."""


_Dec = Callable[[Any, str], Any]
_Enc = Callable[[Any], Any]


def _fail(where: str, why: str) -> DecodeError:
    return DecodeError(f"{where}: {why}")


def _dec_node(v: Any, where: str) -> NodeId:
    if type(v) is not list or len(v) != 3:
        raise _fail(where, "node id must be [name, host, port]")
    name, host, port = v
    if type(name) is not str or not 0 < len(name) <= MAX_NAME_LEN:
        raise _fail(where, "bad node name")
    if type(host) is not str or not 0 < len(host) <= MAX_HOST_LEN:
        raise _fail(where, "bad node host")
    if type(port) is not int or not 0 <= port <= 65535:
        raise _fail(where, "bad node port")
    return NodeId(name, host, port)


def _enc_node(n: Any) -> list[Any]:
    if type(n) is not NodeId:
        raise EncodeError(f"expected NodeId, got {type(n).__name__}")
    return [n.name, n.host, n.port]


def _int_dec(lo: int, hi: int) -> _Dec:
    def dec(v: Any, where: str) -> int:
        if type(v) is not int:
            raise _fail(where, f"expected int, got {type(v).__name__}")
        if not lo <= v <= hi:
            raise _fail(where, f"{v} not in [{lo}, {hi}]")
        return v

    return dec


def _int_enc(lo: int, hi: int) -> _Enc:
    def enc(v: Any) -> int:
        if type(v) is not int or not lo <= v <= hi:
            raise EncodeError(f"{v!r} is not an int in [{lo}, {hi}]")
        return v

    return enc


def _scalar_enc(kind: Any, max_len: int | None) -> _Enc:
    def enc(v: Any) -> Any:
        if type(v) is not kind:
            raise EncodeError(f"expected {kind.__name__}, got {type(v).__name__}")
        if max_len is not None and len(v) > max_len:
            raise EncodeError(f"longer than {max_len}")
        return v

    return enc


def _scalar_dec(kind: Any, max_len: int | None) -> _Dec:
    def dec(v: Any, where: str) -> Any:
        if type(v) is not kind:
            raise _fail(where, f"expected {kind.__name__}, got {type(v).__name__}")
        if max_len is not None and len(v) > max_len:
            raise _fail(where, f"longer than {max_len}")
        return v

    return dec


def _float_dec(v: Any, where: str) -> float:
    if type(v) is float:
        return v
    if type(v) is int:
        return float(v)
    raise _fail(where, f"expected float, got {type(v).__name__}")


def _float_enc(v: Any) -> float:
    if type(v) is float:
        return v
    if type(v) is int and -INT_MAX - 1 <= v <= INT_MAX:
        return float(v)
    raise EncodeError(f"expected float, got {type(v).__name__}")


def _tuple_dec(item: _Dec, max_len: int) -> _Dec:
    def dec(v: Any, where: str) -> tuple[Any, ...]:
        if type(v) is not list:
            raise _fail(where, f"expected array, got {type(v).__name__}")
        if len(v) > max_len:
            raise _fail(where, f"more than {max_len} items")
        return tuple(item(x, where) for x in v)

    return dec


def _tuple_enc(item: _Enc, max_len: int) -> _Enc:
    def enc(v: Any) -> list[Any]:
        if type(v) is not tuple and type(v) is not list:
            raise EncodeError(f"expected tuple, got {type(v).__name__}")
        if len(v) > max_len:
            raise EncodeError(f"more than {max_len} items")
        return [item(x) for x in v]

    return enc


def _strmap_dec(max_len: int) -> _Dec:
    def dec(v: Any, where: str) -> dict[str, str]:
        if type(v) is not dict:
            raise _fail(where, f"expected map, got {type(v).__name__}")
        if len(v) > max_len:
            raise _fail(where, f"more than {max_len} entries")
        for k, x in v.items():
            if type(k) is not str or type(x) is not str or len(k) > MAX_STR or len(x) > MAX_STR:
                raise _fail(where, "map entries must be short strings")
        return dict(v)

    return dec


def _strmap_enc(max_len: int) -> _Enc:
    def enc(v: Any) -> dict[str, str]:
        if not isinstance(v, dict):
            raise EncodeError(f"expected dict, got {type(v).__name__}")
        if len(v) > max_len:
            raise EncodeError(f"more than {max_len} entries")
        for k, x in v.items():
            if type(k) is not str or type(x) is not str or len(k) > MAX_STR or len(x) > MAX_STR:
                raise EncodeError("map entries must be short strings")
        return dict(v)

    return enc


def _optional_dec(inner: _Dec) -> _Dec:
    def dec(v: Any, where: str) -> Any:
        return None if v is None else inner(v, where)

    return dec


def _record_dec(cls: type) -> _Dec:
    fields = _schema(cls)
    n = len(fields)
    name = cls.__name__

    def dec(v: Any, where: str) -> Any:
        if type(v) is not list or len(v) != n:
            raise _fail(where, f"{name} must be an array of {n}")
        return cls(*[d(x, f"{where}.{fname}") for (fname, d, _), x in zip(fields, v, strict=True)])

    return dec


def _record_enc(cls: type) -> _Enc:
    fields = _schema(cls)
    name = cls.__name__

    def enc(v: Any) -> list[Any]:
        if type(v) is not cls:
            raise EncodeError(f"expected {name}, got {type(v).__name__}")
        return [e(getattr(v, fname)) for fname, _, e in fields]

    return enc


def _codec_for(tp: Any, meta: typing.Mapping[str, Any]) -> tuple[_Dec, _Enc]:
    origin = typing.get_origin(tp)
    max_len = meta.get("max_len")
    if tp is int:
        lo, hi = meta.get("lo", 0), meta.get("hi", INT_MAX)
        return _int_dec(lo, hi), _int_enc(lo, hi)
    if tp is bool:
        return _scalar_dec(bool, None), _scalar_enc(bool, None)
    if tp is float:
        return _float_dec, _float_enc
    if tp is str:
        cap = max_len if max_len is not None else MAX_STR
        return _scalar_dec(str, cap), _scalar_enc(str, cap)
    if tp is bytes:
        return _scalar_dec(bytes, max_len), _scalar_enc(bytes, max_len)
    if tp is NodeId:
        return _dec_node, _enc_node
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"only tuple[T, ...] is supported, not {tp}")
        item_dec, item_enc = _codec_for(args[0], {})
        cap = max_len if max_len is not None else MAX_ITEMS
        return _tuple_dec(item_dec, cap), _tuple_enc(item_enc, cap)
    if origin is dict:
        if typing.get_args(tp) != (str, str):
            raise TypeError(f"only dict[str, str] is supported, not {tp}")
        cap = max_len if max_len is not None else 64
        return _strmap_dec(cap), _strmap_enc(cap)
    if origin in (types.UnionType, typing.Union):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) != 1:
            raise TypeError(f"only T | None unions are supported, not {tp}")
        d, e = _codec_for(members[0], meta)
        return _optional_dec(d), lambda v: None if v is None else e(v)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _record_dec(tp), _record_enc(tp)
    raise TypeError(f"unsupported wire type {tp!r}")


_SCHEMAS: dict[type, list[tuple[str, _Dec, _Enc]]] = {}


def _schema(cls: type) -> list[tuple[str, _Dec, _Enc]]:
    """(name, decoder, encoder) per field of a message or record class."""
    if cls not in _SCHEMAS:
        hints = typing.get_type_hints(cls)
        _SCHEMAS[cls] = [
            (f.name, *_codec_for(hints[f.name], f.metadata)) for f in dataclasses.fields(cls)
        ]
    return _SCHEMAS[cls]


class _Kind:
    __slots__ = ("cls", "decoders", "getters", "n", "tag")

    def __init__(self, tag: int, cls: type[Message]) -> None:
        schema = _schema(cls)
        self.tag = tag
        self.cls = cls
        self.n = len(schema)
        self.decoders = [(f"{cls.__name__}.{name}", dec) for name, dec, _ in schema]
        self.getters = [(name, enc) for name, _, enc in schema]


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


def encode(sender: NodeId, msg: Message, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """One frame for `msg` from `sender`. Raises EncodeError if it is too big."""
    kind = _BY_CLS.get(type(msg))
    if kind is None:
        _build_tables()
        kind = _BY_CLS.get(type(msg))
        if kind is None:
            raise EncodeError(f"{type(msg).__name__} has no wire tag")
    body: list[Any] = [PROTOCOL_VERSION, _enc_node(sender), kind.tag]
    for name, enc in kind.getters:
        try:
            body.append(enc(getattr(msg, name)))
        except EncodeError as exc:
            raise EncodeError(f"{type(msg).__name__}.{name}: {exc}") from None
    try:
        data: bytes = msgpack.packb(body, use_bin_type=True)
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a lone surrogate in a str
        raise EncodeError(f"{type(msg).__name__}: {type(exc).__name__}: {exc}") from None
    if len(data) > max_frame:
        raise EncodeError(f"{type(msg).__name__} frame is {len(data)} bytes, limit {max_frame}")
    return data


def decode(data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> tuple[NodeId, Message]:
    """(sender, message) from one frame, or DecodeError."""
    if len(data) > max_frame:
        raise DecodeError(f"frame is {len(data)} bytes, limit {max_frame}")
    if not data:
        raise DecodeError("empty frame")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
        )
    except Exception as exc:  # msgpack raises a zoo of types on bad input
        raise DecodeError(f"not msgpack: {type(exc).__name__}: {exc}") from None
    if type(obj) is not list or len(obj) < 3:
        raise DecodeError("frame must be an array [version, sender, tag, ...]")
    version, sender_raw, tag = obj[0], obj[1], obj[2]
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise DecodeError(f"unsupported protocol version {version!r}")
    sender = _dec_node(sender_raw, "sender")
    if type(tag) is not int:
        raise DecodeError(f"tag must be int, got {type(tag).__name__}")
    kind = _BY_TAG.get(tag)
    if kind is None:
        _build_tables()
        kind = _BY_TAG.get(tag)
        if kind is None:
            raise DecodeError(f"unknown message tag {tag}")
    if len(obj) != 3 + kind.n:
        raise DecodeError(f"{kind.cls.__name__} has {kind.n} fields, frame has {len(obj) - 3}")
    try:
        args = [dec(v, where) for (where, dec), v in zip(kind.decoders, obj[3:], strict=True)]
        return sender, kind.cls(*args)
    except DecodeError:
        raise
    except (ValueError, TypeError) as exc:  # a constructor's own validation
        raise DecodeError(f"{kind.cls.__name__}: {exc}") from None
