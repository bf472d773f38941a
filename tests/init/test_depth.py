"""The lectures' claim, measured: signal through a 20-layer ReLU MLP under each scheme.

"Activation" here is a ReLU output h_l = relu(W_l h_{l-1}), zero biases, input x ~ N(0, 1)
(std 1). With He (variance 2 / fan_in) the second moment E[h_l^2] equals E[x^2] at every
depth in expectation, so std(h_l) stays at sqrt(1 - 1/pi) = 0.83 of std(x): a constant.
With 0.01 * randn each layer multiplies the variance by 1024 * 1e-4 / 2 = 0.05; with
Xavier at gain 1 (fan_in = fan_out, variance 1 / n) by 1/2, so std(h_l) =
0.58 * 2^(-(l - 1) / 2).
"""

import math

import pytest
import torch
from torch import nn

from gradwise import init

# Width 1024: the depth-20 std of a single He network varies from seed to seed by about
# 20% (finite-width fluctuations grow with depth / width); over 30 seeds it stayed in
# [0.59, 1.62] of the input's.
WIDTH, DEPTH, BATCH = 1024, 20, 256


@pytest.fixture(scope="module")
def inputs():
    return torch.randn(BATCH, WIDTH, generator=torch.Generator().manual_seed(0))


def relu_mlp():
    layers = []
    for _ in range(DEPTH):
        layers += [nn.Linear(WIDTH, WIDTH), nn.ReLU()]
    return nn.Sequential(*layers)


def activation_stds(model, x):
    """std(h_l) / std(x) after each of the DEPTH ReLUs."""
    stds = []
    h = x
    with torch.no_grad():
        for module in model:
            h = module(h)
            if isinstance(module, nn.ReLU):
                stds.append(h.std().item() / x.std().item())
    return stds


def test_he_keeps_the_activation_std_within_a_factor_2_of_the_inputs(inputs):
    model = relu_mlp()
    init.initialize(model, "he_normal", generator=1)
    stds = activation_stds(model, inputs)
    assert all(0.5 < std < 2 for std in stds), stds


def test_small_random_weights_collapse_the_signal_by_orders_of_magnitude(inputs):
    model = relu_mlp()
    init.initialize(model, init.normal(std=0.01), generator=1)
    stds = activation_stds(model, inputs)
    assert all(later < earlier for earlier, later in zip(stds, stds[1:], strict=False))
    assert stds[-1] < 1e-3 * stds[0]
    theory = math.sqrt(WIDTH * 1e-4 * (0.5 - 0.5 / math.pi)) * math.sqrt(WIDTH * 1e-4 / 2) ** 19
    assert theory / 2 < stds[-1] < 2 * theory  # 0.19 * 0.23^19 = 9e-14


def test_xavier_with_relu_halves_the_variance_at_every_layer(inputs):
    model = relu_mlp()
    init.initialize(model, init.xavier_normal(gain=1.0), generator=1)
    stds = activation_stds(model, inputs)
    ratios = [later / earlier for earlier, later in zip(stds, stds[1:], strict=False)]
    assert all(0.55 < ratio < 0.85 for ratio in ratios), ratios  # theory: 1 / sqrt(2)
    theory = math.sqrt(0.5 - 0.5 / math.pi) * 2 ** (-(DEPTH - 1) / 2)
    assert theory / 2 < stds[-1] < 2 * theory
    assert stds[-1] < 2e-3


def test_xavier_with_the_automatic_relu_gain_holds_the_signal_like_he(inputs):
    model = relu_mlp()
    init.initialize(model, "xavier_normal", generator=1)
    stds = activation_stds(model, inputs)
    assert all(0.5 < std < 2 for std in stds), stds
