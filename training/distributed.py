"""torchrun / DDP plumbing for the recipes (gloo on CPU, NCCL when on GPUs).

``torchrun --nproc_per_node N -m training.stage1_asr ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; a plain
``python -m`` run is a world of one and never touches torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def wrap_ddp(module: nn.Module, info: DistInfo) -> nn.Module:
    """DistributedDataParallel over the trainable parameters (frozen ones are skipped by DDP)."""
    if not info.enabled:
        return module
    return nn.parallel.DistributedDataParallel(module, broadcast_buffers=False)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def mean_across(value: float, info: DistInfo) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item() / info.world)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def params_in_sync(params: list[torch.Tensor], info: DistInfo) -> bool:
    """True when every rank holds the same values (a float64 checksum, gathered)."""
    with torch.no_grad():
        local = torch.tensor([float(sum(p.double().sum() * (i + 1) for i, p in enumerate(params)))], dtype=torch.float64)
    if not info.enabled:
        return True
    gathered = [torch.zeros_like(local) for _ in range(info.world)]
    dist.all_gather(gathered, local)
    return all(torch.equal(g, gathered[0]) for g in gathered)
