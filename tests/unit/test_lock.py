"""requirements.lock (made by `make lock`) is the resolution of pyproject.toml's current dependencies: every
requirement of the core and of every extra is pinned, at a version its specifier admits, and nothing is pinned as a
direct requirement that pyproject.toml no longer asks for. Read offline: a dependency edited without `make lock`
fails here, before CI's install or an image build meets a stale lock."""

import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
# uv's annotation of a package pyproject.toml asks for itself (in the core or an extra).
DIRECT = "learngene (pyproject.toml)"


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    parsed = [Requirement(r) for r in requirements]
    return [r for r in parsed if canonicalize_name(r.name) != "learngene"]  # an extra naming another (method)


def lock_pins() -> list[tuple[str, Version, list[str]]]:
    """(name, pinned version, what it is required by) for each entry of the lock; a name pinned at two versions for
    different Pythons or platforms has two entries."""
    pins: list[tuple[str, Version, list[str]]] = []
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith(" "):  # uv's "# via ..." lines belong to the entry above them
            via = line.strip().removeprefix("#").strip().removeprefix("via").strip()
            if via:
                pins[-1][2].append(via)
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)(?: ; .+)?", line)
        assert match, f"not an exact pin: {line!r}"
        pins.append((canonicalize_name(match[1]), Version(match[2]), []))
    return pins


def test_every_requirement_is_pinned_at_a_version_it_admits():
    pins = lock_pins()
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        versions = [version for pinned, version, _ in pins if pinned == name]
        assert versions, f"{requirement} is not in requirements.lock: run `make lock`"
        for version in versions:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"requirements.lock pins {name}=={version}, outside {requirement}: run `make lock`"
            )


def test_lock_asks_for_nothing_pyproject_dropped():
    asked = {canonicalize_name(r.name) for r in project_requirements()}
    direct_in_lock = {name for name, _, via in lock_pins() if DIRECT in via}
    assert direct_in_lock == asked, f"run `make lock`: differs by {sorted(direct_in_lock ^ asked)}"


def test_lock_is_made_by_make_lock():
    assert "make lock" in LOCK.read_text().splitlines()[1]
    assert re.search(r"^lock:", (ROOT / "Makefile").read_text(), re.MULTILINE)
