"""Cosine with warm restarts and one-cycle: golden values and torch's schedulers as oracle."""

import math

import pytest
import torch
from torch.optim import lr_scheduler

from gradwise.schedules import cosine_warm_restarts, one_cycle


def half_cosine(fraction, start=1.0, end=0.0):
    return end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2


@pytest.mark.parametrize(
    ("schedule", "golden"),
    [
        # equal periods of 10: restarts at 0, 10, 20, ...
        (
            cosine_warm_restarts(1.0, 10),
            {0: 1.0, 5: 0.5, 9: half_cosine(0.9), 10: 1.0, 15: 0.5, 25: 0.5, 10**6 + 5: 0.5},
        ),
        # periods 10, 20, 40, 80: restarts at 0, 10, 30, 70, 150
        (
            cosine_warm_restarts(1.0, 10, period_multiplier=2),
            {
                0: 1.0,
                9: half_cosine(0.9),
                10: 1.0,
                20: 0.5,
                29: half_cosine(19 / 20),
                30: 1.0,
                50: 0.5,
                69: half_cosine(39 / 40),
                70: 1.0,
                110: 0.5,
                150: 1.0,
            },
        ),
        # periods 1, 3, 9, 27: restarts at 0, 1, 4, 13, 40
        (
            cosine_warm_restarts(2.0, 1, period_multiplier=3, final=0.5),
            {
                0: 2.0,
                1: 2.0,
                2: half_cosine(1 / 3, 2.0, 0.5),
                4: 2.0,
                12: half_cosine(8 / 9, 2.0, 0.5),
                13: 2.0,
                40: 2.0,
            },
        ),
        # max 1: start 0.04, end 4e-6; two linear phases ending at steps 4.5 and 10
        (
            one_cycle(1.0, 11, pct_start=0.5, anneal_strategy="linear"),
            {0: 0.04, 2.25: 0.52, 4.5: 1.0, 7.25: 0.500002, 10: 4e-6, 11: 4e-6, 10**6: 4e-6},
        ),
        # three linear phases ending at steps 4.25, 8.5 and 20
        (
            one_cycle(1.0, 21, pct_start=0.25, anneal_strategy="linear", three_phase=True),
            {0: 0.04, 4.25: 1.0, 6.375: 0.52, 8.5: 0.04, 14.25: 0.020002, 20: 4e-6, 21: 4e-6},
        ),
        # cosine phases ending at steps 29 and 99 (torch's 0.3 * 100 - 1)
        (
            one_cycle(2.0, 100, div_factor=10.0, final_div_factor=100.0),
            {
                0: 0.2,
                14.5: 1.1,
                29: 2.0,
                64: half_cosine(0.5, 2.0, 0.002),
                99: 0.002,
                100: 0.002,
                5000: 0.002,
            },
        ),
    ],
    ids=lambda value: repr(value) if not isinstance(value, dict) else None,
)
def test_golden_values(schedule, golden):
    for step, expected in golden.items():
        assert schedule(step) == pytest.approx(expected, rel=1e-12, abs=1e-15), step


@pytest.mark.parametrize(("first_period", "period_multiplier"), [(1, 2), (1, 3), (3, 3), (1, 10)])
def test_warm_restarts_find_every_cycle_start_despite_rounding(first_period, period_multiplier):
    # Cycle i starts at T0 (m**i - 1) / (m - 1): exactly where a rounded logarithm errs.
    schedule = cosine_warm_restarts(1.0, first_period, period_multiplier)
    cycles = [i for i in range(1, 60) if first_period * period_multiplier**i < 2**50]
    starts = [first_period * (period_multiplier**i - 1) // (period_multiplier - 1) for i in cycles]
    starts = torch.tensor(starts, dtype=torch.float64)
    assert torch.equal(schedule(starts), torch.ones_like(starts))
    # The step before each start is the last step of the previous cycle.
    periods = [first_period * period_multiplier ** (i - 1) for i in cycles]
    expected = [half_cosine((period - 1) / period) for period in periods]
    torch.testing.assert_close(
        schedule(starts - 1), torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=1e-15
    )


@pytest.mark.parametrize(("first_period", "period_multiplier"), [(7, 1), (7, 2), (3, 3), (1, 2)])
def test_warm_restarts_match_torch(first_period, period_multiplier, torch_lrs):
    def make(opt):
        return lr_scheduler.CosineAnnealingWarmRestarts(
            opt, T_0=first_period, T_mult=period_multiplier, eta_min=0.001
        )

    expected = torch_lrs(make, 300, lr=0.3)
    schedule = cosine_warm_restarts(0.3, first_period, period_multiplier, final=0.001)
    torch.testing.assert_close([schedule(k) for k in range(300)], expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"three_phase": True},
        {"anneal_strategy": "linear"},
        {"pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0},
        {"pct_start": 0.4, "anneal_strategy": "linear", "three_phase": True},
    ],
    ids=repr,
)
def test_one_cycle_matches_torch(options, torch_lrs):
    def make(opt):
        return lr_scheduler.OneCycleLR(
            opt, max_lr=0.5, total_steps=200, cycle_momentum=False, **options
        )

    expected = torch_lrs(make, 200, lr=0.5)
    schedule = one_cycle(0.5, 200, **options)
    torch.testing.assert_close([schedule(k) for k in range(200)], expected, rtol=1e-12, atol=1e-15)


def test_one_cycle_defaults_are_torchs():
    schedule = one_cycle(0.5, 200)
    assert (schedule.pct_start, schedule.anneal_strategy, schedule.three_phase) == (
        0.3,
        "cos",
        False,
    )
    assert (schedule.div_factor, schedule.final_div_factor) == (25.0, 1e4)


def test_one_cycle_holds_its_minimum_from_the_last_step_on():
    schedule = one_cycle(0.5, 200)
    minimum = 0.5 / 25 / 1e4
    assert [schedule(k) for k in (199, 200, 201, 10**9)] == pytest.approx([minimum] * 4, rel=1e-12)
