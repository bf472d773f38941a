"""Warmups and join: golden values, and torch's SequentialLR as an oracle for linear warmup."""

import math

import pytest
import torch
from torch.optim import lr_scheduler

from gradwise.schedules import (
    constant,
    constant_warmup,
    cosine_decay,
    exponential_decay,
    join,
    linear_decay,
    linear_warmup,
    step_decay,
)


@pytest.mark.parametrize(
    ("schedule", "golden"),
    [
        (constant_warmup(constant(1.0), 3, 0.1), {0: 0.1, 2: 0.1, 2.5: 0.1, 3: 1.0, 10**9: 1.0}),
        # linear decay 1 -> 0 over 4 steps, starting at step 2
        (
            constant_warmup(linear_decay(1.0, 0.0, 4), 2, 0.1),
            {0: 0.1, 1: 0.1, 2: 1.0, 3: 0.75, 4: 0.5, 6: 0.0, 100: 0.0},
        ),
        # 0.2 + (1 - 0.2) k / 4, then 1
        (
            linear_warmup(constant(1.0), 4, start=0.2),
            {0: 0.2, 1: 0.4, 2: 0.6, 3: 0.8, 4: 1.0, 100: 1.0},
        ),
        # ramp 0 -> 1 over 10 steps, then cosine 1 -> 0.1 over 100 steps
        (
            linear_warmup(cosine_decay(1.0, 100, final=0.1), 10),
            {0: 0.0, 5: 0.5, 9: 0.9, 10: 1.0, 60: 0.55, 110: 0.1, 10**6: 0.1},
        ),
        # a warmup of a warmup: 0 for 2 steps, ramp 0.5 -> 2 over 3 steps, then 2 * 0.5**k
        (
            constant_warmup(linear_warmup(exponential_decay(2.0, 0.5), 3, start=0.5), 2, 0.0),
            {0: 0.0, 1: 0.0, 2: 0.5, 3: 1.0, 4: 1.5, 5: 2.0, 6: 1.0, 7: 0.5},
        ),
        # optax.join_schedules: each schedule starts at its own step 0 at its boundary
        (
            join([constant(1.0), exponential_decay(0.5, 0.5), constant(0.01)], [3, 6]),
            {0: 1.0, 2: 1.0, 3: 0.5, 4: 0.25, 5: 0.125, 6: 0.01, 1000: 0.01},
        ),
        (
            join([linear_decay(1.0, 0.0, 10), cosine_decay(0.5, 4)], [5]),
            {0: 1.0, 4: 0.6, 5: 0.5, 7: 0.25, 9: 0.0, 100: 0.0},
        ),
        (join([step_decay(1.0, 2, gamma=0.5)], []), {0: 1.0, 2: 0.5, 4: 0.25}),
    ],
    ids=lambda value: repr(value) if not isinstance(value, dict) else None,
)
def test_golden_values(schedule, golden):
    for step, expected in golden.items():
        assert schedule(step) == pytest.approx(expected, rel=1e-12, abs=1e-15), step


def test_wrappers_accept_plain_functions_of_the_step():
    def halving(step):
        return 1.0 * 0.5**step

    assert linear_warmup(halving, 2)(1) == 0.5
    assert linear_warmup(halving, 2)(3) == 0.5
    assert join([constant(2.0), lambda step: 0.25], [4])(torch.arange(6.0)).tolist() == [
        2.0,
        2.0,
        2.0,
        2.0,
        0.25,
        0.25,
    ]


def test_linear_warmup_matches_torch_sequential_lr(torch_lrs):
    def make(opt):
        warmup = lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=10)
        decay = lr_scheduler.StepLR(opt, step_size=30, gamma=0.5)
        return lr_scheduler.SequentialLR(opt, [warmup, decay], milestones=[10])

    expected = torch_lrs(make, 200, lr=0.4)
    schedule = linear_warmup(step_decay(0.4, 30, gamma=0.5), 10, start=0.04)
    torch.testing.assert_close([schedule(k) for k in range(200)], expected, rtol=1e-12, atol=1e-15)


def test_join_stores_tuples():
    schedule = join([constant(1.0), constant(0.5)], [10])
    assert schedule.schedules == (constant(1.0), constant(0.5))
    assert schedule.boundaries == (10,)
    assert hash(schedule) == hash(join((constant(1.0), constant(0.5)), (10,)))


def test_wrapped_schedules_never_see_a_step_below_zero():
    # Steps below 0 count as step 0, for a wrapped schedule too: a function of the user's
    # own that is defined from step 0 on is never called before its start (it was, with
    # step - boundary < 0, and math.sqrt raised "math domain error" at step 0).
    def inverse_square_root(step):
        return 0.1 / math.sqrt(step + 1)

    for schedule in [
        join([constant(0.5), inverse_square_root], [10]),
        constant_warmup(inverse_square_root, 10, 0.5),
        linear_warmup(inverse_square_root, 10, start=0.5),
    ]:
        assert schedule(0) == 0.5
        assert schedule(13) == pytest.approx(0.05, rel=1e-12)

    steps_seen = []

    def recording(step):
        steps_seen.append(torch.as_tensor(step).min().item())
        return 0.25

    join([constant(0.5), recording], [10])(torch.arange(20.0))
    linear_warmup(recording, 10)(3)
    assert min(steps_seen) == 0.0
