"""The lectures' initialization lesson: which scheme keeps the signal alive, and what trains."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.reproductions._scripts import load_script

script = load_script("initialization")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("initialization")
    return {"out": out, **script.main(["--epochs", "3", "--out", str(out)])}


def std(results: dict, activation: str, scheme: str, layer: int) -> float:
    return float(results["statistics"][(activation, scheme)][layer - 1].std())


@pytest.mark.parametrize("activation", ["tanh", "ReLU"])
def test_small_gaussian_collapses_the_activations(results: dict, activation: str) -> None:
    # Each layer multiplies the std by at most 0.01 * sqrt(500) = 0.22 (tanh and ReLU shrink).
    assert std(results, activation, "0.01*randn", 10) < 0.224**10 * 10
    assert std(results, activation, "0.01*randn", 10) < 1e-5


def test_xavier_keeps_tanh_spread(results: dict) -> None:
    assert std(results, "tanh", "Xavier", 10) > 0.2


def test_xavier_halves_relu_variance_per_layer(results: dict) -> None:
    # A ReLU keeps half of the second moment: the std shrinks by about sqrt(2) per layer.
    ratio = std(results, "ReLU", "Xavier", 10) / std(results, "ReLU", "Xavier", 1)
    assert ratio == pytest.approx(2 ** (-9 / 2), rel=0.3)


def test_he_keeps_relu_spread(results: dict) -> None:
    ratio = std(results, "ReLU", "He", 10) / std(results, "ReLU", "He", 1)
    assert 0.7 < ratio < 1.3


@pytest.mark.parametrize("activation", ["tanh", "ReLU"])
def test_small_gaussian_does_not_train(results: dict, activation: str) -> None:
    losses = results["training"][(activation, "0.01*randn")]["losses"]
    assert losses[-1] == pytest.approx(math.log(10), abs=0.01)


@pytest.mark.parametrize(("activation", "scheme"), [("tanh", "Xavier"), ("ReLU", "He")])
def test_calibrated_schemes_train(results: dict, activation: str, scheme: str) -> None:
    curve = results["training"][(activation, scheme)]
    assert curve["losses"][-1] < 0.5 * curve["losses"][0]
    assert curve["test_accuracy"] > 0.5


def test_figures_are_written(results: dict) -> None:
    for name in ("initialization_histograms.png", "initialization_curves.png"):
        assert (Path(results["out"]) / name).stat().st_size > 1000
