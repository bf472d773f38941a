"""What a watch takes from the user, and one first measurement: QA findings of a plain-loop
practitioner (NumPy numbers, a wrong state dict, bad labels, data printed in messages, a
zero-initialized output layer)."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradwise import Finding, monitor

Batch = tuple[torch.Tensor, torch.Tensor]


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))


def _batch(count: int = 64) -> Batch:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(count, 10, generator=generator), torch.randint(
        0, 3, (count,), generator=generator
    )


def _train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    watch: monitor.Watch,
    batch: Batch,
    steps: int,
) -> None:
    for _ in range(steps):
        loss = F.cross_entropy(model(batch[0]), batch[1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        watch.step(loss)


def test_numpy_numbers_are_numbers() -> None:
    # np.float32 (an accuracy computed in NumPy) and np.int64 are no Python float or int:
    # they were refused as "not a number".
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = monitor.watch(model, optimizer, monitor_data=_batch())
    _train(model, optimizer, watch, _batch(), 1)
    loss = F.cross_entropy(model(_batch()[0]), _batch()[1])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    watch.step(np.float32(loss.item()))
    assert watch.history.loss.values[-1] == pytest.approx(loss.item(), rel=1e-6)
    watch.observe({"val_accuracy": np.float32(0.75), "val_loss": np.array(0.5)})
    assert watch.history.val_accuracy.values[-1] == 0.75
    assert watch.history.val_loss.values[-1] == 0.5
    with pytest.raises(ValueError, match="must be a number"):
        watch.step(np.bool_(True))
    watch.close()


def test_a_state_that_is_no_watchs_is_refused_and_changes_nothing() -> None:
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = monitor.watch(model, optimizer, monitor_data=_batch())
    _train(model, optimizer, watch, _batch(), 3)
    before = watch.state_dict()
    for wrong in (model.state_dict(), {"step": 500}):
        with pytest.raises(ValueError, match=r"must be what Watch.state_dict\(\) returned") as info:
            watch.load_state_dict(wrong)
        assert "nothing was changed" in str(info.value)
        assert watch.num_steps == 3  # a partial state set the step first: 500
    assert watch.state_dict()["step"] == before["step"]
    watch.load_state_dict(before)  # its own still loads
    watch.close()


@pytest.mark.parametrize("where", ["monitor_data", "validation_data"])
def test_labels_the_loss_refuses_name_the_argument_that_holds_them(where: str) -> None:
    # The loss's own message named cross_entropy's 'targets', not the watch's argument.
    model = _mlp()
    inputs, _ = _batch(16)
    bad = (inputs, torch.full((16,), 5))
    data = {"monitor_data": _batch(), "validation_data": _batch(), where: bad}
    with pytest.raises(
        ValueError, match=rf"^The '{where}' parameter of watch must hold targets"
    ) as info:
        monitor.watch(model, **data)
    assert "class indices in [0, 2]" in str(info.value)


def test_messages_show_arrays_lists_and_modules_by_what_they_are() -> None:
    # A NumPy pair printed both arrays whole (13,357 characters), a model passed as the
    # optimizer every layer.
    model = _mlp()
    inputs, targets = _batch()
    with pytest.raises(ValueError, match="monitor_data") as info:
        monitor.watch(model, monitor_data=(inputs.numpy(), targets.numpy()))
    assert (
        "Got (<ndarray of shape (64, 10), float32>, <ndarray of shape (64,), int64>) instead"
        in str(info.value)
    )
    with pytest.raises(ValueError, match="optimizer") as info:
        monitor.watch(model, model)  # type: ignore[arg-type]
    assert str(info.value).endswith("Got <Sequential module> instead.")
    with pytest.raises(ValueError, match="monitor_data") as info:
        monitor.watch(model, monitor_data=(inputs.tolist(), targets.tolist()))
    assert len(str(info.value)) < 600


def test_a_zero_initialized_output_layer_takes_the_first_update_that_moved_a_weight() -> None:
    # At step 1 the layer behind a zero output layer gets no gradient (ratio 0) and the
    # output layer moves away from 0 (ratio inf): no step size. The next measured step was
    # step 10, after nine steps at lr 1.0 had inflated the weights: the learning rate was
    # cut ~80x too little, and the fix still drew LEARNING_RATE_TOO_HIGH.
    torch.manual_seed(0)
    inputs = torch.randn(512, 64)
    labels = inputs[:, :10].argmax(dim=1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    nn.init.zeros_(model[2].weight)
    nn.init.zeros_(model[2].bias)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    watch = monitor.watch(model, optimizer, monitor_data=(inputs[:256], labels[:256]))
    generator = torch.Generator().manual_seed(0)
    ratios: dict[int, list[float]] = {}
    for step in range(1, 41):
        rows = torch.randint(0, 512, (32,), generator=generator)
        weights = {name: p.detach().clone() for name, p in model.named_parameters() if p.dim() == 2}
        loss = F.cross_entropy(model(inputs[rows]), labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        watch.step(loss)
        ratios[step] = [
            float((p.detach() - weights[name]).norm() / weights[name].norm())
            for name, p in model.named_parameters()
            if p.dim() == 2
        ]
    assert ratios[1][0] == 0.0
    assert ratios[1][1] == float("inf")
    found = {finding.kind: finding for finding in watch.findings()}
    evidence = found[Finding.LEARNING_RATE_TOO_HIGH].evidence
    assert evidence["first_update_ratio"] == pytest.approx(statistics.median(ratios[2]), rel=1e-3)
    assert 2 in watch.history.update_ratio["0.weight"].steps
    watch.close()
