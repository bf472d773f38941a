"""What UNDERFITTING's thresholds are measured against: healthy and too-small models.

Trains each setup in the monitor tests' plain loop (tests/monitor/setups.py: a watch with
a 256-sample monitoring subset and the validation split, seed 0) and prints, at the end,
the quantities the detector reads: the training loss as a fraction of the chance loss,
train - validation accuracy, the monitoring loss's relative improvement over the last
200 steps, and the findings raised. docs/monitor.md quotes the output.

Run from the repository root:

    .venv/bin/python benchmarks/underfitting_calibration.py
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.monitor.setups import Run, standardized, train  # noqa: E402
from tests.monitor.test_calibration import HEALTHY  # noqa: E402

from gradwise import monitor, optim  # noqa: E402
from gradwise.models import mlp  # noqa: E402

WINDOW = 200


def adam_mlp(
    shape: tuple[int, ...], classes: int, lr: float, **model: int
) -> Callable[[], tuple[nn.Module, torch.optim.Optimizer]]:
    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        network = mlp(shape, classes, **model)  # type: ignore[arg-type]
        return network, optim.Adam(network.parameters(), lr=lr)

    return make


def too_small() -> dict[str, Run]:
    mnist1d, spirals = standardized("mnist1d"), standardized("spirals")
    digits = standardized("digits")
    tiny = dataclasses.replace(digits, train=digits.train.subset(list(range(100))))
    return {
        "logistic regression, mnist1d, Adam 1e-2": Run(
            adam_mlp((1, 40), 10, 1e-2, depth=0), mnist1d, 600
        ),
        "logistic regression, mnist1d, Adam 1e-3": Run(
            adam_mlp((1, 40), 10, 1e-3, depth=0), mnist1d, 600
        ),
        "mlp 2x2 units, mnist1d, Adam 1e-2": Run(
            adam_mlp((1, 40), 10, 1e-2, depth=2, width=2), mnist1d, 600
        ),
        "mlp 2x4 units, mnist1d, Adam 3e-3": Run(
            adam_mlp((1, 40), 10, 3e-3, depth=2, width=4), mnist1d, 600
        ),
        "logistic regression, spirals, Adam 1e-2": Run(
            adam_mlp((2,), 3, 1e-2, depth=0), spirals, 600, batch_size=16
        ),
        "control: mlp 2x128, mnist1d, Adam 1e-3": Run(
            adam_mlp((1, 40), 10, 1e-3, depth=2, width=128), mnist1d, 600
        ),
        "control: logistic regression, digits, Adam 1e-2": Run(
            adam_mlp((1, 8, 8), 10, 1e-2, depth=0), digits, 600
        ),
        "control: mlp 2x512 on 100 digits (overfits)": Run(
            adam_mlp((1, 8, 8), 10, 1e-3, depth=2, width=512), tiny, 450, batch_size=20
        ),
    }


def describe(name: str, watch: monitor.Watch) -> str:
    history = watch.history
    trend = history.monitor_loss
    now = trend.steps[-1]
    before = min(trend.between(0, now - WINDOW + 1))
    recent = min(trend.since(now - WINDOW + 1))
    chance = history.chance_loss or float("nan")
    train_acc, val_acc = history.train_accuracy.last or 0.0, history.val_accuracy.last or 0.0
    found = ", ".join(f.kind.name for f in watch.findings()) or "-"
    return (
        f"| {name} | {(history.train_loss.last or 0.0) / chance:.2f} | {train_acc:.3f} | "
        f"{val_acc:.3f} | {train_acc - val_acc:+.3f} | {(before - recent) / before:.3f} | "
        f"{found} |"
    )


def main() -> None:
    torch.set_num_threads(1)
    print("| run | train loss / chance | train acc | val acc | gap | improvement | findings |")
    print("|---|---|---|---|---|---|---|")
    for name, run in {**HEALTHY, **too_small()}.items():
        watch, _ = train(run)
        if watch is not None:
            print(describe(name, watch), flush=True)


if __name__ == "__main__":
    main()
