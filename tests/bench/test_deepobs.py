"""DeepOBS quadratic_deep: the spectrum, the noise floor and tuned SGD, against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from gradwise.bench import (
    make_quadratic_deep,
    quadratic_deep_benchmark,
    run_quadratic_deep,
    tuned_optimizers,
)
from gradwise.optim import SGD


def test_hessian_spectrum_is_the_definition() -> None:
    problem = make_quadratic_deep(num_epochs=1)
    theta = torch.randn(100, dtype=torch.float64)
    batch = problem.train_inputs[:128]
    hessian = torch.autograd.functional.hessian(lambda t: problem.loss(t, batch), theta)
    eigenvalues = torch.linalg.eigvalsh(hessian)  # ascending
    assert eigenvalues[:90].min() >= -1e-10
    assert eigenvalues[:90].max() <= 1.0
    assert eigenvalues[90:].min() >= 30.0
    assert eigenvalues[90:].max() <= 60.0
    torch.testing.assert_close(eigenvalues, torch.sort(problem.eigenvalues).values)
    # rotated: not diagonal in the coordinate basis
    off_diagonal = hessian - torch.diag(torch.diagonal(hessian))
    assert off_diagonal.abs().max() > 1.0


def test_loss_at_the_optimum_is_the_closed_form_noise_floor() -> None:
    problem = make_quadratic_deep(test_size=20000, num_epochs=1)
    q = problem.hessian
    floor = 0.5 * 0.6**2 * float(torch.trace(q))
    assert problem.noise_floor == pytest.approx(floor)
    # per-example variance of x^T Q x / 2 for x ~ N(0, s^2 I) is s^4 tr(Q^2) / 2
    sigma = math.sqrt(0.5 * 0.6**4 * float(torch.trace(q @ q)) / 20000)
    assert abs(problem.test_loss(torch.zeros(100, dtype=torch.float64)) - floor) < 5 * sigma
    theta = torch.randn(100, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = floor + 0.5 * float(theta @ q @ theta)
    assert abs(problem.test_loss(theta) - expected) < 6 * sigma + 0.05 * (expected - floor)


def test_tuned_sgd_goes_far_below_the_initial_loss() -> None:
    problem = make_quadratic_deep(num_epochs=10)
    results = quadratic_deep_benchmark(
        tuned_optimizers(["SGD"]),
        problem=problem,
        learning_rates=(1e-4, 1e-2, 10.0),
        num_seeds=2,
    )
    initial = problem.test_loss(problem.start)
    final = results.final_test_loss("SGD")
    assert final - problem.noise_floor < 0.1 * (initial - problem.noise_floor)
    assert results.reruns["SGD"][0].learning_rate == pytest.approx(1e-2)
    assert results.sweeps["SGD"][2].final_test_loss == math.inf  # lr 10 diverges
    text = results.to_table().render_text()
    assert "87.53" in text


def test_runs_are_seeded_and_plain_factories_run() -> None:
    problem = make_quadratic_deep(num_epochs=2)
    first = run_quadratic_deep(problem, lambda params: SGD(params, lr=0.01), seed=3)
    second = run_quadratic_deep(problem, lambda params: SGD(params, lr=0.01), seed=3)
    assert first.test_losses == second.test_losses
    assert len(first.test_losses) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noise_std": -1.0}, "The 'noise_std' parameter of make_quadratic_deep must be"),
        ({"batch_size": 2000}, "The 'batch_size' parameter of make_quadratic_deep must be"),
        ({"num_large": 1.5}, "The 'num_large' parameter of make_quadratic_deep must be"),
        (
            {"noise_std": math.inf},
            r"^The 'noise_std' parameter of make_quadratic_deep must be a finite float >= 0\. "
            r"Got inf instead\.$",
        ),
    ],
)
def test_bad_arguments_raise_the_one_format(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_quadratic_deep(**kwargs)  # type: ignore[arg-type]


def test_tuned_optimizer_needs_a_learning_rate() -> None:
    problem = make_quadratic_deep(num_epochs=1)
    with pytest.raises(ValueError, match="The 'lr' parameter of run_quadratic_deep"):
        run_quadratic_deep(problem, tuned_optimizers(["SGD"])["SGD"])


def test_closure_optimizers_train_on_quadratic_deep() -> None:
    problem = make_quadratic_deep(num_epochs=1)
    run = run_quadratic_deep(problem, lambda params: torch.optim.LBFGS(params, max_iter=5))
    assert run.final_test_loss < run.test_losses[0]
