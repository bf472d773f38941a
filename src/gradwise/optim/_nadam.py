"""NAdam: Adam with Nesterov momentum (Dozat 2016), torch.optim.NAdam's variant."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from gradwise._validation import HALF_OPEN_UNIT_INTERVAL, NON_NEGATIVE, Boolean, check
from gradwise.optim import _torch_kernels
from gradwise.optim._adam import BETAS
from gradwise.optim._learning_rate import LEARNING_RATE
from gradwise.optim._optimizer import Implementation, Optimizer, implementation_from_torch_flags
from gradwise.optim._scalars import per_parameter, per_step, scalar
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


def scale_by_nadam(
    beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, momentum_decay: float = 4e-3
) -> GradientTransform:
    r"""NAdam's direction with the momentum schedule of Dozat (2016), as torch implements it.

    .. math::
        \mu_t = \beta_1\left(1 - \tfrac12\, 0.96^{\,t\psi}\right), \qquad
        \Pi_t = \prod_{i \le t} \mu_i, \\
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \qquad
        D_t = \sqrt{v_t / (1-\beta_2^t)} + \epsilon, \\
        u_t = \frac{1-\mu_t}{1-\Pi_t}\,\frac{g_t}{D_t}
            + \frac{\mu_{t+1}}{1-\Pi_t\,\mu_{t+1}}\,\frac{m_t}{D_t}

    with :math:`\psi` = ``momentum_decay`` (4e-3). Keras and optax implement different
    algorithms under the name NAdam; this is torch's. :math:`\Pi_t` is kept per parameter
    as ``mu_product``, a 0-d tensor multiplied in the scalar dtype as torch does, so the
    numbers agree to the last bit. State per parameter: ``step``, ``mu_product``,
    ``exp_avg``, ``exp_avg_sq``.

    Reference: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop.
    """
    check("beta1", "scale_by_nadam", beta1, HALF_OPEN_UNIT_INTERVAL)
    check("beta2", "scale_by_nadam", beta2, HALF_OPEN_UNIT_INTERVAL)
    check("eps", "scale_by_nadam", eps, NON_NEGATIVE)
    check("momentum_decay", "scale_by_nadam", momentum_decay, NON_NEGATIVE)

    def init(params: Params) -> State:
        steps = step_counters(params)
        return {
            "step": steps,
            "mu_product": [torch.ones_like(step) for step in steps],
            "exp_avg": zeros_like_each(params),
            "exp_avg_sq": zeros_like_each(params),
        }

    def momentum_at(t: Any) -> Any:
        return beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        steps = [step + 1 for step in state["step"]]
        mus = per_step(steps, momentum_at)
        next_mus = per_step(steps, lambda t: momentum_at(t + 1))
        bias_corrections2 = per_step(steps, lambda t: 1 - beta2**t)
        # The product is a 0-d tensor in the scalar dtype, multiplied there as torch's eager
        # `mu_product *= mu` does (rounding once in double instead would drift by an ulp).
        products = [
            previous * (mu.to(previous.dtype) if isinstance(mu, Tensor) else mu)
            for previous, mu in zip(state["mu_product"], mus, strict=True)
        ]
        gradient_weights = per_parameter(
            [(1.0 - mu) / (1.0 - scalar(p)) for mu, p in zip(mus, products, strict=True)]
        )
        momentum_weights = per_parameter(
            [nm / (1.0 - scalar(p) * nm) for nm, p in zip(next_mus, products, strict=True)]
        )
        new: State = {"step": steps, "mu_product": products, "exp_avg": [], "exp_avg_sq": []}
        out = []
        for i, g in enumerate(updates):
            m = beta1 * state["exp_avg"][i] + (1 - beta1) * g
            v = beta2 * state["exp_avg_sq"][i] + (1 - beta2) * g * g
            denom = (v / bias_corrections2[i]).sqrt() + eps
            out.append(gradient_weights[i] * g / denom + momentum_weights[i] * m / denom)
            new["exp_avg"].append(m)
            new["exp_avg_sq"].append(v)
        return out, new

    return GradientTransform(init, update, "scale_by_nadam")


def _nadam(
    lr: float | Schedule,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    momentum_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> GradientTransform:
    return torch_optim_chain(
        scale_by_nadam(betas[0], betas[1], eps, momentum_decay),
        lr=lr,
        weight_decay=weight_decay,
        maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
    )


class NAdam(Optimizer):
    r"""NAdam; torch.optim.NAdam's keyword names, defaults and numbers.

    .. math::
        \theta \leftarrow \theta - \eta\left(
        \frac{1-\mu_t}{1-\Pi_t}\frac{g_t}{D_t} + \frac{\mu_{t+1}}{1-\Pi_t\mu_{t+1}}\frac{m_t}{D_t}
        \right)

    Chain: ``add_l2(weight_decay)`` (or, with ``decoupled_weight_decay=True``,
    ``add_decayed_weights`` after the scaling, the "NAdamW" form), ``scale_by_nadam(beta1,
    beta2, eps, momentum_decay)``, ``scale_by_learning_rate(lr)``. See
    :func:`scale_by_nadam` for the momentum schedule. Default lr=2e-3. torch has no fused
    NAdam: the default path (``implementation="auto"`` or ``"fused"``) runs torch's own
    implementation on the same state; ``"compiled"`` fuses it.

    Example:
        >>> import torch
        >>> from gradwise.optim import NAdam
        >>> opt = NAdam(torch.nn.Linear(4, 2).parameters())
    """

    hyperparameter_constraints = {
        "lr": LEARNING_RATE,
        "betas": BETAS,
        "eps": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
        "momentum_decay": NON_NEGATIVE,
        "decoupled_weight_decay": Boolean(),
        "maximize": Boolean(),
    }
    has_fused_kernel = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Schedule = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        implementation: Implementation = "auto",
    ) -> None:
        super().__init__(
            params,
            _nadam,
            implementation=implementation_from_torch_flags(
                "NAdam",
                implementation,
                foreach=foreach,
                capturable=capturable,
                differentiable=differentiable,
            ),
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
        )

    def _fused_step(
        self,
        group: Mapping[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
    ) -> None:
        beta1, beta2 = group["betas"]
        _torch_kernels.nadam(
            params,
            grads,
            _torch_kernels.state_tensors(states, "exp_avg", params),
            _torch_kernels.state_tensors(states, "exp_avg_sq", params),
            [state["mu_product"] for state in states],
            [state["step"] for state in states],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            foreach=None,  # torch's choice: foreach on a GPU, one tensor at a time on the CPU
            maximize=group["maximize"],
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            momentum_decay=group["momentum_decay"],
            eps=group["eps"],
        )
