"""Goyal et al. (2017): the linear scaling rule needs gradual warmup at large batch.

Goyal, Dollar, Girshick, Noordhuis, Wesolowski, Kyrola, Tulloch, Jia & He, "Accurate,
Large Minibatch SGD: Training ImageNet in 1 Hour" (2017), Sections 2.1-2.2 and Figure 2.
Linear scaling rule: when the minibatch grows k times, multiply the learning rate by k.
The rule breaks down early in training, when the network changes fast: without warmup the
large-batch run's training error is worse than the small-batch run's at the start (and at
very large k it never catches up); with gradual warmup (the learning rate ramps linearly
from the small-batch rate to k times it over the first epochs) the large-batch training
curve matches the small-batch one.

Here an MLP 64-128-128-10 (ReLU, torch's default initialization, the same initial weights
for every run) trains on the built-in ``digits`` (inputs standardized with the training
split's mean and std) with gradwise.optim.SGD with momentum 0.9 (the paper's), for the same
number of epochs in every run: the small batch at the base rate, and the large batch
(k times larger) at k times the rate, with and without warmup. The warmup is
``gradwise.schedules.linear_warmup(constant(k * lr), num_steps=W, start=lr)``: W steps
covering ``--warmup-epochs`` epochs, starting at the small-batch rate (the paper's
"gradual warmup"). The curve is each epoch's mean minibatch training loss against epochs
(the paper plots training error against epochs).

Run: .venv/bin/python benchmarks/reproductions/warmup.py [--full] [--out DIR]
(default: batch 8 at lr 0.03 against batch 128 (k = 16) at lr 0.48, 20 epochs, 5 warmup
epochs, seed 0; --full: 60 epochs and seeds 0, 1, 2, mean of the three)
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
from gradwise.schedules import Schedule, constant, linear_warmup


def mlp(seed: int) -> nn.Module:
    """MLP 64-128-128-10 with torch's default initialization."""
    torch.manual_seed(seed)
    return models.mlp((64,), 10, depth=2, width=128, norm=None)


def train(batch_size: int, lr: float | Schedule, num_epochs: int, seed: int) -> dict[str, Any]:
    """SGD with momentum; each epoch's mean training loss and the final test accuracy."""
    splits = load_dataset("digits", validation_split=0.0, seed=seed)
    mean, std = splits.train.inputs.mean(), splits.train.inputs.std()
    model = mlp(seed)
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    batches = Batches(splits.train, batch_size=batch_size, drop_last=True, seed=seed)
    losses: list[float] = []
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
            losses += [math.inf] * (num_epochs - epoch - 1)  # diverged
            break
    with torch.no_grad():
        predictions = model((splits.test.inputs - mean) / std).argmax(1)
    accuracy = float((predictions == splits.test.targets).float().mean())
    return {"losses": losses, "test_accuracy": accuracy}


def runs(args: argparse.Namespace, seed: int) -> dict[str, dict[str, Any]]:
    """The three runs: small batch, large batch without warmup, large batch with warmup."""
    k = args.large_batch // args.small_batch
    steps_per_epoch = len(
        Batches(
            load_dataset("digits", validation_split=0.0, seed=seed).train,
            batch_size=args.large_batch,
            drop_last=True,
        )
    )
    warmup = linear_warmup(
        constant(k * args.lr), num_steps=args.warmup_epochs * steps_per_epoch, start=args.lr
    )
    return {
        f"batch {args.small_batch}, lr {args.lr:g}": train(
            args.small_batch, args.lr, args.epochs, seed
        ),
        f"batch {args.large_batch}, lr {k * args.lr:g}, no warmup": train(
            args.large_batch, k * args.lr, args.epochs, seed
        ),
        f"batch {args.large_batch}, lr {k * args.lr:g}, warmup": train(
            args.large_batch, warmup, args.epochs, seed
        ),
    }


def plot(curves: dict[str, list[float]], path: Path, warmup_epochs: int) -> None:
    """Training loss against epochs for the three runs (log scale)."""
    plt = pyplot()

    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    styles = ["-", "--", ":"]
    for index, (name, curve) in enumerate(curves.items()):
        shown = [x if math.isfinite(x) else float("nan") for x in curve]
        epochs = range(1, len(curve) + 1)
        axis.semilogy(epochs, shown, styles[index], color=f"C{index}", label=name, lw=1.5)
    axis.axvline(warmup_epochs, color="gray", lw=0.8)
    axis.set_xlabel("epoch")
    axis.set_ylabel("training loss (epoch mean)")
    axis.set_title("SGD+momentum on digits, linear scaling rule", fontsize=9)
    axis.legend(fontsize=8)
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train the three runs, print the table, write ``warmup.png``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="60 epochs, seeds 0, 1, 2")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--small-batch", type=int, default=8)
    parser.add_argument("--large-batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.03, help="the small batch's rate")
    parser.add_argument("--warmup-epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("docs/reproductions"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.epochs = args.epochs or (60 if args.full else 20)
    seeds = [0, 1, 2] if args.full else [0]
    per_seed = [runs(args, seed) for seed in seeds]
    names = list(per_seed[0])
    curves = {
        name: [sum(r[name]["losses"][e] for r in per_seed) / len(seeds) for e in range(args.epochs)]
        for name in names
    }
    accuracies = {
        name: sum(r[name]["test_accuracy"] for r in per_seed) / len(seeds) for name in names
    }
    print(f"digits MLP, SGD momentum 0.9, {args.epochs} epochs, seeds {seeds}")
    marks = sorted({1, 2, args.warmup_epochs, args.epochs})
    header = "".join(f"{'epoch ' + str(e):>10}" for e in marks)
    print(f"{'run':<36}{header}{'test acc':>10}")
    for name in names:
        cells = "".join(f"{curves[name][e - 1]:>10.3g}" for e in marks)
        print(f"{name:<36}{cells}{accuracies[name]:>10.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curves, args.out / "warmup.png", args.warmup_epochs)
    return {"curves": curves, "test_accuracy": accuracies, "names": names}


if __name__ == "__main__":
    main()
