"""AMSGrad against Adam on Reddi, Kale & Kumar (2018)'s online counterexample.

The online problem on the feasible set [-1, 1] is

    f_t(x) = C x   if t mod 3 == 1,   else   -x,     with C = 3,

so over each period of three steps the loss is (C - 2) x and the best fixed point is
x* = -1. With beta1 = 0 and beta2 = 1 / (1 + C^2) (Reddi et al. 2018, Theorem 1) Adam's
second-moment estimate forgets the rare large gradient C quickly, the two small gradients
-1 get the larger effective steps, and Adam drifts to the worst point x = +1. AMSGrad keeps
the maximum of the second-moment estimates, so the large gradient keeps its weight and the
iterate goes to x* = -1.

Both optimizers are gradwise.optim.Adam (``amsgrad=False`` / ``amsgrad=True``) with the
step size alpha / sqrt(t) of the paper's analysis (a schedule), eps = 1e-8, starting at
x_1 = 0; after every step the iterate is projected back onto [-1, 1]. The gradient of
f_t is written into ``x.grad`` directly (it is a constant), so no autograd runs.

The average regret is R_T / T = (1/T) sum_t (f_t(x_t) - f_t(x*)); it goes to 0 for
AMSGrad and to a positive constant for Adam.

Run: .venv/bin/python benchmarks/reproductions/amsgrad_counterexample.py [--full] [--out DIR]
(default 30,000 steps, --full 1,000,000 steps; alpha = 0.1)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
from _plotting import pyplot, save_figure

from gradwise import optim

C = 3.0
BETA2 = 1.0 / (1.0 + C**2)
SMALL_STEPS = 30_000
FULL_STEPS = 1_000_000


def gradient(t: int) -> float:
    """The derivative of f_t (t counts from 1)."""
    return C if t % 3 == 1 else -1.0


def run(amsgrad: bool, num_steps: int, alpha: float = 0.1) -> dict[str, Any]:
    """Run Adam or AMSGrad on the counterexample; return the iterates and the regret."""
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = optim.Adam(
        [x],
        lr=lambda step: alpha / math.sqrt(step + 1),
        betas=(0.0, BETA2),
        eps=1e-8,
        amsgrad=amsgrad,
    )
    iterates = []
    regret = 0.0
    for t in range(1, num_steps + 1):
        value = float(x.item())
        iterates.append(value)
        g = gradient(t)
        regret += g * (value - -1.0)  # f_t(x_t) - f_t(x*), f_t linear and x* = -1
        x.grad = torch.full_like(x, g)
        optimizer.step()
        with torch.no_grad():
            x.clamp_(-1.0, 1.0)
    return {
        "iterates": iterates,
        "final_x": float(x.item()),
        "average_regret": regret / num_steps,
    }


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Draw x_t for both optimizers."""
    plt = pyplot()

    figure, axis = plt.subplots(figsize=(6, 3))
    for name, result in results.items():
        iterates = result["iterates"]
        stride = max(1, len(iterates) // 2000)
        steps = range(1, len(iterates) + 1, stride)
        axis.plot(list(steps), iterates[::stride], label=name)
    axis.axhline(-1.0, color="gray", linestyle=":", label="optimum x* = -1")
    axis.set_xscale("log")
    axis.set_xlabel("step t")
    axis.set_ylabel("x_t")
    axis.set_ylim(-1.1, 1.1)
    axis.set_title("Reddi et al. (2018) counterexample, C = 3")
    axis.legend(loc="center left", fontsize=8)
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run both optimizers, print the table, write ``amsgrad_counterexample.png``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help=f"{FULL_STEPS:,} steps")
    parser.add_argument("--steps", type=int, default=None, help="override the step count")
    parser.add_argument("--out", type=Path, default=Path("docs/reproductions"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    num_steps = args.steps or (FULL_STEPS if args.full else SMALL_STEPS)
    results = {
        "Adam": run(amsgrad=False, num_steps=num_steps),
        "AMSGrad": run(amsgrad=True, num_steps=num_steps),
    }
    print(
        f"Reddi et al. (2018) counterexample, C = {C:g}, beta1 = 0, beta2 = {BETA2:g}, "
        f"{num_steps:,} steps"
    )
    print(f"{'optimizer':<10} {'final x':>8} {'average regret':>15}")
    for name, result in results.items():
        print(f"{name:<10} {result['final_x']:>8.4f} {result['average_regret']:>15.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out / "amsgrad_counterexample.png")
    return results


if __name__ == "__main__":
    main()
