"""The CLI client against something that is not an agent's control API, an
agent that does not answer, and payloads over the limits: one clear line and
an exit status, never a hang or "Broken pipe". The CLI runs in a worker
thread with its own trio loop, as it would in its own process; the other
end is a plain TCP listener on loopback."""

from __future__ import annotations

import contextlib
import io
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import msgpack
import pytest
import trio

from daemon.agent import Agent, AgentSettings
from daemon.client import open_client
from daemon.control import MAX_REQUEST, ControlError, FrameReader, pack
from daemon.service import Service
from daemon.testing import bounded, fast_config
from tests.helpers import TEST_MAX
from tests.test_cli import run_cli

WAIT = 10.0

Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with trio.fail_after(WAIT):
        return await trio.to_thread.run_sync(run_cli, args, capsys)


@contextlib.asynccontextmanager
async def listener(handler: Handler) -> AsyncIterator[str]:
    """A TCP listener on loopback that runs `handler` per connection; its address."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handler, listeners)
        yield f"127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def silent(stream: trio.SocketStream) -> None:
    async with stream:
        await trio.sleep_forever()


async def junk(stream: trio.SocketStream) -> None:
    async with stream:
        await stream.send_all(b"SSH-2.0-OpenSSH_9.6\r\n")
        await trio.sleep_forever()


async def hangs_up(stream: trio.SocketStream) -> None:
    await stream.aclose()


async def handshake_then_silence(stream: trio.SocketStream) -> None:
    """Answers the handshake like an agent (without `max_payload`, as an
    older agent would), then reads requests and answers none."""
    async with stream:
        reader = FrameReader(stream, 64 * 1024 * 1024)
        first = await reader.read()
        assert first is not None
        result = {"version": 1, "name": "mute", "addr": "127.0.0.1:1"}
        await stream.send_all(pack({"seq": first["seq"], "ok": True, "result": result}))
        while await stream.receive_some(65536):
            pass


NOT_AN_API = [
    (silent, "no answer to the handshake within 0.5 s"),
    (junk, "it answered with something else"),
    (hangs_up, "it closed the connection"),
]


@pytest.mark.parametrize(("handler", "why"), NOT_AN_API)
@bounded(TEST_MAX)
async def test_not_an_overlay_control_api(
    handler: Handler,
    why: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OVERLAY_TIMEOUT", "0.5")
    async with listener(handler) as addr:
        code, out, err = await cli(["members", "--control", addr], capsys)
    assert (code, out, err) == (
        2,
        "",
        f"overlay members: {addr} is not an overlay control API: {why}\n",
    )


@bounded(TEST_MAX)
async def test_a_request_without_an_answer_times_out(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERLAY_TIMEOUT", "0.5")
    async with listener(handshake_then_silence) as addr:
        code, out, err = await cli(["stats", "--control", addr], capsys)
    assert (code, out, err) == (
        1,
        "",
        "overlay stats: the agent did not answer 'stats' within 0.5 s "
        "(OVERLAY_TIMEOUT sets how long to wait)\n",
    )


def test_a_bad_timeout_in_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for bad in ("soon", "0", "-1", "nan"):
        monkeypatch.setenv("OVERLAY_TIMEOUT", bad)
        code, out, err = run_cli(["members", "--control", "127.0.0.1:1"], capsys)
        assert (code, out, err) == (
            2,
            "",
            f"overlay members: OVERLAY_TIMEOUT must be a positive number of seconds, got {bad!r}\n",
        )


@bounded(TEST_MAX)
async def test_a_request_over_the_control_api_limit_is_refused_by_the_client() -> None:
    """An agent that does not say its payload limit: the client still
    refuses a request the control API would refuse, before sending it."""
    payload = b"x" * (2 * MAX_REQUEST)
    async with listener(handshake_then_silence) as addr, open_client(addr) as client:
        with pytest.raises(ControlError) as caught:
            await client.publish("t", payload)
    request = {"seq": 2, "op": "publish", "args": {"topic": "t", "payload": payload}}
    size = len(msgpack.packb(request, use_bin_type=True))
    assert str(caught.value) == (
        f"request of {size} bytes is over the control API's limit of {MAX_REQUEST} bytes"
    )


# ------------------------------------------------------ against an agent


@contextlib.asynccontextmanager
async def running_agent() -> AsyncIterator[Service]:
    agent = Agent(AgentSettings(bind=("127.0.0.1", 0), name="lim", config=fast_config()))
    service = Service(agent, control="127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        yield service
        nursery.cancel_scope.cancel()


@bounded(TEST_MAX)
async def test_a_10_mb_publish_says_the_limit(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 10 * 1024 * 1024
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x" * size)))
    async with running_agent() as service:
        code, out, err = await cli(
            ["publish", "t", "--control", str(service.control_address)], capsys
        )
        assert service.agent.metrics.published == 0
    assert (code, out, err) == (
        1,
        "",
        f"overlay publish: payload is {size} bytes, the limit is 61440 (plumtree.max_payload)\n",
    )


async def raw_call(addr: str, data: bytes) -> dict[str, object]:
    """Send `data` (whatever it holds) while reading the agent's first answer."""
    host, _, port = addr.rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    answer: dict[str, object] = {}
    async with stream:

        async def send() -> None:
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            msg = await FrameReader(stream, 64 * 1024 * 1024).read()
            assert msg is not None
            answer = msg
            nursery.cancel_scope.cancel()
    return answer


@bounded(TEST_MAX)
async def test_the_agent_says_its_request_limit() -> None:
    """A client that sends a request over the limit reads why it was
    refused, not a reset."""
    size = 2 * 1000 * 1000
    async with running_agent() as service:
        answer = await raw_call(
            str(service.control_address), struct.pack(">I", size) + b"\0" * size
        )
    assert answer == {
        "seq": 0,
        "ok": False,
        "error": f"request of {size} bytes is over the control API's limit of {MAX_REQUEST} bytes",
    }


@bounded(TEST_MAX)
async def test_the_agent_says_its_payload_limit() -> None:
    body = msgpack.packb(
        {"seq": 7, "op": "publish", "args": {"topic": "t", "payload": b"x" * 100_000}}
    )
    async with running_agent() as service:
        answer = await raw_call(str(service.control_address), struct.pack(">I", len(body)) + body)
        assert service.agent.metrics.published == 0
    assert answer == {"seq": 7, "ok": False, "error": "payload is 100000 bytes, the limit is 61440"}
