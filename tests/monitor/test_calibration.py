"""The calibrated defaults on real runs: healthy runs raise nothing, planted faults are named.

Every run uses the default Thresholds. Healthy runs are long enough for every detector
to have judged them (past warmup plus a full window, with validation data for the
overfitting and no-signal detectors); each planted fault must appear among the findings.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from gradwise import Finding, init, optim
from gradwise.data import Dataset
from gradwise.models import cnn1d, cnn2d, mlp
from tests.monitor.setups import Run, kinds, standardized, train

DIGITS = (1, 8, 8)


def digits_mlp(lr: float, **model: object) -> Run:
    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        network = mlp(DIGITS, 10, **model)  # type: ignore[arg-type]
        return network, optim.Adam(network.parameters(), lr=lr)

    return Run(make, standardized("digits"), steps=400)


def spirals_sgd(lr: float, momentum: float = 0.9) -> Run:
    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        network = mlp((2,), 3, depth=2, width=64)
        return network, optim.SGD(network.parameters(), lr=lr, momentum=momentum)

    return Run(make, standardized("spirals"), steps=400, batch_size=16)


def default_cnn1d() -> tuple[nn.Module, torch.optim.Optimizer]:
    network = cnn1d((1, 40), 10)
    init.initialize(network, "he_normal", generator=0)
    return network, optim.AdamW(network.parameters(), lr=3e-3, weight_decay=0.05)


def tanh_xavier() -> tuple[nn.Module, torch.optim.Optimizer]:
    network = mlp(DIGITS, 10, depth=3, width=128, activation="tanh")
    init.initialize(network, "xavier_normal", generator=0)
    return network, optim.SGD(network.parameters(), lr=0.05, momentum=0.9)


def batchnorm_cnn2d() -> tuple[nn.Module, torch.optim.Optimizer]:
    network = cnn2d(DIGITS, 10, depth=2, width=16)
    return network, optim.Adam(network.parameters(), lr=1e-3)


HEALTHY = {
    "cnn1d on mnist1d, AdamW 3e-3 (the default model)": Run(
        default_cnn1d, standardized("mnist1d"), steps=290, batch_size=128
    ),
    "mlp on digits, Adam 1e-3": digits_mlp(1e-3),
    "mlp on spirals, SGD 0.05 + momentum 0.9": spirals_sgd(0.05),
    "tanh mlp with Xavier init on digits, SGD + momentum": Run(
        tanh_xavier, standardized("digits"), steps=400
    ),
    "batch-norm cnn2d on digits, Adam 1e-3": Run(
        batchnorm_cnn2d, standardized("digits"), steps=300
    ),
}


@pytest.mark.parametrize("name", list(HEALTHY))
def test_healthy_runs_raise_no_finding(name: str) -> None:
    watch, _ = train(HEALTHY[name])
    assert watch is not None
    assert watch.findings() == [], [str(finding) for finding in watch.findings()]
    # The run was judged: a window past warmup, probes, update ratios, validation.
    assert watch.num_steps >= 250
    assert len(watch.history.val_accuracy) >= 5
    assert watch.history.update_ratio


def test_a_healthy_run_stays_quiet_when_everything_is_measured_every_step() -> None:
    watch, _ = train(spirals_sgd(0.05), every=10, cheap_every=1)
    assert watch is not None
    assert watch.findings() == [], [str(finding) for finding in watch.findings()]


def _lr_fix(watch: object, kind: Finding) -> float:
    finding = next(f for f in watch.findings() if f.kind is kind)  # type: ignore[attr-defined]
    return float(finding.fix["optimizer.lr"])


def test_learning_rate_100x_too_high_is_named_with_a_fix_near_the_healthy_rate() -> None:
    run = dataclasses.replace(digits_mlp(1e-1), steps=100)
    watch, _ = train(run)
    assert "LEARNING_RATE_TOO_HIGH" in kinds(watch)
    # The factor comes from the first update's size: it lands within 10x of the rate the
    # healthy setup uses (1e-3), i.e. it recovers most of the 100x.
    assert 1e-4 <= _lr_fix(watch, Finding.LEARNING_RATE_TOO_HIGH) <= 1e-2


def test_learning_rate_100x_too_low_is_named_with_a_fix_near_the_healthy_rate() -> None:
    watch, _ = train(dataclasses.replace(digits_mlp(1e-5), steps=300))
    assert "LEARNING_RATE_TOO_LOW" in kinds(watch)
    assert 1e-4 <= _lr_fix(watch, Finding.LEARNING_RATE_TOO_LOW) <= 1e-2


def test_sgd_learning_rate_100x_too_low_is_named() -> None:
    watch, _ = train(dataclasses.replace(spirals_sgd(5e-4), steps=500))
    assert "LEARNING_RATE_TOO_LOW" in kinds(watch)


def test_an_exploding_sgd_run_is_named_nonfinite_at_the_right_step() -> None:
    watch, _ = train(dataclasses.replace(spirals_sgd(30.0), steps=30))
    assert {"NONFINITE_LOSS", "LEARNING_RATE_TOO_HIGH"} <= kinds(watch)
    assert watch is not None
    finding = next(f for f in watch.findings() if f.kind is Finding.NONFINITE_LOSS)
    first_bad = next(s for s, v in watch.history.loss if not math.isfinite(v))
    assert finding.evidence["step"] <= first_bad


def test_a_20_layer_sigmoid_net_has_vanishing_gradients() -> None:
    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        network = mlp(DIGITS, 10, depth=20, width=64, activation="sigmoid")
        return network, optim.SGD(network.parameters(), lr=0.01, momentum=0.9)

    watch, _ = train(Run(make, standardized("digits"), steps=30))
    assert "VANISHING_GRADIENTS" in kinds(watch)


def test_a_large_negative_bias_kills_relu_units() -> None:
    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        network = mlp(DIGITS, 10, depth=2, width=128)
        init.initialize(network, "he_normal", biases=-3.0, generator=0)
        return network, optim.Adam(network.parameters(), lr=1e-3)

    watch, _ = train(Run(make, standardized("digits"), steps=100))
    assert "DEAD_UNITS" in kinds(watch)


def test_a_huge_initial_scale_saturates_tanh_units() -> None:
    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        network = mlp(DIGITS, 10, depth=3, width=128, activation="tanh")
        init.initialize(network, init.normal(std=1.0), generator=0)  # ~10x Xavier
        return network, optim.SGD(network.parameters(), lr=0.05, momentum=0.9)

    watch, _ = train(Run(make, standardized("digits"), steps=100))
    assert "SATURATED_UNITS" in kinds(watch)


def test_shuffled_labels_give_no_learning_signal() -> None:
    data = standardized("digits")
    shuffled = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(1))
    train_split = Dataset(data.train.inputs, data.train.targets[shuffled])
    data = dataclasses.replace(data, train=train_split)

    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        network = mlp(DIGITS, 10, depth=1, width=32)
        return network, optim.Adam(network.parameters(), lr=1e-3)

    watch, _ = train(Run(make, data, steps=300))
    assert "NO_LEARNING_SIGNAL" in kinds(watch)


def test_a_big_model_on_tiny_data_overfits() -> None:
    data = standardized("digits")
    data = dataclasses.replace(data, train=data.train.subset(list(range(100))))

    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        network = mlp(DIGITS, 10, depth=2, width=512)
        return network, optim.Adam(network.parameters(), lr=1e-3)

    watch, _ = train(Run(make, data, steps=450, batch_size=20))
    assert "OVERFITTING" in kinds(watch)


def test_too_much_momentum_oscillates() -> None:
    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        network = mlp(DIGITS, 10, depth=2, width=128)
        return network, optim.SGD(network.parameters(), lr=0.02, momentum=0.995)

    watch, _ = train(Run(make, standardized("digits"), steps=400), every=10)
    assert "OSCILLATION" in kinds(watch)


def test_a_corrupted_batch_makes_the_gradient_norm_spike() -> None:
    def corrupt(step: int, inputs: torch.Tensor) -> torch.Tensor:
        return inputs * 1000.0 if step == 160 else inputs

    watch, _ = train(digits_mlp(1e-3), corrupt=corrupt)
    assert "EXPLODING_GRADIENTS" in kinds(watch)
    assert watch is not None
    finding = next(f for f in watch.findings() if f.kind is Finding.EXPLODING_GRADIENTS)
    assert finding.step == 160
