"""A Python client of the control API (trio), on which the CLI is built.

    async with open_client("127.0.0.1:7373") as client:
        print(await client.members())
        await client.publish("news", b"hello")
        async with client.subscribe("news", count=10) as events:
            async for event in events:
                print(event["payload"])

One connection carries any number of requests and streams: a reader task
routes every message to its request by `seq` (see docs/control-api.md).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import trio

from daemon.control import (
    MAX_RESPONSE,
    PROTOCOL_VERSION,
    ControlError,
    FrameReader,
    control_address,
    pack,
    parse_control,
)
from daemon.errors import os_reason


class ControlUnreachable(ControlError):
    """No agent answers at the control address."""


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
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self.error:
                raise ControlError(self.error) from None
            raise StopAsyncIteration from None

    async def close(self) -> None:
        if self.seq in self.client._streams:
            self.client._streams.pop(self.seq, None)
            with contextlib.suppress(ControlError, trio.BrokenResourceError):
                await self.client.request("unsubscribe", stream=self.seq)
        self._recv.close()


class ControlClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._seq = 0
        self._pending: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._streams: dict[int, Stream] = {}
        self._lock = trio.Lock()
        self._closed = False
        self._error: str | None = None

    # --------------------------------------------------------- plumbing

    async def _read_loop(self) -> None:
        reader = FrameReader(self._stream, MAX_RESPONSE)
        try:
            while True:
                msg = await reader.read()
                if msg is None:
                    self._error = "the agent closed the control connection"
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
        async with self._lock:
            try:
                await self._stream.send_all(pack({"seq": seq, "op": op, "args": dict(args)}))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ControlError(f"control connection failed: {exc}") from None

    async def request(self, op: str, **args: Any) -> Any:
        """Send one request and return its result, or raise ControlError."""
        self._seq += 1
        seq = self._seq
        send, recv = trio.open_memory_channel[dict[str, Any]](1)
        self._pending[seq] = send
        await self._send(seq, op, args)
        try:
            answer = await recv.receive()
        except trio.EndOfChannel:
            raise ControlError(self._error or "control connection closed") from None
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
        await self._send(seq, op, args)
        try:
            answer = await recv.receive()
        except trio.EndOfChannel:
            self._streams.pop(seq, None)
            raise ControlError(self._error or "control connection closed") from None
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
        await self.request("publish", topic=topic, payload=payload)

    async def join(self, seeds: Sequence[str]) -> None:
        await self.request("join", seeds=list(seeds))

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


@contextlib.asynccontextmanager
async def open_client(
    address: str | None = None, *, timeout: float = 5.0
) -> AsyncIterator[ControlClient]:
    """Connect to the agent at `address` (default: $OVERLAY_CONTROL, then
    127.0.0.1:7373)."""
    stream = await _connect(control_address(address), timeout)
    client = ControlClient(stream)
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
