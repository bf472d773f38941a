"""Run optimizers on the unit tests and score them against the best-tuned plain SGD."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from gradwise._validation import POSITIVE, POSITIVE_INT, Interval, Satisfies, check
from gradwise.bench._unit_tests import UNIT_TESTS, UnitTest
from gradwise.optim import SGD, GradientTransform, Optimizer
from gradwise.viz._trajectory import step_on

OptimizerFactory = Callable[[list[Tensor]], torch.optim.Optimizer]
"""A function from the parameter list to an optimizer: ``lambda params: Adam(params)``."""

LearningRateFactory = Callable[[list[Tensor], float], torch.optim.Optimizer]
"""A function from the parameters and a learning rate to an optimizer."""

UNIT_TEST_LEARNING_RATES: tuple[float, ...] = tuple(10.0 ** (k / 2) for k in range(-8, 3))
"""The log grid the unit tests tune on: 1e-4 to 10, two points per decade."""

SOLVED_FRACTION = 1e-6
"""A median loss gap below this fraction of the start's gap counts as solved (a tie)."""


@dataclass(frozen=True)
class Tuned:
    """An optimizer whose learning rate the benchmark tunes on a log grid, per problem.

    Example:
        >>> from gradwise.bench import Tuned
        >>> from gradwise.optim import Adam
        >>> adam = Tuned(lambda params, lr: Adam(params, lr=lr), learning_rates=(1e-3, 1e-2))
        >>> adam.learning_rates
        (0.001, 0.01)
    """

    factory: LearningRateFactory
    learning_rates: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check("factory", "Tuned", self.factory, Satisfies(callable, "a callable (params, lr)"))
        if self.learning_rates is not None:
            check("learning_rates", "Tuned", self.learning_rates, _LEARNING_RATES)
            object.__setattr__(self, "learning_rates", tuple(map(float, self.learning_rates)))


OptimizerSpec = OptimizerFactory | GradientTransform | Tuned
"""What the benchmarks accept: a factory, a gradient transform, or a :class:`Tuned` factory."""

_LEARNING_RATES = Satisfies(
    lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0
    and all(POSITIVE.is_satisfied_by(x) for x in v),
    "a non-empty sequence of finite floats > 0",
)  # fmt: skip


def make_optimizer(spec: OptimizerSpec, params: list[Tensor], lr: float | None) -> Any:
    """The optimizer of ``spec`` over ``params`` (``lr`` only for :class:`Tuned`)."""
    if isinstance(spec, Tuned):
        optimizer = spec.factory(params, float(lr if lr is not None else 0.0))
    elif isinstance(spec, GradientTransform):
        optimizer = Optimizer(params, spec)
    else:
        optimizer = spec(params)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            "An optimizer of the benchmark must be a GradientTransform, a function params -> "
            "torch.optim.Optimizer, or Tuned(lambda params, lr: ...). "
            f"Got one returning {type(optimizer).__name__} instead."
        )
    return optimizer


def check_optimizers(owner: str, optimizers: Any) -> None:
    """The one check of an ``optimizers`` mapping: non-empty, str labels, valid specs."""
    check("optimizers", owner, optimizers, Satisfies(
        lambda v: isinstance(v, Mapping) and len(v) > 0
        and all(isinstance(k, str) and (isinstance(s, Tuned | GradientTransform) or callable(s))
                for k, s in v.items()),
        "a non-empty mapping from labels to optimizer factories, transforms or Tuned",
    ))  # fmt: skip


def run_unit_test(
    test: UnitTest,
    optimizer: OptimizerSpec,
    *,
    lr: float | None = None,
    num_steps: int = 100,
    num_runs: int = 10,
    seed: int = 0,
) -> Tensor:
    r"""Run one optimizer on one unit test; the final noise-free loss gap of each run.

    The ``num_runs`` runs are independent parameters of one optimizer (one float64 tensor
    of shape ``(dim,)`` each, all starting at ``test.start``), so they advance together;
    each step draws one noise sample per run and coordinate from a generator seeded with
    ``seed``, so every optimizer sees the same samples. A run that diverged has gap inf.
    An optimizer that couples its parameters (global-norm clipping) couples the runs.

    Args:
        test: the unit test (:func:`get_unit_test`, :func:`make_unit_test`).
        optimizer: a factory ``params -> optimizer``, a gradient transform, or
            :class:`Tuned` with ``lr`` given.
        lr: the learning rate for a :class:`Tuned` optimizer.
        num_steps: the optimizer steps per run.
        num_runs: the independent runs (seeds).
        seed: the noise generator's seed.

    Returns:
        Shape ``(num_runs,)``: :meth:`UnitTest.loss_gap` after the last step.

    Example:
        >>> from gradwise.bench import get_unit_test, run_unit_test
        >>> from gradwise.optim import SGD
        >>> test = get_unit_test("quadratic/none/scale=1/dim=1")
        >>> gaps = run_unit_test(test, lambda params: SGD(params, lr=1.0), num_runs=2)
        >>> gaps.tolist()
        [0.0, 0.0]
    """
    owner = "run_unit_test"
    if not isinstance(test, UnitTest):
        raise TypeError(f"The 'test' parameter of {owner} must be a UnitTest. "
                        f"Got {type(test).__name__} instead.")  # fmt: skip
    check("num_steps", owner, num_steps, POSITIVE_INT)
    check("num_runs", owner, num_runs, POSITIVE_INT)
    check("seed", owner, seed, Interval(low=0, kind="int"))
    params = [
        torch.full((test.dim,), test.start, dtype=torch.float64, requires_grad=True)
        for _ in range(num_runs)
    ]
    instance = make_optimizer(optimizer, params, lr)
    generator = torch.Generator().manual_seed(seed)
    for step in range(num_steps):
        draws = test.noise.sample((num_runs, test.dim), generator)  # (runs, dim)

        def loss(draws: Tensor = draws, step: int = step) -> Tensor:
            return test.sample_loss(torch.stack(params), draws, step).sum()

        step_on(instance, loss)
    with torch.no_grad():
        gaps = test.loss_gap(torch.stack(params), num_steps)
    return torch.where(torch.isfinite(gaps), gaps, torch.inf)


@dataclass(frozen=True)
class UnitTestScores:
    """The unit tests' scores: per test and optimizer, median gap over SGD's (1 = as SGD).

    ``scores[i, j]`` is optimizer ``j``'s median final loss gap on test ``i`` divided by
    the best-tuned SGD's (gaps below :data:`SOLVED_FRACTION` of the start's gap are raised
    to it, so two solved runs tie at 1); lower is better. ``losses`` holds the medians,
    ``learning_rates`` the tuned rates (NaN for an untuned optimizer).
    """

    tests: tuple[str, ...]
    optimizers: tuple[str, ...]
    scores: NDArray[np.float64]
    losses: NDArray[np.float64]
    learning_rates: NDArray[np.float64]
    baseline_losses: NDArray[np.float64]
    baseline_learning_rates: NDArray[np.float64]
    num_steps: int
    num_runs: int
    seed: int

    def to_table(self) -> Any:
        """A :class:`gradwise.report.Table`: one row per test, then the median score."""
        from gradwise.report import Table

        columns = ["test", "SGD lr", *self.optimizers]
        rows: list[list[Any]] = [
            [test, float(self.baseline_learning_rates[i]),
             *(_finite(self.scores[i, j]) for j in range(len(self.optimizers)))]
            for i, test in enumerate(self.tests)
        ]  # fmt: skip
        medians = [_finite(float(np.nanmedian(self.scores[:, j]))) for j in range(
            len(self.optimizers))]  # fmt: skip
        rows.append(["median score", None, *medians])
        title = (f"Unit tests (Schaul et al. 2014): median final loss gap / tuned SGD's, "
                 f"{self.num_steps} steps, {self.num_runs} runs, seed {self.seed}; "
                 "lower is better")  # fmt: skip
        return Table(title, columns, rows)

    def grid_png(self) -> bytes:
        """The coloured grid (rows tests, columns optimizers, colour log10 score), PNG."""
        from gradwise.bench._report import score_grid_png

        return score_grid_png(self.scores, self.tests, self.optimizers)

    def write_grid(self, path: str | Path) -> Path:
        """Write :meth:`grid_png` to ``path`` (folders made); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.grid_png())
        return path


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _median_gap(
    test: UnitTest, spec: OptimizerSpec, lr: float | None, settings: dict[str, int]
) -> float:
    return float(run_unit_test(test, spec, lr=lr, **settings).median())


def _best(
    test: UnitTest, spec: OptimizerSpec, grid: tuple[float, ...] | None, settings: dict[str, int]
) -> tuple[float, float]:
    """(median gap, learning rate) of an untuned spec, or of the best rate on its grid."""
    if not isinstance(spec, Tuned) or grid is None:
        return _median_gap(test, spec, None, settings), math.nan
    results = [(_median_gap(test, spec, lr, settings), lr) for lr in grid]
    return min(results, key=lambda pair: (math.isnan(pair[0]), pair[0]))


def _sgd(params: list[Tensor], lr: float) -> torch.optim.Optimizer:
    return SGD(params, lr=lr)


def score_optimizers(
    optimizers: Mapping[str, OptimizerSpec],
    tests: Sequence[str] | None = None,
    *,
    num_steps: int = 100,
    num_runs: int = 10,
    seed: int = 0,
    learning_rates: Sequence[float] = UNIT_TEST_LEARNING_RATES,
) -> UnitTestScores:
    r"""Score optimizers on Schaul et al.'s unit tests, normalized by the best-tuned SGD.

    On each test, every optimizer runs ``num_runs`` runs of ``num_steps`` steps
    (:func:`run_unit_test`, the same noise for all); its loss is the median over runs of
    the final noise-free loss gap. Plain :class:`gradwise.optim.SGD` runs at every rate of
    ``learning_rates`` and its best median is the baseline; a :class:`Tuned` optimizer is
    tuned on its own grid (default ``learning_rates``) the same way. The score is

    .. math:: \text{score} = \frac{\max(m, \epsilon)}{\max(m_\text{SGD}, \epsilon)},
       \quad \epsilon = 10^{-6} \cdot \text{gap at the start}

    so 1 means "as good as tuned SGD", below 1 better.

    Args:
        optimizers: label -> factory ``params -> optimizer``, gradient transform, or
            :class:`Tuned`.
        tests: names from :data:`UNIT_TEST_NAMES` (default: all of them).
        num_steps: steps per run.
        num_runs: runs per test (the median is over them).
        seed: the noise seed (the same for every test and optimizer).
        learning_rates: the log grid for SGD and for :class:`Tuned` without its own.

    Example:
        >>> from gradwise.bench import Tuned, score_optimizers
        >>> from gradwise.optim import SGD
        >>> result = score_optimizers(
        ...     {"SGD": Tuned(lambda params, lr: SGD(params, lr=lr))},
        ...     ["quadratic/additive-gauss/scale=1/dim=1"], num_steps=20, num_runs=3,
        ... )
        >>> result.scores.tolist()
        [[1.0]]

    Reference:
        T. Schaul, I. Antonoglou, D. Silver, "Unit Tests for Stochastic Optimization",
        ICLR 2014 (arXiv:1312.6055).
    """
    owner = "score_optimizers"
    check_optimizers(owner, optimizers)
    names = tuple(UNIT_TESTS) if tests is None else tests
    check("tests", owner, names, Satisfies(
        lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0
        and all(name in UNIT_TESTS for name in v),
        "a non-empty sequence of names from UNIT_TEST_NAMES"))  # fmt: skip
    check("num_steps", owner, num_steps, POSITIVE_INT)
    check("num_runs", owner, num_runs, POSITIVE_INT)
    check("seed", owner, seed, Interval(low=0, kind="int"))
    check("learning_rates", owner, learning_rates, _LEARNING_RATES)
    grid = tuple(float(lr) for lr in learning_rates)
    settings = {"num_steps": num_steps, "num_runs": num_runs, "seed": seed}
    shape = (len(names), len(optimizers))
    losses, chosen = np.full(shape, np.nan), np.full(shape, np.nan)
    baseline, baseline_lr = np.full(len(names), np.nan), np.full(len(names), np.nan)
    scores = np.full(shape, np.nan)
    for i, name in enumerate(names):
        test = UNIT_TESTS[name]
        start = torch.full((1, test.dim), test.start, dtype=torch.float64)
        floor = SOLVED_FRACTION * float(test.loss_gap(start, 0))
        baseline[i], baseline_lr[i] = _best(test, Tuned(_sgd), grid, settings)
        for j, spec in enumerate(optimizers.values()):
            own = spec.learning_rates if isinstance(spec, Tuned) else None
            losses[i, j], chosen[i, j] = _best(test, spec, own or grid, settings)
            scores[i, j] = max(losses[i, j], floor) / max(baseline[i], floor)
    return UnitTestScores(
        tuple(names), tuple(optimizers), scores, losses, chosen, baseline, baseline_lr,
        num_steps, num_runs, seed,
    )  # fmt: skip


_NAMED: dict[str, LearningRateFactory] = {
    "SGD": lambda params, lr: SGD(params, lr=lr),
    "Momentum": lambda params, lr: SGD(params, lr=lr, momentum=0.9),
    "Nesterov": lambda params, lr: SGD(params, lr=lr, momentum=0.9, nesterov=True),
    "Adam": lambda params, lr: _optim().Adam(params, lr=lr),
    "AMSGrad": lambda params, lr: _optim().Adam(params, lr=lr, amsgrad=True),
    "RMSprop": lambda params, lr: _optim().RMSprop(params, lr=lr),
    "Adagrad": lambda params, lr: _optim().Adagrad(params, lr=lr),
    "NAdam": lambda params, lr: _optim().NAdam(params, lr=lr),
    "RAdam": lambda params, lr: _optim().RAdam(params, lr=lr),
}

OPTIMIZER_NAMES: tuple[str, ...] = tuple(_NAMED)
"""The names :func:`tuned_optimizers` knows (momentum 0.9 for Momentum and Nesterov)."""


def _optim() -> Any:
    from gradwise import optim

    return optim


def tuned_optimizers(names: Sequence[str] = ("SGD", "Momentum", "Adam")) -> dict[str, Tuned]:
    """:class:`Tuned` gradwise optimizers by name (:data:`OPTIMIZER_NAMES`), defaults kept.

    Example:
        >>> from gradwise.bench import tuned_optimizers
        >>> list(tuned_optimizers(["Adam", "RMSprop"]))
        ['Adam', 'RMSprop']
    """
    check("names", "tuned_optimizers", names, Satisfies(
        lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0
        and all(name in _NAMED for name in v),
        "a non-empty sequence of names from " + ", ".join(OPTIMIZER_NAMES)))  # fmt: skip
    return {name: Tuned(_NAMED[name]) for name in names}
