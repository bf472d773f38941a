"""Runs the watch's defaults must judge right although they leave the usual path: a
regression, a trained net with dropout, all-zero weights, layers that are frozen, unfrozen
or left out of the optimizer, and a NaN gradient behind a finite loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradwise import Finding, monitor
from gradwise.data import load_dataset


def spirals(count: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("spirals", seed=0)
    inputs = data.train.inputs
    inputs = (inputs - inputs.mean(0)) / inputs.std(0)
    return inputs[:count], data.train.targets[:count]


def kinds(watch: monitor.Watch) -> set[Finding]:
    return {finding.kind for finding in watch.findings()}


def train(
    watch: monitor.Watch,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    *,
    loss_fn: str = "cross_entropy",
    seed: int = 0,
) -> None:
    inputs, targets = batch
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(0, len(inputs), (32,), generator=generator)
        outputs = model(inputs[index])
        if loss_fn == "mse":
            loss = F.mse_loss(outputs.squeeze(-1), targets[index])
        else:
            loss = F.cross_entropy(outputs, targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        watch.step(loss)


def test_a_regression_has_no_loss_at_chance_and_no_false_no_learning_signal() -> None:
    # An MSE regression whose loss falls from ~220 to its noise floor (~9): a loss above
    # 1 is not "at chance" (chance_loss("mse", 1) would say 1.0).
    torch.manual_seed(0)
    inputs = torch.randn(512, 4)
    targets = 10 * inputs[:, 0] + 5 * inputs[:, 1] ** 2 + 3.0 * torch.randn(512)
    model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    watch = monitor.watch(
        model, optimizer, monitor_data=(inputs[:256], targets[:256]), loss_fn="mse"
    )
    train(watch, model, optimizer, (inputs, targets), 300, loss_fn="mse")
    assert watch.history.chance_loss is None
    assert watch.history.monitor_loss.values[-1] < watch.history.monitor_loss.values[0] / 10
    assert not kinds(watch) & {Finding.NO_LEARNING_SIGNAL, Finding.PLATEAU, Finding.UNDERFITTING}


def test_a_trained_net_with_dropout_is_not_diverging_when_a_watch_starts() -> None:
    # Its eval-mode loss is a fraction of its training-mode loss: the step losses (training
    # mode) must be compared with a training-mode start, not the eval-mode probe.
    inputs, targets = spirals(512)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 128), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(128, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 3),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    unwatched = monitor.watch(model, None, monitor_data=(inputs[:2], targets[:2]), every=10**6)
    train(unwatched, model, optimizer, (inputs, targets), 1000, seed=1)
    unwatched.close()
    watch = monitor.watch(model, optimizer, monitor_data=(inputs[:256], targets[:256]))
    with torch.no_grad():
        model.train()
        training_mode = F.cross_entropy(model(inputs[:256]), targets[:256])
    assert float(training_mode) > 1.5 * watch.history.initial_loss  # what the test is about
    train(watch, model, optimizer, (inputs, targets), 100, seed=2)
    assert Finding.LEARNING_RATE_TOO_HIGH not in kinds(watch)


def test_all_zero_weights_that_never_move_have_no_update_ratio_and_are_named() -> None:
    # A tanh net with every weight and bias 0 stays at chance: 0/0 update ratios are not
    # tiny updates (they muted the plateau and no-signal detectors).
    inputs, targets = spirals(512)
    model = nn.Sequential(
        nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 3)
    )
    for parameter in model.parameters():
        nn.init.zeros_(parameter)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    watch = monitor.watch(model, optimizer, monitor_data=(inputs[:256], targets[:256]))
    train(watch, model, optimizer, (inputs, targets), 300)
    ratios = [r["update_ratio"] for r in watch.records() if r["kind"] == "weight"]
    assert ratios
    assert all(math.isnan(ratio) for ratio in ratios)
    assert Finding.NO_LEARNING_SIGNAL in kinds(watch)


def linear_probe(how: str) -> tuple[nn.Sequential, torch.optim.Optimizer, monitor.Watch]:
    """A random-feature backbone and a trained head on spirals; the backbone is frozen
    before the watch, frozen after it, or left trainable but out of the optimizer."""
    inputs, targets = spirals(256)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3)
    )
    backbone = list(model[:4].parameters())
    if how == "frozen before":
        for parameter in backbone:
            parameter.requires_grad_(False)
    optimizer = torch.optim.SGD(model[4].parameters(), lr=0.1)
    watch = monitor.watch(model, optimizer, monitor_data=(inputs, targets))
    if how == "frozen after":
        for parameter in backbone:
            parameter.requires_grad_(False)
    train(watch, model, optimizer, (inputs, targets), 30)
    return model, optimizer, watch


def test_weights_the_optimizer_does_not_step_are_not_measured_as_updates() -> None:
    for how in ("frozen before", "frozen after", "left out of the optimizer"):
        _, _, watch = linear_probe(how)
        layers = {r["layer"] for r in watch.records() if r["kind"] == "weight"}
        assert layers == {"4.weight"}, how
        assert set(watch.history.update_ratio) == {"4.weight"}, how
        assert all(ratio > 0 for ratio in watch.history.update_ratio["4.weight"].values), how


def test_a_layer_unfrozen_mid_run_is_measured_from_then_on() -> None:
    inputs, targets = spirals(256)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 3))
    model[0].weight.requires_grad_(False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = monitor.watch(model, optimizer, monitor_data=(inputs, targets), cheap_every=1)
    train(watch, model, optimizer, (inputs, targets), 3)
    model[0].weight.requires_grad_(True)
    inputs_batch, targets_batch = inputs[:32], targets[:32]
    loss = F.cross_entropy(model(inputs_batch), targets_batch)
    optimizer.zero_grad()
    loss.backward()
    expected = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters()))
    optimizer.step()
    watch.step(loss)
    (last,) = [r for r in watch.records() if r["kind"] == "gradients" and r["step"] == 4]
    assert last["grad_norm"] == pytest.approx(expected, rel=1e-5)
    layers = {r["layer"] for r in watch.records() if r["kind"] == "weight" and r["step"] == 4}
    assert layers == {"0.weight", "2.weight"}
    assert {r["layer"] for r in watch.records() if r["kind"] == "weight" and r["step"] == 3} == {
        "2.weight"
    }


class _NanWeightGradient(torch.autograd.Function):
    """The identity whose backward hands its weight a NaN gradient (the loss stays finite)."""

    @staticmethod
    def forward(ctx: object, weight: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return weight.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.full_like(grad, math.nan)


class _FirstLayerGoesBad(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(2, 16)
        self.rest = nn.Sequential(nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
        self.poisoned = False

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        weight = _NanWeightGradient.apply(self.first.weight) if self.poisoned else self.first.weight
        return self.rest(F.linear(inputs, weight, self.first.bias))


def test_a_nan_gradient_behind_a_finite_loss_is_named_at_its_step() -> None:
    inputs, targets = spirals(256)
    torch.manual_seed(0)
    model = _FirstLayerGoesBad()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = monitor.watch(model, optimizer, monitor_data=(inputs, targets))
    train(watch, model, optimizer, (inputs, targets), 6)  # 6 is not a measured step
    model.poisoned = True
    train(watch, model, optimizer, (inputs, targets), 1, seed=7)
    event = watch.history.nonfinite
    assert event is not None
    assert (event["step"], event["source"], event["first_nonfinite_gradient"]) == (
        7,
        "gradient",
        "first.weight",
    )
    assert math.isfinite(watch.history.loss.values[-1])
    assert Finding.NONFINITE_LOSS in kinds(watch)


def test_a_nan_loss_is_labelled_the_loss_although_the_optimizer_hook_sees_it_first() -> None:
    inputs, targets = spirals(256)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = monitor.watch(model, optimizer, monitor_data=(inputs, targets))
    train(watch, model, optimizer, (inputs, targets), 3)
    loss = F.cross_entropy(model(inputs[:32]), targets[:32]) * math.nan
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    watch.step(loss)
    event = watch.history.nonfinite
    assert event is not None
    assert (event["step"], event["source"]) == (4, "loss")


def test_a_layer_frozen_mid_run_does_not_switch_off_the_update_ratio_checks() -> None:
    # Three layers measured every 10 steps; the first frozen at step 40: its series stops,
    # the other two still carry the window's median.
    history = monitor.History(learning_rate=1e-4)
    for name in ("0.weight", "2.weight", "4.weight"):
        stop = 40 if name == "0.weight" else 601
        history.update_ratio[name] = monitor.Series(
            list(range(10, stop, 10)), [4.5e-6] * len(range(10, stop, 10))
        )
    history.loss = monitor.Series(list(range(1, 601)), [2.3 - 1e-4 * s for s in range(1, 601)])
    thresholds = monitor.Thresholds()
    assert monitor.median_update_ratio(history, thresholds) == pytest.approx(4.5e-6)
    assert monitor.median_update_ratio_at_base_rate(history, thresholds) == pytest.approx(4.5e-6)


def test_a_cycle_that_starts_at_the_bottom_is_measured_against_its_peak() -> None:
    # torch's OneCycleLR keeps max_lr / 25 as "initial_lr": ratios at the cycle's rates are
    # taken to its peak, not multiplied by up to 25 towards its start.
    history = monitor.History(learning_rate=0.01 / 25)
    steps = list(range(10, 601, 10))
    rates = [0.01 * min(s / 150, 1.0, (600 - s) / 450 + 0.04) for s in steps]
    history.step_learning_rate = monitor.Series(steps, rates)
    history.update_ratio["0.weight"] = monitor.Series(steps, [0.3 * rate for rate in rates])
    assert monitor.reference_learning_rate(history) == pytest.approx(max(rates))
    ratio = monitor.median_update_ratio_at_base_rate(history, monitor.Thresholds())
    assert ratio == pytest.approx(0.3 * max(rates))


def test_a_group_kept_at_rate_zero_neither_stands_for_the_rate_nor_counts_as_updates() -> None:
    inputs, targets = spirals(256)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3)
    )
    optimizer = torch.optim.SGD(
        [{"params": model[:4].parameters(), "lr": 0.0}, {"params": model[4].parameters()}],
        lr=0.05,
    )
    watch = monitor.watch(model, optimizer, monitor_data=(inputs, targets))
    train(watch, model, optimizer, (inputs, targets), 100)
    measured = [r["step"] for r in watch.records() if r["kind"] == "gradients"]
    assert measured == [1, *range(10, 101, 10)]  # not every step
    assert watch.history.learning_rate == 0.05
    assert set(watch.history.update_ratio) == {"4.weight"}
    assert set(watch.history.layer_grad_norm) == {"0.weight", "2.weight", "4.weight"}


def test_a_layer_unfrozen_later_takes_its_place_as_the_first_layer() -> None:
    inputs, targets = spirals(256)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 32), nn.Sigmoid(), nn.Linear(32, 32), nn.Sigmoid(), nn.Linear(32, 3)
    )
    model[0].weight.requires_grad_(False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = monitor.watch(model, optimizer, monitor_data=(inputs, targets), cheap_every=1)
    train(watch, model, optimizer, (inputs, targets), 3)
    assert list(watch.history.layer_grad_norm) == ["2.weight", "4.weight"]
    model[0].weight.requires_grad_(True)
    train(watch, model, optimizer, (inputs, targets), 2)
    assert list(watch.history.layer_grad_norm) == ["0.weight", "2.weight", "4.weight"]
    first, last = (watch.history.layer_grad_norm[n].last for n in ("0.weight", "4.weight"))
    assert watch.history.first_last_grad_ratio.last == pytest.approx(first / last)
