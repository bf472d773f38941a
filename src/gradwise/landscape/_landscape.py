"""Loss along a line between two parameter sets, and 1-D and 2-D slices around a point."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from gradwise._validation import NON_NEGATIVE, POSITIVE, POSITIVE_INT, Interval, check
from gradwise.landscape._directions import _MODULE, check_direction, check_materialized
from gradwise.landscape._evaluate import (
    Data,
    LossFunction,
    PointMaker,
    as_batches,
    as_loss,
    evaluate_points,
)

Array = NDArray[np.float64]
ParameterSet = Mapping[str, Tensor] | Iterable[tuple[str, Tensor]] | nn.Module

# Grid points per vectorized forward when points_per_batch is None (the one dispatch
# point: _points_per_batch). Measured with tests/landscape/bench_evaluation.py on this
# project's 2-core CPU, one thread, a 441-point 2-D slice on 512 samples, seconds for
# 1 / 4 / 16 / 64 points per call: MLP 2x32 with BatchNorm 0.47 / 0.24 / 0.30 / 0.39;
# MLP 2x128 1.30 / 1.36 (4) / 1.59 (8); CNN1d 2x16 2.4 / 7.2 / 6.9 / 13.7 (vmap turns a
# conv with batched weights into a grouped conv, slow on CPU). So the CPU default is the
# plain loop; on CUDA, where a batched matmul or grouped conv fills the device, 16 points
# per call (not measured here: no GPU on the development machine).
CUDA_POINTS_PER_BATCH = 16
_AT_LEAST_TWO = Interval(low=2.0, kind="int")
# The grid is built in float64 by np.linspace, which needs its width (2 * span, or
# 1 + 2 * extend) to be finite: at 1e308 it warned of an overflow and gave inf and NaN.
_FLOAT64_HALF_MAX = float(np.finfo(np.float64).max) / 2


@dataclass(frozen=True)
class Landscape1D:
    """The loss along one line in parameter space.

    Attributes:
        coordinates: (points,) positions along the line: the interpolation weight
            ``alpha`` (0 at A, 1 at B) or the step along a direction (0 at the center).
        losses: (points,) the mean loss at each position.
        kind: "interpolation" or "slice".
        marks: (position, label) pairs the plot marks: A and B, or the model.

    Example:
        >>> import numpy as np
        >>> from gradwise.landscape import Landscape1D
        >>> curve = Landscape1D(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5) ** 2)
        >>> curve.plot_png()[:4]
        b'\\x89PNG'
    """

    coordinates: Array
    losses: Array
    kind: str = "slice"
    marks: tuple[tuple[float, str], ...] = field(default=())

    def plot_png(self) -> bytes:
        """The curve as a PNG (matplotlib's Agg canvas, imported only here)."""
        from gradwise.landscape._plots import curve_png

        return curve_png(self)


@dataclass(frozen=True)
class Landscape2D:
    """The loss on a grid spanned by two directions around a center point.

    ``losses[i, j]`` is the loss at ``center + alphas[i] * d1 + betas[j] * d2``.

    Attributes:
        alphas: (resolution,) steps along the first direction.
        betas: (resolution,) steps along the second direction.
        losses: (resolution, resolution) mean losses.

    Example:
        >>> import numpy as np
        >>> from gradwise.landscape import Landscape2D
        >>> axis = np.linspace(-1, 1, 5)
        >>> bowl = Landscape2D(axis, axis, axis[:, None] ** 2 + 4 * axis[None, :] ** 2)
        >>> bowl.plot_contour_png()[:4], bowl.plot_surface_png()[:4]
        (b'\\x89PNG', b'\\x89PNG')
    """

    alphas: Array
    betas: Array
    losses: Array

    def plot_contour_png(self) -> bytes:
        """Contour lines of the loss (log-spaced levels when it spans > 2 decades)."""
        from gradwise.landscape._plots import contour_png

        return contour_png(self)

    def plot_surface_png(self) -> bytes:
        """The loss as a 3-D surface over the two directions."""
        from gradwise.landscape._plots import surface_png

        return surface_png(self)


def interpolate(
    model: nn.Module,
    params_a: ParameterSet,
    params_b: ParameterSet,
    loss_fn: LossFunction | str,
    data: Data,
    num_points: int = 25,
    extend: float = 0.5,
    *,
    batch_size: int | None = None,
    points_per_batch: int | None = None,
) -> Landscape1D:
    r"""The loss along the straight line from parameter set A to B (Goodfellow et al. 2015).

    .. math:: \theta(\alpha) = (1 - \alpha)\,\theta_A + \alpha\,\theta_B,
        \qquad \alpha \in [-e, 1 + e]

    evaluated at ``num_points`` evenly spaced :math:`\alpha` (plus exactly 0 and 1 when the
    grid misses them). :math:`\alpha = 0` is A and :math:`\alpha = 1` is B bit for bit
    (``torch.lerp``). The model is evaluated in eval mode. Floating-point buffers
    (BatchNorm's running statistics) are interpolated too when both sets have them (a
    ``state_dict`` or a module does), so the endpoints are exactly the losses of A and B,
    and held at the nearer end's values past them (extrapolated, a running variance can
    turn negative and the loss NaN); otherwise the model's own buffers are used all along
    the line. Typical
    uses: A the initialization and B the trained weights (is the path monotone?), or two
    trained solutions (is there a barrier between them?).

    Args:
        model: the network; it is left exactly as it was (parameters, buffers, modes,
            ``.grad``, torch's RNG state).
        params_a, params_b: a module, a mapping (``state_dict()``) or an iterable of
            ``(name, tensor)`` pairs (``named_parameters()``, read once) with a tensor for
            every parameter name of ``model``; extra keys are ignored.
        loss_fn: ``(outputs, targets) -> mean loss``, or "cross_entropy", "hinge", "mse".
            It runs with the point's parameters in the model, so a penalty that reads
            them from the model (``l2_penalty(model, ...)``) is taken at each point; one
            on tensors held from before the call is refused with a ValueError.
        data: a :class:`gradwise.data.Dataset`, an ``(inputs, targets)`` pair, or a list
            of pairs; the loss is the sample-weighted mean over all of it.
        num_points: an int >= 2.
        extend: :math:`e`, a finite float >= 0: how far to go past both ends (at most
            the largest value of the parameters' dtype less 1, and half the largest
            float64).
        batch_size: samples per forward (default: all of a Dataset at once).
        points_per_batch: parameter sets per vectorized forward (``torch.func.vmap``);
            1 evaluates them one by one. Default: 1 on the CPU (measured faster there for
            most models), 16 on CUDA. Under vmap no parameter can be told frozen, so a
            ``loss_fn`` whose value depends on that (``l2_penalty(model, ...)`` on a model
            with frozen weights) is refused with a ValueError when this is above 1.

    Example:
        >>> import copy, torch
        >>> from gradwise.landscape import interpolate
        >>> model = torch.nn.Linear(2, 1)
        >>> start = copy.deepcopy(model.state_dict())
        >>> with torch.no_grad():
        ...     _ = model.weight.add_(1.0)
        >>> data = (torch.randn(8, 2), torch.randn(8, 1))
        >>> line = interpolate(model, start, model.state_dict(), "mse", data, num_points=5)
        >>> line.coordinates.tolist()
        [-0.5, 0.0, 0.5, 1.0, 1.5]

    Reference:
        Goodfellow, Vinyals and Saxe, "Qualitatively characterizing neural network
        optimization problems", ICLR 2015.
    """
    owner = "interpolate"
    _check_common(owner, model, batch_size, points_per_batch)
    check("num_points", owner, num_points, _AT_LEAST_TWO)
    check("extend", owner, extend, NON_NEGATIVE)
    _check_reach("extend", owner, extend, model, offset=1.0)
    start = _parameter_set(params_a, model, "params_a", owner)
    end = _parameter_set(params_b, model, "params_b", owner)
    for name in set(start) ^ set(end):  # a buffer only one side has: the model's own
        start.pop(name, None)
        end.pop(name, None)
    grid = np.linspace(-float(extend), 1.0 + float(extend), int(num_points))
    # A point that rounding put next to an end (2.8e-17 for 0) is that end, not a neighbor.
    spacing = (1.0 + 2.0 * float(extend)) / (int(num_points) - 1)
    for endpoint in (0.0, 1.0):
        grid[np.abs(grid - endpoint) < 1e-9 * spacing] = endpoint
    alphas = np.union1d(grid, [0.0, 1.0])
    buffers = {name for name, _ in model.named_buffers()}

    def make_points(first: int, stop: int) -> dict[str, Tensor]:
        points = {}
        for name, a in start.items():
            along = alphas[first:stop]
            if name in buffers:  # statistics are not extrapolated: a variance would go < 0
                along = np.clip(along, 0.0, 1.0)
            weight = torch.as_tensor(along, dtype=a.dtype, device=a.device)
            weight = weight.reshape((-1,) + (1,) * a.dim())
            points[name] = torch.lerp(a.unsqueeze(0), end[name].unsqueeze(0), weight)
        return points

    losses = _evaluate(model, loss_fn, data, make_points, len(alphas), owner, batch_size,
                       points_per_batch)  # fmt: skip
    return Landscape1D(alphas, losses, "interpolation", ((0.0, "A"), (1.0, "B")))


def slice_1d(
    model: nn.Module,
    loss_fn: LossFunction | str,
    data: Data,
    direction: Mapping[str, Tensor],
    span: float = 1.0,
    resolution: int = 21,
    *,
    batch_size: int | None = None,
    points_per_batch: int | None = None,
) -> Landscape1D:
    r"""The loss along one direction through the model's current parameters.

    .. math:: f(t) = L(\theta + t\,d), \qquad t \in [-s, s]

    at ``resolution`` evenly spaced :math:`t`. Use a filter-normalized direction from
    :func:`random_directions` so that :math:`t = 1` means a step as large as the weights
    themselves, filter by filter (Li et al. 2018). Evaluation and restoration as in
    :func:`interpolate`.

    Args:
        model, loss_fn, data, batch_size, points_per_batch: as in :func:`interpolate`.
        direction: a tensor for every parameter name (one of :func:`random_directions`).
        span: :math:`s`, a finite float > 0 (at most the largest value of the
            parameters' dtype, and half the largest float64).
        resolution: number of points, an int >= 2 (odd puts one at the center).

    Example:
        >>> import torch
        >>> from gradwise.landscape import random_directions, slice_1d
        >>> model = torch.nn.Linear(2, 3)
        >>> data = (torch.randn(16, 2), torch.randint(0, 3, (16,)))
        >>> (direction,) = random_directions(model, num=1)
        >>> curve = slice_1d(model, "cross_entropy", data, direction, resolution=5)
        >>> curve.coordinates.tolist()
        [-1.0, -0.5, 0.0, 0.5, 1.0]

    Reference:
        Li, Xu, Taylor, Studer and Goldstein, "Visualizing the Loss Landscape of Neural
        Nets", NeurIPS 2018.
    """
    owner = "slice_1d"
    _check_common(owner, model, batch_size, points_per_batch)
    check("span", owner, span, POSITIVE)
    _check_reach("span", owner, span, model, offset=0.0)
    check("resolution", owner, resolution, _AT_LEAST_TWO)
    step = check_direction(direction, model, "direction", owner)
    center = _current(model)
    steps = np.linspace(-float(span), float(span), int(resolution))

    def make_points(first: int, stop: int) -> dict[str, Tensor]:
        points = {}
        for name, theta in center.items():
            t = torch.as_tensor(steps[first:stop], dtype=theta.dtype, device=theta.device)
            t = t.reshape((-1,) + (1,) * theta.dim())
            points[name] = theta + t * step[name].to(theta)
        return points

    losses = _evaluate(model, loss_fn, data, make_points, len(steps), owner, batch_size,
                       points_per_batch)  # fmt: skip
    return Landscape1D(steps, losses, "slice", ((0.0, "model"),))


def slice_2d(
    model: nn.Module,
    loss_fn: LossFunction | str,
    data: Data,
    directions: Sequence[Mapping[str, Tensor]],
    span: float = 1.0,
    resolution: int = 21,
    *,
    batch_size: int | None = None,
    points_per_batch: int | None = None,
) -> Landscape2D:
    r"""The loss on the plane spanned by two directions through the model's parameters.

    .. math:: f(\alpha, \beta) = L(\theta + \alpha\,d_1 + \beta\,d_2),
        \qquad \alpha, \beta \in [-s, s]

    on a ``resolution`` x ``resolution`` grid (Li et al. 2018). All grid points go through
    the batched evaluator (``points_per_batch`` parameter sets per vectorized forward).
    Evaluation and restoration as in :func:`interpolate`.

    Args:
        model, loss_fn, data, batch_size, points_per_batch: as in :func:`interpolate`.
        directions: two directions (as :func:`random_directions` returns).
        span: :math:`s`, a finite float > 0 (at most the largest value of the
            parameters' dtype, and half the largest float64).
        resolution: points per axis, an int >= 2.

    Example:
        >>> import torch
        >>> from gradwise.landscape import random_directions, slice_2d
        >>> model = torch.nn.Linear(2, 3)
        >>> data = (torch.randn(16, 2), torch.randint(0, 3, (16,)))
        >>> surface = slice_2d(model, "cross_entropy", data, random_directions(model),
        ...                    resolution=5)
        >>> surface.losses.shape
        (5, 5)

    Reference:
        Li, Xu, Taylor, Studer and Goldstein, "Visualizing the Loss Landscape of Neural
        Nets", NeurIPS 2018.
    """
    owner = "slice_2d"
    _check_common(owner, model, batch_size, points_per_batch)
    check("span", owner, span, POSITIVE)
    _check_reach("span", owner, span, model, offset=0.0)
    check("resolution", owner, resolution, _AT_LEAST_TWO)
    if (
        isinstance(directions, Mapping)
        or not isinstance(directions, Sequence)
        or len(directions) != 2
    ):
        raise ValueError(
            f"The 'directions' parameter of {owner} must be a sequence of two directions "
            f"(as random_directions(model, num=2) returns). Got {type(directions).__name__}"
            f" of length {_length(directions)} instead."
        )
    first = check_direction(directions[0], model, "directions", owner)
    second = check_direction(directions[1], model, "directions", owner)
    center = _current(model)
    axis = np.linspace(-float(span), float(span), int(resolution))
    alphas, betas = (grid.ravel() for grid in np.meshgrid(axis, axis, indexing="ij"))

    def make_points(begin: int, stop: int) -> dict[str, Tensor]:
        points = {}
        for name, theta in center.items():
            shape = (-1,) + (1,) * theta.dim()
            a = torch.as_tensor(alphas[begin:stop], dtype=theta.dtype, device=theta.device)
            b = torch.as_tensor(betas[begin:stop], dtype=theta.dtype, device=theta.device)
            points[name] = (
                theta
                + a.reshape(shape) * first[name].to(theta)
                + b.reshape(shape) * second[name].to(theta)
            )
        return points

    losses = _evaluate(model, loss_fn, data, make_points, len(alphas), owner, batch_size,
                       points_per_batch)  # fmt: skip
    return Landscape2D(axis, axis.copy(), losses.reshape(len(axis), len(axis)))


# -- helpers --------------------------------------------------------------------------------


def _check_common(
    owner: str, model: nn.Module, batch_size: int | None, points_per_batch: int | None
) -> None:
    check("model", owner, model, _MODULE)
    if not any(True for _ in model.parameters()):
        raise ValueError(
            f"The 'model' parameter of {owner} must have parameters. Got a "
            f"{type(model).__name__} without any instead."
        )
    check_materialized(model, owner)
    if batch_size is not None:
        check("batch_size", owner, batch_size, POSITIVE_INT)
    if points_per_batch is not None:
        check("points_per_batch", owner, points_per_batch, POSITIVE_INT)


def _check_reach(name: str, owner: str, value: float, model: nn.Module, offset: float) -> None:
    """Refuse a span or extent whose grid, reaching ``offset + value`` from 0, overflows.

    In float64 np.linspace overflowed (see _FLOAT64_HALF_MAX). Past the range of the
    parameters' dtype a coordinate was cast to inf, and inf times a zero entry of the
    direction made every loss but the center's NaN, with no error (span 1e39, float32).
    """
    reach, width = ("span", "2 * span") if offset == 0 else (f"1 + {name}", f"1 + 2 * {name}")
    limit, reason = _FLOAT64_HALF_MAX, f"the grid's width ({width}) is finite in float64"
    for parameter in model.parameters():
        if parameter.is_floating_point() or parameter.is_complex():
            largest = float(torch.finfo(parameter.dtype).max)
            if largest < limit:
                dtype = str(parameter.dtype).removeprefix("torch.")
                limit, reason = (
                    largest,
                    f"the grid's end ({reach}) is finite in the model's {dtype}",
                )
    if float(value) + offset <= limit:
        return
    fix = (
        "use a span of a few units (along a filter-normalized direction, 1 is a step as large "
        "as the weights)"
        if offset == 0
        else "use an extend of a few units (0.5 goes half the way from A to B past each end)"
    )
    raise ValueError(
        f"The '{name}' parameter of {owner} must be at most {limit - offset!r}, so that "
        f"{reason}. Got {value!r} instead; {fix}."
    )


def _evaluate(
    model: nn.Module,
    loss_fn: object,
    data: object,
    make_points: PointMaker,
    num_points: int,
    owner: str,
    batch_size: int | None,
    points_per_batch: int | None,
) -> Array:
    loss = as_loss(loss_fn, owner)
    batches = as_batches(data, batch_size, model, owner)
    per_call = _points_per_batch(model, points_per_batch)
    losses = evaluate_points(model, loss, batches, make_points, num_points, per_call, owner)
    return losses.numpy()


def _points_per_batch(model: nn.Module, requested: int | None) -> int:
    """The one dispatch between the loop (1) and vmap (> 1); see CUDA_POINTS_PER_BATCH."""
    if requested is not None:
        return int(requested)
    on_cuda = next(iter(model.parameters())).is_cuda
    return CUDA_POINTS_PER_BATCH if on_cuda else 1


def _current(model: nn.Module) -> dict[str, Tensor]:
    return {name: parameter.detach() for name, parameter in model.named_parameters()}


def _parameter_set(value: object, model: nn.Module, name: str, owner: str) -> dict[str, Tensor]:
    """Detached tensors for every parameter of ``model``, on its device and in its dtype,
    and for each of its floating-point buffers that ``value`` has (a ``state_dict`` or a
    module has them all: BatchNorm's running statistics)."""
    mapping = check_direction(_as_mapping(value, name, owner), model, name, owner)
    tensors = {key: mapping[key].detach().to(p) for key, p in model.named_parameters()}
    for key, buffer in model.named_buffers():
        given = mapping.get(key)
        if buffer.is_floating_point() and isinstance(given, Tensor) and given.shape == buffer.shape:
            tensors[key] = given.detach().to(buffer)
    return tensors


def _as_mapping(value: object, name: str, owner: str) -> object:
    """A module's ``state_dict()``, or an iterable of (name, tensor) pairs read into a dict
    once (``named_parameters()`` is a generator: a second pass would find it empty). Any
    other value is returned for check_direction to report."""
    if isinstance(value, nn.Module):
        return value.state_dict()
    if isinstance(value, Mapping | Tensor | str | bytes) or not isinstance(value, Iterable):
        return value
    pairs = {}
    for item in value:
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(
                f"The '{name}' parameter of {owner} must be a module, a mapping from parameter "
                "names to tensors or an iterable of (name, tensor) pairs. Got a "
                f"{type(value).__name__} of {type(item).__name__} instead; pass "
                "model.named_parameters() or model.state_dict(), not model.parameters()."
            )
        pairs[item[0]] = item[1]
    return pairs


def _length(value: object) -> object:
    return len(value) if isinstance(value, Sized) else None
