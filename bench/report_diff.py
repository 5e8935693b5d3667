"""Compare two simulator reports (`overlay sim --json FILE`), wall-clock
fields aside (`run.wall_s`, `run.events_per_s`, `run.peak_rss_mb`): an
optimisation of the simulator or the codec must leave the report of the
same scenario and seed unchanged. Prints each difference by its path;
exit code 1 if there is any.

    .venv/bin/python bench/report_diff.py before.json after.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

WALL_CLOCK = frozenset({"wall_s", "events_per_s", "peak_rss_mb"})


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k in WALL_CLOCK:
                continue
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'after' if k in b else 'before'}")
            else:
                out += differences(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{path}[{i}]")
        ]
    if type(a) is not type(b) or a != b:
        return [f"{path}: {a!r} != {b!r}"]
    return []


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f1, open(sys.argv[2], encoding="utf-8") as f2:
        diffs = differences(json.load(f1), json.load(f2))
    for d in diffs:
        print(d)
    print("identical" if not diffs else f"{len(diffs)} differences")
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
