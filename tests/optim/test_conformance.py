"""The shared checks every registered optimizer gets (STYLE.md §8)."""

from __future__ import annotations

import copy
import io
import math
import pickle
import re

import pytest
import torch

from gradwise.schedules import cosine_decay, linear_warmup
from tests.optim.problems import gradient_stream, minimize, quadratic, rosenbrock
from tests.optim.registry import REGISTRY, OptimizerEntry

SKIPPING = [entry for entry in REGISTRY if entry.skips_parameters_without_grad]
WITH_GROUPS = [entry for entry in REGISTRY if entry.supports_param_groups]
FAST_PATHS = [(entry, path) for entry in REGISTRY for path in entry.fast_paths]
DTYPES = [(entry, dtype) for entry in REGISTRY for dtype in entry.dtypes]
WITH_SCHEDULE_LR = [entry for entry in REGISTRY if entry.supports_schedule_lr]
FUSED = [entry for entry in REGISTRY if "fused" in entry.fast_paths]
BAD_HYPERPARAMETERS = [
    (entry, name, kwargs) for entry in REGISTRY for name, kwargs in entry.bad_hyperparameters
]
INFINITE_HYPERPARAMETERS = [
    (entry, name, expected)
    for entry in REGISTRY
    for name, expected in entry.infinite_hyperparameters
]


def _model(dtype: torch.dtype = torch.float32) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(3)
    return [
        torch.nn.Parameter(torch.randn(6, 4, generator=generator).to(dtype)),
        torch.nn.Parameter(torch.randn(4, generator=generator).to(dtype)),
    ]


def _run(
    entry: OptimizerEntry,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    grads: list[list[torch.Tensor]],
) -> None:
    """One step per entry of ``grads``, through a closure whose loss has exactly that gradient.

    The loss is linear, sum(g * p), so backward() sets each .grad to the prescribed g (as
    assigning it would) and closure-driven optimizers (Newton) see the same gradients.
    """
    for step_grads in grads:

        def closure(step_grads: list[torch.Tensor] = step_grads) -> torch.Tensor:
            optimizer.zero_grad()
            loss = sum((g * p).sum() for p, g in zip(params, step_grads, strict=True))
            assert isinstance(loss, torch.Tensor)
            if entry.closure_calls_backward:
                loss.backward()
            return loss

        optimizer.step(closure)


def _snapshot(
    optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]
) -> list[torch.Tensor]:
    """Parameters, then every tensor of the optimizer's state, in a fixed order."""
    tensors = [p.detach().clone() for p in params]
    for key in sorted(k for k in optimizer.state if isinstance(k, str)):  # group-shared state
        for value in optimizer.state[key].values():
            tensors.append(torch.as_tensor(value).detach().clone())
    for p in params:
        for name in sorted(optimizer.state.get(p, {})):
            value = optimizer.state[p][name]
            if isinstance(value, torch.Tensor):
                tensors.append(value.detach().clone())
    return tensors


def _assert_same_state(
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    other: torch.optim.Optimizer,
    other_params: list[torch.nn.Parameter],
) -> None:
    """Bit-identical parameters and optimizer state."""
    expected, actual = _snapshot(optimizer, params), _snapshot(other, other_params)
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_converges_on_a_convex_quadratic(entry: OptimizerEntry) -> None:
    problem = quadratic()
    optimizer = entry.cls([problem.param], **entry.quadratic.settings)
    minimize(optimizer, problem, entry.quadratic.steps, entry.closure_calls_backward)
    distance = torch.linalg.vector_norm(problem.param.detach() - problem.minimizer)
    assert distance <= entry.quadratic.tolerance


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_converges_on_rosenbrock(entry: OptimizerEntry) -> None:
    problem = rosenbrock()
    optimizer = entry.cls([problem.param], **entry.rosenbrock.settings)
    minimize(optimizer, problem, entry.rosenbrock.steps, entry.closure_calls_backward)
    distance = torch.linalg.vector_norm(problem.param.detach() - problem.minimizer)
    assert distance <= entry.rosenbrock.tolerance


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_zero_gradients_without_weight_decay_leave_parameters_unchanged(
    entry: OptimizerEntry,
) -> None:
    params = _model()
    before = [p.detach().clone() for p in params]
    optimizer = entry.make(params, **entry.without_weight_decay)
    _run(entry, optimizer, params, [[torch.zeros_like(p) for p in params] for _ in range(5)])
    for p, original in zip(params, before, strict=True):
        assert torch.equal(p.detach(), original)


@pytest.mark.parametrize("entry", SKIPPING, ids=str)
def test_parameters_without_grad_are_skipped(entry: OptimizerEntry) -> None:
    with_grad, without_grad = _model()
    untouched = without_grad.detach().clone()
    optimizer = entry.make([with_grad, without_grad])
    for _ in range(3):
        with_grad.grad = torch.ones_like(with_grad)
        optimizer.step()
    assert torch.equal(without_grad.detach(), untouched)
    assert not optimizer.state.get(without_grad)
    assert not torch.equal(with_grad.detach(), _model()[0].detach())


@pytest.mark.parametrize(("entry", "dtype"), DTYPES, ids=str)
def test_dtypes_are_preserved(entry: OptimizerEntry, dtype: torch.dtype) -> None:
    params = _model(dtype)
    optimizer = entry.make(params)
    _run(entry, optimizer, params, gradient_stream([p.shape for p in params], 8, dtype))
    for p in params:
        assert p.dtype == dtype
        assert torch.isfinite(p).all()
        buffers = {
            key: value
            for key, value in optimizer.state.get(p, {}).items()
            if isinstance(value, torch.Tensor) and value.shape == p.shape
        }
        for key, value in buffers.items():
            assert value.dtype == dtype, key


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_state_memory_is_the_algorithms_minimum(entry: OptimizerEntry) -> None:
    params = _model()
    optimizer = entry.make(params)
    _run(entry, optimizer, params, gradient_stream([p.shape for p in params], 3, torch.float32))
    for p in params:
        state = optimizer.state.get(p, {})
        buffers = [v for v in state.values() if isinstance(v, torch.Tensor) and v.numel() > 1]
        assert len(buffers) == entry.state_buffers, sorted(state)
        assert all(v.shape == p.shape for v in buffers)


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_state_dict_round_trip_continues_bit_identically(entry: OptimizerEntry) -> None:
    shapes = [p.shape for p in _model()]
    first = gradient_stream(shapes, 6, torch.float32)
    second = gradient_stream(shapes, 6, torch.float32, seed=2)

    params = _model()
    optimizer = entry.make(params)
    _run(entry, optimizer, params, first)
    buffer = io.BytesIO()
    checkpoint = {"params": [p.detach() for p in params], "optimizer": optimizer.state_dict()}
    torch.save(checkpoint, buffer)
    _run(entry, optimizer, params, second)

    buffer.seek(0)
    saved = torch.load(buffer)
    resumed_params = [torch.nn.Parameter(p.clone()) for p in saved["params"]]
    resumed = entry.make(resumed_params)
    resumed.load_state_dict(saved["optimizer"])
    _run(entry, resumed, resumed_params, second)

    _assert_same_state(optimizer, params, resumed, resumed_params)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_a_copied_optimizer_continues_like_the_original(entry: OptimizerEntry, how: str) -> None:
    # torch.optim optimizers survive copy.deepcopy and pickle (model + optimizer copied
    # together, as deepcopy of a training state does); so must gradwise's.
    shapes = [p.shape for p in _model()]
    first = gradient_stream(shapes, 4, torch.float32)
    second = gradient_stream(shapes, 4, torch.float32, seed=2)
    params = _model()
    optimizer = entry.make(params)
    _run(entry, optimizer, params, first)
    pair = (params, optimizer)
    copied_params, copied = (
        copy.deepcopy(pair) if how == "deepcopy" else pickle.loads(pickle.dumps(pair))
    )
    _run(entry, optimizer, params, second)
    _run(entry, copied, copied_params, second)
    _assert_same_state(optimizer, params, copied, copied_params)
    hooks = [
        (h.__module__, h.__name__) for h in copied._optimizer_load_state_dict_post_hooks.values()
    ]
    originals = [
        (h.__module__, h.__name__) for h in optimizer._optimizer_load_state_dict_post_hooks.values()
    ]
    assert hooks == originals  # gradwise's own load hook came along, once
    copied.load_state_dict(optimizer.state_dict())
    if entry.supports_param_groups:
        copied.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3))]})


@pytest.mark.parametrize(("entry", "implementation"), FAST_PATHS, ids=str)
def test_fast_path_equals_reference_path(entry: OptimizerEntry, implementation: str) -> None:
    results = []
    for path in ("reference", implementation):
        params = _model(torch.float64)
        optimizer = entry.make(params, implementation=path)
        grads = gradient_stream([p.shape for p in params], 12, torch.float64)
        _run(entry, optimizer, params, grads[:6])
        for group in optimizer.param_groups:
            group["lr"] *= 0.5
        _run(entry, optimizer, params, grads[6:])
        assert optimizer.last_implementations == [path]
        results.append(_snapshot(optimizer, params))
    for reference, fast in zip(*results, strict=True):
        torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-15)


def _case_id(value: object) -> str:
    """A test id that is the same in every process (pytest-xdist workers compare them):
    a function shows as "callable", not as its address."""
    if callable(value) and not isinstance(value, type):
        return "callable"
    if isinstance(value, dict):
        return ",".join(f"{key}={_case_id(item)}" for key, item in value.items())
    return str(value)


@pytest.mark.parametrize(("entry", "name", "kwargs"), BAD_HYPERPARAMETERS, ids=_case_id)
def test_bad_hyperparameters_raise_a_clear_error(
    entry: OptimizerEntry, name: str, kwargs: dict
) -> None:
    with pytest.raises(ValueError, match=f"'{name}' parameter of {entry.name} must be .*Got"):
        entry.make(_model(), **kwargs)


@pytest.mark.parametrize("value", [math.inf, torch.tensor(math.inf)], ids=["float", "tensor"])
@pytest.mark.parametrize(("entry", "name", "expected"), INFINITE_HYPERPARAMETERS, ids=_case_id)
def test_an_infinite_hyperparameter_is_refused_with_the_standard_error(
    entry: OptimizerEntry, name: str, expected: str, value: object
) -> None:
    message = f"The '{name}' parameter of {entry.name} must be {expected.format(repr(value))}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        entry.make(_model(), **{name: value})


@pytest.mark.parametrize("entry", WITH_GROUPS, ids=str)
def test_a_bad_param_group_override_is_rejected_at_construction(entry: OptimizerEntry) -> None:
    first, second = _model()
    with pytest.raises(ValueError, match=f"'lr' parameter of {entry.name}"):
        entry.make([{"params": [first]}, {"params": [second], "lr": -1.0}])


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_an_empty_parameter_list_gets_torchs_error(entry: OptimizerEntry) -> None:
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        entry.make([])


@pytest.mark.parametrize("entry", WITH_GROUPS, ids=str)
def test_a_parameter_in_two_groups_gets_torchs_error(entry: OptimizerEntry) -> None:
    first, second = _model()
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        entry.make([{"params": [first]}, {"params": [first, second]}])


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_a_parameter_listed_twice_in_one_group_is_refused(entry: OptimizerEntry) -> None:
    # torch warns ("in future, this will cause an error") and steps it twice; a transform
    # would have updated it twice from the same state.
    first, second = _model()
    message = (
        f"The 'params' parameter of {entry.name} must list each tensor once per param group. "
        f"Got the tensor of shape {tuple(first.shape)} at positions 0 and 2 instead"
    )
    if entry.name == "Newton":  # refused before any group is made, for its Hessian
        message = "Newton got the same parameter more than once"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        entry.make([first, second, first])
    entry.make(p for p in (first, second))  # a generator is read once


def _warmup_cosine(entry: OptimizerEntry) -> linear_warmup:
    """The entry's lr as a schedule: a linear warmup to it, then a cosine decay."""
    return linear_warmup(cosine_decay(entry.settings["lr"], num_steps=10), num_steps=3)


@pytest.mark.parametrize("entry", WITH_SCHEDULE_LR, ids=str)
def test_a_schedule_lr_resumes_bit_identically_from_a_weights_only_checkpoint(
    entry: OptimizerEntry,
) -> None:
    # torch.load reads with weights_only=True by default (torch >= 2.6): it unpickles no
    # class, so the schedule in the param groups must travel as plain data.
    shapes = [p.shape for p in _model()]
    first = gradient_stream(shapes, 5, torch.float32)
    second = gradient_stream(shapes, 7, torch.float32, seed=2)

    params = _model()
    optimizer = entry.make(params, lr=_warmup_cosine(entry))
    _run(entry, optimizer, params, first)
    buffer = io.BytesIO()
    torch.save(
        {"params": [p.detach() for p in params], "optimizer": optimizer.state_dict()}, buffer
    )
    _run(entry, optimizer, params, second)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_params = [torch.nn.Parameter(p.clone()) for p in saved["params"]]
    resumed = entry.make(resumed_params, lr=_warmup_cosine(entry))
    resumed.load_state_dict(saved["optimizer"])
    _run(entry, resumed, resumed_params, second)

    _assert_same_state(optimizer, params, resumed, resumed_params)
    assert resumed.param_groups[0]["lr"] == _warmup_cosine(entry)


@pytest.mark.parametrize("entry", FUSED, ids=str)
def test_fused_refuses_a_schedule_lr_when_made_not_at_the_first_step(
    entry: OptimizerEntry,
) -> None:
    first, second = _model()
    refused = (
        rf"The 'lr' parameter of {entry.name} must be a plain number with "
        r"implementation='fused'.*Got linear_warmup\(.*Use implementation='auto' or 'compiled'"
    )
    with pytest.raises(ValueError, match=refused):
        entry.make([first, second], lr=_warmup_cosine(entry), implementation="fused")
    optimizer = entry.make([first], implementation="fused")
    with pytest.raises(ValueError, match=refused):
        optimizer.add_param_group({"params": [second], "lr": _warmup_cosine(entry)})
    assert len(optimizer.param_groups) == 1
    # "auto" takes the schedule and steps it on the reference path.
    optimizer = entry.make([first, second], lr=_warmup_cosine(entry))
    _run(
        entry,
        optimizer,
        [first, second],
        gradient_stream([first.shape, second.shape], 1, torch.float32),
    )
    assert optimizer.last_implementations == ["reference"]
