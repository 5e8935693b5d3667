"""SWIM dissemination: how a member change reaches the cluster.

Rules of this module: every change the member list accepts is queued here
(`_spread`), and leaves only through the ways below; nothing here decides
which state wins (`overlay.member_rules`). Randomness comes from the
injected `random.Random` only.

Theory of operation
-------------------
- Piggybacking (SWIM sec. 4.1): every accepted change is queued in the
  piggyback queue (`overlay.piggyback`) and rides on our PINGs, PING-REQs
  and ACKs (`piggyback_bytes` per message, each update sent
  ``retransmit_mult * ceil(log10(N+1))`` times).
- Dissemination rounds (memberlist's "gossip"; the config keys keep that
  name): while the queue holds updates, every `gossip_interval` the
  waiting updates go, as much as a datagram holds, to `gossip_nodes`
  random members, suspects and members failed within `gossip_to_the_dead`
  included, so that what is said of a member reaches the member. Each
  counts as a transmission like a piggyback does.
- Announcements: changes this node originates (its own suspicions, the
  verdicts on suspicions it started first, its refutations, leave and
  tags; its arrival too, once its join exchange is answered, with
  `announce_arrivals`) are also collected, when `announce` is on, and
  leave as `Announce` outputs: the node broadcasts them over Plumtree so
  the whole cluster hears in a few hundred milliseconds (see
  `overlay.node`). Every other node then runs the same suspicion timer
  and reaches the same verdict at about the same time. Arrivals are off
  by default: a burst of joins announced makes as many concurrent origins
  on the shared tree while the joins keep adding eager links, and they
  prune each other's links (measured at 1,000 nodes: arrivals reach every
  list in p99 1.53 s instead of 3.33 s, but the run takes 4.5x the events,
  542,720 PRUNEs and 243,281 GRAFTs; docs/membership-over-tree.md).
- The batching window: suspicions wait a random time in [announce_delay,
  announce_max_delay], so that racing accusers hear each other first;
  anything else (a verdict, a refutation, tags) waits the minimum, and
  shortens a window already open; a leave goes at once. A suspicion
  another accuser broadcast while ours waited in its window is not
  broadcast again (`handle_announced`): the neighbours of a crashed node
  all probe it out of turn and suspect it within a few milliseconds of
  each other, and one broadcast of the suspicion is enough. The suspicion
  we keep names the announcer as its first accuser, so the verdict is
  announced once too (by the announcer; everyone's own timer still
  reaches it if the announcer dies), and our own accusation goes to the
  announcer alone, as a confirmation.
"""

from __future__ import annotations

import math

from overlay.codec import state_size
from overlay.ids import NodeId
from overlay.io import Announce, Output, Send, SetTimer
from overlay.member_rules import covers
from overlay.members import MemberEntry
from overlay.messages import SWIM_MAX_UPDATES, MemberState, MemberUpdates, WireStatus
from overlay.swim_state import ANNOUNCE_TIMER, DISSEMINATE_TIMER, SwimBase


def retransmit_limit(mult: int, n: int) -> int:
    """How many times an update is piggybacked: mult * ceil(log10(n + 1))."""
    return mult * math.ceil(math.log10(n + 1))


class Dissemination(SwimBase):
    def _spread(self, state: MemberState, *, local: bool) -> None:
        """Queue a change for piggybacking; announce it too when this node
        originated it (`local`)."""
        self.queue.put(state.node, state, state_size(state))
        if local and self.announce:
            self._announcements.append(state)

    def _piggyback(self, first: MemberState | None = None) -> tuple[MemberState, ...]:
        """The updates for one outgoing probe message, `first` first."""
        budget = self.cfg.piggyback_bytes
        limit = retransmit_limit(self.cfg.retransmit_mult, self.members.live)
        if first is None:
            updates = self.queue.take(budget, limit)
        else:
            updates = [first, *self.queue.take(budget - state_size(first), limit, first.node)]
        return tuple(updates[:SWIM_MAX_UPDATES])

    def _announce_arrival(self) -> None:
        """Our join exchange was answered: announce our own alive state
        (with `announce_arrivals`), after the shortest window; it is in the
        piggyback queue since start, and stays there. Announcing at once
        gained nothing measurable: the tree's repairs, not the window,
        dominate."""
        if self.announce and self.cfg.announce_arrivals:
            self._announcements.append(self._state_of(self._self))

    # ------------------------------------------------------ dissemination rounds

    def _arm_round(self, out: list[Output]) -> None:
        """Dissemination rounds run while the piggyback queue holds updates."""
        if self._round_armed or not self.queue or self.cfg.gossip_nodes <= 0:
            return
        if self.members.live < 2:  # nobody to tell yet
            return
        self._round_armed = True
        out.append(SetTimer(DISSEMINATE_TIMER, self.cfg.gossip_interval))

    def _disseminate(self, now: float, out: list[Output]) -> None:
        """One round: the waiting updates, as much as a datagram holds, to a
        few random members, suspects and the recently failed included
        (`MemberList.dissemination_targets`)."""
        self._round_armed = False
        cfg = self.cfg
        for peer in self.members.dissemination_targets(
            cfg.gossip_nodes, now, cfg.gossip_to_the_dead
        ):
            updates = self._piggyback()
            if not updates:
                break
            out.append(Send(peer, MemberUpdates(updates), reliable=False))
            self.counters["disseminations_sent"] += 1

    # ---------------------------------------------------------- announcements

    def _arm_announce(self, out: list[Output], now: float) -> None:
        """Open the batching window when announcements wait and none is
        open; an urgent one (anything but a suspicion) shortens it."""
        if not self._announcements or self._announce_now:
            return
        lo, hi = self.cfg.announce_delay, self.cfg.announce_max_delay
        urgent = any(a.status is not WireStatus.SUSPECT for a in self._announcements)
        window = self._announce_window
        if window is not None and (not urgent or window <= now + lo):
            return
        if hi <= 0:
            self._announce_now = True
            return
        delay = lo if urgent else lo + (hi - lo) * self.rng.random()
        self._announce_window = now + delay
        out.append(SetTimer(ANNOUNCE_TIMER, delay))

    def _window_closed(self) -> None:
        """The ANNOUNCE timer: the batch goes out at the end of this step."""
        self._announce_window = None
        self._announce_now = True

    def _emit_announcements(self, out: list[Output]) -> None:
        """When the batch is due: everything waiting, in batches of
        `SWIM_MAX_UPDATES`, as `Announce` outputs."""
        if not self._announce_now:
            return
        self._announce_now = False
        pending = self._announcements
        while pending:
            out.append(Announce(MemberUpdates(tuple(pending[:SWIM_MAX_UPDATES]))))
            del pending[:SWIM_MAX_UPDATES]

    def _strike_announced(self, updates: tuple[MemberState, ...], out: list[Output]) -> None:
        """A batch another node broadcast to the whole cluster (merged
        already): what it told everyone is struck from our own batch still
        waiting in its window."""
        if not self._announcements:
            return
        told = {s.node: s for s in updates if s.status is not WireStatus.ALIVE}
        if not told:
            return
        kept = []
        for mine in self._announcements:
            theirs = told.get(mine.node)
            if theirs is not None and covers(theirs, mine):
                self._yield_first_accuser(mine.node, theirs, mine, out)
                self.counters["announcements_suppressed"] += 1
            else:
                kept.append(mine)
        self._announcements = kept

    def _yield_first_accuser(
        self, node: NodeId, theirs: MemberState, mine: MemberState, out: list[Output]
    ) -> None:
        """Make the announcer of a suspicion we also raised its first accuser
        here, and send it our own as a confirmation (Lifeguard: it shortens
        the timer that decides the verdict)."""
        suspicion = self._suspicions.get(node)
        accuser = theirs.accuser
        if suspicion is None or accuser is None or accuser == self.me:
            return
        rest = {a: None for a in suspicion.accusers if a != accuser}
        suspicion.accusers = {accuser: None, **rest}
        if mine.status is WireStatus.SUSPECT and mine.accuser == self.me:
            out.append(Send(accuser, MemberUpdates((mine,)), reliable=False))

    def _drop_own_suspicion(self, member: MemberEntry) -> None:
        """Stop spreading our suspicion of `member`: out of the piggyback
        queue, and out of the announcement batch still in its window."""
        state = self._state_of(member)
        if self.queue.get(member.node) == state:
            self.queue.drop(member.node)
        if state in self._announcements:
            self._announcements.remove(state)
