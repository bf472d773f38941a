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
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from torch import Tensor, nn

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
    :meth:`finish` copies all the samples to the host at once and bins each over its own
    range with ``torch.histc``'s arithmetic, in numpy (see :func:`bin_like_histc`). A
    watch puts a step's gradients and activations in one batch, keyed by
    ``(kind, name)``.
    """

    def __init__(self, num_bins: int, max_values: int, positions: dict[Any, Tensor]) -> None:
        self.num_bins = num_bins
        self.max_values = max_values
        self.positions = positions
        self.keys: list[Hashable] = []
        self.samples: list[Tensor] = []  # 1-D float32, the finite values only
        self.nonfinite: list[tuple[int, int, int]] = []  # nan, +inf, -inf in the whole tensor
        self.totals: list[int] = []

    def add(self, key: Hashable, tensor: Tensor, *, finite: bool) -> None:
        """Sample ``tensor`` now (later in-place changes to it do not matter); ``finite``
        says whether all of it is finite (else its NaN and inf entries are counted)."""
        flat = tensor.detach().reshape(-1)
        if flat.numel() > self.max_values:
            sample = flat.index_select(0, self._positions(flat)).float()
        else:
            sample = flat.to(torch.float32, copy=True)
        nonfinite = (0, 0, 0)
        if not finite:
            nonfinite = _nonfinite_counts(flat)
            sample = sample[torch.isfinite(sample)]
        self.keys.append(key)
        self.samples.append(sample)
        self.nonfinite.append(nonfinite)
        self.totals.append(flat.numel())

    def _positions(self, flat: Tensor) -> Tensor:
        key = (flat.numel(), flat.device)
        if key not in self.positions:
            generator = torch.Generator().manual_seed(flat.numel())
            index = torch.randperm(flat.numel(), generator=generator)[: self.max_values]
            self.positions[key] = index.sort().values.to(flat.device)
        return self.positions[key]

    def finish(self) -> dict[Any, Histogram]:
        """The histograms, by key."""
        # One host copy of every sample (one wait on a GPU instead of four per tensor),
        # then numpy, one tensor at a time. In the training loop the 7 histograms of a
        # default cnn1d step took 280 us this way, 320 us binned in one vectorized numpy
        # pass (fewer, larger operations) and 360 us with torch.histc per tensor.
        host = torch.cat(self.samples).cpu().numpy() if self.samples else np.empty(0)
        histograms = {}
        start = 0
        for key, sample, nonfinite, total in zip(
            self.keys, self.samples, self.nonfinite, self.totals, strict=True
        ):
            values = host[start : start + sample.numel()]
            start += sample.numel()
            if not values.size:
                histograms[key] = Histogram([], [], *nonfinite, 0, total)
                continue
            low, high = float(values.min()), float(values.max())
            if low == high:  # numpy's convention for a constant sample
                low, high = low - 0.5, high + 0.5
            counts = bin_like_histc(values, self.num_bins, low, high).tolist()
            width = (high - low) / self.num_bins
            edges = [low + width * index for index in range(self.num_bins)] + [high]
            histograms[key] = Histogram(edges, counts, *nonfinite, values.size, total)
        return histograms


def bin_like_histc(values: np.ndarray, num_bins: int, low: float, high: float) -> np.ndarray:
    """``torch.histc(torch.from_numpy(values), num_bins, low, high)`` as int64 counts, for
    float32 ``values`` within ``[low, high]``: the same float32 arithmetic, so the same
    counts (tested).

    Measured on 4096 values: 15 us, against 30 us for ``torch.histc`` with the
    ``aminmax``, ``linspace`` and transfers around it.
    """
    low32 = np.float32(low)
    width32 = np.float32(high) - low32
    if width32 == 0:
        # A constant sample whose range float32 cannot resolve (1e10 +- 0.5 is 1e10): its
        # values equal low32, so any width puts them in bin 0, as histc does.
        width32 = np.float32(1)
    # histc's bin: (x - low) * bins / (high - low) in float32, truncated; the last bin
    # includes the right edge.
    index = ((values - low32) * np.float32(num_bins) / width32).astype(np.intp)
    np.minimum(index, num_bins - 1, out=index)
    return np.bincount(index, minlength=num_bins)


def _nonfinite_counts(flat: Tensor) -> tuple[int, int, int]:
    nan = int(torch.isnan(flat).sum())
    posinf = int((flat == math.inf).sum())
    neginf = int((flat == -math.inf).sum())
    return nan, posinf, neginf


# -- gradients and updates ---------------------------------------------------------------


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
        self._watched = {id(p) for p in self.parameters if p.dim() >= 2}
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
        named = zip(self.parameter_names, self.parameters, strict=True)
        with_grad = [(name, p) for name, p in named if p.grad is not None]
        if not with_grad:
            return None
        watched = [(name, p) for name, p in with_grad if id(p) in self._watched]
        if optimized:  # a weight the optimizer does not step is not part of training
            watched = [(name, p) for name, p in watched if id(p) in optimized]
        updated = (
            [(name, p) for name, p in watched if stepped is None or id(p) in stepped]
            if snapshot
            else []
        )
        weights: list[Tensor] = [p for _, p in updated]
        grads = [cast(Tensor, p.grad) for _, p in with_grad]
        with torch.no_grad():
            # One fused norm per tensor and one host transfer for all of them, the weights'
            # included (measured: 30 us for the 14 gradients and 4 weights of the default
            # cnn1d, against 60 us for one norm and one transfer per tensor).
            norms = torch._foreach_norm(grads + weights)
            values = torch.stack(norms).float().tolist()
            # One clone per weight: torch._foreach_clone is missing from torch 2.11.
            before = [weight.clone() for weight in weights] if snapshot else None
        grad_norms = values[: len(with_grad)]
        by_name = dict(zip((n for n, _ in with_grad), grad_norms, strict=True))
        global_norm = math.sqrt(sum(v * v for v in grad_norms))
        first_bad = next((n for n, v in by_name.items() if not math.isfinite(v)), None)
        measurement = GradientMeasurement(
            step,
            global_norm,
            [name for name, _ in watched],
            [by_name[name] for name, _ in watched],
            first_bad,
        )
        if snapshot:
            measurement.updated_names = [name for name, _ in updated]
            measurement.updated = weights
            measurement.before = before
            measurement.weight_norms = values[len(with_grad) :]
        if histograms is not None:
            for name, weight in watched:
                finite = math.isfinite(by_name[name])
                histograms.add(("gradients", name), cast(Tensor, weight.grad), finite=finite)
            measurement.histograms = histograms
        return measurement

    def gradients_finite(self) -> bool:
        """Whether the first and last parameters' gradients (those that have one) are
        finite: two small reductions. A NaN or inf arising anywhere in the backward pass
        reaches the gradient of the first layer (computed last), a non-finite loss every
        gradient; checking every tensor cost ~50 us a step on the default cnn1d, these two
        ~4 us."""
        first = next((p.grad for p in self.parameters if p.grad is not None), None)
        if first is None:
            return True
        last = next(p.grad for p in reversed(self.parameters) if p.grad is not None)
        ends = (first,) if last is first else (first, last)
        # Read as a Python float: 2 us a reduction here, against 6 us for
        # bool(torch.isfinite(...)), which adds an operation.
        return all(math.isfinite(grad.sum().item()) for grad in ends)

    def first_nonfinite_gradient(self) -> str | None:
        """The first parameter (registration order) whose gradient has a NaN or inf."""
        for name, parameter in zip(self.parameter_names, self.parameters, strict=True):
            grad = parameter.grad
            if grad is not None and not bool(torch.isfinite(grad).all()):
                return name
        return None

    @staticmethod
    def update_norms(measurement: GradientMeasurement) -> list[float]:
        """||w_after - w_before|| per weight the measurement copied before the step."""
        if not measurement.updated or measurement.before is None:
            return []
        with torch.no_grad():
            deltas = torch._foreach_sub(measurement.updated, measurement.before)
            return torch.stack(torch._foreach_norm(deltas)).float().tolist()


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
    """Accumulates the tensors a hook computes; converted to Python once, after the forward."""

    def __init__(self, histograms: HistogramBatch | None, saturation_share: float) -> None:
        self.histograms = histograms
        self.saturation_share = saturation_share
        # Per row: the module, the layer's name (see use_name), its output's size and the
        # lengths of its parts: the sum of squares (1), the per-unit sums of a ReLU-like
        # output or else the total (1), and the per-unit shares of saturated outputs of a
        # tanh/sigmoid (else 0).
        self.rows: list[tuple[WatchedModule, str, int, int, int]] = []
        self.parts: list[Tensor] = []
        self.calls: dict[str, int] = {}  # calls of each module in this forward so far

    def hook(self, watched: WatchedModule) -> Callable[[nn.Module, Any, Any], None]:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            name = use_name(self.calls, watched.name)
            if isinstance(output, Tensor) and output.dim() >= 1 and output.numel() > 0:
                self._measure(watched, name, output.detach())

        return record

    def _measure(self, watched: WatchedModule, name: str, output: Tensor) -> None:
        flat = output.reshape(-1)
        if flat.dtype != torch.float32:
            flat = flat.float()
        # The sum of squares by a dot product: torch.std_mean took ~60x longer on a
        # (256, 32, 40) activation here.
        squares = torch.dot(flat, flat).reshape(1)
        # ReLU outputs are >= 0: a unit is dead when its sum over the subset is 0, and the
        # per-unit sums also give the total (one pass instead of two). What follows from
        # the sums (total, dead fraction) is computed on the host, after the forward.
        sums = _unit_sums(output).reshape(-1) if watched.dead else flat.sum().reshape(1)
        self.parts += [squares, sums]
        num_shares = 0
        if watched.saturation is not None:
            dims = _non_unit_dims(output)
            shares = watched.saturation(output).float().mean(dim=dims).reshape(-1)  # (units,)
            self.parts.append(shares)
            num_shares = len(shares)
        self.rows.append((watched, name, flat.numel(), len(sums), num_shares))
        if self.histograms is not None:
            # A non-finite entry makes the sum of squares non-finite (so does an overflow,
            # after which the histogram counts no NaN or inf: still right).
            finite = math.isfinite(squares.item())
            self.histograms.add(("activations", name), output, finite=finite)

    def results(
        self, scalars: Sequence[Tensor | None] = ()
    ) -> tuple[list[LayerActivations], list[float | None]]:
        """Every layer's statistics, and ``scalars`` (0-dim tensors, or None) as floats."""
        # One host transfer for all the numbers of the probe, then plain Python: cheaper
        # than numpy for a few dozen numbers per layer (in the training loop, 70 us per
        # probe of the default cnn1d against 170 us).
        given = [scalar.detach().float().reshape(1) for scalar in scalars if scalar is not None]
        pieces = self.parts + given
        host: list[float] = torch.cat(pieces).tolist() if pieces else []
        layers = []
        start = 0
        for watched, name, count, num_sums, num_shares in self.rows:
            squares = host[start]
            sums = host[start + 1 : start + 1 + num_sums]
            shares = host[start + 1 + num_sums : start + 1 + num_sums + num_shares]
            start += 1 + num_sums + num_shares
            total = sum(sums)
            mean = total / count
            finite = math.isfinite(total) and math.isfinite(squares)
            std = math.sqrt(max(squares / count - mean * mean, 0.0)) if finite else math.nan
            dead = sum(s <= 0 for s in sums) / num_sums if watched.dead else None
            saturated = None
            if watched.saturation is not None:
                saturated = sum(s > self.saturation_share for s in shares) / num_shares
            layers.append(
                LayerActivations(
                    name,
                    type(watched.module).__name__,
                    mean,
                    std,
                    dead,
                    saturated,
                    not finite,
                )
            )
        values = iter(host[start:])
        return layers, [None if scalar is None else next(values) for scalar in scalars]


def use_name(calls: dict[str, int], name: str) -> str:
    """The layer that this call of the module ``name`` is, counting its calls in ``calls``:
    ``name`` for its first call in a forward, ``name#2``, ``name#3``, ... for the later
    ones (one ``nn.ReLU`` applied after every layer is one layer per call)."""
    count = calls[name] = calls.get(name, 0) + 1
    return name if count == 1 else f"{name}#{count}"


def _non_unit_dims(output: Tensor) -> tuple[int, ...]:
    """Every dim but the units' (dim 1: features of Linear, channels of Conv)."""
    return (0, *range(2, output.dim())) if output.dim() >= 2 else (0,)


def _unit_sums(output: Tensor) -> Tensor:
    """Each unit's sum over the samples (and positions), in float32: shape (units,)."""
    # Over the samples first, then the positions: one sum over dims (0, 2) of a
    # (256, 32, 40) ReLU output took twice as long here (50 us against 23).
    per_unit = output.sum(0, dtype=torch.float32)  # (units, *positions)
    return per_unit.reshape(len(per_unit), -1).sum(1) if per_unit.dim() > 1 else per_unit


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
    direct = all(map(_train_only_sets_flag, modules))
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
        else:
            for module, training in zip(modules, modes, strict=True):
                module.training = training
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)


def _train_only_sets_flag(module: nn.Module) -> bool:
    """Whether ``module.train(mode)`` only sets ``module.training``, as nn.Module's does
    (a scripted module, or one with its own train(), decides for itself)."""
    kind = type(module)
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
    custom_loss: bool = False,
) -> ActivationProbe:
    """One eval-mode forward on the monitoring subset with temporary forward hooks;
    ``custom_loss``: ``loss_fn`` takes any outputs (else the loss needs a tensor)."""
    stats = _Stats(histograms, saturation_share)
    handles = [watched.module.register_forward_hook(stats.hook(watched)) for watched in modules]
    try:
        with probe_mode(model, inputs.device):
            outputs = model(inputs)
            loss_tensor, hits = _loss_and_hits(outputs, targets, loss_fn, custom_loss=custom_loss)
            correct_tensor = None if hits is None else hits.sum()
            layers, (loss, correct) = stats.results((loss_tensor, correct_tensor))
    finally:
        for handle in handles:
            handle.remove()
    num_outputs = (
        int(outputs.shape[1]) if isinstance(outputs, Tensor) and outputs.dim() == 2 else None
    )
    accuracy = None if correct is None or hits is None else correct / hits.numel()
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
    """Mean loss and accuracy (None when not classification) in eval mode, in batches;
    ``custom_loss``: ``loss_fn`` takes any outputs (else only a tensor of outputs)."""
    loss_sum, correct, classification = 0.0, 0.0, True
    with probe_mode(model, inputs.device):
        for begin in range(0, len(targets), batch_size):
            batch = targets[begin : begin + batch_size]
            outputs = model(inputs[begin : begin + batch_size])
            loss, accuracy = _loss_and_accuracy(outputs, batch, loss_fn, custom_loss=custom_loss)
            loss_sum += (loss if loss is not None else math.nan) * len(batch)
            classification &= accuracy is not None
            correct += (accuracy or 0.0) * len(batch)
    count = max(len(targets), 1)
    return loss_sum / count, correct / count if classification else None


def _loss_and_hits(
    outputs: Any, targets: Tensor | None, loss_fn: LossFunction, *, custom_loss: bool
) -> tuple[Tensor | None, Tensor | None]:
    """:func:`_loss_and_accuracy` left on the device, to be read with the rest of the
    probe's numbers: the loss (a 0-dim tensor) and which predictions are right."""
    # A custom loss gets whatever the model returns (a tuple, a dict, ...); a named loss
    # needs a tensor of outputs.
    if targets is None or not (custom_loss or isinstance(outputs, Tensor)):
        return None, None
    device = outputs.device if isinstance(outputs, Tensor) else targets.device
    # A custom loss may return a number.
    loss = torch.as_tensor(loss_fn(outputs, targets), device=device)
    # Accuracy only for class scores: (batch, classes) against class indices.
    if not isinstance(outputs, Tensor) or outputs.dim() != 2 or targets.is_floating_point():
        return loss, None
    return loss, outputs.argmax(dim=1) == targets


def _loss_and_accuracy(
    outputs: Any, targets: Tensor | None, loss_fn: LossFunction, *, custom_loss: bool
) -> tuple[float | None, float | None]:
    loss, hits = _loss_and_hits(outputs, targets, loss_fn, custom_loss=custom_loss)
    accuracy = None if hits is None else float(hits.float().mean())
    return None if loss is None else float(loss), accuracy


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
