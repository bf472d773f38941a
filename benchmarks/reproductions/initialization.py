"""The lectures' initialization lesson: activations through 10 layers, and what trains.

Part 1 (the lectures' histogram figure, after CS231n): 1,000 unit-Gaussian inputs of
dimension 500 go through 10 fully connected layers of 500 units, biases 0, with tanh or
ReLU after each, the weights drawn by one of

* ``0.01*randn``: gradwise.init.normal(std=0.01), the lectures' ``W = 0.01 * randn(D, H)``;
* ``Xavier``: gradwise.init.xavier_normal(), std sqrt(2 / (fan_in + fan_out)) = 1/sqrt(n)
  here, the lectures' ``randn(n) / sqrt(n)``;
* ``He``: gradwise.init.he_normal(nonlinearity="relu"), std sqrt(2 / fan_in).

The script prints the mean and std of each layer's activations and draws their histograms.
What the lectures claim: with 0.01*randn the activations collapse to 0 layer after layer
(tanh and ReLU); Xavier keeps tanh's activations spread through all layers but lets ReLU's
shrink by about sqrt(2) per layer; He keeps ReLU's spread.

Part 2: the resulting training curves. An MLP with 10 hidden layers of 64 units on the
built-in ``digits`` (8x8 images, 10 classes; inputs standardized with the training split's
mean and std), each scheme on every Linear layer, biases 0, gradwise.optim.SGD with lr 0.01
and momentum 0.9, batch 64, the same batches for every run. Expected: 0.01*randn does not
train (the loss stays at ln 10 = 2.303: the gradients vanish), Xavier trains with tanh, He
trains with ReLU.

Run: .venv/bin/python benchmarks/reproductions/initialization.py [--full] [--out DIR]
(default 15 epochs; --full 60 epochs; seed 0 for the weights, the data split and batches)
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _plotting import pyplot, save_figure
from torch import Tensor, nn

from gradwise import init, optim
from gradwise.data import Batches, load_dataset

SCHEMES: dict[str, Callable[[], init.Initializer]] = {
    "0.01*randn": lambda: init.normal(std=0.01),
    "Xavier": lambda: init.xavier_normal(),
    "He": lambda: init.he_normal(nonlinearity="relu"),
}
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"tanh": torch.tanh, "ReLU": torch.relu}
NUM_LAYERS = 10


def activations(scheme: str, activation: str, width: int = 500, seed: int = 0) -> list[Tensor]:
    """Each layer's activations for 1,000 unit-Gaussian inputs (the lectures' experiment)."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(1000, width, generator=generator)
    outputs = []
    for _ in range(NUM_LAYERS):
        weight = torch.empty(width, width)  # (fan_out, fan_in), as nn.Linear
        SCHEMES[scheme]()(weight, generator=generator)
        hidden = ACTIVATIONS[activation](hidden @ weight.T)
        outputs.append(hidden)
    return outputs


def mlp(scheme: str, activation: str, sizes: list[int], seed: int) -> nn.Sequential:
    """An MLP whose every Linear layer is drawn by ``scheme``, biases 0."""
    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=False):
        linear = nn.Linear(fan_in, fan_out)
        SCHEMES[scheme]()(linear.weight.data, generator=generator)
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.Tanh() if activation == "tanh" else nn.ReLU()]
    return nn.Sequential(nn.Flatten(), *layers[:-1])


def train(scheme: str, activation: str, num_epochs: int, seed: int) -> dict[str, Any]:
    """Train the 10-hidden-layer MLP on digits; the training loss per epoch, test accuracy."""
    splits = load_dataset("digits", validation_split=0.0, seed=seed)
    mean, std = splits.train.inputs.mean(), splits.train.inputs.std()
    standardize = lambda x: (x - mean) / std  # noqa: E731
    model = mlp(scheme, activation, [64] + [64] * NUM_LAYERS + [10], seed)
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = Batches(splits.train, batch_size=64, seed=seed)
    losses = [_loss(model, standardize(splits.train.inputs), splits.train.targets)]
    for epoch in range(num_epochs):
        for inputs, targets in batches.epoch(epoch):
            optimizer.zero_grad()
            F.cross_entropy(model(standardize(inputs)), targets).backward()
            optimizer.step()
        losses.append(_loss(model, standardize(splits.train.inputs), splits.train.targets))
    with torch.no_grad():
        predictions = model(standardize(splits.test.inputs)).argmax(dim=1)
    accuracy = float((predictions == splits.test.targets).double().mean())
    return {"losses": losses, "test_accuracy": accuracy}


def _loss(model: nn.Module, inputs: Tensor, targets: Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(inputs), targets))


def plot_histograms(stats: dict[tuple[str, str], list[Tensor]], path: Path) -> None:
    """One row per (activation, scheme), one histogram per layer (the lectures' figure)."""
    plt = pyplot()

    figure, axes = plt.subplots(len(stats), NUM_LAYERS, figsize=(14, 1.3 * len(stats)))
    for row, ((activation, scheme), layers) in enumerate(stats.items()):
        for column, values in enumerate(layers):
            axis = axes[row][column]
            flat = values.flatten()
            if activation == "ReLU":
                flat = flat[flat > 0]  # ReLU's exact zeros (about half) would hide the rest
            span = (-1.0, 1.0) if activation == "tanh" else (0.0, 3.0)
            axis.hist(flat.clamp(*span).numpy(), bins=30, range=span, color=f"C{row}")
            axis.set_yticks([])
            axis.tick_params(labelsize=6)
            if row == 0:
                axis.set_title(f"layer {column + 1}", fontsize=8)
        axes[row][0].set_ylabel(f"{activation}\n{scheme}", fontsize=8)
    figure.suptitle(
        "activations per layer (ReLU: nonzero values only; out-of-range values in the end bins)",
        fontsize=9,
    )
    save_figure(figure, path, dpi=60)


def plot_statistics(
    stats: dict[tuple[str, str], list[Tensor]],
    curves: dict[tuple[str, str], dict[str, Any]],
    path: Path,
) -> None:
    """Std of the activations per layer (left), training loss per epoch (right)."""
    plt = pyplot()

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for index, (key, layers) in enumerate(stats.items()):
        label = f"{key[0]}, {key[1]}"
        left.plot(
            range(1, NUM_LAYERS + 1),
            [float(v.std()) for v in layers],
            "o-",
            color=f"C{index}",
            label=label,
        )
        right.plot(curves[key]["losses"], color=f"C{index}", label=label)
    left.set_yscale("log")
    left.set_xlabel("layer")
    left.set_ylabel("std of activations")
    left.set_title("10 layers of 500 units, unit-Gaussian inputs", fontsize=9)
    right.axhline(math.log(10), color="gray", linestyle=":", linewidth=1)
    right.set_xlabel("epoch")
    right.set_ylabel("training loss")
    right.set_title("10 hidden layers of 64 units, digits, SGD", fontsize=9)
    right.legend(fontsize=7)
    save_figure(figure, path, dpi=70)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Compute the statistics, train the 6 MLPs, print tables, write the two figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="60 epochs")
    parser.add_argument("--epochs", type=int, default=None, help="override the epoch count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/reproductions"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    num_epochs = args.epochs if args.epochs is not None else (60 if args.full else 15)
    keys = [(activation, scheme) for activation in ACTIVATIONS for scheme in SCHEMES]
    stats = {key: activations(key[1], key[0], seed=args.seed) for key in keys}
    print("Activation std per layer (1,000 x 500 unit-Gaussian inputs, 10 layers of 500)")
    print(f"{'activation, init':<20}" + "".join(f"{i:>9}" for i in range(1, NUM_LAYERS + 1)))
    for (activation, scheme), layers in stats.items():
        print(
            f"{activation + ', ' + scheme:<20}" + "".join(f"{float(v.std()):>9.2e}" for v in layers)
        )
    print("Activation mean at layers 1 and 10")
    for (activation, scheme), layers in stats.items():
        print(
            f"{activation + ', ' + scheme:<20}{float(layers[0].mean()):>10.2e}"
            f"{float(layers[-1].mean()):>10.2e}"
        )
    curves = {key: train(key[1], key[0], num_epochs, args.seed) for key in keys}
    print(f"Training on digits, {num_epochs} epochs, seed {args.seed}")
    print(f"{'activation, init':<20}{'loss at 0':>10}{'final loss':>11}{'test acc':>9}")
    for (activation, scheme), curve in curves.items():
        print(
            f"{activation + ', ' + scheme:<20}{curve['losses'][0]:>10.3f}"
            f"{curve['losses'][-1]:>11.3f}{curve['test_accuracy']:>9.3f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    plot_histograms(stats, args.out / "initialization_histograms.png")
    plot_statistics(stats, curves, args.out / "initialization_curves.png")
    return {"statistics": stats, "training": curves}


if __name__ == "__main__":
    main()
