"""`overlay query` and `overlay keys`: the CLI on the control API's
`query` and `keys` operations (registered from `daemon.cli`)."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Callable
from typing import Any

from daemon.control import ControlError
from overlay.queries import QueryError, QueryLimits, safe_regex

_LIMITS = QueryLimits()
USAGE_ERROR, RUNTIME_ERROR = 2, 1  # as daemon.cli's


def CliError(message: str, code: int = USAGE_ERROR) -> Exception:
    """`daemon.cli.CliError` (given by `add_commands`: the CLI imports this
    module, not the other way round)."""
    return _error_class(message, code)


_error_class: Callable[[str, int], Exception] = ValueError
_client: Callable[[Any], Callable[[argparse.Namespace], int]]


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=None, sort_keys=False, default=str))


def add_commands(
    sub: Any,
    client: Callable[[Any], Callable[[argparse.Namespace], int]],
    control_flag: Callable[[argparse.ArgumentParser], None],
    error: Callable[[str, int], Exception],
) -> None:
    """Add `query` and `keys` to the CLI's subcommands; `client` wraps a
    command body in a control-API connection, `error` is the CLI's usage
    error class."""
    global _client, _error_class
    _client, _error_class = client, error
    _control_flag = control_flag
    p = sub.add_parser(
        "query",
        help="ask the matching members; print their acks and responses",
        description="Send a query over the overlay; print each ack and response as it "
        "arrives, then a summary. Members answer with an embedded handler "
        "(Agent.on_query) or a control-API client (the queries stream).",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("payload", metavar="PAYLOAD", nargs="?", default="", help="default: empty")
    p.add_argument(
        "--node", action="append", default=[], metavar="N", help="only member N (repeat)"
    )
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="K=REGEX",
        help="only members whose tag K matches",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help=f"seconds to collect answers (default {_LIMITS.default_timeout:g}, "
        f"at most {_LIMITS.max_timeout:g})",
    )
    p.add_argument("--no-ack", action="store_true", help="do not ask for acks")
    _control_flag(p)
    p.add_argument(
        "--json", action="store_true", help="one JSON object per ack/response, then done"
    )
    p.set_defaults(func=_checked(_check_query_args, _query))

    p = sub.add_parser(
        "keys",
        help="list, install, use or remove a cluster key on every member",
        description="Cluster-wide keyring operations; each live member applies it and "
        "answers. Rotate: install NEW, use NEW, remove OLD.",
    )
    p.add_argument("op", metavar="list|install|use|remove")
    p.add_argument("key", metavar="KEY", nargs="?", help="base64 key (overlay keygen)")
    p.add_argument("--timeout", type=float, metavar="S", help="seconds to wait for answers")
    _control_flag(p)
    p.add_argument("--json", action="store_true", help="the answers as JSON")
    p.set_defaults(func=_checked(_check_keys_args, _keys))


def _checked(check: Callable[[argparse.Namespace], object], body: Any) -> Any:
    """Check the arguments before connecting: bad input is a usage error
    whether or not an agent runs."""
    run = _client(body)

    def checked(args: argparse.Namespace) -> int:
        check(args)
        return run(args)

    return checked


def _check_query_args(args: argparse.Namespace) -> dict[str, str]:
    if args.timeout is not None and not 0 < args.timeout <= _LIMITS.max_timeout:
        raise CliError(f"--timeout must be more than 0 and at most {_LIMITS.max_timeout:g} seconds")
    tags: dict[str, str] = {}
    for spec in args.tag:
        key, sep, pattern = spec.partition("=")
        if not sep or not key:
            raise CliError(f"--tag wants K=REGEX, got {spec!r}")
        try:
            safe_regex(pattern)
        except QueryError as exc:
            raise CliError(f"--tag {key}: {exc}") from None
        tags[key] = pattern
    if any(not n for n in args.node):
        raise CliError("--node wants a member name")
    if len(args.payload.encode()) > _LIMITS.max_payload:
        raise CliError(f"the payload is at most {_LIMITS.max_payload} bytes")
    if args.name.startswith("$overlay."):
        raise CliError("query names starting with '$overlay.' are the overlay's own")
    return tags


def _text(payload: bytes) -> str:
    return payload.decode("utf-8", "backslashreplace").replace("\n", "\\n")


async def _query(client: Any, args: argparse.Namespace) -> int:
    tags = _check_query_args(args)
    kw: dict[str, Any] = {"nodes": args.node, "tags": tags, "ack": not args.no_ack}
    if args.timeout is not None:
        kw["timeout"] = args.timeout
    acks = responses = 0
    try:
        async with client.query(args.name, args.payload.encode(), **kw) as events:
            async for ev in events:
                kind = ev.get("type")
                if kind == "done":
                    break
                if args.json:
                    payload = ev.get("payload", b"")
                    _print_json(
                        {
                            "type": kind,
                            "from": ev["from"],
                            "addr": ev["addr"],
                            "payload": _text(payload),
                            "payload_b64": base64.b64encode(payload).decode(),
                            "elapsed": round(ev["elapsed"], 6),
                        }
                    )
                elif kind == "ack":
                    print(f"ack from {ev['from']}")
                else:
                    print(f"response from {ev['from']}: {_text(ev['payload'])}")
                acks += kind == "ack"
                responses += kind == "response"
                sys.stdout.flush()
    except ControlError as exc:
        raise CliError(str(exc), RUNTIME_ERROR) from None
    if args.json:
        _print_json({"type": "done", "acks": acks, "responses": responses})
    else:
        print(f"total acks: {acks}\ntotal responses: {responses}")
    return 0


def _check_keys_args(args: argparse.Namespace) -> None:
    ops = ("list", "install", "use", "remove")
    if args.op not in ops:
        raise CliError(f"keys: unknown operation {args.op!r}: one of {', '.join(ops)}")
    if args.op == "list" and args.key:
        raise CliError("keys list takes no KEY")
    if args.op != "list":
        if not args.key:
            raise CliError(f"keys {args.op} needs a KEY (base64; overlay keygen makes one)")
        from daemon.security import decode_key

        try:
            decode_key(args.key)
        except ValueError as exc:
            raise CliError(f"bad KEY: {exc}") from None
    if args.timeout is not None and not 0 < args.timeout <= _LIMITS.max_timeout:
        raise CliError(f"--timeout must be more than 0 and at most {_LIMITS.max_timeout:g} seconds")


async def _keys(client: Any, args: argparse.Namespace) -> int:
    try:
        result = await client.keys(args.op, args.key, args.timeout)
    except ControlError as exc:
        raise CliError(str(exc), RUNTIME_ERROR) from None
    if args.json:
        _print_json(result)
    else:
        print(
            f"{args.op}: {result['responses']} of {result['members']} members answered, "
            f"{len(result['errors'])} errors"
        )
        for name, answer in result["answers"].items():
            print(f"  {name}: {answer}")
        for k in result.get("keys", []):
            primary = f", primary on {k['primary']}" if k["primary"] else ""
            print(f"  {k['key']}  [{k['members']}/{result['members']}{primary}]")
    return 0 if result["ok"] else RUNTIME_ERROR
