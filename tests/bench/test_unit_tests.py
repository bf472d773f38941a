"""Schaul et al.'s unit tests: prototypes against closed forms, noise moments, scoring."""

from __future__ import annotations

import math

import pytest
import torch

from gradwise.bench import (
    MASK_PROBABILITY,
    NOISES,
    SHAPES,
    UNIT_TEST_NAMES,
    Tuned,
    get_unit_test,
    make_unit_test,
    run_unit_test,
    score_optimizers,
)
from gradwise.optim import SGD, Adam


def _sgd(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    return SGD(params, lr=lr)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_each_shape_has_its_minimum_zero_at_zero(name: str) -> None:
    grid = torch.arange(-5000, 5001, dtype=torch.float64) / 1000  # contains 0 exactly
    values = SHAPES[name].function(grid)
    assert grid[values.argmin()].item() == 0.0
    assert values.min().item() == 0.0
    assert (values[grid != 0] > 0).all()


def test_shapes_match_their_formulas() -> None:
    z = torch.tensor([-2.0, -0.5, 1.5], dtype=torch.float64)
    expected = {
        "quadratic": [2.0, 0.125, 1.125],
        "absolute": [2.0, 0.5, 1.5],
        "gauss": [1 - math.exp(-2.0), 1 - math.exp(-0.125), 1 - math.exp(-1.125)],
        "laplace": [1 - math.exp(-2.0), 1 - math.exp(-0.5), 1 - math.exp(-1.5)],
        "cliff": [20.0, 5.0, 0.15],
    }
    for name, values in expected.items():
        torch.testing.assert_close(SHAPES[name].function(z).tolist(), values)


@pytest.mark.parametrize("name", [n for n in UNIT_TEST_NAMES if "dim=1/" not in n + "/"])
def test_multi_dimensional_tests_have_zero_gap_only_at_their_optimum(name: str) -> None:
    test = get_unit_test(name)
    optimum = test.optimum(7).unsqueeze(0)
    assert test.loss_gap(optimum, 7).item() == 0.0
    nearby = optimum + 0.1 * torch.randn(5, test.dim, dtype=torch.float64)
    assert (test.loss_gap(nearby, 7) > 0).all()


def test_rotation_is_orthogonal_and_scales_span_the_condition_number() -> None:
    test = make_unit_test("quadratic", dim=10, condition=100.0, rotated=True)
    rotation = test.rotation()
    torch.testing.assert_close(rotation @ rotation.T, torch.eye(10, dtype=torch.float64))
    # the Hessian of the noise-free quadratic is R^T diag(c) R: eigenvalues c, kappa 100
    hessian = torch.autograd.functional.hessian(
        lambda x: test.loss_gap(x.unsqueeze(0), 0).sum(), torch.zeros(10, dtype=torch.float64)
    )
    eigenvalues = torch.linalg.eigvalsh(hessian)
    torch.testing.assert_close(eigenvalues, test.coefficients())
    assert eigenvalues.max() / eigenvalues.min() == pytest.approx(100.0)


def test_drift_moves_the_optimum_linearly() -> None:
    test = make_unit_test("absolute", drift=0.01)
    assert test.optimum(100).tolist() == pytest.approx([1.0])
    assert test.loss_gap(torch.tensor([[1.0]], dtype=torch.float64), 100).item() == 0.0


def _draws(name: str) -> torch.Tensor:
    return NOISES[name].sample((200_000,), torch.Generator().manual_seed(1))


def test_gaussian_noises_have_their_stated_mean_and_variance() -> None:
    additive, multiplicative = _draws("additive-gauss"), _draws("multiplicative-gauss")
    tolerance = 5 / math.sqrt(200_000)  # five standard errors
    assert abs(additive.mean().item()) < tolerance
    assert abs(additive.std().item() - 1.0) < tolerance
    assert abs(multiplicative.mean().item() - 1.0) < tolerance
    assert abs(multiplicative.std().item() - 1.0) < tolerance


def test_cauchy_noise_has_median_zero_and_quartiles_at_plus_minus_one() -> None:
    draws = _draws("additive-cauchy")
    quartiles = torch.quantile(draws[:100_000], torch.tensor([0.25, 0.5, 0.75], dtype=draws.dtype))
    torch.testing.assert_close(quartiles.tolist(), [-1.0, 0.0, 1.0], atol=0.03, rtol=0)
    assert draws.abs().max() > 1e3  # heavy tails: a Gaussian never gets this far


def test_mask_noise_is_sparse_with_mean_one_and_none_is_the_shape_itself() -> None:
    draws = _draws("mask")
    keep = (draws != 0).double().mean().item()
    assert abs(keep - MASK_PROBABILITY) < 5 * math.sqrt(0.09 / 200_000)
    assert set(draws.unique().tolist()) == {0.0, 1 / MASK_PROBABILITY}
    assert abs(draws.mean().item() - 1.0) < 0.03
    assert (_draws("none") == 1.0).all()


def test_sgd_on_the_quadratic_follows_the_closed_form() -> None:
    test = get_unit_test("quadratic/none/scale=10/dim=1")  # f = 10 x^2 / 2, curvature 10
    gaps = run_unit_test(test, lambda params: SGD(params, lr=0.03), num_steps=25, num_runs=2)
    x_final = 2.0 * (1 - 0.03 * 10) ** 25
    torch.testing.assert_close(gaps.tolist(), [5.0 * x_final**2] * 2)


def test_shift_noise_reaches_the_optimizer_as_gradient_noise() -> None:
    test = get_unit_test("quadratic/additive-gauss/scale=1/dim=1")
    first = run_unit_test(test, lambda params: SGD(params, lr=0.5), num_steps=30, seed=3)
    again = run_unit_test(test, lambda params: SGD(params, lr=0.5), num_steps=30, seed=3)
    assert first.tolist() == again.tolist()  # the seed fixes the samples
    assert len(set(first.tolist())) == len(first)  # each run has its own samples
    # x <- x/2 + xi/2 has stationary variance 1/3, so the gap x^2/2 averages 1/6
    assert 0.01 < first.mean().item() < 1.0


TESTS = [
    "quadratic/additive-gauss/scale=1/dim=1",
    "absolute/none/scale=1/dim=1",
    "gauss/mask/scale=1/dim=1",
    "quadratic/none/scale=1/dim=2/kappa=100",
]


def test_tuned_sgd_scores_one_against_itself() -> None:
    result = score_optimizers({"SGD": Tuned(_sgd)}, TESTS, num_steps=20, num_runs=3)
    assert result.scores.tolist() == [[1.0]] * len(TESTS)
    assert result.learning_rates[:, 0].tolist() == result.baseline_learning_rates.tolist()


def test_an_optimizer_that_does_nothing_scores_worse_than_tuned_sgd() -> None:
    result = score_optimizers(
        {"still": lambda params: SGD(params, lr=0.0)}, TESTS, num_steps=20, num_runs=3
    )
    assert (result.scores > 1.0).all()


def test_adam_beats_sgd_on_the_badly_scaled_test() -> None:
    name = "quadratic/none/scale=1/dim=2/kappa=100"
    adam = Tuned(lambda params, lr: Adam(params, lr=lr))
    result = score_optimizers({"Adam": adam}, [name], num_steps=100, num_runs=2)
    assert result.scores[0, 0] < 0.1


def test_table_and_grid_image(tmp_path: pytest.TempPathFactory) -> None:
    result = score_optimizers(
        {"SGD": Tuned(_sgd), "still": lambda params: SGD(params, lr=0.0)},
        TESTS[:2], num_steps=5, num_runs=2, learning_rates=(0.1, 1.0),
    )  # fmt: skip
    table = result.to_table().to_dict()
    assert table["columns"] == ["test", "SGD lr", "SGD", "still"]
    assert [row[0] for row in table["rows"]] == [*TESTS[:2], "median score"]
    path = result.write_grid(tmp_path / "grid" / "scores.png")  # type: ignore[operator]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000


def test_bad_input_is_refused_in_the_one_format() -> None:
    with pytest.raises(ValueError, match="The 'name' parameter of get_unit_test must be one of"):
        get_unit_test("no such test")
    with pytest.raises(ValueError, match="The 'tests' parameter of score_optimizers must be"):
        score_optimizers({"SGD": Tuned(_sgd)}, ["nope"])
    with pytest.raises(ValueError, match="The 'learning_rates' parameter of Tuned must be"):
        Tuned(_sgd, learning_rates=(0.1, -1.0))
    with pytest.raises(
        ValueError,
        match=r"^The 'learning_rates' parameter of Tuned must be a non-empty sequence of finite "
        r"floats > 0\. Got \(0\.1, inf\) instead\.$",
    ):
        Tuned(_sgd, learning_rates=(0.1, math.inf))
    with pytest.raises(ValueError, match="The 'condition' parameter of make_unit_test must be"):
        make_unit_test("quadratic", condition=0.5)
    with pytest.raises(
        ValueError,
        match=r"^The 'condition' parameter of make_unit_test must be a finite float >= 1\. "
        r"Got inf instead\.$",
    ):
        make_unit_test("quadratic", condition=math.inf)
    with pytest.raises(ValueError, match="The 'optimizers' parameter of score_optimizers"):
        score_optimizers({}, TESTS)
    with pytest.raises(TypeError, match="must be a GradientTransform"):
        run_unit_test(get_unit_test(TESTS[0]), lambda params: "not an optimizer")  # type: ignore[arg-type,return-value]


def test_closure_optimizers_run_on_a_unit_test() -> None:
    test = get_unit_test("quadratic/none/scale=1/dim=2/kappa=100")
    gaps = run_unit_test(test, lambda params: torch.optim.LBFGS(params), num_steps=5, num_runs=2)
    assert gaps.max().item() < 1e-12  # a quadratic: LBFGS solves it in a few iterations
