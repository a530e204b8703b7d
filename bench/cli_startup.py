"""Start-up time and memory of the command line: `learngene --help` and `--version` (no torch), the remote commands
against a running API (`job list`, `job status`, `templates list --url`: httpx, typer and pydantic only), the help of
a command that runs the method (`condense --help`: its module loads torch and timm), and `python -c "import torch"`
and `python -c "import timm"` for reference.

Each is a fresh process (`python -m service.cli ...`, as the `learngene` script runs it), timed wall clock over
--repeats runs after one untimed warm-up; median and p90 of the time, and the largest resident set size (the
kernel's ru_maxrss of that process). The API is `learngene serve` on a free port (embedded mode, the demo template
set). Prints a table, writes bench/results/cli_startup.json and a section of BENCHMARKS.md.

    python bench/cli_startup.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sections import replace_section
from service_common import RESULTS, ROOT, percentile, print_table, write_report

from tests.support.harness import service_env, start_api

COMMANDS = {
    "learngene --help": ["-m", "service.cli", "--help"],
    "learngene --version": ["-m", "service.cli", "--version"],
    "learngene job list --url URL": ["-m", "service.cli", "job", "list", "--url", "{url}"],
    "learngene job status ID --url URL (a 404)": ["-m", "service.cli", "job", "status", "nope", "--url", "{url}"],
    "learngene templates list --url URL": ["-m", "service.cli", "templates", "list", "--url", "{url}"],
    "learngene condense --help (loads torch)": ["-m", "service.cli", "condense", "--help"],
    'python -c "import torch" (reference)': ["-c", "import torch"],
    'python -c "import timm" (reference)': ["-c", "import timm"],  # timm loads torchvision and torch's compiler
}


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode in (0, 2), f"{args} exited {proc.returncode}"  # 2: the 404 asked for
    return seconds, usage.ru_maxrss / 1024  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=str(RESULTS / "cli_startup.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cli-startup-") as home:
        api = start_api(service_env(Path(home), redis_url=None, data_roots=[]), Path(home) / "api.log")
        try:
            commands = {name: [a.format(url=api.url) for a in argv] for name, argv in COMMANDS.items()}
            env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNGENE_")} | {"PYTHONPATH": str(ROOT)}
            for command in commands.values():  # compiled bytecode and the page cache warm, as for a second call
                timed(command, env)
            seconds: dict[str, list[float]] = {name: [] for name in commands}
            rss_mb: dict[str, float] = dict.fromkeys(commands, 0.0)
            for _ in range(args.repeats):  # interleaved: a load spike on the machine hits every command alike
                for name, command in commands.items():
                    wall, rss = timed(command, env)
                    seconds[name].append(wall)
                    rss_mb[name] = max(rss_mb[name], rss)
        finally:
            api.stop()
    summary = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "seconds": seconds,
        "median_s": {name: statistics.median(v) for name, v in seconds.items()},
        "p90_s": {name: percentile(v, 90) for name, v in seconds.items()},
        "max_rss_mb": rss_mb,
    }

    rows = [
        (name, f"{summary['median_s'][name]:.2f} s / {summary['p90_s'][name]:.2f} s / {rss_mb[name]:.0f} MB")
        for name in COMMANDS
    ]
    print("\nfresh process: median wall / p90 wall / peak RSS")
    print_table(rows, width=90)
    write_report("cli_startup", args, summary)
    table = "\n".join(f"| `{name}` | {value.replace(' / ', ' | ')} |" for name, value in rows)
    replace_section(
        Path(__file__).resolve().parents[1] / "BENCHMARKS.md",
        "cli-startup",
        f"## Command-line start-up\n\n`python bench/cli_startup.py` (a fresh process each, {args.repeats} runs after "
        f"a warm-up; {os.cpu_count()} CPUs; the remote commands against `learngene serve` on this machine):\n\n"
        f"| command | median | p90 | peak RSS |\n| --- | --- | --- | --- |\n{table}\n",
    )


if __name__ == "__main__":
    main()
