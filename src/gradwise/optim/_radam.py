"""RAdam: Adam with a rectified adaptive learning rate (Liu et al. 2020)."""

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

# Liu et al. rectify only once the variance of the adaptive rate is tractable.
_RECTIFICATION_THRESHOLD = 5.0


def scale_by_radam(
    beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
) -> GradientTransform:
    r"""RAdam's rectified direction, torch.optim.RAdam's convention.

    .. math::
        \rho_\infty = \frac{2}{1-\beta_2} - 1, \qquad
        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}, \qquad
        \hat m_t = \frac{m_t}{1-\beta_1^t}, \\
        u_t = \begin{cases}
          \hat m_t \, r_t \, \dfrac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon},\quad
          r_t = \sqrt{\dfrac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}
          & \rho_t > 5 \\
          \hat m_t & \text{otherwise (momentum SGD without adaptive scaling)}
        \end{cases}

    The threshold is 5 (torch's; the paper's algorithm box says 4). With beta2=0.999 the
    rectified branch starts at step 6. ``eps`` is added to :math:`\sqrt{v_t}` before the
    bias correction. State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``.

    Reference: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond",
    ICLR 2020.
    """
    check("beta1", "scale_by_radam", beta1, HALF_OPEN_UNIT_INTERVAL)
    check("beta2", "scale_by_radam", beta2, HALF_OPEN_UNIT_INTERVAL)
    check("eps", "scale_by_radam", eps, NON_NEGATIVE)

    def init(params: Params) -> State:
        return {
            "step": step_counters(params),
            "exp_avg": zeros_like_each(params),
            "exp_avg_sq": zeros_like_each(params),
        }

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        steps = [step + 1 for step in state["step"]]
        bias_corrections1 = per_step(steps, lambda t: 1 - beta1**t)
        # r_t * sqrt(1 - beta2^t) where the step is rectified, 0 where it is not.
        rectified_scales = per_step(steps, lambda t: _rectified_scale(t, beta2))
        new: State = {"step": steps, "exp_avg": [], "exp_avg_sq": []}
        out = []
        for i, g in enumerate(updates):
            m = beta1 * state["exp_avg"][i] + (1 - beta1) * g
            v = beta2 * state["exp_avg_sq"][i] + (1 - beta2) * g * g
            m_hat = m / bias_corrections1[i]
            scale = rectified_scales[i]
            if isinstance(scale, Tensor):
                out.append(torch.where(scale > 0, m_hat * scale / (v.sqrt() + eps), m_hat))
            else:
                out.append(m_hat * scale / (v.sqrt() + eps) if scale > 0 else m_hat)
            new["exp_avg"].append(m)
            new["exp_avg_sq"].append(v)
        return out, new

    return GradientTransform(init, update, "scale_by_radam")


def _rectified_scale(t: Any, beta2: Any) -> Any:
    """r_t * sqrt(1 - beta2^t) when rho_t > 5, else 0; for a float or a tensor of steps."""
    rho_inf = 2 / (1 - beta2) - 1
    bias_correction2 = 1 - beta2**t
    rho_t = rho_inf - 2 * t * beta2**t / bias_correction2
    if isinstance(rho_t, Tensor):
        safe_rho = rho_t.clamp_min(_RECTIFICATION_THRESHOLD)
        scale = _rectifier(safe_rho, rho_inf) * bias_correction2**0.5
        return torch.where(rho_t > _RECTIFICATION_THRESHOLD, scale, 0.0)
    if rho_t <= _RECTIFICATION_THRESHOLD:
        return 0.0
    return _rectifier(rho_t, rho_inf) * bias_correction2**0.5


def _rectifier(rho_t: Any, rho_inf: Any) -> Any:
    return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5


def _radam(
    lr: float | Schedule,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> GradientTransform:
    return torch_optim_chain(
        scale_by_radam(betas[0], betas[1], eps),
        lr=lr,
        weight_decay=weight_decay,
        maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
    )


class RAdam(Optimizer):
    r"""RAdam; torch.optim.RAdam's keyword names, defaults and numbers.

    .. math:: \theta \leftarrow \theta - \eta\, u_t

    with :math:`u_t` from :func:`scale_by_radam`.

    Chain: ``add_l2(weight_decay)`` (or ``add_decayed_weights`` with
    ``decoupled_weight_decay=True``), ``scale_by_radam(beta1, beta2, eps)``,
    ``scale_by_learning_rate(lr)``. The first five steps (beta2=0.999) are plain
    bias-corrected momentum steps of size ``lr``, which acts as a built-in warmup. torch
    has no fused RAdam: the default path (``implementation="auto"`` or ``"fused"``) runs
    torch's own implementation on the same state; ``"compiled"`` fuses it.

    Example:
        >>> import torch
        >>> from gradwise.optim import RAdam
        >>> opt = RAdam(torch.nn.Linear(4, 2).parameters(), lr=1e-3)
    """

    hyperparameter_constraints = {
        "lr": LEARNING_RATE,
        "betas": BETAS,
        "eps": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
        "decoupled_weight_decay": Boolean(),
        "maximize": Boolean(),
    }
    has_fused_kernel = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Schedule = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
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
            _radam,
            implementation=implementation_from_torch_flags(
                "RAdam",
                implementation,
                foreach=foreach,
                capturable=capturable,
                differentiable=differentiable,
            ),
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
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
        _torch_kernels.radam(
            params,
            grads,
            _torch_kernels.state_tensors(states, "exp_avg", params),
            _torch_kernels.state_tensors(states, "exp_avg_sq", params),
            [state["step"] for state in states],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            foreach=None,  # torch's choice: foreach on a GPU, one tensor at a time on the CPU
            maximize=group["maximize"],
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
        )
