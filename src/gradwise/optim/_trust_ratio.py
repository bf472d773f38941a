"""Layer-wise trust ratio (LARS, LAMB): scale each tensor's update by ||w|| / ||u||."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gradwise._validation import NON_NEGATIVE, POSITIVE, check
from gradwise.optim._transform import GradientTransform, Params, stateless


def scale_by_trust_ratio(
    trust_coefficient: float | Tensor = 1.0, weight_decay: float | Tensor = 0.0
) -> GradientTransform:
    r"""Scale each tensor's update by its layer-wise trust ratio, adding weight decay first.

    .. math::
        \phi = \frac{\eta\,\lVert w\rVert_2}{\lVert u\rVert_2 + \lambda\lVert w\rVert_2},
        \qquad u \leftarrow \phi\,(u + \lambda w),

    per tensor, with :math:`\eta` the ``trust_coefficient`` and :math:`\lambda` the
    ``weight_decay``. The ratio is taken as :math:`\phi = 1` when :math:`\lVert w\rVert = 0`
    (a zero-initialized layer still moves, at the plain learning rate) or when
    :math:`\lVert u\rVert = 0` (there is no direction to trust; the update is then just
    :math:`\lambda w`), as timm and NVIDIA's LARS do. No clamping of :math:`\phi`.

    - LARS (You, Gitman & Ginsburg 2017): ``scale_by_trust_ratio(0.001, weight_decay)`` on
      the raw gradient gives the local learning rate times :math:`g + \lambda w`; the
      denominator is :math:`\lVert g\rVert + \lambda\lVert w\rVert` as in the paper, not
      :math:`\lVert g + \lambda w\rVert`.
    - LAMB (You et al. 2020): ``scale_by_trust_ratio()`` after the Adam direction and
      :func:`add_decayed_weights` gives :math:`\lVert w\rVert / \lVert r\rVert` with
      :math:`r` the decayed Adam direction. Any scalar applied before this transform
      cancels out of the product :math:`\phi u`; put the learning rate after it.

    Stateless. Norms are computed in the parameters' dtype.

    Example:
        >>> from gradwise.optim import chain, scale_by_adam, scale_by_learning_rate
        >>> from gradwise.optim import scale_by_trust_ratio
        >>> lamb_without_decay = chain(
        ...     scale_by_adam(), scale_by_trust_ratio(), scale_by_learning_rate(1e-3)
        ... )
    """
    check("trust_coefficient", "scale_by_trust_ratio", trust_coefficient, POSITIVE)
    check("weight_decay", "scale_by_trust_ratio", weight_decay, NON_NEGATIVE)

    def scale_each(updates: Sequence[Tensor], params: Params) -> list[Tensor]:
        scaled = []
        for u, w in zip(updates, params, strict=True):
            w_norm = torch.linalg.vector_norm(w)
            u_norm = torch.linalg.vector_norm(u)
            ratio = trust_coefficient * w_norm / (u_norm + weight_decay * w_norm)
            # torch.where rather than an `if`, so that compiled code does not branch on data.
            ratio = torch.where((w_norm > 0) & (u_norm > 0), ratio, 1.0)
            direction = u + weight_decay * w if _nonzero(weight_decay) else u
            scaled.append(direction * ratio.to(u.dtype))
        return scaled

    return stateless("scale_by_trust_ratio", scale_each)


def _nonzero(value: float | Tensor) -> bool:
    """Whether a coefficient can be nonzero; a tensor (a compiled hyperparameter) always can."""
    return isinstance(value, Tensor) or value != 0
