"""Process-group set-up for `torchrun` (NCCL on GPUs, gloo on the CPU; a single process needs none), and what
training, evaluation and purification do with it: split work by rank, gather results, agree on a value."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "current_context", "init_distributed"]

T = TypeVar("T")


@dataclass
class DistributedContext:
    """This process's place in the run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # whether `init_distributed` created the process group (and must end it)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of `values` over all processes (itself when alone)."""
        if not self.enabled:
            return values
        values = values.clone()
        dist.all_reduce(values)
        return values / self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether `flag` is true on any process (so that all stop together)."""
        if not self.enabled:
            return flag
        value = torch.tensor([float(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        """Wait for every process."""
        if self.enabled:
            dist.barrier()

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's share of `items`: every `world_size`-th one from its rank (all of them when alone)."""
        return list(items[self.rank :: self.world_size])

    def gather(self, value: Any) -> list[Any]:
        """`value` from every process, in rank order, on every process (`[value]` when alone); any picklable."""
        if not self.enabled:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def agree(self, value: T) -> T:
        """Rank 0's `value` on every process (e.g. a seed drawn at random)."""
        if not self.enabled:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def close(self) -> None:
        """End the process group if this context created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def init_distributed(device_type: str) -> DistributedContext:
    """Join the process group that `torchrun` describes in the environment (RANK, WORLD_SIZE, ...).

    Args:
        device_type: "cuda" selects NCCL and this process's GPU (LOCAL_RANK); anything else uses gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = not dist.is_initialized()
    if owns:
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, owns_group=owns)


def current_context() -> DistributedContext:
    """This process's place in a process group that is already set up (by `init_distributed` or the caller), or
    a single process's context when there is none: how library functions find out that they run sharded."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return DistributedContext()
    return DistributedContext(rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                              world_size=dist.get_world_size())
