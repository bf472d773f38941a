"""Two-dimensional test surfaces with their known minima and saddle points, as data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from gradwise._validation import OneOf, check

PointKind = Literal["global minimum", "local minimum", "saddle point", "local maximum"]


@dataclass(frozen=True)
class CriticalPoint:
    """A point where a surface's gradient is zero: where it is, its value, and what it is."""

    location: tuple[float, float]
    value: float
    kind: PointKind


@dataclass(frozen=True)
class Surface:
    r"""A function of two variables to watch optimizers on, with its known critical points.

    Call it on a tensor of shape ``(..., 2)`` (the last axis holds ``(x, y)``) to get the
    values, shape ``(...)``; it is differentiable, so an optimizer can run on a 2-element
    parameter. ``domain`` is the ``((x_min, x_max), (y_min, y_max))`` box that the plots
    show, ``start`` a start point that makes an instructive run, ``learning_rate`` a
    step size at which plain gradient descent from ``start`` is stable.

    Example:
        >>> import torch
        >>> from gradwise.viz import get_surface
        >>> rosenbrock = get_surface("rosenbrock")
        >>> rosenbrock(torch.tensor([1.0, 1.0])).item()
        0.0
        >>> [point.location for point in rosenbrock.minima]
        [(1.0, 1.0)]
    """

    name: str
    formula: str
    function: Callable[[Tensor, Tensor], Tensor]
    domain: tuple[tuple[float, float], tuple[float, float]]
    critical_points: tuple[CriticalPoint, ...]
    start: tuple[float, float]
    learning_rate: float
    reference: str = ""

    def __call__(self, point: Tensor) -> Tensor:
        return self.function(point[..., 0], point[..., 1])

    @property
    def minima(self) -> tuple[CriticalPoint, ...]:
        """The global and local minima (empty for a surface unbounded below)."""
        return tuple(p for p in self.critical_points if p.kind.endswith("minimum"))

    @property
    def global_minimum(self) -> CriticalPoint | None:
        """The lowest listed minimum, or None if the surface has none."""
        return min(self.minima, key=lambda point: point.value, default=None)

    @property
    def center(self) -> Tensor:
        """The domain's center, a float64 point."""
        (x_low, x_high), (y_low, y_high) = self.domain
        return torch.tensor([(x_low + x_high) / 2, (y_low + y_high) / 2], dtype=torch.float64)

    @property
    def escape_radius(self) -> float:
        """The divergence guard's default radius around :attr:`center`: 100 times the
        domain's larger side."""
        (x_low, x_high), (y_low, y_high) = self.domain
        return 100.0 * max(x_high - x_low, y_high - y_low)


def _quadratic(x: Tensor, y: Tensor) -> Tensor:
    return 0.5 * (x**2 + 20.0 * y**2)


def _rosenbrock(x: Tensor, y: Tensor) -> Tensor:
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def _beale(x: Tensor, y: Tensor) -> Tensor:
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _himmelblau(x: Tensor, y: Tensor) -> Tensor:
    return (x**2 + y - 11.0) ** 2 + (x + y**2 - 7.0) ** 2


def _saddle(x: Tensor, y: Tensor) -> Tensor:
    return x**2 - y**2


def _monkey_saddle(x: Tensor, y: Tensor) -> Tensor:
    return x**3 - 3.0 * x * y**2


def _styblinski_tang(x: Tensor, y: Tensor) -> Tensor:
    return 0.5 * (x**4 - 16.0 * x**2 + 5.0 * x + y**4 - 16.0 * y**2 + 5.0 * y)


# The roots of d/dx (x^4 - 16 x^2 + 5 x) = 4 x^3 - 32 x + 5, refined by Newton's method in
# float64: each coordinate of a Styblinski-Tang critical point is one of them.
# (x^4 - 16 x^2 + 5 x) / 2 at the two outer roots gives the per-coordinate values.
_ST_LOW, _ST_HIGH = -2.903534027771177, 2.746802770990837
_ST_LOW_VALUE, _ST_HIGH_VALUE = -39.16616570377141, -25.02944665528394


_CP = CriticalPoint
SURFACES: dict[str, Surface] = {
    surface.name: surface
    for surface in (
        Surface(
            "quadratic",
            "f(x, y) = (x^2 + 20 y^2) / 2  (Hessian diag(1, 20), condition number 20)",
            _quadratic,
            ((-3.0, 3.0), (-2.0, 2.0)),
            (_CP((0.0, 0.0), 0.0, "global minimum"),),
            start=(-2.5, 1.5),
            learning_rate=0.09,
            reference="Gradient descent bounces across the steep y direction and crawls "
            "along x; stable for lr < 2 / 20 = 0.1.",
        ),
        Surface(
            "rosenbrock",
            "f(x, y) = (1 - x)^2 + 100 (y - x^2)^2",
            _rosenbrock,
            ((-2.0, 2.0), (-1.0, 3.0)),
            (_CP((1.0, 1.0), 0.0, "global minimum"),),
            start=(-1.2, 1.0),
            learning_rate=1e-3,
            reference="Rosenbrock, The Computer Journal 3(3), 1960.",
        ),
        Surface(
            "beale",
            "f(x, y) = (1.5 - x + x y)^2 + (2.25 - x + x y^2)^2 + (2.625 - x + x y^3)^2",
            _beale,
            ((-4.5, 4.5), (-4.5, 4.5)),
            (_CP((3.0, 0.5), 0.0, "global minimum"),),
            start=(1.0, 1.5),
            learning_rate=1e-2,
            reference="Beale, 1958; the domain |x|, |y| <= 4.5 is the usual one.",
        ),
        Surface(
            "himmelblau",
            "f(x, y) = (x^2 + y - 11)^2 + (x + y^2 - 7)^2",
            _himmelblau,
            ((-5.0, 5.0), (-5.0, 5.0)),
            (
                _CP((3.0, 2.0), 0.0, "global minimum"),
                _CP((-2.805118086952745, 3.131312518250573), 0.0, "global minimum"),
                _CP((-3.779310253377747, -3.283185991286170), 0.0, "global minimum"),
                _CP((3.584428340330492, -1.848126526964404), 0.0, "global minimum"),
                _CP(
                    (-0.2708445906673476, -0.9230385564799816), 181.6165215225827, "local maximum"
                ),  # fmt: skip
            ),
            start=(0.0, 0.0),
            learning_rate=1e-2,
            reference="Himmelblau, Applied Nonlinear Programming, 1972: four equal minima.",
        ),
        Surface(
            "saddle",
            "f(x, y) = x^2 - y^2",
            _saddle,
            ((-2.0, 2.0), (-2.0, 2.0)),
            (_CP((0.0, 0.0), 0.0, "saddle point"),),
            start=(-1.5, 1e-3),
            learning_rate=0.05,
            reference="Hessian diag(2, -2): one direction of negative curvature; unbounded "
            "below, so every run eventually leaves the box.",
        ),
        Surface(
            "monkey_saddle",
            "f(x, y) = x^3 - 3 x y^2",
            _monkey_saddle,
            ((-2.0, 2.0), (-2.0, 2.0)),
            (_CP((0.0, 0.0), 0.0, "saddle point"),),
            start=(1.5, 1e-3),
            learning_rate=0.02,
            reference="A degenerate saddle: the Hessian vanishes at the origin, three valleys.",
        ),
        Surface(
            "styblinski_tang",
            "f(x, y) = (x^4 - 16 x^2 + 5 x + y^4 - 16 y^2 + 5 y) / 2",
            _styblinski_tang,
            ((-5.0, 5.0), (-5.0, 5.0)),
            (
                _CP((_ST_LOW, _ST_LOW), 2 * _ST_LOW_VALUE, "global minimum"),
                _CP((_ST_LOW, _ST_HIGH), _ST_LOW_VALUE + _ST_HIGH_VALUE, "local minimum"),
                _CP((_ST_HIGH, _ST_LOW), _ST_LOW_VALUE + _ST_HIGH_VALUE, "local minimum"),
                _CP((_ST_HIGH, _ST_HIGH), 2 * _ST_HIGH_VALUE, "local minimum"),
            ),
            start=(0.5, 4.5),
            learning_rate=1e-2,
            reference="Styblinski & Tang, Neural Networks 3(4), 1990; the global minimum is "
            "-39.16617 per coordinate.",
        ),
    )
}

SURFACE_NAMES: tuple[str, ...] = tuple(SURFACES)


def get_surface(name: str) -> Surface:
    """The test surface called ``name`` (one of :data:`SURFACE_NAMES`).

    Example:
        >>> from gradwise.viz import get_surface
        >>> get_surface("himmelblau").formula
        'f(x, y) = (x^2 + y - 11)^2 + (x + y^2 - 7)^2'
    """
    check("name", "get_surface", name, OneOf(SURFACE_NAMES))
    return SURFACES[name]
