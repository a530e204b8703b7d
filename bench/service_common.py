"""What the service benchmarks share: where things are, the tiny job they submit, percentiles, and the table and
JSON report they end with."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benchmarks start the service with the test harness's process helpers

RESULTS = ROOT / "bench" / "results"
SHARED = ROOT.parent / "shared" / "data"
BENCH_REDIS_URL = "redis://127.0.0.1:6379/14"  # a database of its own: the tests use 13


def tiny_request(seed: int, steps: int) -> dict:
    """A 2-layer, 64-wide ViT from the demo template set, fitted on 256 FashionMNIST images."""
    return {
        "model": "vit_tiny_patch16_224",
        "overrides": {"depth": 2, "embed_dim": 64, "num_heads": 1, "img_size": 28, "patch_size": 7, "in_chans": 1,
                      "num_classes": 10},
        "template_set": "demo@prod",
        "calibration": {"uri": f"idx://{SHARED / 'FashionMNIST'}", "max_samples": 256},
        "fit": {"steps": steps, "batch_size": 32, "seed": seed},
    }  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def print_table(rows: list[tuple[str, Any]], width: int = 58) -> None:
    """The metric/value table every service benchmark prints."""
    print(f"\n{'metric':<{width - 22}}{'value':>22}\n" + "-" * width)
    for name, value in rows:
        print(f"{name:<{width - 22}}{value!s:>22}")


def write_report(benchmark: str, args: argparse.Namespace, summary: dict[str, Any]) -> None:
    """`summary` with the run's settings and machine, as JSON at `args.out`."""
    report = {"benchmark": benchmark, "settings": vars(args), "machine": platform.platform(), **summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
