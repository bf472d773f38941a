"""gradwise.checks.gradcheck: centred differences per tensor, kinks, penalty, oracles."""

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from gradwise import Finding
from gradwise.checks import CoordinateCheck, GradcheckReport, TensorCheck, gradcheck
from gradwise.data import load_dataset
from gradwise.losses import multiclass_hinge
from gradwise.models import HalvingMaxPool, mlp
from gradwise.regularize import l1_penalty, l2_penalty
from gradwise.report import Table
from tests.doc_examples import DOCS, run_docstring_examples

# --- models with known gradient bugs and hidden kinks -------------------------------------


class SquareWithWrongBackward(torch.autograd.Function):
    """x^2 whose backward returns 2 * grad instead of 2 * x * grad."""

    @staticmethod
    def forward(ctx, x):
        return x * x

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


class Square(nn.Module):
    def forward(self, x):
        return SquareWithWrongBackward.apply(x)


class LinearWithWrongWeightGradient(torch.autograd.Function):
    """x @ w.T with a correct input gradient and a weight gradient twice too large."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return x @ weight.T

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return grad @ weight, 2 * grad.T @ x


class BadLinear(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / in_features**0.5)

    def forward(self, x):
        return LinearWithWrongWeightGradient.apply(x, self.weight)


class ScaledGradient(torch.autograd.Function):
    """Identity forward; backward multiplies by (1 + error): a relative error of known size."""

    @staticmethod
    def forward(ctx, x, error):
        ctx.error = error
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * (1 + ctx.error), None


class NumpyReLU(torch.autograd.Function):
    """A correct ReLU computed in NumPy: invisible to the recorder of torch operations."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.from_numpy(np.maximum(x.detach().numpy(), 0.0))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0)


class FunctionalReLU(nn.Module):
    def forward(self, x):
        return F.relu(x)


class InplaceTensorReLU(nn.Module):
    def forward(self, x):
        return x.clamp_(min=0.0)


class HiddenReLU(nn.Module):
    def forward(self, x):
        return NumpyReLU.apply(x)


class HalfGradient(nn.Module):
    """The identity with a backward scaled by 0.5."""

    def forward(self, x):
        return ScaledGradient.apply(x, -0.5)


class ReLUWithoutMask(torch.autograd.Function):
    """ReLU whose backward forgot its mask: it passes the gradient of inactive units on."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0.0)

    @staticmethod
    def backward(ctx, grad):
        return grad


class UnmaskedReLU(nn.Module):
    def forward(self, x):
        return ReLUWithoutMask.apply(x)


class Quintic(nn.Module):
    """f(w) = w + c (w - w0)^5 / 120 at w = w0: f' = 1 and f^(3) = 0 there, but f^(5) = c.

    The centred difference is 1 + c h^4 / 120 (exactly: the series stops), a truncation
    error 10^4 times smaller at h / 10.
    """

    def __init__(self, c, w0=0.5):
        super().__init__()
        self.c, self.w0 = c, w0
        self.weight = nn.Parameter(torch.tensor([w0]))

    def forward(self, x):
        return (self.weight + self.c * (self.weight - self.w0) ** 5 / 120).sum()


class _HalfBackwardCubic(torch.autograd.Function):
    """f(w) = w + c (w - w0)^3 / 6, whose backward returns half of f'(w)."""

    @staticmethod
    def forward(ctx, weight, c, w0):
        ctx.save_for_backward(weight)
        ctx.c, ctx.w0 = c, w0
        return weight + c * (weight - w0) ** 3 / 6

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return 0.5 * grad * (1 + ctx.c * (weight - ctx.w0) ** 2 / 2), None, None


class HalfBackwardCubic(nn.Module):
    """A wrong gradient (half) of a function with a large third derivative c at w0: the
    centred difference 1 + c h^2 / 6 moves by a lot between h and h / 10, but regularly
    (100x less from h / 10 to h / 100), towards 1, far from the analytic 0.5."""

    def __init__(self, c, w0=0.5):
        super().__init__()
        self.c, self.w0 = c, w0
        self.weight = nn.Parameter(torch.tensor([w0]))

    def forward(self, x):
        return _HalfBackwardCubic.apply(self.weight, self.c, self.w0).sum()


class _TanhWithLargeBackward(torch.autograd.Function):
    """tanh whose backward is 1.5 times too large."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return 1.5 * grad * (1 - y * y)


class ScaledTanh(nn.Module):
    def forward(self, x):
        return _TanhWithLargeBackward.apply(x)


class _HalfBackwardSquare(torch.autograd.Function):
    """f(w) = c (w - w0)^2 / 2, whose backward returns half of f'(w)."""

    @staticmethod
    def forward(ctx, weight, c, w0):
        ctx.save_for_backward(weight)
        ctx.c, ctx.w0 = c, w0
        return c * (weight - w0) ** 2 / 2

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return grad * ctx.c * (weight - ctx.w0) / 2, None, None


class HalfBackwardSquare(nn.Module):
    """A wrong gradient (half) of a smooth quadratic, at a distance ``offset`` from its
    minimum: the gradient c * offset is small next to the curvature c, so the one-sided
    differences at h differ by c h, at least 2|a - n| = c * offset when offset <= h."""

    def __init__(self, c, offset, w0=0.5):
        super().__init__()
        self.c, self.w0 = c, w0
        self.weight = nn.Parameter(torch.tensor([w0 + offset], dtype=torch.float64))

    def forward(self, x):
        return _HalfBackwardSquare.apply(self.weight, self.c, self.w0).sum()


def chaotic_tanh_mlp(seed, depth=20, width=128):
    """A correct tanh MLP with N(0, 1) weights: pre-activations of std ~11, chaotic.

    Its first-layer gradients are ~1e7 times its last layer's: f varies so fast that the
    centred differences at h = 1e-6 have not converged there.
    """
    torch.manual_seed(seed)
    layers = [nn.Linear(40, width), nn.Tanh()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.Tanh()]
    model = nn.Sequential(*layers, nn.Linear(width, 3))
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                layer.weight.normal_(0.0, 1.0)
                layer.bias.zero_()
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(8, 40, generator=generator)
    return model, inputs, torch.randint(0, 3, (8,), generator=generator)


class AlwaysDropout(nn.Module):
    """Dropout that ignores eval mode: only reseeding every forward makes it checkable."""

    def forward(self, x):
        return F.dropout(x, 0.5, training=True)


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spirals():
    splits = load_dataset("spirals", seed=0)
    return splits.train.inputs[:32], splits.train.targets[:32]


def torch_gradcheck_passes(model, loss_fn, inputs, targets):
    """torch.autograd.gradcheck's verdict over all parameters of a float64 copy."""
    model = model.double().eval()
    names = [name for name, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def loss(*tensors):
        outputs = functional_call(model, dict(zip(names, tensors, strict=True)), (inputs.double(),))
        return loss_fn(outputs, targets)

    return torch.autograd.gradcheck(loss, params, raise_exception=False)


def rows_by_name(report, term="loss"):
    return {row.name: row for row in report.tensors if row.term == term}


def put_first_unit_on_its_kink(model, inputs):
    """Set the first hidden unit's bias so that its pre-activation for sample 0 is ~0."""
    first = model[1] if isinstance(model[0], nn.Flatten) else model[0]
    with torch.no_grad():
        first.bias[0] = -(first.weight[0] @ inputs[0].flatten())


# --- wrong gradients are caught ----------------------------------------------------------


def test_a_square_with_a_wrong_backward_is_caught_upstream_of_it(spirals):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), Square(), nn.Linear(8, 3))
    report = gradcheck(model, F.cross_entropy, *spirals)
    assert not report.passed
    assert report.verdict == "wrong"
    [finding] = report.findings()
    assert finding.kind is Finding.WRONG_GRADIENT
    assert finding.severity == "error"
    assert finding.evidence["term"] == "loss"
    assert finding.evidence["tensors"] == ["0.weight", "0.bias"]
    assert rows_by_name(report)["2.weight"].failures == 0


def test_a_layer_whose_weight_gradient_is_wrong_is_named_and_nothing_else(spirals):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), BadLinear(8, 3))
    report = gradcheck(model, F.cross_entropy, *spirals)
    [finding] = report.findings()
    assert finding.evidence["tensors"] == ["2.weight"]
    assert finding.evidence["failures"]["2.weight"] == 10
    # Twice the true gradient: |2n - n| / |2n| = 0.5 on every coordinate.
    assert rows_by_name(report)["2.weight"].max_relative_error == pytest.approx(0.5, rel=1e-6)
    assert json.loads(json.dumps(finding.to_dict()))["kind"] == "wrong_gradient"


@pytest.mark.parametrize(
    ("error", "verdict"),
    [(0.0, "good"), (1e-6, "ok"), (1e-3, "suspicious"), (0.1, "wrong")],
)
def test_verdicts_follow_the_lectures_thresholds(error, verdict):
    # f(w) = sum(tanh(w * x)) with the gradient scaled by (1 + error): the relative error
    # is error / (1 + error) on every coordinate, a closed form.
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.tensor([0.3, -0.7, 1.1]))

        def forward(self, x):
            return torch.tanh(ScaledGradient.apply(self.weight, error) * x)

    report = gradcheck(Scaled(), lambda out, _: out.sum(), torch.ones(3), torch.zeros(3))
    assert {c.verdict for c in report.coordinates} == {verdict}
    for coordinate in report.coordinates:
        assert coordinate.relative_error == pytest.approx(error / (1 + error), rel=1e-3, abs=1e-8)
    assert report.passed is (verdict != "wrong")
    assert bool(report.findings()) is (verdict == "wrong")


# --- correct models pass -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("activation", "loss_fn"),
    [("tanh", F.cross_entropy), ("relu", F.cross_entropy), ("relu", multiclass_hinge)],
)
def test_correct_mlps_pass_on_every_tensor(spirals, activation, loss_fn):
    torch.manual_seed(0)
    model = mlp((2,), 3, depth=2, width=16, activation=activation)
    report = gradcheck(model, loss_fn, *spirals)
    assert report.passed
    assert report.findings() == []
    parameters = dict(model.named_parameters())
    assert [row.name for row in report.tensors] == list(parameters)
    for row in report.tensors:
        assert row.checked == min(10, parameters[row.name].numel())
        assert row.shape == tuple(parameters[row.name].shape)
        assert row.max_relative_error < 1e-4


def test_agrees_with_torch_autograd_gradcheck_on_small_cases(spirals):
    inputs, targets = spirals[0][:8], spirals[1][:8]
    cases = {
        "tanh": lambda: nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3)),
        "square with wrong backward": lambda: nn.Sequential(
            nn.Linear(2, 4), Square(), nn.Linear(4, 3)
        ),
        "wrong weight gradient": lambda: nn.Sequential(nn.Linear(2, 4), nn.Tanh(), BadLinear(4, 3)),
    }
    verdicts = {}
    for name, build in cases.items():
        torch.manual_seed(0)
        model = build()
        ours = gradcheck(model, F.cross_entropy, inputs, targets).passed
        verdicts[name] = (ours, torch_gradcheck_passes(model, F.cross_entropy, inputs, targets))
    assert verdicts == {
        "tanh": (True, True),
        "square with wrong backward": (False, False),
        "wrong weight gradient": (False, False),
    }


def test_analytic_values_match_autograd_and_numeric_values_a_centred_difference(spirals):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3))
    inputs, targets = spirals
    report = gradcheck(model, F.cross_entropy, inputs, targets, h=1e-5)
    reference = model.double()
    loss = F.cross_entropy(reference(inputs.double()), targets)
    gradients = dict(
        zip(
            dict(reference.named_parameters()),
            torch.autograd.grad(loss, list(reference.parameters())),
            strict=True,
        )
    )
    parameters = dict(reference.named_parameters())
    with torch.no_grad():
        for coordinate in report.coordinates[:6]:
            assert coordinate.analytic == pytest.approx(
                float(gradients[coordinate.tensor][coordinate.index]), rel=1e-12, abs=1e-15
            )
            parameter = parameters[coordinate.tensor]
            original = float(parameter[coordinate.index])
            parameter[coordinate.index] = original + 1e-5
            f_plus = F.cross_entropy(reference(inputs.double()), targets).item()
            parameter[coordinate.index] = original - 1e-5
            f_minus = F.cross_entropy(reference(inputs.double()), targets).item()
            parameter[coordinate.index] = original
            assert coordinate.numeric == pytest.approx(
                (f_plus - f_minus) / 2e-5, rel=1e-6, abs=1e-10
            )


class TinyGradient(nn.Module):
    """f(w) = 1 + scale * w . x: a loss near 1 whose gradient, scale * x, is tiny."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        self.weight = nn.Parameter(torch.tensor([0.3, -0.7, 1.1, 0.25, 2.0]))

    def forward(self, x):
        return 1.0 + self.scale * (self.weight * x).sum()


@pytest.mark.parametrize(("scale", "allowed"), [(1e-9, {"zero"}), (1e-8, {"good", "ok"})])
def test_gradients_at_the_rounding_noise_of_the_loss_do_not_fail(scale, allowed):
    # At h = 1e-6 a loss near 1 gives centred differences with ~1e-10 of rounding error:
    # relative errors up to ~1 on gradients of 1e-9, ~1e-3 on gradients of 1e-8.
    inputs = torch.tensor([1.0, 3.0, -2.0, 0.5, 1.7])
    report = gradcheck(TinyGradient(scale), lambda out, _: out, inputs, torch.zeros(1))
    assert {c.verdict for c in report.coordinates} <= allowed
    assert report.passed


@pytest.mark.parametrize("scale", [1e-7, 1e-8])
def test_a_wrong_gradient_just_above_the_rounding_noise_still_fails(scale):
    # At scale 1e-8 the errors (5e-9 .. 3e-8) are above the rounding noise at h (3.6e-9)
    # but below the one at h / 10 (3.6e-8), where failing coordinates are measured again:
    # they must not pass on rounding there, since the discrepancy did not shrink.
    class Tiny(TinyGradient):
        def forward(self, x):
            return 1.0 + self.scale * (ScaledGradient.apply(self.weight, 1.0) * x).sum()

    inputs = torch.tensor([1.0, 3.0, -2.0, 0.5, 1.7])
    report = gradcheck(Tiny(scale), lambda out, _: out, inputs, torch.zeros(1))
    assert {c.verdict for c in report.coordinates} == {"wrong"}


# --- differences that have not converged at h ------------------------------------------------


def test_a_chaotic_tanh_net_is_unstable_not_wrong():
    # Autograd's own backward: the old check called first-layer coordinates "wrong"
    # (relative errors 0.3..1.9) because the centred difference had not converged at h.
    model, inputs, targets = chaotic_tanh_mlp(seed=0)
    report = gradcheck(model, F.cross_entropy, inputs, targets)
    verdicts = [c.verdict for c in report.coordinates]
    assert "wrong" not in verdicts
    assert "unstable" in verdicts
    assert report.passed
    assert report.findings() == []
    first = rows_by_name(report)["0.weight"]
    assert first.unstable == sum(
        c.verdict == "unstable" for c in report.coordinates if c.tensor == "0.weight"
    )
    assert sum(row.unstable for row in report.tensors) == verdicts.count("unstable")
    assert [row["unstable"] for row in report.to_table()] == [
        row.unstable for row in report.tensors
    ]


def test_a_truncation_error_that_vanishes_at_a_tenth_of_h_is_judged_there():
    # n(h) = 1 + 2e10 h^4 / 120: a relative error of 0.14 ("wrong") at h = 1e-3, 1.7e-8
    # ("good") at h / 10, where the failing coordinate is measured again.
    report = gradcheck(Quintic(2e10), lambda out, _: out, torch.zeros(1), torch.zeros(1), h=1e-3)
    [coordinate] = report.coordinates
    assert coordinate.verdict == "good"
    assert coordinate.numeric == pytest.approx(1 + 2e10 * 1e-16 / 120, rel=1e-9)
    assert coordinate.relative_error == pytest.approx(2e10 * 1e-16 / 120, rel=1e-3)
    assert report.passed


@pytest.mark.parametrize(("h", "c"), [(1e-3, 1e5), (1e-4, 1e7), (1e-6, 1e11)])
def test_a_wrong_gradient_whose_differences_converge_regularly_is_wrong_not_unstable(h, c):
    # Found by review: n(h) = 1 + c h^2 / 6 moved by more than 1e-4 of itself from h to
    # h / 10, which alone made the halved gradient "unstable" (and pass).
    report = gradcheck(
        HalfBackwardCubic(c), lambda out, _: out, torch.zeros(1), torch.zeros(1), h=h
    )
    [coordinate] = report.coordinates
    assert coordinate.verdict == "wrong"
    assert coordinate.analytic == pytest.approx(0.5)
    assert coordinate.numeric == pytest.approx(1 + c * (h / 100) ** 2 / 6, rel=1e-6)
    assert [finding.kind for finding in report.findings()] == [Finding.WRONG_GRADIENT]


@pytest.mark.parametrize("broken", [HalfGradient, UnmaskedReLU])
def test_a_wrong_backward_is_still_wrong_not_unstable(spirals, broken):
    torch.manual_seed(0)
    activation = [broken()] if broken is UnmaskedReLU else [broken(), nn.Tanh()]
    model = nn.Sequential(nn.Linear(2, 16), *activation, nn.Linear(16, 3))
    report = gradcheck(model, F.cross_entropy, *spirals)
    # Half the gradient fails everywhere; the unmasked ReLU only through inactive units.
    assert "wrong" in {c.verdict for c in report.coordinates if c.tensor == "0.weight"}
    assert "unstable" not in {c.verdict for c in report.coordinates}
    assert all(row.unstable == 0 for row in report.tensors)
    [finding] = report.findings()
    assert finding.kind is Finding.WRONG_GRADIENT
    assert finding.evidence["tensors"] == ["0.weight", "0.bias"]


# --- kinks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", [nn.ReLU, FunctionalReLU, InplaceTensorReLU])
def test_a_relu_at_its_kink_is_flagged_not_failed(spirals, activation):
    torch.manual_seed(0)
    inputs, targets = spirals[0][:4], spirals[1][:4]
    model = nn.Sequential(nn.Linear(2, 4), activation(), nn.Linear(4, 3))
    put_first_unit_on_its_kink(model, inputs)
    # kink_tolerance=None: the recorder of torch operations alone, without the fallback.
    report = gradcheck(
        model, F.cross_entropy, inputs, targets, samples_per_tensor=100, kink_tolerance=None
    )
    [kink] = [c for c in report.coordinates if c.verdict == "kink"]
    assert (kink.tensor, kink.index) == ("0.bias", (0,))
    assert kink.relative_error > 1e-2  # it would have failed
    assert rows_by_name(report)["0.bias"].kinks == 1
    assert report.passed
    assert report.findings() == []


def test_a_margin_of_the_hinge_loss_at_its_kink_is_flagged_not_failed():
    model = nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1.0, 0.0, -5.0]))  # margin of class 1: 0 - 1 + 1 = 0
    inputs, targets = torch.zeros(2, 2), torch.tensor([0, 0])
    report = gradcheck(model, multiclass_hinge, inputs, targets, kink_tolerance=None)
    kinks = {(c.tensor, c.index) for c in report.coordinates if c.verdict == "kink"}
    assert kinks == {("bias", (0,)), ("bias", (1,))}
    assert report.passed


@pytest.mark.parametrize("pool", [nn.MaxPool1d, HalvingMaxPool], ids=["torch", "gradwise"])
def test_a_tie_in_a_max_pool_is_a_kink(pool):
    model = nn.Sequential(
        nn.Linear(1, 2, bias=False),
        nn.Unflatten(1, (1, 2)),
        pool(2) if pool is nn.MaxPool1d else pool(1),
        nn.Flatten(),
        nn.Linear(1, 2),
    )
    with torch.no_grad():
        model[0].weight.fill_(0.5)  # both pooled values equal: the argmax is a tie
    report = gradcheck(
        model, F.cross_entropy, torch.ones(3, 1), torch.tensor([0, 1, 1]), kink_tolerance=None
    )
    assert {c.index for c in report.coordinates if c.tensor == "0.weight"} == {(0, 0), (1, 0)}
    assert {c.verdict for c in report.coordinates if c.tensor == "0.weight"} == {"kink"}
    assert report.passed


def test_a_kink_the_recorder_cannot_see_is_caught_by_the_one_sided_differences(spirals):
    torch.manual_seed(0)
    inputs, targets = spirals[0][:4], spirals[1][:4]
    model = nn.Sequential(nn.Linear(2, 4), HiddenReLU(), nn.Linear(4, 3))
    put_first_unit_on_its_kink(model, inputs)
    with_fallback = gradcheck(model, F.cross_entropy, inputs, targets, samples_per_tensor=100)
    without = gradcheck(
        model, F.cross_entropy, inputs, targets, samples_per_tensor=100, kink_tolerance=None
    )
    assert rows_by_name(with_fallback)["0.bias"].kinks == 1
    assert with_fallback.passed
    assert not without.passed
    assert without.findings()[0].evidence["tensors"] == ["0.bias"]


@pytest.mark.parametrize(
    ("h", "c", "offset"), [(1e-6, 1.0, 3e-7), (1e-6, 1.0, 1e-6), (1e-2, 1e3, 5e-3)]
)
def test_a_wrong_gradient_of_a_smooth_function_is_no_kink_by_the_one_sided_differences(
    h, c, offset
):
    # Found by QA: the one-sided differences of a smooth f differ by h |f''|, which was
    # at least kink_tolerance * 2|a - n| whenever the gradient's error was below h |f''|
    # (a halved backward near the minimum, or any larger h), and the wrong gradient was
    # called a "kink" and passed. At h / 10 that jump shrinks tenfold; a kink's does not.
    report = gradcheck(
        HalfBackwardSquare(c, offset), lambda out, _: out, torch.zeros(1), torch.zeros(1), h=h
    )
    [coordinate] = report.coordinates
    assert coordinate.analytic == pytest.approx(c * offset / 2)
    assert coordinate.verdict == "wrong"
    assert [finding.kind for finding in report.findings()] == [Finding.WRONG_GRADIENT]


def test_a_wrong_backward_through_a_smooth_net_is_not_called_a_kink_at_a_large_h():
    # h = 0.1 called 10 of 48 first-layer coordinates of a backward scaled by 1.5 "kink".
    torch.manual_seed(0)
    inputs, targets = torch.randn(32, 3), torch.randint(0, 3, (32,))
    model = nn.Sequential(nn.Linear(3, 16), ScaledTanh(), nn.Linear(16, 3))
    report = gradcheck(model, F.cross_entropy, inputs, targets, h=0.1, samples_per_tensor=50)
    assert {c.verdict for c in report.coordinates if c.tensor.startswith("0.")} == {"wrong"}


# --- inputs, penalty, dropout -----------------------------------------------------------------


def test_check_inputs_catches_a_wrong_gradient_with_respect_to_the_inputs(spirals):
    torch.manual_seed(0)
    # The square acts on the inputs only: parameter gradients never pass through it.
    model = nn.Sequential(Square(), nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3))
    assert gradcheck(model, F.cross_entropy, *spirals).passed
    report = gradcheck(model, F.cross_entropy, *spirals, check_inputs=True)
    assert rows_by_name(report)["inputs"].shape == tuple(spirals[0].shape)
    [finding] = report.findings()
    assert finding.evidence["tensors"] == ["inputs"]


def test_inputs_of_a_correct_model_pass(spirals):
    torch.manual_seed(0)
    model = mlp((2,), 3, depth=1, width=8, activation="tanh")
    report = gradcheck(model, F.cross_entropy, *spirals, check_inputs=True)
    assert report.passed
    assert rows_by_name(report)["inputs"].checked == 10


def test_the_penalty_is_checked_separately_and_a_wrong_one_is_blamed(spirals):
    torch.manual_seed(0)
    model = mlp((2,), 3, depth=1, width=8, activation="tanh")

    def wrong_penalty(module):  # d/dw of sum(w^2) computed as 2 instead of 2w
        return 1e-2 * SquareWithWrongBackward.apply(module[1].weight).sum()

    report = gradcheck(model, F.cross_entropy, *spirals, penalty=wrong_penalty)
    [finding] = report.findings()
    assert finding.evidence["term"] == "penalty"
    assert finding.evidence["tensors"] == ["1.weight"]
    assert all(row.failures == 0 for row in report.tensors if row.term == "loss")
    names = [row.name for row in report.tensors]
    assert [row.term for row in report.tensors] == ["loss"] * 4 + ["penalty"] * 4
    assert names[:4] == names[4:]


def test_correct_l1_and_l2_penalties_pass(spirals):
    torch.manual_seed(0)
    model = mlp((2,), 3, depth=1, width=8, activation="relu")
    report = gradcheck(
        model,
        F.cross_entropy,
        *spirals,
        penalty=lambda m: l1_penalty(m, 1e-3) + l2_penalty(m, 1e-2),
    )
    penalty_rows = rows_by_name(report, "penalty")
    assert report.passed
    assert penalty_rows["1.weight"].verdict == "good"
    assert penalty_rows["1.bias"].verdict == "zero"  # biases are not penalized


def test_a_penalty_computed_from_the_original_model_is_refused(spirals):
    model = mlp((2,), 3, depth=1, width=8)
    captured = list(model.parameters())
    with pytest.raises(
        ValueError,
        match=r"^The 'penalty' parameter of gradcheck must compute the penalty from the model it is given",
    ):
        gradcheck(model, F.cross_entropy, *spirals, penalty=lambda _: l2_penalty(captured, 1e-2))


def test_a_dropout_model_passes_with_dropout_off(spirals):
    torch.manual_seed(0)
    model = mlp((2,), 3, depth=2, width=16, activation="relu", dropout_rate=0.5).train()
    assert gradcheck(model, F.cross_entropy, *spirals).passed
    assert model.training


def test_the_check_runs_the_model_in_eval_mode(spirals):
    class ModeRecorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.modes = []

        def forward(self, x):
            self.modes.append(self.training)
            return x

    recorder = ModeRecorder()
    model = nn.Sequential(nn.Linear(2, 3), recorder).train()
    gradcheck(model, F.cross_entropy, *spirals)
    assert recorder.modes == []  # the copy's recorder saw the forwards, in eval mode
    recorded = []
    model[1].register_forward_hook(lambda module, args, out: recorded.append(module.training))
    gradcheck(model, F.cross_entropy, *spirals)
    assert recorded
    assert not any(recorded)
    assert model.training


def test_a_forward_that_draws_random_numbers_sees_the_same_draws_in_every_evaluation(spirals):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), AlwaysDropout(), nn.Linear(16, 3))
    state = torch.get_rng_state()
    report = gradcheck(model, F.cross_entropy, *spirals)
    assert report.passed
    assert torch.equal(torch.get_rng_state(), state)


def test_batch_norm_is_checked_in_eval_mode(spirals):
    torch.manual_seed(0)
    model = mlp((2,), 3, depth=2, width=16, activation="relu", norm="batch")
    model(spirals[0])  # move the running statistics away from their initial values
    assert gradcheck(model, F.cross_entropy, *spirals).passed


# --- the user's model is left alone ---------------------------------------------------------


def test_the_model_its_gradients_mode_inputs_and_the_rng_are_untouched(spirals):
    torch.manual_seed(0)
    model = mlp((2,), 3, depth=2, width=16, norm="batch", dropout_rate=0.2).train()
    model[-1].bias.requires_grad_(False)
    inputs, targets = spirals[0].clone(), spirals[1].clone()
    F.cross_entropy(model(inputs), targets).backward()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()

    gradcheck(
        model,
        F.cross_entropy,
        inputs,
        targets,
        penalty=lambda m: l2_penalty(m, 1e-2),
        check_inputs=True,
    )

    after = model.state_dict()
    assert all(torch.equal(after[k], v) and after[k].dtype == v.dtype for k, v in state.items())
    for name, parameter in model.named_parameters():
        assert (parameter.grad is None) == (grads[name] is None)
        assert parameter.grad is None or torch.equal(parameter.grad, grads[name])
    assert [m.training for m in model.modules()] == modes
    assert not model[-1].bias.requires_grad
    assert torch.equal(inputs, spirals[0])
    assert not inputs.requires_grad
    assert torch.equal(torch.get_rng_state(), rng)


# --- sampling, zero gradients, frozen parameters ------------------------------------------------


def test_each_tensor_gets_distinct_seeded_coordinates_the_largest_gradient_first(spirals):
    torch.manual_seed(0)
    model = mlp((2,), 3, depth=1, width=64, activation="tanh")
    report = gradcheck(model, F.cross_entropy, *spirals, samples_per_tensor=7, seed=3)
    reference = model.double()
    loss = F.cross_entropy(reference(spirals[0].double()), spirals[1])
    gradients = dict(
        zip(
            dict(reference.named_parameters()),
            torch.autograd.grad(loss, list(reference.parameters())),
            strict=True,
        )
    )
    for name, gradient in gradients.items():
        indices = [c.index for c in report.coordinates if c.tensor == name]
        assert len(indices) == len(set(indices)) == min(7, gradient.numel())
        largest = np.unravel_index(int(gradient.abs().argmax()), gradient.shape)
        assert indices[0] == tuple(int(i) for i in largest)
    again = gradcheck(model.float(), F.cross_entropy, *spirals, samples_per_tensor=7, seed=3)
    other = gradcheck(model, F.cross_entropy, *spirals, samples_per_tensor=7, seed=4)
    assert [c.index for c in again.coordinates] == [c.index for c in report.coordinates]
    assert [c.index for c in other.coordinates] != [c.index for c in report.coordinates]


def test_unused_parameters_are_zero_and_frozen_ones_are_skipped(spirals):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(2, 3)
            self.unused = nn.Parameter(torch.ones(4))
            self.frozen = nn.Parameter(torch.ones(3), requires_grad=False)

        def forward(self, x):
            return self.used(x) + self.frozen

    report = gradcheck(Model(), F.cross_entropy, *spirals)
    rows = rows_by_name(report)
    assert list(rows) == ["unused", "used.weight", "used.bias"]
    assert rows["unused"].verdict == "zero"
    assert rows["unused"].max_relative_error is None
    assert report.passed


def test_a_model_that_cannot_be_deep_copied_is_refused_with_the_reason(spirals):
    model = nn.Linear(2, 3)
    model.cached = model.weight * 2  # a non-leaf tensor attribute: deepcopy refuses it
    with pytest.raises(
        ValueError, match=r"^The 'model' parameter of gradcheck must support copy.deepcopy"
    ):
        gradcheck(model, F.cross_entropy, *spirals)


class _ThreeFeatures(nn.Module):
    """An MLP on 3 features, not an nn.Sequential (its forward is evaluated whole)."""

    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(3, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


@pytest.mark.parametrize(
    "model",
    [_ThreeFeatures, lambda: nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3))],
    ids=["module", "sequential"],
)
def test_a_model_or_targets_that_do_not_fit_the_data_are_named_with_the_shapes(model):
    # torch's bare errors from deep inside a layer or the loss, QA: now one error that
    # says which call could not run on what, with torch's error chained.
    torch.manual_seed(0)
    targets = torch.randint(0, 3, (16,))
    wide = (
        "The model given to gradcheck cannot run on inputs of shape (16, 4): RuntimeError: "
        "mat1 and mat2 shapes cannot be multiplied (16x4 and 3x8). Check that the model "
        "takes inputs of that shape."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(wide)}$") as raised:
        gradcheck(model(), F.cross_entropy, torch.randn(16, 4), targets)
    assert isinstance(raised.value.__cause__, RuntimeError)

    few = (
        "The loss_fn given to gradcheck cannot run on the model's outputs (of shape (16, 3)) "
        "and the targets (of shape (5,)): ValueError: Expected input batch_size (16) to "
        "match target batch_size (5). Check that the targets fit the outputs"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(few)}") as raised:
        gradcheck(model(), F.cross_entropy, torch.randn(16, 3), targets[:5])
    assert isinstance(raised.value.__cause__, ValueError)


def test_a_model_returning_a_tuple_is_described_when_the_loss_cannot_take_it():
    class TupleOut(_ThreeFeatures):
        def forward(self, x):
            return super().forward(x), x

    with pytest.raises(ValueError, match=r"the model's outputs \(a tuple of 2\) and the targets"):
        gradcheck(TupleOut(), F.cross_entropy, torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))


class _RaisingBackward(torch.autograd.Function):
    """The identity whose backward has a bug that raises (a shape error of its own)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad @ torch.ones(5, 5, dtype=grad.dtype)  # grad is (4, 3): cannot multiply


class _Lambda(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


class _Interrupted(nn.Linear):
    def forward(self, x):
        raise KeyboardInterrupt


def test_errors_that_are_not_about_the_data_are_not_relabelled():
    # Only the model's and the loss's first call are guarded: a backward that raises is
    # the bug gradcheck exists to find, and an interrupt is the user's.
    model = nn.Sequential(nn.Linear(3, 3), _Lambda(_RaisingBackward.apply))
    inputs, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied") as raised:
        gradcheck(model, F.cross_entropy, inputs, targets)
    assert not isinstance(raised.value, ValueError)
    with pytest.raises(KeyboardInterrupt):
        gradcheck(_Interrupted(3, 3), F.cross_entropy, inputs, targets)


def test_integer_inputs_work_and_cannot_be_checked():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(5, 4), nn.Flatten(), nn.Linear(8, 2))
    tokens, targets = torch.tensor([[0, 1], [2, 4], [3, 3]]), torch.tensor([0, 1, 0])
    assert gradcheck(model, F.cross_entropy, tokens, targets).passed
    with pytest.raises(
        ValueError,
        match=r"^The 'check_inputs' parameter of gradcheck must be False when the inputs are not floating point",
    ):
        gradcheck(model, F.cross_entropy, tokens, targets, check_inputs=True)


def test_a_regression_target_is_cast_to_float64():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    assert gradcheck(model, F.mse_loss, torch.randn(6, 3), torch.randn(6, 2)).passed


class ScaleInPlace(nn.Module):
    """A forward that works in place on what it receives, as ``x /= 255`` would."""

    def forward(self, x):
        return x.mul_(1.5)


class InPlaceThenBroken(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.last = nn.Linear(2, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.last(torch.tanh(HalfGradient()(self.first(ScaleInPlace()(x)))))


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_forward_working_in_place_on_its_input_does_not_hide_a_wrong_backward(spirals, wrapped):
    # Each evaluation used to scale the same input once more, so every centred difference
    # compared two different functions: all coordinates came out as kinks, and passed.
    torch.manual_seed(0)
    model = InPlaceThenBroken() if wrapped else nn.Sequential(
        ScaleInPlace(), nn.Linear(2, 16), HalfGradient(), nn.Tanh(), nn.Linear(16, 3)
    )  # fmt: skip
    first = "first" if wrapped else "1"
    inputs = spirals[0].clone()
    report = gradcheck(model, F.cross_entropy, inputs, spirals[1])
    assert torch.equal(inputs, spirals[0])
    assert {c.verdict for c in report.coordinates if c.tensor == f"{first}.weight"} == {"wrong"}
    [finding] = report.findings()
    assert finding.evidence["tensors"] == [f"{first}.weight", f"{first}.bias"]
    # Without the broken backward the same model passes, its inputs checked too.
    fixed = nn.Sequential(ScaleInPlace(), nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3))
    report = gradcheck(fixed, F.cross_entropy, inputs, spirals[1], check_inputs=True)
    assert report.passed
    assert {c.verdict for c in report.coordinates} <= {"good", "ok"}


class ComplexLayer(nn.Module):
    """Real scores from a complex weight: Re z * Im z + |z| for z = x W."""

    def __init__(self, conjugated_backward=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 3, dtype=torch.complex64))
        self.conjugated_backward = conjugated_backward

    def forward(self, x):
        weight = ConjugatedGradient.apply(self.weight) if self.conjugated_backward else self.weight
        z = x.to(weight.dtype) @ weight
        return z.real * z.imag + z.abs()


class ConjugatedGradient(torch.autograd.Function):
    """The identity whose backward conjugates the gradient: its imaginary part is negated."""

    @staticmethod
    def forward(ctx, z):
        return z.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad.conj()


@pytest.mark.filterwarnings("ignore:Complex modules are a new feature:UserWarning")
@pytest.mark.parametrize("conjugated_backward", [False, True])
def test_complex_parameters_are_checked_by_real_and_imaginary_part(spirals, conjugated_backward):
    torch.manual_seed(0)
    model = ComplexLayer(conjugated_backward)
    inputs, targets = spirals[0][:8], spirals[1][:8]
    report = gradcheck(model, F.cross_entropy, inputs, targets, samples_per_tensor=12)
    [row] = report.tensors
    assert (row.name, row.shape, row.checked) == ("weight", (2, 3, 2), 12)
    assert model.weight.dtype == torch.complex64  # the model is untouched
    # The oracle: torch.autograd.gradcheck in complex128 on the same function.
    weight = model.weight.detach().to(torch.complex128).requires_grad_(True)
    copy = ComplexLayer(conjugated_backward)
    torch_passes = torch.autograd.gradcheck(
        lambda w: F.cross_entropy(
            functional_call(copy, {"weight": w}, (inputs.double(),)), targets
        ),
        (weight,),
        raise_exception=False,
    )
    assert report.passed is torch_passes is (not conjugated_backward)
    if conjugated_backward:  # only the imaginary parts are wrong
        assert {c.index[-1] for c in report.coordinates if c.verdict == "wrong"} == {1}
        assert report.findings()[0].kind is Finding.WRONG_GRADIENT
    else:
        assert {c.verdict for c in report.coordinates} <= {"good", "ok"}


# --- the report -------------------------------------------------------------------------------


def test_to_table_rows_render_with_the_report_table(spirals):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))
    report = gradcheck(model, F.cross_entropy, *spirals, penalty=lambda m: l2_penalty(m, 1e-3))
    rows = report.to_table()
    assert len(rows) == 8
    assert (rows[0]["term"], rows[0]["tensor"], rows[0]["shape"]) == ("loss", "0.weight", "4x2")
    assert rows[-1]["term"] == "penalty"
    json.dumps(rows)
    table = Table("Gradient check", list(rows[0]), [list(row.values()) for row in rows])
    assert "0.weight" in table.render_text()


def test_report_types_are_plain_frozen_data(spirals):
    report = gradcheck(nn.Linear(2, 3), F.cross_entropy, *spirals)
    assert isinstance(report, GradcheckReport)
    assert all(isinstance(row, TensorCheck) for row in report.tensors)
    assert all(isinstance(c, CoordinateCheck) for c in report.coordinates)
    with pytest.raises(AttributeError):
        report.h = 1.0


def test_a_tensor_check_built_positionally_in_the_old_order_keeps_its_failures():
    # The fields as they were before `unstable`: its insertion before `failures` made
    # this row's 3 failures its unstable count, and the report passed.
    row = TensorCheck("loss", "0.weight", (3, 2), 6, 0.5, 0.2, "wrong", 1, 3)
    assert (row.kinks, row.failures, row.unstable) == (1, 3, 0)
    report = GradcheckReport(tensors=(row,), coordinates=(), h=1e-3)
    assert not report.passed
    (finding,) = report.findings()
    assert finding.evidence["failures"] == {"0.weight": 3}
    keyword = TensorCheck(
        term="loss",
        name="0.weight",
        shape=(3, 2),
        checked=6,
        max_relative_error=0.5,
        median_relative_error=0.2,
        verdict="wrong",
        kinks=1,
        unstable=2,
        failures=3,
    )
    assert (keyword.failures, keyword.unstable) == (3, 2)


def test_the_tensor_check_fields_are_documented_in_their_order():
    names = [field.name for field in dataclasses.fields(TensorCheck)]
    assert names[-2:] == ["failures", "unstable"]
    attributes = TensorCheck.__doc__.split("Attributes:")[1].split("Example:")[0]
    assert re.findall(r"^ {8}(\w+):", attributes, flags=re.MULTILINE) == names
    page = (DOCS / "checks.md").read_text()
    sentence = page.split("holds one `TensorCheck` per (term, tensor):")[1]
    paragraph = sentence.split("`report.coordinates`")[0]
    mentioned = [name for name in re.findall(r"`(\w+)`", paragraph) if name in names]
    assert list(dict.fromkeys(mentioned)) == names


# --- bad arguments -----------------------------------------------------------------------------

LINEAR = nn.Linear(2, 3)
X, Y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"model": "net"},
            TypeError,
            "The 'model' parameter of gradcheck must be a torch.nn.Module. Got str instead.",
        ),
        (
            {"inputs": [[1.0, 2.0]]},
            TypeError,
            "The 'inputs' parameter of gradcheck must be a torch.Tensor. Got list instead.",
        ),
        (
            {"targets": None},
            TypeError,
            "The 'targets' parameter of gradcheck must be a torch.Tensor. Got NoneType instead.",
        ),
        (
            {"loss_fn": "cross_entropy"},
            TypeError,
            "The 'loss_fn' parameter of gradcheck must be a callable (outputs, targets) -> scalar tensor. Got 'cross_entropy' instead.",
        ),
        (
            {"penalty": 1e-4},
            TypeError,
            "The 'penalty' parameter of gradcheck must be None or a callable model -> scalar tensor. Got 0.0001 instead.",
        ),
        (
            {"samples_per_tensor": 0},
            ValueError,
            "The 'samples_per_tensor' parameter of gradcheck must be an int >= 1. Got 0 instead.",
        ),
        (
            {"samples_per_tensor": 2.0},
            ValueError,
            "The 'samples_per_tensor' parameter of gradcheck must be an int >= 1. Got 2.0 instead.",
        ),
        (
            {"check_inputs": 1},
            ValueError,
            "The 'check_inputs' parameter of gradcheck must be a bool. Got 1 instead.",
        ),
        (
            {"h": 0.0},
            ValueError,
            "The 'h' parameter of gradcheck must be a float in (0, 1]. Got 0.0 instead.",
        ),
        (
            {"kink_tolerance": -1.0},
            ValueError,
            "The 'kink_tolerance' parameter of gradcheck must be a finite float > 0. Got -1.0 instead.",
        ),
        (
            {"kink_tolerance": float("inf")},  # None turns the kink test off; inf is refused
            ValueError,
            "The 'kink_tolerance' parameter of gradcheck must be a finite float > 0. Got inf instead.",
        ),
        (
            {"seed": -1},
            ValueError,
            "The 'seed' parameter of gradcheck must be an int >= 0. Got -1 instead.",
        ),
        (
            {"loss_fn": lambda out, _: out},
            ValueError,
            "The 'loss_fn' parameter of gradcheck must return a scalar tensor. Got shape (4, 3) instead.",
        ),
        (
            {"loss_fn": lambda out, _: out.sum() * float("nan")},
            ValueError,
            "The 'loss_fn' parameter of gradcheck must give a finite value at the model's parameters. Got nan instead.",
        ),
        (
            {"model": nn.ReLU()},
            ValueError,
            "The 'model' parameter of gradcheck must have a parameter with requires_grad=True (or pass check_inputs=True). Got ReLU with none instead.",
        ),
    ],
)
def test_bad_arguments_fail_with_the_standard_message(kwargs, error, message):
    arguments = {"model": LINEAR, "loss_fn": F.cross_entropy, "inputs": X, "targets": Y, **kwargs}
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        gradcheck(**arguments)


# --- docs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["CoordinateCheck", "GradcheckReport", "TensorCheck", "gradcheck"])
def test_docstring_examples_run(name):
    import gradwise.checks

    run_docstring_examples(getattr(gradwise.checks, name), name)


def test_the_gradient_check_section_of_the_docs_runs():
    page = (DOCS / "checks.md").read_text()
    section = re.search(r"^## Gradient check.*?(?=^## |\Z)", page, flags=re.DOTALL | re.MULTILINE)
    assert section is not None
    blocks = re.findall(r"```python\n(.*?)```", section.group(0), flags=re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/checks.md", "exec"), {})  # noqa: S102 - our own docs


class _Wrapped(nn.Module):
    """The same network, not an nn.Sequential: gradcheck runs every forward whole."""

    def __init__(self, inner: nn.Sequential) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_shortcut_forwards_of_a_sequential_agree_with_whole_forwards(spirals):
    inputs, targets = spirals
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(inplace=True),
                          nn.Linear(16, 3))  # fmt: skip
    fast = gradcheck(model, F.cross_entropy, inputs, targets, samples_per_tensor=6)
    whole = gradcheck(_Wrapped(model), F.cross_entropy, inputs, targets, samples_per_tensor=6)
    assert len(fast.coordinates) == len(whole.coordinates)
    for a, b in zip(fast.coordinates, whole.coordinates, strict=True):
        assert a.index == b.index
        assert a.analytic == b.analytic
        assert a.numeric == pytest.approx(b.numeric, rel=1e-7, abs=1e-12)
        assert a.verdict == b.verdict


class _DoubledLinear(nn.Linear):
    def forward(self, x):
        return F.linear(x, 2 * self.weight, self.bias)


def _triple_output(module, inputs, output):
    return output * 3


def _triple_input(module, inputs):
    return (inputs[0] * 3,)


@pytest.mark.parametrize(
    "change", ["forward hook", "forward pre-hook", "subclass forward", "global forward hook"]
)
def test_a_linear_layer_changed_by_hooks_or_a_subclass_passes_in_a_sequential(spirals, change):
    # What the layer's call returns is what counts: the column shortcut of a plain Linear
    # must not be taken for one whose hooks or forward change it (found by QA: 0.weight
    # "wrong" at relative error 0.67 on a correct model).
    inputs, targets = spirals
    torch.manual_seed(3)
    first = _DoubledLinear(2, 16) if change == "subclass forward" else nn.Linear(2, 16)
    model = nn.Sequential(first, nn.Tanh(), nn.Linear(16, 3))
    handle = None
    if change == "forward hook":
        first.register_forward_hook(_triple_output)
    elif change == "forward pre-hook":
        first.register_forward_pre_hook(_triple_input)
    elif change == "global forward hook":
        handle = nn.modules.module.register_module_forward_hook(
            # (gradcheck runs a copy of the model: recognise the layer, not the object)
            lambda module, args, output: (
                output * 3 if isinstance(module, nn.Linear) and module.in_features == 2 else None
            )
        )
    try:
        report = gradcheck(model, F.cross_entropy, inputs, targets, samples_per_tensor=6)
    finally:
        if handle is not None:
            handle.remove()
    assert report.passed, [(t.name, t.verdict, t.max_relative_error) for t in report.tensors]
