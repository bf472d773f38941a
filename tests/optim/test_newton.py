"""Newton: the exact damped Newton step, checked against independent oracles."""

from __future__ import annotations

import copy
import doctest
import io
import math
import re
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch.func import functional_call

from gradwise.optim import Newton

F64 = torch.float64


def newton_state(optimizer: Newton) -> dict[str, float]:
    return optimizer.state["param_group_0"]


def random_spd(n: int, generator: torch.Generator) -> torch.Tensor:
    m = torch.randn(n, n, dtype=F64, generator=generator)
    return m @ m.T + n * torch.eye(n, dtype=F64)


# -- the step against oracles ----------------------------------------------------------------


@pytest.mark.parametrize("lr", [1.0, 0.5])
def test_one_step_solves_a_strictly_convex_quadratic(lr: float) -> None:
    generator = torch.Generator().manual_seed(0)
    a, b = random_spd(10, generator), torch.randn(10, dtype=F64, generator=generator)
    x = torch.randn(10, dtype=F64, generator=generator, requires_grad=True)
    x0 = x.detach().clone()
    optimizer = Newton([x], lr=lr, damping=1e-12)

    optimizer.step(lambda: 0.5 * x @ a @ x - b @ x)

    minimizer = torch.linalg.solve(a, b)
    torch.testing.assert_close(x.detach(), x0 + lr * (minimizer - x0), rtol=0, atol=1e-8)
    assert newton_state(optimizer)["damping"] == 1e-12


def test_step_is_the_damped_newton_step_with_the_exact_hessian_of_an_mlp() -> None:
    torch.manual_seed(0)
    # 4*12+12 + 12*6+6 + 6+1 = 145 parameters: three batched blocks of Hessian rows.
    layers = [torch.nn.Linear(4, 12), torch.nn.Tanh(), torch.nn.Linear(12, 6), torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(6, 1)).to(F64)
    x, y = torch.randn(32, 4, dtype=F64), torch.randn(32, 1, dtype=F64)
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(flat, [math.prod(shape) for shape in shapes])
        params = {n: p.view(s) for n, p, s in zip(names, pieces, shapes, strict=True)}
        return torch.nn.functional.mse_loss(functional_call(model, params, (x,)), y)

    hessian = torch.autograd.functional.hessian(loss_of, theta)
    gradient = torch.autograd.functional.jacobian(loss_of, theta)
    # A damping that makes H + mu I positive definite, so it is the one the step uses.
    mu = max(1e-2, 1.0 - torch.linalg.eigvalsh(hessian)[0].item())
    expected = theta - torch.linalg.solve(
        hessian + mu * torch.eye(theta.numel(), dtype=F64), gradient
    )

    optimizer = Newton(model.parameters(), lr=1.0, damping=mu)
    loss = optimizer.step(lambda: torch.nn.functional.mse_loss(model(x), y))

    stepped = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(stepped, expected, rtol=1e-10, atol=1e-12)
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    torch.testing.assert_close(grads, gradient, rtol=1e-12, atol=1e-14)
    assert loss.item() == pytest.approx(loss_of(theta).item(), rel=1e-14)
    assert not loss.requires_grad
    assert newton_state(optimizer)["damping"] == mu


def test_rosenbrock_converges_from_the_classic_start() -> None:
    point = torch.tensor([-1.2, 1.0], dtype=F64, requires_grad=True)
    optimizer = Newton([point])

    def rosenbrock() -> torch.Tensor:
        x, y = point
        return (1 - x) ** 2 + 100 * (y - x**2) ** 2

    for _ in range(30):
        optimizer.step(rosenbrock)
        if torch.allclose(point.detach(), torch.ones(2, dtype=F64), rtol=0, atol=1e-6):
            break
    torch.testing.assert_close(point.detach(), torch.ones(2, dtype=F64), rtol=0, atol=1e-6)
    assert newton_state(optimizer)["step"] <= 30
    optimizer.step(rosenbrock)
    assert newton_state(optimizer)["newton_decrement"] < 1e-6


def test_logistic_regression_matches_numpy_newton_raphson_iterate_by_iterate() -> None:
    rng = np.random.default_rng(0)
    features = np.hstack([rng.normal(size=(60, 2)), np.ones((60, 1))])
    labels = (features @ np.array([2.0, -1.0, 0.5]) + rng.normal(size=60) > 0).astype(float)
    weights = torch.zeros(3, dtype=F64, requires_grad=True)
    x, y = torch.from_numpy(features), torch.from_numpy(labels)
    optimizer = Newton([weights], damping=0.0)
    expected = np.zeros(3)

    for _ in range(6):
        # IRLS for the mean negative log-likelihood: w <- w - (X^T S X / N)^{-1} X^T (p - y) / N.
        probabilities = 1 / (1 + np.exp(-features @ expected))
        hessian = features.T @ (features * (probabilities * (1 - probabilities))[:, None])
        expected = expected - np.linalg.solve(hessian, features.T @ (probabilities - labels))
        optimizer.step(lambda: torch.nn.functional.binary_cross_entropy_with_logits(x @ weights, y))
        np.testing.assert_allclose(weights.detach().numpy(), expected, rtol=1e-10, atol=1e-12)
        assert newton_state(optimizer)["damping"] == 0.0


def test_damping_grows_at_a_saddle_and_the_step_still_descends() -> None:
    point = torch.tensor([0.5, 0.1], dtype=F64, requires_grad=True)

    def saddle() -> torch.Tensor:
        return point[0] ** 2 - point[1] ** 2

    optimizer = Newton([point], damping=1e-4)
    before = saddle().item()
    optimizer.step(saddle)

    # H = diag(2, -2): 1e-4, 1e-3, ..., 1 fail; 10 is the first tried above 2.
    mu = newton_state(optimizer)["damping"]
    assert mu == pytest.approx(10.0)
    expected = torch.tensor([0.5 - 1.0 / (2 + mu), 0.1 + 0.2 / (mu - 2)], dtype=F64)
    torch.testing.assert_close(point.detach(), expected)
    assert saddle().item() < before


def test_damping_falls_back_tenfold_per_step_once_the_hessian_is_positive_definite() -> None:
    point = torch.tensor([0.5, 0.1], dtype=F64, requires_grad=True)
    optimizer = Newton([point], damping=1e-4)
    optimizer.step(lambda: point[0] ** 2 - point[1] ** 2)
    dampings = []
    for _ in range(6):
        optimizer.step(lambda: point[0] ** 2 + point[1] ** 2)
        dampings.append(newton_state(optimizer)["damping"])
    assert dampings == pytest.approx([1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-4])


def test_zero_damping_on_an_indefinite_hessian_starts_growing_from_1e_3() -> None:
    point = torch.tensor([0.5, 0.1], dtype=F64, requires_grad=True)
    optimizer = Newton([point], damping=0.0)
    optimizer.step(lambda: point[0] ** 2 - point[1] ** 2)
    assert newton_state(optimizer)["damping"] == pytest.approx(10.0)


def test_a_parameter_the_loss_ignores_gets_a_zero_gradient_and_stays() -> None:
    used = torch.tensor([3.0], dtype=F64, requires_grad=True)
    ignored = torch.tensor([7.0], dtype=F64, requires_grad=True)
    optimizer = Newton([used, ignored])
    optimizer.step(lambda: (used**2).sum())
    assert ignored.item() == 7.0
    assert ignored.grad is not None
    assert ignored.grad.item() == 0.0
    assert abs(used.item()) < 1e-3


def test_float32_parameters_stay_float32() -> None:
    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    Newton(model.parameters()).step(lambda: torch.nn.functional.mse_loss(model(x), y))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_state_dict_round_trip_resumes_bit_for_bit() -> None:
    def double_well(point: torch.Tensor) -> torch.Tensor:
        return point[0] ** 2 + (point[1] ** 2 - 1) ** 2

    point = torch.tensor([0.3, 0.1], dtype=F64, requires_grad=True)
    optimizer = Newton([point], lr=0.8)
    for _ in range(5):
        optimizer.step(lambda: double_well(point))
    # The Hessian is indefinite until here and positive definite from here on: the resumed
    # run must carry the damping over to start the next step at 1 rather than 1e-4.
    assert newton_state(optimizer)["damping"] == pytest.approx(10.0)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    saved_point = point.detach().clone()

    def continue_run(p: torch.Tensor, opt: Newton) -> torch.Tensor:
        for _ in range(3):
            opt.step(lambda: double_well(p))
        return p.detach()

    expected = continue_run(point, optimizer)
    resumed_point = saved_point.clone().requires_grad_()
    resumed = Newton([resumed_point])
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer))
    assert torch.equal(continue_run(resumed_point, resumed), expected)
    assert resumed.state_dict()["state"] == optimizer.state_dict()["state"]
    assert resumed.param_groups[0]["lr"] == 0.8

    fresh_point = saved_point.clone().requires_grad_()
    assert not torch.equal(continue_run(fresh_point, Newton([fresh_point], lr=0.8)), expected)


def test_a_saved_state_dict_is_not_changed_by_later_steps() -> None:
    point = torch.tensor([0.5, 0.1], dtype=F64, requires_grad=True)
    optimizer = Newton([point])
    optimizer.step(lambda: point[0] ** 2 - point[1] ** 2)
    saved = optimizer.state_dict()
    snapshot = copy.deepcopy(saved)
    optimizer.step(lambda: point[0] ** 2 + point[1] ** 2)
    assert saved["state"] == snapshot["state"]


def test_lr_scheduler_changes_the_step_length() -> None:
    generator = torch.Generator().manual_seed(1)
    a, b = random_spd(4, generator), torch.randn(4, dtype=F64, generator=generator)
    x = torch.zeros(4, dtype=F64, requires_grad=True)
    optimizer = Newton([x], damping=1e-12)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    optimizer.step(lambda: 0.5 * x @ a @ x - b @ x)
    scheduler.step()
    x.data.zero_()
    optimizer.step(lambda: 0.5 * x @ a @ x - b @ x)
    torch.testing.assert_close(x.detach(), 0.5 * torch.linalg.solve(a, b), rtol=0, atol=1e-10)


def test_docstring_example_runs() -> None:
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(Newton):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    assert runner.summarize(verbose=False).attempted > 0


# -- errors at the boundary ------------------------------------------------------------------


def a_point() -> torch.Tensor:
    return torch.tensor([0.5, 0.1], dtype=F64, requires_grad=True)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("lr", -0.1, "a finite float >= 0"),
        ("damping", -1e-3, "a finite float >= 0"),
        ("max_damping", 0.0, "a finite float > 0"),
        ("max_params", 0, "an int >= 1"),
    ],
)
def test_bad_hyperparameters_raise_the_documented_error(
    name: str, value: float, expected: str
) -> None:
    prefix = re.escape(f"The '{name}' parameter of Newton must be ")
    suffix = re.escape(f". Got {value!r} instead.")
    with pytest.raises(ValueError, match=f"^{prefix}{expected}{suffix}$"):
        Newton([a_point()], **{name: value})


def test_max_damping_below_damping_is_an_error() -> None:
    message = "The 'max_damping' parameter of Newton must be a float >= damping (1.0). Got 0.5"
    with pytest.raises(ValueError, match=re.escape(message)):
        Newton([a_point()], damping=1.0, max_damping=0.5)


def test_a_negative_lr_set_after_construction_is_caught_at_the_step() -> None:
    point = a_point()
    optimizer = Newton([point])
    optimizer.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match=re.escape("The 'lr' parameter of Newton must be")):
        optimizer.step(lambda: (point**2).sum())


def test_more_parameters_than_max_params_is_an_error_that_says_why() -> None:
    model = torch.nn.Linear(100, 30)  # 3030 parameters
    with pytest.raises(ValueError, match=r"at most max_params=2000 elements.*Got 3030.*n x n"):
        Newton(model.parameters())
    Newton(model.parameters(), max_params=3030)


def test_more_than_one_param_group_is_an_error() -> None:
    groups = [{"params": [a_point()]}, {"params": [a_point()], "lr": 0.1}]
    with pytest.raises(ValueError, match="exactly one param group.*Got 2 groups"):
        Newton(groups)
    optimizer = Newton([a_point()])
    with pytest.raises(ValueError, match="exactly one param group.*already has one"):
        optimizer.add_param_group({"params": [a_point()]})
    assert len(optimizer.param_groups) == 1


def test_a_parameter_without_requires_grad_is_an_error() -> None:
    frozen = torch.zeros(3, dtype=F64)
    with pytest.raises(
        ValueError, match=r"Parameter 1 of Newton \(shape \(3,\)\) does not require"
    ):
        Newton([a_point(), frozen])


def test_parameters_of_mixed_dtypes_are_an_error() -> None:
    with pytest.raises(ValueError, match="one device with one dtype"):
        Newton([a_point(), torch.zeros(2, requires_grad=True)])


def test_a_repeated_parameter_is_an_error() -> None:
    point = a_point()
    with pytest.raises(ValueError, match="same parameter more than once"):
        Newton([point, point])


def test_step_without_a_closure_is_an_error() -> None:
    optimizer = Newton([a_point()])
    prefix = "The 'closure' parameter of Newton.step must be a function that re-evaluates"
    with pytest.raises(ValueError, match=re.escape(prefix) + ".*Got None instead"):
        optimizer.step()


@pytest.mark.parametrize(
    ("make_result", "got"),
    [
        (lambda p: p * 2, r"a torch.float64 tensor of shape \(2,\)"),
        (lambda p: (p**2).sum().item(), r"returned 0\.26 \(float\) instead: return the loss"),
        (lambda p: (p**2).sum().detach(), "requires_grad=False"),
    ],
    ids=["not-scalar", "python-float", "no-graph"],
)
def test_a_closure_that_does_not_return_a_scalar_loss_with_a_graph_is_an_error(
    make_result: Callable[[torch.Tensor], object], got: str
) -> None:
    point = a_point()
    optimizer = Newton([point])
    with pytest.raises(ValueError, match="The 'closure' parameter of Newton.step must be .*" + got):
        optimizer.step(lambda: make_result(point))


def test_a_closure_that_calls_backward_is_an_error_and_leaves_parameters_unchanged() -> None:
    point = a_point()
    optimizer = Newton([point])

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (point**2).sum()
        loss.backward()
        return loss

    with pytest.raises(ValueError, match=r"without calling backward\(\)"):
        optimizer.step(closure)
    assert point.tolist() == [0.5, 0.1]


def test_a_loss_that_ignores_every_parameter_is_an_error() -> None:
    other = torch.ones(2, requires_grad=True)
    optimizer = Newton([a_point()])
    with pytest.raises(ValueError, match="depends on none of them"):
        optimizer.step(lambda: (other**2).sum())


def test_a_hessian_that_max_damping_cannot_fix_is_an_error_that_gives_the_eigenvalue() -> None:
    point = a_point()
    optimizer = Newton([point], damping=1e-4, max_damping=1.0)
    with pytest.raises(
        ValueError, match=r"max_damping=1\.0: the Hessian's smallest eigenvalue is -2"
    ):
        optimizer.step(lambda: point[0] ** 2 - point[1] ** 2)
    assert point.tolist() == [0.5, 0.1]


def test_a_non_finite_loss_is_an_error_and_leaves_parameters_unchanged() -> None:
    point = a_point()
    optimizer = Newton([point])
    with pytest.raises(RuntimeError, match="non-finite gradient or Hessian"):
        optimizer.step(lambda: (point**2).sum() * float("nan"))
    assert point.tolist() == [0.5, 0.1]


@pytest.mark.compile
def test_a_step_under_torch_compile_runs_as_it_does_eagerly() -> None:
    # QA: torch.compile(opt.step) failed in inductor ("a mutation on a view chain ... where
    # view 1 was an as_strided() call"); the step now runs eagerly inside compiled code.
    def run(compiled: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1, dtype=torch.float64)
        x = torch.randn(16, 3, dtype=torch.float64)
        y = torch.randn(16, 1, dtype=torch.float64)
        opt = Newton(model.parameters())
        step = torch.compile(opt.step) if compiled else opt.step
        for _ in range(2):
            step(lambda: torch.nn.functional.mse_loss(model(x), y))
        return [p.detach().clone() for p in model.parameters()]

    torch._dynamo.reset()
    for ours, eager in zip(run(compiled=True), run(compiled=False), strict=True):
        torch.testing.assert_close(ours, eager, rtol=0, atol=0)
