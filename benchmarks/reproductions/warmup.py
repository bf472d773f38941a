"""Goyal et al. (2017): the linear scaling rule needs gradual warmup at large batch.

Goyal, Dollar, Girshick, Noordhuis, Wesolowski, Kyrola, Tulloch, Jia & He, "Accurate,
Large Minibatch SGD: Training ImageNet in 1 Hour" (2017), Sections 2.1-2.2 and Figure 2.
Linear scaling rule: when the minibatch grows k times, multiply the learning rate by k.
The rule breaks down early in training, when the network changes fast: without warmup the
large-batch run's training error is worse than the small-batch run's at the start (and at
very large k it never catches up); with gradual warmup (the learning rate ramps linearly
from the small-batch rate to k times it over the first epochs) the large-batch training
curve matches the small-batch one.

Here an MLP 64-128-128-10 (ReLU) trains on the built-in ``digits`` (inputs standardized
with the training split's mean and std) with gradwise.optim.SGD with momentum 0.9 (the
paper's), for the same number of epochs in every run: the small batch at the base rate,
and the large batch (k times larger) at k times the rate, with and without warmup. The
warmup is ``linear_warmup(..., num_steps=W, start=lr)``: W steps covering
``--warmup-epochs`` epochs, starting at the small-batch rate (the paper's "gradual
warmup"). Every run's rate is then divided by 10 at ``--decay-epoch`` (the paper's step
schedule divides it by 10 at epochs 30, 60 and 80).

The weights start at ``--init-scale`` (4) times torch's default initialization, i.e.
uniform in +-4/sqrt(fan_in) (1.6 times He's standard deviation; biases as torch's). With
torch's default (scale 1) no rate tried shows the claim: at a stable rate warmup only
slows the start, at an unstable one both large-batch runs blow up (docs/reproductions.md,
section 6, has the sweep); presumably (curvature not measured) the MLP starts flat. A
larger initialization starts it sharp, with the curvature falling during the first epochs,
the regime in which warmup matters (Gilmer et al., ICLR 2022; Kalra & Barkeshli, "Why
Warmup the Learning Rate?", NeurIPS 2024).

Each seed draws its own split, initial weights (the same in the three runs) and batch
order. The runs are chaotic (a different CPU or torch version, a perturbation of 1e-3 in
the initial weights, or a rate given as a float instead of a schedule changes the numbers
after a few epochs, the no-warmup run's most), so the script reports
per-seed numbers and their geometric mean over seeds (losses span decades); the claims
are about the majority of seeds and the mean, never one seed.

Run: .venv/bin/python benchmarks/reproductions/warmup.py [--full] [--out DIR]
(default: batch 8 at lr 0.015 against batch 128 (k = 16) at lr 0.24, 15 epochs, 5 warmup
epochs, rates / 10 at epoch 10, seeds 0-4; --full: seeds 0-19)
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
from gradwise.data import Batches, DataSplits, load_dataset
from gradwise.schedules import Schedule, constant, linear_warmup, multistep_decay


def mlp(seed: int, init_scale: float) -> nn.Module:
    """MLP 64-128-128-10: torch's default initialization, weights times ``init_scale``."""
    torch.manual_seed(seed)
    model = models.mlp((64,), 10, depth=2, width=128, norm=None)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.mul_(init_scale)
    return model


def train(
    splits: DataSplits,
    batch_size: int,
    lr: Schedule,
    num_epochs: int,
    seed: int,
    init_scale: float,
) -> dict[str, Any]:
    """SGD with momentum; each epoch's mean training loss and the final test accuracy."""
    mean, std = splits.train.inputs.mean(), splits.train.inputs.std()
    model = mlp(seed, init_scale)
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


def schedule(lr: float, decay_step: int) -> Schedule:
    """``lr``, divided by 10 from step ``decay_step`` on (0: never)."""
    return multistep_decay(lr, [decay_step]) if decay_step > 0 else constant(lr)


def runs(args: argparse.Namespace, seed: int) -> dict[str, dict[str, Any]]:
    """The three runs: small batch, large batch without warmup, large batch with warmup."""
    k = args.large_batch // args.small_batch
    splits = load_dataset("digits", validation_split=0.0, seed=seed)
    small_steps = len(splits.train.targets) // args.small_batch  # per epoch (drop_last)
    large_steps = len(splits.train.targets) // args.large_batch
    decay = args.decay_epoch if 0 < args.decay_epoch < args.epochs else 0
    plain = schedule(k * args.lr, decay * large_steps)
    warm = plain
    if args.warmup_epochs > 0:  # the wrapped schedule starts after the warmup
        after = max(decay - args.warmup_epochs, 0) * large_steps
        warm = linear_warmup(
            schedule(k * args.lr, after),
            num_steps=args.warmup_epochs * large_steps,
            start=args.lr,
        )
    common = {"num_epochs": args.epochs, "seed": seed, "init_scale": args.init_scale}
    small_lr = schedule(args.lr, decay * small_steps)
    return {
        f"batch {args.small_batch}, lr {args.lr:g}": train(
            splits, args.small_batch, small_lr, **common
        ),
        f"batch {args.large_batch}, lr {k * args.lr:g}, no warmup": train(
            splits, args.large_batch, plain, **common
        ),
        f"batch {args.large_batch}, lr {k * args.lr:g}, warmup": train(
            splits, args.large_batch, warm, **common
        ),
    }


def geometric_mean(values: list[float]) -> float:
    """The geometric mean of positive numbers; inf if any is inf."""
    if not all(math.isfinite(value) for value in values):
        return math.inf
    return math.exp(sum(math.log(value) for value in values) / len(values))


def plot(
    per_seed: list[dict[str, dict[str, Any]]],
    curves: dict[str, list[float]],
    path: Path,
    args: argparse.Namespace,
) -> None:
    """Training loss against epochs: each seed (thin) and the geometric mean (log scale)."""
    plt = pyplot()

    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    styles = ["-", "--", ":"]
    epochs = range(1, args.epochs + 1)
    for index, (name, curve) in enumerate(curves.items()):
        for result in per_seed:
            shown = [x if math.isfinite(x) else float("nan") for x in result[name]["losses"]]
            axis.semilogy(epochs, shown, "-", color=f"C{index}", lw=0.6, alpha=0.3)
        shown = [x if math.isfinite(x) else float("nan") for x in curve]
        axis.semilogy(epochs, shown, styles[index], color=f"C{index}", label=name, lw=1.8)
    axis.axvline(args.warmup_epochs, color="gray", lw=0.8)
    if 0 < args.decay_epoch < args.epochs:
        axis.axvline(args.decay_epoch, color="gray", lw=0.8, ls=":")
    axis.set_xlabel("epoch")
    axis.set_ylabel("training loss (epoch mean)")
    axis.set_title(
        f"SGD+momentum on digits, linear scaling rule, {len(per_seed)} seeds "
        "(bold: geometric mean)",
        fontsize=8,
    )
    axis.legend(fontsize=8)
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train the three runs for each seed, print the tables, write ``warmup.png``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="seeds 0-19")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0-4")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--small-batch", type=int, default=8)
    parser.add_argument("--large-batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.015, help="the small batch's rate")
    parser.add_argument("--warmup-epochs", type=int, default=5, help="0: no warmup")
    parser.add_argument("--decay-epoch", type=int, default=10, help="0: no decay")
    parser.add_argument("--init-scale", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=Path("docs/reproductions"))
    args = parser.parse_args(argv)
    if 0 < args.decay_epoch <= args.warmup_epochs:
        parser.error("--decay-epoch must come after the warmup")
    torch.set_num_threads(1)
    seeds = args.seeds or list(range(20 if args.full else 5))
    per_seed = [runs(args, seed) for seed in seeds]
    names = list(per_seed[0])
    curves = {
        name: [geometric_mean([r[name]["losses"][e] for r in per_seed]) for e in range(args.epochs)]
        for name in names
    }
    accuracies = {
        name: sum(r[name]["test_accuracy"] for r in per_seed) / len(seeds) for name in names
    }

    decay = f", rates / 10 at epoch {args.decay_epoch}" if args.decay_epoch else ""
    print(
        f"digits MLP (init x{args.init_scale:g}), SGD momentum 0.9, {args.epochs} epochs, "
        f"{args.warmup_epochs} warmup epochs{decay}, seeds {seeds}"
    )
    marks = sorted({1, 2, args.warmup_epochs, args.warmup_epochs + 1, args.epochs} - {0})
    if 0 < args.decay_epoch < args.epochs:
        marks = sorted({*marks, args.decay_epoch})
    print("training loss, geometric mean over seeds; test accuracy, mean over seeds")
    header = "".join(f"{'epoch ' + str(e):>10}" for e in marks)
    print(f"{'run':<34}{header}{'test acc':>10}")
    for name in names:
        cells = "".join(f"{curves[name][e - 1]:>10.3g}" for e in marks)
        print(f"{name:<34}{cells}{accuracies[name]:>10.3f}")

    early = min(args.warmup_epochs + 1, args.epochs)
    labels = ["small", "no warmup", "warmup"]
    print(f"\nper seed: loss at epoch {early} / at epoch {args.epochs} / test accuracy")
    print(f"{'seed':<6}" + "".join(f"{label:>26}" for label in labels))
    for seed, result in zip(seeds, per_seed, strict=True):
        cells = "".join(
            f"{result[n]['losses'][early - 1]:>9.2g} /{result[n]['losses'][-1]:>8.2g} /"
            f"{result[n]['test_accuracy']:>6.3f}"
            for n in names
        )
        print(f"{seed:<6}{cells}")
    small, plain, warm = names
    for epoch in (2, early, args.epochs):
        wins = sum(r[warm]["losses"][epoch - 1] < r[plain]["losses"][epoch - 1] for r in per_seed)
        print(f"epoch {epoch}: warmup below no warmup in {wins} of {len(seeds)} seeds")

    args.out.mkdir(parents=True, exist_ok=True)
    plot(per_seed, curves, args.out / "warmup.png", args)
    return {
        "curves": curves,
        "test_accuracy": accuracies,
        "names": names,
        "seeds": seeds,
        "per_seed": per_seed,
    }


if __name__ == "__main__":
    main()
