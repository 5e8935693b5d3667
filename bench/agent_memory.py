"""Benchmark: where the memory of an idle agent goes (issue 14).

Prints figures; never fails. Two measures:

1. A breakdown, in one fresh interpreter: RSS (and its anonymous and
   file-backed parts) after each stage, in the order the agent needs them:
   the bare interpreter (with `site` and the environment's .pth files), the
   standard library modules the CLI and the agent use themselves, `ssl` and
   trio's own dependencies (attrs, sortedcontainers, idna, outcome, sniffio),
   trio, msgpack, the protocol (`overlay`), the daemon (`daemon`), then an
   agent with its control API actually running, idle, for `--idle` seconds
   (its heap: sockets, buffers, tasks, the node's state). With `--key`,
   cryptography (the AES-GCM of a keyed cluster) comes last. A stage's delta
   is what it added over the stages before: a module imported by an earlier
   stage is not counted again.
2. The real thing: `overlay agent` started as a process (as an operator
   does, and as `bench/cluster.py` phase 3 does), alone, idle for `--idle`
   seconds, its RSS, PSS and USS read from /proc.

Usage: python bench/agent_memory.py [--idle 5] [--key] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Each stage: a name and the statement that loads it. Run in a child, in order.
STAGES: list[tuple[str, str]] = [
    (
        "stdlib used by the CLI and the agent",
        "import argparse, json, logging, dataclasses, tomllib, ipaddress, random, socket, "
        "struct, base64, signal",
    ),
    ("ssl (imported by trio)", "import ssl"),
    (
        "trio's dependencies (attrs, sortedcontainers, idna, outcome, sniffio)",
        "import attrs, sortedcontainers, idna, outcome, sniffio",
    ),
    ("trio", "import trio"),
    ("msgpack", "import msgpack"),
    ("overlay (the protocol)", "import overlay.node, overlay.codec"),
    (
        "daemon (agent, transport, control API, CLI)",
        "import daemon.cli, daemon.service, daemon.settings",
    ),
]

_CHILD = r"""
import gc, json, sys
stages = json.loads(sys.argv[1])
idle = float(sys.argv[2])
key = sys.argv[3] == "1"

def mem():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "RssAnon:", "RssFile:")):
                name, value, _ = line.split()
                out[name[:-1]] = int(value) / 1024
    return out

rows = [("interpreter (with site)", mem())]
for name, stmt in stages:
    exec(stmt)
    gc.collect()
    rows.append((name, mem()))

import trio
from daemon.agent import Agent, AgentSettings
from daemon.service import Service

async def run():
    agent = Agent(AgentSettings(bind=("127.0.0.1", 0)))
    async with trio.open_nursery() as nursery:
        await nursery.start(Service(agent, control="127.0.0.1:0").run)
        await trio.sleep(idle)
        gc.collect()
        rows.append(("an agent running, idle (heap, sockets, tasks)", mem()))
        agent.stop()

trio.run(run)
if key:
    import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401
    gc.collect()
    rows.append(("cryptography (only with a cluster key)", mem()))
print(json.dumps(rows))
"""


def breakdown(idle: float, key: bool) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(STAGES), str(idle), "1" if key else "0"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    rows: list[dict[str, Any]] = []
    prev: dict[str, float] = {}
    for name, m in json.loads(out.splitlines()[-1]):
        rows.append(
            {
                "stage": name,
                "rss_mb": round(m["VmRSS"], 1),
                "delta_mb": round(m["VmRSS"] - prev.get("VmRSS", 0.0), 1),
                "delta_anon_mb": round(m["RssAnon"] - prev.get("RssAnon", 0.0), 1),
                "delta_file_mb": round(m["RssFile"] - prev.get("RssFile", 0.0), 1),
            }
        )
        prev = m
    return rows


def smaps(pid: int) -> dict[str, float]:
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                values[parts[0][:-1]] = int(parts[1])
    uss = values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)
    return {
        "rss_mb": round(values.get("Rss", 0) / 1024, 1),
        "pss_mb": round(values.get("Pss", 0) / 1024, 1),
        "uss_mb": round(uss / 1024, 1),
        "anon_mb": round(values.get("Anonymous", 0) / 1024, 1),
    }


def agent_process(
    idle: float, key: bool, metrics: bool = False, join: str | None = None
) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="overlay-mem-") as tmp:
        args = [sys.executable, "-m", "daemon.cli", "agent", "--bind", "127.0.0.1:0"]
        args += ["--control", f"unix:{tmp}/ctl.sock", "--log-json"]
        if metrics:
            args += ["--metrics", "127.0.0.1:0"]
        if join:
            args += ["--join", join]
        if key:
            from daemon.security import generate_key

            (Path(tmp) / "key").write_text(generate_key() + "\n")
            args += ["--key-file", f"{tmp}/key"]
        proc = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                if '"agent started"' in line:
                    break
            time.sleep(idle)
            return smaps(proc.pid)
        finally:
            proc.kill()
            proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--idle", type=float, default=5.0, help="seconds idle before measuring")
    p.add_argument("--key", action="store_true", help="with a cluster key (cryptography)")
    p.add_argument(
        "--metrics", action="store_true", help="the process with --metrics (prometheus_client)"
    )
    p.add_argument(
        "--join",
        metavar="SEED",
        help="the process with --join SEED (a DNS name loads dnspython; try localhost:1)",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rows = breakdown(args.idle, args.key)
    print(f"{'stage':<62} {'RSS':>6} {'+':>6} {'+anon':>6} {'+file':>6}  (MB)")
    for r in rows:
        print(
            f"{r['stage']:<62} {r['rss_mb']:>6} {r['delta_mb']:>6} "
            f"{r['delta_anon_mb']:>6} {r['delta_file_mb']:>6}"
        )
    real = agent_process(args.idle, args.key, args.metrics, args.join)
    flags = [("--metrics", args.metrics), (f"--join {args.join}", args.join)]
    extra = "".join(f" {flag}" for flag, on in flags if on)
    print(f"`overlay agent{extra}` process, idle {args.idle:g} s: {real}")
    if args.json:
        print(json.dumps({"breakdown": rows, "agent_process": real}, indent=2))


if __name__ == "__main__":
    main()
