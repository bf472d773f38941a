"""Schaul et al.'s unit tests and the classic surfaces for a few optimizers; prints the tables.

.venv/bin/python benchmarks/bench_suite.py            # all 52 unit tests, 6 surfaces
.venv/bin/python benchmarks/bench_suite.py --small    # 1-D unit tests only, 3 surfaces
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from gradwise.bench import (
    UNIT_TEST_NAMES,
    score_optimizers,
    surface_benchmark,
    tuned_optimizers,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="a subset, for a quick look")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="grid folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = ("SGD", "Momentum", "Nesterov", "Adam", "RMSprop", "Adagrad")
    optimizers = tuned_optimizers(names)
    tests = [n for n in UNIT_TEST_NAMES if "dim=1" in n] if args.small else list(UNIT_TEST_NAMES)
    started = time.perf_counter()
    scores = score_optimizers(optimizers, tests, num_steps=100, num_runs=10, seed=0)
    print(scores.to_table().render_text())
    print(f"grid: {scores.write_grid(args.out / 'unit_tests.png')}")
    print(f"unit tests: {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    surfaces = ["himmelblau", "saddle", "quadratic"] if args.small else None
    results = surface_benchmark(optimizers, *([surfaces] if surfaces else []), max_steps=2000)
    print(results.to_table().render_text())
    print(f"surfaces: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
