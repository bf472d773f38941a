"""Each initializer against torch.nn.init (bit for bit) and against its closed-form statistics."""

import decimal
import math

import pytest
import scipy.integrate
import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn

from gradwise import init

SHAPES = [(64, 32), (16, 8, 3, 3), (8, 4, 5)]


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def fill_both(shape, ours, theirs):
    """Fill one tensor with gradwise's initializer and one with torch's, from the same seed."""
    a = torch.randn(shape)
    b = a.clone()
    ours(a, seeded())
    theirs(b, seeded())
    return a, b


# (gradwise fill, torch.nn.init fill), both (tensor, generator) -> None.
TORCH_EQUIVALENTS = {
    "zeros": (lambda t, g: init.zeros()(t, generator=g), lambda t, g: nn.init.zeros_(t)),
    "ones": (lambda t, g: init.ones()(t, generator=g), lambda t, g: nn.init.ones_(t)),
    "constant": (
        lambda t, g: init.constant(-0.3)(t, generator=g),
        lambda t, g: nn.init.constant_(t, -0.3),
    ),
    "normal": (
        lambda t, g: init.normal(std=0.02, mean=0.5)(t, generator=g),
        lambda t, g: nn.init.normal_(t, 0.5, 0.02, generator=g),
    ),
    "uniform": (
        lambda t, g: init.uniform(scale=0.07)(t, generator=g),
        lambda t, g: nn.init.uniform_(t, -0.07, 0.07, generator=g),
    ),
    "xavier_normal": (
        lambda t, g: init.xavier_normal(gain=5 / 3)(t, generator=g),
        lambda t, g: nn.init.xavier_normal_(t, gain=5 / 3, generator=g),
    ),
    "xavier_normal, gain from the call": (
        lambda t, g: init.xavier_normal()(t, gain=2.5, generator=g),
        lambda t, g: nn.init.xavier_normal_(t, gain=2.5, generator=g),
    ),
    "xavier_uniform": (
        lambda t, g: init.xavier_uniform()(t, generator=g),
        lambda t, g: nn.init.xavier_uniform_(t, generator=g),
    ),
    "he_normal": (
        lambda t, g: init.he_normal()(t, generator=g),
        lambda t, g: nn.init.kaiming_normal_(t, nonlinearity="relu", generator=g),
    ),
    "he_normal fan_out": (
        lambda t, g: init.he_normal(mode="fan_out", nonlinearity="relu")(t, generator=g),
        lambda t, g: nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu", generator=g),
    ),
    "he_normal leaky_relu": (
        lambda t, g: init.he_normal(nonlinearity="leaky_relu", negative_slope=0.2)(t, generator=g),
        lambda t, g: nn.init.kaiming_normal_(t, a=0.2, nonlinearity="leaky_relu", generator=g),
    ),
    "he_normal tanh": (
        lambda t, g: init.he_normal(nonlinearity="tanh")(t, generator=g),
        lambda t, g: nn.init.kaiming_normal_(t, nonlinearity="tanh", generator=g),
    ),
    "he_uniform": (
        lambda t, g: init.he_uniform()(t, generator=g),
        lambda t, g: nn.init.kaiming_uniform_(t, nonlinearity="relu", generator=g),
    ),
    "he_uniform fan_out leaky_relu": (
        lambda t, g: init.he_uniform("fan_out", "leaky_relu", 0.1)(t, generator=g),
        lambda t, g: nn.init.kaiming_uniform_(
            t, a=0.1, mode="fan_out", nonlinearity="leaky_relu", generator=g
        ),
    ),
    "lecun_normal": (
        lambda t, g: init.lecun_normal()(t, gain=3.0, generator=g),  # LeCun ignores the offer
        lambda t, g: nn.init.kaiming_normal_(t, nonlinearity="linear", generator=g),
    ),
    "lecun_uniform": (
        lambda t, g: init.lecun_uniform()(t, generator=g),
        lambda t, g: nn.init.kaiming_uniform_(t, nonlinearity="linear", generator=g),
    ),
    "orthogonal": (
        lambda t, g: init.orthogonal(gain=1.5)(t, generator=g),
        lambda t, g: nn.init.orthogonal_(t, gain=1.5, generator=g),
    ),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(TORCH_EQUIVALENTS))
def test_bit_for_bit_equal_to_torch_nn_init_under_the_same_generator(name, shape):
    ours, theirs = TORCH_EQUIVALENTS[name]
    a, b = fill_both(shape, ours, theirs)
    assert torch.equal(a, b)


def test_the_generator_is_what_makes_the_draw():
    a, b = fill_both((64, 32), TORCH_EQUIVALENTS["he_normal"][0], TORCH_EQUIVALENTS["he_normal"][0])
    c = init.he_normal()(torch.empty(64, 32), generator=seeded(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# Large layers: (out, in) = (1000, 500) so fan_in and fan_out differ, and a conv kernel.
LINEAR = (1000, 500)
CONV = (128, 64, 3, 3)
FANS = {LINEAR: (500, 1000), CONV: (64 * 9, 128 * 9)}


def expected_variance(name, fan_in, fan_out):
    """The variance each scheme targets, written out from the papers' formulas."""
    return {
        "xavier_normal": 2.0 / (fan_in + fan_out),
        "xavier_uniform": 2.0 / (fan_in + fan_out),
        "xavier_normal gain 5/3": (5 / 3) ** 2 * 2.0 / (fan_in + fan_out),
        "he_normal": 2.0 / fan_in,
        "he_uniform": 2.0 / fan_in,
        "he_normal fan_out": 2.0 / fan_out,
        "he_normal offered gain 3": 9.0 / fan_in,
        "he_normal leaky 0.5": 2.0 / (1 + 0.25) / fan_in,
        "lecun_normal": 1.0 / fan_in,
        "lecun_uniform": 1.0 / fan_in,
        "normal 0.01": 1e-4,
        "uniform 0.05": 0.05**2 / 3,
    }[name]


STATISTICS = {
    "xavier_normal": lambda t: init.xavier_normal()(t),
    "xavier_uniform": lambda t: init.xavier_uniform()(t),
    "xavier_normal gain 5/3": lambda t: init.xavier_normal(gain=5 / 3)(t, gain=1.0),
    "he_normal": lambda t: init.he_normal()(t),
    "he_uniform": lambda t: init.he_uniform()(t),
    "he_normal fan_out": lambda t: init.he_normal(mode="fan_out")(t),
    "he_normal offered gain 3": lambda t: init.he_normal()(t, gain=3.0),
    "he_normal leaky 0.5": lambda t: init.he_normal(nonlinearity="leaky_relu", negative_slope=0.5)(
        t, gain=7.0
    ),
    "lecun_normal": lambda t: init.lecun_normal()(t),
    "lecun_uniform": lambda t: init.lecun_uniform()(t),
    "normal 0.01": lambda t: init.normal(0.01)(t, gain=2.0),  # fixed scale: gain ignored
    "uniform 0.05": lambda t: init.uniform(0.05)(t),
}


@pytest.mark.parametrize("shape", [LINEAR, CONV])
@pytest.mark.parametrize("name", list(STATISTICS))
def test_sample_variance_matches_gain_squared_over_fan(name, shape):
    torch.manual_seed(0)
    weight = STATISTICS[name](torch.empty(shape, dtype=torch.float64))
    variance = expected_variance(name, *FANS[shape])
    # 5e5 (linear) or 7e4 (conv) draws: the sample variance's relative error is <= 0.6%.
    assert weight.var().item() == pytest.approx(variance, rel=0.03)
    assert abs(weight.mean().item()) < 5 * math.sqrt(variance / weight.numel())


@pytest.mark.parametrize("name", ["xavier_uniform", "he_uniform", "lecun_uniform", "uniform 0.05"])
def test_uniform_schemes_fill_the_interval_of_half_width_sqrt3_std(name):
    torch.manual_seed(0)
    weight = STATISTICS[name](torch.empty(LINEAR, dtype=torch.float64))
    bound = math.sqrt(3 * expected_variance(name, *FANS[LINEAR]))
    assert weight.abs().max().item() <= bound
    assert weight.abs().max().item() > 0.999 * bound
    # Kolmogorov-Smirnov against U[-bound, bound], not just the first two moments.
    sample = weight.flatten()[:20_000].numpy()
    assert scipy.stats.kstest(sample, scipy.stats.uniform(-bound, 2 * bound).cdf).pvalue > 1e-3


def test_normal_schemes_are_gaussian():
    torch.manual_seed(0)
    weight = init.he_normal()(torch.empty(LINEAR, dtype=torch.float64))
    std = math.sqrt(2 / 500)
    sample = weight.flatten()[:20_000].numpy()
    # A frozen distribution: the scipy of a lent GPU machine passed the name "norm" and its
    # args straight to ndtr, which takes no scale (TypeError).
    assert scipy.stats.kstest(sample, scipy.stats.norm(0.0, std).cdf).pvalue > 1e-3


@pytest.mark.parametrize(
    ("shape", "gain"), [((50, 100), 1.0), ((100, 50), 1.0), ((32, 16, 3, 3), 2.0), ((7, 7), 0.5)]
)
def test_orthogonal_rows_or_columns_are_orthonormal_times_the_gain(shape, gain):
    weight = init.orthogonal()(torch.empty(shape, dtype=torch.float64), gain=gain)
    matrix = weight.reshape(shape[0], -1)
    gram = matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix
    torch.testing.assert_close(gram, gain**2 * torch.eye(gram.shape[0], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_orthogonal_fills_half_precision_tensors(dtype):
    # torch's QR has no half-precision kernel; the matrix is drawn in float32 and rounded.
    weight = init.orthogonal()(torch.empty(48, 64, dtype=dtype), gain=2.0, generator=seeded(0))
    assert weight.dtype == dtype
    reference = nn.init.orthogonal_(torch.empty(48, 64), 2.0, generator=seeded(0))
    assert torch.equal(weight, reference.to(dtype))
    gram = weight.double() @ weight.double().T
    torch.testing.assert_close(gram, 4 * torch.eye(48, dtype=torch.float64), atol=0.05, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_orthogonal_fills_channels_last_and_other_non_contiguous_weights(dtype):
    # torch.nn.init.orthogonal_ writes through tensor.view_as(matrix), which a channels_last
    # conv weight (model.to(memory_format=torch.channels_last)) or a permuted view cannot
    # give: it raised "view size is not compatible". The matrix is drawn into a contiguous
    # tensor of the same shape, so the numbers are torch's on a contiguous weight.
    conv = nn.Conv2d(8, 16, 3).to(dtype=dtype, memory_format=torch.channels_last)
    permuted = torch.empty(3, 3, 16, 8, dtype=dtype).permute(2, 3, 0, 1)
    for weight in (conv.weight, permuted):
        assert not weight.is_contiguous()
        init.orthogonal()(weight, gain=2.0, generator=seeded(0))
        reference = nn.init.orthogonal_(torch.empty(16, 8, 3, 3), 2.0, generator=seeded(0))
        assert torch.equal(weight.detach(), reference.to(dtype))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)  # layout kept


@pytest.mark.parametrize(
    ("module", "fans"),
    [
        (nn.Linear(7, 5), (7, 5)),
        (nn.Conv1d(4, 6, 5), (4 * 5, 6 * 5)),
        (nn.Conv2d(3, 8, (3, 5)), (3 * 15, 8 * 15)),
        (nn.Conv2d(8, 16, 3, groups=4), (2 * 9, 16 * 9)),
        (nn.Conv3d(2, 4, 3), (2 * 27, 4 * 27)),
        # ConvTranspose stores (in, out / groups, ...): torch's "fan_in" counts out channels.
        (nn.ConvTranspose2d(3, 8, 3), (8 * 9, 3 * 9)),
    ],
)
def test_fans_as_torch_nn_init_counts_them(module, fans):
    assert init.fan_in_and_fan_out(module.weight) == fans
    assert init.fan_in_and_fan_out(module.weight) == nn.init._calculate_fan_in_and_fan_out(
        module.weight
    )


@pytest.mark.parametrize(
    ("nonlinearity", "param"),
    [
        ("linear", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0.2),
        ("selu", None),
    ],
)
def test_calculate_gain_equals_torch_where_torch_has_the_nonlinearity(nonlinearity, param):
    assert init.calculate_gain(nonlinearity, param) == nn.init.calculate_gain(nonlinearity, param)


def second_moment_gain(function):
    """1 / sqrt(E[f(z)^2]) for z ~ N(0, 1), by adaptive quadrature (independent of the code)."""
    moment, _ = scipy.integrate.quad(
        lambda z: function(z) ** 2 * scipy.stats.norm.pdf(z), -math.inf, math.inf, epsabs=1e-13
    )
    return 1 / math.sqrt(moment)


def test_the_second_moment_rule_reproduces_torchs_relu_and_leaky_relu_gains():
    # The rule gradwise uses for GELU/SiLU/ELU gives torch's values where torch has them.
    assert second_moment_gain(lambda z: max(z, 0.0)) == pytest.approx(math.sqrt(2), rel=1e-9)
    assert second_moment_gain(lambda z: z if z > 0 else 0.2 * z) == pytest.approx(
        nn.init.calculate_gain("leaky_relu", 0.2), rel=1e-9
    )


def scalar(function, **kwargs):
    return lambda z: function(torch.tensor(z, dtype=torch.float64), **kwargs).item()


@pytest.mark.parametrize(
    ("nonlinearity", "param", "function"),
    [
        ("gelu", None, scalar(F.gelu)),
        ("silu", None, scalar(F.silu)),
        ("elu", None, scalar(F.elu)),
        ("elu", 0.5, scalar(F.elu, alpha=0.5)),
        ("mish", None, scalar(F.mish)),
        ("hardswish", None, scalar(F.hardswish)),
        ("celu", None, scalar(F.celu)),
        ("celu", 0.5, scalar(F.celu, alpha=0.5)),
        ("softplus", None, scalar(F.softplus)),
        ("softplus", 2.0, scalar(F.softplus, beta=2.0)),
        ("softplus", (2.0, 1.0), scalar(F.softplus, beta=2.0, threshold=1.0)),  # a jump at 0.5
        ("hardtanh", None, scalar(F.hardtanh)),
        ("hardtanh", (-0.5, 2.0), scalar(F.hardtanh, min_val=-0.5, max_val=2.0)),
        ("hardtanh", (0.5, 3.0), scalar(F.hardtanh, min_val=0.5, max_val=3.0)),
    ],
)
def test_second_moment_gains_keep_unit_pre_activation_variance(nonlinearity, param, function):
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(
        second_moment_gain(function), rel=1e-8
    )


def elu_tail_gain():
    """alpha * gain of ELU as alpha grows: 1 / sqrt(E[(e^z - 1)^2; z < 0])."""
    moment, _ = scipy.integrate.quad(
        lambda z: math.expm1(z) ** 2 * scipy.stats.norm.pdf(z), -math.inf, 0, epsabs=1e-14
    )
    return 1 / math.sqrt(moment)


@pytest.mark.parametrize(
    ("nonlinearity", "param", "scaled_gain", "limit"),
    [
        ("leaky_relu", 1e200, lambda g: g * 1e200, math.sqrt(2)),
        ("leaky_relu", -1e300, lambda g: g * 1e300, math.sqrt(2)),
        ("leaky_relu", 1e-200, lambda g: g, math.sqrt(2)),
        ("elu", 1e200, lambda g: g * 1e200, elu_tail_gain()),
        ("elu", 1e300, lambda g: g * 1e300, elu_tail_gain()),
        ("elu", 1e-200, lambda g: g, math.sqrt(2)),  # ELU tends to ReLU
        ("celu", 1e200, lambda g: g, 1.0),  # CELU tends to the identity
        ("celu", 1e-200, lambda g: g, math.sqrt(2)),  # and to ReLU
        ("softplus", 1e200, lambda g: g, math.sqrt(2)),  # Softplus tends to ReLU
        ("softplus", 1e-200, lambda g: g / 1e-200, 1 / math.log(2)),  # and to log(2) / beta
        ("hardtanh", (-1e200, 1e200), lambda g: g, 1.0),  # the identity
        ("hardtanh", (1e200, 2e200), lambda g: g * 1e200, 1.0),  # the constant 1e200
        ("hardtanh", (-1e-200, 1e-200), lambda g: g / 1e200, 1.0),  # 1e-200 sign(z)
    ],
)
def test_gains_for_extreme_parameters_are_their_limits_not_overflow(
    nonlinearity, param, scaled_gain, limit
):
    # The squared parameter used to overflow: calculate_gain("elu", 1e200) returned 0 and
    # calculate_gain("leaky_relu", 1e200) raised OverflowError.
    gain = init.calculate_gain(nonlinearity, param)
    assert 0 < gain < math.inf
    assert scaled_gain(gain) == pytest.approx(limit, rel=1e-8)


def test_the_leaky_relu_gain_is_exact_beyond_the_range_of_the_squared_slope():
    for slope in (1e100, 1e154, 1e155, 1e200, 1.7e308):
        with decimal.localcontext(prec=40):
            exact = (2 / (1 + decimal.Decimal(slope) ** 2)).sqrt()
        assert init.calculate_gain("leaky_relu", slope) == pytest.approx(float(exact), rel=1e-15)


def test_gain_fixed_at_construction_wins_over_the_offered_one():
    assert init.xavier_normal(gain=2.0).resolve_gain(3.0) == 2.0
    assert init.xavier_normal().resolve_gain(3.0) == 3.0
    assert init.xavier_normal().resolve_gain(None) == 1.0
    assert init.he_normal().resolve_gain(None) == math.sqrt(2)
    assert init.he_normal(nonlinearity="tanh").resolve_gain(3.0) == 5 / 3
    assert init.lecun_normal().resolve_gain(3.0) == 1.0
    assert init.normal().resolve_gain(3.0) is None


def test_initializers_fill_in_place_without_recording_gradients():
    weight = nn.Parameter(torch.empty(4, 3))
    out = init.he_normal()(weight)
    assert out is weight
    assert out.grad_fn is None
    assert weight.requires_grad


def test_zero_element_tensors_are_left_alone():
    assert init.he_normal()(torch.empty(0, 3)).shape == (0, 3)


def test_str_is_the_call_that_rebuilds_it():
    scheme = init.he_uniform(mode="fan_out", nonlinearity="leaky_relu", negative_slope=0.1)
    assert (
        str(scheme) == "he_uniform(mode='fan_out', nonlinearity='leaky_relu', negative_slope=0.1)"
    )
    assert eval(str(scheme), vars(init)) == scheme  # noqa: S307 -- our own string
    assert str(init.normal(0.02)) == "normal(std=0.02, mean=0.0)"


ERRORS = [
    (
        lambda: init.he_normal(mode="fan_avg"),
        ValueError,
        "The 'mode' parameter of he_normal must be one of 'fan_in', 'fan_out'. "
        "Got 'fan_avg' instead.",
    ),
    (
        lambda: init.he_uniform(nonlinearity="swish"),
        ValueError,
        "The 'nonlinearity' parameter of he_uniform must be one of 'linear', 'identity', "
        "'sigmoid', 'tanh', 'relu', 'leaky_relu', 'selu', 'gelu', 'silu', 'elu', 'mish', "
        "'hardswish', 'celu', 'softplus', 'hardtanh', None. "
        "Got 'swish' instead.",
    ),
    (
        lambda: init.he_normal(nonlinearity="relu", negative_slope=0.2),
        ValueError,
        "The 'negative_slope' parameter of he_normal must be 0 unless "
        "nonlinearity='leaky_relu'. Got 0.2 instead.",
    ),
    (
        lambda: init.normal(std=0.0),
        ValueError,
        "The 'std' parameter of normal must be a finite float > 0. Got 0.0 instead.",
    ),
    (
        lambda: init.uniform(scale=-1),
        ValueError,
        "The 'scale' parameter of uniform must be a finite float > 0. Got -1 instead.",
    ),
    (
        lambda: init.constant(float("nan")),
        ValueError,
        "The 'value' parameter of constant must be a finite float. Got nan instead.",
    ),
    (
        lambda: init.xavier_normal(gain=-1.0),
        ValueError,
        "The 'gain' parameter of xavier_normal must be one of None or a finite float > 0. "
        "Got -1.0 instead.",
    ),
    (
        lambda: init.orthogonal()(torch.empty(5)),
        ValueError,
        "The 'tensor' parameter of orthogonal must be a tensor with at least 2 dimensions "
        "(fan-in and fan-out are defined for weight matrices and convolution kernels). "
        "Got a tensor of shape (5,) instead.",
    ),
    (
        lambda: init.xavier_uniform()([[0.0, 1.0]]),
        TypeError,
        "The 'tensor' parameter of xavier_uniform must be a torch.Tensor. Got list instead.",
    ),
    (
        lambda: init.normal()(torch.zeros(3, dtype=torch.int64)),
        ValueError,
        "The 'tensor' parameter of normal must be a floating-point tensor. "
        "Got a tensor of dtype torch.int64 instead.",
    ),
    (
        lambda: init.he_normal()(torch.empty(3, 3), gain=0.0),
        ValueError,
        "The 'gain' parameter of he_normal must be one of None or a finite float > 0. Got 0.0 instead.",
    ),
    (
        lambda: init.he_normal()(torch.empty(3, 3), generator=0),
        TypeError,
        "The 'generator' parameter of he_normal must be a torch.Generator or None. "
        "Got int instead.",
    ),
    (
        lambda: init.calculate_gain("softmax"),
        ValueError,
        "The 'nonlinearity' parameter of calculate_gain must be one of 'linear', 'identity', "
        "'sigmoid', 'tanh', 'relu', 'leaky_relu', 'selu', 'gelu', 'silu', 'elu', 'mish', "
        "'hardswish', 'celu', 'softplus', 'hardtanh'. "
        "Got 'softmax' instead.",
    ),
    (
        lambda: init.calculate_gain("relu", 0.1),
        ValueError,
        "The 'param' parameter of calculate_gain must be None (only 'leaky_relu', 'elu', "
        "'celu', 'softplus' and 'hardtanh' take one). Got 0.1 instead.",
    ),
    (
        lambda: init.calculate_gain("elu", 0.0),
        ValueError,
        "The 'param' parameter of calculate_gain must be a finite float > 0. Got 0.0 instead.",
    ),
    (
        lambda: init.calculate_gain("celu", -1.0),
        ValueError,
        "The 'param' parameter of calculate_gain must be a finite float > 0. Got -1.0 instead.",
    ),
    (
        lambda: init.calculate_gain("softplus", (0.0, 20.0)),
        ValueError,
        "The 'param' parameter of calculate_gain must be a finite float > 0 (beta) or a pair "
        "(beta, threshold) with beta a finite float > 0 and threshold a float (infinite "
        "allowed). Got (0.0, 20.0) instead.",
    ),
    (
        lambda: init.calculate_gain("hardtanh", 1.0),
        ValueError,
        "The 'param' parameter of calculate_gain must be a pair (min_val, max_val) of floats "
        "(infinite allowed) with min_val < max_val. Got 1.0 instead.",
    ),
    (
        lambda: init.calculate_gain("hardtanh", (1.0, -1.0)),
        ValueError,
        "The 'param' parameter of calculate_gain must be a pair (min_val, max_val) of floats "
        "(infinite allowed) with min_val < max_val. Got (1.0, -1.0) instead.",
    ),
    (
        lambda: init.calculate_gain("hardtanh", (-1e-310, 1e-310)),
        ValueError,
        "The 'param' parameter of calculate_gain must be a value whose gain is within "
        "float64's range. Got (-1e-310, 1e-310) instead, its gain 1 / sqrt(E[f(z)^2]) "
        "overflows.",
    ),
    (
        lambda: init.calculate_gain("softplus", 1e-310),
        ValueError,
        "The 'param' parameter of calculate_gain must be a value whose gain is within "
        "float64's range. Got 1e-310 instead, its gain 1 / sqrt(E[f(z)^2]) underflows.",
    ),
    (
        lambda: init.fan_in_and_fan_out(torch.empty(3)),
        ValueError,
        "The 'tensor' parameter of fan_in_and_fan_out must be a tensor with at least 2 "
        "dimensions (fan-in and fan-out are defined for weight matrices and convolution "
        "kernels). Got a tensor of shape (3,) instead.",
    ),
]


@pytest.mark.parametrize(("make", "error", "message"), ERRORS)
def test_bad_arguments_raise_the_one_error_format(make, error, message):
    with pytest.raises(error) as caught:
        make()
    assert str(caught.value) == message
