"""The documentation site (mkdocs.yml, docs/) stays true to the code: the pages scripts/gen_docs.py generates (the
settings and CLI references, the copy of ARCHITECTURE.md) are fresh, every page of the nav exists and every page is
in the nav, the site builds with --strict when mkdocs is installed (the `docs` extra; `make lint` builds it too), every
LEARNGENE_* variable the pages name is one the project reads, and the README's first screen keeps its two commands."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen_docs():
    return _load_generator()


@pytest.fixture(scope="module")
def pages(gen_docs) -> dict[str, str]:
    return gen_docs.render()  # imports the settings and every CLI command (torch, timm): once per module


def test_generated_pages_are_fresh(gen_docs, pages):
    stale = gen_docs.stale(pages)
    assert not stale, f"stale generated docs: {stale}; run `python scripts/gen_docs.py`"


def test_check_mode_names_the_stale_pages_and_exits_1(gen_docs, pages, monkeypatch, capsys):
    changed = dict(pages)
    path = gen_docs.SETTINGS_PAGE
    changed[path] += "\nan edit by hand\n"
    monkeypatch.setattr(gen_docs, "render", lambda: changed)
    assert gen_docs.main(["--check"]) == 1
    assert path in capsys.readouterr().err
    monkeypatch.setattr(gen_docs, "render", lambda: pages)
    assert gen_docs.main(["--check"]) == 0


def test_generated_pages_cover_every_setting_and_command(pages):
    from jobs.settings import Settings

    settings = pages["docs/reference/settings.md"]
    for name, field in Settings.model_fields.items():
        assert f"`LEARNGENE_{name.upper()}`" in settings, name
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            for sub in annotation.model_fields:
                assert f"`LEARNGENE_{name.upper()}__{sub.upper()}`" in settings, (name, sub)
    cli = pages["docs/reference/cli.md"]
    for command in ("learngene condense", "learngene serve", "learngene templates card", "learngene job download"):
        assert f"`{command}`" in cli, command
    assert "`--nproc-per-node`" in cli and "`--data-root`" in cli


def _nav_paths(node) -> list[str]:
    if isinstance(node, str):
        return [] if re.match(r"[a-z]+://", node) else [node]
    if isinstance(node, list):
        return [path for item in node for path in _nav_paths(item)]
    if isinstance(node, dict):
        return [path for value in node.values() for path in _nav_paths(value)]
    return []


def test_every_page_in_the_nav_exists_and_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["docs_dir"] == "docs"
    nav = _nav_paths(config["nav"])
    missing = [path for path in nav if not (DOCS / path).is_file()]
    assert not missing, f"mkdocs.yml's nav names pages that do not exist: {missing}"
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages, f"pages outside the nav: {sorted(set(pages) - set(nav))}"


def test_the_site_builds_strictly_offline(tmp_path, monkeypatch):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    pytest.importorskip("material", reason="the docs extra is not installed")
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")
    config = load_config(str(ROOT / "mkdocs.yml"), site_dir=str(tmp_path / "site"), strict=True)
    assert config["theme"]["font"] is False  # no web fonts; no plugin that fetches anything
    assert {name.split("/")[-1] for name in config["plugins"]} <= {"search"}
    build(config)  # raises on any warning in strict mode (a broken link or anchor, a page outside the nav)
    assert (tmp_path / "site" / "reference" / "settings" / "index.html").is_file()


def test_every_variable_the_docs_name_is_read_by_the_project(pages):
    """A LEARNGENE_* name in the pages or the README is a setting (or a prefix of nested ones), a variable of the
    compose deployment, or one of the test suite's own."""
    settings = set(re.findall(r"`(LEARNGENE_[A-Z0-9_]+)`", pages["docs/reference/settings.md"]))
    elsewhere = (ROOT / "docker-compose.yml").read_text() + "".join(
        p.read_text() for p in (ROOT / "tests").rglob("*.py") if p.name != Path(__file__).name
    )
    texts = [*DOCS.rglob("*.md"), ROOT / "README.md", ROOT / "ARCHITECTURE.md"]
    unknown = set()
    for path in texts:
        for name in re.findall(r"LEARNGENE_[A-Z0-9_]*[A-Z0-9]", path.read_text()):
            prefix = any(s.startswith(name + "__") for s in settings)
            if name not in settings and not prefix and not re.search(rf"\b{name}\b", elsewhere):
                unknown.add(f"{path.relative_to(ROOT)}: {name}")
    assert not unknown, f"variables the project does not read: {sorted(unknown)}"


def test_the_readme_opens_with_its_two_commands():
    """Its first code block: the two commands that work on a fresh machine (`make run`, `make test`)."""
    text = (ROOT / "README.md").read_text()
    first = text.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split()[:2] for line in first] == [["make", "run"], ["make", "test"]]
    assert text.index("```sh\nmake run") < 1200  # on the first screen


def test_the_readmes_condensation_body_is_a_valid_request():
    """The README's complete condensation request (its JSON block) is accepted by the contract the API applies."""
    import json

    from jobs.contracts import CondensationRequest

    text = (ROOT / "README.md").read_text()
    body = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    request = CondensationRequest.model_validate(body)
    assert (
        request.name == "fmnist" and request.promote == "prod" and request.ancestor.checkpoint.endswith(".safetensors")
    )
