"""Reddi et al. (2018): Adam drifts to x = +1, AMSGrad reaches the optimum x = -1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reproductions._scripts import load_script

script = load_script("amsgrad_counterexample")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("amsgrad")
    return {"out": out, **script.main(["--steps", "3000", "--out", str(out)])}


def test_adam_drifts_to_the_worst_point(results: dict) -> None:
    assert results["Adam"]["final_x"] == pytest.approx(1.0, abs=1e-6)
    # Regret per step stays bounded away from 0: over a period the loss gap is (C-2)*2 / 3.
    assert results["Adam"]["average_regret"] > 0.5


def test_amsgrad_reaches_the_optimum(results: dict) -> None:
    assert results["AMSGrad"]["final_x"] < -0.99
    assert results["AMSGrad"]["average_regret"] < 0.1


def test_iterates_stay_in_the_feasible_set(results: dict) -> None:
    for name in ("Adam", "AMSGrad"):
        assert all(-1.0 <= x <= 1.0 for x in results[name]["iterates"])


def test_figure_is_written(results: dict) -> None:
    assert (Path(results["out"]) / "amsgrad_counterexample.png").stat().st_size > 1000


def test_gradient_matches_the_losses_derivative() -> None:
    # f_t(x) = C x when t mod 3 == 1, else -x: finite difference of the loss itself.
    for t in range(1, 7):

        def f(x: float, t: int = t) -> float:
            return 3.0 * x if t % 3 == 1 else -x

        assert script.gradient(t) == pytest.approx((f(0.1) - f(-0.1)) / 0.2)
