"""Size metrics of the project's own code (issue 24's before/after numbers): functions over 60 lines, functions over
8 parameters (self and cls not counted), and `# fmt: skip` markers, per top-level package.

    python scripts/code_metrics.py [--list]
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("learngene", "jobs", "storage", "templates_store", "service", "workers", "bench", "scripts", "tests")
LONG_LINES, MANY_PARAMS = 60, 8


def _params(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = node.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    return len([n for n in names if n.arg not in ("self", "cls")])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--list", action="store_true", help="name every function counted")
    args = parser.parse_args()
    long_fns, wide_fns, skips = Counter(), Counter(), Counter()
    listing = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            skips[package] += sum(line.rstrip().endswith("# fmt: skip") for line in text.splitlines())
            for node in ast.walk(ast.parse(text)):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                length = node.end_lineno - node.lineno + 1
                if length > LONG_LINES:
                    long_fns[package] += 1
                    listing.append(f"  {length:4d} lines  {where}")
                if _params(node) > MANY_PARAMS:
                    wide_fns[package] += 1
                    listing.append(f"  {_params(node):4d} params {where}")
    print(f"{'package':16s} {'>60 lines':>10s} {'>8 params':>10s} {'fmt: skip':>10s}")
    for package in PACKAGES:
        print(f"{package:16s} {long_fns[package]:10d} {wide_fns[package]:10d} {skips[package]:10d}")
    print(f"{'total':16s} {sum(long_fns.values()):10d} {sum(wide_fns.values()):10d} {sum(skips.values()):10d}")
    if args.list:
        print("\n".join(listing))


if __name__ == "__main__":
    main()
