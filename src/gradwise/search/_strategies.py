"""Strategies as Optuna samplers and pruners: grid, random, coarse-to-fine, TPE.

- ``random``: Optuna's RandomSampler (log-uniform where the space says log).
- ``tpe``: Optuna's TPESampler (its default sampler).
- ``grid``: the grid's points are enqueued once, in a shuffled order, when the study is
  made; workers pop them from the storage, which hands each waiting trial to exactly one
  worker (Optuna's GridSampler can give one point to two parallel workers, optuna#2039).
- ``coarse-to-fine``: :class:`CoarseToFineSampler`, random sampling inside the ranges of the
  trial's stage (see :mod:`gradwise.search._stages`).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial

from gradwise.config import ConfigError
from gradwise.search._space import Parameter, SearchSpec, _choice_identity
from gradwise.search._stages import stage_of, stage_ranges

STRATEGIES = ("grid", "random", "coarse-to-fine", "tpe")

# Study user attributes of a grid search.
_GRID_BUDGET_ATTR = "grid_budget"  # the budget its points were made for
_GRID_SIZE_ATTR = "grid_size"
_GRID_ENQUEUED_ATTR = "grid_enqueued"  # every point is in the study


def make_sampler(strategy: str, spec: SearchSpec, seed: int | None) -> BaseSampler:
    """The sampler of a strategy (grid trials are enqueued; its sampler is never asked)."""
    if strategy == "tpe":
        return TPESampler(seed=seed)
    if strategy == "coarse-to-fine":
        return CoarseToFineSampler(spec, seed)
    if strategy in ("random", "grid"):
        return RandomSampler(seed=seed)
    raise ConfigError(f"unknown strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """Optuna's pruner for ``name``, fed one value per epoch.

    The median pruner waits for 5 trials and judges from the second epoch; successive
    halving and Hyperband count resources in epochs.
    """
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    return optuna.pruners.NopPruner()


class CoarseToFineSampler(BaseSampler):
    """Random sampling inside the current stage's ranges (coarse-to-fine search).

    Every value lies inside the declared distribution, so Optuna records it against the
    declared space; the stage's narrower range only decides where it is drawn.
    """

    def __init__(self, spec: SearchSpec, seed: int | None = None) -> None:
        self._spec = spec
        self._random = RandomSampler(seed=seed)
        self._ranges: dict[int, dict[str, Parameter]] = {}

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        ranges = self._stage_parameters(study, trial)
        parameter = ranges.get(param_name)
        if parameter is None:
            return self._random.sample_independent(study, trial, param_name, param_distribution)
        value = self._random.sample_independent(study, trial, param_name, parameter.distribution())
        declared = self._spec.parameter(param_name)
        if declared.is_numeric:
            # Optuna does not range-check a sampler's values: clip to the declared bounds.
            value = type(value)(min(max(value, declared.low), declared.high))
        return value

    def _stage_parameters(self, study: Study, trial: FrozenTrial) -> dict[str, Parameter]:
        if trial.number not in self._ranges:
            trials = study.get_trials(deepcopy=False)
            stage = stage_of(self._spec.stages, trials, trial)
            known = stage_ranges(self._spec, trials)
            parameters = known[min(stage, len(known) - 1)].parameters
            self._ranges[trial.number] = {p.path: p for p in parameters}
        return self._ranges[trial.number]


def grid_points(spec: SearchSpec, budget: int, seed: int) -> list[dict[str, Any]]:
    """The largest grid that fits ``budget`` trials, in a seeded shuffled order.

    Value lists (categorical, grid) are used whole. Numeric ranges share what is left of
    the budget: starting from one point each, the range with the fewest points (the first
    declared among equals) gets one more while the grid still fits, so 16 trials over
    three ranges make a 4 x 2 x 2 grid. A range of ``k`` points has them at the centres of
    ``k`` equal cells (in log space for log ranges). When even one point per range does
    not fit, a seeded random subset of the value lists' grid is used. A range gets no more
    points than it holds distinct values (an ``int`` range ``[1, 2]`` two, a range with
    ``low == high`` one), so the budget goes to the others; the points of an ``int`` range
    are its cell centres rounded half up, all its integers when it has no more than its
    share (duplicates from a log scale are merged).
    """
    axes = _grid_axes(spec, budget)
    points = [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
    random.Random(seed).shuffle(points)
    return points[:budget]


def grid_size(spec: SearchSpec, budget: int) -> int:
    """How many points the grid of :func:`grid_points` has before it is cut to ``budget``
    (more than ``budget`` only when the value lists alone make more points)."""
    return math.prod(len(axis) for axis in _grid_axes(spec, budget).values())


def _grid_axes(spec: SearchSpec, budget: int) -> dict[str, Sequence[Any]]:
    """Each parameter's grid values: a value list whole, a range its share of ``budget``."""
    finite = [p for p in spec.parameters if not p.is_numeric]
    numeric = [p for p in spec.parameters if p.is_numeric]
    counts = _points_per_range(
        [_distinct_values(p) for p in numeric],
        budget // math.prod(len(p.choices) for p in finite),
    )
    axes: dict[str, Sequence[Any]] = {p.path: p.choices for p in finite}
    axes.update({p.path: _cell_centres(p, k) for p, k in zip(numeric, counts, strict=True)})
    return axes


def _distinct_values(parameter: Parameter) -> float:
    """How many distinct points the range ``parameter`` can give (inf for a real range)."""
    if parameter.low == parameter.high:
        return 1
    if parameter.kind == "int":
        return int(parameter.high) - int(parameter.low) + 1
    return math.inf


def _points_per_range(capacities: Sequence[float], room: int) -> list[int]:
    counts = [1] * len(capacities)
    while capacities:
        order = sorted(range(len(counts)), key=lambda index: (counts[index], index))
        grown = next(
            (
                i
                for i in order
                if counts[i] < capacities[i]
                and math.prod(counts) // counts[i] * (counts[i] + 1) <= room
            ),
            None,
        )
        if grown is None:
            break
        counts[grown] += 1
    return counts


def _cell_centres(parameter: Parameter, count: int) -> list[Any]:
    to_axis, from_axis = (math.log, math.exp) if parameter.log else (float, float)
    low, high = to_axis(parameter.low), to_axis(parameter.high)
    centres = [from_axis(low + (i + 0.5) * (high - low) / count) for i in range(count)]
    centres = [min(max(c, parameter.low), parameter.high) for c in centres]
    if parameter.kind == "int":
        if count >= _distinct_values(parameter):
            return list(range(int(parameter.low), int(parameter.high) + 1))
        # Half up, not Python's half to even: centres 1.5 and 2.5 must not both become 2.
        return sorted({math.floor(c + 0.5) for c in centres})
    return centres


def enqueue_grid(study: Study, spec: SearchSpec, budget: int, seed: int) -> tuple[int, int]:
    """Enqueue each of the grid's points once; returns how many that is, and how many
    points the whole grid has (more when its value lists make more points than the budget:
    the queued ones are then a seeded random subset, see :func:`grid_points`).

    A search stopped (Ctrl-C, a kill) while it enqueued leaves part of the grid queued.
    Run again, this enqueues only the points no trial of the study has (queued, running,
    finished or retried), from the grid of the first run's budget, so the study ends with
    each point once.
    """
    attributes = study.user_attrs
    whole = grid_size(spec, int(attributes.get(_GRID_BUDGET_ATTR, budget)))
    if attributes.get(_GRID_ENQUEUED_ATTR):
        return int(attributes[_GRID_SIZE_ATTR]), whole
    if _GRID_BUDGET_ATTR not in attributes:
        # Stored before the first point, so a resume with another --trials finishes
        # this grid instead of queueing another one's points too.
        study.set_user_attr(_GRID_BUDGET_ATTR, budget)
    points = grid_points(spec, int(attributes.get(_GRID_BUDGET_ATTR, budget)), seed)
    # An enqueued trial keeps its point in "fixed_params" (so does its retry).
    queued = {
        _point_identity(trial.system_attrs.get("fixed_params", trial.params))
        for trial in study.get_trials(deepcopy=False)
    }
    for point in points:
        if _point_identity(point) not in queued:
            study.enqueue_trial(point, skip_if_exists=False)
    study.set_user_attr(_GRID_SIZE_ATTR, len(points))
    study.set_user_attr(_GRID_ENQUEUED_ATTR, True)
    return len(points), whole


def _point_identity(point: Mapping[str, Any]) -> frozenset[tuple[str, tuple[str, Any]]]:
    """What makes two grid points one trial, exactly (Optuna's skip_if_exists compares
    numbers with a relative tolerance and takes True for 1)."""
    return frozenset((path, _choice_identity(value)) for path, value in point.items())
