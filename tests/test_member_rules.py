"""SWIM's merge rules as pure functions (overlay/member_rules.py), by table.

tests/test_swim_rules.py drives the same rules through a node and checks
what they do (timers, who is told); here each row is only the decision:
what we hold, what arrives, from whom -> the Rule.
"""

from __future__ import annotations

import pytest

from overlay.ids import NodeId
from overlay.io import MemberStatus, seed_id
from overlay.member_rules import (
    INCARNATION_MAX,
    INCARNATION_STEP,
    Rule,
    TagsTooLarge,
    accusation_applies,
    check_tags,
    covers,
    merge_rule,
    suspect_rule,
    tags_bytes,
)
from overlay.messages import MemberState, WireStatus

X = NodeId("x", "10.0.0.2", 7946)
BY = NodeId("by", "10.0.0.3", 7946)
A, S, F, L = (
    MemberStatus.ALIVE,
    MemberStatus.SUSPECT,
    MemberStatus.FAILED,
    MemberStatus.LEFT,
)
W = {"alive": WireStatus.ALIVE, "suspect": WireStatus.SUSPECT}
W |= {"failed": WireStatus.FAILED, "left": WireStatus.LEFT}


def st(status: str, inc: int, node: NodeId = X) -> MemberState:
    return MemberState(node, inc, W[status], {}, BY if status == "suspect" else None)


# (held, received, incarnation) -> rule, from a member we hold live that is
# not the member itself. Held at incarnation 5.
FROM_A_LIVE_MEMBER: list[tuple[MemberStatus | None, str, int, Rule]] = [
    (None, "alive", 4, Rule.ADD),
    (None, "suspect", 5, Rule.IGNORE),
    (None, "failed", 5, Rule.IGNORE),
    (None, "left", 5, Rule.IGNORE),
    (A, "alive", 4, Rule.IGNORE),
    (A, "alive", 5, Rule.IGNORE),
    (A, "alive", 6, Rule.TAKE_ALIVE),
    (A, "suspect", 4, Rule.IGNORE),
    (A, "suspect", 5, Rule.SUSPECT),
    (A, "suspect", 6, Rule.SUSPECT),
    (A, "failed", 4, Rule.IGNORE),
    (A, "failed", 5, Rule.VERDICT),  # never a death at once
    (A, "failed", 6, Rule.VERDICT),
    (A, "left", 4, Rule.IGNORE),
    (A, "left", 5, Rule.VERDICT),  # at our incarnation: not its goodbye
    (A, "left", 6, Rule.RELAYED_GOODBYE),
    (S, "alive", 5, Rule.IGNORE),
    (S, "alive", 6, Rule.TAKE_ALIVE),  # refuted
    (S, "suspect", 4, Rule.IGNORE),
    (S, "suspect", 5, Rule.CONFIRM),
    (S, "suspect", 6, Rule.SUSPECT),
    (S, "failed", 5, Rule.CONFIRM_VERDICT),
    (S, "failed", 6, Rule.VERDICT),
    (S, "left", 5, Rule.CONFIRM_VERDICT),
    (S, "left", 6, Rule.RELAYED_GOODBYE),
    *[
        (F, r, i, Rule.IGNORE)
        for r in W
        for i in (4, 5, 6)
        if (r, i) not in (("alive", 6), ("left", 5), ("left", 6))
    ],
    (F, "left", 5, Rule.FORCED_LEFT),  # a force-leave: the tombstone turns left
    (F, "left", 6, Rule.FORCED_LEFT),
    *[(L, r, i, Rule.IGNORE) for r in W for i in (4, 5, 6) if (r, i) != ("alive", 6)],
    (F, "alive", 6, Rule.TAKE_ALIVE),  # only a higher alive revives a tombstone
    (L, "alive", 6, Rule.TAKE_ALIVE),
]


@pytest.mark.parametrize(("held", "received", "inc", "rule"), FROM_A_LIVE_MEMBER)
def test_merge_rule_from_a_live_member(
    held: MemberStatus | None, received: str, inc: int, rule: Rule
) -> None:
    h = None if held is None else (held, 5)
    got = merge_rule(h, st(received, inc), about_me=False, trusted=True, from_subject=False)
    assert got is rule


@pytest.mark.parametrize(
    ("held", "received", "inc", "rule"),
    [
        (A, "left", 6, Rule.GOODBYE),  # its own goodbye, applied as it is
        (S, "left", 6, Rule.GOODBYE),
        # The suspicion a relayed copy of this goodbye started: it ends now
        # (found when arrivals went over the tree: a 6 s leave at 30 nodes).
        (S, "left", 5, Rule.GOODBYE),
        (A, "left", 5, Rule.VERDICT),
        (A, "suspect", 5, Rule.SUSPECT),
    ],
)
def test_from_the_member_itself(received: str, held: MemberStatus, inc: int, rule: Rule) -> None:
    got = merge_rule((held, 5), st(received, inc), about_me=False, trusted=True, from_subject=True)
    assert got is rule


@pytest.mark.parametrize(
    ("held", "received", "inc", "rule"),
    [
        (A, "suspect", 5, Rule.PASS_ON),
        (A, "failed", 6, Rule.PASS_ON),
        (S, "left", 6, Rule.PASS_ON),
        (A, "suspect", 4, Rule.IGNORE),  # stale: nothing to pass on
        (F, "suspect", 5, Rule.IGNORE),
        (None, "failed", 5, Rule.IGNORE),
        (A, "alive", 6, Rule.TAKE_ALIVE),  # an alive state is no accusation
    ],
)
def test_accusations_from_a_member_we_do_not_hold_live_are_passed_on(
    held: MemberStatus | None, received: str, inc: int, rule: Rule
) -> None:
    h = None if held is None else (held, 5)
    got = merge_rule(h, st(received, inc), about_me=False, trusted=False, from_subject=False)
    assert got is rule


@pytest.mark.parametrize(
    ("received", "inc", "rule"),
    [
        ("alive", 3, Rule.IGNORE),
        ("alive", 4, Rule.IGNORE),
        ("alive", 9, Rule.REFUTE),  # an older self of ours went higher
        ("suspect", 3, Rule.RESEND_ALIVE),  # refuted already
        ("suspect", 4, Rule.REFUTE),
        ("failed", 7, Rule.REFUTE),
        ("left", 4, Rule.REFUTE),
    ],
)
def test_about_us(received: str, inc: int, rule: Rule) -> None:
    for trusted in (True, False):  # we refute whoever says it
        got = merge_rule(
            (A, 4), st(received, inc), about_me=True, trusted=trusted, from_subject=False
        )
        assert got is rule


@pytest.mark.parametrize("received", list(W))
def test_incarnations_out_of_reach_are_refused(received: str) -> None:
    def rule(held: tuple[MemberStatus, int] | None, inc: int) -> Rule:
        return merge_rule(held, st(received, inc), about_me=False, trusted=True, from_subject=False)

    assert rule(None, INCARNATION_MAX + 1) is Rule.REFUSE
    assert rule((A, 5), INCARNATION_MAX + 1) is Rule.REFUSE
    assert rule((A, 5), 5 + INCARNATION_STEP + 1) is Rule.REFUSE
    assert rule((A, 5), 5 + INCARNATION_STEP) is not Rule.REFUSE


def test_states_about_seeds_are_ignored() -> None:
    seed = seed_id("10.0.0.9", 7946)
    for received in W:
        state = st(received, 1, node=seed)
        rule = merge_rule(None, state, about_me=False, trusted=True, from_subject=False)
        assert rule is Rule.IGNORE


@pytest.mark.parametrize(
    ("held", "inc", "applies", "suspect"),
    [
        (None, 5, False, Rule.IGNORE),
        ((A, 5), 4, False, Rule.IGNORE),
        ((A, 5), 5, True, Rule.SUSPECT),
        ((A, 5), 6, True, Rule.SUSPECT),
        ((S, 5), 5, True, Rule.CONFIRM),
        ((S, 5), 6, True, Rule.SUSPECT),
        ((F, 5), 6, False, Rule.IGNORE),
        ((L, 5), 6, False, Rule.IGNORE),
    ],
)
def test_accusation_and_suspect_rules(
    held: tuple[MemberStatus, int] | None, inc: int, applies: bool, suspect: Rule
) -> None:
    assert accusation_applies(held, inc) is applies
    assert suspect_rule(held, inc) is suspect


@pytest.mark.parametrize(
    ("theirs", "mine", "covered"),
    [
        (st("suspect", 5), st("suspect", 5), True),
        (st("failed", 5), st("suspect", 5), True),  # graver
        (st("suspect", 5), st("failed", 5), False),  # a suspicion never covers a verdict
        (st("suspect", 6), st("failed", 5), True),  # later
        (st("suspect", 4), st("suspect", 5), False),  # older
        (st("suspect", 5), st("alive", 5), False),  # only accusations are struck
    ],
)
def test_covers(theirs: MemberState, mine: MemberState, covered: bool) -> None:
    assert covers(theirs, mine) is covered


def test_tags_are_counted_in_utf8_and_capped() -> None:
    assert tags_bytes({"k": "é"}) == 3
    assert check_tags({"k": "v"}, 2) == {"k": "v"}
    with pytest.raises(TagsTooLarge):
        check_tags({"k": "é"}, 2)
    with pytest.raises(TagsTooLarge):
        check_tags({str(i): "" for i in range(65)}, 1000)
