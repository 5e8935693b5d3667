"""SWIM: the member list and failure detection, with Lifeguard.

References: Das, Gupta, Motivala, "SWIM: Scalable Weakly-consistent
Infection-style Process Group Membership Protocol", DSN 2002; Dadgar,
Phillips, Currey, "Lifeguard: Local Health Awareness for More Accurate
Failure Detection", 2017. hashicorp/memberlist is the reference for
behaviour (not for style: nothing here reads a clock or holds a lock).

Rules of this module: `Swim` is SWIM's one entry point, `handle(input, now)
-> list[Output]`; it holds the lifecycle and routes each input to the part
that owns it. It never does I/O; randomness comes from the injected
`random.Random` only. The parts, one job each (`overlay.swim_state` shows
how they stack):

- `overlay.member_rules`: which state of a member wins (pure functions);
- `overlay.merging`: applying those rules, suspicions and verdicts;
- `overlay.probing`: ping, ping-req, suspicion timers, local health;
- `overlay.push_pull`: joining, anti-entropy, reconnecting;
- `overlay.dissemination`: piggybacking, dissemination rounds, announcements;
- containers without protocol decisions: `overlay.members` (the member
  list), `overlay.piggyback` (the piggyback queue), `overlay.suspicion`
  (Lifeguard's timeouts), `overlay.awareness` (local health).

Inputs: `Received` (SWIM's messages), `TimerFired` (a `SwimTimer`),
`JoinCluster`, `Leave`, `ConnectFailed`, `ConnectionDown`, `PeerRefused`
from the driver; from the node, `ProbeNow(peer)` (a link to it broke),
`SetTags(tags)` and `Announced(origin, updates)` (member changes another
node broadcast over the tree). Outputs: `Send`, `CloseConnection`,
`SetTimer`, `CancelTimer`, `MemberChanged` (whenever a member's status or
tags change, and once for this node at start), `NameConflict`; for the
node, `Announce(updates)` (broadcast the changes we originated: see
`overlay.dissemination`) and `Reappeared(peer)` (a member held failed
answered our reconnect push-pull: see `overlay.push_pull`); for the driver,
`LeaveComplete()` once after `Leave`, when our goodbye has been sent as
often as any update, or no live member is left to tell.

The words for a member, one thing each:

- `MemberState` (`overlay.messages`): a member's state on the wire (node,
  incarnation, `WireStatus`, tags, accuser);
- `MemberUpdates` (`overlay.messages`): a message of member states;
- `MemberEntry` (`overlay.members`): the member list's own mutable record;
- `MemberSnapshot` (`overlay.members`): an immutable copy of an entry, for
  readers (`Node.members()`, `overlay members`);
- `MemberStatus` (`overlay.io`): alive, suspect, failed or left, as the
  list and the outputs say it; `WireStatus` is its wire code;
- `MemberChanged` (`overlay.io`): the output that reports a change.

Lifecycle (`SwimState`): IDLE until `JoinCluster` (the founder of a
cluster stays there and probes all the same), JOINING until a seed answers,
JOINED; `Leave` makes it LEAVING: our state becomes left at a higher
incarnation, pushed to `leave_fanout` members, announced, and piggybacked on
the pings we keep sending until it has been sent as often as any other
update; then LEFT (`LeaveComplete`). A node that left still answers pings
(the acks carry its goodbye) and nothing else.

Talking to accused members: a member we hold suspect or failed that talks
to us (a ping, an ack, anything) cannot know, or it would have refuted: it
is told, on the ack or in a datagram of its own, once a period; after a
heal, the first packet across the cut makes its sender refute.
"""

from __future__ import annotations

from collections.abc import Mapping

from overlay.ids import NodeId
from overlay.io import (
    Announced,
    CancelTimer,
    ConnectFailed,
    ConnectionDown,
    Input,
    JoinCluster,
    Leave,
    LeaveComplete,
    MemberChanged,
    MemberStatus,
    Output,
    PeerRefused,
    ProbeNow,
    Received,
    Send,
    SetTags,
    SetTimer,
    Timer,
    TimerFired,
)
from overlay.member_rules import check_tags, force_leave_rule
from overlay.members import MemberSnapshot
from overlay.messages import Ack, MemberUpdates, Message, Nack, Ping, PingReq, PushPull
from overlay.probing import Probing
from overlay.swim_state import (
    JOIN_TIMER,
    PROBE_TIMER,
    PUSH_PULL_TIMER,
    RECONNECT_TIMER,
    SwimState,
    SwimTimer,
)


class Swim(Probing):
    def start(self, now: float) -> list[Output]:
        self._self.since = now
        # Our own alive state rides on our first probes and dissemination
        # rounds (memberlist does the same at start): the founder of a
        # cluster joins nobody, and a joiner's seed may itself be too new to
        # know many members, so neither can count on others to spread it.
        self._spread(self._state_of(self._self), local=False)
        period = self.cfg.probe_period
        return [
            MemberChanged(self.me, MemberStatus.ALIVE, self.incarnation, self._self.tags),
            # A random phase, so that nodes started together do not probe in step.
            SetTimer(PROBE_TIMER, period * self.rng.random()),
            SetTimer(PUSH_PULL_TIMER, self._push_pull_period() * self.rng.random()),
            SetTimer(RECONNECT_TIMER, self.cfg.reconnect_period * self.rng.random()),
        ]

    def handle(self, inp: Input, now: float) -> list[Output]:
        """One input; the outputs in the order they must be executed.
        `SetTags` over `max_tags_bytes` raises TagsTooLarge, nothing changed."""
        out: list[Output] = []
        # The node's inputs do not start a dissemination round (the next
        # driver input does).
        from_driver = True
        match inp:
            case Received(sender, msg, datagram):
                if datagram and sender not in self.members.by_id:
                    self.on_stranger_datagram(sender, msg, now, out)
                else:
                    self.on_message(sender, msg, now, out)
            case TimerFired(timer):
                if not self.gone or timer.kind is SwimTimer.PROBE:
                    self.on_timer(timer, now, out)
            case JoinCluster(seeds):
                if not self.gone:
                    self.handle_join_cluster(seeds, now, out)
            case Leave():
                self.handle_leave(now, out)
            case ConnectFailed(peer):
                self.handle_connect_failed(peer, now, out)
            case PeerRefused(peer):
                self.handle_peer_refused(peer, now, out)
            case ConnectionDown(peer):
                self._exchanges.pop((peer.host, peer.port), None)
            case ProbeNow(peer):
                from_driver = False
                self.handle_probe_now(peer, now, out)
            case SetTags(tags):
                from_driver = False
                self.handle_set_tags(tags, now, out)
            case Announced(origin, updates):
                from_driver = False
                self.on_message(origin, updates, now, out)
                self._strike_announced(updates.updates, out)
            case _:
                pass
        self._arm_announce(out, now)
        if from_driver:
            self._arm_round(out)
        self._emit_announcements(out)
        if self._pruning:
            self._forget_pruned()
        if self.state is SwimState.LEAVING and (
            self.me not in self.queue or self.members.live == 0
        ):
            self.state = SwimState.LEFT
            out.append(LeaveComplete())
        return out

    # ------------------------------------------------------------ queries

    def own_tags(self) -> Mapping[str, str]:
        """This member's own tags (read only)."""
        return self._self.tags

    def members_snapshot(self) -> tuple[MemberSnapshot, ...]:
        """Every member, this node included, sorted by id: an immutable snapshot."""
        return self.members.snapshot()

    def random_alive(self, k: int, exclude: tuple[NodeId, ...] = ()) -> list[NodeId]:
        return self.members.random_alive(k, exclude)

    def stats(self) -> dict[str, int]:
        m = self.members
        stats = {
            "members": len(m),
            "alive": m.count(MemberStatus.ALIVE),
            "suspect": m.count(MemberStatus.SUSPECT),
            "failed": m.count(MemberStatus.FAILED),
            "left": m.count(MemberStatus.LEFT),
            "incarnation": self.incarnation,
            "health_score": self.awareness.score,
            "queued_updates": len(self.queue),
            "probes_in_flight": len(self._probes),
        }
        stats.update(self.counters)
        return stats

    # ------------------------------------------------------------- messages

    def on_message(self, sender: NodeId, msg: Message, now: float, out: list[Output]) -> None:
        if self.gone:
            # Still answer pings: the acks carry our "left" state.
            if isinstance(msg, Ping) and msg.target == self.me:
                self.on_ping(sender, msg.seq, out)
            return
        if sender != self.me:
            silent_since, self._last_heard = self._last_heard, now
            if silent_since < self._last_silent_accusation:
                self._reconnected(sender, silent_since, now, out)
        match msg:
            case Ping(seq, target, updates):
                self._merge_all(updates, sender, now, out)
                if target == self.me:
                    self.on_ping(sender, seq, out)
                else:
                    self.counters["misdirected_pings"] += 1
            case PingReq(seq, target, nack, updates):
                self._merge_all(updates, sender, now, out)
                self.on_ping_req(sender, seq, target, nack, out)
            case Ack(seq, updates, coord):
                self._merge_all(updates, sender, now, out)
                self.on_ack(sender, seq, out, now, coord)
            case Nack(seq):
                self.on_nack(sender, seq)
            case PushPull(reply, part, parts, states):
                self.on_push_pull(sender, reply, part, parts, states, now, out)
            case MemberUpdates(updates):
                self._merge_all(updates, sender, now, out)
            case _:
                return
        if sender not in self.members and isinstance(msg, Ping | PingReq | Ack):
            self._meet(sender, now, out)
        else:
            self._tell_accused_sender(sender, msg, now, out)

    def on_stranger_datagram(
        self, sender: NodeId, msg: Message, now: float, out: list[Output]
    ) -> None:
        """A datagram from a node we do not list: its sender is only what it
        claims. A ping is acked, without piggybacked states (we may not know
        a member that joined a moment ago, and its probe must not fail; an
        empty ack is no bigger than the ping, so there is nothing to
        amplify), and we push-pull with it over a stream, which proves its
        address (`_meet`, once a period). An ack may finish a ping we relay
        for a member we do not list. Anything else (piggybacked states,
        ping requests, member updates) is refused and counted."""
        if not self.gone:
            if isinstance(msg, Ping) and msg.target == self.me:
                out.append(Send(sender, Ack(msg.seq, ()), reliable=False))
                self._meet(sender, now, out)
                return
            if isinstance(msg, Ack):
                relay = self._relays.get(msg.seq)
                if relay is not None and relay.target == sender:
                    self.on_ack(sender, msg.seq, out)
                    return
        self.counters["refused_from_strangers"] += 1

    def _tell_accused_sender(
        self, sender: NodeId, msg: Message, now: float, out: list[Output]
    ) -> None:
        """A member we hold suspect or failed talks to us: tell it (on the
        ack, if it pinged us; else in a datagram of its own, once a period),
        so the refutation comes from the member itself, at once."""
        member = self.members.get(sender)
        if (
            member is None
            or member.status not in (MemberStatus.SUSPECT, MemberStatus.FAILED)
            or sender == self.me
        ):
            return
        if isinstance(msg, Ping) and msg.target == self.me:
            return  # on_ping put the state first on the ack
        if self._may_tell(sender, now):
            self.counters["accused_told"] += 1
            out.append(Send(sender, MemberUpdates((self._state_of(member),)), reliable=False))

    # -------------------------------------------------------- local inputs

    def on_timer(self, timer: Timer, now: float, out: list[Output]) -> None:
        key = timer.key
        match timer.kind:
            case SwimTimer.PROBE:
                self._probe_tick(now, out)
            case SwimTimer.PROBE_TIMEOUT if isinstance(key, int):
                self._probe_timeout(key, out)
            case SwimTimer.PROBE_END if isinstance(key, int):
                self._probe_end(key, now, out)
            case SwimTimer.RELAY if isinstance(key, int):
                self._relay_expired(key, out)
            case SwimTimer.SUSPICION if isinstance(key, tuple):
                self._suspicion_expired(key, now, out)
            case SwimTimer.PUSH_PULL:
                self._anti_entropy(now, out)
            case SwimTimer.RECONNECT:
                self._try_reconnect(now, out)
            case SwimTimer.JOIN_RETRY:
                self._join_retry(now, out)
            case SwimTimer.ANNOUNCE:
                self._window_closed()
            case SwimTimer.DISSEMINATE:
                self._disseminate(now, out)
            case _:
                pass

    def handle_set_tags(self, tags: Mapping[str, str], now: float, out: list[Output]) -> None:
        """Replace this node's tags (TagsTooLarge if over the limit, before
        anything changes) and spread them at a new incarnation."""
        new = check_tags(tags, self.cfg.max_tags_bytes)
        if self.gone:
            return
        self._self.tags = new
        self.incarnation += 1
        self.members.set_state(self._self, MemberStatus.ALIVE, self.incarnation, now)
        self._spread(self._state_of(self._self), local=True)
        out.append(MemberChanged(self.me, MemberStatus.ALIVE, self.incarnation, new))

    def force_leave(self, name: str, prune: bool, now: float) -> list[Output]:
        """An operator's `force-leave NAME`: the member held failed under
        `name` becomes left here and the left state spreads (see
        `overlay.member_rules`); with `prune`, it is forgotten here once that
        state has been sent as often as any update (others reap it after
        `reap_after`: the wire has no prune flag). Raises
        `ForceLeaveRefused` (nothing changed) for an unknown name, this
        node, or a member that is not failed."""
        member = self.members.named(name)
        held = None if member is None else (member.status, member.incarnation)
        out: list[Output] = []
        apply = force_leave_rule(name, held, about_me=member is self._self)
        assert member is not None
        if apply and not self.gone:
            self._forced_left(member, member.incarnation, now, out, local=True)
            self._announce_now = True
        if prune and member.node not in self._pruning:
            self._pruning.append(member.node)
        self._arm_announce(out, now)
        self._emit_announcements(out)
        self._forget_pruned()
        return out

    def _forget_pruned(self) -> None:
        """Forget the pruned members whose left state has been spread."""
        keep: list[NodeId] = []
        for node in self._pruning:
            member = self.members.get(node)
            if member is None or member.status not in (MemberStatus.LEFT, MemberStatus.FAILED):
                continue  # reaped, or back alive: nothing to prune
            if node in self.queue:
                keep.append(node)
            elif self.members.forget(node):
                self.counters["pruned"] += 1
        self._pruning = keep

    def handle_leave(self, now: float, out: list[Output]) -> None:
        """Graceful leave: left at a higher incarnation, pushed to a few
        members, announced at once (while the links are up), and
        piggybacked on the pings we keep sending."""
        if self.gone:
            return
        self.state = SwimState.LEAVING
        self.incarnation += 1
        self.members.set_state(self._self, MemberStatus.LEFT, self.incarnation, now)
        state = self._state_of(self._self)
        self._spread(state, local=True)
        self._announce_now = True
        push = MemberUpdates((state,))
        for peer in self.members.random_alive(self.cfg.leave_fanout):
            out.append(Send(peer, push, reliable=False))
        out.append(MemberChanged(self.me, MemberStatus.LEFT, self.incarnation, self._self.tags))
        out.extend(CancelTimer(t) for t in (PUSH_PULL_TIMER, RECONNECT_TIMER, JOIN_TIMER))
