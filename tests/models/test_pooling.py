"""HalvingMaxPool against torch's MaxPool1d(2)/MaxPool2d(2) as the oracle, in float64."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jacrev, vmap

from gradwise import optim
from gradwise.models import HalvingMaxPool, cnn1d, cnn2d

TORCH_POOL = {1: F.max_pool1d, 2: F.max_pool2d}

SHAPES = [
    (1, (3, 4, 10)),
    (1, (3, 4, 9)),  # an odd length: the last element is in no window
    (1, (4, 7)),  # unbatched (C, L)
    (2, (2, 3, 6, 8)),
    (2, (2, 3, 7, 9)),  # an odd last row and column
    (2, (3, 5, 4)),  # unbatched (C, H, W)
]


def values(shape, ties, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=torch.float64, generator=generator)
    # ReLU outputs rounded to integers: most windows hold ties, many all zeros
    return x.mul(2).round().relu() if ties else x


@pytest.mark.parametrize(("spatial_dims", "shape"), SHAPES)
@pytest.mark.parametrize("ties", [False, True])
def test_outputs_and_gradients_equal_torchs_max_pool(spatial_dims, shape, ties):
    x = values(shape, ties)
    ours_input, torch_input = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = HalvingMaxPool(spatial_dims)(ours_input)
    expected = TORCH_POOL[spatial_dims](torch_input, 2)
    assert torch.equal(ours, expected)
    upstream = torch.randn(expected.shape, dtype=torch.float64)
    (ours_grad,) = torch.autograd.grad(ours, ours_input, upstream)
    (torch_grad,) = torch.autograd.grad(expected, torch_input, upstream)
    assert torch.equal(ours_grad, torch_grad)  # a tie's gradient goes to its first element
    with torch.no_grad():
        assert torch.equal(HalvingMaxPool(spatial_dims)(x), expected)


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_gradient_and_double_backward_pass_finite_differences(spatial_dims):
    shape = (2, 3, 6) if spatial_dims == 1 else (2, 2, 4, 5)
    x = values(shape, ties=False).requires_grad_()
    pool = HalvingMaxPool(spatial_dims)
    assert torch.autograd.gradcheck(pool, (x,))
    assert torch.autograd.gradgradcheck(pool, (x,))


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_per_sample_jacobians_under_torch_func_equal_torchs(spatial_dims):
    shape = (5, 2, 8) if spatial_dims == 1 else (5, 2, 4, 6)
    x = values(shape, ties=True, seed=1)
    ours = vmap(jacrev(HalvingMaxPool(spatial_dims)))(x)
    expected = vmap(jacrev(lambda sample: TORCH_POOL[spatial_dims](sample, 2)))(x)
    assert torch.equal(ours, expected)


@pytest.mark.parametrize(("builder", "shape"), [(cnn1d, (1, 40)), (cnn2d, (1, 12, 12))])
def test_a_cnn_trains_to_the_same_bits_as_with_torchs_pooling_layer(builder, shape):
    torch.manual_seed(0)
    ours = builder(shape, 10)
    theirs = builder(shape, 10)
    theirs.load_state_dict(ours.state_dict())
    for index, layer in enumerate(theirs):
        if isinstance(layer, HalvingMaxPool):
            theirs[index] = (nn.MaxPool1d if len(shape) == 2 else nn.MaxPool2d)(2)
    assert any(isinstance(layer, nn.MaxPool1d | nn.MaxPool2d) for layer in theirs)
    models = (ours, theirs)
    optimizers = [optim.SGD(model.parameters(), lr=0.1, momentum=0.9) for model in models]
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        inputs = torch.randn(16, *shape, generator=generator)
        targets = torch.randint(0, 10, (16,), generator=generator)
        for model, optimizer in zip(models, optimizers, strict=True):
            optimizer.zero_grad()
            F.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
    for (name, mine), other in zip(
        ours.state_dict().items(), theirs.state_dict().values(), strict=True
    ):
        assert torch.equal(mine, other), name


def test_a_nan_window_outputs_nan_as_torch_does():
    x = torch.tensor([[[1.0, float("nan"), 2.0, 3.0]]], requires_grad=True)
    out = HalvingMaxPool(1)(x)
    assert torch.isnan(out[0, 0, 0])
    assert out[0, 0, 1] == 3.0
    out.sum().backward()
    assert x.grad[0, 0, 2:].tolist() == [0.0, 1.0]
    assert x.grad[0, 0, :2].sum() == 1.0  # one element of the NaN window takes its gradient


def test_spatial_dims_and_input_rank_are_checked():
    with pytest.raises(
        ValueError, match="'spatial_dims' parameter of HalvingMaxPool must be 1 or 2"
    ):
        HalvingMaxPool(3)
    with pytest.raises(ValueError, match=r"HalvingMaxPool\(2\) takes inputs of 3 or 4 dimensions"):
        HalvingMaxPool(2)(torch.zeros(2, 3, 4, 5, 6))


@pytest.mark.parametrize(
    ("spatial_dims", "shape"), [(1, (2, 3, 1)), (2, (2, 3, 1, 6)), (2, (3, 6, 1))]
)
def test_a_dimension_too_short_to_pool_is_refused_as_torch_refuses_it(spatial_dims, shape):
    # torch's MaxPool refuses a window larger than the input; an empty output would pass
    # silently into the next layer.
    torch_pool = nn.MaxPool1d(2) if spatial_dims == 1 else nn.MaxPool2d(2)
    with pytest.raises(RuntimeError, match="output size"):
        torch_pool(torch.zeros(shape))
    with pytest.raises(ValueError, match=r"needs at least 2 positions along each pooled"):
        HalvingMaxPool(spatial_dims)(torch.zeros(shape))
