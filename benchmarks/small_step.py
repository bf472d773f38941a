"""Per-step overhead on a small model, with and without an LR scheduler, against torch.optim.

benchmarks/optim_step.py times 10M parameters, where the kernels' memory traffic is all
of a step. On a small model a step is mostly Python and dispatch, and an LR scheduler
writes a new lr into every param group at every step, which gradwise's optimizer must
notice (its transform is built from the hyperparameters). This times one ``step()`` (plus
the scheduler's ``step()``) of a 64-64-10 MLP's 4 tensors (4,810 parameters) whose
gradients are fixed, for gradwise's and torch's default paths (fused where torch has a
kernel), with no scheduler and with ``torch.optim.lr_scheduler.LambdaLR`` (gradwise's
ScheduleLR, which ``gradwise train`` uses, writes the group's lr the same way). The
variants are timed in turns, one run of each per round; the minimum over rounds of each
run's median is printed, in microseconds, and the ratio to torch's.

Run: .venv/bin/python benchmarks/small_step.py [--rounds 7] [--steps 400]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from gradwise import optim

Make = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]

CASES: dict[str, tuple[Make, Make]] = {
    "SGD momentum": (
        lambda p: optim.SGD(p, lr=1e-2, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, fused=True),
    ),
    "Adam": (
        lambda p: optim.Adam(p, lr=1e-3),
        lambda p: torch.optim.Adam(p, lr=1e-3, fused=True),
    ),
    "AdamW": (
        lambda p: optim.AdamW(p, lr=1e-3, weight_decay=0.01),
        lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01, fused=True),
    ),
    "RMSprop": (
        lambda p: optim.RMSprop(p, lr=1e-3),
        lambda p: torch.optim.RMSprop(p, lr=1e-3, foreach=True),
    ),
}


def median_step_us(make: Make, scheduled: bool, steps: int) -> float:
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    generator = torch.Generator().manual_seed(0)
    for parameter in model.parameters():
        parameter.grad = torch.randn(parameter.shape, generator=generator) * 1e-3
    optimizer = make(list(model.parameters()))
    scheduler = (
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1.0 + 0.01 * step))
        if scheduled
        else None
    )
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[10:]) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; MLP 64-64-10 (4 tensors, 4,810 parameters)")
    print(f"min over {args.rounds} rounds of the median of {args.steps} steps, in microseconds\n")
    print(f"{'optimizer':14} {'scheduler':10} {'gradwise':>9} {'torch':>8} {'ratio':>7}")
    print("-" * 52)
    for name, (ours, theirs) in CASES.items():
        for scheduled in (False, True):
            variants = (ours, theirs)
            rounds: list[list[float]] = [[], []]
            for _ in range(args.rounds):
                for make, own in zip(variants, rounds, strict=True):
                    own.append(median_step_us(make, scheduled, args.steps))
            mine, torch_time = (min(own) for own in rounds)
            label = "LambdaLR" if scheduled else "none"
            print(f"{name:14} {label:10} {mine:9.1f} {torch_time:8.1f} {mine / torch_time:6.2f}x")


if __name__ == "__main__":
    main()
