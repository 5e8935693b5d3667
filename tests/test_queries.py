"""Queries (overlay/queries.py): the layer alone, and through the node in
the simulator (the very objects the agent runs)."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay import codec
from overlay.ids import NodeId
from overlay.io import Output, Received, Send, SetTimer
from overlay.messages import Gossip, MsgId, Query, QueryAck, QueryResponse
from overlay.queries import (
    MAX_REGEX,
    QUERY_TOPIC,
    Queries,
    QueryAnswer,
    QueryAsked,
    QueryDone,
    QueryError,
    QueryLimits,
    safe_regex,
)
from sim.engine import Simulation

A = NodeId("a", "127.0.0.1", 1)
B = NodeId("b", "127.0.0.1", 2)
C = NodeId("c", "127.0.0.1", 3)


def layer(me: NodeId = A, **limits: float) -> Queries:
    return Queries(me, QueryLimits(**limits), random.Random(1))  # type: ignore[arg-type]


# ------------------------------------------------------------- the layer


def test_answers_are_kept_once_per_responder_and_only_while_open() -> None:
    q = layer()
    query = q.make("ping", b"x", ack=True)
    assert q.answered(B, QueryAck(query.id)) == [QueryAnswer(query.id, B, True)]
    assert q.answered(B, QueryAck(query.id)) == []  # once per responder
    assert q.answered(B, QueryResponse(query.id, b"pong")) == [
        QueryAnswer(query.id, B, False, b"pong")
    ]
    assert q.answered(B, QueryResponse(query.id, b"again")) == []
    assert q.answered(C, QueryResponse(query.id + 1, b"?")) == []  # unknown id
    assert q.done(query.id) == [QueryDone(query.id, 1, 1)]
    assert q.answered(C, QueryResponse(query.id, b"late")) == []
    assert q.counters["refused_duplicate_answer"] == 2
    assert q.counters["refused_unknown_query"] == 2


def test_responses_per_query_are_bounded() -> None:
    q = layer(max_responses=3)
    query = q.make("ping", b"")
    for i in range(10):
        q.answered(NodeId(f"n{i}", "127.0.0.1", 100 + i), QueryResponse(query.id, b""))
    assert q.counters["refused_too_many_answers"] == 7
    assert q.done(query.id) == [QueryDone(query.id, 0, 3)]


def test_open_queries_are_bounded() -> None:
    q = layer(max_open=2)
    q.make("a", b"")
    q.make("b", b"")
    with pytest.raises(QueryError, match="already open"):
        q.make("c", b"")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"name": "$overlay.keys"}, "overlay's own"),
        ({"payload": b"x" * 1025}, "payload"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": 61}, "timeout"),
        ({"nodes": ("",)}, "node"),
        ({"tags": {"role": "(a+)+$"}}, "nested"),
        ({"tags": {"role": "(a|aa)*b"}}, "alternation"),
        ({"tags": {"role": r"(a)\1"}}, "back-references"),
        ({"tags": {"role": "^a*b*c*"}}, "variable length"),
        ({"tags": {"role": "a*b*"}}, "unless it starts with"),
        ({"tags": {"role": ".{0,255}" * 3 + "x"}}, "variable length"),
        ({"tags": {"role": "(aa|b)(aa|b)(aa|b)(aa|b)(aa|b)"}}, "alternatives"),
        ({"tags": {"role": "x" * (MAX_REGEX + 1)}}, "at most"),
        ({"tags": {"role": "("}}, "bad regex"),
        ({"tags": {f"k{i}": "." for i in range(9)}}, "tag filters"),
    ],
)
def test_bad_queries_are_refused_before_anything_is_sent(
    kwargs: dict[str, object], match: str
) -> None:
    q = layer()
    args: dict[str, object] = {"name": "ping", "payload": b""}
    args.update(kwargs)
    with pytest.raises(QueryError, match=match):
        q.make(**args)  # type: ignore[arg-type]
    assert q.open == {}


def test_a_member_answers_only_if_it_matches_and_only_once() -> None:
    q = layer(B)
    tags = {"role": "web", "dc": "eu-1"}
    match = Query(7, "ping", b"", (), {"role": "^w", "dc": "eu"}, 1000, True)
    outs = q.received(A, match, tags, 0.0)
    assert outs[0] == QueryAsked(A, 7, "ping", b"", 1.0)
    assert outs[1] == Send(A, QueryAck(7), reliable=False)
    assert q.received(A, match, tags, 0.1) == []  # the same query again
    for other in (
        Query(8, "ping", b"", ("c",), {}, 1000, False),  # another node
        Query(9, "ping", b"", (), {"role": "db"}, 1000, False),  # tag differs
        Query(10, "ping", b"", (), {"zone": "."}, 1000, False),  # no such tag
        Query(11, "ping", b"", (), {"role": "(w+)+$"}, 1000, False),  # hostile regex
    ):
        assert q.received(A, other, tags, 0.0) == []
    assert q.received(A, Query(12, "p", b"", ("b",), {}, 1000, False), tags, 0.0)


def test_a_response_goes_once_to_the_origin_and_not_after_the_deadline() -> None:
    q = layer(B)
    q.received(A, Query(7, "ping", b"", (), {}, 1000, False), {}, 0.0)
    q.received(A, Query(8, "ping", b"", (), {}, 1000, False), {}, 0.0)
    assert q.respond(A, 7, b"hi", 0.5) == [Send(A, QueryResponse(7, b"hi"), reliable=False)]
    with pytest.raises(QueryError, match="no such query"):
        q.respond(A, 7, b"again", 0.5)
    with pytest.raises(QueryError, match="no such query"):
        q.respond(A, 8, b"late", 1.5)
    with pytest.raises(QueryError, match="no such query"):
        q.respond(C, 7, b"wrong origin", 0.5)


def test_the_tables_of_a_responder_are_bounded() -> None:
    q = layer(B, max_seen=50, max_pending=10)
    for i in range(200):
        q.received(A, Query(i, "p", b"", (), {}, 60_000, False), {}, 0.0)
    assert len(q.seen) == 50
    assert len(q.pending) == 10


def test_a_hostile_regex_is_refused_quickly() -> None:
    start = time.perf_counter()
    for pattern in (
        "(a+)+$",
        "(a*)*b",
        "(a|a)*c",
        "(?:a{1,300})+",
        "a*a*a*a*a*",
        ".{0,255}" * 15 + "x",
        "a?" * 20 + "a" * 20,
        "(a|aa)" * 20 + "b",
    ):
        with pytest.raises(QueryError):
            safe_regex(pattern)
    assert time.perf_counter() - start < 0.5


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=MAX_REGEX), st.text(max_size=256))
def test_any_pattern_is_refused_or_matches_quickly(pattern: str, value: str) -> None:
    try:
        compiled = safe_regex(pattern)
    except QueryError:
        return
    start = time.perf_counter()
    compiled.search(value * 2)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    "pattern",
    [".*.*x", "^.*.*.*x", "(a|a)(a|a)(a|a)(a|a)(a|a).*x", "^" + ".{0,255}" * 3 + "x"],
)
def test_the_worst_allowed_shapes_are_refused_or_fast(pattern: str) -> None:
    value = "a" * 512  # the tags' limit
    try:
        compiled = safe_regex(pattern)
    except QueryError:
        return
    start = time.perf_counter()
    compiled.search(value)
    assert time.perf_counter() - start < 0.1


def test_ordinary_filters_are_allowed() -> None:
    for pattern, value in (
        ("^web", "web-1"),
        ("db.*primary", "db-eu-primary"),
        (r"^web-\d+-[a-z]+$", "web-12-eu"),
        ("^(eu|us)-(west|east)-[0-9]$", "us-east-1"),
    ):
        assert safe_regex(pattern).search(value), pattern


@settings(max_examples=100, deadline=None)
@given(
    st.builds(
        Query,
        st.integers(0, 2**63 - 1),
        st.text(min_size=1, max_size=128),
        st.binary(max_size=4096),
        st.lists(st.text(max_size=20), max_size=64).map(tuple),
        st.dictionaries(st.text(max_size=20), st.text(max_size=128), max_size=8),
        st.integers(1, 600_000),
        st.booleans(),
    )
)
def test_queries_round_trip_the_codec(msg: Query) -> None:
    assert codec.decode(codec.encode(A, msg)) == (A, msg)


# ------------------------------------------------- through the simulator


def cluster(n: int) -> tuple[Simulation, list[NodeId], list[tuple[NodeId, Output]]]:
    sim = Simulation(seed=5)
    ids = [sim.add_node(f"n{i}") for i in range(n)]
    for i, nid in enumerate(ids[1:]):
        sim.join(nid, [ids[0]], at=0.05 * i)
    seen: list[tuple[NodeId, Output]] = []
    sim.observers.append(lambda _t, who, out: seen.append((who, out)))
    sim.run_until(8.0)
    return sim, ids, seen


def ask(sim: Simulation, origin: NodeId, **kw: object) -> int:
    node = sim.node(origin)
    qid, outs = node.query("ping", b"?", sim.now, **kw)  # type: ignore[arg-type]
    addr = (origin.host, origin.port)
    sim._execute(addr, outs)  # the simulator's own executor
    return qid


def test_a_query_reaches_every_member_and_each_answers_once() -> None:
    sim, ids, seen = cluster(12)
    seen.clear()
    # Every member that is asked answers at once.
    answered: set[str] = set()

    def answer(_t: float, who: NodeId, out: Output) -> None:
        if isinstance(out, QueryAsked) and who.name not in answered:
            answered.add(who.name)
            outs = sim.node(who).respond(out.origin, out.id, who.name.encode(), sim.now)
            sim.call_at(sim.now, lambda: sim._execute((who.host, who.port), outs))

    sim.observers.append(answer)
    qid = ask(sim, ids[3], ack=True, timeout=2.0)
    sim.run_for(3.0)
    answers = [o for who, o in seen if isinstance(o, QueryAnswer) and who == ids[3]]
    responders = sorted(o.responder.name for o in answers if not o.ack)
    ackers = sorted(o.responder.name for o in answers if o.ack)
    others = sorted(i.name for i in ids if i != ids[3])
    # Every member answers once, the origin included (taken locally).
    assert responders == sorted(i.name for i in ids)
    assert set(others) <= set(ackers)
    done = [o for who, o in seen if isinstance(o, QueryDone) and o.id == qid]
    assert len(done) == 1 and done[0].responses >= len(others)


def test_filters_pick_the_members_that_answer() -> None:
    sim, ids, seen = cluster(8)
    seen.clear()
    qid = ask(sim, ids[0], nodes=("n2", "n5"), ack=True, timeout=1.0)
    sim.run_for(2.0)
    asked = sorted(who.name for who, o in seen if isinstance(o, QueryAsked))
    assert asked == ["n2", "n5"]
    timers = [o for w, o in seen if isinstance(o, SetTimer) and o.timer.key == qid]
    assert len(timers) == 1 and timers[0].delay == 1.0
    acks = sorted(o.responder.name for w, o in seen if isinstance(o, QueryAnswer) and o.ack)
    assert acks == ["n2", "n5"]


def test_an_answer_from_a_stranger_for_another_query_is_refused() -> None:
    sim, ids, _seen = cluster(3)
    node = sim.node(ids[0])
    qid, _outs = node.query("ping", b"", sim.now, timeout=1.0)
    stranger = NodeId("evil", "127.0.0.9", 9)
    assert node.handle(Received(stranger, QueryResponse(qid + 1, b"x"), True), sim.now) == []
    first = node.handle(Received(stranger, QueryResponse(qid, b"x"), True), sim.now)
    assert first == [QueryAnswer(qid, stranger, False, b"x")]
    assert node.handle(Received(stranger, QueryResponse(qid, b"y"), True), sim.now) == []


def test_a_query_from_a_stranger_or_under_another_name_is_not_answered() -> None:
    """Answers go to the origin's address: a query whose origin is no live
    member (it would aim the cluster's answers at a stranger), or whose
    inner sender is not the broadcast's origin, is relayed but not
    delivered."""
    sim, ids, _seen = cluster(3)
    node = sim.node(ids[1])
    neighbour = node.views().active[0]
    evil = NodeId("evil", "127.0.0.9", 9)
    member = ids[2]
    cases = [
        (evil, "evil", "query_origin_not_member"),  # not a member
        (member, "evil", "query_forged"),  # another's frame under our name
    ]
    for seq, (inner, origin, counter) in enumerate(cases, start=1):
        frame = codec.encode(inner, Query(seq, "ping", b"", (), {}, 1000, True))
        gossip = Gossip(MsgId(origin, 1, seq), QUERY_TOPIC, 2, 0.0, frame)
        outs = node.handle(Received(neighbour, gossip), sim.now)
        assert not [o for o in outs if isinstance(o, QueryAsked)]
        assert not [o for o in outs if isinstance(o, Send) and isinstance(o.msg, QueryAck)]
        assert node.refused[counter] == 1
    # The same from a live member is answered.
    frame = codec.encode(member, Query(9, "ping", b"", (), {}, 1000, True))
    gossip = Gossip(MsgId(member.name, 1, 9), QUERY_TOPIC, 2, 0.0, frame)
    outs = node.handle(Received(neighbour, gossip), sim.now)
    assert [o for o in outs if isinstance(o, QueryAsked)]
    assert Send(member, QueryAck(9), reliable=False) in outs
