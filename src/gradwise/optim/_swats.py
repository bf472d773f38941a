"""SWATS: start with Adam, switch to SGD with momentum (Keskar & Socher 2017)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from gradwise._validation import NON_NEGATIVE
from gradwise.optim._adam import BETAS
from gradwise.optim._learning_rate import LEARNING_RATE, checked_rate
from gradwise.optim._optimizer import Implementation, Optimizer, _shared_key
from gradwise.optim._scalars import per_parameter, scalar
from gradwise.optim._transform import (
    GradientTransform,
    Params,
    State,
    Updates,
    chain,
    zeros_like_each,
)
from gradwise.optim._weight_decay import add_l2
from gradwise.schedules import Schedule

_SHARED_NUMBERS = ("step", "projected_lr_average", "switch_step", "sgd_lr", "lr_at_switch")


class PhaseSwitch(NamedTuple):
    """Whether a param group switched from Adam to SGD, at which step, at which learning rate."""

    switched: bool
    step: int | None
    lr: float | None


def _scale_by_swats(
    lr: float | Tensor | Schedule,
    beta1: float,
    beta2: float,
    eps: float,
    switch_tolerance: float,
) -> GradientTransform:
    """SWATS's whole update, learning rate included (the switch test needs the Adam step).

    Both phases keep the same two buffers per parameter (``exp_avg`` holds m, then v), so
    that compiled, the step is one graph that runs both phases' arithmetic and picks one
    with ``torch.where``; eagerly, a Python branch runs only the current phase. A branch
    under torch.compile breaks the graph, and the pieces then pass over memory several
    times: 38 ms per step with the branch, 13 to 14.5 ms as one graph
    (benchmarks/optim_step.py, 10M float32 parameters in 100 tensors, 1 thread, Adam
    phase; see also _stored).
    """

    def init(params: Params) -> State:
        device = params[0].device if params else None
        state: State = {
            key: torch.zeros((), dtype=torch.float64, device=device) for key in _SHARED_NUMBERS
        }
        state["switched"] = torch.zeros((), dtype=torch.bool, device=device)
        state["exp_avg"] = zeros_like_each(params)
        state["exp_avg_sq"] = zeros_like_each(params)
        return state

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        return _run_phase(
            state["switched"],
            sgd=lambda: sgd_phase(updates, state),
            adam=lambda: adam_phase(updates, state),
        )

    def adam_phase(updates: Sequence[Tensor], state: State) -> tuple[Updates, State]:
        step = state["step"] + 1
        k = scalar(step)
        alpha = _value_at(lr, state["step"])
        bias_correction2 = 1 - beta2**k
        (step_size,) = per_parameter([alpha * bias_correction2**0.5 / (1 - beta1**k)])

        def moments(g: Tensor, m: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
            return beta1 * m + (1 - beta1) * g, beta2 * a + (1 - beta2) * g * g

        def adam_step(m: Tensor, a: Tensor) -> Tensor:
            return -step_size * (m / (a.sqrt() + eps))

        exp_avgs, exp_avg_sqs, out = [], [], []
        p_dot_p: Tensor | float = 0.0
        p_dot_g: Tensor | float = 0.0
        for g, m, a in zip(updates, state["exp_avg"], state["exp_avg_sq"], strict=True):
            new_m, new_a = moments(g, m, a)
            p = adam_step(new_m, new_a)
            p_dot_p = p_dot_p + (p * p).sum(dtype=torch.float64)
            if torch.compiler.is_compiling():
                # The same numbers, from stored moments, for the pass that writes the state
                # and computes p^T g; p^T p keeps the copy above (see _stored).
                new_m, new_a = (_stored(t) for t in moments(g, m, a))
                p = adam_step(new_m, new_a)
            exp_avgs.append(new_m)
            exp_avg_sqs.append(new_a)
            out.append(p)
            p_dot_g = p_dot_g + (p * g).sum(dtype=torch.float64)
        projects = torch.as_tensor(p_dot_g != 0)
        gamma = p_dot_p / torch.where(projects, -torch.as_tensor(p_dot_g), 1.0)
        average = state["projected_lr_average"]
        average = torch.where(projects, beta2 * average + (1 - beta2) * gamma, average)
        sgd_lr = average / bias_correction2
        switch = projects & (step > 1) & (sgd_lr > 0) & ((sgd_lr - gamma).abs() < switch_tolerance)
        return out, {
            "step": step,
            "projected_lr_average": average,
            "switched": switch,
            "switch_step": torch.where(switch, step, state["switch_step"]),
            "sgd_lr": torch.where(switch, sgd_lr, state["sgd_lr"]),
            "lr_at_switch": torch.where(switch, alpha, state["lr_at_switch"]),
            "exp_avg": exp_avgs,
            "exp_avg_sq": exp_avg_sqs,
        }

    def sgd_phase(updates: Sequence[Tensor], state: State) -> tuple[Updates, State]:
        alpha = _value_at(lr, state["step"])
        # Lambda, rescaled by any learning-rate change since the switch (1 if lr is constant).
        rate = state["sgd_lr"] * (alpha / state["lr_at_switch"])
        # v is zero at the switch, when exp_avg still holds m: the first SGD step (step count
        # still at switch_step) gives exp_avg weight 0, the later ones beta1.
        decay = beta1 * (state["step"] - state["switch_step"]).clamp(max=1)
        decay, scale = per_parameter([decay, -(1 - beta1) * rate])
        buffers = [decay * v + g for g, v in zip(updates, state["exp_avg"], strict=True)]
        return [scale * v for v in buffers], {
            **{key: state[key] for key in (*_SHARED_NUMBERS, "switched")},
            "step": state["step"] + 1,
            "exp_avg": buffers,
            "exp_avg_sq": list(state["exp_avg_sq"]),  # unused after the switch, kept as is
        }

    return GradientTransform(init, update, "scale_by_swats")


def _stored(tensor: Tensor) -> Tensor:
    """``tensor``, made a buffer of its own under torch.compile (inductor realizes the input
    of ``as_strided``; here an identity view).

    Why: inductor's CPU backend fuses a reduction into a loop only after that loop's
    element-wise work, and never two reductions into one loop
    (``cpp.max_horizontal_fusion_size=1`` in _compiled.py). A reduction that computes the
    Adam step from the old moments must therefore finish before the loop that overwrites
    them. From stored moments, p^T g joins the loop that writes p, m and a; p^T p, from a
    separate copy of the expressions (inductor loads a realized tensor for all its
    readers), takes one read-only pass over g, m and a before it. Two loops per tensor,
    40 bytes per parameter, no temporaries: 13 to 14.5 ms per step on
    benchmarks/optim_step.py, against 17 ms for four loops and a 4-byte temporary per
    parameter (31 ms in runs where that temporary page-faults).
    """
    return torch.as_strided(tensor, tensor.shape, tensor.stride())


def _run_phase(
    switched: Tensor,
    sgd: Callable[[], tuple[Updates, State]],
    adam: Callable[[], tuple[Updates, State]],
) -> tuple[Updates, State]:
    """The current phase's step: a Python branch eagerly, ``torch.where`` when compiled."""
    if torch.compiler.is_compiling():
        return _select(switched, sgd(), adam())
    return sgd() if bool(switched) else adam()


def _select(
    condition: Tensor, if_true: tuple[Updates, State], if_false: tuple[Updates, State]
) -> tuple[Updates, State]:
    """``torch.where(condition, ...)`` over every tensor of two phases' updates and states."""
    (out_true, state_true), (out_false, state_false) = if_true, if_false

    def where(true: Any, false: Any) -> Any:
        if isinstance(false, list):
            return [torch.where(condition, t, f) for t, f in zip(true, false, strict=True)]
        return torch.where(condition, true, false)

    return where(out_true, out_false), {
        key: where(state_true[key], state_false[key]) for key in state_false
    }


def _value_at(lr: float | Tensor | Schedule, count: Tensor) -> Any:
    """The learning rate (a number, or a schedule at the step count) for this step."""
    if not callable(lr) or isinstance(lr, Tensor):
        return lr
    if torch.compiler.is_compiling() or count.device.type != "cpu":
        return checked_rate(lr(count), lr, count, "SWATS")
    return checked_rate(lr(int(count)), lr, count, "SWATS")


def _swats(
    lr: float | Schedule,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    switch_tolerance: float,
) -> GradientTransform:
    transforms = [add_l2(weight_decay)] if weight_decay != 0 else []
    transforms.append(_scale_by_swats(lr, betas[0], betas[1], eps, switch_tolerance))
    return chain(*transforms)


class SWATS(Optimizer):
    r"""SWATS: Adam until its steps look like SGD's, then SGD with momentum at that rate.

    Algorithm 1 of the paper, per param group (the dot products run over every parameter
    of the group, so the whole group switches at once). Adam phase, at step :math:`k`:

    .. math::
        m_k = \beta_1 m_{k-1} + (1-\beta_1) g_k, \quad
        a_k = \beta_2 a_{k-1} + (1-\beta_2) g_k^2, \quad
        p_k = -\alpha_k \frac{\sqrt{1-\beta_2^k}}{1-\beta_1^k}\,
              \frac{m_k}{\sqrt{a_k} + \epsilon}, \quad w \leftarrow w + p_k, \\
        \text{if } p_k^\top g_k \ne 0:\quad
        \gamma_k = \frac{p_k^\top p_k}{-p_k^\top g_k}, \quad
        \lambda_k = \beta_2\lambda_{k-1} + (1-\beta_2)\gamma_k, \quad
        \Lambda = \frac{\lambda_k}{1-\beta_2^k};\ \text{switch if }
        k > 1,\ \Lambda > 0,\ |\Lambda - \gamma_k| < \epsilon_{\text{switch}}

    (:math:`\lambda_k = \lambda_{k-1}` when :math:`p_k^\top g_k = 0`). SGD phase, from the
    step after the switch, with :math:`v` starting at zero:

    .. math::
        v_k = \beta_1 v_{k-1} + g_k, \qquad
        w \leftarrow w - (1-\beta_1)\,\Lambda\,\frac{\alpha_k}{\alpha_s}\, v_k

    Conventions:

    - ``eps`` (:math:`\epsilon`, default 1e-9, the paper's) is added to :math:`\sqrt{a_k}`
      BEFORE the bias correction (the paper's form; torch's Adam adds it after), and
      ``switch_tolerance`` (:math:`\epsilon_{\text{switch}}`, default 1e-9, the paper's
      same :math:`\epsilon`) is the switch test's. ``switch_tolerance=0`` never switches.
      The paper's 1e-9 is strict: on noisy problems the switch may never come.
    - :math:`\alpha_k / \alpha_s` (the learning rate now over the learning rate at the
      switch) is 1 for a constant learning rate, which is Algorithm 1 exactly; it lets a
      schedule or a torch LR scheduler keep decaying the SGD phase's rate.
    - :math:`\Lambda > 0` is required to switch (Algorithm 1 has no such test; a
      non-positive rate would ascend).
    - The momentum buffer is never rescaled after the switch. It takes the place of
      :math:`m`, and :math:`a` is kept as it was at the switch (unused after it): two
      buffers per parameter in both phases, one more than the SGD phase needs, so that the
      state's layout does not depend on the phase and the compiled step is one graph.
      ``weight_decay`` is L2 added to :math:`g` (the paper has none).

    State: per parameter ``exp_avg`` (:math:`m` until the switch, :math:`v` from the first
    SGD step on) and ``exp_avg_sq`` (:math:`a`, frozen at the switch); per group
    (``state["param_group_<i>"]``, 0-d tensors) ``step``, ``projected_lr_average``
    (:math:`\lambda`), ``switched``, ``switch_step``, ``sgd_lr`` (:math:`\Lambda`) and
    ``lr_at_switch`` (:math:`\alpha_s`). :attr:`switches` reads the switch per group;
    ``state_dict`` carries it.

    Example:
        >>> import torch
        >>> from gradwise.optim import SWATS
        >>> opt = SWATS(torch.nn.Linear(4, 2).parameters(), lr=1e-3)
        >>> opt.switches
        [PhaseSwitch(switched=False, step=None, lr=None)]

    Reference: Keskar & Socher, "Improving Generalization Performance by Switching from
    Adam to SGD", arXiv:1712.07628, 2017.
    """

    hyperparameter_constraints = {
        "lr": LEARNING_RATE,
        "betas": BETAS,
        "eps": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
        "switch_tolerance": NON_NEGATIVE,
    }

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Schedule = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-9,
        weight_decay: float = 0.0,
        switch_tolerance: float = 1e-9,
        *,
        implementation: Implementation = "auto",
    ) -> None:
        super().__init__(
            params,
            _swats,
            implementation=implementation,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            switch_tolerance=switch_tolerance,
        )

    @property
    def switches(self) -> list[PhaseSwitch]:
        """Per param group: whether it switched to SGD, at which step, and the rate Lambda."""
        result = []
        state: Mapping[Any, Any] = self.state
        for index in range(len(self.param_groups)):
            shared = state.get(_shared_key(index), {})
            if "switched" in shared and bool(shared["switched"]):
                step, lr = int(shared["switch_step"]), float(shared["sgd_lr"])
                result.append(PhaseSwitch(True, step, lr))
            else:
                result.append(PhaseSwitch(False, None, None))
        return result
