"""Queries in the agent: sending them, collecting the answers, answering
them with embedded handlers or through control-API clients (the protocol
is `overlay.queries`).

- `Agent.open_query(...)` sends a query and gives a `QueryHandle`: iterate
  it for each ack and response as it comes (`Answer`); it ends when the
  query's time is up. `Agent.query(...)` collects them into a `QueryResult`.
- `Agent.on_query(name, handler)`: `handler(QueryRequest)` runs for each
  query of that name this member matches; what it returns (bytes, or None
  for no answer) is the response. Handlers run as tasks, at most
  `MAX_RUNNING` at once (more queries are answered by nobody, and counted),
  each cut at the query's deadline.
- `Agent.watch_queries(names)`: a subscription to the queries delivered to
  this member (the control API's `queries` stream); answer one with
  `Agent.respond(request, payload)`.
- Names starting with `$overlay.` are the overlay's own (cluster-wide keys,
  `daemon.keys`): answered by the agent alone, never shown to handlers.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from overlay.ids import NodeId
from overlay.io import Output, QueryAnswer, QueryAsked, QueryDone
from overlay.node import Node
from overlay.queries import INTERNAL_PREFIX, QueryError


class Driver(Protocol):
    """What the service asks of the agent (`daemon.agent.Agent` is one;
    typed here, as the agent imports this module)."""

    _nursery: trio.Nursery | None

    @property
    def node(self) -> Node: ...

    def _check_running(self) -> None: ...

    async def _call(self, fn: Callable[[float], list[Output]]) -> None: ...


log = logging.getLogger("overlay.queries")

MAX_RUNNING = 64  # embedded handlers running at once
MAX_WATCHERS = 64  # control-API query streams at once
WATCH_BUFFER = 256  # queries queued per stream before they are dropped
ANSWER_BUFFER = 2 * 4096 + 2  # per open query: acks and responses, then the end
_CLOSED = (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError)


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """A query delivered to this member."""

    origin: NodeId
    id: int
    name: str
    payload: bytes
    deadline: float  # trio time

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin.name,
            "addr": self.origin.addr,
            "id": self.id,
            "name": self.name,
            "payload": self.payload,
        }


@dataclass(frozen=True, slots=True)
class Answer:
    """An ack (`ack=True`) or a response from `responder`."""

    responder: str
    addr: str
    ack: bool
    payload: bytes
    elapsed: float  # seconds since the query was sent

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "ack" if self.ack else "response",
            "from": self.responder,
            "addr": self.addr,
            "payload": self.payload,
            "elapsed": self.elapsed,
        }


@dataclass(slots=True)
class QueryResult:
    id: int
    acks: list[str] = field(default_factory=list)
    responses: dict[str, bytes] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)


Handler = Callable[[QueryRequest], Awaitable[bytes | None]]


class QueryHandle:
    """The answers to one query, as they come; ends at its timeout."""

    def __init__(self, qid: int, recv: trio.MemoryReceiveChannel[Answer | None]) -> None:
        self.id = qid
        self._recv = recv
        self.done = False

    def __aiter__(self) -> AsyncIterator[Answer]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Answer]:
        async with self._recv:
            async for item in self._recv:
                if item is None:
                    self.done = True
                    return
                yield item


class QueryService:
    def __init__(self, agent: Driver) -> None:
        self.agent = agent
        self._open: dict[int, tuple[trio.MemorySendChannel[Answer | None], float]] = {}
        self._handlers: dict[str, Handler] = {}
        self._internal: dict[str, Handler] = {}
        self._watchers: dict[int, tuple[frozenset[str], trio.MemorySendChannel[QueryRequest]]] = {}
        self._watch_seq = 0
        self._running = 0
        self.counters: Counter[str] = Counter()

    # ------------------------------------------------------------ sending

    async def open(
        self,
        name: str,
        payload: bytes = b"",
        *,
        nodes: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
        timeout: float | None = None,
        ack: bool = True,
        internal: bool = False,
    ) -> QueryHandle:
        agent = self.agent
        agent._check_running()
        send, recv = trio.open_memory_channel[Answer | None](ANSWER_BUFFER)
        holder: list[int] = []

        def fn(now: float) -> list[Output]:
            qid, outs = agent.node.query(
                name, payload, now, tuple(nodes), tags, timeout, ack, internal
            )
            self._open[qid] = (send, now)
            holder.append(qid)
            return outs

        await agent._call(fn)
        return QueryHandle(holder[0], recv)

    async def query(self, name: str, payload: bytes = b"", **kw: Any) -> QueryResult:
        handle = await self.open(name, payload, **kw)
        result = QueryResult(handle.id)
        async for answer in handle:
            result.answers.append(answer)
            if answer.ack:
                result.acks.append(answer.responder)
            else:
                result.responses[answer.responder] = answer.payload
        return result

    # ---------------------------------------------------------- answering

    def on_query(self, name: str, handler: Handler | None) -> None:
        """Answer queries called `name` with `handler` (None: stop)."""
        if name.startswith(INTERNAL_PREFIX):
            raise QueryError(f"query names starting with {INTERNAL_PREFIX!r} are the overlay's own")
        if handler is None:
            self._handlers.pop(name, None)
        else:
            self._handlers[name] = handler

    def on_internal(self, name: str, handler: Handler) -> None:
        self._internal[name] = handler

    async def respond(self, origin: NodeId, qid: int, payload: bytes) -> None:
        agent = self.agent
        agent._check_running()
        await agent._call(lambda now: agent.node.respond(origin, qid, payload, now))

    def watch(
        self, names: Sequence[str] = ()
    ) -> tuple[int, trio.MemoryReceiveChannel[QueryRequest]]:
        """A stream of the queries delivered here (of these names; all the
        application's when empty). Close it with `unwatch`."""
        if len(self._watchers) >= MAX_WATCHERS:
            raise QueryError(f"at most {MAX_WATCHERS} query streams at once")
        send, recv = trio.open_memory_channel[QueryRequest](WATCH_BUFFER)
        self._watch_seq += 1
        self._watchers[self._watch_seq] = (frozenset(names), send)
        return self._watch_seq, recv

    def unwatch(self, key: int) -> None:
        entry = self._watchers.pop(key, None)
        if entry is not None:
            entry[1].close()

    def close(self) -> None:
        """The agent stopped: end every open query's answers (early: its
        handle's `done` stays False) and every query stream."""
        for send, _sent in self._open.values():
            send.close()
        self._open.clear()
        for key in list(self._watchers):
            self.unwatch(key)

    # ------------------------------------------------ the node's outputs

    def output(self, out: QueryAsked | QueryAnswer | QueryDone, now: float) -> None:
        """Called by the agent's driver: must not block."""
        if isinstance(out, QueryAnswer):
            entry = self._open.get(out.id)
            if entry is not None:
                a = Answer(
                    out.responder.name, out.responder.addr, out.ack, out.payload, now - entry[1]
                )
                try:
                    entry[0].send_nowait(a)
                except _CLOSED:
                    self.counters["answers_dropped"] += 1
        elif isinstance(out, QueryDone):
            entry = self._open.pop(out.id, None)
            if entry is not None:
                with contextlib.suppress(*_CLOSED):
                    entry[0].send_nowait(None)
                entry[0].close()
        else:
            self._asked(QueryRequest(out.origin, out.id, out.name, out.payload, out.deadline))

    def _asked(self, req: QueryRequest) -> None:
        internal = req.name.startswith(INTERNAL_PREFIX)
        handler = (self._internal if internal else self._handlers).get(req.name)
        if handler is not None:
            self._spawn(handler, req)
        if internal:
            return
        for names, send in list(self._watchers.values()):
            if names and req.name not in names:
                continue
            try:
                send.send_nowait(req)
            except _CLOSED:
                self.counters["queries_dropped"] += 1

    def _spawn(self, handler: Handler, req: QueryRequest) -> None:
        nursery = self.agent._nursery
        if nursery is None or self._running >= MAX_RUNNING:
            self.counters["handlers_busy"] += 1
            return
        self._running += 1
        nursery.start_soon(self._run, handler, req)

    async def _run(self, handler: Handler, req: QueryRequest) -> None:
        try:
            with trio.move_on_at(req.deadline):
                payload = await handler(req)
                if payload is not None:
                    await self.respond(req.origin, req.id, payload)
        except Exception as exc:  # a handler's bug must not end the agent
            self.counters["handler_errors"] += 1
            log.warning("query handler for %r failed: %r", req.name, exc)
        finally:
            self._running -= 1
