"""Config-aware fixes and the order in which the doctor applies them."""

from __future__ import annotations

import pytest

from gradwise import Finding
from gradwise.config import load_config
from gradwise.diagnosis import Diagnosis
from gradwise.doctor import fixes_from, with_changes, with_config_fix


def test_dead_units_from_negative_biases_reset_the_biases() -> None:
    config = load_config(overrides=["init.biases=-10"])
    finding = with_config_fix(Diagnosis(Finding.DEAD_UNITS, "s", "p"), config)
    assert finding.fix == {"init.biases": 0.0}
    # A He-initialized ReLU net with zero biases: the config is not the cause, no fix.
    plain = with_config_fix(Diagnosis(Finding.DEAD_UNITS, "s", "p"), load_config())
    assert plain.fix == {}


def test_saturating_stacks_get_relu_with_he() -> None:
    config = load_config(
        overrides=["model.name=mlp", "model.activation=sigmoid", "model.norm=none"]
    )
    saturated = with_config_fix(Diagnosis(Finding.SATURATED_UNITS, "s", "p"), config)
    assert saturated.fix["model.activation"] == "relu"
    assert saturated.fix["init.weights"] == "he_normal"
    vanishing = with_config_fix(Diagnosis(Finding.VANISHING_GRADIENTS, "s", "p"), config)
    assert vanishing.fix == saturated.fix
    fixed = with_changes(config, fixes_from([vanishing]))  # the fixed config is valid
    assert (fixed.model.activation, fixed.init.weights) == ("relu", "he_normal")
    # A ReLU net whose gradients vanish: the activation is not the cause, no fix here.
    relu = load_config(overrides=["model.name=mlp"])
    assert with_config_fix(Diagnosis(Finding.VANISHING_GRADIENTS, "s", "p"), relu).fix == {}


def test_initial_loss_above_chance_with_a_hand_set_scale_restores_he() -> None:
    config = load_config(overrides=["init.weights=normal", "init.options={std: 10.0}"])
    above = Diagnosis(
        Finding.INITIAL_LOSS_MISMATCH, "s", "p", evidence={"loss": 6e5, "chance": 2.3}
    )
    assert with_config_fix(above, config).fix == {"init.weights": "he_normal", "init.options": {}}
    # He init already: the mismatch has another cause (inputs, the loss), no fix.
    assert with_config_fix(above, load_config()).fix == {}
    below = Diagnosis(
        Finding.INITIAL_LOSS_MISMATCH, "s", "p", evidence={"loss": 0.01, "chance": 2.3}
    )
    assert with_config_fix(below, config).fix == {}


def test_a_learning_rate_raise_waits_while_the_model_is_fixed() -> None:
    low = Diagnosis(Finding.LEARNING_RATE_TOO_LOW, "s", "p", fix={"optimizer.lr": 0.02})
    vanishing = Diagnosis(
        Finding.VANISHING_GRADIENTS, "s", "p", severity="error",
        fix={"model.activation": "relu", "init.weights": "he_normal"},
    )  # fmt: skip
    assert "optimizer.lr" not in fixes_from([low, vanishing])
    assert fixes_from([low]) == {"optimizer.lr": 0.02}


def test_a_new_activation_brings_its_own_initializer() -> None:
    # A saturated tanh net with a hand-set scale: the initial-loss check asks for the tanh's
    # scheme (Xavier), the saturation finding for ReLU with He. Whichever comes first, the
    # fixed net is a ReLU net and must get He, not Xavier (found by the held-out doctor
    # setups: relu + xavier_normal in 20 layers trained to 43% against 53%).
    config = load_config(
        overrides=[
            "model.name=mlp", "model.activation=tanh", "model.norm=none",
            "init.weights=normal", "init.options={std: 1.0}",
        ]
    )  # fmt: skip
    mismatch = with_config_fix(
        Diagnosis(Finding.INITIAL_LOSS_MISMATCH, "s", "p", evidence={"loss": 16.3, "chance": 2.3}),
        config,
    )
    saturated = with_config_fix(Diagnosis(Finding.SATURATED_UNITS, "s", "p"), config)
    assert mismatch.fix["init.weights"] == "xavier_normal"
    for findings in ([mismatch, saturated], [saturated, mismatch]):
        applied = fixes_from(findings)
        assert applied["model.activation"] == "relu"
        assert (applied["init.weights"], applied["init.options"]) == ("he_normal", {})


def test_changing_the_initializer_drops_the_old_ones_arguments() -> None:
    symmetric = Diagnosis(Finding.SYMMETRIC_INIT, "s", "p", fix={"init.weights": "he_normal"})
    applied = fixes_from([symmetric])
    assert applied == {"init.weights": "he_normal", "init.options": {}}
    config = load_config(overrides=["init.weights=normal", "init.options={std: 10.0}"])
    assert with_changes(config, applied).init.options == {}


@pytest.mark.parametrize(
    "kind",
    [
        Finding.LEARNING_RATE_TOO_HIGH,
        Finding.LEARNING_RATE_TOO_LOW,
        Finding.OSCILLATION,
        Finding.NONFINITE_LOSS,
    ],
)
def test_a_learning_rate_measured_on_unscaled_inputs_waits_for_the_standardization(
    kind: Finding,
) -> None:
    # Every learning-rate factor was measured on the broken setup: on inputs 1000x too
    # large the curvature and the updates are ~1e6x too, so the cut would be far too deep.
    change = Diagnosis(kind, "s", "p", severity="error", fix={"optimizer.lr": 1.5e-4})
    unnormalized = Diagnosis(
        Finding.UNNORMALIZED_INPUTS, "s", "p", fix={"data.preprocess": ["standardize"]}
    )
    assert fixes_from([change, unnormalized]) == {"data.preprocess": ["standardize"]}
    assert fixes_from([change]) == {"optimizer.lr": 1.5e-4}


def test_a_gradient_norm_spike_clips_at_twice_the_usual_norm() -> None:
    spike = Diagnosis(
        Finding.EXPLODING_GRADIENTS,
        "s",
        "p",
        evidence={"grad_norm": 71.8, "median_grad_norm": 0.57},
    )
    fix = with_config_fix(spike, load_config()).fix
    assert fix == {"clip_grad_norm": pytest.approx(1.14)}
    assert with_changes(load_config(), fix).clip_grad_norm == pytest.approx(1.14)
    # A first/last gradient ratio alone calls for initialization or normalization.
    ratio = Diagnosis(Finding.EXPLODING_GRADIENTS, "s", "p", evidence={"first_last_ratio": 300.0})
    assert with_config_fix(ratio, load_config()).fix == {}
    # Norms measured on a setup that is being fixed (a huge init) say nothing of the fixed
    # one's: the clipping waits, as a learning-rate change does.
    huge = Diagnosis(
        Finding.INITIAL_LOSS_MISMATCH, "s", "p", severity="error",
        fix={"init.weights": "he_normal", "init.options": {}},
    )  # fmt: skip
    clipped = with_config_fix(spike, load_config())
    assert "clip_grad_norm" not in fixes_from([clipped, huge])
    assert fixes_from([clipped]) == {"clip_grad_norm": pytest.approx(1.14)}
    # 1-bit Adam's gradients are local to each rank after its freeze: no global clip.
    one_bit = load_config(overrides=["optimizer={name: OneBitAdam, lr: 0.001}"])
    assert with_config_fix(spike, one_bit).fix == {}


def test_standardization_is_appended_to_the_configured_preprocessing() -> None:
    # The input check measured the configured steps' output (here a PCA's components):
    # the fix standardizes after them instead of replacing them.
    pca = {"name": "pca", "n_components": 5}
    config = load_config(overrides=["data.preprocess=[{name: pca, n_components: 5}]"])
    finding = Diagnosis(
        Finding.UNNORMALIZED_INPUTS, "s", "p", fix={"data.preprocess": ["standardize"]}
    )
    fixed = with_config_fix(finding, config)
    assert fixed.fix == {"data.preprocess": [pca, "standardize"]}
    assert with_changes(config, fixes_from([fixed])).data.preprocess == [pca, "standardize"]
    # Nothing configured: standardization alone; already last: not twice.
    none = load_config(overrides=["data.preprocess=[]"])
    assert with_config_fix(finding, none).fix == {"data.preprocess": ["standardize"]}
    assert with_config_fix(finding, load_config()).fix == {"data.preprocess": ["standardize"]}


def test_the_lowest_learning_rate_wins_over_a_more_severe_finding() -> None:
    # A blow-up at lr 1e6 measured a factor of 10^7; the non-finite validation loss beside
    # it (an error) prescribes a generic tenfold cut, which won the key before.
    findings = [
        Diagnosis(Finding.NONFINITE_LOSS, "s", "p", severity="error", fix={"optimizer.lr": 1e5}),
        Diagnosis(Finding.LEARNING_RATE_TOO_HIGH, "s", "p", fix={"optimizer.lr": 0.1}),
    ]
    assert fixes_from(findings) == {"optimizer.lr": 0.1}
