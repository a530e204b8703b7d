"""A condensation on many processes: torchrun (torch.distributed elastic) starts the ranks, this module is both
sides of it.

The launching side (`launch_condensation`, used by `learngene condense --nproc-per-node N` and by the condense
worker) writes the run's `CondensationSpec` into the run's folder, starts `python -m torch.distributed.run ... -m
learngene.train.launch SPEC`, and while it runs relays rank 0's progress (a JSON file) and a stop request (a file every
rank polls between steps, decided collectively). torchrun restarts the whole group when a rank dies
(`max_restarts`); the ranks resume from the run's training state, so a killed rank costs the steps since the last
snapshot. Only rank 0 writes: the state, the progress, and the finished template set, which the launching side
loads (verified) and returns. If the launching process dies, the launcher gets SIGTERM (Linux parent-death signal)
and stops its ranks: no orphaned run keeps writing a state a redelivered job is about to resume.

Several machines: every machine runs the same command with `nnodes` and one `rdzv_endpoint` (c10d rendezvous);
the run folder must then be on storage all of them see.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import faulthandler
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from learngene.control import StopFn, Stopped
from learngene.errors import UserError
from learngene.formats.files import write_json_atomic
from learngene.formats.template_set import TemplateSet
from learngene.pipeline import CondensationSpec, run_condensation
from learngene.train.distributed import join_from_env
from learngene.train.loop import Progress, ProgressFn, pick_device

SPEC, PROGRESS, STOP, STOPPED, RESULT, LOG = "launch.json", "progress.json", "STOP", "stopped.json", "result", "log"


def condense_run(
    spec: CondensationSpec,
    *,
    nproc: int = 1,
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> TemplateSet:
    """The condensation `spec` names: in this process, or on `nproc` x `nnodes` torchrun ranks. Either way its state
    is kept in `spec.run_dir`, so an interrupted run resumes there on any number of processes."""
    if nproc == 1 and nnodes == 1 and rdzv_endpoint is None:
        return run_condensation(spec, progress=progress, should_stop=should_stop)
    return launch_condensation(
        spec, nproc=nproc, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint, progress=progress, should_stop=should_stop
    )


def launch_condensation(
    spec: CondensationSpec,
    *,
    nproc: int,
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    max_restarts: int = 3,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    poll_s: float = 0.5,
) -> TemplateSet:
    """Run `spec` on `nproc` processes per node under torchrun and return the template set rank 0 wrote."""
    if spec.run_dir is None:
        raise UserError("a condensation on several processes needs its run_dir: the ranks share it")
    folder = Path(spec.run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in (PROGRESS, STOP, STOPPED):
        (folder / leftover).unlink(missing_ok=True)
    shutil.rmtree(folder / RESULT, ignore_errors=True)  # what is returned is this launch's result only
    write_json_atomic(folder / SPEC, spec.model_dump(mode="json"))
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
               f"--max-restarts={max_restarts}"]  # fmt: skip
    if nnodes == 1 and rdzv_endpoint is None:
        command.append("--standalone")  # one machine: a free local port, no rendezvous server
    else:
        command += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
    command += ["-m", "learngene.train.launch", str(folder / SPEC)]
    with open(folder / LOG, "ab") as log:
        launcher = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    try:
        seen = None
        while launcher.poll() is None:
            time.sleep(poll_s)
            seen = _relay(folder, progress, seen)
            if should_stop is not None and should_stop():
                (folder / STOP).touch()
        _relay(folder, progress, seen)
    finally:
        if launcher.poll() is None:  # we are leaving early (an error here): the ranks go too
            launcher.terminate()
            launcher.wait(timeout=60)
    if (folder / STOPPED).is_file():
        raise Stopped(json.loads((folder / STOPPED).read_text())["reason"])
    if launcher.returncode != 0:
        tail = (folder / LOG).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the distributed condensation failed (torchrun exit {launcher.returncode}):\n{tail}")
    return TemplateSet.load(folder / RESULT)


def _libc_prctl():
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    return None


# Looked up once here: between fork and exec (`_die_with_parent`) nothing may load a library or take a lock.
_PRCTL = _libc_prctl()


def _die_with_parent() -> None:
    """In the launcher's process, before exec: SIGTERM when the launching process dies (Linux; elsewhere a no-op)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _relay(folder: Path, progress: ProgressFn | None, seen: Any) -> Any:
    """Pass rank 0's latest progress on (once per change)."""
    path = folder / PROGRESS
    if progress is None or not path.is_file():
        return seen
    text = path.read_text()
    if text != seen:
        progress(Progress(**json.loads(text)))
    return text


def run_rank(spec: CondensationSpec) -> None:
    """One rank's share of the condensation (run by torchrun in every process)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <rank>` writes every thread's stack to the run's log
    if spec.run_dir is None:  # `_run_torchrun` always gives one
        raise UserError("a condensation rank needs the run_dir its ranks share")
    folder = Path(spec.run_dir)
    device = pick_device(spec.runtime.device)
    world = join_from_env(device.type)

    def report(p: Progress) -> None:
        write_json_atomic(folder / PROGRESS, dataclasses.asdict(p))

    try:
        template_set = run_condensation(
            spec, progress=report if world.main else None, should_stop=(folder / STOP).exists
        )
    except Stopped as exc:
        if world.main:
            write_json_atomic(folder / STOPPED, {"reason": str(exc)})
        return
    if world.main:
        staging = folder / f"{RESULT}.new"
        template_set.save(staging)
        staging.replace(folder / RESULT) if not (folder / RESULT).exists() else _swap(staging, folder / RESULT)


def _swap(staging: Path, target: Path) -> None:
    """Replace an earlier attempt's result folder with this one."""
    old = target.with_name(f"{target.name}.old")
    target.replace(old)
    staging.replace(target)
    for path in old.iterdir():
        path.unlink()
    old.rmdir()


if __name__ == "__main__":
    run_rank(CondensationSpec.model_validate_json(Path(sys.argv[1]).read_text()))
