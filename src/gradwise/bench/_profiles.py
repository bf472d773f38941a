"""Performance profiles (Dolan & More 2002) of steps-to-target, scored as AlgoPerf does."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gradwise._validation import Interval, Satisfies, check
from gradwise.bench._deepobs import (
    QUADRATIC_DEEP_LEARNING_RATES,
    QuadraticDeep,
    make_quadratic_deep,
    run_quadratic_deep,
)
from gradwise.bench._scoring import _LEARNING_RATES, OptimizerSpec, Tuned, check_optimizers
from gradwise.bench._surfaces import SurfaceResults

PROFILE_TAUS: tuple[float, ...] = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0)
"""The ratios at which :meth:`PerformanceProfiles.to_table` reports each profile."""

ALGOPERF_TAU_MAX = 4.0
"""AlgoPerf's upper limit of the profile's integral, :math:`r_\\text{max}`."""

_OWNER = "performance_profiles"


@dataclass(frozen=True)
class PerformanceProfiles:
    r"""Each optimizer's performance profile over a set of problems, and its area score.

    ``ratios[p, o]`` is optimizer ``o``'s steps on problem ``p`` over the fewest steps any
    optimizer took there (inf where ``o`` failed, and for every optimizer on a problem all
    of them failed). Built by :func:`performance_profiles`.

    Attributes:
        problems: the problem names, the rows.
        optimizers: the optimizer names, the columns.
        steps: steps to the target, inf for a failure, shape ``(problems, optimizers)``.
        ratios: the performance ratios :math:`r_{p,o}`, same shape.
        taus: the ratios at which the table reports :math:`\rho_o(\tau)`.
        tau_max: the upper limit of the score's integral.
    """

    problems: tuple[str, ...]
    optimizers: tuple[str, ...]
    steps: NDArray[np.float64]
    ratios: NDArray[np.float64]
    taus: tuple[float, ...]
    tau_max: float

    def fraction_within(self, optimizer: str, tau: float) -> float:
        r""":math:`\rho_o(\tau)`: the fraction of problems ``optimizer`` solves within
        ``tau`` times the best optimizer's steps."""
        check("tau", "PerformanceProfiles.fraction_within", tau, Interval(low=1.0))
        column = self.ratios[:, self._column(optimizer)]
        return float(np.count_nonzero(column <= tau)) / len(self.problems)

    def score(self, optimizer: str) -> float:
        r"""The normalized area :math:`\frac{1}{\tau_\max - 1}\int_1^{\tau_\max}\rho_o(\tau)
        \,d\tau`, in [0, 1]: 1 when ``optimizer`` is the fastest on every problem."""
        column = self.ratios[:, self._column(optimizer)]
        # rho is a step function: a problem solved at ratio r <= tau_max counts from r on
        areas = np.clip(self.tau_max - column, 0.0, None) / (self.tau_max - 1.0)
        return float(np.mean(areas))

    @property
    def scores(self) -> dict[str, float]:
        """:meth:`score` of every optimizer."""
        return {name: self.score(name) for name in self.optimizers}

    def _column(self, optimizer: str) -> int:
        check("optimizer", "PerformanceProfiles", optimizer, Satisfies(
            lambda v: v in self.optimizers, "one of " + ", ".join(map(repr, self.optimizers))
        ))  # fmt: skip
        return self.optimizers.index(optimizer)

    def to_table(self) -> Any:
        """A :class:`gradwise.report.Table`: per optimizer, rho at each tau and the score."""
        from gradwise.report import Table

        columns = ["optimizer", *(f"rho({tau:g})" for tau in self.taus),
                   f"score (tau_max {self.tau_max:g})"]  # fmt: skip
        rows: list[list[Any]] = [
            [name, *(self.fraction_within(name, tau) for tau in self.taus), self.score(name)]
            for name in self.optimizers
        ]
        title = (f"Performance profiles over {len(self.problems)} problems: rho(tau) = fraction "
                 "solved within tau x the best optimizer's steps; score = normalized area "
                 "under rho up to tau_max (AlgoPerf); higher is better")  # fmt: skip
        return Table(title, columns, rows)

    def ratio_table(self) -> Any:
        """A :class:`gradwise.report.Table`: per problem, each optimizer's steps and ratio."""
        from gradwise.report import Cell, Table

        rows: list[list[Any]] = []
        for i, problem in enumerate(self.problems):
            cells: list[Any] = [problem]
            for j in range(len(self.optimizers)):
                steps, ratio = float(self.steps[i, j]), float(self.ratios[i, j])
                text = "failed" if math.isinf(steps) else f"{steps:g} (x{ratio:.3g})"
                cells.append(Cell(None if math.isinf(ratio) else ratio, text))
            rows.append(cells)
        title = "Steps to the target (ratio to the fewest on that problem)"
        return Table(title, ["problem", *self.optimizers], rows)

    def plot_png(self) -> bytes:
        """The profiles as step curves over a log-scaled tau axis, PNG bytes."""
        from gradwise.bench._report import performance_profile_png

        return performance_profile_png(self.ratios, self.optimizers, self.tau_max)

    def write_plot(self, path: str | Path) -> Path:
        """Write :meth:`plot_png` to ``path`` (folders made); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.plot_png())
        return path


def _is_steps(value: Any) -> bool:
    """Steps to the target: a positive number, inf or None (failed)."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, Real):
        return False
    return not math.isnan(float(value)) and float(value) > 0.0


def _check_steps(steps: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    check("steps", _OWNER, steps, Satisfies(
        lambda v: isinstance(v, Mapping) and len(v) > 0
        and all(isinstance(row, Mapping) and len(row) > 0 for row in v.values()),
        "a non-empty mapping problem -> non-empty mapping optimizer -> steps"))  # fmt: skip
    problems = tuple(steps)
    optimizers = tuple(next(iter(steps.values())))
    for problem, row in steps.items():
        if set(row) != set(optimizers):
            raise ValueError(
                f"The 'steps' parameter of {_OWNER} must give the same optimizers for every "
                f"problem. Got {sorted(map(str, row))} for {problem!r} but "
                f"{sorted(map(str, optimizers))} for {problems[0]!r} instead; give a failed "
                "run as math.inf or None."
            )
        for optimizer, value in row.items():
            check(f"steps[{problem!r}][{optimizer!r}]", _OWNER, value, Satisfies(
                _is_steps, "a number > 0, or math.inf or None for a run that failed"))  # fmt: skip
    return problems, optimizers


def performance_profiles(
    steps: Mapping[str, Mapping[str, float | None]],
    *,
    taus: Sequence[float] = PROFILE_TAUS,
    tau_max: float = ALGOPERF_TAU_MAX,
) -> PerformanceProfiles:
    r"""Performance profiles of the steps each optimizer took to reach a target per problem.

    With :math:`t_{p,o}` optimizer :math:`o`'s steps on problem :math:`p` (:math:`\infty`
    if it never reached the target), the performance ratio is
    :math:`r_{p,o} = t_{p,o} / \min_{o'} t_{p,o'}` and the profile is the fraction of the
    :math:`|P|` problems solved within a factor :math:`\tau` of the best,

    .. math:: \rho_o(\tau) = \frac{1}{|P|}\,\bigl|\{p : r_{p,o} \le \tau\}\bigr|.

    :math:`\rho_o(1)` is the fraction of problems where :math:`o` is (jointly) fastest;
    :math:`\rho_o(\infty)` the fraction it solves at all. A problem no optimizer solved
    counts as failed for all (every ratio inf). The score is AlgoPerf's normalized area
    :math:`\frac{1}{\tau_\max - 1}\int_1^{\tau_\max}\rho_o(\tau)\,d\tau
    = \frac{1}{|P|}\sum_p \max(0, \tau_\max - r_{p,o}) / (\tau_\max - 1)`, in [0, 1].

    Args:
        steps: problem -> optimizer -> steps to the target (a number > 0; ``math.inf`` or
            None for a failure); every problem must list the same optimizers.
        taus: the ratios (>= 1) at which :meth:`PerformanceProfiles.to_table` reports rho.
        tau_max: the score's upper limit (> 1; AlgoPerf uses 4).

    Example:
        >>> import math
        >>> from gradwise.bench import performance_profiles
        >>> profiles = performance_profiles({
        ...     "a": {"SGD": 100, "Adam": 50},
        ...     "b": {"SGD": 30, "Adam": math.inf},
        ... })
        >>> profiles.fraction_within("SGD", 1.0), profiles.fraction_within("SGD", 2.0)
        (0.5, 1.0)
        >>> round(profiles.score("SGD"), 3), profiles.score("Adam")
        (0.833, 0.5)

    References:
        Dolan & More, "Benchmarking optimization software with performance profiles",
        Math. Programming 2002; Dahl et al., "Benchmarking Neural Network Training
        Algorithms", 2023 (AlgoPerf).
    """
    problems, optimizers = _check_steps(steps)
    check("taus", _OWNER, taus, Satisfies(
        lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0
        and all(Interval(low=1.0).is_satisfied_by(t) and math.isfinite(t) for t in v),
        "a non-empty sequence of finite floats >= 1"))  # fmt: skip
    check("tau_max", _OWNER, tau_max, Interval(low=1.0, low_closed=False))
    if not math.isfinite(tau_max):
        raise ValueError(f"The 'tau_max' parameter of {_OWNER} must be finite. Got "
                         f"{tau_max!r} instead.")  # fmt: skip
    table = np.array(
        [[math.inf if steps[p][o] is None else float(steps[p][o]) for o in optimizers]  # type: ignore[arg-type]
         for p in problems], dtype=np.float64,
    )  # fmt: skip
    best = table.min(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):  # inf / inf where nobody solved the problem
        ratios = np.where(np.isinf(best), math.inf, table / best)
    return PerformanceProfiles(
        problems, optimizers, table, ratios, tuple(float(t) for t in taus), float(tau_max)
    )


def surface_steps(results: SurfaceResults) -> dict[str, dict[str, float]]:
    """The steps of a :func:`surface_benchmark` as :func:`performance_profiles` takes them.

    Example:
        >>> from gradwise.bench import surface_benchmark, surface_steps, tuned_optimizers
        >>> results = surface_benchmark(tuned_optimizers(["SGD"]), ["saddle"], max_steps=50)
        >>> surface_steps(results)
        {'saddle': {'SGD': 7.0}}
    """
    check("results", "surface_steps", results, Satisfies(
        lambda v: isinstance(v, SurfaceResults), "a SurfaceResults"))  # fmt: skip
    steps: dict[str, dict[str, float]] = {}
    for run in results.runs:
        steps.setdefault(run.surface, {})[run.optimizer] = (
            math.inf if run.steps is None else float(run.steps)
        )
    return steps


def _first_epoch_at(losses: Sequence[float], target: float) -> int | None:
    return next((epoch for epoch, loss in enumerate(losses) if loss <= target), None)


def quadratic_deep_steps(
    optimizers: Mapping[str, OptimizerSpec],
    targets: Sequence[float],
    *,
    problem: QuadraticDeep | None = None,
    learning_rates: Sequence[float] | None = None,
) -> dict[str, dict[str, float]]:
    """Steps each optimizer needs on ``quadratic_deep`` to bring the test loss to a target.

    Every target is a problem of its own (``"quadratic_deep<=92.5"``). The test loss is
    measured after each epoch, so the steps are a multiple of
    :attr:`QuadraticDeep.steps_per_epoch` (the first epoch whose loss is at most the
    target); a :class:`Tuned` optimizer runs once (seed 0) at every rate of its grid (its
    own, else ``learning_rates``, else :data:`QUADRATIC_DEEP_LEARNING_RATES`) and the
    fewest steps win, per target. Never reached: ``math.inf``.

    Example:
        >>> from gradwise.bench import make_quadratic_deep, quadratic_deep_steps
        >>> from gradwise.bench import tuned_optimizers
        >>> problem = make_quadratic_deep(num_epochs=3)
        >>> quadratic_deep_steps(tuned_optimizers(["SGD"]), [150.0], problem=problem,
        ...                      learning_rates=(0.01, 0.1))
        {'quadratic_deep<=150': {'SGD': 7.0}}
    """
    owner = "quadratic_deep_steps"
    check_optimizers(owner, optimizers)
    check("targets", owner, targets, Satisfies(
        lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0
        and all(Interval().is_satisfied_by(t) and math.isfinite(t) for t in v),
        "a non-empty sequence of finite floats"))  # fmt: skip
    is_problem = Satisfies(lambda v: v is None or isinstance(v, QuadraticDeep),
                           "None or a QuadraticDeep")  # fmt: skip
    check("problem", owner, problem, is_problem)
    if learning_rates is not None:
        check("learning_rates", owner, learning_rates, _LEARNING_RATES)
    problem = make_quadratic_deep() if problem is None else problem
    initial = problem.test_loss(problem.start)
    below = f"values below the initial test loss {initial:.6g} (else 0 steps reach them)"
    check("targets", owner, targets, Satisfies(lambda v: all(t < initial for t in v), below))
    names = [f"quadratic_deep<={t:.4g}" for t in targets]
    check("targets", owner, targets, Satisfies(
        lambda v: len(set(names)) == len(names),
        "distinct to 4 significant digits (each names a problem, quadratic_deep<=t)"))  # fmt: skip
    steps: dict[str, dict[str, float]] = {name: {} for name in names}
    for name, spec in optimizers.items():
        grid: Sequence[float | None] = (
            (spec.learning_rates or learning_rates or QUADRATIC_DEEP_LEARNING_RATES)
            if isinstance(spec, Tuned) else (None,)
        )  # fmt: skip
        runs = [run_quadratic_deep(problem, spec, lr=lr) for lr in grid]
        for target, row in zip(targets, steps.values(), strict=True):
            epochs = [_first_epoch_at(run.test_losses, target) for run in runs]
            reached = [epoch for epoch in epochs if epoch is not None]
            row[name] = float(min(reached) * problem.steps_per_epoch) if reached else math.inf
    return steps
