"""Queries and cluster-wide keys through real agents on loopback: the
embedded API, the control API, and the `overlay query` / `overlay keys`
CLI (a real process against the agents' control API)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from daemon.agent import Agent
from daemon.client import open_client
from daemon.control import ControlError, ControlServer
from daemon.queries import QueryRequest
from daemon.security import generate_key, load_key_file
from daemon.testing import Changes, all_alive, bounded, local_cluster
from tests.helpers import TEST_MAX

WAIT = 15.0


@asynccontextmanager
async def cluster(n: int, **settings: Any) -> AsyncIterator[list[Agent]]:
    async with local_cluster(n, **settings) as agents:
        names = [a.me.name for a in agents]
        await Changes(agents).until(lambda: all_alive(agents, names), WAIT)
        yield agents


@asynccontextmanager
async def control(agent: Agent) -> AsyncIterator[str]:
    server = await ControlServer.open("127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, agent)
        try:
            yield server.address
        finally:
            nursery.cancel_scope.cancel()


async def cli(address: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = await trio.run_process(
        [sys.executable, "-m", "daemon.cli", *args, "--control", address],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def echo(agent: Agent) -> None:
    async def handler(req: QueryRequest) -> bytes:
        return agent.me.name.encode() + b":" + req.payload

    agent.on_query("ping", handler)


@bounded(TEST_MAX)
async def test_every_member_acks_and_answers_once_embedded() -> None:
    async with cluster(4) as agents:
        for a in agents:
            echo(a)
        result = await agents[0].query("ping", b"x", timeout=1.0, ack=True)
        names = sorted(a.me.name for a in agents)
        assert sorted(result.acks) == names
        assert result.responses == {n: n.encode() + b":x" for n in names}
        assert all(0 <= a.elapsed < 1.0 for a in result.answers)
        # The largest payloads go both ways (a response is one datagram).
        big = await agents[1].query("ping", b"y" * 1000, timeout=1.0)
        assert big.responses == {n: n.encode() + b":" + b"y" * 1000 for n in names}


@bounded(TEST_MAX)
async def test_node_and_tag_filters_pick_who_answers() -> None:
    async with cluster(4) as agents:
        for a in agents:
            echo(a)
        await agents[2].set_tags({"role": "db-primary"})
        await agents[3].set_tags({"role": "web"})
        by_tag = await agents[0].query("ping", b"", timeout=0.8, tags={"role": "^db"})
        assert set(by_tag.responses) == {"n2"}
        by_name = await agents[1].query("ping", b"", timeout=0.8, nodes=["n0", "n3"])
        assert set(by_name.responses) == {"n0", "n3"}
        # A member without a handler acks but does not answer.
        agents[3].on_query("ping", None)
        quiet = await agents[0].query("ping", b"", timeout=0.8, nodes=["n3"])
        assert quiet.acks == ["n3"] and quiet.responses == {}


@bounded(TEST_MAX)
async def test_a_handler_that_fails_or_hangs_does_not_hurt_the_agent() -> None:
    async with cluster(3) as agents:

        async def broken(req: QueryRequest) -> bytes:
            raise RuntimeError("boom")

        async def slow(req: QueryRequest) -> bytes:
            await trio.sleep(60)
            return b"never"

        agents[1].on_query("ping", broken)
        agents[2].on_query("ping", slow)
        echo(agents[0])
        result = await agents[0].query("ping", b"", timeout=0.6)
        assert set(result.responses) == {"n0"} and len(result.acks) == 3
        assert agents[1].queries.counters["handler_errors"] == 1
        assert agents[1].stats()["queries"]["handler_errors"] == 1
        await trio.sleep(0.1)  # the slow handler was cut at the deadline
        assert agents[2].queries._running == 0
        assert all(a.running for a in agents)


@bounded(TEST_MAX)
async def test_control_api_query_and_answer_streams() -> None:
    async with (
        cluster(3) as agents,
        control(agents[0]) as addr0,
        control(agents[2]) as addr2,
        open_client(addr0) as asker,
        open_client(addr2) as answerer,
    ):
        echo(agents[1])
        async with answerer.queries(["ping"]) as asked, trio.open_nursery() as nursery:

            async def answer() -> None:
                async for q in asked:
                    assert q["name"] == "ping" and q["origin"] == "n0"
                    await answerer.respond(q["id"], b"from the client")
                    with_error = None
                    try:
                        await answerer.respond(q["id"], b"twice")
                    except ControlError as exc:
                        with_error = str(exc)
                    assert with_error and "no query" in with_error
                    return

            nursery.start_soon(answer)
            events = []
            async with asker.query("ping", b"p", timeout=1.0) as stream:
                async for ev in stream:
                    events.append(ev)
                    if ev["type"] == "done":
                        break
        responses = {e["from"]: e["payload"] for e in events if e["type"] == "response"}
        assert responses == {"n1": b"n1:p", "n2": b"from the client"}
        assert events[-1]["type"] == "done" and events[-1]["responses"] == 2
        assert events[-1]["acks"] == 3
        try:
            await asker.respond(12345, b"x")
        except ControlError as exc:
            assert "no query 12345" in str(exc)
        else:
            raise AssertionError("an answer to no query was taken")


@bounded(TEST_MAX)
async def test_cli_query_prints_each_answer_and_a_summary() -> None:
    async with cluster(3) as agents, control(agents[0]) as addr:
        for a in agents:
            echo(a)
        code, out, err = await cli(addr, "query", "ping", "hi", "--timeout", "0.8")
        assert code == 0, err
        lines = out.splitlines()
        assert sorted(x for x in lines if x.startswith("response")) == [
            f"response from n{i}: n{i}:hi" for i in range(3)
        ]
        assert sum(x.startswith("ack from") for x in lines) == 3
        assert lines[-2:] == ["total acks: 3", "total responses: 3"]
        code, out, err = await cli(
            addr, "query", "ping", "--node", "n1", "--timeout", "0.5", "--json"
        )
        assert code == 0, err
        objs = [json.loads(x) for x in out.splitlines()]
        assert {(o["type"], o.get("from")) for o in objs} == {
            ("ack", "n1"),
            ("response", "n1"),
            ("done", None),
        }
        code, _out, err = await cli(addr, "query", "ping", "--tag", "k=(a*)*$")
        assert code == 2 and "nested repetition" in err


@bounded(TEST_MAX)
async def test_cluster_wide_key_rotation_through_the_cli(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    from daemon.security import decode_key

    async with cluster(3, keys=(decode_key(old),)) as agents, control(agents[1]) as addr:
        code, out, err = await cli(addr, "keys", "install", new)
        assert code == 0, err
        assert "install: 3 of 3 members answered, 0 errors" in out
        code, out, err = await cli(addr, "keys", "list", "--json")
        listed = json.loads(out)
        assert code == 0 and listed["ok"]
        assert {(k["key"], k["members"], k["primary"]) for k in listed["keys"]} == {
            (old, 3, 3),
            (new, 3, 0),
        }
        assert (await cli(addr, "keys", "use", new))[0] == 0
        # The primary cannot be removed: every member says why.
        code, out, err = await cli(addr, "keys", "remove", new, "--json")
        refused = json.loads(out)
        assert code == 1 and len(refused["errors"]) == 3
        assert all("primary" in e for e in refused["errors"].values())
        assert (await cli(addr, "keys", "remove", old))[0] == 0
        code, out, err = await cli(addr, "keys", "list", "--json")
        assert [(k["key"], k["members"]) for k in json.loads(out)["keys"]] == [(new, 3)]
        # The cluster still talks, sealed with the new key only.
        for a in agents:
            echo(a)
        result = await agents[0].query("ping", b"", timeout=0.8)
        assert set(result.responses) == {"n0", "n1", "n2"}


@bounded(TEST_MAX)
async def test_keys_are_written_back_to_the_key_file(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    path = tmp_path / "keyring"
    path.write_text(old + "\n")
    from daemon.keys import cluster_keys
    from daemon.security import decode_key

    async with cluster(1, keys=(decode_key(old),), key_file=str(path)) as agents:
        res = await cluster_keys(agents[0], "install", new)
        assert res.to_dict()["ok"]
        await cluster_keys(agents[0], "use", new)
        assert load_key_file(path) == [decode_key(new), decode_key(old)]
        assert path.stat().st_mode & 0o077 == 0


@bounded(TEST_MAX)
async def test_keys_without_a_cluster_key_is_a_clear_error() -> None:
    async with cluster(2) as agents, control(agents[0]) as addr:
        code, _out, err = await cli(addr, "keys", "list")
        assert code == 1
        assert "no cluster key is configured" in err
        code, _out, err = await cli(addr, "keys", "install", "not-base64!")
        assert code == 2 and "bad KEY" in err
        code, _out, err = await cli(addr, "keys", "remove")
        assert code == 2 and "needs a KEY" in err


def test_cli_usage_errors_need_no_agent() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for args, message in (
        (["query", "x", "--timeout", "0"], "--timeout"),
        (["query", "x", "--tag", "nokey"], "K=REGEX"),
        (["query", "$overlay.keys.list"], "overlay's own"),
        (["keys", "rotate"], "unknown operation"),
        (["keys", "list", "extra"], "takes no KEY"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "daemon.cli", *args, "--control", "127.0.0.1:1"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and done.stderr.count("\n") == 1


@bounded(TEST_MAX)
async def test_open_queries_and_query_streams_end_when_the_agent_stops() -> None:
    async with cluster(2) as agents:
        handle = await agents[0].open_query("ping", b"", timeout=60)
        _key, asked = agents[0].queries.watch()
        agents[0].stop()
        with trio.fail_after(5):
            got = [a async for a in handle]
            queued = [q async for q in asked]
        assert handle.done is False  # ended by the stop, not by the timeout
        assert [a.responder for a in got] == ["n0"]  # its own ack came at once
        assert queued == []
