"""Curvature of a model's loss in one call: each builds a :class:`Hessian` and asks it."""

from __future__ import annotations

from typing import Any, Literal, overload

from torch import Tensor, nn

from gradwise._objective import LossFunction
from gradwise.curvature._hessian import Hessian, Mode
from gradwise.curvature._spectrum import EigenvalueDensity, NegativeCurvature, TraceMethod, Which


@overload
def eigenvalues(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Any,
    k: int = ...,
    which: Which = ...,
    *,
    return_eigenvectors: Literal[False] = ...,
    tol: float = ...,
    max_iterations: int = ...,
    seed: int = ...,
    mode: Mode = ...,
) -> Tensor: ...


@overload
def eigenvalues(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Any,
    k: int = ...,
    which: Which = ...,
    *,
    return_eigenvectors: Literal[True],
    tol: float = ...,
    max_iterations: int = ...,
    seed: int = ...,
    mode: Mode = ...,
) -> tuple[Tensor, Tensor]: ...


def eigenvalues(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Any,
    k: int = 5,
    which: Which = "largest",
    *,
    return_eigenvectors: bool = False,
    tol: float = 1e-5,
    max_iterations: int = 100,
    seed: int = 0,
    mode: Mode = "eval",
) -> Tensor | tuple[Tensor, Tensor]:
    r"""The ``k`` largest (or smallest) Hessian eigenvalues, by Lanczos.

    Lanczos builds an orthonormal basis :math:`Q_m` of the Krylov space
    :math:`\{v, Hv, \dots, H^{m-1}v\}` from a Gaussian start (seeded by ``seed``) with one
    Hessian-vector product per step; :math:`T_m = Q_m^\top H Q_m` is tridiagonal and its
    eigenvalues (Ritz values) converge to the extreme eigenvalues of :math:`H` far faster
    than power iteration (Golub & Van Loan, *Matrix Computations*, ch. 10). Every new basis
    vector is reorthogonalized against all the previous ones, so converged eigenvalues do
    not reappear as spurious copies. The iteration stops when each wanted Ritz pair's
    residual :math:`\lVert H y - \theta y \rVert = |\beta_m s_{m,i}|` is at most
    ``tol`` times its own :math:`|\theta|`: every eigenvalue returned is then within
    ``tol`` of itself, relative, however far below :math:`\lambda_{\max}` it lies (a
    small or clustered bottom of the spectrum, the top of an indefinite one). The residual
    bounds the eigenvalue's error, which in practice is near the residual squared over the
    spectral gap. One exception: a Ritz value within :math:`100 \epsilon
    \lVert H \rVert` of zero (machine epsilon of the model's dtype, :math:`\lVert H
    \rVert` estimated by the largest |Ritz value|: :math:`2.2 \cdot 10^{-14}` of it in
    float64, :math:`1.2 \cdot 10^{-5}` in float32) is zero to what the products resolve,
    and converges to that absolute accuracy instead. If the Krylov space becomes
    invariant, Lanczos restarts from a random vector orthogonal to it, which finds
    repeated eigenvalues; a Krylov method can still miss copies of an eigenvalue.

    "largest" and "smallest" are algebraic: "smallest" gives the most negative
    eigenvalues (negative curvature), not those nearest zero.

    Args:
        model: the network (left exactly as found: parameters, buffers, ``.grad``, mode).
        loss_fn: ``loss_fn(model(inputs), targets)``, a mean-reduced scalar.
        data: one ``(inputs, targets)`` batch, or an iterable of batches (the Hessian of
            the batch-size-weighted mean loss).
        k: how many eigenvalues; a k above the number of trainable parameters n gives all
            n of them (n values, not k).
        which: "largest" or "smallest".
        return_eigenvectors: also return the unit eigenvectors, as the columns of an
            (n, k) tensor over the flat trainable parameters (see ``Hessian.unflatten``).
        tol: the relative accuracy of each eigenvalue: its Ritz pair's residual at most
            ``tol`` times its own magnitude (see above).
        max_iterations: at most this many Lanczos steps (Hessian-vector products); the
            basis takes ``max_iterations * n`` numbers of memory. Each step adds one Ritz
            value, so it must be at least ``k`` (at least ``n`` for ``k > n``), or it is a
            ValueError. A RuntimeWarning says when the tolerance was not reached (the
            values are then Ritz values that have not converged: a small eigenvalue can be
            far off, or missing).
        seed: seed of the start vector.
        mode: "eval" (default) or "train" (see :class:`Hessian`).

    Returns:
        The eigenvalues in the model's dtype, from the most extreme inward (descending for
        "largest", ascending for "smallest"); with ``return_eigenvectors``, a pair
        ``(values, vectors)``.

    Example:
        >>> import torch
        >>> from gradwise.curvature import eigenvalues
        >>> model = torch.nn.Linear(3, 1, bias=False).double()
        >>> x = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        >>> y = torch.zeros(3, 1, dtype=torch.float64)
        >>> # mean squared error over 3 rows: H = (2/3) X^T X = diag(2/3, 8/3, 6)
        >>> eigenvalues(model, torch.nn.functional.mse_loss, (x, y), k=2)
        tensor([6.0000, 2.6667], dtype=torch.float64)

    Reference:
        Lanczos, "An iteration method for the solution of the eigenvalue problem of linear
        differential and integral operators", J. Res. Nat. Bur. Standards 45 (1950).
    """
    values, vectors = Hessian(model, loss_fn, data, mode=mode).eigenvalues(
        k, which, tol=tol, max_iterations=max_iterations, seed=seed
    )
    return (values, vectors) if return_eigenvectors else values


def trace(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Any,
    *,
    num_probes: int = 100,
    seed: int = 0,
    method: TraceMethod = "gauss-newton",
    mode: Mode = "eval",
) -> float:
    r"""An unbiased estimate of the Hessian's trace from ``num_probes`` Hessian-vector products
    (fewer where the default method is exact sooner); the exact trace once ``num_probes``
    is at least the number of parameters :math:`n`.

    With :math:`P \ge n`, whatever the method, the :math:`n` products with the unit
    vectors give :math:`\sum_i e_i^\top H e_i = \operatorname{tr} H` exactly (to
    rounding), the same for every ``seed``, in no more products than the probes: the
    estimate has no variance (a standard error of 0). Below :math:`n` the methods are:

    ``method="hutchinson"``: :math:`\operatorname{tr} H \approx
    \frac{1}{P}\sum_{p=1}^{P} z_p^\top H z_p` with Rademacher probes :math:`z_p`
    (independent :math:`\pm 1` entries), of variance :math:`\frac{2}{P}\sum_{i \ne j}
    H_{ij}^2`, the smallest of any i.i.d. probe distribution; one product per probe.

    ``method="stratified"``: Hutchinson per parameter tensor. :math:`\operatorname{tr}
    H = \sum_b \operatorname{tr} H_{bb}` over the diagonal blocks of the tensors, each
    estimated with probes that are Rademacher on its tensor and zero elsewhere, so the
    entries :math:`H_{ij}` between two tensors add no variance: the variance is
    :math:`\sum_b \frac{2}{P_b}\sum_{i \ne j \in b} H_{ij}^2`. At initialization those
    cross-tensor entries hold 93-98% of the off-diagonal mass on the MLPs of the curvature
    tests. Three probes per tensor measure each block's off-diagonal mass (the spread of
    :math:`z \odot (H z)_b` over the probes), and the other probes go to the tensors in
    proportion to its square root (Neyman allocation). With more than :math:`P / 6`
    tensors, runs of consecutive tensors share a stratum; with fewer than two strata it is
    plain Hutchinson.

    ``method="gauss-newton"`` (the default) splits :math:`H = G + R` with the generalized
    Gauss-Newton matrix :math:`G = J^\top H_L J` (:math:`J` the Jacobian of the outputs,
    :math:`H_L` the loss's Hessian in them) and :math:`R = \sum_k \frac{\partial
    L}{\partial z_k} \nabla^2 z_k`. :math:`\operatorname{tr} G = \sum_s
    \operatorname{tr}(H_{L,s} J_s J_s^\top)` is computed exactly from per-sample
    Jacobians (one backward pass per output, vectorized over the samples; counted as
    :math:`C` of the ``num_probes`` products for :math:`C` outputs per sample), and
    :math:`\operatorname{tr} R` with the rest. For a network of ``nn.Linear`` layers (an
    MLP) both come layer by layer, from derivatives in the layers' outputs: a layer
    :math:`a_s = W h_s + b` enters the loss only through its outputs, so its block of
    :math:`J_s` is :math:`B_s \otimes [h_s, 1]` with :math:`B_s = \partial z_s / \partial
    a_s` (no per-sample Jacobians in the parameters), and :math:`\operatorname{tr}
    R_{W,b} = \sum_s (\lVert h_s \rVert^2 + 1) \operatorname{tr} M_s` with :math:`M_s`
    the Hessian of :math:`\langle \operatorname{sg}(\partial L/\partial z), z\rangle`
    in :math:`a_s`. The diagonals of the :math:`M_s` take one product per unit (all
    samples at once; none for a layer whose outputs the loss is linear in, such as the
    last), which makes the trace exact with fewer than ``num_probes`` products when the
    units fit (the method stops there); otherwise the products are shared among the
    layers as Rademacher probes in their outputs, independent per sample. It applies
    when every trainable parameter is the weight or bias of an ``nn.Linear`` run once per
    forward pass on a (samples, features) input. Otherwise :math:`\operatorname{tr} G`
    comes from per-sample Jacobians (at most :math:`2^{22}` entries, samples x outputs x
    parameters: their memory traffic is the cost) and :math:`\operatorname{tr} R` from
    the stratified estimator, each probe one product with the Hessian of
    :math:`\langle \operatorname{sg}(\partial L/\partial z), z\rangle`; :math:`R`'s
    diagonal blocks are small (zero for a network piecewise linear in each tensor, such
    as a ReLU MLP, whose trace is then exact). The split applies in eval mode, to a loss
    that sums per-sample terms and depends on the parameters through the model's outputs
    alone (no penalty on the weights or activations in ``loss_fn``: :math:`G + R` would
    leave its curvature out) and a model that treats samples independently (all checked
    on the data), with :math:`C \le P / 4`; elsewhere it is ``"stratified"``. On
    the curvature tests' tanh MLP (1,358 parameters) the trace is exact to rounding after
    62 products, and within 1.35% over 100 seeds with 60; on a tanh CNN of 958 parameters
    (the residual by stratified probes) within 1.5% over 100 seeds; stratified probes of
    all of :math:`H` 8.2%, Hutchinson's more (docs/curvature.md).

    ``method="hutch++"`` spends a third of the products on a sketch: with :math:`k =
    \lfloor P/3 \rfloor` Rademacher columns :math:`S`, :math:`Q = \operatorname{orth}(HS)`
    spans about the directions of largest :math:`|\lambda|`; then

    .. math::
        \operatorname{tr} H = \operatorname{tr}(Q^\top H Q)
        + \operatorname{tr}\big((I - QQ^\top) H (I - QQ^\top)\big),

    the first term exactly with :math:`k` products, the second by Hutchinson with the
    remaining :math:`P - 2k` probes projected off :math:`Q` (with :math:`P < 3`, plain
    Hutchinson). Also unbiased for any symmetric :math:`H`. It wins when a few eigenvalues
    hold most of :math:`\lVert H \rVert_F^2` (a fast-decaying spectrum); on a flat
    spectrum it has a third of the probes for almost the same residual and loses. On the
    MLP of the curvature tests it was not better (at initialization the top 33
    |eigenvalues| hold 31-43% of :math:`\lVert H \rVert_F^2`; after training 82%, but the
    one-pass sketch catches less of it and the two tie).
    All probes come from one generator seeded by ``seed``.

    Args:
        model, loss_fn, data, mode: as in :func:`eigenvalues`.
        num_probes: P, the number of Hessian-vector products in all (at most, for
            ``"gauss-newton"`` on a network of linear layers; :math:`n` where
            :math:`P \ge n`, for the exact trace).
        seed: seed of the probes.
        method: "gauss-newton", "stratified", "hutchinson" or "hutch++".

    Example:
        >>> import torch
        >>> from gradwise.curvature import trace
        >>> model = torch.nn.Linear(3, 1, bias=False).double()
        >>> x = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        >>> y = torch.zeros(3, 1, dtype=torch.float64)
        >>> # H = diag(2/3, 8/3, 6): z^T H z = tr H for every +-1 vector z
        >>> round(trace(model, torch.nn.functional.mse_loss, (x, y), num_probes=1), 6)
        9.333333
        >>> # 100 probes >= 3 parameters: the exact trace from the 3 unit vectors
        >>> round(trace(model, torch.nn.functional.mse_loss, (x, y), method="hutch++"), 6)
        9.333333

    Reference:
        Meyer, Musco, Musco & Woodruff, "Hutch++: Optimal stochastic trace estimation",
        SOSA 2021; Hutchinson, "A stochastic estimator of the trace of the influence matrix
        for Laplacian smoothing splines", Comm. Statist. Simulation Comput. 18 (1989).
    """
    return Hessian(model, loss_fn, data, mode=mode).trace(
        num_probes=num_probes, seed=seed, method=method
    )


def eigenvalue_density(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Any,
    *,
    num_iterations: int = 64,
    num_probes: int = 1,
    seed: int = 0,
    mode: Mode = "eval",
) -> EigenvalueDensity:
    r"""The Hessian's eigenvalue density by stochastic Lanczos quadrature (SLQ).

    Runs ``num_iterations`` Lanczos steps (with full reorthogonalization) from each of
    ``num_probes`` Rademacher vectors; see :class:`EigenvalueDensity` for the quadrature
    and for ``evaluate(grid, bandwidth)``, the smoothed density to plot. Costs
    ``num_iterations * num_probes`` Hessian-vector products.

    Example:
        >>> import torch
        >>> from gradwise.curvature import eigenvalue_density
        >>> model = torch.nn.Linear(3, 1, bias=False).double()
        >>> x = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        >>> y = torch.zeros(3, 1, dtype=torch.float64)
        >>> density = eigenvalue_density(model, torch.nn.functional.mse_loss, (x, y))
        >>> density.nodes  # all 3 eigenvalues, each with weight 1/3
        tensor([[0.6667, 2.6667, 6.0000]], dtype=torch.float64)
        >>> round(density.moment(1) * density.num_parameters, 6)  # the trace
        9.333333

    Reference:
        Ghorbani, Krishnan & Xiao, "An investigation into neural net optimization via
        Hessian eigenvalue density", ICML 2019; Golub & Meurant, *Matrices, Moments and
        Quadrature with Applications* (2010).
    """
    return Hessian(model, loss_fn, data, mode=mode).eigenvalue_density(
        num_iterations=num_iterations, num_probes=num_probes, seed=seed
    )


def condition_number(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Any,
    *,
    tol: float = 1e-5,
    max_iterations: int = 100,
    seed: int = 0,
    mode: Mode = "eval",
) -> float:
    r"""The Hessian's condition number :math:`\kappa = \lambda_{\max} / \lambda_{\min}`.

    Both extreme eigenvalues come from one Lanczos run (``max_iterations`` and ``seed`` as
    in :func:`eigenvalues`; ``max_iterations`` at least 2, one step per end). Gradient
    descent's progress along the flattest direction per step is at most about
    :math:`2/\kappa` of the way (lecture 3), so a large :math:`\kappa` means slow
    convergence. The number is defined for a positive definite
    Hessian; when :math:`\lambda_{\min} \le 0` (a saddle, a flat direction) it is ``inf``,
    and so it is when :math:`\lambda_{\min} \le 100 \epsilon \lambda_{\max}` (machine
    epsilon of the model's dtype: :math:`2.2 \cdot 10^{-14} \lambda_{\max}` in float64,
    :math:`1.2 \cdot 10^{-5} \lambda_{\max}` in float32), below what the products resolve,
    where rounding alone decides the sign.

    Each eigenvalue is converged to ``tol`` relative to itself, as in :func:`eigenvalues`:
    the residual of the smallest Ritz pair must be at most ``tol`` :math:`\lambda_{\min}`,
    not ``tol`` :math:`\lambda_{\max}`, since a small or clustered bottom of the
    spectrum would otherwise pass with an error of several percent. Lanczos stops as
    soon as a Ritz value falls to that floor (Ritz values lie inside the spectrum, so
    :math:`\lambda_{\min}` is below it too). If ``max_iterations`` runs out first, a
    RuntimeWarning says so; the ratio returned is then a lower bound of :math:`\kappa`.

    Example:
        >>> import torch
        >>> from gradwise.curvature import condition_number
        >>> model = torch.nn.Linear(3, 1, bias=False).double()
        >>> x = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        >>> y = torch.zeros(3, 1, dtype=torch.float64)
        >>> round(condition_number(model, torch.nn.functional.mse_loss, (x, y)), 6)
        9.0
    """
    return Hessian(model, loss_fn, data, mode=mode).condition_number(
        tol=tol, max_iterations=max_iterations, seed=seed
    )


def find_negative_curvature(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Any,
    *,
    tolerance: float = 1e-3,
    tol: float = 1e-5,
    max_iterations: int = 100,
    seed: int = 0,
    mode: Mode = "eval",
) -> NegativeCurvature:
    r"""Detect negative curvature (a saddle point when the gradient is also near zero).

    Finds :math:`\lambda_{\min}` and :math:`\lambda_{\max}` with one Lanczos run and
    reports negative curvature when :math:`\lambda_{\min} < -\text{tolerance} \cdot
    |\lambda_{\max}|` (relative, so rounding-level negative eigenvalues of a convex loss do
    not count), with the escape direction and the gradient norm. That comparison needs both
    to an accuracy relative to the larger of the two, not each to itself, so here ``tol``
    bounds each Ritz pair's residual by ``tol`` times the largest |Ritz value|: a
    :math:`\lambda_{\min}` near zero is accurate to ``tol`` :math:`\lVert H \rVert`, not
    to ``tol`` of itself (use :func:`eigenvalues` with ``which="smallest"`` for that).

    Example:
        >>> import torch
        >>> from gradwise.curvature import find_negative_curvature
        >>> class Saddle(torch.nn.Module):  # f(a, b) = a^2 - b^2 at (0, 0)
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.ab = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
        ...     def forward(self, x):
        ...         return self.ab[0] ** 2 - self.ab[1] ** 2
        >>> result = find_negative_curvature(Saddle(), lambda out, y: out, (torch.zeros(1), None))
        >>> result.found, round(result.min_eigenvalue, 9), round(result.max_eigenvalue, 9)
        (True, -2.0, 2.0)
        >>> result.gradient_norm
        0.0
    """
    return Hessian(model, loss_fn, data, mode=mode).negative_curvature(
        tolerance=tolerance, tol=tol, max_iterations=max_iterations, seed=seed
    )
