"""A quality card shown to people: a PNG plot (matplotlib, only imported here when one is drawn) and a Hugging
Face-style model card (`README.md`, YAML metadata + markdown). The API serves both; the CLI writes them."""

from __future__ import annotations

import io

import yaml

from learngene.formats.template_set import Manifest
from learngene.quality.card import QualityCard


def card_png(card: QualityCard) -> bytes:
    """Held-out accuracy against parameters, one line per width: WAVE (inherited + fitted) solid, timm's
    initialization trained with the same budget dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state, safe in threads
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for index, width in enumerate(sorted({r.embed_dim for r in card.rows})):
        rows = sorted((r for r in card.rows if r.embed_dim == width), key=lambda r: r.params)
        params = [r.params for r in rows]
        color = f"C{index}"
        ax.plot(params, [r.accuracy for r in rows], "o-", color=color, label=f"WAVE, width {width}")
        ax.plot(
            params,
            [r.baseline_accuracy for r in rows],
            "s--",
            color=color,
            alpha=0.6,
            label=f"timm init, width {width}",
        )
        for r in rows:
            ax.annotate(f"d{r.depth}", (r.params, r.accuracy), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    steps = card.rows[0].fit_steps
    ax.set_title(f"{card.template_set}: {steps} fitting steps per size vs the same budget from timm's init", fontsize=9)
    ax.legend(fontsize=7)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def card_readme(card: QualityCard, manifest: Manifest) -> str:
    """The set's model card: YAML front matter (library, tags, a `model-index` with one held-out accuracy per size)
    and a markdown body with the domain, the table and how it was measured."""
    domain, lineage = card.domain, manifest.lineage
    dataset = {"name": domain.data_uri or "unknown", "type": "image-classification"}
    results = [
        {
            "task": {"type": "image-classification"},
            "dataset": dict(dataset),  # a copy each: no YAML anchors in the metadata
            "metrics": [
                {
                    "type": "accuracy",
                    "value": round(r.accuracy, 4),
                    "name": f"held-out accuracy, depth {r.depth}, width {r.embed_dim} (WAVE)",
                }
            ],
        }
        for r in card.rows
    ]
    meta = {
        "library_name": "timm",
        "pipeline_tag": "image-classification",
        "tags": ["learngene", manifest.method, "vision-transformer", "template-set"],
        "base_model": lineage.ancestor_model,
        "model-index": [{"name": card.template_set, "results": results}],
    }
    h, w = domain.img_size
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {card.template_set}: a {manifest.method.upper()} template set",
        "",
        f"Initializes timm Vision Transformers of any depth and width (a width that is no multiple of the templates' "
        f"{manifest.config.arch.embed_dim} is selected from the next multiple) from templates condensed out of "
        f"`{lineage.ancestor_model}`; this card measured depths {_range(card.depth_range)} and widths "
        f"{_range(card.width_range)}. Manifest sha256 `{card.digest}`.",
        "",
        "## Input domain",
        "",
        f"- images {h}x{w}, {domain.in_chans} channel(s), patch {domain.patch_size[0]}x{domain.patch_size[1]}",
        f"- {domain.num_classes} classes; normalization mean {list(domain.mean)}, std {list(domain.std)}",
        f"- data: `{domain.data_uri}`; held out: {card.held_out}",
        "",
        "Other input sizes, channel counts or classes work, but are adaptations this card did not measure.",
        "",
        "## Quality by size",
        "",
        "| depth | width | heads | parameters | WAVE accuracy | timm init accuracy | fit steps | seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r.depth} | {r.embed_dim} | {r.num_heads} | {r.params:,} | {r.accuracy:.4f} | "
            f"{r.baseline_accuracy:.4f} | {r.fit_steps} | {r.seconds:.1f} |"
            for r in card.rows
        ),
        "",
        "## How this was measured",
        "",
        f"Each size was inherited with WAVE and its scalers fitted for {card.fit.steps} steps (lr {card.fit.lr:g}, "
        f"batch {card.fit.batch_size}, seed {card.fit.seed}) on {card.train_samples} images of the set's data; "
        f"timm's default initialization was trained for the same steps on the same images (all parameters). Both "
        f"were measured on {card.eval_samples} held-out images. Measured {card.created} with learngene "
        f"{card.code_version} in {card.seconds:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def _range(bounds: tuple[int, int]) -> str:
    low, high = bounds
    return str(low) if low == high else f"{low}-{high}"
