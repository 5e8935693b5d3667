"""The control API over its socket: the client, the framing, the ops, and
what the server does with bad requests."""

from __future__ import annotations

import struct
from pathlib import Path

import msgpack
import pytest
import trio

from daemon.agent import Agent, AgentSettings
from daemon.client import ControlUnreachable, open_client
from daemon.control import ControlError, FrameReader, pack, parse_control
from daemon.service import Service
from daemon.testing import Changes, bounded, fast_config
from tests.helpers import TEST_MAX

WAIT = 10.0
# No test may take longer than this, whatever it awaits.


def _agent(control: str, **kw: object) -> Service:
    """An agent with its control API at `control`."""
    agent = Agent(
        AgentSettings(
            bind=("127.0.0.1", 0),
            name="solo",
            config=fast_config(),
            seed=1,
            **kw,  # type: ignore[arg-type]
        )
    )
    return Service(agent, control=control)


def test_parse_control() -> None:
    assert parse_control("127.0.0.1:7373") == ("tcp", ("127.0.0.1", 7373))
    assert parse_control("unix:/run/o.sock") == ("unix", "/run/o.sock")
    assert parse_control("/tmp/o.sock") == ("unix", "/tmp/o.sock")
    with pytest.raises(ValueError):
        parse_control("nohost")


@bounded(TEST_MAX)
async def test_handshake_publish_subscribe_over_tcp() -> None:
    async with _agent("127.0.0.1:0") as service, open_client(service.control_address) as client:
        agent = service.agent
        hello = await client.handshake()
        assert hello == {
            "version": 1,
            "name": "solo",
            "addr": agent.me.addr,
            "max_payload": agent.settings.config.plumtree.max_payload,
        }
        assert client.agent == hello  # open_client's own handshake
        async with client.subscribe("news", count=2) as events:
            await client.publish("news", b"one")
            await client.publish("other", b"not for us")
            await client.publish("news", "two")  # type: ignore[arg-type]
            with trio.fail_after(WAIT):
                got = [e async for e in events]
        assert [(e["topic"], e["payload"], e["origin"], e["hops"]) for e in got] == [
            ("news", b"one", "solo", 0),
            ("news", b"two", "solo", 0),
        ]
        assert got[1]["seq"] == got[0]["seq"] + 2  # "other" took one seq
        assert all(isinstance(e["time"], float) and e["time"] > 1.6e9 for e in got)


@bounded(TEST_MAX)
async def test_unix_socket_and_unsubscribe(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    async with _agent(f"unix:{path}") as service:
        agent = service.agent
        assert service.control_address == f"unix:{path}"
        assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
        async with open_client(str(path)) as client:
            async with client.subscribe("t") as events:
                await client.publish("t", b"x")
                with trio.fail_after(WAIT):
                    first = await events.__anext__()
                assert first["payload"] == b"x"
                await client.request("unsubscribe", stream=events.seq)
                with trio.fail_after(WAIT):
                    rest = [e async for e in events]
                assert rest == []
            assert sum(len(s) for s in agent._subs.values()) == 0
    assert not path.exists()  # removed when the agent stops


@bounded(TEST_MAX)
async def test_errors_are_answers_not_disconnects() -> None:
    async with _agent("127.0.0.1:0") as service, open_client(service.control_address) as client:
        agent = service.agent
        with pytest.raises(ControlError, match="unknown op"):
            await client.request("frobnicate")
        with pytest.raises(ControlError, match="topic"):
            await client.request("publish", topic="", payload=b"x")
        with pytest.raises(ControlError, match="payload is"):
            await client.publish("t", b"x" * (agent.settings.config.plumtree.max_payload + 1))
        with pytest.raises(ControlError, match="count"):
            async with client.subscribe("t", count=0):
                pass
        with pytest.raises(ControlError, match="no stream"):
            await client.request("unsubscribe", stream=999)
        with pytest.raises(ControlError, match="version"):
            await client.request("handshake", version=99)
        with pytest.raises(ControlError, match="seeds"):
            await client.request("join", seeds="not a list")
        # Still usable after all that.
        assert (await client.handshake())["name"] == "solo"


@bounded(TEST_MAX)
async def test_garbage_from_a_client_gets_an_error_and_a_close() -> None:
    async with _agent("127.0.0.1:0") as service:
        agent = service.agent
        host, port = str(service.control_address).rsplit(":", 1)
        for junk in (
            struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1",  # not msgpack
            struct.pack(">I", 2**31),  # oversized length
            pack([1, 2, 3]),  # not a map
        ):
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(junk)
            data = b""
            with trio.fail_after(WAIT):
                while chunk := await stream.receive_some(4096):
                    data += chunk
            answer = msgpack.unpackb(data[4:])
            assert answer["ok"] is False and answer["seq"] == 0
            await stream.aclose()
        # A malformed request in a good frame: answered, connection kept.
        stream = await trio.open_tcp_stream(host, int(port))
        reader = FrameReader(stream, 1 << 20)
        await stream.send_all(pack({"seq": 5, "op": 5}))
        with trio.fail_after(WAIT):
            answer = await reader.read()
        assert answer is not None and answer["seq"] == 5 and answer["ok"] is False
        await stream.send_all(pack({"seq": 6, "op": "handshake"}))
        with trio.fail_after(WAIT):
            answer = await reader.read()
        assert answer is not None and answer["seq"] == 6 and answer["ok"] is True
        await stream.aclose()
        assert agent.running


@bounded(TEST_MAX)
async def test_unreachable_control_socket() -> None:
    with pytest.raises(ControlUnreachable, match="no agent"):
        async with open_client("127.0.0.1:1"):
            pass
    with pytest.raises(ControlUnreachable):
        async with open_client("unix:/nonexistent/overlay.sock"):
            pass


@bounded(TEST_MAX)
async def test_leave_answers_then_the_agent_stops() -> None:
    """The client that asked for the leave hears that it is done: after
    the agent has stopped, before its control API does."""
    service = _agent("127.0.0.1:0", leave_grace=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        async with open_client(service.control_address) as client:
            with trio.fail_after(WAIT):
                await client.leave()
            assert not service.agent.running
            with trio.fail_after(WAIT):
                await service.agent.wait_stopped()
            with pytest.raises(ControlError):
                await client.members()
    assert not service.agent.running


@bounded(TEST_MAX)
async def test_every_client_that_asked_for_the_leave_hears_it() -> None:
    service = _agent("127.0.0.1:0", leave_grace=0.05)
    answers: list[object] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)

        async def ask() -> None:
            async with open_client(service.control_address) as client:
                answers.append(await client.request("leave"))

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as clients:
                for _ in range(3):
                    clients.start_soon(ask)
    assert answers == [{"left": True}] * 3
    assert not service.agent.running


@bounded(TEST_MAX)
async def test_monitor_streams_member_changes() -> None:
    async with _agent("127.0.0.1:0", tags={"role": "web"}) as service:
        changes = Changes([service.agent])
        async with open_client(service.control_address) as client, client.monitor() as events:
            tags = await client.tags(set={"zone": "a"})
            assert tags == {"role": "web", "zone": "a"}
            with trio.fail_after(WAIT):
                ev = await events.__anext__()
            assert ev["name"] == "solo" and ev["status"] == "alive"
            assert ev["tags"] == {"role": "web", "zone": "a"}
            assert (await client.tags(delete=["role"])) == {"zone": "a"}
            assert (await client.tags()) == {"zone": "a"}
        await changes.until(lambda: True, WAIT)


@bounded(TEST_MAX)
async def test_a_client_that_resets_mid_stream_does_not_hurt_the_agent() -> None:
    import socket

    async with _agent("127.0.0.1:0") as service:
        agent = service.agent
        host, port = str(service.control_address).rsplit(":", 1)
        for _ in range(3):
            raw = await trio.open_tcp_stream(host, int(port))
            await raw.send_all(pack({"seq": 1, "op": "subscribe", "args": {"topic": "t"}}))
            reader = FrameReader(raw, 1 << 20)
            with trio.fail_after(WAIT):
                assert (await reader.read()) == {"seq": 1, "ok": True, "result": {}}
            await agent.publish("t", b"x" * 1000)
            # Close with a reset (SO_LINGER 0) while events are in flight.
            raw.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await raw.aclose()
        async with open_client(service.control_address) as client:
            assert (await client.handshake())["name"] == "solo"
        assert agent.running
