"""Schedules that go up as well as down: cosine with warm restarts, and one-cycle."""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from itertools import pairwise
from typing import Literal, final

import torch
from torch import Tensor

from gradwise._validation import (
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    Boolean,
    Interval,
    OneOf,
    invalid_value_error,
)
from gradwise.schedules._base import StepFunction
from gradwise.schedules._decay import cosine_interpolation

# The lowercase class names are deliberate: see StepFunction.


@final
@dataclass(frozen=True)
class cosine_warm_restarts(StepFunction):
    r"""Cosine decay that restarts from ``initial``, each period ``period_multiplier`` times longer.

    SGDR. Cycle :math:`i = 0, 1, \dots` lasts :math:`T_i = T_0 m^i` steps and starts at
    step :math:`S_i = T_0 (m^i - 1) / (m - 1)` (:math:`S_i = i T_0` when :math:`m = 1`);
    within it, with :math:`t = k - S_i`,

    .. math::
        \epsilon_k = \epsilon_{\min} + \frac{\epsilon_0 - \epsilon_{\min}}{2}
            \left(1 + \cos\frac{\pi t}{T_i}\right).

    Step :math:`S_i` is the restart (value :math:`\epsilon_0`); there is no end. Same as
    torch's ``CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)``. Keras'
    ``CosineDecayRestarts`` defaults to ``t_mul=2`` and can also shrink each restart
    (``m_mul``); this one restarts at full height, like the paper.

    Args:
        initial: :math:`\epsilon_0`, a finite float >= 0.
        first_period: :math:`T_0`, an int >= 1.
        period_multiplier: :math:`m`, an int >= 1; default 1 (equal periods).
        final: :math:`\epsilon_{\min}`, a finite float >= 0; default 0.

    Example:
        >>> from gradwise.schedules import cosine_warm_restarts
        >>> schedule = cosine_warm_restarts(1.0, first_period=10, period_multiplier=2)
        >>> schedule(0), schedule(5), schedule(10), schedule(20), schedule(30)
        (1.0, 0.5, 1.0, 0.5, 1.0)

    Reference:
        Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
        ICLR 2017.
    """

    initial: float
    first_period: int
    period_multiplier: int = 1
    final: float = 0.0

    constraints = {
        "initial": NON_NEGATIVE,
        "first_period": POSITIVE_INT,
        "period_multiplier": POSITIVE_INT,
        "final": NON_NEGATIVE,
    }

    def _evaluate(self, step: Tensor) -> Tensor:
        first, multiplier = self.first_period, self.period_multiplier
        if multiplier == 1:
            cycle = torch.floor(step / first)
            start, period = cycle * first, torch.full_like(step, first)
        else:
            cycle = torch.floor(torch.log1p(step * (multiplier - 1) / first) / math.log(multiplier))
            # The logarithm can round a step that starts a cycle into the one before it (or
            # the other way); compare with the exact cycle starts to settle it.
            cycle = cycle - (step < self._cycle_start(cycle)).to(step.dtype)
            cycle = cycle + (step >= self._cycle_start(cycle + 1)).to(step.dtype)
            start, period = self._cycle_start(cycle), first * multiplier**cycle
        return cosine_interpolation(self.initial, self.final, (step - start) / period)

    def _cycle_start(self, cycle: Tensor) -> Tensor:
        multiplier = self.period_multiplier
        return self.first_period * (multiplier**cycle - 1) / (multiplier - 1)


@final
@dataclass(frozen=True)
class one_cycle(StepFunction):
    r"""The 1cycle policy: warm up to ``max_value``, then anneal far below the start.

    With :math:`T` = ``num_steps``, :math:`p` = ``pct_start``,
    :math:`\epsilon_{\text{start}} = \epsilon_{\max} / \text{div\_factor}` and
    :math:`\epsilon_{\text{end}} = \epsilon_{\text{start}} / \text{final\_div\_factor}`,
    the schedule goes through phases that end at these steps:

    * two phases (default): :math:`\epsilon_{\text{start}} \to \epsilon_{\max}` ending at
      step :math:`pT - 1`, then :math:`\epsilon_{\max} \to \epsilon_{\text{end}}` ending
      at step :math:`T - 1`;
    * ``three_phase=True``: :math:`\epsilon_{\text{start}} \to \epsilon_{\max}` by
      :math:`pT - 1`, :math:`\epsilon_{\max} \to \epsilon_{\text{start}}` by
      :math:`2pT - 2`, :math:`\epsilon_{\text{start}} \to \epsilon_{\text{end}}` by
      :math:`T - 1`.

    Within a phase from step :math:`a` to step :math:`b`, with :math:`f = (k - a)/(b - a)`,
    ``"cos"`` gives :math:`e + (s - e)(1 + \cos \pi f)/2` and ``"linear"`` gives
    :math:`s + (e - s) f` (:math:`s`, :math:`e` the phase's start and end values).

    Defaults and values are those of torch's ``OneCycleLR`` for steps 0 to :math:`T - 1`.
    Past the end the value stays at :math:`\epsilon_{\text{end}}` (from step
    :math:`T - 1` on), where torch overshoots at step :math:`T` and raises after it. This
    schedule is the learning rate only; torch's ``OneCycleLR`` also cycles momentum.

    Args:
        max_value: :math:`\epsilon_{\max}`, a finite float >= 0.
        num_steps: :math:`T`, an int >= 2 (the total number of steps).
        pct_start: :math:`p`, the fraction of steps spent warming up; each phase must be
            longer than 0 steps. Default 0.3.
        anneal_strategy: ``"cos"`` (default) or ``"linear"``.
        div_factor: :math:`\epsilon_{\max} / \epsilon_{\text{start}}`, a finite float > 0;
            default 25.
        final_div_factor: :math:`\epsilon_{\text{start}} / \epsilon_{\text{end}}`, a finite
            float > 0; default 1e4.
        three_phase: use the three-phase variant; default False.

    Example:
        >>> from gradwise.schedules import one_cycle
        >>> schedule = one_cycle(1.0, num_steps=11, pct_start=0.5, anneal_strategy="linear")
        >>> schedule(0), schedule(4.5), round(schedule(10), 8), round(schedule(11), 8)
        (0.04, 1.0, 4e-06, 4e-06)

    Reference:
        Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using
        Large Learning Rates", 2017.
    """

    max_value: float
    num_steps: int
    _: KW_ONLY
    pct_start: float = 0.3
    anneal_strategy: Literal["cos", "linear"] = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False

    constraints = {
        "max_value": NON_NEGATIVE,
        "num_steps": Interval(low=2.0, kind="int"),
        "pct_start": Interval(low=0.0, high=1.0, low_closed=False, high_closed=False),
        "anneal_strategy": OneOf(("cos", "linear")),
        "div_factor": POSITIVE,
        "final_div_factor": POSITIVE,
        "three_phase": Boolean(),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        ends = [0.0] + [end for end, _, _ in self._phases()]
        if any(later <= earlier for earlier, later in pairwise(ends)):
            upper = (self.num_steps + 1) / (2 * self.num_steps) if self.three_phase else 1.0
            expected = (
                f"a float in ({1 / self.num_steps:g}, {upper:g}) when num_steps={self.num_steps}"
                f" and three_phase={self.three_phase}, so that every phase lasts more than 0 steps"
            )
            raise invalid_value_error("pct_start", "one_cycle", expected, self.pct_start)

    def _phases(self) -> list[tuple[float, float, float]]:
        """(end step, start value, end value) of each phase, as torch's OneCycleLR computes them."""
        start = self.max_value / self.div_factor
        end = start / self.final_div_factor
        warmup_end = float(self.pct_start * self.num_steps) - 1
        last = float(self.num_steps - 1)
        if self.three_phase:
            middle = float(2 * self.pct_start * self.num_steps) - 2
            return [
                (warmup_end, start, self.max_value),
                (middle, self.max_value, start),
                (last, start, end),
            ]
        return [(warmup_end, start, self.max_value), (last, self.max_value, end)]

    def _evaluate(self, step: Tensor) -> Tensor:
        pieces = []
        phase_start = 0.0
        for phase_end, start, end in self._phases():
            fraction = ((step - phase_start) / (phase_end - phase_start)).clamp(0.0, 1.0)
            if self.anneal_strategy == "cos":
                pieces.append((phase_end, cosine_interpolation(start, end, fraction)))
            else:
                pieces.append((phase_end, start + (end - start) * fraction))
            phase_start = phase_end
        value = pieces[-1][1]
        for phase_end, piece in reversed(pieces[:-1]):
            value = torch.where(step <= phase_end, piece, value)
        return value
