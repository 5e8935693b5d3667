"""Benchmark: a query's round trip and a cluster-wide key rotation.

N agents (default 10) in this process, on loopback, with a cluster key and
the default protocol settings; once every agent lists N alive:

1. Query round trip: `--queries` queries (default 50, one at a time) from
   agent 0 that every member answers at once (an embedded handler); for
   each, the time until the first response and until the N-th (all), as
   the origin sees them. Prints p50/p90/max.
2. Key rotation, as an operator runs it: `install NEW`, `use NEW`,
   `remove OLD`, each run until every member has answered ok (what
   `overlay keys` waits for). Prints the seconds of each step and the sum.

All agents share this process (and its one event loop), so the figures
include their contention for the CPU: an upper bound of what separate
hosts would see. Prints figures; never fails on time.

Usage: python bench/queries_keys.py [--nodes 10] [--queries 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import trio

from daemon.keys import cluster_keys
from daemon.queries import QueryRequest
from daemon.security import decode_key, generate_key
from daemon.testing import Changes, all_alive, local_cluster
from overlay.config import Config


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


async def bench(nodes: int, queries: int) -> dict[str, Any]:
    old, new = generate_key(), generate_key()
    out: dict[str, Any] = {"nodes": nodes}
    async with local_cluster(nodes, config=Config(), keys=(decode_key(old),)) as agents:
        start = time.perf_counter()
        names = [a.me.name for a in agents]
        await Changes(agents).until(lambda: all_alive(agents, names), 60)
        out["converged_s"] = round(time.perf_counter() - start, 3)
        for a in agents:

            async def answer(req: QueryRequest, name: str = a.me.name) -> bytes:
                return name.encode()

            a.on_query("bench", answer)
        first: list[float] = []
        last: list[float] = []
        incomplete = 0
        for _ in range(queries):
            handle = await agents[0].open_query("bench", b"", timeout=2.0, ack=False)
            got: set[str] = set()
            times: list[float] = []
            remote: list[float] = []
            async for ans in handle:
                got.add(ans.responder)
                times.append(ans.elapsed)
                if ans.responder != agents[0].me.name:
                    remote.append(ans.elapsed)
                if len(got) == nodes:
                    break
            if len(got) < nodes:
                incomplete += 1
            first.append(min(remote or times))
            last.append(max(times))
            await trio.sleep(0.05)
        ms = 1000.0
        out["query_first_response_ms"] = {
            "p50": round(pct(first, 0.5) * ms, 2),
            "p90": round(pct(first, 0.9) * ms, 2),
            "max": round(max(first) * ms, 2),
        }
        out["query_all_responses_ms"] = {
            "p50": round(pct(last, 0.5) * ms, 2),
            "p90": round(pct(last, 0.9) * ms, 2),
            "max": round(max(last) * ms, 2),
            "mean": round(statistics.mean(last) * ms, 2),
        }
        out["queries"] = queries
        out["queries_incomplete"] = incomplete
        steps: dict[str, float] = {}
        for op, key in (("install", new), ("use", new), ("remove", old)):
            t0 = time.perf_counter()
            res = (await cluster_keys(agents[1], op, key)).to_dict()
            steps[op] = round(time.perf_counter() - t0, 3)
            if not res["ok"]:
                steps[op + "_failed"] = 1
        steps["total"] = round(sum(v for k, v in steps.items() if "_" not in k), 3)
        out["rotation_s"] = steps
        listed = (await cluster_keys(agents[2], "list")).to_dict()
        out["keys_after"] = [(k["key"] == new, k["members"]) for k in listed["keys"]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = trio.run(bench, max(2, min(args.nodes, 50)), max(1, min(args.queries, 500)))
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['nodes']} agents on loopback, one process; converged in {result['converged_s']} s"
    )
    q = result["query_all_responses_ms"]
    f = result["query_first_response_ms"]
    print(
        f"query round trip, {result['queries']} queries: all {result['nodes']} responses "
        f"p50 {q['p50']} ms, p90 {q['p90']} ms, max {q['max']} ms; "
        f"first remote response p50 {f['p50']} ms; incomplete {result['queries_incomplete']}"
    )
    r = result["rotation_s"]
    print(
        f"key rotation: install {r['install']} s, use {r['use']} s, remove {r['remove']} s, "
        f"total {r['total']} s; keys after: {result['keys_after']}"
    )


if __name__ == "__main__":
    main()
