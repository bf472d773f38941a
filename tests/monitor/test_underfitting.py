"""UNDERFITTING, the first question of Ng's bias-variance flowchart, next to OVERFITTING.

Real short runs (a second or two each): models too small for MNIST-1D underfit, a wide
MLP on the same data does not, a big MLP on 100 digits overfits and does not underfit.
Synthetic series pin down each condition (target, flattened curve, gap, exclusions).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from gradwise import Finding, monitor, optim
from gradwise.diagnosis import REMEDIES, Diagnosis
from gradwise.models import mlp
from gradwise.monitor import History, Series, Thresholds, Watch
from tests.monitor.setups import Run, kinds, standardized, train

MNIST1D = (1, 40)
DIGITS = (1, 8, 8)
DEFAULTS = Thresholds()
Make = Callable[[], tuple[nn.Module, torch.optim.Optimizer]]


def adam_mlp(shape: tuple[int, ...], lr: float, **model: int) -> Make:
    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        network = mlp(shape, 10, **model)  # type: ignore[arg-type]
        return network, optim.Adam(network.parameters(), lr=lr)

    return make


def mnist1d(make: Make, steps: int = 600) -> Watch:
    watch, _ = train(Run(make, standardized("mnist1d"), steps=steps))
    assert watch is not None
    return watch


def finding(watch: Watch, kind: Finding) -> Diagnosis:
    return next(f for f in watch.findings() if f.kind is kind)


@pytest.fixture(scope="module")
def logistic() -> Watch:
    """Logistic regression (an MLP of depth 0) on MNIST-1D: about 33% accuracy at best."""
    return mnist1d(adam_mlp(MNIST1D, 1e-2, depth=0))


# -- real runs -------------------------------------------------------------------------------


def test_logistic_regression_on_mnist1d_underfits(logistic: Watch) -> None:
    assert "UNDERFITTING" in kinds(logistic)
    assert "OVERFITTING" not in kinds(logistic)
    underfitting = finding(logistic, Finding.UNDERFITTING)
    assert underfitting.prescription == REMEDIES[Finding.UNDERFITTING]
    assert "bigger model" in underfitting.prescription
    assert "train longer" in underfitting.prescription


def test_the_underfitting_finding_carries_the_train_and_validation_numbers(
    logistic: Watch,
) -> None:
    underfitting = finding(logistic, Finding.UNDERFITTING)
    evidence, step = underfitting.evidence, underfitting.step
    assert step is not None
    history = logistic.history
    # The numbers are those recorded at (or before) the step the finding was raised.
    for key, series in (
        ("train_loss", history.train_loss),
        ("train_accuracy", history.train_accuracy),
        ("val_loss", history.val_loss),
        ("val_accuracy", history.val_accuracy),
    ):
        recorded = dict(zip(series.steps, series.values, strict=True))
        at = evidence["val_step"] if key.startswith("val") else evidence["train_step"]
        assert at <= step
        assert evidence[key] == pytest.approx(recorded[at], rel=1e-3), key
    assert evidence["train_loss"] > DEFAULTS.underfitting_level * math.log(10)
    assert abs(evidence["train_accuracy"] - evidence["val_accuracy"]) < 0.1
    assert evidence["improvement"] < DEFAULTS.underfitting_improvement
    assert evidence["window"] == [step - DEFAULTS.window_steps, step]
    for text in (f"{evidence['train_accuracy']:.3f}", f"{evidence['val_accuracy']:.3f}"):
        assert text in underfitting.summary
    assert f"step {evidence['val_step']}" in underfitting.summary


def test_a_two_unit_wide_mlp_underfits() -> None:
    assert "UNDERFITTING" in kinds(mnist1d(adam_mlp(MNIST1D, 1e-2, depth=2, width=2)))


def test_a_wide_mlp_on_the_same_data_does_not_underfit() -> None:
    # Same data and length: its training loss keeps falling (18% over the last window)
    # and it already fits the training data better than the validation data.
    assert "UNDERFITTING" not in kinds(mnist1d(adam_mlp(MNIST1D, 1e-3, depth=2, width=128)))


def test_a_big_model_on_100_digits_overfits_and_does_not_underfit() -> None:
    data = standardized("digits")
    data = type(data)(**{**data.__dict__, "train": data.train.subset(list(range(100)))})
    watch, _ = train(Run(adam_mlp(DIGITS, 1e-3, depth=2, width=512), data, 450, batch_size=20))
    assert watch is not None
    assert "OVERFITTING" in kinds(watch)
    assert "UNDERFITTING" not in kinds(watch)
    overfitting = finding(watch, Finding.OVERFITTING)
    evidence = overfitting.evidence
    assert evidence["train_accuracy"] - evidence["val_accuracy"] >= DEFAULTS.overfitting_gap
    assert evidence["val_loss"] > evidence["best_val_loss"]
    assert evidence["train_loss"] < evidence["train_loss_at_best_val"]
    assert evidence["best_val_step"] < evidence["val_step"] <= (overfitting.step or 0)
    for key in ("train_loss", "val_loss"):
        assert f"{evidence[key]:.3g}" in overfitting.summary


# -- synthetic series ------------------------------------------------------------------------

STEPS = list(range(0, 601, 50))


def flat_run(
    train_accuracy: float,
    val_accuracy: float,
    level: float,
    improvement: float,
    *,
    validation: bool = True,
) -> History:
    """A run whose monitoring loss ends at ``level`` x chance, having improved by
    ``improvement`` (relative) over the last 200 steps; accuracies held at the end."""
    chance = math.log(10)
    end, start = level * chance, level * chance / (1 - improvement)
    history = History(initial_loss=chance, chance_loss=chance, chance_accuracy=0.1)
    curve = [chance if s == 0 else (start if s <= 400 else end) for s in STEPS]
    history.monitor_loss = Series(STEPS, curve)
    history.monitor_accuracy = Series(STEPS, [0.1] + [train_accuracy] * (len(STEPS) - 1))
    if validation:
        history.train_loss = Series(STEPS[1:], curve[1:])
        history.train_accuracy = Series(STEPS[1:], [train_accuracy] * (len(STEPS) - 1))
        history.val_loss = Series(STEPS[1:], [v * 1.02 for v in curve[1:]])
        history.val_accuracy = Series(STEPS[1:], [val_accuracy] * (len(STEPS) - 1))
    return history


def detect(history: History, thresholds: Thresholds = DEFAULTS) -> Finding | None:
    result = monitor.detect_underfitting(history, thresholds)
    return None if result is None else result.kind


def test_a_flat_high_training_loss_without_a_gap_is_underfitting() -> None:
    assert detect(flat_run(0.35, 0.36, level=0.7, improvement=0.01)) is Finding.UNDERFITTING


@pytest.mark.parametrize(
    ("train_accuracy", "val_accuracy", "level", "improvement", "why"),
    [
        (0.35, 0.36, 0.7, 0.2, "the training loss is still falling: train longer first"),
        (0.35, 0.36, 0.2, 0.01, "a low training loss is not high bias"),
        (0.60, 0.40, 0.5, 0.01, "a generalization gap: the model can fit its training data"),
    ],
)
def test_without_a_target_each_condition_is_needed(
    train_accuracy: float, val_accuracy: float, level: float, improvement: float, why: str
) -> None:
    assert detect(flat_run(train_accuracy, val_accuracy, level, improvement)) is None, why


def test_a_target_accuracy_judges_the_training_error_whatever_the_gap() -> None:
    # Healthy by default (loss at 10% of chance), with a 10-point gap.
    history = flat_run(0.90, 0.80, level=0.1, improvement=0.01)
    assert detect(history) is None
    result = monitor.detect_underfitting(history, Thresholds(target_accuracy=0.95))
    assert result is not None
    assert result.kind is Finding.UNDERFITTING
    assert result.evidence["target_accuracy"] == 0.95
    assert "below the target accuracy 0.95" in result.summary
    assert detect(history, Thresholds(target_accuracy=0.85)) is None  # target reached
    still_falling = flat_run(0.90, 0.80, level=0.1, improvement=0.3)
    assert detect(still_falling, Thresholds(target_accuracy=0.95)) is None


def test_a_target_loss_judges_the_training_loss() -> None:
    history = flat_run(0.90, 0.80, level=0.1, improvement=0.01)  # loss 0.23
    assert detect(history, Thresholds(target_loss=0.1)) is Finding.UNDERFITTING
    assert detect(history, Thresholds(target_loss=0.5)) is None


def test_without_validation_numbers_only_a_target_can_judge() -> None:
    history = flat_run(0.35, 0.36, level=0.7, improvement=0.01, validation=False)
    assert detect(history) is None
    result = monitor.detect_underfitting(history, Thresholds(target_accuracy=0.9))
    assert result is not None
    # The training numbers then come from the monitoring subset (training data).
    assert result.evidence["train_accuracy"] == 0.35
    assert result.evidence["val_loss"] is None


def test_tiny_updates_are_left_to_learning_rate_too_low() -> None:
    history = flat_run(0.35, 0.36, level=0.7, improvement=0.01)
    history.update_ratio["0.weight"] = Series(list(range(410, 601, 10)), [1e-5] * 20)
    assert detect(history) is None


def test_a_run_at_chance_is_left_to_no_learning_signal() -> None:
    history = flat_run(0.11, 0.1, level=0.99, improvement=0.0)
    assert detect(history) is None
    assert monitor.detect_plateau(history, DEFAULTS) is not None


def test_nothing_is_judged_before_a_full_window_past_warmup() -> None:
    history = flat_run(0.35, 0.36, level=0.7, improvement=0.01)
    for name in ("monitor_loss", "train_loss", "val_loss", "train_accuracy", "val_accuracy"):
        series = getattr(history, name)
        keep = [i for i, s in enumerate(series.steps) if s <= 200]
        setattr(history, name, Series([series.steps[i] for i in keep],
                                      [series.values[i] for i in keep]))  # fmt: skip
    assert detect(history) is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"target_accuracy": 1.5},
            "The 'target_accuracy' parameter of Thresholds must be a float in (0, 1] or None. "
            "Got 1.5 instead.",
        ),
        (
            {"target_loss": 0.0},
            "The 'target_loss' parameter of Thresholds must be a finite float > 0 or None. "
            "Got 0.0 instead.",
        ),
        (
            {"target_loss": float("inf")},
            "The 'target_loss' parameter of Thresholds must be a finite float > 0 or None. "
            "Got inf instead.",
        ),
        (
            {"underfitting_level": 1.0},
            "The 'underfitting_level' parameter of Thresholds must be a float in (0, 1). "
            "Got 1.0 instead.",
        ),
        *(
            (
                {name: float("inf")},
                f"The '{name}' parameter of Thresholds must be a finite float {bound}. "
                "Got inf instead.",
            )
            for name, bound in (
                ("blowup_factor", "> 1"),
                ("spike_factor", "> 1"),
                ("ratio_band", ">= 1"),
                ("loss_rise", "> 0"),
            )
        ),
    ],
)
def test_bad_thresholds_are_refused_in_the_one_format(
    changes: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        Thresholds(**changes)  # type: ignore[arg-type]


def test_the_watch_runs_the_detector() -> None:
    assert monitor.detect_underfitting in monitor.DETECTORS
    assert monitor.DETECTORS.index(monitor.detect_underfitting) > monitor.DETECTORS.index(
        monitor.detect_overfitting
    )
