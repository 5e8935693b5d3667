"""The control API: a local socket speaking msgpack, for the CLI and for
programs in any language. The protocol is specified in docs/control-api.md;
this module is the server side and the framing both sides share.

The server knows the agent only as a `ControlledAgent` (the methods it
calls); `daemon.service` runs it next to an `Agent`, so neither module
imports the other.

Theory of operation: the server accepts connections on a TCP address
(default 127.0.0.1:7373) or a unix socket. Each connection has a reader
(requests, handled one after the other, each answered by `seq`) and a writer
fed by a bounded channel, so a streaming request (`subscribe`, `monitor`)
runs as its own task next to the reader and its events interleave with the
answers to later requests. A client that sends garbage gets an error and is
disconnected; nothing a client does can stop the agent. A `leave` is
answered once the agent has stopped; whoever runs the server calls
`finish` before cancelling it, so that the answer goes out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import msgpack
import trio

from daemon.logs import Throttle, event
from daemon.metrics import Metrics
from daemon.subscriptions import Delivery, Member, Subscription
from overlay.ids import NodeId, parse_addr

log = logging.getLogger("overlay.control")

Addr = tuple[str, int]

PROTOCOL_VERSION = 1
DEFAULT_CONTROL = "127.0.0.1:7373"
ENV_CONTROL = "OVERLAY_CONTROL"
# Largest request a server accepts, and largest frame a client accepts (a
# member list of 10,000 members is about 1 MB).
MAX_REQUEST = 1024 * 1024
MAX_RESPONSE = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")
# How long a closing connection may take to send what is queued for it.
_FLUSH_TIMEOUT = 2.0
# Bytes the writer joins into one write, at most (besides the first message):
# many small answers or events per system call under load.
_WRITE_BATCH = 256 * 1024
# Deliveries a subscription hands to the writer at once, at most.
_EVENT_BATCH = 64
# Messages in one `publish_batch`, at most (the 1 MiB request limit bounds
# it too: this is about 16,000 empty payloads).
MAX_BATCH = 16384
# What a client that disconnects or resets makes the socket raise.
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class ControlError(Exception):
    """The agent answered a request with an error, or the control socket
    misbehaved."""


class MessageTooLarge(ControlError):
    """A length prefix over the reader's limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message length {size} outside 1..{limit}")
        self.size = size


def request_too_large(size: int) -> str:
    """What the agent, and the client before it, say of a request over the limit."""
    return f"request of {size} bytes is over the control API's limit of {MAX_REQUEST} bytes"


# --------------------------------------------------------------------------
# Addresses


def control_address(text: str | None) -> str:
    """The control address to use: `text`, else $OVERLAY_CONTROL, else the default."""
    return text or os.environ.get(ENV_CONTROL) or DEFAULT_CONTROL


def parse_listen(text: str) -> Addr:
    """HOST:PORT for a socket to listen on: like `parse_addr`, but port 0
    (any free port) is allowed."""
    if text.rstrip().endswith(":0"):
        host, _ = parse_addr(text.rstrip()[:-2] + ":1")
        return host, 0
    return parse_addr(text)


def parse_control(text: str) -> tuple[str, Addr | str]:
    """("unix", path) for `unix:/path` or anything with a slash; ("tcp",
    (host, port)) for HOST:PORT. Raises ValueError with a clear message."""
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise ValueError("unix: needs a socket path")
        return "unix", path
    if "/" in text:
        return "unix", text
    return "tcp", parse_listen(text)


# --------------------------------------------------------------------------
# Framing (both sides)


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return _HEADER.pack(len(data)) + data


class FrameReader:
    """Reads length-prefixed msgpack maps from a stream."""

    def __init__(self, stream: trio.abc.ReceiveStream, max_size: int) -> None:
        self.stream = stream
        self.max_size = max_size
        self._buf = bytearray()

    async def _fill(self, n: int) -> bool:
        while len(self._buf) < n:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                if self._buf:
                    raise ControlError("connection closed in the middle of a message")
                return False
            self._buf += chunk
        return True

    async def read(self) -> dict[str, Any] | None:
        """The next message, or None at a clean end of stream."""
        if not await self._fill(_HEADER.size):
            return None
        (size,) = _HEADER.unpack_from(self._buf)
        if size > self.max_size:
            del self._buf[: _HEADER.size]
            raise MessageTooLarge(size, self.max_size)
        if size == 0:
            raise ControlError(f"message length {size} outside 1..{self.max_size}")
        if not await self._fill(_HEADER.size + size):
            raise ControlError("connection closed in the middle of a message")
        data = bytes(self._buf[_HEADER.size : _HEADER.size + size])
        del self._buf[: _HEADER.size + size]
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises many types on bad input
            raise ControlError(f"not msgpack: {exc}") from None
        if not isinstance(obj, dict):
            raise ControlError("a message must be a map")
        return obj

    async def skip(self, size: int) -> None:
        """Read and drop `size` bytes (the body of a message too large to
        keep), so that its sender can finish sending and read our answer."""
        while size > 0:
            if not self._buf:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    return
                self._buf += chunk
            n = min(size, len(self._buf))
            del self._buf[:n]
            size -= n


# --------------------------------------------------------------------------
# Server


class ControlledAgent(Protocol):
    """What the control API asks of an agent (`daemon.agent.Agent` is one):
    typed here, so that this module needs nothing from the agent's."""

    metrics: Metrics

    @property
    def me(self) -> NodeId: ...

    @property
    def max_payload(self) -> int: ...

    @property
    def tags(self) -> dict[str, str]: ...

    def members(self) -> list[Member]: ...

    def stats(self) -> dict[str, Any]: ...

    def coordinate(self, name: str | None = None) -> dict[str, Any]: ...

    def subscribe(self, topic: str) -> Subscription[Delivery]: ...

    def watch_members(self) -> Subscription[Member]: ...

    async def join(self, *seeds: str) -> None: ...

    async def publish(self, topic: str, payload: bytes) -> None: ...

    async def publish_many(
        self, messages: Sequence[tuple[str, bytes]]
    ) -> list[tuple[int, str]]: ...

    async def set_tags(
        self, tags: Mapping[str, str], delete: Sequence[str] = ()
    ) -> dict[str, str]: ...

    async def leave(self) -> None: ...


async def _open_listener(text: str) -> tuple[trio.SocketListener, str]:
    kind, where = parse_control(text)
    if kind == "unix":
        assert isinstance(where, str)
        with contextlib.suppress(FileNotFoundError):
            if os.path.exists(where) and not os.path.isdir(where):
                os.unlink(where)  # a stale socket from an agent that died
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(where)
        os.chmod(where, 0o600)
        sock.listen(64)
        return trio.SocketListener(sock), f"unix:{where}"
    assert isinstance(where, tuple)
    host, port = where
    listeners = await trio.open_tcp_listeners(port, host=host)
    for extra in listeners[1:]:
        await extra.aclose()
    name = listeners[0].socket.getsockname()
    shown = f"[{name[0]}]:{name[1]}" if ":" in str(name[0]) else f"{name[0]}:{name[1]}"
    return listeners[0], shown


class ControlServer:
    """The control API of one agent. `await ControlServer.open(text)` binds
    its socket (errors such as an address in use come out there); `serve`
    answers requests until cancelled; `finish` waits, briefly, until every
    request being handled has been answered: a `leave` is answered once the
    agent has stopped, and its client must hear it before the process ends."""

    def __init__(self, listener: trio.SocketListener, address: str) -> None:
        self.listener = listener
        self.address = address
        self._handling = 0
        self._idle = trio.Event()
        self._idle.set()

    @classmethod
    async def open(cls, text: str) -> ControlServer:
        """Bind the control socket: "HOST:PORT" (port 0: any free one),
        "unix:/path" or a path."""
        listener, address = await _open_listener(text)
        return cls(listener, address)

    async def aclose(self) -> None:
        """Close the socket of a server that will not serve (a bind error
        elsewhere); `serve` closes it itself."""
        await self.listener.aclose()
        self._unlink()

    async def serve(
        self,
        agent: ControlledAgent,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the control API of `agent` until cancelled."""
        # Bad requests are logged at most 5 a minute (a client looping on
        # garbage must not flood the log), each counted in `bad_frames` as
        # `control:request`.
        throttle = Throttle(burst=5, window=60.0)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    trio.serve_listeners,
                    lambda stream: _Connection(self, agent, stream, throttle).serve(),
                    [self.listener],
                )
                task_status.started()
        finally:
            self._unlink()

    async def finish(self, timeout: float = _FLUSH_TIMEOUT) -> None:
        """Return once no request is being handled (at most `timeout` s)."""
        with trio.move_on_after(timeout):
            await self._idle.wait()

    @contextlib.contextmanager
    def _handling_request(self) -> Iterator[None]:
        self._handling += 1
        if self._handling == 1:
            self._idle = trio.Event()
        try:
            yield
        finally:
            self._handling -= 1
            if self._handling == 0:
                self._idle.set()

    def _unlink(self) -> None:
        kind, where = parse_control(self.address)
        if kind == "unix" and isinstance(where, str):
            with contextlib.suppress(OSError):
                os.unlink(where)


_Handler = Callable[["_Connection", int, dict[str, Any]], Awaitable[Any]]
_OPS: dict[str, _Handler] = {}


def _op(name: str) -> Callable[[_Handler], _Handler]:
    def register(fn: _Handler) -> _Handler:
        _OPS[name] = fn
        return fn

    return register


class _Connection:
    def __init__(
        self,
        server: ControlServer,
        agent: ControlledAgent,
        stream: trio.SocketStream,
        throttle: Throttle,
    ) -> None:
        self.server = server
        self.agent = agent
        self.stream = stream
        self.throttle = throttle
        # (frame, event set once it is written)
        self.out_send, self.out_recv = trio.open_memory_channel[tuple[bytes, trio.Event | None]](
            256
        )
        self.streams: dict[int, trio.CancelScope] = {}
        self.nursery: trio.Nursery | None = None

    async def serve(self) -> None:
        """Serve one client. Nothing a client does escapes this method: a
        broken connection ends it quietly, anything else is logged."""
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._writer, nursery.cancel_scope)
                await self._reader()
                # The client is done (or misbehaved): end its streams, let
                # the writer send what is queued (the last error included).
                for scope in list(self.streams.values()):
                    scope.cancel()
                with trio.move_on_after(_FLUSH_TIMEOUT):
                    written = trio.Event()
                    await self.out_send.send((b"", written))
                    await written.wait()
                nursery.cancel_scope.cancel()
        except* _GONE as group:
            event(log, logging.DEBUG, "control client went away", error=str(group.exceptions[0]))
        except* Exception as group:
            log.error("control connection failed", exc_info=group)
        finally:
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _writer(self, scope: trio.CancelScope) -> None:
        """Send what is queued, in order. Whatever else is queued by then
        goes in the same write, up to `_WRITE_BATCH` bytes: under load
        (answers to pipelined requests, a busy subscription) one system call
        carries many messages instead of one each."""
        out = self.out_recv
        try:
            async for data, written in out:
                batch = [data]
                size = len(data)
                events = [written] if written is not None else []
                while size < _WRITE_BATCH:
                    try:
                        data, written = out.receive_nowait()
                    except trio.WouldBlock:
                        break
                    batch.append(data)
                    size += len(data)
                    if written is not None:
                        events.append(written)
                if size:
                    await self.stream.send_all(b"".join(batch) if len(batch) > 1 else batch[0])
                for ev in events:
                    ev.set()
        except _GONE as exc:
            event(log, logging.DEBUG, "control client went away", error=str(exc))
            scope.cancel()

    async def send(self, obj: dict[str, Any]) -> None:
        # No trip through the scheduler while the writer's queue has room:
        # pipelined requests are answered in a row, the writer sends the
        # answers together at the reader's next wait.
        item = (pack(obj), None)
        try:
            self.out_send.send_nowait(item)
        except trio.WouldBlock:
            await self.out_send.send(item)
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    async def _reader(self) -> None:
        reader = FrameReader(self.stream, MAX_REQUEST)
        while True:
            try:
                request = await reader.read()
            except _GONE:
                return
            except MessageTooLarge as exc:
                self._bad_request(exc)
                await self.send({"seq": 0, "ok": False, "error": request_too_large(exc.size)})
                # Take in what the client is still sending: closing on it
                # would reset the connection, and the answer with it.
                with contextlib.suppress(*_GONE), trio.move_on_after(_FLUSH_TIMEOUT):
                    await reader.skip(exc.size)
                return
            except ControlError as exc:
                self._bad_request(exc)
                await self.send({"seq": 0, "ok": False, "error": f"bad request: {exc}"})
                return
            if request is None:
                return
            with self.server._handling_request():
                await self._handle(request)

    def _bad_request(self, exc: ControlError) -> None:
        self.agent.metrics.bad_frames["control:request"] += 1
        allowed, held = self.throttle.allow("bad-request")
        if allowed:
            event(log, logging.WARNING, "bad control request", error=str(exc), suppressed=held)

    async def _handle(self, request: dict[str, Any]) -> None:
        seq = request.get("seq", 0)
        op = request.get("op")
        args = request.get("args") or {}
        if type(seq) is not int or not isinstance(op, str) or not isinstance(args, dict):
            await self.send(
                {
                    "seq": seq if type(seq) is int else 0,
                    "ok": False,
                    "error": "a request is {seq: int, op: str, args: map}",
                }
            )
            return
        handler = _OPS.get(op)
        if handler is None:
            await self.send({"seq": seq, "ok": False, "error": f"unknown op {op!r}"})
            return
        try:
            result = await handler(self, seq, args)
        except (ValueError, TypeError, KeyError, RuntimeError) as exc:
            await self.send({"seq": seq, "ok": False, "error": str(exc) or type(exc).__name__})
            return
        if result is not _STREAMING:
            await self.send({"seq": seq, "ok": True, "result": result})

    def start_stream(self, seq: int, body: Callable[[], Awaitable[None]]) -> None:
        """Run a streaming request as its own task; it ends with an `end`
        message (on its own, on `unsubscribe`, or with the agent)."""
        scope = trio.CancelScope()
        self.streams[seq] = scope

        async def run() -> None:
            error: str | None = None
            with scope:
                try:
                    await body()
                except (ValueError, RuntimeError) as exc:
                    error = str(exc)
            self.streams.pop(seq, None)
            end: dict[str, Any] = {"seq": seq, "end": True}
            if error:
                end["error"] = error
            with trio.move_on_after(1):
                await self.send(end)

        assert self.nursery is not None
        self.nursery.start_soon(run)


_STREAMING = object()


def _str_arg(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


@_op("handshake")
async def _handshake(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    version = args.get("version", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ValueError(f"unsupported protocol version {version!r} (this agent speaks 1)")
    me = conn.agent.me
    return {
        "version": PROTOCOL_VERSION,
        "name": me.name,
        "addr": me.addr,
        # Lets a client refuse a payload the agent would refuse, before sending it.
        "max_payload": conn.agent.max_payload,
    }


@_op("members")
async def _members(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    return [m.to_dict() for m in conn.agent.members()]


@_op("stats")
async def _stats(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    return conn.agent.stats()


@_op("coordinate")
async def _coordinate(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    """This agent's network coordinate, or with `node` the last one that
    member sent (docs/control-api.md, "Network coordinates")."""
    name = args.get("node")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError("node must be a non-empty string")
    return conn.agent.coordinate(name)


@_op("join")
async def _join(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    seeds = args.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, str) for s in seeds):
        raise ValueError("seeds must be a non-empty list of strings")
    await conn.agent.join(*seeds)
    return {}


@_op("publish")
async def _publish(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    topic = _str_arg(args, "topic")
    payload = args.get("payload", b"")
    if isinstance(payload, str):
        payload = payload.encode()
    if not isinstance(payload, bytes):
        raise ValueError("payload must be bytes (or a string)")
    await conn.agent.publish(topic, payload)
    return {}


@_op("publish_batch")
async def _publish_batch(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    """Many publishes in one request: each message is checked and published
    in order, as a `publish` of its own would be; a refused one is listed
    with its reason and costs only itself."""
    messages = args.get("messages")
    if not isinstance(messages, list):
        raise ValueError("messages must be a list of {topic, payload} maps")
    if len(messages) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} messages in one publish_batch")
    refused: list[dict[str, Any]] = []
    valid: list[tuple[str, bytes]] = []
    where: list[int] = []  # index in `messages` of each valid one
    for index, item in enumerate(messages):
        topic = item.get("topic") if isinstance(item, dict) else None
        payload = item.get("payload", b"") if isinstance(item, dict) else None
        if isinstance(payload, str):
            payload = payload.encode()
        if not isinstance(item, dict):
            error = "a message must be a map {topic, payload}"
        elif not isinstance(topic, str) or not topic:
            error = "topic must be a non-empty string"
        elif not isinstance(payload, bytes):
            error = "payload must be bytes (or a string)"
        else:
            valid.append((topic, payload))
            where.append(index)
            continue
        refused.append({"index": index, "error": error})
    if valid:
        for index, error in await conn.agent.publish_many(valid):
            refused.append({"index": where[index], "error": error})
        refused.sort(key=lambda r: int(r["index"]))
    return {"published": len(messages) - len(refused), "refused": refused}


@_op("tags")
async def _tags(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    changes = args.get("set") or {}
    delete = args.get("delete") or []
    if not isinstance(changes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in changes.items()
    ):
        raise ValueError("set must be a map of strings to strings")
    if not isinstance(delete, list) or not all(isinstance(k, str) for k in delete):
        raise ValueError("delete must be a list of strings")
    if changes or delete:
        return {"tags": await conn.agent.set_tags(changes, delete)}
    return {"tags": conn.agent.tags}


@_op("subscribe")
async def _subscribe(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    topic = _str_arg(args, "topic")
    count = args.get("count")
    if count is not None and (type(count) is not int or count < 1):
        raise ValueError("count must be a positive integer")
    sub = conn.agent.subscribe(topic)
    await conn.send({"seq": seq, "ok": True, "result": {}})

    async def body() -> None:
        sent = 0
        async with sub:
            async for first in sub:
                # What else is queued already goes to the writer with it:
                # one hand-over, not one per delivery, under load.
                room = _EVENT_BATCH if count is None else count - sent - 1
                batch = [first, *sub.take_nowait(room)]
                frames = b"".join(
                    pack(
                        {
                            "seq": seq,
                            "event": {
                                "topic": d.topic,
                                "payload": d.payload,
                                "origin": d.origin,
                                "epoch": d.epoch,
                                "seq": d.seq,
                                "hops": d.hops,
                                "time": d.delivered_at,
                            },
                        }
                    )
                    for d in batch
                )
                await conn.out_send.send((frames, None))
                sent += len(batch)
                if count is not None and sent >= count:
                    return

    conn.start_stream(seq, body)
    return _STREAMING


@_op("monitor")
async def _monitor(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    watch = conn.agent.watch_members()
    await conn.send({"seq": seq, "ok": True, "result": {}})

    async def body() -> None:
        async with watch:
            async for member in watch:
                await conn.send({"seq": seq, "event": member.to_dict()})

    conn.start_stream(seq, body)
    return _STREAMING


@_op("unsubscribe")
async def _unsubscribe(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    stream = args.get("stream")
    scope = conn.streams.get(stream) if type(stream) is int else None
    if scope is None:
        raise ValueError(f"no stream {stream!r} on this connection")
    scope.cancel()
    return {}


@_op("leave")
async def _leave(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    # Answered once the agent has left and stopped; the server's `finish`
    # lets this answer out before the process ends.
    await conn.agent.leave()
    written = trio.Event()
    await conn.out_send.send((pack({"seq": seq, "ok": True, "result": {"left": True}}), written))
    await written.wait()
    return _STREAMING


# Queries and cluster-wide keys: their operations (issue 15).
from daemon.control_query import register as _register_queries  # noqa: E402

_register_queries(_OPS, _STREAMING)
