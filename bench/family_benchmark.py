"""Table E: WAVE on the ViT families timm builds (issue 25), against the other methods, family by family.

    python bench/family_benchmark.py --quick   # development scale (about 15 minutes on 2 CPU cores)
    python bench/family_benchmark.py           # the benchmark's scale (2 seeds; several hours on 2 CPU cores)
    python bench/family_benchmark.py --quick --render --report BENCHMARKS.md   # the last quick run's section

Per family (a small member of it, 64 wide, 2 heads, patch 7, on FashionMNIST): an ancestor of that family is trained
(cached by its configuration), WAVE, TLEG and SWS are condensed from it into an auxiliary model of the same family,
and descendants of depth 2, 4 and 6 at the template width and one width that is not a multiple (96, depth 4) are
initialized by every method that applies and fine-tuned with the same budget as `learngene_benchmark.py`'s (its
`descendant` and `finetune`). Writes bench/results/family_benchmark[_quick].json and the `families` section of
BENCHMARKS.md (a quick run: bench/results/BENCHMARKS_quick.md), with the verdicts computed from that run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.learngene_benchmark import LABELS, QUICK, RESULTS, ROOT, SHAPE, SHARED, Budget, descendant, finetune, pct
from bench.sections import replace_section
from learngene import CondenseConfig, ImageData, ViTSpec, condense, load_images
from learngene.data import channel_stats
from learngene.errors import SpecError
from learngene.formats.checkpoint import export_checkpoint
from learngene.formats.template_set import Lineage, Normalization, TemplateSet
from learngene.methods import AncestorWeights
from learngene.train.loop import LoopConfig, OptimConfig, Runtime, train_classifier

# One row group per family: the timm name whose defaults give the family (the sizes are overridden).
FAMILIES = {
    "DeiT-3 (layer scale)": "deit3_small_patch16_224",
    "DINOv2 (layer scale, 4 registers)": "vit_small_patch14_reg4_dinov2",
    "SigLIP (attention pool, no class token, GELUTanh)": "vit_base_patch32_siglip_256",
    "CLIP (norm_pre, QuickGELU)": "vit_base_patch16_clip_quickgelu_224",
    "EVA-02 (the Eva class: RoPE, packed SwiGLU, q and v biases)": "eva02_tiny_patch14_224",
    "DINOv3 (the Eva class: DINOv3's RoPE, layer scale, 4 registers)": "vit_small_patch16_dinov3_qkvb",
}
# A GLU's own MLP ratio (8/3 apart, 5.33 packed) gives a hidden layer that is not a multiple of the template size
# at width 64 (170): the auxiliary model is built at ratio 4, like the plain families'.
OVERRIDES: dict[str, dict[str, Any]] = {"eva02_tiny_patch14_224": {"mlp_ratio": 4.0}}
METHODS = ("wave", "tleg", "sws", "weight_selection", "mimetic", "timm")
WIDTH, HEADS, ANCESTOR_DEPTH, AUX_DEPTH = 64, 2, 8, 6
SIZES = [(2, 64), (4, 64), (6, 64), (4, 96)]  # (depth, width): 96 is 1.5x, not a multiple
MARGIN_OVER_TIMM = 0.05


def family_spec(model: str, depth: int, width: int = WIDTH) -> ViTSpec:
    heads = width // (WIDTH // HEADS)
    return ViTSpec(model=model, embed_dim=width, num_heads=heads, depth=depth, **SHAPE, **OVERRIDES.get(model, {}))


def applies(method: str, depth: int, width: int) -> bool:
    if method in ("tleg", "sws"):
        return width == WIDTH  # depth only
    if method == "weight_selection":
        return width <= WIDTH and depth <= ANCESTOR_DEPTH  # shrinks only
    return True


def ancestor_of(model: str, data: ImageData, budget: Budget) -> tuple[AncestorWeights, float]:
    spec = family_spec(model, ANCESTOR_DEPTH)
    key = hashlib.sha256(json.dumps([spec.model_dump(mode="json"), budget.ancestor_steps, data.digest()]).encode())
    path = RESULTS / "cache" / f"family-ancestor-{key.hexdigest()[:12]}.safetensors"
    t0 = time.perf_counter()
    if not path.is_file():
        torch.manual_seed(0)
        net = spec.build()
        optim = OptimConfig(lr=1e-3, warmup_steps=budget.ancestor_steps // 20, weight_decay=0.05)
        loop = LoopConfig(total_steps=budget.ancestor_steps, batch_size=128, optim=optim, seed=0)
        train_classifier(net, data, loop, device=torch.device("cpu"))
        path.parent.mkdir(parents=True, exist_ok=True)
        export_checkpoint(net, path, spec=spec, metadata={"normalization": data.normalization.model_dump()})
    return AncestorWeights.load(model, path, spec.overrides()), time.perf_counter() - t0


def condense_family(model: str, ancestor: AncestorWeights, data: ImageData, budget: Budget) -> dict[str, TemplateSet]:
    common = dict(
        recipe="plain",
        aux=family_spec(model, AUX_DEPTH),
        steps=budget.condense_steps,
        batch_size=128,
        optim=OptimConfig(lr=1e-3, warmup_steps=budget.condense_steps // 20, weight_decay=0.05),
    )
    configs = {
        "wave": CondenseConfig(method="wave", **common),
        "tleg": CondenseConfig(method="tleg", **common),
        "sws": CondenseConfig(method="sws", stages=[1, 2, 2, 1], **common),  # [ours] as in Table A, for 6 layers
    }
    teacher = ancestor.model()
    lineage = Lineage(ancestor_model=model, ancestor_sha256=ancestor.sha256)
    return {m: condense(teacher, data, c, lineage=lineage, runtime=Runtime(device="cpu")) for m, c in configs.items()}


def run_family(model: str, data: dict[str, ImageData], budget: Budget) -> dict[str, Any]:
    try:
        arch = family_spec(model, AUX_DEPTH).resolve()
    except SpecError as exc:
        return {"model": model, "refused": str(exc).removeprefix("model: ")}
    t0 = time.perf_counter()
    ancestor, ancestor_s = ancestor_of(model, data["all"], budget)
    t1 = time.perf_counter()
    sets = condense_family(model, ancestor, data["all"], budget)
    out: dict[str, Any] = {"model": model, "family": arch.family, "ancestor_seconds": ancestor_s, "rows": []}
    out["condense_seconds"] = time.perf_counter() - t1
    out["aux_accuracy"] = {m: ts.metrics.get("aux_accuracy") for m, ts in sets.items()}
    for depth, width in SIZES:
        target = family_spec(model, depth, width)
        for method in METHODS:
            if not applies(method, depth, width):
                continue
            finals = []
            for seed in range(budget.seeds):
                net, _ = descendant(method, target, sets, ancestor, data["train"], seed, budget.fit_steps)
                finals.append(finetune(net, data["train"], data["test"], budget.finetune_epochs, seed)["final"])
            row = {"depth": depth, "width": width, "method": method, "final": statistics.mean(finals)}
            row["std"] = statistics.pstdev(finals)
            out["rows"].append(row)
            print(f"{model} d{depth} w{width} {method}: {row['final']:.3f}", flush=True)
    out["seconds"] = time.perf_counter() - t0
    return out


def verdicts(family: dict[str, Any]) -> list[str]:
    if "refused" in family:
        return [f"not run: {family['refused']}"]
    lines = []
    for depth, width in SIZES:
        scores = {r["method"]: r["final"] for r in family["rows"] if (r["depth"], r["width"]) == (depth, width)}
        wave = scores.pop("wave")
        best, who = max((v, m) for m, v in scores.items())
        over_timm = wave - scores["timm"]
        ok_best, ok_timm = wave >= best, over_timm >= MARGIN_OVER_TIMM
        lines.append(
            f"depth {depth}, width {width}: WAVE {pct(wave)} vs best other {LABELS[who]} {pct(best)}: "
            f"**{'met' if ok_best else 'not met'}**; {over_timm * 100:+.1f} points over timm's init "
            f"(target +{MARGIN_OVER_TIMM * 100:.0f}): **{'met' if ok_timm else 'not met'}**"
        )
    return lines


def section(result: dict[str, Any]) -> str:
    sizes = [f"d{d} w{w}" for d, w in SIZES]
    out = [
        "## Table E: families (issue 25)",
        "",
        f"{'Quick scale' if result['quick'] else 'Benchmark scale'}: per family an ancestor {ANCESTOR_DEPTH} deep, "
        f"{WIDTH} wide, {HEADS} heads, trained {result['budget']['ancestor_steps']} steps on FashionMNIST; WAVE, TLEG "
        f"and SWS condensed {result['budget']['condense_steps']} steps into a {AUX_DEPTH}-deep auxiliary model of the "
        f"same family; every descendant fine-tuned {result['budget']['finetune_epochs']} epochs on "
        f"{result['budget']['finetune_images']} images ({result['budget']['seeds']} seed(s)); top-1 on "
        f"{result['budget']['test_images']} test images. Written by `bench/family_benchmark.py`"
        f"{' --quick' if result['quick'] else ''} in {result['seconds'] / 60:.0f} min.",
        "",
        "| family | method | " + " | ".join(sizes) + " |",
        "| --- | --- |" + " --- |" * len(sizes),
    ]
    for name, family in result["families"].items():
        if "refused" in family:
            out.append(f"| {name} | refused (422) | " + " | ".join("-" for _ in sizes) + " |")
            continue
        for method in METHODS:
            cells = []
            for depth, width in SIZES:
                row = [r for r in family["rows"] if (r["depth"], r["width"], r["method"]) == (depth, width, method)]
                cells.append(pct(row[0]["final"]) if row else "n/a")
            out.append(f"| {name} | {LABELS[method]} | " + " | ".join(cells) + " |")
    out += ["", "Verdicts (targets: WAVE at or above every other method, and 5 points above timm's init):", ""]
    for name, family in result["families"].items():
        out += [f"- **{name}**"] + [f"  - {line}" for line in verdicts(family)]
    return "\n".join(out) + "\n"


def load(budget: Budget) -> dict[str, ImageData]:
    placeholder, kw = Normalization(mean=(0.5,), std=(0.5,)), dict(img_size=(28, 28), in_chans=1)
    uri = f"idx://{SHARED / 'FashionMNIST'}"
    everything = load_images(uri, normalization=placeholder, **kw)
    norm = channel_stats(everything.images)
    return {
        "all": dataclasses.replace(everything, normalization=norm),
        "train": load_images(uri, normalization=norm, max_samples=budget.finetune_images, seed=1, **kw),
        "test": load_images(f"{uri}?split=test", normalization=norm, max_samples=budget.test_images, seed=2, **kw),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", action="append", default=[], help="timm model name of one family (repeatable)")
    parser.add_argument("--report", type=Path, help="the report whose `families` section is written (default: "
                        "BENCHMARKS.md, bench/results/BENCHMARKS_quick.md for --quick)")  # fmt: skip
    parser.add_argument("--render", action="store_true", help="write the section from the last run's JSON, no run")
    args = parser.parse_args()
    name = "family_benchmark_quick.json" if args.quick else "family_benchmark.json"
    report = args.report or (RESULTS / "BENCHMARKS_quick.md" if args.quick else ROOT / "BENCHMARKS.md")
    if args.render:
        replace_section(report, "families", section(json.loads((RESULTS / name).read_text())))
        return
    budget = dataclasses.replace(QUICK, seeds=1) if args.quick else dataclasses.replace(Budget(), seeds=2)
    t0 = time.perf_counter()
    data = load(budget)
    families = {n: m for n, m in FAMILIES.items() if not args.only or m in args.only}
    # the budget as JSON reads it back (tuples as lists), so that a partial run recognises the last run's budget
    recorded = json.loads(json.dumps(dataclasses.asdict(budget)))
    result = {"quick": args.quick, "budget": recorded, "families": {}, "seconds": 0.0}
    previous = RESULTS / name
    if args.only and previous.is_file():  # a partial run updates its families in the last run of the same budget
        last = json.loads(previous.read_text())
        if last["budget"] == result["budget"]:
            result = last
    for family, model in families.items():
        result["families"][family] = run_family(model, data, budget)
    result["families"] = {f: result["families"][f] for f in FAMILIES if f in result["families"]}  # table order
    # the table's time: every family's own run (a partial run adds its families' to the others')
    result["seconds"] = sum(f.get("seconds", 0.0) for f in result["families"].values()) or time.perf_counter() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
    text = section(result)
    replace_section(report, "families", text)
    print(text)


if __name__ == "__main__":
    main()
