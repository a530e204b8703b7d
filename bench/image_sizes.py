"""Estimated size of the two Docker images, from what they install: no Docker engine needed.

Each image is the base image (python:3.11-slim-bookworm; a constant, below, with its source) plus the virtual
environment its Dockerfile copies in: the project and the dependency closure of its extra, walked through the
requirement metadata (markers evaluated for this Python and platform, extras followed), each distribution counted
at its installed size on disk (the files its RECORD lists, bytecode included, stat()ed in this venv).

- worker image: `.[worker]` with PyPI's Linux build of torch, whose nvidia-* / cuda-* / triton wheels carry CUDA:
  measured as installed in this venv, which holds that build (the lock's version).
- API image: `.[service]` with PyTorch's CPU-only torch: its files are summed from the CPU wheel on this disk
  (--cpu-torch-wheel; entry sizes, uncompressed) plus the bytecode pip compiles for them (taken from the installed
  build: the same Python sources), and its closure follows the CPU wheel's own requirements (no CUDA packages).

Estimates: file sizes, not filesystem blocks or layer metadata; the CPU wheel on disk may be an older torch release
than the lock's; torchvision is counted as installed here (PyPI's build). Where a Docker engine exists, the exact
sizes are `docker images learngene/api` and `docker images learngene/worker` after `docker compose build`.
Prints a table and writes bench/results/image_sizes.json.

    python bench/image_sizes.py [--cpu-torch-wheel PATH] [--base-mb 125]
"""

from __future__ import annotations

import argparse
import glob
import sys
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from service_common import RESULTS, ROOT, print_table, write_report

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

BASE_IMAGE = "python:3.11.13-slim-bookworm"
# Uncompressed size of the base image on linux/amd64, as `docker images` shows it (decimal MB). Not measured here
# (this machine has no Docker engine): Docker Hub lists python:3.11-slim-bookworm at about 41 MB compressed for
# linux/amd64, and its unpacked size is commonly reported at 125 to 155 MB. Override with --base-mb.
BASE_IMAGE_MB = 125.0
# What `pip install '.[<extra>]'` brings into each image's venv; the venv's own pip comes with `python -m venv`.
IMAGES = {"api": ("service", "cpu"), "worker": ("worker", "cuda")}
PACKAGE_DIRS = ("learngene", "service", "jobs", "workers", "templates_store", "storage")  # setuptools' packages
DEFAULT_CPU_WHEEL = "/opt/wheels/torch-*+cpu-cp311-cp311-manylinux*_x86_64.whl"
MB = 1e6  # docker images uses decimal units


def installed() -> dict[str, metadata.Distribution]:
    return {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}


def installed_bytes(dist: metadata.Distribution) -> tuple[int, int]:
    """(all bytes, bytecode bytes) of the files a distribution installed."""
    total = bytecode = 0
    for file in dist.files or []:
        path = Path(file.locate())
        if path.is_file():
            size = path.stat().st_size
            total += size
            bytecode += size if path.suffix == ".pyc" else 0
    return total, bytecode


def project_bytes() -> int:
    """The project's own files as a regular install copies them: its packages' modules and package data."""
    files = [p for d in PACKAGE_DIRS for p in (ROOT / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return sum(p.stat().st_size for p in files if p.suffix in (".py", ".json", ".safetensors"))


def cpu_wheel(path: Path) -> tuple[int, list[str]]:
    """(uncompressed bytes of its files, its Requires-Dist) of a torch CPU wheel."""
    with zipfile.ZipFile(path) as wheel:
        size = sum(info.file_size for info in wheel.infolist())
        meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        requires = Parser().parsestr(wheel.read(meta).decode()).get_all("Requires-Dist") or []
    return size, requires


def closure(
    roots: list[Requirement], dists: dict[str, metadata.Distribution], overrides: dict[str, list[str]]
) -> set[str]:
    """Names of every distribution `roots` need here (markers evaluated for this interpreter, extras followed);
    `overrides` replaces a distribution's requirements (the CPU torch wheel's)."""
    needed: set[str] = set()
    queue: list[tuple[Requirement, str]] = [(r, "") for r in roots]
    seen_extras: set[tuple[str, str]] = set()
    while queue:
        requirement, from_extra = queue.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": from_extra}):
            continue
        name = canonicalize_name(requirement.name)
        if name not in dists:
            raise SystemExit(f"{name} is not installed in this venv: run `make install`")
        for extra in ("", *sorted(requirement.extras)):
            if (name, extra) in seen_extras:
                continue
            seen_extras.add((name, extra))
            needed.add(name)
            for spec in overrides.get(name, dists[name].requires or []):
                queue.append((Requirement(spec), extra))
    return needed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-torch-wheel", default=next(iter(sorted(glob.glob(DEFAULT_CPU_WHEEL))), None))
    parser.add_argument("--base-mb", type=float, default=BASE_IMAGE_MB)
    parser.add_argument("--out", default=str(RESULTS / "image_sizes.json"))
    args = parser.parse_args()
    if not args.cpu_torch_wheel:
        raise SystemExit(f"no torch CPU wheel at {DEFAULT_CPU_WHEEL}: pass --cpu-torch-wheel")

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dists = installed()
    sizes = {name: installed_bytes(dist) for name, dist in dists.items()}
    cpu_files, cpu_requires = cpu_wheel(Path(args.cpu_torch_wheel))
    cpu_torch = cpu_files + sizes["torch"][1]  # + the bytecode pip compiles for the same Python sources
    pip = sizes["pip"][0]
    own = project_bytes()

    torch_label = {"cuda": f"torch {metadata.version('torch')} (PyPI, CUDA)", "cpu": Path(args.cpu_torch_wheel).name}
    report: dict[str, dict] = {}
    for image, (extra, torch_build) in IMAGES.items():
        roots = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"][extra]]
        overrides = {"torch": cpu_requires} if torch_build == "cpu" else {}
        names = closure(roots, dists, overrides)
        packages = {n: cpu_torch if (n == "torch" and torch_build == "cpu") else sizes[n][0] for n in names}
        cuda = sum(size for n, size in packages.items() if n.startswith(("nvidia-", "cuda-", "triton")))
        venv = sum(packages.values()) + pip + own
        report[image] = {
            "dockerfile": f"docker/{image}.Dockerfile",
            "installs": f".[{extra}]",
            "torch": torch_label[torch_build],
            "base_mb": args.base_mb,
            "venv_mb": round(venv / MB, 1),
            "cuda_packages_mb": round(cuda / MB, 1),
            "distributions": len(packages) + 1,  # + pip
            "largest_mb": {n: round(s / MB, 1) for n, s in sorted(packages.items(), key=lambda x: -x[1])[:6]},
            "estimated_total_mb": round(args.base_mb + venv / MB, 1),
        }

    rows = []
    for image, r in report.items():
        rows += [
            (f"{image}: base {BASE_IMAGE}", f"{r['base_mb']:.0f} MB"),
            (f"{image}: venv ({r['distributions']} distributions)", f"{r['venv_mb']:.0f} MB"),
            (f"{image}:   of which CUDA (nvidia-*, cuda-*, triton)", f"{r['cuda_packages_mb']:.0f} MB"),
            (f"{image}: estimated image size", f"{r['estimated_total_mb'] / 1000:.2f} GB"),
        ]
    print("\nestimated image sizes (installed file sizes; `docker images` gives the exact ones)")
    print_table(rows, width=80)
    for image, r in report.items():
        print(f"{image}: largest: " + ", ".join(f"{n} {s:.0f} MB" for n, s in r["largest_mb"].items()))
    write_report(
        "image_sizes",
        args,
        {
            "python": sys.version.split()[0],
            "base_image": BASE_IMAGE,
            "project_mb": round(own / MB, 2),
            "images": report,
        },
    )


if __name__ == "__main__":
    main()
