"""Initialize a whole model: one scheme for every Linear and Conv layer, norms at 1 and 0."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import cast

import torch
from torch import Tensor, nn

from gradwise._frames import stacklevel_outside
from gradwise._validation import POSITIVE, Either, OneOf, Satisfies, check
from gradwise.init._gain import activation_gain, fan_in_and_fan_out
from gradwise.init._initializers import (
    FINITE,
    NAMED_INITIALIZERS,
    Initializer,
    constant,
    orthogonal,
)
from gradwise.init._lsuv import Batch, rescale_to_unit_variance
from gradwise.init._modules import (
    NORMALIZATION_LAYERS,
    WEIGHT_LAYERS,
    check_batch,
    check_model,
    make_generator,
    normalization_layers,
    scale_fixing_parametrization,
    update_parameter,
    weight_layers,
)

_WEIGHT_NAMES = (*NAMED_INITIALIZERS, "lsuv")
_WEIGHTS = Either(
    (
        Satisfies(lambda value: isinstance(value, Initializer), "an Initializer"),
        FINITE,
        OneOf(_WEIGHT_NAMES),
    )
)
_BIASES = Either(
    (
        FINITE,
        Satisfies(
            lambda value: isinstance(value, Initializer) and not value.uses_gain,
            "an Initializer that takes no gain (zeros, ones, constant, normal, uniform)",
        ),
    )
)
_GAIN = Either(
    (
        OneOf(("auto",)),
        POSITIVE,
        Satisfies(
            lambda value: (
                isinstance(value, Mapping)
                and all(
                    isinstance(k, str) and POSITIVE.is_satisfied_by(v) for k, v in value.items()
                )
            ),
            "a mapping from layer names to finite floats > 0",
        ),
    )
)
_NORMALIZATION_SCHEME = "weight 1, bias 0"


class SymmetryWarning(UserWarning):
    """Hidden units were given identical weights, so they can never learn different things."""


@dataclass(frozen=True)
class LayerInitialization:
    """What :func:`initialize` did to one layer: a row of its report.

    Attributes:
        name: the module's name in ``model.named_modules()`` (``""`` for the model itself).
        kind: the module's class name, e.g. ``"Conv2d"``.
        scheme: the weight scheme, e.g. ``"he_normal(mode='fan_in', ...)"``, ``"lsuv"``,
            or ``"weight 1, bias 0"`` for a normalization layer.
        fan_in: the weight's fan-in as torch.nn.init counts it; ``None`` for norm layers.
        fan_out: the weight's fan-out; ``None`` for norm layers.
        gain: the gain the scheme applied; ``None`` when it takes none.
        std: the standard deviation of the weight's values after initialization
            (measured); ``None`` when the module has no weight.
        output_variance: for ``"lsuv"``, the variance of the layer's output on the data.
    """

    name: str
    kind: str
    scheme: str
    fan_in: int | None
    fan_out: int | None
    gain: float | None
    std: float | None
    output_variance: float | None = None


def initialize(
    model: nn.Module,
    weights: Initializer | str | float = "he_normal",
    *,
    biases: Initializer | float = 0.0,
    generator: torch.Generator | int | None = None,
    gain: str | float | Mapping[str, float] = "auto",
    data: Batch | None = None,
) -> list[LayerInitialization]:
    r"""Initialize every Linear and Conv layer of ``model`` with one scheme, in place.

    Walks ``model.named_modules()`` in registration order. Each ``nn.Linear``,
    ``nn.Conv{1,2,3}d`` and ``nn.ConvTranspose{1,2,3}d`` gets ``weights`` on its weight
    and ``biases`` on its bias. BatchNorm, InstanceNorm, LayerNorm, GroupNorm and RMSNorm
    get weight 1 and bias 0, and their running statistics are reset. An
    ``nn.MultiheadAttention`` gets ``weights`` on each of its query, key and value
    projections as a layer of its own (the three (E, E) blocks of ``in_proj_weight`` one
    by one, with fans (E, E), not those of the stacked (3E, E) that torch's own
    xavier_uniform_ uses; or ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``),
    gain 1 unless a float ``gain`` is given, and ``biases`` on ``in_proj_bias``; its
    ``out_proj`` is an ``nn.Linear``. Other modules are left alone. A weight (or a norm's
    weight or bias) parametrized with ``torch.nn.utils.parametrize``
    (``parametrizations.weight_norm``, say) is set through its parametrization's
    ``right_inverse``; a parametrization without one, or a weight rebuilt by a forward
    pre-hook (the older ``torch.nn.utils.weight_norm``, ``spectral_norm``, ``prune``),
    cannot be set and is refused with a ``ValueError`` before anything is written. Under
    ``parametrizations.spectral_norm`` or ``orthogonal`` the parametrization, not the
    scheme, sets the weight's scale, and ``initialize`` warns.

    Gain: with ``gain="auto"`` each layer's gain is that of the first activation module
    registered after it and before the next Linear/Conv layer (normalization, dropout,
    pooling and anything else in between are skipped): ``nn.ReLU`` :math:`\sqrt 2`,
    ``nn.LeakyReLU`` :math:`\sqrt{2/(1+a^2)}` with its slope, ``nn.Tanh`` 5/3, ``nn.SELU``
    3/4, ``nn.Sigmoid`` 1, ``nn.RReLU`` as a leaky ReLU with the root mean square of its
    random slope (``docs/init.md``), and GELU, SiLU, ELU, CELU, Mish, Hardswish, Softplus
    and Hardtanh, read with their parameters (see :func:`calculate_gain`). A layer with
    no activation after it (the output layer) gets 1. Activations applied functionally
    (``F.relu`` in ``forward``) are invisible, so pass the gain yourself then: a float for
    every layer, or a mapping ``{layer name: gain}`` (layers left out get the automatic
    gain). A gain fixed on the initializer (``xavier_normal(gain=1.0)``,
    ``he_normal(nonlinearity="relu")``, LeCun) wins; fixed-scale schemes take none.

    Symmetry: constant weights (``"zeros"``, ``"ones"``, a float) on any layer but the last
    make every unit of that layer compute the same output and receive the same update, so
    the units never become different. That raises a :class:`SymmetryWarning` naming the
    layers.

    ``weights="lsuv"`` runs :func:`lsuv` on ``data`` after the biases and norms are set.

    Args:
        model: the network.
        weights: an :class:`Initializer`, a float (constant weights), or a name:
            ``"he_normal"``, ``"he_uniform"``, ``"xavier_normal"``, ``"xavier_uniform"``,
            ``"lecun_normal"``, ``"lecun_uniform"``, ``"orthogonal"``, ``"normal"``
            (std 0.01), ``"uniform"`` (scale 0.05), ``"zeros"``, ``"ones"``, ``"lsuv"``.
        biases: a float, or an Initializer that takes no gain.
        generator: a ``torch.Generator``, an int seed (same seed, bitwise the same model),
            or ``None`` for torch's global RNG. Layers draw in registration order, weight
            then bias.
        gain: ``"auto"``, a finite float > 0, or a mapping from layer names to gains.
        data: a batch of inputs (a tensor, or a tuple of positional arguments); required by
            ``weights="lsuv"`` and refused otherwise.

    Returns:
        One :class:`LayerInitialization` per initialized module, in registration order.

    Example:
        >>> model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))
        >>> report = initialize(model, "he_normal", generator=0)
        >>> [(row.name, round(row.gain, 3)) for row in report]
        [('0', 1.414), ('2', 1.0)]
    """
    check_model(model, "initialize")
    check("weights", "initialize", weights, _WEIGHTS)
    check("biases", "initialize", biases, _BIASES)
    check("gain", "initialize", gain, _GAIN)
    _check_data(weights, data)
    rng = make_generator(generator, model, "initialize")
    layers = weight_layers(model, "initialize")
    normalization_layers(model, "initialize")  # refuse before any write, as for the layers
    if not isinstance(biases, Initializer):
        _check_bias_fits(float(biases), model)
    fill = orthogonal() if weights == "lsuv" else _as_initializer(weights)
    bias_fill = biases if isinstance(biases, Initializer) else constant(float(biases))
    gains = _layer_gains(model, layers, gain)
    if weights != "lsuv":
        _warn_about_symmetry(fill, layers)
        _warn_about_invisible_activations(fill, model, layers, gain)
        _warn_about_fixed_scales(fill, layers)
        _warn_about_tied_weights(fill, layers, gains)
    report = []
    for name, module in model.named_modules():
        if isinstance(module, WEIGHT_LAYERS):
            report.append(_init_layer(name, module, fill, bias_fill, gains[name], rng))
        elif isinstance(module, NORMALIZATION_LAYERS):
            report.append(_init_normalization(name, module))
        elif isinstance(module, nn.MultiheadAttention):
            attention_gain = 1.0 if isinstance(gain, str | Mapping) else float(gain)
            report.append(_init_attention(name, module, fill, bias_fill, attention_gain, rng))
    if weights == "lsuv" and data is not None:
        return _apply_lsuv(model, data, report)
    # A weight shared with a later layer (tied weights) is filled again there: each row's
    # std is measured once every layer is done, so that it describes the weight as it is.
    modules = dict(model.named_modules())
    return [
        row
        if row.scheme == _NORMALIZATION_SCHEME
        else replace(row, std=_std(_projection_weights(modules[row.name])))
        for row in report
    ]


def _check_bias_fits(value: float, model: nn.Module) -> None:
    """A constant bias every floating bias can hold: 8e307 fits a float64 bias and
    overflowed a float32 one inside torch's fill, after the layers before it were set."""
    for name, parameter in model.named_parameters():
        if not (name.endswith("bias") and parameter.is_floating_point()):
            continue
        largest = torch.finfo(parameter.dtype).max
        if abs(value) > largest:
            raise ValueError(
                f"The 'biases' parameter of initialize must be a value the model's biases can "
                f"hold. Got {value!r} instead, beyond the largest {parameter.dtype} "
                f"({largest:.4g}) of {name!r}."
            )


def _projection_weights(module: nn.Module) -> Tensor:
    """A layer's weight; an attention layer's input projections, flattened and joined."""
    if not isinstance(module, nn.MultiheadAttention):
        return cast(Tensor, module.weight)
    names = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
    weights = [w.detach().reshape(-1) for n in names if (w := _parameter(module, n)) is not None]
    return torch.cat(weights)


def _init_attention(
    name: str,
    attention: nn.MultiheadAttention,
    fill: Initializer,
    bias_fill: Initializer,
    gain: float,
    generator: torch.Generator | None,
) -> LayerInitialization:
    """The query, key and value projections of ``attention``, each as its own layer.

    torch stacks them into one (3E, E) ``in_proj_weight`` (when key and value have the
    embedding's width) and gives the whole a xavier_uniform_, whose fans (E, 3E) make each
    block's std sqrt(2/4E) where a layer E -> E gets sqrt(2/2E). Each block is a separate
    linear map from the input to E features, so each is filled with its own fans (E, E),
    as ``q_proj_weight`` (E, E), ``k_proj_weight`` (E, kdim) and ``v_proj_weight``
    (E, vdim) are. The output projection is an ``nn.Linear`` and is initialized as one;
    ``bias_k`` and ``bias_v`` (``add_bias_kv``) are left as torch set them.
    """
    blocks: list[Tensor] = []
    stacked = _parameter(attention, "in_proj_weight")
    with torch.no_grad():
        if stacked is not None:  # (3E, E): Q, K, V stacked by rows
            blocks = list(stacked.chunk(3, dim=0))
        else:
            names = ("q_proj_weight", "k_proj_weight", "v_proj_weight")
            blocks = [cast(Tensor, _parameter(attention, n)) for n in names]
        for block in blocks:
            fill(block, gain=gain, generator=generator)
        bias = _parameter(attention, "in_proj_bias")
        if bias is not None:
            bias_fill(bias, generator=generator)
    fan_in, fan_out = fan_in_and_fan_out(blocks[0])
    return LayerInitialization(
        name=name,
        kind=type(attention).__name__,
        scheme=str(fill),
        fan_in=fan_in,
        fan_out=fan_out,
        gain=fill.resolve_gain(gain),
        std=_std(_projection_weights(attention)),
    )


def _check_data(weights: object, data: object) -> None:
    if weights == "lsuv":
        check_batch(data, "data", "initialize", when=" when weights='lsuv'")
    elif data is not None:
        raise ValueError(
            "The 'data' parameter of initialize must be None unless weights='lsuv' (only "
            f"LSUV looks at data). Got a batch with weights={weights!r} instead."
        )


def _as_initializer(weights: Initializer | str | float) -> Initializer:
    if isinstance(weights, Initializer):
        return weights
    if isinstance(weights, str):
        return NAMED_INITIALIZERS[weights]()
    return constant(float(weights))


def _layer_gains(
    model: nn.Module,
    layers: list[tuple[str, nn.Module]],
    gain: str | float | Mapping[str, float],
) -> dict[str, float]:
    if not isinstance(gain, str | Mapping):
        return {name: float(gain) for name, _ in layers}
    gains = _automatic_gains(model)
    if isinstance(gain, Mapping):
        unknown = sorted(set(gain) - set(gains))
        if unknown:
            raise ValueError(
                "The 'gain' parameter of initialize must map names of the model's Linear "
                f"and Conv layers ({', '.join(repr(name) for name in gains)}) to gains. "
                f"Got unknown names {', '.join(repr(name) for name in unknown)} instead."
            )
        gains.update({name: float(value) for name, value in gain.items()})
    return gains


def _automatic_gains(model: nn.Module) -> dict[str, float]:
    gains: dict[str, float] = {}
    seen: set[int] = set()  # the weight layers met so far, by id
    waiting: str | None = None  # the last layer not yet followed by an activation
    # remove_duplicate=False: one activation module placed after several layers
    # (nn.Sequential(linear, act, linear, act, ...)) counts at every place it is registered.
    # A weight layer registered twice keeps the gain of its first place.
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, WEIGHT_LAYERS):
            waiting = None if id(module) in seen else name
            if waiting is not None:
                seen.add(id(module))
                gains[name] = 1.0
            continue
        found = activation_gain(module)
        if found is not None and waiting is not None:
            gains[waiting] = found
            waiting = None
    return gains


def _init_layer(
    name: str,
    layer: nn.Module,
    fill: Initializer,
    bias_fill: Initializer,
    gain: float,
    generator: torch.Generator | None,
) -> LayerInitialization:
    update_parameter(layer, "weight", lambda weight: fill(weight, gain=gain, generator=generator))
    if _parameter(layer, "bias") is not None:
        update_parameter(layer, "bias", lambda bias: bias_fill(bias, generator=generator))
    weight = cast(Tensor, layer.weight)  # Linear and Conv layers always have one
    fan_in, fan_out = fan_in_and_fan_out(weight)
    return LayerInitialization(
        name=name,
        kind=type(layer).__name__,
        scheme=str(fill),
        fan_in=fan_in,
        fan_out=fan_out,
        gain=fill.resolve_gain(gain),
        std=_std(weight),
    )


def _init_normalization(name: str, module: nn.Module) -> LayerInitialization:
    # A parametrized weight is computed anew at every access: filling that copy changed
    # nothing. update_parameter writes through the parametrization's right_inverse, as for
    # Linear and Conv weights (checked before any write by normalization_layers).
    if _parameter(module, "weight") is not None:
        update_parameter(module, "weight", nn.init.ones_)
    if _parameter(module, "bias") is not None:
        update_parameter(module, "bias", nn.init.zeros_)
    weight = _parameter(module, "weight")
    reset = getattr(module, "reset_running_stats", None)
    if callable(reset):
        reset()
    std = None if weight is None else _std(weight)
    return LayerInitialization(
        name=name,
        kind=type(module).__name__,
        scheme=_NORMALIZATION_SCHEME,
        fan_in=None,
        fan_out=None,
        gain=None,
        std=std,
    )


def _apply_lsuv(
    model: nn.Module, data: Batch, report: list[LayerInitialization]
) -> list[LayerInitialization]:
    variances = rescale_to_unit_variance(model, data, 0.05, 10)
    modules = dict(model.named_modules())
    rows = []
    for row in report:
        if row.scheme != _NORMALIZATION_SCHEME and row.kind != "MultiheadAttention":
            weight = _parameter(modules[row.name], "weight")
            row = replace(
                row,
                scheme="lsuv",
                gain=None,
                std=None if weight is None else _std(weight),
                output_variance=variances.get(row.name),
            )
        rows.append(row)
    return rows


def _warn_about_symmetry(fill: Initializer, layers: list[tuple[str, nn.Module]]) -> None:
    if fill.breaks_symmetry or len(layers) < 2:
        return
    hidden = ", ".join(repr(name) for name, _ in layers[:-1])
    warnings.warn(
        f"initialize gave hidden layers {hidden} constant weights ({fill}): every unit of "
        "such a layer computes the same output and receives the same gradient update, so "
        "the units never become different (the symmetry problem). Use a random scheme such "
        "as weights='he_normal'; constant weights suit only the last layer.",
        SymmetryWarning,
        stacklevel=stacklevel_outside(__file__),
    )


def _warn_about_fixed_scales(fill: Initializer, layers: list[tuple[str, nn.Module]]) -> None:
    fixed = [(name, scale_fixing_parametrization(layer)) for name, layer in layers]
    named = ", ".join(f"'{name}' ({label})" for name, label in fixed if label)
    if not named:
        return
    warnings.warn(
        f"initialize wrote {fill} into the weights of {named}, but the parametrization on "
        "those weights fixes their scale (largest singular value 1 for spectral_norm, every "
        "one 1 for orthogonal): the scheme's std and gain do not hold there, only what the "
        "parametrization keeps of the values (the report's std is measured after). If the "
        "scheme should set their scale, remove the parametrization first "
        "(torch.nn.utils.parametrize.remove_parametrizations).",
        UserWarning,
        stacklevel=stacklevel_outside(__file__),
    )


def _warn_about_tied_weights(
    fill: Initializer, layers: list[tuple[str, nn.Module]], gains: dict[str, float]
) -> None:
    owners: dict[int, list[str]] = {}
    for name, layer in layers:
        weight = layer._parameters.get("weight")  # None under a parametrization
        if weight is not None:
            owners.setdefault(id(weight), []).append(name)
    for names in owners.values():
        if len(names) < 2:
            continue
        last = names[-1]
        gain = fill.resolve_gain(gains[last])
        drawn = f"{fill}" if gain is None else f"{fill} with gain {gain:.4g}"
        warnings.warn(
            f"initialize found layers {', '.join(repr(name) for name in names)} sharing one "
            f"weight (tied weights). Each layer fills it in turn, so it keeps what '{last}' "
            f"drew ({drawn}); the report's std is the shared weight's. To give it another "
            f"gain, pass gain={{'{last}': ...}}.",
            UserWarning,
            stacklevel=stacklevel_outside(__file__),
        )


def _warn_about_invisible_activations(
    fill: Initializer,
    model: nn.Module,
    layers: list[tuple[str, nn.Module]],
    gain: object,
) -> None:
    # Only where it changes something: He takes the offered gain, else sqrt(2) on its own.
    offered = isinstance(gain, str) and fill.gain is None and len(layers) > 1
    if not offered or fill.resolve_gain(None) in (None, 1.0):
        return
    if any(activation_gain(module) is not None for module in model.modules()):
        return
    warnings.warn(
        "initialize found no activation modules in the model, so gain='auto' gave every "
        f"layer gain 1 for {fill} instead of its own {fill.resolve_gain(None):.4g}. If the "
        "model applies its activations functionally (F.relu in forward), pass the gain: "
        "gain=2 ** 0.5 for ReLU, or a mapping {layer name: gain}.",
        UserWarning,
        stacklevel=stacklevel_outside(__file__),
    )


def _parameter(module: nn.Module, name: str) -> Tensor | None:
    value = getattr(module, name, None)
    return value if isinstance(value, Tensor) else None


def _std(tensor: Tensor) -> float | None:
    if tensor.numel() == 0:
        return None
    return float(tensor.detach().double().std(correction=0))
