"""The adapter's torch.optim contract: groups, schedulers, hooks, state dicts, errors."""

from __future__ import annotations

import copy
import io
import math
import pickle
import re

import pytest
import torch

from gradwise import optim
from gradwise.schedules import (
    ReduceOnPlateau,
    TwoSchedulesError,
    constant,
    cosine_decay,
    join,
    linear_decay,
    linear_warmup,
    step_decay,
)


def _params(dtype: torch.dtype = torch.float64) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(0)
    return [
        torch.nn.Parameter(torch.randn(4, 3, generator=generator, dtype=dtype)) for _ in range(2)
    ]


def _set_grads(params: list[torch.nn.Parameter], seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator, dtype=p.dtype)


def _adam_factory(lr: float, weight_decay: float) -> optim.GradientTransform:
    return optim.chain(
        optim.scale_by_adam(),
        optim.add_decayed_weights(weight_decay),
        optim.scale_by_learning_rate(lr),
    )


def test_a_factory_optimizer_gives_adamw_numbers_with_per_group_overrides() -> None:
    ours, theirs = _params(), _params()
    optimizer = optim.Optimizer(
        [{"params": [ours[0]]}, {"params": [ours[1]], "lr": 0.05, "weight_decay": 0.0}],
        _adam_factory,
        lr=0.01,
        weight_decay=0.1,
    )
    reference = torch.optim.AdamW(
        [{"params": [theirs[0]]}, {"params": [theirs[1]], "lr": 0.05, "weight_decay": 0.0}],
        lr=0.01,
        weight_decay=0.1,
        foreach=False,
    )
    for step in range(20):
        _set_grads(ours, step)
        _set_grads(theirs, step)
        optimizer.step()
        reference.step()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "make_scheduler",
    [
        lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5),
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10),
        lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=20),
    ],
    ids=["StepLR", "CosineAnnealingLR", "OneCycleLR"],
)
def test_torch_lr_schedulers_drive_gradwise_optimizers(make_scheduler: object) -> None:
    # OneCycleLR also cycles Adam's betas: every group hyperparameter is live, not just lr.
    ours, theirs = _params(), _params()
    optimizer, reference = (
        optim.Adam(ours, lr=0.01),
        torch.optim.Adam(theirs, lr=0.01, foreach=False),
    )
    schedulers = [make_scheduler(optimizer), make_scheduler(reference)]  # type: ignore[operator]
    for step in range(20):
        _set_grads(ours, step)
        _set_grads(theirs, step)
        optimizer.step()
        reference.step()
        for scheduler in schedulers:
            scheduler.step()
    assert optimizer.param_groups[0]["lr"] == reference.param_groups[0]["lr"]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_step_hooks_run_around_each_step() -> None:
    params = _params()
    optimizer = optim.SGD(params, lr=0.1)
    calls: list[str] = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append("post"))
    _set_grads(params, 0)
    optimizer.step()
    assert calls == ["pre", "post"]


def test_step_returns_the_closure_loss_and_zero_grad_clears_gradients() -> None:
    params = _params()
    optimizer = optim.Adam(params, lr=0.1)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = sum((p**2).sum() for p in params)
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert torch.equal(loss, sum((p.detach() ** 2).sum() for p in _params()))
    optimizer.zero_grad()
    assert all(p.grad is None for p in params)


def test_a_torch_adam_checkpoint_resumes_in_gradwise_adam() -> None:
    """Same state layout as torch: a torch.optim.Adam state_dict loads and continues exactly."""
    ours, theirs = _params(), _params()
    reference = torch.optim.Adam(theirs, lr=0.01, amsgrad=True, foreach=False)
    for step in range(5):
        _set_grads(theirs, step)
        reference.step()
    buffer = io.BytesIO()
    torch.save(reference.state_dict(), buffer)
    buffer.seek(0)
    with torch.no_grad():
        for a, b in zip(ours, theirs, strict=True):
            a.copy_(b)
    optimizer = optim.Adam(ours, lr=0.01, amsgrad=True)
    optimizer.load_state_dict(torch.load(buffer))
    for step in range(5, 10):
        _set_grads(ours, step)
        _set_grads(theirs, step)
        optimizer.step()
        reference.step()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_group_shared_state_survives_a_state_dict_round_trip_without_aliasing() -> None:
    def schedule(step: object) -> object:
        return 0.1 / (1 + step)  # type: ignore[operator]

    params = _params()
    optimizer = optim.Optimizer(
        params, optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(schedule))
    )
    for step in range(3):
        _set_grads(params, step)
        optimizer.step()
    state_dict = optimizer.state_dict()
    assert int(state_dict["state"]["param_group_0"]["schedule_step"]) == 3
    fresh = optim.Optimizer(
        _params(), optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(schedule))
    )
    fresh.load_state_dict(state_dict)
    assert (
        fresh.state["param_group_0"]["schedule_step"]
        is not optimizer.state["param_group_0"]["schedule_step"]
    )
    assert int(fresh.state["param_group_0"]["schedule_step"]) == 3


def test_named_optimizers_pickle_and_deepcopy() -> None:
    params = _params()
    optimizer = optim.NAdam(params, lr=0.01)
    _set_grads(params, 0)
    optimizer.step()
    for clone in (pickle.loads(pickle.dumps(optimizer)), copy.deepcopy(optimizer)):
        assert clone.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
        clone.step()


def test_complex_parameters_match_torch() -> None:
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(3, 2, generator=generator, dtype=torch.complex128)
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    optimizer = optim.Adam([ours], lr=0.01, implementation="reference")
    reference = torch.optim.Adam([theirs], lr=0.01, foreach=False)
    for _ in range(10):
        grad = torch.randn(3, 2, generator=generator, dtype=torch.complex128)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        optimizer.step()
        reference.step()
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)


def test_auto_picks_torchs_kernel_where_torch_has_one_and_the_reference_elsewhere() -> None:
    # torch's fused kernel (Adam, SGD) or, where torch has no fused one, its foreach kernel
    # (RMSprop, Adadelta, NAdam, RAdam): both are the "fused" path.
    for cls, expected in (
        (optim.Adam, "fused"),
        (optim.SGD, "fused"),
        (optim.RMSprop, "fused"),
        (optim.Adadelta, "fused"),
        (optim.NAdam, "fused"),
        (optim.RAdam, "fused"),
        (optim.LARS, "reference"),
    ):
        params = _params()
        optimizer = cls(params, lr=0.01)
        _set_grads(params, 0)
        optimizer.step()
        assert optimizer.last_implementations == [expected]


@pytest.mark.parametrize(
    ("cls", "settings", "switch"),
    [
        (optim.RMSprop, {"lr": 0.01}, {"momentum": 0.9, "centered": True}),
        (optim.Adadelta, {"lr": 1.0}, {"weight_decay": 0.1}),
        (optim.NAdam, {"lr": 0.01}, {"decoupled_weight_decay": True, "weight_decay": 0.1}),
        (optim.RAdam, {"lr": 0.01}, {"betas": (0.8, 0.99)}),
    ],
    ids=["RMSprop", "Adadelta", "NAdam", "RAdam"],
)
def test_torchs_foreach_kernels_follow_the_reference_through_late_parameters_and_switches(
    cls: type[torch.optim.Optimizer], settings: dict[str, object], switch: dict[str, object]
) -> None:
    # A parameter whose first gradient comes at step 3, and options switched on at step 5
    # (RMSprop's momentum buffer and centered average start then, from zeros, as the
    # reference's do): the foreach path creates the state the reference path creates.
    results = []
    for implementation in ("reference", "fused"):
        params = _params()
        optimizer = cls(params, implementation=implementation, **settings)  # type: ignore[call-arg]
        for step in range(9):
            _set_grads(params, step)
            if step < 3:
                params[1].grad = None
            if step == 5:
                optimizer.param_groups[0].update(switch)
            optimizer.step()
        assert optimizer.last_implementations == [implementation]
        results.append((params, optimizer.state_dict()["state"]))
    (reference, reference_state), (fused, fused_state) = results
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    for index, state in reference_state.items():
        assert set(fused_state[index]) == set(state)
        for key, value in state.items():
            torch.testing.assert_close(fused_state[index][key], value, rtol=1e-12, atol=1e-15)


def test_a_schedule_as_lr_keeps_adam_off_the_fused_kernel() -> None:
    params = _params()
    optimizer = optim.Adam(params, lr=lambda step: 0.01)
    _set_grads(params, 0)
    optimizer.step()
    assert optimizer.last_implementations == ["reference"]


def test_sparse_gradients_are_rejected() -> None:
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    optimizer = optim.Adam(embedding.parameters())
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="Adam does not support sparse gradients"):
        optimizer.step()


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adagrad, optim.LARS])
def test_a_sparse_gradient_error_names_the_parameter_and_the_fix(
    cls: type[torch.optim.Optimizer],
) -> None:
    # QA: torch.optim.SGD and Adagrad take sparse gradients, so a drop-in user of these
    # hits this error; it named neither the parameter nor what to do (STYLE.md section 6).
    linear = torch.nn.Linear(3, 1)
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    optimizer = cls([*linear.parameters(), *embedding.parameters()], lr=0.1)
    linear(embedding(torch.tensor([1, 2]))).sum().backward()
    weight = embedding.weight.detach().clone()
    with pytest.raises(RuntimeError, match=r"parameter of shape \(10, 3\).*sparse=False"):
        optimizer.step()
    assert torch.equal(embedding.weight, weight)


def test_a_fixed_transform_refuses_group_hyperparameters_it_would_ignore() -> None:
    # QA: a group's lr=100 with a fixed transform stepped by the transform's 0.1, silently.
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    transform = optim.chain(optim.scale_by_learning_rate(0.1))
    with pytest.raises(ValueError, match=r"\['betas', 'lr'\] in a param group with a fixed"):
        optim.Optimizer([{"params": [a]}, {"params": [b], "lr": 100.0, "betas": (0.9, 0.99)}],
                        transform)  # fmt: skip
    opt = optim.Optimizer([{"params": [a], "name": "backbone"}], transform)  # metadata: fine
    with pytest.raises(ValueError, match=r"\['weight_decay'\] in a param group"):
        opt.add_param_group({"params": [b], "weight_decay": 0})


def _fixed_transform_optimizer(params: list[torch.nn.Parameter]) -> optim.Optimizer:
    return optim.Optimizer(
        params, optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(0.1))
    )


def _assert_a_scheduler_is_refused_with_a_reason(optimizer: optim.Optimizer) -> None:
    with pytest.raises(
        KeyError,
        match=r"(?s)no 'lr': the Optimizer was given a fixed GradientTransform.*Pass a factory",
    ):
        torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)


def test_a_torch_scheduler_on_a_fixed_transform_says_why_it_cannot_work() -> None:
    # QA: StepLR on a fixed transform failed deep in torch with a bare KeyError: 'lr'.
    params = _params()
    optimizer = _fixed_transform_optimizer(params)
    _assert_a_scheduler_is_refused_with_a_reason(optimizer)
    assert optimizer.param_groups[0].get("lr") is None
    assert "lr" not in optimizer.param_groups[0]
    _set_grads(params, 0)
    optimizer.step()
    state_dict = optimizer.state_dict()
    assert [type(group) for group in state_dict["param_groups"]] == [dict]
    assert state_dict["param_groups"] == [{"params": [0, 1]}]
    loaded = _fixed_transform_optimizer(_params())
    loaded.load_state_dict(state_dict)
    # chain's closures do not pickle, so neither does this optimizer; its groups must.
    unpickled_group = pickle.loads(pickle.dumps(optimizer.param_groups[0]))
    with pytest.raises(KeyError, match="fixed GradientTransform"):
        unpickled_group["lr"]
    for clone in (copy.deepcopy(optimizer), loaded):
        _assert_a_scheduler_is_refused_with_a_reason(clone)
        assert clone.state_dict()["param_groups"] == state_dict["param_groups"]
        clone.step()


_REFUSED_SCHEDULE = (
    r"^A torch LR scheduler needs a number as each param group's lr\. Got the schedule "
    r".* instead, which the optimizer already follows step by step\. Either pass a float lr "
    r"to drive the optimizer with the torch scheduler, or drop the torch scheduler and keep "
    r"the schedule\.$"
)


def _inverse_time(step: object) -> object:
    return 0.1 / (1 + torch.as_tensor(step, dtype=torch.float64))


@pytest.mark.parametrize(
    "make_scheduler",
    [
        lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=30),
        lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.95**epoch),
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10),
        lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=20),
        lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[50]),
        lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9),
        lambda opt: torch.optim.lr_scheduler.LinearLR(opt),
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=5),
    ],
    ids=[
        "StepLR",
        "LambdaLR",
        "CosineAnnealingLR",
        "OneCycleLR",
        "MultiStepLR",
        "ExponentialLR",
        "LinearLR",
        "CosineAnnealingWarmRestarts",
    ],
)
@pytest.mark.parametrize(
    "lr",
    [linear_warmup(cosine_decay(0.1, num_steps=90), num_steps=10), _inverse_time],
    ids=["gradwise schedule", "function"],
)
def test_a_torch_scheduler_around_a_schedule_lr_is_refused_when_made(
    make_scheduler: object, lr: object
) -> None:
    # QA: a torch scheduler around SGD(lr=cosine_decay(...)) failed deep inside torch with a
    # bare TypeError (StepLR only at its step_size-th step); OneCycleLR replaced the
    # schedule, and cycled the momentum, without a word.
    params = _params()
    optimizer = optim.SGD(params, lr=lr, momentum=0.9)
    with pytest.raises(TwoSchedulesError, match=_REFUSED_SCHEDULE):
        make_scheduler(optimizer)  # type: ignore[operator]
    # Refused before it changed anything: the optimizer goes on following its schedule.
    group = optimizer.param_groups[0]
    assert group["lr"] is lr
    assert group["momentum"] == 0.9
    assert "initial_lr" not in group
    _set_grads(params, 0)
    optimizer.step()
    assert optim.next_step_lr(optimizer) == pytest.approx(float(lr(1)))  # type: ignore[operator]


def test_a_schedule_lr_refuses_torch_schedulers_after_a_reload_a_copy_and_in_new_groups() -> None:
    params = _params()
    schedule = cosine_decay(0.1, num_steps=10)
    optimizer = optim.Adam([params[0]], lr=0.01)
    optimizer.add_param_group({"params": [params[1]], "lr": schedule})
    loaded = optim.Adam([{"params": [p]} for p in _params()], lr=schedule)
    loaded.load_state_dict(optimizer.state_dict())  # torch makes new group dicts
    for each in (optimizer, loaded, copy.deepcopy(optimizer), pickle.loads(pickle.dumps(loaded))):
        with pytest.raises(TypeError, match=_REFUSED_SCHEDULE):
            torch.optim.lr_scheduler.StepLR(each, step_size=1)
    # A float lr everywhere (a loaded checkpoint's initial_lr included) takes one.
    float_params = _params()
    floats = optim.Adam(float_params, lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(floats, step_size=1, gamma=0.5)
    resumed = optim.Adam(_params(), lr=0.01)
    resumed.load_state_dict(floats.state_dict())
    assert resumed.param_groups[0]["initial_lr"] == 0.01
    _set_grads(float_params, 0)
    floats.step()
    scheduler.step()
    assert floats.param_groups[0]["lr"] == 0.005


def test_reduce_lr_on_plateau_around_a_schedule_lr_says_what_to_do_when_it_reduces() -> None:
    # ReduceLROnPlateau stores nothing in the groups when made; it reads float(lr) when it
    # cuts the rate, which said only "float() argument must be ... not 'cosine_decay'".
    params = _params()
    optimizer = optim.SGD(params, lr=cosine_decay(0.1, num_steps=10))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0)
    scheduler.step(1.0)
    with pytest.raises(
        TypeError,
        match=r"^cosine_decay\(.*\) is a schedule, a function of the step, not a number: call "
        r"it with a step for its value\. If a torch LR scheduler got here, the optimizer's lr "
        r"is this schedule, .* Either pass a float lr to drive the optimizer with the torch "
        r"scheduler, or drop the torch scheduler and keep the schedule\.$",
    ):
        scheduler.step(2.0)


def test_construction_errors_say_what_to_do() -> None:
    params = _params()
    transform = optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(0.1))
    with pytest.raises(ValueError, match="fixed transform. Pass a factory"):
        optim.Optimizer(params, transform, lr=0.1)
    with pytest.raises(ValueError, match=r"does not accept. It accepts: \['lr', 'weight_decay'\]"):
        optim.Optimizer(params, _adam_factory, lr=0.1, weight_decay=0.0, momentum=0.9)
    with pytest.raises(
        ValueError,
        match=r"needs default values for the factory's hyperparameters \['weight_decay'\]",
    ):
        optim.Optimizer(params, _adam_factory, lr=0.1)
    with pytest.raises(TypeError, match="must be a GradientTransform or a function returning one"):
        optim.Optimizer(params, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'implementation' parameter of Adam must be one of"):
        optim.Adam(params, implementation="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="LARS has no fused kernel"):
        optim.LARS(params, implementation="fused")
    with pytest.raises(ValueError, match="'capturable' parameter of Adam is not supported"):
        optim.Adam(params, capturable=True)
    with pytest.raises(ValueError, match="'differentiable' parameter of SGD is not supported"):
        optim.SGD(params, differentiable=True)
    with pytest.raises(ValueError, match="`fused` and `foreach` cannot be `True` together"):
        optim.Adam(params, fused=True, foreach=True)


def test_a_negative_schedule_names_the_step_where_it_goes_negative() -> None:
    with pytest.raises(
        ValueError, match=r"'lr' parameter of Adam must be .*returns -0\.0099\d* at step 11"
    ):
        optim.Adam(_params(), lr=lambda step: 0.1 - 0.01 * step)


def test_fused_requested_on_an_unsupported_group_says_why() -> None:
    params = [torch.nn.Parameter(torch.ones(3, dtype=torch.complex64))]
    optimizer = optim.Adam(params, fused=True)
    params[0].grad = torch.ones_like(params[0])
    with pytest.raises(RuntimeError, match="fused kernel does not support this param group"):
        optimizer.step()


def test_fused_refuses_a_schedule_or_tensor_lr_when_made_not_at_the_first_step() -> None:
    # QA: fused=True with a schedule lr was accepted and failed at the first step.
    schedule = cosine_decay(0.1, num_steps=10)
    with pytest.raises(ValueError, match=r"'lr' parameter of SGD must be a plain number.*Got cos"):
        optim.SGD(_params(), lr=schedule, fused=True)
    with pytest.raises(ValueError, match=r"'lr' parameter of Adam.*or pass a float lr\.$"):
        optim.Adam([{"params": _params()[:1], "lr": schedule}], lr=0.1, fused=True)
    with pytest.raises(ValueError, match=r"'lr' parameter of Adagrad.*Got tensor\(0\.1000"):
        optim.Adagrad(_params(), lr=torch.tensor(0.1), implementation="fused")
    optim.SGD(_params(), lr=schedule, implementation="compiled")  # the other paths take it


def test_a_fused_step_still_checks_what_only_the_step_can_see() -> None:
    # A group changed after construction (by hand here, as a scheduler of one's own would).
    params = _params()
    optimizer = optim.SGD(params, lr=0.1, fused=True)
    optimizer.param_groups[0]["lr"] = cosine_decay(0.1, num_steps=10)
    _set_grads(params, 0)
    with pytest.raises(RuntimeError, match="fused kernel does not support this param group"):
        optimizer.step()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("lr", -0.1, r"^The 'lr' parameter of SGD must be .* Got -0\.1 instead"),
        ("momentum", float("nan"), r"^The 'momentum' parameter of SGD must be .* Got nan"),
        ("nesterov", 1, r"^The 'nesterov' parameter of SGD must be a bool\. Got 1 instead\.$"),
        ("momentum", 0.0, r"^The 'nesterov' parameter of SGD must be False unless momentum > 0"),
    ],
    ids=["lr", "momentum nan", "nesterov int", "nesterov without momentum"],
)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
def test_a_value_changed_between_steps_is_checked_at_the_next_step(
    name: str, value: object, message: str, fused: bool
) -> None:
    # Only the changed values' constraints are checked again (a scheduler changes lr every
    # step), with the rules that relate several values; a value that did not change but
    # broke a relation (nesterov, once momentum goes to 0) is refused too.
    params = _params()
    optimizer = optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, fused=fused)
    _set_grads(params, 0)
    optimizer.step()
    for valid_lr in (0.05, 0.025):  # a scheduler's changes pass
        optimizer.param_groups[0]["lr"] = valid_lr
        optimizer.step()
    before = [p.detach().clone() for p in params]
    optimizer.param_groups[0][name] = value
    with pytest.raises(ValueError, match=message):
        optimizer.step()
    assert torch.is_grad_enabled()  # the step's no-grad mode ended with it
    for p, b in zip(params, before, strict=True):
        torch.testing.assert_close(p, b, rtol=0, atol=0)  # nothing was stepped


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
def test_adams_betas_changed_between_steps_take_effect_and_are_checked(fused: bool) -> None:
    ours, theirs = _params(), _params()
    optimizer = optim.Adam(ours, lr=0.01, implementation="fused" if fused else "reference")
    reference = torch.optim.Adam(theirs, lr=0.01, foreach=False)
    for step in range(6):
        if step == 3:
            for opt in (optimizer, reference):
                opt.param_groups[0]["betas"] = (0.5, 0.9)
        _set_grads(ours, step)
        _set_grads(theirs, step)
        optimizer.step()
        reference.step()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    optimizer.param_groups[0]["betas"] = (0.5, 1.5)
    with pytest.raises(ValueError, match=r"^The 'betas' parameter of Adam must be "):
        optimizer.step()
    optimizer.param_groups[0]["betas"] = (0.0, 0.9)
    optimizer.step()
    optimizer.param_groups[0]["betas"] = (False, 0.9)  # equal to (0.0, 0.9), but a bool
    with pytest.raises(ValueError, match=r"^The 'betas' parameter of Adam must be "):
        optimizer.step()


# Composed schedules, each with the ReduceOnPlateau (if any) its run reports losses to.
def _composed_schedules() -> list[tuple[object, ReduceOnPlateau | None]]:
    plateau = ReduceOnPlateau(0.05, factor=0.5, patience=1)
    nested_plateau = ReduceOnPlateau(0.02, factor=0.1, patience=0, cooldown=1)
    return [
        (linear_warmup(cosine_decay(0.1, num_steps=10), num_steps=4), None),
        (
            join(
                [linear_decay(0.0, 0.1, 3), step_decay(0.1, 2, gamma=0.5), constant(0.01)], [3, 9]
            ),
            None,
        ),
        (plateau, plateau),
        (join([linear_warmup(constant(0.05), 2), nested_plateau], [5]), nested_plateau),
    ]


def _run_with_schedule(
    optimizer: optim.SGD,
    params: list[torch.nn.Parameter],
    plateau: ReduceOnPlateau | None,
    steps: range,
) -> list[float]:
    """Step, report a loss that stalls to the plateau schedule (if any); return the lr that
    the optimizer's own schedule gives each step."""
    lrs = []
    for step in steps:
        lrs.append(optimizer.param_groups[0]["lr"](step))
        _set_grads(params, step)
        optimizer.step()
        if plateau is not None:
            plateau.observe(1.0 if step % 5 else 0.5 / (step + 1))
    return lrs


@pytest.mark.parametrize("case", range(len(_composed_schedules())))
def test_composed_schedules_resume_bit_for_bit_from_a_weights_only_checkpoint(case: int) -> None:
    # QA: torch.load(path) refused the checkpoint of an optimizer with a schedule as lr
    # (weights_only=True unpickles no gradwise class), and a loaded ReduceOnPlateau was a
    # copy: the one the run observes no longer drove the optimizer.
    schedule, plateau = _composed_schedules()[case]
    params = _params()
    optimizer = optim.SGD(params, lr=schedule, momentum=0.9)
    _run_with_schedule(optimizer, params, plateau, range(6))
    buffer = io.BytesIO()
    torch.save(
        {"params": [p.detach() for p in params], "optimizer": optimizer.state_dict()}, buffer
    )
    expected_lrs = _run_with_schedule(optimizer, params, plateau, range(6, 16))

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    fresh_schedule, fresh_plateau = _composed_schedules()[case]  # as a resumed script does
    resumed_params = [torch.nn.Parameter(p.clone()) for p in saved["params"]]
    resumed = optim.SGD(resumed_params, lr=fresh_schedule, momentum=0.9)
    resumed.load_state_dict(saved["optimizer"])
    assert resumed.param_groups[0]["lr"] is fresh_schedule
    lrs = _run_with_schedule(resumed, resumed_params, fresh_plateau, range(6, 16))

    assert lrs == expected_lrs
    assert min(lrs) < max(lrs)  # the rate changes after the resume (a plateau cuts it)
    for ours, expected in zip(resumed_params, params, strict=True):
        assert torch.equal(ours, expected)
    for ours, expected in zip(resumed_params, params, strict=True):
        assert torch.equal(
            resumed.state[ours]["momentum_buffer"], optimizer.state[expected]["momentum_buffer"]
        )


def test_a_loaded_schedule_replaces_a_different_lr_as_torch_hyperparameters_do() -> None:
    schedule = join([constant(0.05), cosine_decay(0.1, num_steps=10)], [3])
    optimizer = optim.SGD(_params(), lr=schedule)
    loaded = optim.SGD(_params(), lr=0.5)
    loaded.load_state_dict(optimizer.state_dict())
    assert loaded.param_groups[0]["lr"] == schedule
    back = optim.SGD(_params(), lr=cosine_decay(0.2, num_steps=10))
    back.load_state_dict(optim.SGD(_params(), lr=0.5).state_dict())
    assert back.param_groups[0]["lr"] == 0.5


def test_a_checkpoint_of_schedule_objects_still_loads_where_they_are_allowed() -> None:
    # The format written before schedules were plain data: torch's own state_dict, which
    # holds the schedule objects; a trusted file loads with weights_only=False.
    plateau = ReduceOnPlateau(0.1, patience=0)
    params = _params()
    optimizer = optim.SGD(params, lr=plateau)
    _set_grads(params, 0)
    optimizer.step()
    plateau.observe(1.0)
    plateau.observe(2.0)
    buffer = io.BytesIO()
    torch.save(torch.optim.Optimizer.state_dict(optimizer), buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="ReduceOnPlateau"):
        torch.load(buffer, weights_only=True)
    buffer.seek(0)
    fresh = ReduceOnPlateau(0.1, patience=0)
    resumed = optim.SGD(_params(), lr=fresh)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    assert resumed.param_groups[0]["lr"] is fresh
    assert fresh(0) == plateau(0) == pytest.approx(0.01)


def test_a_schedule_of_ones_own_stays_an_object_in_the_state_dict() -> None:
    # Nothing to write it as: torch.save pickles it by reference, as before.
    schedule = linear_warmup(_inverse_square_root, num_steps=2)
    state_dict = optim.SGD(_params(), lr=schedule).state_dict()
    assert state_dict["param_groups"][0]["lr"] is schedule


def _inverse_square_root(step: object) -> object:
    return 0.1 / (1 + torch.as_tensor(step, dtype=torch.float64)).sqrt()


def test_a_learning_rate_reaching_zero_does_not_rebuild_the_compiled_step() -> None:
    # A warmup from 0 or a cyclic schedule touching 0: the rate stays a graph input.
    from torch._dynamo.utils import counters

    def run(implementation: str) -> torch.Tensor:
        param = torch.nn.Parameter(torch.ones(4))
        optimizer = optim.Adam([param], lr=0.01, implementation=implementation)
        for lr in (0.0, 0.01, 0.0, 0.02, 0.0):
            optimizer.param_groups[0]["lr"] = lr
            param.grad = torch.full_like(param, 0.5) + param.detach()
            optimizer.step()
        return param.detach()

    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    compiled = run("compiled")
    assert counters["stats"]["unique_graphs"] - before == 1
    torch.testing.assert_close(compiled, run("reference"), rtol=1e-6, atol=1e-7)


def test_a_compiled_group_whose_stepping_parameters_change_stays_right_and_says_so() -> None:
    # Which parameters have a gradient changes the traced list: each layout compiles once,
    # up to MAX_LAYOUTS; after that the group steps eagerly and reports "reference".
    from gradwise.optim._compiled import MAX_LAYOUTS

    subsets = [(0, 1, 2), (0,), (1,), (2,), (0, 1), (1, 2), (0, 1, 2)]

    def run(implementation: str) -> tuple[list[torch.Tensor], list[str | None]]:
        # Different sizes: the layout is the stepping parameters' shapes.
        params = [torch.nn.Parameter(torch.full((3 + i,), float(i + 1))) for i in range(3)]
        optimizer = optim.SGD(params, lr=0.1, momentum=0.9, implementation=implementation)
        paths = []
        for subset in subsets:
            for i, param in enumerate(params):
                param.grad = param.detach() * 0.5 if i in subset else None
            optimizer.step()
            paths.append(optimizer.last_implementations[0])
        return [p.detach() for p in params], paths

    torch._dynamo.reset()
    compiled, paths = run("compiled")
    reference, _ = run("reference")
    for ours, expected in zip(compiled, reference, strict=True):
        torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-7)
    layouts = len({tuple(s) for s in subsets[:MAX_LAYOUTS]})
    assert paths[:layouts] == ["compiled"] * layouts
    assert paths[layouts:-1] == ["reference"] * (len(subsets) - layouts - 1)
    assert paths[-1] == "compiled"  # the first layout again: compiled


# -- the rate of the next step -------------------------------------------------------------


def test_next_step_lr_reads_numbers_tensors_and_torch_schedulers() -> None:
    weight = torch.nn.Parameter(torch.ones(2))
    sgd = torch.optim.SGD([weight], lr=0.5)
    scheduler = torch.optim.lr_scheduler.StepLR(sgd, step_size=1, gamma=0.1)
    assert optim.next_step_lr(sgd) == 0.5
    weight.grad = torch.ones(2)
    sgd.step()
    scheduler.step()
    assert optim.next_step_lr(sgd) == pytest.approx(0.05)
    adam = torch.optim.Adam([weight], lr=torch.tensor(0.25))
    assert optim.next_step_lr(adam) == 0.25


def test_next_step_lr_evaluates_a_schedule_at_the_groups_own_step_count() -> None:
    # Two groups, one of them with no gradient at the second step: only the group that
    # stepped moved along its schedule; the rate read before a step is the one it used
    # (the update of SGD without momentum is -lr * grad).
    first, second = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    schedule = linear_decay(1.0, final=0.0, num_steps=4)
    opt = optim.SGD([{"params": [first]}, {"params": [second], "lr": schedule}], lr=schedule)
    for step, grads in enumerate([(1.0, 1.0), (1.0, None), (1.0, 1.0)]):
        used = [optim.next_step_lr(opt, i) for i in (0, 1)]
        before = [float(first.detach()), float(second.detach())]
        for p, g in zip((first, second), grads, strict=True):
            p.grad = None if g is None else torch.tensor([g])
        opt.step()
        assert float(first.detach()) - before[0] == pytest.approx(-used[0])
        if grads[1] is not None:
            assert float(second.detach()) - before[1] == pytest.approx(-used[1])
        assert used[0] == schedule(step)
    assert optim.next_step_lr(opt, 0) == schedule(3)
    assert optim.next_step_lr(opt, 1) == schedule(2)


def test_next_step_lr_survives_a_checkpoint_and_is_none_for_a_fixed_transform() -> None:
    weight = torch.nn.Parameter(torch.ones(2))
    schedule = linear_decay(1.0, final=0.0, num_steps=4)
    opt = optim.SGD([weight], lr=schedule)
    weight.grad = torch.ones(2)
    opt.step()
    opt.step()
    restored = optim.SGD([weight], lr=schedule)
    restored.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert optim.next_step_lr(restored) == optim.next_step_lr(opt) == schedule(2)
    for make in (optim.LARS, optim.OneBitSGD, optim.SWATS):  # lr inside other transforms
        other = make([weight], lr=schedule)
        other.step()
        other.step()
        other.step()
        assert optim.next_step_lr(other) == schedule(3), make.__name__
    fixed = optim.Optimizer([weight], optim.chain(optim.scale_by_learning_rate(0.1)))
    assert optim.next_step_lr(fixed) is None


def test_a_torch_checkpoint_from_before_a_flag_existed_loads_as_torch_loads_it() -> None:
    # QA: a torch Adam checkpoint written before `maximize` / `decoupled_weight_decay`
    # existed loads into torch.optim.Adam (its __setstate__ fills the flags), but the
    # gradwise Adam stepped into a bare KeyError: 'maximize'.
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    reference = torch.optim.Adam([weight], lr=0.1)
    weight.grad = torch.ones_like(weight)
    reference.step()
    state_dict = reference.state_dict()
    for group in state_dict["param_groups"]:
        del group["maximize"], group["decoupled_weight_decay"]
    opt = optim.Adam([weight], lr=0.1)
    opt.load_state_dict(state_dict)
    assert opt.param_groups[0]["maximize"] is False
    assert opt.param_groups[0]["decoupled_weight_decay"] is False
    opt.step()


def test_a_checkpoint_of_another_optimizer_is_refused_when_loaded() -> None:
    # QA: an Adam state_dict loaded into SGD failed only at the next step, with a bare
    # KeyError: 'momentum' from inside the adapter.
    weight = torch.nn.Parameter(torch.ones(3))
    adam = torch.optim.Adam([weight], lr=0.1)
    weight.grad = torch.ones_like(weight)
    adam.step()
    opt = optim.SGD([weight], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"param group 0 without \['dampening', 'momentum'\]"):
        opt.load_state_dict(adam.state_dict())
    assert opt.param_groups[0]["momentum"] == 0.9  # nothing was loaded
    opt.step()


# -- checkpoints of another model --------------------------------------------------------------


def _stepped(optimizer_class: type[optim.Optimizer], model: torch.nn.Module, **options: object):
    optimizer = optimizer_class(model.parameters(), **options)  # type: ignore[call-arg]
    model(torch.ones(2, model.in_features, dtype=torch.float64)).sum().backward()
    optimizer.step()
    return optimizer


@pytest.mark.parametrize(
    ("optimizer_class", "options", "key"),
    [
        (optim.SGD, {"lr": 0.1, "momentum": 0.9}, "momentum_buffer"),
        (optim.Adam, {"lr": 0.1}, "exp_avg"),
        (optim.RMSprop, {"lr": 0.1}, "square_avg"),
        (optim.LAMB, {"lr": 0.1}, "exp_avg"),
    ],
)
@pytest.mark.parametrize("implementation", ["auto", "reference"])
def test_a_checkpoint_of_another_model_is_refused_when_loaded_and_nothing_is_loaded(
    optimizer_class: type[optim.Optimizer],
    options: dict[str, object],
    key: str,
    implementation: str,
) -> None:
    # QA: a checkpoint of Linear(3, 1) loaded into an optimizer of Linear(1000, 1000), and
    # the fused SGD step then segfaulted (Adam read past the end of a (3,) state for a (4,)
    # parameter); the reference path broadcast a smaller momentum buffer silently.
    small = torch.nn.Linear(3, 1, dtype=torch.float64)
    checkpoint = _stepped(optimizer_class, small, **options).state_dict()
    checkpoint["param_groups"][0]["lr"] = 0.5
    big = torch.nn.Linear(5, 1, dtype=torch.float64)
    if implementation == "reference" and optimizer_class is not optim.LAMB:
        options = {**options, "implementation": "reference"}
    opt = _stepped(optimizer_class, big, **options)
    before = {name: value.clone() for name, value in opt.state[big.weight].items()}
    with pytest.raises(
        ValueError,
        match=rf"^The 'state_dict' parameter of {optimizer_class.__name__}\.load_state_dict must "
        r"hold state of the shape this optimizer keeps for each parameter\. "
        rf"Got '{key}' of shape \(1, 3\) for parameter 0 of param group 0, whose shape is "
        r"\(1, 5\), instead: the checkpoint was made for another model .* nothing was loaded\.$",
    ):
        opt.load_state_dict(checkpoint)
    assert opt.param_groups[0]["lr"] == 0.1
    assert opt.state[big.weight].keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(opt.state[big.weight][name], value)
    opt.step()  # still its own state, of the right shapes


def test_state_of_the_right_size_but_another_shape_is_refused_too() -> None:
    # The parameters of a model in another order: a step counter where a buffer was, a
    # (2, 3) buffer for a (3, 2) parameter (the same number of elements).
    params = [torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.ones(3))]
    opt = optim.Adam(params, lr=0.1)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    checkpoint = opt.state_dict()
    checkpoint["state"][1]["step"] = torch.ones(3)
    with pytest.raises(
        ValueError,
        match=r"Got 'step' of shape \(3,\) for parameter 1 of param group 0, whose shape is "
        r"\(3,\) \(its 'step' has shape \(\)\), instead",
    ):
        optim.Adam(params, lr=0.1).load_state_dict(checkpoint)
    transposed = [torch.nn.Parameter(torch.ones(3, 2)), torch.nn.Parameter(torch.ones(3))]
    with pytest.raises(ValueError, match=r"Got 'exp_avg' of shape \(2, 3\) for parameter 0"):
        optim.Adam(transposed, lr=0.1).load_state_dict(opt.state_dict())


@pytest.mark.parametrize(
    ("torch_class", "optimizer_class", "options"),
    [
        (torch.optim.SGD, optim.SGD, {"momentum": 0.9}),
        (torch.optim.SGD, optim.SGD, {}),
        (torch.optim.Adam, optim.Adam, {"amsgrad": True}),
        (torch.optim.AdamW, optim.AdamW, {}),
        (torch.optim.Adagrad, optim.Adagrad, {}),
        (torch.optim.RMSprop, optim.RMSprop, {"centered": True, "momentum": 0.5}),
        (torch.optim.Adadelta, optim.Adadelta, {}),
        (torch.optim.NAdam, optim.NAdam, {}),
        (torch.optim.RAdam, optim.RAdam, {}),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_torch_checkpoints_still_load_with_their_step_counters_and_complex_state(
    torch_class: type[torch.optim.Optimizer],
    optimizer_class: type[optim.Optimizer],
    options: dict[str, object],
    dtype: torch.dtype,
) -> None:
    # The shape check compares each state entry with the transform's own layout: step
    # counters and NAdam's mu_product are 0-d, a complex parameter's state is complex.
    weight = torch.nn.Parameter(torch.ones(2, 3, dtype=dtype))
    reference = torch_class([weight], lr=0.01, **options)
    weight.grad = torch.ones_like(weight)
    reference.step()
    opt = optimizer_class([weight], lr=0.01, **options)  # type: ignore[call-arg]
    opt.load_state_dict(reference.state_dict())
    opt.step()
    torch_class([weight], lr=0.01, **options).load_state_dict(opt.state_dict())


# -- torch.compile -----------------------------------------------------------------------------


def _train(optimizer_class: type[optim.Optimizer], options: dict[str, object], compiled: str):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2, dtype=torch.float64)
    opt = optimizer_class(model.parameters(), **options)  # type: ignore[call-arg]
    x = torch.randn(8, 3, dtype=torch.float64)
    y = torch.randn(8, 2, dtype=torch.float64)

    def loss() -> torch.Tensor:
        return ((model(x) - y) ** 2).mean()

    def training_step() -> None:
        loss().backward()
        opt.step()

    step = torch.compile(opt.step) if compiled == "step" else opt.step
    train = torch.compile(training_step) if compiled == "training step" else training_step
    for _ in range(3):
        opt.zero_grad()
        if compiled == "step":
            loss().backward()
            step()
        else:
            train()
    return [p.detach().clone() for p in model.parameters()], opt.last_implementations


@pytest.mark.compile
@pytest.mark.parametrize(
    ("optimizer_class", "options"),
    [(optim.SGD, {"lr": 0.1, "momentum": 0.9}), (optim.Adam, {"lr": 0.1})],
)
@pytest.mark.parametrize("compiled", ["step", "training step"])
def test_a_step_under_torch_compile_runs_as_it_does_eagerly(
    optimizer_class: type[optim.Optimizer], options: dict[str, object], compiled: str
) -> None:
    # QA: torch.compile(opt.step) raised InternalTorchDynamoError ('UserDefinedDictVariable'
    # object has no attribute 'items'): dynamo cannot trace the param groups, dict
    # subclasses. The step now runs eagerly inside the compiled region.
    torch._dynamo.reset()
    expected, paths = _train(optimizer_class, options, compiled="none")
    got, compiled_paths = _train(optimizer_class, options, compiled=compiled)
    assert compiled_paths == paths == ["fused"]
    for ours, eager in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, eager, rtol=0, atol=1e-15)


@pytest.mark.compile
def test_the_compiled_implementation_still_compiles_inside_a_compiled_training_step() -> None:
    from torch._dynamo.utils import counters

    options = {"lr": 0.1, "implementation": "compiled"}
    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    expected, _ = _train(optim.Adam, {**options, "implementation": "reference"}, "none")
    assert counters["stats"]["unique_graphs"] == before
    got, paths = _train(optim.Adam, options, compiled="training step")
    assert paths == ["compiled"]
    # The forward, and the optimizer's own compiled update (its step is not traced).
    assert counters["stats"]["unique_graphs"] - before >= 2
    for ours, eager in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, eager, rtol=1e-12, atol=1e-14)


# -- a learning rate checked where it is used -----------------------------------------------------


def _missed_by_the_probe(step: object) -> float:
    # A schedule that only takes ints is probed at a few hundred steps; 1001 is not one.
    return -1.0 if int(step) == 1001 else 0.001  # type: ignore[call-overload]


def _nan_at_1001(step: object) -> float:
    return math.nan if int(step) == 1001 else 0.001  # type: ignore[call-overload]


@pytest.mark.parametrize("schedule", [_missed_by_the_probe, _nan_at_1001])
@pytest.mark.parametrize("optimizer_class", [optim.SGD, optim.SWATS])
def test_a_schedule_that_goes_bad_where_it_was_not_probed_is_refused_at_that_step(
    schedule: object, optimizer_class: type[optim.Optimizer]
) -> None:
    # QA: lr = lambda k: -1.0 if int(k) == 5000 else 0.001 was accepted (the probe when it
    # was given missed step 5000) and step 5000 climbed the gradient.
    weight = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = optimizer_class([weight], lr=schedule)  # type: ignore[call-arg]
    for _ in range(1001):
        weight.grad = torch.ones_like(weight)
        opt.step()
    before = weight.detach().clone()
    name = "scale_by_learning_rate" if optimizer_class is optim.SGD else "SWATS"
    with pytest.raises(
        ValueError,
        match=rf"^The 'lr' parameter of {name} must be a schedule whose values are finite and "
        rf">= 0\. Got <function {schedule.__name__} .*> instead, which returns "  # type: ignore[attr-defined]
        r"(-1\.0|nan) at step 1001; fix the schedule",
    ):
        opt.step()
    assert torch.equal(weight.detach(), before)


def test_a_tensor_lr_that_requires_grad_is_taken_as_torch_takes_it() -> None:
    # QA: it was refused with "which is not a finite number >= 0", the wrong reason;
    # torch.optim steps with its value (under no_grad), so gradwise does too.
    weights = [torch.nn.Parameter(torch.ones(3, dtype=torch.float64)) for _ in range(2)]
    for optimizer, reference in (
        (
            optim.SGD([weights[0]], lr=torch.tensor(0.25, requires_grad=True), momentum=0.5),
            torch.optim.SGD([weights[1]], lr=torch.tensor(0.25, requires_grad=True), momentum=0.5),
        ),
        (
            optim.Adam([weights[0]], lr=torch.tensor(0.25, requires_grad=True)),
            torch.optim.Adam([weights[1]], lr=torch.tensor(0.25, requires_grad=True)),
        ),
    ):
        for _ in range(2):
            for weight in weights:
                weight.grad = weight.detach() * 2
            optimizer.step()
            reference.step()
        torch.testing.assert_close(weights[0], weights[1], rtol=1e-12, atol=1e-14)
    for lr in (torch.tensor(-0.1, requires_grad=True), torch.tensor(math.nan)):
        with pytest.raises(ValueError, match=r"which is not a finite number >= 0\.$"):
            optim.SGD(_params(), lr=lr)
    with pytest.raises(
        ValueError, match=r"which is a tensor of 2 elements; pass a float or a one-element tensor"
    ):
        optim.Adam(_params(), lr=torch.tensor([0.1, 0.2]))


# -- next_step_lr's index ------------------------------------------------------------------


@pytest.mark.parametrize("index", [1, 3, -1, 0.0, True])
def test_next_step_lr_refuses_an_index_of_no_param_group(index: object) -> None:
    # QA: index 3 of a one-group optimizer raised a bare IndexError; -1 read the last
    # group's lr but looked up the schedule's step count under "param_group_-1".
    opt = optim.SGD(_params(), lr=0.1)
    with pytest.raises(
        ValueError,
        match=r"^The 'index' parameter of next_step_lr must be the index of one of the "
        r"optimizer's param groups, an int in \[0, 0\]\. "
        rf"Got {re.escape(repr(index))} instead \(the optimizer has 1 param group\)\.$",
    ):
        optim.next_step_lr(opt, index)  # type: ignore[arg-type]
    assert optim.next_step_lr(opt, 0) == 0.1


# -- param group keys --------------------------------------------------------------------------


def test_a_misspelt_hyperparameter_in_a_param_group_is_refused() -> None:
    # QA: {"momentun": 0.9} was ignored (momentum stayed 0), while the same key given to
    # the optimizer is refused.
    first, second = _params()
    with pytest.raises(
        ValueError,
        match=r"^SGD got the key 'momentun' in param group 0, which is not one of its "
        r"hyperparameters and would be ignored\. Did you mean 'momentum'\? Its hyperparameters "
        r"are: \['dampening', 'lr', 'maximize', 'momentum', 'nesterov', 'weight_decay'\]\.$",
    ):
        optim.SGD([{"params": [first], "momentun": 0.9}], lr=0.1)
    opt = optim.SGD([first], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"key 'nesterof' in param group 1, .*'nesterov'\?"):
        opt.add_param_group({"params": [second], "nesterof": True})
    assert len(opt.param_groups) == 1
    # Another optimizer's hyperparameter, which this one would ignore.
    adam = optim.Adam([first], lr=0.1)
    with pytest.raises(ValueError, match=r"key 'momentum' in param group 1, .* ignored\. Its"):
        adam.add_param_group({"params": [second], "momentum": 0.9})
    # Other keys are metadata, as in torch.optim: timm's layer-wise lr_scale is read by
    # its schedulers.
    adam.add_param_group({"params": [second], "lr_scale": 0.5, "layer_id": 3})
    assert adam.param_groups[1]["lr_scale"] == 0.5
    with pytest.raises(
        ValueError,
        match=r"key 'weight_decay' in param group 0, .* A group can override only the "
        r"hyperparameters given to the Optimizer\. Its hyperparameters are: \['lr'\]\.$",
    ):
        optim.Optimizer(
            [{"params": [first], "weight_decay": 0.1}],
            lambda lr, weight_decay=0.0: _adam_factory(lr, weight_decay),
            lr=0.1,
        )


def test_keys_torch_puts_in_param_groups_and_metadata_pass() -> None:
    model = torch.nn.Linear(3, 2, dtype=torch.float64)
    opt = optim.SGD(
        [{"params": model.named_parameters(), "name": "all", "foreach": None}],
        lr=0.1,
        momentum=0.9,
    )
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    model(torch.ones(1, 3, dtype=torch.float64)).sum().backward()
    opt.step()
    scheduler.step()
    # A group copied from a scheduled optimizer carries the keys its scheduler added.
    copied = dict(opt.param_groups[0])
    assert {"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"} <= copied.keys()
    other = torch.nn.Linear(3, 2, dtype=torch.float64)
    copied["params"] = list(other.parameters())
    again = optim.SGD([copied], lr=0.1, momentum=0.9)
    again.load_state_dict(opt.state_dict())
    assert again.param_groups[0]["max_lr"] == 0.1
