"""HalvingMaxPool against torch's MaxPool1d(2)/MaxPool2d(2) as the oracle, in float64."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import forward_ad
from torch.func import hessian, jacfwd, jacrev, vmap

from gradwise import optim
from gradwise.models import HalvingMaxPool, cnn1d, cnn2d

TORCH_POOL = {1: F.max_pool1d, 2: F.max_pool2d}
# torch's forward mode loads its jvp decompositions through torch.jit.script on first use,
# which warns (torch's own deprecation, not gradwise's).
FORWARD_MODE_LOADS_JIT = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

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


@FORWARD_MODE_LOADS_JIT
@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_forward_mode_jacobians_and_hessians_equal_torchs(spatial_dims):
    # QA: forward mode raised NotImplementedError (no jvp), so torch.func.hessian
    # (jacfwd over jacrev) failed; on inputs that need no gradient jacfwd went through
    # torch.maximum, whose derivative splits a tie's tangent half and half.
    shape = (5, 2, 9) if spatial_dims == 1 else (5, 2, 5, 6)
    x = values(shape, ties=True, seed=2)
    ours, theirs = HalvingMaxPool(spatial_dims), lambda t: TORCH_POOL[spatial_dims](t, 2)
    assert torch.equal(vmap(jacfwd(ours))(x), vmap(jacfwd(theirs))(x))
    cubed = [lambda t, pool=pool: pool(t).pow(3).sum() for pool in (ours, theirs)]
    assert torch.equal(hessian(cubed[0])(x), hessian(cubed[1])(x))
    tangent = torch.randn(shape, dtype=torch.float64)
    for requires_grad in (False, True):
        with forward_ad.dual_level():
            primal = x.clone().requires_grad_(requires_grad)
            ours_dual = forward_ad.unpack_dual(ours(forward_ad.make_dual(primal, tangent)))
            torch_dual = forward_ad.unpack_dual(theirs(forward_ad.make_dual(primal, tangent)))
            assert torch.equal(ours_dual.primal, torch_dual.primal)
            assert torch.equal(ours_dual.tangent, torch_dual.tangent)


@FORWARD_MODE_LOADS_JIT
def test_a_cnns_hessian_equals_the_one_with_torchs_pooling_layer():
    torch.manual_seed(0)
    ours = cnn2d((1, 6, 6), 3, width=4, norm=None).double()
    theirs = cnn2d((1, 6, 6), 3, width=4, norm=None).double()
    theirs.load_state_dict(ours.state_dict())
    for index, layer in enumerate(theirs):
        if isinstance(layer, HalvingMaxPool):
            theirs[index] = nn.MaxPool2d(2)
    inputs = torch.randn(
        3, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    targets = torch.tensor([0, 1, 2])
    params = {name: p.detach() for name, p in ours.named_parameters()}

    def loss_of(model):
        return lambda p: F.cross_entropy(torch.func.functional_call(model, p, (inputs,)), targets)

    mine, other = hessian(loss_of(ours))(params), hessian(loss_of(theirs))(params)
    for row in mine:
        for column in mine[row]:
            torch.testing.assert_close(mine[row][column], other[row][column], rtol=0, atol=1e-12)


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
    # QA: True and 2.0 were taken (they equal 1 and 2); 2.0 then failed in forward with
    # "slice indices must be integers".
    for spatial_dims in (True, 2.0, "2"):
        with pytest.raises(ValueError, match="'spatial_dims' parameter of HalvingMaxPool must"):
            HalvingMaxPool(spatial_dims)
    assert HalvingMaxPool(np.int64(2)).spatial_dims == 2
    assert type(HalvingMaxPool(np.int64(2)).spatial_dims) is int
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


# Dynamo instantiates the autograd.Function it traces, which torch itself deprecates.
@pytest.mark.filterwarnings("ignore:<class 'torch.autograd.function.Function'> should not be")
@pytest.mark.parametrize(("builder", "shape"), [(cnn1d, (1, 16)), (cnn2d, (1, 8, 8))])
def test_a_cnn_compiles_to_one_graph_with_the_gradients_of_eager_mode(builder, shape):
    # Dynamo refuses to trace an autograd.Function that defines jvp: forward mode must not
    # cost torch.compile(fullgraph=True) (the first jvp fix broke it).
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = builder(shape, 3, norm=None).double()
    inputs = values((4, *shape), ties=True, seed=4)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    outputs = compiled(inputs)
    expected = model(inputs)
    torch.testing.assert_close(outputs, expected, rtol=0, atol=1e-12)
    parameters = list(model.parameters())
    for got, want in zip(
        torch.autograd.grad(outputs.sum(), parameters),
        torch.autograd.grad(expected.sum(), parameters),
        strict=True,
    ):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
