"""The detectors' thresholds, with the defaults calibrated on healthy and faulty runs."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from gradwise._validation import (
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    Constraint,
    Either,
    Interval,
    Satisfies,
    check,
)

_OPEN_UNIT = Interval(low=0.0, high=1.0, low_closed=False, high_closed=False)


@dataclass(frozen=True)
class Thresholds:
    """When a detector speaks. Windows count optimizer steps.

    The defaults were calibrated so that healthy runs (a BatchNorm cnn1d on MNIST-1D with
    AdamW, MLPs on digits with Adam and on spirals with SGD + momentum, a tanh MLP with
    Xavier init, a BatchNorm CNN on digits) raise nothing, while planted faults are named;
    docs/monitor.md lists the measurements behind each number.

    Attributes:
        warmup_steps: no trend-based finding before this step (early steps are noisy, and
            Adam's first steps move every weight by about the learning rate).
        window_steps: the length of the trend windows (rise, progress, plateau).
        smoothing_steps: the training-loss trend uses the median of this many step losses.
        sustained_checks: a condition on a measured series (a loss rise, dead or
            saturated units, vanishing or exploding gradients, a validation-loss rise)
            must hold at this many consecutive measurements...
        sustained_steps: ...and at every measurement of the last this many steps.
        blowup_factor: divergence when the median of 3 consecutive step losses exceeds
            this multiple of the initial loss (checked from the first step).
        loss_rise: divergence when the smoothed loss rose above its best by this fraction
            of the best (or of ``loss_floor`` times the initial loss, if larger).
        loss_floor: loss changes below this fraction of the initial loss are noise.
        update_ratio_target: the healthy update-to-weight ratio (cs231n: ~1e-3); the
            learning-rate factors bring the measured median ratio to ``ratio_band`` of it.
        update_ratio_high: learning rate too high when the median ratio over layers and
            over the window is above this.
        update_ratio_low: learning rate too low when the median ratio is below this and the
            loss declines slowly.
        ratio_band: healthy ratios lie within this factor of the target in either
            direction; a learning-rate fix aims at the edge of the band.
        slow_progress: "slow" progress: the loss fell by less than this fraction of the
            initial loss over the last window.
        oscillation_probes: oscillation is judged on this many monitoring probes...
        oscillation_fraction: ...when the loss changes direction at more than this
            fraction of them...
        oscillation_swing: ...with swings larger than this fraction of the loss...
        oscillation_level: ...while the loss is above this fraction of the initial loss.
        plateau_improvement: plateau when the monitoring loss improved by less than this
            fraction over the window...
        plateau_level: ...while still above this fraction of the initial loss.
        chance_margin: "at chance": within this fraction of the chance loss (or this many
            accuracy points of the majority-class rate).
        vanishing_ratio, vanishing_norm: vanishing gradients when first/last layer
            gradient norm < ``vanishing_ratio`` and the first layer's norm <
            ``vanishing_norm`` (AutoTrainer).
        exploding_ratio: exploding gradients when first/last layer gradient norm > this...
        spike_factor: ...or the global gradient norm exceeds this multiple of its running
            median.
        dead_fraction: dead units when more than this fraction of a ReLU layer's units
            never fire on the monitoring subset.
        saturated_fraction: saturated units when more than this fraction of a tanh or
            sigmoid layer's units are saturated...
        saturation_share: ...a unit being saturated when its output sits in the flat
            region (tanh: |y| > 0.99; sigmoid: y < 0.01 or y > 0.99) for more than this
            share of the monitoring samples.
        overfitting_gap: overfitting when train accuracy - validation accuracy reaches
            this while the training loss falls and...
        validation_rise: ...the validation loss is above its best by more than this
            fraction at ``sustained_checks`` consecutive evaluations.
        target_accuracy, target_loss: the training performance the run should reach (the
            flowchart's "human-level" reference, e.g. a published baseline), or None.
            With one set, a training accuracy below it (or a training loss above it) on a
            flattened training curve is UNDERFITTING, whatever the train-validation gap.
        underfitting_level: without a target, the training error is "high" when the
            training loss stays above this fraction of the chance loss (else of the initial
            loss)...
        underfitting_gap: ...the model does about as well on held-out data as on its
            training data (train - validation accuracy below this; without accuracies,
            validation - training loss below this fraction of the chance loss)...
        underfitting_improvement: ...and the training curve has flattened: the loss on
            the monitoring subset (training data) improved by less than this fraction over
            the last window.

    Example:
        >>> from gradwise.monitor import Thresholds
        >>> Thresholds(dead_fraction=0.7).dead_fraction
        0.7
    """

    warmup_steps: int = 50
    window_steps: int = 200
    smoothing_steps: int = 20
    sustained_checks: int = 2
    sustained_steps: int = 20
    blowup_factor: float = 2.0
    loss_rise: float = 0.5
    loss_floor: float = 0.25
    update_ratio_target: float = 1e-3
    update_ratio_high: float = 1e-1
    update_ratio_low: float = 5e-4
    ratio_band: float = 10.0
    slow_progress: float = 0.1
    oscillation_probes: int = 8
    oscillation_fraction: float = 0.5
    oscillation_swing: float = 0.1
    oscillation_level: float = 0.1
    plateau_improvement: float = 0.01
    plateau_level: float = 0.5
    chance_margin: float = 0.05
    vanishing_ratio: float = 1e-3
    vanishing_norm: float = 1e-4
    exploding_ratio: float = 70.0
    spike_factor: float = 100.0
    dead_fraction: float = 0.5
    saturated_fraction: float = 0.5
    saturation_share: float = 0.5
    overfitting_gap: float = 0.1
    validation_rise: float = 0.05
    target_accuracy: float | None = None
    target_loss: float | None = None
    underfitting_level: float = 0.3
    underfitting_gap: float = 0.05
    underfitting_improvement: float = 0.05

    def __post_init__(self) -> None:
        for item in fields(self):
            check(item.name, "Thresholds", getattr(self, item.name), _CONSTRAINTS[item.name])

    def replace(self, **changes: Any) -> Thresholds:
        """A copy with some thresholds changed (validated)."""
        return Thresholds(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


_FRACTIONS = (
    "loss_floor", "slow_progress", "oscillation_fraction", "oscillation_level",
    "plateau_improvement", "plateau_level", "chance_margin", "dead_fraction",
    "saturated_fraction", "saturation_share", "overfitting_gap", "validation_rise",
    "underfitting_level", "underfitting_gap", "underfitting_improvement",
)  # fmt: skip
_NONE = Satisfies(lambda value: value is None, "None")
_CONSTRAINTS: dict[str, Constraint] = {
    "warmup_steps": NON_NEGATIVE_INT,
    "window_steps": POSITIVE_INT,
    "smoothing_steps": POSITIVE_INT,
    "sustained_checks": POSITIVE_INT,
    "sustained_steps": POSITIVE_INT,
    "blowup_factor": Interval(low=1.0, low_closed=False, finite=True),
    "oscillation_probes": Interval(low=4.0, kind="int"),
    "loss_rise": POSITIVE,
    "update_ratio_target": POSITIVE,
    "update_ratio_high": POSITIVE,
    "update_ratio_low": POSITIVE,
    "ratio_band": Interval(low=1.0, finite=True),
    "oscillation_swing": POSITIVE,
    "vanishing_ratio": POSITIVE,
    "vanishing_norm": POSITIVE,
    "exploding_ratio": POSITIVE,
    "spike_factor": Interval(low=1.0, low_closed=False, finite=True),
    "target_accuracy": Either((Interval(low=0.0, high=1.0, low_closed=False), _NONE)),
    "target_loss": Either((POSITIVE, _NONE)),
    **dict.fromkeys(_FRACTIONS, _OPEN_UNIT),
}
