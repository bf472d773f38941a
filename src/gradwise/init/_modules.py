"""Which modules get initialized, and the generator they are initialized from."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

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

_SEED_OR_GENERATOR = Satisfies(
    lambda value: (
        value is None
        or isinstance(value, torch.Generator)
        or NON_NEGATIVE_INT.is_satisfied_by(value)
    ),
    "a torch.Generator, an int seed >= 0 or None",
)


def check_model(model: object, owner: str) -> None:
    """Raise the standard TypeError unless ``model`` is an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"The 'model' parameter of {owner} must be a torch.nn.Module. "
            f"Got {type(model).__name__} instead."
        )


def weight_layers(model: nn.Module, owner: str) -> list[tuple[str, nn.Module]]:
    """The Linear and Conv layers of ``model``, in registration order, all materialized."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]
    for name, layer in layers:
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in layer.parameters()):
            raise ValueError(
                f"The 'model' parameter of {owner} must have materialized parameters. Got a "
                f"model whose layer '{name}' ({type(layer).__name__}) is still lazy instead; "
                "run one forward pass first."
            )
    return layers


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
