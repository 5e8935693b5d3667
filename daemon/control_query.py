"""Control-API operations for queries and cluster-wide keys (`register`
puts them into `daemon.control`'s table; documented in docs/control-api.md).

- `query` (stream): send a query; events `{type: ack|response, from, addr,
  payload, elapsed}`, then `{type: done, id, acks, responses}`, then `end`.
- `queries` (stream): the queries delivered to this member, `{id, origin,
  addr, name, payload}`; answer one with `respond {id, payload}`.
- `keys {action, key?, timeout?}`: a cluster-wide key operation (`daemon.keys`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from daemon.queries import QueryRequest

# Queries handed to control-API clients and not answered yet, by id (the
# newest this many: an answer to an older one is refused).
_ANSWERABLE = 1024


# A `daemon.control._Connection` (typed loosely: control imports this module).
_Connection = Any
# The marker of a streaming answer, given by `register`.
_STREAMING: object = None
Op = Callable[[_Connection, int, dict[str, Any]], Awaitable[Any]]
_MINE: dict[str, Op] = {}


def _op(name: str) -> Callable[[Op], Op]:
    def add(fn: Op) -> Op:
        _MINE[name] = fn
        return fn

    return add


def register(table: dict[str, Any], streaming: object) -> None:
    """Add this module's operations to the control API's `table`."""
    global _STREAMING
    _STREAMING = streaming
    table.update(_MINE)


def _str_arg(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _agent(conn: _Connection) -> Any:
    return conn.agent


def _answerable(agent: Any) -> OrderedDict[int, QueryRequest]:
    table: OrderedDict[int, QueryRequest] | None = getattr(agent, "_control_queries", None)
    if table is None:
        table = OrderedDict()
        agent._control_queries = table
    return table


def _payload(args: dict[str, Any], name: str = "payload") -> bytes:
    payload = args.get(name, b"")
    if isinstance(payload, str):
        payload = payload.encode()
    if not isinstance(payload, bytes):
        raise ValueError(f"{name} must be bytes (or a string)")
    return payload


def _strings(args: dict[str, Any], name: str) -> list[str]:
    value = args.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of strings")
    return value


@_op("query")
async def _query(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    name = _str_arg(args, "name")
    tags = args.get("tags") or {}
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise ValueError("tags must be a map of tag names to regexes")
    timeout = args.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
        raise ValueError("timeout must be a number of seconds")
    ack = args.get("ack", True)
    if not isinstance(ack, bool):
        raise ValueError("ack must be true or false")
    handle = await _agent(conn).open_query(
        name,
        _payload(args),
        nodes=_strings(args, "nodes"),
        tags=tags,
        timeout=timeout,
        ack=ack,
    )
    await conn.send({"seq": seq, "ok": True, "result": {"id": handle.id}})

    async def body() -> None:
        acks = responses = 0
        async for answer in handle:
            acks += answer.ack
            responses += not answer.ack
            await conn.send({"seq": seq, "event": answer.to_dict()})
        done = {"type": "done", "id": handle.id, "acks": acks, "responses": responses}
        await conn.send({"seq": seq, "event": done})

    conn.start_stream(seq, body)
    return _STREAMING


@_op("queries")
async def _queries(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    agent = _agent(conn)
    key, recv = agent.queries.watch(_strings(args, "names"))
    table = _answerable(agent)
    await conn.send({"seq": seq, "ok": True, "result": {}})

    async def body() -> None:
        try:
            async with recv:
                async for req in recv:
                    table[req.id] = req
                    while len(table) > _ANSWERABLE:
                        table.popitem(last=False)
                    await conn.send({"seq": seq, "event": req.to_dict()})
        finally:
            agent.queries.unwatch(key)

    conn.start_stream(seq, body)
    return _STREAMING


@_op("respond")
async def _respond(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    agent = _agent(conn)
    qid = args.get("id")
    if type(qid) is not int:
        raise ValueError("id must be the query's id (an integer)")
    req = _answerable(agent).pop(qid, None)
    if req is None:
        raise ValueError(f"no query {qid} awaiting an answer here")
    await agent.respond(req, _payload(args))
    return {}


@_op("keys")
async def _keys(conn: _Connection, seq: int, args: dict[str, Any]) -> Any:
    from daemon.keys import cluster_keys  # the crypto library: only when used

    op = _str_arg(args, "action")
    key = args.get("key")
    if key is not None and not isinstance(key, str):
        raise ValueError("key must be a base64 string")
    timeout = args.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise ValueError("timeout must be a positive number of seconds")
    result = await cluster_keys(_agent(conn), op, key, timeout)
    return result.to_dict()
