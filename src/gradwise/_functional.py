"""A module called with other tensors standing in for its parameters and buffers
(``torch.func.functional_call``), the module left as it was, also when it registers a
submodule twice.

Shared by gradwise.curvature (the Hessian differentiates the loss in swapped-in leaves)
and gradwise.landscape (the loss at swapped-in points of parameter space).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn
from torch.func import functional_call

#: A parameter's or buffer's name -> the path of every module attribute that holds it.
Slots = dict[str, tuple[str, ...]]


def tensor_slots(model: nn.Module, prefix: str = "") -> Slots:
    """Each parameter's and buffer's name (as ``named_parameters`` and ``named_buffers``
    give it) -> a path, starting with ``prefix``, for every module attribute that holds it.

    :func:`call_with` gives ``functional_call`` one path per attribute, with
    ``tie_weights=False``. Its own tying swaps in every alias name, and a submodule
    registered twice (``self.b = self.a``, ``nn.ModuleList([block] * 3)``) has two names
    for one attribute: the second swap saved the first's stand-in as the original, and the
    model kept a plain tensor, no longer its Parameter, holding the stand-in's values
    (torch 2.13). A parameter shared by two modules (tied embeddings) has two attributes,
    and both are swapped.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(*[nn.Linear(2, 2, bias=False)] * 2)
        >>> tensor_slots(model)
        {'0.weight': ('0.weight',)}
    """
    names = {id(t): name for name, t in (*model.named_parameters(), *model.named_buffers())}
    slots: dict[str, list[str]] = {}
    seen: set[tuple[int, str]] = set()
    for module_name, module in model.named_modules(remove_duplicate=False):
        for attribute, tensor in (*module._parameters.items(), *module._buffers.items()):
            if tensor is None or id(tensor) not in names or (id(module), attribute) in seen:
                continue
            seen.add((id(module), attribute))
            path = f"{module_name}.{attribute}" if module_name else attribute
            slots.setdefault(names[id(tensor)], []).append(f"{prefix}{path}")
    return {name: tuple(paths) for name, paths in slots.items()}


def call_with(
    module: nn.Module, slots: Slots, tensors: Mapping[str, Tensor], args: tuple[Any, ...]
) -> Any:
    """``module(*args)`` with ``tensors[name]`` standing in at every path of
    ``slots[name]`` (see :func:`tensor_slots`); the tensors not named keep their own."""
    swapped = {path: value for name, value in tensors.items() for path in slots[name]}
    return functional_call(module, swapped, args, tie_weights=False)
