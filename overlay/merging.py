"""SWIM: applying the merge rules to the member list.

Rules of this module: `overlay.member_rules` decides which state wins (pure
functions, tested as tables); this module carries each decision out on the
member list, the suspicions, the piggyback queue and the outputs. Which
state wins is decided there and nowhere else.

Theory of operation
-------------------
- A received batch of states (`_merge_all`) is judged state by state, each
  against what we hold *before* the batch changes anything about its
  sender (an accusation is believed only from a member we hold live).
- New members learned second-hand are admitted at most `_ADMIT_PER_HOST`
  a second per sender host: one member could otherwise fill every list
  with fabricated members (5,000 of them kept a paused member unprobed for
  45 s, issue 12). Exchanges we start ourselves are not limited. An alive
  state whose tags exceed `max_tags_bytes` is dropped.
- A joiner learns the whole cluster from its seed's reply: none of that is
  news to anyone but itself, so only the seed's own state is passed on.
  Members new to us in any other exchange are gaps others may share:
  spread them.
- A name is listed once while its holder lives: a node claiming a live
  member's name at another address is refused (`NameConflict`, issue 12);
  a name whose holder failed or left passes to the new address.
- Suspicions (Lifeguard, `overlay.suspicion`): a suspect's timer starts
  between Lifeguard's minimum and maximum; each distinct accuser
  confirms and shortens it. An accusation we hear from another (not from
  our own probe) makes us ping the accused with it first on the ping
  (`_verify`): a live member refutes at once, and a crashed process's host
  refuses the ping, which is our own evidence (`PeerRefused`).
- Verdicts: only the first accuser announces the verdict its timer
  reaches (every node that heard the suspicion runs the same timer, and
  they all expire within a broadcast's latency of each other: otherwise a
  failure would cost N broadcasts); a confirmation by our own probe of
  someone else's suspicion goes to that first accuser alone, one datagram.
"""

from __future__ import annotations

from overlay.dissemination import Dissemination
from overlay.ids import NodeId
from overlay.io import (
    CancelTimer,
    MemberChanged,
    MemberStatus,
    NameConflict,
    Output,
    Send,
    SetTimer,
    Timer,
)
from overlay.member_rules import (
    Rule,
    accusation_applies,
    merge_rule,
    suspect_rule,
    tags_bytes,
)
from overlay.members import DEAD, LIVE, MemberEntry
from overlay.messages import MemberState, MemberUpdates, Ping, WireStatus
from overlay.suspicion import Suspicion, expected_confirmations, suspicion_min
from overlay.swim_state import SwimState, SwimTimer

ALIVE, SUSPECT, FAILED, LEFT = (
    MemberStatus.ALIVE,
    MemberStatus.SUSPECT,
    MemberStatus.FAILED,
    MemberStatus.LEFT,
)


class Merging(Dissemination):
    def _merge_all(
        self,
        states: tuple[MemberState, ...],
        sender: NodeId,
        now: float,
        out: list[Output],
        *,
        joining: bool = False,
        ours: bool = False,
    ) -> None:
        """Merge `states` from `sender` (`joining`: the reply to our join;
        `ours`: the reply to an exchange we started, with a member we
        chose)."""
        known = self.members.by_id
        me = self.me
        author = known.get(sender)
        trusted = author is not None and author.status in LIVE
        for state in states:
            node = state.node
            member = known.get(node)
            if (
                state.status is WireStatus.ALIVE
                and member is not None
                and state.incarnation <= member.incarnation
            ):
                continue  # the common case, inline: merge_rule says IGNORE
            held = None if member is None else (member.status, member.incarnation)
            rule = merge_rule(
                held, state, about_me=node == me, trusted=trusted, from_subject=node == sender
            )
            if rule is Rule.IGNORE:
                continue
            if rule is Rule.REFUSE:
                self.counters["states_refused"] += 1
                continue
            if state.status is WireStatus.ALIVE:
                if rule is Rule.ADD and not ours and not self._admit.allow(sender.host, now):
                    self.counters["admissions_refused"] += 1
                    continue
                if state.tags and tags_bytes(state.tags) > self.cfg.max_tags_bytes:
                    self.counters["oversized_tags_dropped"] += 1
                    continue
            match rule:
                case Rule.REFUTE:
                    self._refute(state.incarnation, now)
                case Rule.ADD:
                    if not self._name_taken(node, now, out):
                        # Only the seed's own state is news in a join reply.
                        spread = not joining or node == sender
                        self._add(node, state.incarnation, state.tags, now, out, spread=spread)
                case Rule.TAKE_ALIVE:
                    assert member is not None
                    self._take_alive(member, state.incarnation, state.tags, now, out)
                case Rule.RESEND_ALIVE:
                    self._resend_alive(sender, now, out)
                case Rule.PASS_ON:
                    self._pass_on(state, now, out)
                case Rule.SUSPECT | Rule.CONFIRM:
                    accuser = state.accuser or sender
                    self._on_suspect(node, state.incarnation, accuser, now, out, local=False)
                case Rule.GOODBYE:
                    self._on_dead(node, state.incarnation, LEFT, now, out, local=False)
                case Rule.RELAYED_GOODBYE:
                    self._on_relayed_goodbye(node, state.incarnation, sender, now, out)
                case Rule.CONFIRM_VERDICT | Rule.VERDICT:
                    self._on_verdict(node, state.incarnation, sender, now, out)
                case Rule.FORCED_LEFT:
                    assert member is not None
                    self._forced_left(member, state.incarnation, now, out, local=False)

    # ------------------------------------------------------------ alive

    def _add(
        self,
        node: NodeId,
        incarnation: int,
        tags: dict[str, str],
        now: float,
        out: list[Output],
        *,
        spread: bool,
    ) -> None:
        """A member joins the list."""
        member = MemberEntry(node, incarnation, ALIVE, tags, now)
        self.members.add(member)
        out.append(MemberChanged(node, ALIVE, incarnation, tags))
        if spread:
            self._spread(self._state_of(member), local=False)

    def _take_alive(
        self,
        member: MemberEntry,
        incarnation: int,
        tags: dict[str, str],
        now: float,
        out: list[Output],
    ) -> None:
        """alive(i) above what we hold, whatever its status: a refutation, a
        restart, a healed partition."""
        old = member.status
        self._end_suspicion(member, out)
        self.members.set_state(member, ALIVE, incarnation, now)
        changed = old is not ALIVE or tags != member.tags
        member.tags = tags
        if changed:
            out.append(MemberChanged(member.node, ALIVE, incarnation, tags))
        if old in DEAD:
            self._reconnect.pop(member.node, None)
        self._spread(self._state_of(member), local=False)

    def _name_taken(self, node: NodeId, now: float, out: list[Output]) -> bool:
        """Does a live member already hold `node`'s name at another address?
        Then `node` is refused (a second agent started under a member's
        name was listed twice, issue 12), and the driver hears of it once a
        period: the holder's side logs it; when the holder is this node and
        we are still joining, *we* are the newcomer (our seed knew the name
        first) and the claimant is us."""
        holder = self.members.named(node.name)
        if holder is None or holder.node == node or holder.status not in LIVE:
            return False
        self.counters["name_conflicts"] += 1
        if holder.node == self.me and self.state is SwimState.JOINING:
            conflict = NameConflict(node.name, holder=node, claimant=self.me)
        else:
            conflict = NameConflict(node.name, holder=holder.node, claimant=node)
        if self._may_tell(node, now):
            out.append(conflict)
        return True

    # ------------------------------------------------------------- about us

    def _refute(self, accused: int, now: float) -> None:
        """Someone holds a state about us at `accused` that is not ours: go
        past it and spread alive (SWIM sec. 4.2). Lifeguard: having to
        refute means others could not hear us; raise our health score.
        (`merge_rule` refuses states above INCARNATION_MAX: this stays in
        the wire's range.)"""
        self.incarnation = max(self.incarnation, accused) + 1
        self.members.set_state(self._self, ALIVE, self.incarnation, now)
        self.awareness.apply(1)
        self.counters["refutations"] += 1
        self._spread(self._state_of(self._self), local=True)

    def _resend_alive(self, sender: NodeId, now: float, out: list[Output]) -> None:
        """An accusation we already refuted: the sender missed our
        refutation. Send it our alive state directly, so it does not hold us
        suspect (or let its timer end us) while the refutation finds its way."""
        if self._may_tell(sender, now):
            self.counters["refutations_resent"] += 1
            state = self._state_of(self._self)
            out.append(Send(sender, MemberUpdates((state,)), reliable=False))

    # ----------------------------------------------------------- accusations

    def _pass_on(self, state: MemberState, now: float, out: list[Output]) -> None:
        """An accusation from a member we hold failed, or do not know: it
        could not reach the accused (we could, or we would hold it failed
        too), as after a partition heals. It is not evidence, so it changes
        nothing here; but the accused must refute it for the accuser's side
        to take it back, so it is passed on to the accused, once a protocol
        period at most."""
        self.counters["accusations_passed_on"] += 1
        if self._may_tell(state.node, now):
            out.append(Send(state.node, MemberUpdates((state,)), reliable=False))

    def _on_suspect(
        self,
        node: NodeId,
        incarnation: int,
        accuser: NodeId,
        now: float,
        out: list[Output],
        *,
        local: bool,
        verdict: bool = False,
    ) -> None:
        """suspect(i) (`suspect_rule`): start a suspicion and its timer, or
        count a confirmation that brings the deadline closer (Lifeguard),
        passed on. `local`: our own evidence; `verdict`: the suspicion
        stands for another node's verdict (`_on_verdict`)."""
        member = self.members.get(node)
        held = None if member is None else (member.status, member.incarnation)
        rule = suspect_rule(held, incarnation)
        if rule is Rule.IGNORE:
            return
        assert member is not None
        if rule is Rule.CONFIRM:
            suspicion = self._suspicions.get(node)
            if suspicion is None:
                return
            if suspicion.confirm(accuser):
                self.counters["confirmations"] += 1
                delay = max(0.0, suspicion.deadline() - now)
                out.append(SetTimer(Timer(SwimTimer.SUSPICION, (node, incarnation)), delay))
                state = MemberState(node, incarnation, WireStatus.SUSPECT, {}, accuser)
                self._spread(state, local=False)
                if local:
                    self._confirm_to_first_accuser(suspicion, state, out)
            if suspicion.proven(self.me):
                self._declare_proven(member, suspicion, now, out)
            return
        self._end_suspicion(member, out)
        self.members.set_state(member, SUSPECT, incarnation, now)
        n = self.members.live
        lifeguard = self.cfg.lifeguard
        k = expected_confirmations(self.cfg.indirect_k, n) if lifeguard else 0
        lo = suspicion_min(self.cfg.suspicion_mult, n, self.cfg.probe_period)
        hi = lo * self.cfg.suspicion_max_mult if lifeguard else lo
        suspicion = Suspicion(accuser, now, k, lo, hi, verdict=verdict)
        self._suspicions[node] = suspicion
        self.counters["suspicions"] += 1
        out.append(MemberChanged(node, SUSPECT, incarnation, member.tags))
        out.append(SetTimer(Timer(SwimTimer.SUSPICION, (node, incarnation)), suspicion.timeout()))
        state = MemberState(node, incarnation, WireStatus.SUSPECT, {}, accuser)
        self._spread(state, local=local)
        if accuser != self.me and not verdict:
            self._verify(node, state, now, out, budget=True)

    def _on_relayed_goodbye(
        self, node: NodeId, incarnation: int, accuser: NodeId, now: float, out: list[Output]
    ) -> None:
        """left(j) above what we hold, relayed by another: a suspicion at
        Lifeguard's minimum that ends as left unless the member denies it."""
        self.counters["goodbyes_relayed"] += 1
        self._on_suspect(node, incarnation, accuser, now, out, local=False, verdict=True)
        relayed = self._suspicions.get(node)
        if relayed is not None:
            relayed.leaving = True
        state = MemberState(node, incarnation, WireStatus.SUSPECT, {}, accuser)
        self._verify(node, state, now, out, budget=False)

    def _on_verdict(
        self, node: NodeId, incarnation: int, accuser: NodeId, now: float, out: list[Output]
    ) -> None:
        """failed(i), or left(i) at our incarnation, about another member,
        from a member we hold live: never a death at once. About a member
        we hold suspect at i, a confirmation: the deadline moves to ``start
        + min`` at the earliest, and a suspicion older than that ends now;
        otherwise one suspicion at the minimum, and the accused is told
        directly so it can refute."""
        member = self.members.by_id[node]
        suspicion = None
        if member.status is SUSPECT and incarnation == member.incarnation:
            suspicion = self._suspicions.get(node)
        if suspicion is not None:
            suspicion.confirm_verdict(accuser)
            self.counters["verdicts_confirming"] += 1
            if suspicion.proven(self.me):
                self._declare_proven(member, suspicion, now, out)
                return
            timer = Timer(SwimTimer.SUSPICION, (node, incarnation))
            out.append(SetTimer(timer, max(0.0, suspicion.deadline() - now)))
            return
        self.counters["verdicts_as_suspicions"] += 1
        self._on_suspect(node, incarnation, accuser, now, out, local=False, verdict=True)
        state = MemberState(node, incarnation, WireStatus.SUSPECT, {}, accuser)
        self._verify(node, state, now, out, budget=False)

    def _verify(
        self, node: NodeId, state: MemberState, now: float, out: list[Output], *, budget: bool
    ) -> None:
        """Ping a member we just heard accused, the accusation first on the
        ping: a live member refutes at once (Lifeguard's buddy system, from
        every node that hears the suspicion, not only from its next
        prober), and a crashed process's host refuses it, which is our own
        evidence (`Probing.handle_peer_refused`). Once a period per member,
        and at most `verify_max` a period in all when `budget` (the ack is
        not awaited: a missing one proves nothing a probe would not)."""
        if budget:
            if self._verify_budget <= 0:
                self.counters["verifications_skipped"] += 1
                return
            self._verify_budget -= 1
        if not self._may_tell(node, now):
            return
        self.counters["verifications"] += 1
        self._seq += 1
        out.append(Send(node, Ping(self._seq, node, self._piggyback(state)), reliable=False))

    def _confirm_to_first_accuser(
        self, suspicion: Suspicion, state: MemberState, out: list[Output]
    ) -> None:
        """Our own probe confirms a suspicion someone else raised. Only the
        first accuser announces the verdict, so its timer is the one a
        confirmation must shorten: tell it directly, one datagram, instead
        of broadcasting to every member. A confirmation broadcast per
        confirmer cost k+1 cluster-wide broadcasts per failure, which under
        a mass failure is a storm. Everyone else still hears it piggybacked."""
        first = next(iter(suspicion.accusers))
        if isinstance(first, NodeId) and first != self.me:
            out.append(Send(first, MemberUpdates((state,)), reliable=False))

    # --------------------------------------------------------------- verdicts

    def _declare_proven(
        self, member: MemberEntry, suspicion: Suspicion, now: float, out: list[Output]
    ) -> None:
        """Failed now: refused here and accused elsewhere (see
        `Probing.handle_peer_refused`). The first accuser announces it, as
        for a timer."""
        first = next(iter(suspicion.accusers)) == self.me
        self.counters["refused_verdicts"] += 1
        self.counters["declared_failed"] += 1
        self._on_dead(member.node, member.incarnation, FAILED, now, out, local=first)

    def _on_dead(
        self,
        node: NodeId,
        incarnation: int,
        status: MemberStatus,
        now: float,
        out: list[Output],
        *,
        local: bool,
    ) -> None:
        """failed(i) / left(i), as decided here (our suspicion timer ran
        out, a proven refusal) or the member's own goodbye: a live member at
        i or below becomes a tombstone."""
        member = self.members.get(node)
        held = None if member is None else (member.status, member.incarnation)
        if not accusation_applies(held, incarnation):
            return
        assert member is not None
        self._end_suspicion(member, out)
        self.members.set_state(member, status, incarnation, now)
        out.append(MemberChanged(node, status, incarnation, member.tags))
        if status is FAILED:
            self._reconnect[node] = now
        self._spread(self._state_of(member), local=local)

    def _forced_left(
        self, member: MemberEntry, incarnation: int, now: float, out: list[Output], *, local: bool
    ) -> None:
        """A failed member becomes left (`overlay force-leave`, here or
        relayed: `Rule.FORCED_LEFT`): no more reconnect tries, and the left
        state spreads. `local`: the operator asked this node."""
        self.members.set_state(member, LEFT, incarnation, now)
        self._reconnect.pop(member.node, None)
        self.counters["forced_leaves"] += 1
        out.append(MemberChanged(member.node, LEFT, incarnation, member.tags))
        self._spread(self._state_of(member), local=local)

    def _end_suspicion(self, member: MemberEntry, out: list[Output]) -> None:
        if self._suspicions.pop(member.node, None) is not None:
            key = (member.node, member.incarnation)
            out.append(CancelTimer(Timer(SwimTimer.SUSPICION, key)))
