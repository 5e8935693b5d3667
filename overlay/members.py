"""The member list: every member of the cluster SWIM knows of, this node too.

Rules of this module: a container with O(1) operations and no protocol
decisions; `overlay.member_rules` decides which state wins. Randomness comes from the
`random.Random` it is given; iteration follows insertion order, never a set.

Theory of operation
-------------------
A member is a small slotted record (address, incarnation, status, tags, time
of its last status change): the list is O(N) per node and there are N nodes
in a simulation, so entries stay compact.

- Probe order (SWIM sec. 4.3, "round-robin probe target selection"): the
  live members in a shuffled list walked one per protocol period; at the end
  of a round the list is rebuilt from the live members and shuffled again
  (O(N) once per N periods); a member that appears or comes back is put at a
  random position at once. Members that die stay in the list until the next
  rebuild and are skipped. A full round visits every live member once, which
  bounds the time to first detection (SWIM sec. 4.3).
- Random picks (indirect probers, push-pull partners, passive-view refills)
  draw random positions of that same list and keep the alive ones: O(k)
  expected, no list rebuilt per pick.
- Tombstones: failed and left members stay, in the order they died, until
  `reap` removes those older than the given age, so that a stale "alive"
  cannot bring them back meanwhile.
- Dissemination targets (`dissemination_targets`): live members, suspects included, and
  members that failed recently (memberlist's "gossip to the dead"), so a
  suspect hears of its suspicion and a member thought failed hears it is,
  and both can refute. The recent failures are a list in the order they
  happened, trimmed from the front as they age: O(k) per pick.
"""

from __future__ import annotations

import random
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from overlay.ids import NodeId
from overlay.io import MemberStatus

LIVE = (MemberStatus.ALIVE, MemberStatus.SUSPECT)
DEAD = (MemberStatus.FAILED, MemberStatus.LEFT)


class MemberEntry:
    """One entry, mutated in place by `MemberList.set_state` only. `tags` is
    replaced, never changed in place, so it can be shared with outputs."""

    __slots__ = ("in_order", "incarnation", "node", "since", "status", "tags", "wire")

    def __init__(
        self,
        node: NodeId,
        incarnation: int,
        status: MemberStatus,
        tags: dict[str, str],
        since: float,
    ) -> None:
        self.node = node
        self.incarnation = incarnation
        self.status = status
        self.tags = tags
        self.since = since
        self.in_order = False  # in the probe order list
        # The owner's memo of this member's alive wire state (a MemberState);
        # it checks that the memo still matches (incarnation, tags) before use.
        self.wire: Any = None

    def __repr__(self) -> str:
        return f"MemberEntry({self.node}, {self.status.value}@{self.incarnation})"


@dataclass(frozen=True, slots=True)
class MemberSnapshot:
    """An immutable snapshot of one member (what `overlay members` prints)."""

    node: NodeId
    status: MemberStatus
    incarnation: int
    tags: Mapping[str, str]
    since: float  # when its status last changed, in the node's `now`

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def addr(self) -> str:
        return self.node.addr

    def as_dict(self) -> dict[str, Any]:
        """The CLI's JSON record: name, addr, status, incarnation, tags."""
        return {
            "name": self.node.name,
            "addr": self.node.addr,
            "status": self.status.value,
            "incarnation": self.incarnation,
            "tags": dict(self.tags),
        }


class MemberList:
    def __init__(self, me: NodeId, rng: random.Random) -> None:
        self.me = me
        self.rng = rng
        self._members: dict[NodeId, MemberEntry] = {}
        # Read-only view for hot paths that must avoid a method call.
        self.by_id: Mapping[NodeId, MemberEntry] = self._members
        self._order: list[MemberEntry] = []
        self._next = 0
        # Members per status, keyed by the status's value: an Enum member
        # hashes in Python (its __hash__), a str in C with its hash cached,
        # and `live` is read for every piggybacked message.
        self._counts = {status.value: 0 for status in MemberStatus}
        self._tombstones: dict[NodeId, MemberEntry] = {}
        # The member each name belongs to (the last one added under it).
        self._names: dict[str, MemberEntry] = {}
        # Members that went from live to failed, in that order; entries
        # before `_deaths_from` have aged out (see dissemination_targets).
        self._deaths: list[MemberEntry] = []
        self._deaths_from = 0

    # ------------------------------------------------------------- queries

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, node: object) -> bool:
        return node in self._members

    def __iter__(self) -> Iterator[MemberEntry]:
        return iter(self._members.values())

    def get(self, node: NodeId) -> MemberEntry | None:
        return self._members.get(node)

    def named(self, name: str) -> MemberEntry | None:
        """The member listed under `name` (the latest added), if any."""
        return self._names.get(name)

    def count(self, status: MemberStatus) -> int:
        return self._counts[status._value_]

    @property
    def live(self) -> int:
        """Alive and suspect members, this node included: SWIM's N."""
        counts = self._counts
        return counts["alive"] + counts["suspect"]

    def snapshot(self) -> tuple[MemberSnapshot, ...]:
        return tuple(
            MemberSnapshot(m.node, m.status, m.incarnation, MappingProxyType(m.tags), m.since)
            for m in sorted(self._members.values(), key=lambda m: m.node)
        )

    # ------------------------------------------------------------ changes

    def add(self, member: MemberEntry) -> None:
        """A member not known before."""
        if member.node in self._members:
            raise ValueError(f"{member.node} is already a member")
        self._members[member.node] = member
        self._names[member.node.name] = member
        self._counts[member.status._value_] += 1
        if member.status in LIVE:
            self._enter_order(member)
        else:
            self._tombstones[member.node] = member

    def set_state(
        self, member: MemberEntry, status: MemberStatus, incarnation: int, now: float
    ) -> None:
        """Change a member's status and incarnation; `since` moves only when
        the status does."""
        old = member.status
        member.incarnation = incarnation
        if old is status:
            return
        self._counts[old._value_] -= 1
        self._counts[status._value_] += 1
        member.status = status
        member.since = now
        if status in LIVE and old in DEAD:
            self._tombstones.pop(member.node, None)
            self._enter_order(member)
        elif status in DEAD and old in LIVE:
            self._tombstones[member.node] = member
            if status is MemberStatus.FAILED:
                self._deaths.append(member)
        elif status in DEAD:  # failed to left: kept in the order of `since`
            self._tombstones.pop(member.node, None)
            self._tombstones[member.node] = member

    def reap(self, now: float, after: float) -> list[NodeId]:
        """Forget failed and left members dead for `after` seconds or more."""
        reaped: list[NodeId] = []
        tombstones = self._tombstones
        while tombstones:
            node = next(iter(tombstones))
            member = tombstones[node]
            if member.since + after > now:
                break
            del tombstones[node]
            del self._members[node]
            if self._names.get(node.name) is member:
                del self._names[node.name]
            self._counts[member.status._value_] -= 1
            reaped.append(node)
        return reaped

    def forget(self, node: NodeId) -> bool:
        """Remove a tombstone now (a pruned force-leave); False if `node`
        is not a failed or left member."""
        member = self._tombstones.pop(node, None)
        if member is None:
            return False
        del self._members[node]
        if self._names.get(node.name) is member:
            del self._names[node.name]
        self._counts[member.status._value_] -= 1
        return True

    # ------------------------------------------------------------ picking

    def next_probe_target(self) -> MemberEntry | None:
        """The next live member in the shuffled round-robin, or None."""
        for _ in range(2 * len(self._order) + 2):
            if self._next >= len(self._order):
                self._reshuffle()
                if not self._order:
                    return None
            member = self._order[self._next]
            self._next += 1
            if member.status in LIVE and self._members.get(member.node) is member:
                return member
        return None

    def random_alive(
        self, k: int, exclude: Container[NodeId] = (), *, suspects: bool = False
    ) -> list[NodeId]:
        """Up to `k` distinct random alive members (never this node), none
        of them in `exclude`; suspect members too with `suspects`."""
        if k <= 0:
            return []
        wanted = LIVE if suspects else (MemberStatus.ALIVE,)
        order = self._order
        n = len(order)
        members = self._members
        if n <= 4 * k + 8:
            candidates = [
                m.node
                for m in order
                if m.status in wanted and members.get(m.node) is m and m.node not in exclude
            ]
            if len(candidates) <= k:
                self.rng.shuffle(candidates)
                return candidates
            return self.rng.sample(candidates, k)
        picked: dict[NodeId, None] = {}
        randrange = self.rng.randrange
        for _ in range(8 * k + 16):
            m = order[randrange(n)]
            if (
                m.status in wanted
                and m.node not in picked
                and m.node not in exclude
                and members.get(m.node) is m
            ):
                picked[m.node] = None
                if len(picked) >= k:
                    break
        return list(picked)

    def dissemination_targets(self, k: int, now: float, dead_for: float) -> list[NodeId]:
        """Up to `k` distinct random members for a dissemination round: live ones
        (suspects included) and ones that failed less than `dead_for`
        seconds ago, each about equally likely."""
        deaths = self._deaths
        start = self._deaths_from
        horizon = now - dead_for
        while start < len(deaths) and (
            deaths[start].status is not MemberStatus.FAILED or deaths[start].since < horizon
        ):
            start += 1
        if start > 64 and 2 * start > len(deaths):
            del deaths[:start]
            start = 0
        self._deaths_from = start
        recent = len(deaths) - start
        if not recent:
            return self.random_alive(k, suspects=True)
        live = self.live - 1
        picked: dict[NodeId, None] = {}
        for node in self.random_alive(k, suspects=True):
            if self.rng.random() * (live + recent) < live:
                picked[node] = None
        randrange = self.rng.randrange
        for _ in range(2 * k):
            if len(picked) >= k:
                break
            m = deaths[randrange(start, len(deaths))]
            if (
                m.status is MemberStatus.FAILED
                and m.since >= horizon
                and self._members.get(m.node) is m
            ):
                picked[m.node] = None
        return list(picked)

    # ----------------------------------------------------------- internals

    def _enter_order(self, member: MemberEntry) -> None:
        """Put a member that just became live at a random place in the
        probe order (memberlist: swap with a random position)."""
        if member.node == self.me or member.in_order:
            return
        order = self._order
        order.append(member)
        member.in_order = True
        j = int(self.rng.random() * len(order))
        order[j], order[-1] = order[-1], order[j]

    def _reshuffle(self) -> None:
        for m in self._order:
            m.in_order = False
        order = [m for m in self._members.values() if m.status in LIVE and m.node != self.me]
        for m in order:
            m.in_order = True
        self.rng.shuffle(order)
        self._order = order
        self._next = 0
