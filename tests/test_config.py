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
    cfg = base.replace(**{"hyparview.arwl": 4, "hyparview.prwl": 2, "max_frame": 1000})
    assert (cfg.hyparview.arwl, cfg.hyparview.prwl, cfg.max_frame) == (4, 2, 1000)
    assert cfg.hyparview.active_size == base.hyparview.active_size
    assert cfg.plumtree == base.plumtree and cfg.swim == base.swim
    assert base.hyparview.arwl == 6  # untouched


def test_replace_converts_strings_to_the_field_type() -> None:
    cfg = Config().replace(
        **{
            "hyparview.active_size": "7",
            "hyparview.shuffle_period": "2.5",
            "max_frame": "4096",
        }
    )
    assert cfg.hyparview.active_size == 7
    assert cfg.hyparview.shuffle_period == 2.5
    assert cfg.max_frame == 4096


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
