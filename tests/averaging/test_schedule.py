"""SWA's learning rate: Izmailov et al.'s cyclical formula and torch's SWALR anneal."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim.swa_utils import SWALR

from gradwise.averaging import swa_schedule
from gradwise.schedules import constant, cosine_decay


def test_the_cyclical_rate_is_izmailov_et_al_equation_2() -> None:
    base = cosine_decay(0.1, num_steps=100)
    start, cycle, low = 40, 5, 0.002
    schedule = swa_schedule(base, start=start, swa_lr=low, cycle_steps=cycle)
    high = base(start)
    for k in range(100):
        if k < start:
            expected = base(k)
        else:
            i = k - start + 1  # the paper's 1-based iteration within the SWA phase
            t = ((i - 1) % cycle + 1) / cycle
            expected = (1 - t) * high + t * low
        assert schedule(k) == pytest.approx(expected, rel=1e-12, abs=1e-15), k
    values = schedule(torch.arange(100))
    assert values.dtype == torch.float64
    assert schedule(start + cycle - 1) == pytest.approx(low)  # a cycle's last step: the low


@pytest.mark.parametrize("anneal_steps", [1, 7])
def test_the_constant_rate_anneals_like_torch_swalr(anneal_steps: int) -> None:
    start, high, low = 10, 0.3, 0.05
    schedule = swa_schedule(constant(high), start=start, swa_lr=low, anneal_steps=anneal_steps)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=high)
    swalr = SWALR(optimizer, swa_lr=low, anneal_epochs=anneal_steps, anneal_strategy="cos")
    for j in range(20):
        assert schedule(start + j) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12), j
        optimizer.step()
        swalr.step()
    assert schedule(start - 1) == high


def test_without_anneal_the_rate_switches_at_start() -> None:
    schedule = swa_schedule(constant(0.1), start=3, swa_lr=0.01)
    assert [schedule(k) for k in range(5)] == [0.1, 0.1, 0.1, 0.01, 0.01]
    from_zero = swa_schedule(constant(0.1), start=0, swa_lr=0.01, cycle_steps=2)
    assert [round(from_zero(k), 6) for k in range(4)] == [0.055, 0.01, 0.055, 0.01]
    assert not math.isnan(from_zero(10**6))


def test_bad_arguments_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="The 'cycle_steps' parameter of swa_schedule must be"):
        swa_schedule(constant(0.1), start=3, swa_lr=0.01, cycle_steps=0)
    with pytest.raises(ValueError, match="'anneal_steps' parameter of swa_schedule must be 0"):
        swa_schedule(constant(0.1), start=3, swa_lr=0.01, cycle_steps=4, anneal_steps=2)
    with pytest.raises(ValueError, match="'schedule' parameter of swa_schedule must be a sch"):
        swa_schedule(0.1, start=3, swa_lr=0.01)
