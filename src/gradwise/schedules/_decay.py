r"""Decaying schedules: constant, step, multistep, exponential, inverse-time, polynomial,
linear and cosine.

Every schedule here counts steps from 0 (its value at step 0 is ``initial``) and is a
pure function of the step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import final

import torch
from torch import Tensor

from gradwise._validation import NON_NEGATIVE, POSITIVE, POSITIVE_INT, UNIT_INTERVAL
from gradwise.schedules._base import INCREASING_POSITIVE_INTS, StepFunction

# The lowercase class names are deliberate: see StepFunction.


@final
@dataclass(frozen=True)
class constant(StepFunction):
    r"""The same value at every step: :math:`\epsilon_k = c`.

    Like optax's ``constant_schedule``. (torch's ``ConstantLR`` is something else: a
    factor applied for ``total_iters`` epochs, after which the base lr comes back.)

    Args:
        value: :math:`c`, a finite float >= 0.

    Example:
        >>> from gradwise.schedules import constant
        >>> constant(0.1)(0), constant(0.1)(10**9)
        (0.1, 0.1)
    """

    value: float

    constraints = {"value": NON_NEGATIVE}

    def _evaluate(self, step: Tensor) -> Tensor:
        return torch.full_like(step, self.value)


@final
@dataclass(frozen=True)
class step_decay(StepFunction):
    r"""Multiply by ``gamma`` every ``step_size`` steps.

    .. math::
        \epsilon_k = \epsilon_0 \, \gamma^{\lfloor k / s \rfloor}

    with :math:`s` = ``step_size``: the first drop is at step :math:`s`. It has no end.
    Same as torch's ``StepLR`` and Keras' ``ExponentialDecay(staircase=True)``.

    Args:
        initial: :math:`\epsilon_0`, a finite float >= 0.
        step_size: :math:`s`, an int >= 1.
        gamma: :math:`\gamma`, a float in [0, 1]; default 0.1 as in torch.

    Example:
        >>> from gradwise.schedules import step_decay
        >>> schedule = step_decay(1.0, step_size=30, gamma=0.5)
        >>> schedule(0), schedule(29), schedule(30), schedule(65)
        (1.0, 1.0, 0.5, 0.25)
    """

    initial: float
    step_size: int
    gamma: float = 0.1

    constraints = {"initial": NON_NEGATIVE, "step_size": POSITIVE_INT, "gamma": UNIT_INTERVAL}

    def _evaluate(self, step: Tensor) -> Tensor:
        return self.initial * self.gamma ** torch.floor(step / self.step_size)


@final
@dataclass(frozen=True)
class multistep_decay(StepFunction):
    r"""Multiply by ``gamma`` at each milestone.

    .. math::
        \epsilon_k = \epsilon_0 \, \gamma^{\#\{m_i \le k\}}

    so at step :math:`m_i` the value has already dropped for the :math:`i`-th time; after
    the last milestone it stays at :math:`\epsilon_0 \gamma^{n}`. Same as torch's
    ``MultiStepLR``, except that milestones must be strictly increasing here (torch counts
    a repeated milestone twice). ``milestones`` is stored as a tuple.

    Args:
        initial: :math:`\epsilon_0`, a finite float >= 0.
        milestones: the steps :math:`m_1 < m_2 < \dots`, ints >= 1.
        gamma: :math:`\gamma`, a float in [0, 1]; default 0.1 as in torch.

    Example:
        >>> from gradwise.schedules import multistep_decay
        >>> schedule = multistep_decay(1.0, milestones=[30, 80], gamma=0.5)
        >>> schedule(29), schedule(30), schedule(80), schedule(10**6)
        (1.0, 0.5, 0.25, 0.25)
    """

    initial: float
    milestones: Sequence[int]
    gamma: float = 0.1

    constraints = {
        "initial": NON_NEGATIVE,
        "milestones": INCREASING_POSITIVE_INTS,
        "gamma": UNIT_INTERVAL,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "milestones", tuple(self.milestones))

    def _evaluate(self, step: Tensor) -> Tensor:
        num_drops = torch.zeros_like(step)
        for milestone in self.milestones:
            num_drops = num_drops + (step >= milestone)
        return self.initial * self.gamma**num_drops


@final
@dataclass(frozen=True)
class exponential_decay(StepFunction):
    r"""Multiply by ``gamma`` every step: :math:`\epsilon_k = \epsilon_0 \gamma^k`.

    It has no end: the value decays towards 0 for ever. Same as torch's
    ``ExponentialLR``. optax's and Keras' ``exponential_decay`` take a rate per
    ``transition_steps`` / ``decay_steps`` instead: for a rate :math:`r` per :math:`N`
    steps, use ``gamma = r ** (1 / N)``.

    Args:
        initial: :math:`\epsilon_0`, a finite float >= 0.
        gamma: :math:`\gamma`, a float in [0, 1].

    Example:
        >>> from gradwise.schedules import exponential_decay
        >>> schedule = exponential_decay(1.0, gamma=0.5)
        >>> schedule(0), schedule(1), schedule(3)
        (1.0, 0.5, 0.125)
    """

    initial: float
    gamma: float

    constraints = {"initial": NON_NEGATIVE, "gamma": UNIT_INTERVAL}

    def _evaluate(self, step: Tensor) -> Tensor:
        return self.initial * self.gamma**step


@final
@dataclass(frozen=True)
class inverse_time_decay(StepFunction):
    r"""Decay as :math:`1/k`.

    .. math::
        \epsilon_k = \frac{\epsilon_0}{1 + r \, k / N}

    with :math:`r` = ``decay_rate`` and :math:`N` = ``decay_steps``. It has no end. Same
    as Keras' ``InverseTimeDecay`` (``staircase=False``). torch's Adagrad ``lr_decay`` is
    the same curve counted from step 1 with :math:`N = 1`.

    Args:
        initial: :math:`\epsilon_0`, a finite float >= 0.
        decay_rate: :math:`r`, a finite float >= 0.
        decay_steps: :math:`N`, a finite float > 0; default 1.

    Example:
        >>> from gradwise.schedules import inverse_time_decay
        >>> schedule = inverse_time_decay(1.0, decay_rate=0.5, decay_steps=10)
        >>> schedule(0), schedule(20), schedule(60)
        (1.0, 0.5, 0.25)
    """

    initial: float
    decay_rate: float
    decay_steps: float = 1

    constraints = {"initial": NON_NEGATIVE, "decay_rate": NON_NEGATIVE, "decay_steps": POSITIVE}

    def _evaluate(self, step: Tensor) -> Tensor:
        return self.initial / (1.0 + self.decay_rate * step / self.decay_steps)


@final
@dataclass(frozen=True)
class polynomial_decay(StepFunction):
    r"""Decay along a polynomial to ``final`` at step ``num_steps``, then stay there.

    .. math::
        \epsilon_k = (\epsilon_0 - \epsilon_T)
            \left(1 - \frac{\min(k, T)}{T}\right)^{p} + \epsilon_T

    with :math:`T` = ``num_steps`` and :math:`p` = ``power``. Same as optax's
    ``polynomial_schedule``, Keras' ``PolynomialDecay`` (``cycle=False``) and, for
    ``final=0``, torch's ``PolynomialLR``.

    Args:
        initial: :math:`\epsilon_0`, a finite float >= 0.
        num_steps: :math:`T`, an int >= 1.
        final: :math:`\epsilon_T`, a finite float >= 0; default 0.
        power: :math:`p`, a finite float > 0; default 1 (linear).

    Example:
        >>> from gradwise.schedules import polynomial_decay
        >>> schedule = polynomial_decay(1.0, num_steps=10, power=2.0)
        >>> schedule(0), schedule(5), schedule(10), schedule(11)
        (1.0, 0.25, 0.0, 0.0)
    """

    initial: float
    num_steps: int
    final: float = 0.0
    power: float = 1.0

    constraints = {
        "initial": NON_NEGATIVE,
        "num_steps": POSITIVE_INT,
        "final": NON_NEGATIVE,
        "power": POSITIVE,
    }

    def _evaluate(self, step: Tensor) -> Tensor:
        remaining = 1.0 - torch.clamp(step, max=self.num_steps) / self.num_steps
        return (self.initial - self.final) * remaining**self.power + self.final


@final
@dataclass(frozen=True)
class linear_decay(StepFunction):
    r"""Go in a straight line from ``initial`` to ``final`` by step ``num_steps``, then stay.

    The lectures' linear decay, with :math:`\tau` = ``num_steps``:

    .. math::
        \epsilon_k = \left(1 - \frac{k}{\tau}\right)\epsilon_0 + \frac{k}{\tau}\epsilon_\tau
        \quad (k \le \tau), \qquad \epsilon_k = \epsilon_\tau \quad (k > \tau).

    Same as optax's ``linear_schedule``; torch's ``LinearLR`` draws the same line as
    factors of the base lr.

    Args:
        initial: :math:`\epsilon_0`, a finite float >= 0.
        final: :math:`\epsilon_\tau`, a finite float >= 0 (it may exceed ``initial``).
        num_steps: :math:`\tau`, an int >= 1.

    Example:
        >>> from gradwise.schedules import linear_decay
        >>> schedule = linear_decay(1.0, final=0.2, num_steps=4)
        >>> schedule(0), schedule(2), schedule(4), schedule(100)
        (1.0, 0.6, 0.2, 0.2)
    """

    initial: float
    final: float
    num_steps: int

    constraints = {"initial": NON_NEGATIVE, "final": NON_NEGATIVE, "num_steps": POSITIVE_INT}

    def _evaluate(self, step: Tensor) -> Tensor:
        fraction = torch.clamp(step, max=self.num_steps) / self.num_steps
        return (1.0 - fraction) * self.initial + fraction * self.final


@final
@dataclass(frozen=True)
class cosine_decay(StepFunction):
    r"""Follow half a cosine from ``initial`` down to ``final`` at step ``num_steps``, then stay.

    .. math::
        \epsilon_k = \epsilon_T + \frac{\epsilon_0 - \epsilon_T}{2}
            \left(1 + \cos\frac{\pi \min(k, T)}{T}\right)

    with :math:`T` = ``num_steps``. Past :math:`T` the value stays at :math:`\epsilon_T`,
    as in optax's ``cosine_decay_schedule`` and Keras' ``CosineDecay`` (both give the
    floor as a fraction ``alpha`` of the initial value; here ``final`` is the value
    itself, like torch's ``eta_min``). torch's ``CosineAnnealingLR`` agrees up to
    :math:`T` and then rises again.

    Args:
        initial: :math:`\epsilon_0`, a finite float >= 0.
        num_steps: :math:`T`, an int >= 1.
        final: :math:`\epsilon_T`, a finite float >= 0; default 0.

    Example:
        >>> from gradwise.schedules import cosine_decay
        >>> schedule = cosine_decay(1.0, num_steps=100, final=0.1)
        >>> schedule(0), schedule(50), schedule(100), schedule(150)
        (1.0, 0.55, 0.1, 0.1)

    Reference:
        Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
        ICLR 2017.
    """

    initial: float
    num_steps: int
    final: float = 0.0

    constraints = {"initial": NON_NEGATIVE, "num_steps": POSITIVE_INT, "final": NON_NEGATIVE}

    def _evaluate(self, step: Tensor) -> Tensor:
        fraction = torch.clamp(step, max=self.num_steps) / self.num_steps
        return cosine_interpolation(self.initial, self.final, fraction)


def cosine_interpolation(start: float | Tensor, end: float, fraction: Tensor) -> Tensor:
    """Half a cosine from ``start`` (fraction 0) to ``end`` (fraction 1)."""
    return end + (start - end) / 2.0 * (1.0 + torch.cos(math.pi * fraction))
