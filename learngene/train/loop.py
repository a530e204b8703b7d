"""The training loop shared by condensation, scaler fitting and plain classifier training.

One loop (`train_steps`), parameterized by what a step computes; AdamW with linear warm-up and cosine decay;
bf16 autocast on CUDA, fp32 on CPU; batches chosen deterministically from (seed, step), so a run resumed at step s
sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file
from timm.data import Mixup
from torch import Tensor, nn

from learngene.control import StopFn, Stopped
from learngene.data import ImageData
from learngene.data.loader import StepBatches, Stream, ordered_batches, step_batches
from learngene.data.transforms import Augment
from learngene.errors import IntegrityError, UserError
from learngene.formats.files import save_safetensors_atomic, sha256_file, write_json_atomic


class OptimConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    lr: float = Field(default=5e-4, gt=0)
    min_lr: float = Field(default=1e-5, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=0.05, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class Progress:
    """What a long-running loop reports: enough for a progress bar, a job status and an ETA."""

    step: int
    total_steps: int
    loss: float
    accuracy: float | None  # on the recent training batches; None for unlabelled data
    images_per_s: float
    lr: float
    eta_s: float


ProgressFn = Callable[[Progress], None]


class TrainingStopped(Stopped):
    """Raised by `train_steps` when its `should_stop` callback asks it to stop (e.g. a cancelled job)."""

    def __init__(self, step: int):
        super().__init__(f"stopped before step {step + 1}")
        self.step = step


class Runtime(BaseModel):
    """How a run executes, not what it computes: the same configuration gives the same result on any runtime (up to
    floating point)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str | None = Field(default=None, description="a torch device; none: CUDA when present, else CPU")
    workers: int | None = Field(default=None, ge=0, description="DataLoader worker processes; none: one per core")
    compile: bool = Field(default=False, description="train through torch.compile (the result is the same)")


@dataclass(frozen=True)
class Hooks:
    """What a long run tells its caller and asks it, and where it keeps its state to resume from."""

    progress: ProgressFn | None = None
    should_stop: StopFn | None = None
    checkpoint_dir: Path | None = None  # none: nothing is saved, an interrupted run starts again
    checkpoint_every: int = 500  # steps between snapshots of the training state


def pick_device(preferred: str | None = None) -> torch.device:
    """The device to run on: `preferred` if given, else CUDA when present, else CPU."""
    if preferred:
        return torch.device(preferred)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; on CPU full fp32 (bf16 on CPU is slow and would break reproducibility)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lr_at(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Linear warm-up to `lr`, then cosine decay to `min_lr` at `total_steps`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def _no_decay(name: str, param: Tensor) -> bool:
    """Biases, norms, embeddings-as-tokens and anything 1-D are not decayed (nanoGPT/timm convention)."""
    return (
        param.dim() < 2
        or name.endswith("bias")
        or "norm" in name
        or name.split(".")[-1] in ("pos_embed", "cls_token", "reg_token")
    )


def build_optimizer(named_params: Iterable[tuple[str, nn.Parameter]], cfg: OptimConfig) -> torch.optim.AdamW:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in named_params:
        if p.requires_grad:
            (no_decay if _no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas)


def distillation_loss(
    logits: Tensor,
    labels: Tensor | None,
    teacher_logits: Tensor | None,
    lam: float = 1.0,
    tau: float = 1.0,
    ce: float = 1.0,
    label_smoothing: float = 0.0,
) -> Tensor:
    """ce * CE(z, y) + lam * tau^2 * KL(softmax(z_t / tau) || softmax(z / tau)); either term may be absent.
    `labels` are class indices or, after Mixup/CutMix, soft targets (N, classes) with the smoothing folded in."""
    if (labels is None or ce == 0) and teacher_logits is None:
        raise UserError("need labels, a teacher, or both")
    loss = logits.new_zeros((), dtype=torch.float32)
    if labels is not None and ce:
        smoothing = 0.0 if labels.is_floating_point() else label_smoothing
        loss = loss + ce * F.cross_entropy(logits.float(), labels, label_smoothing=smoothing)
    if teacher_logits is not None:
        kl = F.kl_div(
            F.log_softmax(logits.float() / tau, dim=-1),
            F.log_softmax(teacher_logits.float() / tau, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        loss = loss + lam * tau**2 * kl
    return loss


# One loop, read top to bottom (nanoGPT style): batch, forward, loss, step, report, checkpoint. Splitting it would
# scatter the order of those effects, which is what a reader of a training loop needs to see.
@dataclass(frozen=True)
class LoopConfig:
    """How many steps, of which batches (the global batch, split over `world` processes), with which optimizer
    settings."""

    total_steps: int
    batch_size: int
    optim: OptimConfig
    seed: int
    rank: int = 0
    world: int = 1


@dataclass(frozen=True)
class Objective:
    """What a step minimizes: `distillation_loss` against `teacher` (no teacher: the CE term alone), on batches
    mixed by `mixup` (timm's Mixup/CutMix: soft targets) when given."""

    teacher: nn.Module | None = None
    lam: float = 1.0
    tau: float = 1.0
    ce: float = 1.0
    label_smoothing: float = 0.0
    mixup: Mixup | None = None


@dataclass(frozen=True)
class LoopHooks:
    """What the loop tells the outside world and asks it: progress, checkpoints, whether to stop."""

    progress: ProgressFn | None = None
    report_every: int = 10
    checkpoint: Callable[[int], None] | None = None
    checkpoint_every: int = 0
    should_stop: StopFn | None = None


def train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ImageData | Stream,
    loop: LoopConfig,
    *,
    device: torch.device,
    objective: Objective = Objective(),
    start_step: int = 0,
    hooks: LoopHooks = LoopHooks(),
) -> float | None:
    """Steps [start_step, loop.total_steps) of `objective` on `data` (in memory, or streamed by loader workers),
    optimizing what `optimizer` holds. Returns the mean loss of the last report window. `hooks.should_stop` is asked
    before every step; when it answers True the loop raises `TrainingStopped`."""
    total_steps, batch_size, cfg, seed = loop.total_steps, loop.batch_size, loop.optim, loop.seed
    teacher, progress, should_stop = objective.teacher, hooks.progress, hooks.should_stop
    steps = StepBatches(len(data), batch_size, seed, start_step, total_steps, loop.rank, loop.world)
    batches = step_batches(data, steps, device)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    model.train()
    # The window's sums stay on the device: the host waits for it only when the loop reports, not on every step.
    window_loss, window_correct, window_seen, window_steps = _zeros(device), _zeros(device, torch.long), 0, 0
    t0, last_loss = time.perf_counter(), None
    for step in range(start_step, total_steps):
        if should_stop is not None and should_stop():
            raise TrainingStopped(step)
        lr = lr_at(step, total_steps, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = next(batches)
        if objective.mixup is not None and y is not None:
            np.random.seed((seed * 1_000_003 + step) % 2**32)  # timm's Mixup draws from numpy: one seed per step
            x, y = objective.mixup(x, y)
        with autocast(device):
            teacher_logits = None
            if teacher is not None:
                with torch.inference_mode():  # no autograd bookkeeping at all for the frozen ancestor
                    teacher_logits = teacher(x)
                teacher_logits = teacher_logits.clone()  # an ordinary tensor: the KL term saves it for backward
            logits = model(x)
            loss = distillation_loss(
                logits, y, teacher_logits, objective.lam, objective.tau, objective.ce, objective.label_smoothing
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()

        window_loss += loss.detach().float()
        window_steps += 1
        window_seen += x.shape[0]
        if y is not None:  # against the dominant class of a mixed target
            window_correct += (logits.argmax(-1) == (y.argmax(-1) if y.is_floating_point() else y)).sum()
        done = step + 1
        if done % hooks.report_every == 0 or done == total_steps:
            last_loss = float(window_loss) / window_steps
            if progress is not None:
                elapsed = time.perf_counter() - t0
                rate = window_seen * loop.world / max(elapsed, 1e-9)  # every rank draws as many
                progress(
                    Progress(
                        step=done,
                        total_steps=total_steps,
                        loss=last_loss,
                        accuracy=int(window_correct) / window_seen if y is not None else None,
                        images_per_s=rate,
                        lr=lr,
                        eta_s=(total_steps - done) * batch_size / max(rate, 1e-9),
                    )
                )
            window_loss, window_correct, window_seen, window_steps = _zeros(device), _zeros(device, torch.long), 0, 0
            t0 = time.perf_counter()
        if hooks.checkpoint_every and done % hooks.checkpoint_every == 0 and done < total_steps:
            # Asked on every rank at the same steps (a collective decision under DDP), even where no state is written.
            if should_stop is not None and should_stop():  # e.g. a lost lease: the state is no longer ours to write
                raise TrainingStopped(done)
            if hooks.checkpoint is not None:
                hooks.checkpoint(done)
    return last_loss


def _zeros(device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.zeros((), device=device, dtype=dtype)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: ImageData | Stream,
    *,
    batch_size: int = 512,
    device: torch.device | None = None,
    teacher: nn.Module | None = None,
    lam: float = 1.0,
    tau: float = 1.0,
) -> dict[str, float]:
    """Accuracy (when labelled) and the mean loss of `distillation_loss` over the whole data set."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_loss, correct, seen, labelled = 0.0, 0, 0, False
    for x, y in ordered_batches(data, batch_size, device):
        with autocast(device):
            logits = model(x)
            teacher_logits = teacher(x) if teacher is not None else None
        total_loss += float(distillation_loss(logits, y, teacher_logits, lam, tau)) * len(x)
        seen += len(x)
        if y is not None:
            labelled, correct = True, correct + int((logits.argmax(-1) == y).sum())
    model.train(was_training)
    out = {"loss": total_loss / seen}
    if labelled:
        out["accuracy"] = correct / seen
    return out


def train_classifier(
    model: nn.Module,
    data: ImageData | Stream,
    loop: LoopConfig,
    *,
    device: torch.device | None = None,
    augment: Augment | None = None,
    hooks: LoopHooks = LoopHooks(),
) -> float | None:
    """Supervised training (ancestors, fine-tuning baselines): CE on labelled data, with `augment`'s Mixup/CutMix
    and label smoothing when given (its image transforms belong to `data`)."""
    if not (data.source.labelled if isinstance(data, Stream) else data.labels is not None):
        raise UserError("training a classifier needs labelled data")
    device = device or pick_device()
    model.to(device)
    return train_steps(
        model,
        build_optimizer(model.named_parameters(), loop.optim),
        data,
        loop,
        device=device,
        objective=Objective(
            label_smoothing=augment.label_smoothing if augment else 0.0,
            mixup=augment.mixer(cast(int, model.num_classes)) if augment else None,  # timm classifiers have one
        ),
        hooks=hooks,
    )


STATE_JSON = "train_state.json"


def _state_tensors_name(step: int) -> str:
    return f"train_state-{step:09d}.safetensors"


def save_train_state(
    folder: Path, params: Mapping[str, Tensor], optimizer: torch.optim.Optimizer, step: int, meta: dict[str, Any]
) -> None:
    """Parameters and AdamW moments as safetensors, the rest as JSON naming that file; the JSON is renamed in last.

    Each save writes its tensors under a new, step-numbered name, so the JSON in place always names a complete file
    that matches it: a kill between the two writes leaves the previous pair intact (and an orphan that the next save
    removes), never a JSON whose tensors were already replaced.
    """
    folder.mkdir(parents=True, exist_ok=True)
    opt = optimizer.state_dict()
    tensors = {f"param.{k}": v.detach().cpu().contiguous() for k, v in params.items()}
    for idx, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors_name = _state_tensors_name(step)
    save_safetensors_atomic(tensors, folder / tensors_name)
    payload = {
        "step": step,
        "param_groups": opt["param_groups"],
        "meta": meta,
        "tensors": tensors_name,
        "tensors_sha256": sha256_file(folder / tensors_name),
    }
    write_json_atomic(folder / STATE_JSON, payload)
    for stale in folder.glob("train_state-*.safetensors"):
        if stale.name != tensors_name:
            stale.unlink(missing_ok=True)


def load_train_state(
    folder: Path, params: Mapping[str, Tensor], optimizer: torch.optim.Optimizer, meta: dict[str, Any]
) -> int:
    """Restore what `save_train_state` wrote and return its step; 0 when there is nothing to resume.

    Refuses a state written with different `meta` (the run's configuration): resuming it would silently mix runs.
    """
    if not (folder / STATE_JSON).is_file():
        return 0
    payload = json.loads((folder / STATE_JSON).read_text())
    if payload["meta"] != json.loads(json.dumps(meta)):
        raise UserError(f"{folder}: the saved training state belongs to a different configuration")
    tensors_path = folder / Path(payload["tensors"]).name  # a plain name in this folder, whatever the JSON says
    if not tensors_path.is_file() or sha256_file(tensors_path) != payload["tensors_sha256"]:
        raise IntegrityError(f"{tensors_path}: missing or checksum mismatch, the saved state is corrupt")
    tensors = load_file(tensors_path)
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(tensors[f"param.{k}"])
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": payload["param_groups"]})
    return int(payload["step"])
