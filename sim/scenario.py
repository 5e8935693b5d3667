"""Scenarios: what happens to a simulated cluster, and when.

A scenario is a TOML file (the built-in ones are package data in
`sim/scenarios/`)::

    name = "steady"
    description = "..."

    [params]              # named values, overridable with --set NAME=VALUE
    nodes = 1000
    settle = 20.0

    [config]              # overlay.config keys, dotted ("swim.probe_period")
    "swim.probe_period" = 1.0     # or nested: [config.swim] probe_period = 1.0

    [network]             # sim.engine.NetworkModel fields, and an underlay
    latency_min = 0.010
    [network.underlay]    # optional: see sim.underlay
    generator = "barabasi_albert"

    [[timeline]]          # steps, run in order
    do = "join"
    count = "$nodes"      # "$NAME" is the value of a parameter

A cursor walks the timeline: steps that take time (`wait`, `join` at a rate,
`publish` with an interval, `churn`) move it; `at = T` moves it to an
absolute time. Steps (keys with their defaults in `STEPS`):

- `join`: `count` new nodes, all at once or `rate` per second, each through
  one `contact` ("random": a node that joined before, or "first").
- `wait`: `seconds`.
- `publish`: `count` broadcasts `interval` apart, `from` "one" sender,
  "random" senders, "all" (every live node, `count` rounds), "groups" (the
  partition groups in turn) or a list of node names; `size` bytes on
  `topic`. `background = true` leaves the cursor where it is, so the next
  steps run while the broadcasts go out.
- `crash`, `pause` (`duration`: resume after it), `leave` (the process
  exits `linger` seconds later): a `fraction` or a `count` of the live nodes,
  or the named `nodes`. A crash's `kind` is "host" (the default: the host
  goes silent) or "process" (the process dies, its host refuses what is
  sent to it, as after a SIGKILL). `resume`: the named `nodes`, or every paused node.
- `partition`: `groups` is a list of fractions of the live nodes (`[0.3,
  "rest"]`) or of lists of node names (`[["n3"]]` cuts n3 off from the
  rest); nodes in no group form one more group. `one_way = true` cuts
  traffic from the first group to the second only. `heal` removes it.
- `loss`: datagram loss probability `value` from now on.
- `churn`: for `duration` seconds, `join_rate` joins, `crash_rate` crashes
  and `leave_rate` graceful leaves per second (with `relative = true`:
  per live node per second, counted when the churn starts).

Nodes are named n0, n1, ... in the order they are created.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from overlay.config import Config
from sim import underlay

Value = int | float | bool | str


class ScenarioError(ValueError):
    """A scenario, or an override of it, that cannot be run (the user's to fix)."""


# --------------------------------------------------------------------------
# The steps, as data: for each kind, its keys and their defaults. A default
# of None means "no default": the key is optional and the step checks it.

_SELECT: dict[str, Any] = {"fraction": None, "count": None, "nodes": None}

STEPS: dict[str, dict[str, Any]] = {
    "join": {"count": None, "rate": 0.0, "contact": "random"},
    "wait": {"seconds": None},
    "publish": {
        "count": 1,
        "interval": 0.0,
        "from": "random",
        "size": 64,
        "topic": "sim",
        "background": False,
    },
    "crash": {**_SELECT, "kind": "host"},
    "pause": {**_SELECT, "duration": None},
    "resume": {"nodes": None},
    "leave": {**_SELECT, "linger": 2.0},
    "partition": {"groups": None, "one_way": False},
    "heal": {},
    "loss": {"value": None},
    "churn": {
        "duration": None,
        "join_rate": 0.0,
        "crash_rate": 0.0,
        "leave_rate": 0.0,
        "relative": False,
    },
}

NETWORK_KEYS: dict[str, Any] = {
    "latency_min": 0.010,
    "latency_max": 0.050,
    "loss": 0.0,
    "connect_timeout": 1.0,
    "break_after": 2.0,
}


@dataclass(frozen=True, slots=True)
class Step:
    """One timeline step after parameters are resolved and types checked."""

    do: str
    at: float | None
    args: dict[str, Any]
    where: str  # "timeline[3] (crash)", for messages

    def __getitem__(self, key: str) -> Any:
        return self.args[key]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    params: dict[str, Value]
    config: dict[str, Any]  # dotted overlay.config keys
    network: dict[str, Any]  # NETWORK_KEYS, plus "underlay": dict when set
    timeline: tuple[dict[str, Any], ...]
    source: str  # "built-in" or the file's path

    def with_param(self, key: str, value: Value) -> Scenario:
        if key not in self.params:
            raise ScenarioError(f"scenario {self.name!r} has no parameter {key!r}")
        return dataclasses.replace(self, params={**self.params, key: value})


# --------------------------------------------------------------------------
# Loading


def builtin_names() -> list[str]:
    folder = resources.files("sim") / "scenarios"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load(name_or_path: str) -> Scenario:
    """A built-in scenario by name, or a TOML file by path."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        path = Path(name_or_path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ScenarioError(f"scenario file not found: {name_or_path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioError(f"cannot read scenario {name_or_path}: {exc}") from None
        return parse(text, str(path), default_name=path.stem)
    if name_or_path not in builtin_names():
        raise ScenarioError(
            f"unknown scenario {name_or_path!r} (built in: {', '.join(builtin_names())}; "
            "or give a FILE.toml)"
        )
    text = (resources.files("sim") / "scenarios" / f"{name_or_path}.toml").read_text("utf-8")
    return parse(text, "built-in", default_name=name_or_path)


def parse(text: str, source: str, *, default_name: str = "scenario") -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: bad TOML: {exc}") from None
    known = {"name", "description", "params", "config", "network", "timeline"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ScenarioError(f"{source}: unknown top-level key(s): {', '.join(unknown)}")
    name = data.get("name", default_name)
    description = data.get("description", "")
    if not isinstance(name, str) or not isinstance(description, str):
        raise ScenarioError(f"{source}: name and description must be strings")
    params = _table(data, "params", source)
    for key, value in params.items():
        if not isinstance(value, int | float | bool | str):
            raise ScenarioError(f"{source}: parameter {key!r} must be a number, bool or string")
    config = _flatten(_table(data, "config", source))
    _check_config(config, source)
    network = _table(data, "network", source)
    _check_network(network, source)
    timeline = data.get("timeline", [])
    if not isinstance(timeline, list) or not all(isinstance(s, dict) for s in timeline):
        raise ScenarioError(f"{source}: timeline must be an array of tables ([[timeline]])")
    sc = Scenario(name, description, params, config, network, tuple(timeline), source)
    steps(sc)  # every error now, not halfway through a run
    return sc


def _table(data: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ScenarioError(f"{source}: [{key}] must be a table")
    return dict(value)


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_config(config: dict[str, Any], source: str) -> Config:
    try:
        return Config().replace(**config)
    except (KeyError, ValueError, TypeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ScenarioError(f"{source}: config: {message}") from None


def _check_network(network: dict[str, Any], source: str) -> None:
    for key, value in network.items():
        if key == "underlay":
            if not isinstance(value, dict):
                raise ScenarioError(f"{source}: network.underlay must be a table")
            bad = sorted(set(value) - set(underlay.DEFAULTS))
            if bad:
                raise ScenarioError(f"{source}: unknown network.underlay key(s): {', '.join(bad)}")
            continue
        if key not in NETWORK_KEYS:
            raise ScenarioError(
                f"{source}: unknown network key {key!r} (one of {', '.join(NETWORK_KEYS)}, "
                "underlay)"
            )
        if not _is_number(value) or value < 0:
            raise ScenarioError(f"{source}: network.{key} must be a non-negative number")
    lo = network.get("latency_min", NETWORK_KEYS["latency_min"])
    hi = network.get("latency_max", NETWORK_KEYS["latency_max"])
    if lo > hi:
        raise ScenarioError(f"{source}: network.latency_min > network.latency_max")
    if network.get("loss", 0.0) > 1.0:
        raise ScenarioError(f"{source}: network.loss must be within 0..1")


# --------------------------------------------------------------------------
# Overrides: --set KEY=VALUE


def override(sc: Scenario, sets: Sequence[str]) -> Scenario:
    """Apply `KEY=VALUE` overrides: a scenario parameter, `network.KEY`
    (`network.underlay.KEY`), or an overlay.config key (`swim.probe_period`)."""
    for item in sets:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ScenarioError(f"--set {item!r}: expected KEY=VALUE")
        where = f"--set {key}"
        if key in sc.params:
            sc = sc.with_param(key, _convert(text, sc.params[key], where))
        elif key.startswith("network.underlay."):
            sub = key.removeprefix("network.underlay.")
            if sub not in underlay.DEFAULTS:
                raise ScenarioError(f"{where}: unknown underlay key {sub!r}")
            spec = dict(sc.network.get("underlay", {}))
            spec[sub] = _convert(text, underlay.DEFAULTS[sub], where)
            sc = dataclasses.replace(sc, network={**sc.network, "underlay": spec})
        elif key.startswith("network."):
            sub = key.removeprefix("network.")
            if sub not in NETWORK_KEYS:
                raise ScenarioError(f"{where}: unknown network key {sub!r}")
            network = {**sc.network, sub: _convert(text, NETWORK_KEYS[sub], where)}
            _check_network(network, where)
            sc = dataclasses.replace(sc, network=network)
        else:
            config = {**sc.config, key: text}
            try:
                Config().replace(**config)
            except KeyError:
                raise ScenarioError(
                    f"{where}: unknown key (not a parameter of {sc.name!r}: "
                    f"{', '.join(sc.params) or 'none'}; nor network.* or a config key "
                    "like swim.probe_period)"
                ) from None
            except (ValueError, TypeError) as exc:
                raise ScenarioError(f"{where}: {exc}") from None
            sc = dataclasses.replace(sc, config=config)
    return sc


def _convert(text: str, like: Value, where: str) -> Value:
    text = text.strip()
    try:
        if isinstance(like, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        raise ScenarioError(f"{where}: expected {type(like).__name__}, got {text!r}") from None
    return text


# --------------------------------------------------------------------------
# Resolution: parameters substituted, types checked


def config_of(sc: Scenario) -> Config:
    return _check_config(sc.config, sc.source)


def steps(sc: Scenario) -> list[Step]:
    """The timeline with parameters substituted and every value checked."""
    out: list[Step] = []
    for i, raw in enumerate(sc.timeline):
        do = raw.get("do")
        where = f"{sc.source}: timeline[{i}]"
        if not isinstance(do, str) or do not in STEPS:
            raise ScenarioError(f"{where}: 'do' must be one of {', '.join(STEPS)}")
        where = f"{where} ({do})"
        spec = STEPS[do]
        unknown = sorted(set(raw) - set(spec) - {"do", "at"})
        if unknown:
            raise ScenarioError(f"{where}: unknown key(s) {', '.join(unknown)}")
        args = {
            k: _resolve(raw.get(k, default), sc.params, f"{where}.{k}")
            for k, default in spec.items()
        }
        at = _resolve(raw.get("at"), sc.params, f"{where}.at")
        if at is not None and (not _is_number(at) or at < 0):
            raise ScenarioError(f"{where}: 'at' must be a non-negative number")
        step = Step(do, None if at is None else float(at), args, where)
        _CHECKS[do](step)
        out.append(step)
    cursor = 0.0
    for step in out:
        if step.at is not None:
            if step.at < cursor:
                raise ScenarioError(
                    f"{step.where}: at = {step.at} is before the end of the step before it "
                    f"({cursor:g} s)"
                )
            cursor = step.at
        cursor += step_length(step)
    return out


def _resolve(value: Any, params: dict[str, Value], where: str) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        name = value[1:]
        if name not in params:
            raise ScenarioError(f"{where}: no parameter {name!r}")
        return params[name]
    if isinstance(value, list):
        return [_resolve(v, params, where) for v in value]
    return value


def duration(plan: list[Step]) -> float:
    """Where the cursor ends: the simulated time the timeline covers."""
    t = 0.0
    for step in plan:
        if step.at is not None:
            t = max(t, step.at)
        t += step_length(step)
    return t


def step_length(step: Step) -> float:
    """How far a step moves the cursor."""
    a = step.args
    if step.do == "join":
        return a["count"] / a["rate"] if a["rate"] > 0 else 0.0
    if step.do == "wait":
        return float(a["seconds"])
    if step.do == "publish":
        return 0.0 if a["background"] else a["count"] * a["interval"]
    if step.do == "churn":
        return float(a["duration"])
    return 0.0


# ------------------------------------------------------------ type checks


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _number(step: Step, key: str, *, low: float = 0.0, high: float = math.inf) -> None:
    v = step.args[key]
    if not _is_number(v) or not low <= v <= high:
        raise ScenarioError(f"{step.where}: {key} must be a number within {low}..{high}, not {v!r}")
    step.args[key] = float(v)


def _integer(step: Step, key: str, *, low: int = 0) -> None:
    v = step.args[key]
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ScenarioError(f"{step.where}: {key} must be an integer >= {low}, not {v!r}")
    step.args[key] = v


def _flag(step: Step, key: str) -> None:
    if not isinstance(step.args[key], bool):
        raise ScenarioError(f"{step.where}: {key} must be true or false")


def _names(step: Step, key: str) -> None:
    v = step.args[key]
    if v is not None and (not isinstance(v, list) or not all(isinstance(n, str) for n in v)):
        raise ScenarioError(f"{step.where}: {key} must be a list of node names")


def _selection(step: Step) -> None:
    given = [k for k in ("fraction", "count", "nodes") if step.args[k] is not None]
    if len(given) != 1:
        raise ScenarioError(f"{step.where}: give exactly one of fraction, count, nodes")
    if step.args["fraction"] is not None:
        _number(step, "fraction", high=1.0)
    if step.args["count"] is not None:
        _integer(step, "count")
    _names(step, "nodes")


def _check_join(step: Step) -> None:
    _integer(step, "count", low=1)
    _number(step, "rate")
    if step["contact"] not in ("random", "first"):
        raise ScenarioError(f"{step.where}: contact must be 'random' or 'first'")


def _check_wait(step: Step) -> None:
    _number(step, "seconds")


def _check_publish(step: Step) -> None:
    _integer(step, "count")
    _number(step, "interval")
    _integer(step, "size")
    _flag(step, "background")
    if not isinstance(step["topic"], str) or not step["topic"]:
        raise ScenarioError(f"{step.where}: topic must be a non-empty string")
    sender = step["from"]
    if isinstance(sender, list):
        _names(step, "from")
        if not sender:
            raise ScenarioError(f"{step.where}: from lists no node")
    elif sender not in ("one", "random", "all", "groups"):
        raise ScenarioError(
            f"{step.where}: from must be 'one', 'random', 'all', 'groups' or a list of names"
        )


def _check_pause(step: Step) -> None:
    _selection(step)
    if step["duration"] is not None:
        _number(step, "duration")


def _check_crash(step: Step) -> None:
    _selection(step)
    if step["kind"] not in ("host", "process"):
        raise ScenarioError(f'{step.where}: kind must be "host" or "process"')


def _check_resume(step: Step) -> None:
    _names(step, "nodes")


def _check_leave(step: Step) -> None:
    _selection(step)
    _number(step, "linger")


def _check_partition(step: Step) -> None:
    groups = step["groups"]
    _flag(step, "one_way")
    if not isinstance(groups, list) or not groups:
        raise ScenarioError(f"{step.where}: groups must list at least one group")
    if all(_is_number(g) or g == "rest" for g in groups):
        given = [float(g) for g in groups if g != "rest"]
        rests = len(groups) - len(given)
        if rests > 1 or any(g <= 0 for g in given) or sum(given) > 1.0 + 1e-9:
            raise ScenarioError(
                f"{step.where}: group fractions must be > 0 and sum to <= 1 "
                '(one of them may be "rest")'
            )
        rest = max(0.0, 1.0 - sum(given))
        step.args["groups"] = [rest if g == "rest" else float(g) for g in groups]
    elif not all(isinstance(g, list) and all(isinstance(n, str) for n in g) for g in groups):
        raise ScenarioError(f"{step.where}: groups are fractions or lists of node names")
    if step["one_way"] and len(groups) != 2:
        raise ScenarioError(f"{step.where}: one_way needs exactly two groups")


def _check_heal(step: Step) -> None:
    pass


def _check_loss(step: Step) -> None:
    _number(step, "value", high=1.0)


def _check_churn(step: Step) -> None:
    for key in ("duration", "join_rate", "crash_rate", "leave_rate"):
        _number(step, key)
    _flag(step, "relative")


_CHECKS = {
    "join": _check_join,
    "wait": _check_wait,
    "publish": _check_publish,
    "crash": _check_crash,
    "pause": _check_pause,
    "resume": _check_resume,
    "leave": _check_leave,
    "partition": _check_partition,
    "heal": _check_heal,
    "loss": _check_loss,
    "churn": _check_churn,
}
