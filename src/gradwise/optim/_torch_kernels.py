"""torch.optim's functional API and fused-kernel facts, imported in this one place.

These functions are what torch.optim's own classes call; they are public in spirit but
not in name, so any change in a torch release shows up here and in the tests that
compare the fused path with the reference path.
"""

from __future__ import annotations

from torch.optim.adagrad import adagrad as adagrad
from torch.optim.adam import adam as adam
from torch.optim.sgd import sgd as sgd

try:
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
except ImportError:  # pragma: no cover - older or newer torch

    def _get_fused_kernels_supported_devices() -> list[str]:
        return ["cpu", "cuda", "mps", "xpu"]


def fused_kernel_devices() -> tuple[str, ...]:
    """Device types on which torch has fused optimizer kernels."""
    return tuple(_get_fused_kernels_supported_devices())
