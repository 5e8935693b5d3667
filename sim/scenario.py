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
absolute time. Steps (each kind is a frozen dataclass below, its fields the
keys with their defaults; `steps()` reads and checks them, the runner
dispatches on their type with `match`):

- `join`: `count` new nodes, all at once or `rate` per second, each through
  one `contact` ("random": a node that joined before, or "first").
- `wait`: `seconds`.
- `publish`: `count` broadcasts `interval` apart, `from` "one" sender,
  "random" senders, "all" (every live node, `count` rounds), "groups" (the
  partition groups in turn) or a list of node names; `size` bytes on
  `topic`. `background = true` leaves the cursor where it is, so the next
  steps run while the broadcasts go out.
- `crash`, `pause` (`duration`: resume after it), `leave` (the process
  exits when the node says its leave is complete, as the agent's does, and
  at most `linger` seconds later): a `fraction` or a `count` of the live nodes,
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

Reading a step: its `$NAME` values are substituted first, then each key is
checked by the step's `read` (types, ranges, one-of choices), so that a
mistake is reported before the run starts, naming the file, the step and
the key (`FILE: timeline[3] (crash): fraction must be ...`).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from overlay.config import Config
from sim import underlay

Value = int | float | bool | str


class ScenarioError(ValueError):
    """A scenario, or an override of it, that cannot be run (the user's to fix)."""


# --------------------------------------------------------------------------
# The steps, typed: one frozen dataclass per kind. A field's default is the
# key's default in the file; a field without one is required (its check
# says so). Fields are named as the file's keys, except `from` (`sender`).


@dataclass(frozen=True, slots=True, kw_only=True)
class StepBase:
    do: ClassVar[str]
    at: float | None = None
    where: str = ""  # "FILE: timeline[3] (crash)", for messages


@dataclass(frozen=True, slots=True, kw_only=True)
class Join(StepBase):
    do: ClassVar[str] = "join"
    count: int
    rate: float = 0.0
    contact: str = "random"  # "random" or "first"

    @classmethod
    def read(cls, f: _Fields) -> Join:
        count, rate = f.integer("count", low=1), f.number("rate")
        if f["contact"] not in ("random", "first"):
            f.fail("contact must be 'random' or 'first'")
        return cls(**f.common, count=count, rate=rate, contact=f["contact"])


@dataclass(frozen=True, slots=True, kw_only=True)
class Wait(StepBase):
    do: ClassVar[str] = "wait"
    seconds: float

    @classmethod
    def read(cls, f: _Fields) -> Wait:
        return cls(**f.common, seconds=f.number("seconds"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Publish(StepBase):
    do: ClassVar[str] = "publish"
    count: int = 1
    interval: float = 0.0
    sender: str | tuple[str, ...] = field(default="random", metadata={"key": "from"})
    size: int = 64
    topic: str = "sim"
    background: bool = False

    @classmethod
    def read(cls, f: _Fields) -> Publish:
        count, interval, size = f.integer("count"), f.number("interval"), f.integer("size")
        background = f.flag("background")
        if not isinstance(f["topic"], str) or not f["topic"]:
            f.fail("topic must be a non-empty string")
        sender = f["from"]
        if isinstance(sender, list):
            sender = f.names("from")
            if not sender:
                f.fail("from lists no node")
        elif sender not in ("one", "random", "all", "groups"):
            f.fail("from must be 'one', 'random', 'all', 'groups' or a list of names")
        return cls(
            **f.common,
            count=count,
            interval=interval,
            sender=sender,
            size=size,
            topic=f["topic"],
            background=background,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Selecting(StepBase):
    """A step acting on some of the nodes: exactly one of a `fraction` or a
    `count` of the live ones, or the named `nodes`."""

    fraction: float | None = None
    count: int | None = None
    nodes: tuple[str, ...] | None = None

    @staticmethod
    def selection(f: _Fields) -> dict[str, Any]:
        given = [k for k in ("fraction", "count", "nodes") if f[k] is not None]
        if len(given) != 1:
            f.fail("give exactly one of fraction, count, nodes")
        return {
            "fraction": None if f["fraction"] is None else f.number("fraction", high=1.0),
            "count": None if f["count"] is None else f.integer("count"),
            "nodes": f.names("nodes"),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Crash(Selecting):
    do: ClassVar[str] = "crash"
    kind: str = "host"  # "host" or "process"

    @classmethod
    def read(cls, f: _Fields) -> Crash:
        selection = cls.selection(f)
        if f["kind"] not in ("host", "process"):
            f.fail('kind must be "host" or "process"')
        return cls(**f.common, **selection, kind=f["kind"])


@dataclass(frozen=True, slots=True, kw_only=True)
class Pause(Selecting):
    do: ClassVar[str] = "pause"
    duration: float | None = None  # None: until a resume step

    @classmethod
    def read(cls, f: _Fields) -> Pause:
        selection = cls.selection(f)
        length = None if f["duration"] is None else f.number("duration")
        return cls(**f.common, **selection, duration=length)


@dataclass(frozen=True, slots=True, kw_only=True)
class Resume(StepBase):
    do: ClassVar[str] = "resume"
    nodes: tuple[str, ...] | None = None  # None: every paused node

    @classmethod
    def read(cls, f: _Fields) -> Resume:
        return cls(**f.common, nodes=f.names("nodes"))


LEAVE_LINGER = 2.0  # at most this long between a graceful leave and the process's exit


@dataclass(frozen=True, slots=True, kw_only=True)
class Leave(Selecting):
    do: ClassVar[str] = "leave"
    linger: float = LEAVE_LINGER

    @classmethod
    def read(cls, f: _Fields) -> Leave:
        selection = cls.selection(f)
        return cls(**f.common, **selection, linger=f.number("linger"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition(StepBase):
    do: ClassVar[str] = "partition"
    # Fractions of the live nodes ("rest" resolved), or lists of node names.
    groups: tuple[float, ...] | tuple[tuple[str, ...], ...]
    one_way: bool = False

    @classmethod
    def read(cls, f: _Fields) -> Partition:
        one_way = f.flag("one_way")
        raw = f["groups"]
        groups: tuple[float, ...] | tuple[tuple[str, ...], ...]
        if not isinstance(raw, list) or not raw:
            f.fail("groups must list at least one group")
        if all(is_number(g) or g == "rest" for g in raw):
            given = [float(g) for g in raw if g != "rest"]
            rests = len(raw) - len(given)
            if rests > 1 or any(g <= 0 for g in given) or sum(given) > 1.0 + 1e-9:
                f.fail('group fractions must be > 0 and sum to <= 1 (one of them may be "rest")')
            rest = max(0.0, 1.0 - sum(given))
            groups = tuple(rest if g == "rest" else float(g) for g in raw)
        elif all(isinstance(g, list) and all(isinstance(n, str) for n in g) for g in raw):
            groups = tuple(tuple(g) for g in raw)
        else:
            f.fail("groups are fractions or lists of node names")
        if one_way and len(groups) != 2:
            f.fail("one_way needs exactly two groups")
        return cls(**f.common, groups=groups, one_way=one_way)


@dataclass(frozen=True, slots=True, kw_only=True)
class Heal(StepBase):
    do: ClassVar[str] = "heal"

    @classmethod
    def read(cls, f: _Fields) -> Heal:
        return cls(**f.common)


@dataclass(frozen=True, slots=True, kw_only=True)
class Loss(StepBase):
    do: ClassVar[str] = "loss"
    value: float

    @classmethod
    def read(cls, f: _Fields) -> Loss:
        return cls(**f.common, value=f.number("value", high=1.0))


@dataclass(frozen=True, slots=True, kw_only=True)
class Churn(StepBase):
    do: ClassVar[str] = "churn"
    duration: float
    join_rate: float = 0.0
    crash_rate: float = 0.0
    leave_rate: float = 0.0
    relative: bool = False  # rates per live node (counted at the start)

    @classmethod
    def read(cls, f: _Fields) -> Churn:
        return cls(
            **f.common,
            duration=f.number("duration"),
            join_rate=f.number("join_rate"),
            crash_rate=f.number("crash_rate"),
            leave_rate=f.number("leave_rate"),
            relative=f.flag("relative"),
        )


Step = Join | Wait | Publish | Crash | Pause | Resume | Leave | Partition | Heal | Loss | Churn

STEPS: dict[str, type[Step]] = {
    cls.do: cls
    for cls in (Join, Wait, Publish, Crash, Pause, Resume, Leave, Partition, Heal, Loss, Churn)
}


NETWORK_KEYS: dict[str, Any] = {
    "latency_min": 0.010,
    "latency_max": 0.050,
    "loss": 0.0,
    "connect_timeout": 1.0,
    "break_after": 2.0,
}


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
        if not is_number(value) or value < 0:
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
        kind = STEPS[do]
        out.append(kind.read(_Fields(kind, raw, sc.params, f"{where} ({do})")))
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
    match step:
        case Join(count=count, rate=rate):
            return count / rate if rate > 0 else 0.0
        case Wait(seconds=seconds):
            return seconds
        case Publish(background=False, count=count, interval=interval):
            return count * interval
        case Churn(duration=length):
            return length
        case _:
            return 0.0


# ------------------------------------------------------------ reading a step


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _resolve(value: Any, params: dict[str, Value], where: str) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        name = value[1:]
        if name not in params:
            raise ScenarioError(f"{where}: no parameter {name!r}")
        return params[name]
    if isinstance(value, list):
        return [_resolve(v, params, where) for v in value]
    return value


def _keys(kind: type[Step]) -> dict[str, Any]:
    """A step's keys in the file, with their defaults (None: no default)."""
    return {
        f.metadata.get("key", f.name): None if f.default is dataclasses.MISSING else f.default
        for f in dataclasses.fields(kind)
        if f.name not in ("at", "where")
    }


class _Fields:
    """One raw step's values, parameters substituted, read and checked one
    key at a time; an error names the step and the key."""

    def __init__(
        self, kind: type[Step], raw: dict[str, Any], params: dict[str, Value], where: str
    ) -> None:
        self.where = where
        keys = _keys(kind)
        unknown = sorted(set(raw) - set(keys) - {"do", "at"})
        if unknown:
            self.fail(f"unknown key(s) {', '.join(unknown)}")
        self.values = {
            k: _resolve(raw.get(k, default), params, f"{where}.{k}") for k, default in keys.items()
        }
        at = _resolve(raw.get("at"), params, f"{where}.at")
        if at is not None and (not is_number(at) or at < 0):
            self.fail("'at' must be a non-negative number")
        self.common: dict[str, Any] = {"at": None if at is None else float(at), "where": where}

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def fail(self, message: str) -> NoReturn:
        raise ScenarioError(f"{self.where}: {message}")

    def number(self, key: str, *, low: float = 0.0, high: float = math.inf) -> float:
        v = self.values[key]
        if not is_number(v) or not low <= v <= high:
            self.fail(f"{key} must be a number within {low}..{high}, not {v!r}")
        return float(v)

    def integer(self, key: str, *, low: int = 0) -> int:
        v = self.values[key]
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            self.fail(f"{key} must be an integer >= {low}, not {v!r}")
        return v

    def flag(self, key: str) -> bool:
        v = self.values[key]
        if not isinstance(v, bool):
            self.fail(f"{key} must be true or false")
        return v

    def names(self, key: str) -> tuple[str, ...] | None:
        v = self.values[key]
        if v is None:
            return None
        if not isinstance(v, list) or not all(isinstance(n, str) for n in v):
            self.fail(f"{key} must be a list of node names")
        return tuple(v)
