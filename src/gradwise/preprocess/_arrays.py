"""NumPy arrays and tensors in, the same kind out; checks on the data a transformer sees.

Every transformer computes on a float64 tensor on the input's device and hands back the
input's kind (``np.ndarray`` or ``Tensor``) and dtype: floating dtypes are kept, integer and
bool inputs (uint8 images, say) come back as float32, because a scaled or centered uint8
image is not a uint8 image any more.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

#: An array a transformer accepts and returns: a NumPy array or a torch tensor.
ArrayT = TypeVar("ArrayT", Tensor, npt.NDArray[Any])


def as_float64(X: object, owner: str) -> Tensor:
    """``X`` as a float64 tensor (shared with ``X`` where no conversion is needed)."""
    if isinstance(X, Tensor):
        if X.is_complex():
            raise TypeError(f"{owner} expects real data. Got a tensor of dtype {X.dtype} instead.")
        x = X.to(torch.float64)
    elif isinstance(X, np.ndarray):
        x = _numpy_as_float64(X, owner)
    else:
        raise TypeError(
            f"{owner} expects X as a numpy.ndarray or a torch.Tensor. "
            f"Got {type(X).__name__} instead."
        )
    if x.ndim < 2:
        raise ValueError(
            f"{owner} expects X of shape (samples, features) or (samples, channels, ...). "
            f"Got an array of shape {tuple(x.shape)} instead. Reshape it with "
            "X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for a single sample."
        )
    if 0 in x.shape[1:]:
        raise ValueError(f"{owner} expects at least one feature. Got shape {tuple(x.shape)}.")
    return x


def _numpy_as_float64(X: npt.NDArray[Any], owner: str) -> Tensor:
    if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)) and (
        X.dtype != np.bool_
    ):
        raise TypeError(
            f"{owner} expects real numbers (a bool, integer or floating dtype). "
            f"Got an array of dtype {X.dtype} instead."
        )
    array = np.ascontiguousarray(X, dtype=np.float64)
    if not array.flags.writeable:
        # torch.from_numpy warns on read-only memory; a copy is cheaper than that warning
        # turning into an error under "-W error".
        array = array.copy()
    return torch.from_numpy(array)


def restore(y: Tensor, like: ArrayT) -> ArrayT:
    """``y`` (float64) in the kind and output dtype of ``like``: see the module docstring.

    Never ``like``'s own memory: a transform that changes nothing (an identity, float64
    input) still returns a copy, as scikit-learn's do, so writing to it leaves the input.
    """
    if isinstance(like, Tensor):
        dtype = like.dtype if like.is_floating_point() else torch.float32
        out = y.to(dtype)
        shared = out.untyped_storage().data_ptr() == like.untyped_storage().data_ptr()
        return out.clone() if shared and out.numel() else out
    dtype = like.dtype if np.issubdtype(like.dtype, np.floating) else np.dtype(np.float32)
    array = y.detach().cpu().numpy().astype(dtype, copy=False)
    return array.copy() if np.shares_memory(array, like) else array


def check_fit_data(x: Tensor, owner: str) -> None:
    """At least two samples, all finite: what any statistic needs."""
    if x.shape[0] < 2:
        raise ValueError(
            f"{owner} needs at least 2 samples to learn from. Got {x.shape[0]}. "
            "Fit on the training set."
        )
    # One sum is 30x faster than isfinite() over the data (100,000 x 784 float64: 33 ms
    # against 0.93 s) and is NaN or inf whenever any value is; only then count exactly.
    # A sum that overflows on finite data takes the slow path and passes.
    if torch.isfinite(x.sum()):
        return
    bad = ~torch.isfinite(x)
    count = int(bad.sum())
    if count:
        first_row = int(bad.reshape(x.shape[0], -1).any(dim=1).nonzero()[0, 0])
        raise ValueError(
            f"{owner} cannot learn from non-finite data: X contains {count} NaN or inf "
            f"value{'s' if count != 1 else ''}, the first in row {first_row}. "
            "Remove or impute them before calling fit."
        )


def format_indices(indices: list[str], limit: int = 10) -> str:
    """'0, 5, 9' or, past ``limit``, the first ``limit`` and 'and N more'."""
    shown = ", ".join(indices[:limit])
    if len(indices) > limit:
        shown += f" and {len(indices) - limit} more"
    return shown
