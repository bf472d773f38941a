"""Schedules built from schedules: constant and linear warmup, and joining at boundaries.

These wrap any schedule that accepts a tensor of steps (every schedule in this package
does; a function written with torch operations or plain arithmetic does too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, final

import torch
from torch import Tensor

from gradwise._validation import NON_NEGATIVE, POSITIVE_INT, Satisfies, invalid_value_error
from gradwise.schedules._base import INCREASING_POSITIVE_INTS, SCHEDULE, StepFunction, evaluate
from gradwise.schedules._check import Schedule

# The lowercase class names are deliberate: see StepFunction.


@final
@dataclass(frozen=True)
class constant_warmup(StepFunction):
    r"""Hold ``value`` for ``num_steps`` steps, then run ``schedule`` from its step 0.

    .. math::
        \epsilon_k = c \quad (k < W), \qquad \epsilon_k = s(k - W) \quad (k \ge W)

    with :math:`W` = ``num_steps``. The warmup comes before the schedule: the wrapped
    schedule keeps its own length and its own behaviour past its end, and the whole run
    is :math:`W` steps longer (Keras' convention for ``warmup_steps``; optax's
    ``warmup_*_schedule`` count the warmup inside ``decay_steps`` instead). Used by He et
    al. (2016) to start a very deep ResNet at a tenth of the learning rate.

    Args:
        schedule: :math:`s`, any schedule.
        num_steps: :math:`W`, an int >= 1.
        value: :math:`c`, a finite float >= 0.

    Example:
        >>> from gradwise.schedules import constant_warmup, step_decay
        >>> schedule = constant_warmup(step_decay(0.1, 30, gamma=0.5), num_steps=5, value=0.01)
        >>> schedule(0), schedule(4), schedule(5), schedule(35)
        (0.01, 0.01, 0.1, 0.05)
    """

    schedule: Schedule
    num_steps: int
    value: float

    constraints = {"schedule": SCHEDULE, "num_steps": POSITIVE_INT, "value": NON_NEGATIVE}

    def _evaluate(self, step: Tensor) -> Tensor:
        after = evaluate(self.schedule, _steps_since(step, self.num_steps))
        return torch.where(step < self.num_steps, self.value, after)


@final
@dataclass(frozen=True)
class linear_warmup(StepFunction):
    r"""Ramp linearly from ``start`` to the schedule's first value, then run ``schedule``.

    Gradual warmup (Goyal et al., 2017), with :math:`W` = ``num_steps``:

    .. math::
        \epsilon_k = \epsilon_{\text{start}}
            + \frac{k}{W}\left(s(0) - \epsilon_{\text{start}}\right) \quad (k < W),
        \qquad \epsilon_k = s(k - W) \quad (k \ge W).

    Step :math:`W` is the schedule's step 0, so the ramp meets the schedule without a
    jump. As with :class:`constant_warmup`, the warmup comes before the schedule (Keras'
    convention; optax's ``warmup_cosine_decay_schedule`` counts the warmup inside
    ``decay_steps``: to reproduce it, give the wrapped schedule ``decay_steps - W``
    steps). Same as torch's ``SequentialLR([LinearLR(start_factor, total_iters=W), ...],
    milestones=[W])``.

    Args:
        schedule: :math:`s`, any schedule.
        num_steps: :math:`W`, an int >= 1.
        start: :math:`\epsilon_{\text{start}}`, a finite float >= 0; default 0.

    Example:
        >>> from gradwise.schedules import cosine_decay, linear_warmup
        >>> schedule = linear_warmup(cosine_decay(1.0, num_steps=100), num_steps=10)
        >>> schedule(0), schedule(5), schedule(10), schedule(60), schedule(110)
        (0.0, 0.5, 1.0, 0.5, 0.0)

    Reference:
        Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017.
    """

    schedule: Schedule
    num_steps: int
    start: float = 0.0

    constraints = {"schedule": SCHEDULE, "num_steps": POSITIVE_INT, "start": NON_NEGATIVE}

    def _evaluate(self, step: Tensor) -> Tensor:
        target = evaluate(self.schedule, step.new_zeros(()))
        ramp = self.start + (target - self.start) * (step / self.num_steps)
        after = evaluate(self.schedule, _steps_since(step, self.num_steps))
        return torch.where(step < self.num_steps, ramp, after)


def _steps_since(step: Tensor, start: int) -> Tensor:
    """The wrapped schedule's own steps: ``step - start``, and 0 before ``start``.

    Every step is evaluated (``torch.where`` keeps one graph), so a schedule that starts
    later would see negative steps; a function of the user's own need not accept them.
    """
    return (step - start).clamp(min=0.0)


def _is_schedule_sequence(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and len(value) > 0
        and all(SCHEDULE.is_satisfied_by(item) for item in value)
    )


@final
@dataclass(frozen=True)
class join(StepFunction):
    r"""Run ``schedules[0]``, then from each ``boundaries[i]`` on, ``schedules[i + 1]`` afresh.

    .. math::
        \epsilon_k = s_0(k) \quad (k < b_1), \qquad
        \epsilon_k = s_i(k - b_i) \quad (b_i \le k < b_{i+1})

    Same as optax's ``join_schedules``: the boundaries are global steps, and each schedule
    starts from its own step 0 at its boundary. Past the last boundary the last schedule
    runs on, with its own behaviour past its end. ``schedules`` and ``boundaries`` are
    stored as tuples.

    Args:
        schedules: :math:`s_0, s_1, \dots`, a non-empty sequence of schedules.
        boundaries: :math:`b_1 < b_2 < \dots`, ints >= 1, one fewer than the schedules.

    Example:
        >>> from gradwise.schedules import constant, join, linear_decay
        >>> schedule = join([constant(0.5), linear_decay(1.0, 0.0, num_steps=10)], [5])
        >>> schedule(4), schedule(5), schedule(10), schedule(100)
        (0.5, 1.0, 0.5, 0.0)
    """

    schedules: Sequence[Schedule]
    boundaries: Sequence[int]

    constraints = {
        "schedules": Satisfies(_is_schedule_sequence, "a non-empty sequence of schedules"),
        "boundaries": INCREASING_POSITIVE_INTS,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.boundaries) != len(self.schedules) - 1:
            expected = (
                f"{INCREASING_POSITIVE_INTS.description} with one entry fewer than "
                f"'schedules' ({len(self.schedules) - 1} here)"
            )
            raise invalid_value_error("boundaries", "join", expected, self.boundaries)
        object.__setattr__(self, "schedules", tuple(self.schedules))
        object.__setattr__(self, "boundaries", tuple(self.boundaries))

    def _evaluate(self, step: Tensor) -> Tensor:
        value = evaluate(self.schedules[0], step)
        for boundary, schedule in zip(self.boundaries, self.schedules[1:], strict=True):
            after = evaluate(schedule, _steps_since(step, boundary))
            value = torch.where(step < boundary, value, after)
        return value.broadcast_to(step.shape)
