"""DeepOBS's quadratic_deep and MNIST-1D's baselines, beside the published numbers.

.venv/bin/python benchmarks/bench_problems.py          # default: a minute or two
.venv/bin/python benchmarks/bench_problems.py --full   # DeepOBS's protocol: 36 rates, 10 seeds

Both sizes run quadratic_deep at its paper size (100 epochs, batch 128); the default tunes
on 11 rates (1e-4 to 10, two per decade) and reruns 3 seeds. MNIST-1D trains 20 epochs.
"""

from __future__ import annotations

import argparse
import time

import torch

from gradwise.bench import (
    QUADRATIC_DEEP_LEARNING_RATES,
    make_quadratic_deep,
    mnist1d_baselines,
    quadratic_deep_benchmark,
    tuned_optimizers,
)

DEFAULT_LEARNING_RATES = tuple(10.0 ** (k / 2) for k in range(-8, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="DeepOBS's 36-rate grid, 10 seeds")
    parser.add_argument("--skip-mnist1d", action="store_true", help="quadratic_deep only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    problem = make_quadratic_deep(seed=42)
    results = quadratic_deep_benchmark(
        tuned_optimizers(["SGD", "Momentum", "Adam"]),
        problem=problem,
        learning_rates=QUADRATIC_DEEP_LEARNING_RATES if args.full else DEFAULT_LEARNING_RATES,
        num_seeds=10 if args.full else 3,
    )
    print(results.to_table().render_text())
    print(f"initial test loss {problem.test_loss(problem.start):.2f}; "
          f"quadratic_deep: {time.perf_counter() - started:.0f} s")  # fmt: skip
    if args.skip_mnist1d:
        return
    started = time.perf_counter()
    print(mnist1d_baselines(epochs=20, seed=0).to_table().render_text())
    print(f"MNIST-1D: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
