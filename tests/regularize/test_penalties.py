"""L1/L2 penalties: closed forms, gradients, the default selection, and torch's weight_decay."""

import pytest
import torch
from torch import nn

from gradwise.optim import weight_decay_mask
from gradwise.regularize import Penalty, l1_penalty, l2_penalty, penalized_parameters


class Net(nn.Module):
    """Every kind of layer the default selection has to sort, plus a frozen and a tied weight."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(7, 4)
        self.conv = nn.Conv2d(1, 3, 3)
        self.batch_norm = nn.BatchNorm2d(3)
        self.group_norm = nn.GroupNorm(1, 3)
        self.linear = nn.Linear(4, 4)
        self.layer_norm = nn.LayerNorm(4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.tied = nn.Linear(4, 7, bias=False)
        self.tied.weight = self.embedding.weight  # (7, 4) shared with the embedding


def test_default_selection_is_the_trainable_weight_matrices_and_kernels():
    model = Net()
    selected = {id(p) for p in penalized_parameters(model)}
    expected = {id(model.embedding.weight), id(model.conv.weight), id(model.linear.weight)}
    assert selected == expected
    assert len(penalized_parameters(model)) == 3  # the tied weight appears once


def test_default_selection_agrees_with_the_weight_decay_mask():
    model = Net()
    mask = weight_decay_mask(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert [p for p in trainable if mask(p)] == penalized_parameters(model)


class Penalized(nn.Module):
    """``l2_penalty(model, 0.3)`` as a module's forward, for torch.func.functional_call."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self):
        return l2_penalty(self.model, 0.3)


def test_default_selection_holds_under_functional_call_and_vmap():
    # Under torch.func.vmap every tensor reports requires_grad=False. Before, the default
    # selection went by that flag, so l2_penalty(model) was 0 there. Now the module's
    # structure chooses: the same three weights at every point; the frozen layer, left as
    # the model's frozen Parameter, stays out.
    torch.manual_seed(0)
    model = Net().double()
    wrapper = Penalized(model)
    trainable = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    points = {
        name: torch.stack([(1 + k) * value for k in range(3)]) for name, value in trainable.items()
    }
    weights = ("embedding.weight", "conv.weight", "linear.weight")

    def penalty_at(state):
        return torch.func.functional_call(wrapper, {f"model.{n}": v for n, v in state.items()}, ())

    batched = torch.func.vmap(penalty_at)(points)
    expected = torch.stack([
        0.3 * sum(points[name][k].square().sum() for name in weights) for k in range(3)
    ])  # fmt: skip
    torch.testing.assert_close(batched, expected, rtol=1e-14, atol=0)
    one = {name: value[1] for name, value in points.items()}
    torch.testing.assert_close(penalty_at(one), expected[1], rtol=1e-14, atol=0)
    # A stand-in for the frozen weight: frozen if it is a frozen Parameter itself; a plain
    # tensor's requires_grad says nothing (under vmap it is False for every tensor).
    frozen = torch.randn(4, 4, dtype=torch.float64)
    as_frozen = penalty_at({**one, "frozen.weight": nn.Parameter(frozen, requires_grad=False)})
    torch.testing.assert_close(as_frozen, expected[1], rtol=1e-14, atol=0)
    as_value = penalty_at({**one, "frozen.weight": frozen})
    torch.testing.assert_close(
        as_value, expected[1] + 0.3 * frozen.square().sum(), rtol=1e-14, atol=0
    )


def test_penalties_of_a_module_equal_the_closed_form():
    torch.manual_seed(0)
    model = Net().double()
    weights = [model.embedding.weight, model.conv.weight, model.linear.weight]
    squares = sum(float((w.detach().numpy() ** 2).sum()) for w in weights)
    absolutes = sum(float(abs(w.detach().numpy()).sum()) for w in weights)
    torch.testing.assert_close(l2_penalty(model, 0.3).item(), 0.3 * squares, rtol=1e-14, atol=0)
    torch.testing.assert_close(l1_penalty(model, 0.2).item(), 0.2 * absolutes, rtol=1e-14, atol=0)
    assert l2_penalty(model, 0.3).dtype == torch.float64


def test_gradients_are_two_alpha_w_and_alpha_sign_w():
    w = torch.tensor([[1.5, -2.0, 0.0], [0.25, -0.5, 3.0]], dtype=torch.float64, requires_grad=True)
    (l2_grad,) = torch.autograd.grad(l2_penalty([w], 0.1), w)
    torch.testing.assert_close(l2_grad, 2 * 0.1 * w.detach(), rtol=0, atol=1e-16)
    (l1_grad,) = torch.autograd.grad(l1_penalty([w], 0.1), w)
    expected = 0.1 * torch.tensor([[1.0, -1.0, 0.0], [1.0, -1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(l1_grad, expected, rtol=0, atol=1e-16)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_weights_are_summed_in_float32_without_overflow(dtype):
    # A million float16 weights of 0.3 have a sum of squares of 9e4, past float16's 65504:
    # summed in float16 the penalty was inf, though every weight and the answer are small.
    w = torch.full((1000, 1000), 0.3, dtype=dtype, requires_grad=True)
    exact = w.detach().double()
    l2 = l2_penalty([w], 1e-4)
    l1 = l1_penalty([w], 1e-4)
    assert l2.dtype == l1.dtype == torch.float32
    torch.testing.assert_close(l2.double(), 1e-4 * exact.square().sum(), rtol=1e-5, atol=0)
    torch.testing.assert_close(l1.double(), 1e-4 * exact.abs().sum(), rtol=1e-5, atol=0)
    (grad,) = torch.autograd.grad(l2, w)
    assert grad.dtype == dtype
    torch.testing.assert_close(grad, (2e-4 * exact).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("penalty", [l1_penalty, l2_penalty])
def test_low_precision_weights_are_not_kept_in_float32_for_the_backward(dtype, penalty):
    # Before, each penalty summed a float32 copy of the weights, which autograd kept
    # (twice their memory, until the backward).
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(300, 200, generator=generator).to(dtype).requires_grad_()
    saved = []

    def keep(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        value = penalty([w], 1e-3)
    assert not [t for t in saved if t.numel() == w.numel() and t.dtype != dtype]
    exact = w.detach().double()
    if penalty is l2_penalty:
        expected_value, expected_grad = exact.square().sum(), 2 * exact
    else:
        expected_value, expected_grad = exact.abs().sum(), exact.sign()
    torch.testing.assert_close(value.double(), 1e-3 * expected_value, rtol=1e-6, atol=0)
    (grad,) = torch.autograd.grad(value, w)
    torch.testing.assert_close(grad, (1e-3 * expected_grad).to(dtype))


@pytest.mark.parametrize(
    "values", [[300.0, -1000.0, 2.0**-10, 0.0], [60000.0, -60000.0], [0.0, 0.0]]
)
def test_float16_weights_whose_squares_exceed_float16_are_penalized_exactly(values):
    # 300^2 and 60000^2 overflow float16 (65504); 2^-20 is below its normal range.
    w = torch.tensor(values, dtype=torch.float16, requires_grad=True)
    exact = w.detach().double()
    l2 = l2_penalty([w], 1e-6)
    torch.testing.assert_close(l2.double(), 1e-6 * exact.square().sum(), rtol=1e-6, atol=0)
    (grad,) = torch.autograd.grad(l2, w)
    assert grad.dtype == torch.float16
    # Within one float16 rounding step (2^-10) of 2 alpha w rounded to float16: the
    # norm's backward, w * (g / ||w||), rounds twice.
    expected = (2e-6 * exact).to(torch.float16)
    torch.testing.assert_close(grad, expected, rtol=2.0**-10, atol=0)


def test_l2_penalty_of_half_lambda_is_torch_sgd_weight_decay():
    def run(use_penalty):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 2)).double()
        weights = [model[0].weight, model[2].weight]
        biases = [model[0].bias, model[2].bias]
        decay = 0.0 if use_penalty else 0.05
        optimizer = torch.optim.SGD(
            [{"params": weights, "weight_decay": decay}, {"params": biases, "weight_decay": 0.0}],
            lr=0.1,
            momentum=0.9,
        )
        inputs = torch.randn(16, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        for _ in range(10):
            optimizer.zero_grad()
            loss = model(inputs).pow(2).mean()
            if use_penalty:
                loss = loss + l2_penalty(model, 0.05 / 2)
            loss.backward()
            optimizer.step()
        return [p.detach().clone() for p in model.parameters()]

    for with_penalty, with_decay in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(with_penalty, with_decay, rtol=1e-12, atol=1e-14)


def test_l2_penalty_of_half_lambda_is_torch_adam_weight_decay():
    def run(use_penalty):
        torch.manual_seed(3)
        w = nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
        optimizer = torch.optim.Adam([w], lr=0.01, weight_decay=0.0 if use_penalty else 0.2)
        for step in range(8):
            optimizer.zero_grad()
            loss = (w * (step + 1)).sin().sum()
            if use_penalty:
                loss = loss + l2_penalty([w], 0.1)
            loss.backward()
            optimizer.step()
        return w.detach()

    torch.testing.assert_close(run(True), run(False), rtol=1e-12, atol=1e-14)


def test_l2_penalty_of_a_complex_weight_is_its_squared_modulus_and_torch_weight_decay():
    # Before, the sum was of w^2 (complex): a complex "penalty" that backward refused.
    w = torch.tensor([3 + 4j, -1 + 2j], dtype=torch.complex128)
    value = l2_penalty([w], 0.5)
    assert not value.is_complex()
    torch.testing.assert_close(value, torch.tensor(0.5 * (25 + 5), dtype=torch.float64))

    def run(use_penalty):
        generator = torch.Generator().manual_seed(5)
        w = nn.Parameter(torch.randn(3, 2, dtype=torch.complex128, generator=generator))
        optimizer = torch.optim.SGD(
            [w], lr=0.1, momentum=0.9, weight_decay=0 if use_penalty else 0.3
        )
        for step in range(6):
            optimizer.zero_grad()
            loss = (w * (step + 1)).abs().sum()
            if use_penalty:
                loss = loss + l2_penalty([w], 0.3 / 2)
            loss.backward()
            optimizer.step()
        return w.detach()

    torch.testing.assert_close(run(True), run(False), rtol=1e-12, atol=1e-14)


def test_penalty_object_sums_both_terms_over_its_tensors():
    torch.manual_seed(4)
    model = Net().double()
    penalty = Penalty(model, l1=0.01, l2=0.02)
    expected = l1_penalty(model, 0.01) + l2_penalty(model, 0.02)
    torch.testing.assert_close(penalty(), expected, rtol=1e-15, atol=0)
    only = Penalty(model, l2=1.0, parameters=[model.linear.bias])
    torch.testing.assert_close(only(), model.linear.bias.detach().square().sum())
    assert float(Penalty(model)()) == 0.0
    assert repr(penalty) == "Penalty(l1=0.01, l2=0.02, num_tensors=3)"


def test_a_tensor_listed_twice_is_penalized_once():
    # A tied weight named through both of its layers: one set of weights, as the module
    # path counts it. Before, its penalty (and gradient) counted twice.
    model = Net().double()
    tied = [model.embedding.weight, model.tied.weight]
    expected = model.embedding.weight.detach().square().sum()
    torch.testing.assert_close(l2_penalty(tied, 1.0), expected)
    torch.testing.assert_close(l1_penalty(tied, 1.0), model.embedding.weight.detach().abs().sum())
    assert [id(p) for p in Penalty(model, l2=1.0, parameters=tied).parameters] == [id(tied[0])]


def test_penalty_follows_in_place_updates_of_its_tensors():
    model = nn.Linear(2, 1, bias=False)
    penalty = Penalty(model, l2=1.0)
    with torch.no_grad():
        model.weight.fill_(3.0)
    assert penalty().item() == 18.0


def test_no_parameters_give_a_zero_scalar():
    value = l2_penalty([], 1.0)
    assert value.shape == ()
    assert float(value) == 0.0


@pytest.mark.parametrize("function", [l1_penalty, l2_penalty])
def test_bad_arguments_raise_in_the_one_format(function):
    name = function.__name__
    with pytest.raises(
        ValueError,
        match=rf"^The 'strength' parameter of {name} must be a finite float >= 0\. Got -0\.1 instead\.$",
    ):
        function([torch.ones(2)], -0.1)
    with pytest.raises(TypeError, match="Got a single tensor instead; wrap it in a list"):
        function(torch.ones(2), 0.1)
    with pytest.raises(TypeError, match="Got an iterable containing float instead"):
        function([1.0], 0.1)


def test_penalty_and_selection_reject_bad_arguments():
    with pytest.raises(
        ValueError, match=r"^The 'l1' parameter of Penalty must be a finite float >= 0\."
    ):
        Penalty(nn.Linear(2, 2), l1=-1.0)
    with pytest.raises(TypeError, match="must be a torch.nn.Module. Got list instead"):
        penalized_parameters([torch.ones(2)])
