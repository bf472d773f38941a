"""Wilson et al. (2017): on the separable construction, GD generalizes and adaptive methods do not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.reproductions._scripts import load_script

script = load_script("wilson_separable")
ADAPTIVE = ("AdaGrad", "RMSprop", "Adam")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("wilson")
    return {"out": out, **script.main(["--samples", "30", "--steps", "1500", "--out", str(out)])}


def test_every_method_fits_the_training_set(results: dict) -> None:
    for name in ("GD", *ADAPTIVE):
        assert results[name]["train_error"] == 0.0
        assert results[name]["train_loss"] < 1e-6


def test_gradient_descent_finds_the_minimum_norm_solution(results: dict) -> None:
    features, labels = results["problem"]["features"], results["problem"]["labels"]
    minimum_norm = torch.linalg.pinv(features) @ labels
    torch.testing.assert_close(results["GD"]["weights"], minimum_norm, atol=1e-6, rtol=0)
    assert results["GD"]["test_error"] == 0.0


def test_adaptive_methods_label_every_new_sample_positive(results: dict) -> None:
    labels = results["problem"]["labels"]
    assert labels.sum() > 0  # the paper's condition: more positive than negative labels
    for name in ADAPTIVE:
        # Test error 1 - p = 0.4 up to sampling noise on 10,000 test labels.
        assert results[name]["test_error"] == pytest.approx(0.4, abs=0.03)
        assert results[name]["w2_plus_w3"] >= results[name]["w1"]


def test_design_matches_the_papers_construction() -> None:
    features, labels = script.make_problem(4, 0.6, torch.Generator().manual_seed(3))
    assert features.shape == (4, 3 + 5 * 4)
    for i in range(4):
        private = features[i, 3:]
        assert features[i, 0] == labels[i]
        assert features[i, 1] == features[i, 2] == 1.0
        assert int(private.sum()) == (1 if labels[i] > 0 else 5)
        assert int(private[5 * i]) == 1  # the paper's coordinate 4 + 5(i - 1), 0-based


def test_figure_is_written(results: dict) -> None:
    assert (Path(results["out"]) / "wilson_separable.png").stat().st_size > 1000
