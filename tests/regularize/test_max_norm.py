"""Max-norm: the projection written out, torch.renorm, and the optimizer hook."""

import pytest
import torch
from torch import nn

from gradwise import optim
from gradwise.regularize import MaxNorm, max_norm_


def projected(weight, max_norm):
    """Srivastava et al.'s projection, with torch.renorm's 1e-7, written out per unit."""
    rows = weight.reshape(weight.shape[0], -1)
    norms = rows.norm(dim=1, keepdim=True)
    scaled = torch.where(norms > max_norm, rows * (max_norm / (norms + 1e-7)), rows)
    return scaled.reshape(weight.shape)


@pytest.mark.parametrize("shape", [(6, 5), (4, 3, 3, 3), (5, 2, 7)])
def test_each_unit_is_projected_onto_the_ball(shape):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(shape, dtype=torch.float64, generator=generator)
    weight[0] *= 0.01  # one unit well under the cap
    original = weight.clone()
    max_norm_([weight], max_norm=1.5)
    torch.testing.assert_close(weight, projected(original, 1.5), rtol=1e-15, atol=0)
    norms = weight.reshape(shape[0], -1).norm(dim=1)
    assert (norms <= 1.5).all()
    assert torch.equal(weight[0], original[0])  # under the cap: bit for bit


def test_matches_torch_renorm_exactly_in_float32():
    weight = torch.randn(64, 100, generator=torch.Generator().manual_seed(1)) * 0.2
    expected = torch.renorm(weight, p=2, dim=0, maxnorm=2.0)
    assert (weight.norm(dim=1) > 2.0).sum() > 10
    assert (weight.norm(dim=1) < 2.0).sum() > 10
    max_norm_([weight], max_norm=2.0)
    assert torch.equal(weight, expected)


def test_dim_selects_the_axis_that_indexes_units():
    weight = torch.randn(3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    original = weight.clone()
    max_norm_([weight], max_norm=1.0, dim=1)  # Keras' Dense kernel layout (in, out)
    torch.testing.assert_close(weight, projected(original.T, 1.0).T, rtol=1e-15, atol=0)


def test_a_module_constrains_its_weights_and_spares_biases_and_normalization():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(10.0)
    max_norm_(model, max_norm=1.0)
    assert torch.all(model[0].weight.norm(dim=1) <= 1.0)
    assert torch.all(model[0].bias == 10.0)
    assert torch.all(model[1].weight == 10.0)


@pytest.mark.parametrize("make_optimizer", [torch.optim.SGD, optim.SGD])
def test_attached_constraint_holds_after_every_step_until_removed(make_optimizer):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    optimizer = make_optimizer(model.parameters(), lr=5.0)
    handle = MaxNorm(0.5).attach(optimizer, model)
    inputs = torch.randn(8, 1, 8, 8)

    def step():
        optimizer.zero_grad()
        model(inputs).pow(2).sum().backward()
        optimizer.step()

    for _ in range(5):
        step()
        # float32: a norm recomputed after the projection can round a few ulps above c
        assert torch.all(model[0].weight.flatten(1).norm(dim=1) <= 0.5 * (1 + 1e-6))
        assert torch.all(model[2].weight.norm(dim=1) <= 0.5 * (1 + 1e-6))
    assert model[2].bias.abs().max() > 0.5  # biases are not constrained
    handle.remove()
    step()
    assert model[2].weight.norm(dim=1).max() > 0.5


def test_calling_the_constraint_applies_it_now():
    weight = torch.full((2, 4), 3.0)
    MaxNorm(2.0)([weight])
    torch.testing.assert_close(weight.norm(dim=1), torch.full((2,), 2.0))


def test_bad_arguments_raise_in_the_one_format():
    with pytest.raises(
        ValueError,
        match=r"^The 'max_norm' parameter of MaxNorm must be a finite float > 0\. Got 0 instead\.$",
    ):
        MaxNorm(0)
    with pytest.raises(
        ValueError,
        match=r"^The 'dim' parameter of max_norm_ must be a dimension of every tensor\. Got 1 "
        r"instead, for a tensor of shape \(3,\)\.$",
    ):
        max_norm_([torch.ones(3)], 1.0, dim=1)
    model, other = nn.Linear(2, 2), nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="that is in none of its param groups"):
        MaxNorm(1.0).attach(optimizer, other)
    with pytest.raises(ValueError, match="'dim' parameter of MaxNorm"):
        MaxNorm(1.0, dim=2).attach(optimizer, model)


def test_a_vector_is_refused_naming_what_to_pass() -> None:
    # torch.renorm's "input needs at least 2 dimensions" came through as it was.
    with pytest.raises(ValueError, match=r"must hold weight matrices or kernels .* shape \(3,\)"):
        max_norm_([torch.randn(3)], 1.0)
