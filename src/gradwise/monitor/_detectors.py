"""Detectors: small functions from the recorded series to a finding (or None).

Each reads a :class:`History` with :class:`Thresholds` and looks at windowed, relative
trends rather than one measurement, so that a single noisy step never raises a finding.
They are pure: the same history gives the same answer, so they can be tested on
synthetic series.
"""

from __future__ import annotations

import bisect
import functools
import math
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NamedTuple, TypeVar

from gradwise.diagnosis import REMEDIES, Diagnosis, Finding
from gradwise.monitor._history import History, Series
from gradwise.monitor._thresholds import Thresholds

Detector = Callable[[History, Thresholds], Diagnosis | None]
Measured = TypeVar("Measured")


# -- measurements several detectors share -----------------------------------------------

# Per thread (and task): watches in two threads each keep their own.
_shared: ContextVar[dict[tuple[str, int, int], Any] | None] = ContextVar(
    "gradwise_shared_measurements", default=None
)


@contextmanager
def sharing_measurements() -> Iterator[None]:
    """Inside the block, each measurement that several detectors take (the median update
    ratio, the loss rise, the window's progress, whether the run is at chance) is taken
    once per history and thresholds: for running every detector on a history that does
    not change meanwhile, as a watch does at each step. (A watch probing every step spent
    0.3 ms of its 0.4 ms of detectors at step 580 repeating them.)"""
    token = _shared.set({})
    try:
        yield
    finally:
        _shared.reset(token)


def _shared_measurement(
    measure: Callable[[History, Thresholds], Measured],
) -> Callable[[History, Thresholds], Measured]:
    @functools.wraps(measure)
    def shared(history: History, thresholds: Thresholds) -> Measured:
        memo = _shared.get()
        if memo is None:
            return measure(history, thresholds)
        key = (measure.__name__, id(history), id(thresholds))
        if key not in memo:
            memo[key] = measure(history, thresholds)
        return memo[key]

    return shared


# -- helpers -------------------------------------------------------------------------------


def _now(history: History) -> int:
    steps = [s.last_step for s in (history.loss, history.grad_norm, history.monitor_loss)]
    return max((s for s in steps if s is not None), default=0)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _round(value: float | None, digits: int = 4) -> float | None:
    """A JSON-friendly number: non-finite becomes None, the rest keeps ``digits`` digits."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _initial_loss(history: History) -> float | None:
    if history.initial_loss is not None and math.isfinite(history.initial_loss):
        return history.initial_loss
    finite = _finite(history.loss.values[:1])
    return finite[0] if finite else None


def _initial_training_loss(history: History) -> float | None:
    """The reference for training (step) losses: the larger of the initial loss and the
    first finite step loss (made in training mode, with the initial weights)."""
    initial = _initial_loss(history)
    first = _finite(history.loss.values[:1])
    if first and (initial is None or first[0] > initial):
        return first[0]
    return initial


def _trend(history: History) -> Series:
    """The loss trend: the monitoring-subset loss when measured, else the smoothed loss."""
    return history.monitor_loss if len(history.monitor_loss) >= 2 else history.smoothed_loss


@_shared_measurement
def median_update_ratio(history: History, thresholds: Thresholds) -> float | None:
    """Median over weights of each weight's median update ratio in the latest window.

    A weight counts once it has ``sustained_checks`` finite ratios in the window (after
    warmup): one frozen, unfrozen or left at 0 meanwhile does not hold the others back.
    None while no weight has.

    Example:
        >>> from gradwise.monitor import History, Series, Thresholds, median_update_ratio
        >>> history = History()
        >>> history.update_ratio["0.weight"] = Series([60, 70, 80], [1e-3, 2e-3, 3e-3])
        >>> history.update_ratio["2.weight"] = Series([60, 70, 80], [1e-2, 1e-2, 1e-2])
        >>> median_update_ratio(history, Thresholds())  # median of 2e-3 and 1e-2
        0.006
    """
    now = _now(history)
    start = max(thresholds.warmup_steps + 1, now - thresholds.window_steps + 1)
    per_layer = []
    for series in history.update_ratio.values():
        recent = series.finite_since(start)
        if len(recent) >= thresholds.sustained_checks:
            per_layer.append(statistics.median(recent))
    return statistics.median(per_layer) if per_layer else None


@_shared_measurement
def median_update_ratio_at_base_rate(history: History, thresholds: Thresholds) -> float | None:
    """:func:`median_update_ratio` with each ratio taken back to the base learning rate.

    An update is proportional to the learning rate that made it, so a ratio measured at
    step ``t`` is scaled by ``reference / lr_t`` (``history.step_learning_rate``; the
    reference is :func:`reference_learning_rate`: the configured rate, or a cyclic
    schedule's peak), and divided by ``history.step_size_bias`` where it was recorded (an
    RMSprop step before its average of squares has filled is up to ``1 / sqrt(1 -
    alpha)`` times its later size): what the updates are at that rate, apart from a
    schedule's warmup or decay and the optimizer's own start.
    The detectors that prescribe a new base rate (too low, and the factor of too high)
    read this; a ratio measured at ``lr_t = 0`` measures no step size and is left out.
    The same as :func:`median_update_ratio` when the rates are not known.

    Example:
        >>> from gradwise.monitor import History, Series, Thresholds
        >>> from gradwise.monitor import median_update_ratio_at_base_rate
        >>> history = History(learning_rate=0.1)
        >>> history.update_ratio["0.weight"] = Series([60, 70, 80], [1e-4, 1e-4, 1e-4])
        >>> history.step_learning_rate = Series([60, 70, 80], [0.025, 0.025, 0.025])
        >>> median_update_ratio_at_base_rate(history, Thresholds())  # 1e-4 at lr 0.1 / 4
        0.0004
    """
    now = _now(history)
    start = max(thresholds.warmup_steps + 1, now - thresholds.window_steps + 1)
    scales = _rate_scales(history, start)
    per_layer = []
    for series in history.update_ratio.values():
        low = bisect.bisect_left(series.steps, start)
        recent = _at_base_rate(series.steps[low:], series.values[low:], scales)
        if len(recent) >= thresholds.sustained_checks:
            per_layer.append(statistics.median(recent))
    return statistics.median(per_layer) if per_layer else None


def reference_learning_rate(history: History) -> float | None:
    """The rate the learning-rate findings speak of: the configured one
    (``history.learning_rate``), or the highest rate a step was measured at when a
    schedule went above it (torch's OneCycleLR and CyclicLR start at the bottom of their
    cycle: the peak is what their ``max_lr`` sets). None when neither is known.

    Example:
        >>> from gradwise.monitor import History, Series, reference_learning_rate
        >>> history = History(learning_rate=0.0004)  # OneCycleLR's max_lr / 25
        >>> history.step_learning_rate = Series([10, 100, 200], [0.001, 0.01, 0.004])
        >>> reference_learning_rate(history)
        0.01
    """
    configured = history.learning_rate
    highest = history.step_learning_rate.finite_max()
    candidates = [
        rate for rate in (configured, highest) if rate is not None and math.isfinite(rate)
    ]
    best = max(candidates, default=0.0)
    return best if best > 0 else None


def _rate_scales(history: History, start: int, stop: int | None = None) -> dict[int, float]:
    """``lr_t / reference rate`` at each step in ``[start, stop)`` whose rate was recorded,
    times the step's ``history.step_size_bias`` where one was recorded (empty when the
    reference rate is not known): what step ``t``'s update ratios are divided by to give
    the ratios of the base rate, with the optimizer's averages filled."""
    base = reference_learning_rate(history)
    rates = history.step_learning_rate
    if base is None:
        return {}
    low = bisect.bisect_left(rates.steps, start)
    high = len(rates.steps) if stop is None else bisect.bisect_left(rates.steps, stop)
    bias = history.step_size_bias
    first = bisect.bisect_left(bias.steps, start)
    last = len(bias.steps) if stop is None else bisect.bisect_left(bias.steps, stop)
    inflated = dict(zip(bias.steps[first:last], bias.values[first:last], strict=True))
    return {
        rates.steps[i]: rates.values[i] / base * inflated.get(rates.steps[i], 1.0)
        for i in range(low, high)
    }


def _at_base_rate(
    steps: Sequence[int], values: Sequence[float], scales: dict[int, float]
) -> list[float]:
    """The finite ratios in ``values`` divided by their step's rate scale (1 where none was
    recorded); ratios made at a rate of 0 are left out."""
    return [
        value / scale
        for step, value in zip(steps, values, strict=True)
        if (scale := scales.get(step, 1.0)) > 0 and math.isfinite(value)
    ]


def _sustained(series: Series, thresholds: Thresholds, condition: Callable[[float], bool]) -> bool:
    """``condition`` holds at every value of the last ``sustained_steps`` steps, and at
    least at the last ``sustained_checks`` values."""
    count = thresholds.sustained_checks
    if len(series) < count:
        return False
    recent = series.since(series.steps[-1] - thresholds.sustained_steps + 1)
    if len(recent) < count:
        recent = series.values[-count:]
    return all(condition(v) for v in recent)


def _lr_fix(history: History, factor: float) -> dict[str, Any]:
    lr = reference_learning_rate(history)
    return {"optimizer.lr": float(f"{lr / factor:.3g}")} if lr else {}


def _diagnosis(
    kind: Finding,
    summary: str,
    prescription: str,
    evidence: dict[str, Any],
    step: int,
    *,
    severity: str = "warning",
    fix: dict[str, Any] | None = None,
) -> Diagnosis:
    return Diagnosis(
        kind,
        summary,
        prescription,
        evidence,
        severity,  # type: ignore[arg-type]
        step,
        fix or {},
    )


# -- learning rate -------------------------------------------------------------------------


class LossRise(NamedTuple):
    """How the training loss climbed: from ``start`` (the initial loss for a blow-up, else
    the best smoothed loss) to ``end`` (the blow-up's peak, else the current smoothed
    loss)."""

    start: float
    end: float
    blowup: bool


@_shared_measurement
def loss_rise(history: History, thresholds: Thresholds) -> LossRise | None:
    """How the training loss climbed back up (None when it did not).

    Two signs of divergence: the median of 3 consecutive step losses went above
    ``blowup_factor`` times the initial loss (any time, even during warmup); or, after
    warmup, the smoothed loss gave back more than ``loss_rise`` of the progress made
    (``initial - best``, at least ``loss_floor * initial``) at ``sustained_checks``
    consecutive checks. The initial loss here is the larger of the monitoring subset's at
    step 0 and the first step's training loss: step losses are taken in training mode,
    where dropout makes a trained model's loss several times its eval-mode loss.

    Both scales (``blowup_factor`` times the initial loss, ``loss_floor`` of it) are
    taken from ``loss_floor`` times the chance loss when that is larger: a watch attached
    to a trained classifier starts near 0 (digits MLP: 0.0012), where batch noise doubles
    the median of 3 step losses (0.0029 at step 60), and a divergence climbs back towards
    chance.
    """
    initial = _initial_training_loss(history)
    if initial is None:
        return None
    chance = history.chance_loss
    scale = initial if chance is None else max(initial, thresholds.loss_floor * chance)
    peak = history.peak_loss.finite_max()  # NaN (never above) before the first peak
    if peak > thresholds.blowup_factor * scale:
        return LossRise(initial, peak, blowup=True)
    smoothed = history.smoothed_loss
    if (
        _now(history) < thresholds.warmup_steps
        or smoothed.finite_count() <= thresholds.sustained_checks
    ):
        return None
    best = smoothed.finite_min()
    margin = thresholds.loss_rise * max(initial - best, thresholds.loss_floor * scale)
    if _sustained(smoothed, thresholds, lambda value: value - best > margin):
        return LossRise(best, smoothed.values[-1], blowup=False)
    return None


def first_update_ratio(history: History) -> float | None:
    """The median over weights of the first measured update ratio that is finite and > 0,
    at the base learning rate (see :func:`median_update_ratio_at_base_rate`).

    Usually step 1's. A warmup that starts at learning rate 0 makes step 1's update 0, and
    a blow-up that killed every unit makes later ones 0: those measure no step size, so
    the first measurement with a positive median among the first
    ``FIRST_UPDATE_MEASUREMENTS`` stands in (None when there is none).
    """
    # The measured steps in order, each with the weights measured there (a frozen or
    # unoptimized weight has no ratio): a merge of the series that stops at the first
    # moving update.
    table = [series for series in history.update_ratio.values() if series.values]
    positions = [0] * len(table)
    for _ in range(FIRST_UPDATE_MEASUREMENTS):
        pending = [s.steps[i] for s, i in zip(table, positions, strict=True) if i < len(s)]
        if not pending:
            return None
        step = min(pending)
        values = []
        for index, series in enumerate(table):
            position = positions[index]
            if position < len(series) and series.steps[position] == step:
                values.append(series.values[position])
                positions[index] += 1
        scales = _rate_scales(history, step, stop=step + 1)
        ratios = _at_base_rate([step] * len(values), values, scales)
        if ratios and (median := statistics.median(ratios)) > 0:
            return median
    return None


#: How many of the first measured steps :func:`first_update_ratio` looks through.
FIRST_UPDATE_MEASUREMENTS = 20


def detect_learning_rate_too_high(history: History, thresholds: Thresholds) -> Diagnosis | None:
    """Update-to-weight ratios far above 1e-3, or a training loss that climbs.

    The factor to lower the learning rate by brings the update ratio to the top of the
    healthy band, ``update_ratio_target * ratio_band`` (1e-2: what healthy runs show in
    their first few hundred steps): the median ratio of the window when it is too high,
    else the ratio of the first update that moved the weights (measured before a too-large
    step distorts them; step 1's unless a warmup from 0 made it 0, see
    :func:`first_update_ratio`); 10 when neither is known. At least 2. Both are taken at
    the base learning rate (:func:`median_update_ratio_at_base_rate`), the one the
    prescription changes: under a warmup, the first update was made at a fraction of it.

    Example:
        >>> from gradwise.monitor import History, Series, Thresholds
        >>> from gradwise.monitor import detect_learning_rate_too_high
        >>> history = History(initial_loss=2.3, learning_rate=0.1)
        >>> history.loss = Series([1, 2, 3, 4], [2.3, 16.0, 40.6, 18.3])
        >>> history.peak_loss = Series([4], [18.3])  # median of 3 steps: 8x the start
        >>> history.update_ratio["0.weight"] = Series([1], [0.5])  # the first update
        >>> finding = detect_learning_rate_too_high(history, Thresholds())
        >>> finding.prescription, finding.fix
        ('lower the learning rate ~50x', {'optimizer.lr': 0.002})
    """
    ratio = median_update_ratio(history, thresholds)
    rise = loss_rise(history, thresholds)
    high = ratio is not None and ratio > thresholds.update_ratio_high
    if not high and rise is None:
        return None
    aim = thresholds.update_ratio_target * thresholds.ratio_band
    first = first_update_ratio(history)
    measured = median_update_ratio_at_base_rate(history, thresholds) if high else first
    factor = max(measured / aim if measured is not None else 10.0, 2.0)
    evidence: dict[str, Any] = {
        "median_update_ratio": _round(ratio),
        "median_update_ratio_at_base_rate": _round(measured if high else None),
        "first_update_ratio": _round(first),
        "learning_rate": reference_learning_rate(history),
        "factor": _round(factor),
    }
    parts = []
    if high:
        parts.append(f"the median update/weight ratio is {ratio:.2g} (healthy: ~1e-3)")
    if rise is not None:
        # A blow-up is measured from the initial loss; a slower rise from the best one.
        start = "initial_loss" if rise.blowup else "best_loss"
        evidence.update({start: _round(rise.start), "peak_loss": _round(rise.end)})
        parts.append(f"the training loss rose from {rise.start:.3g} to {rise.end:.3g}")
    return _diagnosis(
        Finding.LEARNING_RATE_TOO_HIGH,
        " and ".join(parts),
        f"lower the learning rate ~{factor:.0f}x",
        evidence,
        _now(history),
        severity="error" if rise is not None else "warning",
        fix=_lr_fix(history, factor),
    )


def detect_learning_rate_too_low(history: History, thresholds: Thresholds) -> Diagnosis | None:
    """A slow, linear loss curve with update ratios far below 1e-3.

    After a full window past warmup: the median update ratio at the base learning rate
    (:func:`median_update_ratio_at_base_rate`: a schedule's decay is not a too-low rate)
    is below ``update_ratio_low``, the loss fell by less than ``slow_progress`` of the
    initial loss over the window and is still above ``plateau_level`` of it. The factor to
    raise the learning rate by brings the ratio to ``update_ratio_target * ratio_band``.

    Example:
        >>> from gradwise.monitor import History, Series, Thresholds
        >>> from gradwise.monitor import detect_learning_rate_too_low
        >>> history = History(initial_loss=2.3, learning_rate=1e-5)
        >>> steps = list(range(0, 301, 50))
        >>> history.monitor_loss = Series(steps, [2.3 - 0.0002 * s for s in steps])
        >>> history.update_ratio["0.weight"] = Series(steps[1:], [1e-4] * 6)
        >>> detect_learning_rate_too_low(history, Thresholds()).fix
        {'optimizer.lr': 0.001}
    """
    # The window's progress first: cheap, and None for the first window after warmup,
    # when the ratios need not be taken.
    progress = _window_progress(history, thresholds)
    if progress is None:
        return None
    ratio = median_update_ratio_at_base_rate(history, thresholds)
    if ratio is None or ratio >= thresholds.update_ratio_low or ratio <= 0:
        return None
    if loss_rise(history, thresholds) is not None:
        return None  # small updates after a divergence: dead units, not a small rate
    drop, current, initial = progress
    if drop >= thresholds.slow_progress * initial or current <= thresholds.plateau_level * initial:
        return None
    factor = max(thresholds.update_ratio_target * thresholds.ratio_band / ratio, 2.0)
    measured = median_update_ratio(history, thresholds)
    scheduled = "" if measured is None or math.isclose(measured, ratio, rel_tol=0.01) else (
        f" at the base learning rate ({measured:.2g} at the scheduled rates)"
    )  # fmt: skip
    return _diagnosis(
        Finding.LEARNING_RATE_TOO_LOW,
        f"the median update/weight ratio is {ratio:.2g}{scheduled} (healthy: ~1e-3) and the "
        f"loss fell by only {drop:.3g} (to {current:.3g}, from {initial:.3g} at the start) "
        f"over the last {thresholds.window_steps} steps",
        f"raise the learning rate ~{factor:.0f}x or add momentum",
        {
            "median_update_ratio_at_base_rate": _round(ratio),
            "median_update_ratio": _round(measured),
            "loss_drop": _round(drop),
            "loss": _round(current),
            "initial_loss": _round(initial),
            "learning_rate": reference_learning_rate(history),
            "factor": _round(factor),
        },
        _now(history),
        fix=_lr_fix(history, 1.0 / factor),
    )


@_shared_measurement
def _window_progress(history: History, thresholds: Thresholds) -> tuple[float, float, float] | None:
    """(loss drop over the latest window, current loss, initial loss), once a full window
    past warmup has been recorded."""
    now = _now(history)
    start = now - thresholds.window_steps
    trend = _trend(history)
    initial = _initial_loss(history)
    if start < thresholds.warmup_steps or initial is None or initial <= 0:
        return None
    before = trend.last_finite(before=start + 1)
    recent = trend.finite_since(start + 1)
    if math.isnan(before) or not recent:
        return None
    return before - recent[-1], recent[-1], initial


def _spaced_probes(series: Series, thresholds: Thresholds) -> list[float]:
    """The latest finite values after warmup, at least window/probes steps apart, in order."""
    spacing = thresholds.window_steps / thresholds.oscillation_probes
    steps, values = series.steps, series.values
    picked: list[float] = []
    index = len(steps) - 1
    while index >= 0 and len(picked) < thresholds.oscillation_probes:
        step = steps[index]
        if step < thresholds.warmup_steps:
            break
        if math.isfinite(values[index]):
            picked.append(values[index])
            # Straight to the latest step at least `spacing` earlier: a watch probing
            # every step would otherwise walk the whole window.
            index = bisect.bisect_right(steps, step - spacing, 0, index) - 1
        else:
            index -= 1
    return picked[::-1]


def detect_oscillation(history: History, thresholds: Thresholds) -> Diagnosis | None:
    """The monitoring loss swings up and down by large amounts without net progress.

    Over the last ``oscillation_probes`` probes after warmup, taken at least
    ``window_steps / oscillation_probes`` steps apart (so that denser probing does not
    mistake minibatch noise for oscillation): the loss changes direction
    at more than ``oscillation_fraction`` of them, the median swing exceeds
    ``oscillation_swing`` of the loss level (levels below ``loss_floor`` of the initial
    loss count as that floor), the second half of the window is no better than the first,
    and the loss is still high (median at least ``oscillation_level`` of the initial
    loss: a converged run fluctuating near zero is not oscillating).

    Example:
        >>> from gradwise.monitor import History, Series, Thresholds, detect_oscillation
        >>> history = History(initial_loss=2.3)
        >>> steps = list(range(50, 276, 25))
        >>> history.monitor_loss = Series(steps, [1.0, 1.6] * 5)
        >>> detect_oscillation(history, Thresholds()).kind.name
        'OSCILLATION'
    """
    initial = _initial_loss(history)
    values = _spaced_probes(history.monitor_loss, thresholds)
    if initial is None or len(values) < max(thresholds.oscillation_probes, 4):
        return None
    changes = [b - a for a, b in zip(values, values[1:], strict=False)]
    flips = sum(1 for a, b in zip(changes, changes[1:], strict=False) if a * b < 0)
    fraction = flips / (len(changes) - 1)
    floor = thresholds.loss_floor * initial
    swing = statistics.median(
        abs(change) / max(abs(level), floor) for change, level in zip(changes, values, strict=False)
    )
    half = len(values) // 2
    progress = min(values[:half]) - min(values[half:])
    if (
        fraction <= thresholds.oscillation_fraction
        or swing <= thresholds.oscillation_swing
        or progress > thresholds.plateau_improvement * min(values[:half])
        or statistics.median(values) < thresholds.oscillation_level * initial
    ):
        return None
    return _diagnosis(
        Finding.OSCILLATION,
        f"the monitoring loss changed direction at {fraction:.0%} of the last {len(values)} "
        f"probes, by a median {swing:.0%} per probe, without net progress",
        "lower the learning rate ~3x or add momentum",
        {
            "direction_changes": _round(fraction, 3),
            "median_swing": _round(swing, 3),
            "probes": len(values),
            "losses": [_round(v) for v in values],
        },
        _now(history),
        fix=_lr_fix(history, 3.0),
    )


# -- progress ----------------------------------------------------------------------------


@_shared_measurement
def _at_chance(history: History, thresholds: Thresholds) -> bool | None:
    """Whether the held-out (else monitoring) performance never left chance; None: unknown."""
    now = _now(history)
    start = thresholds.warmup_steps
    accuracy = history.val_accuracy if len(history.val_accuracy) else history.monitor_accuracy
    if history.chance_accuracy is not None and accuracy.count_since(start) >= 2:
        best = accuracy.finite_max(since=start)  # NaN when none is finite
        return best <= history.chance_accuracy + thresholds.chance_margin
    loss = history.val_loss if len(history.val_loss) else _trend(history)
    if history.chance_loss is not None and loss.count_since(start) >= 2 and now > start:
        best = loss.finite_min(since=start)
        return best >= (1 - thresholds.chance_margin) * history.chance_loss
    return None


def detect_plateau(history: History, thresholds: Thresholds) -> Diagnosis | None:
    """The loss stopped improving at a high level (PLATEAU), or never left chance
    (NO_LEARNING_SIGNAL).

    After a full window past warmup, the monitoring loss (else the smoothed training loss)
    improved by less than ``plateau_improvement`` over the window and is above
    ``plateau_level`` of the initial loss. It is NO_LEARNING_SIGNAL when the validation
    (else monitoring) accuracy never rose ``chance_margin`` above the majority-class rate
    (without accuracies: the loss never fell ``chance_margin`` below the chance loss).

    Example:
        >>> from gradwise.monitor import History, Series, Thresholds, detect_plateau
        >>> history = History(initial_loss=2.3, chance_loss=2.3026, chance_accuracy=0.1)
        >>> steps = list(range(0, 401, 50))
        >>> history.monitor_loss = Series(steps, [2.3] + [1.5] * 8)
        >>> detect_plateau(history, Thresholds()).kind.name
        'PLATEAU'
        >>> history.monitor_loss = Series(steps, [2.3] * 9)
        >>> history.val_accuracy = Series(steps, [0.1] * 9)
        >>> detect_plateau(history, Thresholds()).kind.name
        'NO_LEARNING_SIGNAL'
    """
    progress = _window_progress(history, thresholds)
    if progress is None:
        return None
    ratio = median_update_ratio_at_base_rate(history, thresholds)
    if ratio is not None and ratio < thresholds.update_ratio_low:
        return None  # too small a learning rate, not a plateau
    if loss_rise(history, thresholds) is not None:
        return None  # stuck after a divergence: the learning rate, not a plateau
    now = _now(history)
    trend = _trend(history)
    start = now - thresholds.window_steps
    before = trend.finite_min(before=start + 1)
    recent = min(trend.finite_since(start + 1))
    initial = progress[2]
    improvement = (before - recent) / before if before > 0 else 0.0
    at_chance = _at_chance(history, thresholds)
    if at_chance:
        return _no_signal(history, now)
    if (
        improvement >= thresholds.plateau_improvement
        or recent <= thresholds.plateau_level * initial
    ):
        return None
    return _diagnosis(
        Finding.PLATEAU,
        f"the loss improved by {improvement:.1%} over the last {thresholds.window_steps} "
        f"steps and is still {recent:.3g} ({recent / initial:.0%} of the initial {initial:.3g})",
        REMEDIES[Finding.PLATEAU],
        {
            "improvement": _round(improvement),
            "loss": _round(recent),
            "initial_loss": _round(initial),
        },
        now,
    )


def _no_signal(history: History, now: int) -> Diagnosis:
    evidence = {
        "chance_loss": _round(history.chance_loss),
        "chance_accuracy": _round(history.chance_accuracy),
        "best_val_accuracy": _round(history.val_accuracy.finite_max()),
        "best_monitor_loss": _round(history.monitor_loss.finite_min()),
    }
    return _diagnosis(
        Finding.NO_LEARNING_SIGNAL,
        f"after {now} steps the model still performs at chance "
        f"(chance loss {history.chance_loss or math.nan:.3g}, majority-class accuracy "
        f"{history.chance_accuracy or math.nan:.2f})",
        REMEDIES[Finding.NO_LEARNING_SIGNAL],
        evidence,
        now,
        severity="error",
    )


# -- gradients -------------------------------------------------------------------------------


def _first_last(history: History) -> tuple[str, str] | None:
    names = list(history.layer_grad_norm)
    return (names[0], names[-1]) if len(names) >= 2 else None


def detect_vanishing_gradients(history: History, thresholds: Thresholds) -> Diagnosis | None:
    """First-layer gradient norm < 1e-3 x the last layer's and < 1e-4 (AutoTrainer).

    Example:
        >>> from gradwise.monitor import History, Series, Thresholds
        >>> from gradwise.monitor import detect_vanishing_gradients
        >>> history = History()
        >>> history.layer_grad_norm["0.weight"] = Series([10, 20], [1e-9, 1e-9])
        >>> history.layer_grad_norm["40.weight"] = Series([10, 20], [0.1, 0.1])
        >>> history.first_last_grad_ratio = Series([10, 20], [1e-8, 1e-8])
        >>> detect_vanishing_gradients(history, Thresholds()).evidence["first_layer"]
        '0.weight'
    """
    layers = _first_last(history)
    if layers is None:
        return None
    count = thresholds.sustained_checks
    ratio_low = _sustained(
        history.first_last_grad_ratio, thresholds, lambda v: v < thresholds.vanishing_ratio
    )
    first = history.layer_grad_norm[layers[0]]
    norm_low = _sustained(first, thresholds, lambda v: v < thresholds.vanishing_norm)
    if not (ratio_low and norm_low):
        return None
    ratio = history.first_last_grad_ratio.values[-1]
    return _diagnosis(
        Finding.VANISHING_GRADIENTS,
        f"the first layer's gradient norm is {first.values[-1]:.2g}, {ratio:.2g} times the "
        f"last layer's, over the last {count} checks",
        REMEDIES[Finding.VANISHING_GRADIENTS],
        {
            "first_layer": layers[0],
            "last_layer": layers[1],
            "first_grad_norm": _round(first.values[-1]),
            "first_last_ratio": _round(ratio),
        },
        _now(history),
        severity="error",
    )


def gradient_spike(history: History, thresholds: Thresholds) -> tuple[float, float] | None:
    """(latest, median) global gradient norm when the latest exceeds ``spike_factor``
    times the median of the previous ``window_steps`` steps (at least 10 measurements),
    and every norm measured before it.

    The second condition keeps converged runs quiet: cross-entropy on data the model
    separates falls to a loss near 0, where the norm is ~1e-3 at most steps, and a batch
    holding the hardest samples brings it back to its size while the run learned
    (healthy runs on moons, Adam 1e-3 and AdamW 3e-3 or SGD 0.05 + momentum, batch 32:
    0.3-0.6 against medians of 2e-3 to 4e-3, 100-2000x, but below step 1's 1.27).
    A corrupted batch goes far above both (825 after at most 1.06).
    """
    norms = history.grad_norm
    latest, step = norms.last, norms.last_step
    if latest is None or step is None or not math.isfinite(latest):
        return None
    previous = _finite(norms.between(step - thresholds.window_steps, step))
    if len(previous) < 10:
        return None
    typical = statistics.median(previous)
    if not (typical > 0 and latest > thresholds.spike_factor * typical):
        return None
    return (latest, typical) if latest > norms.finite_max(before=step) else None


def detect_exploding_gradients(history: History, thresholds: Thresholds) -> Diagnosis | None:
    """First/last gradient-norm ratio > 70 (AutoTrainer), or a spike of the global norm.

    Example:
        >>> from gradwise.monitor import History, Series, Thresholds
        >>> from gradwise.monitor import detect_exploding_gradients
        >>> history = History()
        >>> history.grad_norm = Series(list(range(10, 210, 10)), [1.0] * 19 + [500.0])
        >>> detect_exploding_gradients(history, Thresholds()).evidence
        {'grad_norm': 500.0, 'median_grad_norm': 1.0}
    """
    layers = _first_last(history)
    ratio_high = layers is not None and _sustained(
        history.first_last_grad_ratio, thresholds, lambda v: v > thresholds.exploding_ratio
    )
    spike = gradient_spike(history, thresholds)
    if not ratio_high and spike is None:
        return None
    evidence: dict[str, Any] = {}
    parts = []
    if ratio_high and layers is not None:
        ratio = history.first_last_grad_ratio.values[-1]
        evidence.update(first_layer=layers[0], last_layer=layers[1], first_last_ratio=_round(ratio))
        parts.append(f"the first layer's gradient norm is {ratio:.3g} times the last layer's")
    if spike is not None:
        evidence.update(grad_norm=_round(spike[0]), median_grad_norm=_round(spike[1]))
        parts.append(f"the gradient norm jumped to {spike[0]:.3g} (median {spike[1]:.3g})")
    return _diagnosis(
        Finding.EXPLODING_GRADIENTS,
        " and ".join(parts),
        REMEDIES[Finding.EXPLODING_GRADIENTS],
        evidence,
        _now(history),
    )


def detect_nonfinite(history: History, thresholds: Thresholds) -> Diagnosis | None:
    """A NaN or infinite loss or gradient: the first step, and where it first appeared.

    Example:
        >>> from gradwise.monitor import History, Thresholds, detect_nonfinite
        >>> history = History()
        >>> history.nonfinite = {"step": 7, "source": "loss", "where": "parameter",
        ...                      "layer": "3.weight"}
        >>> detect_nonfinite(history, Thresholds()).summary
        'the loss became NaN or infinite at step 7; first non-finite parameter: 3.weight'
    """
    event = history.nonfinite
    if event is None:
        return None
    where = ""
    if event.get("layer") is not None:
        where = f"; first non-finite {event['where']}: {event['layer']}"
    last = event.get("last_finite_loss")
    history_text = (
        f" (last finite loss {last:.4g} at step {event['last_finite_step']})"
        if last is not None
        else ""
    )
    return _diagnosis(
        Finding.NONFINITE_LOSS,
        f"the {event['source']} became NaN or infinite at step {event['step']}"
        f"{history_text}{where}",
        "lower the learning rate ~10x and clip gradients; check the loss for log(0) or "
        "division by zero",
        dict(event),
        int(event["step"]),
        severity="error",
        fix=_lr_fix(history, 10.0),
    )


# -- units ---------------------------------------------------------------------------------


def _layers_over(
    table: dict[str, Series], limit: float, thresholds: Thresholds
) -> dict[str, float]:
    return {
        name: series.values[-1]
        for name, series in table.items()
        if _sustained(series, thresholds, lambda v: v > limit)
    }


def detect_dead_units(history: History, thresholds: Thresholds) -> Diagnosis | None:
    """A ReLU layer where most units never fire on the monitoring subset, at consecutive
    probes.

    Example:
        >>> from gradwise.monitor import History, Series, Thresholds, detect_dead_units
        >>> history = History()
        >>> history.dead_fraction["1"] = Series([0, 50], [0.9, 0.95])
        >>> detect_dead_units(history, Thresholds()).evidence
        {'layer': '1', 'dead_fraction': {'1': 0.95}}
    """
    layers = _layers_over(history.dead_fraction, thresholds.dead_fraction, thresholds)
    if not layers:
        return None
    worst = max(layers, key=layers.__getitem__)
    return _diagnosis(
        Finding.DEAD_UNITS,
        f"{layers[worst]:.0%} of the units after layer {worst} never activate on the "
        f"monitoring subset ({len(layers)} layer(s) above {thresholds.dead_fraction:.0%})",
        REMEDIES[Finding.DEAD_UNITS],
        {"layer": worst, "dead_fraction": {k: _round(v, 3) for k, v in layers.items()}},
        _now(history),
        severity="error" if layers[worst] >= 0.9 else "warning",
    )


def detect_saturated_units(history: History, thresholds: Thresholds) -> Diagnosis | None:
    """A tanh/sigmoid layer where most units sit in the flat region, at consecutive probes.

    Example:
        >>> from gradwise.monitor import History, Series, Thresholds
        >>> from gradwise.monitor import detect_saturated_units
        >>> history = History()
        >>> history.saturated_fraction["3"] = Series([0, 50], [0.8, 0.7])
        >>> detect_saturated_units(history, Thresholds()).kind.name
        'SATURATED_UNITS'
    """
    layers = _layers_over(history.saturated_fraction, thresholds.saturated_fraction, thresholds)
    if not layers:
        return None
    worst = max(layers, key=layers.__getitem__)
    return _diagnosis(
        Finding.SATURATED_UNITS,
        f"{layers[worst]:.0%} of the units after layer {worst} are saturated on most "
        f"monitoring samples ({len(layers)} layer(s) above {thresholds.saturated_fraction:.0%})",
        REMEDIES[Finding.SATURATED_UNITS],
        {"layer": worst, "saturated_fraction": {k: _round(v, 3) for k, v in layers.items()}},
        _now(history),
    )


# -- generalization ------------------------------------------------------------------------


def _measured(history: History) -> dict[str, Any]:
    """The latest training and validation loss and accuracy, and the step of each pair.

    The training numbers come from the train/validation pair (the Trainer's epoch metrics
    or the watch's validation probe), else from the monitoring subset of the training data.
    """
    train_loss = history.train_loss if len(history.train_loss) else history.monitor_loss
    train_acc = history.train_accuracy if len(history.train_accuracy) else history.monitor_accuracy
    return {
        "train_loss": _round(train_loss.last),
        "train_accuracy": _round(train_acc.last),
        "train_step": train_loss.last_step,
        "val_loss": _round(history.val_loss.last),
        "val_accuracy": _round(history.val_accuracy.last),
        "val_step": history.val_loss.last_step,
    }


def _numbers_text(numbers: dict[str, Any]) -> str:
    """The numbers as text: "training loss 1.68 / accuracy 0.324, validation ... at step 600"."""
    parts = []
    for split, name in (("train", "training"), ("val", "validation")):
        loss, accuracy = numbers[f"{split}_loss"], numbers[f"{split}_accuracy"]
        if loss is None:
            continue
        text = f"{name} loss {loss:.3g}"
        parts.append(text + (f" / accuracy {accuracy:.3f}" if accuracy is not None else ""))
    step = numbers["val_step"] if numbers["val_step"] is not None else numbers["train_step"]
    return ", ".join(parts) + (f" at step {step}" if step is not None else "")


def detect_overfitting(history: History, thresholds: Thresholds) -> Diagnosis | None:
    """Train - validation accuracy >= 0.1 while the validation loss rises and the training
    loss falls: high validation error with low training error (Ng's flowchart: more data,
    regularization).

    Example:
        >>> from gradwise.monitor import History, Series, Thresholds, detect_overfitting
        >>> history = History()
        >>> steps = [100, 200, 300, 400]
        >>> history.train_loss = Series(steps, [0.5, 0.2, 0.1, 0.05])
        >>> history.train_accuracy = Series(steps, [0.9, 0.97, 0.99, 1.0])
        >>> history.val_loss = Series(steps, [0.6, 0.55, 0.7, 0.8])
        >>> history.val_accuracy = Series(steps, [0.85, 0.86, 0.85, 0.84])
        >>> finding = detect_overfitting(history, Thresholds())
        >>> finding.evidence["gap"], finding.evidence["train_loss"], finding.evidence["val_loss"]
        (0.16, 0.05, 0.8)
    """
    train_acc, val_acc = history.train_accuracy.last, history.val_accuracy.last
    val, train = history.val_loss, history.train_loss
    if train_acc is None or val_acc is None or len(val) < 3 or len(train) < 3:
        return None
    gap = train_acc - val_acc
    values = val.values
    best = val.finite_min()
    if math.isnan(best):
        return None
    best_step = val.steps[values.index(best)]
    rising = _sustained(val, thresholds, lambda v: v > best * (1 + thresholds.validation_rise))
    train_then = train.between(best_step, best_step + 1)
    falling = bool(train_then) and train.values[-1] < train_then[0]
    if gap < thresholds.overfitting_gap or not rising or not falling:
        return None
    numbers = _measured(history)
    return _diagnosis(
        Finding.OVERFITTING,
        f"{_numbers_text(numbers)} (accuracy gap {gap:.3f}); the validation loss rose from "
        f"{best:.3g} (step {best_step}) to {values[-1]:.3g} while the training loss fell "
        f"from {train_then[0]:.3g} to {train.values[-1]:.3g}",
        REMEDIES[Finding.OVERFITTING],
        {
            **numbers,
            "gap": _round(gap),
            "best_val_loss": _round(best),
            "best_val_step": best_step,
            "train_loss_at_best_val": _round(train_then[0]),
        },
        _now(history),
    )


def _training_error_high(
    numbers: dict[str, Any], reference: float, thresholds: Thresholds
) -> tuple[bool, str] | None:
    """Whether the training error is high, and against what; None: cannot be judged.

    Against the user's target when one applies; else the training loss must stay above
    ``underfitting_level`` of the chance (or initial) loss while the train-validation gap
    is below ``underfitting_gap`` (no held-out numbers: not judged).
    """
    loss, accuracy = numbers["train_loss"], numbers["train_accuracy"]
    if thresholds.target_accuracy is not None and accuracy is not None:
        target = thresholds.target_accuracy
        return accuracy < target, f"below the target accuracy {target:.3g}"
    if thresholds.target_loss is not None:
        return loss > thresholds.target_loss, f"above the target loss {thresholds.target_loss:.3g}"
    val_loss, val_accuracy = numbers["val_loss"], numbers["val_accuracy"]
    if accuracy is not None and val_accuracy is not None:
        gap = accuracy - val_accuracy
    elif val_loss is not None:
        gap = (val_loss - loss) / reference
    else:
        return None
    level = loss / reference
    high = level > thresholds.underfitting_level and gap < thresholds.underfitting_gap
    return high, f"{level:.0%} of the chance loss {reference:.3g}, with no generalization gap"


def detect_underfitting(history: History, thresholds: Thresholds) -> Diagnosis | None:
    """High training error on a flattened training curve: the model underfits (high bias).

    Ng's bias-variance flowchart asks first whether the training error is high: if so,
    use a bigger model, train longer, or optimize better; only then whether the
    validation error is high (:func:`detect_overfitting`). "High" is judged against
    ``target_accuracy`` or ``target_loss`` when one is set (the flowchart's human-level
    reference). Without one, the best achievable training error is unknown, so the
    detector asks for the symptoms of a model that cannot fit its own training data:
    the training loss :math:`L_\\text{train}` stays above ``underfitting_level`` times the
    chance loss :math:`L_\\text{chance}` (:math:`\\ln C` for C classes with
    cross-entropy), while the model does about as well on held-out data (train -
    validation accuracy below ``underfitting_gap``). In both cases the training curve must
    have flattened: over the last ``window_steps`` steps (after warmup) the loss on the
    monitoring subset of the training data improved by less than
    ``underfitting_improvement`` of its value. Runs whose updates are too small
    (LEARNING_RATE_TOO_LOW), that diverged, or that never left chance
    (NO_LEARNING_SIGNAL) are left to those detectors.

    Example:
        >>> from gradwise.monitor import History, Series, Thresholds, detect_underfitting
        >>> history = History(initial_loss=2.3, chance_loss=2.3026, chance_accuracy=0.1)
        >>> steps = list(range(0, 601, 100))
        >>> history.monitor_loss = Series(steps, [2.3, 1.9, 1.8, 1.75, 1.72, 1.71, 1.70])
        >>> history.train_loss = Series(steps[1:], [1.9, 1.8, 1.75, 1.72, 1.71, 1.70])
        >>> history.train_accuracy = Series(steps[1:], [0.25, 0.28, 0.3, 0.31, 0.32, 0.32])
        >>> history.val_loss = Series(steps[1:], [1.88, 1.79, 1.74, 1.71, 1.70, 1.69])
        >>> history.val_accuracy = Series(steps[1:], [0.26, 0.29, 0.3, 0.32, 0.33, 0.33])
        >>> finding = detect_underfitting(history, Thresholds())
        >>> finding.kind.name, finding.evidence["train_accuracy"], finding.evidence["val_accuracy"]
        ('UNDERFITTING', 0.32, 0.33)
        >>> detect_underfitting(history, Thresholds(target_accuracy=0.3)) is None
        True

    Reference:
        A. Ng, "Nuts and bolts of building applications using deep learning" (NIPS 2016
        tutorial): the applied bias-variance flowchart.
    """
    progress = _window_progress(history, thresholds)
    if progress is None:  # (before the ratios, as in detect_learning_rate_too_low)
        return None
    ratio = median_update_ratio_at_base_rate(history, thresholds)
    if ratio is not None and ratio < thresholds.update_ratio_low:
        return None
    if loss_rise(history, thresholds) is not None or _at_chance(history, thresholds):
        return None
    numbers = _measured(history)
    reference = history.chance_loss or progress[2]
    judged = None if numbers["train_loss"] is None else _training_error_high(
        numbers, reference, thresholds
    )  # fmt: skip
    if judged is None or not judged[0]:
        return None
    now = _now(history)
    trend = _trend(history)
    start = now - thresholds.window_steps
    before = trend.finite_min(before=start + 1)
    recent = min(trend.finite_since(start + 1))
    improvement = (before - recent) / before if before > 0 else 0.0
    if improvement >= thresholds.underfitting_improvement:
        return None
    return _diagnosis(
        Finding.UNDERFITTING,
        f"the training error is high: {_numbers_text(numbers)} ({judged[1]}); the training "
        f"loss improved by only {improvement * 100:.3g}% over the last {thresholds.window_steps} "
        "steps",
        REMEDIES[Finding.UNDERFITTING],
        {
            **numbers,
            "chance_loss": _round(history.chance_loss),
            "loss_level": _round(numbers["train_loss"] / reference, 3),
            "improvement": _round(improvement, 3),
            "window": [start, now],
            "target_accuracy": thresholds.target_accuracy,
            "target_loss": thresholds.target_loss,
        },
        now,
    )


#: Every detector a watch runs, in order.
DETECTORS: tuple[Detector, ...] = (
    detect_nonfinite,
    detect_learning_rate_too_high,
    detect_learning_rate_too_low,
    detect_oscillation,
    detect_plateau,
    detect_vanishing_gradients,
    detect_exploding_gradients,
    detect_dead_units,
    detect_saturated_units,
    detect_overfitting,
    detect_underfitting,
)
