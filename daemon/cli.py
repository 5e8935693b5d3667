"""The `overlay` command line: a thin layer over the agent and its client.

Subcommands are the CLI contract of DESIGN.md. `overlay sim` is provided by
the simulator package through the `overlay.commands` entry-point group, so
this module never imports `sim/` (the two packages stay independent).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

Handler = Callable[[argparse.Namespace], int]

_NOT_BUILT = ("agent", "members", "publish", "subscribe", "stats", "leave", "keygen")


def _not_built(name: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        print(f"overlay {name}: not built yet (see the open issues)", file=sys.stderr)
        return 2

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="overlay",
        description="HyParView + Plumtree + SWIM overlay: agent, control client, simulator.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _NOT_BUILT:
        p = sub.add_parser(name, help=f"{name} (not built yet)")
        p.set_defaults(func=_not_built(name))
    for ep in sorted(entry_points(group="overlay.commands"), key=lambda e: e.name):
        register = ep.load()
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
