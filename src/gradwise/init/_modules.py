"""Which modules get initialized, and the generator they are initialized from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _Orthogonal, _SpectralNorm

from gradwise._validation import NON_NEGATIVE_INT, Satisfies, check

# The layers whose weights get a scheme. ConvTranspose weights are (in, out / groups, ...);
# their fans follow torch.nn.init (see fan_in_and_fan_out).
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)

NORMALIZATION_LAYERS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
)

# Parametrizations whose output has a fixed scale whatever is written through them:
# spectral_norm divides the weight by its largest singular value, orthogonal makes every
# singular value 1. A scheme's std or gain, or LSUV's rescaling, cannot survive them.
_SCALE_FIXING: tuple[tuple[type[nn.Module], str], ...] = (
    (_SpectralNorm, "spectral_norm"),
    (_Orthogonal, "orthogonal"),
)

_SEED_OR_GENERATOR = Satisfies(
    lambda value: (
        value is None
        or isinstance(value, torch.Generator)
        # torch.Generator.manual_seed takes 64 bits; compared as ints, not floats.
        or (NON_NEGATIVE_INT.is_satisfied_by(value) and int(value) < 2**64)
    ),
    "a torch.Generator, an int seed in [0, 2**64 - 1] or None",
)


def check_model(model: object, owner: str) -> None:
    """Raise the standard TypeError unless ``model`` is an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"The 'model' parameter of {owner} must be a torch.nn.Module. "
            f"Got {type(model).__name__} instead."
        )


def weight_layers(model: nn.Module, owner: str) -> list[tuple[str, nn.Module]]:
    """The Linear and Conv layers of ``model``, in registration order, all materialized and
    with weights and biases that a write reaches (see :func:`update_parameter`)."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]
    for name, layer in layers:
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in layer.parameters()):
            raise ValueError(
                f"The 'model' parameter of {owner} must have materialized parameters. Got a "
                f"model whose layer '{name}' ({type(layer).__name__}) is still lazy instead; "
                "run one forward pass first."
            )
        for tensor_name in ("weight", "bias"):
            _check_not_recomputed(layer, tensor_name, name, owner)
            _check_invertible(layer, tensor_name, name, owner)
    return layers


def normalization_layers(model: nn.Module, owner: str) -> list[tuple[str, nn.Module]]:
    """The normalization layers of ``model``, in registration order, with weights and
    biases that a write reaches (checked as :func:`weight_layers` checks its layers)."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, NORMALIZATION_LAYERS)]
    for name, layer in layers:
        for tensor_name in ("weight", "bias"):
            _check_not_recomputed(layer, tensor_name, name, owner)
            _check_invertible(layer, tensor_name, name, owner)
    return layers


def scale_fixing_parametrization(layer: nn.Module) -> str | None:
    """The name of the parametrization on ``layer``'s weight that fixes its scale
    (``"spectral_norm"``, ``"orthogonal"``), or ``None`` when there is none."""
    for parametrization in _parametrizations(layer, "weight"):
        for kind, label in _SCALE_FIXING:
            if isinstance(parametrization, kind):
                return label
    return None


def _parametrizations(layer: nn.Module, tensor_name: str) -> list[nn.Module]:
    if not parametrize.is_parametrized(layer, tensor_name):
        return []
    chains = cast(nn.ModuleDict, layer.parametrizations)
    return list(cast(nn.ModuleList, chains[tensor_name]))


def _check_invertible(layer: nn.Module, tensor_name: str, name: str, owner: str) -> None:
    # A write goes through every parametrization's right_inverse (update_parameter); torch
    # raises on one without it, and checked here no layer has been written yet.
    for parametrization in _parametrizations(layer, tensor_name):
        if hasattr(parametrization, "right_inverse"):
            continue
        kind = type(parametrization).__name__
        raise ValueError(
            f"The 'model' parameter of {owner} must have parametrizations that implement "
            f"right_inverse, so that a value can be written through them. Got a model whose "
            f"layer '{name}' ({type(layer).__name__}) has its {tensor_name} parametrized by "
            f"{kind}, which does not, instead. Initialize the model before registering "
            "the parametrization, remove it first (torch.nn.utils.parametrize."
            f"remove_parametrizations(layer, '{tensor_name}')) and register it again after, "
            "or fill the tensor it is computed from yourself "
            f"(layer.parametrizations.{tensor_name}.original) and leave the layer out."
        )


def _check_not_recomputed(layer: nn.Module, tensor_name: str, name: str, owner: str) -> None:
    # torch.nn.utils.weight_norm, spectral_norm and prune keep the parameter under another
    # name ('weight_orig', or 'weight_g' and 'weight_v') and rebuild a plain tensor .weight
    # from it before every forward pass: what is written into .weight is silently lost.
    value = getattr(layer, tensor_name, None)
    if value is None or isinstance(value, nn.Parameter):
        return
    if parametrize.is_parametrized(layer, tensor_name):
        return  # written through the parametrization (update_parameter)
    if not any(hasattr(layer, tensor_name + suffix) for suffix in ("_orig", "_v")):
        return
    raise ValueError(
        f"The 'model' parameter of {owner} must hold each layer's weight and bias as a "
        f"parameter or a torch.nn.utils.parametrize parametrization. Got a model whose layer "
        f"'{name}' ({type(layer).__name__}) recomputes its {tensor_name} from other parameters "
        "before every forward pass (torch.nn.utils.weight_norm, spectral_norm or prune) "
        f"instead, so {owner} cannot set it. Initialize the model before applying them, or "
        "use torch.nn.utils.parametrizations.weight_norm or spectral_norm."
    )


def update_parameter(
    layer: nn.Module, tensor_name: str, change: Callable[[Tensor], object]
) -> None:
    """Apply ``change``, which fills or scales a tensor in place, to ``layer``'s
    ``tensor_name``. A parametrized tensor (``torch.nn.utils.parametrizations.weight_norm``)
    is computed anew at every access, so ``change`` gets a copy, which is assigned back
    through the parametrization's ``right_inverse``."""
    if not parametrize.is_parametrized(layer, tensor_name):
        change(getattr(layer, tensor_name))
        return
    value = getattr(layer, tensor_name).detach().clone()
    change(value)
    with torch.no_grad():
        setattr(layer, tensor_name, value)


def make_generator(
    generator: torch.Generator | int | None, model: nn.Module, owner: str
) -> torch.Generator | None:
    """A generator from a seed (on the model's device), a given generator, or ``None``."""
    check("generator", owner, generator, _SEED_OR_GENERATOR)
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    first = next(model.parameters(), None)
    device = torch.device("cpu") if first is None else first.device
    return torch.Generator(device=device).manual_seed(int(generator))


def check_batch(batch: object, name: str, owner: str, when: str = "") -> None:
    """Raise the standard ValueError unless ``batch`` is a tensor or a tuple/list of inputs."""
    if isinstance(batch, Tensor | tuple | list):
        return
    raise ValueError(
        f"The '{name}' parameter of {owner} must be a batch of the model's inputs (a tensor, "
        f"or a tuple of its positional arguments){when}. Got {_short_repr(batch)} instead."
    )


def run(model: nn.Module, batch: Tensor | tuple[Any, ...] | list[Any]) -> None:
    """One forward pass on ``batch`` (a tensor, or the model's positional arguments)."""
    if isinstance(batch, Tensor):
        model(batch)
    else:
        model(*batch)


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{type(value).__name__} object"
