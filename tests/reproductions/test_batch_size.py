"""Shallue et al. (2018): steps to a target fall almost as 1/batch, then level off."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reproductions._scripts import load_script

script = load_script("batch_size")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("batch_size")
    argv = ["--batch-sizes", "8", "64", "512", "--lr-exponents", "-6", "-1"]
    return {"out": out, **script.main([*argv, "--max-steps", "400", "--out", str(out)])}


def test_every_batch_size_reaches_the_target(results: dict) -> None:
    assert all(steps is not None for steps in results["steps"].values())


def test_larger_batches_need_fewer_steps(results: dict) -> None:
    steps = results["steps"]
    assert steps[8] > steps[64] > steps[512]


def test_scaling_is_near_perfect_at_small_batch_and_diminishes_at_large(results: dict) -> None:
    steps = results["steps"]
    small, large = steps[8] / steps[64], steps[64] / steps[512]  # perfect scaling: 8 each
    assert small >= 4.0
    assert large < small / 1.5
    # Diminishing returns: a large batch needs more samples (steps * batch) to the target.
    assert 512 * steps[512] > 2 * 64 * steps[64]


def test_the_best_learning_rate_grows_with_the_batch(results: dict) -> None:
    best_lr = results["best_lr"]
    assert best_lr[8] < best_lr[64] < best_lr[512]


def test_figure_is_written(results: dict) -> None:
    assert (Path(results["out"]) / "batch_size.png").stat().st_size > 1000
