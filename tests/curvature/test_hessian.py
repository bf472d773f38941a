"""Hessian-vector products against the exact Hessian, and the model left as found."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradwise import curvature
from gradwise.curvature import Hessian, hessian_vector_product

from .models import classification_batch, cross_entropy, exact_hessian, mlp


@pytest.fixture(scope="module")
def small():
    model = mlp((8, 16, 4))
    inputs, targets = classification_batch(num_samples=32, num_features=8, num_classes=4)
    return model, inputs, targets, exact_hessian(model, cross_entropy, inputs, targets)


def test_products_match_the_exact_hessian(small):
    model, inputs, targets, exact = small
    hessian = Hessian(model, cross_entropy, (inputs, targets))
    assert hessian.num_parameters == exact.shape[0] == 8 * 16 + 16 + 16 * 4 + 4
    vectors = torch.randn(3, exact.shape[0], dtype=torch.float64)
    for vector in vectors:
        torch.testing.assert_close(hessian @ vector, exact @ vector, rtol=1e-10, atol=1e-12)
    assert hessian.num_products == 3
    one_shot = hessian_vector_product(model, cross_entropy, (inputs, targets), vectors[0])
    torch.testing.assert_close(one_shot, exact @ vectors[0], rtol=1e-10, atol=1e-12)


def test_several_batches_average_weighted_by_size(small):
    model, inputs, targets, exact = small  # exact: the mean loss over all 32 samples
    batches = [
        (inputs[:5], targets[:5]),
        (inputs[5:20], targets[5:20]),
        (inputs[20:], targets[20:]),
    ]
    vector = torch.randn(exact.shape[0], dtype=torch.float64)
    expected = exact @ vector
    torch.testing.assert_close(Hessian(model, cross_entropy, batches) @ vector, expected)
    # A generator is read once and kept: later products see the same batches.
    hessian = Hessian(model, cross_entropy, (batch for batch in batches))
    torch.testing.assert_close(hessian @ vector, expected)
    torch.testing.assert_close(hessian @ vector, expected)
    # Kept graphs (the default) and graphs rebuilt per product give the same products.
    for keep in (0, 1, 16):
        hessian = Hessian(model, cross_entropy, batches, keep_graphs=keep)
        for _ in range(2):
            torch.testing.assert_close(hessian @ vector, expected)


def test_gradient_matches_autograd(small):
    model, inputs, targets, _ = small
    reference = copy.deepcopy(model)
    cross_entropy(reference(inputs), targets).backward()
    expected = torch.cat([p.grad.reshape(-1) for p in reference.parameters()])
    torch.testing.assert_close(
        Hessian(model, cross_entropy, (inputs, targets)).gradient(), expected
    )


def test_frozen_parameters_are_held_fixed(small):
    model, inputs, targets, _ = small
    model = copy.deepcopy(model)
    model[0].weight.requires_grad_(False)
    exact = exact_hessian(model, cross_entropy, inputs, targets)
    hessian = Hessian(model, cross_entropy, (inputs, targets))
    assert hessian.num_parameters == exact.shape[0] == 16 + 16 * 4 + 4
    vector = torch.randn(exact.shape[0], dtype=torch.float64)
    torch.testing.assert_close(hessian @ vector, exact @ vector)
    pieces = hessian.unflatten(vector)
    assert list(pieces) == ["0.bias", "2.weight", "2.bias"]
    assert pieces["2.weight"].shape == (4, 16)


def test_a_loss_linear_in_the_parameters_has_zero_hessian():
    model = nn.Linear(3, 2).double()
    inputs = torch.randn(4, 3, dtype=torch.float64)
    vector = torch.randn(8, dtype=torch.float64)
    product = hessian_vector_product(model, lambda out, _: out.sum(), (inputs, None), vector)
    assert torch.equal(product, torch.zeros(8, dtype=torch.float64))


class Net(nn.Module):
    """Batch norm (running statistics) and dropout (RNG): everything a probe could disturb."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(6, 10), nn.BatchNorm1d(10), nn.Tanh(), nn.Dropout(0.3), nn.Linear(10, 3)
        )

    def forward(self, x):
        return self.body(x)


def snapshot(model):
    return (
        {name: t.detach().clone() for name, t in model.state_dict().items()},
        [m.training for m in model.modules()],
        {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()},
        torch.get_rng_state(),
    )


def assert_same(before, after):
    for name, tensor in before[0].items():
        assert torch.equal(tensor, after[0][name]), name
    assert before[1] == after[1]
    for name, grad in before[2].items():
        assert (grad is None) == (after[2][name] is None), name
        assert grad is None or torch.equal(grad, after[2][name]), name
    assert torch.equal(before[3], after[3])


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_every_function_leaves_the_model_as_found(mode):
    torch.manual_seed(3)
    model = Net().double()
    inputs, targets = classification_batch(num_samples=16, num_features=6, num_classes=3)
    cross_entropy(model(inputs), targets).backward()  # an existing .grad must survive
    model.body[1].eval()  # a mixed train/eval state must survive too
    model.body[4].bias.grad = None
    data = [(inputs[:8], targets[:8]), (inputs[8:], targets[8:])]
    before = snapshot(model)
    options = {"mode": mode}
    curvature.eigenvalues(model, cross_entropy, data, k=2, max_iterations=200, **options)
    curvature.trace(model, cross_entropy, data, num_probes=3, **options)
    curvature.trace(model, cross_entropy, data, num_probes=9, method="hutch++", **options)
    curvature.eigenvalue_density(model, cross_entropy, data, num_iterations=5, **options)
    curvature.condition_number(model, cross_entropy, data, max_iterations=200, **options)
    curvature.find_negative_curvature(model, cross_entropy, data, max_iterations=200, **options)
    curvature.max_stable_lr(model, cross_entropy, data, momentum=0.9, **options)
    hessian_vector_product(
        model,
        cross_entropy,
        data,
        torch.ones(sum(p.numel() for p in model.parameters()), dtype=torch.float64),
        **options,
    )
    assert_same(before, snapshot(model))


def test_train_mode_fixes_the_dropout_masks():
    torch.manual_seed(4)
    model = Net().double().train()
    inputs, targets = classification_batch(num_samples=16, num_features=6, num_classes=3)
    hessian = Hessian(model, cross_entropy, (inputs, targets), mode="train")
    u, v = torch.randn(2, hessian.num_parameters, dtype=torch.float64)
    hu, hv = hessian @ u, hessian @ v
    # One fixed operator: repeatable and symmetric (a fresh mask per call would be neither).
    torch.testing.assert_close(hessian @ u, hu, rtol=0, atol=0)
    torch.testing.assert_close(torch.dot(v, hu), torch.dot(u, hv))
    # ... and different from eval mode, where dropout is off and batch norm uses running stats.
    eval_product = Hessian(model, cross_entropy, (inputs, targets)) @ u
    assert not torch.allclose(eval_product, hu)


def test_eval_mode_is_the_hessian_of_the_eval_model():
    torch.manual_seed(5)
    model = Net().double().train()
    inputs, targets = classification_batch(num_samples=16, num_features=6, num_classes=3)
    exact = exact_hessian(model, cross_entropy, inputs, targets)  # evaluates in eval mode
    vector = torch.randn(exact.shape[0], dtype=torch.float64)
    torch.testing.assert_close(
        Hessian(model, cross_entropy, (inputs, targets)) @ vector, exact @ vector
    )


def test_float32_models_work_in_float32():
    model = mlp((4, 8, 3)).float()
    inputs, targets = classification_batch(num_samples=16, num_features=4, num_classes=3)
    hessian = Hessian(model, cross_entropy, (inputs.float(), targets))
    assert (hessian @ torch.ones(hessian.num_parameters)).dtype == torch.float32
    values = curvature.eigenvalues(model, cross_entropy, (inputs.float(), targets), k=1, tol=1e-3)
    assert values.dtype == torch.float32


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda m, b: Hessian(m, cross_entropy, 3),
            r"The 'data' parameter of Hessian must be an \(inputs, targets\) batch or an iterable of such batches. Got 3 instead.",
        ),
        (
            lambda m, b: Hessian(m, cross_entropy, []),
            r"must be an \(inputs, targets\) batch .* Got an empty iterable instead.",
        ),
        (
            lambda m, b: Hessian(m, cross_entropy, [b, 5]),
            r"Got an iterable with a non-batch item instead.",
        ),
        (
            lambda m, b: Hessian(m, cross_entropy, b[0]),
            r"The 'data' parameter .* Got a torch.float64 tensor of shape \(4, 3\) on cpu instead.",
        ),
        (
            lambda m, b: Hessian(m, cross_entropy, b, mode="test"),
            r"The 'mode' parameter of Hessian must be one of 'eval', 'train'. Got 'test' instead.",
        ),
        (
            lambda m, b: Hessian("model", cross_entropy, b),
            r"The 'model' parameter of Hessian must be a Module. Got 'model' instead.",
        ),
        (
            lambda m, b: Hessian(m, None, b),
            r"The 'loss_fn' parameter of Hessian must be a callable. Got None instead.",
        ),
        (
            lambda m, b: Hessian(m, F.cross_entropy, b) @ torch.ones(3),
            r"The 'vector' parameter of Hessian.matvec must be a torch.float64 tensor of shape \(8,\) on cpu. Got a torch.float32 tensor of shape \(3,\) on cpu instead.",
        ),
        (
            lambda m, b: Hessian(m, lambda o, t: o, b) @ torch.ones(8, dtype=torch.float64),
            r"The 'loss_fn' parameter of Hessian must return a scalar tensor \(a mean-reduced loss\). Got a torch.float64 tensor of shape \(4, 2\) on cpu instead.",
        ),
        (  # the trace's default Gauss-Newton split evaluates the loss its own way
            lambda m, b: Hessian(m, lambda o, t: o, b).trace(method="gauss-newton"),
            r"The 'loss_fn' parameter of Hessian must return a scalar tensor \(a mean-reduced loss\). Got a torch.float64 tensor of shape \(4, 2\) on cpu instead.",
        ),
        (
            lambda m, b: Hessian(m, lambda o, t: 1.5, b).trace(),
            r"The 'loss_fn' parameter of Hessian must return a scalar tensor \(a mean-reduced loss\). Got 1.5 instead.",
        ),
        (
            lambda m, b: Hessian(nn.Linear(2, 2).requires_grad_(False), cross_entropy, b),
            r"The 'model' parameter of Hessian must be a Module with trainable parameters. Got one with none instead.",
        ),
        (
            lambda m, b: Hessian(
                nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).double()), cross_entropy, b
            ),
            r"must be a Module whose trainable parameters share one dtype and device. Got a Module with torch.float32 on cpu, torch.float64 on cpu instead.",
        ),
    ],
)
def test_bad_input_is_named_in_the_one_format(call, message):
    model = nn.Linear(3, 2).double()
    batch = (torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0]))
    with pytest.raises(ValueError, match=message):
        call(model, batch)
