"""Sanity checks: healthy models pass, each planted fault fails the right check, nothing leaks.

Oracles: closed forms (ln C, C - 1, the L2 penalty), torch's own losses on the whole data,
the exact dependency pattern of hand-written batch-mixing models, and re-running a check
after applying the fix it measured.
"""

import copy
import functools
import math
import re
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradwise.checks
from gradwise import Finding
from gradwise.checks import (
    CHECK_NAMES,
    SanityReport,
    check_all_parameters_get_gradients,
    check_initial_loss,
    check_learning_rate_sweep,
    check_overfit_tiny_subset,
    check_regularization_raises_loss,
    check_samples_do_not_mix,
    sanity,
)
from gradwise.data import Dataset, load_dataset
from gradwise.init import initialize
from gradwise.losses import get_loss
from gradwise.models import cnn1d, mlp
from gradwise.optim import SGD, Adam
from tests.doc_examples import DOCS, run_docstring_examples


@pytest.fixture(scope="module")
def spirals():
    return load_dataset("spirals", seed=0)


def healthy_mlp(seed=0, **options):
    torch.manual_seed(seed)
    return mlp((2,), 3, depth=2, width=64, **options)


def kinds(result):
    return [finding.kind for finding in result.findings]


def blob_data(num_samples=120, num_classes=3, seed=0):
    """Well separated Gaussian blobs in 4-D: easy to learn."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.arange(num_samples) % num_classes
    centers = 3.0 * torch.eye(num_classes, 4)
    inputs = centers[targets] + 0.5 * torch.randn(num_samples, 4, generator=generator)
    return inputs, targets


def model_state(model):
    """Everything a probe could change: tensors, gradients, modes, dropout rates."""
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "dropout": {n: m.p for n, m in model.named_modules() if isinstance(m, nn.Dropout)},
    }


def assert_same_state(before, after):
    assert before["tensors"].keys() == after["tensors"].keys()
    for key, tensor in before["tensors"].items():
        assert torch.equal(tensor, after["tensors"][key]), key
    for name, grad in before["grads"].items():
        if grad is None:
            assert after["grads"][name] is None, name
        else:
            assert torch.equal(grad, after["grads"][name]), name
    for field in ("requires_grad", "training", "dropout"):
        assert before[field] == after[field], field


# --------------------------------------------------------------------------------------
# Healthy models pass everything


def test_a_healthy_mlp_on_spirals_passes_every_check(spirals):
    report = sanity(healthy_mlp(), "cross_entropy", spirals)
    assert [result.name for result in report.results] == list(CHECK_NAMES)
    assert report.passed, report.to_table().render_text()
    assert report.findings() == []
    assert not any(result.skipped for result in report.results)


def test_a_healthy_batch_norm_dropout_mlp_passes_every_check(spirals):
    model = healthy_mlp(norm="batch", dropout_rate=0.3)
    report = sanity(model, "cross_entropy", spirals)
    assert report.passed, report.to_table().render_text()
    assert "running statistics" in report["samples_do_not_mix"].message


def test_the_default_cnn1d_on_mnist1d_passes_every_check_within_ten_seconds():
    data = load_dataset("mnist1d", seed=0)
    torch.manual_seed(0)
    model = cnn1d(data.input_shape, data.num_classes)
    initialize(model, "he_normal", generator=0)
    start = time.perf_counter()
    report = sanity(model, "cross_entropy", data)
    elapsed = time.perf_counter() - start
    assert report.passed, report.to_table().render_text()
    assert elapsed < 10.0


def test_the_multiclass_hinge_loss_passes_on_a_healthy_model(spirals):
    report = sanity(healthy_mlp(), "hinge", spirals)
    assert report.passed, report.to_table().render_text()
    assert report["initial_loss"].measured["chance"] == 2.0  # C - 1 with margin 1


# --------------------------------------------------------------------------------------
# Initial loss


def test_the_initial_loss_is_the_mean_loss_on_the_data_and_chance_is_ln_c():
    inputs, targets = blob_data(num_samples=90)
    torch.manual_seed(1)
    model = nn.Linear(4, 3)
    result = check_initial_loss(model, "cross_entropy", (inputs, targets), batch_size=1000)
    with torch.no_grad():
        expected = F.cross_entropy(model(inputs), targets).item()
    assert result.measured["loss"] == pytest.approx(expected, rel=1e-6)
    assert result.measured["chance"] == pytest.approx(math.log(3), rel=1e-12)
    assert result.measured["num_classes"] == 3  # taken from the model's output width


def test_weights_ten_times_too_large_fail_the_initial_loss(spirals):
    model = healthy_mlp()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(10.0)
    result = check_initial_loss(model, "cross_entropy", spirals)
    assert not result.passed
    assert kinds(result) == [Finding.INITIAL_LOSS_MISMATCH]
    evidence = result.findings[0].evidence
    assert evidence["loss"] > 10 * evidence["chance"]


def test_scaling_the_last_layer_by_the_measured_factor_brings_the_loss_to_chance(spirals):
    model = healthy_mlp()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(10.0)
    failed = check_initial_loss(model, "cross_entropy", spirals)
    scale = failed.measured["output_scale_to_chance"]
    assert 0 < scale < 0.1
    last = model[-1]
    with torch.no_grad():  # logits = W h + b: scaling W and b scales the logits exactly
        last.weight.mul_(scale)
        last.bias.mul_(scale)
    fixed = check_initial_loss(model, "cross_entropy", spirals)
    assert fixed.passed
    gap = abs(fixed.measured["loss"] - fixed.measured["chance"])
    assert gap <= fixed.measured["tolerance"] / 2 + 1e-4


def test_a_zero_output_model_has_the_loss_at_chance_for_both_named_losses():
    inputs, targets = blob_data(num_samples=50, num_classes=5)
    model = nn.Linear(4, 5)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    for loss, chance in (("cross_entropy", math.log(5)), ("hinge", 4.0)):
        result = check_initial_loss(model, loss, (inputs, targets), rtol=0.0, atol=1e-6)
        assert result.passed, loss
        assert result.measured["chance"] == pytest.approx(chance, rel=1e-12)
        assert result.measured["loss"] == pytest.approx(chance, rel=1e-6)


def test_a_callable_loss_takes_its_chance_value_from_all_zero_outputs():
    inputs, targets = blob_data(num_samples=60, num_classes=4)
    hinge_margin_2 = get_loss("hinge", margin=2.0)
    result = check_initial_loss(nn.Linear(4, 4), hinge_margin_2, (inputs, targets))
    assert result.measured["chance"] == pytest.approx(2.0 * 3)


def test_a_loss_far_below_chance_fails_too():
    inputs, targets = blob_data(num_samples=90)
    model = nn.Linear(4, 3)  # a "pretrained" classifier: the blob centers, scaled up
    with torch.no_grad():
        model.weight.copy_(20.0 * torch.eye(4)[:3])
        model.bias.zero_()
    result = check_initial_loss(model, "cross_entropy", (inputs, targets), rtol=0.5, atol=0.0)
    assert result.measured["loss"] < 0.1
    assert kinds(result) == [Finding.INITIAL_LOSS_MISMATCH]


def test_regression_has_no_value_at_chance_and_is_skipped():
    inputs = torch.randn(64, 3)
    result = check_initial_loss(nn.Linear(3, 1), "mse", (inputs, inputs.sum(1)))
    assert result.passed
    assert result.skipped
    assert result.message.startswith("skipped")


# --------------------------------------------------------------------------------------
# Regularization raises the loss


def test_the_total_losses_are_the_data_loss_plus_the_l2_penalty():
    inputs, targets = blob_data(num_samples=64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    strengths = (0.0, 0.01, 1.0)
    result = check_regularization_raises_loss(
        model, "cross_entropy", (inputs, targets), strengths=strengths, batch_size=1000
    )
    assert result.passed
    with torch.no_grad():
        data_loss = F.cross_entropy(model(inputs), targets).item()
        squares = float(model[0].weight.square().sum() + model[2].weight.square().sum())
    expected = [data_loss + s * squares for s in strengths]
    assert result.measured["total_losses"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("description", "factory"),
    [
        ("ignored", lambda strength: lambda model: 0.0),
        ("a zero tensor", lambda strength: lambda model: torch.zeros(())),
        ("subtracted", lambda strength: lambda model: -strength * model[0].weight.square().sum()),
    ],
)
def test_a_penalty_that_does_not_raise_the_loss_fails(description, factory):
    inputs, targets = blob_data()
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    result = check_regularization_raises_loss(
        model, "cross_entropy", (inputs, targets), penalty_factory=factory
    )
    assert not result.passed, description
    assert [f.kind for f in result.findings] == [Finding.REGULARIZATION_NOT_APPLIED]


def test_a_penalty_on_detached_weights_raises_the_loss_but_fails_for_lack_of_gradient():
    inputs, targets = blob_data()
    model = nn.Linear(4, 3)

    def detached(strength):
        return lambda model: strength * model.weight.detach().square().sum()

    result = check_regularization_raises_loss(
        model, "cross_entropy", (inputs, targets), penalty_factory=detached
    )
    totals = result.measured["total_losses"]
    assert all(b > a for a, b in zip(totals, totals[1:], strict=False))
    assert not result.passed
    assert "no gradient" in result.message


def test_all_zero_weights_give_a_zero_penalty_and_the_message_says_so():
    inputs, targets = blob_data()
    model = nn.Linear(4, 3)
    nn.init.zeros_(model.weight)
    result = check_regularization_raises_loss(model, "cross_entropy", (inputs, targets))
    assert not result.passed
    assert "all zero" in result.message


# --------------------------------------------------------------------------------------
# Overfitting a tiny subset


def test_a_healthy_model_overfits_twenty_samples_even_with_random_labels():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(200, 8, generator=generator)
    targets = torch.randint(0, 4, (200,), generator=generator)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 128), nn.ReLU(), nn.Linear(128, 4))
    result = check_overfit_tiny_subset(model, "cross_entropy", (inputs, targets))
    assert result.passed, result.message
    assert result.measured["num_samples"] == 20
    assert result.measured["accuracy"] == 1.0
    assert result.measured["loss"] <= 0.01 * math.log(4)


def test_an_optimizer_with_learning_rate_zero_cannot_overfit(spirals):
    def frozen_sgd(params, lr):
        return SGD(params, lr=0.0)

    result = check_overfit_tiny_subset(
        healthy_mlp(), "cross_entropy", spirals, optimizer_factory=frozen_sgd, num_steps=50
    )
    assert not result.passed
    assert kinds(result) == [Finding.NO_LEARNING_SIGNAL]
    assert result.findings[0].severity == "error"


def test_a_model_frozen_but_for_its_last_bias_cannot_overfit(spirals):
    model = healthy_mlp()
    for parameter in list(model.parameters())[:-1]:
        parameter.requires_grad_(False)
    result = check_overfit_tiny_subset(model, "cross_entropy", spirals, num_steps=100)
    assert kinds(result) == [Finding.NO_LEARNING_SIGNAL]
    assert all(run["accuracy"] < 1.0 for run in result.measured["runs"])


class _Cooled(nn.Module):
    """Logits divided by 100: the classes separate, the loss cannot get near 0 in time."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) / 100.0


def test_all_samples_right_but_the_loss_high_is_said_as_such():
    # QA: "train accuracy 100% ..." then "a working network memorizes a few samples".
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(200, 8, generator=generator)
    targets = torch.randint(0, 4, (200,), generator=generator)
    torch.manual_seed(0)
    model = _Cooled(nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 4)))
    result = check_overfit_tiny_subset(model, "cross_entropy", (inputs, targets), num_steps=30)
    assert not result.passed
    assert result.measured["accuracy"] == 1.0, result.message
    (finding,) = result.findings
    assert "every sample classified right but the loss not near 0" in finding.summary
    assert finding.prescription.startswith("a working network drives the loss")
    assert "memorizes" not in str(finding)


def test_a_model_with_no_trainable_parameter_fails_the_training_checks(spirals):
    model = healthy_mlp().requires_grad_(False)
    report = sanity(
        model,
        "cross_entropy",
        spirals,
        checks=["overfit_tiny_subset", "all_parameters_get_gradients", "learning_rate_sweep"],
    )
    for result in report.results:
        assert kinds(result) == [Finding.NO_LEARNING_SIGNAL], result.name


def test_the_tiny_subset_takes_the_classes_in_turn():
    # 90% of the samples are class 0: a plain random draw of 10 would mostly be class 0.
    targets = torch.tensor([0] * 90 + [1] * 5 + [2] * 5)
    inputs = torch.eye(100)  # one-hot inputs: a linear model can memorize anything

    seen = []

    def recording_loss(outputs, targets):
        seen.append(targets.clone())
        return F.cross_entropy(outputs, targets)

    check_overfit_tiny_subset(nn.Linear(100, 3), recording_loss, (inputs, targets), num_samples=9)
    subset = next(batch for batch in seen if len(batch) == 9)  # after the 2-sample preflight
    assert torch.bincount(subset, minlength=3).tolist() == [3, 3, 3]


# --------------------------------------------------------------------------------------
# Every parameter gets a gradient; symmetric layers


class WithUnusedLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
        self.forgotten = nn.Linear(16, 16)

    def forward(self, x):
        return self.body(x)


def test_an_unused_layer_is_named(spirals):
    result = check_all_parameters_get_gradients(WithUnusedLayer(), "cross_entropy", spirals)
    assert not result.passed
    assert result.measured["unused"] == ["forgotten.weight", "forgotten.bias"]
    assert kinds(result) == [Finding.NO_LEARNING_SIGNAL]
    assert result.findings[0].evidence["unused"] == ["forgotten.weight", "forgotten.bias"]


def test_all_zero_init_is_symmetric(spirals):
    model = healthy_mlp()
    for parameter in model.parameters():
        nn.init.zeros_(parameter)
    result = check_all_parameters_get_gradients(model, "cross_entropy", spirals)
    assert kinds(result) == [Finding.SYMMETRIC_INIT]
    assert result.measured["symmetric_layers"] == ["1", "3"]  # the hidden Linear layers
    assert result.findings[0].fix == {"init.weights": "he_normal"}


def test_constant_nonzero_weights_are_symmetric_without_any_zero_gradient(spirals):
    model = healthy_mlp()
    for parameter in model.parameters():
        nn.init.constant_(parameter, 0.1)
    result = check_all_parameters_get_gradients(model, "cross_entropy", spirals)
    assert result.measured["zero_gradient"] == []
    assert result.measured["symmetric_layers"] == ["1", "3"]
    assert kinds(result) == [Finding.SYMMETRIC_INIT]


def test_a_zero_output_layer_is_not_symmetric(spirals):
    # Zero-initializing the last layer is a common good practice: its rows get different
    # gradients, one per class.
    model = healthy_mlp()
    nn.init.zeros_(model[5].weight)
    nn.init.zeros_(model[5].bias)
    result = check_all_parameters_get_gradients(model, "cross_entropy", spirals)
    assert result.passed, result.message
    assert result.measured["symmetric_layers"] == []


def test_a_constant_layer_before_a_random_one_is_not_symmetric(spirals):
    # The random layer after it sends each unit a different gradient.
    model = healthy_mlp()
    nn.init.constant_(model[1].weight, 0.3)
    nn.init.constant_(model[1].bias, 0.1)
    result = check_all_parameters_get_gradients(model, "cross_entropy", spirals)
    assert result.measured["symmetric_layers"] == []


def test_dead_relus_starve_the_layers_before_them(spirals):
    model = healthy_mlp()
    nn.init.constant_(model[1].bias, -100.0)  # every unit of the first hidden layer is dead
    result = check_all_parameters_get_gradients(model, "cross_entropy", spirals)
    assert kinds(result) == [Finding.NO_LEARNING_SIGNAL]
    assert result.measured["zero_gradient"] == ["1.weight", "1.bias", "3.weight"]


def test_frozen_parameters_are_listed_not_flagged(spirals):
    model = healthy_mlp()
    model[1].requires_grad_(False)
    result = check_all_parameters_get_gradients(model, "cross_entropy", spirals)
    assert result.passed
    assert result.measured["frozen"] == ["1.weight", "1.bias"]


# --------------------------------------------------------------------------------------
# Samples do not mix


class Centered(nn.Module):
    """Subtracts the batch mean by hand: every sample depends on every other."""

    def __init__(self):
        super().__init__()
        self.net = healthy_mlp()

    def forward(self, x):
        return self.net(x - x.mean(dim=0))


class Reversed(nn.Module):
    """Pairs each output with the input of the mirror sample (a batch-axis mix-up)."""

    def __init__(self):
        super().__init__()
        self.net = healthy_mlp()

    def forward(self, x):
        return self.net(x).flip(0)


def test_a_batch_mean_computed_by_hand_mixes_every_pair(spirals):
    result = check_samples_do_not_mix(Centered(), "cross_entropy", spirals, batch_size=6)
    assert not result.passed
    assert [f.kind for f in result.findings] == [Finding.SAMPLES_MIX]
    expected = sorted([i, j] for i in range(6) for j in range(6) if i != j)
    assert sorted(result.measured["pairs"]) == expected


def test_a_batch_reversal_mixes_exactly_the_mirror_pairs(spirals):
    result = check_samples_do_not_mix(Reversed(), "cross_entropy", spirals, batch_size=8)
    assert not result.passed
    assert sorted(result.measured["pairs"]) == [[i, 7 - i] for i in range(8)]
    assert result.measured["max_own"] == 0.0


def test_batch_norm_in_train_mode_runs_on_running_statistics_and_passes(spirals):
    model = healthy_mlp(norm="batch").train()
    result = check_samples_do_not_mix(model, "cross_entropy", spirals)
    assert result.passed
    assert not result.skipped
    assert model.training
    assert all(m.training for m in model.modules())


def test_batch_norm_does_not_hide_other_mixing(spirals):
    model = nn.Sequential(nn.BatchNorm1d(2), Centered())
    result = check_samples_do_not_mix(model, "cross_entropy", spirals)
    assert not result.passed


def test_batch_norm_without_running_statistics_is_skipped_with_the_reason(spirals):
    model = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8, track_running_stats=False))
    result = check_samples_do_not_mix(model, "cross_entropy", spirals)
    assert result.passed
    assert result.skipped
    assert "BatchNorm" in result.message


def test_a_single_sample_has_no_pair_to_check_and_is_skipped_with_the_reason():
    inputs, targets = blob_data(num_samples=1)
    result = check_samples_do_not_mix(nn.Linear(4, 3), "cross_entropy", (inputs, targets))
    assert result.passed
    assert result.skipped
    assert result.measured == {}
    assert "1 sample" in result.message
    assert "at least 2 samples" in result.message


# --------------------------------------------------------------------------------------
# Learning-rate sweep


def test_the_sweep_reports_the_best_learning_rate_and_the_curves():
    inputs, targets = blob_data(num_samples=256)
    torch.manual_seed(0)
    learning_rates = (1e-5, 1e-3, 1e-1)
    result = check_learning_rate_sweep(
        nn.Linear(4, 3), "cross_entropy", (inputs, targets), learning_rates=learning_rates
    )
    assert result.passed
    measured = result.measured
    assert measured["best_lr"] == 1e-1  # the loss falls fastest with the largest step here
    assert [len(curve) for curve in measured["curves"]] == [50, 50, 50]
    decreases = measured["decreases"]
    assert decreases[0] < 0.01 < decreases[2]  # 50 Adam steps of 1e-5 barely move the loss
    assert decreases == pytest.approx(
        [(measured["initial_loss"] - after) / measured["initial_loss"]
         for after in measured["final_losses"]]
    )  # fmt: skip


def test_a_learning_rate_of_zero_everywhere_fails_the_sweep(spirals):
    result = check_learning_rate_sweep(
        healthy_mlp(), "cross_entropy", spirals, optimizer_factory=lambda p, lr: SGD(p, lr=0.0)
    )
    assert not result.passed
    assert kinds(result) == [Finding.NO_LEARNING_SIGNAL]
    assert result.findings[0].evidence["best_lr"] in result.measured["learning_rates"]


def test_a_diverging_learning_rate_counts_as_no_decrease():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(128, 4, generator=generator)
    targets = torch.randint(0, 3, (128,), generator=generator)  # nothing to fit: it blows up
    result = check_learning_rate_sweep(
        nn.Linear(4, 3),
        "cross_entropy",
        (inputs, targets),
        optimizer_factory=lambda p, lr: SGD(p, lr=lr),
        learning_rates=(1e38,),
    )
    assert not result.passed
    assert result.measured["decreases"] == [-math.inf]
    assert result.findings[0].evidence["decreases"] == [None]  # JSON-ready


# --------------------------------------------------------------------------------------
# Nothing leaks: model, gradients, modes, RNG, optimizer


def test_sanity_leaves_the_model_the_rng_and_the_optimizer_exactly_as_it_found_them(spirals):
    model = healthy_mlp(norm="batch", dropout_rate=0.5)
    optimizer = Adam(model.parameters(), lr=1e-3)
    inputs, targets = spirals.train.inputs[:32], spirals.train.targets[:32]
    F.cross_entropy(model(inputs), targets).backward()
    optimizer.step()
    F.cross_entropy(model(inputs), targets).backward()  # leave gradients in place
    model.eval()
    model[3].train()  # a mixed mode, to be kept
    before, optimizer_before = model_state(model), copy.deepcopy(optimizer.state_dict())
    rng_before = torch.get_rng_state()

    report = sanity(model, "cross_entropy", spirals)

    assert report.passed
    assert_same_state(before, model_state(model))
    assert torch.equal(torch.get_rng_state(), rng_before)
    optimizer_after = optimizer.state_dict()
    for key, state in optimizer_before["state"].items():
        for name, value in state.items():
            assert torch.equal(value, optimizer_after["state"][key][name])


class Uncopyable(nn.Module):
    """Holds a non-leaf tensor, which copy.deepcopy refuses."""

    def __init__(self):
        super().__init__()
        self.body = healthy_mlp(dropout_rate=0.2)
        self.doubled_bias = self.body[-1].bias * 2  # a non-leaf tensor attribute

    def forward(self, x):
        return self.body(x)


def test_a_model_that_cannot_be_deep_copied_is_probed_in_place_and_restored(spirals):
    model = Uncopyable().eval()
    with pytest.raises(RuntimeError):
        copy.deepcopy(model)
    F.cross_entropy(model(spirals.train.inputs[:16]), spirals.train.targets[:16]).backward()
    before, rng_before = model_state(model), torch.get_rng_state()

    report = sanity(model, "cross_entropy", spirals)

    assert report.passed, report.to_table().render_text()
    assert_same_state(before, model_state(model))
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_the_same_seed_gives_the_same_measurements(spirals):
    first = sanity(healthy_mlp(), "cross_entropy", spirals, seed=3)
    second = sanity(healthy_mlp(), "cross_entropy", spirals, seed=3)
    assert [r.measured for r in first.results] == [r.measured for r in second.results]


def test_random_draws_inside_the_model_are_seeded_by_the_check():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, x):
            return self.linear(x + torch.randn_like(x))

    data = blob_data()
    torch.manual_seed(123)
    first = check_initial_loss(Noisy(), "cross_entropy", data, seed=5)
    torch.manual_seed(123)
    model = Noisy()
    torch.rand(7)  # a different global RNG position must not change the result
    second = check_initial_loss(model, "cross_entropy", data, seed=5)
    assert first.measured == second.measured


# --------------------------------------------------------------------------------------
# The report and the arguments


def test_the_report_selects_orders_and_tabulates_the_checks(spirals):
    model = healthy_mlp()
    with torch.no_grad():
        model[5].weight.mul_(100.0)
    report = sanity(model, "cross_entropy", spirals, checks=["samples_do_not_mix", "initial_loss"])
    assert isinstance(report, SanityReport)
    assert [r.name for r in report.results] == ["samples_do_not_mix", "initial_loss"]
    assert not report.passed
    assert [f.kind for f in report.findings()] == [Finding.INITIAL_LOSS_MISMATCH]
    table = report.to_table()
    assert table.columns == ("check", "result", "findings", "message")
    assert [row[:3] for row in table.to_dict()["rows"]] == [
        ["samples_do_not_mix", "pass", ""],
        ["initial_loss", "FAIL", "INITIAL_LOSS_MISMATCH"],
    ]
    with pytest.raises(KeyError, match="overfit_tiny_subset"):
        report["overfit_tiny_subset"]


def test_data_can_be_a_dataset_or_a_pair_of_tensors_or_arrays(spirals):
    model = healthy_mlp()
    train = spirals.train
    as_dataset = check_initial_loss(model, "cross_entropy", Dataset(train.inputs, train.targets))
    as_tensors = check_initial_loss(model, "cross_entropy", (train.inputs, train.targets))
    as_arrays = check_initial_loss(
        model, "cross_entropy", (train.inputs.numpy(), train.targets.numpy().astype(np.int32))
    )
    from_splits = check_initial_loss(model, "cross_entropy", spirals)
    assert as_dataset.measured == as_tensors.measured == as_arrays.measured == from_splits.measured


def test_a_float64_model_gets_float64_inputs():
    inputs, targets = blob_data()
    model = nn.Linear(4, 3).double()
    result = check_all_parameters_get_gradients(model, "cross_entropy", (inputs, targets))
    assert result.passed


def test_regression_runs_every_check_but_the_initial_loss():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(200, 3, generator=generator)
    targets = inputs @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 1))
    report = sanity(model, "mse", (inputs, targets))
    assert report["initial_loss"].skipped
    assert report.passed, report.to_table().render_text()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda m, d: sanity(m, "l2", d),
            ValueError,
            "The 'loss' parameter of sanity must be one of 'cross_entropy', 'hinge', 'mse' "
            "or a callable. Got 'l2' instead.",
        ),
        (
            lambda m, d: sanity(m, "hinge", d, checks=["initial_loss", "gradcheck"]),
            ValueError,
            "The 'checks' parameter of sanity must be a non-empty sequence of names from "
            "'initial_loss', ",
        ),
        (
            lambda m, d: sanity(m, "hinge", d, seed=-1),
            ValueError,
            "The 'seed' parameter of sanity must be an int >= 0. Got -1 instead.",
        ),
        (
            lambda m, d: sanity(m, "hinge", d, num_classes=2),
            ValueError,
            "The 'num_classes' parameter of sanity must exceed every class index in the "
            "targets (0..2). Got 2 instead.",
        ),
        (
            lambda m, d: sanity(m, "hinge", [1, 2, 3]),
            TypeError,
            "The 'data' parameter of sanity must be a gradwise.data.DataSplits, a "
            "gradwise.data.Dataset or a pair (inputs, targets). Got list instead.",
        ),
        (
            lambda m, d: sanity(m.state_dict(), "hinge", d),
            TypeError,
            "The 'model' parameter of sanity must be a torch.nn.Module. Got OrderedDict instead.",
        ),
        (
            lambda m, d: check_learning_rate_sweep(m, "hinge", d, learning_rates=[1e-3, 0.0]),
            ValueError,
            "The 'learning_rates' parameter of check_learning_rate_sweep must be a non-empty "
            "sequence of finite floats > 0. Got [0.001, 0.0] instead.",
        ),
        (
            lambda m, d: check_learning_rate_sweep(m, "hinge", d, learning_rates=[1e-3, math.inf]),
            ValueError,
            "The 'learning_rates' parameter of check_learning_rate_sweep must be a non-empty "
            "sequence of finite floats > 0. Got [0.001, inf] instead.",
        ),
        (
            lambda m, d: check_initial_loss(m, "hinge", d, atol=math.inf),
            ValueError,
            "The 'atol' parameter of check_initial_loss must be a finite float >= 0. "
            "Got inf instead.",
        ),
        (
            lambda m, d: check_overfit_tiny_subset(m, "hinge", d, tolerance=1.5),
            ValueError,
            "The 'tolerance' parameter of check_overfit_tiny_subset must be a float in (0, 1). "
            "Got 1.5 instead.",
        ),
        (
            lambda m, d: check_regularization_raises_loss(m, "hinge", d, strengths=[1.0]),
            ValueError,
            "The 'strengths' parameter of check_regularization_raises_loss must be a sequence "
            "of at least two finite floats >= 0. Got [1.0] instead.",
        ),
        (
            # A repeated strength cannot rise strictly: it failed the check, with a
            # REGULARIZATION_NOT_APPLIED finding, whatever the penalty did.
            lambda m, d: check_regularization_raises_loss(
                m, "hinge", d, strengths=(0.0, 1e-3, 1e-3, 1.0)
            ),
            ValueError,
            "The 'strengths' parameter of check_regularization_raises_loss must be a sequence "
            "of distinct strengths (the total loss must rise strictly from one to the next; "
            "drop the repeats). Got (0.0, 0.001, 0.001, 1.0) instead.",
        ),
        (
            lambda m, d: check_samples_do_not_mix(m, "hinge", d, batch_size=1),
            ValueError,
            "The 'batch_size' parameter of check_samples_do_not_mix must be an int >= 2. "
            "Got 1 instead.",
        ),
        (
            lambda m, d: check_learning_rate_sweep(
                m, "hinge", d, optimizer_factory=lambda params, lr: "adam"
            ),
            TypeError,
            "The 'optimizer_factory' parameter must return a torch.optim.Optimizer. "
            "Got str instead.",
        ),
        (
            lambda m, d: check_regularization_raises_loss(
                m, "hinge", d, penalty_factory=lambda s: lambda model: "big"
            ),
            TypeError,
            "The 'penalty_factory' must return a scalar (a one-element tensor or a number). "
            "Got str instead.",
        ),
    ],
)
def test_bad_arguments_raise_the_standard_error(spirals, call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call(healthy_mlp(), spirals)


@pytest.mark.parametrize("loss", ["cross_entropy", "hinge"])
@pytest.mark.parametrize(("shift", "bad"), [(-1, -1), (1, 3)])
@pytest.mark.parametrize("name", CHECK_NAMES)
def test_targets_outside_the_model_outputs_raise_the_standard_error(loss, shift, bad, name):
    # num_classes is not given: the model's 3 outputs set the valid class indices 0..2.
    inputs, targets = blob_data(num_samples=30)
    message = (
        f"The targets given to sanity must be class indices in 0..2, one per output of the "
        f"model (3 outputs). Got target {bad} instead."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        sanity(nn.Linear(4, 3), loss, (inputs, targets + shift), checks=[name])


# --------------------------------------------------------------------------------------
# Documentation

SANITY_NAMES = [
    "SanityReport",
    "sanity",
    "check_initial_loss",
    "check_regularization_raises_loss",
    "check_overfit_tiny_subset",
    "check_all_parameters_get_gradients",
    "check_samples_do_not_mix",
    "check_learning_rate_sweep",
]


@pytest.mark.parametrize("name", SANITY_NAMES)
def test_docstring_examples_run(name):
    assert name in gradwise.checks.__all__
    run_docstring_examples(getattr(gradwise.checks, name), name)


def test_the_sanity_section_of_the_docs_page_runs():
    page = (DOCS / "checks.md").read_text()
    section = page.split("## Sanity checks", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/checks.md", "exec"), {})  # noqa: S102 - our own docs


def test_a_zero_output_layer_does_not_hide_dead_units_before_it(spirals):
    model = healthy_mlp()
    nn.init.zeros_(model[5].weight)
    nn.init.constant_(model[1].bias, -100.0)
    result = check_all_parameters_get_gradients(model, "cross_entropy", spirals)
    assert kinds(result) == [Finding.NO_LEARNING_SIGNAL]
    assert result.measured["zero_gradient"] == ["1.weight", "1.bias", "3.weight"]
    assert result.measured["starved_at_init"] == ["3.bias"]


def test_per_sample_gradients_that_cancel_by_coincidence_are_not_flagged():
    # All scores 0 under the hinge loss: every sample pushes its own class's bias by -1 and
    # the other's by +1, so on a class-balanced batch the mean gradient of the bias is
    # exactly zero, although every sample's loss reaches it.
    inputs = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(64) % 2
    model = nn.Linear(2, 2)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    plain = copy.deepcopy(model)
    get_loss("hinge")(plain(inputs), targets).backward()
    assert not plain.bias.grad.any()
    result = check_all_parameters_get_gradients(model, "hinge", (inputs, targets))
    assert result.passed, result.message


def test_a_model_that_does_not_fit_the_data_is_named_before_any_check() -> None:
    # Another input width, or outputs a named loss cannot take: one clear error up front,
    # not torch's from deep inside a check.
    inputs, targets = torch.randn(20, 5), torch.arange(20) % 4
    with pytest.raises(ValueError, match=r"cannot run on the data \(inputs of shape \(20, 3\)\)"):
        check_initial_loss(nn.Linear(5, 4), "cross_entropy", (torch.randn(20, 3), targets))

    class TupleOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(5, 4)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.layer(x), x

    with pytest.raises(ValueError, match="needs a loss function that picks the outputs"):
        sanity(TupleOut(), "cross_entropy", (inputs, targets), checks=["initial_loss"])


# --------------------------------------------------------------------------------------
# Healthy models the checks once failed (QA)


class _LogProbabilities(nn.Module):
    """A classifier that ends in LogSoftmax, for NLLLoss (torch's MNIST example)."""

    def __init__(self, logits: nn.Module) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return F.log_softmax(self.logits(x), dim=1)


def test_log_probability_outputs_under_nll_have_the_loss_at_chance_ln_c(spirals):
    # All-zero log-probabilities are not a distribution: NLLLoss scores them 0, so the loss
    # at chance was 0 and every healthy LogSoftmax + NLLLoss model failed.
    logits = healthy_mlp()
    named = check_initial_loss(logits, "cross_entropy", spirals)
    for loss in (F.nll_loss, nn.NLLLoss()):
        result = check_initial_loss(_LogProbabilities(logits), loss, spirals)
        assert result.passed, result.message
        assert result.measured["chance"] == pytest.approx(math.log(3), rel=1e-6)
        assert result.measured["loss"] == pytest.approx(named.measured["loss"], rel=1e-6)
    probabilities = nn.Sequential(logits, nn.Softmax(dim=1))
    result = check_initial_loss(probabilities, lambda p, t: F.nll_loss(p.log(), t), spirals)
    assert result.measured["chance"] == pytest.approx(math.log(3), rel=1e-6)
    overfit = check_overfit_tiny_subset(_LogProbabilities(logits), F.nll_loss, spirals)
    assert overfit.passed, overfit.message
    assert overfit.measured["target_loss"] == pytest.approx(0.01 * math.log(3), rel=1e-6)


def test_log_probabilities_too_confident_at_init_fail_and_the_measured_scale_fixes_them(spirals):
    logits = healthy_mlp()
    with torch.no_grad():
        for parameter in logits.parameters():
            parameter.mul_(10.0)
    model = _LogProbabilities(logits)
    failed = check_initial_loss(model, F.nll_loss, spirals)
    assert kinds(failed) == [Finding.INITIAL_LOSS_MISMATCH]
    scale = failed.measured["output_scale_to_chance"]
    assert 0 < scale < 0.1
    with torch.no_grad():  # scaling the logits before the LogSoftmax
        logits[-1].weight.mul_(scale)
        logits[-1].bias.mul_(scale)
    fixed = check_initial_loss(model, F.nll_loss, spirals)
    assert fixed.passed
    gap = abs(fixed.measured["loss"] - fixed.measured["chance"])
    assert gap <= fixed.measured["tolerance"] / 2 + 1e-4


def binary_cross_entropy(logit, targets):
    return F.binary_cross_entropy_with_logits(logit.squeeze(-1), targets.float())


def test_a_binary_classifier_with_one_logit_can_overfit_and_has_two_classes():
    # One output per sample has no argmax: every sample counted as class 0, so the tiny
    # subset "could not" be fitted however low the loss went.
    inputs, targets = blob_data(num_samples=100, num_classes=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 1))
    result = check_overfit_tiny_subset(model, binary_cross_entropy, (inputs, targets))
    assert result.passed, result.message
    assert result.measured["target_loss"] == pytest.approx(0.01 * math.log(2), rel=1e-6)
    assert result.measured["loss"] <= result.measured["target_loss"]
    initial = check_initial_loss(model, binary_cross_entropy, (inputs, targets))
    assert initial.measured["chance"] == pytest.approx(math.log(2), rel=1e-6)
    assert initial.measured["num_classes"] == 2


def binary_blobs(num_labels=1):
    """Float 0/1 targets, (N, 1) or (N, labels): the first coordinates' signs."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(100, 4, generator=generator)
    return inputs, (inputs[:, :num_labels] > 0).float()


@pytest.mark.parametrize(
    ("loss", "num_labels", "last"),
    [
        (nn.BCEWithLogitsLoss(), 1, nn.Identity()),
        (F.binary_cross_entropy_with_logits, 3, nn.Identity()),
        (nn.BCELoss(), 3, nn.Sigmoid()),
        (functools.partial(F.binary_cross_entropy, reduction="mean"), 1, nn.Sigmoid()),
    ],
)
def test_binary_cross_entropy_on_0_1_targets_is_classification_at_ln_2(loss, num_labels, last):
    # Float 0/1 targets read as regression: the initial-loss check was skipped ("no value
    # at chance") where ln 2 per label is the chance value.
    inputs, targets = binary_blobs(num_labels)
    model = nn.Sequential(nn.Linear(4, num_labels), last)
    nn.init.zeros_(model[0].weight)
    nn.init.zeros_(model[0].bias)
    result = check_initial_loss(model, loss, (inputs, targets), rtol=0.0, atol=1e-6)
    assert not result.skipped
    assert result.passed, result.message
    assert result.measured["chance"] == pytest.approx(math.log(2), rel=1e-6)
    plural = "s" if num_labels > 1 else ""
    assert f"({num_labels} binary label{plural})" in result.message
    with torch.no_grad():
        model[0].weight.fill_(30.0)
    failed = check_initial_loss(model, loss, (inputs, targets))
    assert kinds(failed) == [Finding.INITIAL_LOSS_MISMATCH]


def test_a_multi_label_classifier_overfits_with_every_label_right():
    inputs, targets = binary_blobs(num_labels=3)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))
    result = check_overfit_tiny_subset(model, nn.BCEWithLogitsLoss(), (inputs, targets))
    assert result.passed, result.message
    assert result.measured["target_loss"] == pytest.approx(0.01 * math.log(2), rel=1e-6)
    assert result.measured["accuracy"] == 1.0
    assert "train accuracy 100%" in result.message


def test_soft_targets_under_binary_cross_entropy_stay_regression():
    inputs, targets = binary_blobs()
    result = check_initial_loss(nn.Linear(4, 1), nn.BCEWithLogitsLoss(), (inputs, 0.3 * targets))
    assert result.skipped


def test_per_position_class_targets_are_refused_before_any_check():
    # Review of 5f3011a feared (B, T, C) logits with (B, T) targets passing the tiny-subset
    # check on the loss alone (accuracy is taken for (B, C) scores only). Such targets never
    # reach a check: the data are refused first. If they ever are accepted, the accuracy
    # needs a class dim (last, or 1 as torch's cross_entropy takes (B, C, T)).
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(40, 8, generator=generator)
    targets = torch.randint(0, 4, (40, 5), generator=generator)
    model = nn.Sequential(nn.Linear(8, 20), nn.Unflatten(1, (5, 4)))  # (B, T, C)

    def per_position_cross_entropy(logits, targets):
        return F.cross_entropy(logits.transpose(1, 2), targets)

    with pytest.raises(ValueError, match=r"one class per sample\. Got shape \(40, 5\)"):
        check_overfit_tiny_subset(model, per_position_cross_entropy, (inputs, targets))


class _WithAuxiliaryHead(nn.Module):
    """Returns (logits, auxiliary logits), or a dict of them, as nets with a side head do."""

    def __init__(self, as_dict: bool = False, mix_auxiliary: bool = False) -> None:
        super().__init__()
        self.net = healthy_mlp()
        self.auxiliary = healthy_mlp(seed=1)  # a side head that can fit, too
        self.as_dict, self.mix_auxiliary = as_dict, mix_auxiliary

    def forward(self, x):
        logits = self.net(x)
        auxiliary = self.auxiliary(x - x.mean(dim=0) if self.mix_auxiliary else x)
        return {"logits": logits, "auxiliary": auxiliary} if self.as_dict else (logits, auxiliary)


def _main_and_auxiliary_loss(outputs, targets):
    logits, auxiliary = outputs.values() if isinstance(outputs, dict) else outputs
    return F.cross_entropy(logits, targets) + 0.4 * F.cross_entropy(auxiliary, targets)


@pytest.mark.parametrize("as_dict", [False, True])
def test_a_model_returning_a_tuple_or_dict_runs_every_check_with_a_loss_that_picks(
    spirals, as_dict
):
    # The docs send such models to a loss function that picks the outputs; the checks then
    # crashed on the tuple (zeros_like, argmax, per-sample slicing).
    model = _WithAuxiliaryHead(as_dict=as_dict)
    report = sanity(model, _main_and_auxiliary_loss, spirals)
    assert report.passed, report.to_table().render_text()
    inputs, targets = spirals.train.inputs, spirals.train.targets
    initial = check_initial_loss(model, _main_and_auxiliary_loss, spirals, batch_size=10**6)
    with torch.no_grad():
        expected = _main_and_auxiliary_loss(model(inputs), targets).item()
    assert initial.measured["loss"] == pytest.approx(expected, rel=1e-5)
    assert initial.measured["chance"] == pytest.approx(1.4 * math.log(3), rel=1e-6)


def test_mixing_and_missing_gradients_are_found_inside_a_tuple_of_outputs(spirals):
    mixing = _WithAuxiliaryHead(mix_auxiliary=True)
    result = check_samples_do_not_mix(mixing, _main_and_auxiliary_loss, spirals, batch_size=4)
    expected = sorted([i, j] for i in range(4) for j in range(4) if i != j)
    assert sorted(result.measured["pairs"]) == expected

    def main_only(outputs, targets):
        return F.cross_entropy(outputs[0], targets)

    result = check_all_parameters_get_gradients(_WithAuxiliaryHead(), main_only, spirals)
    assert result.measured["unused"] == [
        name for name, _ in _WithAuxiliaryHead().named_parameters() if name.startswith("aux")
    ]
    assert len(result.measured["unused"]) == 6


def test_a_frozen_constant_layer_is_not_called_symmetric(spirals):
    # Frozen on purpose (a fixed averaging layer, say): no optimizer will move it, and the
    # docs promise frozen parameters are listed, not flagged.
    model = healthy_mlp()
    nn.init.constant_(model[3].weight, 1.0 / 64)
    nn.init.zeros_(model[3].bias)
    model[3].requires_grad_(False)
    result = check_all_parameters_get_gradients(model, "cross_entropy", spirals)
    assert result.passed, result.message
    assert result.measured["symmetric_layers"] == []
    assert result.measured["frozen"] == ["3.weight", "3.bias"]


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_the_checks_measure_the_same_when_called_under_no_grad(spirals, mode):
    # Called from evaluation code: the backward passes failed, the penalty "had no
    # gradient" and the mixing check was skipped.
    expected = sanity(healthy_mlp(), "cross_entropy", spirals)
    with mode():
        report = sanity(healthy_mlp(), "cross_entropy", spirals)
    assert report.passed, report.to_table().render_text()
    assert [r.measured for r in report.results] == [r.measured for r in expected.results]


# --------------------------------------------------------------------------------------
# Train-mode outputs, label smoothing, functional dropout, non-finite gradients


class _TupleInTraining(nn.Module):
    """Returns (logits, inputs) in training mode only: eval mode hides it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = healthy_mlp()

    def forward(self, x):
        logits = self.net(x)
        return (logits, x) if self.training else logits


def test_a_model_returning_a_tuple_only_in_training_mode_is_named_before_any_check(spirals):
    # The preflight ran in eval mode only: the model passed it, and initial_loss then
    # raised torch's TypeError from inside cross_entropy.
    with pytest.raises(
        ValueError,
        match=r"in training mode; the model returns a tuple of 2 in training mode but a "
        r"Tensor in eval mode",
    ):
        sanity(_TupleInTraining(), "cross_entropy", spirals)

    def first(outputs, targets):  # a loss that picks the logits runs in both modes
        return F.cross_entropy(outputs[0] if isinstance(outputs, tuple) else outputs, targets)

    report = sanity(_TupleInTraining(), first, spirals, checks=["initial_loss"])
    assert report.passed, report.to_table().render_text()


def smoothed_cross_entropy_floor(eps, num_classes):
    """The closed form of the brief: the entropy of the smoothed one-hot target."""
    on, off = 1 - eps + eps / num_classes, eps / num_classes
    return -on * math.log(on) - (num_classes - 1) * off * math.log(off)


def minimized_loss(loss, targets, num_classes, steps=3000):
    """min over free logits of loss(logits, targets), by L-BFGS in float64 (the oracle)."""
    logits = torch.zeros(len(targets), num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [logits], lr=1.0, max_iter=steps, tolerance_grad=1e-14, tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure():
        optimizer.zero_grad()
        value = loss(logits, targets)
        value.backward()
        return value

    optimizer.step(closure)
    return loss(logits, targets).item()


@pytest.mark.parametrize(("eps", "num_classes"), [(0.1, 3), (0.1, 10), (0.3, 4), (0.05, 2)])
def test_the_label_smoothing_floor_is_the_minimum_of_torchs_loss(eps, num_classes):
    targets = torch.arange(12) % num_classes
    loss = nn.CrossEntropyLoss(label_smoothing=eps)
    oracle = minimized_loss(loss, targets, num_classes)
    assert smoothed_cross_entropy_floor(eps, num_classes) == pytest.approx(oracle, abs=1e-9)
    inputs = torch.randn(12, 4)
    result = check_overfit_tiny_subset(
        nn.Linear(4, num_classes), loss, (inputs, targets), num_samples=12, num_steps=1
    )
    assert result.measured["loss_floor"] == pytest.approx(oracle, abs=1e-9)


def test_the_label_smoothing_floor_with_class_weights_is_the_minimum_of_torchs_loss():
    weight = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 2, 1, 0, 0, 2])
    loss = nn.CrossEntropyLoss(weight=weight, label_smoothing=0.2)
    oracle = minimized_loss(loss, targets, 3)
    result = check_overfit_tiny_subset(
        nn.Linear(4, 3).double(), loss, (torch.randn(8, 4), targets), num_samples=8, num_steps=1
    )
    assert result.measured["loss_floor"] == pytest.approx(oracle, abs=1e-9)
    assert result.measured["loss_floor"] != pytest.approx(
        smoothed_cross_entropy_floor(0.2, 3), abs=1e-3
    )  # the weights matter


@pytest.mark.parametrize(
    "loss",
    [
        nn.CrossEntropyLoss(label_smoothing=0.3, ignore_index=0, reduction="sum"),
        nn.CrossEntropyLoss(
            weight=torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64),
            label_smoothing=0.2,
            ignore_index=0,
        ),
        functools.partial(F.cross_entropy, label_smoothing=0.3, ignore_index=2, reduction="sum"),
    ],
)
def test_the_label_smoothing_floor_leaves_out_ignored_samples(loss):
    # Samples labelled ignore_index add nothing to torch's loss: counted in the floor, they
    # put the target above what the loss can reach (twice it here, with reduction="sum").
    targets = torch.tensor([0, 1, 2, 2, 1, 0, 0, 2])
    oracle = minimized_loss(loss, targets, 3)
    result = check_overfit_tiny_subset(
        nn.Linear(4, 3).double(), loss, (torch.randn(8, 4), targets), num_samples=8, num_steps=1
    )
    assert result.measured["loss_floor"] == pytest.approx(oracle, abs=1e-9)


@pytest.mark.parametrize(
    "loss",
    [
        nn.CrossEntropyLoss(label_smoothing=0.1),
        functools.partial(F.cross_entropy, label_smoothing=0.1),
    ],
)
def test_a_healthy_model_under_label_smoothing_overfits_to_the_floor(spirals, loss):
    # The loss cannot go below 0.291 for 3 classes: a target of 1% of ln 3 failed every
    # healthy model, "every sample classified right but the loss not near 0".
    result = check_overfit_tiny_subset(healthy_mlp(), loss, spirals)
    assert result.passed, result.message
    floor = smoothed_cross_entropy_floor(0.1, 3)
    assert result.measured["loss_floor"] == pytest.approx(floor, rel=1e-12)
    assert result.measured["target_loss"] == pytest.approx(
        floor + 0.01 * (math.log(3) - floor), rel=1e-7
    )  # chance: the float32 loss of all-zero logits
    assert result.measured["loss"] >= floor
    assert "label smoothing 0.1 over 3 classes" in result.message


def test_a_frozen_model_under_label_smoothing_still_fails(spirals):
    model = healthy_mlp()
    for parameter in list(model.parameters())[:-1]:
        parameter.requires_grad_(False)
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)
    result = check_overfit_tiny_subset(model, loss, spirals, num_steps=100)
    assert kinds(result) == [Finding.NO_LEARNING_SIGNAL]
    assert "label smoothing" in result.findings[0].summary


class _FunctionalDropout(nn.Module):
    """Dropout written in forward, out of reach of the probe's p = 0 on nn.Dropout."""

    def __init__(self, hard_coded: bool) -> None:
        super().__init__()
        self.net = healthy_mlp()
        self.hard_coded = hard_coded

    def forward(self, x):
        training = True if self.hard_coded else self.training
        return F.dropout(self.net(x), 0.5, training=training)


def test_dropout_hard_coded_in_forward_is_reported_not_called_no_learning_signal(spirals):
    # Before: NO_LEARNING_SIGNAL, "a working network memorizes a few samples".
    result = check_overfit_tiny_subset(
        _FunctionalDropout(hard_coded=True), "cross_entropy", spirals
    )
    assert not result.passed
    assert result.findings == []
    assert result.measured["output_spread"] > 0.1
    assert result.measured["output_spread_eval"] > 0.1
    assert "F.dropout(x, p, training=True)" in result.message


def test_dropout_following_self_training_in_forward_skips_the_overfit_check(spirals):
    result = check_overfit_tiny_subset(
        _FunctionalDropout(hard_coded=False), "cross_entropy", spirals
    )
    assert result.skipped
    assert result.passed
    assert result.measured["output_spread"] > 0.1
    assert result.measured["output_spread_eval"] == 0.0
    assert "nn.Dropout module" in result.message


def test_deterministic_models_do_not_measure_a_spread(spirals):
    result = check_overfit_tiny_subset(healthy_mlp(dropout_rate=0.5), "cross_entropy", spirals)
    assert result.passed
    assert "output_spread" not in result.measured


@pytest.mark.parametrize("hard_coded", [False, True])
def test_functional_dropout_does_not_change_the_mixing_verdict(spirals, hard_coded):
    # One forward pass, one dropout mask: the dependencies it charts are the model's.
    clean = check_samples_do_not_mix(_FunctionalDropout(hard_coded), "cross_entropy", spirals)
    assert clean.passed, clean.message

    class CenteredThenDropout(_FunctionalDropout):
        def forward(self, x):
            return super().forward(x - x.mean(dim=0))

    mixing = check_samples_do_not_mix(CenteredThenDropout(hard_coded), "cross_entropy", spirals)
    assert kinds(mixing) == [Finding.SAMPLES_MIX]


class _NanGradient(nn.Module):
    """A finite loss whose backward gives one parameter a NaN gradient (0 * d sqrt(0))."""

    def __init__(self) -> None:
        super().__init__()
        self.net = healthy_mlp()
        self.offset = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.net(x) + 0.0 * torch.sqrt(self.offset)


def test_a_nan_gradient_is_named_by_every_check_that_trains(spirals):
    # Before: "non-finite gradient: offset" with no finding, the overfit check "loss nan
    # after 1 step" blaming capacity, the sweep "loss 1.12 to inf (+inf%)".
    report = sanity(
        _NanGradient(),
        "cross_entropy",
        spirals,
        checks=["overfit_tiny_subset", "all_parameters_get_gradients", "learning_rate_sweep"],
    )
    for result in report.results:
        assert not result.passed, result.name
        assert kinds(result) == [Finding.WRONG_GRADIENT], result.name
        (finding,) = result.findings
        assert finding.evidence["nonfinite_gradient"] == ["offset"], result.name
        assert finding.step == 0
        assert math.isfinite(finding.evidence["loss"])
        assert "'offset'" in result.message or "offset" in result.message
    assert report["overfit_tiny_subset"].measured["runs"][0]["nonfinite_gradient"] == ["offset"]


def test_token_id_inputs_reach_an_embedding_model_as_integers():
    # The batches were cast to the model's float dtype: nn.Embedding refused them, and the
    # model "could not run on the data".
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 10, (60, 4), generator=generator)
    targets = ids[:, 0] % 3  # the first token decides the class
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 8), nn.Flatten(), nn.Linear(32, 3))
    report = sanity(model, "cross_entropy", (ids, targets))
    assert report.passed, report.to_table()
    assert report["initial_loss"].measured["chance"] == pytest.approx(math.log(3))
    assert report["samples_do_not_mix"].skipped
    assert "integer inputs" in report["samples_do_not_mix"].message
