"""What a schedule is, and the check that it never returns a bad value."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from gradwise._validation import invalid_value_error

#: A schedule maps a step (an int, or a tensor of steps) to a value (a float, or a tensor).
Schedule = Callable[[Any], Any]

# Steps probed when checking a schedule: every step up to 100k, then a geometric tail.
_DENSE_PROBE_STEPS = 100_001
_TAIL_PROBE_STEPS = [int(10**k) for k in (5.5, 6, 6.5, 7, 8, 9)]


def first_invalid_value(schedule: Schedule, minimum: float = 0.0) -> tuple[int, float] | None:
    """The first probed step where ``schedule`` is NaN, infinite or below ``minimum``, with
    its value.

    Schedules from :mod:`gradwise.schedules` accept a tensor of steps, so every step up to
    100,000 is checked in one call; a schedule that only takes ints is probed at a few
    hundred steps spread geometrically up to 1e9.
    """
    try:
        steps = torch.cat(
            [
                torch.arange(_DENSE_PROBE_STEPS, dtype=torch.float64),
                torch.tensor(_TAIL_PROBE_STEPS, dtype=torch.float64),
            ]
        )
        values = torch.as_tensor(schedule(steps), dtype=torch.float64).broadcast_to(steps.shape)
    except (TypeError, ValueError, RuntimeError):
        return _first_invalid_scalar(schedule, minimum)
    bad = torch.nonzero(~torch.isfinite(values) | (values < minimum))
    if bad.numel() == 0:
        return None
    position = int(bad[0, 0])
    return int(steps[position]), float(values[position])


def _first_invalid_scalar(schedule: Schedule, minimum: float) -> tuple[int, float] | None:
    probe = sorted({*range(1001), *(int(1.05**k) for k in range(425))})
    for step in probe:
        value = float(schedule(step))
        if not math.isfinite(value) or value < minimum:
            return step, value
    return None


def check_schedule(schedule: Schedule, *, name: str, owner: str, minimum: float = 0.0) -> None:
    """Raise the standard ValueError if ``schedule`` ever returns NaN, an infinity or a value
    < ``minimum``."""
    if not callable(schedule):
        raise invalid_value_error(name, owner, "a schedule (a function of the step)", schedule)
    invalid = first_invalid_value(schedule, minimum)
    if invalid is not None:
        step, value = invalid
        raise ValueError(
            f"The '{name}' parameter of {owner} must be a schedule whose values are "
            f"finite and >= {minimum:g}. "
            f"Got {schedule!r} instead, which returns {value!r} at step {step}."
        )


#: How to resolve a torch LR scheduler around an optimizer whose lr is a schedule.
KEEP_ONE_SCHEDULE = (
    "Either pass a float lr to drive the optimizer with the torch scheduler, or drop the "
    "torch scheduler and keep the schedule."
)


class TwoSchedulesError(TypeError, ValueError):
    """A torch LR scheduler (or :class:`~gradwise.schedules.ScheduleLR`) made for an
    optimizer whose param group's lr is already a schedule: the two would fight over the
    lr. A TypeError (the lr is no number, which is what torch's schedulers raised) and a
    ValueError (what ScheduleLR raised first), so either ``except`` catches it."""


def torch_scheduler_error(schedule: Schedule) -> TwoSchedulesError:
    """The error for a torch LR scheduler made for an optimizer whose lr is ``schedule``:
    torch's schedulers compute with ``group["lr"]`` as a number, and failed deep inside
    torch with a bare TypeError (``unsupported operand type(s) for *``) or, OneCycleLR,
    silently replaced the schedule."""
    return TwoSchedulesError(
        f"A torch LR scheduler needs a number as each param group's lr. Got the schedule "
        f"{schedule!r} instead, which the optimizer already follows step by step. "
        f"{KEEP_ONE_SCHEDULE}"
    )
