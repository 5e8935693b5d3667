"""Agent configuration: a TOML file, overridden by command-line flags.

File layout (every key optional)::

    max_frame = 65536            # the codec's frame limit (top-level Config field)

    [agent]
    bind = "0.0.0.0:7946"
    advertise = "203.0.113.7:7946"
    name = "web-1"
    join = ["10.0.0.1:7946", "_gossip._tcp.overlay.default.svc.cluster.local"]
    control = "127.0.0.1:7373"   # or "unix:/run/overlay.sock", or "none"
    metrics = "127.0.0.1:9464"
    key_file = "/etc/overlay/keyring"
    log_json = true
    log_level = "info"
    leave_grace = 2.0
    leave_timeout = 5.0
    input_queue = 4096
    subscriber_queue = 1024
    event_handlers = ["member-join,member-leave=/etc/overlay/members.sh", "user:deploy=./deploy.sh"]
    event_handler_timeout = 60.0
    snapshot = "/var/lib/overlay/snapshot.json"
    publish_queue = 1024

    [agent.tags]
    role = "web"

    [transport]                  # daemon.transport.TransportSettings
    dial_timeout = 5.0
    send_queue = 1024

    [hyparview]                  # overlay.config.HyParViewConfig
    active_size = 5
    [plumtree]                   # overlay.config.PlumtreeConfig
    [swim]                       # overlay.config.SwimConfig
    probe_period = 1.0

Every protocol parameter (`overlay.config`) and transport setting has a flag
too, `--SECTION.NAME VALUE` (`--swim.probe-period 0.5`,
`--transport.dial-timeout 2`), and so has every `[agent]` key; `overlay agent
--help` lists them with their defaults, and docs/agent.md explains them all,
generated from the comments in `overlay/config.py`, `daemon/limits.py` and
`daemon/agent.py` (`daemon.agent_docs`).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import tomllib
from collections.abc import Iterator, Mapping
from typing import Any

from daemon.agent import AgentSettings
from daemon.control import control_address, parse_listen
from daemon.transport import TransportSettings
from overlay.config import Config, ConfigError
from overlay.ids import parse_addr

PROTOCOL_SECTIONS = ("hyparview", "plumtree", "swim")
AGENT_KEYS = (
    "bind",
    "advertise",
    "name",
    "join",
    "control",
    "metrics",
    "key_file",
    "log_json",
    "log_level",
    "leave_grace",
    "leave_timeout",
    "input_queue",
    "subscriber_queue",
    "tags",
    "event_handlers",
    "event_handler_timeout",
    "snapshot",
    "publish_queue",
)
DEFAULT_BIND = "0.0.0.0:7946"


# Agent settings that are numbers, and their type.
_NUMBERS: dict[str, type[int] | type[float]] = {
    "leave_grace": float,
    "leave_timeout": float,
    "input_queue": int,
    "subscriber_queue": int,
    "event_handler_timeout": float,
    "publish_queue": int,
}


class SettingsError(ValueError):
    """The configuration is wrong: one clear sentence for the operator."""


def load_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"config file not found: {path}") from None
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None


def protocol_fields() -> Iterator[tuple[str, dataclasses.Field[Any], Any]]:
    """(dotted key, field, default) of every protocol parameter."""
    config = Config()
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
                yield f"{f.name}.{sub.name}", sub, getattr(value, sub.name)
        else:
            yield f.name, f, value


def field_comments(cls: type) -> dict[str, str]:
    """The comment block above each field of a dataclass, from its source:
    the reason for each default becomes its entry in docs/agent.md
    (`daemon.agent_docs`)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    out: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    previous: ast.AnnAssign | None = None
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comments: list[str] = []
            i = node.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#"):
                comments.insert(0, lines[i].strip().lstrip("#").strip())
                i -= 1
            if comments:
                out[node.target.id] = " ".join(comments)
            elif (
                previous is not None
                and isinstance(previous.target, ast.Name)
                and previous.target.id in out
                and previous.end_lineno == node.lineno - 1
            ):
                # A field right below another shares its comment
                # (`join_retry_initial` / `join_retry_max`).
                out[node.target.id] = out[previous.target.id]
            previous = node
        else:
            previous = None
    return out


def transport_fields() -> Iterator[tuple[str, Any]]:
    """(name, default) of every transport setting."""
    defaults = TransportSettings()
    for f in dataclasses.fields(defaults):
        yield f.name, getattr(defaults, f.name)


def _transport_settings(changes: Mapping[str, Any]) -> TransportSettings:
    """TransportSettings with `changes` (from the file's [transport] table or
    from --transport.NAME flags, given as text)."""
    defaults = dict(transport_fields())
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in defaults:
            raise SettingsError(f"unknown key {name!r} in [transport]")
        if isinstance(defaults[name], bool):  # check_source: a switch, off is allowed
            values[name] = _switch(value, f"transport.{name}")
            continue
        values[name] = _number(value, type(defaults[name]), f"transport.{name}")
        if not values[name]:
            raise SettingsError(f"transport.{name}: {value!r} is out of range")
    return TransportSettings(**values)


def _addr(value: Any, what: str) -> tuple[str, int]:
    if not isinstance(value, str):
        raise SettingsError(f"{what} must be a HOST:PORT string")
    try:
        return parse_addr(value)
    except ValueError as exc:
        raise SettingsError(f"{what}: {exc}") from None


def _addr_port0(value: Any, what: str) -> tuple[str, int]:
    """HOST:PORT where port 0 (any free port) is allowed."""
    if not isinstance(value, str):
        raise SettingsError(f"{what} must be a HOST:PORT string")
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise SettingsError(f"{what}: {exc}") from None


def _number(value: Any, kind: type[int] | type[float], what: str) -> float:
    """A duration (float, >= 0) or a queue size (int, >= 1) from TOML or a flag."""
    try:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError
        if kind is int and isinstance(value, float):
            raise ValueError
        number = kind(value)
    except ValueError:
        expected = "an integer" if kind is int else "a number of seconds"
        raise SettingsError(f"{what}: expected {expected}, got {value!r}") from None
    if number < (1 if kind is int else 0) or number != number:
        raise SettingsError(f"{what}: {value!r} is out of range")
    return number


def _switch(value: Any, what: str) -> bool:
    """On or off, from TOML (a boolean) or a flag (true/false, yes/no, on/off, 1/0)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise SettingsError(f"{what}: expected true or false, got {value!r}")


def _tags(value: Any, what: str) -> dict[str, str]:
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise SettingsError(f"{what}: tags are strings")
        return dict(value)
    if isinstance(value, list):
        out: dict[str, str] = {}
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise SettingsError(f"{what}: expected K=V, got {item!r}")
            k, _, v = item.partition("=")
            if not k:
                raise SettingsError(f"{what}: empty tag name in {item!r}")
            out[k] = v
        return out
    raise SettingsError(f"{what}: expected a table or a list of K=V")


def _handlers_and_snapshot(merged: Mapping[str, Any]) -> dict[str, Any]:
    """event_handlers (each checked: `daemon.handlers.parse_handler`),
    event_handler_timeout (above 0) and snapshot, for AgentSettings."""
    from daemon.handlers import parse_handler

    kw: dict[str, Any] = {}
    handlers = merged.get("event_handlers") or []
    if isinstance(handlers, str):
        handlers = [handlers]
    if not isinstance(handlers, list) or not all(isinstance(h, str) for h in handlers):
        raise SettingsError("event_handlers must be a list of [TYPE=]SCRIPT strings")
    for text in handlers:
        try:
            parse_handler(text)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    if handlers:
        kw["event_handlers"] = tuple(handlers)
    # (A number already: `_number` checked it.)
    if "event_handler_timeout" in merged and not float(merged["event_handler_timeout"]) > 0:
        raise SettingsError("event_handler_timeout: must be above 0 seconds")
    snapshot = merged.get("snapshot")
    if snapshot is not None:
        if not isinstance(snapshot, str) or not snapshot:
            raise SettingsError("snapshot must be a file path")
        kw["snapshot"] = snapshot
    return kw


def build(
    file: Mapping[str, Any] | None,
    flags: Mapping[str, Any],
    protocol_flags: Mapping[str, str],
) -> tuple[AgentSettings, dict[str, Any]]:
    """AgentSettings from a parsed TOML file and flags (flags win), and the
    process options that are not the agent's (log_json, log_level, and
    where `daemon.service` serves the control API and the metrics).

    `flags` holds the agent keys given on the command line (absent: not
    given); `protocol_flags` the dotted protocol keys given as flags."""
    file = dict(file or {})
    agent_file = file.pop("agent", {}) or {}
    transport_file = file.pop("transport", {}) or {}
    if not isinstance(agent_file, dict) or not isinstance(transport_file, dict):
        raise SettingsError("[agent] and [transport] must be tables")
    unknown = sorted(set(agent_file) - set(AGENT_KEYS))
    if unknown:
        raise SettingsError(f"unknown key(s) in [agent]: {', '.join(unknown)}")
    merged: dict[str, Any] = {**agent_file}
    for key, value in flags.items():
        if value is None:
            continue
        if key == "tags" and "tags" in merged:
            merged["tags"] = {**_tags(merged["tags"], "tags"), **_tags(value, "--tag")}
        else:
            merged[key] = value

    # Protocol parameters: file sections, then flags.
    changes: dict[str, Any] = {}
    for section, values in file.items():
        if section in PROTOCOL_SECTIONS:
            if not isinstance(values, dict):
                raise SettingsError(f"[{section}] must be a table")
            for key, value in values.items():
                changes[f"{section}.{key}"] = value
        elif isinstance(values, dict):
            raise SettingsError(f"unknown section [{section}] in the config file")
        else:
            changes[section] = values
    transport_changes: dict[str, Any] = dict(transport_file)
    for key, value in protocol_flags.items():
        if key.startswith("transport."):
            transport_changes[key[len("transport.") :]] = value
        else:
            changes[key] = value
    try:
        config = Config().replace(**changes)
    except ConfigError as exc:  # names the parameter and its range already
        raise SettingsError(str(exc)) from None
    except (KeyError, ValueError, TypeError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        raise SettingsError(f"protocol parameter: {message}") from None

    transport = _transport_settings(transport_changes)

    kw: dict[str, Any] = {"config": config, "transport": transport}
    kw["bind"] = _addr_port0(merged.get("bind", DEFAULT_BIND), "bind")
    if merged.get("advertise"):
        kw["advertise"] = _addr_port0(merged["advertise"], "advertise")
    if merged.get("name"):
        kw["name"] = str(merged["name"])
    join = merged.get("join") or []
    if isinstance(join, str):
        join = [join]
    if not isinstance(join, list) or not all(isinstance(j, str) for j in join):
        raise SettingsError("join must be a list of strings")
    kw["join"] = tuple(join)
    control = merged.get("control") or control_address(None)
    metrics = _addr_port0(merged["metrics"], "metrics") if merged.get("metrics") else None
    if merged.get("tags"):
        kw["tags"] = _tags(merged["tags"], "tags")
    if merged.get("key_file"):
        from daemon.security import load_key_file  # the crypto library: only when used

        try:
            kw["keys"] = tuple(load_key_file(str(merged["key_file"])))
            kw["key_file"] = str(merged["key_file"])
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    for key, kind in _NUMBERS.items():
        if key in merged:
            kw[key] = _number(merged[key], kind, key)
    kw.update(_handlers_and_snapshot(merged))
    extra = {
        "log_json": bool(merged.get("log_json", False)),
        "log_level": str(merged.get("log_level", "info")),
        # The agent's servers (`daemon.service`), not the agent's settings.
        "control": None if control in ("none", "off") else control,
        "metrics": metrics,
    }
    return AgentSettings(**kw), extra
