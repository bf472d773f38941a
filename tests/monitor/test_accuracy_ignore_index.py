"""The watch's monitoring and validation accuracies leave out the samples its loss leaves
out (the loss's ignore_index), against a plain computation over the samples counted."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradwise import monitor


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _data(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(count, 8, generator=generator)
    return inputs, (inputs[:, 0] > 0).long() + (inputs[:, 1] > 1).long()


def _plain_accuracy(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, ignored: int):
    with torch.no_grad():
        predictions = model(inputs).argmax(dim=1)
    kept = targets != ignored
    return (predictions[kept] == targets[kept]).sum().item() / kept.sum().item()


def _probe(watch: monitor.Watch) -> dict:
    (probe,) = [r for r in watch.records() if r["kind"] == "probe" and r["step"] == 0]
    return probe


def test_monitoring_accuracy_leaves_out_minus_100_targets() -> None:
    model = _model()
    inputs, targets = _data(256)
    targets[::4] = -100
    watch = monitor.watch(model, monitor_data=(inputs, targets))
    probe = _probe(watch)
    expected = _plain_accuracy(model, inputs, targets, -100)
    assert probe["monitor_accuracy"] == pytest.approx(expected, rel=1e-6)
    with torch.no_grad():  # the loss leaves out the same samples
        loss = F.cross_entropy(model(inputs), targets)
    assert probe["monitor_loss"] == pytest.approx(float(loss), rel=1e-6)


def test_validation_accuracy_sums_counted_samples_over_its_batches() -> None:
    # 2500 samples: three evaluation batches of 1024; the first has most of its targets
    # ignored, so a mean of batch accuracies (or one that counts them) would differ.
    model = _model()
    inputs, targets = _data(2500, seed=1)
    targets[:900] = -100
    validation = (inputs, targets)
    watch = monitor.watch(model, monitor_data=_data(256), validation_data=validation)
    probe = _probe(watch)
    expected = _plain_accuracy(model, inputs, targets, -100)
    assert probe["val_accuracy"] == pytest.approx(expected, rel=1e-9)
    assert probe["gap"] == pytest.approx(probe["monitor_accuracy"] - expected, rel=1e-6)


def test_the_loss_own_ignore_index_is_the_one_left_out() -> None:
    model = _model()
    inputs, targets = _data(256)
    loss_fn = nn.CrossEntropyLoss(ignore_index=1)
    watch = monitor.watch(
        model, monitor_data=(inputs, targets), validation_data=(inputs, targets), loss_fn=loss_fn
    )
    probe = _probe(watch)
    expected = _plain_accuracy(model, inputs, targets, 1)
    assert probe["monitor_accuracy"] == pytest.approx(expected, rel=1e-6)
    assert probe["val_accuracy"] == pytest.approx(expected, rel=1e-9)
    with torch.no_grad():
        everything = float((model(inputs).argmax(dim=1) == targets).double().mean())
    assert expected != pytest.approx(everything)


def test_no_accuracy_is_recorded_when_every_target_is_ignored() -> None:
    # Nothing to count: no accuracy rather than a NaN in the history, and no validation
    # loss either (a mean over no sample, 0 / 0).
    model = _model()
    inputs, targets = _data(64)
    ignored = torch.full_like(targets, -100)
    watch = monitor.watch(model, monitor_data=(inputs, targets), validation_data=(inputs, ignored))
    probe = _probe(watch)
    assert "val_accuracy" not in probe
    assert "gap" not in probe
    assert "val_loss" not in probe
    assert watch.history.val_loss.values == []
    unlabeled = monitor.watch(model, monitor_data=(inputs, ignored))
    assert "monitor_accuracy" not in _probe(unlabeled)
    assert unlabeled.history.monitor_accuracy.values == []
