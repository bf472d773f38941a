"""Runs the watch's defaults must judge right although they leave the usual path: a
regression, a trained net with dropout, all-zero weights, layers that are frozen, unfrozen
or left out of the optimizer, and a NaN gradient behind a finite loss (the first weight's,
or one confined to a middle weight's)."""

from __future__ import annotations

import copy
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


class _MiddleLayerGoesBad(nn.Module):
    """Three layers; from ``poisoned`` on, the middle weight's own gradient (and only it)
    has a NaN: its weight passes through ``_NanWeightGradient``, or it is kept nonnegative
    as sqrt(w * w) and one entry is exactly 0 (d sqrt(u)/du = inf there, times 2w = 0)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.first = nn.Linear(2, 16)
        self.middle = nn.Linear(16, 16)
        self.last = nn.Linear(16, 3)
        self.how = how
        self.poisoned = False

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        weight = self.middle.weight
        if self.how == "sqrt":
            weight = torch.sqrt(weight * weight)
        elif self.poisoned:
            weight = _NanWeightGradient.apply(weight)
        hidden = F.relu(F.linear(F.relu(self.first(inputs)), weight, self.middle.bias))
        return self.last(hidden)


@pytest.mark.parametrize("how", ["custom backward", "sqrt"])
def test_a_nan_in_a_middle_weights_own_gradient_is_named_at_its_step(how: str) -> None:
    # Neither the first nor the last parameter's gradient sees it, and the loss stays
    # finite until the update has written NaN into the middle weight (step 8); step 7 is
    # not a measured step at the default cadence.
    inputs, targets = spirals(256)
    torch.manual_seed(0)
    model = _MiddleLayerGoesBad(how)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = monitor.watch(model, optimizer, monitor_data=(inputs, targets))
    train(watch, model, optimizer, (inputs, targets), 6)
    model.poisoned = True
    if how == "sqrt":
        with torch.no_grad():
            model.middle.weight[3, 5] = 0.0
    outputs = model(inputs[:32])
    loss = F.cross_entropy(outputs, targets[:32])
    optimizer.zero_grad()
    loss.backward()
    grad = model.middle.weight.grad
    assert grad is not None
    assert not bool(torch.isfinite(grad).all())
    assert all(
        bool(torch.isfinite(p.grad).all())
        for name, p in model.named_parameters()
        if name != "middle.weight" and p.grad is not None
    )
    optimizer.step()
    raised = watch.step(loss)
    assert math.isfinite(loss.item())
    assert Finding.NONFINITE_LOSS in {f.kind for f in raised}  # raised at this step
    finding = next(f for f in raised if f.kind is Finding.NONFINITE_LOSS)
    assert finding.step == 7
    event = finding.evidence
    assert (event["step"], event["source"], event["where"], event["layer"]) == (
        7,
        "gradient",
        "gradient",
        "middle.weight",
    )
    assert event["first_nonfinite_gradient"] == "middle.weight"
    assert event["first_nonfinite_parameter"] is None  # found before the update wrote it
    assert event["last_finite_step"] == 6


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes: equal NaN payloads compare equal, unlike torch.equal."""
    return tensor.detach().reshape(-1).view(torch.uint8).clone()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_the_per_step_gradient_check_leaves_every_gradient_as_it_was(dtype: torch.dtype) -> None:
    # The check between measured steps runs in the optimizer's pre-hook; a second hook,
    # registered after the watch's, sees the gradients as the optimizer will.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    watch = monitor.watch(model, optimizer)
    seen: list[tuple[list[torch.Tensor], list[int]]] = []

    def snapshot(*_: object) -> None:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        seen.append(([_bits(g) for g in grads], [g._version for g in grads]))

    optimizer.register_step_pre_hook(snapshot)
    for step in (1, 2):  # step 2 is not a measured step
        loss = model(torch.randn(16, 4, dtype=dtype)).logsumexp(1).mean()
        optimizer.zero_grad()
        loss.backward()
        with torch.no_grad():
            model[2].weight.grad[0, 0] = torch.finfo(dtype).tiny / 4  # subnormal
            if step == 2:
                model[0].bias.grad[1] = math.nan  # neither the first nor the last gradient
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        before = ([_bits(g) for g in grads], [g._version for g in grads])
        optimizer.step()
        watch.step(loss)
        after = seen[-1]
        assert all(torch.equal(x, y) for x, y in zip(before[0], after[0], strict=True))
        assert before[1] == after[1]
    assert [r["step"] for r in watch.records() if r["kind"] == "gradients"] == [1]
    event = watch.history.nonfinite
    assert event is not None
    assert (event["step"], event["layer"]) == (2, "0.bias")


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64]
)
def test_the_gradient_check_and_its_reference_path_agree_with_isfinite(dtype: torch.dtype) -> None:
    # The CPU's check (GradScaler's) and the L1 norms that CUDA takes, which the CPU falls
    # back to (complex gradients), against isfinite on every gradient.
    from gradwise.monitor._probes import GradientProbe

    model = nn.ParameterDict(
        {name: nn.Parameter(torch.zeros(shape, dtype=dtype)) for name, shape in
         [("first", (8, 4)), ("middle", (8,)), ("last", (3, 8))]}
    )  # fmt: skip
    large = torch.finfo(torch.float16).max / 2  # a float16 sum of these overflows
    cases: list[dict[str, float]] = [
        {},
        {"first": 1.0, "middle": 1.0, "last": 1.0},
        {"first": large, "middle": large, "last": large},
        {"first": 1.0, "middle": math.nan, "last": 1.0},
        {"first": 1.0, "middle": math.inf, "last": 1.0},
        {"first": 1.0, "middle": -math.inf},
        {"middle": 1.0},
    ]
    for scaler_check in (True, False):
        probe = GradientProbe(model)
        probe._scaler_check = scaler_check
        for case in cases:
            for name, parameter in model.items():
                value = case.get(name)
                parameter.grad = None if value is None else torch.full_like(parameter, 0.5)
                if value is not None:
                    parameter.grad[-1] = value
            grads = [p.grad for p in model.values() if p.grad is not None]
            expected = all(bool(torch.isfinite(grad).all()) for grad in grads)
            assert probe.gradients_finite() is expected, (scaler_check, case)


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


def test_a_step_that_grad_scaler_skips_is_not_a_nonfinite_gradient() -> None:
    # Mixed precision's loss scaling: GradScaler starts with a large scale, and while the
    # scaled gradients overflow it skips optimizer.step() (no update is made) and halves
    # the scale. Those first steps are measured steps (step 1 always is); their
    # gradients were never used, so they are not a NaN in training.
    torch.manual_seed(0)
    batch = spirals()
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 3))
    # (lr 0.05 / 32: the loss is a sum over the batch, whose scaled value overflows)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05 / 32, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)
    watch = monitor.watch(model, optimizer, monitor_data=batch)
    generator = torch.Generator().manual_seed(0)
    taken = []  # the steps the optimizer took
    for step in range(1, 61):
        index = torch.randint(0, len(batch[0]), (32,), generator=generator)
        loss = F.cross_entropy(model(batch[0][index]), batch[1][index], reduction="sum")
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        if scaler.get_scale() == scale:
            taken.append(step)
        watch.step(loss)
    assert taken[0] > 2  # the first steps overflowed and were skipped
    assert watch.findings() == []
    measured = [r for r in watch.records() if r["kind"] == "gradients"]
    assert measured[0]["step"] == taken[0]  # the first step the optimizer took
    assert all(math.isfinite(r["grad_norm"]) for r in measured)
    weights = [r for r in watch.records() if r["kind"] == "weight" and r["step"] == taken[0]]
    assert weights
    assert all(r["update_ratio"] > 0 for r in weights)  # its update is measured


def test_a_converged_run_on_separable_data_has_no_gradient_spike() -> None:
    # AdamW 3e-3 on moons reaches a loss ~1e-4 and validation accuracy 1.0; then most
    # batches give gradient norms ~4e-3 and one with the hardest samples 0.6 (step 740):
    # 150x the median, but half of step 1's norm.
    data = load_dataset("moons", seed=0)
    mean, std = data.train.inputs.mean(0), data.train.inputs.std(0)
    inputs, targets = (data.train.inputs - mean) / std, data.train.targets
    validation = ((data.validation.inputs - mean) / std, data.validation.targets)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    watch = monitor.watch(
        model, optimizer, monitor_data=(inputs[:256], targets[:256]), validation_data=validation
    )
    generator = torch.Generator().manual_seed(0)
    for _ in range(800):
        index = torch.randint(0, len(inputs), (32,), generator=generator)
        loss = F.cross_entropy(model(inputs[index]), targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        watch.step(loss)
    probe = [r for r in watch.records() if r["kind"] == "probe"][-1]
    assert probe["val_accuracy"] == 1.0
    assert watch.findings() == []


def test_a_nan_gradient_that_grad_scaler_keeps_skipping_is_still_named() -> None:
    # GradScaler skips every step whose gradients hold a NaN: a NaN that stays (here the
    # first weight's, from step 7 on) would stop training without a word, so once the
    # optimizer has skipped `sustained_steps` (20) steps in a row the next measured
    # step's gradients are judged as training's again.
    inputs, targets = spirals(256)
    torch.manual_seed(0)
    model = _FirstLayerGoesBad()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    watch = monitor.watch(model, optimizer, monitor_data=(inputs, targets))
    generator = torch.Generator().manual_seed(0)
    for step in range(1, 41):
        model.poisoned = step >= 7
        index = torch.randint(0, len(inputs), (32,), generator=generator)
        loss = F.cross_entropy(model(inputs[index]), targets[index])
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        watch.step(loss)
    finding = next(f for f in watch.findings() if f.kind is Finding.NONFINITE_LOSS)
    assert finding.step == 30  # skipped since step 7: 20 skips by step 26, measured at 30
    assert finding.evidence["first_nonfinite_gradient"] == "first.weight"
    assert finding.evidence["first_nonfinite_parameter"] is None  # never written


def test_a_watch_attached_to_a_trained_classifier_does_not_call_its_noise_divergence() -> None:
    # Trained for 1000 steps, the MLP's loss is ~0.001, and batch noise alone doubles the
    # median of 3 step losses (0.0014 to 0.0029 by step 60 of the first continuation) or
    # lifts the smoothed loss by 60% from its best (0.00066 to 0.00106 by step 190 of the
    # second): no reason to lower the learning rate.
    data = load_dataset("digits", seed=0)
    inputs = data.train.inputs.flatten(1)
    inputs = (inputs - inputs.mean(0)) / (inputs.std(0) + 1e-6)
    targets = data.train.targets
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    unwatched = monitor.watch(model, None, monitor_data=(inputs[:2], targets[:2]), every=10**6)
    train(unwatched, model, optimizer, (inputs, targets), 1000)
    unwatched.close()
    trained = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
    for seed, steps in ((0, 100), (1, 200)):
        model.load_state_dict(trained[0])
        optimizer.load_state_dict(trained[1])
        with monitor.watch(model, optimizer, monitor_data=(inputs[:256], targets[:256])) as watch:
            assert watch.history.initial_loss < 0.01
            train(watch, model, optimizer, (inputs, targets), steps, seed=seed)
        assert watch.findings() == []
