"""ScheduleLR: drives torch.optim optimizers, matches torch's schedulers, resumes exactly."""

import io

import pytest
import torch
from torch.optim import lr_scheduler

from gradwise.optim import SGD
from gradwise.schedules import (
    ReduceOnPlateau,
    ScheduleLR,
    TwoSchedulesError,
    constant,
    cosine_decay,
    cosine_warm_restarts,
    join,
    linear_warmup,
    multistep_decay,
    stateful_parts,
    step_decay,
)

TARGET = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)


def make_run(schedule, optimizer_class=torch.optim.SGD, **optimizer_options):
    torch.manual_seed(0)
    parameter = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    optimizer = optimizer_class([parameter], lr=123.0, **optimizer_options)
    return parameter, optimizer, ScheduleLR(optimizer, schedule)


def train(parameter, optimizer, scheduler, num_steps, plateau=None):
    """Minimize a quadratic; return the lr each step used."""
    lrs = []
    for _ in range(num_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        loss = ((parameter - TARGET) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if plateau is not None:
            plateau.observe(round(loss.item(), 1))  # rounded, so that it plateaus
        scheduler.step()
    return lrs


@pytest.mark.parametrize(
    ("optimizer_class", "options"),
    [
        (torch.optim.SGD, {"momentum": 0.9}),
        (torch.optim.Adam, {}),
        (torch.optim.AdamW, {}),
        (torch.optim.RMSprop, {}),
        (torch.optim.Adagrad, {}),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_sets_each_step_lr_from_the_schedule(optimizer_class, options):
    schedule = linear_warmup(cosine_decay(0.1, 40, final=0.001), 10)
    parameter, optimizer, scheduler = make_run(schedule, optimizer_class, **options)
    lrs = train(parameter, optimizer, scheduler, 60)
    assert lrs == [schedule(k) for k in range(60)]
    assert scheduler.get_last_lr() == [schedule(60)]
    assert scheduler.last_epoch == 60


def test_training_equals_torchs_own_scheduler():
    parameter, optimizer, scheduler = make_run(
        cosine_warm_restarts(0.05, 7, period_multiplier=2, final=0.001), momentum=0.9
    )
    lrs = train(parameter, optimizer, scheduler, 80)

    torch.manual_seed(0)
    reference = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    reference_optimizer = torch.optim.SGD([reference], lr=0.05, momentum=0.9)
    torch_scheduler = lr_scheduler.CosineAnnealingWarmRestarts(
        reference_optimizer, T_0=7, T_mult=2, eta_min=0.001
    )
    reference_lrs = train(reference, reference_optimizer, torch_scheduler, 80)
    torch.testing.assert_close(lrs, reference_lrs, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(parameter, reference, rtol=1e-12, atol=1e-15)


def test_one_schedule_per_param_group():
    first, second = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([{"params": [first]}, {"params": [second]}], lr=1.0)
    schedules = [step_decay(1.0, 2, gamma=0.5), constant(0.25)]
    scheduler = ScheduleLR(optimizer, schedules)
    for step in range(5):
        assert [group["lr"] for group in optimizer.param_groups] == [s(step) for s in schedules]
        optimizer.step()
        scheduler.step()


def test_tensor_learning_rates_stay_tensors():
    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([parameter], lr=torch.tensor(1.0), foreach=False)
    learning_rate = optimizer.param_groups[0]["lr"]
    scheduler = ScheduleLR(optimizer, step_decay(1.0, 1, gamma=0.5))
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] is learning_rate
    assert float(learning_rate) == 0.5


def checkpoint(parameter, optimizer, scheduler):
    buffer = io.BytesIO()
    torch.save(
        {
            "parameter": parameter.detach().clone(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        },
        buffer,
    )
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def resume(saved, schedule, order):
    """Rebuild a run from a checkpoint, loading the pieces in ``order``."""
    parameter = torch.nn.Parameter(saved["parameter"].clone())
    optimizer = torch.optim.SGD([parameter], lr=123.0, momentum=0.9)
    if order == "optimizer first, scheduler built after it":
        optimizer.load_state_dict(saved["optimizer"])
        scheduler = ScheduleLR(optimizer, schedule)  # overwrites the loaded lr ...
        scheduler.load_state_dict(saved["scheduler"])  # ... and this sets it back
    else:
        scheduler = ScheduleLR(optimizer, schedule)
        if order == "scheduler first":
            scheduler.load_state_dict(saved["scheduler"])
            optimizer.load_state_dict(saved["optimizer"])
        else:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
    return parameter, optimizer, scheduler


ORDERS = ["optimizer first", "scheduler first", "optimizer first, scheduler built after it"]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(
    "make_schedule",
    [
        lambda: linear_warmup(cosine_decay(0.05, 40, final=0.001), 10),
        lambda: multistep_decay(0.05, [20, 26, 50], gamma=0.5),
    ],
    ids=["warmup-cosine", "multistep"],
)
def test_resume_continues_exactly(make_schedule, order):
    uninterrupted, optimizer, scheduler = make_run(make_schedule(), momentum=0.9)
    uninterrupted_lrs = train(uninterrupted, optimizer, scheduler, 60)

    parameter, optimizer, scheduler = make_run(make_schedule(), momentum=0.9)
    first_lrs = train(parameter, optimizer, scheduler, 25)
    saved = checkpoint(parameter, optimizer, scheduler)
    parameter, optimizer, resumed = resume(saved, make_schedule(), order)
    assert resumed.state_dict() == scheduler.state_dict()
    second_lrs = train(parameter, optimizer, resumed, 35)

    assert first_lrs + second_lrs == uninterrupted_lrs
    assert torch.equal(parameter, uninterrupted)


@pytest.mark.parametrize("order", ORDERS)
def test_resume_with_reduce_on_plateau_carries_its_state(order):
    def make_plateau():
        return ReduceOnPlateau(0.05, factor=0.5, patience=2, cooldown=1)

    plateau = make_plateau()
    parameter, optimizer, scheduler = make_run(plateau, momentum=0.9)
    uninterrupted_lrs = train(parameter, optimizer, scheduler, 60, plateau)
    assert len(set(uninterrupted_lrs)) > 2  # the plateau schedule cut the lr during the run

    plateau = make_plateau()
    parameter, optimizer, scheduler = make_run(plateau, momentum=0.9)
    first_lrs = train(parameter, optimizer, scheduler, 30, plateau)
    saved = checkpoint(parameter, optimizer, scheduler)
    assert saved["scheduler"]["schedule_states"] == {0: plateau.state_dict()}
    resumed_plateau = make_plateau()
    parameter, optimizer, scheduler = resume(saved, resumed_plateau, order)
    assert resumed_plateau.state_dict() == plateau.state_dict()
    second_lrs = train(parameter, optimizer, scheduler, 30, resumed_plateau)
    assert first_lrs + second_lrs == uninterrupted_lrs


@pytest.mark.parametrize("order", ORDERS)
def test_a_plateau_under_a_warmup_resumes_with_its_state(order):
    # Nested in the warmup's join, the plateau is not the group's schedule itself: its
    # state goes under nested_schedule_states (it was not saved at all before).
    def make():
        plateau = ReduceOnPlateau(0.05, factor=0.5, patience=2, cooldown=1)
        return plateau, linear_warmup(plateau, num_steps=5)

    _assert_the_plateau_resumes(make, order, steps=60)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(
    "combine",
    [
        lambda plateau: join([constant(0.01), plateau], [5]),
        lambda plateau: join([linear_warmup(constant(0.05), 3), plateau, constant(0.001)], [5, 50]),
    ],
    ids=["join", "join-of-a-warmup"],
)
def test_a_plateau_inside_a_join_resumes_with_its_state(combine, order):
    # stateful_parts looked for state in a combinator's direct fields only, not in join's
    # tuple of schedules: the plateau's state was not saved, and a resumed run went on
    # from its initial value (and a run config's plateau joined with SWA's rate was
    # never observed).
    def make():
        plateau = ReduceOnPlateau(0.05, factor=0.5, patience=2, cooldown=1)
        return plateau, combine(plateau)

    plateau, schedule = make()
    assert stateful_parts(schedule) == [plateau]
    _assert_the_plateau_resumes(make, order, steps=45)


def _assert_the_plateau_resumes(make, order, *, steps):
    """A run of ``steps`` with the plateau ``make()`` builds, checkpointed after 30 and
    resumed, gives the uninterrupted run's rates, the plateau's state saved with them."""
    plateau, schedule = make()
    parameter, optimizer, scheduler = make_run(schedule, momentum=0.9)
    uninterrupted_lrs = train(parameter, optimizer, scheduler, steps, plateau)
    assert len(set(uninterrupted_lrs[5:])) > 2  # cut during the run

    plateau, schedule = make()
    parameter, optimizer, scheduler = make_run(schedule, momentum=0.9)
    first_lrs = train(parameter, optimizer, scheduler, 30, plateau)
    saved = checkpoint(parameter, optimizer, scheduler)
    assert saved["scheduler"]["nested_schedule_states"] == {0: [plateau.state_dict()]}
    resumed_plateau, resumed_schedule = make()
    parameter, optimizer, scheduler = resume(saved, resumed_schedule, order)
    assert resumed_plateau.state_dict() == plateau.state_dict()
    second_lrs = train(parameter, optimizer, scheduler, steps - 30, resumed_plateau)
    assert first_lrs + second_lrs == uninterrupted_lrs


def test_refresh_applies_a_plateau_cut_before_the_next_step():
    plateau = ReduceOnPlateau(0.1, factor=0.5, patience=0)
    _, optimizer, scheduler = make_run(plateau)
    plateau.observe(1.0)
    plateau.observe(1.0)  # no improvement: cut to 0.05
    assert optimizer.param_groups[0]["lr"] == 0.1
    scheduler.refresh()
    assert optimizer.param_groups[0]["lr"] == 0.05
    assert scheduler.get_last_lr() == [0.05]


def test_state_dict_leaves_the_schedules_out():
    _, _, scheduler = make_run(cosine_decay(0.1, 10))
    state = scheduler.state_dict()
    assert "schedules" not in state
    assert state["schedule_states"] == {}
    assert state["last_epoch"] == 0


def test_rejects_a_schedule_list_of_the_wrong_length():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(
        ValueError,
        match=r"The 'schedule' parameter of ScheduleLR must be a schedule or a list of one "
        r"schedule per param group \(1 here\)\. Got \[constant\(value=1\.0\), constant\(",
    ):
        ScheduleLR(optimizer, [constant(1.0), constant(2.0)])


def test_rejects_a_schedule_with_negative_values():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(
        ValueError,
        match=r"The 'schedule' parameter of ScheduleLR must be a schedule whose values are "
        r"finite and >= 0\. Got .* instead, which returns -0\.5 at step 3\.",
    ):
        ScheduleLR(optimizer, lambda step: 1.0 - 0.5 * step)


def test_rejects_what_is_not_an_optimizer():
    with pytest.raises(TypeError, match="list is not an Optimizer"):
        ScheduleLR([], constant(1.0))


def test_loading_a_plateau_state_into_a_schedule_without_state_is_a_clear_error():
    # It was AttributeError: 'cosine_decay' object has no attribute 'load_state_dict'.
    _, _, scheduler = make_run(ReduceOnPlateau(0.1))
    _, _, other = make_run(cosine_decay(0.1, 10))
    with pytest.raises(
        ValueError,
        match=r"^The saved state holds the state of param group 0's schedule, but this "
        r"scheduler's schedule for it, cosine_decay\(.*\), has none; build the scheduler as "
        r"the run that saved it did\.$",
    ):
        other.load_state_dict(scheduler.state_dict())

    first, second = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    two_groups = torch.optim.SGD([{"params": [first]}, {"params": [second]}], lr=1.0)
    saved = ScheduleLR(two_groups, [constant(0.1), ReduceOnPlateau(0.1)]).state_dict()
    with pytest.raises(ValueError, match=r"^The saved state holds the state of param group 1's"):
        other.load_state_dict(saved)


def test_a_param_group_added_later_follows_the_one_schedule():
    # Progressive unfreezing adds a param group mid-run; step() raised "zip() argument 2
    # is shorter than argument 1".
    schedule = step_decay(1.0, 2, gamma=0.5)
    first, second = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([first], lr=1.0)
    scheduler = ScheduleLR(optimizer, schedule)
    optimizer.step()
    scheduler.step()
    optimizer.add_param_group({"params": [second]})
    optimizer.step()
    scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == [schedule(2), schedule(2)]
    assert scheduler.get_last_lr() == [0.5, 0.5]


def test_a_scheduler_whose_param_group_was_added_later_saves_and_loads_its_state():
    # Found by review: the schedules for added groups were made lazily at the next step,
    # so a resumed run (scheduler made, group added, state loaded) refused its own state.
    def run():
        first, second = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([first], lr=1.0)
        plateau = ReduceOnPlateau(0.1, factor=0.5, patience=0)
        scheduler = ScheduleLR(optimizer, plateau)
        optimizer.add_param_group({"params": [second]})
        return optimizer, plateau, scheduler

    optimizer, plateau, scheduler = run()
    for loss in (1.0, 2.0, 3.0):
        optimizer.step()
        plateau.observe(loss)
        scheduler.step()
    saved = scheduler.state_dict()
    assert sorted(saved["schedule_states"]) == [0, 1]
    resumed_optimizer, resumed_plateau, resumed = run()
    resumed.load_state_dict(saved)
    assert resumed_plateau.state_dict() == plateau.state_dict()
    assert [g["lr"] for g in resumed_optimizer.param_groups] == [0.025, 0.025]


def test_a_param_group_added_later_without_a_schedule_is_a_clear_error():
    first, second = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([first], lr=1.0)
    scheduler = ScheduleLR(optimizer, [constant(0.5)])
    optimizer.add_param_group({"params": [second]})
    optimizer.step()
    with pytest.raises(
        ValueError,
        match=r"^The optimizer has 2 param groups, but ScheduleLR was given a list of 1 "
        r"schedule\(s\), one per param group when it was made; give one schedule for every "
        r"group, or make a new ScheduleLR after add_param_group\.$",
    ):
        scheduler.step()


def test_a_param_group_whose_lr_is_already_a_schedule_is_refused() -> None:
    # QA: SGD(lr=cosine_decay(...)) under ScheduleLR had its schedule replaced by
    # ScheduleLR's numbers from the first step on, silently.
    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = SGD([parameter], lr=cosine_decay(0.1, num_steps=10))
    with pytest.raises(TwoSchedulesError, match="Got param group 0 with lr=cosine_decay") as info:
        ScheduleLR(optimizer, constant(0.5))
    # The same error as a torch scheduler's over such a group: both a TypeError and the
    # ValueError ScheduleLR raised first.
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, ValueError)
    assert optimizer.param_groups[0]["lr"] == cosine_decay(0.1, num_steps=10)
