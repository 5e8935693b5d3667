"""A name is one member's (issue 12, item 9): a second agent started under a
live member's name was accepted and listed twice. Now the newcomer stops
with a clear error and the holder's side logs the claim; an agent's own id
is always an IP literal (peers refuse names on the wire)."""

from __future__ import annotations

import trio

from daemon.agent import Agent, AgentSettings
from daemon.testing import Changes, bounded, fast_config
from tests.test_daemon_agent import _fields, captured

WAIT = 30.0


@bounded(60)
async def test_a_second_agent_under_a_live_members_name_is_refused() -> None:
    cfg = fast_config()
    with captured() as records:
        async with trio.open_nursery() as nursery:
            first = Agent(AgentSettings(bind=("127.0.0.1", 0), name="web-1", config=cfg))
            await nursery.start(first.run)
            other = Agent(
                AgentSettings(bind=("127.0.0.1", 0), name="db-1", config=cfg, join=(first.me.addr,))
            )
            await nursery.start(other.run)
            await Changes([first, other]).until(lambda: len(first.members()) == 2, WAIT)
            twin = Agent(
                AgentSettings(
                    bind=("127.0.0.1", 0), name="web-1", config=cfg, join=(first.me.addr,)
                )
            )
            await nursery.start(twin.run)
            with trio.fail_after(WAIT):
                await twin.wait_stopped()
            assert twin.failure is not None
            assert "'web-1' is held by a live member at " + first.me.addr in twin.failure
            # Listed once, at its own address, everywhere.
            for agent in (first, other):
                named = [m for m in agent.members() if m.name == "web-1"]
                assert [m.addr for m in named] == [first.me.addr]
            assert first.running and other.running
            nursery.cancel_scope.cancel()
    refused = [
        r for r in records if r.getMessage() == "refused a node that claims a live member's name"
    ]
    assert refused and _fields(refused[0])["claimant"] == twin.me.addr


@bounded(30)
async def test_an_advertised_name_is_resolved_to_an_ip_literal_at_start() -> None:
    agent = Agent(AgentSettings(bind=("127.0.0.1", 0), advertise=("localhost", 0), name="a"))
    await agent.bind()
    try:
        assert agent.me.host in ("127.0.0.1", "::1")
    finally:
        await agent._transport.close_sockets()
