"""Soak benchmark: many real agents under churn and loss for a long time.

Not a test: it prints figures and never fails on time. Uses the fault
suite's rig (tests/faults/rig.py, root, iproute2 and nftables): one network
namespace per agent on a bridge, faults in the bridge.

What it does, for `--duration` seconds (default 30 minutes, 50 agents):

* churn: every `--churn-every` seconds one agent is disturbed, at random
  either killed (SIGKILL) and restarted `--down` seconds later, or frozen
  (SIGSTOP) for 3-15 s then resumed (SIGCONT); at most a tenth of the
  agents are disturbed at a time;
* loss: `--loss` percent of the IP frames crossing the bridge dropped at
  random, in alternating minutes (on, off, on, ...);
* broadcasts: one every `--publish-every` seconds, from a random agent that
  runs, each agent subscribed to the topic through a persistent control
  connection;
* every `--sample-every` seconds one line: agents running/frozen/down, RSS
  per agent (min, median, max) and in total, failed and suspect verdicts
  and how many were false, and the delivery ratio so far.

A *false* verdict is failed (or suspect) about a member the observer could
reach at that moment, and for the `--window` seconds before it (a member
killed and restarted 10 s ago may still be declared failed: that verdict is
about the process that died, counted as *late*, not false).

Delivery ratio: of the broadcasts published at least `--settle` seconds
before the count, deliveries at the agents whose process ran (frozen or
not) and was subscribed from the publish until then, over the number of
such agents; copies delivered twice to one subscription are counted apart.
A restarted agent has a new subscription, counted from zero (it may be
handed again, by anti-entropy, what its previous process had delivered).

At the end churn stops, every agent runs again, the loss is lifted, and
after `--settle` seconds the final figures are printed (and written with
`--json FILE`): membership agreement, false verdicts with who/when,
delivery, memory over time.

Usage: sudo .venv/bin/python bench/soak.py [--agents 50] [--duration 1800]
       [--loss 5] [--churn-every 15] [--json FILE]
Quick look: bench/soak.py --agents 10 --duration 120
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.control import ControlError
from tests.faults.cluster import Cluster, all_see, start_agents
from tests.faults.rig import (
    ChangeLog,
    Rig,
    RigError,
    Verdict,
    clean_stale,
    unavailable,
)

MiB = 1024 * 1024


@dataclass
class Soak:
    rig: Rig
    cluster: Cluster
    names: list[str]
    args: argparse.Namespace
    rng: random.Random
    log: ChangeLog
    t0: float = field(default_factory=time.time)
    disturbed: set[str] = field(default_factory=set)
    down: set[str] = field(default_factory=set)
    frozen: set[str] = field(default_factory=set)
    loss_on: bool = False
    events: dict[str, int] = field(default_factory=dict)
    judged: list[Verdict] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    publish_errors: int = 0
    seq: int = 0

    # ---------------------------------------------------------------- churn

    async def churn(self, until: float) -> None:
        """Disturb one agent every churn_every seconds until `until`."""
        cap = max(1, len(self.names) // 10)
        async with trio.open_nursery() as nursery:
            while time.time() + self.args.churn_every < until:
                await trio.sleep(self.args.churn_every)
                free = [n for n in self.names if n not in self.disturbed]
                if len(self.disturbed) >= cap or not free:
                    continue
                name = self.rng.choice(free)
                self.disturbed.add(name)
                if self.rng.random() < 0.5:
                    nursery.start_soon(self._kill_restart, name)
                else:
                    nursery.start_soon(self._freeze, name, self.rng.uniform(3, 15))

    async def _kill_restart(self, name: str) -> None:
        self._count("kill")
        self.cluster.disconnect(name)
        self.rig.kill(name)
        self.down.add(name)
        try:
            await trio.sleep(self.args.down)
            running = [n for n in self.names if n not in self.down and n not in self.frozen]
            seeds = self.rng.sample(running, min(3, len(running)))
            self.rig.start_agent(name, join=seeds)
            await self.rig.wait_started(self.rig.agents[name])
            await self.cluster.connect(name)
            self._count("restart")
        except (RigError, trio.TooSlowError, OSError) as exc:
            self._count("restart_failed")
            print(f"  restart of {name} failed: {exc}", flush=True)
        finally:
            self.down.discard(name)
            self.disturbed.discard(name)

    async def _freeze(self, name: str, seconds: float) -> None:
        self._count("sigstop")
        self.rig.stop(name)
        self.frozen.add(name)
        try:
            await trio.sleep(seconds)
        finally:
            self.rig.cont(name)
            self.frozen.discard(name)
            self.disturbed.discard(name)

    async def loss(self, until: float) -> None:
        """--loss percent in alternating minutes."""
        if not self.args.loss:
            return
        while time.time() + 60 < until:
            self.loss_on = not self.loss_on
            self.rig.loss(self.args.loss if self.loss_on else 0)
            await trio.sleep(60)
        self.rig.loss(0)
        self.loss_on = False

    def _count(self, what: str) -> None:
        self.events[what] = self.events.get(what, 0) + 1

    # ----------------------------------------------------------- broadcasts

    async def publish(self, until: float) -> None:
        while time.time() < until:
            await trio.sleep(self.args.publish_every)
            ready = [
                n
                for n in self.names
                if n not in self.down and n not in self.frozen and n in self.cluster.clients
            ]
            if not ready:
                continue
            origin = self.rng.choice(ready)
            self.seq += 1
            try:
                await self.cluster.publish(origin, f"{origin}-{self.seq}")
            except (trio.TooSlowError, ControlError, KeyError):
                self.publish_errors += 1

    def delivery(self, before: float) -> dict[str, Any]:
        """Delivery of the broadcasts published before `before`, at the
        agents whose process ran from the publish until `before`."""
        expected = delivered = duplicated = 0
        for payload, (_origin, t) in self.cluster.published.items():
            if t > before:
                continue
            for n in self.names:
                started = self.cluster.link_started.get(n)
                if started is None or started > t or not self._same_process(n, t, before):
                    continue
                expected += 1
                copies = self.cluster.deliveries[n][payload] if n in self.cluster.deliveries else 0
                delivered += copies > 0
                duplicated += copies > 1
        return {
            "expected": expected,
            "delivered": delivered,
            "ratio": round(delivered / expected, 5) if expected else None,
            "duplicated": duplicated,
        }

    def _same_process(self, name: str, start: float, end: float) -> bool:
        """The agent ran one process (maybe frozen a while) over [start, end]:
        it ran at `start` and was not killed before `end`."""
        state = "absent"
        for t, what in self.rig.procs.get(name, []):
            if t <= start:
                state = what
            elif t <= end and what == "dead":
                return False
        return state in ("running", "stopped")

    # -------------------------------------------------------------- figures

    def verdict_figures(self) -> dict[str, Any]:
        """Judge the verdicts the logs gained since the last call; counts
        of all of them so far."""
        new = [c for c in self.log.update() if c.t >= self.t0]
        self.judged.extend(self.rig.judge(new, window=self.args.window))
        out: dict[str, Any] = {}
        for status in ("failed", "suspect"):
            mine = [v for v in self.judged if v.change.status == status]
            out[status] = {
                "all": len(mine),
                "false": sum(v.reachable_before for v in mine),
                "late": sum(v.reachable and not v.reachable_before for v in mine),
            }
        return out

    def false_list(self, limit: int = 30) -> list[dict[str, Any]]:
        false = [v for v in self.judged if v.reachable_before and v.change.status == "failed"]
        return [v.as_dict(self.t0) for v in false[:limit]]

    def memory(self) -> dict[str, Any]:
        rss = [r for r in (self.rig.rss(n) for n in self.names) if r is not None]
        if not rss:
            return {}
        return {
            "total_mib": round(sum(rss) / MiB, 1),
            "min_mib": round(min(rss) / MiB, 1),
            "median_mib": round(statistics.median(rss) / MiB, 1),
            "max_mib": round(max(rss) / MiB, 1),
        }

    async def sample(self) -> None:
        now = time.time()
        mem = self.memory()
        verdicts = await trio.to_thread.run_sync(self.verdict_figures)
        deliv = self.delivery(now - self.args.settle)
        row = {
            "t_s": round(now - self.t0),
            "running": len(self.names) - len(self.down) - len(self.frozen),
            "frozen": len(self.frozen),
            "down": len(self.down),
            "loss": self.args.loss if self.loss_on else 0,
            "rss": mem,
            "verdicts": verdicts,
            "delivery": deliv,
            "published": len(self.cluster.published),
        }
        self.samples.append(row)
        ratio = deliv["ratio"]
        print(
            f"t={row['t_s']:>5}s  agents {row['running']}+{row['frozen']} frozen"
            f"+{row['down']} down  loss {row['loss']:>2}%  |  RSS MiB total "
            f"{mem.get('total_mib')} (min {mem.get('min_mib')}, median "
            f"{mem.get('median_mib')}, max {mem.get('max_mib')})  |  failed "
            f"{verdicts['failed']['all']} (false {verdicts['failed']['false']}, late "
            f"{verdicts['failed']['late']})  suspect {verdicts['suspect']['all']} (false "
            f"{verdicts['suspect']['false']})  |  delivered "
            f"{'-' if ratio is None else f'{100 * ratio:.2f}%'} "
            f"({deliv['delivered']}/{deliv['expected']}, twice {deliv['duplicated']})",
            flush=True,
        )


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="ovsoak-"))
    names = [f"n{i}" for i in range(1, args.agents + 1)]
    print(f"soak: {args.agents} agents, {args.duration:.0f} s, loss {args.loss}% in alternate")
    print(f"minutes, churn every {args.churn_every} s; logs in {workdir}", flush=True)
    with Rig(workdir) as rig:
        t_start = time.time()
        # Batches of 10: 50 Python start-ups at once would starve the first.
        for i in range(0, len(names), 10):
            batch = names[i : i + 10]
            if i == 0:
                await start_agents(rig, batch)
            else:
                await start_agents(rig, batch, seeds=[rig.hosts[n].ip + ":7946" for n in names[:3]])
        async with trio.open_nursery() as nursery:
            cluster = Cluster(rig, nursery, "soak")
            for n in names:
                await cluster.connect(n)
            formed, t_formed, _ = await cluster.wait_views(
                names, all_see(names, dict.fromkeys(names, "alive")), 120, interval=1.0
            )
            print(
                f"cluster {'formed' if formed else 'NOT formed'} "
                f"{t_formed - t_start:.1f} s after the first start",
                flush=True,
            )
            s = Soak(rig, cluster, names, args, rng, ChangeLog(rig))
            until = s.t0 + args.duration
            async with trio.open_nursery() as inner:
                inner.start_soon(s.churn, until)
                inner.start_soon(s.loss, until)
                inner.start_soon(s.publish, until)

                async def sampler() -> None:
                    while time.time() < until:
                        await trio.sleep(min(args.sample_every, max(0.0, until - time.time())))
                        await s.sample()

                inner.start_soon(sampler)
            # The churn tasks restarted/resumed every agent before returning.
            rig.loss(0)
            print(f"churn and loss stopped; settling {args.settle:.0f} s", flush=True)
            await trio.sleep(args.settle)
            _, _, views = await cluster.wait_views(
                names, all_see(names, dict.fromkeys(names, "alive")), 30, interval=1.0
            )
            await s.sample()
            disagree = {
                o: sorted(m for m in names if (v or {}).get(m) != "alive") for o, v in views.items()
            }
            cluster.close()
        summary = {
            "agents": args.agents,
            "duration_s": args.duration,
            "loss_percent": args.loss,
            "events": s.events,
            "publish_errors": s.publish_errors,
            "final": s.samples[-1],
            "not_alive_at_end": {o: m for o, m in disagree.items() if m},
            "false_failed": s.false_list(),
            "rss_total_mib_over_time": " ".join(
                f"{r['t_s']}s:{r['rss'].get('total_mib')}" for r in s.samples
            ),
            "logs": str(workdir),
        }
    print("summary:", json.dumps(summary, indent=1), flush=True)
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=50)
    p.add_argument("--duration", type=float, default=1800.0, help="seconds (default 30 min)")
    p.add_argument("--loss", type=int, default=5, help="percent, in alternate minutes")
    p.add_argument("--churn-every", type=float, default=15.0, help="seconds between disturbances")
    p.add_argument("--down", type=float, default=10.0, help="seconds a killed agent stays down")
    p.add_argument("--publish-every", type=float, default=1.0)
    p.add_argument("--sample-every", type=float, default=30.0)
    p.add_argument("--settle", type=float, default=30.0)
    p.add_argument("--window", type=float, default=30.0, help="see 'false verdict' above")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="write the summary here")
    args = p.parse_args()
    if not 2 <= args.agents <= 250:
        p.error("--agents: 2 to 250")
    reason = unavailable()
    if reason:
        print(f"soak: cannot run: {reason}", file=sys.stderr)
        return 2
    clean_stale()
    summary = trio.run(soak, args)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
