"""`overlay info`: an agent's effective settings, each with where it came
from (default, file, flag), its versions and its uptime.

`setting_sources` is computed where the settings are built (`overlay agent`,
from the file and the flags) and kept in `AgentSettings.origins`; an agent
built in code has none, and every setting it was given reads as `code`
when it differs from the default.
"""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Mapping
from typing import Any

# Settings that are not the agent's but the process's (`daemon.service`,
# logging): `overlay agent` records their values in `origins["process"]`.
PROCESS_KEYS = ("control", "metrics", "log_json", "log_level")
# Agent settings shown; `keys` is shown as a count, never as keys.
AGENT_FIELDS = (
    "bind",
    "advertise",
    "name",
    "join",
    "tags",
    "input_queue",
    "subscriber_queue",
    "leave_grace",
    "leave_timeout",
)


def setting_sources(
    file: Mapping[str, Any] | None,
    flags: Mapping[str, Any],
    protocol_flags: Mapping[str, Any],
) -> dict[str, str]:
    """{key: "file" | "flag"} for every setting the file or a flag gave;
    keys as `overlay info` names them: agent keys bare (`bind`), protocol
    parameters dotted (`swim.probe_period`, `max_frame`), transport
    settings as `transport.NAME`. A flag wins over the file."""
    sources: dict[str, str] = {}
    for section, values in (file or {}).items():
        if isinstance(values, Mapping):
            for key in values:
                name = key if section == "agent" else f"{section}.{key}"
                sources[name] = "file"
        else:
            sources[section] = "file"
    for key, value in flags.items():
        if value is not None:
            sources[key] = "flag"
    for key in protocol_flags:
        sources[key] = "flag"
    if "key_file" in sources:
        sources["keys"] = sources["key_file"]
    return sources


def _plain(value: Any) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        host, port = value
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def effective_settings(agent: Any) -> dict[str, dict[str, Any]]:
    """{key: {value, source}} for every setting of `agent` (a `daemon.agent.Agent`)."""
    s = agent.settings
    origins = s.origins or {}
    sources: Mapping[str, str] = origins.get("sources", {})
    given = bool(origins)  # built by `overlay agent`: no source means the default

    def source(key: str, value: Any, default: Any) -> str:
        if key in sources:
            return sources[key]
        return "default" if given or value == default else "code"

    out: dict[str, dict[str, Any]] = {}
    defaults = type(s)()
    for key in AGENT_FIELDS:
        value, default = getattr(s, key), getattr(defaults, key)
        out[key] = {"value": _plain(value), "source": source(key, value, default)}
    out["keys"] = {"value": len(s.keys), "source": source("keys", len(s.keys), 0)}
    if "key_file" in origins.get("process", {}):
        out["key_file"] = {"value": origins["process"]["key_file"], "source": sources["key_file"]}
    for key in PROCESS_KEYS:
        if key in origins.get("process", {}):
            value = origins["process"][key]
            out[key] = {"value": _plain(value), "source": sources.get(key, "default")}
    config, default_config = s.config, type(s.config)()
    for f in dataclasses.fields(config):
        value, default = getattr(config, f.name), getattr(default_config, f.name)
        if dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
                key = f"{f.name}.{sub.name}"
                v, d = getattr(value, sub.name), getattr(default, sub.name)
                out[key] = {"value": _plain(v), "source": source(key, v, d)}
        else:
            out[f.name] = {"value": _plain(value), "source": source(f.name, value, default)}
    default_transport = type(s.transport)()
    for f in dataclasses.fields(s.transport):
        key = f"transport.{f.name}"
        v, d = getattr(s.transport, f.name), getattr(default_transport, f.name)
        out[key] = {"value": _plain(v), "source": source(key, v, d)}
    return out


def versions() -> dict[str, Any]:
    """The package's, the wire protocol's, the control API's, Python's and trio's."""
    import trio

    from daemon.control import PROTOCOL_VERSION as CONTROL_VERSION
    from overlay.codec import PROTOCOL_VERSION

    return {
        "package": package_version(),
        "protocol": PROTOCOL_VERSION,
        "control_api": CONTROL_VERSION,
        "python": platform.python_version(),
        "trio": trio.__version__,
    }


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trio-overlay")
    except PackageNotFoundError:
        return "unknown"


def agent_info(agent: Any, uptime: float) -> dict[str, Any]:
    me = agent.me
    origins = agent.settings.origins or {}
    return {
        "name": me.name,
        "addr": me.addr,
        "uptime": round(uptime, 3),
        "encrypted": bool(agent.settings.keys),
        "config_file": origins.get("config_file"),
        "versions": versions(),
        "settings": effective_settings(agent),
    }


def remember_origins(
    settings: Any,
    extra: Mapping[str, Any],
    config_file: str | None,
    file: Mapping[str, Any] | None,
    flags: Mapping[str, Any],
    protocol_flags: Mapping[str, Any],
) -> Any:
    """`settings` (AgentSettings) with `origins` filled in for `overlay info`."""
    sources = setting_sources(file, flags, protocol_flags)
    process = {key: extra.get(key) for key in PROCESS_KEYS}
    key_file = flags.get("key_file") or (file or {}).get("agent", {}).get("key_file")
    if key_file:
        process["key_file"] = str(key_file)
    origins = {"sources": sources, "config_file": config_file, "process": process}
    return dataclasses.replace(settings, origins=origins)
