"""AdaGrad."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from gradwise._validation import NON_NEGATIVE, Boolean, check
from gradwise.optim import _torch_kernels
from gradwise.optim._learning_rate import LEARNING_RATE
from gradwise.optim._optimizer import Implementation, Optimizer, implementation_from_torch_flags
from gradwise.optim._scalars import per_step
from gradwise.optim._torch_convention import torch_optim_chain
from gradwise.optim._transform import (
    GradientTransform,
    Params,
    State,
    Updates,
    step_counters,
)
from gradwise.schedules import Schedule


def scale_by_adagrad(
    eps: float = 1e-10, initial_accumulator_value: float = 0.0, lr_decay: float = 0.0
) -> GradientTransform:
    r"""AdaGrad's per-coordinate scaling, torch.optim.Adagrad's convention.

    .. math::
        s_t = s_{t-1} + g_t^2, \qquad
        u_t = \frac{1}{1 + (t-1)\,\delta}\cdot\frac{g_t}{\sqrt{s_t} + \epsilon}

    The accumulator starts at ``initial_accumulator_value`` (torch: 0; optax and Keras
    start at 0.1 and put eps inside the square root). ``lr_decay`` (:math:`\delta`) is
    torch's per-parameter inverse-time decay. State per parameter: ``step``, ``sum``.

    Reference: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization", JMLR 2011.
    """
    check("eps", "scale_by_adagrad", eps, NON_NEGATIVE)
    check("initial_accumulator_value", "scale_by_adagrad", initial_accumulator_value, NON_NEGATIVE)
    check("lr_decay", "scale_by_adagrad", lr_decay, NON_NEGATIVE)

    def init(params: Params) -> State:
        return {
            "step": step_counters(params),
            "sum": [
                torch.full_like(p, initial_accumulator_value, memory_format=torch.preserve_format)
                for p in params
            ],
        }

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        steps = [step + 1 for step in state["step"]]
        sums = [s + g * g for s, g in zip(state["sum"], updates, strict=True)]
        decays = per_step(steps, lambda t: 1 + (t - 1) * lr_decay)
        out = [
            g / (s.sqrt() + eps) / decay for g, s, decay in zip(updates, sums, decays, strict=True)
        ]
        return out, {"step": steps, "sum": sums}

    return GradientTransform(init, update, "scale_by_adagrad")


def _adagrad(
    lr: float | Schedule,
    lr_decay: float,
    weight_decay: float,
    initial_accumulator_value: float,
    eps: float,
    maximize: bool,
) -> GradientTransform:
    return torch_optim_chain(
        scale_by_adagrad(eps, initial_accumulator_value, lr_decay),
        lr=lr,
        weight_decay=weight_decay,
        maximize=maximize,
    )


class Adagrad(Optimizer):
    r"""AdaGrad; torch.optim.Adagrad's keyword names, defaults and numbers.

    .. math::
        g \leftarrow \nabla f(\theta) + \lambda\theta, \quad s \leftarrow s + g^2, \quad
        \theta \leftarrow \theta - \frac{\eta}{1 + (t-1)\delta}\,\frac{g}{\sqrt{s} + \epsilon}

    Chain: ``add_l2(weight_decay)``, ``scale_by_adagrad(eps, initial_accumulator_value,
    lr_decay)``, ``scale_by_learning_rate(lr)``. ``eps`` (1e-10) sits outside the square
    root. The accumulated squares only grow, so the effective step size decays like
    :math:`1/\sqrt{t}`: AdaGrad often stops too early on deep nets (the lectures' motivation
    for RMSprop). State is created lazily on a parameter's first step (torch creates it in
    the constructor); the numbers are the same.

    Example:
        >>> import torch
        >>> from gradwise.optim import Adagrad
        >>> opt = Adagrad(torch.nn.Linear(4, 2).parameters(), lr=0.1)
    """

    hyperparameter_constraints = {
        "lr": LEARNING_RATE,
        "lr_decay": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
        "initial_accumulator_value": NON_NEGATIVE,
        "eps": NON_NEGATIVE,
        "maximize": Boolean(),
    }
    has_fused_kernel = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Schedule = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        implementation: Implementation = "auto",
    ) -> None:
        super().__init__(
            params,
            _adagrad,
            implementation=implementation_from_torch_flags(
                "Adagrad",
                implementation,
                foreach=foreach,
                fused=fused,
                differentiable=differentiable,
            ),
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            maximize=maximize,
        )

    def _fused_step(
        self,
        group: Mapping[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
    ) -> None:
        # torch has no fused Adagrad for CUDA tensors: its foreach kernels there.
        on_cuda = params[0].device.type == "cuda"
        steps = [state["step"] for state in states]
        if on_cuda and group["lr_decay"] == 0:
            # That kernel reads each step counter with .item() for its learning rate, one
            # GPU sync per tensor (1.6x torch's step on an H100, 100 tensors); with
            # lr_decay 0 the rate is lr at any step, so it gets CPU stand-ins (as torch's
            # own counters are) and the counters on the device advance here.
            torch._foreach_add_(steps, 1)
            steps = list(torch.zeros(len(steps), dtype=steps[0].dtype).unbind())
        _torch_kernels.adagrad(
            params,
            grads,
            [state["sum"] for state in states],
            steps,
            fused=not on_cuda,
            foreach=on_cuda,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            lr_decay=group["lr_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )
