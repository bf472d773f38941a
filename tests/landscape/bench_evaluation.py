"""Batched (vmap) against one-point-at-a-time evaluation of a 2-D slice.

Run: ``.venv/bin/python -m tests.landscape.bench_evaluation`` (not collected by pytest).
The numbers in gradwise/landscape/_landscape.py (CUDA_POINTS_PER_BATCH and the CPU default) come from here.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from gradwise.landscape import random_directions, slice_2d
from gradwise.models import cnn1d, mlp


def _time(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], points: int) -> float:
    directions = random_directions(model)
    slice_2d(model, "cross_entropy", data, directions, resolution=3, points_per_batch=points)
    start = time.perf_counter()
    slice_2d(model, "cross_entropy", data, directions, resolution=21, points_per_batch=points)
    return time.perf_counter() - start


def main() -> None:
    torch.manual_seed(0)
    setups = {
        "mlp 2x32, BatchNorm": (mlp((2,), 3, width=32, depth=2, norm="batch"), (512, 2)),
        "cnn1d 2x16, BatchNorm": (cnn1d((1, 40), 10, width=16, depth=2), (512, 1, 40)),
    }
    for name, (model, shape) in setups.items():
        data = (torch.randn(shape), torch.randint(0, 3 if len(shape) == 2 else 10, (shape[0],)))
        times = {points: _time(model, data, points) for points in (1, 4, 16, 64)}
        row = "  ".join(
            f"{points:>2} per call {seconds:6.3f} s" for points, seconds in times.items()
        )
        print(f"{name:28s} 441 points: {row}")


if __name__ == "__main__":
    main()
