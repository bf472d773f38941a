"""The Trainer's mean losses weigh each batch by the samples its loss counted (those whose
label is not the loss's ignore_index), against the mean of per-sample losses
(reduction="none") over the samples counted; a batch whose labels are all ignored (its
mean 0 / 0, NaN) weighs 0 and is no divergence."""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradwise.data import Dataset, DataSplits
from gradwise.runs import RunFolder, read_records
from gradwise.train import Trainer, TrainingDiverged, load_checkpoint, save_checkpoint
from tests.distributed.multiprocess import run_on_ranks
from tests.train.stop_at import StopAt
from tests.train.test_accuracy_ignore_index import CLASSES
from tests.train.test_accuracy_ignore_index import _trainer as accuracy_trainer

IGNORED = 0  # nn.CrossEntropyLoss(ignore_index=0): class 0 is a real class, left out


def _split(samples: int, generator: torch.Generator, kept_share: float) -> Dataset:
    """Labels 1 or 2 on about ``kept_share`` of the samples, else the ignored class 0."""
    inputs = torch.randn(samples, 4, generator=generator)
    labels = torch.randint(1, CLASSES, (samples,), generator=generator)
    kept = torch.rand(samples, generator=generator) < kept_share
    return Dataset(inputs, torch.where(kept, labels, IGNORED))


def _splits(train: int = 96, kept_share: float = 0.5, validation: int = 150) -> DataSplits:
    generator = torch.Generator().manual_seed(0)
    train_split = _split(train, generator, kept_share)
    # Some class-0 labels in every split, so that DataSplits sees all three classes.
    train_split.targets[:2] = torch.tensor([1, 2])
    return DataSplits.from_datasets(
        train_split,
        _split(validation, generator, 0.5),
        _split(70, generator, 0.5),
        name="toy",
    )


def _trainer(
    data: DataSplits,
    *,
    lr: float = 0.0,
    ddp: bool = False,
    loss: nn.Module | None = None,
    **kwargs: object,
) -> Trainer:
    loss = loss if loss is not None else nn.CrossEntropyLoss(ignore_index=IGNORED)
    return accuracy_trainer(data, loss, lr=lr, ddp=ddp, **kwargs)


def _plain_loss(model: nn.Module, dataset: Dataset) -> float:
    """The mean of the per-sample losses over the samples whose label is not ignored."""
    with torch.no_grad():
        losses = F.cross_entropy(model(dataset.inputs).double(), dataset.targets, reduction="none")
    kept = dataset.targets != IGNORED
    return (losses[kept].sum() / kept.sum()).item()


def _batch_weighted_loss(model: nn.Module, dataset: Dataset, batch_size: int) -> float:
    """The mean of the per-batch means weighted by batch size: what the fix replaced."""
    with torch.no_grad():
        outputs = model(dataset.inputs).double()
    total = 0.0
    for begin in range(0, len(dataset.targets), batch_size):
        targets = dataset.targets[begin : begin + batch_size]
        mean = F.cross_entropy(outputs[begin : begin + batch_size], targets, ignore_index=0)
        total += mean.item() * len(targets)
    return total / len(dataset.targets)


def test_the_training_loss_of_an_epoch_is_the_mean_over_its_counted_samples() -> None:
    # lr 0: the weights stay put, so the epoch's training loss is the model's loss on the
    # training split. Batches count different numbers of class-0 samples, so a mean of
    # batch means weighted by batch size would differ.
    data = _splits()
    trainer = _trainer(data)
    metrics = trainer.fit().metrics
    expected = _plain_loss(trainer.model, data.train)
    assert metrics["train_loss"] == pytest.approx(expected, rel=1e-6)
    assert data.validation is not None
    assert metrics["val_loss"] == pytest.approx(_plain_loss(trainer.model, data.validation), 1e-6)


def test_the_validation_loss_weighs_evaluation_batches_by_their_counted_samples() -> None:
    # 1500 samples: two evaluation batches (1024 and 476); the second's labels are mostly
    # the ignored class, so weighting its mean by its size would change the mean.
    generator = torch.Generator().manual_seed(3)
    data = _splits(validation=1500)
    assert data.validation is not None
    data.validation.targets[1024:] = torch.where(
        torch.rand(476, generator=generator) < 0.9, IGNORED, data.validation.targets[1024:]
    )
    trainer = _trainer(data)
    metrics = trainer.fit().metrics
    expected = _plain_loss(trainer.model, data.validation)
    assert metrics["val_loss"] == pytest.approx(expected, rel=1e-6)
    weighted = _batch_weighted_loss(trainer.model, data.validation, 1024)
    assert weighted != pytest.approx(expected, rel=1e-3)


class _SeenBatches(nn.CrossEntropyLoss):
    """Cross-entropy that ignores class 0 and keeps each training batch's per-sample losses
    and labels, for the step records' oracle."""

    def __init__(self) -> None:
        super().__init__(ignore_index=IGNORED)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # a training step, not an evaluation
            losses = F.cross_entropy(outputs.detach().double(), targets, reduction="none")
            self.seen.append((losses, targets.clone()))
        return super().forward(outputs, targets)


def _window_means(seen: list[tuple[torch.Tensor, torch.Tensor]], size: int) -> list[float]:
    means = []
    for first in range(0, len(seen), size):
        window = seen[first : first + size]
        total = sum(float(losses[labels != IGNORED].sum()) for losses, labels in window)
        counted = sum(int((labels != IGNORED).sum()) for _, labels in window)
        means.append(total / counted if counted else math.nan)
    return means


def test_batches_whose_labels_are_all_ignored_weigh_nothing_and_do_not_diverge(
    tmp_path: Path,
) -> None:
    # About one label in 20 counted: most batches of 16 have none, and their mean loss is
    # NaN (0 / 0) with zero gradients. The run goes on (lr > 0: the weights move on the
    # batches that count), and each record's loss is the mean over its counted samples.
    run = RunFolder.create(tmp_path, "sparse")
    data = _splits(kept_share=0.05)
    loss = _SeenBatches()
    result = _trainer(data, lr=0.1, epochs=2, log_every=1, run=run, loss=loss).fit()
    assert result.status == "completed"
    counted = [int((labels != IGNORED).sum()) for _, labels in loss.seen]
    assert 0 in counted  # some batches count nothing...
    assert any(counted)  # ...and others do
    records = read_records(run)
    steps = [r["loss"] for r in records if r["kind"] == "step"]
    expected = _window_means(loss.seen, 1)
    assert len(steps) == len(expected)
    for value, oracle in zip(steps, expected, strict=True):
        if math.isnan(oracle):  # nothing counted: NaN, as the step's accuracy
            assert value is None or math.isnan(value)
        else:
            assert value == pytest.approx(oracle, rel=1e-6)
    epochs = [r["train_loss"] for r in records if r["kind"] == "epoch"]
    assert epochs == pytest.approx(_window_means(loss.seen, len(loss.seen) // 2), rel=1e-6)
    assert all(math.isfinite(value) for value in epochs)


def test_an_epoch_without_a_counted_label_has_a_nan_loss_like_its_accuracy() -> None:
    data = _splits()
    data.train.targets[:] = IGNORED  # after DataSplits saw three classes
    result = _trainer(data, lr=0.1).fit()
    assert result.status == "completed"
    assert math.isnan(result.metrics["train_loss"])
    assert math.isnan(result.metrics["train_accuracy"])
    assert math.isfinite(result.metrics["val_loss"])


def test_a_real_nan_on_a_batch_with_counted_labels_still_diverges() -> None:
    # Batches whose labels are all ignored come first; the NaN comes on one that counts.
    data = _splits(kept_share=0.05)
    calls = {"n": 0}

    class Poisoned(nn.CrossEntropyLoss):
        def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            loss = super().forward(outputs, targets)
            if torch.is_grad_enabled() and bool((targets != IGNORED).any()):
                calls["n"] += 1
                if calls["n"] == 2:
                    return loss * math.nan
            return loss

    trainer = _trainer(data, lr=0.1, epochs=2, loss=Poisoned(ignore_index=IGNORED))
    with pytest.raises(TrainingDiverged, match="loss became nan at step"):
        trainer.fit()


def test_a_resumed_run_reports_the_same_losses_with_ignored_labels(tmp_path: Path) -> None:
    data = _splits(kept_share=0.3)
    whole_run = RunFolder.create(tmp_path, "whole")
    _trainer(data, lr=0.1, epochs=2, log_every=4, run=whole_run).fit()

    split_run = RunFolder.create(tmp_path, "split")
    stopped = _trainer(data, lr=0.1, epochs=2, log_every=4, run=split_run, callbacks=[StopAt(9)])
    assert stopped.fit().status == "stopped"  # mid-epoch 1: its sums are in the checkpoint
    resumed = _trainer(data, lr=0.1, epochs=2, log_every=4, run=split_run)
    assert resumed.fit(resume=True).status == "completed"
    assert _losses(split_run) == _losses(whole_run)


def _losses(run: RunFolder) -> list[tuple[str, float]]:
    return [
        (r["kind"], r.get("loss", r.get("train_loss")))
        for r in read_records(run)
        if r["kind"] in ("step", "epoch")
    ]


def test_a_checkpoint_from_before_the_loss_counts_resumes_weighing_by_batch_size(
    tmp_path: Path,
) -> None:
    # Older checkpoints hold no sums of the samples the loss counted: their losses were
    # weighed by batch size. With no label ignored that is the same weight, so the resumed
    # run reports what the uninterrupted one does.
    data = _splits(kept_share=1.0)
    whole_run = RunFolder.create(tmp_path, "whole")
    _trainer(data, lr=0.1, epochs=2, log_every=4, run=whole_run).fit()

    split_run = RunFolder.create(tmp_path, "split")
    stopped = _trainer(data, lr=0.1, epochs=2, log_every=4, run=split_run, callbacks=[StopAt(9)])
    assert stopped.fit().status == "stopped"
    checkpoint = load_checkpoint(split_run.last_checkpoint)
    totals: dict[str, Any] = checkpoint["totals"]
    del totals["loss_counts"]
    save_checkpoint(split_run.last_checkpoint, checkpoint)
    resumed = _trainer(data, lr=0.1, epochs=2, log_every=4, run=split_run)
    assert resumed.fit(resume=True).status == "completed"
    assert _losses(split_run) == _losses(whole_run)


def _fit_on_rank(rank: int) -> float:
    """One epoch at lr 0 of a DDP model whose loss ignores class 0: its training loss."""
    data = _splits(train=100)  # batches of 16 split 8 + 8; the last (4) 2 + 2
    trainer = _trainer(data, ddp=True)
    try:
        return trainer.fit().metrics["train_loss"]
    finally:
        del trainer  # the DDP model holds the process group: let it go first
        gc.collect()


def test_ranks_weigh_their_mean_losses_by_the_samples_they_counted(tmp_path: Path) -> None:
    data = _splits(train=100)
    single = _trainer(data)
    expected = single.fit().metrics["train_loss"]
    assert expected == pytest.approx(_plain_loss(single.model, data.train), rel=1e-6)
    for train_loss in run_on_ranks(_fit_on_rank, (), tmp_path, world_size=2):
        # (Shards of 8 take float32 means of their own: equal to ~1e-7.)
        assert train_loss == pytest.approx(expected, rel=1e-6)
