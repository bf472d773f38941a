"""The stability bound against simulated (momentum) gradient descent, and the doctor's check."""

import math

import pytest
import torch
from torch import nn

from gradwise import optim
from gradwise.curvature import check_learning_rate, max_stable_lr, stable_lr_bound
from gradwise.diagnosis import Finding

A = torch.diag(torch.tensor([10.0, 1.0, 0.1], dtype=torch.float64))  # lambda_max = 10


class Quadratic(nn.Module):
    """J(theta) = 1/2 theta^T A theta, the lectures' toy problem."""

    def __init__(self):
        super().__init__()
        # Along the top eigenvector, where the bound bites first.
        self.theta = nn.Parameter(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))

    def forward(self, _):
        return 0.5 * self.theta @ A @ self.theta


def final_norm(lr, momentum, nesterov, steps=400, dampening=0.0):
    model = Quadratic()
    optimizer = optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, nesterov=nesterov, dampening=dampening
    )
    for _ in range(steps):
        optimizer.zero_grad()
        model(None).backward()
        optimizer.step()
    return torch.linalg.vector_norm(model.theta.detach()).item()


@pytest.mark.parametrize(
    ("momentum", "nesterov"), [(0.0, False), (0.5, False), (0.9, False), (0.5, True), (0.9, True)]
)
def test_the_bound_separates_convergence_from_divergence(momentum, nesterov):
    bound = stable_lr_bound(10.0, momentum=momentum, nesterov=nesterov)
    assert final_norm(0.98 * bound, momentum, nesterov) < 0.5
    assert final_norm(1.02 * bound, momentum, nesterov) > 10.0


@pytest.mark.parametrize(("momentum", "dampening"), [(0.9, 0.5), (0.5, 0.9), (0.0, 0.5)])
def test_the_bound_with_dampening_separates_convergence_from_divergence(momentum, dampening):
    # The docs said to divide the bound by 1 - dampening, which is wrong without momentum
    # (SGD then ignores dampening: 0.98x that bound diverged), and no function took it, so
    # check_learning_rate flagged a dampened SGD at half its real bound.
    bound = stable_lr_bound(10.0, momentum=momentum, dampening=dampening)
    assert final_norm(0.98 * bound, momentum, False, steps=600, dampening=dampening) < 0.5
    assert final_norm(1.02 * bound, momentum, False, steps=600, dampening=dampening) > 10.0


def test_dampening_in_the_closed_form_and_the_diagnosis():
    assert stable_lr_bound(4.0, momentum=0.9, dampening=0.5) == pytest.approx(1.9)
    assert stable_lr_bound(4.0, dampening=0.5) == 0.5  # no momentum: no dampening
    assert stable_lr_bound(4.0, momentum=0.9, dampening=1.0) == math.inf
    assert check_learning_rate(0.7, 10.0, momentum=0.9, dampening=0.5) is None
    diagnosis = check_learning_rate(0.8, 10.0, momentum=0.9, dampening=0.5)
    assert diagnosis.kind is Finding.LEARNING_RATE_TOO_HIGH
    assert diagnosis.evidence["max_stable_lr"] == pytest.approx(0.76)
    assert diagnosis.evidence["dampening"] == 0.5
    data = (torch.zeros(1), None)
    bound = max_stable_lr(Quadratic(), lambda out, _: out, data, momentum=0.9, dampening=0.5)
    assert bound == pytest.approx(0.76, rel=1e-8)


def test_closed_forms():
    assert stable_lr_bound(4.0) == 0.5
    assert stable_lr_bound(4.0, momentum=0.9) == pytest.approx(0.95)
    assert stable_lr_bound(4.0, momentum=0.5, nesterov=True) == pytest.approx(2 * 1.5 / (2 * 4.0))
    assert stable_lr_bound(0.0) == math.inf
    assert stable_lr_bound(-1.0, momentum=0.5) == math.inf


def test_max_stable_lr_from_the_model():
    model = Quadratic()
    data = (torch.zeros(1), None)
    assert max_stable_lr(model, lambda out, _: out, data) == pytest.approx(0.2, rel=1e-8)
    assert max_stable_lr(model, lambda out, _: out, data, momentum=0.9) == pytest.approx(
        0.38, rel=1e-8
    )


def test_check_learning_rate_is_a_diagnosis_with_the_bound_and_a_fix():
    diagnosis = check_learning_rate(0.5, 10.0, momentum=0.9)
    assert diagnosis.kind is Finding.LEARNING_RATE_TOO_HIGH
    assert diagnosis.evidence["max_stable_lr"] == pytest.approx(0.38)
    assert diagnosis.evidence["lambda_max"] == 10.0
    assert diagnosis.evidence["lr"] == 0.5
    assert diagnosis.fix == {"optimizer.lr": pytest.approx(0.19)}
    assert "0.38" in diagnosis.summary
    assert check_learning_rate(0.37, 10.0, momentum=0.9) is None
    assert check_learning_rate(100.0, -1.0) is None  # no positive curvature: no bound
    assert check_learning_rate(0.21, 10.0).to_dict()["kind"] == "learning_rate_too_high"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: stable_lr_bound(float("nan")),
            r"The 'lambda_max' parameter of stable_lr_bound must be a finite float. Got nan instead.",
        ),
        (
            lambda: stable_lr_bound(1.0, momentum=1.0),
            r"The 'momentum' parameter of stable_lr_bound must be a float in \[0, 1\). Got 1.0 instead.",
        ),
        (
            lambda: stable_lr_bound(1.0, nesterov=1),
            r"The 'nesterov' parameter of stable_lr_bound must be a bool. Got 1 instead.",
        ),
        (
            lambda: stable_lr_bound(math.inf),
            r"The 'lambda_max' parameter of stable_lr_bound must be a finite float. Got inf instead.",
        ),
        (
            lambda: stable_lr_bound(1.0, momentum=0.5, dampening=1.5),
            r"The 'dampening' parameter of stable_lr_bound must be a float in \[0, 1\]. Got 1.5 instead.",
        ),
        (
            lambda: check_learning_rate(0.1, 1.0, momentum=0.5, nesterov=True, dampening=0.1),
            r"The 'dampening' parameter of check_learning_rate must be 0 with nesterov=True "
            r"\(torch's and gradwise's SGD refuse Nesterov with dampening\). Got 0.1 instead.",
        ),
        (
            lambda: check_learning_rate(-0.1, 1.0),
            r"The 'lr' parameter of check_learning_rate must be a finite float >= 0. Got -0.1 instead.",
        ),
        (
            lambda: check_learning_rate(math.inf, 1.0),
            r"The 'lr' parameter of check_learning_rate must be a finite float >= 0. Got inf instead.",
        ),
        (
            lambda: check_learning_rate(0.1, math.nan),
            r"The 'lambda_max' parameter of check_learning_rate must be a finite float. Got nan instead.",
        ),
        (
            lambda: check_learning_rate(0.1, 1.0, momentum=1.5),
            r"The 'momentum' parameter of check_learning_rate must be a float in \[0, 1\). Got 1.5 instead.",
        ),
        (
            lambda: check_learning_rate(0.1, 1.0, nesterov="yes"),
            r"The 'nesterov' parameter of check_learning_rate must be a bool. Got 'yes' instead.",
        ),
        (
            lambda: max_stable_lr(Quadratic(), lambda out, _: out, (torch.zeros(1), None), tol=0),
            r"The 'tol' parameter of max_stable_lr must be a finite float > 0. Got 0 instead.",
        ),
        (
            lambda: max_stable_lr(
                Quadratic(), lambda out, _: out, (torch.zeros(1), None), momentum=-0.5
            ),
            r"The 'momentum' parameter of max_stable_lr must be a float in \[0, 1\). Got -0.5 instead.",
        ),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


class FlatUpToRounding(nn.Module):
    """A tanh MLP under a loss that is identically 0: log(exp(z)) - z."""

    def __init__(self, dtype):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.hidden = nn.Parameter(torch.randn(3, 32, generator=generator, dtype=dtype))
        self.out = nn.Parameter(torch.randn(32, 1, generator=generator, dtype=dtype))

    def forward(self, inputs):
        z = torch.tanh(inputs @ self.hidden) @ self.out
        return (torch.log(torch.exp(z)) - z).mean()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_rounding_level_lambda_max_gives_no_bound(dtype):
    # A flat loss's Ritz values are pure rounding (lambda_max 5e-17 in float64, 3e-8 in
    # float32): max_stable_lr gave 2 / that, a finite 7e15-ish, after a convergence warning.
    inputs = torch.randn(16, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)
    model = FlatUpToRounding(dtype)
    assert max_stable_lr(model, lambda out, _: out, (inputs, None)) == math.inf
    assert max_stable_lr(model, lambda out, _: out, (inputs, None), momentum=0.9) == math.inf


def test_a_lambda_max_at_rounding_level_of_the_spectrum_gives_no_bound():
    # lambda_max 1e-16 next to lambda_min -4 is zero to what float64 resolves (100 eps * 4).
    matrix = torch.diag(torch.tensor([-4.0, 1e-16], dtype=torch.float64))

    class Saddle(Quadratic):
        def forward(self, _):
            return 0.5 * self.theta[:2] @ matrix @ self.theta[:2]

    assert max_stable_lr(Saddle(), lambda out, _: out, (torch.zeros(1), None)) == math.inf
    tiny = torch.diag(torch.tensor([1e-6, 0.0, 0.0], dtype=torch.float64))

    class Shallow(Quadratic):  # small but resolved curvature keeps its finite bound
        def forward(self, _):
            return 0.5 * self.theta @ tiny @ self.theta

    bound = max_stable_lr(Shallow(), lambda out, _: out, (torch.zeros(1), None))
    assert bound == pytest.approx(2e6, rel=1e-8)
