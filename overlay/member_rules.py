"""SWIM's merge rules: which state of a member wins, as pure functions.

Rules of this module: nothing here holds state, reads a clock or draws a
random number. Given the state we hold about a member and a state received
about it, `merge_rule` says what to do (a `Rule`); `overlay.merging` does
it. tests/test_member_rules.py has the rules as tables.

Theory of operation
-------------------
- Member states: alive, suspect, failed, left, each at an *incarnation*
  that only the member itself raises. A state about a member replaces the
  one we hold when (SWIM sec. 4.2, memberlist):
  alive(i) beats anything at a lower incarnation; suspect(i) beats alive(j)
  for j <= i and suspect(j) for j < i; left(i) beats alive or suspect at
  j < i (the member's own goodbye); a failed(i) from another node is never
  applied as it is (see "Verdicts"). Failed and left members are
  *tombstones*: nothing but an alive at a higher incarnation brings them
  back (the member restarted, or a partition healed and it refuted), and
  they are reaped after `reap_after`. Incarnations never decrease.
- Refutation: whenever we hear we are suspect, failed or left (while not
  leaving), or alive at an incarnation above ours (we restarted), we go
  past it, ``incarnation = max(ours, theirs) + 1``, and spread alive. So a
  node never believes itself failed. An accusation below our incarnation
  was refuted already: its sender missed the refutation and is sent our
  alive state directly.
- Verdicts (issue 11): a member is declared failed here only by our own
  suspicion timer. Another node's failed(i) is evidence, not a decision:
  about a member we hold alive it starts one suspicion at Lifeguard's
  minimum timeout, and the accused is told directly; about one we hold
  suspect it confirms, moving the deadline to ``start + min`` but never
  before. So however many copies of a stale verdict arrive (the member
  list of the other side of a healed partition), a live member has the
  minimum timeout to refute, and hears of it at once. (memberlist turns
  failed into suspect for push-pull only, and lets a second copy kill.)
- Goodbyes: left(j) above the incarnation we hold, from the member itself
  (its push to a few members as it leaves, its announcement), is applied
  as it is. Relayed by anyone else it is taken on trust only once the
  member had the time to deny it: a suspicion at Lifeguard's minimum that
  ends as *left* (a forged goodbye repeated every half second kept a live
  member shown left 89% of the time: now it refutes each one, and is never
  shown left). left(i) at our incarnation cannot be the member's and is a
  verdict.
- Who may accuse: an accusation (suspect, failed, left at our incarnation)
  is believed only from a member we hold live. One from a member we hold
  failed, or do not know, comes from across a cut (after a heal, each
  side's list holds the other side failed): it changes nothing here, and
  is passed on to the accused, which refutes it for the far side.
- Incarnations (issue 12): only a member raises its own, by one per
  refutation, tag change or leave, so a state far above what we hold is
  not one it could have had. States above INCARNATION_MAX, or more than
  INCARNATION_STEP above the one we hold for that member (ourselves
  included), are refused: refuting (``theirs + 1``) then never leaves the
  wire's range (the codec takes up to 2**63 - 1), and one datagram cannot
  push a member to where it could not refute any more. A member restarted
  after 2**32 refutations would need two exchanges to catch up with its
  old incarnation; nothing else changes.
- Forced leaves (`overlay force-leave`, as Serf's): an operator may turn
  a member this node holds *failed* into *left* (no more reconnect tries;
  `force_leave_rule`). It spreads as left(i) at the failed incarnation:
  a node that holds the member failed at i or below, hearing it from a
  member it holds live, turns the tombstone left (`FORCED_LEFT`); a node
  that still holds it live treats it as any relayed verdict (a suspicion at
  the minimum, the member told), and the member itself refutes. So
  replaying a force-leave cannot evict a live member.
- Seeds: a contact known only by its address (`overlay.io.seed_id`) is
  never a member; states about one are ignored.

Input checks that need state stay with the caller, in this order, before
acting on ADD / TAKE_ALIVE / REFUTE for an alive state: the admission rate
of new members per sender host (ADD only), then the size of the tags
(`tags_bytes` against `max_tags_bytes`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from overlay.io import SEED_NAME, MemberStatus
from overlay.members import LIVE
from overlay.messages import MemberState, WireStatus

# The status a wire code stands for (`WireStatus` is the wire's, append
# only; `MemberStatus` is the member list's and the outputs').
STATUS_OF_WIRE: tuple[MemberStatus, ...] = (
    MemberStatus.ALIVE,
    MemberStatus.SUSPECT,
    MemberStatus.FAILED,
    MemberStatus.LEFT,
)
WIRE_OF_STATUS: dict[MemberStatus, WireStatus] = {
    MemberStatus.ALIVE: WireStatus.ALIVE,
    MemberStatus.SUSPECT: WireStatus.SUSPECT,
    MemberStatus.FAILED: WireStatus.FAILED,
    MemberStatus.LEFT: WireStatus.LEFT,
}

INCARNATION_MAX = 2**62
INCARNATION_STEP = 2**32
MAX_TAGS = 64  # tags per member


class TagsTooLarge(ValueError):
    """Local misuse: this node's tags exceed `max_tags_bytes`."""


def tags_bytes(tags: Mapping[str, str]) -> int:
    """The size of tags as `max_tags_bytes` counts it: keys and values in UTF-8."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in tags.items())


def check_tags(tags: Mapping[str, str], max_bytes: int) -> dict[str, str]:
    """A copy of `tags`, or TagsTooLarge."""
    size = tags_bytes(tags)
    if size > max_bytes:
        raise TagsTooLarge(f"tags are {size} bytes, the limit is {max_bytes} (swim.max_tags_bytes)")
    if len(tags) > MAX_TAGS:
        raise TagsTooLarge(f"at most {MAX_TAGS} tags")
    return dict(tags)


class Rule(enum.Enum):
    """What a received state does to the member list."""

    IGNORE = "ignore"  # nothing new, stale, about a tombstone or a seed
    REFUSE = "refuse"  # an incarnation the member could not have reached
    ADD = "add"  # alive, about a member we do not list
    TAKE_ALIVE = "take_alive"  # alive above what we hold: refuted, restarted, healed
    REFUTE = "refute"  # about us, and not what we are: go past it
    RESEND_ALIVE = "resend_alive"  # an accusation of us we refuted already
    PASS_ON = "pass_on"  # an accusation from a member we do not hold live
    SUSPECT = "suspect"  # a live member becomes suspect
    CONFIRM = "confirm"  # one more accuser of the suspicion we hold
    VERDICT = "verdict"  # another's failed/left verdict: a suspicion at the minimum
    CONFIRM_VERDICT = "confirm_verdict"  # a verdict on the suspicion we hold
    GOODBYE = "goodbye"  # left above what we hold, from the member itself
    RELAYED_GOODBYE = "relayed_goodbye"  # the same, relayed: a suspicion ending as left
    FORCED_LEFT = "forced_left"  # left about a member we hold failed: the tombstone turns left


Held = tuple[MemberStatus, int]
"""What we hold about a member: its status and incarnation."""


def accusation_applies(held: Held | None, incarnation: int) -> bool:
    """Can an accusation at `incarnation` change a member we hold `held`?
    Only a live one, at that incarnation or below."""
    return held is not None and held[0] in LIVE and incarnation >= held[1]


def suspect_rule(held: Held | None, incarnation: int) -> Rule:
    """suspect(i): an alive member at i or below becomes suspect; for one
    already suspect at i, the accuser is a confirmation."""
    if not accusation_applies(held, incarnation):
        return Rule.IGNORE
    assert held is not None
    if held[0] is MemberStatus.SUSPECT and incarnation == held[1]:
        return Rule.CONFIRM
    return Rule.SUSPECT


def merge_rule(
    held: Held | None,
    received: MemberState,
    *,
    about_me: bool,
    trusted: bool,
    from_subject: bool,
) -> Rule:
    """The rule for `received`, about a member we hold `held` (None: not
    listed; about us, our own state). `trusted`: the sender is a member we
    hold live; `from_subject`: the sender is the member the state is about."""
    status, incarnation = received.status, received.incarnation
    if status is WireStatus.ALIVE and held is not None and incarnation <= held[1]:
        return Rule.IGNORE  # the common case: nothing new
    if incarnation > INCARNATION_MAX or (
        held is not None and incarnation - held[1] > INCARNATION_STEP
    ):
        return Rule.REFUSE
    if received.node.name == SEED_NAME:
        return Rule.IGNORE
    if status is WireStatus.ALIVE:
        if about_me:
            return Rule.REFUTE  # an older self of ours went higher
        return Rule.ADD if held is None else Rule.TAKE_ALIVE
    if about_me:
        assert held is not None
        return Rule.REFUTE if incarnation >= held[1] else Rule.RESEND_ALIVE
    if not trusted:
        return Rule.PASS_ON if accusation_applies(held, incarnation) else Rule.IGNORE
    if status is WireStatus.SUSPECT:
        return suspect_rule(held, incarnation)
    if (
        status is WireStatus.LEFT
        and held is not None
        and held[0] is MemberStatus.FAILED
        and incarnation >= held[1]
    ):
        return Rule.FORCED_LEFT
    if not accusation_applies(held, incarnation):
        return Rule.IGNORE
    assert held is not None
    if (
        status is WireStatus.LEFT
        and from_subject
        and (incarnation > held[1] or held[0] is MemberStatus.SUSPECT)
    ):
        # Its own goodbye also ends the suspicion a relayed copy of it
        # started (held at the same incarnation), as it would have ended ours.
        return Rule.GOODBYE
    if status is WireStatus.LEFT and incarnation > held[1]:
        return Rule.RELAYED_GOODBYE
    if held[0] is MemberStatus.SUSPECT and incarnation == held[1]:
        return Rule.CONFIRM_VERDICT
    return Rule.VERDICT


class ForceLeaveRefused(ValueError):
    """Local misuse: a force-leave this node must not carry out."""


def force_leave_rule(name: str, held: Held | None, *, about_me: bool) -> bool:
    """May an operator force the member `name` (held `held`) to left here?
    True: do it; False: nothing to do (it has left already). Serf's rule:
    only a member held failed; a live one (alive or suspect) would refute
    anyway, and must be stopped, or left to fail, first."""
    if about_me:
        raise ForceLeaveRefused(f"{name!r} is this agent: use `overlay leave`")
    if held is None:
        raise ForceLeaveRefused(f"no member named {name!r}")
    status = held[0]
    if status is MemberStatus.LEFT:
        return False
    if status is not MemberStatus.FAILED:
        raise ForceLeaveRefused(
            f"{name!r} is {status.value}: only a failed member can be forced to leave "
            "(stop that agent, or wait until the cluster declares it failed)"
        )
    return True


def covers(theirs: MemberState, mine: MemberState) -> bool:
    """Does the accusation `theirs` make our pending `mine` redundant? The
    same member, at our incarnation or later, as grave or graver (suspect <
    failed/left). A suspicion never covers a verdict."""
    if mine.status is WireStatus.ALIVE or theirs.incarnation < mine.incarnation:
        return False
    return theirs.incarnation > mine.incarnation or theirs.status >= mine.status
