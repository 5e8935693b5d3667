"""Queries, as Serf has them: a request that reaches the matching members
over the broadcast tree, and their acks and responses, straight back.

Theory of operation. The origin builds a `Query` (a random id, a name, a
payload, filters, a timeout) and the node broadcasts it, encoded in a frame
whose sender is the origin, on the overlay's own Plumtree topic
`QUERY_TOPIC` (tree only: anti-entropy never replays an old query). Every
member that gets it relays it (Plumtree does); one whose name and tags
match the filters delivers it to its application once (`QueryAsked`,
deduplicated by (origin, id)), sends a `QueryAck` to the origin if asked,
and a `QueryResponse` when its application answers (`respond`), before the
query's deadline and at most once. The origin collects acks and responses
until its timer fires (`QueryAnswer`, then `QueryDone`), one of each per
responder. Acks and responses go as datagrams to the origin's address.

Who says what: the responder is the frame's sender, never a field, so with
a cluster key (frames prove their sender) a member answers only for itself.
Without a key a datagram's sender is only what it claims, as everywhere in
the overlay.

Bounds: the payloads (`QueryLimits.max_payload`), the queries open at the
origin (`max_open`), the answers kept per query (`max_responses`), the
queries delivered and awaiting an answer (`max_pending`), the ids remembered
for deduplication (`max_seen`), the timeout (`max_timeout`), and the tag
filters' regexes: at most `MAX_REGEX` characters, and only patterns that
match in time bounded by a small power of the value's length (`safe_regex`:
no nested or alternated repetition, no back-references, at most
`MAX_REPEATS` repeats of variable length, one fewer unless anchored, at
most `MAX_CHOICES` combinations of alternatives), matched against values capped by the
member's own tag limit. A hostile pattern is refused, never run.
"""

from __future__ import annotations

import enum
import importlib
import random
import re
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from overlay.ids import NodeId
from overlay.io import Output, QueryAnswer, QueryAsked, QueryDone, Send, SetTimer, Timer
from overlay.messages import (
    QUERY_MAX_NAME,
    QUERY_MAX_NODES,
    QUERY_MAX_PAYLOAD,
    QUERY_MAX_TAG_FILTERS,
    Query,
    QueryAck,
    QueryResponse,
)

# The standard parser (private since 3.11, where the project runs): it
# tells the shape of a pattern without running it.
sre_c: Any = importlib.import_module("re._constants")
sre_p: Any = importlib.import_module("re._parser")

QUERY_TOPIC = "$overlay.query"
MAX_REGEX = 128  # characters in one tag filter's pattern
# Repeats of variable length in one pattern (one fewer unless anchored at
# the start: `search` tries every start position, a factor of the length).
# Measured on a 512-character value (the tags' limit): two such repeats,
# anchored, or one unanchored, take under 2 ms; three took 5 s.
MAX_REPEATS = 2
MAX_CHOICES = 16  # combinations of alternatives (a|b)(c|d)... in one pattern
# Names starting with this are the overlay's own queries (cluster-wide
# keys): the agent answers them, applications may not send them.
INTERNAL_PREFIX = "$overlay."


class QueryError(ValueError):
    """A query that cannot be sent (bad name, filters, payload, timeout, or
    too many open); nothing was sent."""


class QTimer(enum.Enum):
    DONE = "query_done"  # key: the query's id, at the origin


@dataclass(frozen=True, slots=True)
class QueryLimits:
    max_payload: int = 1024  # bytes in a query or response (Serf's default)
    max_open: int = 64  # queries this node has open as origin
    max_responses: int = 4096  # answers kept per query (one per responder)
    max_pending: int = 1024  # delivered queries that may still be answered
    max_seen: int = 8192  # (origin, id) remembered to deliver each once
    max_timeout: float = 60.0  # seconds
    default_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.max_payload <= QUERY_MAX_PAYLOAD:
            raise ValueError(f"query max_payload must be 1-{QUERY_MAX_PAYLOAD}")
        if not 0 < self.default_timeout <= self.max_timeout <= 600:
            raise ValueError("query timeouts must be 0 < default <= max <= 600 seconds")


__all__ = ["QueryAnswer", "QueryAsked", "QueryDone"]
QUERY_OUTPUTS = (QueryAsked, QueryAnswer, QueryDone)


_STARTS = (sre_c.AT_BEGINNING, sre_c.AT_BEGINNING_STRING)
_REPEATS = (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, getattr(sre_c, "POSSESSIVE_REPEAT", None))


class _Repeats:
    """Walks a parsed pattern; refuses what can backtrack badly."""

    def __init__(self) -> None:
        self.variable = 0  # repeats of variable length: *, +, ?, {m,n}
        self.choices = 1  # combinations of alternatives

    def check(self, items: object, in_repeat: bool) -> None:
        for op, av in items:  # type: ignore[attr-defined]
            if op in _REPEATS:
                lo, hi, sub = av
                if lo != hi:
                    self.variable += 1
                if in_repeat:
                    raise QueryError("nested repetition is not allowed in a tag filter")
                self.check(sub, True)
            elif op is sre_c.BRANCH:
                if in_repeat:
                    raise QueryError("alternation inside a repetition is not allowed")
                self.choices *= len(av[1])
                if self.choices > MAX_CHOICES:
                    raise QueryError(f"at most {MAX_CHOICES} combinations of alternatives")
                for branch in av[1]:
                    self.check(branch, in_repeat)
            elif op is sre_c.SUBPATTERN:
                self.check(av[-1], in_repeat)
            elif op in (sre_c.GROUPREF, sre_c.GROUPREF_EXISTS):
                raise QueryError("back-references are not allowed in a tag filter")
            elif op in (sre_c.ASSERT, sre_c.ASSERT_NOT):
                self.check(av[1], in_repeat)
            elif op is getattr(sre_c, "ATOMIC_GROUP", None):
                self.check(av, in_repeat)


def safe_regex(pattern: str) -> re.Pattern[str]:
    """Compile a tag filter's pattern, or `QueryError` if it is too long,
    invalid, or of a shape that can take super-polynomial (or high-degree
    polynomial) time on a short value."""
    if not isinstance(pattern, str) or len(pattern) > MAX_REGEX:
        raise QueryError(f"a tag filter's regex is at most {MAX_REGEX} characters")
    try:
        parsed = sre_p.parse(pattern)
        walk = _Repeats()
        walk.check(parsed, False)
        items = list(parsed)
        anchored = bool(items) and items[0][0] is sre_c.AT and items[0][1] in _STARTS
        most = MAX_REPEATS if anchored else MAX_REPEATS - 1
        if walk.variable > most:
            raise QueryError(
                f"at most {MAX_REPEATS} repeats of variable length (*, +, ?, {{m,n}}) "
                f"in a tag filter, {MAX_REPEATS - 1} unless it starts with ^"
            )
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise QueryError(f"bad regex {pattern!r}: {exc}") from None


def check_query(
    name: str,
    payload: bytes,
    nodes: Sequence[str],
    tags: Mapping[str, str],
    timeout: float,
    limits: QueryLimits,
) -> dict[str, re.Pattern[str]]:
    """Raise `QueryError` if a query with these fields may not be sent;
    the compiled tag filters otherwise."""
    if not isinstance(name, str) or not 1 <= len(name) <= QUERY_MAX_NAME:
        raise QueryError(f"a query name is 1-{QUERY_MAX_NAME} characters")
    if not isinstance(payload, bytes) or len(payload) > limits.max_payload:
        raise QueryError(f"a query payload is at most {limits.max_payload} bytes")
    if len(nodes) > QUERY_MAX_NODES or not all(isinstance(n, str) and n for n in nodes):
        raise QueryError(f"at most {QUERY_MAX_NODES} node names, each non-empty")
    if any(len(n) > 128 for n in nodes):
        raise QueryError("a node name is at most 128 characters")
    if len(tags) > QUERY_MAX_TAG_FILTERS:
        raise QueryError(f"at most {QUERY_MAX_TAG_FILTERS} tag filters")
    if not all(isinstance(k, str) and 0 < len(k) <= 128 for k in tags):
        raise QueryError("a tag filter's key is 1-128 characters")
    if not isinstance(timeout, int | float) or not 0 < timeout <= limits.max_timeout:
        raise QueryError(f"a query timeout is more than 0 and at most {limits.max_timeout} s")
    return {k: safe_regex(v) for k, v in tags.items()}


@dataclass(slots=True)
class _Open:
    """A query this node sent, collecting answers."""

    acks: set[str] = field(default_factory=set)
    responses: set[str] = field(default_factory=set)


class Queries:
    """The query layer of one node (sans-IO: time comes in as `now`)."""

    def __init__(self, me: NodeId, limits: QueryLimits, rng: random.Random) -> None:
        self.me = me
        self.limits = limits
        self.rng = rng
        self.open: dict[int, _Open] = {}
        # (origin name, id) -> None, oldest first: delivered once.
        self.seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        # (origin, id) -> deadline: may be answered once, before then.
        self.pending: OrderedDict[tuple[NodeId, int], float] = OrderedDict()
        self.counters: Counter[str] = Counter()

    def stats(self) -> dict[str, int]:
        return {"open": len(self.open), "pending": len(self.pending), **self.counters}

    # ------------------------------------------------------------ origin

    def make(
        self,
        name: str,
        payload: bytes,
        nodes: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
        timeout: float | None = None,
        ack: bool = False,
        internal: bool = False,
    ) -> Query:
        """A new query to broadcast, or `QueryError`. Names starting with
        `INTERNAL_PREFIX` are the overlay's own (`internal=True` only)."""
        tags = dict(tags or {})
        timeout = self.limits.default_timeout if timeout is None else timeout
        if not isinstance(name, str) or name.startswith(INTERNAL_PREFIX) != internal:
            raise QueryError(f"query names starting with {INTERNAL_PREFIX!r} are the overlay's own")
        check_query(name, payload, nodes, tags, timeout, self.limits)
        if len(self.open) >= self.limits.max_open:
            self.counters["refused_too_many_open"] += 1
            raise QueryError(f"{self.limits.max_open} queries already open")
        qid = self.rng.getrandbits(63)
        while qid in self.open:
            qid = self.rng.getrandbits(63)
        self.open[qid] = _Open()
        self.counters["sent"] += 1
        return Query(qid, name, payload, tuple(nodes), tags, max(1, round(timeout * 1000)), ack)

    def started(self, q: Query) -> list[Output]:
        """The timer that closes query `q` (the origin's)."""
        return [SetTimer(Timer(QTimer.DONE, q.id), q.timeout_ms / 1000)]

    def done(self, qid: int) -> list[Output]:
        entry = self.open.pop(qid, None)
        if entry is None:
            return []
        return [QueryDone(qid, len(entry.acks), len(entry.responses))]

    def answered(self, sender: NodeId, msg: QueryAck | QueryResponse) -> list[Output]:
        """An ack or response from `sender` (the frame's sender: the only
        one it may speak for)."""
        entry = self.open.get(msg.id)
        if entry is None:
            self.counters["refused_unknown_query"] += 1
            return []
        is_ack = isinstance(msg, QueryAck)
        seen = entry.acks if is_ack else entry.responses
        if sender.name in seen:
            self.counters["refused_duplicate_answer"] += 1
            return []
        if len(seen) >= self.limits.max_responses:
            self.counters["refused_too_many_answers"] += 1
            return []
        if not is_ack and len(msg.payload) > self.limits.max_payload:  # type: ignore[union-attr]
            self.counters["refused_payload"] += 1
            return []
        seen.add(sender.name)
        payload = b"" if is_ack else msg.payload  # type: ignore[union-attr]
        return [QueryAnswer(msg.id, sender, is_ack, payload)]

    # --------------------------------------------------------- responder

    def matches(self, q: Query, tags: Mapping[str, str]) -> bool:
        if q.nodes and self.me.name not in q.nodes:
            return False
        for key, pattern in q.tags.items():
            value = tags.get(key)
            if value is None:
                return False
            try:
                if safe_regex(pattern).search(value) is None:
                    return False
            except QueryError:
                self.counters["refused_regex"] += 1
                return False
        return True

    def received(
        self, origin: NodeId, q: Query, tags: Mapping[str, str], now: float
    ) -> list[Output]:
        """Query `q` from `origin` reached us (over the tree, or our own)."""
        key = (origin.name, q.id)
        if key in self.seen:
            self.counters["duplicate"] += 1
            return []
        self.seen[key] = None
        if len(self.seen) > self.limits.max_seen:
            self.seen.popitem(last=False)
        limits = self.limits
        if len(q.payload) > limits.max_payload or q.timeout_ms > limits.max_timeout * 1000:
            self.counters["refused_limits"] += 1
            return []
        if not self.matches(q, tags):
            self.counters["not_matched"] += 1
            return []
        self.counters["delivered"] += 1
        deadline = now + q.timeout_ms / 1000
        self._expire(now)
        self.pending[(origin, q.id)] = deadline
        if len(self.pending) > self.limits.max_pending:
            self.pending.popitem(last=False)
            self.counters["pending_dropped"] += 1
        outs: list[Output] = [QueryAsked(origin, q.id, q.name, q.payload, deadline)]
        if q.ack:
            outs += self._to_origin(origin, QueryAck(q.id))
        return outs

    def respond(self, origin: NodeId, qid: int, payload: bytes, now: float) -> list[Output]:
        """Our application's answer to a delivered query; `QueryError` if
        there is no such query awaiting one (unknown, answered, or past its
        deadline) or the payload is too large."""
        if len(payload) > self.limits.max_payload:
            raise QueryError(f"a response is at most {self.limits.max_payload} bytes")
        self._expire(now)
        deadline = self.pending.pop((origin, qid), None)
        if deadline is None or deadline <= now:
            raise QueryError("no such query awaiting an answer (unknown, answered or expired)")
        self.counters["responded"] += 1
        return self._to_origin(origin, QueryResponse(qid, payload))

    def _to_origin(self, origin: NodeId, msg: QueryAck | QueryResponse) -> list[Output]:
        if origin == self.me:
            return self.answered(self.me, msg)
        return [Send(origin, msg, reliable=False)]

    def _expire(self, now: float) -> None:
        pending = self.pending
        while pending:
            key = next(iter(pending))
            if pending[key] > now:
                break
            del pending[key]
