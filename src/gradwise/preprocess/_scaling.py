r"""Element-wise preprocessing: rescaling, mean subtraction, standardization, min-max scaling.

Statistics are taken ``per`` feature (over the samples: every position of an image is a
feature), per channel (over the samples and every trailing dim of ``(N, C, ...)`` data,
one value per channel), globally (one value), or per sample (each sample's own mean).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, final

import torch
from torch import Tensor

from gradwise._validation import NON_NEGATIVE, Boolean, OneOf, Satisfies
from gradwise.preprocess._base import NoInverseError, Transformer, warn_constant

_STATISTICS = ("feature", "channel", "global")

# per -> what transform input must share with the fit data (Transformer._check_layout).
_LAYOUT = {"feature": "feature", "channel": "channel", "global": "any", "sample": "any"}


def _reduced_dims(x: Tensor, per: str) -> tuple[int, ...]:
    """The dims a ``per`` statistic averages over."""
    if per == "feature":
        return (0,)
    if per == "channel":
        return (0, *range(2, x.ndim))
    if per == "global":
        return tuple(range(x.ndim))
    return tuple(range(1, x.ndim))  # "sample"


def _expand(statistic: Tensor, x: Tensor, per: str) -> Tensor:
    """A learned statistic on ``x``'s device, shaped to broadcast against ``x``."""
    statistic = statistic.to(x.device)
    if per == "channel":
        return statistic.reshape(1, -1, *([1] * (x.ndim - 2)))  # (1, C, 1, ...)
    return statistic  # feature: the sample shape; global: 0-d


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, Real):
        return False
    return math.isfinite(value)


def _is_finite_nonzero(value: Any) -> bool:
    return _is_finite_number(value) and value != 0


def _is_range(value: Any) -> bool:
    return (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(map(_is_finite_number, value))
        and value[0] < value[1]
    )


FINITE_NONZERO = Satisfies(_is_finite_nonzero, "a finite non-zero float")
RANGE = Satisfies(_is_range, "a pair of finite floats (low, high) with low < high")


@final
class Rescale(Transformer):
    r"""Multiply every value by a constant: :math:`x' = a\,x`.

    The lectures' "simple rescaling": ``Rescale(1 / 255)`` maps 8-bit pixels to [0, 1], the
    range that default parameters such as the whitening ``eps`` assume. It learns nothing
    from the data; ``fit`` still has to be called (it checks the data and marks the
    transformer fitted, as for every transformer) and any sample shape is accepted
    afterwards. ``inverse_transform`` divides by :math:`a`.

    Args:
        factor: :math:`a`, a finite non-zero float.

    Example:
        >>> import numpy as np
        >>> from gradwise.preprocess import Rescale
        >>> pixels = np.array([[0, 51, 255], [255, 102, 0]], dtype=np.uint8)
        >>> Rescale(1 / 255).fit_transform(pixels)
        array([[0. , 0.2, 1. ],
               [1. , 0.4, 0. ]], dtype=float32)
    """

    parameter_constraints = {"factor": FINITE_NONZERO}

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self._check_parameters()

    def _layout(self) -> str:
        return "any"

    def _fit(self, x: Tensor) -> None:
        pass

    def _transform(self, x: Tensor) -> Tensor:
        return x * self.factor

    def _inverse(self, x: Tensor) -> Tensor:
        return x / self.factor


@final
class MeanSubtract(Transformer):
    r"""Center the data: :math:`x' = x - \mu`.

    ``per="feature"`` subtracts each feature's mean over the training samples (the
    lectures' ``X -= np.mean(X, axis=0)``); ``"channel"`` one mean per channel of
    ``(N, C, ...)`` data; ``"global"`` one mean over everything (``X -= np.mean(X)``);
    ``"sample"`` each sample's own mean over its values, which needs no statistics: ``fit``
    only marks the transformer fitted, and there is no ``inverse_transform`` (the means are
    not kept).

    Fit on the training split only: statistics computed on validation or test data leak
    information about them into training.

    Args:
        per: ``"feature"`` (default), ``"sample"``, ``"channel"`` or ``"global"``.

    Attributes:
        mean_: the subtracted mean (float64 tensor): the sample shape for ``"feature"``,
            ``(C,)`` for ``"channel"``, 0-d for ``"global"``; absent for ``"sample"``.

    Example:
        >>> import torch
        >>> from gradwise.preprocess import MeanSubtract
        >>> train = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
        >>> centering = MeanSubtract().fit(train)
        >>> centering.transform(torch.tensor([[2.0, 0.0]]))
        tensor([[  0., -20.]])
    """

    parameter_constraints = {"per": OneOf(("feature", "sample", "channel", "global"))}

    mean_: Tensor

    def __init__(self, per: str = "feature") -> None:
        self.per = per
        self._check_parameters()

    def _layout(self) -> str:
        return _LAYOUT[self.per]

    def _fit(self, x: Tensor) -> None:
        if self.per != "sample":
            self.mean_ = x.mean(dim=_reduced_dims(x, self.per))

    def _transform(self, x: Tensor) -> Tensor:
        if self.per == "sample":
            return x - x.mean(dim=_reduced_dims(x, "sample"), keepdim=True)
        return x - _expand(self.mean_, x, self.per)

    def _inverse(self, x: Tensor) -> Tensor:
        if self.per == "sample":
            raise NoInverseError(
                "MeanSubtract(per='sample') has no inverse_transform: it does not keep each "
                "sample's mean. Use per='feature', 'channel' or 'global' to undo centering."
            )
        self._check_layout(x, self._layout())
        return x + _expand(self.mean_, x, self.per)


@final
class Standardize(Transformer):
    r"""Center and scale to unit variance: :math:`x' = (x - \mu) / \sqrt{\sigma^2 + \epsilon}`.

    :math:`\mu` and :math:`\sigma^2` are the mean and the population variance (divided by
    :math:`N`, as in scikit-learn's ``StandardScaler``) of each feature, of each channel
    of ``(N, C, ...)`` data (torchvision's ``Normalize`` with the training set's channel
    statistics), or of all values. A constant feature (every training value equal, or
    equal up to rounding: a variance within scikit-learn's bound on its rounding error)
    would divide by zero or blow rounding noise up to unit variance: its scale is set to 1
    instead, so it is only centered, and a :class:`ConstantFeatureWarning` names it.

    Fit on the training split only: statistics computed on validation or test data leak
    information about them into training.

    Args:
        per: ``"feature"`` (default), ``"channel"`` or ``"global"``.
        with_mean: subtract :math:`\mu` (default True).
        with_std: divide by :math:`\sqrt{\sigma^2 + \epsilon}` (default True).
        eps: :math:`\epsilon \ge 0` added to the variance (default 0, scikit-learn's
            numbers); a small positive value tames features with a tiny spread.

    Attributes:
        mean_, var_: :math:`\mu` and :math:`\sigma^2` (float64 tensors shaped like the
            statistic: the sample shape, ``(C,)``, or 0-d).
        scale_: the divisor applied: :math:`\sqrt{\sigma^2 + \epsilon}`, 1 for constant
            features, all ones when ``with_std=False``.

    Example:
        >>> import numpy as np
        >>> from gradwise.preprocess import Standardize
        >>> train = np.array([[0.0, 10.0], [2.0, 20.0], [4.0, 30.0]])  # std 1.63 and 8.16
        >>> Standardize().fit(train).transform(np.array([[2.0, 20.0], [6.0, 10.0]]))
        array([[ 0.        ,  0.        ],
               [ 2.44948974, -1.22474487]])
    """

    parameter_constraints = {
        "per": OneOf(_STATISTICS),
        "with_mean": Boolean(),
        "with_std": Boolean(),
        "eps": NON_NEGATIVE,
    }

    mean_: Tensor
    var_: Tensor
    scale_: Tensor

    def __init__(
        self,
        per: str = "feature",
        with_mean: bool = True,
        with_std: bool = True,
        eps: float = 0.0,
    ) -> None:
        self.per = per
        self.with_mean = with_mean
        self.with_std = with_std
        self.eps = eps
        self._check_parameters()

    def _layout(self) -> str:
        return _LAYOUT[self.per]

    def _fit(self, x: Tensor) -> None:
        dims = _reduced_dims(x, self.per)
        self.var_, self.mean_ = torch.var_mean(x, dim=dims, correction=0)
        if not self.with_std:
            self.scale_ = torch.ones_like(self.var_)
            return
        # Constant up to rounding: scikit-learn's bound on the rounding error of the
        # variance (its _is_constant_feature), so that a column equal to 1 up to an ulp
        # is not stretched into a full-scale feature.
        count = x.numel() // max(self.var_.numel(), 1)
        eps = torch.finfo(self.var_.dtype).eps
        bound = count * eps * self.var_ + (count * self.mean_ * eps) ** 2
        constant = (self.var_ <= bound) | (x.amax(dim=dims) == x.amin(dim=dims))
        warn_constant(
            "Standardize",
            constant,
            "channel" if self.per == "channel" else "feature",
            "their scale is set to 1 (they are only centered). Drop them or check the data.",
        )
        scale = torch.sqrt(self.var_ + self.eps)
        self.scale_ = torch.where(constant, torch.ones_like(scale), scale)

    def _transform(self, x: Tensor) -> Tensor:
        if self.with_mean:
            x = x - _expand(self.mean_, x, self.per)
        if self.with_std:
            x = x / _expand(self.scale_, x, self.per)
        return x

    def _inverse(self, x: Tensor) -> Tensor:
        self._check_layout(x, self._layout())
        if self.with_std:
            x = x * _expand(self.scale_, x, self.per)
        if self.with_mean:
            x = x + _expand(self.mean_, x, self.per)
        return x


@final
class MinMaxScale(Transformer):
    r"""Map the training range onto ``feature_range``: :math:`x' = x\,s + m`.

    With :math:`[a, b]` = ``feature_range`` and the training minimum and maximum
    :math:`x_{min}, x_{max}`: :math:`s = (b - a) / (x_{max} - x_{min})` and
    :math:`m = a - x_{min} s`, scikit-learn's ``MinMaxScaler`` formula. Use (0, 1) or the
    lectures' (-1, 1). Values outside the training range map outside ``feature_range``
    (no clipping). A constant feature (a range below 10 ulps of 1, as in scikit-learn, or
    of its largest magnitude when that exceeds 1) gets :math:`s = b - a` (a range of 1),
    so its training value maps to the low end :math:`a`, and a
    :class:`ConstantFeatureWarning` names it.

    Fit on the training split only: statistics computed on validation or test data leak
    information about them into training.

    Args:
        feature_range: the target :math:`(a, b)` with :math:`a < b`; default (0, 1).
        per: ``"feature"`` (default), ``"channel"`` or ``"global"``.

    Attributes:
        data_min_, data_max_: :math:`x_{min}, x_{max}` per statistic.
        scale_, min_: :math:`s` and :math:`m`.

    Example:
        >>> import torch
        >>> from gradwise.preprocess import MinMaxScale
        >>> train = torch.tensor([[0.0, 10.0], [5.0, 20.0], [10.0, 30.0]])
        >>> MinMaxScale((-1, 1)).fit_transform(train)
        tensor([[-1., -1.],
                [ 0.,  0.],
                [ 1.,  1.]])
    """

    parameter_constraints = {"feature_range": RANGE, "per": OneOf(_STATISTICS)}

    data_min_: Tensor
    data_max_: Tensor
    scale_: Tensor
    min_: Tensor

    def __init__(self, feature_range: tuple[float, float] = (0, 1), per: str = "feature") -> None:
        self.feature_range = feature_range
        self.per = per
        self._check_parameters()

    def _layout(self) -> str:
        return _LAYOUT[self.per]

    def _fit(self, x: Tensor) -> None:
        low, high = (float(bound) for bound in self.feature_range)
        dims = _reduced_dims(x, self.per)
        self.data_min_, self.data_max_ = x.amin(dim=dims), x.amax(dim=dims)
        data_range = self.data_max_ - self.data_min_
        # Constant up to rounding: scikit-learn's range below 10 ulps of 1 (its
        # _handle_zeros_in_scale), and below 10 ulps of the values where they exceed 1.
        magnitude = torch.maximum(self.data_min_.abs(), self.data_max_.abs()).clamp(min=1.0)
        constant = data_range < 10 * torch.finfo(data_range.dtype).eps * magnitude
        warn_constant(
            "MinMaxScale",
            constant,
            "channel" if self.per == "channel" else "feature",
            f"their range is taken as 1, so they map to {low:g}. Drop them or check the data.",
        )
        self.scale_ = (high - low) / torch.where(constant, 1.0, data_range)
        self.min_ = low - self.data_min_ * self.scale_

    def _transform(self, x: Tensor) -> Tensor:
        return x * _expand(self.scale_, x, self.per) + _expand(self.min_, x, self.per)

    def _inverse(self, x: Tensor) -> Tensor:
        self._check_layout(x, self._layout())
        return (x - _expand(self.min_, x, self.per)) / _expand(self.scale_, x, self.per)
