"""Condensation at scale, measured on this machine: throughput of the streaming loader and of templated training,
and peak memory against the size of the data set.

    python bench/condense_scale.py [--images 2000 8000 16000] [--steps 20] [--batch 32] [--workers N]

1. Loader only: images/s of the DataLoader (DeiT training transform, default worker count) with no model.
2. Training: images/s of a templated auxiliary model (TemplatedViT: weights composed from templates every step)
   against plain timm training of the same architecture, with the same loader, teacher and loss
   (target: templated >= 0.9x plain), and whether the step waited on the loader.
3. Memory: peak RSS of `learngene condense` on ImageFolders of increasing size (target: flat).

Data: FashionMNIST upscaled to 64 px RGB and written as ImageFolder trees of PNGs in a temporary folder. All ratios
are within one run. Prints a table and writes bench/results/condense_scale.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sections import replace_section
from learngene import CondenseConfig, Normalization, ViTSpec, load_images
from learngene.data import open_source
from learngene.data.loader import StepBatches, Stream, default_workers, step_batches
from learngene.data.transforms import Augment, train_transform
from learngene.formats.checkpoint import export_checkpoint
from learngene.train.condense import build_auxiliary
from learngene.train.loop import LoopConfig, LoopHooks, Objective, OptimConfig, build_optimizer, train_steps

ROOT = Path(__file__).resolve().parents[1]
FMNIST = ROOT.parent / "shared" / "data" / "FashionMNIST"
RESULTS = ROOT / "bench" / "results"
SIZE = 64
NORM = Normalization(mean=(0.29, 0.29, 0.29), std=(0.35, 0.35, 0.35))
AUX = dict(img_size=SIZE, patch_size=8, in_chans=3, num_classes=10, embed_dim=192, num_heads=3, depth=4)
TEACHER = dict(AUX, embed_dim=384, num_heads=6, depth=6)


def write_folder(root: Path, count: int) -> Path:
    data = load_images(f"idx://{FMNIST}", img_size=(SIZE, SIZE), in_chans=3, normalization=NORM, max_samples=count)
    for i, (image, label) in enumerate(zip(data.images.permute(0, 2, 3, 1).numpy(), data.labels.tolist(), strict=True)):
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / f"class{label}" / f"{i:06d}.png", compress_level=1)
    return root


def loader_rate(stream: Stream, steps: int, batch: int) -> float:
    batches = step_batches(stream, StepBatches(len(stream), batch, 0, 0, steps), torch.device("cpu"))
    next(batches)  # workers started
    t0 = time.perf_counter()
    seen = sum(len(x) for x, _ in batches)
    return seen / (time.perf_counter() - t0)


def training_rate(model: torch.nn.Module, named, stream: Stream, teacher, steps: int, batch: int) -> float:
    optim = OptimConfig(lr=1e-4, warmup_steps=0)
    loop = LoopConfig(total_steps=steps + 2, batch_size=batch, optim=optim, seed=0)
    optimizer = build_optimizer(named, optim)
    rates = []

    def progress(p) -> None:
        rates.append(p.images_per_s)

    train_steps(
        model,
        optimizer,
        stream,
        loop,
        device=torch.device("cpu"),
        objective=Objective(teacher=teacher),
        hooks=LoopHooks(progress=progress, report_every=steps + 2),
    )
    return rates[-1]


def peak_rss_mib(args: list[str]) -> float:
    probe = (
        "import resource, subprocess, sys; run = subprocess.run(sys.argv[1:], capture_output=True); "
        "sys.exit(run.returncode) if run.returncode else "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    learngene = str(Path(sys.executable).parent / "learngene")
    done = subprocess.run([sys.executable, "-c", probe, learngene, *args], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 8000, 16000])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--out", default=str(RESULTS / "condense_scale.json"))
    parser.add_argument("--report", default=str(ROOT / "BENCHMARKS.md"), help="'' to leave it alone")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folders = {n: write_folder(Path(tmp) / f"folder-{n}", n) for n in args.images}
        source = open_source(f"imagefolder://{folders[args.images[0]]}")
        stream = Stream(source, train_transform(Augment(), (SIZE, SIZE), 3, NORM), workers=args.workers)
        loader = loader_rate(stream, args.steps, args.batch)

        config = CondenseConfig(aux=ViTSpec(model="vit_tiny_patch16_224", **AUX), batch_size=args.batch)
        teacher = ViTSpec(model="vit_tiny_patch16_224", **TEACHER).build().eval().requires_grad_(False)
        templated = build_auxiliary(config, torch.Generator().manual_seed(0))
        plain = ViTSpec(model="vit_tiny_patch16_224", **AUX).build()
        rates = {
            "templated": training_rate(templated, templated.trainable_named_parameters(), stream, teacher,
                                       args.steps, args.batch),
            "plain": training_rate(plain, list(plain.named_parameters()), stream, teacher, args.steps, args.batch),
        }  # fmt: skip

        ancestor = Path(tmp) / "ancestor.safetensors"
        spec = ViTSpec(model="vit_tiny_patch16_224", **AUX)
        export_checkpoint(spec.build(), ancestor, spec=spec, metadata={"normalization": NORM.model_dump()})
        sets = [a for k, v in spec.overrides().items() for a in ("--ancestor-set", f"{k}={v}")]
        aux_sets = [a for k, v in spec.overrides().items() for a in ("--aux-set", f"{k}={v}")]
        rss = {
            n: peak_rss_mib(["condense", "--ancestor-model", spec.model, "--ancestor", str(ancestor), *sets,
                             "--aux-model", spec.model, *aux_sets, "--data", f"imagefolder://{folder}", "--steps", "3",
                             "--batch-size", "16", "--workers", "1", "--out", str(Path(tmp) / f"set-{n}")])
            for n, folder in folders.items()
        }  # fmt: skip

    ratio = rates["templated"] / rates["plain"]
    rows = [
        ("loader only, images/s (DeiT transform)", f"{loader:.0f}"),
        ("plain timm student training, images/s", f"{rates['plain']:.1f}"),
        ("templated auxiliary training, images/s", f"{rates['templated']:.1f}"),
        ("templated / plain (target >= 0.9)", f"{ratio:.2f}"),
        ("loader / training (> 1: the step never waits)", f"{loader / rates['plain']:.1f}"),
        *[(f"peak RSS of condense, {n:,} images (MiB)", f"{mib:.0f}") for n, mib in rss.items()],
    ]
    print(f"\n{'metric':<52}{'value':>12}\n" + "-" * 64)
    for name, value in rows:
        print(f"{name:<52}{value:>12}")
    report = {"benchmark": "condense_scale", "settings": vars(args), "machine": platform.platform(),
              "cpus": torch.get_num_threads(), "loader_images_per_s": loader, "training_images_per_s": rates,
              "templated_over_plain": ratio, "peak_rss_mib": rss}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.report:
        replace_section(Path(args.report), "condense_scale", markdown(rows, args))
        print(f"updated {args.report}")


def markdown(rows: list[tuple[str, str]], args: argparse.Namespace) -> str:
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return f"""## Table D: condensation at scale on this machine (`bench/condense_scale.py`, {date.today()})

FashionMNIST upscaled to 64 px RGB, written as ImageFolders of PNGs; a 4-layer, 192-wide auxiliary model (patch 8)
distilled from a 6-layer, 384-wide teacher with the DeiT recipe; batch {args.batch}, {args.steps} steps,
{args.workers} loader worker(s), {torch.get_num_threads()} CPU threads. Peak RSS is that of the largest process of
`learngene condense` (3 steps). Raw results: `bench/results/condense_scale.json`.

| metric | value |
| --- | --- |
{table}

The GPU check (`bench/gpu_check.py`: ViT-B/16 inherit + 300 fitting steps + export, 224 px condensation throughput
templated vs plain, ViT-B composition time) has not run: no GPU machine was lent to the sessions so far."""


if __name__ == "__main__":
    main()
