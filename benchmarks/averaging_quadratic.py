"""Iterate averaging on a noisy quadratic: how much lower the averaged iterates' loss is.

The lectures' claim (CSC421 lectures 7-8, the diagnostics table): a training curve that
fluctuates because of gradient noise gets better by decaying the learning rate *or by
averaging the iterates*. Here it is measured where the answer is known in closed form.

Problem: f(w) = 1/2 sum_i h_i w_i^2 in d = 10 dimensions, h log-spaced in [0.1, 1]; the
stochastic gradient is h * w + sigma * xi, xi ~ N(0, I), sigma = 1. SGD with a constant
learning rate eta = 0.1 (``gradwise.optim.SGD``) makes each coordinate an AR(1) process
w' = rho w - eta sigma xi with rho = 1 - eta h, whose stationary variance is

    gamma_i = eta sigma^2 / (h_i (2 - eta h_i)),   so   E f(last iterate) = 1/2 sum h_i gamma_i.

Each chain starts from that stationary distribution, so the last iterate's expected loss
is the same at every step; the averages are over the next T steps:

- Polyak (``PolyakAverage(start=0)``), the mean of T iterates: Var = gamma/T [1 + 2 sum_k
  (1 - k/T) rho^k];
- SWA with a constant rate (``StochasticWeightAverage(every=10)``): the same with n = T/10
  points and rho^10;
- EMA (``ExponentialMovingAverage(decay=0.998)``): exact variance by the recursion
  a' = beta^2 a + 2 beta (1 - beta) rho c + (1 - beta)^2 gamma, c' = beta rho c +
  (1 - beta) gamma (c: covariance of the EMA with the current iterate), a = c = gamma at
  its first iterate.

Measured: the loss at the last iterate and at each average, as a mean over 256
independent chains (one parameter tensor of shape (256, 10), each row its own noise)
and over seeds 0..S-1. The factor is E f(last) / E f(average).

Run: .venv/bin/python benchmarks/averaging_quadratic.py [--seeds 8] [--steps 4000]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from gradwise import optim
from gradwise.averaging import (
    ExponentialMovingAverage,
    PolyakAverage,
    StochasticWeightAverage,
    WeightAverage,
)

DIMENSIONS = 10
CHAINS = 256
LEARNING_RATE = 0.1
NOISE = 1.0
EMA_DECAY = 0.998
SWA_EVERY = 10


def curvatures() -> torch.Tensor:
    """h_i, log-spaced in [0.1, 1] (float64)."""
    return torch.logspace(-1.0, 0.0, DIMENSIONS, dtype=torch.float64)


def expected_losses(steps: int) -> dict[str, float]:
    """The closed-form expected loss of the last iterate and of each average."""
    h = curvatures().tolist()
    totals = dict.fromkeys(("last", "polyak", "swa", "ema"), 0.0)
    for curvature in h:
        rho = 1.0 - LEARNING_RATE * curvature
        gamma = LEARNING_RATE * NOISE**2 / (curvature * (2.0 - LEARNING_RATE * curvature))
        variances = {
            "last": gamma,
            "polyak": _mean_variance(gamma, rho, steps),
            "swa": _mean_variance(gamma, rho**SWA_EVERY, steps // SWA_EVERY),
            "ema": _ema_variance(gamma, rho, steps),
        }
        for name, variance in variances.items():
            totals[name] += 0.5 * curvature * variance
    return totals


def _mean_variance(gamma: float, rho: float, count: int) -> float:
    """Variance of the mean of ``count`` consecutive points of a stationary AR(1)."""
    weights = sum((1.0 - k / count) * rho**k for k in range(1, count))
    return gamma / count * (1.0 + 2.0 * weights)


def _ema_variance(gamma: float, rho: float, steps: int) -> float:
    variance = covariance = gamma
    for _ in range(steps - 1):
        variance = (
            EMA_DECAY**2 * variance
            + 2.0 * EMA_DECAY * (1.0 - EMA_DECAY) * rho * covariance
            + (1.0 - EMA_DECAY) ** 2 * gamma
        )
        covariance = EMA_DECAY * rho * covariance + (1.0 - EMA_DECAY) * gamma
    return variance


class _Quadratic(nn.Module):
    def __init__(self, start: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(start)  # (chains, dimensions)


def simulate(seed: int, steps: int, chains: int = CHAINS) -> dict[str, float]:
    """One seed: the measured mean loss of the last iterate and of each average."""
    generator = torch.Generator().manual_seed(seed)
    h = curvatures()
    gamma = LEARNING_RATE * NOISE**2 / (h * (2.0 - LEARNING_RATE * h))
    start = torch.randn(chains, DIMENSIONS, generator=generator, dtype=torch.float64)
    model = _Quadratic(start * gamma.sqrt())  # the stationary distribution
    optimizer = optim.SGD(model.parameters(), lr=LEARNING_RATE)
    averages: dict[str, WeightAverage] = {
        "polyak": PolyakAverage(model),
        "swa": StochasticWeightAverage(model, start=0, every=SWA_EVERY),
        "ema": ExponentialMovingAverage(model, EMA_DECAY),
    }
    for step in range(1, steps + 1):
        noise = torch.randn(chains, DIMENSIONS, generator=generator, dtype=torch.float64)
        # Summed over chains, so each row's gradient is its own h * w + sigma * xi.
        loss = (0.5 * h * model.weight**2 + NOISE * noise * model.weight).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for average in averages.values():
            average.update(model, step)
    losses = {"last": _mean_loss(model.weight, h)}
    for name, average in averages.items():
        losses[name] = _mean_loss(average.module.weight, h)
    return losses


def _mean_loss(weight: torch.Tensor, h: torch.Tensor) -> float:
    return float((0.5 * h * weight.detach() ** 2).sum(dim=1).mean())


def measure(seeds: int, steps: int, chains: int = CHAINS) -> dict[str, float]:
    """The mean over seeds 0..seeds-1 of :func:`simulate`."""
    runs = [simulate(seed, steps, chains) for seed in range(seeds)]
    return {name: sum(run[name] for run in runs) / len(runs) for name in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    began = time.perf_counter()
    measured = measure(args.seeds, args.steps)
    expected = expected_losses(args.steps)
    print(
        f"noisy quadratic, d={DIMENSIONS}, h in [0.1, 1], sigma={NOISE}, constant lr "
        f"{LEARNING_RATE}, T={args.steps} steps, {CHAINS} chains x {args.seeds} seeds "
        f"(torch {torch.__version__}, 1 thread, {time.perf_counter() - began:.1f} s)"
    )
    print(f"{'iterate':<26}{'E f measured':>14}{'closed form':>13}{'factor':>9}{'(closed)':>10}")
    names = {
        "last": "last iterate",
        "polyak": "Polyak (all T)",
        "swa": f"SWA (every {SWA_EVERY})",
        "ema": f"EMA (decay {EMA_DECAY})",
    }
    for key, label in names.items():
        factor = measured["last"] / measured[key]
        closed = expected["last"] / expected[key]
        print(
            f"{label:<26}{measured[key]:>14.3e}{expected[key]:>13.3e}{factor:>9.1f}{closed:>10.1f}"
        )


if __name__ == "__main__":
    main()
