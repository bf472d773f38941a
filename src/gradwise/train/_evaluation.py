"""Running sums of loss and accuracy, and evaluation on a whole split."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from gradwise._modes import module_modes, restore_modes
from gradwise.data import Dataset, iterate_once

EVALUATION_BATCH_SIZE = 1024


class Accumulator:
    """Running sums of per-sample loss and correct predictions, kept on the device.

    One ``add`` per step feeds every window that reads the sums: :meth:`take` gives the
    means since that window's previous take (the trainer's log records and its epochs
    both read the same sums, so a step adds to them once). Reading is the only host sync.
    Sums are float64 so that a resumed run reports the same means as an uninterrupted one.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.count = 0
        self.has_accuracy = False
        self._marks: dict[str, tuple[Tensor, Tensor, int]] = {}

    def add(self, mean_loss: Tensor, correct: Tensor | None, count: int) -> None:
        self.loss_sum += mean_loss.to(torch.float64) * count
        if correct is not None:
            self.correct += correct
            self.has_accuracy = True
        self.count += count

    def means(self) -> tuple[float, float | None]:
        """The mean loss and accuracy (None without labels) of everything added."""
        return self._means_between(self._zero(), self._now())

    def take(self, window: str) -> tuple[float, float | None]:
        """The means of what was added since ``window``'s last take (or the start)."""
        now = self._now()
        means = self._means_between(self._marks.get(window, self._zero()), now)
        self._marks[window] = now
        return means

    def _now(self) -> tuple[Tensor, Tensor, int]:
        return self.loss_sum.clone(), self.correct.clone(), self.count

    def _zero(self) -> tuple[Tensor, Tensor, int]:
        return torch.zeros_like(self.loss_sum), torch.zeros_like(self.correct), 0

    def _means_between(
        self, start: tuple[Tensor, Tensor, int], stop: tuple[Tensor, Tensor, int]
    ) -> tuple[float, float | None]:
        count = stop[2] - start[2]
        if count == 0:
            return float("nan"), None
        loss = float(stop[0] - start[0]) / count
        accuracy = float(stop[1] - start[1]) / count if self.has_accuracy else None
        return loss, accuracy

    def state_dict(self) -> dict[str, Any]:
        return {
            "loss_sum": self.loss_sum.cpu(),
            "correct": self.correct.cpu(),
            "count": self.count,
            "has_accuracy": self.has_accuracy,
            "marks": {
                window: [loss.cpu(), correct.cpu(), count]
                for window, (loss, correct, count) in self._marks.items()
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.loss_sum = state["loss_sum"].to(self.device)
        self.correct = state["correct"].to(self.device)
        self.count = int(state["count"])
        self.has_accuracy = bool(state["has_accuracy"])
        self._marks = {
            window: (loss.to(self.device), correct.to(self.device), int(count))
            for window, (loss, correct, count) in state["marks"].items()
        }


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

    Afterwards every module gets back its own train/eval mode (not ``model.train()``,
    which would put a batch norm the user froze in eval mode back in training).
    """
    modes = module_modes(model)
    model.eval()
    totals = Accumulator(device)
    try:
        for inputs, targets in iterate_once(dataset, batch_size, device=device):
            outputs = model(inputs)
            correct = (outputs.argmax(dim=1) == targets).sum() if classification else None
            totals.add(loss_fn(outputs, targets), correct, len(targets))
    finally:
        restore_modes(modes)
    return totals.means()
