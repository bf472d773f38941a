"""Running optimizers on the surfaces: convergence to the known minima, the divergence guard."""

import math

import numpy as np
import pytest
import torch

from gradwise import optim
from gradwise.viz import get_surface, run_optimizers


def test_tuned_optimizers_reach_the_known_minimum_of_the_quadratic_and_rosenbrock():
    quadratic = get_surface("quadratic")
    runs = run_optimizers(
        quadratic,
        {
            "GD": lambda params: optim.SGD(params, lr=0.09),
            "Adam": lambda params: optim.Adam(params, lr=0.05),
            "chain": optim.chain(optim.scale_by_momentum(0.5), optim.scale_by_learning_rate(0.05)),
        },
        num_steps=400,
    )
    for run in runs:
        assert not run.diverged
        assert math.dist(run.final_point, (0.0, 0.0)) < 1e-6, run.name
    rosenbrock = get_surface("rosenbrock")
    (run,) = run_optimizers(
        rosenbrock,
        {"momentum": lambda params: optim.SGD(params, lr=2e-3, momentum=0.9)},
        num_steps=2000,
    )
    assert math.dist(run.final_point, (1.0, 1.0)) < 1e-4
    assert run.final_value < 1e-8


def test_the_recorded_points_are_the_optimizers_iterates():
    # Oracle: gradient descent on Rosenbrock with its gradient written out by hand.
    surface = get_surface("rosenbrock")
    (run,) = run_optimizers(
        surface, {"GD": optim.chain(optim.scale_by_learning_rate(1e-3))}, num_steps=20
    )
    x, y = surface.start
    for k in range(21):
        np.testing.assert_allclose(run.points[k], [x, y], rtol=1e-12)
        dx = -2 * (1 - x) - 400 * x * (y - x**2)
        dy = 200 * (y - x**2)
        x, y = x - 1e-3 * dx, y - 1e-3 * dy
    np.testing.assert_allclose(
        run.values, [(1 - a) ** 2 + 100 * (b - a**2) ** 2 for a, b in run.points]
    )
    assert run.points.shape == (21, 2)
    assert run.stop_reason is None


def test_torch_optimizers_with_closures_and_newton_run_too():
    surface = get_surface("rosenbrock")
    runs = run_optimizers(
        surface,
        {
            "newton": lambda params: optim.Newton(params),
            "lbfgs": lambda params: torch.optim.LBFGS(params),
        },
        num_steps=30,
    )
    for run in runs:
        assert math.dist(run.final_point, (1.0, 1.0)) < 1e-5, run.name


def test_the_divergence_guard_stops_a_run_above_the_stable_learning_rate():
    quadratic = get_surface("quadratic")  # lambda_max = 20: stable below lr = 0.1
    stable, unstable = run_optimizers(
        quadratic,
        {
            "0.099": optim.chain(optim.scale_by_learning_rate(0.099)),
            "0.11": optim.chain(optim.scale_by_learning_rate(0.11)),
        },
        num_steps=1000,
    )
    assert not stable.diverged
    assert len(stable.points) == 1001
    assert unstable.diverged
    assert "left the region" in unstable.stop_reason
    # |1 - 0.11 * 20| = 1.2 per step from |y0| = 1.5: past 600 (100 x the domain) at step 33.
    assert len(unstable.points) - 1 == math.ceil(math.log(600 / 1.5) / math.log(1.2))
    overflow = run_optimizers(
        quadratic,
        {"huge": optim.chain(optim.scale_by_learning_rate(1e200))},
        num_steps=10,
        escape_radius=1e300,
    )
    assert "non-finite" in overflow[0].stop_reason


def test_the_saddle_repels_along_its_negative_curvature_direction():
    (run,) = run_optimizers(
        get_surface("saddle"),
        {"GD": optim.chain(optim.scale_by_learning_rate(0.05))},
        num_steps=100,
    )
    # x shrinks by (1 - 0.05 * 2) per step, y grows by (1 + 0.05 * 2).
    np.testing.assert_allclose(run.points[-1], [-1.5 * 0.9**100, 1e-3 * 1.1**100], rtol=1e-10)


def test_the_callers_rng_state_is_restored():
    def draws_from_the_global_rng(params):
        torch.rand(5)  # say, a randomly initialized optimizer state
        return optim.SGD(params, lr=0.01)

    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    run_optimizers(get_surface("beale"), {"SGD": draws_from_the_global_rng}, num_steps=3)
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"num_steps": 0},
            ValueError,
            "The 'num_steps' parameter of run_optimizers must be an int >= 1. Got 0 instead.",
        ),
        (
            {"start": (1.0, float("nan"))},
            ValueError,
            "The 'start' parameter of run_optimizers must be a pair of finite floats. Got (1.0, nan) instead.",
        ),
        (
            {"escape_radius": math.inf},  # a guard that never trips: pass a large finite radius
            ValueError,
            "The 'escape_radius' parameter of run_optimizers must be a finite float > 0. Got inf instead.",
        ),
        (
            {"optimizers": {}},
            TypeError,
            "The 'optimizers' parameter of run_optimizers must be a non-empty mapping from labels to optimizers. Got {} instead.",
        ),
        (
            {"optimizers": {"bad": 3}},
            TypeError,
            "The optimizer 'bad' of run_optimizers must be a GradientTransform or a function that returns a torch.optim.Optimizer for the given parameters (e.g. lambda params: SGD(params, lr=1e-3)). Got int returning NoneType instead.",
        ),
    ],
)
def test_bad_arguments_raise_the_standard_error(kwargs, error, message):
    arguments = {"optimizers": {"GD": optim.chain(optim.scale_by_learning_rate(0.1))}, **kwargs}
    with pytest.raises(error) as raised:
        run_optimizers(get_surface("quadratic"), **arguments)
    assert str(raised.value) == message
