"""Start-up time of the command line: `learngene --help` and `--version` (no torch), the help of a command that
runs the method (`condense --help`: its module loads torch and timm), and `python -c "import torch"` and
`python -c "import timm"` for reference.

Each is a fresh process (`python -m service.cli ...`, as the `learngene` script runs it), timed wall clock over
--repeats runs after one untimed warm-up; median and p90. Prints a table, writes bench/results/cli_startup.json and
a section of BENCHMARKS.md.

    python bench/cli_startup.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sections import replace_section
from service_common import RESULTS, ROOT, percentile, print_table, write_report

COMMANDS = {
    "learngene --help": ["-m", "service.cli", "--help"],
    "learngene --version": ["-m", "service.cli", "--version"],
    "learngene condense --help (loads torch)": ["-m", "service.cli", "condense", "--help"],
    'python -c "import torch" (reference)': ["-c", "import torch"],
    'python -c "import timm" (reference)': ["-c", "import timm"],  # timm loads torchvision and torch's compiler
}


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=str(RESULTS / "cli_startup.json"))
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for command in COMMANDS.values():  # compiled bytecode and the page cache warm, as for a user's second call
        timed(command, env)
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):  # interleaved: a load spike on the machine hits every command alike
        for name, command in COMMANDS.items():
            seconds[name].append(timed(command, env))
    summary = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "seconds": seconds,
        "median_s": {name: statistics.median(v) for name, v in seconds.items()},
        "p90_s": {name: percentile(v, 90) for name, v in seconds.items()},
    }

    rows = [(name, f"{summary['median_s'][name]:.2f} s / {summary['p90_s'][name]:.2f} s") for name in COMMANDS]
    print("\nwall time of a fresh process: median / p90")
    print_table(rows, width=72)
    write_report("cli_startup", args, summary)
    table = "\n".join(f"| `{name}` | {value.replace(' / ', ' | ')} |" for name, value in rows)
    replace_section(
        Path(__file__).resolve().parents[1] / "BENCHMARKS.md",
        "cli-startup",
        f"## Command-line start-up\n\n`python bench/cli_startup.py` (wall time of a fresh process, {args.repeats} "
        f"runs each after a warm-up; {os.cpu_count()} CPUs):\n\n| command | median | p90 |\n| --- | --- | --- |\n"
        f"{table}\n",
    )


if __name__ == "__main__":
    main()
