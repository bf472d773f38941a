"""Steps to a known minimum on the classic 2-D surfaces, each optimizer at its tuned rate."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gradwise._validation import POSITIVE, POSITIVE_INT, Interval, Satisfies, check
from gradwise.bench._scoring import (
    OptimizerSpec,
    Tuned,
    check_optimizers,
    make_optimizer,
)
from gradwise.viz import SURFACES, CriticalPoint, Surface
from gradwise.viz._trajectory import step_on

SURFACE_LEARNING_RATES: tuple[float, ...] = tuple(10.0 ** (k / 3) for k in range(-15, 1))
"""The log grid the surfaces tune on: 1e-5 to 1, three points per decade."""

BENCHMARK_SURFACES: tuple[str, ...] = (
    "rosenbrock", "beale", "himmelblau", "styblinski_tang", "saddle", "quadratic",
)  # fmt: skip
"""The :mod:`gradwise.viz` surfaces :func:`surface_benchmark` runs by default."""

SADDLE_ESCAPE = -1.0
"""On a surface with no minimum (the saddle) the target is a value below this."""


def ill_conditioned_quadratic(condition: float) -> Surface:
    r"""The quadratic :math:`f(x, y) = (x^2 + \kappa y^2) / 2`, minimum 0 at the origin.

    Gradient descent at its best fixed rate :math:`2 / (1 + \kappa)` contracts the error
    by :math:`(\kappa - 1) / (\kappa + 1)` a step, so it needs about
    :math:`(\kappa / 2) \ln(1 / \text{tol})` steps; heavy-ball momentum about
    :math:`\sqrt{\kappa}` times fewer.

    Example:
        >>> import torch
        >>> from gradwise.bench import ill_conditioned_quadratic
        >>> ill_conditioned_quadratic(100.0)(torch.tensor([1.0, 1.0])).item()
        50.5
    """
    check("condition", "ill_conditioned_quadratic", condition, Interval(low=1.0, finite=True))
    kappa = float(condition)
    return Surface(
        f"quadratic_kappa{kappa:g}",
        f"f(x, y) = (x^2 + {kappa:g} y^2) / 2  (condition number {kappa:g})",
        lambda x, y: 0.5 * (x**2 + kappa * y**2),
        ((-3.0, 3.0), (-2.0, 2.0)),
        (CriticalPoint((0.0, 0.0), 0.0, "global minimum"),),
        start=(-2.5, 1.5),
        learning_rate=1.0 / kappa,
    )


@dataclass(frozen=True)
class SurfaceRun:
    """One optimizer on one surface at its best rate: the steps it took to reach the target.

    ``steps`` is None when no rate of the grid reached the target within the budget;
    ``point`` is where the best run stopped and ``minimum`` the listed minimum nearest to
    it (None on a surface without one), ``distance`` the distance between them.
    """

    surface: str
    optimizer: str
    learning_rate: float | None
    steps: int | None
    point: tuple[float, float]
    value: float
    minimum: CriticalPoint | None
    distance: float


@dataclass(frozen=True)
class SurfaceResults:
    """The runs of :func:`surface_benchmark`, with the table they render to."""

    runs: tuple[SurfaceRun, ...]
    tolerance: float
    max_steps: int

    def get(self, surface: str, optimizer: str) -> SurfaceRun:
        """The run of ``optimizer`` on ``surface``."""
        for run in self.runs:
            if run.surface == surface and run.optimizer == optimizer:
                return run
        raise KeyError(f"no run of {optimizer!r} on {surface!r}")

    def to_table(self) -> Any:
        """A :class:`gradwise.report.Table`: one row per surface, steps per optimizer."""
        from gradwise.report import Cell, Table

        optimizers = list(dict.fromkeys(run.optimizer for run in self.runs))
        surfaces = list(dict.fromkeys(run.surface for run in self.runs))
        rows: list[list[Any]] = []
        for surface in surfaces:
            cells: list[Any] = [surface]
            for optimizer in optimizers:
                run = self.get(surface, optimizer)
                text = "not reached" if run.steps is None else (
                    f"{run.steps} (lr {run.learning_rate:.2g})"
                    if run.learning_rate is not None else str(run.steps))  # fmt: skip
                cells.append(Cell(run.steps, text))
            rows.append(cells)
        title = (
            f"Steps to within {self.tolerance:g} of a listed minimum (saddle: to a value "
            f"below {SADDLE_ESCAPE:g}), best rate of the grid, budget {self.max_steps}"
        )
        return Table(title, ["surface", *optimizers], rows)


def _nearest(surface: Surface, point: torch.Tensor) -> tuple[CriticalPoint | None, float]:
    if not surface.minima:
        return None, math.nan
    distances = [
        math.dist(point.tolist(), minimum.location) for minimum in surface.minima
    ]  # fmt: skip
    best = min(range(len(distances)), key=distances.__getitem__)
    return surface.minima[best], distances[best]


def _reached(surface: Surface, point: torch.Tensor, value: float, tolerance: float) -> bool:
    if not surface.minima:
        return value <= SADDLE_ESCAPE
    return _nearest(surface, point)[1] <= tolerance


def _run(
    surface: Surface, spec: OptimizerSpec, lr: float | None, tolerance: float, max_steps: int
) -> tuple[int | None, torch.Tensor, float]:
    """(steps to the target or None, final point, final value) of one run."""
    point = torch.tensor(surface.start, dtype=torch.float64, requires_grad=True)
    optimizer = make_optimizer(spec, [point], lr)
    radius, center = surface.escape_radius, surface.center  # gradwise.viz's guard
    value = float(surface(point.detach()))
    for step in range(1, max_steps + 1):
        step_on(optimizer, lambda: surface(point))
        with torch.no_grad():
            value = float(surface(point))
            if not math.isfinite(value) or float((point - center).norm()) > radius:
                return None, point.detach(), value
            if _reached(surface, point, value, tolerance):
                return step, point.detach(), value
    return None, point.detach(), value


def _benchmark_one(
    surface: Surface, label: str, spec: OptimizerSpec, grid: tuple[float, ...],
    tolerance: float, max_steps: int,
) -> SurfaceRun:  # fmt: skip
    rates: Sequence[float | None] = (
        (spec.learning_rates or grid) if isinstance(spec, Tuned) else (None,)
    )
    outcomes = [(lr, *_run(surface, spec, lr, tolerance, max_steps)) for lr in rates]
    # fewest steps first; among rates that never arrived, the lowest finite final value
    lr, steps, point, value = min(
        outcomes, key=lambda o: (o[1] is None, o[1] or 0, o[3] if math.isfinite(o[3]) else math.inf)
    )
    minimum, distance = _nearest(surface, point)
    return SurfaceRun(
        surface.name, label, lr, steps, (float(point[0]), float(point[1])), value,
        minimum, distance,
    )  # fmt: skip


def surface_benchmark(
    optimizers: Mapping[str, OptimizerSpec],
    surfaces: Sequence[str | Surface] = BENCHMARK_SURFACES,
    *,
    tolerance: float = 1e-3,
    max_steps: int = 2000,
    learning_rates: Sequence[float] = SURFACE_LEARNING_RATES,
) -> SurfaceResults:
    """Steps each optimizer needs, at its best learning rate, to reach a surface's minimum.

    Each run starts at the surface's ``start`` (float64) and stops once the point is within
    ``tolerance`` (Euclidean distance) of any listed minimum (:attr:`Surface.minima`, local
    ones included, the one reached is reported); on a surface without a minimum (the
    saddle, unbounded below) once the value drops below :data:`SADDLE_ESCAPE`. A
    :class:`Tuned` optimizer runs at every rate of its grid (default ``learning_rates``)
    and the rate with the fewest steps wins; a run that goes farther than 100 domain widths
    from the domain's center or stops being finite counts as not reached.

    Args:
        optimizers: label -> factory ``params -> optimizer``, gradient transform or
            :class:`Tuned`.
        surfaces: names from :data:`gradwise.viz.SURFACE_NAMES` or :class:`Surface`\\ s
            (e.g. :func:`ill_conditioned_quadratic`).
        tolerance: the distance to a minimum that counts as reached.
        max_steps: the step budget of one run.
        learning_rates: the default grid of :class:`Tuned`.

    Example:
        >>> from gradwise.bench import Tuned, surface_benchmark
        >>> from gradwise.optim import SGD
        >>> gd = Tuned(lambda params, lr: SGD(params, lr=lr), learning_rates=(0.01, 0.05))
        >>> surface_benchmark({"GD": gd}, ["quadratic"]).get("quadratic", "GD").steps
        153
    """
    owner = "surface_benchmark"
    check_optimizers(owner, optimizers)
    check("surfaces", owner, surfaces, Satisfies(
        lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0
        and all(isinstance(s, Surface) or s in SURFACES for s in v),
        "a non-empty sequence of Surfaces or names from gradwise.viz.SURFACE_NAMES"))  # fmt: skip
    check("tolerance", owner, tolerance, POSITIVE)
    check("max_steps", owner, max_steps, POSITIVE_INT)
    check("learning_rates", owner, learning_rates, Satisfies(
        lambda v: isinstance(v, Sequence) and len(v) > 0 and all(POSITIVE.is_satisfied_by(x)
                                                                 for x in v),
        "a non-empty sequence of finite floats > 0"))  # fmt: skip
    grid = tuple(float(lr) for lr in learning_rates)
    runs = tuple(
        _benchmark_one(
            surface if isinstance(surface, Surface) else SURFACES[surface],
            label,
            spec,
            grid,
            float(tolerance),
            max_steps,
        )  # fmt: skip
        for surface in surfaces
        for label, spec in optimizers.items()
    )
    return SurfaceResults(runs, float(tolerance), max_steps)
