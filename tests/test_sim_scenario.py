"""Scenario files (sim/scenario.py): parsing, parameter references, type
checks, every error a user can make, and --set overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim import scenario
from sim.scenario import ScenarioError

BUILTINS = ["churn", "isolate", "mass-failure", "partition-heal", "senders", "steady"]

FULL = """
name = "everything"
description = "one of each step"

[params]
nodes = 20
part = 0.4
loud = true

[config]
"swim.probe_period" = 2
[config.hyparview]
active_size = 4

[network]
latency_min = 0.005
latency_max = 0.005
[network.underlay]
generator = "grid"
vertices = 16

[[timeline]]
do = "join"
count = "$nodes"
rate = 10

[[timeline]]
do = "wait"
seconds = 5

[[timeline]]
do = "publish"
count = 3
interval = 0.5
from = ["n1", "n2"]
background = "$loud"

[[timeline]]
do = "pause"
count = 2
duration = 3

[[timeline]]
do = "resume"

[[timeline]]
do = "leave"
nodes = ["n3"]

[[timeline]]
do = "crash"
fraction = 0.1

[[timeline]]
do = "partition"
groups = ["$part", "rest"]
at = 20

[[timeline]]
do = "heal"

[[timeline]]
do = "loss"
value = 0.1

[[timeline]]
do = "churn"
duration = 4
join_rate = 1
relative = false
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_builtins_are_listed_and_resolve() -> None:
    assert scenario.builtin_names() == BUILTINS
    for name in BUILTINS:
        sc = scenario.load(name)
        assert sc.name == name and sc.source == "built-in" and sc.description
        assert sc.params["nodes"] == 1000
        steps = scenario.steps(sc)
        assert isinstance(steps[0], scenario.Join) and steps[0].count == 1000
        assert scenario.duration(steps) > 0


def test_steady_is_the_issue_default() -> None:
    steps = scenario.steps(scenario.load("steady"))
    publish = next(s for s in steps if isinstance(s, scenario.Publish))
    assert publish.count == 50 and publish.sender == "random"


def test_a_file_with_every_step(tmp_path: Path) -> None:
    sc = scenario.load(write(tmp_path, FULL))
    assert sc.name == "everything"
    assert sc.config == {"swim.probe_period": 2, "hyparview.active_size": 4}
    cfg = scenario.config_of(sc)
    assert cfg.swim.probe_period == 2.0 and cfg.hyparview.active_size == 4
    steps = scenario.steps(sc)
    assert [s.do for s in steps] == [
        "join",
        "wait",
        "publish",
        "pause",
        "resume",
        "leave",
        "crash",
        "partition",
        "heal",
        "loss",
        "churn",
    ]
    join, _wait, publish, pause, resume, leave, crash, part, *_ = steps
    assert join == scenario.Join(count=20, rate=10.0, where=join.where)
    assert join.where == f"{sc.source}: timeline[0] (join)" and join.contact == "random"
    assert isinstance(publish, scenario.Publish)
    assert publish.background is True and publish.sender == ("n1", "n2")
    assert isinstance(pause, scenario.Pause)
    assert pause.count == 2 and pause.duration == 3.0 and pause.fraction is None
    assert isinstance(resume, scenario.Resume) and resume.nodes is None
    assert isinstance(leave, scenario.Leave) and leave.nodes == ("n3",) and leave.linger == 2.0
    assert isinstance(crash, scenario.Crash) and crash.fraction == 0.1 and crash.kind == "host"
    assert isinstance(part, scenario.Partition)
    assert part.groups == pytest.approx((0.4, 0.6)) and part.at == 20.0
    # join 2 s + wait 5 s; publish in the background; partition at 20; churn 4
    assert scenario.duration(steps) == 24.0


def test_the_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    sc = scenario.load(write(tmp_path, '[[timeline]]\ndo = "wait"\nseconds = 1\n', "quiet.toml"))
    assert sc.name == "quiet" and sc.params == {}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name = ", "bad TOML"),
        ("speed = 3", "unknown top-level key"),
        ("params = 3", "[params] must be a table"),
        ("[params]\nx = [1]", "parameter 'x'"),
        ("[config]\n'swim.nope' = 1", "config: unknown config key 'nope'"),
        ("[config]\n'swim.probe_period' = 'soon'", "config: probe_period"),
        ("[network]\nspeed = 1", "unknown network key 'speed'"),
        ("[network]\nloss = 2.0", "network.loss must be within 0..1"),
        ("[network]\nlatency_min = 0.5\nlatency_max = 0.1", "latency_min > network.latency_max"),
        ("[network.underlay]\nshape = 'x'", "unknown network.underlay key"),
        ("[[timeline]]\ndo = 'dance'", "'do' must be one of"),
        ("[[timeline]]\ndo = 'wait'\nsecs = 1", "timeline[0] (wait): unknown key(s) secs"),
        ("[[timeline]]\ndo = 'wait'", "seconds must be a number"),
        ("[[timeline]]\ndo = 'wait'\nseconds = '$later'", "no parameter 'later'"),
        ("[[timeline]]\ndo = 'join'\ncount = 'many'", "count must be an integer"),
        ("[[timeline]]\ndo = 'join'\ncount = 3\ncontact = 'any'", "contact must be"),
        ("[[timeline]]\ndo = 'crash'", "exactly one of fraction, count, nodes"),
        ("[[timeline]]\ndo = 'crash'\nfraction = 1.5", "fraction must be a number within"),
        ("[[timeline]]\ndo = 'crash'\ncount = 1\nnodes = ['n1']", "exactly one of"),
        ("[[timeline]]\ndo = 'publish'\nfrom = 'everyone'", "from must be"),
        ("[[timeline]]\ndo = 'publish'\ntopic = ''", "topic must be"),
        ("[[timeline]]\ndo = 'publish'\nfrom = []", "from lists no node"),
        ("[[timeline]]\ndo = 'publish'\nsender = 'one'", "unknown key(s) sender"),
        ("[[timeline]]\ndo = 'resume'\nnodes = 'n1'", "nodes must be a list of node names"),
        ("[[timeline]]\ndo = 'partition'\ngroups = [0.7, 0.6]", "sum to <= 1"),
        ("[[timeline]]\ndo = 'partition'\ngroups = []", "at least one group"),
        ("[[timeline]]\ndo = 'partition'\ngroups = [[1], [2]]", "fractions or lists"),
        (
            "[[timeline]]\ndo = 'partition'\ngroups = [0.2, 0.2, 0.2]\none_way = true",
            "one_way needs exactly two",
        ),
        ("[[timeline]]\ndo = 'loss'\nvalue = -1", "value must be a number"),
        ("[[timeline]]\ndo = 'crash'\ncount = 1\nkind = 'disk'", 'kind must be "host"'),
        ("[[timeline]]\ndo = 'wait'\nseconds = 5\n[[timeline]]\ndo = 'heal'\nat = 2", "before"),
        ("timeline = 3", "array of tables"),
    ],
)
def test_errors_name_the_place(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ScenarioError) as info:
        scenario.load(write(tmp_path, text))
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_unknown_scenarios(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="scenario file not found"):
        scenario.load(str(tmp_path / "nope.toml"))
    with pytest.raises(ScenarioError, match=r"unknown scenario 'nope' \(built in: churn"):
        scenario.load("nope")


def test_overrides_reach_params_network_and_config() -> None:
    sc = scenario.override(
        scenario.load("mass-failure"),
        [
            "nodes=30",
            "fail_fraction=0.8",
            "network.loss=0.05",
            "network.underlay.vertices=50",
            "swim.probe_period=2.5",
            "plumtree.ordered=true",
        ],
    )
    assert sc.params["nodes"] == 30 and sc.params["fail_fraction"] == 0.8
    assert sc.network["loss"] == 0.05 and sc.network["underlay"] == {"vertices": 50}
    cfg = scenario.config_of(sc)
    assert cfg.swim.probe_period == 2.5 and cfg.plumtree.ordered is True
    crash = next(s for s in scenario.steps(sc) if isinstance(s, scenario.Crash))
    assert crash.fraction == 0.8


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("nodes", "expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("nodes=many", "--set nodes: expected int, got 'many'"),
        ("settle=inf", "expected float"),
        ("bogus=1", "--set bogus: unknown key"),
        ("swim.bogus=1", "--set swim.bogus: unknown key"),
        ("swim.probe_period=soon", "probe_period"),
        ("swim.probe_timeout=5", "probe_timeout"),
        ("network.speed=1", "unknown network key 'speed'"),
        ("network.loss=3", "within 0..1"),
        ("network.underlay.shape=x", "unknown underlay key 'shape'"),
    ],
)
def test_bad_overrides(item: str, needle: str) -> None:
    with pytest.raises(ScenarioError) as info:
        scenario.override(scenario.load("steady"), [item])
    assert needle in str(info.value)


def test_with_param_rejects_unknown_names() -> None:
    with pytest.raises(ScenarioError, match="no parameter 'size'"):
        scenario.parse("[params]\nnodes = 3", "x").with_param("size", 3)


def test_named_groups_and_the_kinds_table(tmp_path: Path) -> None:
    text = "[[timeline]]\ndo = 'partition'\ngroups = [['n3'], ['n1', 'n2']]\none_way = true\n"
    (part,) = scenario.steps(scenario.load(write(tmp_path, text)))
    assert part == scenario.Partition(
        groups=(("n3",), ("n1", "n2")), one_way=True, where=part.where
    )
    # every kind is read from its own key, and the table lists them all
    assert all(kind.do == do for do, kind in scenario.STEPS.items())
    assert len(scenario.STEPS) == 11
