"""Bad arguments raise the project's one error format, naming the parameter and the schedule."""

import dataclasses
import math
import re

import pytest
import torch

from gradwise.optim import SGD
from gradwise.schedules import (
    ReduceOnPlateau,
    ScheduleLR,
    constant,
    constant_warmup,
    cosine_decay,
    cosine_warm_restarts,
    exponential_decay,
    first_invalid_value,
    inverse_time_decay,
    join,
    linear_decay,
    linear_warmup,
    multistep_decay,
    one_cycle,
    polynomial_decay,
    step_decay,
)

# (make, parameter, owner, expected, got): the message must read, in full,
# "The '<parameter>' parameter of <owner> must be <expected>. Got <got> instead."
CASES = [
    (lambda: cosine_decay(0.1, 0), "num_steps", "cosine_decay", "an int >= 1", "0"),
    (lambda: cosine_decay(0.1, 2.5), "num_steps", "cosine_decay", "an int >= 1", "2.5"),
    (
        lambda: cosine_decay(float("nan"), 10),
        "initial",
        "cosine_decay",
        "a finite float >= 0",
        "nan",
    ),
    (
        lambda: cosine_decay(0.1, 10, final=-0.01),
        "final",
        "cosine_decay",
        "a finite float >= 0",
        "-0.01",
    ),
    (lambda: constant(-1.0), "value", "constant", "a finite float >= 0", "-1.0"),
    (lambda: constant("0.1"), "value", "constant", "a finite float >= 0", "'0.1'"),
    (lambda: step_decay(0.1, 0), "step_size", "step_decay", "an int >= 1", "0"),
    (lambda: step_decay(0.1, 10, gamma=1.5), "gamma", "step_decay", "a float in [0, 1]", "1.5"),
    (
        lambda: multistep_decay(0.1, [50, 30]),
        "milestones",
        "multistep_decay",
        "a strictly increasing sequence of ints >= 1",
        "[50, 30]",
    ),
    (
        lambda: multistep_decay(0.1, [0, 30]),
        "milestones",
        "multistep_decay",
        "a strictly increasing sequence of ints >= 1",
        "[0, 30]",
    ),
    (
        lambda: multistep_decay(0.1, 30),
        "milestones",
        "multistep_decay",
        "a strictly increasing sequence of ints >= 1",
        "30",
    ),
    (
        lambda: exponential_decay(0.1, -0.5),
        "gamma",
        "exponential_decay",
        "a float in [0, 1]",
        "-0.5",
    ),
    (
        lambda: inverse_time_decay(0.1, -1.0),
        "decay_rate",
        "inverse_time_decay",
        "a finite float >= 0",
        "-1.0",
    ),
    (
        lambda: inverse_time_decay(0.1, 1.0, decay_steps=0),
        "decay_steps",
        "inverse_time_decay",
        "a finite float > 0",
        "0",
    ),
    (
        lambda: polynomial_decay(0.1, 10, power=0.0),
        "power",
        "polynomial_decay",
        "a finite float > 0",
        "0.0",
    ),
    (lambda: linear_decay(0.1, -0.1, 10), "final", "linear_decay", "a finite float >= 0", "-0.1"),
    (lambda: linear_decay(0.1, 0.0, -3), "num_steps", "linear_decay", "an int >= 1", "-3"),
    (
        lambda: cosine_warm_restarts(0.1, 10, period_multiplier=0),
        "period_multiplier",
        "cosine_warm_restarts",
        "an int >= 1",
        "0",
    ),
    (
        lambda: cosine_warm_restarts(0.1, 10, period_multiplier=1.5),
        "period_multiplier",
        "cosine_warm_restarts",
        "an int >= 1",
        "1.5",
    ),
    (lambda: one_cycle(0.1, 1), "num_steps", "one_cycle", "an int >= 2", "1"),
    (
        lambda: one_cycle(0.1, 100, pct_start=1.0),
        "pct_start",
        "one_cycle",
        "a float in (0, 1)",
        "1.0",
    ),
    (
        lambda: one_cycle(0.1, 10, pct_start=0.1),
        "pct_start",
        "one_cycle",
        "a float in (0.1, 1) when num_steps=10 and three_phase=False, "
        "so that every phase lasts more than 0 steps",
        "0.1",
    ),
    (
        lambda: one_cycle(0.1, 10, pct_start=0.6, three_phase=True),
        "pct_start",
        "one_cycle",
        "a float in (0.1, 0.55) when num_steps=10 and three_phase=True, "
        "so that every phase lasts more than 0 steps",
        "0.6",
    ),
    (
        lambda: one_cycle(0.1, 100, anneal_strategy="cosine"),
        "anneal_strategy",
        "one_cycle",
        "one of 'cos', 'linear'",
        "'cosine'",
    ),
    (
        lambda: one_cycle(0.1, 100, div_factor=0.0),
        "div_factor",
        "one_cycle",
        "a finite float > 0",
        "0.0",
    ),
    (lambda: one_cycle(0.1, 100, three_phase=1), "three_phase", "one_cycle", "a bool", "1"),
    (
        lambda: constant_warmup(0.1, 5, 0.01),
        "schedule",
        "constant_warmup",
        "a schedule (a function of the step)",
        "0.1",
    ),
    (
        lambda: constant_warmup(constant(0.1), 5, -0.01),
        "value",
        "constant_warmup",
        "a finite float >= 0",
        "-0.01",
    ),
    (lambda: linear_warmup(constant(0.1), 0), "num_steps", "linear_warmup", "an int >= 1", "0"),
    (
        lambda: linear_warmup(constant(0.1), 10, start=-1.0),
        "start",
        "linear_warmup",
        "a finite float >= 0",
        "-1.0",
    ),
    (lambda: join([], []), "schedules", "join", "a non-empty sequence of schedules", "[]"),
    (
        lambda: join([constant(0.1), 0.01], [5]),
        "schedules",
        "join",
        "a non-empty sequence of schedules",
        "[constant(value=0.1), 0.01]",
    ),
    (
        lambda: join([constant(0.1)], [5]),
        "boundaries",
        "join",
        "a strictly increasing sequence of ints >= 1 "
        "with one entry fewer than 'schedules' (0 here)",
        "[5]",
    ),
    (
        lambda: join([constant(0.1), constant(0.2)], [0]),
        "boundaries",
        "join",
        "a strictly increasing sequence of ints >= 1",
        "[0]",
    ),
    (
        lambda: ReduceOnPlateau(0.1, factor=1.0),
        "factor",
        "ReduceOnPlateau",
        "a float in [0, 1)",
        "1.0",
    ),
    (
        lambda: ReduceOnPlateau(0.1, mode="mean"),
        "mode",
        "ReduceOnPlateau",
        "one of 'min', 'max'",
        "'mean'",
    ),
    (
        lambda: ReduceOnPlateau(0.1, patience=-1),
        "patience",
        "ReduceOnPlateau",
        "an int >= 0",
        "-1",
    ),
    (
        lambda: ReduceOnPlateau(0.1, threshold_mode="relative"),
        "threshold_mode",
        "ReduceOnPlateau",
        "one of 'rel', 'abs'",
        "'relative'",
    ),
    (
        lambda: ReduceOnPlateau(0.1, min_value=-1e-6),
        "min_value",
        "ReduceOnPlateau",
        "a finite float >= 0",
        "-1e-06",
    ),
    (
        lambda: dataclasses.replace(cosine_decay(0.1, 10), num_steps=0),
        "num_steps",
        "cosine_decay",
        "an int >= 1",
        "0",
    ),
]

# Infinity is refused where it would only fail later (a NaN rate, a rate stuck at 0 or at
# its start); a one-element tensor is read as its number.
INFINITE = [
    (lambda: cosine_decay(math.inf, 10), "initial", "cosine_decay", "a finite float >= 0", "inf"),
    (lambda: constant(torch.tensor(math.inf)), "value", "constant", "a finite float >= 0",
     "tensor(inf)"),
    (lambda: inverse_time_decay(0.1, 0.5, math.inf), "decay_steps", "inverse_time_decay",
     "a finite float > 0", "inf"),
    (lambda: polynomial_decay(0.1, 10, power=math.inf), "power", "polynomial_decay",
     "a finite float > 0", "inf"),
    (lambda: one_cycle(0.1, 100, final_div_factor=math.inf), "final_div_factor", "one_cycle",
     "a finite float > 0", "inf"),
    (lambda: linear_warmup(constant(0.1), 10, start=math.inf), "start", "linear_warmup",
     "a finite float >= 0", "inf"),
    (lambda: ReduceOnPlateau(0.1, threshold=math.inf), "threshold", "ReduceOnPlateau",
     "a finite float >= 0", "inf"),
]  # fmt: skip
CASES += INFINITE


@pytest.mark.parametrize(
    ("make", "name", "owner", "expected", "got"),
    CASES,
    ids=[f"{owner}-{name}={got}" for _, name, owner, _, got in CASES],
)
def test_bad_argument_raises_the_standard_error(make, name, owner, expected, got):
    message = f"The '{name}' parameter of {owner} must be {expected}. Got {got} instead."
    pattern = "^" + re.escape(message).replace(r"an\?", "an?") + "$"
    with pytest.raises(ValueError, match=pattern):
        make()


def test_a_schedule_with_infinite_values_is_refused_where_it_is_used():
    # lr=inf is refused as a number; a schedule returning it (an inverse-time decay
    # counted from step 1 by mistake) made the first update -inf and was accepted.
    def inverse_time(step):
        return 0.1 / torch.as_tensor(step, dtype=torch.float64)

    assert first_invalid_value(inverse_time) == (0, math.inf)
    assert first_invalid_value(lambda step: 1.0 if step < 500 else math.inf) == (500, math.inf)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(
        ValueError,
        match=r"^The 'schedule' parameter of ScheduleLR must be a schedule whose values are "
        r"finite and >= 0\. Got .* instead, which returns inf at step 0\.$",
    ):
        ScheduleLR(optimizer, inverse_time)
    with pytest.raises(ValueError, match=r"which returns inf at step 0\.$"):
        SGD([torch.nn.Parameter(torch.zeros(1))], lr=inverse_time)


BIG = 2**64
# (make with a bad int, parameter, owner, expected without the size clause)
INT_SIZES = [
    (lambda n: step_decay(0.1, n), "step_size", "step_decay", "an int >= 1"),
    (lambda n: multistep_decay(0.1, [5, n]), "milestones", "multistep_decay",
     "a strictly increasing sequence of ints >= 1"),
    (lambda n: cosine_decay(0.1, n), "num_steps", "cosine_decay", "an int >= 1"),
    (lambda n: linear_decay(0.1, 0.0, n), "num_steps", "linear_decay", "an int >= 1"),
    (lambda n: polynomial_decay(0.1, n), "num_steps", "polynomial_decay", "an int >= 1"),
    (lambda n: cosine_warm_restarts(0.1, n), "first_period", "cosine_warm_restarts",
     "an int >= 1"),
    (lambda n: cosine_warm_restarts(0.1, 10, n), "period_multiplier", "cosine_warm_restarts",
     "an int >= 1"),
    (lambda n: one_cycle(0.1, n), "num_steps", "one_cycle", "an int >= 2"),
    (lambda n: constant_warmup(constant(0.1), n, 0.01), "num_steps", "constant_warmup",
     "an int >= 1"),
    (lambda n: linear_warmup(constant(0.1), n), "num_steps", "linear_warmup", "an int >= 1"),
    (lambda n: join([constant(0.1), constant(0.2)], [n]), "boundaries", "join",
     "a strictly increasing sequence of ints >= 1"),
    (lambda n: inverse_time_decay(0.1, 0.5, n), "decay_steps", "inverse_time_decay",
     "a finite float > 0"),
    (lambda n: exponential_decay(n, 0.5), "initial", "exponential_decay", "a finite float >= 0"),
    (lambda n: ReduceOnPlateau(0.1, patience=n), "patience", "ReduceOnPlateau", "an int >= 0"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "name", "owner", "expected"), INT_SIZES, ids=[f"{o}-{n}" for _, n, o, _ in INT_SIZES]
)
def test_an_int_of_2_to_the_64_or_more_is_refused_when_the_schedule_is_made(
    make, name, owner, expected
):
    # It was accepted, and the schedule's first call raised OverflowError ("int too big to
    # convert") deep inside torch; 10**400 raised OverflowError from the check itself.
    size = ", smaller than 2**64 in size (torch computes with no larger int)"
    sequence = expected.startswith("a strictly")
    for value, got in ((BIG, str(BIG)), (10**400, "an int of 1329 bits")):
        shown = f"[{'5, ' if owner == 'multistep_decay' else ''}{got}]" if sequence else got
        message = (
            f"The '{name}' parameter of {owner} must be {expected}{size}. Got {shown} instead."
        )
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            make(value)
    schedule = make(BIG - 1)  # the largest int torch computes with still works
    assert math.isfinite(schedule(5))
