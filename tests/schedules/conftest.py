"""Shared helpers for the schedule tests: torch's own LR schedulers as an oracle."""

from collections.abc import Callable

import pytest
import torch
from torch.optim.lr_scheduler import LRScheduler

MakeScheduler = Callable[[torch.optim.Optimizer], LRScheduler]


def _torch_lrs(make_scheduler: MakeScheduler, num_steps: int, lr: float = 1.0) -> list[float]:
    """The lr each of ``num_steps`` optimizer steps uses under a torch LR scheduler."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=lr)
    scheduler = make_scheduler(optimizer)
    lrs = []
    for _ in range(num_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.fixture
def torch_lrs() -> Callable[..., list[float]]:
    return _torch_lrs
