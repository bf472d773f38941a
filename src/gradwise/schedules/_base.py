"""The one evaluation path every schedule shares: numbers and tensors of steps alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, overload

import torch
from torch import Tensor

from gradwise._validation import POSITIVE_INT, Constraint, Satisfies, check_all, invalid_value_error
from gradwise.schedules._check import KEEP_ONE_SCHEDULE


class StepFunction(ABC):
    """A schedule written once, as torch operations on a float64 tensor of steps.

    ``schedule(step)`` with an int or float returns a Python float; with a tensor of steps
    (any shape) it returns a float64 tensor of values, element by element. Formulas use
    ``torch.where`` / ``clamp`` / ``minimum`` instead of Python branches on the step, so a
    0-d tensor step traces under ``torch.compile(fullgraph=True)`` without graph breaks.
    Steps below 0 count as step 0.

    The concrete schedules are frozen dataclasses with lowercase names: they are called
    like optax's schedule functions, and their repr reads as the call that made them.
    """

    __slots__ = ()

    #: The constraint on each constructor argument, checked when the schedule is made.
    constraints: ClassVar[Mapping[str, Constraint]] = {}

    def __post_init__(self) -> None:
        values = {name: getattr(self, name) for name in self.constraints}
        check_int_sizes(type(self).__name__, values, self.constraints)
        check_all(type(self).__name__, values, self.constraints)

    @overload
    def __call__(self, step: Tensor) -> Tensor: ...

    @overload
    def __call__(self, step: float) -> float: ...

    def __call__(self, step: float | Tensor) -> float | Tensor:
        if isinstance(step, Tensor):
            return self._evaluate(step.to(torch.float64).clamp(min=0.0))
        steps = torch.tensor(float(step), dtype=torch.float64).clamp(min=0.0)
        return float(self._evaluate(steps))

    @abstractmethod
    def _evaluate(self, step: Tensor) -> Tensor:
        """The values at ``step``, a float64 tensor of steps >= 0 (NaN stays NaN)."""

    def _not_a_number(self, *args: object) -> NoReturn:
        raise TypeError(
            f"{self!r} is a schedule, a function of the step, not a number: call it with a "
            "step for its value. If a torch LR scheduler got here, the optimizer's lr is "
            "this schedule, which the optimizer already follows step by step. "
            f"{KEEP_ONE_SCHEDULE}"
        )

    # A schedule is no number, and a type checker must keep saying so (with __float__ it
    # would pass for SupportsFloat): these exist at run time only, to give the TypeError a
    # torch LR scheduler raises on an optimizer's lr (group["lr"] * gamma, float(...) in
    # ReduceLROnPlateau) a message that says what to do. Those schedulers that store
    # initial_lr are refused when made (gradwise.optim's param groups).
    if not TYPE_CHECKING:
        __float__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _not_a_number
        __add__ = __radd__ = __sub__ = __rsub__ = _not_a_number


#: Python ints of this size or more cannot be schedule arguments: torch takes an int
#: operand only up to 2**64 - 1 (``step / 2**64`` raises OverflowError), and the
#: constraints' float() checks raise it beyond the float range.
INT_LIMIT = 2**64


def check_int_sizes(
    owner: str, values: Mapping[str, Any], constraints: Mapping[str, Constraint]
) -> None:
    """Raise the standard ValueError, naming the argument, for an int argument (or an
    int in a sequence argument, such as milestones) of :data:`INT_LIMIT` or more in
    size: it raised OverflowError deep inside torch, at the schedule's first call."""
    for name, value in values.items():
        is_sequence = isinstance(value, Sequence) and not isinstance(value, str)
        items = list(value) if is_sequence else [value]
        if any(isinstance(item, int) and abs(item) >= INT_LIMIT for item in items):
            expected = (
                f"{constraints[name].description}, smaller than 2**64 in size "
                "(torch computes with no larger int)"
            )
            shown = [short_value(item) for item in items] if is_sequence else short_value(value)
            raise invalid_value_error(name, owner, expected, shown)


def short_value(value: Any) -> Any:
    """``value``, or a description of an int too long to show (or to str() at all)."""
    if isinstance(value, int) and value.bit_length() > 128:
        return _Shown(f"an int of {value.bit_length()} bits")
    return value


class _Shown(str):
    """A description that an error message shows without quotes."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def evaluate(schedule: Any, step: Tensor) -> Tensor:
    """Any schedule (ours or a user's function) at a tensor of steps, as float64."""
    return torch.as_tensor(schedule(step), dtype=torch.float64, device=step.device)


def _is_increasing_ints(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and all(POSITIVE_INT.is_satisfied_by(item) for item in value)
        and all(float(a) < float(b) for a, b in pairwise(value))
    )


#: A strictly increasing sequence of ints >= 1 (milestones, boundaries).
INCREASING_POSITIVE_INTS = Satisfies(
    _is_increasing_ints, "a strictly increasing sequence of ints >= 1"
)

#: A callable that maps a step to a value.
SCHEDULE = Satisfies(callable, "a schedule (a function of the step)")
