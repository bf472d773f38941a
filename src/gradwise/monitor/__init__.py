"""Monitors: babysit a training run the way the lectures teach, and name what goes wrong.

``w = watch(model, optimizer, monitor_data=...)``, then ``w.step(loss)`` after every
optimizer step (or ``Trainer(..., callbacks=[w.callback()])``); ``w.findings()`` returns
:class:`gradwise.diagnosis.Diagnosis` objects. The measurements (loss on a fixed
monitoring subset, per-layer gradient norms and update-to-weight ratios, activation
statistics, dead and saturated units, histograms) are in ``w.records()``,
``w.histograms()`` and ``w.history``; the detectors are plain functions over a
:class:`History`, so they can be run on any recorded series.
"""

from gradwise.monitor._detectors import (
    DETECTORS,
    detect_dead_units,
    detect_exploding_gradients,
    detect_learning_rate_too_high,
    detect_learning_rate_too_low,
    detect_nonfinite,
    detect_oscillation,
    detect_overfitting,
    detect_plateau,
    detect_saturated_units,
    detect_underfitting,
    detect_vanishing_gradients,
    median_update_ratio,
    median_update_ratio_at_base_rate,
    reference_learning_rate,
)
from gradwise.monitor._history import History, Series
from gradwise.monitor._probes import Histogram
from gradwise.monitor._thresholds import Thresholds
from gradwise.monitor._watch import Watch, watch

__all__ = [
    "DETECTORS",
    "Histogram",
    "History",
    "Series",
    "Thresholds",
    "Watch",
    "detect_dead_units",
    "detect_exploding_gradients",
    "detect_learning_rate_too_high",
    "detect_learning_rate_too_low",
    "detect_nonfinite",
    "detect_oscillation",
    "detect_overfitting",
    "detect_plateau",
    "detect_saturated_units",
    "detect_underfitting",
    "detect_vanishing_gradients",
    "median_update_ratio",
    "median_update_ratio_at_base_rate",
    "reference_learning_rate",
    "watch",
]
