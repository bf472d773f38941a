"""Adam, AMSGrad and AdamW."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from gradwise._validation import (
    HALF_OPEN_UNIT_INTERVAL,
    NON_NEGATIVE,
    Boolean,
    Constraint,
    PairOf,
    check,
)
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
    zeros_like_each,
)
from gradwise.schedules import Schedule

BETAS = PairOf(HALF_OPEN_UNIT_INTERVAL)


def scale_by_adam(
    beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, amsgrad: bool = False
) -> GradientTransform:
    r"""Adam's direction, with bias correction; optionally AMSGrad.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
        \hat v_t = \max(\hat v_{t-1}, v_t)\ \text{(AMSGrad, else } \hat v_t = v_t), \qquad
        u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{\hat v_t / (1-\beta_2^t)} + \epsilon}

    Conventions (torch.optim.Adam's): ``eps`` is added after the square root of the
    bias-corrected second moment; AMSGrad keeps the running maximum of the RAW second
    moment and bias-corrects that maximum. State per parameter: ``step``, ``exp_avg``
    (:math:`m`), ``exp_avg_sq`` (:math:`v`), and ``max_exp_avg_sq`` with AMSGrad.

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
    Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018.
    """
    check("beta1", "scale_by_adam", beta1, HALF_OPEN_UNIT_INTERVAL)
    check("beta2", "scale_by_adam", beta2, HALF_OPEN_UNIT_INTERVAL)
    check("eps", "scale_by_adam", eps, NON_NEGATIVE)

    def init(params: Params) -> State:
        state = {
            "step": step_counters(params),
            "exp_avg": zeros_like_each(params),
            "exp_avg_sq": zeros_like_each(params),
        }
        if amsgrad:
            state["max_exp_avg_sq"] = zeros_like_each(params)
        return state

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        steps = [step + 1 for step in state["step"]]
        bias_corrections1 = per_step(steps, lambda t: 1 - beta1**t)
        bias_corrections2_sqrt = per_step(steps, lambda t: (1 - beta2**t) ** 0.5)
        new: State = {key: [] for key in state}
        new["step"] = steps
        out = []
        for i, g in enumerate(updates):
            m = beta1 * state["exp_avg"][i] + (1 - beta1) * g
            v = beta2 * state["exp_avg_sq"][i] + (1 - beta2) * g * g
            new["exp_avg"].append(m)
            new["exp_avg_sq"].append(v)
            if amsgrad:
                v = torch.maximum(state["max_exp_avg_sq"][i], v)
                new["max_exp_avg_sq"].append(v)
            out.append((m / bias_corrections1[i]) / (v.sqrt() / bias_corrections2_sqrt[i] + eps))
        return out, new

    return GradientTransform(init, update, "scale_by_adam")


def _adam(
    lr: float | Schedule,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> GradientTransform:
    return torch_optim_chain(
        scale_by_adam(betas[0], betas[1], eps, amsgrad),
        lr=lr,
        weight_decay=weight_decay,
        maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
    )


_ADAM_CONSTRAINTS: dict[str, Constraint] = {
    "lr": LEARNING_RATE,
    "betas": BETAS,
    "eps": NON_NEGATIVE,
    "weight_decay": NON_NEGATIVE,
    "amsgrad": Boolean(),
    "maximize": Boolean(),
    "decoupled_weight_decay": Boolean(),
}


class Adam(Optimizer):
    r"""Adam (and AMSGrad); torch.optim.Adam's keyword names, defaults and numbers.

    .. math::
        g \leftarrow \nabla f(\theta) + \lambda\theta, \qquad
        \theta \leftarrow \theta - \eta\,
        \frac{m_t / (1-\beta_1^t)}{\sqrt{\hat v_t/(1-\beta_2^t)} + \epsilon}

    Chain: ``add_l2(weight_decay)``, ``scale_by_adam(beta1, beta2, eps, amsgrad)``,
    ``scale_by_learning_rate(lr)``; see :func:`scale_by_adam` for where ``eps`` sits and
    how AMSGrad takes its maximum. ``weight_decay`` is L2 added to the gradient, which the
    adaptive scaling then weakens for parameters with large gradients; for decoupled decay
    use :class:`AdamW` (or ``decoupled_weight_decay=True``). ``fused=True`` runs torch's
    fused kernel (the default where available).

    Example:
        >>> import torch
        >>> from gradwise.optim import Adam
        >>> opt = Adam(torch.nn.Linear(4, 2).parameters(), lr=3e-4, amsgrad=True)
    """

    hyperparameter_constraints = _ADAM_CONSTRAINTS
    has_fused_kernel = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Schedule = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        implementation: Implementation = "auto",
    ) -> None:
        super().__init__(
            params,
            _adam,
            implementation=implementation_from_torch_flags(
                type(self).__name__,
                implementation,
                foreach=foreach,
                fused=fused,
                capturable=capturable,
                differentiable=differentiable,
            ),
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )

    def _fused_step(
        self,
        group: Mapping[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
    ) -> None:
        beta1, beta2 = group["betas"]
        _torch_kernels.adam(
            params,
            grads,
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [state["max_exp_avg_sq"] for state in states] if group["amsgrad"] else [],
            [state["step"] for state in states],
            fused=True,
            decoupled_weight_decay=group["decoupled_weight_decay"],
            amsgrad=group["amsgrad"],
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )


class AdamW(Adam):
    r"""Adam with decoupled weight decay; torch.optim.AdamW's names, defaults and numbers.

    .. math::
        \theta \leftarrow \theta - \eta\left(
        \frac{m_t / (1-\beta_1^t)}{\sqrt{\hat v_t/(1-\beta_2^t)} + \epsilon} + \lambda\theta\right)

    Chain: ``scale_by_adam(...)``, ``add_decayed_weights(weight_decay)``,
    ``scale_by_learning_rate(lr)``. The decay is scaled by the learning rate, as torch
    does (:math:`\theta \leftarrow \theta(1 - \eta\lambda)` before the Adam step); the
    paper scales it by the schedule multiplier only, so with ``lr=1e-3`` torch's (and
    this) ``weight_decay=1e-2`` decays by 1e-5 per step. Default ``weight_decay=1e-2``.

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Schedule = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        implementation: Implementation = "auto",
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
            implementation=implementation,
        )
