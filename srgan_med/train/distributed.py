"""``torch.distributed`` set-up for runs started with ``torchrun`` (DDP), and single-process runs.

``torchrun --nproc_per_node N -m srgan_med train CONFIG`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``;
each process then trains on its own patches and ``DistributedDataParallel`` averages the gradients.
NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    """Where this process stands: ``rank`` of ``world_size``, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's copy of an equally shaped CPU ``tensor`` (a list of one without DDP)."""
        if not self.enabled:
            return [tensor]
        # gloo gathers CPU tensors; NCCL needs them on the device.
        moved = tensor.to(self.device) if dist.get_backend() == "nccl" else tensor
        parts = [torch.empty_like(moved) for _ in range(self.world_size)]
        dist.all_gather(parts, moved)
        return [p.cpu() for p in parts]

    def all_true(self, flag: torch.Tensor) -> bool:
        """True when ``flag`` (a 0-d bool tensor) is true on every rank (one host sync)."""
        value = flag.float().reshape(1)
        if self.enabled:
            dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item() > 0)

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics), as DDP does per forward."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer.data, 0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def setup_distributed(device: str = "auto") -> Distributed:
    """Join the ``torchrun`` process group when there is one; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        from srgan_med.errors import ConfigError

        raise ConfigError("performance.device: cuda was asked for, but no CUDA device is available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Distributed(rank, world_size, local_rank, chosen)
