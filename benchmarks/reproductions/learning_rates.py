"""The lectures' learning-rate lesson: training curves for lr too low, good, high, too high.

The lectures (after CS231n) draw four loss curves against epochs: a very high learning rate
makes the loss explode; a high one drops it fast and then stalls at a worse value; a low
one decreases it slowly, almost linearly; a good one decreases it fast and keeps going.

Here an MLP 64-128-128-10 (ReLU, torch's default initialization, seed 0) trains on the
built-in ``digits`` (8x8 images, 10 classes, inputs standardized with the training split's
mean and std) with gradwise.optim.SGD without momentum, batch 32, the same initial weights
and batches for every learning rate. The curve is the mean training loss of each epoch's
minibatches (the first point: the loss at initialization on the whole training split); a
loss that is not finite is drawn as the top of the plot.

Run: .venv/bin/python benchmarks/reproductions/learning_rates.py [--full] [--out DIR]
(default 10 epochs; --full 50 epochs; learning rates 1e-3, 0.3, 1.2, 3.0, picked from
a sweep of 1e-3, 0.3, 1.2, 1.6, 2.0 at 10 epochs; seed 0)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _plotting import pyplot, save_figure
from torch import nn

from gradwise import models, optim
from gradwise.data import Batches, load_dataset

LEARNING_RATES = {"too low": 1e-3, "good": 0.3, "high": 1.2, "too high": 3.0}


def mlp(seed: int) -> nn.Module:
    """MLP 64-128-128-10 with torch's default initialization."""
    torch.manual_seed(seed)
    return models.mlp((64,), 10, depth=2, width=128, norm=None)


def train(lr: float, num_epochs: int, seed: int) -> list[float]:
    """SGD at one learning rate; the loss at initialization, then each epoch's mean loss."""
    splits = load_dataset("digits", validation_split=0.0, seed=seed)
    mean, std = splits.train.inputs.mean(), splits.train.inputs.std()
    inputs_all = (splits.train.inputs - mean) / std
    model = mlp(seed)
    optimizer = optim.SGD(model.parameters(), lr=lr)
    batches = Batches(splits.train, batch_size=32, seed=seed)
    with torch.no_grad():
        losses = [float(F.cross_entropy(model(inputs_all), splits.train.targets))]
    for epoch in range(num_epochs):
        total, count = 0.0, 0
        for inputs, targets in batches.epoch(epoch):
            optimizer.zero_grad()
            loss = F.cross_entropy(model((inputs - mean) / std), targets)
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * len(targets), count + len(targets)
        losses.append(total / count)
        if not math.isfinite(losses[-1]):
            break  # diverged: the remaining epochs would be NaN
    return losses


def plot(curves: dict[str, list[float]], path: Path) -> None:
    """The four curves on one axis, like the lectures' figure."""
    plt = pyplot()

    finite = [x for curve in curves.values() for x in curve if math.isfinite(x)]
    top = min(max(finite), 10.0)
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    for index, (name, curve) in enumerate(curves.items()):
        shown = [min(x, top) if math.isfinite(x) else top for x in curve]
        axis.plot(shown, color=f"C{index}", label=f"{name} (lr {LEARNING_RATES[name]:g})")
    axis.set_ylim(0, top * 1.02)
    axis.set_xlabel("epoch")
    axis.set_ylabel("training loss")
    axis.set_title("SGD on digits, MLP 64-128-128-10", fontsize=9)
    axis.legend(fontsize=8)
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train at the four learning rates, print the table, write ``learning_rates.png``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="50 epochs")
    parser.add_argument("--epochs", type=int, default=None, help="override the epoch count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/reproductions"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    num_epochs = args.epochs if args.epochs is not None else (50 if args.full else 10)
    curves = {name: train(lr, num_epochs, args.seed) for name, lr in LEARNING_RATES.items()}
    print(f"SGD on digits, {num_epochs} epochs, batch 32, seed {args.seed}")
    print(f"{'learning rate':<20}{'loss at 0':>10}{'epoch 1':>10}{'min':>10}{'final':>10}")
    for name, curve in curves.items():
        label = f"{name} ({LEARNING_RATES[name]:g})"
        print(f"{label:<20}{curve[0]:>10.3f}{curve[1]:>10.3g}{min(curve):>10.3g}{curve[-1]:>10.3g}")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curves, args.out / "learning_rates.png")
    return curves


if __name__ == "__main__":
    main()
