"""What a watch measures: gradient and update norms per weight, and activation statistics
on the monitoring subset through forward hooks that exist only during the probe.

Every probe leaves the model as it found it: parameters, buffers and each module's
train/eval mode; the global RNG state is restored after the probe forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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
    histograms of a layer sample the same units. Each histogram is one ``torch.histc`` over
    the sample's range (measured: ~40 us per layer; binning all layers in one batched
    computation was 3x slower at these sizes).
    """

    def __init__(self, num_bins: int, max_values: int, positions: dict[Any, Tensor]) -> None:
        self.num_bins = num_bins
        self.max_values = max_values
        self.positions = positions
        self.histograms: dict[str, Histogram] = {}

    def add(self, name: str, tensor: Tensor, *, finite: bool) -> None:
        """Histogram ``tensor`` now (later in-place changes to it do not matter)."""
        flat = tensor.detach().reshape(-1)
        if flat.numel() > self.max_values:
            sample = flat.index_select(0, self._positions(flat))
        else:
            sample = flat
        sample = sample.float()
        nonfinite = (0, 0, 0)
        if not finite:
            nonfinite = _nonfinite_counts(flat)
            sample = sample[torch.isfinite(sample)]
        if sample.numel() == 0:
            self.histograms[name] = Histogram([], [], *nonfinite, 0, flat.numel())
            return
        low, high = (float(v) for v in torch.aminmax(sample))
        if low == high:  # numpy's convention for a constant sample
            low, high = low - 0.5, high + 0.5
        counts = torch.histc(sample, self.num_bins, low, high)
        edges = torch.linspace(low, high, self.num_bins + 1)
        self.histograms[name] = Histogram(
            edges.tolist(),
            [int(c) for c in counts.tolist()],
            *nonfinite,
            sample.numel(),
            flat.numel(),
        )

    def _positions(self, flat: Tensor) -> Tensor:
        key = (flat.numel(), flat.device)
        if key not in self.positions:
            generator = torch.Generator().manual_seed(flat.numel())
            index = torch.randperm(flat.numel(), generator=generator)[: self.max_values]
            self.positions[key] = index.sort().values.to(flat.device)
        return self.positions[key]

    def finish(self) -> dict[str, Histogram]:
        """The histograms, by name."""
        return dict(self.histograms)


def histogram(tensor: Tensor, num_bins: int = 30, max_values: int = 4096) -> Histogram:
    """The histogram of one tensor, as the watch records it (see :class:`Histogram`)."""
    batch = HistogramBatch(num_bins, max_values, {})
    batch.add("tensor", tensor, finite=bool(torch.isfinite(tensor.detach().sum())))
    return batch.finish()["tensor"]


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
    weight_grad_norms: list[float]  # one per watched weight
    first_nonfinite: str | None  # the first parameter with a non-finite gradient
    before: list[Tensor] | None = None  # weights before the step (for update ratios)
    grad_histograms: dict[str, Histogram] = field(default_factory=dict)


class GradientProbe:
    """Reads gradients and snapshots weights; computes ||update|| / ||w|| after the step.

    The watched weights are the parameters with 2 or more dimensions (the weight matrices
    and kernels of Linear and Conv layers), named by their parameter names; the global
    gradient norm covers every parameter that has a gradient.
    """

    def __init__(self, model: nn.Module) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.parameter_names = [n for n, _ in named]
        self.parameters = [p for _, p in named]
        self.weight_names = [n for n, p in named if p.dim() >= 2]
        self.weights = [p for p in self.parameters if p.dim() >= 2]

    def measure(
        self, step: int, *, snapshot: bool, histograms: HistogramBatch | None
    ) -> GradientMeasurement | None:
        """Gradient norms now (None when no parameter has a gradient); with
        ``histograms``, also the weight gradients' histograms."""
        named = zip(self.parameter_names, self.parameters, strict=True)
        with_grad = [(name, p.grad) for name, p in named if p.grad is not None]
        if not with_grad:
            return None
        # One fused norm per tensor and one host transfer for all of them (measured: about
        # 70 us for the 14 tensors of the default cnn1d, versus 5 us per tensor per call).
        norms = torch.stack(torch._foreach_norm([g for _, g in with_grad])).float()
        values = norms.tolist()
        by_name = dict(zip((n for n, _ in with_grad), values, strict=True))
        global_norm = math.sqrt(sum(v * v for v in values))
        first_bad = next((n for n, v in by_name.items() if not math.isfinite(v)), None)
        measurement = GradientMeasurement(
            step,
            global_norm,
            [by_name.get(name, math.nan) for name in self.weight_names],
            first_bad,
        )
        if snapshot:
            measurement.before = [w.detach().clone() for w in self.weights]
        if histograms is not None:
            for name, weight in zip(self.weight_names, self.weights, strict=True):
                if weight.grad is not None:
                    finite = math.isfinite(by_name[name])
                    histograms.add(name, weight.grad, finite=finite)
            measurement.grad_histograms = histograms.finish()
        return measurement

    def last_gradient_finite(self) -> bool:
        """Whether the last parameter's gradient (if any) is finite: one small reduction."""
        for parameter in reversed(self.parameters):
            if parameter.grad is not None:
                return bool(torch.isfinite(parameter.grad.sum()))
        return True

    def first_nonfinite_gradient(self) -> str | None:
        """The first parameter (registration order) whose gradient has a NaN or inf."""
        for name, parameter in zip(self.parameter_names, self.parameters, strict=True):
            grad = parameter.grad
            if grad is not None and not bool(torch.isfinite(grad).all()):
                return name
        return None

    def update_ratios(self, before: Sequence[Tensor]) -> tuple[list[float], list[float]]:
        """(||w_after - w_before||, ||w_before||) per watched weight."""
        if not self.weights:
            return [], []
        after = [w.detach() for w in self.weights]
        deltas = torch._foreach_sub(after, list(before))
        norms = torch.stack(torch._foreach_norm(deltas) + torch._foreach_norm(list(before)))
        values = norms.float().tolist()
        count = len(self.weights)
        return values[:count], values[count:]


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
    histogram: Histogram | None


@dataclass
class ActivationProbe:
    """The monitoring forward: loss, accuracy and per-module activation statistics."""

    loss: float | None
    accuracy: float | None
    num_outputs: int | None
    layers: list[LayerActivations]


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
        self.rows: list[tuple[WatchedModule, int]] = []
        self.parts: list[Tensor] = []  # 4 per row: sum, sum of squares, dead, saturated
        self.nan: Tensor | None = None

    def hook(self, watched: WatchedModule) -> Callable[[nn.Module, Any, Any], None]:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, Tensor) and output.dim() >= 1 and output.numel() > 0:
                self.rows.append((watched, output.numel()))
                self.parts += self._measure(watched, output.detach())

        return record

    def _measure(self, watched: WatchedModule, output: Tensor) -> list[Tensor]:
        flat = output.reshape(-1)
        if flat.dtype != torch.float32:
            flat = flat.float()
        if self.nan is None or self.nan.device != flat.device:
            self.nan = flat.new_tensor(math.nan)
        nan = self.nan
        dims = _non_unit_dims(output)
        if watched.dead:
            # ReLU outputs are >= 0: a unit is dead when its sum over the subset is 0, and
            # the per-unit sums also give the total (one pass instead of two).
            unit_sums = output.sum(dim=dims, dtype=torch.float32)
            total = unit_sums.sum()
            dead = (unit_sums <= 0).float().mean()
        else:
            total, dead = flat.sum(), nan
        saturated = nan
        if watched.saturation is not None:
            share = watched.saturation(output).float().mean(dim=dims)  # (units,)
            saturated = (share > self.saturation_share).float().mean()
        # The sum of squares by a dot product: torch.std_mean took ~60x longer on a
        # (256, 32, 40) activation here.
        if self.histograms is not None:
            self.histograms.add(watched.name, output, finite=bool(torch.isfinite(total)))
        return [total, torch.dot(flat, flat), dead, saturated]

    def results(self) -> list[LayerActivations]:
        if not self.rows:
            return []
        # One host transfer for every layer's numbers.
        summaries = torch.stack(self.parts).view(-1, 4).double().cpu().tolist()
        histograms = self.histograms.finish() if self.histograms is not None else {}
        layers = []
        for (watched, count), summary in zip(self.rows, summaries, strict=True):
            total, squares, dead, saturated = summary
            mean = total / count
            finite = math.isfinite(total) and math.isfinite(squares)
            std = math.sqrt(max(squares / count - mean * mean, 0.0)) if finite else math.nan
            layers.append(
                LayerActivations(
                    watched.name,
                    type(watched.module).__name__,
                    mean,
                    std,
                    None if math.isnan(dead) else dead,
                    None if math.isnan(saturated) else saturated,
                    not finite,
                    histograms.get(watched.name),
                )
            )
        return layers


def _non_unit_dims(output: Tensor) -> tuple[int, ...]:
    """Every dim but the units' (dim 1: features of Linear, channels of Conv)."""
    return (0, *range(2, output.dim())) if output.dim() >= 2 else (0,)


@contextmanager
def probe_mode(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode and no autograd for the probe; afterwards restore every module's mode and
    the global RNG state (CPU, and the device's for CUDA), in case the model draws random
    numbers even in eval mode."""
    modes = [(module, module.training) for module in model.modules()]
    # Saved by hand: torch.random.fork_rng cost ~0.1 ms per probe here, as much as the
    # statistics of a layer.
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        with torch.no_grad():
            model.eval()
            yield
    finally:
        for module, training in modes:
            module.training = training
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)


def run_activation_probe(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor | None,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    modules: Sequence[WatchedModule],
    histograms: HistogramBatch | None,
    saturation_share: float,
) -> ActivationProbe:
    """One eval-mode forward on the monitoring subset with temporary forward hooks."""
    stats = _Stats(histograms, saturation_share)
    handles = [watched.module.register_forward_hook(stats.hook(watched)) for watched in modules]
    try:
        with probe_mode(model, inputs.device):
            outputs = model(inputs)
            loss, accuracy = _loss_and_accuracy(outputs, targets, loss_fn)
            layers = stats.results()
    finally:
        for handle in handles:
            handle.remove()
    num_outputs = (
        int(outputs.shape[1]) if isinstance(outputs, Tensor) and outputs.dim() == 2 else None
    )
    return ActivationProbe(loss, accuracy, num_outputs, layers)


def evaluate(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batch_size: int = 1024,
) -> tuple[float | None, float | None]:
    """Mean loss and accuracy (None when not classification) in eval mode, in batches."""
    loss_sum, correct, classification = 0.0, 0.0, True
    with probe_mode(model, inputs.device):
        for begin in range(0, len(targets), batch_size):
            batch = targets[begin : begin + batch_size]
            outputs = model(inputs[begin : begin + batch_size])
            loss, accuracy = _loss_and_accuracy(outputs, batch, loss_fn)
            loss_sum += (loss if loss is not None else math.nan) * len(batch)
            classification &= accuracy is not None
            correct += (accuracy or 0.0) * len(batch)
    count = max(len(targets), 1)
    return loss_sum / count, correct / count if classification else None


def _loss_and_accuracy(
    outputs: Any, targets: Tensor | None, loss_fn: Callable[[Tensor, Tensor], Tensor]
) -> tuple[float | None, float | None]:
    if targets is None or not isinstance(outputs, Tensor):
        return None, None
    loss = float(loss_fn(outputs, targets))
    if outputs.dim() != 2 or targets.is_floating_point():
        return loss, None
    return loss, float((outputs.argmax(dim=1) == targets).float().mean())


def first_nonfinite_module(model: nn.Module, inputs: Tensor) -> str | None:
    """The first module (in execution order) whose output has a NaN or inf, if any."""
    found: list[str] = []

    def hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def check(module: nn.Module, args: Any, output: Any) -> None:
            if not found and isinstance(output, Tensor) and not bool(torch.isfinite(output).all()):
                found.append(f"{name} ({type(module).__name__})")

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
