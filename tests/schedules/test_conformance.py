"""Checks every schedule gets: one entry in SCHEDULES below is all a new schedule needs."""

import copy
import dataclasses
import doctest
import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import gradwise.schedules
from gradwise.optim import SGD, scale_by_learning_rate
from gradwise.schedules import (
    ReduceOnPlateau,
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

# The registry: every public schedule, with arguments that reach its edge cases.
SCHEDULES = [
    constant(0.1),
    step_decay(0.1, 30),
    multistep_decay(0.1, [30, 80], gamma=0.5),
    exponential_decay(0.1, 0.99),
    exponential_decay(0.1, 0.0),
    inverse_time_decay(0.1, 0.5, decay_steps=10),
    polynomial_decay(0.1, 100, final=0.001, power=0.5),
    polynomial_decay(0.001, 100, final=0.1, power=3.0),
    linear_decay(0.1, 0.0, 100),
    cosine_decay(0.1, 100, final=0.001),
    cosine_decay(0.0, 100, final=0.1),
    cosine_warm_restarts(0.1, 10),
    cosine_warm_restarts(0.1, 3, period_multiplier=3, final=0.01),
    one_cycle(0.1, 100),
    one_cycle(0.1, 100, pct_start=0.25, anneal_strategy="linear", three_phase=True),
    constant_warmup(step_decay(0.1, 30), 5, 0.01),
    linear_warmup(cosine_decay(0.1, 100), 10),
    linear_warmup(one_cycle(0.1, 50), 3, start=0.2),
    join([linear_decay(0.0, 0.1, 10), cosine_decay(0.1, 90), constant(0.001)], [10, 100]),
    ReduceOnPlateau(0.1),
]
FROZEN = [schedule for schedule in SCHEDULES if not isinstance(schedule, ReduceOnPlateau)]
STEPS = torch.cat(
    [
        torch.arange(400, dtype=torch.float64),
        torch.tensor([2.5, 7.25, 99.999, 1e3, 1e4, 123_457, 1e6, 1e9], dtype=torch.float64),
    ]
)


@pytest.fixture(params=SCHEDULES, ids=repr)
def schedule(request):
    return request.param


def test_tensor_of_steps_equals_step_by_step(schedule):
    values = schedule(STEPS)
    assert values.dtype == torch.float64
    assert values.shape == STEPS.shape
    expected = torch.tensor([schedule(float(step)) for step in STEPS], dtype=torch.float64)
    torch.testing.assert_close(values, expected, rtol=4e-16, atol=0.0)
    grid = schedule(STEPS[:400].reshape(20, 20))  # any shape, element by element
    assert torch.equal(grid, values[:400].reshape(20, 20))
    integer_steps = schedule(torch.arange(400))
    assert torch.equal(integer_steps, values[:400])


def test_number_in_float_out(schedule):
    assert type(schedule(0)) is float
    assert type(schedule(17.5)) is float


def test_never_negative_or_nan(schedule):
    assert first_invalid_value(schedule) is None


def test_repr_is_the_call_that_made_it(schedule):
    name = type(schedule).__name__
    assert repr(schedule).startswith(f"{name}(")
    assert getattr(gradwise.schedules, name) is type(schedule)
    if dataclasses.is_dataclass(schedule):
        assert eval(repr(schedule), vars(gradwise.schedules)) == schedule


@pytest.mark.parametrize("frozen_schedule", FROZEN, ids=repr)
def test_frozen_hashable_and_picklable(frozen_schedule):
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen_schedule.initial = 1.0
    assert hash(frozen_schedule) == hash(dataclasses.replace(frozen_schedule))
    restored = pickle.loads(pickle.dumps(frozen_schedule))
    assert restored == frozen_schedule
    assert restored(123) == frozen_schedule(123)


def test_an_optimizer_checkpoint_holds_it_as_data_that_weights_only_loading_reads(schedule):
    # torch.load's default weights_only=True unpickles no class: an optimizer's state_dict
    # writes the schedule as its kind and arguments, and load_state_dict rebuilds it.
    schedule = copy.deepcopy(schedule)
    if isinstance(schedule, ReduceOnPlateau):
        for loss in (1.0, 2.0, 2.0, 0.5):
            schedule.observe(loss)
    buffer = io.BytesIO()
    torch.save(SGD([torch.nn.Parameter(torch.zeros(1))], lr=schedule).state_dict(), buffer)
    buffer.seek(0)
    loaded = SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    rebuilt = loaded.param_groups[0]["lr"]
    assert type(rebuilt) is type(schedule)
    assert repr(rebuilt) == repr(schedule)
    assert torch.equal(rebuilt(STEPS), schedule(STEPS))
    if isinstance(schedule, ReduceOnPlateau):
        assert rebuilt.state_dict() == schedule.state_dict()
    else:
        assert rebuilt == schedule


def test_plugs_into_scale_by_learning_rate():
    schedule = linear_warmup(cosine_decay(0.1, 10), 3)
    descend = scale_by_learning_rate(schedule)
    params = [torch.zeros(3, dtype=torch.float64)]
    state = descend.init(params)
    for step in range(20):
        updates, state = descend.update([torch.ones(3, dtype=torch.float64)], state, params)
        torch.testing.assert_close(
            updates[0], torch.full((3,), -schedule(step), dtype=torch.float64)
        )


@pytest.mark.compile
@pytest.mark.parametrize(
    "compiled_schedule",
    [cosine_decay(0.1, 100, final=0.001), linear_warmup(cosine_decay(0.1, 100), 10)],
    ids=repr,
)
def test_compiles_without_graph_breaks(compiled_schedule):
    def learning_rate(step):
        return compiled_schedule(step)

    compiled = torch.compile(learning_rate, fullgraph=True)
    for step in [0, 5, 10, 50, 100, 101, 10**6]:
        value = compiled(torch.tensor(float(step), dtype=torch.float64))
        assert value.shape == ()
        torch.testing.assert_close(float(value), compiled_schedule(step), rtol=1e-12, atol=1e-18)


@pytest.mark.compile
def test_every_schedule_traces_in_one_graph():
    def all_values(step):
        return torch.stack([schedule(step) for schedule in SCHEDULES])

    compiled = torch.compile(all_values, fullgraph=True, backend="eager")
    for step in [0.0, 42.0, 1e6]:
        expected = torch.tensor([schedule(step) for schedule in SCHEDULES], dtype=torch.float64)
        torch.testing.assert_close(compiled(torch.tensor(step, dtype=torch.float64)), expected)


@pytest.mark.parametrize("name", gradwise.schedules.__all__)
def test_docstring_examples_run(name):
    public = getattr(gradwise.schedules, name)
    tests = doctest.DocTestFinder(recurse=False).find(public, name, globs={})
    assert tests or name == "Schedule"
    for test in tests:
        result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test)
        assert result.failed == 0, name


DOCS_PAGE = Path(__file__).parents[2] / "docs" / "schedules.md"
DOCS_EXAMPLES = re.findall(r"```python\n(.*?)```", DOCS_PAGE.read_text(), flags=re.DOTALL)


def test_docs_page_has_an_example_per_schedule():
    assert len(DOCS_EXAMPLES) >= 15


@pytest.mark.parametrize("number", range(len(DOCS_EXAMPLES)))
def test_docs_page_examples_run(number):
    code = compile(DOCS_EXAMPLES[number], f"{DOCS_PAGE}, example {number}", "exec")
    exec(code, {})


def test_numpy_arguments_are_written_as_plain_numbers():
    # numpy's ints (milestones computed from an epoch count, say) pass validation; they
    # made the schedule an object in the checkpoint, which weights_only loading refused.
    schedule = join(
        [
            multistep_decay(np.float64(0.5), [np.int64(3), np.int32(7)], gamma=np.float32(0.5)),
            cosine_decay(0.1, np.int64(10), final=np.float64(0.25)),
        ],
        [np.int64(20)],
    )
    buffer = io.BytesIO()
    torch.save(SGD([torch.nn.Parameter(torch.zeros(1))], lr=schedule).state_dict(), buffer)
    buffer.seek(0)
    loaded = SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    rebuilt = loaded.param_groups[0]["lr"]
    assert type(rebuilt) is join
    assert type(rebuilt.boundaries[0]) is int
    assert type(rebuilt.schedules[0].gamma) is float
    assert rebuilt == join(
        [multistep_decay(0.5, [3, 7], gamma=0.5), cosine_decay(0.1, 10, final=0.25)], [20]
    )
    assert torch.equal(rebuilt(STEPS), schedule(STEPS))
