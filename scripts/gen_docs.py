"""Write the documentation site's generated pages from their sources, so that they cannot drift from the code:

- docs/reference/settings.md from the pydantic-settings class `jobs.settings.Settings` (every field, nested models
  included: its environment variable, type, default, bounds and description);
- docs/reference/cli.md from the typer application `service.cli:app` (every command and group, walked through click:
  usage, help, arguments and options);
- docs/architecture.md, a copy of ARCHITECTURE.md (mkdocs reads only docs/; ARCHITECTURE.md stays the one source);
- docs/reference/families.md from the table `learngene.families.FEATURES`.

The settings and CLI pages, and the markdown every page shares, are modules of `scripts/docgen/`.

    python scripts/gen_docs.py           # rewrite the pages that changed
    python scripts/gen_docs.py --check   # exit 1 naming the stale pages, write nothing (tests/unit/test_docs.py, CI)

The output is deterministic: declaration order, no timestamps, and defaults that depend on the machine (the user's
data and cache folders) written symbolically; a page that would still name this machine's home folder or checkout is
refused.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project's packages come from the checkout
    sys.path.insert(0, str(ROOT))

SETTINGS_PAGE = "docs/reference/settings.md"
CLI_PAGE = "docs/reference/cli.md"
ARCHITECTURE_PAGE = "docs/architecture.md"
FAMILIES_PAGE = "docs/reference/families.md"

from scripts.docgen.cli_page import cli_page  # noqa: E402  (after the path above)
from scripts.docgen.markdown import REGENERATE, banner, table  # noqa: E402
from scripts.docgen.settings_page import settings_page  # noqa: E402


def refuse_machine_specific(name: str, text: str) -> None:
    for value in {str(Path.home()), str(ROOT)}:
        if len(value) > 1 and value in text:
            raise SystemExit(f"{name} would name a folder of this machine ({value}): render that default symbolically")


# ---------------------------------------------------------------------------------------------------- architecture


def architecture_page() -> str:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    title, _, rest = text.partition("\n")
    return f"{title}\n\n{banner('ARCHITECTURE.md')}{rest}"


# ---------------------------------------------------------------------------------------------------- families


def families_page() -> str:
    from learngene.families import FEATURES  # the table itself: the page cannot drift from it

    rows = [[f.name, f.timm, f.treatment, "yes" if f.served else "no"] for f in FEATURES.values()]
    return (
        f"# ViT families\n\n{banner('learngene/families.py')}"
        "Every feature timm's ViT families have beyond the plain DeiT block, how the methods treat it, and whether "
        "it is served (`learngene.families.FEATURES`). A model name with a feature that is not served is refused "
        "with a 422 naming it. [Methods](../methods.md#families) gives the rules across families.\n\n"
        + table(["feature", "in timm", "treatment", "served"], rows)
    )


# ---------------------------------------------------------------------------------------------------- main

PAGES: dict[str, Callable[[], str]] = {
    SETTINGS_PAGE: settings_page,
    CLI_PAGE: cli_page,
    ARCHITECTURE_PAGE: architecture_page,
    FAMILIES_PAGE: families_page,
}


def render() -> dict[str, str]:
    """Every generated page: path (relative to the repository) -> its text."""
    pages = {path: make() for path, make in PAGES.items()}
    for path, text in pages.items():
        refuse_machine_specific(path, text)
    return pages


def stale(pages: dict[str, str] | None = None) -> list[str]:
    """The generated pages whose file differs from what the sources make now (or is missing)."""
    pages = render() if pages is None else pages
    return [path for path, text in pages.items() if _read(ROOT / path) != text]


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 naming the stale pages; write nothing")
    args = parser.parse_args(argv)
    pages = render()
    old = stale(pages)
    if args.check:
        if old:
            print(f"stale generated docs: {', '.join(old)}; run `{REGENERATE}`", file=sys.stderr)
            return 1
        print(f"generated docs up to date: {', '.join(pages)}")
        return 0
    for path in old:
        target = ROOT / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(pages[path])
        print(f"wrote {path}")
    if not old:
        print("generated docs up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
