"""initialize(): which modules get what, automatic gains, the symmetry warning, seeds, errors."""

import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from gradwise import init


def mlp():
    return nn.Sequential(
        nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 30), nn.ReLU(), nn.Linear(30, 5)
    )


def test_every_linear_and_conv_layer_gets_the_scheme_and_every_bias_the_value():
    model = nn.Sequential(
        nn.Conv1d(2, 3, 3),
        nn.Conv2d(3, 4, 3),
        nn.Conv3d(4, 5, 3),
        nn.ConvTranspose2d(5, 6, 3),
        nn.Linear(6, 7),
        nn.Linear(7, 8, bias=False),
    )
    init.initialize(model, "orthogonal", biases=0.25, generator=0)
    replay = torch.Generator().manual_seed(0)
    for layer in model:
        expected = torch.empty_like(layer.weight)
        nn.init.orthogonal_(expected, generator=replay)
        assert torch.equal(layer.weight, expected)
        if layer.bias is not None:
            assert torch.equal(layer.bias, torch.full_like(layer.bias, 0.25))


def test_normalization_layers_get_weight_one_bias_zero_and_fresh_running_statistics():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.GroupNorm(2, 4),
        nn.InstanceNorm2d(4, affine=True),
        nn.Flatten(),
        nn.LayerNorm(4 * 6 * 6),
        nn.LayerNorm(4 * 6 * 6, elementwise_affine=False),
        nn.RMSNorm(4 * 6 * 6),
        nn.Linear(4 * 6 * 6, 3),
        nn.BatchNorm1d(3),
    )
    kinds = nn.BatchNorm2d | nn.BatchNorm1d | nn.GroupNorm | nn.InstanceNorm2d | nn.LayerNorm
    norms = [m for m in model if isinstance(m, kinds | nn.RMSNorm)]
    with torch.no_grad():
        for norm in norms:
            for parameter in norm.parameters():
                parameter.normal_()
    model.train()(torch.randn(8, 3, 8, 8))  # moves BatchNorm's running statistics
    report = init.initialize(model, "he_normal", generator=0)
    for norm in norms:
        if norm.weight is not None:
            assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        if getattr(norm, "bias", None) is not None:
            assert torch.equal(norm.bias, torch.zeros_like(norm.bias))
    for batch_norm in (model[1], model[10]):
        assert torch.equal(batch_norm.running_mean, torch.zeros_like(batch_norm.running_mean))
        assert torch.equal(batch_norm.running_var, torch.ones_like(batch_norm.running_var))
        assert batch_norm.num_batches_tracked.item() == 0
    rows = {row.name: row for row in report}
    assert rows["1"].scheme == "weight 1, bias 0"
    assert rows["7"].std is None  # LayerNorm without affine parameters


def test_auto_gain_is_the_activation_after_each_layer():
    model = nn.Sequential(
        nn.Linear(40, 50),
        nn.Tanh(),
        nn.Linear(50, 60),
        nn.Dropout(0.5),
        nn.LeakyReLU(0.2),
        nn.Linear(60, 70),
        nn.BatchNorm1d(70),
        nn.Identity(),
        nn.ReLU(),
        nn.Linear(70, 80),
        nn.SELU(),
        nn.Linear(80, 10),
    )
    expected = [5 / 3, math.sqrt(2 / (1 + 0.2**2)), math.sqrt(2), 3 / 4, 1.0]
    report = init.initialize(model, "xavier_normal", generator=0)
    layers = [row for row in report if row.kind == "Linear"]
    assert [row.gain for row in layers] == pytest.approx(expected, rel=1e-12)
    # Oracle: torch.nn.init.xavier_normal_ with those gains, replaying the generator.
    replay = torch.Generator().manual_seed(0)
    for row, gain in zip(layers, expected, strict=True):
        weight = dict(model.named_modules())[row.name].weight
        assert torch.equal(
            weight, nn.init.xavier_normal_(torch.empty_like(weight), gain, generator=replay)
        )


def test_auto_gain_reads_activations_nested_in_blocks():
    block = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.GELU())
    model = nn.Sequential(block, nn.Sequential(nn.Conv2d(8, 8, 3), nn.SiLU()), nn.ELU())
    report = init.initialize(model, "he_normal", generator=0)
    gains = {row.name: row.gain for row in report if row.gain is not None}
    assert gains == {
        "0.0": init.calculate_gain("gelu"),
        "1.0": init.calculate_gain("silu"),
    }


def test_auto_gain_reads_prelu_relu6_mish_and_hardswish():
    # They used to count as no activation: gain 1 for the layer before them.
    prelu = nn.PReLU()
    with torch.no_grad():
        prelu.weight.fill_(0.1)  # a learned slope: read as it is now
    model = nn.Sequential(
        nn.Linear(8, 8), prelu, nn.Linear(8, 8), nn.ReLU6(), nn.Linear(8, 8), nn.Mish(),
        nn.Linear(8, 8), nn.Hardswish(), nn.Linear(8, 2),
    )  # fmt: skip
    report = init.initialize(model, "he_normal", generator=0)
    expected = [
        nn.init.calculate_gain("leaky_relu", 0.1),
        math.sqrt(2),
        init.calculate_gain("mish"),
        init.calculate_gain("hardswish"),
        1.0,
    ]
    assert [row.gain for row in report if row.kind == "Linear"] == pytest.approx(expected)


def test_auto_gain_reads_softplus_celu_and_hardtanh_with_their_parameters():
    # They used to count as no activation: gain 1 for the layer before them.
    model = nn.Sequential(
        nn.Linear(8, 8), nn.Softplus(), nn.Linear(8, 8), nn.Softplus(beta=2.0, threshold=1.0),
        nn.Linear(8, 8), nn.CELU(alpha=0.5), nn.Linear(8, 8), nn.Hardtanh(),
        nn.Linear(8, 8), nn.Hardtanh(-0.5, 2.0), nn.Linear(8, 8), nn.ReLU6(), nn.Linear(8, 2),
    )  # fmt: skip
    report = init.initialize(model, "he_normal", generator=0)
    expected = [
        init.calculate_gain("softplus"),
        init.calculate_gain("softplus", (2.0, 1.0)),
        init.calculate_gain("celu", 0.5),
        init.calculate_gain("hardtanh"),
        init.calculate_gain("hardtanh", (-0.5, 2.0)),
        math.sqrt(2),  # nn.ReLU6 is a Hardtanh, and still reads as ReLU
        1.0,
    ]
    assert [row.gain for row in report] == pytest.approx(expected)
    assert len(set(expected)) == len(expected)  # every parameter made a difference


def test_auto_gain_takes_infinite_bounds_and_leaves_unknown_parameters_at_gain_one():
    # torch's modules take an infinite Softplus threshold or Hardtanh bound; a Softplus with
    # a negative beta has no gain here, and its layer gets 1, as before such modules counted.
    model = nn.Sequential(
        nn.Linear(8, 8), nn.Softplus(threshold=math.inf), nn.Linear(8, 8),
        nn.Hardtanh(0.0, math.inf), nn.Linear(8, 8), nn.Hardtanh(-math.inf, math.inf),
        nn.Linear(8, 8), nn.Softplus(beta=-1.0), nn.Linear(8, 2),
    )  # fmt: skip
    report = init.initialize(model, "he_normal", generator=0)
    expected = [
        init.calculate_gain("softplus", (1.0, 20.0)),  # the jump at 20 carries < 1e-80 mass
        math.sqrt(2),  # Hardtanh(0, inf) is a ReLU
        1.0,  # Hardtanh(-inf, inf) is the identity
        1.0,
        1.0,
    ]
    assert [row.gain for row in report] == pytest.approx(expected, rel=1e-9)


def test_auto_gain_sees_an_activation_module_reused_between_layers():
    # One nn.ReLU instance after each hidden layer: named_modules() lists a shared module
    # once, so the second hidden layer used to get gain 1 instead of sqrt 2.
    act, tanh = nn.ReLU(), nn.Tanh()
    model = nn.Sequential(
        nn.Linear(20, 30), act, nn.Linear(30, 30), act, nn.Linear(30, 30), tanh, nn.Linear(30, 5)
    )
    report = init.initialize(model, "he_normal", generator=0)
    expected = [math.sqrt(2), math.sqrt(2), 5 / 3, 1.0]
    assert [row.gain for row in report] == expected
    replay = torch.Generator().manual_seed(0)  # oracle: torch.nn.init.normal_, same draws
    for layer, gain in zip(model[::2], expected, strict=True):
        std = gain / math.sqrt(layer.in_features)
        assert torch.equal(
            layer.weight, nn.init.normal_(torch.empty_like(layer.weight), 0.0, std, replay)
        )


def test_he_gets_sqrt2_on_relu_layers_and_1_on_the_output_layer():
    model = mlp()
    report = init.initialize(model, "he_normal", generator=0)
    assert [row.gain for row in report] == [math.sqrt(2), math.sqrt(2), 1.0]
    torch.manual_seed(0)  # statistics of a wide version of the same model
    wide = nn.Sequential(nn.Linear(800, 800), nn.ReLU(), nn.Linear(800, 800))
    init.initialize(wide, "he_normal")
    assert wide[0].weight.var().item() == pytest.approx(2 / 800, rel=0.03)
    assert wide[2].weight.var().item() == pytest.approx(1 / 800, rel=0.03)


def test_a_float_gain_applies_to_every_layer_and_a_mapping_to_the_named_ones():
    report = init.initialize(mlp(), "orthogonal", gain=2.0, generator=0)
    assert [row.gain for row in report] == [2.0, 2.0, 2.0]
    report = init.initialize(mlp(), "orthogonal", gain={"2": 3.0}, generator=0)
    assert [row.gain for row in report] == [math.sqrt(2), 3.0, 1.0]


def test_a_gain_fixed_on_the_initializer_wins_and_fixed_scale_schemes_take_none():
    report = init.initialize(mlp(), init.xavier_uniform(gain=1.0), gain=5.0, generator=0)
    assert [row.gain for row in report] == [1.0, 1.0, 1.0]
    report = init.initialize(mlp(), init.lecun_normal(), generator=0)
    assert [row.gain for row in report] == [1.0, 1.0, 1.0]
    report = init.initialize(mlp(), "normal", generator=0)
    assert [row.gain for row in report] == [None, None, None]


def test_the_report_says_what_was_done():
    model = nn.Sequential(nn.Conv2d(3, 16, 5), nn.ReLU(), nn.Flatten(), nn.Linear(16, 4))
    report = init.initialize(model, "he_uniform", generator=0)
    first, last = report
    assert (first.name, first.kind, first.fan_in, first.fan_out) == ("0", "Conv2d", 75, 400)
    assert (last.name, last.kind, last.fan_in, last.fan_out) == ("3", "Linear", 16, 4)
    assert first.scheme == str(init.he_uniform())
    assert first.std == pytest.approx(model[0].weight.std(correction=0).item(), rel=1e-6)
    assert first.output_variance is None


def test_string_names_and_floats_build_the_same_schemes_as_the_factories():
    by_name, by_factory = mlp(), mlp()
    init.initialize(by_name, "lecun_uniform", generator=3)
    init.initialize(by_factory, init.lecun_uniform(), generator=3)
    for a, b in zip(by_name.parameters(), by_factory.parameters(), strict=True):
        assert torch.equal(a, b)
    model = nn.Linear(3, 2)
    init.initialize(model, 0.5, biases=init.constant(-1.0))
    assert torch.equal(model.weight, torch.full((2, 3), 0.5))
    assert torch.equal(model.bias, torch.full((2,), -1.0))


def test_random_biases():
    model = nn.Linear(10, 20_000)
    init.initialize(model, biases=init.normal(std=0.1), generator=0)
    assert model.bias.std().item() == pytest.approx(0.1, rel=0.03)


def test_same_seed_gives_a_bitwise_identical_model_and_leaves_the_global_rng_alone():
    def convnet():
        return nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(128, 10)
        )

    torch.manual_seed(1)
    a = convnet()
    torch.manual_seed(2)  # a different default initialization to start from
    b, c = convnet(), convnet()
    global_state = torch.get_rng_state()
    biases = init.uniform(0.1)
    init.initialize(a, "he_normal", biases=biases, generator=123)
    init.initialize(b, "he_normal", biases=biases, generator=123)
    init.initialize(c, "he_normal", biases=biases, generator=torch.Generator().manual_seed(124))
    assert torch.equal(torch.get_rng_state(), global_state)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a[0].weight, c[0].weight)


def test_an_int_seed_is_a_generator_seeded_with_it():
    a, b = mlp(), mlp()
    init.initialize(a, "xavier_uniform", generator=7)
    init.initialize(b, "xavier_uniform", generator=torch.Generator().manual_seed(7))
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(x, y)


def test_no_generator_draws_from_torchs_global_rng():
    a, b = mlp(), mlp()
    torch.manual_seed(5)
    init.initialize(a, "he_normal")
    torch.manual_seed(5)
    init.initialize(b, "he_normal")
    assert torch.equal(a[0].weight, b[0].weight)


@pytest.mark.parametrize("weights", ["zeros", "ones", 0.1, init.constant(0.0)])
def test_constant_weights_in_hidden_layers_warn_naming_exactly_those_layers(weights):
    model = mlp()
    with pytest.warns(init.SymmetryWarning, match=r"hidden layers '0', '2' constant") as caught:
        init.initialize(model, weights)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "'4'" not in message
    assert "same output" in message
    assert "same gradient update" in message
    assert "weights='he_normal'" in message
    assert caught[0].filename == __file__  # points at the caller


def test_a_constant_output_layer_does_not_warn():
    model = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        init.initialize(model, "he_normal", generator=0)
        init.initialize(model[4], "zeros")  # zero-initializing the last layer is common
        init.initialize(nn.Linear(4, 2), 0.5)
    assert torch.equal(model[4].weight, torch.zeros_like(model[4].weight))


class FunctionalReLUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(10, 10)
        self.out = nn.Linear(10, 2)

    def forward(self, x):
        return self.out(F.relu(self.hidden(x)))


def test_activations_applied_functionally_warn_that_auto_gain_saw_none():
    with pytest.warns(UserWarning, match="found no activation modules") as caught:
        init.initialize(FunctionalReLUNet(), "he_normal")
    assert caught[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = init.initialize(FunctionalReLUNet(), "he_normal", gain={"hidden": 2**0.5})
        init.initialize(FunctionalReLUNet(), init.he_normal(nonlinearity="relu"))
        init.initialize(FunctionalReLUNet(), "normal")
    assert [row.gain for row in report] == [2**0.5, 1.0]


def test_lazy_layers_must_be_materialized_first():
    model = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"layer '0' \(LazyLinear\) is still lazy"):
        init.initialize(model)
    model(torch.randn(3, 5))
    init.initialize(model, generator=0)
    assert model[0].weight.var().item() > 0


def test_a_parametrized_weight_gets_the_scheme_through_its_parametrization():
    # weight_norm computes the weight from two other tensors: filling the computed tensor
    # would change nothing, so the scheme must reach them (and the report say the truth).
    model = nn.Sequential(
        nn.utils.parametrizations.weight_norm(nn.Linear(50, 40)), nn.ReLU(), nn.Linear(40, 5)
    )
    report = init.initialize(model, "orthogonal", generator=0)
    replay = torch.Generator().manual_seed(0)
    expected = nn.init.orthogonal_(torch.empty(40, 50), math.sqrt(2.0), generator=replay)
    with torch.no_grad():
        torch.testing.assert_close(model[0].weight, expected)
        assert report[0].std == pytest.approx(model[0].weight.std(correction=0).item())


@pytest.mark.parametrize(
    "hooked",
    [
        lambda layer: nn.utils.spectral_norm(layer),
        lambda layer: prune.l1_unstructured(layer, "weight", amount=0.5),
    ],
)
def test_a_weight_recomputed_by_a_forward_pre_hook_is_refused(hooked):
    # torch.nn.utils.spectral_norm and prune rebuild .weight from 'weight_orig' before every
    # forward pass: a scheme written into .weight would be silently lost.
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    hooked(model[2])
    with pytest.raises(ValueError, match=r"layer '2' \(Linear\) recomputes its weight"):
        init.initialize(model, generator=0)


class Symmetric(nn.Module):
    """torch's parametrization tutorial's example: it has no right_inverse."""

    def forward(self, X):
        return X.triu() + X.triu(1).transpose(-1, -2)


@pytest.mark.parametrize("weights", ["he_normal", "lsuv"])
def test_a_parametrization_without_right_inverse_is_refused_before_any_write(weights):
    # Nothing can be written through it; finding out at layer '2' would leave layer '0'
    # already overwritten.
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    nn.utils.parametrize.register_parametrization(model[2], "weight", Symmetric())
    before = {key: value.clone() for key, value in model.state_dict().items()}
    data = torch.randn(16, 8) if weights == "lsuv" else None
    with pytest.raises(
        ValueError,
        match=r"layer '2' \(ParametrizedLinear\) has its weight parametrized by Symmetric, "
        r"which does not, instead\. Initialize the model before registering",
    ):
        init.initialize(model, weights, generator=0, data=data)
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


@pytest.mark.parametrize(
    ("parametrized", "label"),
    [
        (nn.utils.parametrizations.spectral_norm, "spectral_norm"),
        (nn.utils.parametrizations.orthogonal, "orthogonal"),
    ],
)
def test_a_scale_fixing_parametrization_warns_that_the_gain_does_not_hold(parametrized, label):
    # spectral_norm divides whatever is written by its largest singular value: a gain of 3
    # ends at 1, and saying nothing would pass that off as the scheme's weight.
    model = nn.Sequential(parametrized(nn.Linear(30, 64)), nn.ReLU(), nn.Linear(64, 5))
    with pytest.warns(UserWarning, match=rf"weights of '0' \({label}\), but the param"):
        init.initialize(model, "orthogonal", gain=3.0, generator=0)
    largest = torch.linalg.matrix_norm(model[0].weight.detach(), ord=2)
    assert largest.item() == pytest.approx(1.0, rel=1e-3)


def test_weight_norm_keeps_the_gain_and_does_not_warn():
    model = nn.Sequential(
        nn.utils.parametrizations.weight_norm(nn.Linear(30, 64)), nn.ReLU(), nn.Linear(64, 5)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        init.initialize(model, "orthogonal", gain=3.0, generator=0)
    largest = torch.linalg.matrix_norm(model[0].weight.detach(), ord=2)
    assert largest.item() == pytest.approx(3.0, rel=1e-4)


ERRORS = [
    (
        lambda: init.initialize(torch.zeros(3)),
        TypeError,
        "The 'model' parameter of initialize must be a torch.nn.Module. Got Tensor instead.",
    ),
    (
        lambda: init.initialize(mlp(), "kaiming"),
        ValueError,
        "The 'weights' parameter of initialize must be an Initializer or a finite float or "
        "one of 'zeros', 'ones', 'normal', 'uniform', 'xavier_normal', 'xavier_uniform', "
        "'he_normal', 'he_uniform', 'lecun_normal', 'lecun_uniform', 'orthogonal', 'lsuv'. "
        "Got 'kaiming' instead.",
    ),
    (
        lambda: init.initialize(mlp(), biases=init.he_normal()),
        ValueError,
        "The 'biases' parameter of initialize must be a finite float or an Initializer that "
        "takes no gain (zeros, ones, constant, normal, uniform). Got "
        + repr(init.he_normal())
        + " instead.",
    ),
    (
        lambda: init.initialize(mlp(), gain="relu"),
        ValueError,
        "The 'gain' parameter of initialize must be one of 'auto' or a finite float > 0 or a mapping "
        "from layer names to finite floats > 0. Got 'relu' instead.",
    ),
    (
        lambda: init.initialize(mlp(), gain={"0": -1.0}),
        ValueError,
        "The 'gain' parameter of initialize must be one of 'auto' or a finite float > 0 or a mapping "
        "from layer names to finite floats > 0. Got {'0': -1.0} instead.",
    ),
    (
        lambda: init.initialize(mlp(), gain={"1": 2.0}),
        ValueError,
        "The 'gain' parameter of initialize must map names of the model's Linear and Conv "
        "layers ('0', '2', '4') to gains. Got unknown names '1' instead.",
    ),
    (
        lambda: init.initialize(mlp(), generator=-1),
        ValueError,
        "The 'generator' parameter of initialize must be a torch.Generator, an int seed in "
        "[0, 2**64 - 1] or None. Got -1 instead.",
    ),
    (
        lambda: init.initialize(mlp(), generator=2**64),  # beyond what torch can seed with
        ValueError,
        "The 'generator' parameter of initialize must be a torch.Generator, an int seed in "
        f"[0, 2**64 - 1] or None. Got {2**64} instead.",
    ),
    (
        lambda: init.initialize(mlp(), "he_normal", data=torch.randn(4, 20)),
        ValueError,
        "The 'data' parameter of initialize must be None unless weights='lsuv' (only LSUV "
        "looks at data). Got a batch with weights='he_normal' instead.",
    ),
]


@pytest.mark.parametrize(("make", "error", "message"), ERRORS)
def test_bad_arguments_raise_the_one_error_format(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


def test_auto_gain_reads_rrelu_as_a_leaky_relu_with_its_rms_slope():
    # It used to count as no activation: gain 1 for the layer before it. In training mode
    # RReLU draws a slope a ~ U(lower, upper) per element; the oracle is torch's own
    # F.rrelu on a large sample: 1 / sqrt(E[f(z)^2]) for z ~ N(0, 1).
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(4_000_000, generator=generator, dtype=torch.float64)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 8), nn.RReLU(), nn.Linear(8, 8), nn.RReLU(0.0, 1.0), nn.Linear(8, 2)
    )
    report = init.initialize(model, "he_normal", generator=0)
    gains = [row.gain for row in report]
    for gain, (lower, upper) in zip(gains, [(1 / 8, 1 / 3), (0.0, 1.0)], strict=False):
        sampled = F.rrelu(z, lower, upper, training=True)
        oracle = 1 / sampled.square().mean().sqrt().item()
        assert gain == pytest.approx(oracle, rel=2e-3)
        rms = math.sqrt((lower**2 + lower * upper + upper**2) / 3)
        assert gain == pytest.approx(nn.init.calculate_gain("leaky_relu", rms), rel=1e-12)
    # The wide range tells the rms slope (gain 1.2247) from the mean slope (1.2649).
    assert gains[1] != pytest.approx(nn.init.calculate_gain("leaky_relu", 0.5), rel=1e-2)
    assert gains[2] == 1.0


class _Exp(nn.Module):
    """weight = exp(original): a parametrization with a right_inverse (log)."""

    def forward(self, original):
        return original.exp()

    def right_inverse(self, weight):
        return weight.log()


@pytest.mark.parametrize(
    "norm", [nn.LayerNorm(6), nn.BatchNorm1d(6), nn.GroupNorm(2, 6), nn.RMSNorm(6)]
)
def test_a_parametrized_normalization_weight_is_set_to_one_through_its_parametrization(norm):
    # Filling the computed weight (a fresh tensor at every access) changed nothing: the
    # report said "weight 1, bias 0" and the weight stayed at its old value.
    nn.utils.parametrize.register_parametrization(norm, "weight", _Exp())
    with torch.no_grad():
        norm.parametrizations.weight.original.fill_(0.7)
    model = nn.Sequential(nn.Linear(4, 6), norm, nn.ReLU(), nn.Linear(6, 2))
    report = init.initialize(model, "he_normal", generator=0)
    torch.testing.assert_close(norm.weight, torch.ones(6), rtol=0, atol=0)
    assert report[1].std == 0.0


def test_a_normalization_weight_without_right_inverse_is_refused_before_any_write():
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 2))

    class Doubled(nn.Module):
        def forward(self, original):
            return 2 * original

    nn.utils.parametrize.register_parametrization(model[1], "weight", Doubled())
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"layer '1' \(ParametrizedLayerNorm\) has its weight parametrized by"
    ):
        init.initialize(model, "he_normal", generator=0)
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_tied_weights_warn_and_the_report_gives_the_std_they_end_with():
    # The decoder shares the encoder's weight, so it is filled twice: the report said the
    # encoder's std was 0.52 (its own draw, gain sqrt 2) when the weight ended at 0.37.
    encoder, decoder = nn.Linear(8, 8), nn.Linear(8, 8)
    decoder.weight = encoder.weight
    model = nn.Sequential(encoder, nn.ReLU(), decoder)
    with pytest.warns(UserWarning, match=r"layers '0', '2' sharing one weight.*gain 1\b"):
        report = init.initialize(model, "he_normal", generator=0)
    std = encoder.weight.detach().double().std(correction=0).item()
    assert [row.std for row in report] == [std, std]
    replay = torch.empty(8, 8)
    generator = torch.Generator().manual_seed(0)
    nn.init.normal_(replay, 0.0, math.sqrt(2 / 8), generator)  # '0' draws first
    nn.init.zeros_(torch.empty(8))
    nn.init.normal_(replay, 0.0, math.sqrt(1 / 8), generator)  # then '2', with gain 1
    assert torch.equal(encoder.weight.detach(), replay)


@pytest.mark.parametrize("scheme", ["xavier_uniform", "he_normal"])
def test_attention_projections_get_the_scheme_block_by_block(scheme):
    # in_proj_weight (the stacked Q, K, V) was left as torch set it: xavier_uniform_ on the
    # whole (3E, E), std sqrt(2 / 4E) = 0.088 where each E -> E block needs 1 / sqrt(E).
    embed_dim = 256
    model = nn.Sequential(nn.MultiheadAttention(embed_dim, num_heads=4))
    with torch.no_grad():
        model[0].in_proj_bias.fill_(1.0)
    report = init.initialize(model, scheme, biases=0.0, generator=0)
    attention = model[0]
    expected = 1 / math.sqrt(embed_dim)  # xavier: sqrt(2 / (E + E)); he (gain 1): sqrt(1 / E)
    for block in attention.in_proj_weight.detach().chunk(3):
        assert float(block.std()) == pytest.approx(expected, rel=0.02)
    assert torch.count_nonzero(attention.in_proj_bias) == 0
    rows = {row.name: row for row in report}
    assert (rows["0"].kind, rows["0"].fan_in, rows["0"].fan_out) == ("MultiheadAttention", 256, 256)
    assert rows["0"].std == pytest.approx(expected, rel=0.02)
    assert rows["0.out_proj"].std == pytest.approx(expected, rel=0.02)
    again = nn.Sequential(nn.MultiheadAttention(embed_dim, num_heads=4))
    init.initialize(again, scheme, generator=0)
    assert torch.equal(again[0].in_proj_weight, attention.in_proj_weight)


def test_separate_key_and_value_projections_get_their_own_fans():
    attention = nn.MultiheadAttention(128, num_heads=4, kdim=512, vdim=32)
    init.initialize(attention, "xavier_normal", generator=0)
    for weight, fan_in in (
        (attention.q_proj_weight, 128),
        (attention.k_proj_weight, 512),
        (attention.v_proj_weight, 32),
    ):
        expected = math.sqrt(2 / (fan_in + 128))
        assert float(weight.detach().std()) == pytest.approx(expected, rel=0.05), fan_in


def test_a_constant_bias_beyond_the_biases_dtype_is_refused_before_any_write() -> None:
    # QA: init.biases: 8e307 overflowed a float32 bias inside torch's fill_ (a bare
    # RuntimeError through `gradwise train`), after the layers before it were set.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with pytest.raises(
        ValueError,
        match=r"^The 'biases' parameter of initialize must be a value the model's biases can "
        r"hold\. Got 8e\+307 instead, beyond the largest torch\.float32 \(3\.403e\+38\) of "
        r"'0\.bias'\.$",
    ):
        init.initialize(model, "he_normal", biases=8e307)
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name]), name
    wide = model.double()
    init.initialize(wide, "he_normal", biases=8e307)  # a float64 bias holds it
    assert float(wide[0].bias.detach()[0]) == 8e307
