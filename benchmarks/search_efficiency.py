"""Search strategies at an equal budget of trial-epochs, and the speedup of 2 workers over 1.

The problem: scikit-learn's digits (8x8, 10 classes; 20% held out for validation), an MLP
with one hidden layer trained with SGD + Nesterov momentum for 4 epochs, no schedule. Four
hyperparameters, the scales of the lectures (log for rates and strengths):

    optimizer.lr:           log_uniform [1e-4, 3]     (matters most)
    optimizer.weight_decay: log_uniform [1e-6, 1e-1]  (matters little in 4 epochs)
    optimizer.momentum:     uniform [0.5, 0.99]
    model.width:            int [16, 128], log

The budget is 64 trial-epochs for every strategy:

- grid: 16 trials x 4 epochs (a 2 x 2 x 2 x 2 grid: two distinct learning rates, which is
  Bergstra & Bengio's point: a grid spends its trials on the unimportant axes too);
- random and TPE: 16 trials x 4 epochs;
- coarse-to-fine: 16 trials x 2 epochs, then 8 trials x 4 epochs in ranges tightened
  around the best 3 (margin 0.1 of the range, in log space).

A search's result is the best validation loss of any of its trials. Each strategy runs
with 5 search seeds. A seed sets the sampler and the grid's order, and places the ranges:
the learning-rate and weight-decay ranges above are multiplied by 10^u, u uniform in
[-0.5, 0.5] drawn from the seed, the same for every strategy. A practitioner's ranges
are arbitrary relative to the unknown optimum; without the shift a grid's result would
hang on where its few points happen to fall (on the unshifted ranges one of the grid's
two learning rates, 0.23, is close to the best one; see docs/benchmarks.md). The data
split, initialization and batch order are the same everywhere. The table gives the median
and every seed's value, and how many seeds each strategy beat the grid on. No pruner, so
every strategy spends exactly its budget. One local worker per search (with both cores'
threads). The last part times a random search of 16 trials with 1 worker (2 threads) and
with 2 workers (1 thread each), the minimum of 2 runs each, and prints the speedup.

Run: .venv/bin/python benchmarks/search_efficiency.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

from gradwise.search import load_trials, search

CONFIG = """\
seed: 0
epochs: {epochs}
monitor: null
schedule: null
log_every: 50
data: {{dataset: digits, batch_size: 32, validation_split: 0.2}}
model: {{name: mlp, width: 32, depth: 1, norm: none}}
optimizer: {{name: SGD, lr: 0.01, momentum: 0.9, nesterov: true}}
search:
  pruner: none
  space:
    optimizer.lr: {{log_uniform: [{lr_low:.6e}, {lr_high:.6e}]}}
    optimizer.weight_decay: {{log_uniform: [{wd_low:.6e}, {wd_high:.6e}]}}
    optimizer.momentum: {{uniform: [0.5, 0.99]}}
    model.width: {{int: [16, 128], log: true}}
  stages:
    - {{epochs: 2, trials: 16, keep: 3}}
    - {{epochs: 4, trials: 8}}
"""
STRATEGIES = ("grid", "random", "coarse-to-fine", "tpe")
TRIALS = 16


def best_loss(
    folder: Path,
    strategy: str,
    seed: int,
    workers: int = 1,
    shifted: bool = True,
    epochs: int = 4,
) -> tuple[float, float, float]:
    """Run one search; returns (best validation loss, wall-clock seconds, trial-phase
    seconds: from the first trial's start to the last trial's end)."""
    config = folder / f"{strategy}-{seed}-{workers}-{epochs}.yaml"
    shift = 10 ** np.random.default_rng(seed).uniform(-0.5, 0.5) if shifted else 1.0
    config.write_text(
        CONFIG.format(lr_low=1e-4 * shift, lr_high=3.0 * shift, wd_low=1e-6 * shift,
                      wd_high=1e-1 * shift, epochs=epochs)
    )  # fmt: skip
    trials = None if strategy == "coarse-to-fine" else TRIALS
    started = time.perf_counter()
    result = search(
        config, strategy=strategy, trials=trials, workers=workers,
        studies_dir=folder / "studies", seed=seed,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    finished, _ = load_trials(result.storage, result.study_name)
    spent = sum(t.user_attrs["epochs"] for t in finished)
    assert spent == 16 * epochs, f"{strategy} spent {spent} trial-epochs"  # noqa: S101
    assert result.best is not None  # noqa: S101
    starts = [t.datetime_start for t in finished if t.datetime_start is not None]
    ends = [t.datetime_complete for t in finished if t.datetime_complete is not None]
    trial_phase = (max(ends) - min(starts)).total_seconds()
    return float(result.best.value or 0.0), elapsed, trial_phase


def compare_strategies(folder: Path, seeds: int, shifted: bool) -> None:
    """The best validation loss of each strategy at the same budget, over the seeds."""
    results: dict[str, list[float]] = {}
    for strategy in STRATEGIES:
        results[strategy] = [
            best_loss(folder, strategy, seed, shifted=shifted)[0] for seed in range(seeds)
        ]
        values = " ".join(f"{value:.4f}" for value in results[strategy])
        print(f"{strategy:>15}: median best val_loss {statistics.median(results[strategy]):.4f}"
              f"   (seeds: {values})", flush=True)  # fmt: skip
    grid = statistics.median(results["grid"])
    for strategy in ("random", "coarse-to-fine", "tpe"):
        median = statistics.median(results[strategy])
        verdict = "beats grid" if median < grid else "does NOT beat grid"
        wins = sum(a < b for a, b in zip(results[strategy], results["grid"], strict=True))
        print(f"{strategy} / grid = {median / grid:.3f}  ({verdict}; better than grid on "
              f"{wins} of {seeds} seeds)")  # fmt: skip
    ratio = statistics.median(results["coarse-to-fine"]) / statistics.median(results["tpe"])
    print(f"coarse-to-fine / tpe = {ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--unshifted", action="store_true", help="the declared ranges for every seed"
    )
    parser.add_argument("--only-speedup", action="store_true", help="skip the comparison")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if not args.only_speedup:
            compare_strategies(folder, args.seeds, shifted=not args.unshifted)
        for epochs in (4, 32):
            one = [best_loss(folder, "random", 100 + r, 1, epochs=epochs) for r in range(2)]
            two = [best_loss(folder, "random", 200 + r, 2, epochs=epochs) for r in range(2)]
            for label, index in (("whole command", 1), ("trials only", 2)):
                alone, pair = min(r[index] for r in one), min(r[index] for r in two)
                print(
                    f"random search, {TRIALS} trials x {epochs} epochs, {label}: 1 worker "
                    f"{alone:.1f} s, 2 workers {pair:.1f} s (min of 2): speedup "
                    f"{alone / pair:.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
