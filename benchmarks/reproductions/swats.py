"""Keskar & Socher (2017): SWATS starts as Adam and switches to SGD to generalize like SGD.

Keskar & Socher, "Improving Generalization Performance by Switching from Adam to SGD",
arXiv:1712.07628 (2017). Claim: Adam trains fast but, on image classification, ends at a
worse test accuracy than well-tuned SGD with momentum; SWATS runs Adam, switches to SGD
with momentum once the learning rate its steps imply (projected on the gradient) has
settled, and closes most of the gap.

Here an MLP 64-128-128-10 (ReLU, torch's default initialization, the same initial weights
and batches for every run) trains on the built-in ``digits`` (inputs standardized with the
training split's mean and std; 10% validation, 20% test) with batch 32 for the same number
of epochs with gradwise.optim.Adam (lr 1e-3, torch's default), gradwise.optim.SGD (lr 0.05,
momentum 0.9) and gradwise.optim.SWATS (lr 1e-3, the paper's switch test). SWATS's
``switch_tolerance`` is the paper's 1e-9 by default; it is strict on a noisy problem, so a
second SWATS run with a looser tolerance (1e-2 here) is shown too. ``opt.switches[0]``
tells whether, at which step and at which SGD learning rate SWATS switched.

Run: .venv/bin/python benchmarks/reproductions/swats.py [--full] [--out DIR]
(default 30 epochs, seed 0; --full 100 epochs and seeds 0, 1, 2)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _plotting import pyplot, save_figure
from torch import nn

from gradwise import models, optim
from gradwise.data import Batches, load_dataset

OptimizerFactory = Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]


def optimizers(loose_tolerance: float) -> dict[str, OptimizerFactory]:
    """The compared optimizers, by the name used in the table."""
    return {
        "Adam": lambda params: optim.Adam(params, lr=1e-3),
        "SGD": lambda params: optim.SGD(params, lr=0.05, momentum=0.9),
        "SWATS": lambda params: optim.SWATS(params, lr=1e-3),
        f"SWATS tol {loose_tolerance:g}": lambda params: optim.SWATS(
            params, lr=1e-3, switch_tolerance=loose_tolerance
        ),
    }


def mlp(seed: int) -> nn.Module:
    """MLP 64-128-128-10 with torch's default initialization."""
    torch.manual_seed(seed)
    return models.mlp((64,), 10, depth=2, width=128, norm=None)


def accuracy(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of correct argmax predictions."""
    with torch.no_grad():
        return float((model(inputs).argmax(1) == targets).float().mean())


def train(factory: OptimizerFactory, num_epochs: int, seed: int) -> dict[str, Any]:
    """One run: validation accuracy per epoch, final test accuracy, and the switch (SWATS)."""
    splits = load_dataset("digits", validation_split=0.1, seed=seed)
    mean, std = splits.train.inputs.mean(), splits.train.inputs.std()
    model = mlp(seed)
    optimizer = factory(model.parameters())
    batches = Batches(splits.train, batch_size=32, seed=seed)
    validation: list[float] = []
    for epoch in range(num_epochs):
        for inputs, targets in batches.epoch(epoch):
            optimizer.zero_grad()
            F.cross_entropy(model((inputs - mean) / std), targets).backward()
            optimizer.step()
        val_inputs = (splits.validation.inputs - mean) / std
        validation.append(accuracy(model, val_inputs, splits.validation.targets))
    test = accuracy(model, (splits.test.inputs - mean) / std, splits.test.targets)
    switch = optimizer.switches[0] if isinstance(optimizer, optim.SWATS) else None
    return {
        "validation": validation,
        "test_accuracy": test,
        "switch": switch,
        "steps_per_epoch": len(batches),
    }


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Validation accuracy per epoch; a vertical mark where each SWATS run switched."""
    plt = pyplot()

    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    for index, (name, result) in enumerate(results.items()):
        curve = result["validation"]
        axis.plot(range(1, len(curve) + 1), curve, color=f"C{index}", label=name, lw=1.2)
        switch = result["switch"]
        if switch is not None and switch.switched:
            axis.axvline(switch.step / result["steps_per_epoch"], color=f"C{index}", ls=":")
    axis.set_ylim(0.85, 1.0)
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation accuracy")
    axis.set_title("digits MLP, batch 32 (dotted: SWATS's switch)", fontsize=9)
    axis.legend(fontsize=8)
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Train every optimizer, print the table, write ``swats.png``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="100 epochs, seeds 0, 1, 2")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--loose-tolerance", type=float, default=1e-2)
    parser.add_argument("--out", type=Path, default=Path("docs/reproductions"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    num_epochs = args.epochs or (100 if args.full else 30)
    seeds = [0, 1, 2] if args.full else [0]
    factories = optimizers(args.loose_tolerance)
    per_seed = [
        {name: train(f, num_epochs, seed) for name, f in factories.items()} for seed in seeds
    ]
    print(f"digits MLP, batch 32, {num_epochs} epochs, seeds {seeds}")
    print(
        f"{'optimizer':<18}{'seed':>5}{'best val':>10}{'final val':>10}{'test':>8}"
        f"{'switch step':>13}{'SGD lr':>10}"
    )
    for seed, results in zip(seeds, per_seed, strict=True):
        for name, result in results.items():
            switch = result["switch"]
            step = "-" if switch is None or not switch.switched else str(switch.step)
            lr = "-" if switch is None or not switch.switched else f"{switch.lr:.3g}"
            print(
                f"{name:<18}{seed:>5}{max(result['validation']):>10.3f}"
                f"{result['validation'][-1]:>10.3f}{result['test_accuracy']:>8.3f}"
                f"{step:>13}{lr:>10}"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    plot(per_seed[0], args.out / "swats.png")
    return per_seed[0]


if __name__ == "__main__":
    main()
