"""DeepOBS's ``quadratic_deep`` problem, rebuilt from its definition, with tuned baselines."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gradwise._validation import NON_NEGATIVE, POSITIVE, POSITIVE_INT, Interval, Satisfies, check
from gradwise.bench._scoring import (
    _LEARNING_RATES,
    OptimizerSpec,
    Tuned,
    check_optimizers,
    make_optimizer,
)
from gradwise.viz._trajectory import step_on

QUADRATIC_DEEP_LEARNING_RATES: tuple[float, ...] = tuple(
    10.0 ** (-5 + 7 * k / 35) for k in range(36)
)
"""DeepOBS's tuning grid: 36 learning rates log-spaced from 1e-5 to 1e2."""

QUADRATIC_DEEP_PUBLISHED: dict[str, float] = {"SGD": 87.53, "Adam": 87.12}
"""Final test losses of DeepOBS's published baselines on ``quadratic_deep`` (as given in
issue 9; Schneider, Balles & Hennig 2019)."""

_NON_NEGATIVE_INT = Interval(low=0.0, kind="int")


@dataclass(frozen=True)
class QuadraticDeep:
    r"""A noisy quadratic :math:`\ell(\theta; x) = \tfrac12 (\theta - x)^\top Q (\theta - x)`.

    The per-example loss of a sample :math:`x \sim N(0, \sigma^2 I)`; a batch's loss is the
    mean. The expected loss is
    :math:`\tfrac12 \theta^\top Q \theta + \tfrac12 \sigma^2 \operatorname{tr} Q`, so the
    optimum is :math:`\theta = 0` and the noise floor :math:`\tfrac12 \sigma^2
    \operatorname{tr} Q` (:attr:`noise_floor`). Built by :func:`make_quadratic_deep`.

    Attributes:
        hessian: :math:`Q`, shape ``(dim, dim)``, float64.
        eigenvalues: :math:`Q`'s eigenvalues as drawn (unsorted), shape ``(dim,)``.
        train_inputs: the training samples, shape ``(train_size, dim)``.
        test_inputs: the test samples, shape ``(test_size, dim)``.
        noise_std: :math:`\sigma`.
        batch_size: samples per step (the last incomplete batch of an epoch is dropped).
        num_epochs: passes over the training samples.
        start: the initial :math:`\theta` (all ones, as in DeepOBS).
    """

    hessian: Tensor
    eigenvalues: Tensor
    train_inputs: Tensor
    test_inputs: Tensor
    noise_std: float
    batch_size: int
    num_epochs: int
    start: Tensor

    @property
    def noise_floor(self) -> float:
        r"""The expected loss at the optimum, :math:`\tfrac12 \sigma^2 \operatorname{tr} Q`."""
        return 0.5 * self.noise_std**2 * float(torch.trace(self.hessian))

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch."""
        return len(self.train_inputs) // self.batch_size

    def loss(self, theta: Tensor, inputs: Tensor) -> Tensor:
        """The mean of the per-example losses of ``inputs`` (shape ``(n, dim)``) at ``theta``."""
        residual = theta.unsqueeze(0) - inputs  # (n, dim)
        return 0.5 * ((residual @ self.hessian) * residual).sum(dim=1).mean()

    def test_loss(self, theta: Tensor) -> float:
        """The loss on the whole test set."""
        with torch.no_grad():
            return float(self.loss(theta.to(self.hessian.dtype), self.test_inputs))


def random_rotation(dim: int, generator: torch.Generator) -> Tensor:
    """A Haar-random orthogonal matrix: QR of a Gaussian matrix with R's diagonal made positive."""
    gaussian = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def make_quadratic_deep(
    *,
    num_small: int = 90,
    num_large: int = 10,
    noise_std: float = 0.6,
    train_size: int = 1000,
    test_size: int = 1000,
    batch_size: int = 128,
    num_epochs: int = 100,
    seed: int = 42,
) -> QuadraticDeep:
    r"""DeepOBS's ``quadratic_deep`` test problem, rebuilt from its definition.

    :math:`Q = R^\top D R` with :math:`D` diagonal, ``num_small`` eigenvalues uniform in
    [0, 1] and ``num_large`` uniform in [30, 60] (the "deep-learning-like" spectrum: a bulk
    near 0 and a few large outliers), :math:`R` a fixed random rotation. Training and test
    samples are :math:`x \sim N(0, \sigma^2 I)`; DeepOBS uses :math:`\sigma = 0.6`, 1,000
    samples each, batch size 128 and 100 epochs, starting from :math:`\theta = 1`.

    Args:
        num_small: eigenvalues drawn from [0, 1].
        num_large: eigenvalues drawn from [30, 60].
        noise_std: :math:`\sigma`, the samples' standard deviation.
        train_size: training samples.
        test_size: test samples.
        batch_size: samples per step.
        num_epochs: passes over the training samples.
        seed: seeds the spectrum, rotation and samples (not the DeepOBS matrix itself:
            that one came from numpy's generator and is not reproduced bit for bit).

    Example:
        >>> from gradwise.bench import make_quadratic_deep
        >>> problem = make_quadratic_deep()
        >>> tuple(problem.hessian.shape), problem.steps_per_epoch
        ((100, 100), 7)

    Reference:
        Schneider, Balles & Hennig, "DeepOBS: A Deep Learning Optimizer Benchmark Suite",
        ICLR 2019.
    """
    owner = "make_quadratic_deep"
    for name, value in (("num_small", num_small), ("num_large", num_large)):
        check(name, owner, value, _NON_NEGATIVE_INT)
    check("num_small", owner, num_small + num_large, Satisfies(
        lambda v: v > 0, "positive together with num_large"))  # fmt: skip
    check("noise_std", owner, noise_std, NON_NEGATIVE)
    for name, value in (("train_size", train_size), ("test_size", test_size),
                        ("num_epochs", num_epochs)):  # fmt: skip
        check(name, owner, value, POSITIVE_INT)
    check("batch_size", owner, batch_size, Interval(low=1, high=train_size, kind="int"))
    check("seed", owner, seed, _NON_NEGATIVE_INT)
    generator = torch.Generator().manual_seed(seed)
    options: dict[str, Any] = {"generator": generator, "dtype": torch.float64}
    eigenvalues = torch.cat([torch.rand(num_small, **options),
                             30.0 + 30.0 * torch.rand(num_large, **options)])  # fmt: skip
    dim = num_small + num_large
    rotation = random_rotation(dim, generator)
    hessian = rotation.T @ torch.diag(eigenvalues) @ rotation
    hessian = 0.5 * (hessian + hessian.T)  # exactly symmetric
    return QuadraticDeep(
        hessian=hessian,
        eigenvalues=eigenvalues,
        train_inputs=noise_std * torch.randn(train_size, dim, **options),
        test_inputs=noise_std * torch.randn(test_size, dim, **options),
        noise_std=float(noise_std),
        batch_size=batch_size,
        num_epochs=num_epochs,
        start=torch.ones(dim, dtype=torch.float64),
    )


@dataclass(frozen=True)
class QuadraticDeepRun:
    """One run: the test loss after each epoch (index 0: before training) and at the end."""

    learning_rate: float | None
    seed: int
    test_losses: tuple[float, ...]

    @property
    def final_test_loss(self) -> float:
        """The test loss after the last epoch (inf if the run diverged)."""
        return self.test_losses[-1]


def run_quadratic_deep(
    problem: QuadraticDeep, optimizer: OptimizerSpec, *, lr: float | None = None, seed: int = 0
) -> QuadraticDeepRun:
    """Train :math:`\\theta` on ``problem`` with one optimizer; the test loss per epoch.

    Each epoch shuffles the training samples (generator seeded with ``seed``) and takes
    :attr:`QuadraticDeep.steps_per_epoch` steps on full batches. A run whose loss stops
    being finite stops there with test loss inf.

    Example:
        >>> from gradwise.bench import make_quadratic_deep, run_quadratic_deep
        >>> from gradwise.optim import SGD
        >>> problem = make_quadratic_deep(num_epochs=2)
        >>> run = run_quadratic_deep(problem, lambda params: SGD(params, lr=0.01))
        >>> run.final_test_loss < run.test_losses[0]
        True
    """
    is_problem = Satisfies(lambda v: isinstance(v, QuadraticDeep), "a QuadraticDeep")
    check("problem", "run_quadratic_deep", problem, is_problem)
    check_optimizers("run_quadratic_deep", {"optimizer": optimizer})
    if isinstance(optimizer, Tuned):
        check("lr", "run_quadratic_deep", lr, POSITIVE)
    check("seed", "run_quadratic_deep", seed, _NON_NEGATIVE_INT)
    theta = problem.start.clone().requires_grad_(True)
    opt = make_optimizer(optimizer, [theta], lr)
    generator = torch.Generator().manual_seed(seed)
    losses = [problem.test_loss(theta.detach())]
    for _ in range(problem.num_epochs):
        order = torch.randperm(len(problem.train_inputs), generator=generator)
        for step in range(problem.steps_per_epoch):
            batch = problem.train_inputs[order[step * problem.batch_size:(step + 1)
                                               * problem.batch_size]]  # fmt: skip

            def loss(batch: Tensor = batch) -> Tensor:
                return problem.loss(theta, batch)

            step_on(opt, loss)
        losses.append(problem.test_loss(theta.detach()))
        if not math.isfinite(losses[-1]):
            losses[-1] = math.inf
            break
    return QuadraticDeepRun(None if lr is None else float(lr), seed, tuple(losses))


@dataclass(frozen=True)
class QuadraticDeepResults:
    """Each optimizer's tuning sweep and its reruns at the chosen rate, with the table."""

    noise_floor: float
    sweeps: dict[str, tuple[QuadraticDeepRun, ...]]
    reruns: dict[str, tuple[QuadraticDeepRun, ...]]

    def final_test_loss(self, optimizer: str) -> float:
        """Mean final test loss of the reruns of ``optimizer`` at its chosen rate."""
        runs = self.reruns[optimizer]
        return sum(run.final_test_loss for run in runs) / len(runs)

    def to_table(self) -> Any:
        """A :class:`gradwise.report.Table`: one row per optimizer, ours beside DeepOBS's."""
        from gradwise.report import Table

        rows: list[list[Any]] = []
        for name, runs in self.reruns.items():
            finals = torch.tensor([run.final_test_loss for run in runs], dtype=torch.float64)
            std = float(finals.std()) if len(runs) > 1 else math.nan
            mean = float(finals.mean())
            rows.append([name, runs[0].learning_rate, len(runs), mean, std,
                         mean - self.noise_floor, QUADRATIC_DEEP_PUBLISHED.get(name)])  # fmt: skip
        title = (f"quadratic_deep: final test loss, mean over seeds at the tuned rate "
                 f"(noise floor of this matrix {self.noise_floor:.2f})")  # fmt: skip
        columns = ["optimizer", "tuned lr", "seeds", "final test loss", "std",
                   "above floor", "DeepOBS"]  # fmt: skip
        return Table(title, columns, rows)


def quadratic_deep_benchmark(
    optimizers: Mapping[str, OptimizerSpec],
    *,
    problem: QuadraticDeep | None = None,
    learning_rates: tuple[float, ...] | None = None,
    num_seeds: int = 10,
) -> QuadraticDeepResults:
    """Tune each optimizer's learning rate on ``quadratic_deep``, then rerun it over seeds.

    DeepOBS's protocol: a :class:`Tuned` optimizer runs once (seed 0) at every rate of its
    grid (its own, else ``learning_rates``, else :data:`QUADRATIC_DEEP_LEARNING_RATES`);
    the rate with the lowest final test loss is rerun with seeds ``0 .. num_seeds - 1``.
    Other optimizers are only rerun.

    Example:
        >>> from gradwise.bench import make_quadratic_deep, quadratic_deep_benchmark
        >>> from gradwise.bench import tuned_optimizers
        >>> problem = make_quadratic_deep(num_epochs=2)
        >>> results = quadratic_deep_benchmark(tuned_optimizers(["SGD"]), problem=problem,
        ...                                    learning_rates=(0.001, 0.01), num_seeds=2)
        >>> results.reruns["SGD"][0].learning_rate
        0.01
    """
    owner = "quadratic_deep_benchmark"
    check_optimizers(owner, optimizers)
    check("num_seeds", owner, num_seeds, POSITIVE_INT)
    if learning_rates is not None:
        check("learning_rates", owner, learning_rates, _LEARNING_RATES)
    problem = make_quadratic_deep() if problem is None else problem
    sweeps: dict[str, tuple[QuadraticDeepRun, ...]] = {}
    reruns: dict[str, tuple[QuadraticDeepRun, ...]] = {}
    for name, spec in optimizers.items():
        lr = None
        if isinstance(spec, Tuned):
            grid = spec.learning_rates or learning_rates or QUADRATIC_DEEP_LEARNING_RATES
            sweeps[name] = tuple(run_quadratic_deep(problem, spec, lr=rate) for rate in grid)
            lr = min(sweeps[name], key=lambda run: run.final_test_loss).learning_rate
        reruns[name] = tuple(
            run_quadratic_deep(problem, spec, lr=lr, seed=seed) for seed in range(num_seeds)
        )
    return QuadraticDeepResults(problem.noise_floor, sweeps, reruns)
