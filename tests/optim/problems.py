"""Test problems with known minimizers, and a loop that drives any optimizer on them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Problem:
    """A parameter, its loss, and where the loss is minimal."""

    param: torch.nn.Parameter
    loss: Callable[[Tensor], Tensor]
    minimizer: Tensor


def quadratic(dtype: torch.dtype = torch.float64) -> Problem:
    """0.5 x^T A x - b^T x over a (2, 5) matrix x; A has eigenvalues spread over [1, 10]."""
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=generator, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(1.0, 10.0, 10, dtype=torch.float64)) @ q.T
    b = torch.randn(10, generator=generator, dtype=torch.float64)
    minimizer = torch.linalg.solve(a, b).reshape(2, 5)
    a, b = a.to(dtype), b.to(dtype)

    def loss(x: Tensor) -> Tensor:
        flat = x.reshape(-1)
        return 0.5 * flat @ a @ flat - b @ flat

    start = torch.full((2, 5), 0.5, dtype=dtype)
    return Problem(torch.nn.Parameter(start), loss, minimizer.to(dtype))


def rosenbrock(dtype: torch.dtype = torch.float64) -> Problem:
    """(1 - x)^2 + 100 (y - x^2)^2 from (-1.5, 2), over a (1, 2) matrix; minimum at (1, 1)."""

    def loss(z: Tensor) -> Tensor:
        x, y = z[0, 0], z[0, 1]
        return (1 - x) ** 2 + 100 * (y - x**2) ** 2

    start = torch.tensor([[-1.5, 2.0]], dtype=dtype)
    return Problem(torch.nn.Parameter(start), loss, torch.ones(1, 2, dtype=dtype))


def minimize(
    optimizer: torch.optim.Optimizer,
    problem: Problem,
    steps: int,
    closure_calls_backward: bool = True,
) -> Tensor:
    """Run ``steps`` optimizer steps with a standard closure; return the final loss."""

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = problem.loss(problem.param)
        if closure_calls_backward:
            loss.backward()
        return loss

    for _ in range(steps):
        optimizer.step(closure)
    with torch.no_grad():
        return problem.loss(problem.param)


def gradient_stream(
    shapes: list[torch.Size], steps: int, dtype: torch.dtype, seed: int = 1
) -> list[list[Tensor]]:
    """Gradients that expose convention bugs: magnitudes near 1e-7 (where eps sits), large
    ones, and an overall decay (AMSGrad's maximum), on a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    magnitudes = (1.0, 1e-7, 10.0, 1e-3)
    stream = []
    for step in range(steps):
        scale = magnitudes[step % len(magnitudes)] * 0.97**step
        stream.append(
            [torch.randn(shape, generator=generator, dtype=dtype) * scale for shape in shapes]
        )
    return stream
