"""Scaling transforms: a constant factor, and the learning rate (a number or a schedule)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gradwise._validation import NON_NEGATIVE, check
from gradwise.optim._scalars import per_parameter
from gradwise.optim._transform import GradientTransform, Params, State, Updates, stateless
from gradwise.schedules import Schedule, check_schedule, first_invalid_value


def scale(factor: float | Tensor) -> GradientTransform:
    """Multiply every update by ``factor``: ``u <- factor * u``."""
    return stateless("scale", lambda updates, params: [u * factor for u in updates])


def scale_by_learning_rate(lr: float | Tensor | Schedule) -> GradientTransform:
    r"""Descend: :math:`u \leftarrow -\eta_t\, u`.

    ``lr`` is a number (or a one-element tensor), or a schedule (:mod:`gradwise.schedules`)
    evaluated at the transform's own step count ``schedule_step``, which starts at 0 on the
    first update. A negative, infinite or NaN rate is a ValueError: a number or tensor here,
    a schedule here at the steps it is probed at, and at each step where it returns a
    Python number (a tensor it returns is not read back to the host at each step).

    Example:
        >>> from gradwise.optim import scale_by_learning_rate
        >>> from gradwise.schedules import cosine_decay
        >>> descend = scale_by_learning_rate(cosine_decay(1e-2, num_steps=1000))
    """
    if callable(lr) and not isinstance(lr, Tensor):
        check_schedule(lr, name="lr", owner="scale_by_learning_rate")
        return _scale_by_schedule(lr)
    # A tensor too (one element, as torch.optim takes it): it is given once, so reading it
    # back to the host once costs nothing. One that requires grad is read as torch does.
    check(
        "lr", "scale_by_learning_rate", lr.detach() if isinstance(lr, Tensor) else lr, NON_NEGATIVE
    )
    return stateless("scale_by_learning_rate", lambda updates, params: [u * -lr for u in updates])


def _scale_by_schedule(schedule: Schedule) -> GradientTransform:
    def init(params: Params) -> State:
        device = params[0].device if params else None
        return {"schedule_step": torch.zeros((), dtype=torch.float64, device=device)}

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        step = state["schedule_step"]
        count = step if torch.compiler.is_compiling() or step.device.type != "cpu" else int(step)
        lr = checked_rate(schedule(count), schedule, step, "scale_by_learning_rate")
        if isinstance(lr, Tensor):
            (lr,) = per_parameter([lr])  # evaluated once, not inside every compiled loop
        return [u * -lr for u in updates], {"schedule_step": step + 1}

    return GradientTransform(init, update, "scale_by_learning_rate")


def checked_rate(lr: Any, schedule: Schedule, step: Tensor, owner: str) -> Any:
    """``lr``, the value of ``schedule`` at ``step``, refused if it is a Python number that
    is negative, infinite or NaN.

    The probe when the schedule was given sees a function of your own at a few hundred
    steps only (every step up to 100,000 if it takes a tensor of steps), so a bad value at
    another step is caught here, where it would be applied. A number costs one comparison
    (about 0.1 us); a tensor is left alone, as reading it would wait for the device.
    """
    if isinstance(lr, float | int) and not 0 <= lr < math.inf:  # NaN fails both
        raise ValueError(
            f"The 'lr' parameter of {owner} must be a schedule whose values are finite and "
            f">= 0. Got {schedule!r} instead, which returns {lr!r} at step {int(step)}; fix "
            "the schedule (a negative rate climbs the loss)."
        )
    return lr


class _LearningRateConstraint:
    """A finite float >= 0 (or a one-element tensor of one), or a schedule that never
    returns a negative value, NaN or inf.

    A tensor that requires grad is taken as torch.optim takes it: the step runs under
    ``no_grad`` and uses its value.
    """

    description = "a finite float >= 0 or a schedule whose values are all finite and >= 0"

    def is_satisfied_by(self, value: object) -> bool:
        if isinstance(value, Tensor):
            return value.numel() == 1 and NON_NEGATIVE.is_satisfied_by(value.detach())
        if callable(value):
            return first_invalid_value(value) is None
        return NON_NEGATIVE.is_satisfied_by(value)

    def explain(self, value: object) -> str:
        if isinstance(value, Tensor) and value.numel() != 1:
            return (
                f"which is a tensor of {value.numel()} elements; pass a float or a "
                "one-element tensor"
            )
        invalid = first_invalid_value(value) if callable(value) else None
        if invalid is None:
            return "which is not a finite number >= 0"
        step, bad = invalid
        return f"which returns {bad!r} at step {step}"


#: The constraint on every named optimizer's ``lr``.
LEARNING_RATE = _LearningRateConstraint()
