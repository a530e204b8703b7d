"""Inheritance smoke benchmark: WAVE descendants from the demo template set versus timm's default initialization.

For each size (depth 2, 4, the auxiliary depth 6 at the template width 64, and 2x width at depth 4):
  WAVE:   inherit from the demo template set -> fit scalers (a few hundred steps of batch 64 on 2,048 calibration
          images, with the demo ancestor as KL teacher when its checkpoint is there) -> materialize -> fine-tune
          1 epoch on FashionMNIST;
  timm:   timm's default init -> the same fine-tuning recipe, plus as many extra steps as it takes to see the images
          WAVE's fitting saw (so both arms train on the same number of images).
Top-1 on the full FashionMNIST test split before and after fine-tuning, over several seeds.
Also times Eq. 4 for a ViT-B-sized model (12 layers, width 768, templates 768) on this machine's CPU.

    python bench/inheritance_smoke.py [--seeds 3] [--epochs 1] [--ancestor build/demo/ancestor.safetensors]

The demo ancestor is what scripts/build_demo_templates.sh trains (`make demo-templates`).

Prints a table and writes bench/results/inheritance_smoke.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from learngene import TemplateSet, ViTSpec, fit_scalers, inherit, load_images
from learngene.fit_settings import FitSettings
from learngene.formats.template_set import BUILTIN_TEMPLATE_SETS
from learngene.layers.templates import DEFAULT_COUNTS, TemplateConfig, WeightScalers, WeightTemplates, compose
from learngene.methods import AncestorWeights
from learngene.pipeline import check_lineage
from learngene.spec import Architecture
from learngene.train.loop import LoopConfig, OptimConfig, evaluate, train_classifier

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FIT_BATCH = 64
SHAPE = dict(img_size=28, patch_size=7, in_chans=1, num_classes=10)
SIZES = [
    ("depth 2", 2, 64, 1),
    ("depth 4", 4, 64, 1),
    ("depth 6 (aux)", 6, 64, 1),
    ("depth 4, 2x width", 4, 128, 2),
]
FINETUNE = OptimConfig(lr=5e-4, min_lr=1e-5, warmup_steps=50, weight_decay=0.05)


def finetune_and_score(
    model: torch.nn.Module, train, test, epochs: int, seed: int, extra_steps: int = 0
) -> tuple[float, float, float]:
    before = evaluate(model, test)["accuracy"]
    steps = epochs * len(train) // 128 + extra_steps
    t0 = time.perf_counter()
    loop = LoopConfig(total_steps=steps, batch_size=128, optim=FINETUNE, seed=seed)
    train_classifier(model, train, loop, device=torch.device("cpu"))
    return before, evaluate(model, test)["accuracy"], time.perf_counter() - t0


def code_version() -> dict[str, str | bool]:
    """The commit the numbers come from, and whether the tree had uncommitted changes."""
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: E731
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def compose_timing(repeats: int = 10) -> dict[str, float]:
    """Eq. 4 for all 12 layers of a ViT-B (width 768, MLP 3072) with 768x768 templates, as one einsum per kind."""
    arch = Architecture(
        model="vit_base_patch16_224",
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_hidden=3072,
        num_classes=1000,
        img_size=(224, 224),
        patch_size=(16, 16),
        in_chans=3,
        num_prefix_tokens=1,
        pos_embed_prefix=1,
        global_pool="token",
        qkv_bias=True,
    )
    config = TemplateConfig(size=768, counts=DEFAULT_COUNTS).for_arch(arch)  # a plain ViT-B: no layer scale
    templates, scalers = WeightTemplates(config), WeightScalers(config, arch)
    templates.reset_parameters(torch.Generator().manual_seed(0))
    scalers.reset_parameters(torch.Generator().manual_seed(0))

    def compose_all() -> int:
        return sum(compose(scalers.tensors[k], t).numel() for k, t in templates.tensors.items())

    with torch.no_grad():
        elements = compose_all()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            compose_all()
            times.append(time.perf_counter() - t0)
        # The naive alternative the method forbids in a training step: a Python loop of torch.kron per layer.
        t0 = time.perf_counter()
        for kind, t in templates.tensors.items():
            s = scalers.tensors[kind]
            for layer in range(arch.depth):
                sum(torch.kron(s[layer, i], t[i]) for i in range(t.shape[0]))
        naive = time.perf_counter() - t0
    return {
        "generated_parameters": elements,
        "template_parameters": sum(t.numel() for t in templates.tensors.values()),
        "scaler_parameters": sum(s.numel() for s in scalers.tensors.values()),
        "compose_ms_median": 1000 * statistics.median(times),
        "compose_ms_min": 1000 * min(times),
        "kron_loop_ms": 1000 * naive,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "FashionMNIST"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--fit-steps", type=int, default=200)
    parser.add_argument(
        "--ancestor",
        default=str(ROOT / "build" / "demo" / "ancestor.safetensors"),
        help="the demo ancestor: WAVE's KL teacher while fitting (skipped when the file is absent)",
    )
    parser.add_argument("--out", default=str(RESULTS / "inheritance_smoke.json"))
    args = parser.parse_args()

    demo = TemplateSet.load(BUILTIN_TEMPLATE_SETS["demo"])
    load = dict(img_size=(28, 28), in_chans=1, normalization=demo.config.normalization)
    train = load_images(f"idx://{args.data}", **load)
    test = load_images(f"idx://{args.data}?split=test", **load)
    teacher = ancestor = None
    if Path(args.ancestor).is_file():
        ancestor = AncestorWeights.load(demo.lineage.ancestor_model, args.ancestor, demo.lineage.ancestor_overrides)
        check_lineage(demo, ancestor)
        teacher = ancestor.model()
        print(f"demo ancestor: test top-1 {evaluate(teacher, test)['accuracy']:.3f} (KL teacher while fitting)")
    timm_extra = args.fit_steps * FIT_BATCH // 128  # the images WAVE's fitting sees, as fine-tuning steps for timm
    rows = []
    for label, depth, width, k in SIZES:
        spec = ViTSpec(model="vit_tiny_patch16_224", depth=depth, embed_dim=width, num_heads=k, **SHAPE)
        for seed in range(args.seeds):
            descendant = inherit(demo, spec, seed=seed)
            calibration = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:2048])
            settings = FitSettings(steps=args.fit_steps, lr=2e-3, batch_size=FIT_BATCH, seed=seed)
            fit = fit_scalers(descendant, calibration, settings, ancestor=teacher)
            wave_model = descendant.materialize()
            wave_before, wave_after, wave_s = finetune_and_score(wave_model, train, test, args.epochs, seed)
            torch.manual_seed(seed)
            timm_before, timm_after, timm_s = finetune_and_score(
                spec.build(), train, test, args.epochs, seed, extra_steps=timm_extra
            )
            rows.append(
                dict(
                    size=label,
                    depth=depth,
                    width=width,
                    seed=seed,
                    fit_seconds=fit.seconds,
                    wave_instinct=wave_before,
                    wave=wave_after,
                    timm_instinct=timm_before,
                    timm=timm_after,
                    finetune_seconds=(wave_s + timm_s) / 2,
                )
            )
            print(f"{label:<20} seed {seed}: WAVE {wave_before:.3f} -> {wave_after:.3f}", end="", flush=True)
            print(f"   timm {timm_before:.3f} -> {timm_after:.3f}", flush=True)

    summary = []
    for label, depth, width, _ in SIZES:
        sel = [r for r in rows if r["size"] == label]

        def stat(key: str, sel=sel) -> tuple[float, float]:
            values = [r[key] for r in sel]
            return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

        summary.append(
            dict(
                size=label,
                depth=depth,
                width=width,
                **{f"{key}_mean": stat(key)[0] for key in ("wave_instinct", "wave", "timm")},
                **{f"{key}_std": stat(key)[1] for key in ("wave", "timm")},
                gap_points=100 * (stat("wave")[0] - stat("timm")[0]),
                fit_seconds=stat("fit_seconds")[0],
                finetune_seconds=stat("finetune_seconds")[0],
            )
        )
    timing = compose_timing()

    header = f"{'size':<20}{'WAVE init':>10}{'WAVE 1ep':>16}{'timm 1ep':>16}{'gap (pts)':>11}{'fit s':>8}"
    print("\n" + header + "\n" + "-" * len(header))
    for s in summary:
        print(
            f"{s['size']:<20}{s['wave_instinct_mean']:>10.3f}{s['wave_mean']:>10.3f} ±{s['wave_std']:.3f}"
            f"{s['timm_mean']:>10.3f} ±{s['timm_std']:.3f}{s['gap_points']:>11.1f}{s['fit_seconds']:>8.1f}"
        )
    print(
        f"\nEq. 4 for ViT-B (12 x 768, templates 768): {timing['compose_ms_median']:.1f} ms median "
        f"(per-layer kron loop: {timing['kron_loop_ms']:.0f} ms), {timing['generated_parameters'] / 1e6:.1f} M weights "
        f"from {timing['template_parameters'] / 1e6:.1f} M template + {timing['scaler_parameters']} scaler parameters"
    )

    report = {
        "benchmark": "inheritance_smoke",
        "template_set": demo.ref,
        "template_set_metrics": demo.metrics,
        "settings": {
            "seeds": args.seeds,
            "epochs": args.epochs,
            "fit_steps": args.fit_steps,
            "fit_batch_size": FIT_BATCH,
            "fit_teacher": None if ancestor is None else {"path": args.ancestor, "sha256": ancestor.sha256},
            "timm_extra_finetune_steps": timm_extra,
            "calibration_samples": 2048,
            "finetune": FINETUNE.model_dump(),
            "batch_size": 128,
        },
        "code": code_version(),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "summary": summary,
        "runs": rows,
        "compose_vit_b": timing,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
