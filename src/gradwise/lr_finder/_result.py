"""The range test's numbers: the smoothed curve, the two suggestion rules, and the verdict."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, final

import numpy as np
from numpy.typing import NDArray

from gradwise._validation import HALF_OPEN_UNIT_INTERVAL, Interval, Satisfies, check

if TYPE_CHECKING:
    from gradwise.report import Table

Array = NDArray[np.float64]
Rule = Literal["steepest", "min_loss"]
DIVERGE_FACTOR = Interval(low=1.0, low_closed=False, finite=True)
_FLOATS = "a sequence of floats"


NO_FALL = 1e-3  # a smaller fall of the smoothed loss, relative to its first value, is none


def smooth_losses(losses: Sequence[float], smoothing: float = 0.98) -> list[float]:
    r"""The exponentially smoothed, bias-corrected losses (Adam's debiasing, fastai's form).

    .. math::

        a_i = \beta a_{i-1} + (1 - \beta) \ell_i, \quad a_{-1} = 0, \qquad
        s_i = a_i / (1 - \beta^{i + 1})

    so every :math:`s_i` is a weighted mean of :math:`\ell_0..\ell_i` (weights summing
    to 1) and :math:`s_0 = \ell_0`. ``smoothing`` is :math:`\beta`, the weight of the
    past: torch-lr-finder's ``smooth_f`` is :math:`1 - \beta` and it starts from
    :math:`s_0 = \ell_0` without debiasing (see docs/lr_finder.md). A non-finite loss
    makes every later smoothed value non-finite.

    Args:
        losses: the raw losses, one per step.
        smoothing: :math:`\beta` in [0, 1); 0 returns the losses unchanged.

    Example:
        >>> from gradwise.lr_finder import smooth_losses
        >>> [round(s, 4) for s in smooth_losses([1.0, 0.0, 0.0], smoothing=0.5)]
        [1.0, 0.3333, 0.1429]
    """
    check("losses", "smooth_losses", losses, Satisfies(_is_float_sequence, _FLOATS))
    check("smoothing", "smooth_losses", smoothing, HALF_OPEN_UNIT_INTERVAL)
    average = MovingAverage(smoothing)
    return [average.add(loss) for loss in losses]


@final
class MovingAverage:
    """The :func:`smooth_losses` average one loss at a time: :meth:`add` returns :math:`s_i`.

    The one implementation of the formula (:func:`smooth_losses` is a loop over it), so a
    sweep that smooths as it goes gets the same floats as a recorded curve smoothed later.
    ``smoothing`` is :math:`\\beta`, in [0, 1), checked by the caller.
    """

    def __init__(self, smoothing: float) -> None:
        self._beta = float(smoothing)
        self._average = 0.0
        self._count = 0

    def add(self, loss: float) -> float:
        """Fold ``loss`` into the average; the bias-corrected value :math:`s_i`."""
        beta = self._beta
        self._average = beta * self._average + (1.0 - beta) * float(loss)
        self._count += 1
        return self._average / (1.0 - beta**self._count)


@final
@dataclass(frozen=True)
class LRFinderResult:
    """What an LR range test measured and what it suggests.

    Attributes:
        lrs: the learning rate of each step taken.
        losses: the training loss of each step's minibatch, before its update.
        smoothed: :func:`smooth_losses` of ``losses``.
        suggestion: the suggested learning rate, ``steepest_lr`` or ``min_loss_lr``.
        suggested_by: which rule gave it: ``"steepest"`` or ``"min_loss"``.
        steepest_lr: the lr where the smoothed loss falls fastest per decade of lr: the
            centre of the fall along the first stretch before the minimum where
            :math:`d s / d \\log_{10} \\mathrm{lr}` is at least half as steep as its most
            negative value (see :func:`analyze_sweep`).
        min_loss_lr: the min-loss/10 rule: the lr of the smallest smoothed loss, over 10.
        lr_at_min_loss: the lr of the smallest smoothed loss.
        diverged_at: the step whose smoothed loss passed ``diverge_factor`` times the best
            (or whose loss was not finite), where the sweep stopped; None if it ran out.
        rose_at: the first step before ``diverged_at`` whose smoothed loss rose to
            ``rise_factor`` times the best so far: both rules look only at the steps before
            it (None if there was no such rise).
        planned_steps: the steps the sweep was asked for.
        smoothing: the :math:`\\beta` of ``smoothed`` (:func:`default_smoothing` unless given).
        reasoning: the sentences that explain the suggestion, with the measured numbers.
        sweeps: each sweep's raw losses, when :func:`lr_find` averaged several (``losses``
            is then their mean over the steps every sweep reached); empty otherwise.
        seeds: the seed of each of those sweeps.

    Example:
        >>> from gradwise.lr_finder import analyze_sweep
        >>> lrs = [10 ** (-4 + k / 10) for k in range(41)]
        >>> losses = [2.0 / (1.0 + 100.0 * lr) for lr in lrs[:30]] + [9.0] * 11
        >>> result = analyze_sweep(lrs, losses, smoothing=0.0)
        >>> result.suggested_by, f"{result.suggestion:.3g}", result.diverged_at
        ('steepest', '0.01', 30)
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    suggestion: float
    suggested_by: Rule
    steepest_lr: float
    min_loss_lr: float
    lr_at_min_loss: float
    diverged_at: int | None
    planned_steps: int
    smoothing: float
    reasoning: str
    rose_at: int | None = None
    sweeps: tuple[tuple[float, ...], ...] = ()
    seeds: tuple[int, ...] = ()

    def to_table(self) -> Table:
        """The two rules side by side, the suggested one marked (one rendering path).

        The title carries the sweep; the rows are ``steepest``, ``min loss / 10`` and
        ``min loss`` with their lr and smoothed loss.
        """
        from gradwise.report import Table

        def loss_at(lr: float) -> float:
            return self.smoothed[int(np.argmin(np.abs(np.log(np.asarray(self.lrs) / lr))))]

        rows: list[list[str | float | bool | None]] = [
            ["steepest descent", self.steepest_lr, loss_at(self.steepest_lr),
             self.suggested_by == "steepest"],
            ["min loss / 10", self.min_loss_lr, loss_at(self.min_loss_lr),
             self.suggested_by == "min_loss"],
            ["min loss (reference)", self.lr_at_min_loss, loss_at(self.lr_at_min_loss), None],
        ]  # fmt: skip
        stop = (
            f"stopped at step {self.diverged_at} (lr {self.lrs[self.diverged_at]:.3g})"
            if self.diverged_at is not None
            else "no divergence"
        )
        if self.rose_at is not None:
            stop += f", analyzed up to the first rise at lr {self.lrs[self.rose_at]:.3g}"
        averaged = f"mean of {len(self.sweeps)} sweeps, " if len(self.sweeps) > 1 else ""
        title = (
            f"LR range test: {averaged}{len(self.lrs)} of {self.planned_steps} steps, lr "
            f"{self.lrs[0]:.3g} to {self.lrs[-1]:.3g}, smoothing {self.smoothing:.3g}, {stop}"
        )
        return Table(title, ["rule", "lr", "smoothed loss", "suggested"], rows)

    def plot_png(self) -> bytes:
        """The raw and smoothed loss against the lr (log axis), both rules marked: PNG bytes."""
        from gradwise.lr_finder._plot import range_test_png

        return range_test_png(self)


def default_smoothing(lrs: Sequence[float]) -> float:
    r"""The smoothing :math:`\beta` for a sweep over ``lrs``: an averaging window of half a decade.

    .. math::

        \beta = \max\Bigl(0,\ 1 - \frac{2}{d}\Bigr), \qquad
        d = \frac{n - 1}{\log_{10}(\mathrm{lr}_{n-1} / \mathrm{lr}_0)}
        \text{ steps per decade}

    The moving average's window :math:`1 / (1 - \beta)` and its delay
    :math:`\beta / (1 - \beta)` (in steps) then span about half a decade of lr whatever
    the grid: more steps per decade average more losses instead of smearing the curve
    over more decades. A fixed :math:`\beta = 0.98` (fastai's) spans 50 steps, four of
    the eight decades of the default 100-step sweep, which flattens and shifts the descent
    (docs/lr_finder.md has the measurements).

    Args:
        lrs: the sweep's learning rates, increasing, all > 0 (at least two).

    Example:
        >>> from gradwise.lr_finder import default_smoothing, exponential_lrs
        >>> round(default_smoothing(exponential_lrs(1e-7, 10.0, 100)), 4)  # 12.4 steps/decade
        0.8384
    """
    check(
        "lrs", "default_smoothing", lrs, Satisfies(_is_increasing_positive, "increasing floats > 0")
    )
    steps_per_decade = (len(lrs) - 1) / math.log10(float(lrs[-1]) / float(lrs[0]))
    return max(0.0, 1.0 - 2.0 / steps_per_decade)


def analyze_sweep(
    lrs: Sequence[float],
    losses: Sequence[float],
    *,
    smoothing: float | None = None,
    diverge_factor: float = 4.0,
    planned_steps: int | None = None,
    rise_factor: float = 1.5,
    stopped_at: int | None = None,
) -> LRFinderResult:
    """Smooth a recorded sweep, find where it diverged, and suggest a learning rate.

    :func:`lr_find` calls this on what it measured; call it directly to re-analyze a
    sweep with other settings, or someone else's recorded sweep. The curve is cut at the
    first step whose smoothed loss exceeds ``diverge_factor`` times the best smoothed loss
    so far (or whose loss is not finite; for a loss whose best is <= 0, "times the best"
    becomes a rise by ``diverge_factor - 1`` times its scale, see :func:`rose`), and the
    analysis ends earlier, at the first step whose smoothed loss rises to ``rise_factor``
    times the best so far: the first sign of instability. Past such a rise the loss often
    falls again, sometimes faster (the sweep keeps training at ever larger rates and the
    progress made before shows up late); taking the descent from there made the suggestions
    on circles with SGD + momentum spread 13x over 32 seeds (docs/lr_finder.md). Both rules
    look only at the steps before the cut.

    * steepest descent: where the smoothed loss falls fastest against :math:`\\log_{10}`
      lr, searched from step ``n // 10`` (the debiased average of a handful of losses is
      still noisy) up to the minimum. The slope at each step is a least-squares slope over
      a window of about a tenth of the sweep, and the steepest point is located as the
      centre of the fall (in :math:`\\log` lr) along the first stretch where the slope is
      at least half as steep as the most negative one: the mean of its log lrs weighted
      by how fast the loss falls there. Along a long, evenly falling valley the argmin of
      the slope jumps with the noise from one end to the other, the centre does not, and
      on a single sharp drop the two coincide. The first stretch, because the sweep
      trains as it goes: a second, steeper fall after a pause is mostly the progress made
      at the lrs before it.
    * min-loss/10: the lr of the smallest smoothed loss divided by 10 (Smith 2017: the
      loss is still falling an order of magnitude before it turns).

    The suggestion is the steepest-descent lr when it lies within a decade below the
    min-loss/10 lr or above it but under the minimum (the two rules agree that the loss
    falls fast there), and the min-loss/10 lr otherwise: a steepest point further down
    is a dip in the noise of the flat start, not the descent. A curve whose smoothed loss
    never falls by 0.1% of its first value gets the min-loss/10 lr only as a fallback,
    and a reasoning that says no learning rate trained the model; a suggestion below the
    swept range is flagged as untested. ``reasoning`` says which case applied, with the
    numbers.

    Args:
        lrs: the learning rates, increasing, all > 0 (a list, tuple or 1-D numpy array).
        losses: the loss at each lr (the sweep may be shorter than ``lrs``: extra lrs are
            ignored; a list, tuple or 1-D numpy array).
        smoothing: :math:`\\beta` of :func:`smooth_losses`, in [0, 1); default
            :func:`default_smoothing` of ``lrs`` (a window of half a decade).
        diverge_factor: the stop threshold, > 1.
        planned_steps: the steps the sweep was asked for (for the report), at least
            ``len(losses)``; default ``len(lrs)``.
        rise_factor: where the analysis ends, > 1 (a value at or above ``diverge_factor``
            turns the cut off).
        stopped_at: a step known to have diverged, if the curve does not show it itself
            (:func:`lr_find` passes the step where its first sweep to diverge stopped: the
            mean of several sweeps may stay under ``diverge_factor`` there).

    Example:
        >>> from gradwise.lr_finder import analyze_sweep
        >>> lrs = [10 ** (-3 + k / 10) for k in range(31)]
        >>> losses = [1.0 / (1.0 + 10.0 * lr) + (lr > 0.5) * 100.0 for lr in lrs]
        >>> result = analyze_sweep(lrs, losses, smoothing=0.0)
        >>> f"{result.steepest_lr:.3g}", f"{result.lr_at_min_loss:.3g}", result.diverged_at
        ('0.1', '0.398', 27)

    Reference:
        Smith, "Cyclical learning rates for training neural networks", WACV 2017.
    """
    owner = "analyze_sweep"
    check("lrs", owner, lrs, Satisfies(_is_increasing_positive, "increasing floats > 0"))
    check("losses", owner, losses, Satisfies(_is_float_sequence, _FLOATS))
    if smoothing is None:
        smoothing = default_smoothing(lrs)
    check("smoothing", owner, smoothing, HALF_OPEN_UNIT_INTERVAL)
    check("diverge_factor", owner, diverge_factor, DIVERGE_FACTOR)
    check("rise_factor", owner, rise_factor, DIVERGE_FACTOR)
    if stopped_at is not None:
        check("stopped_at", owner, stopped_at, Interval(low=0, high=len(losses) - 1, kind="int"))
    if not 1 <= len(losses) <= len(lrs):
        raise ValueError(
            f"The 'losses' parameter of {owner} must hold between 1 and {len(lrs)} "
            f"(len(lrs)) values. Got {len(losses)} instead."
        )
    if planned_steps is not None:
        check("planned_steps", owner, planned_steps, Interval(low=len(losses), kind="int"))
    grid = np.asarray(lrs, dtype=np.float64)[: len(losses)]
    raw = np.asarray(losses, dtype=np.float64)
    smoothed = np.asarray(smooth_losses(list(raw), smoothing), dtype=np.float64)
    diverged_at = _divergence(raw, smoothed, float(diverge_factor))
    if stopped_at is not None and (diverged_at is None or stopped_at < diverged_at):
        diverged_at = int(stopped_at)
    end = len(raw) if diverged_at is None else diverged_at
    rose_at = _first_rise(smoothed[:end], float(rise_factor))
    usable = max(end if rose_at is None else rose_at, 1)
    lowest = int(np.nanargmin(smoothed[:usable])) if np.isfinite(smoothed[:usable]).any() else 0
    steepest = _steepest(grid[:usable], smoothed[:usable], lowest, len(lrs) // 10)
    min_loss_lr = float(grid[lowest]) / 10.0
    steepest_lr = float(grid[steepest])
    # A fall by less than 0.1% of the first loss is no fall (a flat curve's rounding
    # noise would otherwise give it a "steepest descent").
    fell = bool(
        np.isfinite(smoothed[0]) and smoothed[0] - smoothed[lowest] > NO_FALL * abs(smoothed[0])
    )
    rule: Rule = (
        "steepest"
        if fell and min_loss_lr / 10.0 <= steepest_lr <= float(grid[lowest]) and steepest != lowest
        else "min_loss"
    )
    reasoning = _reasoning(grid, smoothed, lowest, steepest, diverged_at, rose_at, rule, fell)
    return LRFinderResult(
        lrs=tuple(float(v) for v in grid),
        losses=tuple(float(v) for v in raw),
        smoothed=tuple(float(v) for v in smoothed),
        suggestion=steepest_lr if rule == "steepest" else min_loss_lr,
        suggested_by=rule,
        steepest_lr=steepest_lr,
        min_loss_lr=min_loss_lr,
        lr_at_min_loss=float(grid[lowest]),
        diverged_at=diverged_at,
        planned_steps=len(lrs) if planned_steps is None else int(planned_steps),
        smoothing=float(smoothing),
        reasoning=reasoning,
        rose_at=rose_at,
    )


@final
class StopRule:
    """Whether each step of a sweep ends it, in O(1) a step: :meth:`diverged` smooths the
    step's loss in (:class:`MovingAverage`) and says whether the loss is not finite or the
    smoothed loss has risen past ``diverge_factor`` from the best so far (:func:`rose`;
    fastai's stop rule for positive losses).

    It keeps the first and the best smoothed loss rather than the curve: re-smoothing the
    whole history every step made a sweep O(n^2). One sweep of a small MLP, 1000 steps:
    417 ms before, 205 ms after (100 steps: 21.8 and 19.4 ms; docs/lr_finder.md).
    """

    def __init__(self, smoothing: float, diverge_factor: float) -> None:
        self._average = MovingAverage(smoothing)
        self._factor = float(diverge_factor)
        self._first: float | None = None
        self._best = math.inf

    def diverged(self, loss: float) -> bool:
        """Add one step's loss; whether the sweep stops after it."""
        smoothed = self._average.add(loss)
        if self._first is None:
            self._first = smoothed
        if not (math.isfinite(loss) and math.isfinite(smoothed)):
            return True
        # Every earlier smoothed loss was finite (a non-finite one stops the sweep), so the
        # running minimum is min() of the curve so far.
        self._best = min(self._best, smoothed)
        return rose(smoothed, self._best, self._first, self._factor)


def rose(last: float, best: float, first: float, factor: float) -> bool:
    """Whether the smoothed loss ``last`` has risen past ``factor`` from ``best``.

    For ``best > 0`` fastai's and torch-lr-finder's rule: ``last > factor * best``, that is
    a rise above the best by ``(factor - 1) * best``. "Times the best" assumes a loss
    bounded below by 0; for a shifted loss (``best <= 0``, a callable loss may be
    negative) it stopped every sweep at its first step. There the rise must exceed
    ``(factor - 1)`` times the larger of the fall so far (``first - best``) and ``|best|``.
    The fall alone would be shift-invariant, but on a noisy start it is near 0: on 9
    measured sweeps (3 datasets x 3 seeds, cross-entropy - 5) it stopped 6 of them at step
    1 or 2; ``|best|`` keeps the loss's own scale as the floor (docs/lr_finder.md).
    """
    if best > 0:
        return last > factor * best
    return last - best > (factor - 1.0) * max(first - best, -best)


def _first_rise(smoothed: Array, factor: float) -> int | None:
    """The first step whose smoothed loss rose past ``factor`` from the best so far (the
    rule of :func:`rose`, over a whole curve; non-finite values never rise)."""
    best = math.inf
    first = float(smoothed[0]) if len(smoothed) else math.nan
    for step, value in enumerate(smoothed):
        best = min(best, float(value))
        if math.isfinite(value) and rose(float(value), best, first, factor):
            return step
    return None


def _divergence(raw: Array, smoothed: Array, factor: float) -> int | None:
    """Where :func:`diverged` first holds: a non-finite loss, or a rise past ``factor``."""
    nonfinite = ~(np.isfinite(raw) & np.isfinite(smoothed))
    first_nonfinite = int(np.argmax(nonfinite)) if nonfinite.any() else None
    rise = _first_rise(smoothed[:first_nonfinite], factor)
    return first_nonfinite if rise is None else rise


def _steepest(lrs: Array, smoothed: Array, lowest: int, skip: int) -> int:
    """The index of the steepest descent (d smoothed / d log10 lr) on steps [skip, lowest].

    The slope at each step is the least-squares slope over a window of ``2 * half + 1``
    steps (``half`` = 1/20 of the steps, at least 1), not the two-point difference: the
    argmin of a difference quotient follows the noise between neighbouring steps. For the
    same reason the answer is the centre of a stretch of steep slopes
    (:func:`_centre_of_first_steep_stretch`), not the argmin itself.
    """
    start = min(skip, max(lowest - 2, 0))
    if lowest - start < 2:  # too few points before the minimum for a slope
        return lowest
    half = max(1, len(lrs) // 20)
    x, y = np.log10(lrs), smoothed
    slopes = []
    for index in range(start, lowest + 1):
        window = slice(max(index - half, 0), min(index + half + 1, len(x)))
        slopes.append(np.polyfit(x[window], y[window], 1)[0])
    return start + _centre_of_first_steep_stretch(x[start : lowest + 1], np.asarray(slopes))


def _centre_of_first_steep_stretch(x: Array, slopes: Array) -> int:
    """The index nearest (in x) to the centre of the fall along the first contiguous
    stretch where every slope is at most half of the most negative one (at least half as
    steep): the mean of the stretch's x weighted by its slopes, the centre of mass of the
    fall.

    The first such stretch, not the one around the most negative slope: the sweep trains
    the model as it goes, so a later, steeper fall is often the progress made at the lrs
    before it (a second fall after a pause or a bump), not what a larger lr does to the
    initial weights. The weighted centre, not the middle of the stretch's extent: a long,
    gently falling shoulder at the threshold moves the middle by half its length and the
    centre by its small share of the fall. On 10 cases (digits, spirals, moons, circles
    and MNIST-1D with SGD + momentum and Adam; docs/lr_finder.md) the middle put repeated
    sweeps of one model up to 3.05x apart, the centre within 2.54x.
    """
    steepest = int(np.argmin(slopes))
    if not slopes[steepest] < 0:
        return steepest
    steep = slopes <= 0.5 * slopes[steepest]
    first = int(np.argmax(steep))
    last = first
    while last < len(slopes) - 1 and steep[last + 1]:
        last += 1
    stretch = slice(first, last + 1)
    centre = float(np.sum(slopes[stretch] * x[stretch]) / np.sum(slopes[stretch]))
    return first + int(np.argmin(np.abs(x[stretch] - centre)))


def _reasoning(
    lrs: Array,
    smoothed: Array,
    lowest: int,
    steepest: int,
    diverged_at: int | None,
    rose_at: int | None,
    rule: Rule,
    fell: bool,
) -> str:
    if not np.isfinite(smoothed[0]):
        opening = (
            f"The loss was not finite ({smoothed[0]:.4g}) at the first lr {lrs[0]:.3g}: the "
            "sweep measured nothing. Check the data and the model's outputs for NaN and inf "
            "(a loss that overflows even at the first lr: start the sweep lower)"
        )
    elif not fell:
        opening = (
            f"The smoothed loss never fell below its first value {smoothed[0]:.4g} (at lr "
            f"{lrs[0]:.3g}; by {NO_FALL:.1%} or more): no learning rate of the sweep trained "
            "the model. Check that its parameters get gradients and the loss depends on its "
            "outputs (dead units, a detached graph, frozen layers), or start the sweep lower"
        )
    else:
        opening = (
            f"The smoothed loss fell from {smoothed[0]:.4g} at lr {lrs[0]:.3g} to its minimum "
            f"{smoothed[lowest]:.4g} at lr {lrs[lowest]:.3g}"
        )
    parts = [
        opening
        + (
            f" and diverged at lr {lrs[diverged_at]:.3g} (step {diverged_at})."
            if diverged_at is not None
            else "; the sweep ended without diverging (raise end_lr to see where it turns)."
        ),
        f"Steepest descent: lr {lrs[steepest]:.3g}. Min-loss/10 rule: lr {lrs[lowest] / 10:.3g}.",
    ]
    if rose_at is not None:
        parts.insert(
            1,
            f"Both rules read the curve up to lr {lrs[rose_at]:.3g} (step {rose_at}), where "
            f"the smoothed loss first rose to {smoothed[rose_at]:.4g}, above its best "
            "by the rise factor: what follows trains in an unstable regime.",
        )
    if not fell:
        parts.append(
            f"Fallback: {lrs[lowest] / 10:.3g}, the min-loss/10 rule on a curve that did not "
            "fall; it is not a measured good learning rate."
        )
        return " ".join(parts)
    if rule == "steepest":
        parts.append(
            f"Suggested: {lrs[steepest]:.3g}, the steepest descent, because it lies between "
            "a decade below the min-loss/10 rule and the minimum, where the loss still falls "
            "fastest."
        )
    elif steepest == lowest:
        parts.append(
            f"Suggested: {lrs[lowest] / 10:.3g}, the min-loss/10 rule, because the curve has "
            "no falling stretch before its minimum to take a slope on."
        )
    else:
        parts.append(
            f"Suggested: {lrs[lowest] / 10:.3g}, the min-loss/10 rule, because the steepest "
            "point lies more than a decade below it (on measured sweeps such a point was "
            "most often a dip in the noise of the curve's flat start)."
        )
    if lrs[lowest] / 10 < lrs[0] and rule == "min_loss":
        parts.append(
            f"That lr is below the swept range (from {lrs[0]:.3g}): it was not tested; "
            "lower start_lr to see the curve there."
        )
    return " ".join(parts)


def _is_float_sequence(value: object) -> bool:
    """A list or tuple of real numbers (numpy's scalars too), or a 1-D numpy array of them:
    what a recorded sweep is usually kept in."""
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and value.dtype.kind in "iuf"
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_) for v in value)
    )


def _is_increasing_positive(value: object) -> bool:
    if not _is_float_sequence(value) or len(value) < 2:  # type: ignore[arg-type]
        return False
    numbers = [float(v) for v in value]  # type: ignore[attr-defined]
    return all(math.isfinite(v) and v > 0 for v in numbers) and all(
        b > a for a, b in zip(numbers, numbers[1:], strict=False)
    )
