"""Sums of loss and accuracy per window, and evaluation on a whole split."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from gradwise._modes import module_modes, restore_modes
from gradwise.data import Dataset, iterate_once
from gradwise.losses._losses import count_correct, count_loss_samples, ignore_index_of

EVALUATION_BATCH_SIZE = 1024


#: A batch's right predictions and its samples counted for accuracy (those whose class
#: index is not the loss's ignore_index), as from :func:`count_correct`.
Hits = tuple[Tensor, Tensor]


class Accumulator:
    """Sums of per-sample loss and correct predictions, one row per window, on the device.

    Row 0 sums everything added (:meth:`means`); each window named when the Accumulator is
    made (the trainer's ``"log"`` records and its epochs) has a row of its own, which
    :meth:`take` reads and empties. One ``add`` per step adds to all rows at once. A
    window's means are its own sums', not a difference of running totals since the start:
    after a loss of 1e17 such a total rounds to multiples of 16, and the losses of 0.5
    that come after it would vanish in that rounding. Reading is the only host sync. Sums
    are float64, so that a resumed run reports the same means as an uninterrupted one, and
    the counts among them stay exact integers (up to 2**53). The accuracy is the sum of
    correct predictions over the sum of samples counted (the ignored ones left out), not a
    mean of batch accuracies: NaN when a window counted none. The mean loss likewise weighs
    each batch's mean by the samples that mean is over (``loss_count``: the targets not
    ignored; the batch size when the loss counts every sample): a batch whose targets are
    all ignored (its mean NaN, 0 / 0) weighs 0 and adds nothing, and a window without a
    sample counted has a NaN mean loss, as its accuracy is NaN.
    """

    def __init__(self, device: torch.device, windows: Sequence[str] = ()) -> None:
        self.device = device
        self.windows = tuple(windows)
        self.has_accuracy = False
        rows = 1 + len(self.windows)
        self._loss_sums = torch.zeros(rows, dtype=torch.float64, device=device)
        self._loss_counts = torch.zeros(rows, dtype=torch.float64, device=device)  # the weights
        # (rows, 2): correct predictions, samples counted for accuracy.
        self._hit_sums = torch.zeros((rows, 2), dtype=torch.int64, device=device)
        self._counts = [0] * rows  # samples, on the host: reading them needs no sync

    def add(
        self, mean_loss: Tensor, hits: Hits | None, count: int, loss_count: Tensor | None = None
    ) -> None:
        """Add a batch of ``count`` samples: its mean loss over ``loss_count`` of them (a 0-d
        tensor, see :func:`count_loss_samples`; None: over all ``count``) and its hits.

        A batch whose loss counted nothing must come with a mean loss of 0, not its NaN
        (0 / 0): NaN x 0 is NaN, and would poison every sum. (The trainer knows it from
        the loss it reads anyway, so its steps need no masking op.)"""
        # Every row at once, in a few small tensor ops and no host sync (add_ and addcmul_
        # widen the mean loss to float64 before they multiply it). Measured on one CPU
        # thread with the default model's step inputs (batch 128): 3.7-4.0 us per add, where
        # the one running sum per value took 5.5-5.7 us (five ops); a step takes ~3 ms.
        # Weighing by the samples counted adds ~2 us (addcmul_ and the counts' add_); a
        # where() to mask a NaN mean here would add ~3 us more.
        if loss_count is None:
            self._loss_sums.add_(mean_loss, alpha=count)
            self._loss_counts += count
        else:
            self._loss_sums.addcmul_(mean_loss, loss_count)
            self._loss_counts += loss_count
        if hits is not None:
            self._hit_sums += torch.stack(hits)
            self.has_accuracy = True
        self._counts = [samples + count for samples in self._counts]

    def means(self) -> tuple[float, float | None]:
        """The mean loss and accuracy (None without labels) of everything added."""
        return self._means(0)

    def take(self, window: str) -> tuple[float, float | None]:
        """The means of what was added since ``window``'s last take (or the start)."""
        if window not in self.windows:
            raise ValueError(
                f"This Accumulator has no window {window!r}; its windows are "
                f"{list(self.windows)}. Name it when making the Accumulator: "
                f"Accumulator(device, windows=(..., {window!r}))."
            )
        row = 1 + self.windows.index(window)
        means = self._means(row)
        self._loss_sums[row] = 0
        self._loss_counts[row] = 0
        self._hit_sums[row] = 0
        self._counts[row] = 0
        return means

    def _means(self, row: int) -> tuple[float, float | None]:
        count = self._counts[row]
        if count == 0:
            return float("nan"), None
        # One host read for all four (float64 holds the counts exactly, up to 2**53).
        sums = [self._loss_sums[row], self._loss_counts[row], *self._hit_sums[row]]
        loss_sum, loss_count, correct, counted = torch.stack(sums).tolist()
        loss = loss_sum / loss_count if loss_count else float("nan")
        if not self.has_accuracy:
            return loss, None
        return loss, correct / counted if counted else float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {
            "windows": list(self.windows),
            "loss_sums": self._loss_sums.to("cpu", copy=True),
            "loss_counts": self._loss_counts.to("cpu", copy=True),
            "hit_sums": self._hit_sums.to("cpu", copy=True),
            "counts": list(self._counts),
            "has_accuracy": self.has_accuracy,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "marks" in state:  # saved before each window had sums of its own
            state = _own_sums(state, self.windows)
        saved = list(state["windows"])
        missing = [window for window in self.windows if window not in saved]
        if missing:
            raise ValueError(
                f"The Accumulator state has no sums for the window(s) {missing}, only for "
                f"{saved}. Load a state saved by an Accumulator with the same windows."
            )
        rows = [0, *(1 + saved.index(window) for window in self.windows)]
        loss_sums = state["loss_sums"].to(self.device, torch.float64)[rows]
        hit_sums = state["hit_sums"].to(self.device, torch.int64)[rows]
        counts = [int(state["counts"][row]) for row in rows]
        # Saved before the losses were weighted by the samples they counted: each batch
        # weighed its size then, so the weights of what those sums hold are the counts.
        saved_counts = state.get("loss_counts")
        if saved_counts is None:
            saved_counts = torch.tensor([float(count) for count in state["counts"]])
        loss_counts = saved_counts.to(self.device, torch.float64)[rows]
        self._loss_sums, self._loss_counts = loss_sums, loss_counts
        self._hit_sums, self._counts = hit_sums, counts
        self.has_accuracy = bool(state["has_accuracy"])


def _own_sums(state: Mapping[str, Any], windows: Sequence[str]) -> dict[str, Any]:
    """An older state (running sums since the start, and each window's sums at its last
    take: ``marks``) with each window's own sums instead: the sums less its mark, which is
    what the older code took (a window never taken summed from the start)."""

    def hit_sums(correct: Tensor, counted: Tensor | None, count: int) -> Tensor:
        # The oldest states have no count of their own for accuracy: it counted every sample.
        counted = counted if counted is not None else torch.tensor(count, device=correct.device)
        return torch.stack([correct, counted]).to(torch.int64)

    count = int(state["count"])
    loss_sum = state["loss_sum"].to(torch.float64)
    hits = hit_sums(state["correct"], state.get("counted"), count)
    loss_sums, hit_rows, counts = [loss_sum], [hits], [count]
    for window in windows:
        mark = state["marks"].get(window)
        if mark is None:
            loss_sums.append(loss_sum)
            hit_rows.append(hits)
            counts.append(count)
            continue
        loss, correct, marked, *counted = mark
        loss_sums.append(loss_sum - loss.to(torch.float64))
        hit_rows.append(hits - hit_sums(correct, counted[0] if counted else None, int(marked)))
        counts.append(count - int(marked))
    return {
        "windows": list(windows),
        "loss_sums": torch.stack(loss_sums),
        "hit_sums": torch.stack(hit_rows),
        "counts": counts,
        "has_accuracy": state["has_accuracy"],
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

    Both leave out the samples whose class index is ``loss_fn``'s ignore_index (-100
    unless the loss says otherwise, see :func:`ignore_index_of`): each batch's mean loss
    weighs the samples it counted, a batch with none weighs 0, and both are NaN when every
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
            loss = loss_fn(outputs, targets)
            loss_count = count_loss_samples(outputs, targets, ignore_index)
            if loss_count is not None:  # a mean over no sample (NaN) adds nothing
                loss = torch.where(loss_count > 0, loss, 0.0)
            totals.add(loss, hits, len(targets), loss_count)
    finally:
        restore_modes(modes)
    return totals.means()
