"""RMSprop, plain and centered, with optional momentum."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor

from gradwise._validation import HALF_OPEN_UNIT_INTERVAL, NON_NEGATIVE, Boolean, check
from gradwise.optim import _torch_kernels
from gradwise.optim._learning_rate import LEARNING_RATE
from gradwise.optim._optimizer import Implementation, Optimizer, implementation_from_torch_flags
from gradwise.optim._sgd import scale_by_momentum
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


def scale_by_rms(
    alpha: float = 0.99, eps: float = 1e-8, centered: bool = False
) -> GradientTransform:
    r"""Divide by a running root-mean-square of the gradient (RMSprop), torch's convention.

    .. math::
        s_t = \alpha s_{t-1} + (1-\alpha) g_t^2, \qquad
        \bar g_t = \alpha \bar g_{t-1} + (1-\alpha) g_t \ \text{(centered)}, \\
        u_t = \frac{g_t}{\sqrt{s_t - \bar g_t^2} + \epsilon}
        \ \text{(centered)}, \qquad u_t = \frac{g_t}{\sqrt{s_t} + \epsilon}\ \text{(plain)}

    ``eps`` sits outside the square root; there is no bias correction (both as in torch).
    The centered variant divides by an estimate of the gradient's standard deviation
    instead of its root mean square. State per parameter: ``step``, ``square_avg``, and
    ``grad_avg`` when centered.

    Reference: Hinton, Srivastava & Swersky, Neural Networks for Machine Learning, lecture
    6e (2012); Graves, "Generating Sequences With Recurrent Neural Networks" (2013) for the
    centered form.
    """
    check("alpha", "scale_by_rms", alpha, HALF_OPEN_UNIT_INTERVAL)
    check("eps", "scale_by_rms", eps, NON_NEGATIVE)

    def init(params: Params) -> State:
        state = {"step": step_counters(params), "square_avg": zeros_like_each(params)}
        if centered:
            state["grad_avg"] = zeros_like_each(params)
        return state

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        square_avgs = [
            alpha * s + (1 - alpha) * g * g
            for s, g in zip(state["square_avg"], updates, strict=True)
        ]
        new: State = {"step": [step + 1 for step in state["step"]], "square_avg": square_avgs}
        if centered:
            # A missing average (centered switched on mid-run) starts from zeros.
            grad_avgs = [
                (1 - alpha) * g if m is None else alpha * m + (1 - alpha) * g
                for m, g in zip(state["grad_avg"], updates, strict=True)
            ]
            new["grad_avg"] = grad_avgs
            variances = [s - m * m for s, m in zip(square_avgs, grad_avgs, strict=True)]
        else:
            variances = square_avgs
        out = [g / (v.sqrt() + eps) for g, v in zip(updates, variances, strict=True)]
        return out, new

    return GradientTransform(init, update, "scale_by_rms")


def _rmsprop(
    lr: float | Schedule,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> GradientTransform:
    scaling = [scale_by_rms(alpha, eps, centered)]
    if momentum != 0:
        scaling.append(scale_by_momentum(momentum))
    return torch_optim_chain(*scaling, lr=lr, weight_decay=weight_decay, maximize=maximize)


class RMSprop(Optimizer):
    r"""RMSprop; torch.optim.RMSprop's keyword names, defaults and numbers.

    .. math::
        s \leftarrow \alpha s + (1-\alpha) g^2, \qquad
        b \leftarrow \mu b + \frac{g}{\sqrt{s} + \epsilon}, \qquad \theta \leftarrow \theta - \eta b

    Chain: ``add_l2(weight_decay)``, ``scale_by_rms(alpha, eps, centered)``,
    ``scale_by_momentum(momentum)``, ``scale_by_learning_rate(lr)``. As in torch, the
    momentum buffer holds the scaled gradient :math:`g / (\sqrt{s}+\epsilon)` and the
    learning rate multiplies it from outside. ``alpha`` defaults to 0.99 (Hinton's lecture
    used 0.9). torch has no fused RMSprop: the default path (``implementation="auto"`` or
    ``"fused"``) runs torch's own
    implementation on the same state; ``"compiled"`` fuses it.

    Example:
        >>> import torch
        >>> from gradwise.optim import RMSprop
        >>> opt = RMSprop(torch.nn.Linear(4, 2).parameters(), lr=1e-3, centered=True)
    """

    hyperparameter_constraints = {
        "lr": LEARNING_RATE,
        "alpha": HALF_OPEN_UNIT_INTERVAL,
        "eps": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
        "momentum": NON_NEGATIVE,
        "centered": Boolean(),
        "maximize": Boolean(),
    }
    has_fused_kernel = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Schedule = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        implementation: Implementation = "auto",
    ) -> None:
        super().__init__(
            params,
            _rmsprop,
            implementation=implementation_from_torch_flags(
                "RMSprop",
                implementation,
                foreach=foreach,
                capturable=capturable,
                differentiable=differentiable,
            ),
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
        )

    def _fused_step(
        self,
        group: Mapping[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
    ) -> None:
        _torch_kernels.rmsprop(
            params,
            grads,
            _torch_kernels.state_tensors(states, "square_avg", params),
            _torch_kernels.state_tensors(states, "grad_avg", params) if group["centered"] else [],
            _torch_kernels.state_tensors(states, "momentum_buffer", params)
            if group["momentum"] > 0
            else [],
            [state["step"] for state in states],
            foreach=None,  # torch's choice: foreach on a GPU, one tensor at a time on the CPU
            maximize=group["maximize"],
            lr=group["lr"],
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            centered=group["centered"],
        )
