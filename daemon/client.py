"""A Python client of the control API (trio), on which the CLI is built.

    async with open_client("127.0.0.1:7373") as client:
        print(await client.members())
        await client.publish("news", b"hello")
        async with client.subscribe("news", count=10) as events:
            async for event in events:
                print(event["payload"])

One connection carries any number of requests and streams: a reader task
routes every message to its request by `seq` (see docs/control-api.md).

Nothing waits forever: a connection opens with a handshake that must be
answered within `HANDSHAKE_TIMEOUT` (else the other end is not an overlay
control API, and `NotAControlAPI` says so), and every answer within the
request timeout. Requests the agent would refuse for their size are refused
here first, naming the limit, rather than ending in a reset connection.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from daemon.control import (
    MAX_REQUEST,
    MAX_RESPONSE,
    PROTOCOL_VERSION,
    ControlError,
    FrameReader,
    control_address,
    pack,
    parse_control,
    request_too_large,
)
from daemon.errors import os_reason

# An agent answers a handshake at once, even a loaded one (its control API
# is served next to the protocol): after this long, something else listens.
HANDSHAKE_TIMEOUT = 5.0
# How long to wait for any answer. The slowest is `leave`'s: the agent
# answers once it has left, after at most `leave_grace` (10 probe periods,
# 10 s by default) and `leave_timeout` (5 s) for its streams to flush.
DEFAULT_REQUEST_TIMEOUT = 30.0
# The environment variable the CLI reads the request timeout from.
ENV_TIMEOUT = "OVERLAY_TIMEOUT"


class ControlUnreachable(ControlError):
    """No agent answers at the control address."""


class NotAControlAPI(ControlUnreachable):
    """Something answers at the control address, but not an agent's control API."""


class Stream:
    """Events of one streaming request (`subscribe`, `monitor`)."""

    def __init__(self, client: ControlClient, seq: int) -> None:
        self.client = client
        self.seq = seq
        self._send, self._recv = trio.open_memory_channel[dict[str, Any]](math.inf)
        self.error: str | None = None

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            # An event already here is taken without a trip through the
            # scheduler (which costs more than the event: issue 14); the
            # reader task refills the queue whenever it runs dry.
            try:
                event = self._recv.receive_nowait()
            except trio.WouldBlock:
                return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self.error:
                raise ControlError(self.error) from None
            raise StopAsyncIteration from None
        await trio.lowlevel.checkpoint_if_cancelled()
        return event

    async def close(self) -> None:
        if self.seq in self.client._streams:
            self.client._streams.pop(self.seq, None)
            with contextlib.suppress(ControlError, trio.BrokenResourceError):
                await self.client.request("unsubscribe", stream=self.seq)
        self._recv.close()


class ControlClient:
    def __init__(
        self,
        stream: trio.SocketStream,
        *,
        reader: FrameReader | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        agent: Mapping[str, Any] | None = None,
    ) -> None:
        self._stream = stream
        self._reader = reader or FrameReader(stream, MAX_RESPONSE)
        self.request_timeout = request_timeout
        # The agent's handshake answer: {version, name, addr, max_payload}.
        self.agent: dict[str, Any] = dict(agent or {})
        self._seq = 0
        self._pending: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._streams: dict[int, Stream] = {}
        self._lock = trio.Lock()
        self._closed = False
        self._error: str | None = None

    # --------------------------------------------------------- plumbing

    async def _read_loop(self) -> None:
        reader = self._reader
        try:
            while True:
                msg = await reader.read()
                if msg is None:
                    # An error it sent before closing says more.
                    self._error = self._error or "the agent closed the control connection"
                    return
                self._route(msg)
        except (ControlError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._error = f"control connection failed: {exc}"
        finally:
            self._closed = True
            for channel in self._pending.values():
                channel.close()
            self._pending.clear()
            for stream in self._streams.values():
                stream.error = self._error
                stream._send.close()
            self._streams.clear()

    def _route(self, msg: dict[str, Any]) -> None:
        seq = msg.get("seq")
        if type(seq) is not int:
            return
        if "event" in msg or "end" in msg:
            stream = self._streams.get(seq)
            if stream is None:
                return
            if "event" in msg and isinstance(msg["event"], dict):
                stream._send.send_nowait(msg["event"])
            if msg.get("end"):
                stream.error = msg.get("error")
                stream._send.close()
                self._streams.pop(seq, None)
            return
        channel = self._pending.pop(seq, None)
        if channel is not None:
            channel.send_nowait(msg)
            channel.close()
        elif seq == 0 and not msg.get("ok", True):
            self._error = str(msg.get("error"))

    async def _send(self, seq: int, op: str, args: Mapping[str, Any]) -> None:
        if self._closed:
            raise ControlError(self._error or "control connection closed")
        frame = pack({"seq": seq, "op": op, "args": dict(args)})
        if len(frame) - 4 > MAX_REQUEST:
            raise ControlError(request_too_large(len(frame) - 4))
        async with self._lock:
            try:
                await self._stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ControlError(f"control connection failed: {exc}") from None

    async def _answer(
        self, op: str, seq: int, recv: trio.MemoryReceiveChannel[dict[str, Any]]
    ) -> dict[str, Any]:
        """The answer to request `seq`, within the request timeout."""
        try:
            with trio.fail_after(self.request_timeout):
                return await recv.receive()
        except trio.EndOfChannel:
            raise ControlError(self._error or "control connection closed") from None
        except trio.TooSlowError:
            raise ControlError(
                f"the agent did not answer {op!r} within {self.request_timeout:g} s "
                f"({ENV_TIMEOUT} sets how long to wait)"
            ) from None
        finally:
            self._pending.pop(seq, None)

    async def request(self, op: str, **args: Any) -> Any:
        """Send one request and return its result, or raise ControlError."""
        self._seq += 1
        seq = self._seq
        send, recv = trio.open_memory_channel[dict[str, Any]](1)
        self._pending[seq] = send
        try:
            await self._send(seq, op, args)
        except ControlError:
            self._pending.pop(seq, None)
            raise
        answer = await self._answer(op, seq, recv)
        if not answer.get("ok"):
            raise ControlError(str(answer.get("error") or "request failed"))
        return answer.get("result")

    @contextlib.asynccontextmanager
    async def _open_stream(self, op: str, **args: Any) -> AsyncIterator[Stream]:
        self._seq += 1
        seq = self._seq
        stream = Stream(self, seq)
        self._streams[seq] = stream
        send, recv = trio.open_memory_channel[dict[str, Any]](1)
        self._pending[seq] = send
        try:
            await self._send(seq, op, args)
            answer = await self._answer(op, seq, recv)
        except ControlError:
            self._streams.pop(seq, None)
            self._pending.pop(seq, None)
            raise
        if not answer.get("ok"):
            self._streams.pop(seq, None)
            raise ControlError(str(answer.get("error") or "request failed"))
        try:
            yield stream
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.close()

    # ------------------------------------------------------------ API

    async def handshake(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("handshake", version=PROTOCOL_VERSION)
        return result

    async def members(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("members")
        return result

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("stats")
        return result

    async def publish(self, topic: str, payload: bytes) -> None:
        limit = self.agent.get("max_payload")
        if type(limit) is int and len(payload) > limit:
            # The agent would refuse it: say so without sending megabytes.
            raise ControlError(
                f"payload is {len(payload)} bytes, the limit is {limit} (plumtree.max_payload)"
            )
        await self.request("publish", topic=topic, payload=payload)

    async def publish_batch(self, messages: Sequence[tuple[str, bytes]]) -> list[tuple[int, str]]:
        """Publish many messages in one request (`publish_batch`), in order;
        returns the refused ones as (index in `messages`, reason). Raises
        ControlError if the whole request is refused (the agent is leaving,
        the request is over 1 MiB). For a steady stream, `publisher()`
        batches and pipelines for you."""
        result: dict[str, Any] = await self.request(
            "publish_batch", messages=[{"topic": t, "payload": p} for t, p in messages]
        )
        return [(int(r["index"]), str(r["error"])) for r in result.get("refused", [])]

    def publisher(
        self,
        *,
        window: int = 8,
        batch_bytes: int = 256 * 1024,
        on_refused: Callable[[Refused], None] | None = None,
        raise_refused: bool = True,
    ) -> contextlib.AbstractAsyncContextManager[Publisher]:
        """Pipelined publishing on this connection: `await pub.publish(topic,
        payload)` returns as soon as the message is queued here; a task
        sends what is queued as `publish_batch` requests, up to `window` of
        them unanswered at a time, and matches each answer to its messages.
        So the sender is held back by the agent's pace, not by a round trip
        per message. Leaving the block waits until every message is answered.

        A publish the client can refuse itself (over the agent's
        `max_payload`) raises ControlError at once. One the agent refuses is
        reported by its number (what `publish` returned) and reason: to
        `on_refused` as it is known, in `Publisher.refused`, and, with
        `raise_refused`, as `PublishRefused` when the block ends."""
        return _publisher(self, window, batch_bytes, on_refused, raise_refused)

    async def join(self, seeds: Sequence[str], wait: float | None = None) -> list[dict[str, Any]]:
        """Join through `seeds`. With `wait` (seconds), wait for each seed
        to answer and return each one's outcome: {seed, ok, addrs, member,
        error}; without, return [] at once (the agent keeps trying)."""
        if wait is None:
            await self.request("join", seeds=list(seeds))
            return []
        result: dict[str, Any] = await self.request("join", seeds=list(seeds), wait=wait)
        return list(result["seeds"])

    async def force_leave(self, name: str, prune: bool = False) -> dict[str, Any]:
        """Force a failed member to left (`overlay force-leave`): {name, status, pruned}."""
        result: dict[str, Any] = await self.request("force_leave", name=name, prune=prune)
        return result

    async def info(self) -> dict[str, Any]:
        """Effective settings with their sources, versions, uptime, name and address."""
        result: dict[str, Any] = await self.request("info")
        return result

    def logs(self, level: str = "info") -> contextlib.AbstractAsyncContextManager[Stream]:
        """The agent's log records at or above `level`, as maps (`ts`,
        `level`, `logger`, `msg`, fields; `dropped` when records were
        dropped before one because this client read too slowly)."""
        return self._open_stream("logs", level=level)

    async def tags(
        self, set: Mapping[str, str] | None = None, delete: Sequence[str] = ()
    ) -> dict[str, str]:
        result: dict[str, Any] = await self.request(
            "tags", set=dict(set or {}), delete=list(delete)
        )
        return dict(result["tags"])

    async def leave(self) -> None:
        """Ask the agent to leave; returns once it has (it then stops)."""
        await self.request("leave")

    def subscribe(
        self, topic: str, count: int | None = None
    ) -> contextlib.AbstractAsyncContextManager[Stream]:
        """Deliveries on `topic`: {topic, payload, origin, epoch, seq, hops, time}."""
        args: dict[str, Any] = {"topic": topic}
        if count is not None:
            args["count"] = count
        return self._open_stream("subscribe", **args)

    def monitor(self) -> contextlib.AbstractAsyncContextManager[Stream]:
        """Member changes: {name, addr, status, incarnation, tags}."""
        return self._open_stream("monitor")

    def query(
        self, name: str, payload: bytes = b"", **args: Any
    ) -> contextlib.AbstractAsyncContextManager[Stream]:
        """Send a query (args: nodes, tags, timeout, ack); events {type:
        ack|response, from, addr, payload, elapsed}, then {type: done}."""
        return self._open_stream("query", name=name, payload=payload, **args)

    def queries(self, names: Sequence[str] = ()) -> contextlib.AbstractAsyncContextManager[Stream]:
        """Queries delivered to this member: {id, origin, addr, name, payload}."""
        return self._open_stream("queries", names=list(names))

    async def respond(self, qid: int, payload: bytes) -> None:
        """Answer a query received on a `queries` stream."""
        await self.request("respond", id=qid, payload=payload)

    async def keys(self, op: str, key: str | None = None, timeout: float | None = None) -> Any:
        """A cluster-wide key operation: list, install, use, remove."""
        args: dict[str, Any] = {"action": op}
        if key is not None:
            args["key"] = key
        if timeout is not None:
            args["timeout"] = timeout
        return await self.request("keys", **args)


@dataclass(frozen=True, slots=True)
class Refused:
    """A publish the agent refused: its number (what `Publisher.publish`
    returned: 0 for the publisher's first), topic and reason."""

    number: int
    topic: str
    error: str


class PublishRefused(ControlError):
    """Publishes the agent refused, each with its reason (`refused`)."""

    def __init__(self, refused: Sequence[Refused]) -> None:
        self.refused = list(refused)
        shown = "; ".join(f"#{r.number} on {r.topic!r}: {r.error}" for r in self.refused[:3])
        more = f" (and {len(self.refused) - 3} more)" if len(self.refused) > 3 else ""
        super().__init__(f"{len(self.refused)} publish(es) refused: {shown}{more}")


# Bytes a message adds to a `publish_batch` request besides its topic and
# payload (msgpack map, keys, headers), rounded up.
_PER_MESSAGE = 32


class Publisher:
    """Pipelined publishes on one control connection (`ControlClient.publisher`)."""

    def __init__(
        self,
        client: ControlClient,
        window: int,
        batch_bytes: int,
        on_refused: Callable[[Refused], None] | None,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.client = client
        # Leave room in a request for its own header.
        self.batch_bytes = max(1, min(batch_bytes, MAX_REQUEST - 1024))
        self.on_refused = on_refused
        self.published = 0  # messages the agent accepted (answered)
        self.refused: list[Refused] = []
        self._count = 0  # messages queued so far: the next one's number
        self._queue: list[tuple[int, str, bytes]] = []
        self._queued_bytes = 0
        self._slots = trio.Semaphore(window)
        self._wake = trio.Event()  # something was queued
        self._drained = trio.Event()  # the queue went below the bound
        self._unanswered = 0  # messages sent and not answered yet
        self._idle = trio.Event()  # nothing queued, nothing unanswered
        self._idle.set()
        self._failed: ControlError | None = None
        self._inflight_send, self._inflight_recv = trio.open_memory_channel[
            tuple[int, list[tuple[int, str]], trio.MemoryReceiveChannel[dict[str, Any]]]
        ](math.inf)

    async def publish(self, topic: str, payload: bytes | str) -> int:
        """Queue one message; returns its number. Waits only while more than
        `batch_bytes` x 2 wait to be sent (the agent sets the pace). It
        yields to other tasks only when a batch is full: what is queued goes
        out at the caller's next wait (a sleep, I/O, `flush`, the block's
        end), so a caller that publishes then computes for long should
        `flush()` or sleep(0) if latency matters."""
        if self._failed is not None:
            raise self._failed
        if isinstance(payload, str):
            payload = payload.encode()
        limit = self.client.agent.get("max_payload")
        if type(limit) is int and len(payload) > limit:
            raise ControlError(
                f"payload is {len(payload)} bytes, the limit is {limit} (plumtree.max_payload)"
            )
        while self._queued_bytes >= 2 * self.batch_bytes:
            self._drained = trio.Event()
            await self._drained.wait()
            if self._failed is not None:
                raise self._failed
        number = self._count
        self._count += 1
        self._queue.append((number, topic, payload))
        self._queued_bytes += len(payload) + len(topic) * 4 + _PER_MESSAGE
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._wake.set()
        if self._queued_bytes >= self.batch_bytes:
            # A batch is ready: let the sender take it.
            await trio.lowlevel.checkpoint()
        else:
            # A trip through the scheduler per message would cost more than
            # the message (issue 14): the sender takes what has accumulated
            # at the caller's next wait, or when a batch is full.
            await trio.lowlevel.checkpoint_if_cancelled()
        return number

    async def flush(self) -> None:
        """Wait until every message queued so far has been answered."""
        while not self._idle.is_set():
            if self._failed is not None:
                raise self._failed
            await self._idle.wait()
        if self._failed is not None:
            raise self._failed

    def _take(self) -> list[tuple[int, str, bytes]]:
        """The next batch: as many queued messages as fit in `batch_bytes`."""
        size = 0
        n = 0
        for _, topic, payload in self._queue:
            cost = len(payload) + len(topic) * 4 + _PER_MESSAGE
            if n and size + cost > self.batch_bytes:
                break
            size += cost
            n += 1
        batch, self._queue = self._queue[:n], self._queue[n:]
        self._queued_bytes -= size
        if self._queued_bytes < 2 * self.batch_bytes:
            self._drained.set()
        return batch

    async def _sender(self) -> None:
        client = self.client
        while True:
            if not self._queue:
                self._wake = trio.Event()
                await self._wake.wait()
            await self._slots.acquire()
            batch = self._take()
            client._seq += 1
            seq = client._seq
            send, recv = trio.open_memory_channel[dict[str, Any]](1)
            client._pending[seq] = send
            messages = [{"topic": t, "payload": p} for _, t, p in batch]
            self._unanswered += len(batch)
            try:
                await client._send(seq, "publish_batch", {"messages": messages})
            except ControlError as exc:
                client._pending.pop(seq, None)
                self._fail(exc)
                return
            self._inflight_send.send_nowait((seq, [(n, t) for n, t, _ in batch], recv))

    async def _acker(self) -> None:
        """Answers come in the order of the requests: take them one by one."""
        async for seq, sent, recv in self._inflight_recv:
            try:
                answer = await self.client._answer("publish_batch", seq, recv)
            except ControlError as exc:
                self._fail(exc)
                return
            self._slots.release()
            self._unanswered -= len(sent)
            if answer.get("ok"):
                result = answer.get("result") or {}
                refused = [
                    Refused(sent[r["index"]][0], sent[r["index"]][1], str(r["error"]))
                    for r in result.get("refused", [])
                ]
            else:  # the whole request: every message of it, with the same reason
                error = str(answer.get("error") or "request failed")
                refused = [Refused(n, t, error) for n, t in sent]
            self.published += len(sent) - len(refused)
            for r in refused:
                self.refused.append(r)
                if self.on_refused is not None:
                    self.on_refused(r)
            if not self._queue and not self._unanswered:
                self._idle.set()

    def _fail(self, exc: ControlError) -> None:
        self._failed = exc
        self._idle.set()
        self._drained.set()


@contextlib.asynccontextmanager
async def _publisher(
    client: ControlClient,
    window: int,
    batch_bytes: int,
    on_refused: Callable[[Refused], None] | None,
    raise_refused: bool,
) -> AsyncIterator[Publisher]:
    pub = Publisher(client, window, batch_bytes, on_refused)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pub._sender)
        nursery.start_soon(pub._acker)
        try:
            yield pub
            await pub.flush()
        finally:
            nursery.cancel_scope.cancel()
    if raise_refused and pub.refused:
        raise PublishRefused(pub.refused)


async def _connect(address: str, timeout: float) -> trio.SocketStream:
    try:
        kind, where = parse_control(address)
    except ValueError as exc:
        raise ControlError(f"bad control address {address!r}: {exc}") from None
    try:
        with trio.fail_after(timeout):
            if kind == "unix":
                assert isinstance(where, str)
                return await trio.open_unix_socket(where)
            assert isinstance(where, tuple)
            return await trio.open_tcp_stream(*where)
    except trio.TooSlowError:
        raise ControlUnreachable(f"no agent answers at {address} (timed out)") from None
    except OSError as exc:
        raise ControlUnreachable(f"no agent at {address}: {os_reason(exc)}") from None


async def _handshake(
    stream: trio.SocketStream, reader: FrameReader, address: str, timeout: float
) -> dict[str, Any]:
    """The agent's answer to a handshake, or NotAControlAPI: whatever
    listens at `address` must answer one like an agent, and in time."""
    refused = f"{address} is not an overlay control API"
    request = {"seq": 1, "op": "handshake", "args": {"version": PROTOCOL_VERSION}}
    try:
        with trio.fail_after(timeout):
            await stream.send_all(pack(request))
            answer = await reader.read()
    except trio.TooSlowError:
        raise NotAControlAPI(
            f"{refused}: no answer to the handshake within {timeout:g} s"
        ) from None
    except ControlError:  # not our framing, not msgpack, not a map
        raise NotAControlAPI(f"{refused}: it answered with something else") from None
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        answer = None
    if answer is None:
        raise NotAControlAPI(f"{refused}: it closed the connection")
    if answer.get("seq") != 1 or not isinstance(answer.get("ok"), bool):
        raise NotAControlAPI(f"{refused}: it answered with something else")
    if not answer["ok"]:  # an agent, speaking another version
        raise ControlError(str(answer.get("error") or "handshake refused"))
    result = answer.get("result")
    if not isinstance(result, dict) or result.get("version") != PROTOCOL_VERSION:
        raise NotAControlAPI(f"{refused}: it answered with something else")
    return result


@contextlib.asynccontextmanager
async def open_client(
    address: str | None = None,
    *,
    timeout: float = 5.0,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> AsyncIterator[ControlClient]:
    """Connect to the agent at `address` (default: $OVERLAY_CONTROL, then
    127.0.0.1:7373) within `timeout` seconds, and make sure it is one (a
    handshake, answered within `HANDSHAKE_TIMEOUT` or `request_timeout` if
    shorter). Each request then waits at most `request_timeout` for its
    answer."""
    address = control_address(address)
    stream = await _connect(address, timeout)
    try:
        reader = FrameReader(stream, MAX_RESPONSE)
        wait = min(HANDSHAKE_TIMEOUT, request_timeout)
        agent = await _handshake(stream, reader, address, wait)
    except BaseException:
        with trio.CancelScope(shield=True):
            await stream.aclose()
        raise
    client = ControlClient(stream, reader=reader, request_timeout=request_timeout, agent=agent)
    client._seq = 1  # the handshake's
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._read_loop)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()
