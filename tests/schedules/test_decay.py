"""Golden values (worked by hand from each formula) and torch's schedulers as an oracle."""

import math

import pytest
import torch
from torch.optim import lr_scheduler

from gradwise.schedules import (
    constant,
    cosine_decay,
    exponential_decay,
    inverse_time_decay,
    linear_decay,
    multistep_decay,
    polynomial_decay,
    step_decay,
)

SQRT_HALF = math.sqrt(0.5)


def schedule_id(value):
    """Name a test case by its schedule's repr (the call that made it)."""
    return repr(value) if type(value).__module__.startswith("gradwise") else None


@pytest.mark.parametrize(
    ("schedule", "golden"),
    [
        (constant(0.3), {0: 0.3, 1: 0.3, 10**9: 0.3}),
        (constant(0.0), {0: 0.0, 7: 0.0}),
        # 2 * 0.5 ** floor(k / 3)
        (
            step_decay(2.0, step_size=3, gamma=0.5),
            {0: 2.0, 2: 2.0, 2.9: 2.0, 3: 1.0, 5: 1.0, 6: 0.5, 10: 0.25},
        ),
        (step_decay(1.0, step_size=1), {0: 1.0, 1: 0.1, 2: 0.1 * 0.1}),
        # 1 * 0.1 ** #{m <= k}
        (
            multistep_decay(1.0, [2, 5]),
            {0: 1.0, 1: 1.0, 2: 0.1, 4: 0.1, 5: 0.1 * 0.1, 10**6: 0.1 * 0.1},
        ),
        (multistep_decay(3.0, (4,), gamma=0.5), {3: 3.0, 4: 1.5, 100: 1.5}),
        (multistep_decay(3.0, []), {0: 3.0, 100: 3.0}),
        # 2 * 0.5 ** k
        (exponential_decay(2.0, 0.5), {0: 2.0, 1: 1.0, 4: 0.125, 10: 2 / 1024, 2000: 0.0}),
        (exponential_decay(2.0, 0.0), {0: 2.0, 1: 0.0, 50: 0.0}),
        (exponential_decay(2.0, 1.0), {0: 2.0, 10**9: 2.0}),
        # 1 / (1 + r k / N)
        (inverse_time_decay(1.0, 1.0), {0: 1.0, 1: 0.5, 3: 0.25, 99: 0.01}),
        (inverse_time_decay(3.0, 2.0, decay_steps=10), {0: 3.0, 5: 1.5, 10: 1.0, 45: 0.3}),
        # (1 - 0.2) (1 - min(k, 4) / 4) ** 2 + 0.2
        (
            polynomial_decay(1.0, 4, final=0.2, power=2.0),
            {0: 1.0, 1: 0.8 * 0.5625 + 0.2, 2: 0.4, 4: 0.2, 5: 0.2, 10**9: 0.2},
        ),
        (polynomial_decay(1.0, 4, final=0.2, power=0.5), {0: 1.0, 3: 0.6, 4: 0.2, 8: 0.2}),
        (polynomial_decay(2.0, 10), {0: 2.0, 5: 1.0, 10: 0.0, 11: 0.0}),
        (polynomial_decay(0.1, 10, final=1.1), {0: 0.1, 5: 0.6, 10: 1.1, 20: 1.1}),
        # the lectures' (1 - k/tau) eps_0 + (k/tau) eps_tau, then eps_tau
        (linear_decay(1.0, 0.2, 4), {0: 1.0, 1: 0.8, 2: 0.6, 3: 0.4, 4: 0.2, 5: 0.2, 10**6: 0.2}),
        (linear_decay(0.0, 1.0, 10), {0: 0.0, 5: 0.5, 10: 1.0, 20: 1.0}),
        # 0.1 + 0.45 (1 + cos(pi min(k, 100) / 100))
        (
            cosine_decay(1.0, 100, final=0.1),
            {
                0: 1.0,
                25: 0.1 + 0.45 * (1 + SQRT_HALF),
                50: 0.55,
                75: 0.1 + 0.45 * (1 - SQRT_HALF),
                100: 0.1,
                101: 0.1,
                200: 0.1,
                10**9: 0.1,
            },
        ),
        (cosine_decay(2.0, 4), {0: 2.0, 1: 1.0 + SQRT_HALF, 2: 1.0, 4: 0.0, 5: 0.0}),
    ],
    ids=schedule_id,
)
def test_golden_values(schedule, golden):
    for step, expected in golden.items():
        assert schedule(step) == pytest.approx(expected, rel=1e-12, abs=1e-15), step


def test_negative_steps_count_as_step_zero():
    assert cosine_decay(1.0, 10)(-5) == 1.0
    assert exponential_decay(1.0, 0.5)(-3) == 1.0


@pytest.mark.parametrize(
    ("schedule", "make_torch_scheduler"),
    [
        (step_decay(0.3, 7, gamma=0.5), lambda opt: lr_scheduler.StepLR(opt, 7, gamma=0.5)),
        (step_decay(0.3, 1), lambda opt: lr_scheduler.StepLR(opt, 1)),
        (
            multistep_decay(0.3, [10, 50, 120], gamma=0.3),
            lambda opt: lr_scheduler.MultiStepLR(opt, [10, 50, 120], gamma=0.3),
        ),
        (exponential_decay(0.3, 0.98), lambda opt: lr_scheduler.ExponentialLR(opt, 0.98)),
        (
            polynomial_decay(0.3, 150, power=2.0),
            lambda opt: lr_scheduler.PolynomialLR(opt, total_iters=150, power=2.0),
        ),
        (polynomial_decay(0.3, 99), lambda opt: lr_scheduler.PolynomialLR(opt, total_iters=99)),
    ],
    ids=schedule_id,
)
def test_matches_torch_scheduler(schedule, make_torch_scheduler, torch_lrs):
    expected = torch_lrs(make_torch_scheduler, 300, lr=0.3)
    actual = [schedule(k) for k in range(300)]
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-18)


def test_linear_decay_matches_torch_linear_lr(torch_lrs):
    def make(opt):
        return lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.1, total_iters=40)

    expected = torch_lrs(make, 100, lr=0.3)
    actual = [linear_decay(0.3, 0.03, 40)(k) for k in range(100)]
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-18)


def test_cosine_matches_torch_until_the_end_then_stays_where_torch_rises(torch_lrs):
    def make(opt):
        return lr_scheduler.CosineAnnealingLR(opt, T_max=100, eta_min=0.01)

    expected = torch_lrs(make, 150, lr=0.3)
    schedule = cosine_decay(0.3, 100, final=0.01)
    actual = [schedule(k) for k in range(150)]
    torch.testing.assert_close(actual[:101], expected[:101], rtol=1e-10, atol=1e-15)
    assert actual[101:] == [0.01] * 49
    assert expected[149] > 0.02  # torch's cosine climbs back towards 0.3 after T_max
