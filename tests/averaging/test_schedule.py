"""SWA's learning rate: Izmailov et al.'s cyclical formula and torch's SWALR anneal."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim.swa_utils import SWALR

from gradwise.averaging import swa_schedule
from gradwise.schedules import (
    ReduceOnPlateau,
    constant,
    cosine_decay,
    linear_warmup,
    stateful_parts,
)


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


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # cycles of 2 from the rate the plateau cut to (0.01), not its initial 0.1
        ({"cycle_steps": 2}, [0.01] * 5 + [0.0055, 0.001, 0.0055, 0.001]),
        # torch's SWALR anneal from the cut rate: 0.001 + 0.009 (1 + cos(pi j / 3)) / 2
        ({"anneal_steps": 3}, [0.01] * 5 + [0.01, 0.00775, 0.00325, 0.001]),
    ],
    ids=["cycles", "anneal"],
)
def test_a_plateau_cut_before_start_is_the_rate_swa_falls_from(options, expected) -> None:
    # The rate at start was read when the SWA schedule was made: a plateau's initial value,
    # so a run whose plateau had cut the lr 10x jumped back up to it at start.
    plateau = ReduceOnPlateau(0.1, factor=0.1, patience=0)
    schedule = swa_schedule(plateau, start=5, swa_lr=0.001, **options)
    plateau.observe(1.0)
    plateau.observe(1.0)  # not better: cut to 0.01
    assert [schedule(k) for k in range(9)] == pytest.approx(expected, rel=1e-12)
    assert stateful_parts(schedule) == [plateau]  # saved and restored with a ScheduleLR


def test_a_plateau_inside_a_warmup_is_read_at_start_too() -> None:
    plateau = ReduceOnPlateau(0.1, factor=0.5, patience=0)
    schedule = swa_schedule(linear_warmup(plateau, 4), start=6, swa_lr=0.0, cycle_steps=4)
    plateau.observe(1.0)
    plateau.observe(1.0)  # cut to 0.05
    assert schedule(2) == pytest.approx(0.025)
    assert [schedule(k) for k in range(6, 10)] == pytest.approx([0.0375, 0.025, 0.0125, 0.0])


@pytest.mark.parametrize("value", [-0.1, math.nan, math.inf])
def test_a_schedule_with_a_bad_rate_at_start_is_refused_in_swa_schedules_words(value) -> None:
    # It surfaced as "The 'high' parameter of _swa_phase must be ...", a private name.
    with pytest.raises(
        ValueError,
        match=r"^The 'schedule' parameter of swa_schedule must be a schedule whose value at "
        r"'start' \(the rate SWA's phase falls from\) is a finite float >= 0\. Got .* "
        rf"instead, which returns {value!r} at step 3\.$",
    ):
        swa_schedule(lambda step: value, start=3, swa_lr=0.01)
