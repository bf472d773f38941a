"""The one stateful schedule: cut the value when a monitored metric stops improving."""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any, Literal, final

import torch
from torch import Tensor

from gradwise._validation import (
    HALF_OPEN_UNIT_INTERVAL,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    Constraint,
    OneOf,
    Satisfies,
    check,
    check_all,
)
from gradwise.schedules._base import StepFunction, check_int_sizes, short_value

_METRIC = Satisfies(
    lambda value: (
        (isinstance(value, Tensor) and value.numel() == 1)
        or (isinstance(value, Real) and not isinstance(value, bool))
    ),
    "a number or a one-element tensor (a mean loss, not a batch of them)",
)

# What state_dict() writes under each key: a damaged state (a hand edit, another object's
# state) is refused naming the key, not as float()'s or int()'s bare error, nor truncated.
_STATE: dict[str, Constraint] = {
    "value": NON_NEGATIVE,
    "best": Satisfies(
        lambda value: _real(value) and not math.isnan(value),
        "a float, not NaN (inf before any observation)",
    ),
    "num_bad_observations": NON_NEGATIVE_INT,
    "cooldown_counter": NON_NEGATIVE_INT,
}
_STATE_KEYS = tuple(_STATE)


def _real(value: Any) -> bool:
    if isinstance(value, Tensor) and value.numel() == 1 and not value.requires_grad:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        return False
    try:
        float(value)
    except OverflowError:  # an int beyond the float range
        return False
    return True


@final
class ReduceOnPlateau(StepFunction):
    r"""A value cut by ``factor`` when a metric reported with :meth:`observe` stops improving.

    Not a pure function of the step: ``schedule(step)`` returns the current value whatever
    the step, and the value changes only in :meth:`observe`. Each observation of metric
    :math:`m` (for ``mode="min"``) counts as an improvement when

    .. math::
        m < m_{\text{best}} (1 - \theta) \ \ (\text{"rel"}) \qquad
        m < m_{\text{best}} - \theta \ \ (\text{"abs"})

    (for ``"max"``: :math:`m > m_{\text{best}}(1 + \theta)` or :math:`m > m_{\text{best}} +
    \theta`); :math:`m_{\text{best}}` starts at :math:`+\infty` (:math:`-\infty`). After more
    than ``patience`` observations in a row without improvement the value becomes
    :math:`\max(\epsilon \cdot \text{factor}, \epsilon_{\min})` (unless that changes it by
    ``eps`` or less), and the next ``cooldown`` observations are not counted as bad. A NaN
    metric is never an improvement. This is torch's ``ReduceLROnPlateau``, observation for
    observation, for one value; use one instance per param group for per-group values.

    :meth:`state_dict` / :meth:`load_state_dict` save and restore the value and the
    counters, so a resumed run continues exactly. Under ``torch.compile`` the value is a
    constant of the graph: a cut recompiles once.

    Args:
        initial: the value before any cut, a finite float >= 0.
        mode: ``"min"`` (default: the metric should fall, like a loss) or ``"max"``.
        factor: the multiplier at each cut, a float in [0, 1); default 0.1.
        patience: how many observations without improvement to tolerate, an int >= 0;
            default 10.
        threshold: :math:`\theta`, the least improvement that counts, a finite float >= 0;
            default 1e-4.
        threshold_mode: ``"rel"`` (default) or ``"abs"``.
        cooldown: observations after a cut during which none counts as bad, an int >= 0;
            default 0.
        min_value: :math:`\epsilon_{\min}`, the floor, a finite float >= 0; default 0.
        eps: the smallest change worth making, a finite float >= 0; default 1e-8.

    Example:
        >>> from gradwise.schedules import ReduceOnPlateau
        >>> schedule = ReduceOnPlateau(0.1, factor=0.5, patience=1)
        >>> for validation_loss in [1.0, 0.9, 0.9, 0.9]:
        ...     schedule.observe(validation_loss)
        >>> schedule(0), schedule.best
        (0.05, 0.9)
    """

    constraints = {
        "initial": NON_NEGATIVE,
        "mode": OneOf(("min", "max")),
        "factor": HALF_OPEN_UNIT_INTERVAL,
        "patience": NON_NEGATIVE_INT,
        "threshold": NON_NEGATIVE,
        "threshold_mode": OneOf(("rel", "abs")),
        "cooldown": NON_NEGATIVE_INT,
        "min_value": NON_NEGATIVE,
        "eps": NON_NEGATIVE,
    }

    def __init__(
        self,
        initial: float,
        *,
        mode: Literal["min", "max"] = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: Literal["rel", "abs"] = "rel",
        cooldown: int = 0,
        min_value: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        self.initial = initial
        self.mode = mode
        self.factor = factor
        self.patience = patience
        self.threshold = threshold
        self.threshold_mode = threshold_mode
        self.cooldown = cooldown
        self.min_value = min_value
        self.eps = eps
        check_int_sizes("ReduceOnPlateau", vars(self), self.constraints)
        check_all("ReduceOnPlateau", vars(self), self.constraints)
        self.value = float(initial)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_observations = 0
        self.cooldown_counter = 0

    def observe(self, metric: float | Tensor) -> None:
        """Report the monitored metric (a number or a one-element tensor); maybe cut the value."""
        check("metric", "ReduceOnPlateau.observe", metric, _METRIC)
        current = float(metric.detach() if isinstance(metric, Tensor) else metric)
        if self._is_improvement(current):
            self.best = current
            self.num_bad_observations = 0
        else:
            self.num_bad_observations += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_observations = 0
        if self.num_bad_observations > self.patience:
            reduced = max(self.value * self.factor, self.min_value)
            if self.value - reduced > self.eps:
                self.value = reduced
            self.cooldown_counter = self.cooldown
            self.num_bad_observations = 0

    def _is_improvement(self, current: float) -> bool:
        sign = 1.0 if self.mode == "min" else -1.0
        if self.threshold_mode == "rel":
            bound = self.best * (1.0 - sign * self.threshold)
        else:
            bound = self.best - sign * self.threshold
        return current < bound if self.mode == "min" else current > bound

    def _evaluate(self, step: Tensor) -> Tensor:
        return torch.full_like(step, self.value)

    def state_dict(self) -> dict[str, Any]:
        """The current value and counters (the constructor arguments are not included)."""
        return {
            "value": self.value,
            "best": self.best,
            "num_bad_observations": self.num_bad_observations,
            "cooldown_counter": self.cooldown_counter,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s result into an instance built with the same arguments.

        Raises:
            ValueError: ``state_dict`` is not what :meth:`state_dict` writes (a key missing,
                a value of the wrong type or range); the message names the key, and
                nothing is restored.
        """
        if not isinstance(state_dict, Mapping):
            raise ValueError(
                "ReduceOnPlateau.load_state_dict needs a mapping (what state_dict() returns). "
                f"Got {type(state_dict).__name__} instead."
            )
        missing = [key for key in _STATE_KEYS if key not in state_dict]
        if missing:
            raise ValueError(
                "ReduceOnPlateau.load_state_dict needs the keys "
                f"{', '.join(map(repr, _STATE_KEYS))} (what state_dict() returns); the state "
                f"given lacks {', '.join(map(repr, missing))}."
            )
        for key, constraint in _STATE.items():
            value = state_dict[key]
            if not (_real(value) and constraint.is_satisfied_by(value)):
                raise ValueError(
                    f"The {key!r} entry of the state given to ReduceOnPlateau.load_state_dict "
                    f"must be {constraint.description} (what state_dict() writes). "
                    f"Got {short_value(value)!r} instead."
                )
        self.value = float(state_dict["value"])
        self.best = float(state_dict["best"])
        self.num_bad_observations = int(state_dict["num_bad_observations"])
        self.cooldown_counter = int(state_dict["cooldown_counter"])

    def __repr__(self) -> str:
        arguments = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.constraints)
        return f"ReduceOnPlateau({arguments}, value={self.value!r})"
