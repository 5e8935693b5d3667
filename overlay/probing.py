"""SWIM probing: failure detection, with Lifeguard.

Rules of this module: every probe, relayed probe and suspicion timer is
started and ended here; what a failed probe means for the member list is
applied by `overlay.merging`. Randomness comes from the injected
`random.Random` only (through the member list's picks).

Theory of operation
-------------------
- Probing (SWIM sec. 3.1, 4.3): each protocol period, one member from a
  shuffled round-robin (`MemberList.next_probe_target`) is pinged (a
  datagram). No ack within the probe timeout: k other members are asked
  with PING-REQ to ping it for us; they relay its ack, or answer NACK when
  it stays silent (Lifeguard sec. IV-A, after `NACK_FRACTION` of the
  timeout). No ack by the end of the period: we suspect it, and
  Lifeguard's suspicion timer starts (`overlay.suspicion`): it is declared
  failed unless it refutes in time; each distinct member that suspects it
  too shortens the wait. A broken link to a neighbour makes us probe it
  out of turn (`ProbeNow`), so a crash is suspected within one period.
- Local health (Lifeguard, `overlay.awareness`): failed probes without the
  expected nacks, and refuting, raise our score; direct acks lower it. The
  probe timeout and the period are multiplied by score + 1.
- Buddy system (Lifeguard sec. IV-C): a ping to a suspect carries the
  suspicion first, so it can refute at once. The other way round too: a
  member we hold suspect or failed that talks to us is told (see
  `overlay.swim`).
- Refusals: a member whose host says nothing listens at its address
  (`PeerRefused`) is suspected at once on that evidence, and with one
  other accuser it is declared failed without waiting for the timer. A
  silent member (host down, network cut, process paused) gives no such
  evidence and keeps the full Lifeguard path.
- Holding verdicts (Lifeguard's local health carried to its end): when our
  timer expires and we are the only accuser, in a cluster big enough for
  Lifeguard to expect K confirmations, nobody else saw what we saw; the
  member stays suspect until a confirmation, a verdict or a refutation.
  And when our probes fail while we hear nobody at all, not even the
  helpers' nacks, the likelier explanation is our own isolation: on the
  first message from anyone we withdraw every suspicion only we raised
  since, abandon the probes in flight, and push-pull with that member, so
  a node that was cut off condemns nobody and learns at once that it was
  itself declared failed. In a cluster too small for confirmations
  (K = 0) a lone prober decides, as in plain SWIM.
- Leaving: the pings go on, carrying our goodbye, until it has been sent
  as often as any update; nothing else is probed or suspected.
"""

from __future__ import annotations

import math

from overlay.coordinates import Coordinate
from overlay.ids import NodeId
from overlay.io import CancelTimer, MemberChanged, MemberStatus, Output, Send, SetTimer, Timer
from overlay.members import LIVE, MemberEntry
from overlay.messages import Ack, Nack, Ping, PingReq
from overlay.push_pull import Exchanges
from overlay.suspicion import Suspicion
from overlay.swim_state import PROBE_TIMER, Exchange, Probe, Relay, SwimTimer

# A relay (PING-REQ receiver) answers NACK after this fraction of the probe
# timeout, so the nack reaches the prober before its period ends (Lifeguard
# sec. IV-A: 80%).
NACK_FRACTION = 0.8


class Probing(Exchanges):
    # ---------------------------------------------------------- our probes

    def _probe_tick(self, now: float, out: list[Output]) -> None:
        """The protocol period: reap old tombstones, probe the next member."""
        self._verify_budget = self.cfg.verify_max
        if self.gone:
            if self.me in self.queue:
                target = self.members.next_probe_target()
                if target is not None:
                    self._seq += 1
                    ping = Ping(self._seq, target.node, self._piggyback())
                    out.append(Send(target.node, ping, reliable=False))
                out.append(SetTimer(PROBE_TIMER, self.cfg.probe_period))
            return
        for node in self.members.reap(now, self.cfg.reap_after):
            self.queue.drop(node)
            self.coords.forget(node)
            self.counters["reaped"] += 1
        target = self.members.next_probe_target()
        if target is not None and target.node not in self._probing:
            self._start_probe(target, now, out)
        out.append(SetTimer(PROBE_TIMER, self.awareness.scale(self.cfg.probe_period)))

    def handle_probe_now(self, peer: NodeId, now: float, out: list[Output]) -> bool:
        """Probe `peer` out of turn (its connection broke): a failure is then
        suspected within one period instead of whenever its turn comes.
        False when there is nothing to do (not a live member, or a probe of
        it is in flight)."""
        member = self.members.get(peer)
        if self.gone or member is None or member.status not in LIVE or peer in self._probing:
            return False
        self.counters["probes_out_of_turn"] += 1
        self._start_probe(member, now, out)
        return True

    def _start_probe(self, target: MemberEntry, now: float, out: list[Output]) -> None:
        self._seq += 1
        seq = self._seq
        self._probes[seq] = Probe(target.node, target.incarnation, now)
        self._probing[target.node] = seq
        buddy = None
        if self.cfg.lifeguard and target.status is MemberStatus.SUSPECT:
            suspicion = self._suspicions.get(target.node)
            if suspicion is None or not suspicion.held:
                buddy = self._state_of(target)
        ping = Ping(seq, target.node, self._piggyback(buddy))
        out.append(Send(target.node, ping, reliable=False))
        self.counters["probes"] += 1
        scale = self.awareness.scale
        out.append(SetTimer(Timer(SwimTimer.PROBE_TIMEOUT, seq), scale(self.cfg.probe_timeout)))
        out.append(SetTimer(Timer(SwimTimer.PROBE_END, seq), scale(self.cfg.probe_period)))

    def _probe_timeout(self, seq: int, out: list[Output]) -> None:
        """No direct ack in time: ask k random alive members (sec. 3.1)."""
        probe = self._probes.get(seq)
        if probe is None:
            return
        self.counters["probes_direct_failed"] += 1
        probe.asked = tuple(self.members.random_alive(self.cfg.indirect_k, (probe.target,)))
        for helper in probe.asked:
            req = PingReq(seq, probe.target, self.cfg.lifeguard, self._piggyback())
            out.append(Send(helper, req, reliable=False))
        self.counters["ping_reqs"] += len(probe.asked)

    def _probe_end(self, seq: int, now: float, out: list[Output]) -> None:
        """The period ended without an ack: suspect the target. Lifeguard:
        every missing nack raises our health score (the relays could not
        reach us either, so the trouble may be ours); with nobody to ask,
        the failed probe itself does."""
        probe = self._probes.pop(seq, None)
        if probe is None:
            return
        if self._probing.get(probe.target) == seq:
            del self._probing[probe.target]
        self.counters["probes_failed"] += 1
        if self.cfg.lifeguard:
            expected = len(probe.asked)
            self.awareness.apply(expected - len(probe.nacks) if expected else 1)
            if expected and self._last_heard < probe.started:
                self._last_silent_accusation = now  # see _reconnected
                self.counters["silent_probes"] += 1
        self._on_suspect(probe.target, probe.incarnation, self.me, now, out, local=True)

    # -------------------------------------------------------- probe messages

    def on_ping(self, sender: NodeId, seq: int, out: list[Output]) -> None:
        """PING (sec. 3.1): ack at once, with piggybacked updates; to a
        member we hold suspect or failed, its own state first, so that it
        refutes."""
        member = None if self.gone else self.members.get(sender)
        first = None
        if member is not None and member.status in (MemberStatus.SUSPECT, MemberStatus.FAILED):
            first = self._state_of(member)
        ack = Ack(seq, self._piggyback(first), self.coords.own())
        out.append(Send(sender, ack, reliable=False))

    def on_ping_req(
        self, sender: NodeId, seq: int, target: NodeId, nack: bool, out: list[Output]
    ) -> None:
        """PING-REQ (sec. 3.1): ping the target under a seq of our own and
        remember whom to relay its ack to; NACK by the deadline (Lifeguard)."""
        if target == self.me:
            out.append(Send(sender, Ack(seq, self._piggyback()), reliable=False))
            return
        self._seq += 1
        ours = self._seq
        self._relays[ours] = Relay(sender, seq, target, nack)
        out.append(Send(target, Ping(ours, target, self._piggyback()), reliable=False))
        out.append(SetTimer(Timer(SwimTimer.RELAY, ours), self.cfg.probe_timeout * NACK_FRACTION))

    def on_ack(
        self,
        sender: NodeId,
        seq: int,
        out: list[Output],
        now: float | None = None,
        coord: Coordinate | None = None,
    ) -> None:
        """ACK: relay it if it answers a ping we sent for someone else;
        otherwise it ends our probe, if it comes from the target or from one
        of the members we asked. A direct ack in time lowers our health
        score (Lifeguard). The target's own ack, with its coordinate, gives
        a round trip for our network coordinate (`overlay.coordinates`)."""
        relay = self._relays.get(seq)
        if relay is not None:
            if sender == relay.target:
                del self._relays[seq]
                out.append(CancelTimer(Timer(SwimTimer.RELAY, seq)))
                ack = Ack(relay.origin_seq, self._piggyback())
                out.append(Send(relay.origin, ack, reliable=False))
            return
        probe = self._probes.get(seq)
        if probe is None or (sender != probe.target and sender not in probe.asked):
            return
        del self._probes[seq]
        self._probing.pop(probe.target, None)
        if (
            coord is not None
            and now is not None
            and sender == probe.target
            and not self.coords.observe(sender, coord, now - probe.started)
        ):
            self.counters["coordinates_refused"] += 1
        if not probe.asked:
            out.append(CancelTimer(Timer(SwimTimer.PROBE_TIMEOUT, seq)))
            if sender == probe.target:
                self.awareness.apply(-1)
        out.append(CancelTimer(Timer(SwimTimer.PROBE_END, seq)))

    def on_nack(self, sender: NodeId, seq: int) -> None:
        probe = self._probes.get(seq)
        if probe is not None and sender in probe.asked:
            probe.nacks[sender] = None

    def _relay_expired(self, seq: int, out: list[Output]) -> None:
        """The target of a ping we relay stayed silent: NACK the prober."""
        relay = self._relays.pop(seq, None)
        if relay is not None and relay.nack:
            out.append(Send(relay.origin, Nack(relay.origin_seq), reliable=False))

    # ------------------------------------------------------------ suspicions

    def _suspicion_expired(self, key: tuple[object, ...], now: float, out: list[Output]) -> None:
        """No refutation in time: failed. A timer from an older suspicion
        (the member refuted, or was suspected again at a higher
        incarnation) is stale and ignored."""
        if len(key) != 2:
            return
        node, incarnation = key
        if not isinstance(node, NodeId) or not isinstance(incarnation, int):
            return
        member = self.members.get(node)
        if (
            member is None
            or member.status is not MemberStatus.SUSPECT
            or member.incarnation != incarnation
        ):
            return
        suspicion = self._suspicions.get(node)
        if suspicion is not None and self._hold(suspicion):
            if not suspicion.held:
                suspicion.held = True
                self.counters["verdicts_held"] += 1
                self._drop_own_suspicion(member)  # not believed enough to spread
            return
        self._suspicions.pop(node, None)
        self.counters["declared_failed"] += 1
        # Only the first accuser announces the verdict (`overlay.merging`).
        first = suspicion is not None and next(iter(suspicion.accusers)) == self.me
        leaving = suspicion is not None and suspicion.leaving
        status = MemberStatus.LEFT if leaving else MemberStatus.FAILED
        self._on_dead(node, incarnation, status, now, out, local=first)

    def _hold(self, suspicion: Suspicion) -> bool:
        """Hold our verdict? When we are the only accuser although the
        cluster is big enough to expect confirmations (Lifeguard's K > 0),
        and no other node's verdict came: nobody else saw what we saw.
        Either only we cannot reach the member, and it will hear our
        suspicion and refute it, or we are cut off ourselves, and our
        verdicts would be wrong about everyone (after the heal they would
        reach the others as stale verdicts). The suspicion stays until a
        confirmation, a verdict or a refutation settles it, or, if we heard
        from nobody since it began, until we hear from anyone (then it is
        withdrawn: `_reconnected`)."""
        return suspicion.k > 0 and not suspicion.verdict and suspicion.sole(self.me)

    def _reconnected(
        self, sender: NodeId, silent_since: float, now: float, out: list[Output]
    ) -> None:
        """We hear from a member again, the first message since
        `silent_since`, after a probe during which we heard nobody at all
        (no ack, and no nack from the members we asked to help) made us
        suspect its target. Our silence, not theirs, failed such probes:
        withdraw every suspicion only we raised since we last heard anyone,
        held or still running (nobody heard them), and merge member lists
        with the member we heard from, which tells us at once if the others
        declared *us* failed meanwhile. The probes still in flight were sent
        while nobody could hear us: they are abandoned, not failed."""
        self._last_silent_accusation = -math.inf
        for seq in self._probes:
            out.append(CancelTimer(Timer(SwimTimer.PROBE_TIMEOUT, seq)))
            out.append(CancelTimer(Timer(SwimTimer.PROBE_END, seq)))
        self.counters["probes_abandoned"] += len(self._probes)
        self._probes.clear()
        self._probing.clear()
        withdrawn = [
            node
            for node, suspicion in self._suspicions.items()
            if suspicion.start > silent_since and suspicion.sole(self.me)
        ]
        for node in withdrawn:
            member = self.members.by_id[node]
            self._drop_own_suspicion(member)
            self._end_suspicion(member, out)
            self.members.set_state(member, MemberStatus.ALIVE, member.incarnation, now)
            out.append(MemberChanged(node, MemberStatus.ALIVE, member.incarnation, member.tags))
        self.counters["suspicions_withdrawn"] += len(withdrawn)
        peer = self.members.get(sender)
        if withdrawn and peer is not None and peer.status in LIVE:
            self._push_pull(sender, Exchange.ANTI_ENTROPY, now, out)

    def handle_peer_refused(self, peer: NodeId, now: float, out: list[Output]) -> None:
        """`peer`'s host says nothing listens at its address (a crashed
        process on a live host; `overlay.io.PeerRefused`). That is our own
        evidence: we suspect it at once (or confirm a suspicion someone
        else raised), and with one other accuser it is declared failed now
        instead of after Lifeguard's timeout."""
        member = self.members.get(peer)
        if not self.cfg.refusal_evidence or self.gone or member is None or peer == self.me:
            return
        if member.status not in LIVE:
            return
        self.counters["refusals"] += 1
        self._on_suspect(peer, member.incarnation, self.me, now, out, local=True)
        suspicion = self._suspicions.get(peer)
        if suspicion is None:  # refuted meanwhile? (not in one call; kept for safety)
            return
        suspicion.refused = True
        if suspicion.proven(self.me):
            self._declare_proven(member, suspicion, now, out)
