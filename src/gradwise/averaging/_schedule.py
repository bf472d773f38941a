"""SWA's learning rate: the run's schedule until ``start``, then cyclical or constant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

import torch
from torch import Tensor

from gradwise._validation import (
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    Either,
    Satisfies,
    check,
    invalid_value_error,
)
from gradwise.schedules import Schedule, join, stateful_parts
from gradwise.schedules._base import SCHEDULE, StepFunction, evaluate
from gradwise.schedules._decay import cosine_interpolation
from gradwise.schedules._plain_data import is_stateful

_OPTIONAL_POSITIVE_INT = Either((POSITIVE_INT, Satisfies(lambda value: value is None, "None")))


@final
@dataclass(frozen=True)
class _swa_phase(StepFunction):  # lowercase like every schedule: see StepFunction
    """SWA's rate from its own step 0: cycles from ``high`` to ``low``, or anneal then ``low``."""

    high: float
    low: float
    cycle_steps: int | None
    anneal_steps: int

    constraints = {"high": NON_NEGATIVE, "low": NON_NEGATIVE}

    def _evaluate(self, step: Tensor) -> Tensor:
        return _phase_rate(self.high, self.low, self.cycle_steps, self.anneal_steps, step)


def _phase_rate(
    high: float | Tensor, low: float, cycle_steps: int | None, anneal_steps: int, step: Tensor
) -> Tensor:
    """SWA's rate at ``step`` of its own phase (counted from 0), falling from ``high``."""
    if cycle_steps is not None:
        # Izmailov et al.'s t(i) = (mod(i - 1, c) + 1) / c for the 1-based iteration i.
        fraction = (torch.remainder(step, cycle_steps) + 1.0) / cycle_steps
        return (1.0 - fraction) * high + fraction * low
    if anneal_steps == 0:
        return torch.full_like(step, low)
    fraction = (step / anneal_steps).clamp(max=1.0)
    return cosine_interpolation(high, low, fraction)


@final
@dataclass(frozen=True)
class _swa_after_stateful(StepFunction):  # lowercase like every schedule: see StepFunction
    """``schedule`` until ``start``, then SWA's rate falling from ``schedule``'s value at
    ``start`` as it is when evaluated: for a schedule with state (a ReduceOnPlateau), whose
    value at ``start`` is not known when the SWA schedule is made."""

    schedule: Schedule
    start: int
    low: float
    cycle_steps: int | None
    anneal_steps: int

    constraints = {"schedule": SCHEDULE, "start": NON_NEGATIVE_INT, "low": NON_NEGATIVE}

    def _evaluate(self, step: Tensor) -> Tensor:
        high = evaluate(self.schedule, step.new_tensor(float(self.start)))
        phase = _phase_rate(
            high, self.low, self.cycle_steps, self.anneal_steps, (step - self.start).clamp(min=0.0)
        )
        return torch.where(step < self.start, evaluate(self.schedule, step), phase)


def swa_schedule(
    schedule: Any,
    *,
    start: int,
    swa_lr: float,
    cycle_steps: int | None = None,
    anneal_steps: int = 0,
) -> Any:
    r"""The learning rate of stochastic weight averaging: ``schedule``, then SWA's from ``start``.

    With :math:`\alpha_1 = s(\text{start})`, the value ``schedule`` has when the SWA phase
    begins, :math:`\alpha_2` = ``swa_lr`` and :math:`j = k - \text{start}` the step within
    the phase:

    * cyclical, cycle length :math:`c`: :math:`\alpha = (1 - t)\alpha_1 + t\alpha_2` with
      :math:`t = (j \bmod c + 1)/c` (Izmailov et al. 2018, eq. 2): each cycle falls
      linearly and its last step uses :math:`\alpha_2`;
    * constant: a half-cosine from :math:`\alpha_1` to :math:`\alpha_2` over
      ``anneal_steps`` steps (torch's ``SWALR`` with ``anneal_strategy="cos"``, counted in
      optimizer steps), then :math:`\alpha_2`; with ``anneal_steps=0`` the rate switches
      at once.

    Before ``start`` the rate is ``schedule``'s (through :func:`gradwise.schedules.join`).
    A schedule with state (a :class:`~gradwise.schedules.ReduceOnPlateau`, on its own or
    inside a warmup) has no value at ``start`` until the run gets there: :math:`\alpha_1`
    is then read when the rate is, so the cycles fall from the rate the plateau has cut
    to, and a cut during the SWA phase lowers them from then on.

    Args:
        schedule: the run's schedule (any function of the step).
        start: the first step of the SWA phase, an int >= 0.
        swa_lr: :math:`\alpha_2`, a finite float >= 0.
        cycle_steps: :math:`c`, an int >= 1, or None for a constant rate.
        anneal_steps: constant rate only: steps of the anneal; an int >= 0.

    Example:
        >>> from gradwise.averaging import swa_schedule
        >>> from gradwise.schedules import constant
        >>> lr = swa_schedule(constant(0.1), start=4, swa_lr=0.02, cycle_steps=4)
        >>> [round(lr(step), 3) for step in range(3, 12)]
        [0.1, 0.08, 0.06, 0.04, 0.02, 0.08, 0.06, 0.04, 0.02]

    Reference:
        Izmailov, Podoprikhin, Garipov, Vetrov & Wilson, "Averaging Weights Leads to Wider
        Optima and Better Generalization", UAI 2018.
    """
    owner = "swa_schedule"
    check("schedule", owner, schedule, SCHEDULE)
    check("start", owner, start, NON_NEGATIVE_INT)
    check("swa_lr", owner, swa_lr, NON_NEGATIVE)
    check("cycle_steps", owner, cycle_steps, _OPTIONAL_POSITIVE_INT)
    check("anneal_steps", owner, anneal_steps, NON_NEGATIVE_INT)
    if cycle_steps is not None and anneal_steps:
        raise invalid_value_error(
            "anneal_steps", owner, "0 with 'cycle_steps' (anneal applies to a constant rate)",
            anneal_steps,
        )  # fmt: skip
    if is_stateful(schedule) or stateful_parts(schedule):
        # Its value at start depends on what it observes until then (a plateau's cuts).
        _check_rate_at_start(schedule, int(start))
        return _swa_after_stateful(schedule, int(start), float(swa_lr), cycle_steps,
                                   int(anneal_steps))  # fmt: skip
    high = _check_rate_at_start(schedule, int(start))
    phase = _swa_phase(high, float(swa_lr), cycle_steps, int(anneal_steps))
    if start == 0:
        return phase
    return join([schedule, phase], [int(start)])


def _check_rate_at_start(schedule: Any, start: int) -> float:
    """``schedule``'s value at ``start`` (the rate SWA falls from), refused unless finite
    and >= 0 in swa_schedule's words."""
    high = float(schedule(start))
    if not NON_NEGATIVE.is_satisfied_by(high):
        raise ValueError(
            "The 'schedule' parameter of swa_schedule must be a schedule whose value at "
            f"'start' (the rate SWA's phase falls from) is a finite float >= 0. Got "
            f"{schedule!r} instead, which returns {high!r} at step {start}."
        )
    return high
