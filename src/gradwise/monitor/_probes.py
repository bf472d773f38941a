"""What a watch measures: gradient and update norms per weight, and activation statistics
on the monitoring subset through forward hooks that exist only during the probe.

Every probe leaves the model as it found it: parameters, buffers and each module's
train/eval mode; the global RNG state is restored after the probe forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from gradwise._modes import restore_modes
from gradwise.losses._losses import count_correct, count_loss_samples, ignore_index_of
from gradwise.monitor._units import UnitAxes

#: Units whose output is never > 0 on the monitoring subset are dead.
DEAD_KINDS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
#: Activations with flat tails, and the test for "in the flat region" on their output.
SATURATING_KINDS: dict[type[nn.Module], Callable[[Tensor], Tensor]] = {
    # |tanh(x)| > 0.99 <=> |x| > 2.65: the derivative 1 - y^2 is below 2% of its maximum.
    nn.Tanh: lambda y: y.abs() > 0.99,
    # sigmoid(x) outside [0.01, 0.99] <=> |x| > 4.6: y (1 - y) is below 4% of its maximum.
    nn.Sigmoid: lambda y: (y - 0.5).abs() > 0.49,
}
ACTIVATION_KINDS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU,
    nn.GELU, nn.SiLU, nn.Mish, nn.Softplus, nn.Tanh, nn.Sigmoid, nn.Hardswish,
    nn.Hardsigmoid, nn.Softsign,
)  # fmt: skip
LAYER_KINDS: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)  # fmt: skip
#: A loss (outputs, targets) -> loss; a custom one may take outputs of any type.
LossFunction = Callable[[Any, Tensor], Tensor]


class Histogram(NamedTuple):
    """A histogram of one tensor: ``len(edges) == len(counts) + 1``.

    ``counts`` bins the finite values among ``values`` entries of the tensor (all of them,
    or a fixed pseudo-random sample of ``histogram_values`` entries for larger tensors);
    ``nan``, ``posinf`` and ``neginf`` count the non-finite entries of the WHOLE tensor,
    so they are never dropped silently. ``total`` is the tensor's size. The bins span the
    sampled finite values (``[v - 0.5, v + 0.5]`` when they are all ``v``, as numpy does);
    the last bin includes its right edge.

    Example:
        >>> import torch
        >>> from gradwise import monitor
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
        >>> data = (torch.randn(32, 4), torch.zeros(32).long())
        >>> histogram = monitor.watch(model, monitor_data=data).histograms()[0]["1"]
        >>> len(histogram.edges) - 1, sum(histogram.counts), histogram.total, histogram.nan
        (30, 256, 256, 0)
    """

    edges: list[float]
    counts: list[int]
    nan: int
    posinf: int
    neginf: int
    values: int
    total: int


class HistogramBatch:
    """Histograms of the tensors of one probe, sampled at fixed positions.

    Tensors larger than ``max_values`` are sampled at pseudo-random positions drawn once
    per tensor size from a private generator (the global RNG is untouched), so successive
    histograms of a layer sample the same units. :meth:`add` copies a tensor's sample;
    :func:`bin_histograms` bins the samples of one or more batches, each over its own
    range with ``torch.histc``'s arithmetic. A watch puts a step's gradients and
    activations in one batch, keyed by ``(kind, name)``.
    """

    def __init__(self, num_bins: int, max_values: int, positions: dict[Any, Tensor]) -> None:
        self.num_bins = num_bins
        self.max_values = max_values
        self.positions = positions
        self.keys: list[Hashable] = []
        self.samples: list[Tensor] = []  # 1-D float32, the finite values only
        self.nonfinite: list[tuple[int, int, int]] = []  # nan, +inf, -inf in the whole tensor
        self.totals: list[int] = []

    def add(self, key: Hashable, flat: Tensor, *, finite: bool) -> None:
        """Sample the detached 1-D tensor ``flat`` now (later in-place changes to it do not
        matter); ``finite`` says whether all of it is finite (else its NaN and inf entries
        are counted)."""
        total = flat.numel()
        if total > self.max_values:
            sample = flat.index_select(0, self._positions(total, flat.device))
            if sample.dtype != torch.float32:
                sample = sample.float()
        else:
            sample = flat.to(torch.float32, copy=True)
        nonfinite = (0, 0, 0)
        if not finite:
            nonfinite = _nonfinite_counts(flat)
            sample = sample[torch.isfinite(sample)]
        self.keys.append(key)
        self.samples.append(sample)
        self.nonfinite.append(nonfinite)
        self.totals.append(total)

    def _positions(self, total: int, device: torch.device) -> Tensor:
        """The positions sampled in a tensor of ``total`` > ``max_values`` entries."""
        key = (total, device)
        if key not in self.positions:
            generator = torch.Generator().manual_seed(total)
            index = torch.randperm(total, generator=generator)[: self.max_values]
            self.positions[key] = index.sort().values.to(device)
        return self.positions[key]


def bin_histograms(batches: Sequence[HistogramBatch]) -> list[dict[Any, Histogram]]:
    """The histograms of each batch, by key: all the batches' samples binned together.

    One host copy of every sample (one wait on a GPU), then numpy on the samples of each
    length at once (see :func:`bin_like_histc`); all that is per histogram in Python is
    making its lists. A watch bins the batches of 16 probes at a time: in the training loop
    of the default cnn1d probing every step, the 7 histograms of a step took 360 us binned
    one tensor at a time after each step (each numpy call meets caches that the training
    step emptied: 180 us outside the loop) and 185 us a step binned 16 steps at a time.
    """
    num_bins = batches[0].num_bins if batches else 0
    # The samples of each length side by side (most have ``max_values`` entries).
    by_length: dict[int, list[tuple[HistogramBatch, int]]] = {}
    for batch in batches:
        for index, sample in enumerate(batch.samples):
            if length := sample.numel():
                by_length.setdefault(length, []).append((batch, index))
    ordered = [batch.samples[index] for group in by_length.values() for batch, index in group]
    host = torch.cat(ordered).cpu().numpy() if ordered else np.empty(0, np.float32)
    # Each batch's histograms in the order of its keys; those with no finite value first.
    histograms = [
        {
            key: Histogram([], [], *batch.nonfinite[index], 0, batch.totals[index])
            for index, key in enumerate(batch.keys)
        }
        for batch in batches
    ]
    position = {id(batch): place for place, batch in enumerate(batches)}
    start = 0
    for length, group in by_length.items():
        rows = host[start : start + len(group) * length].reshape(len(group), length)
        start += rows.size
        edges, counts = bin_like_histc(rows, num_bins)
        for (batch, index), row_edges, row_counts in zip(group, edges, counts, strict=True):
            nonfinite, total = batch.nonfinite[index], batch.totals[index]
            histograms[position[id(batch)]][batch.keys[index]] = Histogram(
                row_edges, row_counts, *nonfinite, length, total
            )
    return histograms


#: Rows :func:`bin_like_histc` bins in one numpy pass: their temporaries (0.5 MiB for 8 rows
#: of 4096 values) stay in the caches; the 112 rows of 16 probes in one pass took 40% longer.
ROWS_PER_PASS = 8


def bin_like_histc(rows: np.ndarray, num_bins: int) -> tuple[list[list[float]], list[list[int]]]:
    """Histograms of each row of the float32 ``rows`` (count, length), over the row's range
    ``[low, high]`` (its minimum and maximum; ``[v - 0.5, v + 0.5]`` when all its values
    are ``v``, as numpy does): each row's bin edges, and its counts, those of
    ``torch.histc(row, num_bins, low, high)``: the same float32 arithmetic, so the same
    counts (tested).

    On 4096 values, 15 us a row binned alone, against 30 us for ``torch.histc`` with the
    ``aminmax``, ``linspace`` and transfers around it; rows binned together share the
    numpy calls.
    """
    low = rows.min(axis=1).astype(np.float64)
    high = rows.max(axis=1).astype(np.float64)
    constant = low == high
    low[constant] -= 0.5
    high[constant] += 0.5
    low32 = low.astype(np.float32)[:, None]
    width32 = high.astype(np.float32)[:, None] - low32
    # A constant row whose range float32 cannot resolve (1e10 +- 0.5 is 1e10): its values
    # equal its low32, so any width puts them in bin 0, as histc does.
    width32[width32 == 0] = 1
    # histc's bin: (x - low) * bins / (high - low) in float32, truncated; the last bin
    # includes the right edge. Each row's bins are then offset to a range of their own.
    counts = np.empty(len(rows) * num_bins, np.intp)
    offsets = (np.arange(min(len(rows), ROWS_PER_PASS)) * num_bins)[:, None]
    for begin in range(0, len(rows), ROWS_PER_PASS):
        end = min(begin + ROWS_PER_PASS, len(rows))
        scaled = (rows[begin:end] - low32[begin:end]) * np.float32(num_bins)
        index = (scaled / width32[begin:end]).astype(np.intp)
        np.minimum(index, num_bins - 1, out=index)
        index += offsets[: end - begin]
        size = (end - begin) * num_bins
        counts[begin * num_bins : end * num_bins] = np.bincount(index.reshape(-1), minlength=size)
    # The edges as Python computes low + width * i (the same float64 operations).
    width = (high - low) / num_bins
    edges = (low[:, None] + width[:, None] * np.arange(num_bins)).tolist()
    for row_edges, row_high in zip(edges, high.tolist(), strict=True):
        row_edges.append(row_high)
    return edges, counts.reshape(len(rows), num_bins).tolist()


def _nonfinite_counts(flat: Tensor) -> tuple[int, int, int]:
    nan = int(torch.isnan(flat).sum())
    posinf = int((flat == math.inf).sum())
    neginf = int((flat == -math.inf).sum())
    return nan, posinf, neginf


# -- gradients and updates ---------------------------------------------------------------


def _float64_norm(tensor: Tensor) -> float:
    """The 2-norm in float64: finite for finite entries beyond float32's sqrt(3.4e38)
    (whose float32 norm reads inf, a false NaN report), NaN or inf where an entry is."""
    exact = tensor.detach().to(torch.complex128 if tensor.is_complex() else torch.float64)
    return float(torch.linalg.vector_norm(exact))


def _gradient_values(grad: Tensor) -> Tensor:
    """``grad``, or a sparse gradient's values (``nn.Embedding(sparse=True)``): the same
    norm and the same non-finite entries, where the foreach kernels take no sparse
    tensor. Their histogram holds the rows the batch touched, not the zeros of the rest."""
    return grad.coalesce().values() if grad.is_sparse else grad


#: Gradient dtypes whose norms are taken in float32 (:meth:`GradientProbe.gradients_finite`
#: always, :meth:`GradientProbe.measure` when some are of :data:`HALF_PRECISION`).
FLOAT32_NORMS = frozenset({torch.float16, torch.bfloat16, torch.float32})
HALF_PRECISION = frozenset({torch.float16, torch.bfloat16})


@dataclass
class GradientMeasurement:
    """Gradient norms of one step, and the update ratio once the step is done."""

    step: int
    global_norm: float
    weight_names: list[str]  # the watched weights that have a gradient
    weight_grad_norms: list[float]  # one per name
    first_nonfinite: str | None  # the first parameter with a non-finite gradient
    # The weights the optimizer steps among them, copied before the step (for update
    # ratios), with their names and norms.
    updated_names: list[str] = field(default_factory=list)
    updated: list[Tensor] = field(default_factory=list)
    before: list[Tensor] | None = None
    weight_norms: list[float] | None = None
    histograms: HistogramBatch | None = None  # the weight gradients' samples, not binned yet


@dataclass
class WeightSnapshot:
    """The weights a step may move, copied before it, with their names and norms, and the
    ids of the optimizer's parameters (whose gradients are measured after the step)."""

    step: int
    names: list[str]
    weights: list[Tensor]
    before: list[Tensor]
    norms: list[float]
    optimized: Collection[int] = ()


def _norms(tensors: list[Tensor]) -> list[float]:
    """The 2-norm of each of ``tensors`` (one fused call, one host transfer), finite for
    every tensor whose entries are: float16 norms overflow at 65504, float32 ones at
    sqrt(3.4e38) (a false NaN report for finite values); those are retaken in float64."""
    dtypes = {tensor.dtype for tensor in tensors}
    low = dtypes & HALF_PRECISION and dtypes <= FLOAT32_NORMS
    norms = torch._foreach_norm(tensors, 2, dtype=torch.float32 if low else None)
    values: list[float] = _float32(torch.stack(norms)).tolist()
    for index, value in enumerate(values):
        if not math.isfinite(value):  # NaN/inf entries, or a float32 norm overflowing
            values[index] = _float64_norm(tensors[index])
    return values


class GradientProbe:
    """Reads gradients and snapshots weights; computes ||update|| / ||w|| after the step.

    The watched weights are the parameters with 2 or more dimensions (the weight matrices
    and kernels of Linear and Conv layers), named by their parameter names; the global
    gradient norm covers every parameter that has a gradient. Which parameters have one is
    read at each measurement, so a layer frozen or unfrozen mid-run is followed; update
    ratios are measured for the weights the optimizer steps (``optimized``).
    """

    def __init__(self, model: nn.Module) -> None:
        named = list(model.named_parameters())
        self.parameter_names = [n for n, _ in named]
        self.parameters = [p for _, p in named]
        self._is_weight = [p.dim() >= 2 for p in self.parameters]
        # gradients_finite's flag (set to 1 by GradScaler's check) and inverse scale, and
        # whether that check may run (the CPU; not after it has refused the gradients).
        self._found_nonfinite = torch.zeros(1)
        self._inverse_scale = torch.ones(1)
        self._scaler_check = True
        #: Each parameter name's place in registration order.
        self.registration_order = {name: index for index, name in enumerate(self.parameter_names)}

    def measure(
        self,
        step: int,
        *,
        snapshot: bool,
        histograms: HistogramBatch | None,
        optimized: Collection[int] = (),
        stepped: Collection[int] | None = None,
    ) -> GradientMeasurement | None:
        """Gradient norms now (None when no parameter has a gradient); with ``snapshot``,
        a copy of the watched weights that have a gradient, and their norms; with
        ``optimized`` (ids of the optimizer's parameters), only the weights among them are
        watched, and only those in ``stepped`` (its groups at a positive rate; all when
        None) are copied; with ``histograms``, the weight gradients' samples are added to
        it as ``("gradients", name)``."""
        # One pass over the parameters, reading each gradient once: the names and
        # gradients of those that have one, and (position, name, weight) of the watched
        # weights among them (a weight the optimizer does not step is not part of
        # training).
        names: list[str] = []
        grads: list[Tensor] = []
        watched: list[tuple[int, str, Tensor]] = []
        for name, parameter, is_weight in zip(
            self.parameter_names, self.parameters, self._is_weight, strict=True
        ):
            if parameter.grad is None:
                continue
            grad = _gradient_values(parameter.grad)
            if is_weight and (not optimized or id(parameter) in optimized):
                watched.append((len(grads), name, parameter))
            names.append(name)
            grads.append(grad)
        if not grads:
            return None
        updated = (
            [(name, p) for _, name, p in watched if stepped is None or id(p) in stepped]
            if snapshot
            else []
        )
        weights: list[Tensor] = [p for _, p in updated]
        with torch.no_grad():
            # One fused norm per tensor and one host transfer for all of them, the weights'
            # included (measured: 30 us for the 14 gradients and 4 weights of the default
            # cnn1d, against 60 us for one norm and one transfer per tensor).
            values = _norms(grads + weights)
            # One clone per weight: torch._foreach_clone is missing from torch 2.11.
            before = [weight.clone() for weight in weights] if snapshot else None
        grad_norms = values[: len(grads)]
        global_norm = math.sqrt(sum(v * v for v in grad_norms))
        first_bad = next(
            (name for name, v in zip(names, grad_norms, strict=True) if not math.isfinite(v)),
            None,
        )
        measurement = GradientMeasurement(
            step,
            global_norm,
            [name for _, name, _ in watched],
            [grad_norms[index] for index, _, _ in watched],
            first_bad,
        )
        if snapshot:
            measurement.updated_names = [name for name, _ in updated]
            measurement.updated = weights
            measurement.before = before
            measurement.weight_norms = values[len(grads) :]
        if histograms is not None:
            for index, name, _ in watched:
                finite = math.isfinite(grad_norms[index])
                grad = _detached(grads[index]).reshape(-1)
                histograms.add(("gradients", name), grad, finite=finite)
            measurement.histograms = histograms
        return measurement

    def snapshot(
        self, step: int, optimized: Collection[int] = (), stepped: Collection[int] | None = None
    ) -> WeightSnapshot:
        """A copy of the watched weights among ``optimized`` and ``stepped`` (as in
        :meth:`measure`), and their norms, whether or not they have a gradient yet: for a
        step whose closure makes its gradients (:meth:`add_snapshot` pairs it with them)."""
        updated = [
            (name, parameter)
            for name, parameter, is_weight in zip(
                self.parameter_names, self.parameters, self._is_weight, strict=True
            )
            if is_weight
            and (not optimized or id(parameter) in optimized)
            and (stepped is None or id(parameter) in stepped)
        ]
        weights: list[Tensor] = [parameter for _, parameter in updated]
        with torch.no_grad():
            norms = _norms(weights) if weights else []
            before = [weight.clone() for weight in weights]
        names = [name for name, _ in updated]
        return WeightSnapshot(step, names, weights, before, norms, optimized)

    @staticmethod
    def add_snapshot(measurement: GradientMeasurement, snapshot: WeightSnapshot | None) -> None:
        """Give ``measurement`` (taken after the step, without a snapshot) the weights
        copied before it that now have a gradient: those the closure's backward reached.
        A snapshot of another step (or None) is ignored."""
        if snapshot is None or snapshot.step != measurement.step:
            return
        has_gradient = set(measurement.weight_names)
        kept = [index for index, name in enumerate(snapshot.names) if name in has_gradient]
        measurement.updated_names = [snapshot.names[index] for index in kept]
        measurement.updated = [snapshot.weights[index] for index in kept]
        measurement.before = [snapshot.before[index] for index in kept]
        measurement.weight_norms = [snapshot.norms[index] for index in kept]

    def gradients_finite(self) -> bool:
        """Whether every gradient is finite (a NaN or inf anywhere says no), read as one
        number. Checking only the first and last parameters' gradients missed a NaN
        confined to one middle parameter's own gradient (a custom backward, sqrt(w * w)
        at w = 0) until the update had written it into that weight.

        On the CPU, GradScaler's check: one call over all the gradients sets a flag; with
        an inverse scale of 1 it writes each value back as it was (bit for bit, no version
        bump, no autograd record). Elsewhere, and from the first time it refuses the
        gradients (complex, or overlapping in memory), one L1 norm per gradient (fused on
        CUDA) and their sum (which also reads a sum of finite values beyond float32's
        3.4e38 as non-finite). In the training loop of the default cnn1d (14 gradients, one
        thread; one check per step, on fresh gradients; medians of 800 steps, 4 runs, on a
        busy 2-core machine): 85-108 us, against 74-91 us for the first and last gradients
        alone, 136-169 us for a copy of all of them into one vector and its sum, and
        194-229 us for the L1 norms (on 2^20 entries alone: 0.39 ms against 1.2 ms).
        """
        grads = [_gradient_values(g) for p in self.parameters if (g := p.grad) is not None]
        if not grads:
            return True
        if self._scaler_check and grads[0].device.type == "cpu":
            found = self._found_nonfinite
            try:
                torch._amp_foreach_non_finite_check_and_unscale_(grads, found, self._inverse_scale)
            except RuntimeError:  # NotImplementedError (complex) included
                self._scaler_check = False
                found.zero_()
                return self.gradients_finite()
            if not found.item():
                return True
            found.zero_()
            return False
        # float16 norms overflow at 65504; float64 and complex ones keep their own types.
        dtype = torch.float32 if {grad.dtype for grad in grads} <= FLOAT32_NORMS else None
        # No torch.no_grad() (2 us): gradients made with create_graph only give the sum a
        # graph, dropped with it.
        total = torch.stack(torch._foreach_norm(grads, 1, dtype=dtype)).sum()
        return math.isfinite(total.item())

    def first_nonfinite_gradient(self) -> str | None:
        """The first parameter (registration order) whose gradient has a NaN or inf."""
        for name, parameter in zip(self.parameter_names, self.parameters, strict=True):
            grad = parameter.grad
            if grad is not None and not bool(torch.isfinite(_gradient_values(grad)).all()):
                return name
        return None

    @staticmethod
    def update_norms(measurement: GradientMeasurement) -> list[float]:
        """||w_after - w_before|| per weight the measurement copied before the step (once:
        the copies become w_before - w_after, whose norms are the same bit for bit, rather
        than new tensors, and the measurement lets go of them)."""
        before, measurement.before = measurement.before, None
        if not measurement.updated or before is None:
            return []
        with torch.no_grad():
            torch._foreach_sub_(before, measurement.updated)
            return _float32(torch.stack(torch._foreach_norm(before))).tolist()


# -- activations -------------------------------------------------------------------------


@dataclass
class LayerActivations:
    """Statistics of one module's output on the monitoring subset."""

    name: str
    module: str  # the class name
    mean: float
    std: float
    dead_fraction: float | None  # ReLU-like modules only
    saturated_fraction: float | None  # tanh / sigmoid only
    nonfinite: bool


@dataclass
class ActivationProbe:
    """The monitoring forward: loss, accuracy and per-module activation statistics."""

    loss: float | None
    accuracy: float | None
    num_outputs: int | None
    layers: list[LayerActivations]
    output_type: str = "Tensor"  # the class name of what the model returned


@dataclass(frozen=True)
class WatchedModule:
    """A module whose output the probe measures, and what it measures there."""

    name: str
    module: nn.Module
    dead: bool  # ReLU-like: count units that never fire
    saturation: Callable[[Tensor], Tensor] | None  # tanh/sigmoid: the flat-region test

    @property
    def per_unit(self) -> bool:
        """Whether it has per-unit statistics (dead or saturated units)."""
        return self.dead or self.saturation is not None


def watched_modules(model: nn.Module) -> list[WatchedModule]:
    """The activation modules (ReLU, tanh, ...), in registration order; the Linear/Conv
    layers' outputs instead when the model has none (activations applied functionally)."""
    named = [(n, m) for n, m in model.named_modules() if n]
    found = [(n, m) for n, m in named if isinstance(m, ACTIVATION_KINDS)]
    if not found:
        found = [(n, m) for n, m in named if isinstance(m, LAYER_KINDS)]
    return [
        WatchedModule(
            name,
            module,
            isinstance(module, DEAD_KINDS),
            next((t for k, t in SATURATING_KINDS.items() if isinstance(module, k)), None),
        )
        for name, module in found
    ]


class _Stats:
    """Measures each watched output in its hook; what the saturated fractions need is
    converted to Python once, after the forward."""

    def __init__(
        self, histograms: HistogramBatch | None, saturation_share: float, unit_axes: UnitAxes
    ) -> None:
        self.histograms = histograms
        self.saturation_share = saturation_share
        self.unit_axes = unit_axes
        # Per row: the module, the layer's name (see use_name), its output's mean, std,
        # dead fraction (ReLU-like, else None), whether it had a NaN or inf, and the number
        # of per-unit shares of saturated outputs of a tanh/sigmoid (else 0), which are
        # tensors in ``parts``.
        self.rows: list[tuple[WatchedModule, str, float, float, float | None, bool, int]] = []
        self.parts: list[Tensor] = []
        self.calls: dict[str, int] = {}  # calls of each module in this forward so far

    def hook(self, watched: WatchedModule) -> Callable[[nn.Module, Any, Any], None]:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            name = use_name(self.calls, watched.name)
            if isinstance(output, Tensor) and output.dim() >= 1 and output.numel() > 0:
                self._measure(watched, name, _detached(output))

        return record

    def _measure(self, watched: WatchedModule, name: str, output: Tensor) -> None:
        values = output.reshape(-1)
        flat = _float32(values)
        count = flat.numel()
        # The sum of squares by a dot product: torch.std_mean took ~60x longer on a
        # (256, 32, 40) activation here. It and the total are read now (0.2 us each on the
        # CPU; on a GPU, a wait for the forward so far, which the histograms' finiteness
        # check made anyway): whether the variance needs the values again (_variance) is
        # decided while they exist.
        squares = torch.dot(flat, flat).item()
        units_last = output.dim() > 2 and watched.per_unit and self.unit_axes.units_last(name)
        dead = None
        if watched.dead:
            # ReLU outputs are >= 0: a unit is dead when its sum over the subset is 0, and
            # the per-unit sums also give the total (one pass instead of two).
            sums = _unit_sums(output, units_last).tolist()
            total = sum(sums)
            dead = sum(s <= 0 for s in sums) / len(sums)
        else:
            # (0.0 + the total: a total of -0.0 reads as 0.0, as sum() of the sums does.)
            total = 0.0 + flat.sum().item()
        finite = math.isfinite(total) and math.isfinite(squares)
        std = math.sqrt(_variance(flat, squares, total)) if finite else math.nan
        num_shares = 0
        if watched.saturation is not None:
            shares = _unit_means(watched.saturation(output).float(), units_last)  # (units,)
            self.parts.append(shares)
            num_shares = shares.shape[0]
        self.rows.append((watched, name, total / count, std, dead, not finite, num_shares))
        if self.histograms is not None:
            # A non-finite entry makes the sum of squares non-finite (so does an overflow,
            # after which the histogram counts no NaN or inf: still right).
            self.histograms.add(("activations", name), values, finite=math.isfinite(squares))

    def results(
        self, scalars: Sequence[Tensor | None] = ()
    ) -> tuple[list[LayerActivations], list[float | None]]:
        """Every layer's statistics, and ``scalars`` (0-dim tensors, or None) as floats."""
        # One host transfer for the rest of the numbers of the probe, then plain Python:
        # cheaper than numpy for a few dozen numbers per layer (in the training loop, 70
        # us per probe of the default cnn1d against 170 us).
        given = [
            _float32(scalar if scalar.dim() == 0 else scalar.reshape(()))  # a loss of shape (1,)
            for scalar in scalars
            if scalar is not None
        ]
        pieces = ([torch.stack(given)] if given else []) + self.parts
        host: list[float] = torch.cat(pieces).tolist() if pieces else []
        numbers = iter(host[: len(given)])
        start = len(given)  # the shares, in order
        layers = []
        for watched, name, mean, std, dead, nonfinite, num_shares in self.rows:
            saturated = None
            if watched.saturation is not None:
                shares = host[start : start + num_shares]
                start += num_shares
                saturated = sum(s > self.saturation_share for s in shares) / num_shares
            module = type(watched.module).__name__
            layers.append(LayerActivations(name, module, mean, std, dead, saturated, nonfinite))
        return layers, [None if scalar is None else next(numbers) for scalar in scalars]


#: E[x^2] / var beyond which the variance is not taken as E[x^2] - E[x]^2 (|mean| > ~10
#: std): the float32 sums carry errors of ~1e-6 E[x^2] into it. On normal values (16384
#: to 10^6 of them) the std from them was off by up to 4e-5 at E[x^2] = 100 var, and by
#: 17% to 100% at 10^6 var (mean 1e3, std 1); from the shifted values, by at most 2e-6.
CANCELLATION_RATIO = 100.0


def _variance(flat: Tensor, squares: float, total: float) -> float:
    """The population variance of the finite float32 ``flat``, whose sum of squares and sum
    are ``squares`` and ``total``: E[x^2] - E[x]^2, unless that cancels (see
    ``CANCELLATION_RATIO``); then from the values shifted by their mean, one more pass
    and a copy of them (~120 us on a (256, 32, 40) activation here)."""
    count = flat.numel()
    mean = total / count
    second = squares / count
    variance = second - mean * mean
    if variance * CANCELLATION_RATIO >= second:
        return max(variance, 0.0)
    centered = flat - mean
    # The float32 mean is off by ~1e-7 |mean|: what is left of it is taken out too.
    offset = centered.sum().item() / count
    return max(torch.dot(centered, centered).item() / count - offset * offset, 0.0)


def use_name(calls: dict[str, int], name: str) -> str:
    """The layer that this call of the module ``name`` is, counting its calls in ``calls``:
    ``name`` for its first call in a forward, ``name#2``, ``name#3``, ... for the later
    ones (one ``nn.ReLU`` applied after every layer is one layer per call)."""
    count = calls[name] = calls.get(name, 0) + 1
    return name if count == 1 else f"{name}#{count}"


def _detached(tensor: Tensor) -> Tensor:
    """``tensor.detach()``, without the call when nothing would be detached (a probe's
    outputs under no_grad, gradients unless made with ``create_graph``)."""
    return tensor.detach() if tensor.requires_grad else tensor


def _float32(tensor: Tensor) -> Tensor:
    """``tensor.float()``, without the call when it is float32 already (each torch call
    counts in a probe that runs every step)."""
    return tensor if tensor.dtype == torch.float32 else tensor.float()


def _unit_sums(output: Tensor, units_last: bool) -> Tensor:
    """Each unit's sum over the samples (and positions), in float32: shape (units,).
    ``units_last``: the units are the last dim (else dim 1; see ``_units``)."""
    if units_last:  # (batch, *positions, units)
        return output.reshape(-1, output.shape[-1]).sum(0, dtype=torch.float32)
    # Over the samples first, then the positions: one sum over dims (0, 2) of a
    # (256, 32, 40) ReLU output took twice as long here (50 us against 23).
    per_unit = output.sum(0, dtype=torch.float32)  # (units, *positions)
    if per_unit.dim() == 1:
        return per_unit
    if per_unit.dim() == 2:  # the reshape below would be a no-op: one torch call saved
        return per_unit.sum(1)
    return per_unit.reshape(-1) if per_unit.dim() == 0 else per_unit.flatten(1).sum(1)


def _unit_means(output: Tensor, units_last: bool) -> Tensor:
    """Each unit's mean over the samples (and positions): shape (units,)."""
    if units_last:  # (batch, *positions, units)
        return output.reshape(-1, output.shape[-1]).mean(0)
    dims = (0, *range(2, output.dim())) if output.dim() >= 2 else (0,)
    return output.mean(dim=dims).reshape(-1)


@contextmanager
def probe_mode(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode and no autograd for the probe; afterwards restore every module's mode and
    the global RNG state (CPU, and the device's for CUDA), in case the model draws random
    numbers even in eval mode.

    No autograd is ``torch.no_grad``, not ``torch.inference_mode``: no faster here, and a
    model that caches a tensor made in its forward would get an inference tensor that
    training cannot use.
    """
    modules = list(model.modules())
    modes = [module.training for module in modules]
    direct = all(map(_train_only_sets_flag, {type(module) for module in modules}))
    # Saved by hand: torch.random.fork_rng cost ~0.1 ms per probe here, as much as the
    # statistics of a layer.
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        with torch.no_grad():
            if direct:
                _set_modes(modules, [False] * len(modules))
            else:
                model.eval()
            yield
    finally:
        if direct:
            _set_modes(modules, modes)
        else:  # a module with its own train(): switched back through it
            restore_modes(list(zip(modules, modes, strict=True)))
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)


def _train_only_sets_flag(kind: type[nn.Module]) -> bool:
    """Whether ``module.train(mode)`` only sets ``module.training`` for modules of class
    ``kind``, as nn.Module's does (a scripted module, or one with its own train(), decides
    for itself)."""
    return kind.train is nn.Module.train and kind.__setattr__ is nn.Module.__setattr__


def _set_modes(modules: Sequence[nn.Module], modes: Sequence[bool]) -> None:
    # What nn.Module.train(mode) does to each plain module, without Module.__setattr__,
    # which only adds checks for parameters, buffers and submodules (2.4 us a call here):
    # with the 15 modules of the default cnn1d, probe_mode took 66 us per probe through
    # eval() and Module.__setattr__, 20 us this way (RNG state and no_grad included).
    for module, mode in zip(modules, modes, strict=True):
        object.__setattr__(module, "training", mode)


def run_activation_probe(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor | None,
    loss_fn: LossFunction,
    *,
    modules: Sequence[WatchedModule],
    histograms: HistogramBatch | None,
    saturation_share: float,
    unit_axes: UnitAxes,
    custom_loss: bool = False,
) -> ActivationProbe:
    """One eval-mode forward on the monitoring subset with temporary forward hooks;
    ``unit_axes`` says where the units of ``modules`` lie (made for this model);
    ``custom_loss``: ``loss_fn`` takes any outputs (else the loss needs a tensor)."""
    stats = _Stats(histograms, saturation_share, unit_axes)
    handles = [watched.module.register_forward_hook(stats.hook(watched)) for watched in modules]
    try:
        with probe_mode(model, inputs.device), unit_axes.learning():
            outputs = model(inputs)
            loss_tensor, hits, _ = _loss_and_hits(
                outputs, targets, loss_fn, custom_loss=custom_loss
            )
            correct_tensor, counted_tensor = (None, None) if hits is None else hits
            layers, (loss, correct, counted) = stats.results(
                (loss_tensor, correct_tensor, counted_tensor)
            )
    finally:
        for handle in handles:
            handle.remove()
    num_outputs = (
        int(outputs.shape[1]) if isinstance(outputs, Tensor) and outputs.dim() == 2 else None
    )
    accuracy = _accuracy(correct, counted)
    return ActivationProbe(loss, accuracy, num_outputs, layers, type(outputs).__name__)


def evaluate(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: LossFunction,
    batch_size: int = 1024,
    *,
    custom_loss: bool = False,
) -> tuple[float | None, float | None]:
    """Mean loss and accuracy (None when not classification, or when every target is the
    loss's ignore_index) in eval mode, in batches; ``custom_loss``: ``loss_fn`` takes any
    outputs (else only a tensor of outputs).

    Each batch's mean loss weighs the samples it counted (targets equal to the loss's
    ignore_index left out, as the mean leaves them out): a batch with none counted weighs 0
    (its mean is 0 / 0), and with none counted in all the loss is None too."""
    loss_sum, loss_count, correct, counted, classification = 0.0, 0, 0, 0, True
    with probe_mode(model, inputs.device):
        for begin in range(0, len(targets), batch_size):
            batch = targets[begin : begin + batch_size]
            outputs = model(inputs[begin : begin + batch_size])
            loss, hits, samples = _loss_and_counts(outputs, batch, loss_fn, custom_loss=custom_loss)
            samples = len(batch) if samples is None else samples
            if samples:  # NaN x 0 is NaN: a batch that counted nothing is left out
                loss_sum += (loss if loss is not None else math.nan) * samples
                loss_count += samples
            classification &= hits is not None
            if hits is not None:  # sums over the batches: a mean of their accuracies is not
                correct += hits[0]
                counted += hits[1]
    if not loss_count and len(targets):
        return None, None
    return loss_sum / max(loss_count, 1), _accuracy(correct, counted) if classification else None


def _loss_and_hits(
    outputs: Any, targets: Tensor | None, loss_fn: LossFunction, *, custom_loss: bool
) -> tuple[Tensor | None, tuple[Tensor, Tensor] | None, Tensor | None]:
    """:func:`_loss_and_counts` left on the device, to be read with the rest of the
    probe's numbers: the loss (a 0-dim tensor), the right predictions and the samples
    counted for accuracy, and the samples the loss counted (0-dim tensors; targets equal
    to the loss's ignore_index left out of all; None: every sample)."""
    # A custom loss gets whatever the model returns (a tuple, a dict, ...); a named loss
    # needs a tensor of outputs.
    if targets is None or not (custom_loss or isinstance(outputs, Tensor)):
        return None, None, None
    device = outputs.device if isinstance(outputs, Tensor) else targets.device
    # A custom loss may return a number.
    loss = loss_fn(outputs, targets)
    if not isinstance(loss, Tensor) or loss.device != device:
        loss = torch.as_tensor(loss, device=device)
    ignore_index = ignore_index_of(loss_fn)
    loss_count = count_loss_samples(outputs, targets, ignore_index)
    # Accuracy only for class scores: (batch, classes) against class indices.
    if not isinstance(outputs, Tensor) or outputs.dim() != 2 or targets.is_floating_point():
        return loss, None, loss_count
    return loss, count_correct(outputs, targets, ignore_index), loss_count


def _loss_and_counts(
    outputs: Any, targets: Tensor | None, loss_fn: LossFunction, *, custom_loss: bool
) -> tuple[float | None, tuple[int, int] | None, int | None]:
    """The loss, the right predictions and the samples counted for accuracy (None when
    the outputs are no class scores), and the samples the loss counted (None: every
    sample), read on the host."""
    loss, hits, loss_count = _loss_and_hits(outputs, targets, loss_fn, custom_loss=custom_loss)
    counts = [*(hits or ()), *(() if loss_count is None else (loss_count,))]
    read = torch.stack(counts).tolist() if counts else []  # one host read for all
    samples = int(read[-1]) if loss_count is not None else None
    hit_counts = (int(read[0]), int(read[1])) if hits is not None else None
    return None if loss is None else float(loss), hit_counts, samples


def _accuracy(correct: float | None, counted: float | None) -> float | None:
    """Correct over counted; None with no sample counted (every target the loss's
    ignore_index): no accuracy to record, rather than a NaN in the history."""
    return correct / counted if correct is not None and counted else None


def first_nonfinite_module(model: nn.Module, inputs: Tensor) -> str | None:
    """The first module (in execution order) whose output has a NaN or inf, if any."""
    found: list[str] = []
    calls: dict[str, int] = {}

    def hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def check(module: nn.Module, args: Any, output: Any) -> None:
            layer = use_name(calls, name)  # a reused module's later calls are name#2, ...
            if not found and isinstance(output, Tensor) and not bool(torch.isfinite(output).all()):
                found.append(f"{layer} ({type(module).__name__})")

        return check

    leaves = [(n, m) for n, m in model.named_modules() if n and not any(m.children())]
    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    try:
        with probe_mode(model, inputs.device):
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


def first_nonfinite_parameter(model: nn.Module) -> str | None:
    """The first parameter (registration order) with a NaN or inf value, if any."""
    for name, parameter in model.named_parameters():
        if not bool(torch.isfinite(parameter.detach()).all()):
            return name
    return None
