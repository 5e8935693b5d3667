"""Many publishes on one control connection (issue 14): `publish_batch`,
requests pipelined without waiting for their answers, and the client's
`publisher()`. Every refused publish still gets its own clear error, and
costs nothing to the others."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import trio

from daemon.client import ControlClient, PublishRefused, Refused, Stream, open_client
from daemon.control import MAX_BATCH, ControlError, FrameReader, pack
from daemon.testing import bounded
from tests.helpers import TEST_MAX
from tests.test_control_api import _agent

WAIT = 10.0


async def _collect(events: Stream, n: int) -> list[bytes]:
    """The payloads of the next `n` deliveries."""
    got: list[bytes] = []
    with trio.fail_after(WAIT):
        async for ev in events:
            got.append(ev["payload"])
            if len(got) == n:
                break
    return got


async def _nothing_more(client: ControlClient, events: Stream) -> None:
    """A marker publish comes next: nothing else was delivered in between."""
    await client.publish("t", b"marker")
    assert await _collect(events, 1) == [b"marker"]


@bounded(TEST_MAX)
async def test_publish_batch_publishes_in_order_and_names_each_refusal() -> None:
    async with _agent("127.0.0.1:0") as service, open_client(service.control_address) as client:
        limit = service.agent.max_payload
        async with client.subscribe("t") as events:
            answer = await client.request(
                "publish_batch",
                messages=[
                    {"topic": "t", "payload": b"one"},
                    {"topic": "$overlay.members", "payload": b"x"},  # reserved
                    {"topic": "t", "payload": "two"},  # a str is its UTF-8
                    {"topic": "", "payload": b"x"},
                    {"topic": "t", "payload": b"x" * (limit + 1)},
                    "not a map",
                    {"topic": "t", "payload": 42},
                    {"topic": "t"},  # no payload: an empty one
                    {"topic": "t", "payload": b"three"},
                ],
            )
            assert answer["published"] == 4
            errors = {r["index"]: r["error"] for r in answer["refused"]}
            assert sorted(errors) == [1, 3, 4, 5, 6]
            assert "reserved" in errors[1]
            assert "topic" in errors[3]
            assert f"the limit is {limit}" in errors[4]
            assert "map" in errors[5]
            assert "payload must be bytes" in errors[6]
            assert await _collect(events, 4) == [b"one", b"two", b"", b"three"]
            await _nothing_more(client, events)
            # The client's own call: (index, reason) of each refused one.
            assert await client.publish_batch([("t", b"a"), ("", b"b")]) == [
                (1, "topic must be a non-empty string")
            ]
            assert await _collect(events, 1) == [b"a"]


@bounded(TEST_MAX)
async def test_a_malformed_batch_is_refused_whole_and_the_connection_goes_on() -> None:
    async with (
        _agent("127.0.0.1:0") as service,
        open_client(service.control_address) as client,
        client.subscribe("t") as events,
    ):
        with pytest.raises(ControlError, match="messages must be a list"):
            await client.request("publish_batch", messages={"topic": "t"})
        with pytest.raises(ControlError, match="messages must be a list"):
            await client.request("publish_batch")
        with pytest.raises(ControlError, match=f"at most {MAX_BATCH}"):
            await client.request("publish_batch", messages=[{}] * (MAX_BATCH + 1))
        await _nothing_more(client, events)


@bounded(TEST_MAX)
async def test_pipelined_requests_are_each_answered_and_a_bad_one_costs_only_itself() -> None:
    """Requests sent back to back, no answer awaited: each answer carries its
    request's seq, in order; the malformed ones are refused, the rest
    published."""
    async with _agent("127.0.0.1:0") as service, open_client(service.control_address) as client:
        host, port = str(service.control_address).rsplit(":", 1)
        async with client.subscribe("t") as events:
            stream = await trio.open_tcp_stream(host, int(port))
            requests: list[dict[str, Any]] = []
            for i in range(200):
                args: dict[str, Any] = {"topic": "t", "payload": struct.pack(">I", i)}
                if i % 50 == 7:
                    args = {"topic": "t", "payload": 7.5}  # not bytes
                requests.append({"seq": 1000 + i, "op": "publish", "args": args})
            requests.insert(100, {"seq": 5000, "op": "publish_batch", "args": {"messages": 3}})
            requests.insert(150, {"seq": "x", "op": "publish"})  # seq not an int
            await stream.send_all(b"".join(pack(r) for r in requests))
            reader = FrameReader(stream, 1 << 20)
            answers = []
            with trio.fail_after(WAIT):
                for _ in requests:
                    answer = await reader.read()
                    assert answer is not None
                    answers.append(answer)
            assert [a["seq"] for a in answers] == [
                r["seq"] if type(r["seq"]) is int else 0 for r in requests
            ]
            refused = {a["seq"]: a["error"] for a in answers if not a["ok"]}
            assert set(refused) == {1007, 1057, 1107, 1157, 5000, 0}
            assert "payload must be bytes" in refused[1007]
            assert "messages must be a list" in refused[5000]
            assert "seq: int" in refused[0]
            wanted = [struct.pack(">I", i) for i in range(200) if i % 50 != 7]
            assert await _collect(events, len(wanted)) == wanted
            await stream.aclose()
            await _nothing_more(client, events)


@bounded(TEST_MAX)
async def test_garbage_after_pipelined_publishes_loses_none_of_them() -> None:
    """A frame that is not msgpack ends the connection, but what came before
    it on that connection is answered and published."""
    async with _agent("127.0.0.1:0") as service, open_client(service.control_address) as client:
        host, port = str(service.control_address).rsplit(":", 1)
        async with client.subscribe("t") as events:
            stream = await trio.open_tcp_stream(host, int(port))
            good = [
                pack({"seq": i + 1, "op": "publish", "args": {"topic": "t", "payload": b"%d" % i}})
                for i in range(50)
            ]
            await stream.send_all(b"".join(good) + struct.pack(">I", 3) + b"\xc1\xc1\xc1")
            reader = FrameReader(stream, 1 << 20)
            answers = []
            with trio.fail_after(WAIT):
                while (answer := await reader.read()) is not None:
                    answers.append(answer)
            assert [a["seq"] for a in answers] == [*range(1, 51), 0]
            assert all(a["ok"] for a in answers[:-1])
            assert "not msgpack" in answers[-1]["error"]
            assert await _collect(events, 50) == [b"%d" % i for i in range(50)]
            await stream.aclose()


@bounded(TEST_MAX)
async def test_the_publisher_pipelines_and_reports_each_refusal_by_number() -> None:
    async with _agent("127.0.0.1:0") as service, open_client(service.control_address) as client:
        limit = service.agent.max_payload
        seen: list[Refused] = []
        async with client.subscribe("t") as events:
            with pytest.raises(PublishRefused) as caught:
                # Small batches and window: many requests in flight at once.
                async with client.publisher(
                    window=3, batch_bytes=2000, on_refused=seen.append
                ) as pub:
                    numbers = []
                    for i in range(500):
                        topic = "$overlay.x" if i in (10, 400) else "t"
                        numbers.append(await pub.publish(topic, struct.pack(">I", i)))
                    # One the client refuses itself: at once, nothing sent,
                    # and it takes no number.
                    with pytest.raises(ControlError, match=f"the limit is {limit}"):
                        await pub.publish("t", b"x" * (limit + 1))
                    assert await pub.publish("t", b"last") == 500
            assert numbers == list(range(500))
            assert [(r.number, r.topic) for r in caught.value.refused] == [
                (10, "$overlay.x"),
                (400, "$overlay.x"),
            ]
            assert "reserved" in caught.value.refused[0].error
            assert "#10 on '$overlay.x'" in str(caught.value)
            assert seen == caught.value.refused
            assert pub.published == 499
            wanted = [struct.pack(">I", i) for i in range(500) if i not in (10, 400)]
            assert await _collect(events, 499) == [*wanted, b"last"]
            await _nothing_more(client, events)


@bounded(TEST_MAX)
async def test_the_publisher_can_leave_refusals_to_the_caller() -> None:
    async with (
        _agent("127.0.0.1:0") as service,
        open_client(service.control_address) as client,
        client.subscribe("t") as events,
    ):
        async with client.publisher(raise_refused=False) as pub:
            await pub.publish("", b"no topic")
            await pub.publish("t", "text")
            await pub.flush()
            assert pub.published == 1
            assert [(r.number, r.error) for r in pub.refused] == [
                (0, "topic must be a non-empty string")
            ]
            await pub.publish("t", b"after the flush")
        assert await _collect(events, 2) == [b"text", b"after the flush"]


@bounded(TEST_MAX)
async def test_publishing_to_an_agent_that_left_is_refused_clearly() -> None:
    async with _agent("127.0.0.1:0") as service, open_client(service.control_address) as client:
        agent = service.agent
        agent._leaving = True  # as during a leave: every publish refused
        try:
            with pytest.raises(ControlError, match="leaving"):
                await client.publish_batch([("t", b"x")])
            with pytest.raises(PublishRefused, match="leaving"):
                async with client.publisher() as pub:
                    await pub.publish("t", b"x")
        finally:
            agent._leaving = False


@bounded(TEST_MAX)
async def test_a_subscription_with_a_count_stops_there_however_many_are_queued() -> None:
    """Deliveries go to the writer in bulk; a `count` still ends the stream
    after exactly that many, in order."""
    async with (
        _agent("127.0.0.1:0") as service,
        open_client(service.control_address) as client,
        client.subscribe("t", count=3) as events,
        client.subscribe("t") as every,
    ):
        assert await client.publish_batch([("t", b"%d" % i) for i in range(100)]) == []
        with trio.fail_after(WAIT):
            got = [e["payload"] async for e in events]
        assert got == [b"0", b"1", b"2"]
        assert await _collect(every, 100) == [b"%d" % i for i in range(100)]


@bounded(TEST_MAX)
async def test_publishes_wait_for_a_driver_behind_and_lose_nothing() -> None:
    """Local publishes fill at most half the driver's queue (the rest is the
    network's): with a queue of 8, a batch of 300 and a pipelined stream
    wait for the driver again and again, and all arrive, in order."""
    async with (
        _agent("127.0.0.1:0", input_queue=8) as service,
        open_client(service.control_address) as client,
        client.subscribe("t") as events,
    ):
        assert service.agent._publish_room == 4
        assert await client.publish_batch([("t", b"%d" % i) for i in range(300)]) == []
        async with client.publisher() as pub:
            for i in range(300, 600):
                await pub.publish("t", b"%d" % i)
        for i in range(600, 620):
            await service.agent.publish("t", b"%d" % i)
        assert await _collect(events, 620) == [b"%d" % i for i in range(620)]
