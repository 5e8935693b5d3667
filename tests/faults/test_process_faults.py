"""Process faults on 10 real agents (issue 11, part 3), default timings:
a frozen agent (SIGSTOP 15 s, then SIGCONT), and half the cluster killed
at once (SIGKILL). Survivors must agree on who is there and keep
delivering broadcasts, each once."""

from __future__ import annotations

import pytest
import trio

from tests.faults.cluster import all_see
from tests.faults.figures import detection, false_verdicts
from tests.faults.rig import Rig
from tests.faults.scenario import scenario, sleep_until

pytestmark = pytest.mark.faults


async def test_sigstop_then_sigcont(rig: Rig) -> None:
    """n10 frozen for 15 s: the others keep delivering among themselves;
    after SIGCONT every agent (n10 included) lists all ten alive again and
    delivers broadcasts once. Verdicts about n10 while it was frozen are
    true ones; false ones (e.g. n10 accusing the others when it wakes up)
    are recorded."""
    with trio.fail_after(150):
        async with scenario(rig, "sigstop_15s_sigcont") as s:
            c = s.cluster
            frozen, rest = "n10", s.names[:-1]
            t_stop = rig.stop(frozen)
            s.t_fault = t_stop
            await sleep_until(t_stop + 5)
            during = ["n1-while-frozen"]
            await c.publish("n1", during[0])
            reached_rest = await c.wait_delivered(during, rest, 9)
            await sleep_until(t_stop + 15)
            t_cont = rig.cont(frozen)
            back, t_back, views = await c.wait_views(
                s.names, all_see(s.names, dict.fromkeys(s.names, "alive")), 30
            )
            after = ["n5-after-cont", "n10-after-cont"]
            for p in after:
                await c.publish(p.split("-")[0], p)
            delivered_after = await c.wait_delivered(after, s.names, 10)
            delivered_during = await c.wait_delivered(during, s.names, 10)

            changes = rig.member_changes(t_stop)
            det = detection(changes, rest, [frozen], t_stop, t_cont)
            false_failed, _ = false_verdicts(rig, s.t_start)
            s.figures.update(
                frozen=frozen,
                stopped_s=round(t_cont - t_stop, 1),
                detection_of_frozen=det.as_dict(t_stop),
                all_alive_after_cont_s=round(t_back - t_cont, 2) if back else None,
                deliveries=c.delivery_figures(during + after, s.names),
            )
            survivors_false = [v for v in false_failed if v.change.observer != frozen]
            s.check(
                "the others kept delivering while n10 was frozen",
                reached_rest,
                str(c.missing(during, rest)),
            )
            s.check(
                "all agree: all ten alive everywhere after SIGCONT (30 s)",
                back,
                str({o: v for o, v in views.items() if not v or set(v.values()) != {"alive"}}),
            )
            s.check(
                "broadcasts after SIGCONT reached all ten",
                delivered_after,
                str(c.missing(after, s.names)),
            )
            s.check(
                "the broadcast published while frozen reached n10 after SIGCONT",
                delivered_during,
                str(c.missing(during, s.names)),
            )
            s.check("no broadcast delivered twice", not c.duplicates(s.names))
            s.check(
                "no false failed verdict by the agents that kept running",
                not survivors_false,
                f"{len(survivors_false)}",
            )
            s.finish()


async def test_sigkill_half(rig: Rig) -> None:
    """n6-n10 SIGKILLed at once: n1-n5 agree that those five are failed
    and they themselves alive, and keep delivering (a broadcast right after
    the kill and two after the detection, each once at each survivor)."""
    with trio.fail_after(150):
        async with scenario(rig, "sigkill_half") as s:
            c = s.cluster
            alive, dead = s.names[:5], s.names[5:]
            t_kill = rig.kill(*dead)
            s.t_fault, s.no_false_failed = t_kill, True
            for name in dead:
                c.disconnect(name)
            right_after = ["n2-right-after-kill"]
            await sleep_until(t_kill + 1)
            await c.publish("n2", right_after[0])
            agree, t_agree, views = await c.wait_views(
                alive,
                all_see(alive, {**dict.fromkeys(alive, "alive"), **dict.fromkeys(dead, "failed")}),
                60,
                interval=0.5,
            )
            after = ["n1-after-detection", "n5-after-detection"]
            for p in after:
                await c.publish(p.split("-")[0], p)
            delivered = await c.wait_delivered(right_after + after, alive, 15)

            changes = rig.member_changes(t_kill)
            det = detection(changes, alive, dead, t_kill)
            s.figures.update(
                killed=dead,
                detection=det.as_dict(t_kill),
                agreed_by_poll_s=round(t_agree - t_kill, 2) if agree else None,
                deliveries=c.delivery_figures(right_after + after, alive),
            )
            s.check(
                "survivors agree: the killed failed, themselves alive (60 s)",
                agree,
                str(views),
            )
            s.check(
                "survivors keep delivering",
                delivered,
                str(c.missing(right_after + after, alive)),
            )
            s.check("no broadcast delivered twice", not c.duplicates(alive))
            s.finish()
