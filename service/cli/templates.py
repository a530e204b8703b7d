"""`learngene templates ...`: list, inspect, publish, promote, roll back, verify, delete, clean the store."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from service.cli.common import JsonOption, emit, fail, get_store, user_errors

app = typer.Typer(no_args_is_help=True, help=__doc__)
console = Console(width=None if sys.stdout.isatty() else 160)  # piped output: no truncated columns


def _card_range(card) -> str:
    """Worst to best held-out accuracy over the card's sizes, or '-' without a card."""
    return "-" if card is None else f"{card.worst_accuracy:.3f}-{card.best_accuracy:.3f}"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


@app.command("list")
def list_(name: Annotated[str | None, typer.Argument(help="only this template set")] = None, json_: JsonOption = False):
    """Every stored version, with its aliases, recorded accuracies and quality-card accuracy range."""
    with user_errors():
        versions = get_store().list(name)
    if json_:
        return emit([v.model_dump() for v in versions])
    table = Table(
        "name", "version", "aliases", "method", "created", "aux acc", "ancestor acc", "card acc", "learngene", "size"
    )
    for v in versions:
        acc = lambda key, v=v: f"{v.metrics[key]:.3f}" if key in v.metrics else "-"  # noqa: E731
        table.add_row(
            v.name,
            str(v.version),
            ", ".join(v.aliases),
            v.method,
            v.created,
            acc("aux_accuracy"),
            acc("ancestor_accuracy"),
            _card_range(v.card),
            f"{v.parameters.get('templates', 0):,}",
            _size(v.bytes),
        )
    console.print(table)


@app.command()
def show(ref: Annotated[str, typer.Argument(help="name, name@3 or name@alias")], json_: JsonOption = False):
    """One version's manifest: configuration, lineage, metrics and file checksums."""
    with user_errors():
        store = get_store()
        resolved = store.resolve(ref)
        manifest = store.manifest(resolved)
        aliases = {a: r.version for a, r in store.aliases(resolved.name).items()}
    payload = {"ref": str(resolved), "digest": resolved.digest, "aliases": aliases, "manifest": manifest.model_dump()}
    if json_:
        return emit(payload)
    here = ", ".join(a for a, v in aliases.items() if v == resolved.version) or "-"
    console.print(
        _fields(
            f"{resolved}",
            {"digest": resolved.digest, "method": manifest.method, "created": manifest.created, "aliases here": here},
        )
    )
    config = manifest.config.model_dump(mode="json", exclude_none=True)
    console.print(_fields("configuration", {k: _brief(v) for k, v in config.items()}))
    lineage = manifest.lineage.model_dump(mode="json")
    console.print(_fields("lineage", {k: _brief(v) for k, v in lineage.items() if v not in (None, {}, "")}))
    console.print(_fields("metrics", {k: f"{v:.4g}" for k, v in manifest.metrics.items()}))
    files = Table("file", "bytes", "sha256", title="files")
    for name, entry in manifest.files.items():
        files.add_row(name, f"{entry.bytes:,}", entry.sha256)
    console.print(files)


def _fields(title: str, values: dict[str, str]) -> Table:
    table = Table("field", "value", title=title, show_header=False)
    for key, value in values.items():
        table.add_row(key, value)
    return table


def _brief(value) -> str:
    """A nested value on one line: JSON without the null fields."""
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if v is not None}
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


@app.command()
def publish(
    folder: Annotated[Path, typer.Argument(help="a template-set folder (manifest.json + tensors.safetensors)")],
    name: Annotated[str | None, typer.Option(help="store name (default: the set's own name)")] = None,
    json_: JsonOption = False,
):
    """Add a template-set folder to the store as a new version."""
    from learngene.formats.template_set import TemplateSet  # loads torch: imported by the command (start-up time)

    with user_errors():
        resolved = get_store().publish(TemplateSet.load(folder), name)
    _done(json_, f"published {resolved}", ref=str(resolved), digest=resolved.digest)


@app.command()
def promote(name: str, version: int, alias: str, json_: JsonOption = False):
    """Point ALIAS of NAME at VERSION (e.g. `promote demo 3 prod`)."""
    with user_errors():
        record = get_store().promote(name, version, alias)
    _done(json_, f"{name}@{alias} -> {record.version}", name=name, alias=alias, **record.model_dump())


@app.command()
def rollback(name: str, alias: str, json_: JsonOption = False):
    """Move ALIAS of NAME back to its previous version."""
    with user_errors():
        record = get_store().rollback(name, alias)
    _done(json_, f"{name}@{alias} -> {record.version}", name=name, alias=alias, **record.model_dump())


@app.command()
def verify(ref: str, json_: JsonOption = False):
    """Re-hash every file of a version against its manifest (exit 2 on any mismatch)."""
    with user_errors():
        resolved = get_store().verify(ref)
    _done(json_, f"{resolved} ok", ref=str(resolved), digest=resolved.digest, ok=True)


@app.command()
def delete(ref: Annotated[str, typer.Argument(help="name@N")], json_: JsonOption = False):
    """Delete one version (refused while an alias points to it)."""
    with user_errors():
        resolved = get_store().delete(ref)
    _done(json_, f"deleted {resolved}", ref=str(resolved), deleted=True)


@app.command()
def gc(json_: JsonOption = False):
    """Remove leftovers of interrupted publications and deletions; list damaged versions (left for a person to
    look at: a version is never deleted behind its owner's back)."""
    with user_errors():
        store = get_store()
        removed, damaged = store.gc(), store.problems()
    lines = [f"removed {len(removed)} leftover(s)", *(f"damaged: {line}" for line in damaged)]
    _done(json_, "\n".join(lines), removed=removed, damaged=damaged)


def _done(json_: bool, message: str, **payload) -> None:
    if json_:
        emit(payload)
    else:
        console.print(message)


@app.command()
def card(
    ref: Annotated[str, typer.Argument(help="name, name@3 or name@alias")],
    refresh: Annotated[bool, typer.Option("--refresh", help="measure it now, here, as a new revision")] = False,
    out: Annotated[Path | None, typer.Option(help="write README.md (model card), card.png and card.json here")] = None,
    steps: Annotated[int | None, typer.Option(help="--refresh: fitting steps per size (default: the set's)")] = None,
    train_samples: Annotated[int, typer.Option(help="--refresh: images to fit and train on")] = 2048,
    eval_samples: Annotated[int, typer.Option(help="--refresh: held-out images to measure")] = 2000,
    device: Annotated[str | None, typer.Option(help="--refresh: torch device (default: CUDA if present)")] = None,
    json_: JsonOption = False,
):
    """A version's quality card: held-out accuracy of WAVE descendants over a ladder of sizes, next to timm's
    initialization trained with the same budget."""
    from jobs.card_views import card_png, card_readme  # heavy imports only in the command that needs them
    from jobs.settings import get_settings
    from learngene.data import DataAccess
    from learngene.fit_settings import FitSettings
    from learngene.quality.card import CardConfig, compute_card, load_card_data
    from service.cli.common import progress_bar
    from service.cli.local import device_option

    with user_errors():
        store = get_store()
        resolved = store.resolve(ref)
        if refresh:
            template_set = store.load(resolved)
            config = CardConfig(
                fit=FitSettings() if steps is None else FitSettings(steps=steps),
                train_samples=train_samples,
                eval_samples=eval_samples,
            )
            data = load_card_data(template_set, config, access=DataAccess(get_settings().local_data_roots()))
            total = 2 * len(config.ladder(template_set.config)) * config.fit.steps
            with progress_bar(total, f"card {resolved}") as update:
                measured = compute_card(
                    template_set,
                    data,
                    digest=resolved.digest,
                    config=config,
                    device=device_option(device),
                    progress=update,
                )
            revision = store.put_card(resolved, measured)
            typer.echo(f"stored card revision {revision} of {resolved}", err=True)
        quality = store.card(resolved)
        if quality is None:
            raise fail(
                f"{resolved} has no quality card yet; measure it with `learngene templates card {ref} --refresh`"
            )
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "README.md").write_text(card_readme(quality, store.manifest(resolved)))
            (out / "card.png").write_bytes(card_png(quality))
            (out / "card.json").write_text(quality.model_dump_json(indent=2) + "\n")
    if json_:
        return emit(quality.model_dump(mode="json"))
    d = quality.domain
    console.print(
        f"{quality.template_set} (card of {quality.created}): {d.img_size[0]}x{d.img_size[1]}x{d.in_chans}, "
        f"patch {d.patch_size[0]}, {d.num_classes} classes, mean {list(d.mean)} std {list(d.std)}\n"
        f"data {d.data_uri}; held out: {quality.held_out}"
    )
    table = Table(
        "depth",
        "width",
        "heads",
        "params",
        "WAVE acc",
        "timm init acc",
        "gain",
        "fit steps",
        "seconds",
        title=f"held-out accuracy by size ({quality.fit.steps} steps each)",
    )
    for r in quality.rows:
        table.add_row(
            str(r.depth),
            str(r.embed_dim),
            str(r.num_heads),
            f"{r.params:,}",
            f"{r.accuracy:.4f}",
            f"{r.baseline_accuracy:.4f}",
            f"{r.accuracy - r.baseline_accuracy:+.4f}",
            str(r.fit_steps),
            f"{r.seconds:.1f}",
        )
    console.print(table)
    if out is not None:
        console.print(f"wrote {out / 'README.md'}, {out / 'card.png'}, {out / 'card.json'}")
