"""Steps to a known minimum: the ill-conditioned quadratic against its condition number."""

from __future__ import annotations

import math

import pytest
import torch

from gradwise.bench import (
    SADDLE_ESCAPE,
    Tuned,
    ill_conditioned_quadratic,
    surface_benchmark,
)
from gradwise.optim import SGD, Adam, Newton
from gradwise.viz import CriticalPoint, Surface

GRID = tuple(10.0 ** (k / 3) for k in range(-9, -2))  # 1e-3 .. 0.1


def test_gradient_descent_needs_about_kappa_log_steps_and_momentum_fewer() -> None:
    kappa, tolerance = 100.0, 1e-3
    surface = ill_conditioned_quadratic(kappa)
    optimizers = {
        "GD": Tuned(lambda params, lr: SGD(params, lr=lr)),
        "heavy ball": Tuned(lambda params, lr: SGD(params, lr=lr, momentum=0.9)),
    }
    results = surface_benchmark(
        optimizers, [surface], tolerance=tolerance, max_steps=3000, learning_rates=GRID
    )
    # the slow direction (curvature 1) contracts by (1 - lr) per step with lr <= 2 / kappa
    oracle = kappa * math.log(math.dist(surface.start, (0.0, 0.0)) / tolerance)
    gd = results.get(surface.name, "GD").steps
    heavy_ball = results.get(surface.name, "heavy ball").steps
    assert gd is not None
    assert heavy_ball is not None
    assert oracle / 3 < gd < 3 * oracle
    assert heavy_ball < gd / 3


def test_every_reached_point_is_within_tolerance_of_a_listed_minimum() -> None:
    optimizers = {
        "GD": Tuned(lambda params, lr: SGD(params, lr=lr), learning_rates=(1e-3, 1e-2)),
        "Adam": Tuned(lambda params, lr: Adam(params, lr=lr), learning_rates=(0.01, 0.1)),
    }
    results = surface_benchmark(
        optimizers, ["himmelblau", "styblinski_tang", "beale", "saddle"], max_steps=1000
    )
    reached = [run for run in results.runs if run.steps is not None]
    assert len(reached) >= 6
    for run in reached:
        if run.surface == "saddle":
            assert run.minimum is None
            assert run.value <= SADDLE_ESCAPE
            continue
        assert run.minimum is not None
        assert math.dist(run.point, run.minimum.location) <= 1e-3
        assert run.value == pytest.approx(run.minimum.value, abs=1e-4)


def test_a_diverging_rate_is_not_reached_and_the_table_says_so() -> None:
    too_fast = {"GD": lambda params: SGD(params, lr=0.5)}  # > 2 / 20 on the quadratic
    results = surface_benchmark(too_fast, ["quadratic"], max_steps=200)
    assert results.get("quadratic", "GD").steps is None
    table = results.to_table().to_dict()
    assert table["rows"] == [["quadratic", "not reached"]]


def test_bad_input_is_refused_in_the_one_format() -> None:
    gd = {"GD": lambda params: SGD(params, lr=0.01)}
    with pytest.raises(ValueError, match="The 'surfaces' parameter of surface_benchmark"):
        surface_benchmark(gd, ["nowhere"])
    with pytest.raises(ValueError, match="The 'tolerance' parameter of surface_benchmark"):
        surface_benchmark(gd, ["quadratic"], tolerance=0.0)
    with pytest.raises(
        ValueError,
        match=r"^The 'tolerance' parameter of surface_benchmark must be a finite float > 0\. "
        r"Got inf instead\.$",
    ):
        surface_benchmark(gd, ["quadratic"], tolerance=math.inf)
    with pytest.raises(ValueError, match="The 'condition' parameter of ill_conditioned"):
        ill_conditioned_quadratic(0.5)
    with pytest.raises(
        ValueError, match=r"ill_conditioned_quadratic must be a finite float >= 1\."
    ):
        ill_conditioned_quadratic(math.inf)
    assert ill_conditioned_quadratic(4.0)(torch.tensor([2.0, 1.0])).item() == 4.0


def test_closure_optimizers_run_on_the_surfaces() -> None:
    # LBFGS needs step(closure) and Newton a closure that returns the loss unbackpropagated,
    # as gradwise.viz.run_optimizers calls them; both reach Rosenbrock's minimum in a few steps.
    optimizers = {
        "LBFGS": lambda params: torch.optim.LBFGS(params),
        "Newton": lambda params: Newton(params),
    }
    results = surface_benchmark(optimizers, ["rosenbrock", "quadratic"], max_steps=100)
    for run in results.runs:
        assert run.steps is not None, (run.surface, run.optimizer)
        assert run.distance <= 1e-3


def test_the_divergence_guard_measures_from_the_domains_center() -> None:
    # A surface whose box lies far from the origin: runs there are not escapes.
    shifted = Surface(
        "shifted_bowl",
        "f(x, y) = ((x - 1000)^2 + (y - 1000)^2) / 2",
        lambda x, y: 0.5 * ((x - 1000.0) ** 2 + (y - 1000.0) ** 2),
        ((999.0, 1001.0), (999.0, 1001.0)),
        (CriticalPoint((1000.0, 1000.0), 0.0, "global minimum"),),
        start=(999.5, 1000.5),
        learning_rate=0.5,
    )
    gd = {"GD": lambda params: SGD(params, lr=0.5)}
    run = surface_benchmark(gd, [shifted], max_steps=50).get("shifted_bowl", "GD")
    # lr 0.5 on curvature 1 halves the distance each step: 0.707 / 2^10 < 1e-3 < 0.707 / 2^9
    assert run.steps == 10
