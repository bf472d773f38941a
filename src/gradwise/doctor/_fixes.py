"""Config-aware fixes: what a finding's remedy means for the config that was examined.

The monitor's detectors and the checks see a model, not its config, so findings whose
remedy is "initialization", "ReLU" or "biases" come without a ``fix``. Knowing the config,
the doctor can tell which part of it caused the symptom and attach a safe override:

- DEAD_UNITS with negative initial biases: ``init.biases = 0`` (the lectures: biases start
  at 0, or a small positive constant, so ReLUs fire); with ReLUs not He-initialized:
  ``init.weights = he_normal``.
- SATURATED_UNITS or VANISHING_GRADIENTS in a built-in model with a saturating activation
  (sigmoid, tanh, ...): ReLU with He initialization. (Not batch normalization as well:
  on the doctor suite's 20-layer digits MLP, ReLU + He reached 94% validation accuracy
  in an 8-epoch probe, with batch norm added only 74%; short probes favour the plain net.)
- INITIAL_LOSS_MISMATCH above chance with a hand-set initializer (``init.options`` given,
  or a scheme that does not scale with the fan): the activation's standard scheme (He for
  ReLU-like units, Xavier otherwise).
- EXPLODING_GRADIENTS from a spike of the gradient norm: ``clip_grad_norm`` at
  ``CLIP_OVER_MEDIAN`` times the run's median norm (clipping the whole model's norm; the
  usual steps pass unchanged, a spike is cut to twice the usual size).
- UNNORMALIZED_INPUTS (measured on the configured preprocessing's output): its
  standardization is appended to ``data.preprocess``, keeping the steps already there.
- UNDERFITTING in a built-in model: ``model.width`` times ``WIDEN_FACTOR`` (the
  flowchart's "bigger model"; more width keeps the depth, so the same initialization and
  learning rate stay sensible, and a net with more units per layer fits at least as well).

Each rule only fires where the config names the cause; otherwise the finding is left as
it was (its prescription still says what to try).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from gradwise.config import RunConfig
from gradwise.diagnosis import Diagnosis, Finding
from gradwise.models import MODELS

#: Activations whose flat regions saturate (gradients vanish through them).
SATURATING = ("sigmoid", "tanh", "hardtanh", "softsign", "hardsigmoid", "logsigmoid")
#: Activations that He initialization is derived for (rectifiers and their smooth kin).
RECTIFIERS = ("relu", "leaky_relu", "elu", "gelu", "silu", "selu", "mish", "softplus")
#: Initializers whose scale follows the layer's fan (a hand-set scale is not among them).
FAN_SCALED = (
    "he_normal", "he_uniform", "xavier_normal", "xavier_uniform", "lecun_normal",
    "lecun_uniform", "orthogonal", "lsuv",
)  # fmt: skip
#: The measured changes (learning rate, clipping threshold) deferred while the model, its
#: initialization or the data are being fixed: each value was measured on the broken setup
#: (an update ratio through vanishing gradients, a loss rise, a curvature on inputs 1000x
#: too large, gradient norms of a huge init), which says little about what the fixed one
#: needs; the re-probe measures it again. (Cutting spirals x1000's lr to 0.000156 along
#: with the standardization left the probe at chance.)
DEFERRED_BY_STRUCTURE = (
    Finding.LEARNING_RATE_TOO_LOW,
    Finding.LEARNING_RATE_TOO_HIGH,
    Finding.OSCILLATION,
    Finding.NONFINITE_LOSS,
    Finding.EXPLODING_GRADIENTS,
)
_HE = {"init.weights": "he_normal", "init.options": {}}
#: UNDERFITTING's fix multiplies a built-in model's width by this.
WIDEN_FACTOR = 4
#: EXPLODING_GRADIENTS' fix clips the gradient norm at this times the run's median norm.
CLIP_OVER_MEDIAN = 2.0


def with_config_fix(finding: Diagnosis, config: RunConfig) -> Diagnosis:
    """``finding`` with a ``fix`` derived from ``config`` where it had none and one is safe.

    Example:
        >>> from gradwise import Finding
        >>> from gradwise.config import load_config
        >>> from gradwise.diagnosis import Diagnosis
        >>> from gradwise.doctor import with_config_fix
        >>> config = load_config(overrides=["init.biases=-10"])
        >>> with_config_fix(Diagnosis(Finding.DEAD_UNITS, "s", "p"), config).fix
        {'init.biases': 0.0}
    """
    if finding.kind is Finding.UNNORMALIZED_INPUTS and "data.preprocess" in finding.fix:
        return dataclasses.replace(finding, fix=_after_the_configured_steps(finding, config))
    if finding.fix:
        return finding
    rule = _RULES.get(finding.kind)
    fix = rule(finding, config) if rule is not None else {}
    return dataclasses.replace(finding, fix=fix) if fix else finding


def _after_the_configured_steps(finding: Diagnosis, config: RunConfig) -> dict[str, Any]:
    """The input check measured what the configured preprocessing produced: its
    standardization goes after those steps (a PCA, a rescaling), not in their place."""
    configured = list(config.data.preprocess)
    added = [step for step in finding.fix["data.preprocess"] if configured[-1:] != [step]]
    return {**finding.fix, "data.preprocess": configured + added}


def _built_in(config: RunConfig) -> bool:
    return config.model.name in MODELS


def _initialized(config: RunConfig) -> bool:
    return config.init.weights != "none"


def _dead_units(finding: Diagnosis, config: RunConfig) -> dict[str, Any]:
    if not _initialized(config):
        return {}
    if config.init.biases < 0:
        return {"init.biases": 0.0}
    relu = config.model.activation in RECTIFIERS or not _built_in(config)
    if relu and (config.init.weights not in ("he_normal", "he_uniform") or config.init.options):
        return dict(_HE)
    return {}


def _saturating(config: RunConfig) -> bool:
    return _built_in(config) and config.model.activation in SATURATING


def _saturated_units(finding: Diagnosis, config: RunConfig) -> dict[str, Any]:
    if not _saturating(config):
        return {}
    return {"model.activation": "relu", **_HE}


def _initial_loss_mismatch(finding: Diagnosis, config: RunConfig) -> dict[str, Any]:
    loss, chance = finding.evidence.get("loss"), finding.evidence.get("chance")
    above = loss is None or (chance is not None and loss > chance)  # None: not finite
    hand_set = bool(config.init.options) or config.init.weights not in FAN_SCALED
    if not (above and hand_set and _initialized(config)):
        return {}
    saturating = _built_in(config) and config.model.activation in SATURATING
    return {"init.weights": "xavier_normal" if saturating else "he_normal", "init.options": {}}


def _underfitting(finding: Diagnosis, config: RunConfig) -> dict[str, Any]:
    if not _built_in(config):
        return {}
    width = config.model.width
    if width is None:
        width = inspect.signature(MODELS[config.model.name]).parameters["width"].default
    return {"model.width": int(width) * WIDEN_FACTOR}


def _exploding_gradients(finding: Diagnosis, config: RunConfig) -> dict[str, Any]:
    if config.optimizer.get("name") == "OneBitAdam":
        return {}  # its gradients are local after the freeze: clip_grad_norm is refused
    median = finding.evidence.get("median_grad_norm")
    if not isinstance(median, int | float) or not median > 0 or "grad_norm" not in finding.evidence:
        return {}  # no spike (the first/last ratio alone: initialization, normalization)
    return {"clip_grad_norm": float(f"{CLIP_OVER_MEDIAN * median:.3g}")}


_RULES = {
    Finding.DEAD_UNITS: _dead_units,
    Finding.SATURATED_UNITS: _saturated_units,
    Finding.VANISHING_GRADIENTS: _saturated_units,
    Finding.INITIAL_LOSS_MISMATCH: _initial_loss_mismatch,
    Finding.UNDERFITTING: _underfitting,
    Finding.EXPLODING_GRADIENTS: _exploding_gradients,
}
