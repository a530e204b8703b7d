"""torch.distributed, as the training code sees it: which rank this process is, and the few collective decisions.

A process started by torchrun (WORLD_SIZE > 1 in its environment) joins the process group once (NCCL on CUDA,
gloo on CPU); everything else runs unchanged in a single process. The loop's data share comes from `World.rank`
and `World.size` (`learngene.data.loader.StepBatches`); gradients are averaged by DistributedDataParallel; only
rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

GROUP_TIMEOUT = timedelta(minutes=30)  # torch's default for collectives; a rank that long silent is lost


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that writes state, progress and results."""
        return self.rank == 0


def current() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def join_from_env(device_type: str) -> World:
    """Join the process group torchrun describes in the environment (a no-op for a single process).

    The group's keys live under a prefix of their own per restart of the group: after a rank died, the restarted
    ranks otherwise read the dead attempt's addresses from torchrun's store and wait on them (seen with torch 2.14
    and gloo: one restart in two hung in `connectFullMesh`)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        rank = int(os.environ["RANK"])
        if device_type == "cuda":  # NCCL's collectives (and `any_rank`'s flag) run on the current device
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun serves the store itself
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            size,
            is_master=not agent_store and rank == 0,
            timeout=GROUP_TIMEOUT,
            multi_tenant=not agent_store,
        )
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(
            backend="nccl" if device_type == "cuda" else "gloo",
            store=dist.PrefixStore(f"attempt-{attempt}", store),
            rank=rank,
            world_size=size,
            timeout=GROUP_TIMEOUT,
        )
    return current()


def device_for(world: World, preferred: torch.device) -> torch.device:
    """Each rank of a CUDA run takes the GPU of its local rank."""
    if preferred.type == "cuda" and world.size > 1:
        return torch.device("cuda", world.local_rank)
    return preferred


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when it is True on any: a stop decided by one rank is taken by all at the same step, so no
    rank waits forever in a collective the others have left."""
    if world.size == 1:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        value = value.cuda()
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
