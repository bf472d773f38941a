"""Wilson et al. (2017): adaptive methods generalize worse on a separable least-squares problem.

Wilson, Roelofs, Stern, Srebro & Recht, "The Marginal Value of Adaptive Gradient Methods
in Machine Learning" (NeurIPS 2017), Section 3.3. Labels y_i are +1 with probability
p > 1/2, else -1. Sample i has the features

    x_i1 = y_i,   x_i2 = x_i3 = 1,   and ones at its own coordinates
    j = 4 + 5(i - 1), ..., 4 + 5(i - 1) + 2(1 - y_i)

(one private feature for a positive sample, five for a negative one), zeros elsewhere.
With n samples the training problem min_w ||X w - y||^2 has 3 + 5n unknowns and is
exactly solvable. Started from w = 0, gradient descent converges to the minimum-norm
solution, whose weight on the label feature x_1 dominates: it classifies every new sample
correctly. AdaGrad, RMSprop and Adam (the paper's Lemma 3.2) move every coordinate at the
same rate at first, reach a solution proportional to sign(X^T y), and put as much weight on
the constant features x_2, x_3 as on x_1: they label every new sample positive, a test
error of 1 - p.

A new sample's private features are coordinates no training sample has, so their weights
are still at their initial 0: its prediction is w_1 y + w_2 + w_3. The test set is 10,000
fresh labels drawn with the same p.

The methods are gradwise.optim's SGD (full batch, no momentum: gradient descent), Adagrad,
RMSprop and Adam on the mean squared error 0.5 * mean((X w - y)^2), full batch, from w = 0.
Gradient descent uses lr = 1 / lambda_max(X^T X / n); the adaptive methods use torch's
default learning rates scaled by 10 (0.1 AdaGrad, 0.01 RMSprop, 0.01 Adam), untuned.

Run: .venv/bin/python benchmarks/reproductions/wilson_separable.py [--full] [--out DIR]
(default n = 50 samples and 3,000 steps; --full n = 500 and 20,000 steps; p = 0.6, seed 0)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _plotting import pyplot, save_figure
from torch import Tensor

from gradwise import optim

SMALL = {"num_samples": 50, "num_steps": 3_000}
FULL = {"num_samples": 500, "num_steps": 20_000}


def make_problem(num_samples: int, p: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The paper's design matrix ``(n, 3 + 5n)`` and labels ``(n,)``, in float64."""
    labels = torch.where(
        torch.rand(num_samples, generator=generator, dtype=torch.float64) < p, 1.0, -1.0
    ).to(torch.float64)
    features = torch.zeros(num_samples, 3 + 5 * num_samples, dtype=torch.float64)
    features[:, 0] = labels
    features[:, 1:3] = 1.0
    for i, label in enumerate(labels.tolist()):
        first = 3 + 5 * i  # 0-based index of the paper's coordinate 4 + 5(i - 1)
        features[i, first : first + 1 + 2 * int(1 - label)] = 1.0
    return features, labels


def optimizers(features: Tensor) -> dict[str, Callable[[list[Tensor]], torch.optim.Optimizer]]:
    """The four methods, each a factory over the parameter list."""
    curvature = features.T @ features / features.shape[0]
    gd_lr = 1.0 / float(torch.linalg.eigvalsh(curvature).max())
    return {
        "GD": lambda params: optim.SGD(params, lr=gd_lr),
        "AdaGrad": lambda params: optim.Adagrad(params, lr=0.1),
        "RMSprop": lambda params: optim.RMSprop(params, lr=0.01),
        "Adam": lambda params: optim.Adam(params, lr=0.01),
    }


def train(
    make_optimizer: Callable[[list[Tensor]], torch.optim.Optimizer],
    features: Tensor,
    labels: Tensor,
    num_steps: int,
) -> tuple[Tensor, float]:
    """Full-batch training from w = 0; return the weights and the final training loss."""
    weights = torch.zeros(features.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = make_optimizer([weights])
    for _ in range(num_steps):
        optimizer.zero_grad()
        loss = 0.5 * ((features @ weights - labels) ** 2).mean()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = 0.5 * ((features @ weights - labels) ** 2).mean()
    return weights.detach(), float(final)


def evaluate(
    weights: Tensor, features: Tensor, labels: Tensor, test_labels: Tensor
) -> dict[str, Any]:
    """Training and test classification error (sign of the prediction; 0 counts as wrong)."""
    train_error = float(((features @ weights) * labels <= 0).double().mean())
    # A fresh sample's private coordinates were never trained: their weights are still 0.
    test_predictions = weights[0] * test_labels + weights[1] + weights[2]
    test_error = float((test_predictions * test_labels <= 0).double().mean())
    return {
        "train_error": train_error,
        "test_error": test_error,
        "w1": float(weights[0]),
        "w2_plus_w3": float(weights[1] + weights[2]),
    }


def plot(results: dict[str, dict[str, Any]], p: float, path: Path) -> None:
    """Bar chart of training and test error per method."""
    plt = pyplot()

    names = list(results)
    positions = torch.arange(len(names), dtype=torch.float64).tolist()
    figure, axis = plt.subplots(figsize=(5, 3))
    axis.bar(
        [x - 0.2 for x in positions],
        [results[n]["train_error"] for n in names],
        0.4,
        label="train error",
    )
    axis.bar(
        [x + 0.2 for x in positions],
        [results[n]["test_error"] for n in names],
        0.4,
        label="test error",
    )
    axis.axhline(1 - p, color="gray", linestyle=":", label=f"1 - p = {1 - p:.1f}")
    axis.set_xticks(positions, names)
    axis.set_ylabel("classification error")
    axis.set_title("Wilson et al. (2017), Section 3.3 construction")
    axis.legend(fontsize=8)
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Train the four methods, print the table, write ``wilson_separable.png``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="n = 500, 20,000 steps")
    parser.add_argument("--samples", type=int, default=None, help="override n")
    parser.add_argument("--steps", type=int, default=None, help="override the step count")
    parser.add_argument("--p", type=float, default=0.6, help="P(y = +1), > 1/2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/reproductions"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    size = FULL if args.full else SMALL
    num_samples = args.samples or size["num_samples"]
    num_steps = args.steps or size["num_steps"]
    generator = torch.Generator().manual_seed(args.seed)
    features, labels = make_problem(num_samples, args.p, generator)
    test_labels = torch.where(
        torch.rand(10_000, generator=generator, dtype=torch.float64) < args.p, 1.0, -1.0
    )
    results = {}
    for name, make_optimizer in optimizers(features).items():
        weights, loss = train(make_optimizer, features, labels, num_steps)
        results[name] = {
            "train_loss": loss,
            "weights": weights,
            **evaluate(weights, features, labels, test_labels),
        }
    print(
        f"Wilson et al. (2017) Section 3.3: n = {num_samples}, d = {features.shape[1]}, "
        f"p = {args.p}, {num_steps:,} full-batch steps, seed {args.seed} "
        f"({int((labels > 0).sum())} positive training labels)"
    )
    print(
        f"{'method':<8} {'train loss':>10} {'train err':>9} {'test err':>8} {'w1':>7} {'w2+w3':>7}"
    )
    for name, r in results.items():
        print(
            f"{name:<8} {r['train_loss']:>10.2e} {r['train_error']:>9.3f} "
            f"{r['test_error']:>8.3f} {r['w1']:>7.3f} {r['w2_plus_w3']:>7.3f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.p, args.out / "wilson_separable.png")
    results["problem"] = {"features": features, "labels": labels}
    return results


if __name__ == "__main__":
    main()
