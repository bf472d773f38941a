"""The largest stable learning rate from the top Hessian eigenvalue, and the doctor's check."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from gradwise._objective import LossFunction
from gradwise._validation import (
    HALF_OPEN_UNIT_INTERVAL,
    NON_NEGATIVE,
    UNIT_INTERVAL,
    Boolean,
    Interval,
    check,
    check_all,
)
from gradwise.curvature._hessian import Hessian, Mode
from gradwise.curvature._lanczos import top_eigenvalue
from gradwise.curvature._spectrum import LANCZOS_CONSTRAINTS
from gradwise.diagnosis import Diagnosis, Finding

_FINITE = Interval()


def stable_lr_bound(
    lambda_max: float, *, momentum: float = 0.0, nesterov: bool = False, dampening: float = 0.0
) -> float:
    r"""The largest learning rate at which (momentum) gradient descent is stable.

    On a quadratic with top Hessian eigenvalue :math:`\lambda_{\max}`, gradient descent
    multiplies the component along that eigenvector by :math:`1 - \eta\lambda_{\max}` per
    step, so it diverges unless :math:`\eta < 2/\lambda_{\max}` (lecture 3). Heavy-ball
    momentum :math:`\mu` (torch's ``SGD(momentum=mu)``: :math:`v \leftarrow \mu v + g`,
    :math:`\theta \leftarrow \theta - \eta v`) iterates
    :math:`z^2 - (1 + \mu - \eta\lambda) z + \mu = 0`, stable for
    :math:`\eta < 2(1 + \mu)/\lambda_{\max}`; torch's Nesterov variant gives
    :math:`z^2 - (1+\mu)(1-\eta\lambda) z + \mu(1-\eta\lambda) = 0`, stable for
    :math:`\eta < 2(1+\mu) / ((1+2\mu)\lambda_{\max})`. Dampening :math:`d`
    (:math:`v \leftarrow \mu v + (1-d) g`) scales the step by :math:`1-d`, so the bound
    is divided by it; torch and gradwise ignore dampening without momentum (then the bound
    is :math:`2/\lambda_{\max}`), and refuse it with Nesterov. A non-positive
    :math:`\lambda_{\max}`, or :math:`d = 1` with momentum, gives ``inf`` (no curvature
    limits the step).

    Args:
        lambda_max: the largest Hessian eigenvalue (see :func:`eigenvalues`).
        momentum: heavy-ball momentum in [0, 1).
        nesterov: torch's Nesterov momentum.
        dampening: torch's SGD dampening in [0, 1] (0 with Nesterov).

    Example:
        >>> from gradwise.curvature import stable_lr_bound
        >>> stable_lr_bound(4.0), stable_lr_bound(4.0, momentum=0.9)
        (0.5, 0.95)

    Reference:
        Polyak, "Some methods of speeding up the convergence of iteration methods",
        USSR Comput. Math. Math. Phys. 4 (1964).
    """
    owner = "stable_lr_bound"
    check("lambda_max", owner, lambda_max, _FINITE)
    _check_momentum(owner, momentum, nesterov, dampening)
    # Without momentum the optimizer skips the momentum buffer, and dampening with it.
    scale = 1.0 - dampening if momentum > 0 else 1.0
    if lambda_max <= 0 or scale == 0:
        return math.inf
    bound = 2.0 * (1.0 + momentum) / float(lambda_max)
    return (bound / (1.0 + 2.0 * momentum) if nesterov else bound) / scale


def _check_momentum(owner: str, momentum: float, nesterov: bool, dampening: float) -> None:
    check("momentum", owner, momentum, HALF_OPEN_UNIT_INTERVAL)
    check("nesterov", owner, nesterov, Boolean())
    check("dampening", owner, dampening, UNIT_INTERVAL)
    if nesterov and dampening != 0:
        raise ValueError(
            f"The 'dampening' parameter of {owner} must be 0 with nesterov=True (torch's and "
            f"gradwise's SGD refuse Nesterov with dampening). Got {dampening!r} instead."
        )


def max_stable_lr(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Any,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
    tol: float = 1e-5,
    max_iterations: int = 100,
    seed: int = 0,
    mode: Mode = "eval",
) -> float:
    r"""The learning rate above which gradient descent diverges locally at this point.

    :math:`2/\lambda_{\max}` for plain gradient descent and :math:`2(1+\mu)/\lambda_{\max}`
    for heavy-ball momentum :math:`\mu` (see :func:`stable_lr_bound`, also for
    ``nesterov`` and ``dampening``), with
    :math:`\lambda_{\max}` from :func:`eigenvalues` (``tol``, ``max_iterations``, ``seed``
    and ``mode`` as there). The bound is local: the curvature changes during training
    (it typically grows until it reaches :math:`2/\eta`, Cohen et al. 2021).

    A :math:`\lambda_{\max}` that is zero to working precision gives ``inf``, as a
    non-positive one does: at most :math:`100 \epsilon` times the largest |Ritz value|
    (machine epsilon of the model's dtype; a rounding-level top next to a negative
    :math:`\lambda_{\min}`), or at most 100 times the Hessian-vector products' own
    measured error, the departure of :math:`Q^\top H Q` from a symmetric tridiagonal
    (a loss flat up to rounding, whose whole spectrum is rounding: it gave
    :math:`\lambda_{\max} = 2.8 \cdot 10^{-16}` and a bound of :math:`7 \cdot 10^{15}`).
    A genuine Hessian's products err by a few :math:`\epsilon \lVert H \rVert`.

    Example:
        >>> import torch
        >>> from gradwise.curvature import max_stable_lr
        >>> model = torch.nn.Linear(3, 1, bias=False).double()
        >>> x = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        >>> y = torch.zeros(3, 1, dtype=torch.float64)
        >>> round(max_stable_lr(model, torch.nn.functional.mse_loss, (x, y)), 6)  # 2 / 6
        0.333333
    """
    owner = "max_stable_lr"
    _check_momentum(owner, momentum, nesterov, dampening)
    lanczos = {"tol": tol, "max_iterations": max_iterations, "seed": seed}
    check_all(owner, lanczos, LANCZOS_CONSTRAINTS)
    hessian = Hessian(model, loss_fn, data, mode=mode)
    top = top_eigenvalue(hessian, tol=tol, max_iterations=max_iterations, seed=seed, owner=owner)
    if top is None:  # lambda_max is zero to working precision: no curvature bounds the step
        return math.inf
    return stable_lr_bound(top, momentum=momentum, nesterov=nesterov, dampening=dampening)


def check_learning_rate(
    lr: float,
    lambda_max: float,
    momentum: float = 0.0,
    *,
    nesterov: bool = False,
    dampening: float = 0.0,
) -> Diagnosis | None:
    """A LEARNING_RATE_TOO_HIGH diagnosis when ``lr`` exceeds the stability bound, else None.

    The bound is :func:`stable_lr_bound` (with ``nesterov`` and ``dampening`` as there);
    the evidence holds ``lr``, ``lambda_max``, ``momentum``, ``nesterov``, ``dampening``
    and ``max_stable_lr``, and the fix sets ``optimizer.lr`` to half the bound
    (a margin for the curvature growing during training).

    Example:
        >>> from gradwise.curvature import check_learning_rate
        >>> print(check_learning_rate(0.5, lambda_max=10.0))
        LEARNING_RATE_TOO_HIGH: lr 0.5 is above 2 / lambda_max = 0.2 (lambda_max 10): \
gradient descent diverges along the top Hessian eigenvector; lower the learning rate to 0.1
        >>> check_learning_rate(0.1, lambda_max=10.0) is None
        True
    """
    owner = "check_learning_rate"
    check("lr", owner, lr, NON_NEGATIVE)
    check("lambda_max", owner, lambda_max, _FINITE)
    _check_momentum(owner, momentum, nesterov, dampening)
    bound = stable_lr_bound(lambda_max, momentum=momentum, nesterov=nesterov, dampening=dampening)
    if not lr > bound:
        return None
    formula = "2 / lambda_max" if momentum == 0 else f"2 (1 + {momentum:g}) / lambda_max"
    if nesterov:
        formula = f"2 (1 + {momentum:g}) / ((1 + 2 * {momentum:g}) lambda_max)"
    elif momentum > 0 and dampening > 0:
        formula = f"2 (1 + {momentum:g}) / ((1 - {dampening:g}) lambda_max)"
    return Diagnosis(
        Finding.LEARNING_RATE_TOO_HIGH,
        f"lr {lr:g} is above {formula} = {bound:.3g} (lambda_max {lambda_max:.4g}): "
        "gradient descent diverges along the top Hessian eigenvector",
        f"lower the learning rate to {0.5 * bound:.3g}",
        evidence={
            "lr": float(lr),
            "lambda_max": float(lambda_max),
            "momentum": float(momentum),
            "nesterov": nesterov,
            "dampening": float(dampening),
            "max_stable_lr": bound,
        },
        severity="warning",
        fix={"optimizer.lr": 0.5 * bound},
    )
