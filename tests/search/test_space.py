"""The search section: distributions, paths and values are checked before any trial runs."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from gradwise.config import ConfigError, parse_config
from gradwise.search import Parameter, Stage, grid_points, parse_search, stage_ranges


def _content(space: dict, **section: object) -> dict:
    return {"epochs": 8, "search": {"space": space, **section}}


def test_each_distribution_becomes_the_matching_optuna_distribution() -> None:
    spec = parse_search(
        _content(
            {
                "optimizer.lr": {"log_uniform": [1e-4, 1e-1]},
                "regularization.l2": {"uniform": [0, 0.01]},
                "model.width": {"int": [16, 128], "log": True},
                "data.batch_size": {"categorical": [32, 64, 128]},
                "model.depth": {"grid": [1, 2, 3]},
                "model.activation": ["relu", "tanh"],
            }
        )
    )
    distributions = spec.distributions()
    assert distributions["optimizer.lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert distributions["regularization.l2"] == FloatDistribution(0.0, 0.01)
    assert distributions["model.width"] == IntDistribution(16, 128, log=True)
    assert distributions["data.batch_size"] == CategoricalDistribution([32, 64, 128])
    assert distributions["model.depth"] == CategoricalDistribution([1, 2, 3])
    assert distributions["model.activation"] == CategoricalDistribution(["relu", "tanh"])
    assert [p.path for p in spec.parameters] == list(distributions)


def test_metric_direction_and_defaults() -> None:
    spec = parse_search(_content({"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}}))
    assert (spec.metric, spec.direction, spec.pruner) == ("val_loss", "minimize", "median")
    accuracy = parse_search(
        _content({"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}}, metric="val_accuracy")
    )
    assert accuracy.direction == "maximize"
    # Goodfellow's recipe: two stages of 25, the first on a quarter of the epochs, top 3 kept.
    assert spec.stages == (Stage(2, 25, 3), Stage(8, 25, 3))
    split = parse_search(_content({"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}}), stages_trials=9)
    assert [stage.trials for stage in split.stages] == [5, 4]


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"optimizer.lr": {"log_uniform": [0, 0.1]}}, "log-scale distribution needs low > 0"),
        ({"optimizer.lr": {"log_uniform": [-1e-3, 0.1]}}, "needs low > 0"),
        ({"model.width": {"int": [8, 256], "log": True}, "x": {}}, "must name one distribution"),
        (
            {"optimizer.lr": {"loguniform": [1e-4, 0.1]}},
            "must name one distribution of log_uniform",
        ),
        ({"optimizer.lr": {"uniform": [0.1, 0.01]}}, "low <= high"),
        ({"optimizer.lr": {"uniform": [0.1]}}, "needs [low, high]"),
        ({"model.width": {"int": [8.5, 16]}}, "two integers"),
        ({"data.batch_size": {"categorical": []}}, "non-empty list"),
        ({"data.batch_size": {"grid": [32, 32]}}, "values must differ; 32 is listed twice"),
        ({"data.batch_size": {"grid": [32, 64, 32.0]}}, "32 and 32.0 are the same number"),
        ({"model.dropout": {"categorical": [0, 0.5, -0.0]}}, "0 and -0.0 are the same number"),
        ({"model.widht": {"int": [8, 16]}}, "did you mean 'width'"),
        ({"optimiser.lr": {"uniform": [0.1, 0.2]}}, "did you mean 'optimizer'"),
        ({"optimizer.lrr": {"uniform": [0.1, 0.2]}}, "unknown key 'lrr' in 'train.optimizer'"),
        ({"model.dropout": {"uniform": [0.0, 1.5]}}, "= 1.5 does not make a valid run config"),
        ({"optimizer.lr": {"uniform": [-1.0, 0.1]}}, "= -1.0 does not make a valid run config"),
        ({"runs_dir": {"categorical": ["a", "b"]}}, "set by the search itself"),
        ({"optimizer.lr": 0.1}, "must be a distribution"),
        (
            {"optimizer.lr": {"log_uniform": [0, 0.1], "log": False}},
            "log_uniform is log scale; use uniform",
        ),
        (
            {"optimizer.lr": {"uniform": [1e-4, 0.1], "log": True}},
            "uniform is linear; use log_uniform",
        ),
        ({"model.width": {"int": [8, 64], "log": "false"}}, "log must be true or false"),
        ({"data.batch_size": {"grid": [32, 64], "log": True}}, "log applies to int ranges only"),
    ],
)
def test_bad_spaces_are_rejected_with_the_path_and_the_fix(space: dict, message: str) -> None:
    with pytest.raises(ConfigError, match="train.search") as raised:
        parse_search(_content(space))
    assert message in str(raised.value)


def test_values_equal_as_numbers_are_one_choice_but_booleans_are_not_numbers() -> None:
    # QA: grid [1, 1.0] was accepted as two values and ran the same trial twice.
    # An entry point's data takes any option (a built-in dataset's are checked).
    entry_point = {"dataset": "my_data:load"}
    with pytest.raises(ConfigError, match=r"1 and 1\.0 are the same number"):
        parse_search(_content({"data.options.flag": {"grid": [1, 1.0]}}) | {"data": entry_point})
    values = [True, 1, False, 0, "1", None]
    spec = parse_search(_content({"data.options.flag": {"grid": values}}) | {"data": entry_point})
    assert spec.parameters[0].choices == (True, 1, False, 0, "1", None)


@pytest.mark.parametrize(
    ("base", "space", "message"),
    [
        # QA: each of these made a study whose every trial failed with a config error.
        (
            {},
            {"model.options.foo": {"uniform": [0.1, 1]}},
            "'train.search.space.model.options.foo' = 0.1 does not make a valid run config: "
            "in 'train.model': build_model got an unknown option 'foo' for 'cnn1d'. Valid "
            "options: depth, width, kernel_size,",
        ),
        (
            {},
            {"model.name": ["mlp", "mpl"]},
            "'train.search.space.model.name' = 'mpl' does not make a valid run config: "
            "unknown model 'mpl'",
        ),
        (
            {"schedule": {"name": "cosine"}},
            {"schedule.options.foo": {"uniform": [0.1, 1]}},
            "'train.search.space.schedule.options.foo' = 0.1 does not make a valid run "
            "config: unknown key 'foo' in 'train.schedule.options'",
        ),
        (
            {"init": {"weights": "he_normal"}},
            {"init.options.foo": {"uniform": [0.1, 1]}},
            "'train.search.space.init.options.foo' = 0.1 does not make a valid run config: "
            "unknown key 'foo' in 'train.init.options'",
        ),
        (
            {"data": {"dataset": "spirals"}},
            {"data.options.foo": {"uniform": [0.1, 1]}},
            "'train.search.space.data.options.foo' = 0.1 does not make a valid run config: "
            "in 'train.data': load_dataset('spirals') got an unknown option 'foo'",
        ),
        (
            {"data": {"dataset": "spirals"}},
            {"data.options.noise": {"uniform": [-1.0, 0.3]}},
            "'train.search.space.data.options.noise' = -1.0 does not make a valid run config",
        ),
        (
            {},
            {"init.biases": {"uniform": [-8e307, 8e307]}},
            "'train.search.space.init.biases' = -8e+307 does not make a valid run config: "
            "in 'train.init': The 'biases' parameter of initialize must be a value the "
            "model's biases can hold. Got -8e+307 instead, beyond the largest torch.float32",
        ),
        (
            {"data": {"dataset": "digitz"}},
            {"data.options.noise": {"uniform": [0.1, 0.3]}},
            "'train.search.space.data.options.noise' = 0.1 does not make a valid run config: "
            "unknown dataset 'digitz'",
        ),
    ],
)
def test_a_key_the_run_cannot_build_is_refused_before_any_trial(
    base: dict, space: dict, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_search({**_content(space), **base})
    assert str(raised.value).startswith(message)


def test_keys_the_run_builds_pass_the_build_checks() -> None:
    spec = parse_search(
        {
            "epochs": 2,
            "data": {"dataset": "spirals"},
            "schedule": {"name": "plateau"},
            "init": {"weights": "normal"},
            "search": {
                "space": {
                    "model.name": ["mlp", "cnn2d"],
                    "model.options.num_groups": {"int": [1, 4]},
                    "schedule.options.factor": {"uniform": [0.1, 0.5]},
                    "init.options.std": {"log_uniform": [0.01, 1.0]},
                    "data.options.noise": {"uniform": [0.0, 0.3]},
                    "data.dataset": ["spirals", "moons"],
                }
            },
        }
    )
    assert len(spec.parameters) == 6


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({}, "must declare a 'space'"),
        (
            {"space": {"optimizer.lr": {"uniform": [0.1, 0.2]}}, "metrik": "val_loss"},
            "did you mean 'metric'",
        ),
        (
            {"space": {"optimizer.lr": {"uniform": [0.1, 0.2]}}, "metric": "val_f1"},
            "per-epoch metric",
        ),
        (
            {"space": {"optimizer.lr": {"uniform": [0.1, 0.2]}}, "pruner": "asha"},
            "median, successive-halving",
        ),
        (
            {
                "space": {"optimizer.lr": {"uniform": [0.1, 0.2]}},
                "stages": [{"epochs": 2, "trials": 5}],
            },
            "at least two stages",
        ),
        (
            {
                "space": {"optimizer.lr": {"uniform": [0.1, 0.2]}},
                "stages": [{"epochs": 2, "trials": 5}, {"epochs": 0, "trials": 5}],
            },
            "int >= 1",
        ),
        ({"space": {"optimizer.lr": {"uniform": [0.1, 0.2]}}, "margin": 2}, "float in [0, 1]"),
    ],
)
def test_bad_sections_are_rejected(section: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_search({"search": section})
    assert message in str(raised.value)


def test_a_validation_metric_needs_validation_data() -> None:
    content = _content({"optimizer.lr": {"uniform": [0.1, 0.2]}})
    content["data"] = {"validation_split": 0.0}
    with pytest.raises(ConfigError, match="validation_split"):
        parse_search(content)


def test_keys_searched_together_are_checked_together() -> None:
    # SGD needs no other argument; with the searched lr both optimizers build.
    spec = parse_search(
        _content(
            {
                "optimizer.name": {"categorical": ["AdamW", "SGD"]},
                "optimizer.lr": {"log_uniform": [1e-3, 1e-1]},
            }
        )
    )
    config = parse_config(spec.trial_config({"optimizer.name": "SGD", "optimizer.lr": 0.05}))
    assert config.optimizer == {"name": "SGD", "lr": 0.05}


def test_trial_config_sets_the_sampled_values_on_the_base_config() -> None:
    content = _content({"model.width": {"int": [8, 64]}})
    content["optimizer"] = {"name": "Adam", "lr": 0.01}
    spec = parse_search(content)
    trial = parse_config(spec.trial_config({"model.width": 24}, epochs=3, name="trial-0001"))
    assert (trial.model.width, trial.epochs, trial.name) == (24, 3, "trial-0001")
    assert trial.optimizer == {"name": "Adam", "lr": 0.01}
    assert "search" not in spec.base


def test_fingerprint_changes_with_the_space_and_not_with_key_order() -> None:
    space = {"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}, "model.width": {"int": [8, 64]}}
    reordered = dict(reversed(list(space.items())))
    narrowed = {**space, "optimizer.lr": {"log_uniform": [1e-5, 1e-1]}}
    first = parse_search(_content(space)).fingerprint()
    assert parse_search(_content(reordered)).fingerprint() == first
    assert parse_search(_content(narrowed)).fingerprint() != first


def test_parameter_round_trips_through_its_config_form() -> None:
    for parameter in (
        Parameter("optimizer.lr", "log_uniform", 1e-4, 0.1, log=True),
        Parameter("model.width", "int", 8, 64, log=True),
        Parameter("data.batch_size", "grid", choices=(32, 64)),
    ):
        spec = parse_search(_content({parameter.path: parameter.to_mapping()}))
        assert spec.parameters == (parameter,)
        assert parameter.describe().startswith(parameter.kind)
    assert math.isclose(Parameter("x", "uniform", 0, 1).within(0.2, 0.4).high, 0.4)


@pytest.mark.parametrize(
    ("space", "hint"),
    [
        ({"model.width": {"uniform": [8, 64]}}, "use {int: [8, 64]}"),
        ({"data.batch_size": {"log_uniform": [16, 256]}}, "use {int: [16, 256], log: true}"),
    ],
)
def test_a_float_range_on_an_integer_key_is_refused_with_the_int_form(
    space: dict, hint: str
) -> None:
    # QA: the ends were probed as the ints written (8 and 64) and passed, but every trial
    # draws a float (23.7) and failed with "must be an int": a whole search of failures.
    ((path, distribution),) = space.items()
    with pytest.raises(ConfigError, match="does not make a valid run config") as raised:
        parse_search(_content(space))
    assert "draws floats" in str(raised.value)
    assert hint in str(raised.value)
    # The suggested form is accepted, and a float range stays fine on a float key.
    int_form = {"int": next(iter(distribution.values())), "log": "log_uniform" in distribution}
    assert parse_search(_content({path: int_form})).parameters[0].kind == "int"
    assert parse_search(_content({"optimizer.lr": {"uniform": [1, 2]}})).parameters[0].low == 1


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("epochs", "base config's epochs"),
        ("checkpoint.monitor", "search.metric"),
        ("checkpoint.mode", "search.direction"),
    ],
)
def test_keys_the_search_sets_on_every_trial_cannot_be_searched(path: str, why: str) -> None:
    # QA: a searched epochs (or checkpoint mode) was accepted, recorded as each trial's
    # parameter, and then overwritten by the search's own setting: every trial ran the
    # base config's epochs whatever its parameter said.
    values = {"epochs": {"int": [1, 3]}, "checkpoint.monitor": ["val_loss", "train_loss"]}
    space = {path: values.get(path, ["min", "max"])}
    with pytest.raises(ConfigError, match="set by the search itself") as raised:
        parse_search(_content(space))
    assert why in str(raised.value)
    spec = parse_search(_content({"optimizer.lr": {"uniform": [0.1, 0.2]}}))
    trial = spec.trial_config({}, epochs=3, **spec.checkpoint_settings)
    assert (trial["epochs"], trial["checkpoint"]) == (3, {"monitor": "val_loss", "mode": "min"})


@pytest.mark.parametrize(
    ("space", "blamed", "message"),
    [
        (  # a mistyped path declared after a valid one
            {"optimizer.lr": {"log_uniform": [1e-4, 0.1]}, "model.widht": {"int": [8, 64]}},
            "model.widht",
            "did you mean 'width'",
        ),
        (  # two mistyped paths: the first of them
            {
                "optimizer.lr": {"log_uniform": [1e-4, 0.1]},
                "model.widht": {"int": [8, 64]},
                "model.dephth": {"int": [1, 3]},
            },
            "model.widht",
            "did you mean 'width'",
        ),
        (  # keys that only fail together: the value that breaks the pair
            {"optimizer.name": ["SGD", "Adam"], "optimizer.momentum": {"uniform": [0, 0.9]}},
            "optimizer.name",
            "unknown key 'momentum'",
        ),
    ],
)
def test_a_refused_space_names_the_key_at_fault(space: dict, blamed: str, message: str) -> None:
    # QA: every check sets the other keys too, so a mistyped path declared second made the
    # first key's check fail, and the error named the first key ('optimizer.lr' = 0.0001
    # does not make a valid run config: unknown key 'widht').
    with pytest.raises(ConfigError) as raised:
        parse_search(_content(space))
    assert str(raised.value).startswith(f"'train.search.space.{blamed}' = ")
    assert message in str(raised.value)


def test_a_base_config_that_counts_steps_is_refused() -> None:
    # QA: trials run with steps=None and the base config's epochs, so `steps: 500` was
    # dropped silently (each trial ran the default 20 epochs), and both default
    # coarse-to-fine stages got a single epoch.
    content = _content({"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}})
    content["steps"] = 500
    with pytest.raises(ConfigError, match=r"'train.steps' is 500, but a search runs whole epochs"):
        parse_search(content)
    del content["steps"]
    assert [stage.epochs for stage in parse_search(content).stages] == [2, 8]


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            {"init.biases": {"uniform": [-1e308, 1e308]}},
            "uniform needs a range whose width (high - low) is a finite float, but the width "
            "of [-1e+308, 1e+308] overflows to inf",
        ),
        (
            {"data.options.count": {"int": [-(10**308), 10**308]}},
            "int needs a range whose width (high - low) is a finite float",
        ),
        (
            {"data.options.count": {"int": [0, 10**400]}},
            "int needs finite bounds (within a float's range)",
        ),
    ],
)
def test_a_range_whose_width_overflows_a_float_is_refused_with_its_key(
    space: dict, message: str
) -> None:
    # QA: uniform [-1e308, 1e308] was accepted and every draw was inf or nan (numpy refused
    # it with "Range exceeds valid bounds", a traceback in every worker); an int bound
    # beyond a float's range crashed parse_search with an OverflowError.
    ((path, _),) = space.items()
    with pytest.raises(ConfigError) as raised:
        parse_search(_content(space))
    assert str(raised.value).startswith(f"'train.search.space.{path}': ")
    assert message in str(raised.value)


def test_a_range_almost_as_wide_as_a_float_gives_finite_draws_grids_and_stages() -> None:
    stages = [{"epochs": 1, "trials": 2, "keep": 2}, {"epochs": 2, "trials": 2}]
    # An entry point's data option: any float is a valid config (init.biases is not: the
    # weights' float32 cannot hold 8e307).
    space = {"data.options.scale": {"uniform": [-8e307, 8e307]}}
    content = _content(space, stages=stages, margin=1.0) | {"data": {"dataset": "my_data:load"}}
    spec = parse_search(content)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = [study.ask(spec.distributions()).params["data.options.scale"] for _ in range(20)]
    assert all(math.isfinite(value) and abs(value) <= 8e307 for value in drawn)
    assert all(math.isfinite(point["data.options.scale"]) for point in grid_points(spec, 5, seed=0))
    kept = [
        optuna.trial.create_trial(
            params={"data.options.scale": value},
            distributions=spec.distributions(),
            value=float(number),
            user_attrs={"stage": 0},
        )
        for number, value in enumerate([-7e307, 7e307])
    ]
    for number, trial in enumerate(kept):
        trial.number = number
    # The margin (the whole range on each side) reaches past a float: clipped to the range.
    (narrowed,) = stage_ranges(spec, kept)[1].parameters
    assert (narrowed.low, narrowed.high) == (-8e307, 8e307)


@pytest.mark.parametrize("kind", ["uniform", "log_uniform"])
def test_a_float_range_is_one_space_however_its_bounds_are_written(kind: str) -> None:
    # QA: {uniform: [1, 10]} and {uniform: [1.0, 10.0]} draw the same floats and make the
    # same trials, but had different fingerprints: a study made with one refused a resume
    # with the other ("space of ... was {'uniform': [1, 10]}, now {'uniform': [1.0, 10.0]}").
    written_as_ints = parse_search(_content({"optimizer.lr": {kind: [1, 10]}}))
    written_as_floats = parse_search(_content({"optimizer.lr": {kind: [1.0, 10.0]}}))
    assert written_as_ints.fingerprint() == written_as_floats.fingerprint()
    assert written_as_ints.parameters == written_as_floats.parameters
    # An int range is another space (it draws integers), whatever its bounds look like.
    # (an entry point's data option takes any value; a built-in dataset's are checked)
    entry_point = {"data": {"dataset": "my_data:load"}}
    integers = parse_search(_content({"data.options.count": {"int": [1, 10]}}) | entry_point)
    floats = parse_search(_content({"data.options.count": {kind: [1.0, 10.0]}}) | entry_point)
    assert integers.fingerprint() != floats.fingerprint()
