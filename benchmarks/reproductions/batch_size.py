"""Shallue et al. (2018): steps to a target fall as 1/batch at first, then level off.

Shallue, Lee, Antognini, Sohl-Dickstein, Frostig & Dahl, "Measuring the Effects of Data
Parallelism on Neural Network Training" (JMLR 2019, arXiv:1811.03600). With the learning
rate tuned for each batch size, the number of training steps needed to reach a target
validation metric follows the same shape on every workload: perfect scaling at small
batch (doubling the batch halves the steps), then diminishing returns, then a regime
where a larger batch saves no steps at all.

Here an MLP 64-64-10 (ReLU, torch's default initialization, the same initial weights for
every run) trains on the built-in ``digits`` (8x8 images, inputs standardized with the
training split's mean and std; 20% held out for validation, 20% for test) with
gradwise.optim.SGD with momentum 0.9, at batch sizes 8, 16, ..., 1024 (1024 is 89% of the
training split). For each batch size every learning rate of a log grid (powers of 2) is
tried, and the validation accuracy is measured after every step; a run's result is the
first step at which it reaches the target (0.97). The batch size's result is the best run's
(fewest steps); a run that never reaches the target within ``max_steps`` does not count.

Run: .venv/bin/python benchmarks/reproductions/batch_size.py [--full] [--out DIR]
(default: learning rates 2^-7 .. 2^1, max 1,000 steps, seed 0; --full: 2^-10 .. 2^2 and
seeds 0, 1, 2, median of the three)
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _plotting import pyplot, save_figure
from torch import nn

from gradwise import optim
from gradwise.data import Batches, load_dataset


def mlp(seed: int) -> nn.Sequential:
    """MLP 64-64-10 with torch's default initialization."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def steps_to_target(
    batch_size: int, lr: float, target: float, max_steps: int, seed: int
) -> int | None:
    """The first step after which the validation accuracy is >= ``target`` (None: never)."""
    splits = load_dataset("digits", validation_split=0.2, seed=seed)
    mean, std = splits.train.inputs.mean(), splits.train.inputs.std()
    val_inputs = (splits.validation.inputs - mean) / std
    val_targets = splits.validation.targets
    model = mlp(seed)
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    batches = Batches(splits.train, batch_size=batch_size, drop_last=True, seed=seed)
    step = 0
    for epoch in range(max_steps):
        for inputs, targets in batches.epoch(epoch):
            optimizer.zero_grad()
            loss = F.cross_entropy(model((inputs - mean) / std), targets)
            if not math.isfinite(float(loss.detach())):
                return None  # diverged
            loss.backward()
            optimizer.step()
            step += 1
            with torch.no_grad():
                accuracy = float((model(val_inputs).argmax(1) == val_targets).float().mean())
            if accuracy >= target:
                return step
            if step >= max_steps:
                return None
    return None


def sweep(
    batch_sizes: list[int], lrs: list[float], target: float, max_steps: int, seed: int
) -> dict[int, dict[float, int | None]]:
    """Steps to the target for every (batch size, learning rate)."""
    return {
        batch: {lr: steps_to_target(batch, lr, target, max_steps, seed) for lr in lrs}
        for batch in batch_sizes
    }


def best(runs: dict[float, int | None]) -> tuple[float | None, int | None]:
    """The learning rate with the fewest steps, and those steps (None, None: none reached)."""
    reached = {lr: steps for lr, steps in runs.items() if steps is not None}
    if not reached:
        return None, None
    lr = min(reached, key=lambda key: (reached[key], key))
    return lr, reached[lr]


def plot(steps: dict[int, int | None], path: Path, title: str) -> None:
    """Steps to target against batch size in log-log, with the perfect-scaling line."""
    plt = pyplot()

    points = [(batch, value) for batch, value in steps.items() if value is not None]
    figure, axis = plt.subplots(figsize=(5.0, 3.6))
    axis.loglog(*zip(*points, strict=True), "o-", color="C0", label="best lr per batch size")
    first_batch, first_steps = points[0]
    ideal = [first_steps * first_batch / batch for batch, _ in points]
    axis.loglog([b for b, _ in points], ideal, "--", color="gray", label="perfect scaling")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("batch size")
    axis.set_ylabel("steps to target")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Sweep, print the table, write ``batch_size.png``; returns the steps per batch size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="wider lr grid, 3 seeds")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2**k for k in range(3, 11)])
    parser.add_argument("--lr-exponents", type=int, nargs=2, default=None, help="lo hi")
    parser.add_argument("--target", type=float, default=0.97)
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("docs/reproductions"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    low, high = args.lr_exponents or ((-10, 2) if args.full else (-7, 1))
    lrs = [2.0**k for k in range(low, high + 1)]
    seeds = [0, 1, 2] if args.full else [0]
    sweeps = [sweep(args.batch_sizes, lrs, args.target, args.max_steps, seed) for seed in seeds]
    steps: dict[int, int | None] = {}
    best_lr: dict[int, float | None] = {}
    print(f"digits MLP, SGD momentum 0.9, target val accuracy {args.target}, seeds {seeds}")
    print(f"{'batch':>6}{'best lr':>10}{'steps':>8}{'x batch':>10}  steps per lr")
    for batch in args.batch_sizes:
        per_seed = [best(result[batch]) for result in sweeps]
        found = [value for _, value in per_seed if value is not None]
        steps[batch] = int(statistics.median(found)) if len(found) == len(seeds) else None
        best_lr[batch] = per_seed[0][0]
        grid = " ".join("-" if s is None else str(s) for s in sweeps[0][batch].values())
        samples = "-" if steps[batch] is None else str(steps[batch] * batch)
        print(
            f"{batch:>6}{best_lr[batch] or float('nan'):>10.4g}{steps[batch] or '-':>8}"
            f"{samples:>10}  {grid}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    plot(steps, args.out / "batch_size.png", f"digits MLP, SGD+momentum, val acc {args.target}")
    return {"steps": steps, "best_lr": best_lr, "lrs": lrs, "sweeps": sweeps}


if __name__ == "__main__":
    main()
