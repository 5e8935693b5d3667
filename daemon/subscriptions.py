"""What the embedded API hands out: deliveries on a topic, member records,
and the bounded subscription that streams either of them.

A subscriber that does not keep up loses the newest items (counted in
`Subscription.dropped`), never blocks the agent's driver, which pushes with
`_push` and never awaits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

import trio

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Delivery:
    """A broadcast received on a subscribed topic."""

    topic: str
    payload: bytes
    origin: str
    seq: int
    hops: int
    epoch: int
    # Unix time (seconds) at which this agent delivered it: with the
    # publisher's clock in the payload, a broadcast's latency.
    delivered_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Member:
    """One member as this agent sees it."""

    name: str
    addr: str
    status: str  # alive | suspect | failed | left
    incarnation: int
    tags: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "addr": self.addr,
            "status": self.status,
            "incarnation": self.incarnation,
            "tags": dict(self.tags),
        }


class Subscription(Generic[T]):
    """A stream of items for one subscriber: iterate it with `async for`.
    Close it (or use it as an async context manager) to unsubscribe; it ends
    by itself when the agent stops. `dropped` counts the items lost because
    the subscriber did not keep up with its bounded queue."""

    def __init__(self, registry: dict[int, Subscription[T]], key: int, size: int) -> None:
        self._registry = registry
        self._key = key
        self._send, self._recv = trio.open_memory_channel[T](size)
        self.dropped = 0
        registry[key] = self

    def _push(self, item: T) -> bool:
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.dropped += 1
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close()
            return False
        return True

    def _end(self) -> None:
        self._send.close()

    def close(self) -> None:
        self._registry.pop(self._key, None)
        self._send.close()
        self._recv.close()

    def take_nowait(self, limit: int) -> list[T]:
        """Up to `limit` items already queued, without waiting (none if the
        queue is empty or ended): a reader that keeps up with a busy
        subscription handles them in bulk."""
        out: list[T] = []
        recv = self._recv
        while len(out) < limit:
            try:
                out.append(recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        return out

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        try:
            # An item already queued is taken without a trip through the
            # scheduler (it costs more than a delivery: issue 14).
            try:
                item = self._recv.receive_nowait()
            except trio.WouldBlock:
                return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None
        await trio.lowlevel.checkpoint_if_cancelled()
        return item

    async def __aenter__(self) -> Subscription[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
