"""The `overlay` command line: a thin layer over the agent and its client.

Subcommands are the CLI contract of DESIGN.md. `overlay sim` is provided by
the simulator package through the `overlay.commands` entry-point group, so
this module never imports `sim/` (the two packages stay independent).

Errors are one line on stderr, never a traceback: exit code 2 for what the
user can fix before retrying (wrong flags, missing files, no agent at the
control address), 1 for failures at run time.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from daemon import logs
from daemon.client import DEFAULT_REQUEST_TIMEOUT, ENV_TIMEOUT, ControlUnreachable, open_client
from daemon.control import ENV_CONTROL, ControlError

if TYPE_CHECKING:
    from daemon.agent import AgentSettings

# The agent's modules (protocol, transport, crypto) are imported only by the
# `agent` subcommand: the client commands start faster without them.

Handler = Callable[[argparse.Namespace], int]

USAGE_ERROR = 2
RUNTIME_ERROR = 1

log = logging.getLogger("overlay.cli")


class CliError(Exception):
    def __init__(self, message: str, code: int = USAGE_ERROR) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse, with errors on one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------
# overlay agent


def _add_agent(sub: Any, help_texts: bool = True) -> None:
    """The `agent` subcommand. Its help is one page: the agent's flags, then
    the protocol and transport parameters by name and default only; their
    explanations (the comments above each field) are in docs/agent.md,
    generated from the code by `daemon.agent_docs`. `help_texts`: build that
    list of parameters (only for --help)."""
    from daemon.agent import AgentSettings
    from daemon.settings import protocol_fields, transport_fields

    p = sub.add_parser(
        "agent",
        help="run an agent: join a cluster, serve the control API",
        usage=(
            "%(prog)s --bind HOST:PORT [--advertise HOST:PORT] [--name NAME]\n"
            "       [--join HOST:PORT|DNSNAME ...] [--control ADDR] [--config FILE.toml]\n"
            "       [--key-file FILE] [--tag K=V ...] [--metrics HOST:PORT] [--log-json]\n"
            "       [--log-level LEVEL] [--snapshot FILE] [--event-handler [TYPE=]SCRIPT ...]\n"
            "       [--leave-grace S] [--input-queue N] ... [--SECTION.PARAMETER VALUE ...]"
        ),
        description=(
            "Run an overlay agent: join a cluster, serve the control API.\n"
            "Settings: defaults, then --config FILE.toml, then flags. SIGTERM/SIGINT\n"
            "(or `overlay leave`) leave gracefully; a second signal exits at once.\n"
            "Every flag and parameter, with the reason for its default: docs/agent.md."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument_group("agent")
    a.add_argument(
        "--bind", metavar="HOST:PORT", help="listen on (TCP and UDP; default 0.0.0.0:7946)"
    )
    a.add_argument(
        "--advertise", metavar="HOST:PORT", help="address peers dial, if not the bound one (NAT)"
    )
    a.add_argument("--name", help="member name (default: host name and port)")
    a.add_argument(
        "--join",
        metavar="SEED",
        nargs="+",
        action="extend",
        help="seeds: HOST:PORT, DNS name[:PORT], _service._proto.name (SRV)",
    )
    a.add_argument(
        "--control",
        metavar="ADDR",
        help=f"control API: HOST:PORT, unix:PATH or none (default ${ENV_CONTROL}, "
        "else 127.0.0.1:7373)",
    )
    a.add_argument("--config", metavar="FILE.toml", help="settings file (flags override it)")
    a.add_argument("--key-file", metavar="FILE", help="cluster keys, base64, primary first")
    a.add_argument("--tag", metavar="K=V", action="append", help="member metadata (repeatable)")
    a.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics here")
    a.add_argument("--log-json", action="store_true", default=None, help="JSON log lines")
    a.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="least severe log records written (default info)",
    )
    a.add_argument(
        "--event-handler",
        metavar="[TYPE=]SCRIPT",
        action="append",
        help="run SCRIPT on member/user events (repeatable): docs/operations.md",
    )
    a.add_argument(
        "--event-handler-timeout",
        metavar="SECONDS",
        help="kill a handler after (default 60)",
    )
    a.add_argument(
        "--snapshot",
        metavar="FILE",
        help="keep the members seen; rejoin through them on restart",
    )
    defaults = AgentSettings()
    short = {
        "leave_grace": "on leave, wait at most this long for the goodbye to spread",
        "leave_timeout": "then at most this long for the streams to flush",
        "input_queue": "inputs waiting for the protocol, at most",
        "subscriber_queue": "deliveries waiting per subscriber, at most",
        "publish_queue": "publishes made before the join, waiting for it, at most",
    }
    for key, text in short.items():
        default = getattr(defaults, key)
        shown = "10 probe periods" if default is None else str(default)
        a.add_argument(
            "--" + key.replace("_", "-"),
            dest=key,
            metavar="SECONDS" if "leave" in key else "N",
            help=f"{text} (default {shown})",
        )
    # The parameters: flags that parse, listed in the epilog by name.
    listed: dict[str, list[str]] = {}
    for name, default in transport_fields():
        p.add_argument(
            f"--transport.{name.replace('_', '-')}",
            dest=f"proto:transport.{name}",
            metavar=type(default).__name__.upper(),
            help=argparse.SUPPRESS,
        )
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        listed.setdefault("transport", []).append(f"{name.replace('_', '-')}={shown}")
    for key, _field, default in protocol_fields():
        section, _, name = key.rpartition(".")
        flag = "--" + (f"{section}." if section else "") + name.replace("_", "-")
        p.add_argument(
            flag,
            dest=f"proto:{key}",
            metavar=type(default).__name__.upper(),
            help=argparse.SUPPRESS,
        )
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        listed.setdefault(section or "codec", []).append(f"{name.replace('_', '-')}={shown}")
    if help_texts:
        import textwrap

        lines = [
            "protocol and transport parameters:",
            "  --SECTION.NAME VALUE (or NAME = VALUE in the file's [SECTION] table;",
            "  codec: --NAME, top level). Defaults below; each explained in docs/agent.md.",
        ]
        for section in ("hyparview", "plumtree", "swim", "transport", "codec"):
            lines += textwrap.wrap(
                " ".join(listed.get(section, [])),
                width=79,
                initial_indent=f"  {section + ':':<11}",
                subsequent_indent=" " * 13,
                break_on_hyphens=False,
            )
        p.epilog = "\n".join(lines).replace("%", "%%")
    p.set_defaults(func=_cmd_agent)


def _agent_settings(args: argparse.Namespace) -> tuple[AgentSettings, dict[str, Any]]:
    from daemon.settings import AGENT_KEYS, build, load_toml

    file = load_toml(args.config) if args.config else None
    flags = {
        "bind": args.bind,
        "advertise": args.advertise,
        "name": args.name,
        "join": args.join,
        "control": args.control,
        "metrics": args.metrics,
        "key_file": args.key_file,
        "log_json": args.log_json,
        "log_level": args.log_level,
        "leave_grace": args.leave_grace,
        "leave_timeout": args.leave_timeout,
        "input_queue": args.input_queue,
        "subscriber_queue": args.subscriber_queue,
        "tags": args.tag,
        "event_handlers": args.event_handler,
        "event_handler_timeout": args.event_handler_timeout,
        "snapshot": args.snapshot,
        "publish_queue": args.publish_queue,
    }
    assert set(flags) <= set(AGENT_KEYS)
    proto = {
        key[len("proto:") :]: value
        for key, value in vars(args).items()
        if key.startswith("proto:") and value is not None
    }
    settings, extra = build(file, flags, proto)
    from daemon.info import remember_origins

    return remember_origins(settings, extra, args.config, file, flags, proto), extra


def _cmd_agent(args: argparse.Namespace) -> int:
    settings, extra = _agent_settings(args)
    level = getattr(logging, extra["log_level"].upper(), logging.INFO)
    logs.setup(json_lines=extra["log_json"], level=level)
    return trio.run(_run_agent, settings, extra["control"], extra["metrics"])


async def _run_agent(
    settings: AgentSettings, control: str | None, metrics: tuple[str, int] | None
) -> int:
    """The agent, its control API and its metrics endpoint (`daemon.service`)
    and the signal handler, in one nursery."""
    from daemon.agent import Agent, AgentError
    from daemon.service import Service

    agent = Agent(settings)
    service = Service(agent, control=control, metrics=metrics)
    try:
        await service.bind()
    except OSError as exc:
        raise CliError(f"cannot bind: {exc.strerror or exc}", RUNTIME_ERROR) from None
    except (ValueError, AgentError) as exc:  # tags over swim.max_tags_bytes, a bad name
        raise CliError(str(exc), USAGE_ERROR) from None
    forced = False
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                nonlocal forced
                count = 0
                async for signum in signals:
                    count += 1
                    name = signal.Signals(signum).name
                    if count == 1:
                        logs.event(log, logging.INFO, "signal: leaving", signal=name)
                        nursery.start_soon(agent.leave)
                    else:
                        logs.event(log, logging.WARNING, "second signal: exiting now", signal=name)
                        forced = True
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(watch_signals)
            await service.run()
            nursery.cancel_scope.cancel()
    if agent.failure is not None:
        raise CliError(agent.failure, RUNTIME_ERROR)
    return RUNTIME_ERROR if forced else 0


# --------------------------------------------------------------------------
# Client commands


def _control_flag(p: argparse.ArgumentParser) -> None:
    p.epilog = (
        f"${ENV_TIMEOUT}: seconds to wait for each answer from the agent "
        f"(default {DEFAULT_REQUEST_TIMEOUT:g})."
    )
    p.add_argument(
        "--control",
        metavar="ADDR",
        help=f"agent's control API (default ${ENV_CONTROL}, else 127.0.0.1:7373)",
    )


def _add_clients(sub: Any) -> None:
    p = sub.add_parser("members", help="list the members the agent knows")
    _control_flag(p)
    p.add_argument("--json", action="store_true", help="JSON: list of {name, addr, status, ...}")
    from daemon.cli_operator import add_member_filters

    add_member_filters(p)
    p.set_defaults(func=lambda args: _client(_members)(_with_member_filter(args)))

    p = sub.add_parser("publish", help="broadcast a message on a topic")
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("message", metavar="MESSAGE", nargs="?", help="default: read from stdin")
    _control_flag(p)
    p.add_argument("--json", action="store_true", help="print {topic, bytes}")
    p.set_defaults(func=_client(_publish))

    p = sub.add_parser("subscribe", help="print messages on a topic, one line each")
    p.add_argument("topic", metavar="TOPIC")
    _control_flag(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    p.set_defaults(func=_client(_subscribe))

    p = sub.add_parser("stats", help="views, counters, message rates and sizes")
    _control_flag(p)
    p.add_argument("--json", action="store_true", help="every figure as JSON")
    p.set_defaults(func=_client(_stats))

    p = sub.add_parser("leave", help="make the agent leave the cluster and stop")
    _control_flag(p)
    p.add_argument("--json", action="store_true", help="print {left: true}")
    p.set_defaults(func=_client(_leave))

    from daemon.cli_rtt import add_rtt

    add_rtt(sub, _control_flag, _client)

    p = sub.add_parser("keygen", help="print a new cluster key (base64, AES-256)")
    p.add_argument("--json", action="store_true", help="print {key}")
    p.set_defaults(func=_keygen)

    from daemon.cli_operator import add_operator_commands

    add_operator_commands(sub, sys.modules[__name__])


def _request_timeout() -> float:
    """Seconds to wait for each answer: $OVERLAY_TIMEOUT, else the default."""
    text = os.environ.get(ENV_TIMEOUT)
    if text is None:
        return DEFAULT_REQUEST_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (0 < seconds < math.inf):
        raise CliError(f"{ENV_TIMEOUT} must be a positive number of seconds, got {text!r}")
    return seconds


def _client(body: Callable[[Any, argparse.Namespace], Any]) -> Handler:
    def run(args: argparse.Namespace) -> int:
        timeout = _request_timeout()

        async def main() -> int:
            async with open_client(args.control, request_timeout=timeout) as client:
                result = await body(client, args)
                return int(result or 0)

        return trio.run(main)

    return run


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=None, sort_keys=False, default=str))


def _table(rows: list[list[str]], header: list[str]) -> str:
    """Columns by rich (imported here: the agent never loads it). On a
    terminal the header is bold and a row too wide for it wraps within its
    cells; elsewhere (a pipe, a file) plain text, never wrapped or cut, two
    spaces between columns, no trailing blanks."""
    import io

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    tty = sys.stdout.isatty()
    table = Table(box=None, pad_edge=False, header_style="bold" if tty else "")
    for h in header:
        table.add_column(Text(h), no_wrap=not tty)
    for row in rows:
        table.add_row(*(Text(str(c)) for c in row))  # Text: no markup read in names or tags
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = io.StringIO()
    console = Console(
        file=out,
        width=None if tty else sum(widths) + 2 * len(widths),
        force_terminal=tty,
        no_color=not tty,
        highlight=False,
    )
    console.print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().rstrip("\n").split("\n"))


def _with_member_filter(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with `keep`, the --status/--tag/--name predicate (a usage
    error for a bad pattern, before the agent is asked anything)."""
    from daemon.cli_operator import member_filter

    args.keep = member_filter(sys.modules[__name__], args)
    return args


async def _members(client: Any, args: argparse.Namespace) -> int:
    members = [m for m in await client.members() if args.keep(m)]
    if args.json:
        _print_json(members)
        return 0
    rows = [
        [
            m["name"],
            m["addr"],
            m["status"],
            str(m["incarnation"]),
            ",".join(f"{k}={v}" for k, v in sorted(m["tags"].items())),
        ]
        for m in members
    ]
    print(_table(rows, ["NAME", "ADDR", "STATUS", "INC", "TAGS"]))
    return 0


async def _publish(client: Any, args: argparse.Namespace) -> int:
    payload = args.message.encode() if args.message is not None else sys.stdin.buffer.read()
    try:
        await client.publish(args.topic, payload)
    except ControlError as exc:
        raise CliError(str(exc), RUNTIME_ERROR) from None
    if args.json:
        _print_json({"topic": args.topic, "bytes": len(payload)})
    return 0


def _payload_text(payload: bytes) -> str:
    return payload.decode("utf-8", "backslashreplace")


async def _subscribe(client: Any, args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise CliError("--count must be at least 1")
    async with client.subscribe(args.topic, count=args.count) as events:
        # On stderr, so stdout holds deliveries only: tells a script (or a
        # test) that deliveries from now on will be printed.
        print(f"subscribed to {args.topic}", file=sys.stderr, flush=True)
        async for ev in events:
            payload = ev["payload"]
            if args.json:
                _print_json(
                    {
                        "topic": ev["topic"],
                        "payload": _payload_text(payload),
                        "payload_b64": base64.b64encode(payload).decode(),
                        "origin": ev["origin"],
                        "epoch": ev["epoch"],
                        "seq": ev["seq"],
                        "hops": ev["hops"],
                        "time": ev.get("time"),
                    }
                )
            else:
                text = _payload_text(payload).replace("\\", "\\\\").replace("\n", "\\n")
                print(text)
            sys.stdout.flush()
    return 0


def _format_stats(stats: dict[str, Any]) -> str:
    lines = [
        f"{stats['name']} at {stats['addr']}, up {stats['uptime']:.0f} s"
        + (", encrypted" if stats.get("encrypted") else ""),
        "members: " + ", ".join(f"{k} {v}" for k, v in stats["members"].items()),
        f"views: active {len(stats['views']['active'])} "
        f"({', '.join(stats['views']['active']) or 'none'}), "
        f"passive {stats['views']['passive']}",
        "connections: " + ", ".join(f"{k} {v}" for k, v in stats["transport"].items()),
        f"broadcasts: published {stats['published']}, delivered {stats['delivered']}",
    ]
    rates = stats.get("rates", {})
    kinds = sorted(set(stats["messages"]["sent"]) | set(stats["messages"]["received"]))
    if kinds:
        rows = []
        for kind in kinds:
            rows.append(
                [
                    kind,
                    str(stats["messages"]["sent"].get(kind, 0)),
                    str(stats["bytes"]["sent"].get(kind, 0)),
                    f"{rates.get('sent_messages', {}).get(kind, 0.0):g}",
                    str(stats["messages"]["received"].get(kind, 0)),
                    str(stats["bytes"]["received"].get(kind, 0)),
                    f"{rates.get('recv_messages', {}).get(kind, 0.0):g}",
                ]
            )
        lines.append("")
        lines.append(_table(rows, ["TYPE", "SENT", "BYTES", "/S", "RECEIVED", "BYTES", "/S"]))
    problems = {
        **{f"bad {k}": v for k, v in stats["bad_frames"].items()},
        **{f"dropped {k}": v for k, v in stats["drops"].items()},
    }
    lines.append("")
    lines.append("problems: " + (", ".join(f"{k} {v}" for k, v in problems.items()) or "none"))
    return "\n".join(lines)


async def _stats(client: Any, args: argparse.Namespace) -> int:
    stats = await client.stats()
    if args.json:
        _print_json(stats)
    else:
        print(_format_stats(stats))
    return 0


async def _leave(client: Any, args: argparse.Namespace) -> int:
    await client.leave()
    if args.json:
        _print_json({"left": True})
    else:
        print("left the cluster")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from daemon.security import generate_key

    key = generate_key()
    if args.json:
        _print_json({"key": key})
    else:
        print(key)
    return 0


# --------------------------------------------------------------------------
# Entry point


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser. Plugin subcommands (entry points) are imported only when
    `argv` names them or lists every command: the simulator's imports
    (networkx) cost more than a client command's whole run. When `argv`
    names one of our own commands, the entry points are not even listed."""
    parser = Parser(
        prog="overlay",
        description="HyParView + Plumtree + SWIM overlay: agent, control client, simulator.",
    )
    from daemon.cli_operator import VersionAction

    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    words = [a for a in (argv or []) if not a.startswith("-")]
    command = words[0] if argv is not None and words else None
    if command in (None, "agent"):
        wants_help = argv is None or any(a in ("-h", "--help") for a in argv)
        _add_agent(sub, help_texts=wants_help)
    else:
        sub.add_parser("agent", help="run an agent: join a cluster, serve the control API")
    _add_clients(sub)
    from daemon.cli_query import add_commands  # query, keys (issue 15)

    add_commands(sub, _client, _control_flag, CliError)
    if command is not None and command in sub.choices:
        # A command of ours: the plugins are not needed, and looking them up
        # (`importlib.metadata`, with email, zipfile, csv, ...) costs an idle
        # agent about 3 MB of its RSS for the whole of its life.
        return parser
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group="overlay.commands"), key=lambda e: e.name):
        if command is None or command == ep.name:
            register = ep.load()
            register(sub)
        else:
            sub.add_parser(ep.name, help=f"(provided by {ep.value.split(':')[0]})")
    return parser


def _is_settings_error(exc: BaseException) -> bool:
    settings = sys.modules.get("daemon.settings")  # imported only by `agent`
    return settings is not None and isinstance(exc, settings.SettingsError)


def _unwrap(exc: BaseException) -> BaseException:
    """The first error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:  # without listing the plugins' commands
        from daemon.cli_operator import version_text

        print(version_text())
        return 0
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    func: Handler = args.func
    prog = f"overlay {args.command}"
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except BaseException as raw:
        exc = _unwrap(raw)
        if isinstance(exc, KeyboardInterrupt):
            return 130
        if isinstance(exc, SystemExit):
            raise exc from None
        if isinstance(exc, CliError):
            message, code = str(exc), exc.code
        elif isinstance(exc, ControlUnreachable) or _is_settings_error(exc):
            message, code = str(exc), USAGE_ERROR
        elif isinstance(exc, ControlError):
            message, code = str(exc), RUNTIME_ERROR
        elif isinstance(exc, BrokenPipeError):
            return 0
        elif isinstance(exc, OSError | ValueError | binascii.Error):
            message, code = str(exc), RUNTIME_ERROR
        else:
            raise
        print(f"{prog}: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
