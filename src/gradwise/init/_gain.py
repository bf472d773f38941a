"""Fans of a weight tensor and the gain of a nonlinearity, as torch.nn.init defines them."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradwise._validation import Interval, OneOf, Satisfies, check

# torch.nn.init.calculate_gain's table. torch leaves GELU, SiLU, ELU, Mish and Hardswish
# out; their gains
# come from the rule that reproduces torch's relu and leaky_relu values (see below).
_TORCH_GAINS = ("linear", "identity", "sigmoid", "tanh", "relu", "leaky_relu", "selu")
_SECOND_MOMENT_GAINS: dict[str, Callable[[Tensor, float], Tensor]] = {
    "gelu": lambda z, param: F.gelu(z),
    "silu": lambda z, param: F.silu(z),
    "elu": lambda z, param: F.elu(z, alpha=param),
    "mish": lambda z, param: F.mish(z),
    "hardswish": lambda z, param: F.hardswish(z),
}
NONLINEARITIES = _TORCH_GAINS + tuple(_SECOND_MOMENT_GAINS)

_NO_PARAM = Satisfies(lambda value: value is None, "None (only 'leaky_relu' and 'elu' take one)")

# The default ``param`` of the nonlinearities that have one: nn.LeakyReLU's slope, nn.ELU's alpha.
_DEFAULT_PARAM = {"leaky_relu": 0.01, "elu": 1.0}


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


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    r"""The recommended gain for weights followed by ``nonlinearity``.

    Same values as ``torch.nn.init.calculate_gain`` where torch has one: 1 for
    ``"linear"``, ``"identity"`` and ``"sigmoid"``; :math:`5/3` for ``"tanh"``;
    :math:`\sqrt 2` for ``"relu"``; :math:`\sqrt{2 / (1 + a^2)}` for ``"leaky_relu"`` with
    negative slope :math:`a` (``param``, default 0.01 as in ``nn.LeakyReLU``); :math:`3/4`
    for ``"selu"`` (torch's empirical value; self-normalizing networks want
    :func:`lecun_normal` instead).

    torch has no gain for ``"gelu"``, ``"silu"``, ``"elu"`` (``param`` is ELU's alpha,
    default 1), ``"mish"`` and ``"hardswish"``. For them gradwise uses the rule behind the
    ReLU and leaky-ReLU values, :math:`g = 1 / \sqrt{\mathbb E[f(z)^2]}` with
    :math:`z \sim \mathcal N(0, 1)`: the gain for which unit pre-activation variance is a
    fixed point from layer to layer. It gives GELU 1.534, SiLU 1.677, ELU 1.245, Mish 1.487,
    Hardswish 1.737 (and exactly :math:`\sqrt 2` for ReLU and 1 for SELU).
    These activations are not positively homogeneous, so no constant gain holds the
    variance at every scale; see ``docs/init.md``.

    Args:
        nonlinearity: one of ``"linear"``, ``"identity"``, ``"sigmoid"``, ``"tanh"``,
            ``"relu"``, ``"leaky_relu"``, ``"selu"``, ``"gelu"``, ``"silu"``, ``"elu"``,
            ``"mish"``, ``"hardswish"``.
        param: the negative slope of ``"leaky_relu"`` or the alpha of ``"elu"``; must be
            ``None`` for the others.

    Example:
        >>> round(calculate_gain("leaky_relu", 0.2), 4)
        1.3868

    Reference:
        He et al., "Delving Deep into Rectifiers", ICCV 2015 (the ReLU gain).
    """
    check("nonlinearity", "calculate_gain", nonlinearity, OneOf(NONLINEARITIES))
    if nonlinearity not in _DEFAULT_PARAM:
        check("param", "calculate_gain", param, _NO_PARAM)
        return _table_gain(nonlinearity)
    value = _DEFAULT_PARAM[nonlinearity] if param is None else param
    check("param", "calculate_gain", value, Interval(kind="float"))
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1 + float(value) ** 2))
    check("param", "calculate_gain", value, Interval(low=0.0, low_closed=False))
    return _second_moment_gain(nonlinearity, float(value))


def activation_gain(module: nn.Module) -> float | None:
    """The gain of an activation module, or ``None`` when ``module`` is not an activation."""
    if isinstance(module, nn.LeakyReLU):
        return calculate_gain("leaky_relu", module.negative_slope)
    if isinstance(module, nn.PReLU):  # a learned slope: its value now (0.25 at creation)
        return calculate_gain("leaky_relu", float(module.weight.detach().float().mean()))
    if isinstance(module, nn.ELU):
        return calculate_gain("elu", module.alpha)
    for kind, name in _ACTIVATIONS:
        if isinstance(module, kind):
            return calculate_gain(name)
    return None


_ACTIVATIONS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.ReLU, "relu"),
    (nn.ReLU6, "relu"),  # its cap at 6 changes E[f(z)^2] by 1e-8
    (nn.Tanh, "tanh"),
    (nn.Sigmoid, "sigmoid"),
    (nn.SELU, "selu"),
    # nn.GELU(approximate="tanh") differs from the exact GELU's gain by 3e-5; one value.
    (nn.GELU, "gelu"),
    (nn.SiLU, "silu"),
    (nn.Mish, "mish"),
    (nn.Hardswish, "hardswish"),
)


def _table_gain(nonlinearity: str) -> float:
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "selu":
        return 3.0 / 4
    if nonlinearity in _SECOND_MOMENT_GAINS:
        return _second_moment_gain(nonlinearity, 0.0)
    return 1.0


@functools.cache
def _second_moment_gain(nonlinearity: str, param: float) -> float:
    # E[f(z)^2] under N(0, 1) by the trapezoid rule on [-12, 12]: the tails beyond carry
    # less than 1e-30 of the mass and 240k points make the error < 1e-10 (checked against
    # scipy.integrate.quad in the tests). Costs about 10 ms once per (name, param).
    z = torch.linspace(-12.0, 12.0, 240_001, dtype=torch.float64)
    density = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    second_moment = torch.trapezoid(_SECOND_MOMENT_GAINS[nonlinearity](z, param) ** 2 * density, z)
    return 1.0 / math.sqrt(float(second_moment))


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
