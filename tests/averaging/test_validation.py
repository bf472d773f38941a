"""An infinite SWA rate is refused in the one error format: it would make every step NaN."""

import math
import re

import pytest
import torch

from gradwise.averaging import swa_schedule
from gradwise.schedules import constant


@pytest.mark.parametrize(
    ("swa_lr", "got"), [(math.inf, "inf"), (torch.tensor(math.inf), "tensor(inf)")]
)
def test_an_infinite_swa_lr_is_refused(swa_lr, got):
    message = (
        f"The 'swa_lr' parameter of swa_schedule must be a finite float >= 0. Got {got} instead."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        swa_schedule(constant(0.1), start=3, swa_lr=swa_lr)
