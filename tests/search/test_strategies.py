"""Grid points, coarse-to-fine stage ranges and the coarse-to-fine sampler."""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.trial import TrialState, create_trial

from gradwise.search import CoarseToFineSampler, grid_points, parse_search, stage_ranges

SPACE = {
    "optimizer.lr": {"log_uniform": [1e-4, 1e-1]},
    "regularization.l2": {"uniform": [0.0, 0.01]},
    "model.depth": {"grid": [1, 2, 3]},
}


def _spec(space: dict = SPACE, **section: object):
    # Entry-point data takes any data.options (a built-in dataset's are checked).
    content = {"epochs": 8, "data": {"dataset": "my_data:load"}}
    return parse_search({**content, "search": {"space": space, **section}})


def test_grid_uses_cell_centres_in_log_space_and_fits_the_budget() -> None:
    spec = _spec()
    points = grid_points(spec, budget=27, seed=0)
    # 3 depths x k^2 <= 27 -> k = 3 per numeric range.
    assert len(points) == 27
    lrs = sorted({point["optimizer.lr"] for point in points})
    expected = np.exp(np.log(1e-4) + (np.arange(3) + 0.5) * (np.log(1e-1) - np.log(1e-4)) / 3)
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    l2s = sorted({point["regularization.l2"] for point in points})
    np.testing.assert_allclose(l2s, [0.01 / 6, 0.01 / 2, 0.05 / 6], rtol=1e-12)
    assert {point["model.depth"] for point in points} == {1, 2, 3}
    assert len({tuple(sorted(point.items())) for point in points}) == 27


def test_grid_order_is_shuffled_by_seed_and_smaller_budgets_shrink_it() -> None:
    spec = _spec()
    assert grid_points(spec, 27, seed=0) != grid_points(spec, 27, seed=1)
    assert sorted(map(repr, grid_points(spec, 27, 0))) == sorted(
        map(repr, grid_points(spec, 27, 1))
    )
    # 3 depths x (3 x 2) = 18 <= 20 < 27; the first declared range gets the extra point.
    points = grid_points(spec, 20, seed=0)
    assert len(points) == 18
    assert len({p["optimizer.lr"] for p in points}) == 3
    assert len({p["regularization.l2"] for p in points}) == 2
    # One point per range does not fit 2 trials: a subset of the 3 depths.
    assert len(grid_points(spec, 2, seed=0)) == 2


def test_sixteen_trials_over_three_ranges_make_a_4_by_2_by_2_grid() -> None:
    spec = _spec(
        {
            "optimizer.lr": {"log_uniform": [1e-4, 1]},
            "model.width": {"int": [8, 64]},
            "regularization.l2": {"uniform": [0, 1e-3]},
        }
    )
    points = grid_points(spec, 16, seed=0)
    assert len(points) == 16
    assert [
        len({p[path] for p in points})
        for path in ("optimizer.lr", "model.width", "regularization.l2")
    ] == [4, 2, 2]


def test_grid_of_an_int_range_merges_duplicate_points() -> None:
    spec = _spec({"model.width": {"int": [1, 3]}})
    points = grid_points(spec, 10, seed=0)
    assert sorted(point["model.width"] for point in points) == [1, 2, 3]


def test_a_range_with_few_distinct_values_leaves_the_budget_to_the_others() -> None:
    # QA: 2 depths x 4 lrs = 8 of 16 trials, the int range given 4 points for 2 integers.
    spec = _spec({"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}, "model.depth": {"int": [1, 2]}})
    points = grid_points(spec, 16, seed=0)
    assert len(points) == 16
    assert sorted({p["model.depth"] for p in points}) == [1, 2]
    assert len({p["optimizer.lr"] for p in points}) == 8
    fixed = _spec({"regularization.l2": {"uniform": [0.1, 0.1]}, "model.width": {"int": [8, 64]}})
    points = grid_points(fixed, 4, seed=0)
    assert [p["regularization.l2"] for p in points] == [0.1] * 4
    assert len({p["model.width"] for p in points}) == 4


def test_int_grid_points_round_half_up_so_two_cell_centres_stay_distinct() -> None:
    # Two cells of [1, 3] have centres 1.5 and 2.5, which round-half-to-even makes 2 and 2.
    spec = _spec({"model.width": {"int": [1, 3]}})
    assert sorted(p["model.width"] for p in grid_points(spec, 2, seed=0)) == [2, 3]


def _trial(
    number: int, stage: int, value: float | None, params: dict, spec, state=TrialState.COMPLETE
):
    return _created(state, value, params, spec, user_attrs={"stage": stage})


def _created(state, value, params, spec, **attrs):
    """A frozen trial of ``spec``'s distributions for ``params``, with ``attrs``."""
    distributions = spec.distributions()
    return create_trial(
        state=state,
        value=value,
        params=params,
        distributions={path: distributions[path] for path in params},
        **attrs,
    )


def _numbered(trials):
    for number, trial in enumerate(trials):
        trial.number = number
    return trials


def test_stage_ranges_tighten_around_the_best_trials_with_a_log_margin() -> None:
    spec = _spec(stages=[{"epochs": 1, "trials": 5}, {"epochs": 4, "trials": 3}], margin=0.1)
    rows = [  # lr, l2, depth, value
        (1e-3, 0.002, 1, 0.5),
        (3e-3, 0.004, 2, 0.4),
        (2e-2, 0.006, 2, 0.45),
        (1e-4, 0.009, 3, 2.0),
        (5e-2, 0.001, 3, 1.5),
    ]
    trials = _numbered(
        [
            _trial(
                i,
                0,
                value,
                {"optimizer.lr": lr, "regularization.l2": l2, "model.depth": depth},
                spec,
            )
            for i, (lr, l2, depth, value) in enumerate(rows)
        ]
    )
    ranges = stage_ranges(spec, trials)
    assert [r.index for r in ranges] == [0, 1]
    assert ranges[1].kept == (1, 2, 0)  # best three by value, best first
    by_path = {p.path: p for p in ranges[1].parameters}
    decades = math.log(1e-1) - math.log(1e-4)
    assert math.isclose(by_path["optimizer.lr"].low, math.exp(math.log(1e-3) - 0.1 * decades))
    assert math.isclose(by_path["optimizer.lr"].high, math.exp(math.log(2e-2) + 0.1 * decades))
    assert math.isclose(by_path["regularization.l2"].low, 0.002 - 0.001)
    assert math.isclose(by_path["regularization.l2"].high, 0.006 + 0.001)
    assert by_path["model.depth"].choices == (1, 2)


def test_stage_ranges_are_clipped_to_the_declared_bounds() -> None:
    spec = _spec(
        {"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}},
        stages=[{"epochs": 1, "trials": 3}, {"epochs": 2, "trials": 3}],
        margin=0.5,
    )
    trials = _numbered(
        [
            _trial(i, 0, v, {"optimizer.lr": lr}, spec)
            for i, (lr, v) in enumerate([(1e-4, 0.1), (1.5e-4, 0.2), (0.1, 0.3)])
        ]
    )
    (parameter,) = stage_ranges(spec, trials)[1].parameters
    assert (parameter.low, parameter.high) == (1e-4, 1e-1)


def test_next_stage_waits_for_every_trial_of_the_previous_one() -> None:
    spec = _spec(
        {"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}},
        stages=[{"epochs": 1, "trials": 3}, {"epochs": 2, "trials": 3}],
    )
    trials = _numbered(
        [
            _trial(0, 0, 0.3, {"optimizer.lr": 1e-3}, spec),
            _trial(1, 0, 0.2, {"optimizer.lr": 2e-3}, spec),
            _trial(2, 0, None, {"optimizer.lr": 5e-2}, spec, state=TrialState.RUNNING),
        ]
    )
    assert len(stage_ranges(spec, trials)) == 1


def test_coarse_to_fine_sampler_draws_the_second_stage_inside_its_ranges() -> None:
    spec = _spec(
        {"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}, "model.depth": {"grid": [1, 2, 3]}},
        stages=[{"epochs": 1, "trials": 12, "keep": 2}, {"epochs": 2, "trials": 20}],
    )
    study = optuna.create_study(sampler=CoarseToFineSampler(spec, seed=0))

    def loss(lr: float, depth: int) -> float:  # best near lr = 3e-3, depth 2
        return (math.log10(lr) - math.log10(3e-3)) ** 2 + (depth - 2) ** 2

    def objective(trial: optuna.Trial) -> float:
        stage = 0 if trial.number < 12 else 1
        trial.set_user_attr("stage", stage)
        lr = trial.suggest_float("optimizer.lr", 1e-4, 1e-1, log=True)
        depth = trial.suggest_categorical("model.depth", [1, 2, 3])
        return loss(lr, depth)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=32)
    trials = study.get_trials()
    ranges = stage_ranges(spec, trials)[1]
    by_path = {p.path: p for p in ranges.parameters}
    second = trials[12:]
    lrs = [t.params["optimizer.lr"] for t in second]
    assert all(by_path["optimizer.lr"].low <= lr <= by_path["optimizer.lr"].high for lr in lrs)
    assert {t.params["model.depth"] for t in second} <= set(by_path["model.depth"].choices)
    first_best = min(t.value for t in trials[:12])
    assert min(t.value for t in second) <= first_best
    # The second stage samples a narrower range than the declared three decades.
    assert math.log10(by_path["optimizer.lr"].high / by_path["optimizer.lr"].low) < 3


def test_a_categorical_keeps_only_the_values_the_kept_trials_used_booleans_apart() -> None:
    # QA: `True in [1]` is true in Python, so a stage kept True when its best trial used 1.
    spec = _spec(
        {"data.options.flag": {"categorical": [True, 1, 0.0, False, "x"]}},
        stages=[{"epochs": 1, "trials": 3, "keep": 2}, {"epochs": 2, "trials": 3}],
    )
    trials = _numbered(
        [
            _trial(i, 0, value, {"data.options.flag": flag}, spec)
            for i, (flag, value) in enumerate([(1, 0.1), (0.0, 0.2), (True, 0.5)])
        ]
    )
    (parameter,) = stage_ranges(spec, trials)[1].parameters
    assert parameter.choices == (1, 0.0)


def test_a_log_int_range_tightens_to_the_kept_values_without_rounding_noise() -> None:
    # QA: exp(log(14)) is 13.999999999999996, so with margin 0 the next stage's range of a
    # log int became [13, 14] around a kept 14: one integer wider than the kept values.
    spec = _spec(
        {"model.width": {"int": [4, 32], "log": True}, "optimizer.lr": {"log_uniform": [1e-4, 1]}},
        stages=[{"epochs": 1, "trials": 2, "keep": 1}, {"epochs": 2, "trials": 3}],
        margin=0.0,
    )
    trials = _numbered(
        [
            _trial(i, 0, value, {"model.width": width, "optimizer.lr": lr}, spec)
            for i, (width, lr, value) in enumerate([(14, 3e-3, 0.1), (28, 0.5, 0.2)])
        ]
    )
    width, lr = stage_ranges(spec, trials)[1].parameters
    assert (width.low, width.high) == (14, 14)
    assert lr.low <= 3e-3 <= lr.high  # exp(log(0.003)) < 0.003: the kept value stays in


def _bare(state, value, params, spec, system_attrs=None):
    """A trial as stored before its worker recorded its stage (just asked, or killed then)."""
    return _created(state, value, params, spec, system_attrs=system_attrs or {})


def test_a_trial_asked_but_not_yet_staged_holds_its_stage_open() -> None:
    # QA: a worker records a trial's stage just after Optuna asks for it, outside the ask
    # lock; a worker asking the next slot meanwhile saw the stage without that trial,
    # called it finished and tightened the next stage's ranges without it.
    spec = _spec(
        {"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}},
        stages=[{"epochs": 1, "trials": 3}, {"epochs": 2, "trials": 3}],
    )
    staged = [_trial(i, 0, 0.1 * (i + 1), {"optimizer.lr": 1e-3 * (i + 1)}, spec) for i in (0, 1)]
    asked = _bare(TrialState.RUNNING, None, {}, spec)
    assert len(stage_ranges(spec, _numbered([*staged, asked]))) == 1
    done = _bare(TrialState.COMPLETE, 0.05, {"optimizer.lr": 5e-2}, spec)
    ranges = stage_ranges(spec, _numbered([*staged, done]))
    assert ranges[1].kept == (2, 0, 1)  # the unstaged trial counts in its slot's stage


def test_the_retry_of_a_trial_stopped_before_its_stage_was_recorded_stays_in_that_stage() -> None:
    # QA: such a retry took the slot of its own (later) number, so stage 1: stage 0 then
    # ended without it, and its worker trained it with stage 1's epochs.
    spec = _spec(
        {"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}},
        stages=[{"epochs": 1, "trials": 3}, {"epochs": 2, "trials": 3}],
    )
    first = [
        _trial(0, 0, 0.3, {"optimizer.lr": 1e-3}, spec),
        _trial(1, 0, 0.2, {"optimizer.lr": 2e-3}, spec),
        _bare(TrialState.FAIL, None, {}, spec),  # stopped before its stage was recorded
        _trial(3, 1, None, {}, spec, state=TrialState.RUNNING),  # waits for stage 0
    ]
    retry = {"failed_trial": 2, "retry_history": [2]}  # what Optuna's retry callback sets
    waiting = _bare(TrialState.WAITING, None, {}, spec, retry)
    assert len(stage_ranges(spec, _numbered([*first, waiting]))) == 1
    done = _bare(TrialState.COMPLETE, 0.1, {"optimizer.lr": 5e-3}, spec, retry)
    ranges = stage_ranges(spec, _numbered([*first, done]))
    assert len(ranges) == 2
    assert ranges[1].kept == (4, 1, 0)
