"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from gradwise._validation import NON_NEGATIVE, POSITIVE, Boolean
from gradwise.optim._learning_rate import LEARNING_RATE, scale_by_learning_rate
from gradwise.optim._optimizer import Implementation, Optimizer
from gradwise.optim._sgd import scale_by_momentum
from gradwise.optim._transform import GradientTransform, chain, masked
from gradwise.optim._trust_ratio import scale_by_trust_ratio
from gradwise.schedules import Schedule


def _is_matrix_or_higher(param: Tensor) -> bool:
    return param.ndim > 1


def _lars(
    lr: float | Schedule,
    momentum: float,
    weight_decay: float,
    trust_coefficient: float,
    exclude_1d_params: bool,
) -> GradientTransform:
    trust_ratio = scale_by_trust_ratio(trust_coefficient, weight_decay)
    if exclude_1d_params:
        trust_ratio = masked(trust_ratio, _is_matrix_or_higher)
    transforms = [trust_ratio, scale_by_learning_rate(lr)]
    if momentum != 0:
        # After the learning rate: the paper's buffer holds lr * local_lr * (g + wd * w).
        transforms.append(scale_by_momentum(momentum))
    return chain(*transforms)


class LARS(Optimizer):
    r"""LARS: SGD with momentum and a per-layer learning rate from the trust ratio.

    .. math::
        \lambda^l = \eta\,\frac{\lVert w^l\rVert}{\lVert g^l\rVert + \beta\lVert w^l\rVert},
        \qquad v \leftarrow m\, v + \gamma_t\, \lambda^l\, (g^l + \beta w^l),
        \qquad w^l \leftarrow w^l - v

    with :math:`\eta` the ``trust_coefficient`` (default 0.001), :math:`\beta` the
    ``weight_decay``, :math:`m` the ``momentum`` and :math:`\gamma_t` the ``lr``, as in
    Algorithm 1 of the paper. Conventions:

    - The learning rate sits INSIDE the momentum buffer (unlike torch.optim.SGD), and the
      buffer starts at zero, so the first step stores :math:`\gamma\lambda(g + \beta w)`,
      never the raw gradient. The two forms differ once the learning rate changes.
    - The trust ratio applies whether or not ``weight_decay`` is zero.
    - :math:`\lambda^l = 1` when :math:`\lVert w^l\rVert = 0` or :math:`\lVert g^l\rVert = 0`
      (see :func:`scale_by_trust_ratio`).
    - With ``exclude_1d_params=True`` (default), tensors with fewer than two dimensions
      (biases, normalization scales) get neither the trust ratio nor weight decay: their
      buffer accumulates :math:`\gamma_t g`. The test is on the tensor's shape, so a
      complex 1-D parameter (stepped as its real view) is not excluded.

    Chain: ``masked(scale_by_trust_ratio(trust_coefficient, weight_decay), ndim > 1)``,
    ``scale_by_learning_rate(lr)``, ``scale_by_momentum(momentum)``. Because the learning
    rate is applied before the momentum, ``state[p]["momentum_buffer"]`` holds
    :math:`-v`, the step added to the parameter.

    Example:
        >>> import torch
        >>> from gradwise.optim import LARS
        >>> opt = LARS(torch.nn.Linear(4, 2).parameters(), lr=1.0, weight_decay=5e-4)

    Reference: You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks",
    arXiv:1708.03888, 2017.
    """

    hyperparameter_constraints = {
        "lr": LEARNING_RATE,
        "momentum": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
        "trust_coefficient": POSITIVE,
        "exclude_1d_params": Boolean(),
    }

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Schedule = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        exclude_1d_params: bool = True,
        *,
        implementation: Implementation = "auto",
    ) -> None:
        super().__init__(
            params,
            _lars,
            implementation=implementation,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            exclude_1d_params=exclude_1d_params,
        )
