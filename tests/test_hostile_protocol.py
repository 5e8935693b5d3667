"""What a hostile peer can make the protocol do (issue 12), one node, no I/O:

- messages only where they belong: HyParView and Plumtree only over a
  stream, Plumtree only from a neighbour, push-pull never as a datagram, a
  stranger's datagrams get an empty ack and nothing else;
- the overlay's own topics are refused from applications and delivered to
  nobody else from the wire; an announcement speaks only for its origin;
- incarnations stay in the wire's range whatever arrives;
- totality (hypothesis): any decoded message from any sender, at any time,
  in any order, never raises, and the node's invariants hold.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlay import codec
from overlay.config import Config
from overlay.ids import NodeId
from overlay.io import (
    ConnectFailed,
    ConnectionDown,
    ConnectionUp,
    Deliver,
    Input,
    JoinCluster,
    MemberStatus,
    NameConflict,
    PeerRefused,
    Publish,
    PublishRejected,
    Received,
    Send,
    Timer,
    TimerFired,
    seed_id,
)
from overlay.member_rules import INCARNATION_MAX, INCARNATION_STEP
from overlay.messages import (
    Ack,
    Disconnect,
    Gossip,
    IHave,
    Join,
    MemberState,
    MemberUpdates,
    MsgId,
    Ping,
    PingReq,
    PushPull,
    ShuffleReply,
    WireStatus,
)
from overlay.node import MEMBERS_TOPIC, Node
from overlay.plumtree import PublishError
from overlay.ratelimit import RateLimit
from tests.test_codec import messages, node_ids

ME = NodeId("me", "10.0.0.1", 7946)
FRIEND = NodeId("friend", "10.0.0.2", 7946)
STRANGER = NodeId("stranger", "10.0.0.66", 7946)


def make() -> Node:
    """A started node with FRIEND as its one neighbour and member."""
    node = Node(ME, Config(), random.Random(1))
    node.start(0.0)
    node.handle(ConnectionUp(FRIEND), 0.1)
    node.handle(Received(FRIEND, Join()), 0.1)
    node.handle(
        Received(FRIEND, MemberUpdates((MemberState(FRIEND, 0, WireStatus.ALIVE, {}, None),))), 0.1
    )
    assert FRIEND in node.views().active and FRIEND in node.swim.members
    return node


def gossip(topic: str = "t", origin: str = "friend", payload: bytes = b"x") -> Gossip:
    return Gossip(MsgId(origin, 7, 1), topic, 1, 0.0, payload)


def delivered(out: list[object]) -> list[Deliver]:
    return [o for o in out if isinstance(o, Deliver)]


def test_plumtree_only_over_a_stream_from_a_neighbour() -> None:
    node = make()
    assert node.handle(Received(FRIEND, gossip(), datagram=True), 1.0) == []
    assert node.refused["plumtree_datagram"] == 1
    # A non-neighbour over its stream: refused, and told the link is gone.
    out = node.handle(Received(STRANGER, gossip(origin="anyone")), 1.0)
    assert out == [Send(STRANGER, Disconnect(alive=True))]
    assert node.refused["plumtree_not_neighbour"] == 1
    assert node.handle(Received(STRANGER, IHave(())), 1.0)[0] == Send(
        STRANGER, Disconnect(alive=True)
    )
    # The neighbour's own copy is delivered.
    assert [d.payload for d in delivered(node.handle(Received(FRIEND, gossip()), 1.1))] == [b"x"]


def test_hyparview_and_push_pull_never_as_datagrams() -> None:
    node = make()
    before = list(node.hyparview.views().active)
    # Spoofed DISCONNECTs by datagram emptied an agent's active view.
    assert node.handle(Received(FRIEND, Disconnect(alive=False), datagram=True), 1.0) == []
    assert node.handle(Received(STRANGER, Join(), datagram=True), 1.0) == []
    assert list(node.hyparview.views().active) == before
    assert node.handle(Received(FRIEND, PushPull(False, 0, 1, ()), datagram=True), 1.0) == []
    assert node.refused == {"hyparview_datagram": 2, "push_pull_datagram": 1}
    # SHUFFLE_REPLY is a datagram by design (to a walk's origin), taken only
    # with the nonce of a shuffle we started: a guessed one changes nothing.
    passive = set(node.hyparview.views().passive)
    reply = ShuffleReply(12345, (NodeId("x", "10.9.9.9", 7946),))
    assert node.handle(Received(STRANGER, reply, datagram=True), 1.0) == []
    assert set(node.hyparview.views().passive) == passive
    assert node.refused == {"hyparview_datagram": 2, "push_pull_datagram": 1}


def test_a_stranger_datagram_gets_an_empty_ack_and_a_push_pull_nothing_more() -> None:
    node = make()
    fake = MemberState(NodeId("fake", "10.0.0.99", 1), 0, WireStatus.ALIVE, {}, None)
    out = node.handle(Received(STRANGER, Ping(5, ME, (fake,)), datagram=True), 1.0)
    assert Send(STRANGER, Ack(5, ()), reliable=False) in out
    assert [o.msg.__class__ for o in out if isinstance(o, Send)] == [Ack, PushPull]
    assert fake.node not in node.swim.members  # its piggyback is not believed
    for msg in (MemberUpdates((fake,)), PingReq(1, FRIEND, True, (fake,)), Ack(9, (fake,))):
        out = node.handle(Received(STRANGER, msg, datagram=True), 1.1)
        assert not [o for o in out if isinstance(o, Send)]
    assert fake.node not in node.swim.members
    assert node.swim.counters["refused_from_strangers"] == 3
    # Over a stream (a push-pull, which proves the address) it is a member.
    node.handle(Received(STRANGER, PushPull(False, 0, 1, (fake,))), 1.2)
    assert fake.node in node.swim.members


def test_the_overlays_own_topics_are_not_for_applications() -> None:
    node = make()
    with pytest.raises(PublishError, match=r"\$overlay\."):
        node.publish(MEMBERS_TOPIC, b"x", 1.0)
    assert node.handle(Publish("$overlay.anything", b"x"), 1.0) == [
        PublishRejected(
            "$overlay.anything", "topics starting with '$overlay.' are the overlay's own"
        )
    ]
    # From the wire: delivered to nobody.
    assert delivered(node.handle(Received(FRIEND, gossip("$overlay.other")), 1.0)) == []
    assert node.refused["reserved_topic"] == 1


def test_an_announcement_speaks_only_for_its_origin() -> None:
    """A GOSSIP on `$overlay.members` whose inner sender is not its origin
    (someone else's words under a member's name) is refused; a true one is
    merged by SWIM's rules like any update."""
    node = make()
    fake = MemberState(NodeId("fake", "10.0.0.99", 1), 0, WireStatus.ALIVE, {}, None)
    forged = codec.encode(STRANGER, MemberUpdates((fake,)))
    node.handle(Received(FRIEND, gossip(MEMBERS_TOPIC, "friend", forged)), 1.0)
    assert fake.node not in node.swim.members
    assert node.refused["announcement_forged"] == 1
    true = codec.encode(FRIEND, MemberUpdates((fake,)))
    node.handle(Received(FRIEND, Gossip(MsgId("friend", 7, 2), MEMBERS_TOPIC, 1, 0.0, true)), 1.1)
    assert fake.node in node.swim.members


def test_incarnations_stay_in_the_wire_range() -> None:
    """A membership update at the largest incarnation the codec accepts
    made its member refute past it: the refutation could not be encoded and
    the agent exited; everyone kept the poisoned entry (issue 12, item 1)."""
    node = make()
    swim = node.swim
    for inc in (2**63 - 1, INCARNATION_MAX + 1):
        for about in (ME, FRIEND, NodeId("new", "10.0.0.50", 1)):
            for status in WireStatus:
                accuser = FRIEND if status is WireStatus.SUSPECT else None
                state = MemberState(about, inc, status, {}, accuser)
                node.handle(Received(FRIEND, MemberUpdates((state,))), 1.0)
    assert swim.incarnation == 0
    assert swim.members.by_id[FRIEND].incarnation == 0
    assert NodeId("new", "10.0.0.50", 1) not in swim.members
    # Far above what we hold for a member: no member could have got there.
    node.handle(
        Received(
            FRIEND,
            MemberUpdates((MemberState(ME, INCARNATION_STEP + 1, WireStatus.SUSPECT, {}, FRIEND),)),
        ),
        1.0,
    )
    assert swim.incarnation == 0
    assert swim.counters["states_refused"] == 4 * 3 * 2 + 1
    # Within reach: refuted as always, and every state we send encodes.
    out = node.handle(
        Received(
            FRIEND,
            MemberUpdates((MemberState(ME, INCARNATION_STEP, WireStatus.SUSPECT, {}, FRIEND),)),
        ),
        1.0,
    )
    assert swim.incarnation == INCARNATION_STEP + 1
    for o in out:
        if isinstance(o, Send):
            codec.encode(ME, o.msg)


# ---------------------------------------------------------------- totality

SENDERS = [FRIEND, STRANGER, ME, NodeId("friend", "10.0.0.3", 7946)]
senders = st.sampled_from(SENDERS) | node_ids()
# States about the members that matter (us above all), at incarnations up
# to the codec's limit: the arbitrary messages alone would rarely name us.
incarnations = st.sampled_from([0, 1, INCARNATION_STEP, INCARNATION_MAX, 2**63 - 1]) | st.integers(
    0, 2**63 - 1
)
states = st.builds(
    MemberState,
    st.sampled_from([ME, *SENDERS]) | node_ids(),
    incarnations,
    st.sampled_from(WireStatus),
    st.just({}),
    st.none() | senders,
)
swim_messages = st.one_of(
    st.builds(MemberUpdates, st.lists(states, max_size=4).map(tuple)),
    st.builds(
        Ping,
        st.integers(0, 9),
        st.sampled_from([ME, FRIEND]),
        st.lists(states, max_size=3).map(tuple),
    ),
    st.builds(
        PushPull, st.booleans(), st.just(0), st.just(1), st.lists(states, max_size=4).map(tuple)
    ),
)
inputs = st.one_of(
    st.builds(Received, senders, messages() | swim_messages, st.booleans()),
    st.builds(ConnectionUp, senders),
    st.builds(ConnectionDown, senders),
    st.builds(ConnectFailed, senders),
    st.builds(PeerRefused, senders),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(inputs, st.floats(0, 1e4, allow_nan=False)), max_size=25), st.data())
def test_any_input_from_anyone_never_raises_and_the_invariants_hold(
    steps: list[tuple[Input, float]], data: st.DataObject
) -> None:
    node = make()
    now = 1.0
    for inp, dt in steps:
        now += dt
        for out in node.handle(inp, now):
            if isinstance(out, Send):
                codec.encode(ME, out.msg)  # everything we send is encodable
        # Fire whatever timer the node may hold, at a random moment.
        for kind in data.draw(st.lists(st.sampled_from(_TIMER_KINDS), max_size=2)):
            node.handle(TimerFired(Timer(kind)), now)
    hv = node.hyparview
    assert len(hv.views().active) <= node.config.hyparview.active_size
    assert ME not in hv.views().active and ME not in hv.views().passive
    assert node.swim.members.by_id[ME].status is MemberStatus.ALIVE
    assert 0 <= node.swim.incarnation <= INCARNATION_MAX + 1
    assert all(m.incarnation <= INCARNATION_MAX for m in node.swim.members)
    peers = node.plumtree.peers()
    eager, lazy = peers.eager, peers.lazy
    assert set(eager) | set(lazy) <= set(hv.views().active) and not set(eager) & set(lazy)


def _timer_kinds() -> list[object]:
    from overlay.hyparview import HvTimer
    from overlay.plumtree import PtTimer
    from overlay.swim_state import SwimTimer

    return [*HvTimer, *PtTimer, *SwimTimer]


_TIMER_KINDS = _timer_kinds()


# --------------------------------------------------------------- names


def test_a_name_held_by_a_live_member_is_refused_at_join() -> None:
    """A second agent started under a live member's name was accepted and
    listed twice (issue 12, item 9). The seed refuses it and says so; the
    newcomer learns from the seed's answer that it is the claimant."""
    node = make()  # knows FRIEND = friend@10.0.0.2
    impostor = NodeId("friend", "10.0.0.9", 7946)
    out = node.handle(
        Received(
            impostor, PushPull(False, 0, 1, (MemberState(impostor, 0, WireStatus.ALIVE, {}, None),))
        ),
        1.0,
    )
    assert NameConflict("friend", holder=FRIEND, claimant=impostor) in out
    assert impostor not in node.swim.members
    reply = [o for o in out if isinstance(o, Send) and isinstance(o.msg, PushPull)]
    assert reply and any(s.node == FRIEND for s in reply[0].msg.states)  # it learns why
    # The newcomer's side: it joined through a seed that lists its name.
    newcomer = Node(impostor, Config(), random.Random(2))
    newcomer.start(0.0)
    seed = seed_id("10.0.0.1", 7946)
    newcomer.handle(JoinCluster((seed,)), 0.0)
    states = (
        MemberState(ME, 0, WireStatus.ALIVE, {}, None),
        MemberState(FRIEND, 0, WireStatus.ALIVE, {}, None),
    )
    out = newcomer.handle(Received(ME, PushPull(True, 0, 1, states)), 0.5)
    assert NameConflict("friend", holder=FRIEND, claimant=impostor) in out
    assert FRIEND not in newcomer.swim.members
    # A name whose holder failed passes to the new address.
    node.swim.members.set_state(node.swim.members.by_id[FRIEND], MemberStatus.FAILED, 0, 2.0)
    node.handle(
        Received(
            impostor, PushPull(False, 0, 1, (MemberState(impostor, 0, WireStatus.ALIVE, {}, None),))
        ),
        3.0,
    )
    assert impostor in node.swim.members


# ----------------------------------------------------- rate limits per host


def test_rate_limit_buckets_refill_and_forget_the_oldest_key() -> None:
    limit = RateLimit(rate=2.0, burst=3, keys=2)
    assert [limit.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limit.allow("a", 0.5)  # one token back after half a second at 2/s
    assert not limit.allow("a", 0.5)
    assert limit.allow("b", 0.5) and limit.allow("c", 0.5)  # "a" forgotten: 2 keys
    assert len(limit) == 2 and limit.allow("a", 0.5)  # a fresh bucket
    with pytest.raises(ValueError):
        RateLimit(rate=0, burst=1)


def test_forged_joins_start_a_bounded_number_of_walks() -> None:
    """2,000 forged JOINs made the cluster dial 3,641 times (issue 12, item
    8): from one host, a burst of 32, then 4 a second."""
    node = make()
    hv = node.hyparview
    sent = 0
    for i in range(200):
        joiner = NodeId(f"j{i}", "10.0.0.66", 10_000 + i)
        out = node.handle(Received(joiner, Join()), 1.0)
        sent += sum(isinstance(o, Send) for o in out)
    assert hv.stats()["joins_refused"] == 200 - 32
    assert sent <= 32 * (node.config.hyparview.active_size + 1)
    # Another host is not held back by the first one's flood.
    node.handle(Received(NodeId("other", "10.0.0.77", 1), Join()), 1.0)
    assert NodeId("other", "10.0.0.77", 1) in hv.views().active


def test_one_member_cannot_fill_every_list_with_fabricated_members() -> None:
    node = make()
    fakes = [
        MemberState(
            NodeId(f"f{i}", f"10.9.{i // 250}.{i % 250 + 1}", 1), 0, WireStatus.ALIVE, {}, None
        )
        for i in range(5000)
    ]
    for k in range(0, 5000, 20):
        node.handle(Received(FRIEND, MemberUpdates(tuple(fakes[k : k + 20]))), 1.0)
    assert len(node.swim.members) == 2 + 512
    assert node.swim.counters["admissions_refused"] == 5000 - 512


def test_a_forged_id_cannot_suppress_the_real_message() -> None:
    """A neighbour that took a publisher's epoch and its next sequence
    numbers silently suppressed its next real messages (issue 12, item 5):
    the real copy, arriving second with the same id, was a "duplicate".
    Now a copy with a known id and another payload is delivered too, and
    pushed on once."""
    node = make()
    other = NodeId("other", "10.0.0.3", 7946)
    node.handle(ConnectionUp(other), 0.2)
    node.handle(Received(other, Join()), 0.2)
    forged = Gossip(MsgId("pub", 7, 2), "t", 1, 0.0, b"forged")
    real = Gossip(MsgId("pub", 7, 2), "t", 1, 0.0, b"real")
    assert [d.payload for d in delivered(node.handle(Received(FRIEND, forged), 1.0))] == [b"forged"]
    out = node.handle(Received(other, real), 1.1)
    assert [d.payload for d in delivered(out)] == [b"real"]
    assert node.plumtree.counters["conflicts"] == 1
    # Once: a second copy of the same conflicting message is a duplicate.
    assert delivered(node.handle(Received(FRIEND, real), 1.2)) == []
    assert delivered(node.handle(Received(FRIEND, forged), 1.2)) == []
