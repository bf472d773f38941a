"""The built-in models: an MLP, a 1-D CNN and a small 2-D CNN, configured by depth and width.

Every model ends in a plain ``nn.Linear`` over the class scores (no softmax: the losses
take raw scores), and is an ``nn.Sequential``, so a model's layers are named by position
and an initializer can find the activation that follows each layer in registration order.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral
from typing import Literal, cast

from torch import nn

from gradwise._validation import (
    HALF_OPEN_UNIT_INTERVAL,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    Either,
    OneOf,
    Satisfies,
    check,
)
from gradwise.models._built_model import BuiltModel
from gradwise.models._pooling import HalvingMaxPool
from gradwise.regularize import NORMALIZATION_KINDS, dropout, normalization

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}

Normalization = Literal["batch", "layer", "group", "instance"] | None


def _is_int(value: object, minimum: int) -> bool:
    # Integral: numpy ints too (a search's np.random.choice), as the int constraints take.
    return not isinstance(value, bool) and isinstance(value, Integral) and int(value) >= minimum


def mlp(
    input_shape: Sequence[int],
    num_outputs: int,
    depth: int | None = None,
    width: int | Sequence[int] = 128,
    activation: str = "relu",
    norm: Normalization = None,
    dropout_rate: float = 0.0,
    num_groups: int = 8,
) -> nn.Sequential:
    """A multilayer perceptron: flatten, ``depth`` hidden blocks, then a linear read-out.

    Each hidden block is Linear -> normalization -> activation -> dropout (the order of
    Ioffe & Szegedy: normalize the pre-activation).

    Args:
        input_shape: the shape of one sample (flattened first).
        num_outputs: the number of classes (or regression outputs).
        depth: hidden layers, an int >= 0 (0 gives logistic regression); default 2, or the
            length of ``width`` when it is a list.
        width: units per hidden layer: an int >= 1 for every layer, or a list of ints, one
            per hidden layer (``[300, 100]`` is LeNet-300-100).
        activation: one of :data:`ACTIVATIONS`.
        norm: "batch", "layer", "group" or None (instance normalization needs feature
            maps: the CNNs take it).
        dropout_rate: drop probability after each hidden activation.
        num_groups: groups for ``norm="group"``.

    Example:
        >>> from gradwise.models import mlp
        >>> mlp((1, 8, 8), 10, depth=1, width=32)[1]
        Linear(in_features=64, out_features=32, bias=True)
        >>> [layer.out_features for layer in mlp((784,), 10, width=[300, 100])[1::2]]
        [300, 100, 10]
    """
    widths = _hidden_widths(depth, width)
    # Before the common checks, whose list of norms has the CNNs' "instance".
    check("norm", "mlp", norm, OneOf(("batch", "layer", "group", None)))
    _check_common("mlp", input_shape, num_outputs, widths[0] if widths else 1, activation,
                  norm, dropout_rate)  # fmt: skip
    check("num_groups", "mlp", num_groups, POSITIVE_INT)
    # Checked values as Python ints: a numpy int or a one-element tensor would reach the
    # layers (Linear(64, tensor(10))).
    num_outputs, num_groups = int(num_outputs), int(num_groups)
    layers: list[nn.Module] = [nn.Flatten()]
    features = math.prod(int(size) for size in input_shape)
    for hidden in widths:
        _check_values_per_group(
            "mlp", norm, _values_per_group(norm, hidden, num_groups, 1),
            f"for a hidden width of {hidden}", "use a width >= 3",
        )  # fmt: skip
        layers.append(nn.Linear(features, hidden))
        layers += _block_tail(hidden, 0, activation, norm, dropout_rate, num_groups)
        features = hidden
    layers.append(nn.Linear(features, num_outputs))
    return _built("mlp", layers)


_WIDTHS = Satisfies(
    lambda v: _is_int(v, 1) or (isinstance(v, list | tuple) and all(_is_int(w, 1) for w in v)),
    "an int >= 1 or a list of ints >= 1",
)
_OPTIONAL_DEPTH = Either((NON_NEGATIVE_INT, Satisfies(lambda v: v is None, "None")))


def _hidden_widths(depth: int | None, width: object) -> list[int]:
    """The width of each hidden layer of :func:`mlp`, checked."""
    check("depth", "mlp", depth, _OPTIONAL_DEPTH)
    check("width", "mlp", width, _WIDTHS)
    if isinstance(width, Integral):
        return [int(width)] * (2 if depth is None else int(depth))
    widths = [int(w) for w in cast(Sequence[int], width)]
    if depth is not None and depth != len(widths):
        raise ValueError(
            f"The 'depth' parameter of mlp must be None or the number of widths "
            f"({len(widths)}) when 'width' is a list. Got {depth!r} instead."
        )
    return widths


def cnn1d(
    input_shape: Sequence[int],
    num_outputs: int,
    depth: int = 3,
    width: int = 32,
    kernel_size: int = 5,
    activation: str = "relu",
    norm: Normalization = "batch",
    dropout_rate: float = 0.0,
    num_groups: int = 8,
) -> nn.Sequential:
    """A 1-D CNN for signals (N, C, L): conv blocks that halve the length, then a linear read-out.

    Each block is Conv1d (same padding) -> normalization -> activation -> max pooling over 2
    (:class:`HalvingMaxPool`, torch's MaxPool1d(2) made faster on the CPU)
    (while the length allows) -> dropout; the last feature map is flattened, which keeps
    where along the signal a feature fired.

    Args:
        input_shape: (channels, length).
        num_outputs: the number of classes.
        depth: convolutional blocks, an int >= 1.
        width: channels per block.
        kernel_size: an odd int >= 1.
        activation, norm, dropout_rate, num_groups: as for :func:`mlp`.

    Example:
        >>> import torch
        >>> from gradwise.models import cnn1d
        >>> cnn1d((1, 40), 10)(torch.zeros(2, 1, 40)).shape
        torch.Size([2, 10])
    """
    return _cnn(
        "cnn1d", 1, input_shape, num_outputs, depth, width, kernel_size,
        activation, norm, dropout_rate, num_groups,
    )  # fmt: skip


def cnn2d(
    input_shape: Sequence[int],
    num_outputs: int,
    depth: int = 2,
    width: int = 32,
    kernel_size: int = 3,
    activation: str = "relu",
    norm: Normalization = "batch",
    dropout_rate: float = 0.0,
    num_groups: int = 8,
) -> nn.Sequential:
    """A small 2-D CNN for images (N, C, H, W), built like :func:`cnn1d` with 2-D layers.

    Example:
        >>> import torch
        >>> from gradwise.models import cnn2d
        >>> cnn2d((1, 28, 28), 10)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    return _cnn(
        "cnn2d", 2, input_shape, num_outputs, depth, width, kernel_size,
        activation, norm, dropout_rate, num_groups,
    )  # fmt: skip


def _cnn(
    owner: str,
    spatial_dims: Literal[1, 2],
    input_shape: Sequence[int],
    num_outputs: int,
    depth: int,
    width: int,
    kernel_size: int,
    activation: str,
    norm: Normalization,
    dropout_rate: float,
    num_groups: int,
) -> nn.Sequential:
    _check_common(owner, input_shape, num_outputs, width, activation, norm, dropout_rate)
    check("depth", owner, depth, POSITIVE_INT)
    check("num_groups", owner, num_groups, POSITIVE_INT)
    check("kernel_size", owner, kernel_size, Satisfies(_is_odd_positive, "an odd int >= 1"))
    if len(input_shape) != spatial_dims + 1:
        expected = "(channels, length)" if spatial_dims == 1 else "(channels, height, width)"
        raise ValueError(
            f"The 'input_shape' parameter of {owner} must be {expected}. "
            f"Got {tuple(input_shape)!r} instead."
        )
    conv = nn.Conv1d if spatial_dims == 1 else nn.Conv2d
    # Checked values as Python ints (see mlp).
    depth, width, kernel_size = int(depth), int(width), int(kernel_size)
    num_outputs, num_groups = int(num_outputs), int(num_groups)
    channels, *size = (int(value) for value in input_shape)
    layers: list[nn.Module] = []
    shallower = ""
    for block in range(depth):
        if norm == "batch" and block > 0 and math.prod(size) == 1 and not shallower:
            one = "1x1 maps" if spatial_dims == 2 else "signals of length 1"
            shallower = f"with a depth <= {block} (then no batch norm sees {one})"
        _check_values_per_group(
            owner, norm, _values_per_group(norm, width, num_groups, math.prod(size)),
            f"for input {tuple(input_shape)} at depth {depth} (block {block + 1} sees "
            f"{width}-channel maps of size {'x'.join(map(str, size))})",
            _fewer_values_fix(norm, block),
        )  # fmt: skip
        layers.append(conv(channels, width, kernel_size, padding=kernel_size // 2))
        if norm is not None:
            groups = _groups(width, num_groups, math.prod(size))
            layers.append(normalization(norm, width, spatial_dims, groups))
        layers.append(ACTIVATIONS[activation]())
        if min(size) >= 2:
            layers.append(HalvingMaxPool(spatial_dims))
            size = [s // 2 for s in size]
        if dropout_rate > 0:
            layers.append(dropout(dropout_rate, spatial_dims))
        channels = width
    layers += [nn.Flatten(), nn.Linear(channels * math.prod(size), num_outputs)]
    return _built(owner, layers, shallower)


def _built(owner: str, layers: list[nn.Module], shallower: str = "") -> BuiltModel:
    model = BuiltModel(*layers)
    model.owner, model.shallower = owner, shallower
    return model


def _block_tail(
    width: int,
    spatial_dims: Literal[0, 1, 2],
    activation: str,
    norm: Normalization,
    dropout_rate: float,
    num_groups: int,
) -> list[nn.Module]:
    layers: list[nn.Module] = []
    if norm is not None:
        layers.append(normalization(norm, width, spatial_dims, _groups(width, num_groups, 1)))
    layers.append(ACTIVATIONS[activation]())
    if dropout_rate > 0:
        layers.append(dropout(dropout_rate, spatial_dims))
    return layers


def _values_per_group(
    norm: Normalization, width: int, num_groups: int, values_per_channel: int
) -> int | None:
    """How many values of one sample each normalization group of a block holds.

    None for batch normalization (its statistics also run over the batch) and for none.
    """
    if norm == "layer":
        return width * values_per_channel
    if norm == "group":
        return width // _groups(width, num_groups, values_per_channel) * values_per_channel
    if norm == "instance":
        return values_per_channel
    return None


def _check_values_per_group(
    owner: str, norm: Normalization, values: int | None, where: str, fix: str
) -> None:
    # One value normalizes to 0 and two to +-1 (see _groups): the layer would output its
    # shift (or the sign of a difference) whatever the input, so it is refused at build.
    if values is None or values >= 3:
        return
    # Instance norm's groups are one channel's map: layer and group norm span the
    # channels and may still hold enough values there.
    fits = "'batch', 'layer', 'group' or None" if norm == "instance" else "'batch' or None"
    raise ValueError(
        f"The 'norm' parameter of {owner} must be {fits} {where}: {norm!r} would "
        f"normalize groups of {values} value{'s' if values > 1 else ''}, and a group of one "
        f"normalizes to 0, of two to +-1, whatever the input; {fix}. Got {norm!r} instead."
    )


def _fewer_values_fix(norm: Normalization, block: int) -> str:
    if norm != "instance":
        return "use a width >= 3"
    if block == 0:
        return "instance statistics need inputs of 3 values or more per channel"
    return f"use a depth <= {block}"


def _groups(width: int, num_groups: int, values_per_channel: int) -> int:
    # A group count that does not divide the width falls back to the greatest common
    # divisor of the two (not the largest divisor of the width below it: width 7 with 8
    # groups would get 7 groups of one channel, nothing to normalize over in an MLP), so
    # changing only the width in a config never breaks group normalization.
    groups = math.gcd(width, num_groups)
    # A group must hold three values or more: normalizing takes away two degrees of
    # freedom (mean and scale), so one value normalizes to 0 (the layer outputs its bias
    # whatever the input) and two to +-1 (a sign, whose gradient is ~eps/d^3: measured
    # 0.01 against 1.0 for three). Few values per group happen where a channel is one
    # value (an MLP's features, 1x1 maps): width 8 with 8 groups gets 2 groups of 4.
    while groups > 1 and width // groups * values_per_channel < 3:
        groups = max(d for d in range(1, groups) if groups % d == 0)
    return groups


def _is_odd_positive(value: object) -> bool:
    return _is_int(value, 1) and cast(int, value) % 2 == 1


def _check_common(
    owner: str,
    input_shape: Sequence[int],
    num_outputs: int,
    width: int,
    activation: str,
    norm: Normalization,
    dropout_rate: float,
) -> None:
    check("input_shape", owner, input_shape, Satisfies(_is_shape, _SHAPE))
    check("num_outputs", owner, num_outputs, POSITIVE_INT)
    check("width", owner, width, POSITIVE_INT)
    check("activation", owner, activation, OneOf(tuple(ACTIVATIONS)))
    check("norm", owner, norm, OneOf(NORMALIZATION_KINDS))
    check("dropout_rate", owner, dropout_rate, HALF_OPEN_UNIT_INTERVAL)


def _is_shape(value: object) -> bool:
    return isinstance(value, tuple | list) and len(value) > 0 and all(_is_int(v, 1) for v in value)


_SHAPE = "a non-empty tuple of ints >= 1"

MODELS: dict[str, Callable[..., nn.Sequential]] = {"mlp": mlp, "cnn1d": cnn1d, "cnn2d": cnn2d}


def build_model(
    name: str, input_shape: Sequence[int], num_outputs: int, **options: object
) -> nn.Module:
    """The built-in model called ``name`` ("mlp", "cnn1d", "cnn2d") with its options.

    Unknown options raise the standard error listing the builder's options.

    Example:
        >>> from gradwise.models import build_model
        >>> build_model("mlp", (2,), 3, depth=1, width=8)
        Sequential(
          (0): Flatten(start_dim=1, end_dim=-1)
          (1): Linear(in_features=2, out_features=8, bias=True)
          (2): ReLU()
          (3): Linear(in_features=8, out_features=3, bias=True)
        )
    """
    check("input_shape", "build_model", input_shape, Satisfies(_is_shape, _SHAPE))
    check_model_options(name, options)
    return MODELS[name](tuple(input_shape), num_outputs, **options)


def check_model_options(name: str, options: Mapping[str, object]) -> None:
    """Refuse what :func:`build_model` refuses before it builds anything: an unknown
    ``name``, or an option its builder does not take (their values need the data's shape
    to be checked, and are checked when the model is built)."""
    check("name", "build_model", name, OneOf(tuple(MODELS)))
    accepted = [p for p in inspect.signature(MODELS[name]).parameters if p not in _POSITIONAL]
    for option in options:
        if option not in accepted:
            raise ValueError(
                f"build_model got an unknown option {option!r} for {name!r}. "
                f"Valid options: {', '.join(accepted)}."
            )


_POSITIONAL = ("input_shape", "num_outputs")
