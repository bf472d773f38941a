"""Running sums of loss and accuracy, and evaluation on a whole split."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from gradwise.data import Dataset, iterate_once

EVALUATION_BATCH_SIZE = 1024


class Accumulator:
    """Sums of per-sample loss and correct predictions, kept on the device until read.

    Reading (``means``) is the only host sync, so a training step adds no synchronization
    for its metrics. Sums are float64 so that a resumed run reports the same epoch means
    as an uninterrupted one.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)
        self.count = 0
        self.has_accuracy = False

    def add(self, mean_loss: Tensor, correct: Tensor | None, count: int) -> None:
        self.loss_sum += mean_loss.to(torch.float64) * count
        if correct is not None:
            self.correct += correct
            self.has_accuracy = True
        self.count += count

    def means(self) -> tuple[float, float | None]:
        """The mean loss and accuracy (None without labels) since the last reset."""
        if self.count == 0:
            return float("nan"), None
        loss = float(self.loss_sum) / self.count
        accuracy = float(self.correct) / self.count if self.has_accuracy else None
        return loss, accuracy

    def state_dict(self) -> dict[str, Any]:
        return {
            "loss_sum": self.loss_sum.cpu(),
            "correct": self.correct.cpu(),
            "count": self.count,
            "has_accuracy": self.has_accuracy,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.loss_sum = state["loss_sum"].to(self.device)
        self.correct = state["correct"].to(self.device)
        self.count = int(state["count"])
        self.has_accuracy = bool(state["has_accuracy"])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    device: torch.device,
    classification: bool,
    batch_size: int = EVALUATION_BATCH_SIZE,
) -> tuple[float, float | None]:
    """Mean loss and accuracy (None for regression) over a split, in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    totals = Accumulator(device)
    try:
        for inputs, targets in iterate_once(dataset, batch_size, device=device):
            outputs = model(inputs)
            correct = (outputs.argmax(dim=1) == targets).sum() if classification else None
            totals.add(loss_fn(outputs, targets), correct, len(targets))
    finally:
        model.train(was_training)
    return totals.means()
