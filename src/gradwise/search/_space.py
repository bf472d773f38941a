"""The ``search`` section of a run config: the space, the metric, the stages, the pruner.

A space maps config paths to distributions, one short mapping each::

    search:
      metric: val_loss
      space:
        optimizer.lr: {log_uniform: [1.0e-4, 1.0e-1]}
        optimizer.weight_decay: {log_uniform: [1.0e-5, 1.0e-1]}
        model.width: {int: [16, 128], log: true}
        data.batch_size: {categorical: [32, 64, 128]}
        model.depth: {grid: [1, 2, 3]}

Everything is checked before any trial runs: the distributions (a log-uniform low bound
must be > 0), the paths (each must name a key of the run config, with a did-you-mean hint),
and the values at the ends of each range (a dropout range reaching 1.5 is refused by the
config schema, an optimizer argument the optimizer does not take by the optimizer; a model,
schedule, initializer or dataset option the run cannot build with as ``gradwise train``
would, without loading the data).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from gradwise.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    parse_config,
    unknown_key_message,
    unknown_name_message,
)

Kind = Literal["log_uniform", "uniform", "int", "categorical", "grid"]
Direction = Literal["minimize", "maximize"]
KINDS: tuple[Kind, ...] = ("log_uniform", "uniform", "int", "categorical", "grid")
# The run length a searched schedule is built over when it is checked (a trial's own
# depends on the data's size).
_NOMINAL_STEPS = 1000
PRUNERS = ("median", "successive-halving", "hyperband", "none")
EPOCH_METRICS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")

_SECTION = "train.search"
_SECTION_KEYS = ("space", "metric", "direction", "stages", "margin", "keep", "pruner")
_STAGE_KEYS = ("epochs", "trials", "keep")
# Paths the search itself sets on every trial (the worker's settings are applied after the
# sampled values, so a searched value would be silently replaced); searching them is refused.
_RESERVED = {
    "name": "the search names each trial's run",
    "runs_dir": "the search puts each trial's run in the study folder",
    "search": "it is this section",
    "steps": "trials run whole epochs",
    "epochs": "every trial runs the base config's epochs (coarse-to-fine: its stage's)",
    "checkpoint.monitor": "it follows 'train.search.metric'",
    "checkpoint.mode": "it follows 'train.search.direction'",
}


@dataclass(frozen=True)
class Parameter:
    """One searched config key and its distribution.

    Attributes:
        path: the config key, dotted (``optimizer.lr``).
        kind: ``log_uniform``, ``uniform``, ``int``, ``categorical`` or ``grid``.
        low, high: the bounds of a numeric distribution (both included).
        log: sample uniformly in log space (always for ``log_uniform``; optional for ``int``).
        choices: the values of a ``categorical`` or ``grid`` distribution.
    """

    path: str
    kind: Kind
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def is_numeric(self) -> bool:
        """A range of numbers (not a list of values)."""
        return self.kind in ("log_uniform", "uniform", "int")

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution (grid values are a categorical distribution)."""
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        if self.is_numeric:
            return FloatDistribution(float(self.low), float(self.high), log=self.log)
        return CategoricalDistribution(list(self.choices))

    def within(self, low: float, high: float) -> Parameter:
        """The same parameter over a narrower range ``[low, high]`` (coarse-to-fine)."""
        return Parameter(self.path, self.kind, low, high, self.log, self.choices)

    def with_choices(self, choices: Sequence[Any]) -> Parameter:
        """The same parameter over fewer values (coarse-to-fine)."""
        return Parameter(self.path, self.kind, self.low, self.high, self.log, tuple(choices))

    def to_mapping(self) -> dict[str, Any]:
        """The config form, ``{log_uniform: [0.0001, 0.1]}``."""
        if self.is_numeric:
            bounds: list[float] = [self.low, self.high]
            if self.kind == "int":
                bounds = [int(self.low), int(self.high)]
            mapping: dict[str, Any] = {self.kind: bounds}
            if self.kind == "int" and self.log:
                mapping["log"] = True
            return mapping
        return {self.kind: list(self.choices)}

    def describe(self) -> str:
        """A short human form: ``log_uniform(0.0001, 0.1)``, ``categorical(32, 64)``."""
        if self.is_numeric:
            scale = ", log" if self.kind == "int" and self.log else ""
            return f"{self.kind}({_number(self.low)}, {_number(self.high)}{scale})"
        return f"{self.kind}({', '.join(str(value) for value in self.choices)})"


@dataclass(frozen=True)
class Stage:
    """One stage of a coarse-to-fine search: its epoch budget, its trials, how many it keeps."""

    epochs: int
    trials: int
    keep: int = 3


@dataclass(frozen=True)
class SearchSpec:
    """The validated ``search`` section, with the run config it searches around.

    Attributes:
        parameters: the searched keys, in the order the config declares them.
        metric: the per-epoch metric a trial is judged by (its best epoch's value).
        direction: ``minimize`` or ``maximize``.
        base: the run config as plain data, without its ``search`` section.
        stages: the coarse-to-fine stages (declared, or the default two).
        margin: coarse-to-fine widening around the kept trials, a fraction of the stage's
            range on each side (in log space for log parameters).
        pruner: ``median``, ``successive-halving``, ``hyperband`` or ``none``.
    """

    parameters: tuple[Parameter, ...]
    metric: str
    direction: Direction
    base: dict[str, Any] = field(repr=False)
    stages: tuple[Stage, ...] = ()
    margin: float = 0.1
    pruner: str = "median"

    @property
    def epochs(self) -> int:
        """Epochs per trial (outside coarse-to-fine): the base config's."""
        return int(parse_config(self.base).epochs or 1)

    @property
    def checkpoint_settings(self) -> dict[str, str]:
        """The run config keys that make a run's best epoch the search's: the metric, and
        the direction (not ``auto``: an explicit direction may go against the name)."""
        mode = "min" if self.direction == "minimize" else "max"
        return {"checkpoint.monitor": self.metric, "checkpoint.mode": mode}

    def parameter(self, path: str) -> Parameter:
        """The parameter searched at ``path``."""
        for parameter in self.parameters:
            if parameter.path == path:
                return parameter
        raise KeyError(path)

    def distributions(self) -> dict[str, BaseDistribution]:
        """Optuna distributions by path."""
        return {parameter.path: parameter.distribution() for parameter in self.parameters}

    def to_mapping(self) -> dict[str, Any]:
        """Plain data that identifies the search (stored with the study)."""
        return {
            "space": {p.path: p.to_mapping() for p in self.parameters},
            "metric": self.metric,
            "direction": self.direction,
            "stages": [vars(stage) for stage in self.stages],
            "margin": self.margin,
            "pruner": self.pruner,
            "base": self.base,
        }

    def fingerprint(self) -> str:
        """A hash of :meth:`to_mapping`: two searches with the same one may share a study."""
        text = json.dumps(self.to_mapping(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def trial_config(self, params: Mapping[str, Any], **settings: Any) -> dict[str, Any]:
        """The run config of one trial: the base, the sampled values, then ``settings``."""
        content = copy.deepcopy(self.base)
        overrides = {**params, **settings}
        for path, value in overrides.items():
            _set_path(content, path, value)
        return content


def parse_search(content: Mapping[str, Any], *, stages_trials: int | None = None) -> SearchSpec:
    """Validate the ``search`` section of a run config (as read from its file).

    Args:
        content: the whole config mapping, ``search`` section included.
        stages_trials: the total trial budget, when the user gave one; the default
            coarse-to-fine stages split it in two.

    Raises:
        ConfigError: a missing or empty space, an unknown path or distribution, bad bounds,
            a value the run config or the optimizer refuses, an unknown metric or pruner.
    """
    section = content.get("search")
    if not isinstance(section, Mapping) or not section.get("space"):
        raise ConfigError(
            f"'{_SECTION}' must declare a 'space', e.g. search: {{space: {{optimizer.lr: "
            f"{{log_uniform: [1.0e-4, 1.0e-1]}}}}}}. Got {section!r} instead."
        )
    for key in section:
        if key not in _SECTION_KEYS:
            raise ConfigError(unknown_key_message(str(key), _SECTION, _SECTION_KEYS))
    base = {key: value for key, value in content.items() if key != "search"}
    config = parse_config(base)
    space = section["space"]
    if not isinstance(space, Mapping):
        raise ConfigError(f"'{_SECTION}.space' must map config paths to distributions.")
    parameters = tuple(_parameter(str(path), spec) for path, spec in space.items())
    _check_values(parameters, base)
    metric, direction = _metric(section, has_validation=config.data.validation_split > 0)
    if config.steps is not None:
        # Every trial is run with steps=None (see SearchSpec.epochs): the steps would be
        # dropped silently, and a coarse-to-fine stage would get one epoch.
        raise ConfigError(
            f"'train.steps' is {config.steps}, but a search runs whole epochs (each trial "
            f"reports its metric, and is pruned, per epoch; coarse-to-fine stages count "
            f"epochs): set 'train.epochs' instead of 'train.steps'"
        )
    return SearchSpec(
        parameters=parameters,
        metric=metric,
        direction=direction,
        base=base,
        stages=_stages(section, config.epochs, stages_trials),
        margin=_fraction(section.get("margin", 0.1), "margin"),
        pruner=_pruner(section.get("pruner", "median")),
    )


# -- one parameter -------------------------------------------------------------------------


def _parameter(path: str, spec: Any) -> Parameter:
    where = f"'{_SECTION}.space.{path}'"
    reserved = next((key for key in (path.split(".")[0], path) if key in _RESERVED), None)
    if reserved is not None:
        raise ConfigError(
            f"{where}: '{reserved}' is set by the search itself ({_RESERVED[reserved]}) and "
            f"cannot be searched; remove it from the space"
        )
    if isinstance(spec, list):
        spec = {"categorical": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{where} must be a distribution such as {{log_uniform: [1.0e-4, 1.0e-1]}}. "
            f"Got {spec!r} instead."
        )
    kinds = [key for key in spec if key in KINDS]
    extra = [key for key in spec if key not in (*KINDS, "log")]
    if len(kinds) != 1 or extra:
        wrong = extra[0] if extra else ", ".join(map(str, spec))
        raise ConfigError(
            f"{where} must name one distribution of {', '.join(KINDS)} (int may add "
            f"log: true). Got {wrong!r}."
        )
    kind: Kind = kinds[0]
    if kind in ("categorical", "grid"):
        if "log" in spec:
            raise ConfigError(f"{where}: log applies to int ranges only, not to {kind}.")
        return _finite(path, kind, spec[kind], where)
    return _numeric(path, kind, spec[kind], _log_scale(kind, spec.get("log"), where), where)


def _log_scale(kind: Kind, log: Any, where: str) -> bool:
    """Whether a numeric range is sampled in log space: log_uniform always, int when it
    says ``log: true``; a contradicting or non-bool ``log`` is refused."""
    if log is not None and not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false. Got {log!r}.")
    if kind == "uniform" and log:
        raise ConfigError(f"{where}: uniform is linear; use log_uniform for a log scale.")
    if kind == "log_uniform" and log is False:
        raise ConfigError(f"{where}: log_uniform is log scale; use uniform for a linear one.")
    return kind == "log_uniform" or bool(log)


def _finite(path: str, kind: Kind, values: Any, where: str) -> Parameter:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: {kind} needs a non-empty list of values. Got {values!r}.")
    for value in values:
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ConfigError(
                f"{where}: {kind} values must be numbers, strings, booleans or null. Got {value!r}."
            )
    seen: dict[tuple[str, Any], Any] = {}
    for value in values:
        identity = _choice_identity(value)
        if identity in seen:
            earlier = seen[identity]
            if repr(earlier) == repr(value):
                why = f"{value!r} is listed twice"
            else:
                why = f"{earlier!r} and {value!r} are the same number"
            raise ConfigError(
                f"{where}: {kind} values must differ; {why}, which would run the same trial "
                f"twice. List each value once. Got {values!r}."
            )
        seen[identity] = value
    return Parameter(path, kind, choices=tuple(values))


def _choice_identity(value: Any) -> tuple[str, Any]:
    """What makes two choices the same trial: numbers by value (1 and 1.0 are one), anything
    else by its repr (so a boolean never equals a number: true is not 1)."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if is_number and not math.isnan(value):
        return ("number", value)
    return ("other", repr(value))


def _numeric(path: str, kind: Kind, bounds: Any, log: bool, where: str) -> Parameter:
    number = int if kind == "int" else (int, float)
    if (
        not isinstance(bounds, list)
        or len(bounds) != 2
        or not all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)
    ):
        what = "two integers" if kind == "int" else "two numbers"
        raise ConfigError(f"{where}: {kind} needs [low, high], {what}. Got {bounds!r}.")
    low, high = bounds
    if not (_is_finite(low) and _is_finite(high)) or low > high:
        raise ConfigError(
            f"{where}: {kind} needs finite bounds (within a float's range) with low <= high. "
            f"Got {bounds!r}."
        )
    if log and low <= 0:
        raise ConfigError(
            f"{where}: a log-scale distribution needs low > 0 (log of {low} is undefined); "
            f"use uniform for ranges that include 0. Got {bounds!r}."
        )
    # Samplers, grid cells and coarse-to-fine's margins all compute high - low as a float.
    width = float(high) - float(low)
    if not math.isfinite(width):
        raise ConfigError(
            f"{where}: {kind} needs a range whose width (high - low) is a finite float, but "
            f"the width of {bounds!r} overflows to {width} (every draw from it would be inf "
            f"or nan). Narrow the range."
        )
    if kind != "int":
        # A float range is one space however its bounds are written: [1, 10] is [1.0, 10.0]
        # (same draws, same trial configs), so it must make the same study fingerprint.
        low, high = float(low), float(high)
    return Parameter(path, kind, low, high, log)


def _is_finite(number: float) -> bool:
    """A finite number that fits in a float (math.isfinite raises on a larger int)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def _check_values(parameters: Sequence[Parameter], base: Mapping[str, Any]) -> None:
    """Each end of each range (each choice) must make a valid run config.

    The other parameters take their first value meanwhile, so that searched keys which
    only work together (``optimizer.name`` with ``optimizer.lr``) are checked together. A
    value is blamed only when the others make a valid config without it; otherwise the
    fault is another key's (a mistyped path declared later), and that key's check names it.
    """
    firsts = {parameter.path: _probes(parameter)[0] for parameter in parameters}
    failed: list[tuple[Parameter, Any, ConfigError]] = []
    for parameter in parameters:
        others = {path: value for path, value in firsts.items() if path != parameter.path}
        for value in _probes(parameter):
            try:
                _check_one(base, {**others, parameter.path: value})
            except ConfigError as error:
                refusal = _refusal(parameter, value, error, base, firsts)
                if _is_valid(base, others):
                    raise refusal from None
                failed.append((parameter, value, refusal))
                break
    if not failed:
        return
    # Several keys at fault (two mistyped paths): name the first that fails on its own.
    for parameter, value, _ in failed:
        try:
            _check_one(base, {parameter.path: value})
        except ConfigError as error:
            raise _refusal(parameter, value, error, base, firsts) from None
    raise failed[0][2]


def _refusal(
    parameter: Parameter,
    value: Any,
    error: ConfigError,
    base: Mapping[str, Any],
    firsts: Mapping[str, Any],
) -> ConfigError:
    return ConfigError(
        f"'{_SECTION}.space.{parameter.path}' = {value!r} does not make a valid run config: "
        f"{error}{_int_hint(parameter, base, firsts)}"
    )


def _check_one(base: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    content = copy.deepcopy(dict(base))
    for path, value in values.items():
        _set_path(content, path, value)
    config = parse_config(content)
    sections = {path.split(".")[0] for path in values}
    if "optimizer" in sections:
        _check_optimizer(config.optimizer)
    if "model" in sections:
        _check_model(config)
    if "schedule" in sections and config.schedule is not None:
        _check_schedule(config)
    if "init" in sections:
        _check_init(config)
    if any(path.startswith("data.options.") for path in values):
        _check_data(config)


def _is_valid(base: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    try:
        _check_one(base, values)
    except ConfigError:
        return False
    return True


def _probes(parameter: Parameter) -> tuple[Any, ...]:
    """The values that stand for a parameter: the ends of a range, as the type a trial
    gets (uniform and log_uniform draw floats, so ``[8, 64]`` is probed as 8.0 and 64.0),
    or every choice."""
    if parameter.kind == "int":
        return (int(parameter.low), int(parameter.high))
    if parameter.is_numeric:
        return (float(parameter.low), float(parameter.high))
    return parameter.choices


def _int_hint(parameter: Parameter, base: Mapping[str, Any], firsts: Mapping[str, Any]) -> str:
    """A hint when a float range is refused where its integer ends would do (a width)."""
    if parameter.kind not in ("uniform", "log_uniform"):
        return ""
    if parameter.low != int(parameter.low) or parameter.high != int(parameter.high):
        return ""
    ends = (int(parameter.low), int(parameter.high))
    if not all(_is_valid(base, {**firsts, parameter.path: end}) for end in ends):
        return ""
    log = ", log: true" if parameter.log else ""
    return (
        f" ({parameter.kind} draws floats; for an integer key use "
        f"{{int: [{int(parameter.low)}, {int(parameter.high)}]{log}}})"
    )


def _check_optimizer(spec: Mapping[str, Any]) -> None:
    from torch import nn

    from gradwise.train._components import build_optimizer

    build_optimizer(spec, nn.Linear(1, 1))


def _check_model(config: RunConfig) -> None:
    """The model's name and its options' names, as ``gradwise train`` builds it, without
    loading the data (a built-in model's values may depend on the data's shape: a trial
    reports those)."""
    from gradwise.models import MODELS
    from gradwise.models._builders import check_model_options
    from gradwise.train._from_config import _is_entry_point

    spec = config.model
    if _is_entry_point(spec.name):
        return  # the user's function takes the options it takes
    if spec.name not in MODELS:  # gradwise train's message, with its did-you-mean
        raise ConfigError(
            unknown_name_message("model", spec.name, "train.model.name", list(MODELS)),
            key=("model", "name"),
        )
    try:
        check_model_options(spec.name, spec.options)
    except ValueError as error:
        raise ConfigError(f"in 'train.model': {error}", key=("model", "options")) from None


def _check_schedule(config: RunConfig) -> None:
    """The schedule as ``gradwise train`` builds it, over a nominal run length (the real
    one needs the data's size)."""
    from gradwise.train._components import build_schedule
    from gradwise.train._from_config import _schedule_options

    schedule = config.schedule
    assert schedule is not None  # noqa: S101 - the caller's branch
    # A plateau's metric is checked against the data's metrics by the trial; here it only
    # decides the default mode, as in gradwise train.
    metric = str(schedule.options.get("metric", "val_loss"))
    plateau = metric if schedule.name == "plateau" else None
    lr = config.optimizer.get("lr", 1e-3)
    build_schedule(
        schedule.name,
        _schedule_options(config, plateau),
        schedule.warmup,
        float(lr) if isinstance(lr, int | float) else 1e-3,
        _NOMINAL_STEPS,
        "train.schedule",
    )


def _check_init(config: RunConfig) -> None:
    """The initializer, its options and the biases, applied to a small linear layer."""
    from torch import nn

    from gradwise.train._from_config import _initialize

    try:
        _initialize(nn.Linear(2, 2), config)
    except RuntimeError as error:  # torch's: a bias of 1e300 does not fit the weights' dtype
        raise ConfigError(f"in 'train.init': {error}", key=("init",)) from None


def _check_data(config: RunConfig) -> None:
    """The dataset's name and its options (names and values), without loading it."""
    from pathlib import Path

    from gradwise.data import available_datasets
    from gradwise.data._registry import _FILE_LOADERS, _REGISTRY, _check_options
    from gradwise.train._from_config import _is_entry_point

    data = config.data
    if _is_entry_point(data.dataset):
        return  # the user's function takes the options it takes
    entry = _FILE_LOADERS.get(Path(data.dataset).suffix.lower()) or _REGISTRY.get(data.dataset)
    if entry is None:
        names = available_datasets()
        raise ConfigError(
            unknown_name_message("dataset", data.dataset, "train.data.dataset", names),
            key=("data", "dataset"),
        )
    try:
        _check_options(data.dataset, entry, dict(data.options))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"in 'train.data': {error}", key=("data", "options")) from None


def _set_path(content: dict[str, Any], path: str, value: Any) -> None:
    apply_overrides(content, [f"{path}=__gradwise_placeholder__"])
    node = content
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value


# -- the rest of the section ---------------------------------------------------------------


def _metric(section: Mapping[str, Any], *, has_validation: bool) -> tuple[str, Direction]:
    metric = section.get("metric", "val_loss")
    if metric not in EPOCH_METRICS:
        raise ConfigError(
            f"'{_SECTION}.metric' must be one of {', '.join(EPOCH_METRICS)} (a per-epoch "
            f"metric of the trainer). Got {metric!r} instead."
        )
    if metric.startswith("val_") and not has_validation:
        raise ConfigError(
            f"'{_SECTION}.metric' is {metric} but 'train.data.validation_split' is 0: "
            f"hold out validation data or search on a train_ metric"
        )
    direction = section.get("direction", "auto")
    if direction == "auto":
        return metric, "minimize" if metric.endswith("loss") else "maximize"
    if direction not in ("minimize", "maximize"):
        raise ConfigError(
            f"'{_SECTION}.direction' must be auto, minimize or maximize. Got {direction!r}."
        )
    return metric, direction


def _stages(
    section: Mapping[str, Any], epochs: int | None, total_trials: int | None
) -> tuple[Stage, ...]:
    keep = section.get("keep", 3)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise ConfigError(f"'{_SECTION}.keep' must be an int >= 1. Got {keep!r} instead.")
    declared = section.get("stages")
    if declared is None:
        full = epochs or 1
        first, second = (25, 25) if total_trials is None else _halves(total_trials)
        return (Stage(max(1, full // 4), first, keep), Stage(full, second, keep))
    if not isinstance(declared, list) or len(declared) < 2:
        raise ConfigError(
            f"'{_SECTION}.stages' must be a list of at least two stages, e.g. "
            f"[{{epochs: 2, trials: 25}}, {{epochs: 10, trials: 25}}]. Got {declared!r}."
        )
    stages = tuple(_stage(entry, index, keep) for index, entry in enumerate(declared))
    if total_trials is not None and total_trials != sum(stage.trials for stage in stages):
        raise ConfigError(
            f"--trials {total_trials} differs from the {sum(s.trials for s in stages)} trials "
            f"of '{_SECTION}.stages'; drop --trials or change the stages"
        )
    return stages


def _halves(total: int) -> tuple[int, int]:
    if total < 2:
        raise ConfigError(f"coarse-to-fine needs at least 2 trials (one per stage). Got {total}.")
    return math.ceil(total / 2), total - math.ceil(total / 2)


def _stage(entry: Any, index: int, keep: int) -> Stage:
    where = f"'{_SECTION}.stages[{index}]'"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a mapping {{epochs: E, trials: N}}. Got {entry!r}.")
    for key in entry:
        if key not in _STAGE_KEYS:
            raise ConfigError(unknown_key_message(str(key), where.strip("'"), _STAGE_KEYS))
    values = {"keep": keep, **entry}
    for key in _STAGE_KEYS:
        value = values.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"The '{key}' key in {where} must be an int >= 1. Got {value!r}.")
    return Stage(values["epochs"], values["trials"], values["keep"])


def _fraction(value: Any, key: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ConfigError(
            f"The '{key}' key in '{_SECTION}' must be a float in [0, 1]. Got {value!r} instead."
        )
    return float(value)


def _pruner(value: Any) -> str:
    if value is None:
        return "none"
    if value not in PRUNERS:
        raise ConfigError(
            f"The 'pruner' key in '{_SECTION}' must be one of {', '.join(PRUNERS)}. "
            f"Got {value!r} instead."
        )
    return str(value)


def _number(value: float) -> str:
    return f"{value:g}"
