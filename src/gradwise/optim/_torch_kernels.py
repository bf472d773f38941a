"""torch.optim's functional API and fused-kernel facts, imported in this one place.

These functions are what torch.optim's own classes call; they are public in spirit but
not in name, so any change in a torch release shows up here and in the tests that
compare the fused path with the reference path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim.adadelta import adadelta as adadelta
from torch.optim.adagrad import adagrad as adagrad
from torch.optim.adam import adam as adam
from torch.optim.nadam import nadam as nadam
from torch.optim.radam import radam as radam
from torch.optim.rmsprop import rmsprop as rmsprop
from torch.optim.sgd import sgd as sgd

try:
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
except ImportError:  # pragma: no cover - older or newer torch

    def _get_fused_kernels_supported_devices() -> list[str]:
        return ["cpu", "cuda", "mps", "xpu"]


def fused_kernel_devices() -> tuple[str, ...]:
    """Device types on which torch has fused optimizer kernels."""
    return tuple(_get_fused_kernels_supported_devices())


def state_tensors(
    states: Sequence[dict[str, Any]], key: str, params: Sequence[Tensor]
) -> list[Tensor]:
    """Each parameter's ``state[key]``, made as zeros where it is missing (a momentum
    buffer the reference path keeps as None until its first update; an entry switched on
    mid-run): torch's kernels update the list in place and need every tensor."""
    tensors = []
    for state, param in zip(states, params, strict=True):
        tensor = state.get(key)
        if tensor is None:
            tensor = state[key] = torch.zeros_like(param, memory_format=torch.preserve_format)
        tensors.append(tensor)
    return tensors
