"""Running sums of loss and accuracy, and evaluation on a whole split."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from gradwise._modes import module_modes, restore_modes
from gradwise.data import Dataset, iterate_once
from gradwise.losses._losses import count_correct, ignore_index_of

EVALUATION_BATCH_SIZE = 1024


#: A batch's right predictions and its samples counted for accuracy (those whose class
#: index is not the loss's ignore_index), as from :func:`count_correct`.
Hits = tuple[Tensor, Tensor]

#: The sums at one moment: loss, correct predictions, samples, samples counted for accuracy.
_Sums = tuple[Tensor, Tensor, int, Tensor]


class Accumulator:
    """Running sums of per-sample loss and correct predictions, kept on the device.

    One ``add`` per step feeds every window that reads the sums: :meth:`take` gives the
    means since that window's previous take (the trainer's log records and its epochs
    both read the same sums, so a step adds to them once). Reading is the only host sync.
    Sums are float64 so that a resumed run reports the same means as an uninterrupted one.
    The accuracy is the sum of correct predictions over the sum of samples counted (the
    ignored ones left out), not a mean of batch accuracies: NaN when a window counted none.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.counted = torch.zeros((), dtype=torch.int64, device=device)
        self.count = 0
        self.has_accuracy = False
        self._marks: dict[str, _Sums] = {}

    def add(self, mean_loss: Tensor, hits: Hits | None, count: int) -> None:
        self.loss_sum += mean_loss.to(torch.float64) * count
        if hits is not None:
            self.correct += hits[0]
            self.counted += hits[1]
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

    def _now(self) -> _Sums:
        return self.loss_sum.clone(), self.correct.clone(), self.count, self.counted.clone()

    def _zero(self) -> _Sums:
        zero = torch.zeros_like(self.correct)
        return torch.zeros_like(self.loss_sum), zero, 0, zero

    def _means_between(self, start: _Sums, stop: _Sums) -> tuple[float, float | None]:
        count = stop[2] - start[2]
        if count == 0:
            return float("nan"), None
        loss = float(stop[0] - start[0]) / count
        if not self.has_accuracy:
            return loss, None
        counted = int(stop[3] - start[3])
        return loss, float(stop[1] - start[1]) / counted if counted else float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {
            "loss_sum": self.loss_sum.cpu(),
            "correct": self.correct.cpu(),
            "counted": self.counted.cpu(),
            "count": self.count,
            "has_accuracy": self.has_accuracy,
            "marks": {
                window: [loss.cpu(), correct.cpu(), count, counted.cpu()]
                for window, (loss, correct, count, counted) in self._marks.items()
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.loss_sum = state["loss_sum"].to(self.device)
        self.correct = state["correct"].to(self.device)
        self.count = int(state["count"])
        self.counted = self._counted(state.get("counted"), self.count)
        self.has_accuracy = bool(state["has_accuracy"])
        self._marks = {
            window: (
                loss.to(self.device),
                correct.to(self.device),
                int(count),
                self._counted(counted[0] if counted else None, int(count)),
            )
            for window, (loss, correct, count, *counted) in state["marks"].items()
        }

    def _counted(self, counted: Tensor | None, count: int) -> Tensor:
        # Older checkpoints have no count of their own for accuracy: it counted every sample.
        if counted is None:
            return torch.tensor(count, dtype=torch.int64, device=self.device)
        return counted.to(self.device)


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

    The accuracy leaves out the samples whose class index is ``loss_fn``'s ignore_index
    (-100 unless the loss says otherwise, see :func:`ignore_index_of`): NaN when every
    sample is left out. Afterwards every module gets back its own train/eval mode (not
    ``model.train()``, which would put a batch norm the user froze in eval mode back in
    training).
    """
    ignore_index = ignore_index_of(loss_fn)
    modes = module_modes(model)
    model.eval()
    totals = Accumulator(device)
    try:
        for inputs, targets in iterate_once(dataset, batch_size, device=device):
            outputs = model(inputs)
            hits = count_correct(outputs, targets, ignore_index) if classification else None
            totals.add(loss_fn(outputs, targets), hits, len(targets))
    finally:
        restore_modes(modes)
    return totals.means()
