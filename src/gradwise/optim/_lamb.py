"""LAMB: Adam with a layer-wise trust ratio (You et al. 2020)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from gradwise._validation import NON_NEGATIVE
from gradwise.optim._adam import BETAS, scale_by_adam
from gradwise.optim._learning_rate import LEARNING_RATE, scale_by_learning_rate
from gradwise.optim._optimizer import Implementation, Optimizer
from gradwise.optim._transform import GradientTransform, chain
from gradwise.optim._trust_ratio import scale_by_trust_ratio
from gradwise.optim._weight_decay import add_decayed_weights
from gradwise.schedules import Schedule


def _lamb(
    lr: float | Schedule, betas: tuple[float, float], eps: float, weight_decay: float
) -> GradientTransform:
    transforms = [scale_by_adam(betas[0], betas[1], eps)]
    if weight_decay != 0:
        transforms.append(add_decayed_weights(weight_decay))
    # The learning rate must come after the trust ratio: a scalar before it cancels out.
    transforms += [scale_by_trust_ratio(), scale_by_learning_rate(lr)]
    return chain(*transforms)


class LAMB(Optimizer):
    r"""LAMB: the Adam direction plus decoupled weight decay, rescaled per layer.

    .. math::
        \hat m_t = \frac{m_t}{1-\beta_1^t}, \quad \hat v_t = \frac{v_t}{1-\beta_2^t}, \quad
        r_t = \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} + \lambda w, \quad
        w \leftarrow w - \eta_t\,\frac{\lVert w\rVert}{\lVert r_t\rVert}\, r_t

    per tensor (Algorithm 2 of the paper, with :math:`\phi` the identity: the ratio is not
    clamped). The ratio is taken as 1 when :math:`\lVert w\rVert = 0` or
    :math:`\lVert r_t\rVert = 0`. ``eps`` is added to :math:`\sqrt{\hat v_t}` as in
    torch's Adam (default 1e-6, the paper's). The trust ratio applies to every tensor,
    biases included; put parameters that should not be decayed in a group with
    ``weight_decay=0``.

    Chain: ``scale_by_adam(beta1, beta2, eps)``, ``add_decayed_weights(weight_decay)``,
    ``scale_by_trust_ratio()``, ``scale_by_learning_rate(lr)``. State per parameter is
    Adam's: ``step``, ``exp_avg``, ``exp_avg_sq``.

    Example:
        >>> import torch
        >>> from gradwise.optim import LAMB
        >>> opt = LAMB(torch.nn.Linear(4, 2).parameters(), lr=1e-3, weight_decay=1e-2)

    Reference: You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes", ICLR 2020.
    """

    hyperparameter_constraints = {
        "lr": LEARNING_RATE,
        "betas": BETAS,
        "eps": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
    }

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Schedule = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        implementation: Implementation = "auto",
    ) -> None:
        super().__init__(
            params,
            _lamb,
            implementation=implementation,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
        )
