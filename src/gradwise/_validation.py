"""Constraints on user-facing values, declared as data, and the one error format.

Every public boundary validates with these so that a bad value always reads::

    The 'eps' parameter of Adam must be a finite float >= 0. Got -1e-08 instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sized
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Protocol

import numpy as np
import torch


class Constraint(Protocol):
    """A rule a value must satisfy, with a phrase that completes "must be ..."."""

    @property
    def description(self) -> str: ...

    def is_satisfied_by(self, value: Any) -> bool: ...


@dataclass(frozen=True)
class Interval:
    """A real number in a range; ``None`` leaves that side open-ended."""

    low: float | None = None
    high: float | None = None
    low_closed: bool = True
    high_closed: bool = True
    kind: str = "float"
    #: Refuse infinities (an interval open at both ends always does).
    finite: bool = False

    @property
    def description(self) -> str:
        noun = f"{'an' if self.kind[0] in 'aeiou' else 'a'} {self.kind}"
        if self.finite:
            noun = f"a finite {self.kind}"
        if self.low is not None and self.high is not None:
            left = "[" if self.low_closed else "("
            right = "]" if self.high_closed else ")"
            return f"{noun} in {left}{_fmt(self.low)}, {_fmt(self.high)}{right}"
        if self.low is not None:
            return f"{noun} {'>=' if self.low_closed else '>'} {_fmt(self.low)}"
        if self.high is not None:
            return f"{noun} {'<=' if self.high_closed else '<'} {_fmt(self.high)}"
        return f"a finite {self.kind}"

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.requires_grad:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, Real):
            return False
        if self.kind == "int" and not isinstance(value, Integral):
            return False  # 32.0 is refused: it would reach torch as a float and fail there
        number = float(value)
        if math.isnan(number):
            return False
        if math.isinf(number) and (self.finite or (self.low is None and self.high is None)):
            return False
        if self.low is not None and (
            number < self.low or (number == self.low and not self.low_closed)
        ):
            return False
        return not (
            self.high is not None
            and (number > self.high or (number == self.high and not self.high_closed))
        )


@dataclass(frozen=True)
class OneOf:
    """A value from a fixed set of choices."""

    choices: tuple[Any, ...]

    @property
    def description(self) -> str:
        return "one of " + ", ".join(repr(choice) for choice in self.choices)

    def is_satisfied_by(self, value: Any) -> bool:
        return any(value == choice and type(value) is type(choice) for choice in self.choices)


@dataclass(frozen=True)
class Boolean:
    """True or False."""

    description: str = "a bool"

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class PairOf:
    """A tuple or list of two values that each satisfy ``item``."""

    item: Constraint

    @property
    def description(self) -> str:
        item = self.item.description.split(" ", 1)[1]  # drop the article
        return "a pair of " + item.replace("float", "floats", 1).replace("int", "ints", 1)

    def is_satisfied_by(self, value: Any) -> bool:
        return (
            isinstance(value, tuple | list)
            and len(value) == 2
            and all(self.item.is_satisfied_by(v) for v in value)
        )


@dataclass(frozen=True)
class Either:
    """A value that satisfies at least one of several constraints."""

    options: tuple[Constraint, ...]

    @property
    def description(self) -> str:
        return " or ".join(option.description for option in self.options)

    def is_satisfied_by(self, value: Any) -> bool:
        return any(option.is_satisfied_by(value) for option in self.options)


@dataclass(frozen=True)
class Satisfies:
    """Any value accepted by a predicate, described in words."""

    predicate: Callable[[Any], bool]
    description: str

    def is_satisfied_by(self, value: Any) -> bool:
        return self.predicate(value)


# Finite: an infinite rate, gain, eps or tolerance is never a usable setting; it only
# fails later (NaN weights, zero outputs) far from the argument that caused it. A place
# where inf has a documented meaning spells out a non-finite Interval instead.
NON_NEGATIVE = Interval(low=0.0, finite=True)
POSITIVE = Interval(low=0.0, low_closed=False, finite=True)
UNIT_INTERVAL = Interval(low=0.0, high=1.0)
HALF_OPEN_UNIT_INTERVAL = Interval(low=0.0, high=1.0, high_closed=False)
POSITIVE_INT = Interval(low=1.0, kind="int")
NON_NEGATIVE_INT = Interval(low=0.0, kind="int")


def invalid_value_error(name: str, owner: str, expected: str, value: Any) -> ValueError:
    """The one error format: what was wrong, what was expected."""
    return ValueError(
        f"The '{name}' parameter of {owner} must be {expected}. Got {shown(value)} instead."
    )


#: Tensors of more elements are shown in messages by their shape, not their values.
SHOWN_ELEMENTS = 8
#: A value whose repr is longer is shown by its kind and size (an array, a list, a module).
SHOWN_CHARACTERS = 200


def shown(value: Any) -> str:
    """``repr(value)`` for a message, but short: a tensor of more than
    :data:`SHOWN_ELEMENTS` elements as its shape and dtype (also inside a short tuple or
    list), and anything whose repr runs over :data:`SHOWN_CHARACTERS` or over several
    lines by what it is (a NumPy array's shape, a module's class, a sequence's length).
    A bad ``(inputs, targets)`` pair printed the whole dataset, a module its every layer."""
    if isinstance(value, torch.Tensor) and value.numel() > SHOWN_ELEMENTS:
        dtype = str(value.dtype).removeprefix("torch.")
        return f"<tensor of shape {tuple(value.shape)}, {dtype}>"
    if type(value) in (tuple, list) and len(value) <= SHOWN_ELEMENTS:
        items = ", ".join(shown(item) for item in value)  # each short already
        if type(value) is list:
            return f"[{items}]"
        return f"({items},)" if len(value) == 1 else f"({items})"
    text = repr(value)
    if len(text) <= SHOWN_CHARACTERS and "\n" not in text:
        return text
    if isinstance(value, np.ndarray):
        return f"<ndarray of shape {value.shape}, {value.dtype}>"
    if isinstance(value, torch.nn.Module):
        return f"<{type(value).__name__} module>"
    if isinstance(value, Sized) and not isinstance(value, str | bytes):
        return f"<{type(value).__name__} of {len(value)} items>"
    return f"{text[:SHOWN_CHARACTERS]}..."


def check(name: str, owner: str, value: Any, constraint: Constraint) -> None:
    """Raise the standard ValueError if ``value`` breaks ``constraint``.

    A constraint may define ``explain(value) -> str`` to say more about a bad value
    (which step of a schedule goes negative, say); it is appended to the message.
    """
    if constraint.is_satisfied_by(value):
        return
    error = invalid_value_error(name, owner, constraint.description, value)
    explain = getattr(constraint, "explain", None)
    if explain is not None:
        error = ValueError(f"{str(error).removesuffix('.')}, {explain(value)}.")
    raise error


def check_all(owner: str, values: Mapping[str, Any], constraints: Mapping[str, Constraint]) -> None:
    """Check every value that has a declared constraint."""
    for name, constraint in constraints.items():
        if name in values:
            check(name, owner, values[name], constraint)


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() and abs(number) < 1e15 else repr(number)
