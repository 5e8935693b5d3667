"""Embedding the overlay agent in a trio program: publish and subscribe.

Run a subscriber, then a publisher that joins it (two terminals):

    python examples/embedded.py --bind 127.0.0.1:7946 subscribe deploys
    python examples/embedded.py --bind 127.0.0.1:7947 --join 127.0.0.1:7946 publish deploys v42

The subscriber prints `listening on ADDR`, then `ORIGIN PAYLOAD` for each
message (it exits after --count of them). The publisher publishes right
after it starts and exits: a publish made before the agent has joined
waits in the agent (bounded: `AgentSettings.publish_queue`) and goes out
once it has joined; leaving the `async with` block sends it before the
agent leaves the cluster. To wait for the join yourself:
`await agent.joined(timeout=10)`, or `Agent(settings, wait_joined=10)`.
"""

from __future__ import annotations

import argparse

import trio

from daemon.agent import Agent, AgentSettings


async def publish(settings: AgentSettings, topic: str, message: str) -> None:
    async with Agent(settings) as agent:
        await agent.publish(topic, message.encode())
        print(f"published {message!r} on {topic!r}", flush=True)


async def subscribe(settings: AgentSettings, topic: str, count: int) -> None:
    async with Agent(settings) as agent, agent.subscribe(topic) as sub:
        print(f"listening on {agent.me.addr}", flush=True)
        received = 0
        async for msg in sub:
            print(msg.origin, msg.payload.decode(errors="replace"), flush=True)
            received += 1
            if received == count:
                break


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bind", default="127.0.0.1:7946", help="HOST:PORT (port 0: any free one)")
    p.add_argument("--join", action="append", default=[], metavar="HOST:PORT", help="a seed")
    p.add_argument("--name", help="member name (default: host name and port)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("subscribe")
    s.add_argument("topic")
    s.add_argument("--count", type=int, default=1, help="exit after N messages")
    s = sub.add_parser("publish")
    s.add_argument("topic")
    s.add_argument("message")
    args = p.parse_args()

    host, _, port = args.bind.rpartition(":")
    settings = AgentSettings(bind=(host, int(port)), join=tuple(args.join), name=args.name)
    if args.command == "publish":
        trio.run(publish, settings, args.topic, args.message)
    else:
        trio.run(subscribe, settings, args.topic, args.count)


if __name__ == "__main__":
    main()
