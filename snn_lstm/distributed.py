"""Data-parallel training with torch.distributed, started by torchrun:

    torchrun --nproc_per_node=2 -m snn_lstm.train run_name=ddp trainer.batch_size=128 ...

Every process builds the same global batch of `trainer.batch_size` examples (the
same step-seeded order and spike draws as a single process) and trains on its own
contiguous slice of batch_size / world examples; DistributedDataParallel averages
the gradients, so the update equals the single-process one on the global batch.
Only rank 0 evaluates, logs to MLflow and writes checkpoints. Backends: gloo on
CPUs, nccl on GPUs (one per process, cuda:LOCAL_RANK).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from snn_lstm.errors import UserError


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: Tensor) -> Tensor:
        """This process's contiguous slice of a global batch (dimension 0)."""
        if self.world == 1:
            return batch
        size = len(batch) // self.world
        return batch[self.rank * size : (self.rank + 1) * size]

    def mean(self, value: float) -> float:
        """The mean of `value` over the processes."""
        if self.world == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total)
        return total.item() / self.world


def join(device: torch.device, batch_size: int, run_name: str | None) -> tuple[Group, torch.device]:
    """The process group torchrun asked for (none when WORLD_SIZE is unset or 1),
    and the device this process trains on."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Group(), device
    if batch_size % world:
        raise UserError(f"trainer.batch_size {batch_size} must be a multiple of the {world} processes")
    if not run_name:
        raise UserError("under torchrun every process must write into the same run folder: set run_name=NAME")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Group(dist.get_rank(), world, local_rank), device


def leave(group: Group) -> None:
    if group.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
