"""ReduceOnPlateau: by hand, against torch's ReduceLROnPlateau, and across a resume."""

import io
import math
import re

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler

from gradwise.schedules import ReduceOnPlateau


def plateau_metrics(num_observations, seed=0, offset=0.0):
    """A loss that improves in bursts between long, slightly noisy plateaus, with one NaN."""
    generator = torch.Generator().manual_seed(seed)
    improving = torch.rand(num_observations, generator=generator, dtype=torch.float64) < 0.2
    drops = improving * torch.rand(num_observations, generator=generator, dtype=torch.float64)
    noise = 1e-5 * torch.randn(num_observations, generator=generator, dtype=torch.float64)
    metrics = (10.0 - drops.cumsum(0) * 0.1 + noise + offset).tolist()
    metrics[num_observations // 2] = float("nan")
    return metrics


def torch_values(metrics, initial, options):
    torch_options = dict(options)
    if "min_value" in torch_options:
        torch_options["min_lr"] = torch_options.pop("min_value")
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=initial)
    scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, **torch_options)
    values = []
    for metric in metrics:
        optimizer.step()
        scheduler.step(metric)
        values.append(optimizer.param_groups[0]["lr"])
    return values


def gradwise_values(metrics, schedule):
    values = []
    for metric in metrics:
        schedule.observe(metric)
        values.append(schedule(len(values)))
    return values


def test_cuts_after_more_than_patience_bad_observations():
    schedule = ReduceOnPlateau(1.0, factor=0.5, patience=2)
    values = gradwise_values([5, 4, 4, 4, 4, 3, 3, 3, 3], schedule)
    assert values == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25]


def test_cooldown_and_floor():
    schedule = ReduceOnPlateau(1.0, factor=0.5, patience=0, cooldown=2, min_value=0.3)
    values = gradwise_values([1.0] * 8, schedule)
    # a cut on every bad observation outside the cooldown, down to the floor
    assert values == [1.0, 0.5, 0.5, 0.5, 0.3, 0.3, 0.3, 0.3]


@pytest.mark.parametrize(
    ("options", "offset", "min_distinct_values"),
    [
        ({}, 0.0, 5),
        ({"factor": 0.5, "patience": 2, "cooldown": 3}, 0.0, 20),
        ({"mode": "max", "threshold_mode": "abs", "threshold": 0.01, "patience": 3}, 0.0, 8),
        ({"mode": "max", "factor": 0.3, "patience": 0, "min_value": 0.01}, 0.0, 4),
        # eps stops the cut from 0.075 to 0.0375
        (
            {"threshold_mode": "abs", "threshold": 0.0, "patience": 0, "factor": 0.5, "eps": 0.05},
            0.0,
            3,
        ),
        # negative metrics: a flat metric beats best * (1 - threshold), so nothing is cut
        ({"patience": 2, "threshold": 0.01}, -20.0, 1),
    ],
    ids=repr,
)
def test_matches_torch_reduce_lr_on_plateau(options, offset, min_distinct_values):
    metrics = plateau_metrics(300, offset=offset)
    expected = torch_values(metrics, 0.3, options)
    actual = gradwise_values(metrics, ReduceOnPlateau(0.3, **options))
    assert actual == expected
    assert len(set(actual)) >= min_distinct_values  # the run really cut the value


def test_value_ignores_the_step():
    schedule = ReduceOnPlateau(0.1)
    assert schedule(0) == schedule(10**6) == 0.1
    assert torch.equal(schedule(torch.arange(3.0)), torch.full((3,), 0.1, dtype=torch.float64))
    schedule.observe(torch.tensor(1.5))
    assert schedule.best == 1.5


def test_resume_continues_exactly_from_any_observation():
    metrics = plateau_metrics(40, seed=3)

    def make():
        return ReduceOnPlateau(1.0, factor=0.5, patience=1, cooldown=2, threshold=1e-3)

    uninterrupted = gradwise_values(metrics, make())
    saved_states = []
    for cut in range(len(metrics) + 1):
        first = make()
        before = gradwise_values(metrics[:cut], first)
        buffer = io.BytesIO()
        torch.save(first.state_dict(), buffer)
        buffer.seek(0)
        resumed = make()
        resumed.load_state_dict(torch.load(buffer, weights_only=True))
        assert before + gradwise_values(metrics[cut:], resumed) == uninterrupted, cut
        saved_states.append(first.state_dict())
    # the cuts fell inside a patience window and inside a cooldown at least once each
    assert any(state["num_bad_observations"] > 0 for state in saved_states)
    assert any(state["cooldown_counter"] > 0 for state in saved_states)


def test_state_dict_holds_the_value_and_the_counters():
    metrics = [1.0, 1.0, 1.0, 1.0, 1.0]
    schedule = ReduceOnPlateau(1.0, factor=0.5, patience=1, cooldown=2)
    gradwise_values(metrics[:4], schedule)
    assert schedule.state_dict() == {
        "value": 0.5,
        "best": 1.0,
        "num_bad_observations": 0,
        "cooldown_counter": 1,
    }


@pytest.mark.parametrize("metric", [torch.tensor([1.0, 2.0]), torch.tensor([]), "0.5", None, True])
def test_a_metric_that_is_not_one_number_is_refused_in_the_one_format(metric):
    schedule = ReduceOnPlateau(0.1)
    with pytest.raises(
        ValueError,
        match=r"The 'metric' parameter of ReduceOnPlateau.observe must be a number or a one-element tensor",
    ):
        schedule.observe(metric)
    assert schedule.num_bad_observations == 0


@pytest.mark.parametrize(
    "metric", [1.5, 2, np.float32(1.5), torch.tensor(1.5), torch.tensor([[1.5]]), math.nan]
)
def test_numbers_and_one_element_tensors_are_observed(metric):
    schedule = ReduceOnPlateau(0.1)
    schedule.observe(metric)
    assert schedule.num_bad_observations == (1 if metric is math.nan else 0)


def test_the_loss_tensor_itself_is_observed_without_a_warning():
    # observe(loss) with the training graph attached: float() on it warned "Converting a
    # tensor with requires_grad=True to a scalar" (an error under -W error).
    parameter = torch.nn.Parameter(torch.ones(3))
    loss = (parameter**2).mean()
    schedule = ReduceOnPlateau(0.1)
    schedule.observe(loss)
    assert schedule.best == 1.0


@pytest.mark.parametrize(
    "state",
    [
        {"value": 0.05},
        lr_scheduler.ReduceLROnPlateau(
            torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        ).state_dict(),
    ],
    ids=["partial", "torch's ReduceLROnPlateau"],
)
def test_loading_a_state_it_did_not_write_is_a_clear_error(state):
    # It was a bare KeyError: 'best' (or 'value', for torch's own scheduler state).
    schedule = ReduceOnPlateau(0.1)
    with pytest.raises(
        ValueError,
        match=r"^ReduceOnPlateau\.load_state_dict needs the keys 'value', 'best', "
        r"'num_bad_observations', 'cooldown_counter' \(what state_dict\(\) returns\); "
        r"the state given lacks '",
    ):
        schedule.load_state_dict(state)
    assert schedule.state_dict()["value"] == 0.1


GOOD_STATE = {"value": 0.05, "best": 0.9, "num_bad_observations": 1, "cooldown_counter": 0}


DAMAGED = [
    ("value", "0.05", "a finite float >= 0", "'0.05'"),
    ("value", None, "a finite float >= 0", "None"),
    ("value", -0.1, "a finite float >= 0", "-0.1"),
    ("value", math.nan, "a finite float >= 0", "nan"),
    ("value", 10**400, "a finite float >= 0", "an int of 1329 bits"),
    ("best", "inf", "a float, not NaN (inf before any observation)", "'inf'"),
    ("best", math.nan, "a float, not NaN (inf before any observation)", "nan"),
    ("num_bad_observations", 2.7, "an int >= 0", "2.7"),
    ("num_bad_observations", -1, "an int >= 0", "-1"),
    ("cooldown_counter", [0], "an int >= 0", "[0]"),
    ("cooldown_counter", True, "an int >= 0", "True"),
]


@pytest.mark.parametrize(
    ("key", "value", "expected", "got"), DAMAGED, ids=[f"{k}={got}" for k, _, _, got in DAMAGED]
)
def test_a_damaged_state_is_refused_naming_its_key(key, value, expected, got):
    # float("0.05") loaded a str silently, int(2.7) truncated, and float(None) raised a
    # bare TypeError that named no key.
    schedule = ReduceOnPlateau(0.1)
    message = (
        f"The '{key}' entry of the state given to ReduceOnPlateau.load_state_dict must be "
        f"{expected} (what state_dict() writes). Got {got} instead."
    )
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        schedule.load_state_dict({**GOOD_STATE, key: value})
    assert schedule.state_dict()["value"] == 0.1  # nothing restored
    with pytest.raises(ValueError, match=r"needs a mapping \(what state_dict\(\) returns\)"):
        schedule.load_state_dict([0.05, 0.9, 1, 0])  # type: ignore[arg-type]


def test_a_state_of_tensors_and_inf_loads():
    schedule = ReduceOnPlateau(0.1)
    schedule.load_state_dict(
        {**GOOD_STATE, "value": torch.tensor(0.05, dtype=torch.float64), "best": math.inf}
    )
    assert schedule.state_dict() == {**GOOD_STATE, "best": math.inf}
