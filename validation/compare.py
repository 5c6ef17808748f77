"""Compare two ``perfsim validate --format json`` outputs case by case.

Used to show that a change leaves every prediction where it was (a refactor), or to list which cases
moved and by how much (a model change)::

    perfsim validate --format json > before.json
    ... change ...
    perfsim validate --format json > after.json
    python validation/compare.py before.json after.json            # exit 1 if any prediction moved
    python validation/compare.py before.json after.json --rtol 1e-9
"""

from __future__ import annotations

import argparse
import json
import math
import sys


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return {case["id"]: case for case in json.load(f)["cases"]}


def _same(a, b, rtol: float) -> bool:
    if a is None or b is None:
        return a is b
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def compare(before: dict, after: dict, rtol: float) -> list[str]:
    """Lines describing every case whose prediction, status or presence differs."""
    lines = []
    for cid in sorted(before.keys() | after.keys()):
        if cid not in after:
            lines.append(f"{cid}: only in the first file")
        elif cid not in before:
            lines.append(f"{cid}: only in the second file")
        else:
            a, b = before[cid], after[cid]
            if a.get("status") != b.get("status") or not _same(a.get("predicted"), b.get("predicted"), rtol):
                lines.append(f"{cid}: {a.get('status')} {a.get('predicted')} -> {b.get('status')} {b.get('predicted')}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default: identical)")
    args = parser.parse_args(argv)
    before, after = _load(args.before), _load(args.after)
    lines = compare(before, after, args.rtol)
    for line in lines:
        print(line)
    print(f"{len(before)} cases before, {len(after)} after, {len(lines)} differ")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
