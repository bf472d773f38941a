"""An infinite strength, norm, eps or delta is refused in the one error format, up front."""

import math
import re

import pytest
import torch
from torch import nn

from gradwise.regularize import (
    EarlyStopping,
    GaussianNoise,
    MaxNorm,
    Mixup,
    Penalty,
    l2_penalty,
    max_norm_,
    normalization,
)

# (make, parameter, owner, expected, got): the message must read, in full,
# "The '<parameter>' parameter of <owner> must be <expected>. Got <got> instead."
INFINITE = [
    (lambda: l2_penalty([torch.ones(2)], math.inf), "strength", "l2_penalty",
     "a finite float >= 0", "inf"),
    (lambda: Penalty(nn.Linear(2, 2), l1=torch.tensor(math.inf)), "l1", "Penalty",
     "a finite float >= 0", "tensor(inf)"),
    (lambda: max_norm_([torch.ones(2, 2)], math.inf), "max_norm", "max_norm_",
     "a finite float > 0", "inf"),
    (lambda: MaxNorm(math.inf), "max_norm", "MaxNorm", "a finite float > 0", "inf"),
    (lambda: normalization("batch", 4, eps=math.inf), "eps", "normalization",
     "a finite float > 0", "inf"),
    (lambda: Mixup(math.inf), "alpha", "Mixup", "a finite float > 0", "inf"),
    (lambda: GaussianNoise(math.inf), "std", "GaussianNoise", "a finite float >= 0", "inf"),
    (lambda: EarlyStopping(min_delta=math.inf), "min_delta", "EarlyStopping",
     "a finite float >= 0", "inf"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "parameter", "owner", "expected", "got"),
    INFINITE,
    ids=[f"{owner}-{parameter}" for _, parameter, owner, _, _ in INFINITE],
)
def test_an_infinite_argument_is_refused(make, parameter, owner, expected, got):
    message = f"The '{parameter}' parameter of {owner} must be {expected}. Got {got} instead."
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make()
