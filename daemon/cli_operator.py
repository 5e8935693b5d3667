"""The operator's commands (issue 15): `join`, `force-leave`, `tags`,
`info`, `monitor`, the filters of `members` and `overlay --version`.
Registered by `daemon.cli`, which passes itself in (`cli`): run as
`python -m daemon.cli`, that module is `__main__`, and importing
`daemon.cli` here would make a second copy with another `CliError`.

`members --status/--tag/--name` filter here, in the client, not in the
agent: a pattern is the client's to run, so a pathological regular
expression costs the command that sent it, never the agent's event loop.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

STATUSES = ("alive", "suspect", "failed", "left")
LOG_LEVELS = ("debug", "info", "warning", "error")
# How long `overlay join` waits for its seeds by default (seconds).
JOIN_WAIT = 5.0


def version_text() -> str:
    from daemon.control import PROTOCOL_VERSION as CONTROL_VERSION
    from daemon.info import package_version
    from overlay.codec import PROTOCOL_VERSION

    return (
        f"overlay {package_version()} (protocol {PROTOCOL_VERSION}, control API {CONTROL_VERSION})"
    )


class VersionAction(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kw: Any) -> None:
        print(version_text())
        parser.exit(0)


# --------------------------------------------------------------------------
# members filters


def add_member_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--status", choices=STATUSES, help="only members with this status")
    p.add_argument(
        "--tag",
        metavar="K=REGEX",
        action="append",
        help="only members whose tag K matches REGEX, whole (repeatable: all must match)",
    )
    p.add_argument("--name", metavar="REGEX", help="only members whose name matches REGEX, whole")


def member_filter(cli: ModuleType, args: argparse.Namespace) -> Callable[[dict[str, Any]], bool]:
    """A predicate on member records from `--status/--tag/--name`, or a
    usage error (CliError) for a bad pattern or a --tag without `=`."""

    def compile_(pattern: str, what: str) -> re.Pattern[str]:
        try:
            return re.compile(pattern)
        except re.error as exc:
            raise cli.CliError(f"{what}: bad regular expression {pattern!r}: {exc}") from None

    name = compile_(args.name, "--name") if args.name is not None else None
    tags: list[tuple[str, re.Pattern[str]]] = []
    for item in args.tag or []:
        key, eq, pattern = item.partition("=")
        if not eq or not key:
            raise cli.CliError(f"--tag: expected K=REGEX, got {item!r}")
        tags.append((key, compile_(pattern, f"--tag {key}")))
    status = args.status

    def keep(m: dict[str, Any]) -> bool:
        if status is not None and m["status"] != status:
            return False
        if name is not None and not name.fullmatch(m["name"]):
            return False
        for key, pattern in tags:
            value = m["tags"].get(key)
            if value is None or not pattern.fullmatch(value):
                return False
        return True

    return keep


# --------------------------------------------------------------------------
# Commands


def add_operator_commands(sub: Any, cli: ModuleType) -> None:
    def json_flag(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--json", action="store_true", help=what)

    p = sub.add_parser("join", help="join the cluster through seeds; report each seed")
    p.add_argument("seeds", metavar="HOST:PORT", nargs="+", help="seeds: HOST:PORT, DNS or SRV")
    p.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        default=JOIN_WAIT,
        help=f"how long to wait for each seed to answer (default {JOIN_WAIT:g})",
    )
    cli._control_flag(p)
    json_flag(p, "JSON: list of {seed, ok, addrs, member, error}")
    p.set_defaults(func=lambda a: _join_command(cli, a))

    p = sub.add_parser("force-leave", help="mark a failed member as left, cluster-wide")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--prune",
        action="store_true",
        help="also forget it here once its left state is spread (others after swim.reap_after)",
    )
    cli._control_flag(p)
    json_flag(p, "JSON: {name, status, pruned}")
    p.set_defaults(func=cli._client(lambda c, a: _force_leave(cli, c, a)))

    p = sub.add_parser("tags", help="show or change this member's tags")
    p.add_argument("--set", metavar="K=V", action="append", default=[], help="set a tag")
    p.add_argument("--delete", metavar="K", action="append", default=[], help="delete a tag")
    cli._control_flag(p)
    json_flag(p, "JSON: {tags}")
    p.set_defaults(func=lambda a: _tags_command(cli, a))

    p = sub.add_parser("info", help="effective settings and their sources, versions, uptime")
    cli._control_flag(p)
    json_flag(p, "JSON: {name, addr, uptime, versions, settings: {KEY: {value, source}}}")
    p.set_defaults(func=cli._client(lambda c, a: _info(cli, c, a)))

    p = sub.add_parser("monitor", help="stream the agent's log records")
    p.add_argument(
        "--log-level", choices=LOG_LEVELS, default="info", help="least severe record shown"
    )
    cli._control_flag(p)
    json_flag(p, "one JSON object per record")
    p.set_defaults(func=cli._client(lambda c, a: _monitor(cli, c, a)))


def _join_command(cli: ModuleType, args: argparse.Namespace) -> int:
    """Seeds and --wait checked before the agent is asked anything."""
    from daemon.discovery import SeedError, parse_seed

    for seed in args.seeds:
        try:
            parse_seed(seed, 7946)
        except SeedError as exc:
            raise cli.CliError(f"bad seed {seed!r}: {exc}") from None
    if not 0 < args.wait <= 60:
        raise cli.CliError("--wait must be more than 0 and at most 60 seconds")
    handler: Callable[[argparse.Namespace], int] = cli._client(lambda c, a: _join(cli, c, a))
    return handler(args)


async def _join(cli: ModuleType, client: Any, args: argparse.Namespace) -> int:
    client.request_timeout = max(client.request_timeout, args.wait + 10)
    rows = await client.join(args.seeds, wait=args.wait)
    if args.json:
        cli._print_json(rows)
    else:
        for r in rows:
            if r["ok"]:
                print(f"{r['seed']}: joined (member {r['member']})")
            else:
                print(f"{r['seed']}: failed: {r.get('error')}")
    joined = sum(1 for r in rows if r["ok"])
    if not joined:
        print(f"overlay join: no seed answered ({len(rows)} tried)", file=sys.stderr)
        return int(cli.RUNTIME_ERROR)
    return 0


async def _force_leave(cli: ModuleType, client: Any, args: argparse.Namespace) -> int:
    from daemon.control import ControlError

    try:
        result = await client.force_leave(args.name, prune=args.prune)
    except ControlError as exc:
        raise cli.CliError(str(exc), cli.RUNTIME_ERROR) from None
    if args.json:
        cli._print_json(result)
    elif result["pruned"]:
        print(f"{args.name}: left, and pruned from this agent's member list")
    else:
        note = " (it will be pruned once its state is spread)" if args.prune else ""
        print(f"{args.name}: {result['status']}{note}")
    return 0


def _tags_command(cli: ModuleType, args: argparse.Namespace) -> int:
    changes: dict[str, str] = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise cli.CliError(f"--set: expected K=V with a non-empty K, got {item!r}")
        changes[key] = value
    for key in args.delete:
        if not key or "=" in key:
            raise cli.CliError(f"--delete: expected a tag name K, got {key!r}")
    handler: Callable[[argparse.Namespace], int] = cli._client(
        lambda c, a: _tags(cli, c, a, changes)
    )
    return handler(args)


async def _tags(
    cli: ModuleType, client: Any, args: argparse.Namespace, changes: dict[str, str]
) -> int:
    from daemon.control import ControlError

    try:
        tags = await client.tags(set=changes, delete=args.delete)
    except ControlError as exc:  # over swim.max_tags_bytes
        raise cli.CliError(str(exc), cli.RUNTIME_ERROR) from None
    if args.json:
        cli._print_json({"tags": tags})
    elif tags:
        for key, value in sorted(tags.items()):
            print(f"{key}={value}")
    else:
        print("(no tags)")
    return 0


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items())) or "-"
    return "-" if value is None else str(value)


async def _info(cli: ModuleType, client: Any, args: argparse.Namespace) -> int:
    info = await client.info()
    if args.json:
        cli._print_json(info)
        return 0
    v = info["versions"]
    print(f"{info['name']} at {info['addr']}, up {info['uptime']:.0f} s")
    print(
        f"versions: overlay {v['package']}, protocol {v['protocol']}, "
        f"control API {v['control_api']}, python {v['python']}, trio {v['trio']}"
    )
    if info.get("config_file"):
        print(f"config file: {info['config_file']}")
    print()
    rows = [[key, _format_value(s["value"]), s["source"]] for key, s in info["settings"].items()]
    print(cli._table(rows, ["SETTING", "VALUE", "SOURCE"]))
    return 0


def _log_line(record: dict[str, Any]) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record["ts"]))
    parts = [stamp, record["level"].upper(), f"{record['logger']}:", record["msg"]]
    for key, value in record.items():
        if key in ("ts", "level", "logger", "msg", "dropped"):
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        if not text or any(c in text for c in " =\"'"):
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)


async def _monitor(cli: ModuleType, client: Any, args: argparse.Namespace) -> int:
    async with client.logs(args.log_level) as records:
        print(f"monitoring at {args.log_level}", file=sys.stderr, flush=True)
        async for record in records:
            dropped = record.get("dropped")
            if args.json:
                cli._print_json(record)
            else:
                if dropped:
                    print(f"({dropped} records dropped: this client read too slowly)")
                print(_log_line(record))
            sys.stdout.flush()
    return 0
