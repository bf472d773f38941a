"""Scaling transforms: a constant factor, and the learning rate (a number or a schedule)."""

from __future__ import annotations

from collections.abc import Sequence

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

    ``lr`` is a number, or a schedule (:mod:`gradwise.schedules`) evaluated at the
    transform's own step count ``schedule_step``, which starts at 0 on the first update.
    A schedule is checked once, here: a negative or NaN value is a ValueError.

    Example:
        >>> from gradwise.optim import scale_by_learning_rate
        >>> from gradwise.schedules import cosine_decay
        >>> descend = scale_by_learning_rate(cosine_decay(1e-2, num_steps=1000))
    """
    if callable(lr):
        check_schedule(lr, name="lr", owner="scale_by_learning_rate")
        return _scale_by_schedule(lr)
    if not isinstance(lr, Tensor):
        check("lr", "scale_by_learning_rate", lr, NON_NEGATIVE)
    return stateless("scale_by_learning_rate", lambda updates, params: [u * -lr for u in updates])


def _scale_by_schedule(schedule: Schedule) -> GradientTransform:
    def init(params: Params) -> State:
        device = params[0].device if params else None
        return {"schedule_step": torch.zeros((), dtype=torch.float64, device=device)}

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        step = state["schedule_step"]
        count = step if torch.compiler.is_compiling() or step.device.type != "cpu" else int(step)
        lr = schedule(count)
        if isinstance(lr, Tensor):
            (lr,) = per_parameter([lr])  # evaluated once, not inside every compiled loop
        return [u * -lr for u in updates], {"schedule_step": step + 1}

    return GradientTransform(init, update, "scale_by_learning_rate")


class _LearningRateConstraint:
    """A finite float >= 0, or a schedule that never returns a negative value, NaN or inf."""

    description = "a finite float >= 0 or a schedule whose values are all finite and >= 0"

    def is_satisfied_by(self, value: object) -> bool:
        if callable(value) and not isinstance(value, Tensor):
            return first_invalid_value(value) is None
        return NON_NEGATIVE.is_satisfied_by(value)

    def explain(self, value: object) -> str:
        invalid = first_invalid_value(value) if callable(value) else None
        if invalid is None:
            return "which is not a finite number >= 0"
        step, bad = invalid
        return f"which returns {bad!r} at step {step}"


#: The constraint on every named optimizer's ``lr``.
LEARNING_RATE = _LearningRateConstraint()
