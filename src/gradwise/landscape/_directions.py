"""Random directions in parameter space, filter-normalized as in Li et al. (2018)."""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral

import torch
from torch import Tensor, nn

from gradwise._validation import POSITIVE_INT, Boolean, check

Direction = dict[str, Tensor]

# Parameters owned by these modules are normalization parameters (scales and shifts):
# Li et al. set them to zero in the direction, like biases. A LayerNorm over a 2-D shape
# has a 2-D weight, so the module type, not only the tensor's rank, decides.
NORMALIZATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
)


def random_directions(
    model: nn.Module, num: int = 2, seed: int = 0, filter_normalize: bool = True
) -> list[Direction]:
    r"""``num`` random directions in the parameter space of ``model``, one tensor per parameter.

    Each direction starts as i.i.d. standard normal entries. With filter normalization
    (Li et al. 2018) every *filter* :math:`d_{i}` of a weight :math:`w` (one output
    unit or channel: the slice ``[i]`` along the first dimension) is rescaled to the norm
    of the corresponding filter of the weights,

    .. math:: d_{i} \leftarrow \frac{d_{i}}{\lVert d_{i} \rVert} \lVert w_{i} \rVert,

    and biases, other 1-D parameters and the parameters of normalization layers
    (BatchNorm, LayerNorm, GroupNorm, RMSNorm) are zero in the direction. Slices along
    such directions are comparable between networks whose weights have different scales.
    Without filter normalization the raw Gaussian direction is returned (every parameter,
    biases included). Frozen parameters (``requires_grad=False``) are zero in the
    direction either way: training never moves them, so a slice that did would show
    ground the optimizer cannot reach (a fine-tuned head's landscape would be dominated
    by the frozen backbone's). Their entries are still drawn, so the other parameters'
    entries are those of the same model unfrozen.

    The draws come from a private generator seeded with ``seed`` (in float64 on the CPU,
    then cast to each parameter's dtype and device): the same seed gives the same
    directions on any device, and torch's global random state is not touched.

    Args:
        model: the network; its current parameters set the filter norms.
        num: how many directions, an int >= 1.
        seed: an int in [0, 2**64 - 1], the seeds ``torch.Generator.manual_seed`` takes
            as distinct (it reads a negative seed as its 64-bit two's complement, so -1
            would silently be 2**64 - 1).
        filter_normalize: rescale per filter and zero biases and normalization parameters.

    Returns:
        A list of ``num`` dicts mapping each parameter name (``model.named_parameters()``)
        to a tensor of that parameter's shape.

    Example:
        >>> import torch
        >>> from gradwise.landscape import random_directions
        >>> model = torch.nn.Linear(3, 2)
        >>> first, second = random_directions(model)
        >>> torch.allclose(first["weight"].norm(dim=1), model.weight.norm(dim=1))
        True
        >>> first["bias"].abs().sum().item()
        0.0

    Reference:
        Li, Xu, Taylor, Studer and Goldstein, "Visualizing the Loss Landscape of Neural
        Nets", NeurIPS 2018.
    """
    check("model", "random_directions", model, _MODULE)
    check("num", "random_directions", num, POSITIVE_INT)
    check("seed", "random_directions", seed, _SEED)
    check("filter_normalize", "random_directions", filter_normalize, Boolean())
    check_materialized(model, "random_directions")
    generator = torch.Generator().manual_seed(int(seed))
    parameters = dict(model.named_parameters())
    zeroed = _zeroed_names(model) if filter_normalize else set()
    directions = []
    for _ in range(int(num)):
        direction = {}
        for name, parameter in parameters.items():
            weight = parameter.detach()
            draw = torch.randn(weight.shape, generator=generator, dtype=torch.float64)
            draw = draw.to(dtype=weight.dtype, device=weight.device)
            if name in zeroed or not parameter.requires_grad:
                draw = torch.zeros_like(weight)
            elif filter_normalize:
                draw = _normalize_filters(draw, weight)
            direction[name] = draw
        directions.append(direction)
    return directions


def _zeroed_names(model: nn.Module) -> set[str]:
    """Biases, 1-D parameters and normalization-layer parameters."""
    names = {name for name, parameter in model.named_parameters() if parameter.dim() <= 1}
    for prefix, module in model.named_modules():
        if isinstance(module, NORMALIZATION_MODULES):
            for name, _ in module.named_parameters(prefix=prefix, recurse=False):
                names.add(name)
    return names


def _normalize_filters(direction: Tensor, weight: Tensor) -> Tensor:
    """Each slice ``direction[i]`` rescaled to the norm of ``weight[i]``."""
    dims = tuple(range(1, weight.dim()))
    shape = (-1,) + (1,) * (weight.dim() - 1)
    weight_norms = torch.linalg.vector_norm(weight, dim=dims).reshape(shape)
    direction_norms = torch.linalg.vector_norm(direction, dim=dims).reshape(shape)
    return direction * (weight_norms / direction_norms)


def check_materialized(model: nn.Module, owner: str) -> None:
    """The error for a model with a parameter or buffer on the meta device: it has a shape
    but no values, so its filter norms and its losses do not exist (a forward pass there
    gives meta tensors, and reading them failed deep in torch)."""
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.is_meta:
            raise ValueError(
                f"The 'model' parameter of {owner} must hold its weights in memory. Got "
                f"'{name}' on the meta device (a shape without values) instead; materialize "
                "the model first (model.to_empty(device=...) then load_state_dict(...))."
            )


def check_direction(
    direction: object, model: nn.Module, name: str, owner: str
) -> Mapping[str, Tensor]:
    """``direction`` as a mapping with a tensor of the right shape for every parameter."""
    if not isinstance(direction, Mapping):
        raise TypeError(
            f"The '{name}' parameter of {owner} must be a mapping from parameter names to "
            f"tensors (as random_directions returns). Got {type(direction).__name__} instead."
        )
    for key, parameter in model.named_parameters():
        value = direction.get(key)
        if not isinstance(value, Tensor):
            raise ValueError(
                f"The '{name}' parameter of {owner} must have a tensor for every parameter "
                f"of the model. Got {type(value).__name__} for '{key}' instead."
            )
        if value.is_meta:
            raise ValueError(
                f"The '{name}' parameter of {owner} must hold values. Got a tensor on the meta "
                f"device (a shape without values) for '{key}' instead; build it from a model "
                "whose weights are in memory."
            )
        if value.shape != parameter.shape:
            raise ValueError(
                f"The '{name}' parameter of {owner} must match the shape of '{key}', "
                f"{tuple(parameter.shape)}. Got {tuple(value.shape)} instead."
            )
        _check_finite(value, key, name, owner)
    return direction


def _check_finite(value: Tensor, key: str, name: str, owner: str) -> None:
    """A NaN or inf entry made every point but the center NaN, with no error (and with
    ``lerp``, every point of an interpolation)."""
    finite = torch.isfinite(value.detach())
    if bool(finite.all()):
        return
    bad = value.detach()[~finite]
    kinds = [word for word, found in (("NaN", bad.isnan().any()), ("inf", bad.isinf().any()))
             if bool(found)]  # fmt: skip
    raise ValueError(
        f"The '{name}' parameter of {owner} must hold finite values. Got "
        f"{' and '.join(kinds)} in '{key}' ({bad.numel()} of {value.numel()} entries) "
        "instead; rebuild it (random_directions(model) draws a finite one) or replace them "
        "(torch.nan_to_num)."
    )


class _Seed:
    """An int that ``torch.Generator.manual_seed`` takes as itself: [0, 2**64 - 1].

    Not an :class:`Interval`: it compares in floats, and float(2**64 - 1) == 2**64, so
    2**64 passed and overflowed inside torch ("Overflow when unpacking long long").
    """

    description = "an int in [0, 2**64 - 1] (the seeds torch.Generator.manual_seed takes)"

    def is_satisfied_by(self, value: object) -> bool:
        if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, Integral):
            return False
        return 0 <= int(value) < 2**64

    def explain(self, value: object) -> str:
        return "reduce it into that range, for example with seed % 2**64"


_SEED = _Seed()


class _IsModule:
    description = "a torch.nn.Module"

    def is_satisfied_by(self, value: object) -> bool:
        return isinstance(value, nn.Module)


_MODULE = _IsModule()
