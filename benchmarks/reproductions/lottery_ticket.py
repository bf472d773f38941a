"""Frankle & Carbin's lottery tickets: LeNet-300-100, winning tickets vs random reinit.

Claim (Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
Networks", ICLR 2019, Section 2 and Figures 3-4): iterative magnitude pruning of
LeNet-300-100 finds subnetworks ("winning tickets") that, reset to their original
initialization, train to the dense network's test accuracy with a small fraction of the
weights, and reach their best validation loss at least as early; the same masks with a
random reinitialization learn slower and lose accuracy much earlier.

Setup: ``gradwise.models.mlp(width=[300, 100])`` (ReLU, no normalization, He-normal
weights, biases 0, as ``gradwise train`` initializes) on ``mnist5k`` (5,000 real MNIST
digits, 28x28) and ``mnist1d`` (40-sample signals), inputs standardized with the training
split's statistics; the library's splits (10% validation, 20% test for mnist5k).
``gradwise.optim.Adam(lr=1.2e-3)`` (the paper's rate), batch 60, a fixed number of epochs
(no early stopping). Each round prunes 50% of the remaining hidden-layer weights per layer
(``scope="layer"``) and 25% of the output layer's (the paper: 20% and 10% per round; a
larger rate reaches ~3% in 5 rounds instead of 16), then rewinds the survivors to their
initialization (``rewind_step=0``) and retrains; the control trains the same masks from a
fresh initialization (seed + 1000 r). "Early-stop step" is the step of the lowest
validation loss (evaluated once per epoch).

Run: .venv/bin/python benchmarks/reproductions/lottery_ticket.py [--full] [--out DIR]
(default: 5 rounds, 12 epochs per run, seeds 0 1 2, both datasets; --full: 7 rounds at
40%/20%, 20 epochs)
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradwise import Trainer, init, optim
from gradwise.data import DataSplits, load_dataset
from gradwise.models import mlp
from gradwise.preprocess import ConstantFeatureWarning, Standardize
from gradwise.prune import iterative_magnitude_pruning
from gradwise.train import Callback

DATASETS = ("mnist5k", "mnist1d")


def standardized(name: str, seed: int) -> DataSplits:
    """The dataset with its inputs standardized by the training split's mean and std."""
    data = load_dataset(name, seed=seed)
    with warnings.catch_warnings():  # MNIST's border pixels are constant: only centered
        warnings.simplefilter("ignore", ConstantFeatureWarning)
        scaler = Standardize().fit(data.train.inputs)

    def scaled(split: Any) -> Any:
        return None if split is None else replace(split, inputs=scaler.transform(split.inputs))

    return replace(
        data, train=scaled(data.train), validation=scaled(data.validation), test=scaled(data.test)
    )


def lenet_300_100(data: DataSplits, seed: int) -> nn.Module:
    """LeNet-300-100 with gradwise's default initialization, drawn from ``seed``."""
    model = mlp(data.input_shape, data.output_size, width=[300, 100])
    init.initialize(model, "he_normal", biases=0.0, generator=seed)
    return model


def lottery(
    dataset: str, seed: int, rounds: int, rate: float, output_rate: float, epochs: int
) -> list[dict[str, Any]]:
    """One seed's IMP rounds: a row per run (dense, then ticket and control per round)."""
    data = standardized(dataset, seed)

    def train(model: nn.Module, callbacks: Sequence[Callback]) -> Mapping[str, Any]:
        optimizer = optim.Adam(model.parameters(), lr=1.2e-3)
        result = Trainer(
            model, optimizer, data, batch_size=60, epochs=epochs, callbacks=callbacks,
            seed=seed, monitor="val_loss", progress=False, log_every=10_000,
        ).fit()  # fmt: skip
        return {"test_accuracy": result.test["test_accuracy"], "early_stop": result.best["step"]}

    results = iterative_magnitude_pruning(
        lambda s: lenet_300_100(data, s), train, rounds=rounds, rate=rate,
        scope="layer", output_rate=output_rate, seed=seed,
    )  # fmt: skip
    return [
        {"dataset": dataset, "seed": seed, "round": r.round, "kind": r.kind,
         "remaining": r.fraction_remaining, **r.metrics}
        for r in results
    ]  # fmt: skip


def table(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int, str], dict[str, float]]:
    """Mean and spread over seeds per (dataset, round, kind)."""
    grouped: dict[tuple[str, int, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((row["dataset"], row["round"], row["kind"]), []).append(row)
    summary = {}
    for key, group in grouped.items():
        accuracies = [g["test_accuracy"] for g in group]
        summary[key] = {
            "remaining": group[0]["remaining"],
            "accuracy": statistics.fmean(accuracies),
            "accuracy_min": min(accuracies),
            "accuracy_max": max(accuracies),
            "early_stop": statistics.fmean(g["early_stop"] for g in group),
            "seeds": len(group),
        }
    return summary


def plot(summary: Mapping[tuple[str, int, str], Mapping[str, float]], path: Path) -> None:
    """Per dataset: test accuracy and early-stop step against weights remaining (log x)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    datasets = sorted({key[0] for key in summary})
    figure = Figure(figsize=(10, 3.3 * len(datasets)), dpi=70)
    FigureCanvasAgg(figure)
    styles = {"ticket": ("C0", "o-", "winning ticket"), "control": ("C3", "s--", "random reinit")}
    for row, dataset in enumerate(datasets):
        left = figure.add_subplot(len(datasets), 2, 2 * row + 1)
        right = figure.add_subplot(len(datasets), 2, 2 * row + 2)
        dense = summary[dataset, 0, "dense"]
        for kind, (color, style, label) in styles.items():
            points = [dense] + [
                summary[key] for key in sorted(summary) if key[0] == dataset and key[2] == kind
            ]
            x = [100 * p["remaining"] for p in points]
            left.errorbar(
                x, [p["accuracy"] for p in points],
                yerr=[[p["accuracy"] - p["accuracy_min"] for p in points],
                      [p["accuracy_max"] - p["accuracy"] for p in points]],
                fmt=style, color=color, label=label, capsize=2,
            )  # fmt: skip
            right.plot(x, [p["early_stop"] for p in points], style, color=color, label=label)
        for axes, ylabel in ((left, "test accuracy"), (right, "early-stop step")):
            axes.set_xscale("log")
            axes.invert_xaxis()
            axes.set_xlabel("weights remaining (%)")
            axes.set_ylabel(ylabel)
            axes.set_title(f"LeNet-300-100 on {dataset}", fontsize=9)
            axes.grid(alpha=0.3)
            axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, metadata={"Software": None})


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the rounds for every dataset and seed, print the table, write the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="7 rounds at 40%%, 20 epochs")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--out", type=Path, default=Path("docs/reproductions"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rate, output_rate = (0.4, 0.2) if args.full else (0.5, 0.25)
    rounds = args.rounds if args.rounds is not None else (7 if args.full else 5)
    epochs = args.epochs if args.epochs is not None else (20 if args.full else 12)
    started = time.time()
    rows = [
        row
        for dataset in args.datasets
        for seed in args.seeds
        for row in lottery(dataset, seed, rounds, rate, output_rate, epochs)
    ]
    summary = table(rows)
    print(f"LeNet-300-100, {rounds} rounds at {rate:.0%} (output {output_rate:.0%}), "
          f"{epochs} epochs, seeds {args.seeds}; mean [min, max] over seeds")  # fmt: skip
    print(f"{'dataset':<9}{'round':>6}{'remaining':>10}  {'ticket acc':<22}{'control acc':<22}"
          f"{'ticket ES':>10}{'control ES':>11}")  # fmt: skip
    for dataset in args.datasets:
        for round_ in range(rounds + 1):
            kinds = ("dense", "dense") if round_ == 0 else ("ticket", "control")
            a, b = summary[dataset, round_, kinds[0]], summary[dataset, round_, kinds[1]]
            print(
                f"{dataset:<9}{round_:>6}{a['remaining']:>9.1%}  "
                f"{_spread(a):<22}{_spread(b) if round_ else '-':<22}"
                f"{a['early_stop']:>10.0f}{b['early_stop'] if round_ else float('nan'):>11.0f}"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    plot(summary, args.out / "lottery_ticket.png")
    print(f"{time.time() - started:.0f} s")
    return {"rows": rows, "summary": summary}


def _spread(entry: Mapping[str, float]) -> str:
    return f"{entry['accuracy']:.4f} [{entry['accuracy_min']:.3f}, {entry['accuracy_max']:.3f}]"


if __name__ == "__main__":
    main()
