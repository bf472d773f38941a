"""Weight initializers: small frozen objects that fill a tensor in place.

Each scheme is a factory function returning an :class:`Initializer`. The sampling itself is
``torch.nn.init``'s (with the gain gradwise computes), so a scheme torch also has gives
torch's numbers bit for bit under the same generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gradwise._validation import POSITIVE, Either, Interval, OneOf, Satisfies, check
from gradwise.init._gain import NONLINEARITIES, calculate_gain, check_matrix_like

# (tensor, gain, generator) -> tensor, run under torch.no_grad(); fixed-scale schemes ignore
# the gain.
Sample = Callable[[Tensor, float, "torch.Generator | None"], Tensor]

FINITE = Satisfies(
    lambda value: Interval(kind="float").is_satisfied_by(value) and math.isfinite(value),
    "a finite float",
)
_OPTIONAL_GAIN = Either((OneOf((None,)), POSITIVE))
_MODES = OneOf(("fan_in", "fan_out"))


@dataclass(frozen=True)
class Initializer:
    r"""A weight-initialization scheme: call it on a tensor to fill the tensor in place.

    ``initializer(tensor, gain=None, generator=None)`` fills ``tensor`` under
    ``torch.no_grad()`` and returns it. Make one with a factory such as :func:`he_normal`
    rather than directly.

    Schemes scaled by the fans (Xavier, He, LeCun) and :func:`orthogonal` take a *gain*
    :math:`g`. Which gain applies, first match wins: the gain fixed when the initializer
    was made (``xavier_normal(gain=2.0)``, ``he_normal(nonlinearity="tanh")``; LeCun's is
    always 1); the ``gain`` passed to the call (:func:`gradwise.init.initialize` passes
    the gain of the activation that follows each layer); the scheme's default (1, or
    :math:`\sqrt 2` for He). These schemes need a tensor with at least 2 dimensions.
    Fixed-scale schemes (:func:`zeros`, :func:`ones`, :func:`constant`, :func:`normal`,
    :func:`uniform`) ignore any gain and fill tensors of any shape.

    Attributes:
        name: the factory that made it, e.g. ``"he_normal"``.
        arguments: the factory's arguments as ``(name, value)`` pairs; ``str(initializer)``
            is the call that rebuilds it.
        sample: ``(tensor, gain, generator) -> tensor``, the fill itself.
        gain: the gain fixed at construction, or ``None``.
        default_gain: the gain when neither the construction nor the call fixes one;
            ``None`` for fixed-scale schemes, which take no gain.
        breaks_symmetry: whether different units get different weights. ``False`` for the
            constant schemes, which make every unit of a hidden layer compute the same
            function.

    Example:
        >>> weight = torch.empty(256, 128)
        >>> _ = xavier_uniform()(weight, gain=5 / 3, generator=torch.Generator().manual_seed(0))
        >>> str(he_normal(mode="fan_out"))
        "he_normal(mode='fan_out', nonlinearity=None, negative_slope=0.0)"
    """

    name: str
    arguments: tuple[tuple[str, object], ...]
    sample: Sample = field(repr=False, compare=False)
    gain: float | None = None
    default_gain: float | None = None
    breaks_symmetry: bool = True

    @property
    def uses_gain(self) -> bool:
        """Whether the scheme is scaled by a gain (and so needs a 2-D or larger tensor)."""
        return self.default_gain is not None

    def resolve_gain(self, gain: float | None = None) -> float | None:
        """The gain applied when the caller offers ``gain``; ``None`` for fixed-scale schemes."""
        if self.default_gain is None:
            return None
        if self.gain is not None:
            return self.gain
        return self.default_gain if gain is None else float(gain)

    def __call__(
        self,
        tensor: Tensor,
        *,
        gain: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Fill ``tensor`` in place and return it.

        Args:
            tensor: the tensor to fill (floating point for the random schemes).
            gain: the gain offered for this tensor (> 0), used unless the initializer
                fixed its own; ignored by fixed-scale schemes.
            generator: the ``torch.Generator`` to draw from, on the tensor's device;
                ``None`` draws from torch's global RNG.
        """
        owner = self.name
        _check_tensor(tensor, owner, random=self.breaks_symmetry)
        if self.uses_gain:
            check_matrix_like(tensor, owner)
        check("gain", owner, gain, _OPTIONAL_GAIN)
        _check_generator(generator, tensor, owner)
        if tensor.numel() == 0:
            return tensor
        resolved = self.resolve_gain(gain)
        with torch.no_grad():
            self.sample(tensor, 1.0 if resolved is None else resolved, generator)
        return tensor

    def __str__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.arguments)
        return f"{self.name}({arguments})"


def zeros() -> Initializer:
    """Fill with 0. Fine for biases; in a hidden layer's weights it never breaks symmetry.

    Example:
        >>> zeros()(torch.empty(2, 3)).sum().item()
        0.0
    """
    return Initializer(
        "zeros", (), lambda tensor, gain, generator: nn.init.zeros_(tensor), breaks_symmetry=False
    )


def ones() -> Initializer:
    """Fill with 1 (normalization layers' scale). Not for weights: see :func:`zeros`.

    Example:
        >>> ones()(torch.empty(2, 3)).sum().item()
        6.0
    """
    return Initializer(
        "ones", (), lambda tensor, gain, generator: nn.init.ones_(tensor), breaks_symmetry=False
    )


def constant(value: float) -> Initializer:
    """Fill with ``value``. Biases only, as for :func:`zeros`.

    Args:
        value: a finite float.

    Example:
        >>> constant(0.1)(torch.empty(3)).tolist()
        [0.10000000149011612, 0.10000000149011612, 0.10000000149011612]
    """
    check("value", "constant", value, FINITE)
    return Initializer(
        "constant",
        (("value", value),),
        lambda tensor, gain, generator: nn.init.constant_(tensor, value),
        breaks_symmetry=False,
    )


def normal(std: float = 0.01, mean: float = 0.0) -> Initializer:
    r"""Draw from :math:`\mathcal N(\text{mean}, \text{std}^2)`; the lectures' ``0.01 * randn``.

    The scale ignores the layer's size, so deep networks' signals shrink (std too small)
    or blow up (too large) layer after layer; prefer :func:`he_normal` for ReLU networks.

    Args:
        std: the standard deviation, > 0.
        mean: the mean.

    Example:
        >>> weight = normal(std=0.01)(torch.empty(100, 100))
    """
    check("std", "normal", std, POSITIVE)
    check("mean", "normal", mean, FINITE)
    return Initializer(
        "normal",
        (("std", std), ("mean", mean)),
        lambda tensor, gain, generator: nn.init.normal_(tensor, mean, std, generator),
    )


def uniform(scale: float = 0.05) -> Initializer:
    r"""Draw from :math:`\mathcal U[-\text{scale}, \text{scale}]` (Keras ``RandomUniform``).

    The standard deviation is :math:`\text{scale} / \sqrt 3`.

    Args:
        scale: the half-width of the interval, > 0.

    Example:
        >>> bool(uniform(0.05)(torch.empty(100)).abs().max() <= 0.05)
        True
    """
    check("scale", "uniform", scale, POSITIVE)
    return Initializer(
        "uniform",
        (("scale", scale),),
        lambda tensor, gain, generator: nn.init.uniform_(tensor, -scale, scale, generator),
    )


def xavier_normal(gain: float | None = None) -> Initializer:
    r"""Xavier/Glorot normal: weights from :math:`\mathcal N(0, \sigma^2)`.

    :math:`\sigma = g \sqrt{2 / (\text{fan\_in} + \text{fan\_out})}`.

    Keeps activations' and gradients' variances equal on average between the forward and
    the backward pass for a linear (or tanh-like, near 0) network. Same numbers as
    ``torch.nn.init.xavier_normal_``.

    Args:
        gain: :math:`g`; ``None`` takes the gain offered by the caller (see
            :class:`Initializer`), else 1.

    Example:
        >>> weight = xavier_normal()(torch.empty(300, 100))
        >>> round(weight.std().item(), 1)  # sqrt(2 / 400)
        0.1

    Reference:
        Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural
        networks", AISTATS 2010.
    """
    check("gain", "xavier_normal", gain, _OPTIONAL_GAIN)
    return Initializer(
        "xavier_normal",
        (("gain", gain),),
        lambda tensor, g, generator: nn.init.xavier_normal_(tensor, g, generator),
        gain=gain,
        default_gain=1.0,
    )


def xavier_uniform(gain: float | None = None) -> Initializer:
    r"""Xavier/Glorot uniform: weights from :math:`\mathcal U[-b, b]`.

    :math:`b = g \sqrt{6 / (\text{fan\_in} + \text{fan\_out})}`.

    The uniform law with :func:`xavier_normal`'s standard deviation (:math:`b = \sqrt 3
    \sigma`). Same numbers as ``torch.nn.init.xavier_uniform_``.

    Args:
        gain: :math:`g`; ``None`` takes the gain offered by the caller, else 1.

    Example:
        >>> weight = xavier_uniform(gain=5 / 3)(torch.empty(300, 100))

    Reference:
        Glorot & Bengio, AISTATS 2010.
    """
    check("gain", "xavier_uniform", gain, _OPTIONAL_GAIN)
    return Initializer(
        "xavier_uniform",
        (("gain", gain),),
        lambda tensor, g, generator: nn.init.xavier_uniform_(tensor, g, generator),
        gain=gain,
        default_gain=1.0,
    )


def he_normal(
    mode: str = "fan_in", nonlinearity: str | None = None, negative_slope: float = 0.0
) -> Initializer:
    r"""He/Kaiming normal: :math:`\mathcal N(0, \sigma^2)`, :math:`\sigma = g / \sqrt{\text{fan}}`.

    A ReLU zeroes half of its input, so ReLU layers need twice the weight variance of a
    linear layer, :math:`g = \sqrt 2`, to keep the variance of pre-activations constant
    across depth (``mode="fan_in"``) or that of gradients (``mode="fan_out"``). Same
    numbers as ``torch.nn.init.kaiming_normal_`` with the same nonlinearity.

    Args:
        mode: ``"fan_in"`` or ``"fan_out"`` (see :func:`fan_in_and_fan_out`).
        nonlinearity: the activation after the layer, which fixes
            :math:`g` = ``calculate_gain(nonlinearity)``; ``None`` takes the gain offered
            by the caller (:func:`initialize` passes each layer's), else :math:`\sqrt 2`.
        negative_slope: the slope of ``"leaky_relu"``; 0 for any other nonlinearity.

    Example:
        >>> weight = he_normal()(torch.empty(512, 256))
        >>> round(weight.var().item() * 256, 1)  # g^2 = 2
        2.0

    Reference:
        He et al., "Delving Deep into Rectifiers: Surpassing Human-Level Performance on
        ImageNet Classification", ICCV 2015.
    """
    gain = _he_gain("he_normal", mode, nonlinearity, negative_slope)
    return Initializer(
        "he_normal",
        (("mode", mode), ("nonlinearity", nonlinearity), ("negative_slope", negative_slope)),
        lambda tensor, g, generator: nn.init.normal_(
            tensor, 0.0, g / math.sqrt(_fan(tensor, mode)), generator
        ),
        gain=gain,
        default_gain=math.sqrt(2.0),
    )


def he_uniform(
    mode: str = "fan_in", nonlinearity: str | None = None, negative_slope: float = 0.0
) -> Initializer:
    r"""He/Kaiming uniform: :math:`\mathcal U[-b, b]`, :math:`b = \sqrt 3\, g / \sqrt{\text{fan}}`.

    :func:`he_normal`'s standard deviation with a uniform law. Same numbers as
    ``torch.nn.init.kaiming_uniform_`` with the same nonlinearity. Arguments as for
    :func:`he_normal`.

    Example:
        >>> weight = he_uniform(nonlinearity="leaky_relu", negative_slope=0.2)(torch.empty(64, 32))

    Reference:
        He et al., ICCV 2015.
    """
    gain = _he_gain("he_uniform", mode, nonlinearity, negative_slope)
    return Initializer(
        "he_uniform",
        (("mode", mode), ("nonlinearity", nonlinearity), ("negative_slope", negative_slope)),
        lambda tensor, g, generator: _uniform_with_std(
            tensor, g / math.sqrt(_fan(tensor, mode)), generator
        ),
        gain=gain,
        default_gain=math.sqrt(2.0),
    )


def lecun_normal() -> Initializer:
    r"""LeCun normal: :math:`\mathcal N(0, 1 / \text{fan\_in})`.

    Unit-variance inputs give unit-variance outputs in a linear layer. This is the
    lectures' ``randn(n) / sqrt(n)``, which they call Xavier; Xavier proper averages the
    two fans (:func:`xavier_normal`). The initialization self-normalizing (SELU) networks
    need. The gain is always 1, whatever the caller offers. Same numbers as
    ``torch.nn.init.kaiming_normal_(w, nonlinearity="linear")``.

    Example:
        >>> weight = lecun_normal()(torch.empty(100, 400))
        >>> round(weight.std().item(), 2)  # 1 / sqrt(400)
        0.05

    Reference:
        LeCun, Bottou, Orr & Müller, "Efficient BackProp", 1998; Klambauer et al.,
        "Self-Normalizing Neural Networks", NeurIPS 2017.
    """
    return Initializer(
        "lecun_normal",
        (),
        lambda tensor, g, generator: nn.init.normal_(
            tensor, 0.0, g / math.sqrt(_fan(tensor, "fan_in")), generator
        ),
        gain=1.0,
        default_gain=1.0,
    )


def lecun_uniform() -> Initializer:
    r"""LeCun uniform: :math:`\mathcal U[-b, b]` with :math:`b = \sqrt{3 / \text{fan\_in}}`.

    :func:`lecun_normal`'s standard deviation with a uniform law; same numbers as
    ``torch.nn.init.kaiming_uniform_(w, nonlinearity="linear")``.

    Example:
        >>> bool(lecun_uniform()(torch.empty(10, 300)).abs().max() <= 0.1)
        True

    Reference:
        LeCun, Bottou, Orr & Müller, "Efficient BackProp", 1998.
    """
    return Initializer(
        "lecun_uniform",
        (),
        lambda tensor, g, generator: _uniform_with_std(
            tensor, g / math.sqrt(_fan(tensor, "fan_in")), generator
        ),
        gain=1.0,
        default_gain=1.0,
    )


def orthogonal(gain: float | None = None) -> Initializer:
    r"""A (semi-)orthogonal matrix times :math:`g`: :math:`W W^\top = g^2 I` (or :math:`W^\top W`).

    The tensor is viewed as a matrix of ``shape[0]`` rows; with fewer rows than columns
    the rows are orthonormal, otherwise the columns. Every singular value is :math:`g`,
    so a deep linear network neither shrinks nor amplifies any direction. The pre-step of
    :func:`lsuv`. Same numbers as ``torch.nn.init.orthogonal_`` (QR of a Gaussian matrix,
    signs fixed so the law is uniform); float16 and bfloat16 tensors, for which torch has
    no QR, get that float32 matrix rounded to their dtype. A non-contiguous tensor (a
    ``channels_last`` conv weight, a permuted view) gets the matrix a contiguous one would.

    Args:
        gain: :math:`g`; ``None`` takes the gain offered by the caller, else 1.

    Example:
        >>> weight = orthogonal()(torch.empty(3, 5))
        >>> torch.allclose(weight @ weight.T, torch.eye(3), atol=1e-6)
        True

    Reference:
        Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of learning
        in deep linear neural networks", ICLR 2014.
    """
    check("gain", "orthogonal", gain, _OPTIONAL_GAIN)
    return Initializer(
        "orthogonal",
        (("gain", gain),),
        _orthogonal,
        gain=gain,
        default_gain=1.0,
    )


def _orthogonal(tensor: Tensor, gain: float, generator: torch.Generator | None) -> Tensor:
    full_precision = torch.finfo(tensor.dtype).bits >= 32
    if full_precision and tensor.is_contiguous():
        return nn.init.orthogonal_(tensor, gain, generator)
    # torch has no QR for float16 or bfloat16: draw the matrix in float32 and round it.
    # torch writes the matrix through tensor.view_as(matrix), which a channels_last conv
    # weight or a permuted view cannot give ("view size is not compatible"): draw into a
    # contiguous tensor (torch's draw does not depend on the layout) and copy it over.
    draw = torch.empty(
        tensor.shape,
        dtype=tensor.dtype if full_precision else torch.float32,
        device=tensor.device,
    )
    return tensor.copy_(nn.init.orthogonal_(draw, gain, generator))


NAMED_INITIALIZERS: dict[str, Callable[[], Initializer]] = {
    "zeros": zeros,
    "ones": ones,
    "normal": normal,
    "uniform": uniform,
    "xavier_normal": xavier_normal,
    "xavier_uniform": xavier_uniform,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "lecun_normal": lecun_normal,
    "lecun_uniform": lecun_uniform,
    "orthogonal": orthogonal,
}


def _he_gain(
    owner: str, mode: str, nonlinearity: str | None, negative_slope: float
) -> float | None:
    check("mode", owner, mode, _MODES)
    check("nonlinearity", owner, nonlinearity, OneOf((*NONLINEARITIES, None)))
    if nonlinearity == "leaky_relu":
        check("negative_slope", owner, negative_slope, FINITE)
        return calculate_gain("leaky_relu", negative_slope)
    check("negative_slope", owner, negative_slope, _ZERO_UNLESS_LEAKY)
    return None if nonlinearity is None else calculate_gain(nonlinearity)


_ZERO_UNLESS_LEAKY = Satisfies(
    lambda value: FINITE.is_satisfied_by(value) and value == 0,
    "0 unless nonlinearity='leaky_relu'",
)


def _fan(tensor: Tensor, mode: str) -> int:
    receptive_field = math.prod(tensor.shape[2:])
    return tensor.shape[1 if mode == "fan_in" else 0] * receptive_field


def _uniform_with_std(tensor: Tensor, std: float, generator: torch.Generator | None) -> Tensor:
    # torch.nn.init.kaiming_uniform_'s bound, computed the same way so the floats agree.
    bound = math.sqrt(3.0) * std
    return nn.init.uniform_(tensor, -bound, bound, generator)


def _check_tensor(tensor: object, owner: str, *, random: bool) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(
            f"The 'tensor' parameter of {owner} must be a torch.Tensor. "
            f"Got {type(tensor).__name__} instead."
        )
    if random and not tensor.is_floating_point():
        raise ValueError(
            f"The 'tensor' parameter of {owner} must be a floating-point tensor. "
            f"Got a tensor of dtype {tensor.dtype} instead."
        )


def _check_generator(generator: object, tensor: Tensor, owner: str) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"The 'generator' parameter of {owner} must be a torch.Generator or None. "
            f"Got {type(generator).__name__} instead."
        )
    if generator.device.type != tensor.device.type:
        raise ValueError(
            f"The 'generator' parameter of {owner} must be a torch.Generator on the tensor's "
            f"device ({tensor.device}). Got a generator on {generator.device} instead."
        )
