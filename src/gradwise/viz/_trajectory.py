"""Run optimizers on a test surface from one start point and record where they go."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from gradwise._validation import POSITIVE, POSITIVE_INT, Interval, PairOf, check
from gradwise.optim import GradientTransform, Newton, Optimizer
from gradwise.viz._surfaces import Surface

#: An optimizer for the run: a gradient transform (a ``chain(...)``), run by
#: :class:`gradwise.optim.Optimizer`, or a function from the parameter list to a
#: ``torch.optim.Optimizer`` (``lambda params: SGD(params, lr=1e-3)``).
OptimizerSpec = GradientTransform | Callable[[list[Tensor]], torch.optim.Optimizer]

_FINITE = Interval()


@dataclass(frozen=True)
class Trajectory:
    """Where one optimizer went: the start point and the point after each step.

    ``points`` has shape ``(steps_run + 1, 2)``, ``values`` the surface's value at each
    point. ``stop_reason`` says why the run stopped before ``num_steps`` (the divergence
    guard: a non-finite value, or a point that left the region around the domain); it is
    None for a run that took every step.
    """

    name: str
    points: NDArray[np.float64]
    values: NDArray[np.float64]
    stop_reason: str | None = None

    @property
    def diverged(self) -> bool:
        """Whether the divergence guard stopped the run."""
        return self.stop_reason is not None

    @property
    def final_point(self) -> tuple[float, float]:
        """The last recorded point."""
        return float(self.points[-1, 0]), float(self.points[-1, 1])

    @property
    def final_value(self) -> float:
        """The surface's value at the last recorded point."""
        return float(self.values[-1])


def run_optimizers(
    surface: Surface,
    optimizers: Mapping[str, OptimizerSpec],
    *,
    start: Sequence[float] | None = None,
    num_steps: int = 100,
    escape_radius: float | None = None,
) -> list[Trajectory]:
    r"""Run each optimizer on ``surface`` from the same start point; one trajectory each.

    The parameter is one float64 tensor ``[x, y]``; each step evaluates the surface,
    backpropagates and calls ``optimizer.step(closure)``, so closure-based optimizers
    work too (``torch.optim.LBFGS``, and :class:`gradwise.optim.Newton`, whose closure
    returns the loss without backpropagating). The divergence guard stops a run
    when the value or the point stops being finite, or when the point is farther than
    ``escape_radius`` from the domain's center (default: 100 times the domain's larger
    side), and records why. Torch's global RNG state is restored afterwards, so a noisy
    transform (``add_noise``) leaves the caller's random stream as it was.

    Args:
        surface: the test surface (see :func:`get_surface`).
        optimizers: label -> a gradient transform or a function
            ``params -> torch.optim.Optimizer``.
        start: the start point ``(x, y)``; default ``surface.start``.
        num_steps: the number of optimizer steps.
        escape_radius: the divergence guard's radius around the domain's center.

    Example:
        >>> from gradwise import optim
        >>> from gradwise.viz import get_surface, run_optimizers
        >>> quadratic = get_surface("quadratic")
        >>> runs = run_optimizers(
        ...     quadratic,
        ...     {"SGD": lambda params: optim.SGD(params, lr=0.09),
        ...      "too fast": optim.chain(optim.scale_by_learning_rate(0.11))},
        ...     num_steps=300,
        ... )
        >>> [round(run.final_value, 6) for run in runs[:1]], runs[1].diverged
        ([0.0], True)
    """
    owner = "run_optimizers"
    if not isinstance(surface, Surface):
        raise TypeError(
            f"The 'surface' parameter of {owner} must be a Surface (see get_surface). "
            f"Got {type(surface).__name__} instead."
        )
    check("num_steps", owner, num_steps, POSITIVE_INT)
    start = surface.start if start is None else start
    check("start", owner, tuple(start) if isinstance(start, list) else start, PairOf(_FINITE))
    if escape_radius is None:
        escape_radius = surface.escape_radius
    check("escape_radius", owner, escape_radius, POSITIVE)
    if not isinstance(optimizers, Mapping) or not optimizers:
        raise TypeError(
            f"The 'optimizers' parameter of {owner} must be a non-empty mapping from labels "
            f"to optimizers. Got {optimizers!r} instead."
        )
    with torch.random.fork_rng(devices=[]):
        return [
            _run_one(surface, name, spec, start, num_steps, float(escape_radius))
            for name, spec in optimizers.items()
        ]


def step_on(optimizer: torch.optim.Optimizer, loss: Callable[[], Tensor]) -> None:
    """One ``optimizer.step(closure)`` on ``loss()``, so closure optimizers run too.

    The closure follows torch's convention (LBFGS re-evaluates it: zero the gradients,
    backpropagate, return the loss), except for :class:`gradwise.optim.Newton`, which
    differentiates the loss twice itself and wants it without ``backward()``.
    """
    backward = not isinstance(optimizer, Newton)

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        value = loss()
        if backward:
            value.backward()
        return value

    optimizer.step(closure)  # type: ignore[arg-type]  # torch types it float; LBFGS needs a tensor


def _make_optimizer(name: str, spec: Any, params: list[Tensor]) -> torch.optim.Optimizer:
    if isinstance(spec, GradientTransform):
        return Optimizer(params, spec)
    optimizer = spec(params) if callable(spec) else None
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"The optimizer {name!r} of run_optimizers must be a GradientTransform or a "
            "function that returns a torch.optim.Optimizer for the given parameters "
            "(e.g. lambda params: SGD(params, lr=1e-3)). "
            f"Got {type(spec).__name__} returning {type(optimizer).__name__} instead."
        )
    return optimizer


def _run_one(
    surface: Surface,
    name: str,
    spec: OptimizerSpec,
    start: Sequence[float],
    num_steps: int,
    escape_radius: float,
) -> Trajectory:
    parameter = torch.tensor([float(start[0]), float(start[1])], dtype=torch.float64)
    parameter.requires_grad_(True)
    optimizer = _make_optimizer(name, spec, [parameter])
    center = surface.center
    points = [parameter.detach().clone()]
    stop_reason = None
    for step in range(1, num_steps + 1):
        step_on(optimizer, lambda: surface(parameter))
        point = parameter.detach().clone()
        points.append(point)
        stop_reason = _divergence(surface, point, center, escape_radius, step)
        if stop_reason is not None:
            break
    stacked = torch.stack(points)  # (steps_run + 1, 2)
    with torch.no_grad():
        values = surface(stacked)
    return Trajectory(name, stacked.numpy(), values.numpy(), stop_reason)


def _divergence(
    surface: Surface, point: Tensor, center: Tensor, escape_radius: float, step: int
) -> str | None:
    """Why the run must stop at this point, or None."""
    with torch.no_grad():
        value = float(surface(point))
    if not (bool(torch.isfinite(point).all()) and math.isfinite(value)):
        return f"non-finite point or value at step {step}"
    distance = float(torch.linalg.vector_norm(point - center))
    if distance > escape_radius:
        return (
            f"left the region at step {step}: distance {distance:.3g} from the domain's "
            f"center > {escape_radius:.3g}"
        )
    return None
