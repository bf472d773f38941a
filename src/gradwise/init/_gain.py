"""Fans of a weight tensor and the gain of a nonlinearity, as torch.nn.init defines them."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradwise._validation import (
    POSITIVE,
    Constraint,
    Interval,
    OneOf,
    Satisfies,
    check,
    invalid_value_error,
)

# torch.nn.init.calculate_gain's table. torch leaves GELU, SiLU, ELU, Mish, Hardswish, CELU,
# Softplus and Hardtanh out; their gains come from the rule that reproduces torch's relu and
# leaky_relu values (see below).
_TORCH_GAINS = ("linear", "identity", "sigmoid", "tanh", "relu", "leaky_relu", "selu")
# Each as (z, params) -> [(g_1(z), s_1), (g_2(z), s_2), ...]: f = s_1 g_1 + s_2 g_2 + ...
# with each g_k zero where the others are not, so E[f^2] = sum of s_k^2 E[g_k^2]. Taking the
# scales s_k out (ELU's alpha, Softplus's 1 / beta, Hardtanh's bounds) keeps every g_k^2
# inside float64's range whatever the parameter; an ELU alpha of 1e200 squared is not.
_Terms = list[tuple[Tensor, float]]
_SECOND_MOMENT_GAINS: dict[str, Callable[[Tensor, tuple[float, ...]], _Terms]] = {
    "gelu": lambda z, params: [(F.gelu(z), 1.0)],
    "silu": lambda z, params: [(F.silu(z), 1.0)],
    "elu": lambda z, params: [(z.clamp(min=0.0), 1.0), (torch.expm1(z.clamp(max=0.0)), params[0])],
    "mish": lambda z, params: [(F.mish(z), 1.0)],
    "hardswish": lambda z, params: [(F.hardswish(z), 1.0)],
    "celu": lambda z, params: [(F.celu(z, alpha=params[0]), 1.0)],  # |f(z)| <= |z|
    "softplus": lambda z, params: _softplus_terms(z, *params),
    "hardtanh": lambda z, params: _hardtanh_terms(z, *params),
}
NONLINEARITIES = _TORCH_GAINS + tuple(_SECOND_MOMENT_GAINS)

_NO_PARAM = Satisfies(
    lambda value: value is None,
    "None (only 'leaky_relu', 'elu', 'celu', 'softplus' and 'hardtanh' take one)",
)
_FLOAT = Interval(kind="float")  # finite
# Any float but NaN: torch's modules take an infinite Softplus threshold (never linear) or
# Hardtanh bound (a one-sided clamp), and their gains are finite.
_FLOAT_OR_INFINITE = Interval(low=-math.inf)
_SOFTPLUS_PARAM = Satisfies(
    lambda value: (
        POSITIVE.is_satisfied_by(value)
        or (
            _is_pair(value)
            and POSITIVE.is_satisfied_by(value[0])
            and _FLOAT_OR_INFINITE.is_satisfied_by(value[1])
        )
    ),
    "a finite float > 0 (beta) or a pair (beta, threshold) with beta a finite float > 0 and "
    "threshold a float (infinite allowed)",
)
_HARDTANH_PARAM = Satisfies(
    lambda value: (
        _is_pair(value)
        and all(_FLOAT_OR_INFINITE.is_satisfied_by(bound) for bound in value)
        and float(value[0]) < float(value[1])
    ),
    "a pair (min_val, max_val) of floats (infinite allowed) with min_val < max_val",
)

# The nonlinearities that take a ``param``: its default (the nn module's) and the constraints
# it must meet, in order.
_PARAMETERS: dict[str, tuple[float | tuple[float, float], tuple[Constraint, ...]]] = {
    "leaky_relu": (0.01, (_FLOAT,)),  # nn.LeakyReLU's negative_slope
    "elu": (1.0, (_FLOAT, POSITIVE)),  # nn.ELU's alpha
    "celu": (1.0, (_FLOAT, POSITIVE)),  # nn.CELU's alpha
    "softplus": ((1.0, 20.0), (_SOFTPLUS_PARAM,)),  # nn.Softplus's beta and threshold
    "hardtanh": ((-1.0, 1.0), (_HARDTANH_PARAM,)),  # nn.Hardtanh's min_val and max_val
}


def fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    r"""The fan-in and fan-out of a weight tensor, exactly as ``torch.nn.init`` counts them.

    For a tensor of shape ``(d0, d1, k1, ..., kn)``, with receptive field
    :math:`r = \prod_i k_i` (1 for a matrix): :math:`\text{fan\_in} = d_1 r` and
    :math:`\text{fan\_out} = d_0 r`. So ``nn.Linear(in, out)`` has fans ``(in, out)`` and
    ``nn.Conv2d(c_in, c_out, k, groups=g)`` has ``(c_in / g * k * k, c_out * k * k)``. For
    ``nn.ConvTranspose*`` the weight is stored ``(c_in, c_out / g, ...)``, so torch's
    "fan_in" counts output channels; gradwise keeps torch's numbers.

    Args:
        tensor: a tensor with at least 2 dimensions.

    Example:
        >>> fan_in_and_fan_out(torch.empty(64, 3, 5, 5))
        (75, 1600)
    """
    check_matrix_like(tensor, "fan_in_and_fan_out")
    receptive_field = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive_field, tensor.shape[0] * receptive_field


def calculate_gain(nonlinearity: str, param: float | tuple[float, float] | None = None) -> float:
    r"""The recommended gain for weights followed by ``nonlinearity``.

    Same values as ``torch.nn.init.calculate_gain`` where torch has one: 1 for
    ``"linear"``, ``"identity"`` and ``"sigmoid"``; :math:`5/3` for ``"tanh"``;
    :math:`\sqrt 2` for ``"relu"``; :math:`\sqrt{2 / (1 + a^2)}` for ``"leaky_relu"`` with
    negative slope :math:`a` (``param``, default 0.01 as in ``nn.LeakyReLU``); :math:`3/4`
    for ``"selu"`` (torch's empirical value; self-normalizing networks want
    :func:`lecun_normal` instead).

    torch has no gain for ``"gelu"``, ``"silu"``, ``"elu"`` (``param`` is ELU's alpha,
    default 1), ``"mish"``, ``"hardswish"``, ``"celu"`` (``param`` is CELU's alpha, default
    1), ``"softplus"`` (``param`` is beta, or the pair ``(beta, threshold)``, default
    ``(1, 20)``) and ``"hardtanh"`` (``param`` is the pair ``(min_val, max_val)``, default
    ``(-1, 1)``). For them gradwise uses the rule behind the ReLU and leaky-ReLU values,
    :math:`g = 1 / \sqrt{\mathbb E[f(z)^2]}` with :math:`z \sim \mathcal N(0, 1)`: the gain
    for which unit pre-activation variance is a fixed point from layer to layer. It gives
    GELU 1.534, SiLU 1.677, ELU and CELU 1.245, Mish 1.487, Hardswish 1.737, Softplus 1.042,
    Hardtanh 1.392 (and exactly :math:`\sqrt 2` for ReLU and 1 for SELU). These activations
    are not positively homogeneous, so no constant gain holds the variance at every scale;
    see ``docs/init.md``.

    A parameter far outside the usual range gets its gain without overflow
    (``"leaky_relu"`` with slope 1e200 gives :math:`\sqrt 2 \cdot 10^{-200}`); only a gain
    beyond float64's range is refused: Hardtanh bounds, or a Softplus beta, below about
    1e-308 in size.

    Args:
        nonlinearity: one of ``"linear"``, ``"identity"``, ``"sigmoid"``, ``"tanh"``,
            ``"relu"``, ``"leaky_relu"``, ``"selu"``, ``"gelu"``, ``"silu"``, ``"elu"``,
            ``"mish"``, ``"hardswish"``, ``"celu"``, ``"softplus"``, ``"hardtanh"``.
        param: the negative slope of ``"leaky_relu"``, the alpha of ``"elu"`` and
            ``"celu"``, the beta or ``(beta, threshold)`` of ``"softplus"``, the
            ``(min_val, max_val)`` of ``"hardtanh"``; ``None`` for their defaults, and must
            be ``None`` for the others.

    Example:
        >>> round(calculate_gain("leaky_relu", 0.2), 4)
        1.3868

    Reference:
        He et al., "Delving Deep into Rectifiers", ICCV 2015 (the ReLU gain).
    """
    check("nonlinearity", "calculate_gain", nonlinearity, OneOf(NONLINEARITIES))
    if nonlinearity not in _PARAMETERS:
        check("param", "calculate_gain", param, _NO_PARAM)
        return _table_gain(nonlinearity)
    default, constraints = _PARAMETERS[nonlinearity]
    value = default if param is None else param
    for constraint in constraints:
        check("param", "calculate_gain", value, constraint)
    params = (
        tuple(float(number) for number in value)
        if isinstance(value, tuple | list)
        else (float(value),)
    )
    if nonlinearity == "leaky_relu":
        return _leaky_relu_gain(params[0])
    if nonlinearity == "softplus" and len(params) == 1:
        params = (params[0], 20.0)  # nn.Softplus's threshold
    gain = _second_moment_gain(nonlinearity, params)
    if not 0.0 < gain < math.inf:  # Hardtanh bounds or a Softplus beta below 1e-308
        error = invalid_value_error(
            "param", "calculate_gain", "a value whose gain is within float64's range", value
        )
        raise ValueError(
            f"{str(error).removesuffix('.')}, its gain 1 / sqrt(E[f(z)^2]) "
            f"{'overflows' if gain else 'underflows'}."
        )
    return gain


def activation_gain(module: nn.Module) -> float | None:
    """The gain of an activation module, or ``None`` when ``module`` is not an activation
    or :func:`calculate_gain` has no gain for its parameters (a Softplus with beta <= 0, an
    ELU with alpha <= 0: as for an unknown activation, the layer before gets gain 1)."""
    try:
        return _module_gain(module)
    except ValueError:
        return None


def _module_gain(module: nn.Module) -> float | None:
    if isinstance(module, nn.LeakyReLU):
        return calculate_gain("leaky_relu", module.negative_slope)
    if isinstance(module, nn.PReLU):  # a learned slope: its value now (0.25 at creation)
        return calculate_gain("leaky_relu", float(module.weight.detach().float().mean()))
    if isinstance(module, nn.RReLU):
        return calculate_gain("leaky_relu", _rrelu_rms_slope(module.lower, module.upper))
    if isinstance(module, nn.ELU):
        return calculate_gain("elu", module.alpha)
    if isinstance(module, nn.CELU):
        return calculate_gain("celu", module.alpha)
    if isinstance(module, nn.Softplus):
        return calculate_gain("softplus", (module.beta, module.threshold))
    if isinstance(module, nn.Hardtanh) and not isinstance(module, nn.ReLU6):
        return calculate_gain("hardtanh", (module.min_val, module.max_val))
    for kind, name in _ACTIVATIONS:
        if isinstance(module, kind):
            return calculate_gain(name)
    return None


_ACTIVATIONS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.ReLU, "relu"),
    (nn.ReLU6, "relu"),  # a Hardtanh(0, 6), but its cap changes E[f(z)^2] by only 1e-8
    (nn.Tanh, "tanh"),
    (nn.Sigmoid, "sigmoid"),
    (nn.SELU, "selu"),
    # nn.GELU(approximate="tanh") differs from the exact GELU's gain by 3e-5; one value.
    (nn.GELU, "gelu"),
    (nn.SiLU, "silu"),
    (nn.Mish, "mish"),
    (nn.Hardswish, "hardswish"),
)


def _rrelu_rms_slope(lower: float, upper: float) -> float:
    r"""The root mean square of RReLU's slope :math:`a \sim U(l, u)`:
    :math:`\sqrt{(l^2 + l u + u^2) / 3}`.

    In training mode RReLU draws a slope per element, so
    :math:`\mathbb E[f(z)^2] = (1 + \mathbb E[a^2]) / 2`, and the second-moment rule gives
    the leaky-ReLU gain at slope :math:`\sqrt{\mathbb E[a^2]}`. torch's eval mode uses the
    mean slope :math:`(l + u) / 2` instead; for the defaults (1/8, 1/3) the two gains
    differ by 0.17%. The init matters for training, so the training-mode value is used.
    """
    return math.sqrt((lower * lower + lower * upper + upper * upper) / 3.0)


def _table_gain(nonlinearity: str) -> float:
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "selu":
        return 3.0 / 4
    if nonlinearity in _SECOND_MOMENT_GAINS:
        return _second_moment_gain(nonlinearity, ())
    return 1.0


def _leaky_relu_gain(slope: float) -> float:
    if abs(slope) <= 1e100:
        return math.sqrt(2.0 / (1 + slope**2))  # torch's expression: torch's float, exactly
    # 1 + slope^2 rounds to slope^2 here, and slope^2 overflows beyond 1.3e154.
    return math.sqrt(2.0) / abs(slope)


@functools.cache
def _second_moment_gain(nonlinearity: str, params: tuple[float, ...]) -> float:
    # E[g_k(z)^2] under N(0, 1) by the midpoint rule on [-12, 12] with steps of at most
    # 1e-4, split where a g_k jumps so that no step straddles a jump: the tails beyond carry
    # less than 1e-30 of the mass and the error is < 1e-9 (checked against
    # scipy.integrate.quad in the tests). Costs 20 to 40 ms once per (name, params).
    jumps = {x for x in _jumps(nonlinearity, params) if -12.0 < x < 12.0}
    edges = [-12.0, *sorted(jumps), 12.0]
    midpoints, widths = [], []
    for low, high in itertools.pairwise(edges):
        steps = math.ceil((high - low) / 1e-4)
        midpoints.append(
            low + (torch.arange(steps, dtype=torch.float64) + 0.5) * (high - low) / steps
        )
        widths.append(torch.full((steps,), (high - low) / steps, dtype=torch.float64))
    z = torch.cat(midpoints)
    weights = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) * torch.cat(widths)
    norms = []  # s_k sqrt(E[g_k^2])
    for values, scale in _SECOND_MOMENT_GAINS[nonlinearity](z, params):
        moment = float(torch.sum(values**2 * weights))
        if moment > 0:  # adds nothing, even with a scale of 1 / beta = inf
            norms.append(scale * math.sqrt(moment))
    root_moment = math.hypot(*norms)  # sqrt(E[f^2]), without squaring any s_k
    return math.inf if root_moment == 0 else 1.0 / root_moment


def _jumps(nonlinearity: str, params: tuple[float, ...]) -> tuple[float, ...]:
    if nonlinearity == "softplus":
        beta, threshold = params
        return (threshold / beta,)  # f jumps to the identity where beta z > threshold
    if nonlinearity == "hardtanh":
        return params  # f is continuous, but each of its three terms jumps there
    return ()


def _softplus_terms(z: Tensor, beta: float, threshold: float) -> _Terms:
    # log(1 + e^(beta z)) as a logaddexp, which does not overflow for a large beta z.
    linear = beta * z > threshold
    smooth = torch.where(linear, 0.0, torch.logaddexp(torch.zeros_like(z), beta * z))
    # f is smooth / beta there; 1 / beta is a scale only for small betas, where it is large.
    smooth_term = (smooth, 1.0 / beta) if beta < 1.0 else (smooth / beta, 1.0)
    return [(torch.where(linear, z, 0.0), 1.0), smooth_term]


def _hardtanh_terms(z: Tensor, min_val: float, max_val: float) -> _Terms:
    middle = torch.where((min_val <= z) & (z <= max_val), z, 0.0)
    return [
        ((z < min_val).to(z.dtype), min_val),
        (middle, 1.0),
        ((z > max_val).to(z.dtype), max_val),
    ]


def _is_pair(value: object) -> bool:
    return isinstance(value, tuple | list) and len(value) == 2


def check_matrix_like(tensor: Tensor, owner: str) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(
            f"The 'tensor' parameter of {owner} must be a torch.Tensor. "
            f"Got {type(tensor).__name__} instead."
        )
    if tensor.dim() < 2:
        raise ValueError(
            f"The 'tensor' parameter of {owner} must be a tensor with at least 2 dimensions "
            "(fan-in and fan-out are defined for weight matrices and convolution kernels). "
            f"Got a tensor of shape {tuple(tensor.shape)} instead."
        )
