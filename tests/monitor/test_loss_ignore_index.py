"""The watch's losses leave out the samples its loss leaves out (the loss's ignore_index):
the validation loss weighs each batch by the samples it counted, against the mean of
per-sample losses (reduction="none") over those samples, and a validation set with none
counted has no loss recorded, as it has no accuracy; batches of a Trainer run whose
labels are all ignored are no non-finite loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradwise import Trainer, monitor, optim
from gradwise.data import Dataset, DataSplits
from gradwise.diagnosis import Finding
from gradwise.monitor._callback import WatchCallback
from tests.monitor.test_accuracy_ignore_index import _data, _model


def _plain_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, ignored: int):
    """The mean of the per-sample losses over the samples whose target is not ignored."""
    with torch.no_grad():
        losses = F.cross_entropy(model(inputs).double(), targets, reduction="none")
    kept = targets != ignored
    return (losses[kept].sum() / kept.sum()).item()


def _probe(watch: monitor.Watch) -> dict:
    (probe,) = [r for r in watch.records() if r["kind"] == "probe" and r["step"] == 0]
    return probe


@pytest.mark.parametrize("ignored", [-100, 1])
def test_validation_loss_weighs_its_batches_by_their_counted_samples(ignored: int) -> None:
    # 2500 samples: evaluation batches of 1024, 1024 and 452; most targets of the first
    # are ignored, so weighting its mean by its size would change the mean.
    model = _model()
    inputs, targets = _data(2500, seed=1)
    targets[:900] = ignored
    loss_fn = nn.CrossEntropyLoss(ignore_index=ignored)
    watch = monitor.watch(
        model, monitor_data=_data(256), validation_data=(inputs, targets), loss_fn=loss_fn
    )
    expected = _plain_loss(model, inputs, targets, ignored)
    assert _probe(watch)["val_loss"] == pytest.approx(expected, rel=1e-6)
    with torch.no_grad():
        outputs = model(inputs)
    by_size = sum(
        float(loss_fn(outputs[i : i + 1024], targets[i : i + 1024])) * len(targets[i : i + 1024])
        for i in range(0, 2500, 1024)
    )
    assert by_size / 2500 != pytest.approx(expected, rel=1e-3)


def test_training_batches_whose_labels_are_all_ignored_are_no_nonfinite_loss() -> None:
    # Only the samples of epoch 0's first batch have counted labels (class 0 is ignored):
    # every other batch of that epoch has a mean loss of 0 / 0 and zero gradients. The
    # first step's loss is finite, so the watch has a last finite loss to be given.
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(96, 8, generator=generator)
    labels = torch.randint(1, 3, (96,), generator=generator)
    labels[:2] = torch.tensor([1, 2])
    splits = DataSplits.from_datasets(
        Dataset(inputs, labels), Dataset(*_data(64)), Dataset(*_data(32, seed=1)), name="toy"
    )
    model = _model()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    options = {"epochs": 2, "batch_size": 16, "progress": False}
    loss_fn = nn.CrossEntropyLoss(ignore_index=0)
    first, _ = next(
        iter(Trainer(model, optimizer, splits, loss=loss_fn, **options).batches.epoch(0))
    )
    in_first = (inputs[:, None, :] == first[None]).all(dim=2).any(dim=1)  # (96,)
    splits.train.targets[:] = torch.where(in_first, labels, 0)

    watch = monitor.watch(model, optimizer, monitor_data=_data(64), every=2, cheap_every=1)
    callbacks = [WatchCallback(watch)]
    trainer = Trainer(model, optimizer, splits, loss=loss_fn, callbacks=callbacks, **options)
    result = trainer.fit()
    assert result.status == "completed"
    assert math.isfinite(result.metrics["train_loss"])
    assert Finding.NONFINITE_LOSS not in [finding.kind for finding in watch.findings()]
    assert all(math.isfinite(value) for value in watch.history.loss.values)
