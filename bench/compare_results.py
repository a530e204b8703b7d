"""Whether two runs of a benchmark measured the same thing: every number and string of two result JSONs compared,
leaving out the fields that time the run (seconds, throughput, dates, the machine). A refactor that changes no
behaviour leaves no difference on CPU, where the benchmark is deterministic.

    python bench/compare_results.py bench/results/before.json bench/results/learngene_benchmark_quick.json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

TIMING = ("seconds", "_s", "time", "wall", "machine", "date", "per_s", "elapsed", "duration")


def differences(before: Any, after: Any, path: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            if any(word in key for word in TIMING):
                continue
            if key not in before or key not in after:
                found.append(f"{path}/{key}: only in {'after' if key in after else 'before'}")
            else:
                found += differences(before[key], after[key], f"{path}/{key}")
        return found
    if isinstance(before, list) and isinstance(after, list):
        found = [f"{path}: {len(before)} items before, {len(after)} after"] if len(before) != len(after) else []
        for i, (b, a) in enumerate(zip(before, after, strict=False)):
            found += differences(b, a, f"{path}[{i}]")
        return found
    return [] if before == after else [f"{path}: {before!r} before, {after!r} after"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    args = parser.parse_args()
    with open(args.before) as b, open(args.after) as a:
        found = differences(json.load(b), json.load(a))
    print("\n".join(found) or "identical (timing fields left out)")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
