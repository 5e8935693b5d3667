"""Config: defaults from the papers, and `replace` with dotted keys."""

from __future__ import annotations

import dataclasses

import pytest

from overlay.config import Config, HyParViewConfig


def test_defaults_follow_the_hyparview_paper() -> None:
    hv = Config().hyparview
    # HyParView, DSN 2007, sec. 5.
    assert (hv.active_size, hv.passive_size, hv.arwl, hv.prwl) == (5, 30, 6, 3)
    assert (hv.shuffle_active, hv.shuffle_passive) == (3, 4)
    assert hv.prwl <= hv.arwl <= 255 and hv.shuffle_ttl <= 255  # TTLs are a byte on the wire
    assert Config().max_frame == 64 * 1024


def test_configs_are_frozen() -> None:
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_frame = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.hyparview.arwl = 1  # type: ignore[misc]


def test_replace_dotted_keys_returns_a_copy() -> None:
    base = Config()
    cfg = base.replace(**{"hyparview.arwl": 4, "hyparview.prwl": 2, "max_frame": 131072})
    assert (cfg.hyparview.arwl, cfg.hyparview.prwl, cfg.max_frame) == (4, 2, 131072)
    assert cfg.hyparview.active_size == base.hyparview.active_size
    assert cfg.plumtree == base.plumtree and cfg.swim == base.swim
    assert base.hyparview.arwl == 6  # untouched


def test_replace_converts_strings_to_the_field_type() -> None:
    cfg = Config().replace(
        **{
            "hyparview.active_size": "7",
            "hyparview.shuffle_period": "2.5",
            "max_frame": "131072",
        }
    )
    assert cfg.hyparview.active_size == 7
    assert cfg.hyparview.shuffle_period == 2.5
    assert cfg.max_frame == 131072


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[("true", True), ("True", True), ("1", True), ("yes", True)],
        *[("false", False), ("FALSE", False), ("0", False), ("no", False)],
    ],
)
def test_replace_parses_booleans(text: str, value: bool) -> None:
    assert Config().replace(**{"swim.lifeguard": text}).swim.lifeguard is value


def test_replace_widens_int_to_float() -> None:
    cfg = Config().replace(**{"hyparview.shuffle_period": 3})
    assert cfg.hyparview.shuffle_period == 3.0
    assert type(cfg.hyparview.shuffle_period) is float


def test_replace_takes_a_whole_section() -> None:
    section = HyParViewConfig(arwl=5)
    assert Config().replace(hyparview=section).hyparview is section


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"nosuch.key": 1}, KeyError),
        ({"hyparview.nosuch": 1}, KeyError),
        ({"nosuch": 1}, KeyError),
        ({"max_frame.sub": 1}, KeyError),  # not a section
        ({"hyparview.arwl.deeper": 1}, KeyError),
        ({"hyparview.arwl": "six"}, ValueError),
        ({"hyparview.arwl": "1.5"}, ValueError),
        ({"hyparview.arwl": 1.5}, ValueError),
        ({"hyparview.arwl": True}, ValueError),  # a bool is not an int here
        ({"hyparview.shuffle_period": "soon"}, ValueError),
        ({"swim.lifeguard": "maybe"}, ValueError),
        ({"swim.lifeguard": 1}, ValueError),
        ({"max_frame": None}, ValueError),
    ],
)
def test_replace_rejects(changes: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        Config().replace(**changes)


def test_replace_rejects_a_string_for_a_section() -> None:
    with pytest.raises(ValueError):
        Config().replace(hyparview="7")


# --------------------------------------------------------------------------
# Validation: one line naming the parameter and the range it accepts.


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # HyParView
        ({"hyparview.active_size": 0}, "hyparview.active_size must be >= 1, got 0"),
        ({"hyparview.active_size": -3}, "hyparview.active_size must be >= 1, got -3"),
        ({"hyparview.passive_size": 0}, "hyparview.passive_size must be >= 1, got 0"),
        ({"hyparview.arwl": 256}, "hyparview.arwl must be within 0..255, got 256"),
        ({"hyparview.arwl": -1}, "hyparview.arwl must be within 0..255, got -1"),
        ({"hyparview.prwl": -1}, "hyparview.prwl must be within 0..255, got -1"),
        ({"hyparview.prwl": 7}, "hyparview.prwl must be <= hyparview.arwl (6), got 7"),
        ({"hyparview.shuffle_ttl": 300}, "hyparview.shuffle_ttl must be within 0..255, got 300"),
        ({"hyparview.shuffle_active": -1}, "hyparview.shuffle_active must be >= 0, got -1"),
        ({"hyparview.shuffle_passive": -1}, "hyparview.shuffle_passive must be >= 0, got -1"),
        (
            {"hyparview.shuffle_passive": 61},
            "hyparview.shuffle_active + hyparview.shuffle_passive must be <= 63 "
            "(a SHUFFLE carries at most 64 nodes, its sender included), got 3 + 61",
        ),
        ({"hyparview.shuffle_period": 0}, "hyparview.shuffle_period must be > 0, got 0.0"),
        ({"hyparview.jitter": 1.0}, "hyparview.jitter must be >= 0 and < 1, got 1.0"),
        ({"hyparview.jitter": -0.1}, "hyparview.jitter must be >= 0 and < 1, got -0.1"),
        (
            {"hyparview.join_retry_initial": 0},
            "hyparview.join_retry_initial must be > 0, got 0.0",
        ),
        (
            {"hyparview.join_retry_max": 0.5},
            "hyparview.join_retry_max must be >= hyparview.join_retry_initial (1.0), got 0.5",
        ),
        ({"hyparview.neighbor_timeout": -1}, "hyparview.neighbor_timeout must be > 0, got -1.0"),
        ({"hyparview.repair_period": 0}, "hyparview.repair_period must be > 0, got 0.0"),
        # Plumtree
        ({"plumtree.ihave_flush": 0}, "plumtree.ihave_flush must be > 0, got 0.0"),
        ({"plumtree.graft_timeout_1": 0}, "plumtree.graft_timeout_1 must be > 0, got 0.0"),
        ({"plumtree.graft_timeout_2": -1}, "plumtree.graft_timeout_2 must be > 0, got -1.0"),
        (
            {"plumtree.optimization_threshold": 0},
            "plumtree.optimization_threshold must be >= 1, got 0",
        ),
        ({"plumtree.retention": 0}, "plumtree.retention must be > 0, got 0.0"),
        (
            {"plumtree.seen_ttl": 30},
            "plumtree.seen_ttl must be >= plumtree.retention (60.0), got 30.0",
        ),
        ({"plumtree.cache_max_messages": 0}, "plumtree.cache_max_messages must be >= 1, got 0"),
        ({"plumtree.cache_max_bytes": 0}, "plumtree.cache_max_bytes must be >= 1, got 0"),
        ({"plumtree.seen_max_ids": 0}, "plumtree.seen_max_ids must be >= 1, got 0"),
        ({"plumtree.missing_max": 0}, "plumtree.missing_max must be >= 1, got 0"),
        ({"plumtree.ihave_queue_max": 0}, "plumtree.ihave_queue_max must be >= 1, got 0"),
        (
            {"plumtree.anti_entropy_period": 0},
            "plumtree.anti_entropy_period must be > 0, got 0.0",
        ),
        (
            {"plumtree.anti_entropy_delay": -1},
            "plumtree.anti_entropy_delay must be >= 0 and < plumtree.retention (60.0), got -1.0",
        ),
        (
            {"plumtree.anti_entropy_delay": 60},
            "plumtree.anti_entropy_delay must be >= 0 and < plumtree.retention (60.0), got 60.0",
        ),
        ({"plumtree.max_payload": 0}, "plumtree.max_payload must be within 1..65536, got 0"),
        (
            {"plumtree.max_payload": 65537},
            "plumtree.max_payload must be within 1..65536, got 65537",
        ),
        (
            {"plumtree.max_payload": 61441},
            "plumtree.max_payload must be <= 61440 "
            "(max_frame 65536 minus 4096 for the frame's envelope), got 61441",
        ),
        ({"plumtree.ordered_max_held": 0}, "plumtree.ordered_max_held must be >= 1, got 0"),
        # SWIM
        ({"swim.probe_period": 0}, "swim.probe_period must be > 0, got 0.0"),
        (
            {"swim.probe_timeout": 1.0},
            "swim.probe_timeout must be > 0 and < swim.probe_period (1.0), got 1.0",
        ),
        (
            {"swim.probe_timeout": 0},
            "swim.probe_timeout must be > 0 and < swim.probe_period (1.0), got 0.0",
        ),
        ({"swim.indirect_k": -1}, "swim.indirect_k must be >= 0, got -1"),
        ({"swim.suspicion_mult": 0}, "swim.suspicion_mult must be > 0, got 0.0"),
        ({"swim.suspicion_max_mult": 0.5}, "swim.suspicion_max_mult must be >= 1, got 0.5"),
        ({"swim.retransmit_mult": 0}, "swim.retransmit_mult must be >= 1, got 0"),
        ({"swim.gossip_interval": 0}, "swim.gossip_interval must be > 0, got 0.0"),
        ({"swim.gossip_nodes": -1}, "swim.gossip_nodes must be >= 0, got -1"),
        ({"swim.gossip_to_the_dead": -1}, "swim.gossip_to_the_dead must be >= 0, got -1.0"),
        ({"swim.piggyback_bytes": 63}, "swim.piggyback_bytes must be >= 64, got 63"),
        (
            {"max_frame": 131072, "swim.piggyback_bytes": 61412},
            "swim.piggyback_bytes must be <= 61411 (a probe is one datagram: "
            "65507 bytes minus 4096 for the frame's envelope), got 61412",
        ),
        ({"swim.awareness_max": 0}, "swim.awareness_max must be >= 1, got 0"),
        ({"swim.push_pull_period": 0}, "swim.push_pull_period must be > 0, got 0.0"),
        ({"swim.join_followup": 0}, "swim.join_followup must be > 0, got 0.0"),
        ({"swim.join_followups": 0}, "swim.join_followups must be >= 1, got 0"),
        (
            {"swim.push_pull_part_bytes": 1023},
            "swim.push_pull_part_bytes must be >= 1024, got 1023",
        ),
        (
            {"max_frame": 32768, "plumtree.max_payload": 16384},
            "swim.push_pull_part_bytes must be <= 28672 "
            "(max_frame 32768 minus 4096 for the frame's envelope), got 32768",
        ),
        ({"swim.join_retry_initial": -1}, "swim.join_retry_initial must be > 0, got -1.0"),
        (
            {"swim.join_retry_max": 0.5},
            "swim.join_retry_max must be >= swim.join_retry_initial (1.0), got 0.5",
        ),
        ({"swim.reap_after": -1}, "swim.reap_after must be >= 0, got -1.0"),
        ({"swim.reconnect_period": 0}, "swim.reconnect_period must be > 0, got 0.0"),
        ({"swim.reconnect_for": -1}, "swim.reconnect_for must be >= 0, got -1.0"),
        ({"swim.leave_fanout": -1}, "swim.leave_fanout must be >= 0, got -1"),
        ({"swim.announce_delay": -1}, "swim.announce_delay must be >= 0, got -1.0"),
        (
            {"swim.announce_max_delay": 0.05},
            "swim.announce_max_delay must be >= swim.announce_delay (0.1), got 0.05",
        ),
        ({"swim.verify_max": -1}, "swim.verify_max must be >= 0, got -1"),
        ({"swim.max_tags_bytes": -1}, "swim.max_tags_bytes must be >= 0, got -1"),
        (
            {"swim.max_tags_bytes": 601},
            "swim.max_tags_bytes must be <= 600 (half of swim.piggyback_bytes: "
            "a member's state must fit in a probe), got 601",
        ),
        # The codec
        ({"max_frame": 5119}, "max_frame must be within 5120..16777216, got 5119"),
        ({"max_frame": 2**24 + 1}, "max_frame must be within 5120..16777216, got 16777217"),
        # Not a number at all
        ({"swim.probe_period": "nan"}, "swim.probe_period must be finite and > 0, got nan"),
        ({"swim.reconnect_for": "inf"}, "swim.reconnect_for must be finite and >= 0, got inf"),
    ],
)
def test_a_parameter_out_of_range_is_refused_with_its_range(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        Config().replace(**changes)
    assert str(caught.value) == message


def test_the_defaults_and_edges_of_each_range_are_accepted() -> None:
    Config()
    Config().replace(
        **{
            "hyparview.active_size": 1,
            "hyparview.passive_size": 1,
            "hyparview.arwl": 0,
            "hyparview.prwl": 0,
            "hyparview.shuffle_ttl": 255,
            "hyparview.shuffle_active": 0,
            "hyparview.shuffle_passive": 63,
            "hyparview.jitter": 0.0,
            "hyparview.join_retry_max": 1.0,
            "plumtree.seen_ttl": 60.0,
            "plumtree.anti_entropy_delay": 0.0,
            "plumtree.max_payload": 1,
            "swim.indirect_k": 0,
            "swim.gossip_nodes": 0,
            "swim.announce_delay": 0.0,
            "swim.announce_max_delay": 0.0,
            "swim.reap_after": 0.0,
            "swim.max_tags_bytes": 600,
        }
    )
    # A larger frame makes room for a larger payload, up to the codec's bound.
    big = Config().replace(**{"max_frame": 2**20, "plumtree.max_payload": 65536})
    assert big.plumtree.max_payload == 65536
    # A smaller one needs smaller payloads and push-pull parts.
    Config().replace(
        **{"max_frame": 8192, "plumtree.max_payload": 4096, "swim.push_pull_part_bytes": 4096}
    )


def test_a_section_built_directly_is_checked_too() -> None:
    with pytest.raises(ValueError, match=r"^hyparview\.active_size must be >= 1, got 0$"):
        HyParViewConfig(active_size=0)


def test_the_envelope_covers_the_largest_gossip_frame() -> None:
    """FRAME_ENVELOPE (what max_payload leaves of max_frame) holds a GOSSIP
    whose sender, origin and topic are at their longest, in 4-byte characters,
    with every number at its largest."""
    from overlay import codec
    from overlay.config import FRAME_ENVELOPE
    from overlay.ids import MAX_NAME_LEN, NodeId
    from overlay.messages import MAX_HOPS, MAX_TOPIC, Gossip, MsgId

    wide = "\U0001f600"
    sender = NodeId(wide * MAX_NAME_LEN, "f" * 255, 65535)
    payload = b"x" * 65536
    msg = Gossip(
        MsgId(wide * 128, 2**32 - 1, 2**63 - 1), wide * MAX_TOPIC, MAX_HOPS, 1e300, payload, True
    )
    frame = codec.encode(sender, msg, 2**20)
    assert len(frame) - len(payload) <= FRAME_ENVELOPE
