"""Seeded, per-sample data augmentation for batches of images (N, C, H, W) and signals (N, C, L).

Every augmentation is an ``nn.Module`` that draws from its own generators, never from
torch's global one, and is the identity in eval mode (``.eval()``). Compose them with
``torch.nn.Sequential``. Those that bring in values from outside the input (shift, crop,
rotation) fill them with ``fill``: 0 by default, which is black or silence on raw data but
the mean on standardized data; pass the value that means "nothing" where they run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, final

import torch
import torch.nn.functional as F
from kornia.geometry.transform import rotate
from torch import Tensor, nn

from gradwise._validation import (
    HALF_OPEN_UNIT_INTERVAL,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    UNIT_INTERVAL,
    Either,
    Interval,
    OneOf,
    PairOf,
    Satisfies,
    check,
)

_SHAPES = {3: "a batch of signals (N, C, L)", 4: "a batch of images (N, C, H, W)"}
_SEED = Either((NON_NEGATIVE_INT, Satisfies(lambda v: v is None, "None")))
_TORCH_PADDING_MODES = {
    "constant": "constant",
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
}


def _is_fill(value: Any) -> bool:
    if isinstance(value, Tensor):
        return value.is_floating_point() and value.ndim <= 3 and bool(value.isfinite().all())
    return Interval(finite=True).is_satisfied_by(value)


FILL = Satisfies(
    _is_fill,
    "a finite float, or a float tensor of finite values that broadcasts to one sample "
    "((C, H, W) or (C, L))",
)


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def _fill_border(out: Tensor, coverage: Tensor, fill: float | Tensor, owner: str) -> Tensor:
    """``out`` (zero where nothing of the input landed) with ``fill`` there instead.

    ``coverage`` is the same augmentation applied to ones, (N, 1, ...): 1 where the output
    comes from the input, 0 where it comes from outside, in between where an interpolation
    mixed the two; the fill gets the rest of the weight, as padding with it would.
    """
    if isinstance(fill, Tensor):
        sample = tuple(out.shape[1:])
        if not _broadcasts_to(tuple(fill.shape), sample):
            raise ValueError(
                f"The 'fill' parameter of {owner} must broadcast to one sample of the batch, "
                f"{sample}. Got a tensor of shape {tuple(fill.shape)} instead."
            )
    if not out.is_floating_point():
        return _fill_integer_border(out, coverage, fill, owner)
    if isinstance(fill, Tensor):
        fill = fill.to(device=out.device, dtype=out.dtype)
    return out + (1 - coverage) * fill


def _fill_integer_border(out: Tensor, coverage: Tensor, fill: float | Tensor, owner: str) -> Tensor:
    """An integer batch (uint8 images): whole-pixel shifts make ``coverage`` 0 or 1, and
    the fill must be a value of the batch's dtype, or the result would turn float."""
    value = torch.as_tensor(fill, dtype=torch.float64, device=out.device)
    if out.dtype == torch.bool:
        low, high = 0, 1
    else:
        low, high = torch.iinfo(out.dtype).min, torch.iinfo(out.dtype).max
    if not bool(((value == value.round()) & (value >= low) & (value <= high)).all()):
        got = (
            f"a tensor with values from {float(value.min())!r} to {float(value.max())!r}"
            if isinstance(fill, Tensor)
            else repr(fill)
        )
        raise ValueError(
            f"The 'fill' parameter of {owner} must be a whole number in [{low}, {high}] for a "
            f"batch of dtype {out.dtype}. Got {got} instead."
        )
    return torch.where(coverage.bool(), out, value.to(out.dtype))


class _Augmentation(nn.Module):
    """Owns the generators: one per device, all seeded with the same seed."""

    #: The batches ``forward`` takes, by number of dimensions: 3 for signals (N, C, L),
    #: 4 for images (N, C, H, W); None for any batch. ``gradwise train`` reads it to refuse
    #: an augmentation that cannot take the preprocessed inputs before the first step.
    batch_ndims: ClassVar[tuple[int, ...] | None] = None

    def __init__(self, seed: int | None) -> None:
        super().__init__()
        check("seed", type(self).__name__, seed, _SEED)
        self.seed = seed
        # seed=None: one draw from torch's global generator, here and never in a call, so
        # torch.manual_seed(...) before construction makes a run reproducible (as it does
        # for nn.Linear's initial weights).
        self._seed = int(torch.randint(2**62, ())) if seed is None else int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device).manual_seed(self._seed)
        return self._generators[device]

    def get_rng_state(self) -> dict[str, Any]:
        """The state of this augmentation's generators, for checkpoints (tensors only).

        Kept out of ``state_dict`` on purpose: restoring a model's best weights must not
        rewind the augmentation's random sequence.
        """
        return {
            str(device): generator.get_state() for device, generator in self._generators.items()
        }

    def set_rng_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`get_rng_state`'s result: the next draws repeat those after it.

        The state replaces the whole set of generators: a device it has no generator for
        has none afterwards (its first use seeds a fresh one), so that putting back a state
        taken before the first call undoes a later load. Nothing changes when one fails.
        """
        generators: dict[torch.device, torch.Generator] = {}
        for name, generator_state in state.items():
            device = torch.device(name)
            generators[device] = torch.Generator(device)
            generators[device].set_state(generator_state)
        self._generators = generators

    def _check_batch(self, x: Tensor, ndims: tuple[int, ...] | None) -> None:
        """``x`` is a batch of ``ndims`` dimensions (:attr:`batch_ndims`); ``ndims=None``
        accepts any batch: a tensor with at least one dimension."""
        owner = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(
                f"The 'x' parameter of {owner} must be a tensor. Got {type(x).__name__} instead."
            )
        if ndims is None and x.ndim == 0:
            raise ValueError(
                f"The 'x' parameter of {owner} must be a batch, a tensor whose first dimension "
                "indexes samples. Got a 0-dim tensor instead."
            )
        if ndims is not None and x.ndim not in ndims:
            expected = " or ".join(_SHAPES[n] for n in ndims)
            raise ValueError(
                f"The 'x' parameter of {owner} must be {expected}. "
                f"Got a tensor of shape {tuple(x.shape)} instead."
            )

    def _check_floating(self, x: Tensor) -> None:
        if not x.is_floating_point():
            raise TypeError(
                f"The 'x' parameter of {type(self).__name__} must be a floating-point tensor. "
                f"Got a tensor of dtype {x.dtype} instead."
            )


@final
class RandomHorizontalFlip(_Augmentation):
    """Reverse the last axis of each sample with probability ``p``.

    Images (N, C, H, W) are mirrored left to right (the W axis); signals (N, C, L) are
    reversed in time. Each sample is flipped or not independently.

    Args:
        p: the probability that a sample is flipped, a float in [0, 1]; default 0.5.
        seed: seeds the augmentation's own generator, an int >= 0; None (default) draws it
            once from torch's global generator at construction.

    Example:
        >>> import torch
        >>> from gradwise.regularize import RandomHorizontalFlip
        >>> flip = RandomHorizontalFlip(p=1.0, seed=0)
        >>> flip(torch.tensor([[[1.0, 2.0, 3.0]]]))
        tensor([[[3., 2., 1.]]])
    """

    batch_ndims = (3, 4)

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        check("p", "RandomHorizontalFlip", p, UNIT_INTERVAL)
        super().__init__(seed)
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        self._check_batch(x, self.batch_ndims)
        if not self.training:
            return x
        flipped = torch.rand(x.shape[0], generator=self._generator(x.device), device=x.device)
        flipped = flipped < self.p  # (batch,)
        return torch.where(flipped.view(-1, *[1] * (x.ndim - 1)), x.flip(-1), x)

    def extra_repr(self) -> str:
        return f"p={self.p!r}, seed={self.seed!r}"


class _RandomTranslation(_Augmentation):
    """Shift each sample by whole pixels (per axis), filling the border by ``padding_mode``
    (``"constant"``: with ``fill``)."""

    batch_ndims = (3, 4)
    padding_mode: str
    fill: float | Tensor

    def _max_shifts(self, x: Tensor) -> list[int]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        self._check_batch(x, self.batch_ndims)
        if not self.training:
            return x
        max_shifts = self._max_shifts(x)
        generator = self._generator(x.device)
        shifts = [
            torch.randint(-s, s + 1, (x.shape[0],), generator=generator, device=x.device)
            for s in max_shifts
        ]
        out = _translate(x, shifts, max_shifts, self.padding_mode)
        if _TORCH_PADDING_MODES[self.padding_mode] != "constant" or _is_zero(self.fill):
            return out
        coverage = _translate(torch.ones_like(x[:, :1]), shifts, max_shifts, "constant")
        return _fill_border(out, coverage, self.fill, type(self).__name__)


def _is_zero(fill: float | Tensor) -> bool:
    return not isinstance(fill, Tensor) and fill == 0


def _translate(x: Tensor, shifts: list[Tensor], pads: list[int], padding_mode: str) -> Tensor:
    """``out[n, c, i] = x[n, c, i - shifts[n]]`` along each spatial axis, the border padded."""
    pad_widths: list[int] = []
    for pad in reversed(pads):  # F.pad takes the last axis first
        pad_widths += [pad, pad]
    mode = _TORCH_PADDING_MODES[padding_mode]
    out = F.pad(x, pad_widths, mode=mode) if any(pads) else x
    # Each axis is one gather: padded index (pad - shift) + i holds x[i - shift].
    for axis, (shift, pad) in enumerate(zip(shifts, pads, strict=True)):
        dim = 2 + axis
        length = x.shape[dim]
        index = (pad - shift)[:, None] + torch.arange(length, device=x.device)  # (batch, length)
        view = [x.shape[0]] + [1] * (x.ndim - 1)
        view[dim] = length
        target = list(out.shape)
        target[dim] = length
        out = out.gather(dim, index.view(view).expand(target))
    return out


@final
class RandomShift(_RandomTranslation):
    r"""Translate each sample by a random whole number of pixels, filling with ``fill``.

    Images move by independent shifts :math:`(k_H, k_W)`, signals by :math:`k_L`, each
    uniform on the integers in :math:`[-s, s]`, with ``out[..., i] = x[..., i - k]`` (a
    positive shift moves content down / right / later) and ``fill[..., i]`` (0 by
    default) where ``i - k`` falls outside the input: a translation, not a wrap-around
    ``torch.roll``. An int ``max_shift`` is in pixels; a float in [0, 1) is a fraction of
    each axis' length (:math:`s = \lfloor f \cdot \text{length} \rfloor`), like Keras'
    ``width_shift_range``, but the shifts stay whole pixels, so nothing is interpolated.
    ``RandomShift(s)`` with an int draws the same distribution as ``RandomCrop(s)``.

    Args:
        max_shift: :math:`s`, an int >= 0 (pixels) or a float in [0, 1) (a fraction).
        seed: seeds the augmentation's own generator, an int >= 0; None (default) draws it
            once from torch's global generator at construction.
        fill: the value of the positions that come from outside: a float (default 0), or
            a tensor that broadcasts to one sample, e.g. ``(C, 1, 1)`` per channel or
            ``(C, H, W)`` per position. 0 is black or silence on raw data, but the mean on
            standardized data.

    Example:
        >>> import torch
        >>> from gradwise.regularize import RandomShift
        >>> shift = RandomShift(max_shift=2, seed=0)
        >>> shift(torch.rand(8, 3, 32, 32)).shape
        torch.Size([8, 3, 32, 32])
    """

    padding_mode = "constant"

    def __init__(
        self, max_shift: int | float, seed: int | None = None, *, fill: float | Tensor = 0.0
    ) -> None:
        check("max_shift", "RandomShift", max_shift, _MAX_SHIFT)
        check("fill", "RandomShift", fill, FILL)
        super().__init__(seed)
        self.max_shift = max_shift
        self.fill = fill

    def _max_shifts(self, x: Tensor) -> list[int]:
        lengths = x.shape[2:]
        if isinstance(self.max_shift, int):
            return [min(self.max_shift, length) for length in lengths]
        # Rounded before the floor: 0.29 * 100 is 28.999999999999996 in floating point.
        return [math.floor(round(self.max_shift * length, 9)) for length in lengths]

    def extra_repr(self) -> str:
        return f"max_shift={self.max_shift!r}, {_fill_repr(self.fill)}seed={self.seed!r}"


def _fill_repr(fill: float | Tensor) -> str:
    if isinstance(fill, Tensor):
        return f"fill=<tensor of shape {tuple(fill.shape)}>, "
    return "" if fill == 0 else f"fill={fill!r}, "


_MAX_SHIFT = Either(
    (
        Satisfies(
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "an int >= 0 (pixels)",
        ),
        Satisfies(
            lambda v: isinstance(v, float) and HALF_OPEN_UNIT_INTERVAL.is_satisfied_by(v),
            "a float in [0, 1) (a fraction of the length)",
        ),
    )
)


@final
class RandomCrop(_RandomTranslation):
    r"""Pad each spatial side by ``padding``, then crop back to the input size at a random offset.

    The crop's corner is uniform over the :math:`(2p + 1)^2` positions of an image
    (:math:`2p + 1` of a signal), drawn per sample: the classic CIFAR augmentation
    (pad 4, crop 32). The output is the input shifted by :math:`p - \text{offset}` pixels
    along each axis with a border of ``padding_mode``: ``"constant"`` (``fill``),
    ``"zeros"`` (the same with ``fill=0``, torch's name), ``"reflect"`` (mirror without
    repeating the edge; needs ``padding`` smaller than each spatial length) or
    ``"replicate"`` (repeat the edge).

    Args:
        padding: :math:`p`, an int >= 0.
        padding_mode: ``"constant"`` (default), ``"zeros"``, ``"reflect"`` or
            ``"replicate"``.
        seed: seeds the augmentation's own generator, an int >= 0; None (default) draws it
            once from torch's global generator at construction.
        fill: the border's value with ``padding_mode="constant"``, as for
            :class:`RandomShift`: a float (default 0) or a tensor that broadcasts to one
            sample. 0 is black on raw images, but the mean on standardized ones.

    Example:
        >>> import torch
        >>> from gradwise.regularize import RandomCrop
        >>> crop = RandomCrop(padding=4, seed=0)
        >>> crop(torch.rand(8, 3, 32, 32)).shape
        torch.Size([8, 3, 32, 32])
    """

    def __init__(
        self,
        padding: int,
        padding_mode: Literal["constant", "zeros", "reflect", "replicate"] = "constant",
        seed: int | None = None,
        *,
        fill: float | Tensor = 0.0,
    ) -> None:
        check("padding", "RandomCrop", padding, NON_NEGATIVE_INT)
        check("padding_mode", "RandomCrop", padding_mode, OneOf(tuple(_TORCH_PADDING_MODES)))
        check("fill", "RandomCrop", fill, FILL)
        if padding_mode != "constant" and not _is_zero(fill):
            raise ValueError(
                f"The 'fill' parameter of RandomCrop is the border of padding_mode='constant'"
                f"; padding_mode={padding_mode!r} has no use for it. Pass "
                "padding_mode='constant' to fill the border, or leave fill at 0."
            )
        super().__init__(seed)
        self.padding = int(padding)
        self.padding_mode = padding_mode
        self.fill = fill

    def _max_shifts(self, x: Tensor) -> list[int]:
        smallest = min(x.shape[2:])
        if self.padding_mode == "reflect" and self.padding >= smallest:
            raise ValueError(
                "The 'padding' parameter of RandomCrop must be smaller than every spatial "
                f"length with padding_mode='reflect'. Got {self.padding!r} instead, for a "
                f"tensor of shape {tuple(x.shape)}."
            )
        return [self.padding] * (x.ndim - 2)

    def extra_repr(self) -> str:
        return (
            f"padding={self.padding!r}, padding_mode={self.padding_mode!r}, "
            f"{_fill_repr(self.fill)}seed={self.seed!r}"
        )


@final
class RandomRotation(_Augmentation):
    """Rotate each image about its centre by a random angle, in degrees, filling with ``fill``.

    The angle is uniform on :math:`[-d, d]` for ``degrees=d``, or on :math:`[a, b]` for
    ``degrees=(a, b)``, drawn per image; a positive angle turns the picture
    counter-clockwise as displayed (with row 0 at the top), so 90 degrees is
    ``torch.rot90(x, 1, dims=(-2, -1))``. The centre is the middle of the pixel grid,
    :math:`((W - 1)/2, (H - 1)/2)`; pixels are resampled by ``interpolation`` (kornia's
    ``rotate``, with ``align_corners=True``). Corners that come from outside the image
    are ``fill`` (pixels on the edge mix it in as they would mix a padding of it). Images
    only: a signal has no plane to rotate in.

    Args:
        degrees: :math:`d`, a float in [0, 180], or a pair :math:`(a, b)` in [-180, 180].
        interpolation: ``"bilinear"`` (default) or ``"nearest"``.
        seed: seeds the augmentation's own generator, an int >= 0; None (default) draws it
            once from torch's global generator at construction.
        fill: the value of what comes from outside, as for :class:`RandomShift`: a float
            (default 0) or a tensor that broadcasts to one image. 0 is black on raw
            images, but the mean on standardized ones.

    Example:
        >>> import torch
        >>> from gradwise.regularize import RandomRotation
        >>> rotation = RandomRotation(degrees=15.0, seed=0)
        >>> rotation(torch.rand(8, 1, 28, 28)).shape
        torch.Size([8, 1, 28, 28])
    """

    batch_ndims = (4,)

    def __init__(
        self,
        degrees: float | tuple[float, float],
        interpolation: Literal["bilinear", "nearest"] = "bilinear",
        seed: int | None = None,
        *,
        fill: float | Tensor = 0.0,
    ) -> None:
        check("degrees", "RandomRotation", degrees, _DEGREES)
        check("interpolation", "RandomRotation", interpolation, OneOf(("bilinear", "nearest")))
        check("fill", "RandomRotation", fill, FILL)
        super().__init__(seed)
        self.degrees = degrees
        self.interpolation = interpolation
        self.fill = fill
        if isinstance(degrees, tuple | list):
            self._low, self._high = float(degrees[0]), float(degrees[1])
        else:
            self._low, self._high = -float(degrees), float(degrees)

    def forward(self, x: Tensor) -> Tensor:
        self._check_batch(x, self.batch_ndims)
        self._check_floating(x)
        if not self.training:
            return x
        generator = self._generator(x.device)
        uniform = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        angles = self._low + (self._high - self._low) * uniform  # (batch,) degrees
        out = rotate(x, angles, mode=self.interpolation, padding_mode="zeros")
        if _is_zero(self.fill):
            return out
        coverage = rotate(torch.ones_like(x[:, :1]), angles, mode=self.interpolation)
        return _fill_border(out, coverage, self.fill, "RandomRotation")

    def extra_repr(self) -> str:
        return (
            f"degrees={self.degrees!r}, interpolation={self.interpolation!r}, "
            f"{_fill_repr(self.fill)}seed={self.seed!r}"
        )


_DEGREES = Either(
    (
        Interval(low=0.0, high=180.0),
        Satisfies(
            lambda v: PairOf(Interval(low=-180.0, high=180.0)).is_satisfied_by(v) and v[0] <= v[1],
            "a pair (low, high) with -180 <= low <= high <= 180",
        ),
    )
)


@final
class GaussianNoise(_Augmentation):
    r"""Add independent Gaussian noise to every element: :math:`x + \sigma \varepsilon`.

    :math:`\varepsilon \sim \mathcal{N}(0, 1)` is drawn per element on the input's device,
    from a generator for that device (so CPU and GPU runs draw different, equally
    reproducible noise). Works on any floating-point batch, not only images and signals.

    Args:
        std: :math:`\sigma`, a finite float >= 0.
        seed: seeds the augmentation's own generators, an int >= 0; None (default) draws it
            once from torch's global generator at construction.

    Example:
        >>> import torch
        >>> from gradwise.regularize import GaussianNoise
        >>> noise = GaussianNoise(std=0.1, seed=0)
        >>> noisy = noise(torch.zeros(4, 1, 100))
        >>> noise.eval()(noisy).equal(noisy)  # identity in eval mode
        True
    """

    def __init__(self, std: float, seed: int | None = None) -> None:
        check("std", "GaussianNoise", std, NON_NEGATIVE)
        super().__init__(seed)
        self.std = std

    def forward(self, x: Tensor) -> Tensor:
        self._check_batch(x, self.batch_ndims)
        self._check_floating(x)
        if not self.training:
            return x
        noise = torch.randn(
            x.shape, generator=self._generator(x.device), device=x.device, dtype=x.dtype
        )
        return x + self.std * noise

    def extra_repr(self) -> str:
        return f"std={self.std!r}, seed={self.seed!r}"
