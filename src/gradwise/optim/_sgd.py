"""Stochastic gradient descent with heavy-ball or Nesterov momentum."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor

from gradwise._validation import NON_NEGATIVE, UNIT_INTERVAL, Boolean, check
from gradwise.optim import _torch_kernels
from gradwise.optim._learning_rate import LEARNING_RATE
from gradwise.optim._optimizer import Implementation, Optimizer, implementation_from_torch_flags
from gradwise.optim._torch_convention import torch_optim_chain
from gradwise.optim._transform import GradientTransform, Params, State, Updates
from gradwise.schedules import Schedule


def scale_by_momentum(
    momentum: float = 0.9, dampening: float = 0.0, nesterov: bool = False
) -> GradientTransform:
    r"""Momentum in torch.optim.SGD's convention.

    .. math::
        b_1 = g_1, \qquad b_t = \mu\, b_{t-1} + (1 - \tau)\, g_t, \qquad
        u_t = \begin{cases} g_t + \mu\, b_t & \text{Nesterov} \\ b_t & \text{otherwise}\end{cases}

    The first step stores the gradient itself (no dampening), and the learning rate is
    applied after the buffer (by :func:`scale_by_learning_rate`), as in torch. The
    lectures' form :math:`v \leftarrow \alpha v - \epsilon g,\ \theta \leftarrow \theta + v`
    (Sutskever et al. 2013, Keras) keeps the learning rate inside the buffer: the two agree
    while the learning rate is constant and differ after it changes.
    State: ``momentum_buffer`` per parameter, ``None`` until the first update.
    """
    check("momentum", "scale_by_momentum", momentum, NON_NEGATIVE)
    check("dampening", "scale_by_momentum", dampening, UNIT_INTERVAL)

    def init(params: Params) -> State:
        return {"momentum_buffer": [None] * len(params)}

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        buffers = [
            g.clone() if buffer is None else momentum * buffer + (1 - dampening) * g
            for g, buffer in zip(updates, state["momentum_buffer"], strict=True)
        ]
        if nesterov:
            out = [g + momentum * b for g, b in zip(updates, buffers, strict=True)]
        else:
            out = list(buffers)
        return out, {"momentum_buffer": buffers}

    return GradientTransform(init, update, "scale_by_momentum")


def _sgd(
    lr: float | Schedule,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> GradientTransform:
    scaling = [scale_by_momentum(momentum, dampening, nesterov)] if momentum != 0 else []
    return torch_optim_chain(*scaling, lr=lr, weight_decay=weight_decay, maximize=maximize)


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with momentum; torch.optim.SGD's numbers.

    .. math::
        g \leftarrow \nabla f(\theta) + \lambda\theta, \quad
        b \leftarrow \mu b + (1-\tau) g \ (b_1 = g), \quad
        \theta \leftarrow \theta - \eta\,(g + \mu b \text{ if Nesterov else } b)

    Chain: ``add_l2(weight_decay)``, ``scale_by_momentum(momentum, dampening, nesterov)``,
    ``scale_by_learning_rate(lr)``. Weight decay is L2 added to the gradient (torch's
    convention; for SGD without momentum it equals decoupled decay). The learning rate
    sits outside the momentum buffer (see :func:`scale_by_momentum`). Keyword names and
    defaults are torch's; ``fused=True`` runs torch's fused kernel, ``foreach`` is accepted
    and has no effect.

    Example:
        >>> import torch
        >>> from gradwise.optim import SGD
        >>> model = torch.nn.Linear(4, 2)
        >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)

    Reference: Sutskever, Martens, Dahl & Hinton, "On the importance of initialization and
    momentum in deep learning", ICML 2013.
    """

    hyperparameter_constraints = {
        "lr": LEARNING_RATE,
        "momentum": NON_NEGATIVE,
        "dampening": UNIT_INTERVAL,
        "weight_decay": NON_NEGATIVE,
        "nesterov": Boolean(),
        "maximize": Boolean(),
    }
    has_fused_kernel = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Schedule = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        implementation: Implementation = "auto",
    ) -> None:
        super().__init__(
            params,
            _sgd,
            implementation=implementation_from_torch_flags(
                "SGD", implementation, foreach=foreach, fused=fused, differentiable=differentiable
            ),
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )

    def _check_relations(self, hyperparameters: Mapping[str, Any]) -> None:
        momentum, dampening = hyperparameters["momentum"], hyperparameters["dampening"]
        if hyperparameters["nesterov"] and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "The 'nesterov' parameter of SGD must be False unless momentum > 0 and "
                "dampening = 0. "
                f"Got nesterov=True with momentum={momentum!r} and dampening={dampening!r} "
                "instead; set a momentum (e.g. 0.9) or nesterov=False."
            )

    def _fused_step(
        self,
        group: Mapping[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
    ) -> None:
        buffers = [state.get("momentum_buffer") for state in states]
        # torch's fused kernel creates momentum buffers only when none of the list has one:
        # parameters stepping for the first time (a layer unused or frozen until now) and
        # those with buffers go through it separately (a mixed list is a TypeError).
        fresh = [i for i, buffer in enumerate(buffers) if buffer is None]
        if 0 < len(fresh) < len(buffers):
            running = [i for i, buffer in enumerate(buffers) if buffer is not None]
            for batch in (fresh, running):
                batch_buffers = [buffers[i] for i in batch]
                self._fused_kernel(
                    group, [params[i] for i in batch], [grads[i] for i in batch], batch_buffers
                )
                for i, buffer in zip(batch, batch_buffers, strict=True):
                    buffers[i] = buffer
        else:
            self._fused_kernel(group, params, grads, buffers)
        if group["momentum"] != 0:
            for state, buffer in zip(states, buffers, strict=True):
                state["momentum_buffer"] = buffer

    @staticmethod
    def _fused_kernel(
        group: Mapping[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        buffers: list[Tensor | None],
    ) -> None:
        """torch's fused SGD on these lists; it fills ``buffers`` when all are None."""
        _torch_kernels.sgd(
            params,
            grads,
            buffers,
            fused=True,
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            lr=group["lr"],
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
        )
