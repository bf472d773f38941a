"""The ill-conditioned-quadratic lesson against the closed form (1 - lr lambda_i)^k."""

import math

import numpy as np
import pytest
import torch

from gradwise.viz import quadratic_lesson

EIGENVALUES = [0.5, 2.0, 10.0, 40.0]


@pytest.mark.parametrize("lr_fraction", [0.3, 0.95, 1.02])
def test_the_iterates_in_the_eigenbasis_are_the_factors_to_the_power_k(lr_fraction):
    lr = lr_fraction * 2 / max(EIGENVALUES)
    lesson = quadratic_lesson(EIGENVALUES, lr=lr, num_steps=60, seed=3)
    # The oracle: an eigendecomposition of the lesson's matrix by LAPACK, not its rotation.
    eigenvalues, eigenvectors = torch.linalg.eigh(lesson.matrix)
    torch.testing.assert_close(eigenvalues, torch.tensor(EIGENVALUES, dtype=torch.float64))
    coordinates = lesson.iterates @ eigenvectors  # (steps + 1, n)
    k = torch.arange(61, dtype=torch.float64)[:, None]
    expected = coordinates[0] * (1 - lr * eigenvalues) ** k
    scale = expected.abs().clamp(min=1.0)
    assert ((coordinates - expected).abs() / scale).max().item() < 1e-12
    scale = lesson.predicted.abs().clamp(min=1.0)
    assert ((lesson.iterates - lesson.predicted).abs() / scale).max().item() < 1e-12


def test_the_iterates_are_plain_gradient_descent():
    lesson = quadratic_lesson([1.0, 3.0], lr=0.1, num_steps=5, start=[1.0, -2.0], seed=1)
    x = np.array([1.0, -2.0])
    matrix = lesson.matrix.numpy()
    for k in range(6):
        np.testing.assert_allclose(lesson.iterates[k].numpy(), x, rtol=0, atol=1e-15)
        x = x - 0.1 * matrix @ x
    np.testing.assert_allclose(
        lesson.losses.numpy(), [0.5 * v @ matrix @ v for v in lesson.iterates.numpy()]
    )


def test_converges_below_two_over_lambda_max_and_diverges_above():
    bound = 2 / 40.0
    below = quadratic_lesson(EIGENVALUES, lr=0.98 * bound, num_steps=400)
    above = quadratic_lesson(EIGENVALUES, lr=1.02 * bound, num_steps=400)
    assert below.max_stable_lr == pytest.approx(bound)
    assert below.converges
    assert not below.diverges
    assert above.diverges
    assert not above.converges
    assert below.losses[-1] < 1e-6 * below.losses[0]
    assert above.losses[-1] > 1e3 * above.losses[0]
    assert below.condition_number == pytest.approx(80.0)
    assert "converges" in below.summary()
    assert "diverges" in above.summary()
    # The slow direction is the low-curvature one: after 400 steps at most lambda_min's
    # coordinate is left, shrunk by (1 - lr * 0.5)^400.
    left = below.coordinates[-1].abs() / below.coordinates[0].abs()
    assert int(left.argmax()) == 0
    assert left[0].item() == pytest.approx((1 - 0.98 * bound * 0.5) ** 400, rel=1e-9)


def test_a_negative_eigenvalue_diverges_at_every_learning_rate():
    for lr in (1e-4, 1e-2):
        assert quadratic_lesson([-1.0, 5.0], lr=lr, num_steps=1).diverges


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"eigenvalues": [], "lr": 0.1, "num_steps": 3},
            "The 'eigenvalues' parameter of quadratic_lesson must be a non-empty sequence of finite floats. Got [] instead.",
        ),
        (
            {"eigenvalues": [1.0], "lr": -0.1, "num_steps": 3},
            "The 'lr' parameter of quadratic_lesson must be a finite float > 0. Got -0.1 instead.",
        ),
        (
            {"eigenvalues": [1.0], "lr": float("inf"), "num_steps": 3},
            "The 'lr' parameter of quadratic_lesson must be a finite float > 0. Got inf instead.",
        ),
        (
            {"eigenvalues": [1.0], "lr": 0.1, "num_steps": 2.5},
            "The 'num_steps' parameter of quadratic_lesson must be an int >= 0. Got 2.5 instead.",
        ),
        (
            {"eigenvalues": [1.0, 2.0], "lr": 0.1, "num_steps": 3, "start": [1.0]},
            "The 'start' parameter of quadratic_lesson must be 2 finite floats, one per eigenvalue. Got [1.0] instead.",
        ),
    ],
)
def test_bad_arguments_raise_the_standard_error(kwargs, message):
    with pytest.raises(ValueError, match=r"^The '") as error:
        quadratic_lesson(**kwargs)
    assert str(error.value) == message


def test_a_zero_eigenvalue_is_neither_a_crash_nor_an_oscillation():
    # A flat direction: its factor is exactly 1, so its coordinate never moves.
    flat = quadratic_lesson([0.0], lr=0.1, num_steps=3)
    assert flat.max_stable_lr == math.inf  # 2 / lambda_max as lambda_max -> 0+
    assert not flat.converges
    assert not flat.diverges
    assert "neither converges nor diverges" in flat.summary()
    valley = quadratic_lesson([0.0, 1.0], lr=0.1, num_steps=50)
    assert valley.max_stable_lr == pytest.approx(2.0)
    assert "oscillates" not in valley.summary()
    # exactly at lr = 2 / lambda_max the top direction flips sign every step
    edge = quadratic_lesson([1.0, 10.0], lr=0.2, num_steps=4)
    assert edge.factors[1].item() == -1.0
    assert "oscillates" in edge.summary()


def test_negative_curvature_everywhere_has_no_finite_bound():
    # lambda_max < 0: every direction grows at any lr > 0, so no 2/lambda_max bounds the
    # step (it was reported as -2.0, a negative "largest stable learning rate").
    concave = quadratic_lesson([-1.0, -2.0], lr=0.1, num_steps=3)
    assert concave.max_stable_lr == math.inf
    assert concave.diverges
    assert "no finite 2/lambda_max (lambda_max = -1)" in concave.summary()
    assert "2/lambda_max = -" not in concave.summary()
    # A saddle keeps the bound of its positive direction.
    assert quadratic_lesson([-1.0, 10.0], lr=0.1, num_steps=3).max_stable_lr == 0.2
