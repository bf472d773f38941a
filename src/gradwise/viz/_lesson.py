"""The ill-conditioned-quadratic lesson: gradient descent, eigendirection by eigendirection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gradwise._validation import NON_NEGATIVE_INT, POSITIVE, Interval, check
from gradwise.curvature import stable_lr_bound
from gradwise.optim import SGD

_FINITE = Interval()


@dataclass(frozen=True)
class QuadraticLesson:
    r"""Gradient descent on :math:`f(x) = \tfrac12 x^\top A x`, simulated and predicted.

    ``matrix`` is :math:`A = Q \operatorname{diag}(\lambda) Q^\top` (``eigenvectors`` are
    the columns of :math:`Q`); ``iterates[k]`` is :math:`x_k` as gradient descent produced
    it, ``predicted[k]`` is :math:`Q \operatorname{diag}((1 - \eta\lambda_i)^k) Q^\top x_0`
    and ``coordinates[k] = Q^\top x_k``, the iterate in the eigenbasis. ``factors`` are the
    per-step factors :math:`1 - \eta\lambda_i`, ``losses[k] = f(x_k)``.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    matrix: Tensor
    lr: float
    factors: Tensor
    iterates: Tensor
    predicted: Tensor
    coordinates: Tensor
    losses: Tensor

    @property
    def max_stable_lr(self) -> float:
        r"""The stability bound :math:`2 / \lambda_{\max}` of gradient descent: inf when
        :math:`\lambda_{\max} \le 0`, as :func:`gradwise.curvature.stable_lr_bound` has it
        (no curvature limits the step; a negative eigenvalue grows at every rate)."""
        return stable_lr_bound(float(self.eigenvalues.max()))

    @property
    def condition_number(self) -> float:
        r""":math:`\lambda_{\max} / \lambda_{\min}` (inf unless every eigenvalue is > 0)."""
        low, high = float(self.eigenvalues.min()), float(self.eigenvalues.max())
        return high / low if low > 0 else float("inf")

    @property
    def converges(self) -> bool:
        r"""Every :math:`|1 - \eta\lambda_i| < 1`: the iterates shrink to the minimum."""
        return bool((self.factors.abs() < 1).all())

    @property
    def diverges(self) -> bool:
        r"""Some :math:`|1 - \eta\lambda_i| > 1`: that eigendirection grows geometrically."""
        return bool((self.factors.abs() > 1).any())

    def summary(self) -> str:
        """One sentence: the learning rate against the bound, and the slowest direction."""
        worst = int(self.factors.abs().argmax())
        if self.converges or self.diverges:
            verdict = "converges" if self.converges else "diverges"
        elif bool((self.factors == -1).any()):  # flips sign every step, same size
            verdict = "oscillates"
        else:  # a factor of exactly 1: a zero-curvature direction keeps its coordinate
            verdict = "neither converges nor diverges"
        high = float(self.eigenvalues.max())
        bound = (
            f"2/lambda_max = {self.max_stable_lr:.4g}"
            if high > 0
            else f"no finite 2/lambda_max (lambda_max = {high:.4g})"
        )
        return (
            f"lr {self.lr:.4g} vs {bound}: gradient descent "
            f"{verdict}; the direction with lambda = {float(self.eigenvalues[worst]):.4g} "
            f"is multiplied by {float(self.factors[worst]):.4g} per step "
            f"(condition number {self.condition_number:.4g})."
        )


def quadratic_lesson(
    eigenvalues: Sequence[float] | Tensor,
    lr: float,
    num_steps: int,
    *,
    start: Sequence[float] | Tensor | None = None,
    seed: int = 0,
) -> QuadraticLesson:
    r"""Run gradient descent on :math:`\tfrac12 x^\top A x` and show why it behaves as it does.

    With :math:`A = Q \Lambda Q^\top`, one step :math:`x \leftarrow x - \eta A x` is
    :math:`x \leftarrow Q (I - \eta\Lambda) Q^\top x`, so after :math:`k` steps each
    eigendirection's coordinate is multiplied by :math:`(1 - \eta\lambda_i)^k`. Gradient
    descent converges iff every :math:`|1 - \eta\lambda_i| < 1`, i.e. (for positive
    eigenvalues) :math:`\eta < 2/\lambda_{\max}`; the low-curvature directions shrink by
    only :math:`1 - \eta\lambda_{\min}`, so the condition number
    :math:`\lambda_{\max}/\lambda_{\min}` sets how slow it is. A negative eigenvalue (a
    saddle) gives a factor above 1 at every learning rate.

    The iterates come from :class:`gradwise.optim.SGD` on the autograd gradient in float64;
    :math:`Q` is a random rotation drawn from ``seed`` (so the eigendirections are not the
    axes), and the default start has coordinate 1 along every eigendirection.

    Args:
        eigenvalues: the eigenvalues :math:`\lambda_i` of :math:`A` (any finite reals).
        lr: the learning rate :math:`\eta > 0`.
        num_steps: the number of gradient-descent steps :math:`k`.
        start: :math:`x_0` in the standard basis; default :math:`Q \mathbf{1}`.
        seed: the seed of the random rotation :math:`Q`.

    Example:
        >>> from gradwise.viz import quadratic_lesson
        >>> lesson = quadratic_lesson([1.0, 10.0], lr=0.19, num_steps=50)
        >>> lesson.max_stable_lr, lesson.converges
        (0.2, True)
        >>> quadratic_lesson([1.0, 10.0], lr=0.21, num_steps=50).diverges
        True

    Reference: the lectures' "GD on a quadratic" (003); Goh, "Why Momentum Really Works",
    Distill 2017.
    """
    owner = "quadratic_lesson"
    values = torch.as_tensor(eigenvalues, dtype=torch.float64).detach()
    if values.ndim != 1 or values.numel() == 0 or not bool(torch.isfinite(values).all()):
        raise ValueError(
            f"The 'eigenvalues' parameter of {owner} must be a non-empty sequence of finite "
            f"floats. Got {eigenvalues!r} instead."
        )
    check("lr", owner, lr, POSITIVE)
    check("num_steps", owner, num_steps, NON_NEGATIVE_INT)
    dimension = values.numel()
    generator = torch.Generator().manual_seed(int(seed))
    gaussian = torch.randn(dimension, dimension, generator=generator, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(gaussian)
    matrix = rotation @ torch.diag(values) @ rotation.T
    matrix = (matrix + matrix.T) / 2  # exactly symmetric, so the gradient is A x
    if start is None:
        x0 = rotation @ torch.ones(dimension, dtype=torch.float64)
    else:
        x0 = torch.as_tensor(start, dtype=torch.float64).detach().clone()
        if x0.shape != (dimension,) or not bool(torch.isfinite(x0).all()):
            raise ValueError(
                f"The 'start' parameter of {owner} must be {dimension} finite floats, one per "
                f"eigenvalue. Got {start!r} instead."
            )
    iterates = _gradient_descent(matrix, x0, float(lr), int(num_steps))
    factors = 1.0 - float(lr) * values
    powers = factors.unsqueeze(0) ** torch.arange(num_steps + 1, dtype=torch.float64)[:, None]
    predicted = (powers * (rotation.T @ x0)) @ rotation.T
    losses = 0.5 * torch.einsum("ki,ij,kj->k", iterates, matrix, iterates)
    return QuadraticLesson(
        eigenvalues=values,
        eigenvectors=rotation,
        matrix=matrix,
        lr=float(lr),
        factors=factors,
        iterates=iterates,
        predicted=predicted,
        coordinates=iterates @ rotation,
        losses=losses,
    )


def _gradient_descent(matrix: Tensor, x0: Tensor, lr: float, num_steps: int) -> Tensor:
    """``num_steps`` of gradwise's SGD on 1/2 x^T A x; the iterates, shape (steps + 1, n)."""
    with torch.random.fork_rng(devices=[]):
        x = x0.clone().requires_grad_(True)
        optimizer = SGD([x], lr=lr, implementation="reference")
        iterates = [x.detach().clone()]
        for _ in range(num_steps):
            optimizer.zero_grad(set_to_none=True)
            (0.5 * x @ matrix @ x).backward()
            optimizer.step()
            iterates.append(x.detach().clone())
    return torch.stack(iterates)
