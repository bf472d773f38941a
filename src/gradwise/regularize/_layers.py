"""Normalization and dropout layers from torch.nn, chosen by name for model builders."""

from __future__ import annotations

from typing import Literal

from torch import nn

from gradwise._validation import HALF_OPEN_UNIT_INTERVAL, POSITIVE, POSITIVE_INT, OneOf, check

NormalizationKind = Literal["batch", "layer", "group", "instance"]
NORMALIZATION_KINDS: tuple[str | None, ...] = ("batch", "layer", "group", "instance", None)
_SPATIAL_DIMS = OneOf((0, 1, 2))


def normalization(
    kind: NormalizationKind | None,
    num_channels: int,
    spatial_dims: Literal[0, 1, 2] = 2,
    num_groups: int = 32,
    eps: float = 1e-5,
) -> nn.Module:
    r"""A normalization layer for features (N, C), signals (N, C, L) or images (N, C, H, W).

    Each normalizes :math:`\hat x = (x - \mu) / \sqrt{\sigma^2 + \epsilon}` over a
    different set of axes, then applies a learned per-channel scale and shift:

    ========== ================================== ======================================
    kind       statistics over                    torch.nn module
    ========== ================================== ======================================
    "batch"    N and the spatial axes, per C      ``BatchNorm1d`` (0 or 1), ``BatchNorm2d``
    "layer"    C and the spatial axes, per sample ``LayerNorm(C)`` (0), ``GroupNorm(1, C)``
    "group"    C/G channels and spatial axes      ``GroupNorm(num_groups, C)``
    "instance" the spatial axes, per sample and C ``InstanceNorm1d/2d(C, affine=True)``
    None       (nothing)                          ``Identity``
    ========== ================================== ======================================

    For feature maps, "layer" is ``GroupNorm(1, C)`` (Wu & He 2018): the statistics of
    ``nn.LayerNorm([C, H, W])`` with one scale and shift per channel instead of one per
    element, so the layer works at any spatial size. Instance normalization gets a learned
    scale and shift (torch's default has none), like the others.

    Args:
        kind: ``"batch"``, ``"layer"``, ``"group"``, ``"instance"`` or None.
        num_channels: :math:`C`, an int >= 1.
        spatial_dims: 0 for (N, C) features, 1 for signals, 2 (default) for images.
        num_groups: :math:`G` for ``"group"``, an int >= 1 dividing ``num_channels``;
            default 32 (Wu & He's default).
        eps: :math:`\epsilon`, a finite float > 0; default 1e-5 (torch's).

    Reference:
        Ioffe & Szegedy 2015 (batch); Ba, Kiros & Hinton 2016 (layer); Ulyanov, Vedaldi &
        Lempitsky 2016 (instance); Wu & He, "Group Normalization", ECCV 2018.

    Example:
        >>> from gradwise.regularize import normalization
        >>> layer = normalization("group", 64, spatial_dims=2, num_groups=8)
        >>> type(layer).__name__, layer.num_groups
        ('GroupNorm', 8)
        >>> normalization("layer", 64, spatial_dims=2).num_groups  # statistics over (C, H, W)
        1
    """
    check("kind", "normalization", kind, OneOf(NORMALIZATION_KINDS))
    check("num_channels", "normalization", num_channels, POSITIVE_INT)
    check("spatial_dims", "normalization", spatial_dims, _SPATIAL_DIMS)
    check("num_groups", "normalization", num_groups, POSITIVE_INT)
    check("eps", "normalization", eps, POSITIVE)
    if kind is None:
        return nn.Identity()
    if kind == "batch":
        batch_norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm1d
        return batch_norm(num_channels, eps)
    if kind == "layer" and spatial_dims == 0:
        return nn.LayerNorm(num_channels, eps)
    if kind == "layer":
        return nn.GroupNorm(1, num_channels, eps)
    if kind == "group":
        if num_channels % num_groups:
            raise ValueError(
                f"The 'num_groups' parameter of normalization must divide num_channels="
                f"{num_channels}. Got {num_groups!r} instead."
            )
        return nn.GroupNorm(num_groups, num_channels, eps)
    return _instance_norm(num_channels, spatial_dims, eps)


def _instance_norm(num_channels: int, spatial_dims: int, eps: float) -> nn.Module:
    if spatial_dims == 0:
        raise ValueError(
            "The 'spatial_dims' parameter of normalization must be 1 or 2 for "
            "kind='instance' (instance statistics run over spatial axes). Got 0 instead."
        )
    layer = nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm1d
    return layer(num_channels, eps, affine=True)


def dropout(p: float, spatial_dims: Literal[0, 1, 2] = 0) -> nn.Module:
    """A dropout layer: ``Dropout`` for features, ``Dropout1d`` / ``Dropout2d`` for feature maps.

    In training mode each element (``spatial_dims=0``) or each whole channel of a signal
    (1) or image (2) is zeroed with probability ``p`` and the rest are scaled by
    :math:`1/(1-p)` (inverted dropout), so eval mode is the identity. Dropping whole
    channels suits convolutional maps, whose neighbouring values are strongly correlated
    (Tompson et al. 2015).

    Args:
        p: the drop probability, a float in [0, 1).
        spatial_dims: 0 (default) for elements, 1 for signals (N, C, L), 2 for images.

    Reference:
        Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from
        Overfitting", JMLR 2014.

    Example:
        >>> from gradwise.regularize import dropout
        >>> dropout(0.5, spatial_dims=2)
        Dropout2d(p=0.5, inplace=False)
    """
    check("p", "dropout", p, HALF_OPEN_UNIT_INTERVAL)
    check("spatial_dims", "dropout", spatial_dims, _SPATIAL_DIMS)
    layers: dict[int, type[nn.Module]] = {0: nn.Dropout, 1: nn.Dropout1d, 2: nn.Dropout2d}
    return layers[spatial_dims](p)
