"""HyParView: the overlay's connectivity (Leitão, Pereira, Rodrigues, DSN 2007).

Rules of this module: it owns the active and passive views and nothing else
(the passive view's own rules of entry and eviction: `overlay.passive`). It
never does I/O; every decision comes back as outputs (`overlay.io`).

Theory of operation
-------------------
Each node keeps a small *active view* (default 5) of peers it holds an open
connection to, and a larger *passive view* (default 30) of peers it merely
knows. The active view is symmetric: if A has B active, B has A active. The
layers above (Plumtree) broadcast over the active view only; the passive view
is the reserve from which a lost active peer is replaced at once.

- Joining: the joiner sends JOIN to a contact. The contact takes it into its
  active view and sends FORWARD_JOIN to each of its other active peers. Each
  walk goes ARWL hops; the node where it ends (TTL 0, or a node with a single
  neighbour) takes the joiner into its active view, and the node that sees
  TTL == PRWL takes it into its passive view (paper sec. 4.2, Alg. 1).
- Adding a peer to a full active view first drops a random active peer to the
  passive view, with a DISCONNECT so it does the same (sec. 4.2).
- Repair: when an active peer is lost (connection broken, DISCONNECT, or the
  failure detector), a random passive peer is asked with NEIGHBOR; high
  priority if the active view is empty (must be accepted), low otherwise
  (accepted only with a free slot). A reject, a timeout or a failed dial moves
  on to the next candidate (sec. 4.3).
- Shuffle: periodically a sample of the node's views (itself, ka active, kp
  passive) walks shuffle_ttl hops; the node where it stops answers straight
  to the origin with as many of its passive entries, and both merge what they
  got into their passive views, dropping first what they just sent (sec. 4.4).

Lifecycle (`HvState`), beyond the paper: IDLE until `JoinCluster` gives
seeds; JOINING while a JOIN to one seed is out (each retry goes to the next
seed, each round of them waits longer: `overlay.backoff`, capped and
jittered); JOINED once a walk of our own JOIN ends at a node that takes us
in; back to JOINING at the repair tick when alone with nothing to promote;
LEFT after `Leave`, for good.

Inputs (`handle(input, now) -> list[Output]`): `Received` (`on_<message>`),
`TimerFired`, `ConnectionDown`, `ConnectFailed`, `JoinCluster`, `Leave`; and
other layers' facts from the node (`handle_<input>`): `PeerFailed`,
`OfferPassive`, `StrayMessage`. Outputs: `Send`, `CloseConnection`,
`SetTimer`/`CancelTimer`, `NeighborUp`/`NeighborDown` (Plumtree follows
them), and `Isolated`: `True` when the active view becomes empty, `False`
when it has a neighbour again, once per transition, at the end of the
`handle` call that made it (the view starts empty: the first neighbour gives
`Isolated(False)`; nothing after `Leave`). Others read the views only
through `views()` and `is_neighbor()`.

Every handler below documents the paper rule it implements.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from dataclasses import dataclass

from overlay.backoff import Backoff
from overlay.config import HyParViewConfig
from overlay.ids import NodeId
from overlay.io import (
    CancelTimer,
    CloseConnection,
    ConnectFailed,
    ConnectionDown,
    DownReason,
    Input,
    Isolated,
    JoinCluster,
    Leave,
    NeighborDown,
    NeighborUp,
    OfferPassive,
    Output,
    PeerFailed,
    Received,
    Send,
    SetTimer,
    StrayMessage,
    Timer,
    TimerFired,
    UpReason,
    is_seed,
)
from overlay.messages import (
    Disconnect,
    ForwardJoin,
    Join,
    Message,
    Neighbor,
    NeighborReply,
    Shuffle,
    ShuffleReply,
)
from overlay.passive import PassiveView, sample
from overlay.ratelimit import RateLimit

# Joins taken in (JOIN, or a FORWARD_JOIN walk ending here) per joiner host:
# a joiner sends one JOIN and retries after a second or more, but a test or
# a bench may start 200 agents on one loopback address, so the burst is
# generous; 2,000 forged JOINs now start 32 walks, not 2,000 (issue 12).
_JOINS_PER_HOST = 4.0
_JOINS_BURST = 32


class HvTimer(enum.Enum):
    SHUFFLE = "shuffle"
    REPAIR = "repair"
    JOIN_RETRY = "join_retry"
    NEIGHBOR_TIMEOUT = "neighbor_timeout"  # key: the peer asked


class HvState(enum.Enum):
    IDLE = "idle"  # not joined, no JOIN out (no seeds, or between rounds)
    JOINING = "joining"  # a JOIN is out and its retry timer is set
    JOINED = "joined"  # our own JOIN was answered
    LEFT = "left"  # after Leave: only goodbyes from now on


_SHUFFLE_TIMER = Timer(HvTimer.SHUFFLE)
_REPAIR_TIMER = Timer(HvTimer.REPAIR)
_JOIN_TIMER = Timer(HvTimer.JOIN_RETRY)


def _holds_us_active(msg: Message) -> bool:
    """Does `msg` say its sender has us in its active view, or wants us?"""
    if isinstance(msg, NeighborReply):
        return msg.accepted
    return isinstance(msg, Join | Neighbor | ForwardJoin | Shuffle)


@dataclass(frozen=True, slots=True)
class Views:
    """The views, read-only, in insertion order; `pending`: the peers asked
    with NEIGHBOR that have not answered yet."""

    active: tuple[NodeId, ...]
    passive: tuple[NodeId, ...]
    pending: tuple[NodeId, ...]


class HyParView:
    def __init__(self, me: NodeId, config: HyParViewConfig, rng: random.Random) -> None:
        self.me = me
        self._cfg = config
        self._rng = rng
        # dicts, not sets: insertion order keeps every pick reproducible.
        self._active: dict[NodeId, None] = {}
        self._passive = PassiveView(me, config.passive_size, rng)
        self._pending: dict[NodeId, int] = {}  # NEIGHBOR asked, no reply yet: its nonce
        self._seeds: list[NodeId] = []
        self._seed_index = 0
        self._join_backoff = Backoff(
            config.join_retry_initial, config.join_retry_max, jitter=config.jitter, rng=rng
        )
        # JOINED only once our own JOIN was answered. Having active peers is
        # not enough: a node whose JOIN is still out may already have been
        # contacted by others, and would otherwise stay an island with them.
        self._state = HvState.IDLE
        self._joins = RateLimit(_JOINS_PER_HOST, _JOINS_BURST)
        # What the limits refused (issue 12).
        self._counters: Counter[str] = Counter()

    # ----------------------------------------------------------------- API

    def start(self, now: float) -> list[Output]:
        return [
            SetTimer(_SHUFFLE_TIMER, self._jittered(self._cfg.shuffle_period)),
            SetTimer(_REPAIR_TIMER, self._jittered(self._cfg.repair_period)),
        ]

    def handle(self, inp: Input, now: float) -> list[Output]:
        out: list[Output] = []
        if isinstance(inp, Received) and (inp.sender == self.me or is_seed(inp.sender)):
            # The envelope names the sender; neither we nor an address-only
            # placeholder can be one. Answering would only talk to ourselves.
            return out
        if self._state is HvState.LEFT:
            # A node that left does nothing but say goodbye to whoever still
            # holds it active or wants to: requests, an accept that crossed
            # our DISCONNECT, and walks (FORWARD_JOIN and SHUFFLE only travel
            # active links). Otherwise the sender would keep us active for
            # good: the reply opened a new stream, so no ConnectionDown comes.
            if isinstance(inp, Received) and _holds_us_active(inp.msg):
                out.append(Send(inp.sender, Disconnect(alive=False)))
            return out
        had_peers = bool(self._active)
        match inp:
            case Received(sender, msg):
                self.on_message(sender, msg, now, out)
            case TimerFired(timer):
                self.handle_timer(timer, out)
            case ConnectionDown(peer):
                self.handle_connection_down(peer, out)
            case ConnectFailed(peer):
                self.handle_connect_failed(peer, out)
            case JoinCluster(seeds):
                self.handle_join_cluster(seeds, out)
            case Leave():
                self.handle_leave(out)
                return out  # a node that left is not isolated: it is gone
            case PeerFailed(peer):
                self.handle_peer_failed(peer, out)
            case OfferPassive(peers):
                self.handle_offer_passive(peers)
            case StrayMessage(peer):
                self.handle_stray_message(peer, out)
            case _:
                pass  # ConnectionUp, and inputs for other layers
        if bool(self._active) != had_peers:
            out.append(Isolated(not self._active))
        return out

    def views(self) -> Views:
        return Views(tuple(self._active), tuple(self._passive), tuple(self._pending))

    def is_neighbor(self, peer: NodeId) -> bool:
        """Is `peer` in the active view, or asked to join it?"""
        return peer in self._active or peer in self._pending

    @property
    def state(self) -> HvState:
        return self._state

    def stats(self) -> dict[str, int]:
        """What the limits refused (issue 12)."""
        return dict(self._counters)

    # ------------------------------------------------------------- messages

    def on_message(self, sender: NodeId, msg: Message, now: float, out: list[Output]) -> None:
        match msg:
            case Join():
                self.on_join(sender, now, out)
            case ForwardJoin(joiner, ttl):
                self.handle_stray_message(sender, out)
                self.on_forward_join(sender, joiner, ttl, now, out)
            case Neighbor(high_priority, join, nonce):
                self.on_neighbor(sender, high_priority, join, nonce, out)
            case NeighborReply(accepted, nonce):
                self.on_neighbor_reply(sender, accepted, nonce, out)
            case Disconnect(alive):
                self.on_disconnect(sender, alive, out)
            case Shuffle(origin, ttl, nonce, nodes):
                self.handle_stray_message(sender, out)
                self.on_shuffle(sender, origin, ttl, nonce, nodes, out)
            case ShuffleReply(nonce, nodes):
                self.on_shuffle_reply(nonce, nodes, out)
            case _:
                pass

    def on_join(self, joiner: NodeId, now: float, out: list[Output]) -> None:
        """JOIN (Alg. 1): take the joiner into the active view, and start an
        ARWL-long FORWARD_JOIN walk through every other active peer. At
        most `_JOINS_PER_HOST` a second from one host (issue 12: 2,000
        forged JOINs made the cluster dial 3,641 times): each one starts
        walks that end in dials to the joiner's address."""
        if joiner == self.me or is_seed(joiner):
            return
        if joiner in self._active:
            # A retry from a joiner whose first attempt we already took in:
            # repeat the notice, do not walk again.
            out.append(Send(joiner, Neighbor(high_priority=True, join=True)))
            return
        if not self._joins.allow(joiner.host, now):
            self._counters["joins_refused"] += 1
            return
        self._add_active(joiner, UpReason.JOINED, out, notify=True)
        for peer in self._active:
            if peer != joiner:
                out.append(Send(peer, ForwardJoin(joiner, self._cfg.arwl)))

    def on_forward_join(
        self, sender: NodeId, joiner: NodeId, ttl: int, now: float, out: list[Output]
    ) -> None:
        """FORWARD_JOIN (Alg. 1): at TTL 0, or with a single active peer, take
        the joiner into the active view; at TTL == PRWL, into the passive
        view; otherwise pass the walk to a random active peer other than the
        one it came from. Taking the joiner in dials it: at most
        `_JOINS_PER_HOST` a second per joiner host (a neighbour could send
        walks naming any address)."""
        if joiner == self.me or is_seed(joiner):
            return
        if ttl == 0 or len(self._active) <= 1:
            if joiner not in self._active and not self._joins.allow(joiner.host, now):
                self._counters["walks_refused"] += 1
                return
            self._add_active(joiner, UpReason.JOINED, out, notify=True)
            return
        if ttl == self._cfg.prwl:
            self._passive.add(joiner, self._active)
        nexts = [p for p in self._active if p != sender and p != joiner]
        if not nexts:
            self._add_active(joiner, UpReason.JOINED, out, notify=True)
            return
        out.append(Send(self._rng.choice(nexts), ForwardJoin(joiner, ttl - 1)))

    def on_neighbor(
        self, sender: NodeId, high: bool, join: bool, nonce: int, out: list[Output]
    ) -> None:
        """NEIGHBOR (sec. 4.3): high priority is always accepted (dropping a
        random active peer if full); low priority only with a free slot. A
        node that has left answers with DISCONNECT instead (see `handle`)."""
        if sender == self.me:
            return
        if join:
            # The end of a join walk: the sender already holds us active. Only
            # our own JOIN starts walks that end at us, so this is also the
            # proof that the join reached the overlay: stop retrying seeds.
            self._add_active(sender, UpReason.JOINED, out, notify=False)
            if self._state is HvState.JOINING:
                out.append(CancelTimer(_JOIN_TIMER))
            self._state = HvState.JOINED
            return
        if sender in self._active:
            out.append(Send(sender, NeighborReply(True, nonce)))
            return
        # A peer we are asking ourselves (crossing requests) has a slot
        # reserved for it: accept, or the two answers would disagree.
        if high or sender in self._pending or len(self._active) < self._cfg.active_size:
            self._add_active(sender, UpReason.REPLACED, out, notify=False)
            out.append(Send(sender, NeighborReply(True, nonce)))
        else:
            self._passive.add(sender, self._active)
            out.append(Send(sender, NeighborReply(False, nonce)))

    def on_neighbor_reply(
        self, sender: NodeId, accepted: bool, nonce: int, out: list[Output]
    ) -> None:
        """The answer to our NEIGHBOR: on accept the peer becomes active; on
        reject it stays passive and the next candidate is asked. A reply is
        matched to its request by nonce, so a late answer to an older
        request is not mistaken for the answer to the current one."""
        was_pending = self._pending.get(sender) == nonce
        if was_pending:
            self._drop_pending(sender, out)
        if accepted:
            if sender in self._active:
                return
            if was_pending:
                self._add_active(sender, UpReason.REPLACED, out, notify=False)
            elif sender in self._pending:
                # The answer to an older request, while a newer one is out:
                # the peer holds us active now, so the newer one will be
                # accepted too and settle it. A DISCONNECT here would cross
                # that accept and leave us holding a peer that dropped us.
                pass
            else:
                # An accept we did not ask for (or no longer wait for: we
                # timed out, or dropped the peer meanwhile). The peer now
                # counts us as active: undo that, so the views stay symmetric.
                out.append(Send(sender, Disconnect(alive=True)))
                out.append(CloseConnection(sender))
                self._passive.add(sender, self._active)
            return
        # Rejects only ever answer low-priority asks; one we are not waiting
        # for is stale (the peer since became active through another path).
        if was_pending:
            out.append(CloseConnection(sender))
            # Every passive peer may be full: asking the next one at once
            # would spin through the whole view. Wait for the repair tick,
            # unless we are alone (then we ask with high priority).
            if not self._active:
                self._repair(out)

    def on_disconnect(self, sender: NodeId, alive: bool, out: list[Output]) -> None:
        """DISCONNECT (sec. 4.2): the peer dropped us. Move it to the passive
        view if it stays in the cluster, forget it if it left; repair. A
        seed that left answers our JOIN this way: go on to the next one.

        The repair asks other peers: the sender only goes (back) into the
        passive view afterwards. It has just dropped us, usually to make
        room, so asking it straight back wastes a round trip, and when we are
        alone (high priority, which it must accept) forces an eviction on it
        that can cascade through the overlay."""
        if not alive and self._is_seed_addr(sender):
            self._seed_unavailable(out)
        if sender in self._pending:
            self._drop_pending(sender, out)
        if sender in self._active:
            reason = DownReason.SHUFFLED_OUT if alive else DownReason.PEER_LEFT
            self._drop_active(sender, reason, out)
        self._passive.discard(sender)
        self._repair(out)
        if alive:
            self._passive.add(sender, self._active)

    def on_shuffle(
        self,
        sender: NodeId,
        origin: NodeId,
        ttl: int,
        nonce: int,
        nodes: tuple[NodeId, ...],
        out: list[Output],
    ) -> None:
        """SHUFFLE (sec. 4.4): keep walking while TTL lasts and there is
        somewhere to go; where it stops, answer the origin directly with a
        sample of the passive view of the same size, then merge."""
        if origin == self.me:
            return
        ttl -= 1
        if ttl > 0 and len(self._active) > 1:
            nexts = [p for p in self._active if p != sender and p != origin]
            if nexts:
                out.append(Send(self._rng.choice(nexts), Shuffle(origin, ttl, nonce, nodes)))
                return
        candidates = [p for p in self._passive if p != origin]
        reply = tuple(sample(self._rng, candidates, len(nodes)))
        out.append(Send(origin, ShuffleReply(nonce, reply), reliable=False))
        self._passive.merge(nodes, reply, self._active)

    def on_shuffle_reply(self, nonce: int, nodes: tuple[NodeId, ...], out: list[Output]) -> None:
        """SHUFFLE_REPLY (sec. 4.4): merge, dropping first what we sent."""
        sent = self._passive.recall(nonce)
        if sent is None:
            return  # not ours, or too old: ignore rather than trust it
        self._passive.merge(nodes, sent, self._active)

    # ------------------------------------------------------- local inputs

    def handle_timer(self, timer: Timer, out: list[Output]) -> None:
        match timer.kind:
            case HvTimer.SHUFFLE:
                self._shuffle(out)
                out.append(SetTimer(_SHUFFLE_TIMER, self._jittered(self._cfg.shuffle_period)))
            case HvTimer.REPAIR:
                self._repair(out)
                alone = not self._active and not self._pending
                if alone and self._state is not HvState.JOINING and self._seeds:
                    # Alone with nothing to promote: back to the seeds.
                    self._state = HvState.IDLE
                    self._join_backoff.reset()
                    self._try_seed(out)
                out.append(SetTimer(_REPAIR_TIMER, self._jittered(self._cfg.repair_period)))
            case HvTimer.JOIN_RETRY:
                if self._state is not HvState.JOINED:
                    self._state = HvState.IDLE
                    self._try_seed(out)
            case HvTimer.NEIGHBOR_TIMEOUT:
                peer = timer.key
                if isinstance(peer, NodeId) and peer in self._pending:
                    # No answer in time: as good as dead for our purposes.
                    del self._pending[peer]
                    self._passive.discard(peer)
                    out.append(CloseConnection(peer))
                    self._repair(out)
            case _:
                pass

    def handle_connection_down(self, peer: NodeId, out: list[Output]) -> None:
        """A broken connection to an active peer is a failure (sec. 4.3):
        remove it from both views and promote from the passive view at once.
        A connection we did not rely on breaking tells us nothing."""
        if peer in self._active:
            self._drop_active(peer, DownReason.PEER_FAILED, out)
            self._passive.discard(peer)
            self._repair(out)
        elif peer in self._pending:
            self._drop_pending(peer, out)
            self._passive.discard(peer)
            self._repair(out)

    def handle_connect_failed(self, peer: NodeId, out: list[Output]) -> None:
        """A dial failed: the peer is unreachable, so it leaves every view."""
        self._passive.discard(peer)
        if peer in self._active or peer in self._pending:
            self.handle_connection_down(peer, out)
        elif self._is_seed_addr(peer):
            self._seed_unavailable(out)

    def _is_seed_addr(self, peer: NodeId) -> bool:
        # Seeds may be known by address only (`seed_id`): compare addresses.
        return any((s.host, s.port) == (peer.host, peer.port) for s in self._seeds)

    def _seed_unavailable(self, out: list[Output]) -> None:
        """The seed our JOIN went to cannot take it (unreachable, or it has
        left): do not wait for the retry timer, the next seed may be up."""
        if self._state is not HvState.JOINING:
            return
        out.append(CancelTimer(_JOIN_TIMER))
        if self._seed_index % max(len(self._seeds), 1) != 0:
            self._try_seed(out)
        else:
            # Every seed tried once: back off before the next round (still
            # JOINING: the retry timer is set).
            out.append(SetTimer(_JOIN_TIMER, self._join_backoff.next()))

    def handle_join_cluster(self, seeds: tuple[NodeId, ...], out: list[Output]) -> None:
        """Contact the seeds, one at a time, until one answers our JOIN;
        retry with exponential backoff (capped) meanwhile. Peers that joined
        through us before that do not count: they may be an island."""
        mine = (self.me.host, self.me.port)
        self._seeds = [s for s in seeds if (s.host, s.port) != mine and s != self.me]
        self._seed_index = 0
        self._join_backoff.reset()
        if self._seeds and self._state is not HvState.JOINED:
            self._try_seed(out)

    def handle_leave(self, out: list[Output]) -> None:
        """Graceful leave: DISCONNECT(alive=False) to every active peer, so
        they forget us instead of waiting for a failure detector."""
        self._state = HvState.LEFT
        for peer in list(self._active):
            out.append(Send(peer, Disconnect(alive=False)))
            self._drop_active(peer, DownReason.LEAVING, out)
        for peer in list(self._pending):
            self._drop_pending(peer, out)
            out.append(CloseConnection(peer))
        out.extend(CancelTimer(t) for t in (_SHUFFLE_TIMER, _REPAIR_TIMER, _JOIN_TIMER))

    def handle_peer_failed(self, peer: NodeId, out: list[Output]) -> None:
        """The failure detector declared `peer` failed, or it left: forget
        it everywhere and repair, as for a broken connection (sec. 4.3)."""
        self._passive.discard(peer)
        if peer in self._pending:
            self._drop_pending(peer, out)
        if peer in self._active:
            self._drop_active(peer, DownReason.PEER_FAILED, out)
        self._repair(out)

    def handle_offer_passive(self, peers: tuple[NodeId, ...]) -> None:
        """Candidates from elsewhere (the member list) for a thin passive
        view: only fills free slots, never evicts."""
        self._passive.offer(peers, self._active)

    def handle_stray_message(self, sender: NodeId, out: list[Output]) -> None:
        """`sender` used a link only active neighbours use. If it is not our
        neighbour its view and ours disagree (two messages crossed on the
        wire): tell it, so it drops us too. Asymmetry is thereby repaired the
        next time the link carries anything. (Never to ourselves or an
        address-only placeholder: see `handle`.)"""
        if sender == self.me or is_seed(sender):
            return
        if sender not in self._active and sender not in self._pending:
            out.append(Send(sender, Disconnect(alive=True)))

    # ------------------------------------------------------------ helpers

    def _add_active(
        self,
        peer: NodeId,
        reason: UpReason,
        out: list[Output],
        *,
        notify: bool,
    ) -> None:
        if peer == self.me or peer in self._active or is_seed(peer):
            return
        if peer in self._pending:
            self._drop_pending(peer, out)
        self._passive.discard(peer)
        if len(self._active) >= self._cfg.active_size:
            victim = self._rng.choice(list(self._active))
            out.append(Send(victim, Disconnect(alive=True)))
            self._drop_active(victim, DownReason.SHUFFLED_OUT, out)
            self._passive.add(victim, self._active)
        self._active[peer] = None
        out.append(NeighborUp(peer, reason))
        if notify:
            out.append(Send(peer, Neighbor(high_priority=True, join=True)))

    def _drop_active(self, peer: NodeId, reason: DownReason, out: list[Output]) -> None:
        del self._active[peer]
        out.append(CloseConnection(peer))
        out.append(NeighborDown(peer, reason))

    def _drop_pending(self, peer: NodeId, out: list[Output]) -> None:
        del self._pending[peer]
        out.append(CancelTimer(Timer(HvTimer.NEIGHBOR_TIMEOUT, peer)))

    def _repair(self, out: list[Output]) -> None:
        """Fill the active view from the passive view: NEIGHBOR to random
        passive peers, high priority when we have no active peer at all."""
        free = self._cfg.active_size - len(self._active) - len(self._pending)
        if free <= 0:
            return
        candidates = [p for p in self._passive if p not in self._pending]
        high = not self._active
        for peer in sample(self._rng, candidates, free):
            nonce = self._rng.getrandbits(32)
            self._pending[peer] = nonce
            out.append(Send(peer, Neighbor(high_priority=high, nonce=nonce)))
            out.append(SetTimer(Timer(HvTimer.NEIGHBOR_TIMEOUT, peer), self._cfg.neighbor_timeout))

    def _shuffle(self, out: list[Output]) -> None:
        if not self._active:
            return
        sent = (
            self.me,
            *sample(self._rng, list(self._active), self._cfg.shuffle_active),
            *sample(self._rng, list(self._passive), self._cfg.shuffle_passive),
        )
        nonce = self._rng.getrandbits(32)
        self._passive.remember(nonce, sent)
        target = self._rng.choice(list(self._active))
        out.append(Send(target, Shuffle(self.me, self._cfg.shuffle_ttl, nonce, sent)))

    def _try_seed(self, out: list[Output]) -> None:
        if not self._seeds:
            return
        seed = self._seeds[self._seed_index % len(self._seeds)]
        self._seed_index += 1
        self._state = HvState.JOINING
        out.append(Send(seed, Join()))
        out.append(SetTimer(_JOIN_TIMER, self._join_backoff.next()))

    def _jittered(self, period: float) -> float:
        j = self._cfg.jitter
        return period * (1.0 + j * (2.0 * self._rng.random() - 1.0))
