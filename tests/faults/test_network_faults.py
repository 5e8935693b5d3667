"""Network faults on 10 real agents (issue 11, part 3), default timings.

Each test runs a fresh cluster on a fresh rig (tests/faults/rig.py), applies
one fault with nftables in the bridge, asserts the issue's outcomes and
records its figures (printed with `pytest -s`, appended to the results file
named in the output). Run alone: `pytest -m faults -s`.
"""

from __future__ import annotations

import json
import sys

import pytest
import trio

from tests.faults.cluster import all_see
from tests.faults.figures import detection, verdict_report
from tests.faults.rig import Rig
from tests.faults.scenario import scenario, sides_see, sleep_until

pytestmark = pytest.mark.faults


async def test_one_way_partition(rig: Rig) -> None:
    """A->B dropped for 60 s: no suspect, no failed anywhere; broadcasts
    from both ends reach all 10 agents once. Also checks the CLI path once:
    `overlay members --json` from inside B's namespace."""
    with trio.fail_after(150):
        async with scenario(rig, "one_way_60s") as s:
            c, a, b = s.cluster, "n1", "n2"
            t_cut = rig.one_way(a, b)
            s.t_fault = t_cut
            payloads = []
            for k, at in enumerate((5, 30, 50)):
                await sleep_until(t_cut + at)
                for origin in (a, b):
                    p = f"{origin}-{k}"
                    await c.publish(origin, p)
                    payloads.append(p)
            await sleep_until(t_cut + 60)
            delivered = await c.wait_delivered(payloads, s.names, 10)
            ctl = rig.agents[b].control
            cli = json.loads(
                rig.exec_in(
                    b,
                    [sys.executable, "-m", "daemon.cli", "members", "--json", "--control", ctl],
                )
            )
            dropped = rig.counted()
            heal = rig.heal()
            views = await c.views(s.names)

            verdicts = rig.verdicts(s.t_start)
            s.figures.update(
                cut=f"{a}->{b}",
                cut_s=round(heal.t_done - t_cut, 1),
                dropped_by_the_cut=dropped,
                verdicts=verdict_report(verdicts, t_cut),
                deliveries=c.delivery_figures(payloads, s.names),
                cli_members_in_b=sorted((m["name"], m["status"]) for m in cli),
            )
            s.check("the cut dropped packets", dropped > 0, "none dropped: the rig is broken")
            s.check("no suspect or failed verdict", not verdicts, f"{len(verdicts)} verdicts")
            s.check("every broadcast reached all 10", delivered, str(c.missing(payloads, s.names)))
            s.check("no broadcast delivered twice", not c.duplicates(s.names))
            s.check(
                "CLI lists all alive",
                sorted(m["name"] for m in cli if m["status"] == "alive") == sorted(s.names),
            )
            s.check(
                "all alive everywhere at the end",
                all(v and all(v.get(m) == "alive" for m in s.names) for v in views.values()),
            )
            s.finish()


async def test_random_loss(rig: Rig) -> None:
    """10% random loss on every IP frame for 60 s: no failed verdict;
    every broadcast (one every 3 s, from each agent in turn) delivered once
    at each of the 10."""
    with trio.fail_after(150):
        async with scenario(rig, "loss_10pct_60s") as s:
            c = s.cluster
            t_loss = rig.loss(10)
            s.t_fault, s.no_false_failed = t_loss, True
            payloads = []
            for k in range(20):
                await sleep_until(t_loss + 1 + 3 * k)
                origin = s.names[k % len(s.names)]
                p = f"{origin}-{k}"
                await c.publish(origin, p)
                payloads.append(p)
            await sleep_until(t_loss + 60)
            # Still under loss: stragglers may need GRAFTs or anti-entropy.
            delivered = await c.wait_delivered(payloads, s.names, 20)
            dropped = rig.counted()
            heal = rig.heal()
            figures = c.delivery_figures(payloads, s.names)
            latencies = sorted(f["last_s"] for f in figures.values() if f["last_s"] is not None)
            s.figures.update(
                loss_percent=10,
                loss_s=round(heal.t_done - t_loss, 1),
                dropped_by_the_loss=dropped,
                broadcasts=len(payloads),
                last_delivery_s={
                    "median": latencies[len(latencies) // 2] if latencies else None,
                    "max": latencies[-1] if latencies else None,
                },
                undelivered=c.missing(payloads, s.names),
            )
            s.check("the loss dropped packets", dropped > 0, "none dropped: the rig is broken")
            s.check("every broadcast reached all 10", delivered, str(c.missing(payloads, s.names)))
            s.check("no broadcast delivered twice", not c.duplicates(s.names))
            s.finish()


async def test_partition_50_50_heal(rig: Rig) -> None:
    """n1-n5 | n6-n10 for 60 s, then heal: each side marks the other
    failed; one cluster (all alive everywhere) within 2 s of the first
    packet across the healed cut; broadcasts published on both sides during
    the partition reach everyone after it, none twice; no false verdict at
    any time (a failed verdict about a member the observer could reach)."""
    with trio.fail_after(240):
        async with scenario(rig, "partition_50_50_60s_heal") as s:
            c = s.cluster
            left, right = s.names[:5], s.names[5:]
            t_cut = rig.partition([left, right])
            detected, _, _ = await c.wait_views(
                s.names, sides_see([left, right], "failed"), 50, interval=0.5
            )
            # Published once each side holds the other failed, and shortly
            # before the heal: both well inside plumtree.retention (60 s)
            # after the heal.
            published: dict[str, list[str]] = {"left": [], "right": []}
            for side, origin in (("left", "n1"), ("right", "n6")):
                p = f"{origin}-after-detection"
                await c.publish(origin, p)
                published[side].append(p)
            await sleep_until(t_cut + 55)
            for side, origin in (("left", "n3"), ("right", "n8")):
                p = f"{origin}-before-heal"
                await c.publish(origin, p)
                published[side].append(p)
            await sleep_until(t_cut + 60)
            payloads = published["left"] + published["right"]
            # The cut holds: nothing a side published has crossed it.
            crossed = {
                p: [n for n in other if c.deliveries[n][p]]
                for mine, other in (("left", right), ("right", left))
                for p in published[mine]
            }
            heal = await s.heal_and_settle(t_cut)
            delivered = await c.wait_delivered(payloads, s.names, 30)
            changes = rig.member_changes(t_cut)
            det_l = detection(changes, left, right, t_cut, heal.t_command)
            det_r = detection(changes, right, left, t_cut, heal.t_command)
            s.figures.update(
                groups=[left, right],
                detection_by_left=det_l.as_dict(t_cut),
                detection_by_right=det_r.as_dict(t_cut),
                deliveries=c.delivery_figures(payloads, s.names),
            )
            s.check(
                "each side marked the other failed",
                detected and not det_l.pending and not det_r.pending,
                f"never failed: {det_l.pending + det_r.pending}",
            )
            s.check("the cut held", not any(crossed.values()), str(crossed))
            s.check(
                "partition broadcasts reached everyone after the heal",
                delivered,
                str(c.missing(payloads, s.names)),
            )
            s.check("no broadcast delivered twice", not c.duplicates(s.names))
            s.finish()


async def test_isolate_one_heal(rig: Rig) -> None:
    """n10 cut off from everyone for 30 s, then heal: n10 failed at every
    other agent; all alive everywhere within 2 s of the first packet
    across the healed cut; no false verdict."""
    with trio.fail_after(200):
        async with scenario(rig, "isolate_one_30s_heal") as s:
            c = s.cluster
            lone, rest = "n10", s.names[:-1]
            t_cut = rig.isolate(lone)
            detected, _, _ = await c.wait_views(
                rest, all_see(rest, {lone: "failed"}), 29.5, interval=0.5
            )
            await sleep_until(t_cut + 30)
            heal = await s.heal_and_settle(t_cut)
            changes = rig.member_changes(t_cut)
            det = detection(changes, rest, [lone], t_cut, heal.t_command)
            s.figures.update(
                isolated=lone,
                detection_of_isolated=det.as_dict(t_cut),
                detection_by_isolated=detection(
                    changes, [lone], rest, t_cut, heal.t_command
                ).as_dict(t_cut),
            )
            s.check(
                "the isolated node failed at every other agent before the heal",
                not det.pending,
                f"never failed: {det.pending}",
            )
            s.check("seen failed by every other agent (polled)", detected)
            s.finish()
