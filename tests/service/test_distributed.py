"""Condensation on several processes (torchrun, gloo on CPU): the same parameters as one process with the same
global batch, one published set whose lineage records the world size, and a killed rank that the group survives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from learngene import CondenseConfig, Normalization
from learngene.formats.checkpoint import export_checkpoint
from learngene.pipeline import AncestorRef, CondensationSpec, run_condensation
from learngene.train.launch import launch_condensation
from learngene.train.loop import OptimConfig, Runtime
from tests.support.data import FMNIST
from tests.support.models import tiny_spec
from tests.support.scale import PROCESS_TIMEOUT_S

ANCESTOR_SPEC = tiny_spec(embed_dim=64, num_heads=2, depth=2)
NORM = Normalization(mean=(0.2860,), std=(0.3530,))


@pytest.fixture(scope="module")
def ancestor_file(ancestor, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("distributed") / "ancestor.safetensors"
    export_checkpoint(ancestor, path, spec=ANCESTOR_SPEC, metadata={"normalization": NORM.model_dump()})
    return path


def spec_for(ancestor_file: Path, run_dir: Path, steps: int, **config) -> CondensationSpec:
    ref = AncestorRef(model=ANCESTOR_SPEC.model, overrides=ANCESTOR_SPEC.overrides(), checkpoint=str(ancestor_file))
    condense = CondenseConfig(
        recipe="plain",
        aux=tiny_spec(depth=2),
        steps=steps,
        batch_size=32,
        optim=OptimConfig(lr=1e-3, warmup_steps=2),
        **config,
    )
    return CondensationSpec(
        ancestor=ref,
        data_uri=f"idx://{FMNIST}",
        config=condense,
        name="ddp",
        max_samples=2000,
        runtime=Runtime(device="cpu", workers=0),
        run_dir=str(run_dir),
        checkpoint_every=5,
    )


def test_two_processes_and_one_give_the_same_parameters(ancestor_file, tmp_path):
    spec = spec_for(ancestor_file, tmp_path / "two", steps=8)
    progress = []
    two = launch_condensation(spec, nproc=2, progress=progress.append)
    one = run_condensation(spec.model_copy(update={"run_dir": None}))
    for key, tensor in one.tensors().items():
        torch.testing.assert_close(two.tensors()[key], tensor, rtol=1e-4, atol=1e-5, msg=key)
    assert two.lineage.condensation["world_size"] == 2 and one.lineage.condensation["world_size"] == 1
    assert progress and progress[-1].step == 8 and progress[-1].total_steps == 8  # relayed from rank 0


def rank_pids(launcher: psutil.Process) -> list[int]:
    return sorted(p.pid for p in launcher.children(recursive=True) if "learngene.train.launch" in " ".join(p.cmdline()))


def test_a_killed_rank_restarts_the_group_which_resumes_and_publishes_once(ancestor_file, tmp_path):
    """`learngene condense --nproc-per-node 2`, one rank SIGKILLed mid-run: torchrun restarts the group, the ranks
    resume from the last snapshot, and the store gets exactly one version."""
    state = tmp_path / "run"
    args = [
        sys.executable, "-m", "service.cli", "condense", "--ancestor-model", ANCESTOR_SPEC.model,
        "--ancestor", str(ancestor_file), *[a for k, v in ANCESTOR_SPEC.overrides().items()
                                            for a in ("--ancestor-set", f"{k}={v}")],
        "--aux-model", ANCESTOR_SPEC.model, *[a for k, v in tiny_spec(depth=2).overrides().items()
                                              for a in ("--aux-set", f"{k}={v}")],
        "--data", f"idx://{FMNIST}", "--steps", "400", "--batch-size", "32", "--recipe", "plain", "--workers", "0",
        "--nproc-per-node", "2", "--checkpoint-dir", str(state), "--checkpoint-every", "20", "--publish", "ddp",
    ]  # fmt: skip
    cli = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until the ranks have written a snapshot
            snapshot = state / "train_state.json"
            if snapshot.is_file() and json.loads(snapshot.read_text())["step"] >= 40:
                break
            assert cli.poll() is None, cli.communicate()
            time.sleep(0.2)
        else:
            raise AssertionError("no snapshot at step 40 within 120 s")
        killed = rank_pids(psutil.Process(cli.pid))[-1]
        os.kill(killed, signal.SIGKILL)
        out, err = cli.communicate(timeout=PROCESS_TIMEOUT_S)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["ref"] == "ddp@1"
    listed = subprocess.run(
        [sys.executable, "-m", "service.cli", "templates", "list", "ddp", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert [s["version"] for s in json.loads(listed.stdout.strip().splitlines()[-1])] == [1]
    shown = subprocess.run(
        [sys.executable, "-m", "service.cli", "templates", "show", "ddp@1", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(shown.stdout.strip().splitlines()[-1])["manifest"]["lineage"]["condensation"]["world_size"] == 2
    log = (state / "log").read_text()
    assert "failed (exitcode: -9) local_rank: 1" in log, log[-2000:]  # torchrun saw the rank die, and restarted:
    resumed = [line for line in log.splitlines() if "resumes at step" in line]
    assert resumed and int(resumed[0].split("resumes at step ")[1].split()[0]) >= 40, log[-2000:]
