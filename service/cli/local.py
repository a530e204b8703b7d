"""Commands that run the method on this machine, no server needed: train an ancestor, condense it into a template
set, initialize a descendant, evaluate a checkpoint.

This module loads torch and timm (the condensation options take their defaults from `CondenseConfig`): the command
line imports it only when one of these commands runs or shows its help (`service.cli.DEFERRED`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated

import typer

from jobs.contracts import AncestorSpec, Architecture, InitializationRequest
from jobs.initialization import load_inputs, run_request
from jobs.publications import Publications
from jobs.settings import get_settings
from learngene import CondenseConfig, ViTSpec, load_images, load_model, read_metadata
from learngene.data import DataAccess
from learngene.data.transforms import Augment
from learngene.errors import CheckpointError, IntegrityError, UserError
from learngene.fit_settings import Calibration, FitSettings
from learngene.formats.ancestors import resolve_ancestor
from learngene.formats.files import sha256_file
from learngene.formats.pretrained import WEIGHTS, write_companions
from learngene.formats.template_set import Normalization, TemplateSet
from learngene.methods import LEARNGENE_METHODS, METHODS
from learngene.pipeline import AncestorRef, CondensationSpec, TrainingSpec, run_training
from learngene.train.launch import condense_run
from learngene.train.loop import Hooks, OptimConfig, Runtime, pick_device
from learngene.train.loop import evaluate as evaluate_model
from service.cli.common import (
    CALIBRATION_SAMPLES,
    FIT,
    OUT_HELP,
    EvalData,
    FitBatch,
    FitLr,
    FitSteps,
    MaxSamples,
    Noise,
    Recipe,
    Seed,
    SetOption,
    Workers,
    bar_on_stderr,
    emit,
    is_folder,
    parse_overrides,
    show_warnings,
)
from service.cli.machine import get_store, progress_bar, user_errors
from templates_store import StoreError
from templates_store.refs import ResolvedRef, check_name

# Defaults come from the model the options fill, so a command and the run it starts cannot disagree.
CONDENSE = {name: field.get_default(call_default_factory=True) for name, field in CondenseConfig.model_fields.items()
            if not field.is_required()}  # fmt: skip


def make_spec(model: str, pairs: list[str] | None, option: str = "--set") -> ViTSpec:
    return ViTSpec(model=model, **parse_overrides(pairs or [], option))


def device_option(device: str | None) -> str:
    return str(pick_device(device or get_settings().device))


def train(
    model: Annotated[str, typer.Option(help="timm model name")],
    data: Annotated[str, typer.Option(help="training data reference")],
    out: Annotated[Path, typer.Option(help="output .safetensors")],
    set_: SetOption = None,
    eval_data: Annotated[str | None, typer.Option(help="held-out data reference for accuracy")] = None,
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 1e-3,
    warmup: int = 100,
    weight_decay: float = 0.05,
    seed: int = 0,
    recipe: Recipe = "plain",
    workers: Workers = None,
    device: str | None = None,
) -> None:
    """Train a timm ViT classifier from scratch (an ancestor, or a baseline)."""
    with user_errors():
        spec = make_spec(model, set_)
        optim = OptimConfig(lr=lr, warmup_steps=warmup, weight_decay=weight_decay)
        with progress_bar(steps, "train") as bar:
            training = TrainingSpec(
                model=spec,
                data_uri=data,
                eval_uri=eval_data,
                steps=steps,
                batch_size=batch_size,
                optim=optim,
                seed=seed,
                augment=Augment.for_recipe(recipe),
            )
            result = run_training(
                training,
                out,
                access=DataAccess(get_settings().local_data_roots()),
                runtime=Runtime(device=device_option(device), workers=workers),
                progress=bar,
            )
    emit(result.model_dump())


# Most of its length is the typer options, declared where they are used (one line each).
def condense(
    ancestor: Annotated[
        str,
        typer.Option(
            help="ancestor: a .safetensors file, a timm local-dir folder "
            "(model.safetensors + config.json) or hf-hub:<owner>/<name> (cached)"
        ),
    ],
    data: Annotated[str, typer.Option(help="condensation data reference")],
    aux_model: Annotated[str, typer.Option(help="timm model name of the auxiliary model")],
    ancestor_model: Annotated[
        str | None, typer.Option(help="timm model name of the ancestor (default: from its checkpoint)")
    ] = None,
    method: Annotated[str, typer.Option(help="learngene to condense: wave, tleg or sws")] = "wave",
    stages: Annotated[str, typer.Option(help="SWS: layers per stage, comma-separated")] = ",".join(
        map(str, CONDENSE["stages"])
    ),
    publish: Annotated[str | None, typer.Option(help="publish into the template store under this name")] = None,
    out: Annotated[Path | None, typer.Option(help="also (or only) write the template-set folder here")] = None,
    name: Annotated[str | None, typer.Option(help="the set's own name (default: --publish, else --out's name)")] = None,
    ancestor_set: Annotated[
        list[str] | None, typer.Option(help="ancestor override key=value (repeatable; default: from its checkpoint)")
    ] = None,
    aux_set: Annotated[list[str] | None, typer.Option(help="auxiliary override key=value (repeatable)")] = None,
    templates: Annotated[
        list[str] | None, typer.Option(help="template count kind=N (repeatable; N=0 disables a kind)")
    ] = None,
    template_size: Annotated[int | None, typer.Option(help="template side a (default: the auxiliary width)")] = None,
    eval_data: Annotated[str | None, typer.Option(help="held-out data for the recorded accuracies")] = None,
    steps: int = CONDENSE["steps"],
    batch_size: int = CONDENSE["batch_size"],
    lr: float = CONDENSE["optim"].lr,
    warmup: int = CONDENSE["optim"].warmup_steps,
    weight_decay: float = CONDENSE["optim"].weight_decay,
    lam: float = CONDENSE["lam"],
    tau: float = CONDENSE["tau"],
    seed: int = CONDENSE["seed"],
    recipe: Recipe = CONDENSE["recipe"],
    epochs: Annotated[
        float | None, typer.Option(help="run length in passes over the data (instead of --steps)")
    ] = None,
    warmup_epochs: Annotated[float | None, typer.Option(help="warm-up in passes over the data (DeiT: 5)")] = None,
    workers: Workers = None,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="resumable state; default: one folder per run under LEARNGENE_WORK_DIR")
    ] = None,
    checkpoint_every: Annotated[int, typer.Option(help="steps between snapshots of the training state")] = 500,
    nproc_per_node: Annotated[int, typer.Option(help="processes on this machine (torchrun; one per GPU)")] = 1,
    nnodes: Annotated[int, typer.Option(help="machines taking part (each runs this same command)")] = 1,
    rdzv_endpoint: Annotated[str | None, typer.Option(help="host:port of the rendezvous, for nnodes > 1")] = None,
    compile_model: Annotated[bool, typer.Option("--compile", help="train through torch.compile")] = False,
    device: str | None = None,
) -> None:
    """Condense an ancestor into a template set; rerunning the command resumes it, or returns what it published.
    The ancestor's architecture comes from its checkpoint (safetensors header, or config.json) unless given. With
    --nproc-per-node or --nnodes it runs under torchrun, DistributedDataParallel over the auxiliary model."""
    with user_errors():
        if publish is None and out is None:
            raise UserError("give --publish NAME, --out FOLDER, or both")
        # Names are refused now, not after hours of condensation.
        name = check_name(name or publish or out.name)
        if publish is not None:
            check_name(publish)
        counts = dict(CONDENSE["template_counts"])
        counts.update({k: int(v) for k, v in parse_overrides(templates or [], "--templates").items()})
        config = CondenseConfig(
            method=method,
            stages=[int(n) for n in stages.split(",")],
            aux=make_spec(aux_model, aux_set, "--aux-set"),
            template_size=template_size,
            template_counts=counts,
            steps=steps,
            batch_size=batch_size,
            optim=OptimConfig(lr=lr, warmup_steps=warmup, weight_decay=weight_decay),
            lam=lam,
            tau=tau,
            seed=seed,
            recipe=recipe,
            epochs=epochs,
            warmup_epochs=warmup_epochs,
        )
        ref = AncestorRef(
            model=ancestor_model, overrides=parse_overrides(ancestor_set or [], "--ancestor-set"), checkpoint=ancestor
        )
        roots = get_settings().local_data_roots()
        run = _run_key(config, ref, data, roots)
        state = checkpoint_dir or get_settings().work_dir / "condense" / run[:16]
        publication = json.dumps([run, name, eval_data, publish])  # what a second publication would duplicate
        earlier = _published_before(state, publication) if publish is not None else None
        if earlier is not None:
            resolved, template_set = earlier  # also what --out writes: the set that was published
            typer.echo(f"note: this run was already published as {resolved}; not publishing it again", err=True)
        else:
            spec = CondensationSpec(
                ancestor=ref,
                data_uri=data,
                config=config,
                name=name,
                eval_uri=eval_data,
                allowed_roots=[str(r) for r in roots] if roots is not None else None,
                runtime=Runtime(device=device_option(device), workers=workers, compile=compile_model),
                run_dir=str(state),
                checkpoint_every=checkpoint_every,
            )
            with progress_bar(steps, "condense") as bar:
                template_set = condense_run(
                    spec, nproc=nproc_per_node, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint, progress=bar
                )
        summary = {"name": name, "learngene_parameters": template_set.num_learngene_parameters()}
        if out is not None:
            summary["path"] = str(template_set.save(out))
        if publish is not None:
            if earlier is None:
                resolved = get_store().publish(template_set, publish)
                Publications(state).record(publication, resolved.model_dump())
            summary.update(ref=str(resolved), digest=resolved.digest, already_published=earlier is not None)
    emit({**summary, "metrics": template_set.metrics})


def _run_key(config: CondenseConfig, ancestor: AncestorRef, data: str, roots) -> str:
    """What makes a run distinct: the same command resumes (or finds its publication), a changed one starts afresh."""
    weights = resolve_ancestor(ancestor.checkpoint, ancestor.model, ancestor.overrides, roots).checkpoint
    key = json.dumps([config.model_dump(mode="json"), ancestor.model_dump(), sha256_file(weights), data])
    return hashlib.sha256(key.encode()).hexdigest()


def _published_before(state: Path, publication: str) -> tuple[ResolvedRef, TemplateSet] | None:
    """The version this publication made earlier, and its set, if the store still holds it unchanged."""
    record = Publications(state).get(publication)
    if record is None:
        return None
    earlier = ResolvedRef.model_validate(record)
    try:
        return earlier, get_store().load(earlier)
    except (StoreError, IntegrityError):  # deleted or changed since: publish again
        return None


# Most of its length is the typer options, declared where they are used (one line each).
def init(
    model: Annotated[str, typer.Option(help="timm model name of the descendant")],
    out: Annotated[Path, typer.Option(help=OUT_HELP)],
    set_: SetOption = None,
    method: Annotated[str, typer.Option(help=f"one of {', '.join(METHODS)}")] = "wave",
    templates: Annotated[str, typer.Option(help="template set (wave, tleg, sws): name, name@3 or name@alias")] = (
        "demo@prod"
    ),
    calibration: Annotated[str | None, typer.Option(help="calibration data for WAVE's scaler fitting")] = None,
    max_samples: MaxSamples = CALIBRATION_SAMPLES,
    eval_data: EvalData = None,
    steps: FitSteps = None,
    lr: FitLr = FIT.lr,
    batch_size: FitBatch = FIT.batch_size,
    noise: Noise = FIT.noise,
    seed: Seed = FIT.seed,
    ancestor: Annotated[
        Path | None,
        typer.Option(help="ancestor weights: the source of weight_selection/heru_lg/auto_lg, or WAVE's KL teacher"),
    ] = None,
    ancestor_model: Annotated[
        str | None, typer.Option(help="its timm name (default: the template set's lineage)")
    ] = None,
    ancestor_set: Annotated[list[str] | None, typer.Option(help="its overrides key=value (repeatable)")] = None,
    device: str | None = None,
) -> None:
    """Initialize a ViT of the requested size and write it as a timm / Hugging Face folder (or a .safetensors file)."""
    with user_errors():
        store = get_store()
        architecture = Architecture(model=model, overrides=parse_overrides(set_ or []))
        template = None
        if method in LEARNGENE_METHODS:
            template = store.resolve(templates)
        ancestor_spec = None
        if ancestor is not None:
            lineage = store.manifest(template).lineage if template else None
            name = ancestor_model or (lineage.ancestor_model if lineage else None)
            if not name:
                raise UserError("--ancestor-model is needed (no template set lineage names the ancestor)")
            overrides = (
                parse_overrides(ancestor_set, "--ancestor-set")
                if ancestor_set
                else (lineage.ancestor_overrides if lineage else {})
            )
            ancestor_spec = AncestorSpec(model=name, overrides=overrides, checkpoint=str(ancestor))
        request = InitializationRequest(
            **architecture.model_dump(),
            method=method,
            template_set=templates,
            ancestor=ancestor_spec,
            calibration=Calibration(uri=calibration, max_samples=max_samples, eval_uri=eval_data)
            if calibration
            else None,
            fit=FitSettings(
                lr=lr, batch_size=batch_size, seed=seed, noise=noise, **({} if steps is None else {"steps": steps})
            ),
        )
        if is_folder(out) and out.exists() and not out.is_dir():
            raise UserError(f"--out {out}: not a folder (a path ending in .safetensors writes the weights alone)")
        if problem := request.fitting_without_data():
            raise UserError(f"calibration: {problem}")
        inputs = load_inputs(request, template, store, DataAccess(get_settings().local_data_roots()))
        weights = out / WEIGHTS if is_folder(out) else out
        with progress_bar(request.fit.steps if inputs.data else 0, "fit") as bar:
            result = run_request(request, inputs, weights, device=device_option(device), hooks=Hooks(progress=bar))
        files = write_companions(out) if is_folder(out) else None  # config.json and README.md from its header
    report = result.fit
    show_warnings([c.model_dump() for c in result.warnings])
    emit(
        {
            **result.checkpoint.model_dump(),
            **({"folder": str(out), "files": {k: v.model_dump() for k, v in files.items()}} if files else {}),
            "method": method,
            "template_set": result.template_set,
            "spec": result.spec,
            "fit": report.model_dump(),
            "warnings": [c.model_dump() for c in result.warnings],
        }
    )


def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="a checkpoint written by this tool (.safetensors)")],
    data: Annotated[str, typer.Option(help="labelled data reference")],
    max_samples: int | None = None,
    device: str | None = None,
) -> None:
    """Top-1 accuracy of a checkpoint, rebuilt from the spec and normalization in its own header."""
    with user_errors():
        meta = read_metadata(checkpoint)
        if "spec" not in meta:
            raise CheckpointError(f"{checkpoint} has no learngene metadata; it was not written by this tool")
        spec = ViTSpec.model_validate(meta["spec"])
        arch = spec.resolve()
        images = load_images(
            data,
            img_size=arch.img_size,
            in_chans=arch.in_chans,
            normalization=Normalization.model_validate(meta["normalization"]),
            max_samples=max_samples,
            num_classes=arch.num_classes,
            access=DataAccess(get_settings().local_data_roots()),
        )
        dev = pick_device(device or get_settings().device)
        net = load_model(spec.model, checkpoint, spec.overrides()).to(dev)
        bar = bar_on_stderr("evaluate", "img", len(images))

        def count(module, args, output) -> None:  # returns None: a hook's return value would replace the output
            bar.update(len(args[0]))

        # Counted as the batches pass through the model: the evaluation loop itself reports no progress.
        with bar, net.register_forward_hook(count):  # the handle removes the hook on exit
            result = evaluate_model(net, images, device=dev)
    emit({"path": str(checkpoint), "samples": len(images), **result})
