"""Failure-detection and membership metrics for a simulation.

API (stable: the simulator's report calls it)
---------------------------------------------
``tracker = MembershipTracker(sim)``
    Attaches itself to ``sim.observers`` and records every `MemberChanged`
    output of every node (it ignores all other outputs).
``tracker.note_failure(node, time, kind)``
    The scenario tells the tracker what it injected: ``kind`` is ``"crash"``
    (the node stops for good), ``"pause"`` (a gray failure: call
    ``note_recovery`` when it resumes) or ``"leave"`` (a graceful leave). Call
    it when the failure is scheduled or when it happens; `time` is the
    simulated time of the failure.
``tracker.note_recovery(node, time)``
    A paused node resumed at `time`.
``tracker.note_partition(groups, start, end)``
    The network was split into `groups` (node -> group) from `start` to
    `end` (math.inf while it lasts; call again with the heal time). A
    suspicion or verdict made while the cut is up, about a node on the
    other side of it, is the detector doing its job: it counts in
    ``partition_verdicts``. Nothing else is excused: a verdict about a
    member the observer could reach when it was made (its own side during
    the partition, anyone after the heal) is a false positive, whenever it
    happens. (An earlier version excused every verdict about a partitioned
    node for 30 s after the heal as "the detector doing its job", which hid
    stale verdicts killing live members of the observer's own side.)
``tracker.summary() -> dict``
    JSON-ready figures; times in seconds, None where there is nothing to
    measure:

    - ``first_detection_p50_s``, ``first_detection_p99_s``,
      ``first_detection_max_s``: from a crash to the first node that marks the
      crashed node suspect (or failed).
    - ``full_detection_p50_s``, ``full_detection_p99_s``,
      ``full_detection_max_s``: from a crash until every live node (one that
      was already running at the crash, is still running and not paused now)
      that knew the crashed node (gave a verdict on it, or lists it now) has
      marked it failed; ``undetected``: crashes some such node never marked
      failed. A node that never heard of the crashed one has nothing to
      detect: incomplete member lists show in ``converged`` instead.
    - ``pauses``: pauses noted; ``pause_first_detection_p50_s``: from a pause
      to the first suspicion of the paused node during it (no connection
      breaks: this is SWIM's probing alone).
    - ``failures``: crashes noted; ``leaves``: leaves noted;
      ``leave_full_max_s``: from a leave until every live node marked it left.
    - ``false_positives``: distinct nodes that some node declared failed (or
      left, which only the member itself may say) while they were running,
      not paused (a node paused within `pause_grace` seconds before the
      verdict counts as paused) and reachable from that node;
      ``false_positive_events``: such verdicts, one per (observer, verdict);
      ``false_positives_at``: their times; ``paused_declared_failed``:
      distinct paused nodes declared failed (expected when the pause outlasts
      the suspicion timeout).
    - ``partition_verdicts``: suspect/failed events caused by a noted
      partition (see ``note_partition``).
    - ``false_suspicions``: suspect events about running, unpaused,
      reachable nodes; ``suspected_healthy``: distinct such nodes.
    - ``converged``: every live, unpaused node lists every other live,
      unpaused node alive, and every crashed node failed (or no longer lists
      it: tombstones are reaped after ``swim.reap_after``), and every node
      that left as left, failed or gone; ``unconverged_pairs`` counts the
      (observer, member) pairs that break it. Paused nodes are neither judged
      nor judged by. ``summary(max_judges=K)`` reads the lists of at most K
      observers, evenly spaced (the check is O(observers x N));
      ``converged_judges`` says how many were read.
    - ``join_spread_p50_s``, ``join_spread_p99_s``, ``join_spread_max_s``:
      how long a node's arrival takes to reach every member list: from its
      start until the last of the judges (as for ``converged``) that were
      running before it lists it (read from the list: when the entry was
      made; a member that refuted or changed its tags since, at a higher
      incarnation, is left out: ``join_spread_members`` says how many
      count); ``join_unheard``: (judge, member) pairs still missing at the
      end.

The tracker reads the member lists through ``sim.node(id).swim`` for
``converged`` and takes everything else from the outputs, so the protocol
needs no hooks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from overlay.ids import NodeId
from overlay.io import MemberChanged, MemberStatus, Output
from sim.engine import Simulation

KINDS = ("crash", "pause", "leave")


@dataclass(slots=True)
class _Failure:
    kind: str
    start: float
    end: float = math.inf
    first_suspect: float | None = None
    seen: dict[NodeId, float] = field(default_factory=dict)  # observer -> first verdict


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`, None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class MembershipTracker:
    def __init__(self, sim: Simulation, *, pause_grace: float = 5.0) -> None:
        self.sim = sim
        self.pause_grace = pause_grace
        self._failures: dict[NodeId, list[_Failure]] = {}
        self._started: dict[NodeId, float] = {}
        self.false_positive_events = 0
        self.false_positive_times: list[float] = []
        self.false_positive_nodes: dict[NodeId, int] = {}
        self.paused_failed: dict[NodeId, int] = {}
        self.false_suspicions = 0
        self.suspected_healthy: dict[NodeId, int] = {}
        self.events = 0
        self.partition_verdicts = 0
        self._partitions: list[tuple[float, float, dict[NodeId, int]]] = []
        sim.observers.append(self)

    # ----------------------------------------------------------- recording

    def note_failure(self, node: NodeId, time: float, kind: str = "crash") -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self._failures.setdefault(node, []).append(_Failure(kind, time))

    def note_recovery(self, node: NodeId, time: float) -> None:
        for f in reversed(self._failures.get(node, [])):
            if f.kind == "pause" and f.end == math.inf:
                f.end = time
                return
        raise ValueError(f"{node} has no open pause")

    def note_partition(self, groups: dict[NodeId, int], start: float, end: float) -> None:
        for i, (s, _, g) in enumerate(self._partitions):
            if s == start:
                self._partitions[i] = (start, end, g)
                return
        self._partitions.append((start, end, dict(groups)))

    def _across(self, observer: NodeId, member: NodeId, time: float) -> bool:
        """Was a cut up between `observer` and `member` at `time`? (Either
        direction: across a one-way cut neither can hear the other's answer.)"""
        for start, end, groups in self._partitions:
            if start <= time < end and groups.get(observer, 0) != groups.get(member, 0):
                return True
        return False

    wants = (MemberChanged,)  # the outputs the engine shows us (see sim.engine)

    def __call__(self, time: float, node: NodeId, out: Output) -> None:
        if out.__class__ is not MemberChanged:
            return
        assert isinstance(out, MemberChanged)
        member = out.member
        if member == node:
            self._started.setdefault(node, time)
            return
        status = out.status
        if status is MemberStatus.ALIVE:
            return
        self.events += 1
        failure = self._failure_at(member, time)
        if failure is None and self._partitions and self._across(node, member, time):
            self.partition_verdicts += 1
            return
        if status is MemberStatus.SUSPECT:
            if failure is None:
                self.false_suspicions += 1
                self.suspected_healthy[member] = self.suspected_healthy.get(member, 0) + 1
            elif failure.kind != "leave" and failure.first_suspect is None:
                failure.first_suspect = time
            return
        if failure is None:
            self.false_positive_events += 1
            self.false_positive_times.append(time)
            self.false_positive_nodes[member] = self.false_positive_nodes.get(member, 0) + 1
            return
        if failure.kind == "pause" and status is MemberStatus.FAILED:
            self.paused_failed[member] = self.paused_failed.get(member, 0) + 1
        if failure.kind != "leave" and failure.first_suspect is None:
            failure.first_suspect = time
        failure.seen.setdefault(node, time)

    def _failure_at(self, member: NodeId, time: float) -> _Failure | None:
        """The noted failure `member` is in at `time` (a pause lasts
        `pause_grace` longer), or None when it was healthy then."""
        for f in self._failures.get(member, ()):
            end = f.end + self.pause_grace if f.kind == "pause" else f.end
            if f.start <= time < end:
                return f
        return None

    # ------------------------------------------------------------- results

    def _observers(self) -> list[NodeId]:
        """Running, unpaused nodes that have not left."""
        left = {n for n, fs in self._failures.items() if any(f.kind == "leave" for f in fs)}
        return [
            self.sim.ids[addr]
            for addr, sn in self.sim.nodes.items()
            if sn.alive and not sn.paused and self.sim.ids[addr] not in left
        ]

    def summary(self, *, max_judges: int | None = None) -> dict[str, Any]:
        observers = self._observers()
        lists = {o: self.sim.node(o).swim.members for o in observers}
        first: list[float] = []
        paused_first: list[float] = []
        full: list[float] = []
        leave_full: list[float] = []
        undetected = 0
        crashes = leaves = 0
        for member, failures in self._failures.items():
            for f in failures:
                if f.kind == "pause":
                    if f.first_suspect is not None and f.first_suspect < f.end:
                        paused_first.append(f.first_suspect - f.start)
                    continue
                judges = [
                    o
                    for o in observers
                    if o != member
                    and self._started.get(o, math.inf) <= f.start
                    and (o in f.seen or member in lists[o])
                ]
                last = max((f.seen.get(o, math.inf) for o in judges), default=f.start)
                if f.kind == "leave":
                    leaves += 1
                    if last < math.inf:
                        leave_full.append(last - f.start)
                    continue
                crashes += 1
                if f.first_suspect is not None:
                    first.append(f.first_suspect - f.start)
                if last < math.inf:
                    full.append(last - f.start)
                else:
                    undetected += 1
        unconverged, judged = self._unconverged(observers, max_judges)
        spread, unheard = self._join_spread(observers, max_judges)
        return {
            "failures": crashes,
            "first_detection_p50_s": percentile(first, 50),
            "first_detection_p99_s": percentile(first, 99),
            "first_detection_max_s": max(first, default=None),
            "full_detection_p50_s": percentile(full, 50),
            "full_detection_p99_s": percentile(full, 99),
            "full_detection_max_s": max(full, default=None),
            "undetected": undetected,
            "pauses": sum(f.kind == "pause" for fs in self._failures.values() for f in fs),
            "pause_first_detection_p50_s": percentile(paused_first, 50),
            "leaves": leaves,
            "leave_full_max_s": max(leave_full, default=None),
            "false_positives": len(self.false_positive_nodes),
            "false_positive_events": self.false_positive_events,
            "paused_declared_failed": len(self.paused_failed),
            "partition_verdicts": self.partition_verdicts,
            "false_suspicions": self.false_suspicions,
            "suspected_healthy": len(self.suspected_healthy),
            "converged": unconverged == 0,
            "unconverged_pairs": unconverged,
            "converged_judges": judged,
            "join_spread_p50_s": percentile(spread, 50),
            "join_spread_p99_s": percentile(spread, 99),
            "join_spread_max_s": max(spread, default=None),
            "join_spread_members": len(spread),
            "join_unheard": unheard,
        }

    def _join_spread(
        self, observers: list[NodeId], max_judges: int | None
    ) -> tuple[list[float], int]:
        """For each live member, how long after its start the last judge
        that was running before it listed it (see ``summary``)."""
        started = self._started
        judges = observers
        if max_judges is not None and len(observers) > max_judges:
            judges = observers[:: math.ceil(len(observers) / max_judges)]
        lists = [(started.get(j, math.inf), self.sim.node(j).swim.members) for j in judges]
        spread: list[float] = []
        unheard = 0
        for member in observers:
            t = started.get(member)
            if t is None:
                continue
            last: float | None = t
            for since, members in lists:
                if since >= t:
                    continue
                entry = members.get(member)
                if entry is None or entry.status is not MemberStatus.ALIVE:
                    unheard += 1
                elif entry.incarnation > 0:
                    last = None  # refuted or retagged since: its arrival is lost
                elif last is not None:
                    last = max(last, entry.since)
            if last is not None:
                spread.append(last - t)
        return spread, unheard

    def _unconverged(self, observers: list[NodeId], max_judges: int | None) -> tuple[int, int]:
        sim = self.sim
        crashed = {
            n for n, fs in self._failures.items() if any(f.kind in ("crash", "leave") for f in fs)
        }
        for addr, sn in sim.nodes.items():
            if not sn.alive:
                crashed.add(sim.ids[addr])
        paused = {sim.ids[a] for a, sn in sim.nodes.items() if sn.paused}
        healthy = [o for o in observers if o not in crashed]
        dead_ok = (MemberStatus.FAILED, MemberStatus.LEFT)
        judges = healthy
        if max_judges is not None and len(healthy) > max_judges:
            judges = healthy[:: math.ceil(len(healthy) / max_judges)]
        bad = 0
        for observer in judges:
            members = sim.node(observer).swim.members
            for other in healthy:
                if other != observer:
                    m = members.get(other)
                    bad += m is None or m.status is not MemberStatus.ALIVE
            for other in crashed:
                if other in paused:
                    continue
                m = members.get(other)
                bad += m is not None and m.status not in dead_ok
        return bad, len(judges)
