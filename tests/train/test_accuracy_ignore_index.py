"""The Trainer's accuracies leave out the samples its loss leaves out (the loss's
ignore_index), against a plain computation over the samples counted."""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gradwise import optim
from gradwise.data import Dataset, DataSplits
from gradwise.runs import RunFolder, read_records
from gradwise.train import FitResult, Trainer, load_checkpoint, save_checkpoint
from tests.distributed.multiprocess import run_on_ranks
from tests.train.stop_at import StopAt

CLASSES = 3
BATCH = 16


def _splits(train: int = 96, validation: int = 150, test: int = 70) -> DataSplits:
    generator = torch.Generator().manual_seed(0)

    def split(samples: int) -> Dataset:
        inputs = torch.randn(samples, 4, generator=generator)
        return Dataset(inputs, torch.randint(0, CLASSES, (samples,), generator=generator))

    return DataSplits.from_datasets(split(train), split(validation), split(test), name="toy")


def _trainer(
    data: DataSplits, loss: object, *, lr: float = 0.1, ddp: bool = False, **kwargs: object
) -> Trainer:
    torch.manual_seed(0)
    model: nn.Module = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, CLASSES))
    optimizer = optim.SGD(model.parameters(), lr=lr)
    model = DistributedDataParallel(model) if ddp else model
    options = {"batch_size": BATCH, "progress": False, "epochs": 1, **kwargs}
    return Trainer(model, optimizer, data, loss=loss, **options)  # type: ignore[arg-type]


def _plain_accuracy(model: nn.Module, dataset: Dataset, ignore_index: int) -> float:
    """Right argmax predictions over the samples whose label is not ``ignore_index``."""
    with torch.no_grad():
        predictions = model(dataset.inputs).argmax(dim=1)
    kept = dataset.targets != ignore_index
    return (predictions[kept] == dataset.targets[kept]).sum().item() / kept.sum().item()


def _all_accuracy(model: nn.Module, dataset: Dataset) -> float:
    with torch.no_grad():
        predictions = model(dataset.inputs).argmax(dim=1)
    return (predictions == dataset.targets).double().mean().item()


def test_evaluation_accuracy_leaves_out_the_class_the_loss_ignores() -> None:
    # nn.CrossEntropyLoss(ignore_index=0): samples of class 0 add nothing to the loss, so
    # they are neither hits nor misses of the validation and test accuracies.
    data = _splits()
    trainer = _trainer(data, nn.CrossEntropyLoss(ignore_index=0))
    result = trainer.fit()
    assert data.validation is not None
    assert data.test is not None
    expected = _plain_accuracy(trainer.model, data.validation, 0)
    assert result.metrics["val_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert expected != pytest.approx(_all_accuracy(trainer.model, data.validation))
    assert result.test["test_accuracy"] == pytest.approx(
        _plain_accuracy(trainer.model, data.test, 0), abs=1e-12
    )


def test_evaluation_accuracy_leaves_out_minus_100_targets() -> None:
    # DataSplits refuses labels outside 0..K-1, -100 included, when it is made; these are
    # set afterwards, in place, so that the evaluation meets the default ignore_index.
    data = _splits()
    assert data.validation is not None
    data.validation.targets[::3] = -100
    trainer = _trainer(data, "cross_entropy")
    result = trainer.fit()
    expected = _plain_accuracy(trainer.model, data.validation, -100)
    assert result.metrics["val_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert math.isfinite(result.metrics["val_loss"])


def test_training_accuracy_is_correct_over_counted_samples_of_the_whole_epoch() -> None:
    # lr 0: the weights stay put, so the epoch's training accuracy is the model's accuracy
    # on the training split. Batches count different numbers of class-0 samples, so a mean
    # of batch accuracies would differ from the sum over the sum.
    data = _splits()
    trainer = _trainer(data, nn.CrossEntropyLoss(ignore_index=0), lr=0.0, log_every=2)
    run_metrics = trainer.fit().metrics
    expected = _plain_accuracy(trainer.model, data.train, 0)
    assert run_metrics["train_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert expected != pytest.approx(_all_accuracy(trainer.model, data.train))


class _SeenBatches(nn.CrossEntropyLoss):
    """Cross-entropy that ignores class 0 and keeps each training batch's predictions and
    labels, for the step records' oracle."""

    def __init__(self) -> None:
        super().__init__(ignore_index=0)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # a training step, not an evaluation
            self.seen.append((outputs.detach().argmax(dim=1), targets.clone()))
        return super().forward(outputs, targets)


def test_step_records_are_correct_over_counted_samples_of_their_batches(tmp_path: Path) -> None:
    run = RunFolder.create(tmp_path, "steps")
    loss = _SeenBatches()
    _trainer(_splits(), loss, epochs=2, log_every=2, run=run).fit()
    records = [r["accuracy"] for r in read_records(run) if r["kind"] == "step"]
    expected = []
    for first in range(0, len(loss.seen), 2):
        window = loss.seen[first : first + 2]
        correct = sum(int((p == t)[t != 0].sum()) for p, t in window)
        expected.append(correct / sum(int((t != 0).sum()) for _, t in window))
    assert records == pytest.approx(expected, abs=1e-12)
    every = [sum(int((p == t).sum()) for p, t in loss.seen[i : i + 2]) / 32 for i in (0, 2)]
    assert expected[:2] != pytest.approx(every)  # counting class 0 would have changed them


def test_a_resumed_run_reports_the_same_accuracies_with_ignored_labels(tmp_path: Path) -> None:
    data = _splits()
    whole_run = RunFolder.create(tmp_path, "whole")
    whole = _trainer(
        data, nn.CrossEntropyLoss(ignore_index=0), epochs=2, log_every=4, run=whole_run
    )
    whole.fit()

    split_run = RunFolder.create(tmp_path, "split")
    loss = nn.CrossEntropyLoss(ignore_index=0)
    stopped = _trainer(data, loss, epochs=2, log_every=4, run=split_run, callbacks=[StopAt(9)])
    assert stopped.fit().status == "stopped"  # mid-epoch 1: its sums are in the checkpoint
    resumed = _trainer(data, loss, epochs=2, log_every=4, run=split_run)
    assert resumed.fit(resume=True).status == "completed"

    def accuracies(run: RunFolder) -> list[tuple[str, float]]:
        records = read_records(run)
        return [
            (r["kind"], r.get("accuracy", r.get("train_accuracy")))
            for r in records
            if r["kind"] in ("step", "epoch")
        ]

    assert accuracies(split_run) == accuracies(whole_run)


def test_a_checkpoint_from_before_the_counted_sums_resumes_with_every_sample_counted(
    tmp_path: Path,
) -> None:
    # Older checkpoints hold the correct count but no count of samples for accuracy: every
    # sample counted then, and still does for what they summed.
    data = _splits()
    whole_run = RunFolder.create(tmp_path, "whole")
    _trainer(data, "cross_entropy", epochs=2, log_every=4, run=whole_run).fit()

    split_run = RunFolder.create(tmp_path, "split")
    stopper = StopAt(9)
    stopped = _trainer(data, "cross_entropy", epochs=2, log_every=4, run=split_run)
    stopped.callbacks.append(stopper)
    assert stopped.fit().status == "stopped"
    checkpoint = load_checkpoint(split_run.last_checkpoint)
    checkpoint["totals"] = _oldest_totals(checkpoint["totals"])
    save_checkpoint(split_run.last_checkpoint, checkpoint)
    resumed = _trainer(data, "cross_entropy", epochs=2, log_every=4, run=split_run)
    assert resumed.fit(resume=True).status == "completed"

    def epochs(run: RunFolder) -> list[float]:
        return [r["train_accuracy"] for r in read_records(run) if r["kind"] == "epoch"]

    assert epochs(split_run) == epochs(whole_run)


def _oldest_totals(totals: dict[str, Any]) -> dict[str, Any]:
    """The trainer's sums as the oldest checkpoints held them: running sums since the start
    and each window's sums at its last take (``marks``: loss, correct, count), no counts of
    samples for accuracy."""
    loss_sums, hit_sums, counts = totals["loss_sums"], totals["hit_sums"], totals["counts"]
    marks = {
        window: [
            loss_sums[0] - loss_sums[row],
            hit_sums[0, 0] - hit_sums[row, 0],
            counts[0] - counts[row],
        ]
        for row, window in enumerate(totals["windows"], start=1)
    }
    return {
        "loss_sum": loss_sums[0],
        "correct": hit_sums[0, 0],
        "count": counts[0],
        "has_accuracy": totals["has_accuracy"],
        "marks": marks,
    }


def _accuracies(result: FitResult) -> dict[str, float]:
    numbers = {**result.metrics, **result.test}
    return {name: value for name, value in numbers.items() if name.endswith("accuracy")}


def _fit_on_rank(rank: int) -> dict[str, float]:
    """One epoch at lr 0 of a DDP model whose loss ignores class 0: its accuracies."""
    data = _splits(train=100)  # batches of 16 split 8 + 8; the last (4) 2 + 2
    trainer = _trainer(data, nn.CrossEntropyLoss(ignore_index=0), lr=0.0, ddp=True)
    try:
        return _accuracies(trainer.fit())
    finally:
        del trainer  # the DDP model holds the process group: let it go first
        gc.collect()


def test_ranks_sum_the_counted_samples_of_their_shards(tmp_path: Path) -> None:
    # Not the losses: a rank's mean loss is weighted by its shard's size, not by the
    # samples its loss counted, so with ignored labels they differ from one process's.
    data = _splits(train=100)
    single = _trainer(data, nn.CrossEntropyLoss(ignore_index=0), lr=0.0)
    expected = _accuracies(single.fit())
    assert sorted(expected) == ["test_accuracy", "train_accuracy", "val_accuracy"]
    plain = _plain_accuracy(single.model, data.train, 0)
    assert expected["train_accuracy"] == pytest.approx(plain, abs=1e-12)
    for accuracies in run_on_ranks(_fit_on_rank, (), tmp_path, world_size=2):
        assert accuracies == pytest.approx(expected, abs=1e-12)
