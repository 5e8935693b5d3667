"""What the agent tells its operator and its applications about their own
mistakes: no cluster key (and what that exposes), seeds that hang up on a
joiner whose key differs, floods of bad control requests (rate-limited),
publishing on the overlay's internal topics. Agents on loopback."""

from __future__ import annotations

import contextlib
import logging
import struct
from collections.abc import AsyncIterator, Iterator

import pytest
import trio

from daemon.agent import Agent, AgentSettings
from daemon.client import open_client
from daemon.control import ControlError, FrameReader
from daemon.security import decode_key, generate_key
from daemon.service import Service
from daemon.testing import Changes, bounded, fast_config
from overlay.plumtree import PublishError
from tests.helpers import TEST_MAX

WAIT = 10.0

NO_KEY = (
    "no cluster key: anyone who can reach this agent's port can join the cluster, "
    "read its broadcasts and member list, and inject messages and member states "
    "(set a key with --key-file; see docs/security.md)"
)
HUNG_UP = "seed hung up without answering: the cluster key probably differs"
NO_KEY_HERE = "this agent has no cluster key; the seed probably requires one"
OTHER_KEY = "the seed holds another key, or none"
RESERVED = "topic {!r} is reserved: topics starting with '$overlay.' are the overlay's own"


class Records(logging.Handler):
    """Collects the records of a logger; `wait_for(msg)` returns once one
    with that message has come (the agent logs from the trio thread)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._event = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._event.set()

    def matching(self, msg: str, level: int = logging.WARNING) -> list[logging.LogRecord]:
        return [r for r in self.records if r.getMessage() == msg and r.levelno == level]

    async def wait_for(self, msg: str, timeout: float = WAIT) -> logging.LogRecord:
        with trio.fail_after(timeout):
            while not self.matching(msg):
                self._event = trio.Event()
                await self._event.wait()
        return self.matching(msg)[0]


@contextlib.contextmanager
def records(name: str) -> Iterator[Records]:
    logger = logging.getLogger(name)
    handler = Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def fields(record: logging.LogRecord) -> dict[str, object]:
    value = getattr(record, "overlay_fields", {})
    assert isinstance(value, dict)
    return value


def key() -> bytes:
    return decode_key(generate_key())


def settings(name: str, **kw: object) -> AgentSettings:
    base: dict[str, object] = {
        "bind": ("127.0.0.1", 0),
        "name": name,
        "config": fast_config(),
    }
    base.update(kw)
    return AgentSettings(**base)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def agents(*all_settings: AgentSettings) -> AsyncIterator[list[Agent]]:
    started: list[Agent] = []
    async with trio.open_nursery() as nursery:
        for s in all_settings:
            agent = Agent(s)
            await nursery.start(agent.run)
            started.append(agent)
        yield started
        nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def served(agent_settings: AgentSettings) -> AsyncIterator[Service]:
    """An agent with its control API on a free port; stopped at the end."""
    service = Service(Agent(agent_settings), control="127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        yield service
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------- no key


@bounded(TEST_MAX)
async def test_an_agent_without_a_key_says_what_it_exposes() -> None:
    with records("overlay.agent") as log:
        async with agents(settings("open")) as (agent,):
            pass
    (record,) = log.matching(NO_KEY)
    assert fields(record) == {"port": agent.me.addr}


@bounded(TEST_MAX)
async def test_an_agent_with_a_key_does_not_warn() -> None:
    with records("overlay.agent") as log:
        async with agents(settings("closed", keys=(key(),))):
            pass
    assert log.matching(NO_KEY) == []
    assert [r for r in log.records if r.levelno >= logging.WARNING] == []


# ------------------------------------------------- a seed that hangs up


@bounded(TEST_MAX)
async def test_a_joiner_without_the_key_says_why_it_cannot_join() -> None:
    """The seed has a key, one joiner has the same, one has none, one has
    another: those without it say that the key probably differs, once
    however often they retry; the one with it joins and says nothing."""
    cluster_key = key()
    with records("overlay.agent") as log:
        async with agents(settings("seed", keys=(cluster_key,))) as (seed,):
            join = (seed.me.addr,)
            async with agents(
                settings("good", keys=(cluster_key,), join=join),
                settings("nokey", join=join),
                settings("wrong", keys=(key(),), join=join),
            ) as (good, nokey, wrong):
                await log.wait_for(HUNG_UP)
                changes = Changes([seed, good, nokey, wrong])
                # Seeds are retried: wait for a few attempts of each.
                await changes.until(
                    lambda: (
                        all(a.metrics.connections["dial"] >= 3 for a in (nokey, wrong))
                        and good.me in seed.node.views().active
                    ),
                    WAIT,
                )
    warnings = log.matching(HUNG_UP)
    assert sorted((fields(r)["seed"], fields(r)["likely"]) for r in warnings) == sorted(
        [(seed.me.addr, NO_KEY_HERE), (seed.me.addr, OTHER_KEY)]
    )


@bounded(TEST_MAX)
async def test_a_joiner_with_a_key_and_a_seed_without_one() -> None:
    with records("overlay.agent") as log:
        async with (
            agents(settings("plain")) as (seed,),
            agents(settings("keyed", keys=(key(),), join=(seed.me.addr,))),
        ):
            record = await log.wait_for(HUNG_UP)
    assert fields(record) == {"seed": seed.me.addr, "likely": OTHER_KEY, "suppressed": 0}


# ------------------------------------------------ bad control requests


@bounded(TEST_MAX)
async def test_bad_control_requests_are_counted_and_their_warnings_rate_limited() -> None:
    with records("overlay.control") as log:
        async with served(settings("ctl")) as service:
            agent = service.agent
            host, _, port = str(service.control_address).rpartition(":")
            for _ in range(20):
                stream = await trio.open_tcp_stream(host, int(port))
                async with stream:
                    await stream.send_all(struct.pack(">I", 5) + b"hello")
                    answer = await FrameReader(stream, 1 << 20).read()
                    assert answer is not None and answer["ok"] is False
            stats = agent.stats()
    assert stats["bad_frames"]["control:request"] == 20
    warnings = log.matching("bad control request")
    assert len(warnings) == 5


# ----------------------------------------------------- internal topics


@pytest.mark.parametrize("topic", ["$overlay.members", "$overlay.other"])
@bounded(TEST_MAX)
async def test_internal_topics_are_refused_to_applications(topic: str) -> None:
    async with served(settings("app")) as service:
        agent = service.agent
        with pytest.raises(PublishError) as embedded:
            await agent.publish(topic, b"forged")
        async with open_client(service.control_address) as client:
            with pytest.raises(ControlError) as remote:
                await client.publish(topic, b"forged")
        assert agent.metrics.published == 0
    assert str(embedded.value) == RESERVED.format(topic)
    assert str(remote.value) == RESERVED.format(topic)


def test_internal_topics_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from daemon.cli import main

    async def scenario() -> tuple[int, str, str]:
        async with served(settings("cli")) as service:
            address = str(service.control_address)

            def run() -> tuple[int, str, str]:
                code = main(["publish", "$overlay.members", "x", "--control", address])
                out, err = capsys.readouterr()
                return code, out, err

            with trio.fail_after(WAIT):
                return await trio.to_thread.run_sync(run)

    assert trio.run(scenario) == (
        1,
        "",
        "overlay publish: " + RESERVED.format("$overlay.members") + "\n",
    )
