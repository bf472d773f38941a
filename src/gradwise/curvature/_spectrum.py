"""Spectral estimates of a :class:`Hessian`: Lanczos eigenvalues, trace estimators, SLQ."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

import torch
from torch import Tensor

from gradwise._validation import (
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    OneOf,
    check,
    check_all,
    invalid_value_error,
)
from gradwise.curvature._gauss_newton import linear_residual_trace, split_gauss_newton
from gradwise.curvature._lanczos import (
    condition_extremes,
    extreme_eigenpairs,
    quadrature,
    rademacher,
)

if TYPE_CHECKING:
    from gradwise.curvature._hessian import Hessian

Which = Literal["largest", "smallest"]

LANCZOS_CONSTRAINTS = {
    "tol": POSITIVE,
    "max_iterations": POSITIVE_INT,
    "seed": NON_NEGATIVE_INT,
}
#: What condition_number and find_negative_curvature ask of one Lanczos run.
BOTH_ENDS = "an int >= 2 (one step each for lambda_min and lambda_max)"


@dataclass(frozen=True)
class EigenvalueDensity:
    r"""The Hessian's eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al. 2019).

    For a random unit vector :math:`v`, :math:`v^\top f(H) v \approx \sum_i w_i f(\theta_i)`
    where :math:`\theta_i` are the eigenvalues of the Lanczos matrix :math:`T_m` (the
    nodes) and :math:`w_i` the squared first components of its eigenvectors (the weights,
    summing to 1). The quadrature is exact for polynomials of degree up to :math:`2m - 1`,
    and its expectation over Rademacher vectors is :math:`\operatorname{tr} f(H) / n`, the
    integral of :math:`f` against the eigenvalue density.

    Attributes:
        nodes: (num_probes, m) float64 quadrature nodes, one row per probe vector.
        weights: (num_probes, m) float64 weights; each row sums to 1.
        num_parameters: n, the Hessian's size (``n * moment(1)`` estimates the trace).
    """

    nodes: Tensor
    weights: Tensor
    num_parameters: int

    def moment(self, power: int) -> float:
        r""":math:`\operatorname{tr}(H^p)/n`: :math:`\mathbb{E}_v \sum_i w_i \theta_i^p`."""
        check("power", "EigenvalueDensity.moment", power, NON_NEGATIVE_INT)
        return float((self.weights * self.nodes.pow(power)).sum(dim=1).mean())

    def evaluate(self, grid: Tensor | Sequence[float], bandwidth: float) -> Tensor:
        r"""The density smoothed with a Gaussian kernel of width ``bandwidth``, on ``grid``.

        :math:`\rho(x) = \frac{1}{P}\sum_p \sum_i w_{p,i}\,\mathcal{N}(x; \theta_{p,i},
        \sigma^2)`; it integrates to 1. Returns a float64 tensor shaped like ``grid``.
        """
        check("bandwidth", "EigenvalueDensity.evaluate", bandwidth, POSITIVE)
        points = torch.as_tensor(grid, dtype=torch.float64)
        flat = points.reshape(-1, 1, 1)  # (points, 1, 1) against (probes, m)
        kernel = torch.exp(-0.5 * ((flat - self.nodes) / bandwidth) ** 2)
        kernel = kernel / (bandwidth * math.sqrt(2 * math.pi))
        return (kernel * self.weights).sum(dim=2).mean(dim=1).reshape(points.shape)


@dataclass(frozen=True)
class NegativeCurvature:
    """The extreme eigenvalues of the Hessian and the direction of most negative curvature.

    At a saddle point the gradient vanishes and the Hessian has eigenvalues of both signs
    (lecture 3); a step along ``direction`` (either sign) lowers the loss to second order by
    ``|min_eigenvalue| * t**2 / 2``.

    Attributes:
        min_eigenvalue: the smallest (most negative) Hessian eigenvalue.
        max_eigenvalue: the largest Hessian eigenvalue.
        direction: unit eigenvector of ``min_eigenvalue``, flat (``Hessian.unflatten``).
        gradient_norm: the L2 norm of the gradient at this point (near 0 at a saddle).
        found: whether ``min_eigenvalue < -tolerance * |max_eigenvalue|``.
    """

    min_eigenvalue: float
    max_eigenvalue: float
    direction: Tensor
    gradient_norm: float
    found: bool

    def __str__(self) -> str:
        verdict = "negative curvature" if self.found else "no significant negative curvature"
        return (
            f"{verdict}: eigenvalues in [{self.min_eigenvalue:.4g}, {self.max_eigenvalue:.4g}],"
            f" gradient norm {self.gradient_norm:.3g}"
        )


def eigenvalues_of(
    hessian: Hessian,
    k: int,
    which: Which,
    *,
    tol: float,
    max_iterations: int,
    seed: int,
    owner: str,
) -> tuple[Tensor, Tensor]:
    """The k extreme eigenvalues (sorted from the extreme inward) and their eigenvectors."""
    check_all(
        owner,
        {"k": k, "which": which, "tol": tol, "max_iterations": max_iterations, "seed": seed},
        {"k": POSITIVE_INT, "which": OneOf(("largest", "smallest")), **LANCZOS_CONSTRAINTS},
    )
    expected = f"an int >= k ({k} here)"
    if k > hessian.num_parameters:
        k = hessian.num_parameters
        expected = f"an int >= {k} here (k, capped at the model's {k} parameters)"
    check_enough_iterations(owner, max_iterations, k, expected, ", or a smaller k")
    largest, smallest = (k, 0) if which == "largest" else (0, k)
    values, vectors = extreme_eigenpairs(
        hessian, largest, smallest, tol=tol, max_iterations=max_iterations, seed=seed,
        owner=owner, each_relative=True,
    )  # fmt: skip
    return values.to(device=hessian.device, dtype=hessian.dtype), vectors


def check_enough_iterations(
    owner: str, max_iterations: int, needed: int, expected: str, fix: str = ""
) -> None:
    """Refuse a ``max_iterations`` below ``needed``, the number of eigenvalues asked for
    (``expected`` says so in words): each Lanczos step adds one Ritz value, so fewer steps
    cannot give them all. eigenvalues raised such a limit to k without a word."""
    if max_iterations < needed:
        error = invalid_value_error("max_iterations", owner, expected, max_iterations)
        raise ValueError(
            f"{error} Lanczos adds one eigenvalue estimate per step (one Hessian-vector "
            "product), so it needs at least one step per eigenvalue asked for. Pass "
            f"max_iterations >= {needed} (the default is 100){fix}."
        )


TraceMethod = Literal["gauss-newton", "stratified", "hutchinson", "hutch++"]
TRACE_METHODS: tuple[str, ...] = get_args(TraceMethod)
#: Probes per stratum spent on measuring where the variance is (``method="stratified"``).
PILOT_PROBES = 3


def trace_of(
    hessian: Hessian, *, num_probes: int, seed: int, method: TraceMethod, owner: str
) -> float:
    """Gauss-Newton split, stratified Hutchinson, Hutchinson or Hutch++, ``num_probes``
    products in all; the exact trace from the unit vectors where ``num_probes`` is at
    least the number of parameters."""
    check_all(
        owner,
        {"num_probes": num_probes, "seed": seed, "method": method},
        {
            "num_probes": POSITIVE_INT,
            "seed": NON_NEGATIVE_INT,
            "method": OneOf(TRACE_METHODS),
        },
    )
    if num_probes >= hessian.num_parameters:
        # The n unit vectors give sum_i e_i^T H e_i = tr H exactly, within the budget and
        # for every model; each estimator would still have variance (the Gauss-Newton
        # split on a network of linear layers can be exact with fewer, but n is small).
        return _exact_trace(hessian)
    generator = torch.Generator(device=hessian.device).manual_seed(seed)
    if method == "gauss-newton":
        return _gauss_newton(hessian, num_probes, generator)
    if method == "stratified":
        return _stratified(hessian, num_probes, generator)
    if method == "hutchinson":
        return _hutchinson(hessian, num_probes, generator)
    return _hutch_plus_plus(hessian, num_probes, generator)


def _exact_trace(hessian: Hessian) -> float:
    """sum_i (H e_i)_i over the n unit vectors e_i: tr H exactly, n products."""
    total = 0.0
    for index in range(hessian.num_parameters):
        unit = torch.zeros(hessian.num_parameters, dtype=hessian.dtype, device=hessian.device)
        unit[index] = 1
        total += float((hessian @ unit)[index])
    return total


def _gauss_newton(hessian: Hessian, num_probes: int, generator: torch.Generator) -> float:
    """tr G exactly plus tr(H - G): layer by layer for a network of linear layers (exact
    when its units fit the budget), otherwise by the stratified estimator; stratified where
    the split does not apply. The C backward passes of tr G count as C of the products,
    the products in the layers' outputs as one each."""
    split = split_gauss_newton(hessian, max_outputs=num_probes // 4)
    if isinstance(split, str):
        return _stratified(hessian, num_probes, generator)
    layered = linear_residual_trace(
        split.residual, max_products=num_probes - split.cost, generator=generator
    )
    if not isinstance(layered, str):
        hessian.num_products += split.cost + layered.cost
        return split.trace + layered.trace
    residual = _stratified(split.residual, num_probes - split.cost, generator)
    hessian.num_products += split.cost + split.residual.num_products
    return split.trace + residual


def _hutchinson(
    hessian: Hessian,
    num_probes: int,
    generator: torch.Generator,
    basis: Tensor | None = None,
) -> float:
    """Mean of z^T H z over Rademacher z, each projected off ``basis`` (n, k) if given."""
    total = 0.0
    for _ in range(num_probes):
        probe = rademacher(hessian, generator)
        if basis is not None:
            probe = probe - basis @ (basis.T @ probe)
        total += float(torch.dot(probe, hessian @ probe))
    return total / num_probes


def _stratified(hessian: Hessian, num_probes: int, generator: torch.Generator) -> float:
    """Hutchinson per stratum (a parameter tensor, or a run of them), Neyman-allocated.

    tr H is the sum of the diagonal blocks' traces, each estimated from probes that are
    Rademacher on its stratum and zero elsewhere, so the products of coordinates in two
    different tensors (most of the off-diagonal mass of a network's Hessian at
    initialization: 93-98% on the curvature tests' MLPs) add no variance. A pilot of
    ``PILOT_PROBES`` probes per stratum measures each diagonal block's off-diagonal mass
    (from the spread of z * (H z)_b), on which one probe's variance depends, and each
    column block's ||H_:b||_F^2 (the mean of ||H z||^2). From them it predicts the
    variance of the rest of the budget spent both ways: per stratum in proportion to the
    square root of that mass (Neyman allocation), or on whole-vector Hutchinson probes;
    and takes the smaller. Hutchinson's estimate is then averaged with the pilot's by
    inverse predicted variance (on a trained net, where half the off-diagonal mass is
    within tensors, this is the case). With too
    many tensors for the budget, consecutive tensors share a stratum.
    """
    sizes = hessian.parameter_sizes
    num_strata = min(len(sizes), num_probes // (2 * PILOT_PROBES))
    if num_strata < 2:
        return _hutchinson(hessian, num_probes, generator)
    bounds = [0, *itertools.accumulate(sizes)]
    cuts = [round(i * len(sizes) / num_strata) for i in range(num_strata + 1)]
    strata = [slice(bounds[cuts[i]], bounds[cuts[i + 1]]) for i in range(num_strata)]
    sums = [0.0] * num_strata
    counts = [0] * num_strata

    def probe(index: int) -> tuple[Tensor, Tensor]:
        stratum = strata[index]
        vector = torch.zeros(hessian.num_parameters, dtype=hessian.dtype, device=hessian.device)
        vector[stratum] = rademacher(hessian, generator, size=stratum.stop - stratum.start)
        product = hessian @ vector
        sums[index] += float(torch.dot(vector[stratum], product[stratum]))
        counts[index] += 1
        return vector, product

    def stratified_estimate() -> float:
        return sum(total / count for total, count in zip(sums, counts, strict=True))

    # Per stratum, the pilot's vectors z * (H z)_b have mean diag(H_bb) and, entry i,
    # variance sum_{j != i} H_ij^2 over j in b: their sample variance, summed over
    # entries, is an unbiased estimate of the off-diagonal mass of H_bb, and twice it the
    # variance of one probe of the stratum.
    off_diagonal = [0.0] * num_strata  # sum_{i != j in b} H_ij^2
    diagonal = [0.0] * num_strata  # sum_{i in b} H_ii^2
    column_squares = 0.0  # ||H||_F^2 = sum_b ||H_:b||_F^2
    for index in range(num_strata):
        stratum = strata[index]
        pilot_vectors = []
        for _ in range(PILOT_PROBES):
            vector, product = probe(index)
            pilot_vectors.append(vector[stratum] * product[stratum])
            column_squares += float(product.square().sum()) / PILOT_PROBES
        stacked = torch.stack(pilot_vectors)
        block_square = float(stacked.square().sum()) / PILOT_PROBES  # ||H_bb||_F^2
        spread = float((stacked - stacked.mean(0)).square().sum()) / (PILOT_PROBES - 1)
        off_diagonal[index] = min(max(spread, 0.0), block_square)
        diagonal[index] = block_square - off_diagonal[index]
    block_deviations = [math.sqrt(2 * mass) for mass in off_diagonal]  # one probe's sd
    remaining = num_probes - PILOT_PROBES * num_strata
    hutchinson_variance = 2 * max(column_squares - sum(diagonal), 0.0) / remaining
    if sum(block_deviations) ** 2 / remaining <= hutchinson_variance:
        for index, extra in enumerate(_neyman(remaining, block_deviations)):
            for _ in range(extra):
                probe(index)
        return stratified_estimate()
    pilot_variance = 2 * sum(off_diagonal) / PILOT_PROBES
    weight = hutchinson_variance / (hutchinson_variance + pilot_variance)  # the pilot's
    pilot = stratified_estimate()
    return weight * pilot + (1 - weight) * _hutchinson(hessian, remaining, generator)


def _neyman(total: int, weights: list[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders; equal if all 0)."""
    weight_sum = sum(weights)
    shares = [total * w / weight_sum if weight_sum > 0 else total / len(weights) for w in weights]
    counts = [int(share) for share in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: counts[i] - shares[i])
    for index in by_remainder[: total - sum(counts)]:
        counts[index] += 1
    return counts


def _hutch_plus_plus(hessian: Hessian, num_products: int, generator: torch.Generator) -> float:
    """Hutch++: a third of the products sketch the range, a third take its trace exactly.

    Q = orth(H S) for a Rademacher (n, k) sketch S, k = num_products // 3 (below n);
    tr(H) = tr(Q^T H Q) + tr((I - QQ^T) H (I - QQ^T)), the first with k products, the
    second by Hutchinson with the remaining ``num_products - 2k``.
    """
    size = num_products // 3  # below n: trace_of takes the exact trace from n products
    if size == 0:
        return _hutchinson(hessian, num_products, generator)
    sketch = torch.stack([hessian @ rademacher(hessian, generator) for _ in range(size)], 1)
    basis = torch.linalg.qr(sketch).Q  # (n, size), orthonormal columns
    exact = sum(float(torch.dot(column, hessian @ column)) for column in basis.T)
    remaining = num_products - 2 * size
    return exact + _hutchinson(hessian, remaining, generator, basis)


def density_of(
    hessian: Hessian, *, num_iterations: int, num_probes: int, seed: int, owner: str
) -> EigenvalueDensity:
    """Stochastic Lanczos quadrature from ``num_probes`` Rademacher vectors."""
    check_all(
        owner,
        {"num_iterations": num_iterations, "num_probes": num_probes, "seed": seed},
        {"num_iterations": POSITIVE_INT, "num_probes": POSITIVE_INT, "seed": NON_NEGATIVE_INT},
    )
    generator = torch.Generator(device=hessian.device).manual_seed(seed)
    nodes, weights = [], []
    for _ in range(num_probes):
        values, vectors = quadrature(hessian, num_iterations, generator).ritz()
        nodes.append(values)
        weights.append(vectors[0] ** 2)
    return EigenvalueDensity(torch.stack(nodes), torch.stack(weights), hessian.num_parameters)


def extremes_of(
    hessian: Hessian, *, tol: float, max_iterations: int, seed: int, owner: str
) -> tuple[float, float, Tensor]:
    """(lambda_min, lambda_max, eigenvector of lambda_min) from one Lanczos run."""
    check_all(
        owner, {"tol": tol, "max_iterations": max_iterations, "seed": seed}, LANCZOS_CONSTRAINTS
    )
    check_enough_iterations(owner, max_iterations, min(2, hessian.num_parameters), BOTH_ENDS)
    # The question is whether lambda_min < -tolerance * |lambda_max|: both to tol of the
    # largest |eigenvalue| answer it, and a lambda_min near 0 need not converge to itself.
    values, vectors = extreme_eigenpairs(
        hessian, 1, 1, tol=tol, max_iterations=max_iterations, seed=seed, owner=owner,
        each_relative=False,
    )  # fmt: skip
    # values = (lambda_max, lambda_min); vectors' columns in the same order.
    return float(values[1]), float(values[0]), vectors[:, 1]


def negative_curvature_of(
    hessian: Hessian,
    *,
    tolerance: float,
    tol: float,
    max_iterations: int,
    seed: int,
    owner: str,
) -> NegativeCurvature:
    check("tolerance", owner, tolerance, NON_NEGATIVE)
    low, high, direction = extremes_of(
        hessian, tol=tol, max_iterations=max_iterations, seed=seed, owner=owner
    )
    gradient_norm = float(torch.linalg.vector_norm(hessian.gradient()))
    found = low < -tolerance * abs(high)
    return NegativeCurvature(low, high, direction, gradient_norm, found)


def condition_number_of(
    hessian: Hessian, *, tol: float, max_iterations: int, seed: int, owner: str
) -> float:
    """lambda_max / lambda_min, each to ``tol`` of itself; inf where H is not positive
    definite to working precision."""
    check_all(
        owner, {"tol": tol, "max_iterations": max_iterations, "seed": seed}, LANCZOS_CONSTRAINTS
    )
    check_enough_iterations(owner, max_iterations, min(2, hessian.num_parameters), BOTH_ENDS)
    extremes = condition_extremes(
        hessian, tol=tol, max_iterations=max_iterations, seed=seed, owner=owner
    )
    if extremes is None:
        return math.inf
    low, high = extremes
    return high / low
