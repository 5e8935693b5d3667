"""Benchmark: SWIM failure detection, false positives, message load and
partition healing, measured in the simulator (issue 5, "Measured in the
simulator"). Prints figures; never fails on time.

Experiments (each a few independent simulations, run in parallel worker
processes, one simulation per process so that its peak RSS is its own):

``detection``
    Crashes and pauses (SIGSTOP-like gray failures) at 100 and 1,000 nodes:
    time to the first suspicion (median, in seconds and in protocol periods;
    SWIM expects ~e/(e-1) = 1.58 periods until somebody probes a dead member),
    time until every live node holds it failed (p50/p99/max, from the
    failure and from its first suspicion), against the issue's bound:
    the suspicion timeout (`overlay.suspicion.suspicion_min`) plus 1 s.
    A paused node resumes after it was declared failed: the time until
    every node lists it alive again is shown too.
``fp``
    False positives (live, unpaused members declared failed) over a window
    of datagram loss on a formed 1,000-node cluster: 5% (the issue's
    requirement: zero), 10%, 20%, and 5% with a few slow nodes (paused 2 s
    out of every 3 s), each with and without the Lifeguard refinements.
``load``
    SWIM messages and bytes per member per protocol period in steady state
    (after the join's dissemination burst has drained), at 100, 1,000 and
    larger sizes as far as memory allows (full membership is O(N^2) memory
    in one process: a size that does not fit is skipped, with the reason).
``partition``
    A 50/50 partition for 60 s, then the seconds after the heal until one
    cluster again: every member alive in every list and the overlay
    (HyParView active views) connected. Requirement: within 30 s.

Method: nodes join 10 ms apart through the first node; each simulation
first runs until every node lists every node alive (the join's
dissemination has drained), then the experiment starts. Simulations run
without the codec (`use_codec=False`: no byte counts, several times
faster) except the load window, where the codec is on so bytes are real.
Every simulation has a budget of CPU seconds; one that runs out stops where it
is and says so in its row.

Usage:
    .venv/bin/python bench/swim_detection.py [--quick] [--jobs 2] [--seed 1]
        [--experiments detection,fp,load,partition]
        [--detect-sizes 100,1000] [--victims 20]
        [--fp-nodes 1000] [--fp-minutes 10]
        [--fp-heavy-nodes 200] [--fp-heavy-minutes 10]
        [--fp-losses 0.05,0.10,0.20] [--slow 5]
        [--load-sizes 100,1000,2000,10000] [--load-window 60]
        [--partition-sizes 100,1000] [--task-budget 1800]
        [--partition-budget 7200] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import random
import resource
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import networkx as nx

from overlay.config import Config
from overlay.ids import NodeId
from overlay.io import MemberChanged, MemberStatus, Output
from overlay.messages import SWIM_MESSAGES
from overlay.suspicion import suspicion_min
from sim.engine import Simulation
from sim.membership_metrics import MembershipTracker, percentile

ALIVE, SUSPECT, FAILED = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.FAILED
SWIM_NAMES = tuple(m.__name__ for m in SWIM_MESSAGES)
JOIN_GAP = 0.01  # seconds between joins, all through the first node
WARM_CAP = 400.0  # simulated seconds after the last join to wait for convergence
SLOW_ON, SLOW_OFF = 2.0, 1.0  # a slow node: paused SLOW_ON s of every SLOW_ON + SLOW_OFF
DRAIN = 30.0  # seconds of a quiet network after a loss window, before judging convergence
HEAL_STEP = 0.25  # resolution of the partition-heal watch, simulated seconds
HEAL_CAP = 120.0  # give up on a heal after this long

Result = dict[str, Any]


# ------------------------------------------------------------- plumbing


class Budget:
    """CPU-time budget of one simulation: `advance` runs it in chunks and
    stops early, marking the result, when the budget is spent. CPU time of
    the worker, not wall time: on a shared machine the wall time depends on
    what else runs, and a budget in CPU seconds cuts a run at the same
    point every time, so the same seed gives the same figures. It also
    reports progress on stderr: phases (`say`) and a heartbeat."""

    HEARTBEAT = 120.0  # wall seconds between progress lines

    def __init__(self, seconds: float, label: str) -> None:
        self.start = time.monotonic()
        self.deadline = time.process_time() + seconds
        self.label = label
        self.beat = self.start
        self.cut_at: float | None = None

    def say(self, sim: Simulation, msg: str) -> None:
        wall = time.monotonic() - self.start
        print(f"    [{self.label}] t={sim.now:.0f} s, {wall:.0f} s wall: {msg}", file=sys.stderr)
        sys.stderr.flush()
        self.beat = time.monotonic()

    def advance(self, sim: Simulation, t_end: float, chunk: float = 5.0) -> bool:
        while sim.now < t_end:
            if time.process_time() > self.deadline:
                self.cut_at = sim.now
                self.say(sim, "out of CPU-time budget, stopping here")
                return False
            if time.monotonic() - self.beat > self.HEARTBEAT:
                self.say(sim, f"running, {sim.events:,} events")
            sim.run_until(min(t_end, sim.now + chunk))
        return True


@dataclass
class Cluster:
    sim: Simulation
    ids: list[NodeId]
    tracker: MembershipTracker
    joined_at: float  # the last join
    converged_after: float | None = None  # seconds from the last join to all-alive


def build(n: int, seed: int, config: Config | None = None) -> Cluster:
    sim = Simulation(config or Config(), seed, use_codec=False)
    ids = [sim.add_node(f"n{i}") for i in range(n)]
    for i, nid in enumerate(ids[1:], start=1):
        sim.join(nid, [ids[0]], at=JOIN_GAP * i)
    return Cluster(sim, ids, MembershipTracker(sim), JOIN_GAP * (n - 1))


class AliveEverywhere:
    """Does every node in `ids` list every other one alive? O(N^2) when
    true; while false it usually stops at once, starting from the observer
    that failed last time."""

    def __init__(self, sim: Simulation, ids: list[NodeId]) -> None:
        self.sim = sim
        self.ids = ids
        self.hint = 0

    def __call__(self) -> bool:
        ids = self.ids
        n = len(ids)
        for k in range(n):
            i = (self.hint + k) % n
            members = self.sim.node(ids[i]).swim.members
            for other in ids:
                m = members.get(other)
                if m is None or m.status is not ALIVE:
                    self.hint = i
                    return False
        return True


def overlay_graph(sim: Simulation, ids: list[NodeId]) -> nx.Graph:
    live = set(ids)
    g = nx.Graph()
    g.add_nodes_from(ids)
    for nid in ids:
        for peer in sim.node(nid).hyparview.views().active:
            if peer in live:
                g.add_edge(nid, peer)
    return g


def warm_up(cl: Cluster, budget: Budget, drained: bool = False) -> bool:
    """Run until every node lists every node alive (and, with `drained`, no
    piggyback queue holds anything), at most WARM_CAP s after the last join."""
    sim = cl.sim
    check = AliveEverywhere(sim, cl.ids)
    t = cl.joined_at + 5.0
    while t <= cl.joined_at + WARM_CAP:
        if not budget.advance(sim, t):
            return False
        if check() and (not drained or all(len(sim.node(i).swim.queue) == 0 for i in cl.ids)):
            cl.converged_after = sim.now - cl.joined_at
            budget.say(sim, f"every list complete, {cl.converged_after:.0f} s after the last join")
            return True
        t += 2.0
    budget.say(sim, f"member lists still incomplete {WARM_CAP:.0f} s after the last join")
    return False


def periods_of(cfg: Config) -> float:
    return cfg.swim.probe_period


def timeouts(cfg: Config, n: int) -> tuple[float, float]:
    """Lifeguard's suspicion timeout range for `n` live members."""
    lo = suspicion_min(cfg.swim.suspicion_mult, n, cfg.swim.probe_period)
    hi = lo * cfg.swim.suspicion_max_mult if cfg.swim.lifeguard else lo
    return lo, hi


def counters_sum(sim: Simulation, ids: list[NodeId], *names: str) -> int:
    return sum(sim.node(i).swim.counters[name] for i in ids for name in names)


# ----------------------------------------------------------- detection


@dataclass
class _Verdicts:
    """Per victim: the first suspicion anywhere, and each observer's first
    `failed` and first `alive` after `back` (the resume of a pause). And
    the verdicts on a victim more than `grace` s after it resumed, split
    by whether the observer was itself a victim (a paused node that wakes
    up applies what waited in its backlog: old news)."""

    grace: float
    first_suspect: dict[NodeId, float] = field(default_factory=dict)
    failed: dict[NodeId, dict[NodeId, float]] = field(default_factory=dict)
    alive: dict[NodeId, dict[NodeId, float]] = field(default_factory=dict)
    back: dict[NodeId, float] = field(default_factory=dict)
    start: dict[NodeId, float] = field(default_factory=dict)
    late_by_victims: int = 0
    late_by_others: int = 0

    def __call__(self, t: float, node: NodeId, out: Output) -> None:
        if out.__class__ is not MemberChanged:
            return
        assert isinstance(out, MemberChanged)
        v = out.member
        start = self.start.get(v)
        if start is None or t < start or v == node:
            return
        if out.status is SUSPECT or out.status is FAILED:
            self.first_suspect.setdefault(v, t)
        if out.status is FAILED:
            self.failed.setdefault(v, {}).setdefault(node, t)
            if t >= self.back.get(v, math.inf) + self.grace:
                if node in self.start:
                    self.late_by_victims += 1
                else:
                    self.late_by_others += 1
        elif out.status is ALIVE and v in self.back and t >= self.back[v]:
            self.alive.setdefault(v, {}).setdefault(node, t)


def detection(p: dict[str, Any]) -> Result:
    n, kind, seed = p["nodes"], p["kind"], p["seed"]
    budget = Budget(p["budget"], f"detection {kind} n={n}")
    cfg = Config()
    cl = build(n, seed, cfg)
    sim, ids, tracker = cl.sim, cl.ids, cl.tracker
    res: Result = {"experiment": "detection", "nodes": n, "kind": kind}
    if not warm_up(cl, budget):
        return {**res, "cut_at": budget.cut_at or sim.now, "warm": "not converged"}
    lo, hi = timeouts(cfg, n)
    period = periods_of(cfg)
    rng = random.Random(seed * 7919 + n)
    victims = rng.sample(ids, p["victims"])
    # At most ~2% of the cluster failed at once (at least one): one failure's
    # episode lasts the longest suspicion timeout plus a margin, a pause that
    # long again plus the time it takes to be alive everywhere again.
    pause_len = hi + 10.0
    episode = hi + 10.0 if kind == "crash" else pause_len + 30.0
    concurrent = max(1, round(0.02 * n))
    spacing = episode / concurrent
    log = _Verdicts(tracker.pause_grace)
    sim.observers.append(log)
    t0 = sim.now + 1.0
    for k, v in enumerate(victims):
        t = t0 + k * spacing + rng.random() * period
        log.start[v] = t
        if kind == "crash":
            sim.crash(v, at=t)
            tracker.note_failure(v, t, "crash")
        else:
            sim.pause(v, at=t)
            tracker.note_failure(v, t, "pause")
            sim.resume(v, at=t + pause_len)
            tracker.note_recovery(v, t + pause_len)
            log.back[v] = t + pause_len
    t_end = max(log.start.values()) + episode
    budget.advance(sim, t_end)
    bad = set(victims)
    judges = [i for i in ids if i not in bad]
    first: list[float] = []
    full: list[float] = []
    after_suspect: list[float] = []
    verdict: list[float] = []  # first suspicion -> first verdict anywhere
    spread: list[float] = []  # first verdict -> the last live node's
    recovered: list[float] = []
    undetected = unrecovered = 0
    for v in victims:
        start = log.start[v]
        if start > sim.now:
            continue
        fs = log.first_suspect.get(v)
        if fs is not None:
            first.append(fs - start)
        seen = log.failed.get(v, {})
        limit = log.back.get(v, math.inf)
        times = [seen.get(j, math.inf) for j in judges]
        last = max(times)
        if last < limit and last < math.inf:
            full.append(last - start)
            if fs is not None:
                after_suspect.append(last - fs)
                first_verdict = min(seen.values())
                verdict.append(first_verdict - fs)
                spread.append(last - first_verdict)
        else:
            undetected += 1
        if v in log.back and log.back[v] <= sim.now:
            back = log.alive.get(v, {})
            again = max(back.get(j, math.inf) for j in judges)
            if again < math.inf:
                recovered.append(again - log.back[v])
            else:
                unrecovered += 1
    s = tracker.summary()
    p50 = percentile(first, 50)
    res.update(
        {
            "converged_after_join_s": cl.converged_after,
            "victims": sum(log.start[v] <= sim.now for v in victims),
            "spacing_s": spacing,
            "pause_s": pause_len if kind == "pause" else None,
            "suspicion_min_s": lo,
            "suspicion_max_s": hi,
            "bound_s": lo + 1.0,
            "first_p50_s": p50,
            "first_p50_periods": None if p50 is None else p50 / period,
            "first_mean_periods": statistics.fmean(first) / period if first else None,
            "first_max_s": max(first, default=None),
            "full_p50_s": percentile(full, 50),
            "full_p99_s": percentile(full, 99),
            "full_max_s": max(full, default=None),
            "after_suspect_p50_s": percentile(after_suspect, 50),
            "after_suspect_max_s": max(after_suspect, default=None),
            "within_bound": sum(x <= lo + 1.0 for x in after_suspect),
            "verdict_p50_s": percentile(verdict, 50),
            "verdict_max_s": max(verdict, default=None),
            "spread_p50_s": percentile(spread, 50),
            "spread_max_s": max(spread, default=None),
            "from_failure_within_bound": sum(x <= lo + 1.0 for x in full),
            "late_verdicts_by_resumed": log.late_by_victims,
            "late_verdicts_by_others": log.late_by_others,
            "converged_at_end": s["converged"],
            "undetected": undetected,
            "alive_again_p50_s": percentile(recovered, 50),
            "alive_again_max_s": max(recovered, default=None),
            "not_alive_again": unrecovered,
            "false_positives": s["false_positives"],
            "suspected_healthy": s["suspected_healthy"],
            "tracker_first_p50_s": s["first_detection_p50_s"]
            if kind == "crash"
            else s["pause_first_detection_p50_s"],
            "tracker_full_max_s": s["full_detection_max_s"],
        }
    )
    if budget.cut_at is not None:
        res["cut_at"] = budget.cut_at
    return res


# ------------------------------------------------------ false positives


def false_positives(p: dict[str, Any]) -> Result:
    n, seed, loss, lifeguard = p["nodes"], p["seed"], p["loss"], p["lifeguard"]
    slow, minutes = p["slow"], p["minutes"]
    lg = "on" if lifeguard else "off"
    budget = Budget(p["budget"], f"fp n={n} loss={loss:g} slow={slow} lifeguard {lg}")
    cfg = Config().replace(**{"swim.lifeguard": lifeguard})
    cl = build(n, seed, cfg)
    sim, ids, tracker = cl.sim, cl.ids, cl.tracker
    res: Result = {
        "experiment": "fp",
        "nodes": n,
        "loss": loss,
        "lifeguard": lifeguard,
        "slow": slow,
        "minutes": minutes,
    }
    if not warm_up(cl, budget):
        return {**res, "cut_at": budget.cut_at or sim.now, "warm": "not converged"}
    start = sim.now
    end = start + 60.0 * minutes
    sim.net.loss = loss
    rng = random.Random(seed * 31 + n)
    slow_nodes = rng.sample(ids[1:], slow)
    for v in slow_nodes:
        t = start + rng.random() * (SLOW_ON + SLOW_OFF)
        while t + SLOW_ON < end:
            sim.pause(v, at=t)
            tracker.note_failure(v, t, "pause")
            sim.resume(v, at=t + SLOW_ON)
            tracker.note_recovery(v, t + SLOW_ON)
            t += SLOW_ON + SLOW_OFF
    healthy = [i for i in ids if i not in slow_nodes]
    probes0 = counters_sum(sim, ids, "probes")
    failed0 = counters_sum(sim, ids, "probes_failed")
    msgs0 = sum(sim.traffic.messages.values())
    swim0 = sum(sim.traffic.messages[k] for k in SWIM_NAMES)
    complete = budget.advance(sim, end)
    window = sim.now - start
    s = tracker.summary()
    scores = [sim.node(i).swim.awareness.score for i in healthy]
    slow_scores = [sim.node(i).swim.awareness.score for i in slow_nodes]
    res.update(
        {
            "converged_after_join_s": cl.converged_after,
            "window_s": window,
            "false_positives": s["false_positives"],
            "false_positive_events": s["false_positive_events"],
            "suspected_healthy": s["suspected_healthy"],
            "false_suspicion_events": s["false_suspicions"],
            "slow_declared_failed": s["paused_declared_failed"],
            "probes": counters_sum(sim, ids, "probes") - probes0,
            "probes_failed": counters_sum(sim, ids, "probes_failed") - failed0,
            "refutations": counters_sum(sim, ids, "refutations"),
            "health_mean": statistics.fmean(scores),
            "health_max": max(scores),
            "slow_health_mean": statistics.fmean(slow_scores) if slow_scores else None,
            "msgs_per_node_s": (sum(sim.traffic.messages.values()) - msgs0) / n / max(window, 1e-9),
            "swim_msgs_per_node_s": (sum(sim.traffic.messages[k] for k in SWIM_NAMES) - swim0)
            / n
            / max(window, 1e-9),
        }
    )
    if complete:
        sim.net.loss = 0.0
        budget.advance(sim, sim.now + DRAIN)
        after = tracker.summary()
        res["false_positives_after_drain"] = after["false_positives"]
        res["converged_after_drain"] = after["converged"]
        res["unconverged_pairs"] = after["unconverged_pairs"]
    if budget.cut_at is not None:
        res["cut_at"] = budget.cut_at
    return res


# ----------------------------------------------------------------- load


def load(p: dict[str, Any]) -> Result:
    n, seed, window = p["nodes"], p["seed"], p["window"]
    budget = Budget(p["budget"], f"load n={n}")
    cfg = Config()
    cl = build(n, seed, cfg)
    sim = cl.sim
    res: Result = {"experiment": "load", "nodes": n}
    if not warm_up(cl, budget, drained=True):
        res.update(
            {
                "cut_at": budget.cut_at or sim.now,
                "warm": "not drained",
                "rss_mb": rss_mb(),
            }
        )
        return res
    sim.use_codec = True  # real byte counts from here on
    msgs0 = Counter(sim.traffic.messages)
    bytes0 = Counter(sim.traffic.bytes)
    start = sim.now
    budget.advance(sim, start + window)
    span = sim.now - start
    per = n * span / cfg.swim.probe_period  # member-periods in the window
    msgs = Counter(sim.traffic.messages)
    msgs.subtract(msgs0)
    sizes = Counter(sim.traffic.bytes)
    sizes.subtract(bytes0)
    res.update(
        {
            "converged_after_join_s": cl.converged_after,
            "window_s": span,
            "per_type_msgs": {k: msgs[k] / per for k in SWIM_NAMES},
            "per_type_bytes": {k: sizes[k] / per for k in SWIM_NAMES},
            "swim_msgs": sum(msgs[k] for k in SWIM_NAMES) / per,
            "swim_bytes": sum(sizes[k] for k in SWIM_NAMES) / per,
            "probe_msgs": sum(msgs[k] for k in SWIM_NAMES if k != "PushPull") / per,
            "probe_bytes": sum(sizes[k] for k in SWIM_NAMES if k != "PushPull") / per,
            "all_msgs": sum(msgs.values()) / per,
            "all_bytes": sum(sizes.values()) / per,
            "push_pull_interval_s": push_pull_interval(cfg, n),
            "rss_mb": rss_mb(),
        }
    )
    if budget.cut_at is not None:
        res["cut_at"] = budget.cut_at
    return res


def push_pull_interval(cfg: Config, n: int) -> float:
    from overlay.push_pull import push_pull_interval as ppi

    return ppi(cfg.swim.push_pull_period, n)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------ partition


def partition(p: dict[str, Any]) -> Result:
    n, seed, duration = p["nodes"], p["seed"], p["duration"]
    budget = Budget(p["budget"], f"partition n={n}")
    cfg = Config()
    cl = build(n, seed, cfg)
    sim, ids, tracker = cl.sim, cl.ids, cl.tracker
    res: Result = {"experiment": "partition", "nodes": n, "duration_s": duration}
    if not warm_up(cl, budget):
        return {**res, "cut_at": budget.cut_at or sim.now, "warm": "not converged"}
    order = list(ids)
    random.Random(seed * 101 + n).shuffle(order)
    half_a, half_b = order[: n // 2], order[n // 2 :]
    t_cut = sim.now
    before = Counter(sim.traffic.messages)
    budget.say(sim, f"partition for {duration:.0f} s")
    sim.partition([half_a, half_b])
    groups = {**{i: 1 for i in half_a}, **{i: 2 for i in half_b}}
    note: Callable[..., None] | None = getattr(tracker, "note_partition", None)
    if note is not None:
        note(groups, t_cut, math.inf)
    if not budget.advance(sim, t_cut + duration):
        return {
            **res,
            "cut_at": budget.cut_at,
            "during": delta(sim, before),
            "split_s": sim.now - t_cut,
        }
    during = delta(sim, before)
    before = Counter(sim.traffic.messages)
    # How far apart the halves are at the heal: members of the other half
    # that a node holds failed (a sample of observers), overlay components.
    sample = random.Random(seed).sample(ids, min(50, n))
    held_failed = []
    for o in sample:
        members = sim.node(o).swim.members
        other = half_b if groups[o] == 1 else half_a
        held_failed.append(
            sum(1 for x in other if (m := members.get(x)) is None or m.status is not ALIVE)
            / len(other)
        )
    components = nx.number_connected_components(overlay_graph(sim, ids))
    t_heal = sim.now
    budget.say(sim, f"heal; {components} overlay components")
    sim.heal()
    if note is not None:
        note(groups, t_cut, t_heal)
    alive_check = AliveEverywhere(sim, ids)
    alive_at = connected_at = both_at = None
    t = t_heal
    while t < t_heal + HEAL_CAP:
        t += HEAL_STEP
        if not budget.advance(sim, t, chunk=HEAL_STEP):
            break
        alive = alive_check()
        if alive and alive_at is None:
            alive_at = sim.now - t_heal
        connected = nx.is_connected(overlay_graph(sim, ids))
        if connected and connected_at is None:
            connected_at = sim.now - t_heal
        if alive and connected:
            both_at = sim.now - t_heal
            break
    res.update(
        {
            "converged_after_join_s": cl.converged_after,
            "other_half_not_alive_at_heal": statistics.fmean(held_failed),
            "components_at_heal": components,
            "alive_everywhere_s": alive_at,
            "connected_s": connected_at,
            "one_cluster_s": both_at,
            "watched_s": sim.now - t_heal,
            "bridges": sum(sim.node(i).coupling.bridges for i in ids),
            "reconnects": counters_sum(sim, ids, "reconnected"),
            "refutations": counters_sum(sim, ids, "refutations"),
            "during": during,
            "after": delta(sim, before),
        }
    )
    if budget.cut_at is not None:
        res["cut_at"] = budget.cut_at
    return res


def delta(sim: Simulation, before: Counter[str]) -> dict[str, int]:
    """Messages sent since `before`, by type, most frequent first."""
    now = Counter(sim.traffic.messages)
    now.subtract(before)
    return {k: v for k, v in now.most_common() if v}


# --------------------------------------------------------------- driver

EXPERIMENTS: dict[str, Callable[[dict[str, Any]], Result]] = {
    "detection": detection,
    "fp": false_positives,
    "load": load,
    "partition": partition,
}


def code_id() -> str:
    """A digest of the protocol and simulator sources this process imported
    (overlay/ is under active work: a run whose workers saw different code
    says so)."""
    import hashlib

    import overlay
    import sim.engine

    h = hashlib.sha256()
    files = sorted(Path(overlay.__file__).parent.glob("*.py"))
    files += [
        Path(sim.engine.__file__),
        Path(sim.engine.__file__).with_name("membership_metrics.py"),
    ]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def git_head() -> str:
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "overlay", "sim"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    if not head:
        return "not a git checkout"
    return head + (" (+ uncommitted changes in overlay/ or sim/)" if dirty else "")


def run_task(task: tuple[str, dict[str, Any]]) -> Result:
    name, params = task
    code = code_id()
    wall0, cpu0 = time.monotonic(), time.process_time()
    try:
        res = EXPERIMENTS[name](params)
    except MemoryError:
        res = {"experiment": name, **params, "error": "out of memory"}
    res["wall_s"] = time.monotonic() - wall0
    res["cpu_s"] = time.process_time() - cpu0
    res["rss_mb"] = rss_mb()
    res["params"] = params
    res["code"] = code
    return res


def mem_available_mb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.inf


def fmt(x: Any, spec: str = ".2f") -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def cut_note(r: Result) -> str:
    if "error" in r:
        return f"  [{r['error']}]"
    if "cut_at" in r:
        warm = r.get("warm")
        return f"  [cut short at t={r['cut_at']:.0f} s{': ' + warm if warm else ''}]"
    return ""


def print_detection(rows: list[Result]) -> None:
    print("\n## Detection. crash: the process dies, its streams break (HyParView neighbours")
    print("## probe it at once); pause: SIGSTOP, nothing breaks, only SWIM's probing finds it.")
    print("## full: from the failure until the last live node holds it failed; susp->all:")
    print("## the same from its first suspicion; = susp->verdict (the first accuser's timer)")
    print("## + verdict->last (the broadcast). Bound: suspicion_min + 1 s.")
    print(
        f"{'nodes':>6} {'kind':>5} {'vict':>4} {'1st p50':>7} {'periods':>7} {'1st max':>7} "
        f"{'full p50':>8} {'p99':>6} {'max':>6} {'susp->verd':>10} {'verd->last':>10} "
        f"{'susp->all':>9} {'max':>6} {'bound':>5} {'in bound':>8} {'from fail':>9} "
        f"{'undet':>5} {'back alive':>10} {'FP':>3} {'wall s':>6} {'CPU s':>6}"
    )
    print(
        f"{'':>6} {'':>5} {'':>4} {'s':>7} {'':>7} {'s':>7} {'s':>8} {'':>6} {'':>6} "
        f"{'p50 s':>10} {'max s':>10} {'p50 s':>9} {'s':>6} {'s':>5} {'susp':>8} {'':>9} "
        f"{'':>5} {'max s':>10}"
    )
    for r in rows:
        if "first_p50_s" not in r:
            print(f"{r['nodes']:>6} {r['kind']:>5}{cut_note(r)}")
            continue
        det = r["victims"] - r["undetected"]
        in_bound = f"{r['within_bound']}/{det}"
        from_fail = f"{r['from_failure_within_bound']}/{det}"
        print(
            f"{r['nodes']:>6} {r['kind']:>5} {r['victims']:>4} {fmt(r['first_p50_s']):>7} "
            f"{fmt(r['first_p50_periods']):>7} {fmt(r['first_max_s']):>7} "
            f"{fmt(r['full_p50_s']):>8} {fmt(r['full_p99_s']):>6} {fmt(r['full_max_s']):>6} "
            f"{fmt(r['verdict_p50_s']):>10} {fmt(r['spread_max_s']):>10} "
            f"{fmt(r['after_suspect_p50_s']):>9} {fmt(r['after_suspect_max_s']):>6} "
            f"{r['bound_s']:>5.1f} {in_bound:>8} {from_fail:>9} {r['undetected']:>5} "
            f"{fmt(r['alive_again_max_s']):>10} {r['false_positives']:>3} "
            f"{r['wall_s']:>6.0f} {r['cpu_s']:>6.0f}{cut_note(r)}"
        )
    for r in rows:
        if "first_p50_s" not in r:
            continue
        paused = "" if r["pause_s"] is None else f", each paused {r['pause_s']:.0f} s"
        late = ""
        if r["pause_s"] is not None:
            late = (
                f"; verdicts on a resumed victim >5 s after it resumed: "
                f"{r['late_verdicts_by_resumed']} by nodes that were paused themselves "
                f"(stale backlog), {r['late_verdicts_by_others']} by others"
            )
        print(
            f"  {r['nodes']} {r['kind']}: failures {r['spacing_s']:.1f} s apart{paused}; "
            f"suspicion timeout {r['suspicion_min_s']:.0f}..{r['suspicion_max_s']:.0f} s; "
            f"mean first suspicion {fmt(r['first_mean_periods'])} periods; "
            f"susp->verdict max {fmt(r['verdict_max_s'])} s; "
            f"verdict->last p50 {fmt(r['spread_p50_s'])} s; "
            f"healthy members suspected {r['suspected_healthy']}{late}; "
            f"lists converged at the end: {fmt(r['converged_at_end'])}; "
            f"cluster formed {fmt(r['converged_after_join_s'], '.0f')} s after the last join"
        )


def print_fp(rows: list[Result]) -> None:
    print("\n## False positives: live, unpaused members declared failed (distinct nodes;")
    print("## verdict events in brackets). use_codec=False (no byte counts needed).")
    print(
        f"{'nodes':>6} {'loss':>5} {'slow':>4} {'LG':>3} {'window s':>8} {'FP':>9} "
        f"{'susp.healthy':>12} {'failed probes':>13} {'of probes':>9} {'refut.':>6} "
        f"{'health':>6} {'msg/node/s':>10} {'conv.':>5} {'wall s':>7}"
    )
    for r in rows:
        if "false_positives" not in r:
            print(
                f"{r['nodes']:>6} {r['loss']:>5.2f} {r['slow']:>4} "
                f"{'on' if r['lifeguard'] else 'off':>3}{cut_note(r)}"
            )
            continue
        fp = f"{r['false_positives']} [{r['false_positive_events']}]"
        print(
            f"{r['nodes']:>6} {r['loss']:>5.2f} {r['slow']:>4} "
            f"{'on' if r['lifeguard'] else 'off':>3} {r['window_s']:>8.0f} {fp:>9} "
            f"{r['suspected_healthy']:>12} {r['probes_failed']:>13} {r['probes']:>9} "
            f"{r['refutations']:>6} {r['health_mean']:>6.2f} {r['msgs_per_node_s']:>10.1f} "
            f"{fmt(r.get('converged_after_drain')):>5} {r['wall_s']:>7.0f}{cut_note(r)}"
        )
    print(
        "  susp.healthy: distinct live members suspected at least once; failed probes: "
        "probes that ended in a suspicion;"
    )
    print(
        f"  health: mean Lifeguard score of the healthy nodes at the end; slow nodes are paused "
        f"{SLOW_ON:.0f} s of every {SLOW_ON + SLOW_OFF:.0f} s, their own verdicts are not FPs;"
    )
    print(
        f"  conv.: every list complete and all alive after {DRAIN:.0f} s without loss. "
        "Counts include the drain."
    )


def fp_order(r: Result) -> tuple[int, bool, float, bool]:
    """Largest clusters first; then loss rising, slow nodes last, Lifeguard on first."""
    return (-r["nodes"], r["slow"] > 0, r["loss"], not r["lifeguard"])


def print_load(rows: list[Result], skipped: list[str]) -> None:
    print("\n## Message load per member per protocol period, steady state (codec on in the")
    print("## window: real bytes). probe = Ping+Ack+PingReq+Nack+MemberUpdates;")
    print("## push-pull is the anti-entropy exchange, O(N) bytes every interval.")
    print(
        f"{'nodes':>6} {'window s':>8} {'Ping':>5} {'Ack':>5} {'PingReq':>7} {'Nack':>5} "
        f"{'MbrUpd':>6} {'PushPull':>8} {'SWIM msg':>8} {'probe B':>8} {'pp B':>8} "
        f"{'SWIM B':>8} {'all msg':>7} {'all B':>8} {'pp every':>8} {'RSS MB':>7} {'wall s':>7}"
    )
    for r in rows:
        if "per_type_msgs" not in r:
            print(f"{r['nodes']:>6}{cut_note(r)}  (peak RSS {r['rss_mb']:.0f} MB)")
            continue
        m = r["per_type_msgs"]
        pp_bytes = r["per_type_bytes"]["PushPull"]
        print(
            f"{r['nodes']:>6} {r['window_s']:>8.0f} {m['Ping']:>5.2f} {m['Ack']:>5.2f} "
            f"{m['PingReq']:>7.3f} {m['Nack']:>5.3f} {m['MemberUpdates']:>6.3f} "
            f"{m['PushPull']:>8.4f} {r['swim_msgs']:>8.3f} {r['probe_bytes']:>8.1f} "
            f"{pp_bytes:>8.1f} {r['swim_bytes']:>8.1f} {r['all_msgs']:>7.2f} "
            f"{r['all_bytes']:>8.1f} {r['push_pull_interval_s']:>7.0f}s {r['rss_mb']:>7.0f} "
            f"{r['wall_s']:>7.0f}{cut_note(r)}"
        )
    for r in rows:
        if "per_type_msgs" in r and r["nodes"] >= 500:
            kb = r["rss_mb"] * 1024 / r["nodes"] ** 2
            print(
                f"  {r['nodes']:,} nodes: peak RSS {r['rss_mb']:.0f} MB = {kb:.2f} KB per "
                f"(node, member) pair; the same at 10,000 nodes: ~{kb * 1e8 / 1024**2:.0f} GB"
            )
    for line in skipped:
        print(f"  {line}")


def print_partition(rows: list[Result]) -> None:
    print("\n## Partition-heal: 50/50 partition, then seconds after the heal until every")
    print("## member is alive in every list and the overlay (active views) is connected.")
    print(
        f"{'nodes':>6} {'cut s':>5} {'other half down':>15} {'comp.':>5} {'alive all s':>11} "
        f"{'connected s':>11} {'one cluster s':>13} {'<= 30 s':>7} {'bridges':>7} "
        f"{'reconn.':>7} {'wall s':>7}"
    )
    for r in rows:
        if "one_cluster_s" not in r:
            print(f"{r['nodes']:>6} {r['duration_s']:>5.0f}{cut_note(r)}")
            continue
        ok = r["one_cluster_s"] is not None and r["one_cluster_s"] <= 30.0
        print(
            f"{r['nodes']:>6} {r['duration_s']:>5.0f} {r['other_half_not_alive_at_heal']:>15.1%} "
            f"{r['components_at_heal']:>5} {fmt(r['alive_everywhere_s']):>11} "
            f"{fmt(r['connected_s']):>11} {fmt(r['one_cluster_s']):>13} {fmt(ok):>7} "
            f"{r['bridges']:>7} {r['reconnects']:>7} {r['wall_s']:>7.0f}{cut_note(r)}"
        )
    print(f"  checked every {HEAL_STEP} s of simulated time, for at most {HEAL_CAP:.0f} s")
    for r in rows:
        for phase, span in (("during", r.get("split_s", r["duration_s"])), ("after", None)):
            counts = r.get(phase)
            if not counts:
                continue
            if span is None:
                span = r.get("watched_s") or 0.0
            total = sum(counts.values())
            rate = total / r["nodes"] / span if span else 0.0
            top = ", ".join(f"{k} {v:,}" for k, v in list(counts.items())[:6])
            what = (
                f"the {span:.0f} s split" if phase == "during" else f"{span:.2f} s after the heal"
            )
            print(f"  {r['nodes']}: {total:,} messages in {what} ({rate:.0f}/node/s): {top}")


def plan(args: argparse.Namespace) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """The simulations to run (most expensive first), and the load sizes
    skipped for lack of memory, with the reason."""
    tasks: list[tuple[str, dict[str, Any]]] = []
    skipped: list[str] = []
    exps = set(args.experiments.split(","))
    unknown = exps - set(EXPERIMENTS)
    if unknown:
        raise SystemExit(f"unknown experiments: {', '.join(sorted(unknown))}")
    seed, budget = args.seed, args.task_budget
    if "fp" in exps:

        def fp(n: int, loss: float, slow: int, minutes: float) -> None:
            for lifeguard in (True, False):
                params = dict(nodes=n, loss=loss, lifeguard=lifeguard, slow=slow, minutes=minutes)
                tasks.append(("fp", {**params, "seed": seed, "budget": budget}))

        light = [x for x in args.fp_losses if x <= 0.05]
        heavy = [x for x in args.fp_losses if x > 0.05]
        for loss in light:
            fp(args.fp_nodes, loss, 0, args.fp_minutes)
        if args.slow:
            fp(args.fp_nodes, 0.05, args.slow, args.fp_minutes)
        if heavy and args.fp_heavy_nodes != args.fp_nodes:
            # The same clusters as the heavy-loss runs, at 5%: the reference.
            for loss in light:
                fp(args.fp_heavy_nodes, loss, 0, args.fp_heavy_minutes)
        for loss in heavy:
            fp(args.fp_heavy_nodes, loss, 0, args.fp_heavy_minutes)
    if "load" in exps:
        avail = mem_available_mb()
        # Full membership: every node holds every member. Measured on this
        # code: ~0.5 KB per (node, member) pair in one process.
        per_pair_kb = 0.55
        for n in args.load_sizes:
            need = per_pair_kb * n * n / 1024 + 200
            if need > 0.8 * avail:
                skipped.append(
                    f"{n:,} nodes skipped: full membership needs ~{need / 1024:.0f} GB "
                    f"(~{per_pair_kb} KB per node x member pair, measured), "
                    f"{avail / 1024:.0f} GB available; its join alone would carry "
                    f"~{n * n * math.ceil(math.log10(n + 1)) * 4 / 1e6:.0f} M piggybacked "
                    "updates before the lists converge"
                )
                continue
            tasks.append(("load", dict(nodes=n, seed=seed, window=args.load_window, budget=budget)))
    if "partition" in exps:
        for n in args.partition_sizes:
            params = dict(nodes=n, seed=seed, duration=60.0, budget=args.partition_budget)
            tasks.append(("partition", params))
    if "detection" in exps:
        for n in args.detect_sizes:
            for kind in ("crash", "pause"):
                victims = min(args.victims, max(2, n // 5))
                tasks.append(
                    (
                        "detection",
                        dict(nodes=n, kind=kind, seed=seed, victims=victims, budget=budget),
                    )
                )

    def cost(t: tuple[str, dict[str, Any]]) -> float:
        """Rough CPU seconds, to start the longest first: everything grows
        as N^2 (N members in N lists), loss as the rate of false suspicions
        (each one a cluster-wide broadcast and its refutation)."""
        name, p = t
        n2 = float(p["nodes"]) ** 2
        if name == "fp":
            return 2.5e-5 * n2 * float(p["minutes"]) * (1.0 + (float(p["loss"]) / 0.05) ** 3)
        return n2 * {"partition": 3.6e-3, "detection": 4e-4, "load": 1.5e-4}[name]

    tasks.sort(key=cost, reverse=True)
    return tasks, skipped


def floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x]


def ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, short windows (~2 min)")
    p.add_argument("--experiments", default="detection,fp,load,partition")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--detect-sizes", type=ints, default=[100, 1000])
    p.add_argument("--victims", type=int, default=20, help="failures per detection run")
    p.add_argument("--fp-nodes", type=int, default=1000)
    p.add_argument("--fp-minutes", type=float, default=10.0, help="window at 5%% loss")
    p.add_argument("--fp-heavy-nodes", type=int, default=200, help="cluster size above 5%% loss")
    p.add_argument("--fp-heavy-minutes", type=float, default=10.0, help="window above 5%% loss")
    p.add_argument("--fp-losses", type=floats, default=[0.05, 0.10, 0.20])
    p.add_argument("--slow", type=int, default=5, help="slow nodes (0: skip that run)")
    p.add_argument("--load-sizes", type=ints, default=[100, 1000, 2000, 10000])
    p.add_argument("--load-window", type=float, default=60.0, help="simulated seconds")
    p.add_argument("--partition-sizes", type=ints, default=[100, 1000])
    p.add_argument(
        "--task-budget", type=float, default=1800.0, help="CPU seconds per simulation at most"
    )
    p.add_argument(
        "--partition-budget",
        type=float,
        default=7200.0,
        help="CPU seconds per partition simulation (a 50/50 split of 1,000 nodes costs"
        " O(N^2) broadcasts: every node suspects, then declares failed, half the cluster)",
    )
    p.add_argument("--json", default="", metavar="FILE", help="also write every figure here")
    args = p.parse_args()
    if args.quick:
        args.detect_sizes = [100]
        args.victims = min(args.victims, 6)
        args.fp_nodes = args.fp_heavy_nodes = 100
        args.fp_minutes = args.fp_heavy_minutes = 1.0
        args.slow = min(args.slow, 2)
        args.load_sizes = [100, 300, 10000]
        args.load_window = 30.0
        args.partition_sizes = [100]
        args.task_budget = min(args.task_budget, 60.0)
        args.partition_budget = min(args.partition_budget, 60.0)
    tasks, skipped = plan(args)
    print(
        f"swim_detection: seed {args.seed}, {len(tasks)} simulations on {args.jobs} processes"
        f"{' (quick)' if args.quick else ''}; joins {JOIN_GAP * 1000:.0f} ms apart through the"
        f" first node; defaults of overlay.config otherwise (probe period "
        f"{Config().swim.probe_period:g} s, probe timeout {Config().swim.probe_timeout:g} s, "
        f"k={Config().swim.indirect_k}, suspicion_mult {Config().swim.suspicion_mult:g}, "
        f"max {Config().swim.suspicion_max_mult:g}x)",
        flush=True,
    )
    code = code_id()
    print(f"code: {git_head()}; sources digest {code}", flush=True)
    t0 = time.monotonic()
    results: list[Result] = []
    # A SIGTERM ends the run like Ctrl-C: the pool's workers go with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(max(1, args.jobs), maxtasksperchild=1) as pool:
        for r in pool.imap_unordered(run_task, tasks):
            results.append(r)
            label = ", ".join(
                f"{k}={v}"
                for k, v in r["params"].items()
                if k not in ("seed", "budget") and v is not None
            )
            print(
                f"  done: {r['experiment']} ({label}) in {r['wall_s']:.0f} s wall, "
                f"{r['cpu_s']:.0f} s CPU, {r['rss_mb']:.0f} MB{cut_note(r)}",
                file=sys.stderr,
                flush=True,
            )
    changed = sorted({r["code"] for r in results} - {code})
    if changed:
        print(
            f"WARNING: overlay/ or sim/ changed during the run: workers saw digests "
            f"{', '.join(changed)} besides {code}; the rows are not all from the same code"
        )
    by = {name: [r for r in results if r["experiment"] == name] for name in EXPERIMENTS}
    order = {"crash": 0, "pause": 1}
    if by["detection"]:
        print_detection(sorted(by["detection"], key=lambda r: (r["nodes"], order[r["kind"]])))
    if by["fp"]:
        print_fp(sorted(by["fp"], key=fp_order))
    if by["load"] or skipped:
        print_load(sorted(by["load"], key=lambda r: r["nodes"]), skipped)
    if by["partition"]:
        print_partition(sorted(by["partition"], key=lambda r: r["nodes"]))
    print("\n## Wall time per experiment (sum over its simulations; CPU s in brackets)")
    for name, rows in by.items():
        if rows:
            wall = sum(r["wall_s"] for r in rows)
            cpu = sum(r["cpu_s"] for r in rows)
            print(f"  {name:>10}: {wall:7.0f} s  [{cpu:.0f}]")
    print(f"  {'elapsed':>10}: {time.monotonic() - t0:7.0f} s on {args.jobs} processes")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
