"""The GPU check: one script, under 8 minutes on one GPU, for a session that is lent a machine (see the device tool).

    python bench/gpu_check.py [--out bench/results/gpu_check.json]

1. A ViT-B/16 at 224 px from a 768-wide template set: inherit, fit the scalers for 300 steps (batch 64, bf16
   autocast) and export the fp32 checkpoint; seconds end to end (target < 60 s on one H200-class GPU).
2. Condensation throughput at 224 px: a DeiT-S-width auxiliary model (384, templated) distilled from a ViT-B teacher
   against a plain timm student of the same architecture, same batches and loss (target: templated >= 0.9x plain).
3. Composition (Eq. 4) of all ViT-B block weights from templates: milliseconds per composition.

Timing only: the template set is a freshly initialized one and the images are random (the machine has no network
and needs none). On a machine without pydantic, install what the package needs into a folder and put it on
PYTHONPATH, e.g. `pip install --target .gpu-deps pydantic pydantic-settings webdataset` and
`PYTHONPATH=.gpu-deps python bench/gpu_check.py`. Prints a table and writes a JSON report.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from learngene import CondenseConfig, ImageData, Normalization, TemplateSet, ViTSpec, export_checkpoint, inherit
from learngene.fit_settings import FitSettings
from learngene.layers.templates import compose
from learngene.methods.wave.fit import fit_scalers
from learngene.train.condense import build_auxiliary
from learngene.train.loop import LoopConfig, LoopHooks, Objective, OptimConfig, build_optimizer, train_steps

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
IMAGENET = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
VIT_B = ViTSpec(model="vit_base_patch16_224")
DEIT_S_WIDTH = ViTSpec(model="vit_small_patch16_224", depth=6)


def random_images(count: int, generator: torch.Generator) -> ImageData:
    images = torch.randint(0, 256, (count, 3, 224, 224), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 1000, (count,), generator=generator)
    return ImageData(images, labels, IMAGENET, "random")


def synchronized() -> float:
    torch.cuda.synchronize()
    return time.perf_counter()


def inherit_fit_export(device: torch.device, data: ImageData, folder: Path) -> dict[str, float]:
    config = CondenseConfig(recipe="plain", aux=ViTSpec(model="vit_base_patch16_224", depth=4), steps=1)
    template_set = TemplateSet.from_auxiliary(
        build_auxiliary(config, torch.Generator().manual_seed(0)), name="vit-b-width", normalization=IMAGENET
    )
    t0 = synchronized()
    model = inherit(template_set, VIT_B, device=device)
    t1 = synchronized()
    fit_scalers(model, data, FitSettings(steps=300, batch_size=64), eval_samples=256)
    t2 = synchronized()
    export_checkpoint(model, folder / "vit-b.safetensors", spec=VIT_B)
    t3 = synchronized()
    return {"inherit_s": t1 - t0, "fit_300_steps_s": t2 - t1, "export_s": t3 - t2, "total_s": t3 - t0}


def condensation_rates(device: torch.device, data: ImageData) -> dict[str, float]:
    teacher = VIT_B.build().to(device).eval().requires_grad_(False)
    config = CondenseConfig(recipe="plain", aux=DEIT_S_WIDTH, batch_size=128)
    students = {
        "templated": build_auxiliary(config, torch.Generator().manual_seed(0)).to(device),
        "plain": DEIT_S_WIDTH.build().to(device),
    }
    rates = {}
    for name, student in students.items():
        named = student.trainable_named_parameters() if name == "templated" else list(student.named_parameters())
        optim = OptimConfig(lr=1e-4)
        seen: list[float] = []
        hooks = LoopHooks(progress=lambda p, seen=seen: seen.append(p.images_per_s), report_every=30)
        loop = LoopConfig(total_steps=60, batch_size=128, optim=optim, seed=0)
        train_steps(
            student,
            build_optimizer(named, optim),
            data,
            loop,
            device=device,
            objective=Objective(teacher=teacher),
            hooks=hooks,
        )
        rates[name] = seen[-1]  # the second window: after warm-up and allocator growth
    return {
        **{f"{k}_images_per_s": v for k, v in rates.items()},
        "templated_over_plain": rates["templated"] / rates["plain"],
    }


def composition_ms(device: torch.device) -> float:
    config = CondenseConfig(recipe="plain", aux=ViTSpec(model="vit_base_patch16_224"), steps=1)
    aux = build_auxiliary(config, torch.Generator().manual_seed(0)).to(device)
    slots = aux.templates.config.slots()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(3):
            for slot in slots:
                compose(aux.weight_scalers.tensors[slot.kind], aux.templates.tensors[slot.kind])
        t0 = synchronized()
        for _ in range(10):
            for slot in slots:
                compose(aux.weight_scalers.tensors[slot.kind], aux.templates.tensors[slot.kind])
        return (synchronized() - t0) / 10 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(RESULTS / "gpu_check.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script measures the GPU path")
    device = torch.device("cuda")
    data = random_images(4096, torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        report = {"vit_b_inherit_fit_export": inherit_fit_export(device, data, Path(tmp)),
                  "condensation_224px": condensation_rates(device, data),
                  "compose_vit_b_blocks_ms": composition_ms(device)}  # fmt: skip
    rows = [(f"{group}: {key}", value) for group, values in report.items() if isinstance(values, dict)
            for key, value in values.items()]  # fmt: skip
    rows.append(("compose all ViT-B block weights (ms)", report["compose_vit_b_blocks_ms"]))
    print(f"\n{'metric':<64}{'value':>12}\n" + "-" * 76)
    for name, value in rows:
        print(f"{name:<64}{value:>12.3f}")
    report.update(device=torch.cuda.get_device_name(), torch=torch.__version__, machine=platform.platform())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
