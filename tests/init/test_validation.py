"""An infinite gain, std or scale is refused in the one error format, before any weight is drawn."""

import math
import re

import pytest
import torch
from torch import nn

from gradwise import init

GAIN = "one of 'auto' or a finite float > 0 or a mapping from layer names to finite floats > 0"

# (make, parameter, owner, expected, got): the message must read, in full,
# "The '<parameter>' parameter of <owner> must be <expected>. Got <got> instead."
INFINITE = [
    (lambda: init.xavier_normal(gain=math.inf), "gain", "xavier_normal",
     "one of None or a finite float > 0", "inf"),
    (lambda: init.he_normal()(torch.empty(3, 3), gain=torch.tensor(math.inf)), "gain",
     "he_normal", "one of None or a finite float > 0", "tensor(inf)"),
    (lambda: init.normal(std=math.inf), "std", "normal", "a finite float > 0", "inf"),
    (lambda: init.uniform(scale=math.inf), "scale", "uniform", "a finite float > 0", "inf"),
    (lambda: init.initialize(nn.Linear(2, 2), "he_normal", gain=math.inf), "gain",
     "initialize", GAIN, "inf"),
    (lambda: init.initialize(nn.Linear(2, 2), "he_normal", gain={"": math.inf}), "gain",
     "initialize", GAIN, "{'': inf}"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "parameter", "owner", "expected", "got"),
    INFINITE,
    ids=[f"{owner}-{parameter}={got}" for _, parameter, owner, _, got in INFINITE],
)
def test_an_infinite_argument_is_refused(make, parameter, owner, expected, got):
    message = f"The '{parameter}' parameter of {owner} must be {expected}. Got {got} instead."
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make()
