"""Layer-sequential unit-variance initialization (Mishkin & Matas 2016)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from gradwise._frames import stacklevel_outside
from gradwise._modes import module_modes, restore_modes
from gradwise._validation import POSITIVE_INT, Interval, check
from gradwise.init._initializers import orthogonal
from gradwise.init._modules import (
    check_batch,
    check_model,
    make_generator,
    run,
    scale_fixing_parametrization,
    update_parameter,
    weight_layers,
)

_TOLERANCE = Interval(low=0.0, high=1.0, low_closed=False, high_closed=False)

Batch = Tensor | tuple[Any, ...] | list[Any]


def lsuv(
    model: nn.Module,
    batch: Batch,
    *,
    tolerance: float = 0.05,
    max_iterations: int = 10,
    generator: torch.Generator | int | None = None,
) -> dict[str, float]:
    r"""LSUV: orthogonal weights, then rescale each layer to unit output variance on data.

    Mishkin & Matas' Algorithm 1. Every Linear and Conv weight is first filled with
    :func:`orthogonal`; then, layer by layer in the order the forward pass runs them, the
    layer's output :math:`B` on ``batch`` is captured with a forward hook and its weight
    divided by :math:`\sqrt{\operatorname{Var}(B)}` (variance over every element of the
    output), forward pass after forward pass, until
    :math:`|\operatorname{Var}(B) - 1| < \text{tolerance}` or ``max_iterations`` rescalings.
    A later layer's rescaling cannot change an earlier layer's output, so every layer ends
    at unit variance. Biases are left as they are (:func:`initialize` with
    ``weights="lsuv"`` also sets biases and normalization layers).

    The passes run in eval mode under ``torch.no_grad()`` so that dropout is off and
    BatchNorm's running statistics are not updated; every module's train/eval mode is
    restored afterwards. A layer that the forward pass does not reach keeps its orthogonal
    weights and is absent from the result; a layer called twice is measured on its first
    call. A layer still off by ``tolerance`` after ``max_iterations`` rescalings gets a
    ``UserWarning``. A weight under a parametrization that fixes its scale
    (``torch.nn.utils.parametrizations.spectral_norm`` or ``orthogonal``) cannot be
    rescaled: such a layer keeps its orthogonal weights, is left out of the result, and
    gets a ``UserWarning``. ``parametrizations.weight_norm`` keeps the scale written
    through it and is rescaled like a plain weight.

    Args:
        model: the network; ``model(batch)`` (or ``model(*batch)``) must run.
        batch: a batch of inputs: a tensor, or a tuple of the model's positional arguments.
            A few hundred examples give a stable variance.
        tolerance: the accepted distance of each variance from 1, in (0, 1).
        max_iterations: the most rescalings per layer.
        generator: a ``torch.Generator``, an int seed, or ``None`` (torch's global RNG)
            for the orthogonal pre-step.

    Returns:
        The variance each layer's output reached, by module name, in forward order.

    Example:
        >>> model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> variances = lsuv(model, torch.randn(256, 20), generator=0)
        >>> all(abs(v - 1) < 0.05 for v in variances.values())
        True

    Reference:
        Mishkin & Matas, "All you need is a good init", ICLR 2016.
    """
    check_model(model, "lsuv")
    check_batch(batch, "batch", "lsuv")
    check("tolerance", "lsuv", tolerance, _TOLERANCE)
    check("max_iterations", "lsuv", max_iterations, POSITIVE_INT)
    rng = make_generator(generator, model, "lsuv")
    fill = orthogonal()
    for _, layer in weight_layers(model, "lsuv"):
        update_parameter(layer, "weight", lambda weight: fill(weight, generator=rng))
    return rescale_to_unit_variance(model, batch, tolerance, int(max_iterations))


def rescale_to_unit_variance(
    model: nn.Module, batch: Batch, tolerance: float, max_iterations: int
) -> dict[str, float]:
    """LSUV's loop over layers, without the orthogonal pre-step."""
    modes = module_modes(model)
    model.eval()
    try:
        with torch.no_grad():
            order = _forward_order(model, batch)
            fixed = {name: scale_fixing_parametrization(layer) for name, layer in order}
            rescaled = [(name, layer) for name, layer in order if fixed[name] is None]
            for name, layer in rescaled:
                _rescale(model, batch, name, layer, tolerance, max_iterations)
            # Measured again once all are done: a weight shared with a later layer (tied
            # weights) is rescaled again there, which moves this layer's variance too.
            variances = _output_variances(model, batch, rescaled)
    finally:
        restore_modes(modes)
    _warn_about_fixed_scales({name: label for name, label in fixed.items() if label})
    missed = [name for name, variance in variances.items() if abs(variance - 1) >= tolerance]
    if missed:
        warnings.warn(
            f"LSUV left {', '.join(repr(name) for name in missed)} off unit variance by more "
            f"than {tolerance} after {max_iterations} rescalings; the bias, a data-dependent "
            "layer or a weight shared with a later layer (tied weights, rescaled again "
            "there) moves the variance. Raise max_iterations or check the batch.",
            UserWarning,
            stacklevel=stacklevel_outside(__file__),  # lsuv and initialize reach here at two depths
        )
    return variances


def _warn_about_fixed_scales(fixed: dict[str, str]) -> None:
    if not fixed:
        return
    layers = ", ".join(f"'{name}' ({label})" for name, label in fixed.items())
    warnings.warn(
        f"LSUV skipped {layers}: the parametrization on the weight fixes its scale (the "
        "largest singular value for spectral_norm, every one for orthogonal), so no "
        "rescaling of the weight can change the layer's output variance. They keep their "
        "orthogonal weights and are left out of the result. If LSUV should set their "
        "scale, remove the parametrization first "
        "(torch.nn.utils.parametrize.remove_parametrizations).",
        UserWarning,
        stacklevel=stacklevel_outside(__file__),
    )


def _forward_order(model: nn.Module, batch: Batch) -> list[tuple[str, nn.Module]]:
    order: list[tuple[str, nn.Module]] = []

    def record(name: str, layer: nn.Module) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if all(module is not seen for _, seen in order):
                order.append((name, layer))

        return hook

    handles = [
        layer.register_forward_hook(record(name, layer))
        for name, layer in weight_layers(model, "lsuv")
    ]
    try:
        run(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return order


def _rescale(
    model: nn.Module,
    batch: Batch,
    name: str,
    layer: nn.Module,
    tolerance: float,
    max_iterations: int,
) -> float:
    variance = _output_variance(model, batch, layer)
    for _ in range(max_iterations):
        if abs(variance - 1) < tolerance:
            break
        if not (math.isfinite(variance) and variance > 0):
            raise ValueError(
                f"LSUV cannot rescale layer '{name}': its output has variance {variance} on "
                "the batch. Check that the batch varies and that the layers before it do "
                "not silence every unit."
            )
        _divide_weight(layer, math.sqrt(variance))
        variance = _output_variance(model, batch, layer)
    return variance


def _divide_weight(layer: nn.Module, divisor: float) -> None:
    update_parameter(layer, "weight", lambda weight: weight.div_(divisor))


def _output_variance(model: nn.Module, batch: Batch, layer: nn.Module) -> float:
    return _output_variances(model, batch, [("", layer)])[""]


def _output_variances(
    model: nn.Module, batch: Batch, layers: list[tuple[str, nn.Module]]
) -> dict[str, float]:
    """Each layer's output variance on its first call, from one forward pass."""
    variances: dict[str, float] = {}

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Tensor) -> None:
            # Measured now, not after the pass: an in-place activation after the layer
            # (nn.ReLU(inplace=True)) overwrites this very tensor later in the pass.
            if name not in variances:
                variances[name] = float(output.double().var(correction=0))

        return hook

    handles = [layer.register_forward_hook(record(name)) for name, layer in layers]
    try:
        run(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: variances[name] for name, _ in layers}
