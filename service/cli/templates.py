"""`learngene templates ...`: list, inspect, publish, promote, roll back, verify, delete, clean the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from service.cli.calls import UrlOption, answer, connect, wait_with_bar
from service.cli.common import JsonOption, console, emit, fail
from service.cli.machine import get_store, user_errors
from service.client import Client
from service.client_settings import ClientSettings

app = typer.Typer(no_args_is_help=True, help=__doc__)


def _card_range(card: dict | None) -> str:
    """Worst to best held-out accuracy over the card's sizes, or '-' without a card."""
    return "-" if card is None else f"{card['worst_accuracy']:.3f}-{card['best_accuracy']:.3f}"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def _api(url: str | None, *, admin: bool = False) -> Client | None:
    """The API's template sets when `--url` or LEARNGENE_URL names one, else None: the local store."""
    if url is None and ClientSettings().url is None:
        return None
    return connect(url, admin=admin)


@app.command("list")
def list_(
    name: Annotated[str | None, typer.Argument(help="only this template set")] = None,
    json_: JsonOption = False,
    url: UrlOption = None,
):
    """Every stored version, with its aliases, recorded accuracies and quality-card accuracy range."""
    client = _api(url)
    if client is not None:
        versions = answer(lambda: client.template_sets(name=name))
    else:
        with user_errors():
            versions = [v.model_dump(mode="json") for v in get_store().list(name)]
    if json_:
        return emit(versions)
    table = Table(
        "name", "version", "aliases", "method", "created", "domain", "aux acc", "ancestor acc", "card acc",
        "learngene", "size",
    )  # fmt: skip
    for v in versions:
        acc = lambda key, v=v: f"{v['metrics'][key]:.3f}" if key in v["metrics"] else "-"  # noqa: E731
        table.add_row(
            v["name"],
            str(v["version"]),
            ", ".join(v["aliases"]),
            v["method"],
            v["created"],
            _domain(v["domain"]),
            acc("aux_accuracy"),
            acc("ancestor_accuracy"),
            _card_range(v["card"]),
            f"{v['parameters'].get('templates', 0):,}",
            _size(v["bytes"]),
        )
    console.print(table)


@app.command()
def recommend(
    img_size: Annotated[int | None, typer.Option(min=1, help="side of the (square) images, in pixels")] = None,
    in_chans: Annotated[int | None, typer.Option(min=1, help="channels of the images")] = None,
    num_classes: Annotated[int | None, typer.Option(min=1, help="classes of the task")] = None,
    depth: Annotated[int | None, typer.Option(min=1, help="with --embed-dim: the size to rank for")] = None,
    embed_dim: Annotated[int | None, typer.Option(min=1, help="with --depth: the size to rank for")] = None,
    json_: JsonOption = False,
    url: UrlOption = None,
):
    """The template sets condensed for your images and classes, best first by what their quality card predicts at
    the size you ask for (with the card row it used)."""
    wanted = {"img_size": img_size, "in_chans": in_chans, "num_classes": num_classes, "depth": depth,
              "embed_dim": embed_dim}  # fmt: skip
    client = _api(url)
    if client is not None:
        chosen = answer(lambda: client.template_sets(**wanted))
    else:
        from templates_store.choice import Wanted, choose  # the store loads torch: only here (start-up time)

        with user_errors():
            chosen = [v.model_dump(mode="json") for v in choose(get_store(), Wanted(**wanted))]
    if json_:
        return emit(chosen)
    if not chosen:
        asked = ", ".join(f"{k}={v}" for k, v in wanted.items() if v is not None and k not in ("depth", "embed_dim"))
        typer.echo(
            f"no template set was condensed for {asked or 'any domain'}: see `learngene templates list`", err=True
        )
        return None
    table = Table("rank", "template set", "aliases", "domain", "predicted acc", "card row (depth x width)",
                  "row: WAVE / timm init", "card acc")  # fmt: skip
    for rank, v in enumerate(chosen, 1):
        p = v.get("prediction")
        row = p["row"] if p else None
        table.add_row(
            str(rank),
            f"{v['name']}@{v['version']}",
            ", ".join(v["aliases"]) or "-",
            _domain(v["domain"]),
            f"{p['accuracy']:.3f}" if p else "-",
            f"{row['depth']} x {row['embed_dim']}" if row else "-",
            f"{row['accuracy']:.3f} / {row['baseline_accuracy']:.3f}" if row else "-",
            _card_range(v["card"]),
        )
    console.print(table)


def _domain(domain: dict) -> str:
    """`28x28x1, 10 classes`: the images and labels a set was condensed on."""
    height, width = domain["img_size"]
    return f"{height}x{width}x{domain['in_chans']}, {domain['num_classes']} classes"


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="name, name@3 or name@alias")],
    json_: JsonOption = False,
    url: UrlOption = None,
):
    """One version's manifest: configuration, lineage, metrics and file checksums."""
    client = _api(url)
    if client is not None:
        payload = answer(lambda: client.template_set(ref))
    else:
        with user_errors():
            store = get_store()
            resolved = store.resolve(ref)
            payload = {
                "ref": str(resolved),
                "digest": resolved.digest,
                "aliases": {a: r.version for a, r in store.aliases(resolved.name).items()},
                "manifest": store.manifest(resolved).model_dump(mode="json"),
            }
    if json_:
        return emit(payload)
    manifest, version = payload["manifest"], int(payload["ref"].rpartition("@")[2])
    here = ", ".join(a for a, v in payload["aliases"].items() if v == version) or "-"
    console.print(
        _fields(
            payload["ref"],
            {
                "digest": payload["digest"],
                "method": manifest["method"],
                "created": manifest["created"],
                "aliases here": here,
            },
        )
    )
    config = {k: v for k, v in manifest["config"].items() if v is not None}
    console.print(_fields("configuration", {k: _brief(v) for k, v in config.items()}))
    lineage = manifest["lineage"]
    console.print(_fields("lineage", {k: _brief(v) for k, v in lineage.items() if v not in (None, {}, "")}))
    console.print(_fields("metrics", {k: f"{v:.4g}" for k, v in manifest["metrics"].items()}))
    files = Table("file", "bytes", "sha256", title="files")
    for name, entry in manifest["files"].items():
        files.add_row(name, f"{entry['bytes']:,}", entry["sha256"])
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
def promote(name: str, version: int, alias: str, json_: JsonOption = False, url: UrlOption = None):
    """Point ALIAS of NAME at VERSION (e.g. `promote demo 3 prod`); with --url, through the API (admin)."""
    _move_alias(name, alias, json_, url, version=version)


@app.command()
def rollback(name: str, alias: str, json_: JsonOption = False, url: UrlOption = None):
    """Move ALIAS of NAME back to its previous version; with --url, through the API (admin)."""
    _move_alias(name, alias, json_, url, version=None)


def _move_alias(name: str, alias: str, json_: bool, url: str | None, *, version: int | None) -> None:
    client = _api(url, admin=True)
    if client is not None:
        record = answer(lambda: client.set_alias(name, alias, version=version, rollback=version is None))
    else:
        with user_errors():
            store = get_store()
            moved = store.rollback(name, alias) if version is None else store.promote(name, version, alias)
        record = {"name": name, "alias": alias, **moved.model_dump(mode="json")}
    _done(json_, f"{name}@{alias} -> {record['version']}", **record)


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
    refresh: Annotated[
        bool, typer.Option("--refresh", help="measure it now as a new revision (--url: by the API)")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="write README.md (model card), card.png and card.json here")] = None,
    steps: Annotated[
        int | None, typer.Option(help="--refresh here: fitting steps per size (default: the set's)")
    ] = None,
    train_samples: Annotated[int, typer.Option(help="--refresh here: images to fit and train on")] = 2048,
    eval_samples: Annotated[int, typer.Option(help="--refresh here: held-out images to measure")] = 2000,
    device: Annotated[str | None, typer.Option(help="--refresh here: torch device (default: CUDA if present)")] = None,
    json_: JsonOption = False,
    url: UrlOption = None,
):
    """A version's quality card: held-out accuracy of WAVE descendants over a ladder of sizes, next to timm's
    initialization trained with the same budget."""
    client = _api(url, admin=refresh)
    if client is not None:
        quality, files = answer(lambda: _card_from_api(client, ref, refresh=refresh, files=out is not None))
    else:
        quality, files = _card_from_store(
            ref, refresh=refresh, files=out is not None, steps=steps, train_samples=train_samples,
            eval_samples=eval_samples, device=device,
        )  # fmt: skip
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name, content in {**files, "card.json": (json.dumps(quality, indent=2) + "\n").encode()}.items():
            (out / name).write_bytes(content)
    if json_:
        return emit(quality)
    _print_card(quality)
    if out is not None:
        console.print(f"wrote {out / 'README.md'}, {out / 'card.png'}, {out / 'card.json'}")


def _card_from_api(client: Client, ref: str, *, refresh: bool, files: bool) -> tuple[dict, dict[str, bytes]]:
    if refresh:
        job = wait_with_bar(client, client.refresh_card(ref)["id"], kind="cards")
        typer.echo(f"stored card revision {job['result']['revision']} of {ref}", err=True)
    return client.card(ref), client.card_files(ref) if files else {}


def _card_from_store(ref: str, *, refresh: bool, files: bool, **measure) -> tuple[dict, dict[str, bytes]]:
    from jobs.card_views import card_png, card_readme  # heavy imports only in the command that needs them

    with user_errors():
        store = get_store()
        resolved = store.resolve(ref)
        if refresh:
            revision = store.put_card(resolved, _measure(store, resolved, **measure))
            typer.echo(f"stored card revision {revision} of {resolved}", err=True)
        quality = store.card(resolved)
        if quality is None:
            raise fail(
                f"{resolved} has no quality card yet; measure it with `learngene templates card {ref} --refresh`"
            )
        written = {}
        if files:
            written = {
                "README.md": card_readme(quality, store.manifest(resolved)).encode(),
                "card.png": card_png(quality),
            }
    return quality.model_dump(mode="json"), written


def _measure(store, resolved, *, steps, train_samples, eval_samples, device):
    """A new card of the version, measured on this machine."""
    from jobs.settings import get_settings
    from learngene.data import DataAccess
    from learngene.fit_settings import FitSettings
    from learngene.quality.card import CardConfig, compute_card, load_card_data
    from service.cli.local import device_option
    from service.cli.machine import progress_bar

    template_set = store.load(resolved)
    config = CardConfig(
        fit=FitSettings() if steps is None else FitSettings(steps=steps),
        train_samples=train_samples,
        eval_samples=eval_samples,
    )
    data = load_card_data(template_set, config, access=DataAccess(get_settings().local_data_roots()))
    total = 2 * len(config.ladder(template_set.config)) * config.fit.steps
    with progress_bar(total, f"card {resolved}") as update:
        return compute_card(
            template_set, data, digest=resolved.digest, config=config, device=device_option(device), progress=update
        )


def _print_card(quality: dict) -> None:
    d = quality["domain"]
    console.print(
        f"{quality['template_set']} (card of {quality['created']}): {d['img_size'][0]}x{d['img_size'][1]}x"
        f"{d['in_chans']}, patch {d['patch_size'][0]}, {d['num_classes']} classes, mean {list(d['mean'])} "
        f"std {list(d['std'])}\ndata {d['data_uri']}; held out: {quality['held_out']}"
    )
    table = Table(
        "depth", "width", "heads", "params", "WAVE acc", "timm init acc", "gain", "fit steps", "seconds",
        title=f"held-out accuracy by size ({quality['fit']['steps']} steps each)",
    )  # fmt: skip
    for r in quality["rows"]:
        table.add_row(
            str(r["depth"]),
            str(r["embed_dim"]),
            str(r["num_heads"]),
            f"{r['params']:,}",
            f"{r['accuracy']:.4f}",
            f"{r['baseline_accuracy']:.4f}",
            f"{r['accuracy'] - r['baseline_accuracy']:+.4f}",
            str(r["fit_steps"]),
            f"{r['seconds']:.1f}",
        )
    console.print(table)
