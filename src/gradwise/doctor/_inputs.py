"""Is the model fed normalized inputs? The lectures: zero-centred, comparable scales."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gradwise.diagnosis import Diagnosis, Finding

#: Feature standard deviations further apart than this factor, a mean further from 0 than
#: this many standard deviations, or a typical standard deviation above this scale make
#: the inputs "unnormalized". Standardized data sit at 1 and 0; raw pixels (0..255: std
#: ~ 80) and features on scales 1e3 apart are well beyond these; pixels rescaled to
#: [0, 1] are within them.
SCALE_RATIO = 100.0
MEAN_TO_STD = 5.0
LARGE_SCALE = 10.0


def check_input_scale(inputs: Tensor) -> Diagnosis | None:
    """UNNORMALIZED_INPUTS when the inputs' scales or offsets are far from standardized.

    Images (N, C, H, W) are judged per channel, over samples and pixels (their border
    pixels are nearly constant by nature); other inputs per feature (flattened position),
    over samples. Constant features are ignored. SGD is not scale-free: inputs on very
    different scales make the loss surface ill-conditioned, and large offsets and scales
    slow every layer after the first. Integer inputs (token ids for an ``nn.Embedding``,
    which :class:`gradwise.data.Dataset` keeps as ints) are indices, not features: no
    finding.
    """
    if not inputs.is_floating_point():
        return None
    image = inputs.dim() == 4
    if image:
        flat = inputs.detach().transpose(0, 1).reshape(inputs.shape[1], -1).T.double()
    else:
        flat = inputs.detach().reshape(inputs.shape[0], -1).double()
    std = flat.std(dim=0)
    mean = flat.mean(dim=0)
    # Constant: every value equal, or a spread at the rounding level of the feature's
    # mean (scikit-learn's bound, as Standardize's), not an absolute cutoff: a feature of
    # std 1e-13 among features of std 1 is badly scaled, not constant.
    rounding = flat.shape[0] * torch.finfo(flat.dtype).eps * mean.abs()
    varying = (std > rounding) & (flat.amax(dim=0) > flat.amin(dim=0))
    if int(varying.sum()) == 0:
        return None
    std, mean = std[varying], mean[varying]
    ratio = float(std.max() / std.min())
    offset = float((mean.abs() / std).max())
    typical = float(std.median())
    if ratio <= SCALE_RATIO and offset <= MEAN_TO_STD and typical <= LARGE_SCALE:
        return None
    # Images: one mean and scale per channel (the lectures' ImageNet recipe); per-pixel
    # statistics would blow up near-constant border pixels. Otherwise per feature.
    standardize: Any = {"name": "standardize", "per": "channel"} if image else "standardize"
    unit = "channel" if image else "feature"
    return Diagnosis(
        Finding.UNNORMALIZED_INPUTS,
        f"input {unit}s have standard deviations from {float(std.min()):.3g} to "
        f"{float(std.max()):.3g} ({ratio:.3g}x apart, typical {typical:.3g}) and means up to "
        f"{offset:.3g} standard deviations from 0",
        f"standardize the inputs per {unit} with statistics of the training split "
        f"(data.preprocess: [{standardize}])",
        {"std_min": float(std.min()), "std_max": float(std.max()), "std_ratio": ratio,
         "typical_std": typical, "max_mean_over_std": offset},
        severity="warning",
        fix={"data.preprocess": [standardize]},
    )  # fmt: skip
