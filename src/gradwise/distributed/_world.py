"""The process group as the Trainer sees it: ranks, shards, and the few collectives it needs.

One process (no process group) is a world of size 1 whose collectives do nothing, so the
Trainer has one code path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

#: ``dist.all_gather_into_tensor`` under its torch 2.13 name (the old one warns there and the
#: new one is missing before): each rank's tensor, concatenated into one flat output.
all_gather_flat = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


@dataclass(frozen=True)
class World:
    """This process's place among the training processes.

    Attributes:
        rank: this process's rank, 0 to ``size - 1``; rank 0 writes the run folder.
        size: the number of processes (the world size).
        local_rank: the rank on this machine (picks the GPU).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def current(cls) -> World:
        """The initialized default process group, or a world of one."""
        if dist.is_available() and dist.is_initialized():
            return cls(
                dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
            )
        return cls()

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes metrics, checkpoints and reports."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    def shard(self, count: int) -> slice:
        """This rank's contiguous part of ``count`` samples (sizes differ by at most 1)."""
        return slice(count * self.rank // self.size, count * (self.rank + 1) // self.size)

    def sum(self, values: Tensor) -> Tensor:
        """``values`` summed over all ranks (in place; returned for chaining)."""
        if self.is_distributed:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.is_distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.is_distributed:
            return [value]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def any(self, flags: Sequence[bool], device: torch.device) -> list[bool]:
        """Each flag: true on every rank when it is true on some rank (one message)."""
        if not self.is_distributed:
            return list(flags)
        values = torch.tensor([1.0 if flag else 0.0 for flag in flags], device=device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return [bool(value > 0) for value in values.tolist()]
