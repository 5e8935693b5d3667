"""Every bound of the transport: its settings, each with the reason for its
default, and the counts that hold incoming streams to them.

Rules of this module: no I/O. A limit is a `TransportSettings` field with
its reason; a refusal is a name the transport counts in
`Metrics.connections` and logs through its throttle.

Theory of operation
-------------------
- **Two kinds of incoming stream.** A connection is *unidentified* until
  its first frame proves a sender (with a key, against the challenge we
  sent; without, from the sender's own address), and the handshake
  deadline bounds how long that may take; it is *identified* after.
- **Caps in all and per source address** (the TCP peer's address, never a
  claimed one), for each kind (`Limits`): past a cap, a new connection is
  closed at once (unidentified) or at its first frame (identified), and
  counted: "refused" (all unidentified slots taken), "refused_ip" (that
  address holds its share), "refused_cap" (all identified slots taken).
  Streams we dial are not counted: the protocol decides those.
- **Time.** Identified streams that fall silent are closed after
  `idle_timeout` (live peers send keepalives: `daemon.streams`), so the
  cap is held only by streams in use.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from daemon.addresses import IPAddress


@dataclass(frozen=True, slots=True)
class TransportSettings:
    """The [transport] table of the agent's file (`--transport.NAME` flags)."""

    # A dial that has not connected after this long fails (guess; memberlist
    # uses 10 s for TCP, we prefer a quicker repair on a LAN).
    dial_timeout: float = 5.0
    # Frames queued per stream before the peer counts as stuck (guess: a
    # second of full-rate gossip).
    send_queue: int = 1024
    # Datagrams queued for sending before new ones are dropped (guess).
    udp_queue: int = 4096
    # How long a closing stream waits for the peer's side to close (guess).
    linger: float = 5.0
    # A stream's handshake (the hellos, and an incoming stream's first
    # frame) must be over this long after the connection, as a whole: an
    # agent sends its first frame at once (with a key, one round trip
    # later), so 5 s is far above any round trip we target and bounds how
    # long a connection that says nothing, or drips, holds a slot (guess).
    handshake_timeout: float = 5.0
    # Once begun, a frame must be complete within this long, as a whole
    # (guess: a 64 KiB frame needs well under a second on any link we
    # target; TCP backing off after a few losses in a row can stall 15 s).
    frame_timeout: float = 30.0
    # A stream on which nothing arrives for this long (a peer writes a
    # zero-length keepalive after a quarter of it without sending) is
    # closed: the peer is gone, or holds a connection it does not use
    # (guess: three keepalives missed in a row; an active link can be
    # quiet for minutes and stays open, for 4 bytes per 15 s).
    idle_timeout: float = 60.0
    # Incoming streams not yet identified, at most (guess).
    max_unidentified: int = 256
    # Incoming streams not yet identified from one source address, at most
    # (guess: a joining agent opens one or two; agents behind one address,
    # a NAT or a test host, rarely join together by the dozen).
    max_unidentified_per_ip: int = 16
    # Incoming streams identified (their first frame proved their sender),
    # at most: the file descriptors and memory (about 12 kB each) the
    # network may hold (guess: an agent needs its active view and a few
    # exchanges at a time; a seed in a join storm of a large cluster, more).
    max_identified: int = 1024
    # Incoming streams identified from one source address, at most (guess:
    # one agent per address needs a few; 128 leaves room for the 100-200
    # agents our benches run on one loopback address: lower it where every
    # host runs one agent).
    max_identified_per_ip: int = 128
    # Without a cluster key, a frame counts as its claimed sender's only if
    # that sender's host is the address it came from (a datagram's source,
    # the peer of a stream; a stream we dialled to a seed may name any):
    # otherwise anyone could speak for any member. Turn it off where an
    # agent's packets do not leave from its advertised address (behind a
    # NAT, or bound to 0.0.0.0 on a host with several routes), at the price
    # of that protection. With a key, the key proves the sender instead.
    check_source: bool = True
    # With a cluster key, a sealed datagram stamped further than this from
    # our clock is refused as a replay (guess: NTP keeps hosts within
    # milliseconds; a minute leaves room for a drifting clock and bounds how
    # late a recorded datagram can be replayed to an agent that has not
    # heard its sender since it started).
    max_clock_skew: float = 60.0
    # A sealed datagram may arrive this long after a later one of the same
    # sender and still be taken (guess: networks reorder by milliseconds, and
    # SWIM's answers are useless after its probe timeout, 0.5 s).
    replay_reorder: float = 2.0
    # Senders whose sealed datagrams are remembered against replay, the
    # least recently heard forgotten first (guess: above the clusters we
    # target; under a kilobyte each).
    replay_senders: int = 4096


class Limits:
    """Counts of incoming streams, in all and per source address. `accept`
    and `identify` answer None (admitted, and counted until `settle` /
    `release`) or the name of the refusal to count."""

    def __init__(
        self,
        *,
        unidentified: int,
        unidentified_per_ip: int,
        identified: int,
        identified_per_ip: int,
    ) -> None:
        self.max_unidentified = unidentified
        self.max_unidentified_per_ip = unidentified_per_ip
        self.max_identified = identified
        self.max_identified_per_ip = identified_per_ip
        self.unidentified = 0
        self.identified = 0
        self._pending: Counter[IPAddress | None] = Counter()
        self._held: Counter[IPAddress | None] = Counter()

    def accept(self, ip: IPAddress | None) -> str | None:
        """A new connection from `ip`, not identified yet."""
        if self.unidentified >= self.max_unidentified:
            return "refused"
        if self._pending[ip] >= self.max_unidentified_per_ip:
            return "refused_ip"
        self.unidentified += 1
        self._pending[ip] += 1
        return None

    def settle(self, ip: IPAddress | None) -> None:
        """A connection counted by `accept` is identified, or gone."""
        self.unidentified -= 1
        _decrement(self._pending, ip)

    def identify(self, ip: IPAddress | None) -> str | None:
        """A connection from `ip` proved its sender: may it stay?"""
        if self.identified >= self.max_identified:
            return "refused_cap"
        if self._held[ip] >= self.max_identified_per_ip:
            return "refused_ip"
        self.identified += 1
        self._held[ip] += 1
        return None

    def release(self, ip: IPAddress | None) -> None:
        """An identified connection counted by `identify` is gone."""
        self.identified -= 1
        _decrement(self._held, ip)


def _decrement(counter: Counter[IPAddress | None], ip: IPAddress | None) -> None:
    # Entries at zero go: the counters stay as small as what is open.
    if counter[ip] <= 1:
        del counter[ip]
    else:
        counter[ip] -= 1
