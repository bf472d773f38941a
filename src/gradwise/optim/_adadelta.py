"""AdaDelta."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor

from gradwise._validation import NON_NEGATIVE, UNIT_INTERVAL, Boolean, check
from gradwise.optim import _torch_kernels
from gradwise.optim._learning_rate import LEARNING_RATE
from gradwise.optim._optimizer import Implementation, Optimizer, implementation_from_torch_flags
from gradwise.optim._torch_convention import torch_optim_chain
from gradwise.optim._transform import (
    GradientTransform,
    Params,
    State,
    Updates,
    step_counters,
    zeros_like_each,
)
from gradwise.schedules import Schedule


def scale_by_adadelta(rho: float = 0.9, eps: float = 1e-6) -> GradientTransform:
    r"""AdaDelta's unit-corrected step, torch.optim.Adadelta's convention.

    .. math::
        s_t = \rho s_{t-1} + (1-\rho) g_t^2, \qquad
        u_t = \frac{\sqrt{d_{t-1} + \epsilon}}{\sqrt{s_t + \epsilon}}\, g_t, \qquad
        d_t = \rho d_{t-1} + (1-\rho) u_t^2

    ``eps`` sits inside both square roots. The ratio of RMS values gives the update the
    units of the parameters, so AdaDelta needs no learning rate in the paper; torch (and
    this) still multiplies by ``lr``, default 1.0. State per parameter: ``step``,
    ``square_avg`` (:math:`s`), ``acc_delta`` (:math:`d`).

    Reference: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012.
    """
    check("rho", "scale_by_adadelta", rho, UNIT_INTERVAL)
    check("eps", "scale_by_adadelta", eps, NON_NEGATIVE)

    def init(params: Params) -> State:
        return {
            "step": step_counters(params),
            "square_avg": zeros_like_each(params),
            "acc_delta": zeros_like_each(params),
        }

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        square_avgs = [
            rho * s + (1 - rho) * g * g for s, g in zip(state["square_avg"], updates, strict=True)
        ]
        deltas = [
            (d + eps).sqrt() / (s + eps).sqrt() * g
            for d, s, g in zip(state["acc_delta"], square_avgs, updates, strict=True)
        ]
        acc_deltas = [
            rho * d + (1 - rho) * u * u for d, u in zip(state["acc_delta"], deltas, strict=True)
        ]
        new = {
            "step": [step + 1 for step in state["step"]],
            "square_avg": square_avgs,
            "acc_delta": acc_deltas,
        }
        return deltas, new

    return GradientTransform(init, update, "scale_by_adadelta")


def _adadelta(
    lr: float | Schedule, rho: float, eps: float, weight_decay: float, maximize: bool
) -> GradientTransform:
    return torch_optim_chain(
        scale_by_adadelta(rho, eps), lr=lr, weight_decay=weight_decay, maximize=maximize
    )


class Adadelta(Optimizer):
    r"""AdaDelta; torch.optim.Adadelta's keyword names, defaults and numbers.

    .. math::
        s \leftarrow \rho s + (1-\rho) g^2, \quad
        u = \frac{\sqrt{d + \epsilon}}{\sqrt{s + \epsilon}} g, \quad
        d \leftarrow \rho d + (1-\rho) u^2, \quad \theta \leftarrow \theta - \eta u

    Chain: ``add_l2(weight_decay)``, ``scale_by_adadelta(rho, eps)``,
    ``scale_by_learning_rate(lr)``. Defaults lr=1.0, rho=0.9, eps=1e-6 (torch's; optax's
    default lr=None ascends, a known bug this avoids). torch has no fused Adadelta: the
    default path (``implementation="auto"`` or ``"fused"``) runs torch's own implementation
    on the same state; ``"compiled"`` fuses it.

    Example:
        >>> import torch
        >>> from gradwise.optim import Adadelta
        >>> opt = Adadelta(torch.nn.Linear(4, 2).parameters())
    """

    hyperparameter_constraints = {
        "lr": LEARNING_RATE,
        "rho": UNIT_INTERVAL,
        "eps": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
        "maximize": Boolean(),
    }
    has_fused_kernel = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Schedule = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
        implementation: Implementation = "auto",
    ) -> None:
        super().__init__(
            params,
            _adadelta,
            implementation=implementation_from_torch_flags(
                "Adadelta",
                implementation,
                foreach=foreach,
                capturable=capturable,
                differentiable=differentiable,
            ),
            lr=lr,
            rho=rho,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
        )

    def _fused_step(
        self,
        group: Mapping[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
    ) -> None:
        _torch_kernels.adadelta(
            params,
            grads,
            _torch_kernels.state_tensors(states, "square_avg", params),
            _torch_kernels.state_tensors(states, "acc_delta", params),
            [state["step"] for state in states],
            foreach=None,  # torch's choice: foreach on a GPU, one tensor at a time on the CPU
            lr=group["lr"],
            rho=group["rho"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
        )
