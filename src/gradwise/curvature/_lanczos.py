"""Lanczos with full reorthogonalization on a :class:`Hessian`, and what it gives."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from gradwise.curvature._hessian import Hessian

# Below this multiple of machine epsilon times the largest |Ritz value|, a Lanczos
# coefficient beta counts as zero: the Krylov space is invariant and the iteration restarts
# from a fresh random vector orthogonal to it (finding repeated eigenvalues that way).
_BREAKDOWN = 1e3
# At most this multiple of machine epsilon times lambda_max, an eigenvalue is zero to
# working precision (the condition number is inf; eigenvalues converge to this absolute
# accuracy, not to tol of themselves). Measured: the exact zeros of a rank-deficient
# least-squares Hessian came out as Ritz values of +-5 eps lambda_max in float64, while
# float32 products still resolved lambda_min = 1e-4 lambda_max (~20 eps) to 1-3%.
_RESOLUTION = 1e2
# At most this multiple of the products' measured error (see Tridiagonal.product_error), an
# eigenvalue is rounding too. A genuine Hessian's products err by a few eps ||H|| (2.7 eps
# ||H|| for a float32 tanh MLP, so this floor sits near _RESOLUTION eps ||H||); the Ritz
# values of a loss that is flat up to rounding (log(exp(z)) - z, sigmoid(z) + sigmoid(-z),
# float32 and float64) came out at 0.3-20 times that error.
_PRODUCT_NOISE = 1e2


@dataclass(frozen=True)
class Tridiagonal:
    """The Lanczos coefficients and basis: ``Q^T H Q = T`` (tridiagonal, in float64)."""

    alphas: Tensor  # (m,) float64: T's diagonal
    betas: Tensor  # (m,) float64: T's off-diagonal, then the last residual norm
    basis: Tensor  # (m, n) in the model's dtype: orthonormal rows
    block_start: int = 0  # the step of the last restart (0: none)
    # The largest departure of Q^T H Q from a symmetric tridiagonal seen in the products'
    # projections: an exact symmetric H gives 0, so this measures the products' rounding.
    product_error: float = 0.0

    def ritz(self, start: int = 0) -> tuple[Tensor, Tensor]:
        """Ritz values (ascending) and T's eigenvectors (columns), both float64.

        ``start > 0`` gives those of the trailing block ``T[start:, start:]`` only.
        """
        alphas, betas = self.alphas[start:], self.betas[start:]
        m = alphas.numel()
        matrix = torch.diag(alphas)
        if m > 1:
            off = torch.diag(betas[: m - 1], 1)
            matrix = matrix + off + off.T
        return torch.linalg.eigh(matrix)

    def residuals(self, vectors: Tensor) -> Tensor:
        """Residual norms ||H y - theta y|| of the Ritz pairs: |beta_m * s_{m,i}|."""
        return (self.betas[-1] * vectors[-1]).abs()


def lanczos(
    hessian: Hessian,
    start: Tensor,
    max_iterations: int,
    generator: torch.Generator,
    converged: Callable[[Tridiagonal], bool] | None = None,
) -> Tridiagonal:
    """Run Lanczos from ``start`` for up to ``max_iterations`` steps (at most n).

    Every new vector is orthogonalized against the whole basis, twice (classical
    Gram-Schmidt twice), so no ghost copies of converged eigenvalues appear; this costs
    O(m n) memory and O(m^2 n) flops, small next to m Hessian-vector products.
    """
    n = hessian.num_parameters
    steps = min(max_iterations, n)
    basis = torch.empty(steps, n, dtype=hessian.dtype, device=hessian.device)
    alphas: list[float] = []
    betas: list[float] = []
    q = start / torch.linalg.vector_norm(start)
    scale = 0.0
    block_start = 0
    error = 0.0
    for j in range(steps):
        basis[j] = q
        w = hessian @ q
        # (j + 1,): ideally (0, ..., 0, beta_{j-1}, alpha_j) by symmetry.
        projections = (basis[: j + 1] @ w).double()
        alpha = float(projections[-1])
        if j > 0 and j != block_start:
            # Right after a restart the dropped beta (up to _BREAKDOWN eps scale, set to 0)
            # is still in q_{j-1}^T H q_j: not the products' rounding, so not measured.
            projections[-2] -= betas[-1]
            error = max(error, float(torch.linalg.vector_norm(projections[:-1])))
        w = w - alpha * q
        if j > 0:
            w = w - betas[-1] * basis[j - 1]
        w = _orthogonalize(w, basis[: j + 1])
        beta = float(torch.linalg.vector_norm(w))
        alphas.append(alpha)
        betas.append(beta)
        scale = max(scale, abs(alpha), beta)
        last = j + 1 == steps
        if beta <= _BREAKDOWN * torch.finfo(hessian.dtype).eps * scale:
            betas[-1] = beta = 0.0
        done = converged is not None and converged(
            _tridiagonal(alphas, betas, basis, block_start, error)
        )
        if last or done:
            break
        if beta == 0.0:
            block_start = j + 1
            w = _orthogonalize(_random_vector(hessian, generator), basis[: j + 1])
            q = w / torch.linalg.vector_norm(w)
        else:
            q = w / beta
    return _tridiagonal(alphas, betas, basis, block_start, error)


def extreme_eigenpairs(
    hessian: Hessian,
    num_largest: int,
    num_smallest: int,
    *,
    tol: float,
    max_iterations: int,
    seed: int,
    owner: str,
    each_relative: bool,
) -> tuple[Tensor, Tensor]:
    """The ``num_largest`` largest then ``num_smallest`` smallest Ritz pairs, to ``tol``.

    Values (float64) run from each end inward; vectors are columns in the model's dtype.
    With ``each_relative`` (what :func:`eigenvalues` promises), a Ritz pair counts as
    converged when its residual norm is at most ``tol`` times its own |Ritz value|, or
    ``_RESOLUTION`` machine epsilons times the largest |Ritz value| (an estimate of
    ||H||) where that is more: a value that small is zero to working precision. Without,
    the residual is measured against ``tol`` times the largest |Ritz value| alone (enough
    to compare lambda_min with lambda_max, as find_negative_curvature does). The
    eigenvalue's error is at most the residual, and usually about its square over the gap
    to the next eigenvalue. A run that ends unconverged warns.
    """
    floor = _RESOLUTION * torch.finfo(hessian.dtype).eps

    def limits(tridiagonal: Tridiagonal, values: Tensor, scale: Tensor) -> Tensor:
        if not each_relative:
            return torch.full_like(values, tol * float(scale))
        return torch.maximum(tol * values.abs(), floor * scale)

    run = _converge_extremes(
        hessian, num_largest, num_smallest, limits, max_iterations=max_iterations, seed=seed
    )
    if not run.converged:
        measure = "of each eigenvalue" if each_relative else "of the largest |eigenvalue|"
        shown = ", ".join(f"{float(v):.4g}" for v in run.values)
        warnings.warn(
            f"{owner}: Lanczos did not reach tol={tol} {measure} in "
            f"max_iterations={max_iterations} Hessian-vector products (Ritz values {shown}); "
            "raise max_iterations or tol.",
            RuntimeWarning,
            stacklevel=3,
        )
    # The tridiagonal's eigenvectors are on the CPU; the basis is on the model's device.
    basis = run.tridiagonal.basis
    return run.values, basis.T @ run.vectors.to(basis)


def top_eigenvalue(
    hessian: Hessian, *, tol: float, max_iterations: int, seed: int, owner: str
) -> float | None:
    """lambda_max to ``tol`` of itself, or None where it is zero to working precision.

    Zero means at most :func:`resolution`: ``_RESOLUTION`` machine epsilons times the
    largest |Ritz value| (lambda_max rounding-level next to a negative lambda_min), or
    ``_PRODUCT_NOISE`` times the products' measured error (a loss flat up to rounding,
    whose whole spectrum is rounding: no relative test sees that). A Ritz value that small
    converges to that absolute accuracy, as in :func:`extreme_eigenpairs`. A run that ends
    unconverged warns.
    """

    def limits(tridiagonal: Tridiagonal, values: Tensor, scale: Tensor) -> Tensor:
        floor = resolution(tridiagonal, float(scale))
        return torch.maximum(tol * values.abs(), torch.tensor(floor, dtype=torch.float64))

    run = _converge_extremes(hessian, 1, 0, limits, max_iterations=max_iterations, seed=seed)
    top = float(run.values[0])
    if not run.converged:
        warnings.warn(
            f"{owner}: Lanczos did not reach tol={tol} of lambda_max in "
            f"max_iterations={max_iterations} Hessian-vector products (Ritz value {top:.4g}); "
            "raise max_iterations or tol.",
            RuntimeWarning,
            stacklevel=3,
        )
    return None if top <= resolution(run.tridiagonal, run.scale) else top


def resolution(tridiagonal: Tridiagonal, scale: float) -> float:
    """The magnitude below which an eigenvalue is rounding: the larger of ``_RESOLUTION``
    machine epsilons times ``scale`` (the largest |Ritz value|) and ``_PRODUCT_NOISE``
    times the products' measured error."""
    eps = torch.finfo(tridiagonal.basis.dtype).eps
    relative = _RESOLUTION * eps * scale
    return max(relative, _PRODUCT_NOISE * tridiagonal.product_error)


@dataclass(frozen=True)
class _Extremes:
    """What :func:`_converge_extremes` found."""

    tridiagonal: Tridiagonal
    values: Tensor  # (k,) float64: the wanted Ritz values, from each end inward
    vectors: Tensor  # (m, k) float64: T's eigenvectors of them (columns)
    scale: float  # the largest |Ritz value|, an estimate of ||H||
    converged: bool  # False: max_iterations ran out before n steps and convergence


def _converge_extremes(
    hessian: Hessian,
    num_largest: int,
    num_smallest: int,
    limits: Callable[[Tridiagonal, Tensor, Tensor], Tensor],
    *,
    max_iterations: int,
    seed: int,
    stop_at: Callable[[Tensor], bool] | None = None,
) -> _Extremes:
    """Lanczos until the ``num_largest`` largest and ``num_smallest`` smallest Ritz pairs
    have converged, the one stopping rule of :func:`extreme_eigenpairs`,
    :func:`top_eigenvalue` and :func:`condition_extremes`.

    A pair has converged when its residual is at most its entry of ``limits(tridiagonal,
    values, scale)``, given the wanted Ritz values (from each end inward) and the largest
    |Ritz value|; with a restart, the unexplored complement must also have settled to the
    strictest limit at each end (:func:`_complement_settled`). ``stop_at(values)``, given
    all the Ritz values in ascending order, ends the run early when true (the result
    then counts as converged).
    """
    generator = torch.Generator(device=hessian.device).manual_seed(seed)
    wanted_count = min(num_largest + num_smallest, hessian.num_parameters)

    def wanted(values: Tensor) -> Tensor:
        m = values.numel()
        top = torch.arange(m - 1, m - 1 - num_largest, -1)
        return torch.cat([top, torch.arange(num_smallest)])

    def converged(tridiagonal: Tridiagonal) -> bool:
        values, vectors = tridiagonal.ritz()
        if stop_at is not None and stop_at(values):
            return True
        if values.numel() < wanted_count:
            return False
        if max(num_largest, num_smallest) > 1 and _first_space_closed(tridiagonal):
            return False  # copies of the wanted eigenvalues may lie in the complement
        scale = values.abs().max()
        chosen = wanted(values)
        chosen_limits = limits(tridiagonal, values[chosen], scale)
        if not bool((tridiagonal.residuals(vectors)[chosen] <= chosen_limits).all()):
            return False
        # The complement must settle to the strictest limit at each end.
        top, bottom = chosen_limits[:num_largest], chosen_limits[num_largest:]
        return _complement_settled(
            tridiagonal,
            values[chosen],
            num_largest,
            top.min() if top.numel() else scale,
            bottom.min() if bottom.numel() else scale,
        )

    start = _random_vector(hessian, generator)
    tridiagonal = lanczos(hessian, start, max_iterations, generator, converged)
    values, vectors = tridiagonal.ritz()
    chosen = wanted(values)
    done = tridiagonal.alphas.numel() >= hessian.num_parameters or converged(tridiagonal)
    scale = float(values.abs().max())
    return _Extremes(tridiagonal, values[chosen], vectors[:, chosen], scale, done)


def condition_extremes(
    hessian: Hessian, *, tol: float, max_iterations: int, seed: int, owner: str
) -> tuple[float, float] | None:
    """(lambda_min, lambda_max) of a positive definite H, each to ``tol`` relative to itself;
    None if H is not positive definite to working precision.

    The condition number needs lambda_min to a relative accuracy, so its Ritz pair's residual
    must be at most ``tol * lambda_min``, not ``tol`` times the largest |Ritz value| (which
    let a lambda_min 1e4 times below lambda_max through with a 1-3% error, no warning). Ritz
    values lie inside the spectrum: once the smallest is at most ``_RESOLUTION`` machine
    epsilons times the largest (zero, negative, or below what the products resolve), so is
    lambda_min, and the run stops there. A run that ends unconverged warns; its ratio of
    Ritz values is then a lower bound of the condition number.
    """
    floor = _RESOLUTION * torch.finfo(hessian.dtype).eps

    def singular(values: Tensor) -> bool:
        return bool(values[0] <= floor * values.abs().max())

    def limits(tridiagonal: Tridiagonal, values: Tensor, scale: Tensor) -> Tensor:
        return tol * values  # each end relative to itself

    run = _converge_extremes(
        hessian, 1, 1, limits, max_iterations=max_iterations, seed=seed, stop_at=singular
    )
    values, _ = run.tridiagonal.ritz()
    if singular(values):
        return None
    low, high = float(values[0]), float(values[-1])
    if not run.converged:
        warnings.warn(
            f"{owner}: Lanczos did not bring lambda_min ({low:.4g}) and lambda_max "
            f"({high:.4g}) to tol={tol} of themselves in max_iterations={max_iterations} "
            f"Hessian-vector products; the condition number {high / low:.4g} is a lower "
            "bound (Ritz values lie inside the spectrum). Raise max_iterations or tol.",
            RuntimeWarning,
            stacklevel=4,
        )
    return low, high


def _first_space_closed(tridiagonal: Tridiagonal) -> bool:
    """Whether the first Krylov space is invariant and its complement not yet explored.

    That space holds one copy of each distinct eigenvalue (its Ritz values are then
    exact); further copies lie only in the complement. Stopping there returned the
    distinct values in place of repeated ones (k=4 largest of an H with 3 three times
    among 4 distinct values gave 3 and the three below it). A later block closing is
    handled by :func:`_complement_settled`: it started from a random vector in the
    complement of the earlier ones, so it holds every value that complement has.
    """
    rows, size = tridiagonal.basis.shape
    return tridiagonal.block_start == 0 and rows < size and float(tridiagonal.betas[-1]) == 0.0


def _complement_settled(
    tridiagonal: Tridiagonal,
    chosen: Tensor,
    num_largest: int,
    top_threshold: Tensor,
    bottom_threshold: Tensor,
) -> bool:
    """After a restart, whether the unexplored space can still change the wanted values.

    Each earlier block spans an invariant subspace exactly; the last block explores its
    orthogonal complement. Its extreme Ritz value at each wanted end must have converged
    and be no better than the worst wanted value there: then nothing left in the complement
    (further copies of a repeated eigenvalue, say) can enter the wanted set.
    """
    if tridiagonal.block_start == 0:
        return True
    values, vectors = tridiagonal.ritz(tridiagonal.block_start)
    residuals = (tridiagonal.betas[-1] * vectors[-1]).abs()
    top, bottom = chosen[:num_largest], chosen[num_largest:]
    if top.numel() and not (residuals[-1] <= top_threshold and values[-1] <= top.min()):
        return False
    return not (
        bottom.numel() and not (residuals[0] <= bottom_threshold and values[0] >= bottom.max())
    )


def quadrature(hessian: Hessian, num_iterations: int, generator: torch.Generator) -> Tridiagonal:
    """One stochastic Lanczos quadrature run from a normalized Rademacher vector."""
    return lanczos(hessian, rademacher(hessian, generator), num_iterations, generator)


def rademacher(hessian: Hessian, generator: torch.Generator, size: int | None = None) -> Tensor:
    """A vector of ``size`` (default: all parameters) independent +-1 entries, in the
    Hessian's dtype and device."""
    length = hessian.num_parameters if size is None else size
    bits = torch.randint(0, 2, (length,), generator=generator, device=hessian.device)
    return (2 * bits - 1).to(hessian.dtype)


def _random_vector(hessian: Hessian, generator: torch.Generator) -> Tensor:
    return torch.randn(
        hessian.num_parameters, generator=generator, dtype=hessian.dtype, device=hessian.device
    )


def _orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


def _tridiagonal(
    alphas: list[float], betas: list[float], basis: Tensor, block_start: int, error: float
) -> Tridiagonal:
    return Tridiagonal(
        torch.tensor(alphas, dtype=torch.float64),
        torch.tensor(betas, dtype=torch.float64),
        basis[: len(alphas)],
        block_start,
        error,
    )
