"""Figures of a scenario from the agents' logs and the rig's timeline:
detection times, heal times, false verdicts. Times are Unix seconds (the
clock of the rig and of the agents' `--log-json` lines)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tests.faults.rig import Change, Heal, Rig, Verdict, statuses_at


@dataclass
class Detection:
    first_suspect: float | None  # first suspect/failed of any pair
    all_failed: float | None  # when the last pair reached failed (None: some never did)
    pending: list[tuple[str, str]]  # pairs that never reached failed

    def as_dict(self, t0: float) -> dict[str, Any]:
        return {
            "first_suspect_s": _rel(self.first_suspect, t0),
            "all_failed_s": _rel(self.all_failed, t0),
            "never_failed": [f"{o}->{m}" for o, m in self.pending],
        }


def _rel(t: float | None, t0: float | None) -> float | None:
    return None if t is None or t0 is None else round(t - t0, 3)


def detection(
    changes: Sequence[Change],
    observers: Iterable[str],
    members: Iterable[str],
    since: float,
    until: float | None = None,
) -> Detection:
    """How `observers` came to hold `members` failed, after `since`."""
    observers, members = list(observers), list(members)
    pairs = {(o, m) for o in observers for m in members if o != m}
    first: float | None = None
    failed_at: dict[tuple[str, str], float] = {}
    for c in changes:
        if c.t < since or (until is not None and c.t > until):
            continue
        key = (c.observer, c.member)
        if key not in pairs:
            continue
        if c.status in ("suspect", "failed") and first is None:
            first = c.t
        if c.status == "failed":
            failed_at.setdefault(key, c.t)
        elif c.status == "alive":
            failed_at.pop(key, None)
    pending = sorted(pairs - set(failed_at))
    return Detection(first, max(failed_at.values()) if not pending else None, pending)


@dataclass
class Settling:
    """When every pair of `names` last changed after a heal, ending alive."""

    t_all_alive: float | None  # None: some pair is not alive at the end
    not_alive: list[str]  # "observer->member:status" at the end
    last_pair: str

    def from_heal(self, heal: Heal) -> dict[str, Any]:
        return {
            "alive_everywhere_from_heal_command_s": _rel(self.t_all_alive, heal.t_done),
            "alive_everywhere_from_first_cross_packet_s": _rel(self.t_all_alive, heal.first_lo),
            "first_cross_packet_after_heal_s": [
                _rel(heal.first_lo, heal.t_done),
                _rel(heal.first_hi, heal.t_done),
            ],
            "last_pair_to_settle": self.last_pair,
            "not_alive_at_end": self.not_alive,
        }


def settling(changes: Sequence[Change], names: Sequence[str], since: float) -> Settling:
    at_start = statuses_at(changes, since)
    final = statuses_at(changes, float("inf"))
    last_t: float | None = None
    last_pair = ""
    not_alive = []
    for o in names:
        for m in names:
            if o == m:
                continue
            status, t = final.get((o, m), ("unknown", 0.0))
            if status != "alive":
                not_alive.append(f"{o}->{m}:{status}")
                continue
            if t > since and at_start.get((o, m)) != (status, t) and (last_t is None or t > last_t):
                last_t, last_pair = t, f"{o}->{m}"
    if not_alive:
        return Settling(None, not_alive, last_pair)
    return Settling(last_t if last_t is not None else since, [], last_pair)


def false_verdicts(rig: Rig, since: float) -> tuple[list[Verdict], list[Verdict]]:
    """(false failed, false suspect) since `since`: the observer could reach
    the member at that moment (the issue's definition)."""
    verdicts = [v for v in rig.verdicts(since) if v.reachable]
    return (
        [v for v in verdicts if v.change.status == "failed"],
        [v for v in verdicts if v.change.status == "suspect"],
    )


def verdict_report(
    verdicts: Sequence[Verdict], t0: float, heal: Heal | None = None, limit: int = 40
) -> list[str]:
    """Who marked whom, when: seconds from t0 (the fault), and from the heal
    and from the first cross-cut packet when there was a heal."""
    out = []
    for v in verdicts[:limit]:
        c = v.change
        text = f"{c.t - t0:.3f}s {c.observer} marked {c.member} {c.status} (inc {c.incarnation})"
        if heal is not None:
            text += f" heal{c.t - heal.t_done:+.3f}s"
            if heal.first_lo is not None:
                text += f" first-cross-packet{c.t - heal.first_lo:+.3f}s"
        out.append(text)
    if len(verdicts) > limit:
        out.append(f"... {len(verdicts) - limit} more")
    return out
