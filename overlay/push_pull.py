"""SWIM push-pull: joining, anti-entropy and reconnecting.

Rules of this module: every full-state exchange starts and ends here; the
states it brings are merged by `overlay.merging`. A stream is opened only
for the exchange and closed after the reply (the node keeps it when
another layer uses it). Randomness comes from the injected
`random.Random` only.

Theory of operation
-------------------
- An exchange: we send our whole member list, tombstones included, in
  frames of at most `push_pull_part_bytes` (`PushPull` parts); the peer
  merges each part as it comes and, after the last part, answers with its
  own list (merged first, so a refutation it provoked goes back at once).
  One exchange per peer address at a time; one we started and that was
  never answered is forgotten after `_EXCHANGE_TIMEOUT`.
- Joining: push-pull with a seed (one at a time, the next one at once if
  the dial fails), retried with capped exponential backoff
  (`overlay.backoff`) until a seed answers. Then, with
  `announce_arrivals`, our arrival is announced over the tree too
  (`overlay.dissemination`; it stays queued for piggybacking, the
  backstop). The joiner holds the whole list as its seed knew it, but
  not the members that joined alongside it: while it was new, few members
  knew it, and their arrivals were gossiped to others. One more exchange once the burst has spread
  (`join_followup`), with a member that was there before us (a random one
  could be as new as we are), fills that in; while a follow-up still
  teaches us members, one more with another member (at most
  `join_followups`): the chance of two partners missing the same member is
  small, and the next anti-entropy exchange may be minutes away in a large
  cluster.
- Anti-entropy: with one random alive member every `push_pull_period`
  (+-10%), scaled by cluster size as memberlist does
  (`push_pull_interval`).
- Reconnecting: with one random recently failed member every
  `reconnect_period`, for `reconnect_for`: when a partition heals, that
  exchange tells the far side it was thought failed, it refutes, and the
  two member lists merge. A member that answers alive is `Reappeared`: the
  node bridges the two overlays.
- Strangers: a member we do not list at all that talks to us means we
  missed its arrival; a push-pull with it fills the gap both ways
  (`_meet`, at most one per protocol period).
"""

from __future__ import annotations

import math

from overlay.codec import state_size
from overlay.ids import NodeId
from overlay.io import (
    SEED_NAME,
    CancelTimer,
    CloseConnection,
    MemberStatus,
    Output,
    Reappeared,
    Send,
    SetTimer,
)
from overlay.merging import Merging
from overlay.messages import PUSH_PULL_MAX_STATES, MemberState, PushPull, WireStatus
from overlay.swim_state import JOIN_TIMER, PUSH_PULL_TIMER, RECONNECT_TIMER, Exchange, SwimState

# Push-pull exchanges with no answer are forgotten after this long (guess:
# far beyond any connect timeout).
_EXCHANGE_TIMEOUT = 60.0
# memberlist's pushPullScaleThreshold: above this many members the push-pull
# period grows with log2(N).
_PUSH_PULL_SCALE_FROM = 32


def push_pull_interval(period: float, n: int) -> float:
    """memberlist's pushPullScale: the period times ceil(log2(n) - log2(32)) + 1
    above 32 members, so the O(N)-byte exchange stays affordable."""
    if n <= _PUSH_PULL_SCALE_FROM:
        return period
    return period * (math.ceil(math.log2(n) - math.log2(_PUSH_PULL_SCALE_FROM)) + 1)


class Exchanges(Merging):
    def on_push_pull(
        self,
        sender: NodeId,
        reply: bool,
        part: int,
        parts: int,
        states: tuple[MemberState, ...],
        now: float,
        out: list[Output],
    ) -> None:
        """PUSH-PULL: merge the sender's state; after the last part of a
        request, answer with ours. After the last part of a reply, the
        exchange we started is over."""
        exchange = self._exchanges.get((sender.host, sender.port)) if reply else None
        kind = exchange[0] if exchange is not None else None
        joining = kind is Exchange.JOIN
        known = len(self.members.by_id)
        self._merge_all(states, sender, now, out, joining=joining, ours=kind is not None)
        if kind is Exchange.FOLLOWUP:
            self._followup_news += len(self.members.by_id) - known
        if joining and self.state is not SwimState.JOINED:
            self._elders += [
                st.node for st in states if st.status is WireStatus.ALIVE and st.node != self.me
            ]
        if part != parts - 1:
            return
        if not reply:
            self.counters["push_pulls_answered"] += 1
            out.extend(Send(sender, msg) for msg in self._state_parts(reply=True))
            return
        exchange = self._exchanges.pop((sender.host, sender.port), None)
        if exchange is None:
            return
        kind = exchange[0]
        if kind is Exchange.JOIN and self.state is not SwimState.JOINED:
            self.state = SwimState.JOINED
            out.append(CancelTimer(JOIN_TIMER))
            self._announce_arrival()
            # The follow-up, then anti-entropy every (scaled) period (the
            # timer armed at start was scaled for a cluster of one).
            self._arm_followup(out)
        elif kind is Exchange.FOLLOWUP:
            news, self._followup_news = self._followup_news, 0
            if news and self._followups < self.cfg.join_followups:
                self._another_followup = True
                self._arm_followup(out)
        elif kind is Exchange.RECONNECT:
            member = self.members.get(sender)
            if member is not None and member.status is MemberStatus.ALIVE:
                self.counters["reconnected"] += 1
                out.append(Reappeared(sender))
        # The stream was only for this exchange (the node keeps it when
        # another layer uses it).
        out.append(CloseConnection(sender))

    # ------------------------------------------------------------- joining

    def handle_join_cluster(self, seeds: tuple[NodeId, ...], now: float, out: list[Output]) -> None:
        """Join through `seeds` (this node's own address left out)."""
        mine = (self.me.host, self.me.port)
        self.seeds = [s for s in seeds if (s.host, s.port) != mine]
        self._seed_index = 0
        self._join_backoff.reset()
        if self.seeds:
            self.state = SwimState.JOINING
            self._join_attempt(now, out)
        elif self.state is SwimState.JOINING:
            self.state = SwimState.IDLE

    def handle_connect_failed(self, peer: NodeId, now: float, out: list[Output]) -> None:
        exchange = self._exchanges.pop((peer.host, peer.port), None)
        if exchange is None or exchange[0] is not Exchange.JOIN:
            return
        if self.state is SwimState.JOINING and self._seed_index % len(self.seeds) != 0:
            # Do not wait for the retry timer: the next seed may be up.
            self._join_attempt(now, out)

    def _join_retry(self, now: float, out: list[Output]) -> None:
        if self.state is SwimState.JOINING:
            self._join_attempt(now, out)

    def _join_attempt(self, now: float, out: list[Output]) -> None:
        seed = self.seeds[self._seed_index % len(self.seeds)]
        self._seed_index += 1
        self._exchanges.pop((seed.host, seed.port), None)
        self._push_pull(seed, Exchange.JOIN, now, out)
        out.append(SetTimer(JOIN_TIMER, self._join_backoff.next()))

    # -------------------------------------------------------- anti-entropy

    def _anti_entropy(self, now: float, out: list[Output]) -> None:
        for key in [k for k, (_, _, t) in self._exchanges.items() if now - t > _EXCHANGE_TIMEOUT]:
            del self._exchanges[key]
        elders, self._elders = self._elders, []
        if elders:
            # The follow-up after our join: with a member that was there
            # before us.
            live = [
                e
                for e in elders
                if (m := self.members.get(e)) is not None and m.status is MemberStatus.ALIVE
            ]
            peers = [self.rng.choice(live)] if live else self.members.random_alive(1)
        else:
            peers = self.members.random_alive(1)
        followup = bool(elders) or self._another_followup
        self._another_followup = False
        if followup:
            self._followups += 1
            self._followup_news = 0
        kind = Exchange.FOLLOWUP if followup else Exchange.ANTI_ENTROPY
        for peer in peers:
            self._push_pull(peer, kind, now, out)
        period = self._push_pull_period()
        out.append(SetTimer(PUSH_PULL_TIMER, period * (0.9 + 0.2 * self.rng.random())))

    def _arm_followup(self, out: list[Output]) -> None:
        """The next push-pull is a follow-up, `join_followup` (+-25%) away."""
        delay = self.cfg.join_followup * (0.75 + 0.5 * self.rng.random())
        out.append(SetTimer(PUSH_PULL_TIMER, delay))

    def _push_pull_period(self) -> float:
        return push_pull_interval(self.cfg.push_pull_period, self.members.live)

    def _try_reconnect(self, now: float, out: list[Output]) -> None:
        """Push-pull with one random member that failed within
        `reconnect_for` (and is still failed, or was reaped since)."""
        candidates = self._reconnect
        while candidates:
            node, since = next(iter(candidates.items()))
            if since + self.cfg.reconnect_for > now:
                break
            del candidates[node]
        live = [
            n
            for n in candidates
            if (m := self.members.get(n)) is None or m.status is MemberStatus.FAILED
        ]
        if live:
            self._push_pull(self.rng.choice(live), Exchange.RECONNECT, now, out)
        period = self.cfg.reconnect_period
        out.append(SetTimer(RECONNECT_TIMER, period * (0.9 + 0.2 * self.rng.random())))

    def _meet(self, stranger: NodeId, now: float, out: list[Output]) -> None:
        """A member we do not list at all talks to us: we missed its arrival
        (in a burst of joins, an early joiner's alive state ran out of
        retransmissions while the cluster was small, and later joiners
        inherited the gap from their seeds: measured, 2 of 9,900 entries
        still missing 40 s after 100 joins). A push-pull with it fills the
        gap both ways; at most one such exchange per protocol period."""
        if stranger.name == SEED_NAME or now < self._next_meeting:
            return
        self._next_meeting = now + self.cfg.probe_period
        self.counters["strangers_met"] += 1
        self._push_pull(stranger, Exchange.ANTI_ENTROPY, now, out)

    # ------------------------------------------------------------ exchanges

    def _push_pull(self, peer: NodeId, kind: Exchange, now: float, out: list[Output]) -> None:
        key = (peer.host, peer.port)
        if key in self._exchanges:
            return
        self._exchanges[key] = (kind, peer, now)
        self.counters["push_pulls"] += 1
        out.extend(Send(peer, msg) for msg in self._state_parts(reply=False))

    def _state_parts(self, reply: bool) -> list[PushPull]:
        """Our whole member list, tombstones included, in frames of at most
        `push_pull_part_bytes`."""
        budget = self.cfg.push_pull_part_bytes
        parts: list[list[MemberState]] = [[]]
        size = 0
        for member in self.members:
            if member.status is MemberStatus.ALIVE:
                state, n = self._alive_state(member)
            else:
                state = self._state_of(member)
                n = state_size(state)
            if parts[-1] and (size + n > budget or len(parts[-1]) >= PUSH_PULL_MAX_STATES):
                parts.append([])
                size = 0
            parts[-1].append(state)
            size += n
        return [PushPull(reply, i, len(parts), tuple(p)) for i, p in enumerate(parts)]
