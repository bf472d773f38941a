"""Goyal et al. (2017): at k times the batch and k times the rate, warmup tames the start."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.reproductions._scripts import load_script

script = load_script("warmup")

# The script's default run: batch 8 at lr 0.015 against batch 128 (k = 16) at lr 0.24,
# weights 4x torch's default init, 15 epochs, 5 warmup epochs, rates / 10 at epoch 10,
# seeds 0-4 (~20 s on one thread).
WARMUP_EPOCHS, EPOCHS = 5, 15

# The runs are chaotic (the no-warmup run above all), so every claim is about the five
# seeds together, never one seed. The margins come from 90 runs of each kind: seeds 0-29
# as they are, with the initial weights scaled by 1 + 1e-6, and with every parameter
# multiplied by 1 + 1e-3 * N(0, 1) (a stand-in for another CPU or torch version), and
# from 2,000 random sets of 5 of those seeds (docs/reproductions.md, section 6):
# - mean loss over epochs 2-6, warmup / no warmup: below 1 in 90 of 90 seeds (per seed
#   at most 0.86); geometric mean over 5 seeds 0.39-0.41 (median), at most 0.73;
# - epoch 1 (the no-warmup run's spike): warmup / no warmup at most 0.80 in every seed;
# - warmup's loss after the warmup: at most 0.34 in every seed (chance is 2.3);
# - final loss, warmup / no warmup: below 1 in 90 of 90 seeds; geometric mean over 5
#   seeds 0.04-0.05 (median), at most 0.32;
# - final loss, warmup / small batch: geometric mean over 5 seeds 2.2-2.3 (median), at
#   most 6.05 (from 1.05: "small batch still lower" is not robust, so not asserted);
# - test accuracy, small batch minus warmup, mean over 5 seeds: at most 0.015.
# Not asserted, because it does not hold robustly: that warmup's test accuracy beats
# no-warmup's (the 5-seed mean difference ranged from -0.004 to +0.49).


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("warmup")
    result = script.main(["--out", str(out)])
    assert result["seeds"] == [0, 1, 2, 3, 4]
    small, plain, warm = result["names"]
    runs = [{"small": r[small], "plain": r[plain], "warm": r[warm]} for r in result["per_seed"]]
    return {"out": out, "runs": runs, **result}


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(value) for value in values) / len(values))


def mean_loss(run: dict, first: int, last: int) -> float:
    """The run's mean training loss over epochs ``first`` to ``last`` (1-based)."""
    losses = run["losses"][first - 1 : last]
    return sum(losses) / len(losses)


def test_without_warmup_the_start_is_worse(results: dict) -> None:
    # Epochs 2 to W + 1: the rest of the warmup and the first epoch at the full rate.
    ratios = [
        mean_loss(r["warm"], 2, WARMUP_EPOCHS + 1) / mean_loss(r["plain"], 2, WARMUP_EPOCHS + 1)
        for r in results["runs"]
    ]
    assert sum(ratio < 1 for ratio in ratios) >= 4, ratios
    assert geometric_mean(ratios) < 0.8, ratios


def test_without_warmup_the_first_epoch_spikes(results: dict) -> None:
    ratios = [r["warm"]["losses"][0] / r["plain"]["losses"][0] for r in results["runs"]]
    assert sum(ratio < 1 for ratio in ratios) >= 4, ratios
    assert geometric_mean(ratios) < 0.8, ratios


def test_the_warmed_up_run_does_not_diverge(results: dict) -> None:
    for r in results["runs"]:
        after_warmup = r["warm"]["losses"][WARMUP_EPOCHS:]
        assert len(after_warmup) == EPOCHS - WARMUP_EPOCHS
        assert all(math.isfinite(loss) and loss < 1.0 for loss in after_warmup), after_warmup


def test_warmup_ends_far_below_no_warmup(results: dict) -> None:
    ratios = [r["warm"]["losses"][-1] / r["plain"]["losses"][-1] for r in results["runs"]]
    assert sum(ratio < 1 for ratio in ratios) >= 4, ratios
    assert geometric_mean(ratios) < 0.4, ratios


def test_warmup_approaches_the_small_batch(results: dict) -> None:
    ratios = [r["warm"]["losses"][-1] / r["small"]["losses"][-1] for r in results["runs"]]
    assert geometric_mean(ratios) < 8, ratios
    names, accuracy = results["names"], results["test_accuracy"]
    assert accuracy[names[0]] - accuracy[names[2]] < 0.025, accuracy


def test_figure_is_written(results: dict) -> None:
    assert (Path(results["out"]) / "warmup.png").stat().st_size > 1000
