"""The lectures' learning-rate lesson: too low crawls, too high explodes, good goes furthest."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.reproductions._scripts import load_script

script = load_script("learning_rates")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("learning_rates")
    return {"out": out, "curves": script.main(["--epochs", "4", "--out", str(out)])}


def test_too_low_barely_moves(results: dict) -> None:
    curve = results["curves"]["too low"]
    assert curve[-1] < curve[0]
    assert curve[0] - curve[-1] < 0.1


def test_too_high_explodes(results: dict) -> None:
    curve = results["curves"]["too high"]
    assert not math.isfinite(max(curve)) or max(curve) > 10 * curve[0]


def test_good_reaches_the_lowest_loss(results: dict) -> None:
    finals = {name: curve[-1] for name, curve in results["curves"].items()}
    assert min(finals, key=lambda name: finals[name]) == "good"
    assert finals["good"] < 0.5


def test_high_stalls_above_good(results: dict) -> None:
    curves = results["curves"]
    assert curves["good"][-1] < curves["high"][-1] < curves["high"][0]


def test_figure_is_written(results: dict) -> None:
    assert (Path(results["out"]) / "learning_rates.png").stat().st_size > 1000
