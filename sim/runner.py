"""Run a scenario on the simulator and produce its report.

Theory of operation: a cursor walks the timeline (`sim.scenario`). Before
each step the simulation runs up to the step's time, then the step acts on
the state as it is then (victims are drawn among the nodes live at that
moment). Between steps the simulation advances in chunks of simulated time,
which is where the progress callback and the *watches* run: every
`WATCH_INTERVAL` simulated seconds the runner checks whether the overlay is
whole again after a crash or a heal, and whether SWIM's member lists are
complete after the last join or a heal, and records how long that took.

Randomness: the simulation draws from `Simulation(seed)`; the scenario's own
choices (contacts, victims, senders, partition groups) from a second
generator derived from the same seed, so the same seed and scenario give the
same report, wall-clock fields (`run.wall_s`, `run.events_per_s`,
`run.peak_rss_mb`) aside.

The report's keys are a contract (issue 3, section 3): `scenario`, `nodes`,
`seed`, `run`, `overlay`, `broadcast`, `membership`, `messages`, and
`failure` when the timeline has a crash step (the last one: churn's crashes
are not counted there), `partition` when it partitions (the last split).
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, assert_never

from overlay.ids import NodeId
from sim import analysis, scenario, underlay
from sim.broadcast_metrics import BroadcastTracker
from sim.coordinate_metrics import coordinate_errors
from sim.engine import NetworkModel, Simulation
from sim.membership_metrics import MembershipTracker
from sim.scenario import (
    Churn,
    Crash,
    Heal,
    Join,
    Leave,
    Loss,
    Partition,
    Pause,
    Publish,
    Resume,
    Scenario,
    ScenarioError,
    Selecting,
    Step,
    StepBase,
    Wait,
)
from sim.timeline import WATCH_GROUP_MAX, Timeline, broadcast_series

WATCH_INTERVAL = 0.25  # simulated seconds between recovery checks
CHUNK = 1.0  # simulated seconds between progress callbacks otherwise
CDF_POINTS = 101
MAX_JUDGES = 1000  # member lists read for membership.converged (O(judges x N))

Progress = Callable[[float, float, int], None]  # (sim time, planned total, events)


@dataclass(slots=True)
class Watch:
    name: str
    start: float
    check: Callable[[], bool]
    done_after: float | None = None
    closed: bool = False  # stopped waiting: a disruption came first


@dataclass(slots=True)
class Outcome:
    """What a run hands back: the JSON report, and the series the plots draw
    (kept out of the report to keep it compact)."""

    report: dict[str, Any]
    series: dict[str, list[float]] = field(default_factory=dict)
    marks: list[tuple[str, float, float]] = field(default_factory=list)  # sim.timeline


def network_of(sc: Scenario, seed: int) -> NetworkModel:
    get = {**scenario.NETWORK_KEYS, **sc.network}.__getitem__
    net = NetworkModel(
        latency_min=float(get("latency_min")),
        latency_max=float(get("latency_max")),
        loss=float(get("loss")),
        connect_timeout=float(get("connect_timeout")),
        break_after=float(get("break_after")),
    )
    spec = sc.network.get("underlay")
    if spec is not None:
        try:
            net.underlay = underlay.build(spec, seed)
        except underlay.UnderlayError as exc:
            raise ScenarioError(f"{sc.source}: {exc}") from None
    return net


class Runner:
    def __init__(
        self,
        sc: Scenario,
        seed: int,
        *,
        use_codec: bool = True,
        progress: Progress | None = None,
    ) -> None:
        self.sc = sc
        self.seed = seed
        self.plan = scenario.steps(sc)
        self.total = scenario.duration(self.plan)
        self.sim = Simulation(
            scenario.config_of(sc), seed, network=network_of(sc, seed), use_codec=use_codec
        )
        self.rng = random.Random(f"scenario-{seed}")
        self.broadcasts = BroadcastTracker(self.sim)
        self.membership = MembershipTracker(self.sim)
        self.timeline = Timeline(self.sim)
        self.progress = progress
        self.created: list[NodeId] = []
        self.by_name: dict[str, NodeId] = {}
        self.paused: dict[NodeId, None] = {}
        self.leaving: set[NodeId] = set()
        self.groups: list[list[NodeId]] = []
        self._cut: dict[NodeId, int] = {}
        self.watches: list[Watch] = []
        self.failure: dict[str, Any] | None = None
        self.partition: dict[str, Any] | None = None
        self.cursor = 0.0
        self._payloads: dict[int, bytes] = {}
        # Each publish step: who sends, and the window its broadcasts start in.
        self.publish_steps: list[tuple[str, float, float]] = []

    # ------------------------------------------------------------ running

    def run(self) -> Outcome:
        started = time.perf_counter()
        with rare_collections():
            for step in self.plan:
                if step.at is not None:
                    self.cursor = max(self.cursor, step.at)
                self.advance(self.cursor)
                self.do(step)
            self.advance(self.cursor)
        self.timeline.sample()
        wall = time.perf_counter() - started
        return self._outcome(wall)

    def advance(self, t: float) -> None:
        """Run the simulation up to `t`, events at `t` included."""
        sim = self.sim
        while sim.now < t:
            chunk = WATCH_INTERVAL if any(not w.closed for w in self.watches) else CHUNK
            sim.run_until(min(t, sim.now + chunk))
            self._check_watches()
            self.timeline.maybe_sample()
            if self.progress is not None:
                self.progress(sim.now, self.total, sim.events)
        sim.run_until(t)

    def _watch(self, name: str, check: Callable[[], bool], start: float | None = None) -> None:
        """Measure how long after `start` (default now) `check` first holds."""
        self.watches = [w for w in self.watches if w.name != name]
        w = Watch(name, self.sim.now if start is None else start, check)
        self.watches.append(w)
        self._check_watches()

    def _check_watches(self) -> None:
        now = self.sim.now
        for w in self.watches:
            if not w.closed and now >= w.start and w.check():
                w.done_after = now - w.start
                w.closed = True

    def _disrupt(self) -> None:
        """A crash, pause, leave, partition or churn: what was still awaited
        (members complete after the joins) is not awaited any more."""
        self._check_watches()
        for w in self.watches:
            w.closed = True

    def _watched(self, name: str) -> float | None:
        for w in self.watches:
            if w.name == name:
                return w.done_after
        return None

    # -------------------------------------------------------------- nodes

    def healthy(self) -> list[NodeId]:
        """Running, unpaused nodes that are not leaving, in creation order."""
        nodes = self.sim.nodes
        return [
            n
            for n in self.created
            if (sn := nodes[(n.host, n.port)]).alive
            and sn.started_at is not None
            and not sn.paused
            and n not in self.leaving
        ]

    def _new_node(self, at: float, contact: NodeId | None) -> NodeId:
        name = f"n{len(self.created)}"
        nid = self.sim.add_node(name, at=at)
        if contact is not None:
            self.sim.join(nid, [contact], at=at)
        self.created.append(nid)
        self.by_name[name] = nid
        return nid

    def _named(self, step: StepBase, names: Sequence[str]) -> list[NodeId]:
        out = []
        for name in names:
            nid = self.by_name.get(name)
            if nid is None:
                raise ScenarioError(f"{step.where}: no node named {name!r} (yet)")
            out.append(nid)
        return out

    def _select(self, step: Selecting) -> list[NodeId]:
        """The step's victims: named ones still running, or a count or a
        fraction of the healthy nodes drawn at random."""
        if step.nodes is not None:
            nodes = self.sim.nodes
            return [n for n in self._named(step, step.nodes) if nodes[(n.host, n.port)].alive]
        pool = self.healthy()
        if step.count is not None:
            k = step.count
        else:
            assert step.fraction is not None  # exactly one is given: checked when read
            k = round(step.fraction * len(pool))
        return self.rng.sample(pool, min(k, len(pool)))

    # -------------------------------------------------------------- steps

    def do(self, step: Step) -> None:
        """Act out one step, now."""
        match step:
            case Join():
                self._join(step)
            case Wait():
                self.cursor = self.sim.now + step.seconds
            case Publish():
                self._publish(step)
            case Crash():
                self._crash(step)
            case Pause():
                self._pause(step)
            case Resume():
                names = step.nodes
                for v in self._named(step, names) if names is not None else list(self.paused):
                    self._resume(v)
            case Leave():
                self._disrupt()
                now = self.sim.now
                for v in self._select(step):
                    self._leave(v, now, step.linger)
            case Partition():
                self._partition(step)
            case Heal():
                self._heal()
            case Loss():
                self.sim.set_loss(step.value)
            case Churn():
                self._churn(step)
            case _:
                assert_never(step)

    def _join(self, step: Join) -> None:
        now = self.sim.now
        rate = step.rate
        first = step.contact == "first"
        pool = self.healthy()
        for i in range(step.count):
            contact = (pool[0] if first else self.rng.choice(pool)) if pool else None
            pool.append(self._new_node(now + (i / rate if rate > 0 else 0.0), contact))
        self.cursor = now + scenario.step_length(step)
        self.timeline.mark("joins", now, now + max(0, step.count - 1) / rate if rate > 0 else now)
        last = now + (step.count - 1) / rate if rate > 0 else now
        if self.sim.config.swim.enabled:
            self._watch("members_complete", lambda: analysis.members_merged(self.sim), start=last)

    def _publish(self, step: Publish) -> None:
        now = self.sim.now
        size = step.size
        payload = self._payloads.setdefault(size, b"x" * size)
        state: dict[str, Any] = {"one": None}
        who = step.sender if isinstance(step.sender, str) else f"{len(step.sender)} named"
        self.publish_steps.append((who, now, now + step.count * step.interval + 1e-9))
        self.timeline.mark(f"publish from {who}", now, now + max(0, step.count - 1) * step.interval)
        for k in range(step.count):
            self.sim.call_at(
                now + k * step.interval, partial(self._publish_round, step, k, payload, state)
            )
        if not step.background:
            self.cursor = now + scenario.step_length(step)

    def _publish_round(self, step: Publish, k: int, payload: bytes, state: dict[str, Any]) -> None:
        sender = step.sender
        topic = step.topic
        pool = self.healthy()
        if not pool:
            return
        chosen: list[NodeId]
        if isinstance(sender, tuple):
            chosen = self._named(step, [sender[k % len(sender)]])
        elif sender == "all":
            chosen = pool
        elif sender == "one":
            one = state["one"]
            if one is None or one not in pool:
                one = state["one"] = self.rng.choice(pool)
            chosen = [one]
        elif sender == "groups" and self.groups:
            alive = set(pool)
            group = [n for n in self.groups[k % len(self.groups)] if n in alive]
            chosen = [self.rng.choice(group or pool)]
        else:
            chosen = [self.rng.choice(pool)]
        for nid in chosen:
            self.sim.publish(nid, topic, payload)

    def _crash(self, step: Crash) -> None:
        self._disrupt()
        pool = len(self.healthy())
        victims = self._select(step)
        now = self.sim.now
        for v in victims:
            self.sim.crash(v, host_down=step.kind == "host")
            self.membership.note_failure(v, now, "crash")
        self.failure = {
            "at_s": now,
            "fraction": step.fraction if step.fraction is not None else len(victims) / max(1, pool),
            "crashed": len(victims),
        }
        self.timeline.mark(f"crash of {len(victims)}", now)
        self.advance(now)  # the crashes happen before the first check
        self._watch("failure", lambda: analysis.overlay_whole(self.sim))

    def _pause(self, step: Pause) -> None:
        self._disrupt()
        now = self.sim.now
        for v in self._select(step):
            if v in self.paused:
                continue
            self.sim.pause(v)
            self.paused[v] = None
            self.membership.note_failure(v, now, "pause")
            if step.duration is not None:
                self.sim.call_at(now + step.duration, partial(self._resume, v))

    def _resume(self, v: NodeId) -> None:
        """Resume `v` now if it is still paused (a resume step may have come
        before the end of a pause with a duration)."""
        if v in self.paused:
            del self.paused[v]
            self.sim.resume(v)
            self.membership.note_recovery(v, self.sim.now)

    def _leave(self, v: NodeId, now: float, linger: float) -> None:
        self.sim.leave(v, exit_within=linger)
        self.leaving.add(v)
        self.membership.note_failure(v, now, "leave")

    def _partition(self, step: Partition) -> None:
        self._disrupt()
        cut: list[list[NodeId]] = []
        fractions = [g for g in step.groups if isinstance(g, float)]
        if fractions:  # consecutive slices of the shuffled healthy nodes
            pool = self.healthy()
            self.rng.shuffle(pool)
            start = 0
            for fraction in fractions:
                size = round(fraction * len(pool))
                cut.append(pool[start : start + size])
                start += size
        else:
            cut = [self._named(step, g) for g in step.groups if not isinstance(g, float)]
        self.groups = cut
        if step.one_way:
            self.sim.partition_one_way(cut[0], cut[1])
        else:
            self.sim.partition(cut)
        self._cut = {n: i + 1 for i, g in enumerate(cut) for n in g}
        self.timeline.mark("cut", self.sim.now, math.inf)
        small = min(cut, key=len)
        self.timeline.cut_off = small if 0 < len(small) <= WATCH_GROUP_MAX else []
        self.membership.note_partition(self._cut, self.sim.now, math.inf)
        self.partition = {
            "at_s": self.sim.now,
            "groups": [len(g) for g in cut],
            "one_way": step.one_way,
            "healed_at_s": None,
        }

    def _heal(self) -> None:
        self.sim.heal()
        self.groups = []
        self.timeline.close_mark("cut", self.sim.now)
        self.timeline.mark("heal", self.sim.now)
        if self.partition is not None:
            self.partition["healed_at_s"] = self.sim.now
            self.membership.note_partition(self._cut, self.partition["at_s"], self.sim.now)
        self._watch("overlay_merged", lambda: analysis.overlay_whole(self.sim))
        self._watch("members_merged", lambda: analysis.members_merged(self.sim))

    def _churn(self, step: Churn) -> None:
        self._disrupt()
        start = self.sim.now
        end = start + step.duration
        self.timeline.mark("churn", start, end)
        scale = len(self.healthy()) if step.relative else 1
        events: list[tuple[float, int]] = []
        for kind, per_second in enumerate((step.join_rate, step.crash_rate, step.leave_rate)):
            rate = per_second * scale
            if rate > 0:
                count = math.floor(step.duration * rate)
                events += [(start + i / rate, kind) for i in range(1, count + 1)]
        events.sort()
        for t, kind in events:
            self.advance(t)
            pool = self.healthy()
            if kind == 0:
                self._new_node(self.sim.now, self.rng.choice(pool) if pool else None)
            elif len(pool) > 1:
                victim = self.rng.choice(pool)
                if kind == 1:
                    self.sim.crash(victim)
                    self.membership.note_failure(victim, self.sim.now, "crash")
                else:
                    self._leave(victim, self.sim.now, scenario.LEAVE_LINGER)
        self.cursor = end

    # ------------------------------------------------------------ report

    def _membership(self) -> dict[str, Any]:
        if not self.sim.config.swim.enabled:
            # No member lists to judge: the contract keys, empty.
            return {
                "enabled": False,
                "first_detection_p50_s": None,
                "full_detection_p99_s": None,
                "false_positives": None,
                "converged": None,
            }
        return {
            "enabled": True,
            **self.membership.summary(max_judges=MAX_JUDGES),
            "complete_after_s": self._watched("members_complete"),
            **coordinate_errors(self.sim, self.sim.live(), self.seed),
        }

    def _by_step(self, live: list[NodeId]) -> list[dict[str, Any]]:
        """The broadcast figures of each publish step, when there are
        several (the `senders` scenario: one sender, random senders,
        rotating publishers, in one run)."""
        if len(self.publish_steps) < 2:
            return []
        steps = []
        for who, start, end in self.publish_steps:
            s = self.broadcasts.summary(live, since=start, until=end)
            keys = ("sent", "reliability", "rmr", "ldh_max", "latency_p50_s", "latency_p99_s")
            steps.append({"from": who, **{k: s[k] for k in keys}})
        return steps

    def _outcome(self, wall: float) -> Outcome:
        sim = self.sim
        live = sim.live()
        b = self.broadcasts.summary(live)
        by_broadcast = b.pop("reliability_by_broadcast")
        report: dict[str, Any] = {
            "scenario": self.sc.name,
            "nodes": self.sc.params.get("nodes", len(self.created)),
            "seed": self.seed,
            "params": dict(self.sc.params),
            "codec": sim.use_codec,
            "run": {
                "events": sim.events,
                "wall_s": wall,
                "events_per_s": sim.events / wall if wall > 0 else 0.0,
                "sim_time_s": sim.now,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            },
            "overlay": analysis.overlay_figures(sim),
            "broadcast": {
                **b,
                "reliability_by_broadcast": by_broadcast,
                "by_step": self._by_step(live),
            },
            "membership": self._membership(),
            "messages": analysis.message_figures(sim),
        }
        if self.failure is not None:
            after = self.broadcasts.summary(live, since=self.failure["at_s"])
            report["failure"] = {
                **self.failure,
                "reliability": after["reliability"],
                "reliability_by_broadcast": after["reliability_by_broadcast"],
                "recovered_after_s": self._watched("failure"),
            }
        if self.partition is not None:
            p = self.partition
            during = self.broadcasts.summary(
                live, since=p["at_s"], until=p["healed_at_s"] or math.inf
            )
            report["partition"] = {
                **p,
                "broadcasts_during": during["sent"],
                "reliability_during": during["reliability"] if during["sent"] else None,
                **self._heal_figures(p["healed_at_s"]),
            }
        series = {
            "latency_cdf_s": self._latency_cdf(),
            **self.timeline.series,
            **broadcast_series(self.broadcasts, live),
        }
        marks = [(k, a, sim.now if b == math.inf else b) for k, a, b in self.timeline.marks]
        return Outcome(report, series, marks)

    def _heal_figures(self, healed_at: float | None) -> dict[str, Any]:
        """How the cluster came back together after the heal: from the heal
        and from the first packet across the healed cut (before it nothing
        could merge), and the false verdicts made after it."""
        overlay = self._watched("overlay_merged")
        members = self._watched("members_merged")
        first = self.sim.first_across_heal
        lag = None if healed_at is None or first is None else first - healed_at

        def since_first(after: float | None) -> float | None:
            return None if after is None or lag is None else max(0.0, after - lag)

        times = self.membership.false_positive_times
        return {
            "first_packet_across_after_s": lag,
            "overlay_merged_after_s": overlay,
            "members_merged_after_s": members,
            "members_merged_after_first_packet_s": since_first(members),
            "false_positives_after_heal": None
            if healed_at is None
            else sum(t >= healed_at for t in times),
        }

    def _latency_cdf(self) -> list[float]:
        """Delivery latencies (as the tracker counts them) at CDF_POINTS
        evenly spaced quantiles."""
        lat = sorted(x for bc in self.broadcasts.broadcasts.values() for x in bc.latencies())
        if not lat:
            return []
        last = len(lat) - 1
        return [lat[round(q * last / (CDF_POINTS - 1))] for q in range(CDF_POINTS)]


def run(
    sc: Scenario,
    seed: int,
    *,
    use_codec: bool = True,
    progress: Progress | None = None,
    graph_path: str | None = None,
) -> Outcome:
    """Run `sc` with `seed`; write the final overlay to `graph_path` if given."""
    runner = Runner(sc, seed, use_codec=use_codec, progress=progress)
    outcome = runner.run()
    if graph_path is not None:
        analysis.write_graph(runner.sim, graph_path)
    return outcome


# The cyclic collector's thresholds while a simulation runs (default: 700,
# 10, 10). A simulation allocates messages by the million and keeps a large,
# long-lived heap (the nodes), which every collection of the older
# generations walks again: measured, 5.8 s of a 28.9 s run at 3,000 nodes in
# 2,318 collections, and 145-165 s against 110 s at 10,000 nodes. The
# protocol objects form few cycles, so collecting rarely frees the same.
GC_THRESHOLDS = (50_000, 20, 100)


@contextlib.contextmanager
def rare_collections() -> Iterator[None]:
    """Collect garbage cycles rarely inside the block, as before after it."""
    old = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*old)
