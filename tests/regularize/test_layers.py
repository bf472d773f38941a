"""normalization() and dropout(): the right torch.nn layer, checked by what it computes."""

import re

import pytest
import torch
from torch import nn

from gradwise.regularize import NORMALIZATION_KINDS, dropout, normalization

GENERATOR = torch.Generator().manual_seed(0)


def standardized(x, dims):
    mean = x.mean(dim=dims, keepdim=True)
    variance = x.var(dim=dims, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(variance + 1e-5)


def batch(spatial_dims, channels=8):
    shape = (6, channels) + (5, 7)[:spatial_dims]
    return 3.0 + 2.0 * torch.randn(shape, dtype=torch.float64, generator=GENERATOR)


@pytest.mark.parametrize("spatial_dims", [0, 1, 2])
def test_batch_norm_standardizes_each_channel_over_the_batch(spatial_dims):
    x = batch(spatial_dims)
    layer = normalization("batch", 8, spatial_dims).double()
    dims = [0] + list(range(2, x.ndim))
    torch.testing.assert_close(layer(x), standardized(x, dims))


@pytest.mark.parametrize("spatial_dims", [0, 1, 2])
def test_layer_norm_standardizes_each_sample_over_channels_and_space(spatial_dims):
    x = batch(spatial_dims)
    layer = normalization("layer", 8, spatial_dims).double()
    torch.testing.assert_close(layer(x), standardized(x, list(range(1, x.ndim))))
    affine = [p.shape for p in layer.parameters()]
    assert affine == [torch.Size([8]), torch.Size([8])]  # one scale and shift per channel


@pytest.mark.parametrize("spatial_dims", [0, 1, 2])
def test_group_norm_standardizes_each_group_of_channels(spatial_dims):
    x = batch(spatial_dims)
    layer = normalization("group", 8, spatial_dims, num_groups=4).double()
    grouped = x.reshape(6, 4, -1)
    expected = standardized(grouped, [2]).reshape(x.shape)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_instance_norm_standardizes_each_channel_of_each_sample(spatial_dims):
    x = batch(spatial_dims)
    layer = normalization("instance", 8, spatial_dims).double()
    torch.testing.assert_close(layer(x), standardized(x, list(range(2, x.ndim))))
    assert len(list(layer.parameters())) == 2


def test_none_is_the_identity_and_the_kinds_are_listed():
    assert isinstance(normalization(None, 8), nn.Identity)
    assert NORMALIZATION_KINDS == ("batch", "layer", "group", "instance", None)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: normalization("bn", 8),
            "The 'kind' parameter of normalization must be one of 'batch', 'layer', 'group', "
            "'instance', None. Got 'bn' instead.",
        ),
        (
            lambda: normalization("group", 12, num_groups=8),
            "The 'num_groups' parameter of normalization must divide num_channels=12. Got 8 "
            "instead.",
        ),
        (
            lambda: normalization("instance", 8, spatial_dims=0),
            "The 'spatial_dims' parameter of normalization must be 1 or 2 for kind='instance' "
            "(instance statistics run over spatial axes). Got 0 instead.",
        ),
        (
            lambda: normalization("batch", 8, spatial_dims=3),
            "The 'spatial_dims' parameter of normalization must be one of 0, 1, 2. Got 3 instead.",
        ),
        (
            lambda: normalization("batch", 0),
            "The 'num_channels' parameter of normalization must be an int >= 1. Got 0 instead.",
        ),
        (
            lambda: dropout(1.0),
            "The 'p' parameter of dropout must be a float in [0, 1). Got 1.0 instead.",
        ),
    ],
)
def test_bad_arguments_raise_in_the_one_format(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_spatial_dropout_drops_whole_channels(spatial_dims):
    torch.manual_seed(1)
    layer = dropout(0.5, spatial_dims)
    x = torch.ones((32, 16) + (4, 5)[:spatial_dims])
    out = layer(x).flatten(2)  # (batch, channels, positions)
    per_channel = out.amin(dim=2) == out.amax(dim=2)
    assert per_channel.all()  # each channel is all 0 or all 2
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(layer.eval()(x), x)


def test_element_dropout_drops_elements_and_scales_the_rest():
    torch.manual_seed(2)
    layer = dropout(0.25)
    out = layer(torch.ones(200, 50, dtype=torch.float64))
    assert set(out.unique().tolist()) == {0.0, 4 / 3}
    assert abs(float((out == 0).float().mean()) - 0.25) < 0.02
    assert type(dropout(0.1, spatial_dims=1)) is nn.Dropout1d
