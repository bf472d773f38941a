r"""Newton's method with the exact Hessian and Levenberg-Marquardt damping, for small models.

``Newton`` subclasses ``torch.optim.Optimizer`` directly, not the adapter
:class:`gradwise.optim.Optimizer`. The adapter's contract is "run an element-wise gradient
transform on each parameter's ``.grad``, per param group, through a reference, fused or
compiled path"; Newton has no such transform (its update needs the loss as a function of all
parameters jointly, through a closure), no per-parameter state, exactly one param group and
no fast path. Subclassing the adapter would mean passing it a dummy transform, overriding
``step`` entirely, and inheriting an ``implementation`` knob and ``last_implementations``
that would say nothing true. What Newton does share with the named optimizers it takes from
the same places they do: the torch contract (``step``, ``zero_grad``, ``state_dict``,
``load_state_dict``, ``param_groups``, LR schedulers) from torch, the constraints and the
error format from :mod:`gradwise._validation`, and the key of group-shared state
(``"param_group_0"``) from the adapter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, cast

import torch
from torch import Tensor

from gradwise._validation import (
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    Constraint,
    check,
    check_all,
    invalid_value_error,
)
from gradwise.optim._optimizer import _shared_key, run_step_eagerly_under_torch_compile

_OWNER = "Newton"
_STEP_OWNER = "Newton.step"
_STATE_KEY = _shared_key(0)
#: Factor by which the damping grows after a failed Cholesky factorization, and shrinks at
#: the start of the next step (Marquardt's 10).
_DAMPING_FACTOR = 10.0
#: The first nonzero damping tried when ``damping=0`` and the Hessian is not positive
#: definite (the beta of Nocedal & Wright's Algorithm 3.3).
_FIRST_NONZERO_DAMPING = 1e-3
#: Hessian rows computed per batched backward call (torch.autograd.grad with
#: is_grads_batched, i.e. vmap over the double backward). One call for all n rows holds n
#: copies of the backward's intermediates at once, one call per row pays Python and
#: autograd overhead n times. Measured, one whole step of a 1,941-parameter tanh MLP in
#: float64 on one CPU thread: batch 32: 0.37 s with 64 rows per call, 0.37 s with all rows
#: in one call, 1.2 s with one row per call; batch 256: 1.1 s, 2.7 s, 1.9 s; batch 1024:
#: 4.8 s with 64 rows per call, 10.2 s with 256.
_HESSIAN_ROWS_PER_CALL = 64


class Newton(torch.optim.Optimizer):
    r"""Damped Newton's method with the exact Hessian; needs a closure. For small models.

    .. math::
        g = \nabla f(\theta), \qquad H = \nabla^2 f(\theta), \qquad
        \theta \leftarrow \theta - \eta\, (H + \mu I)^{-1} g

    with all parameters flattened into one vector :math:`\theta \in \mathbb{R}^n`, so the
    Hessian couples every pair of them. :math:`f` is the loss that ``closure`` returns.

    Damping (Levenberg-Marquardt style, Nocedal & Wright's "Cholesky with added multiple of
    the identity"): each step first tries :math:`\mu = \max(\text{damping},\ \mu_{prev}/10)`,
    where :math:`\mu_{prev}` is the damping the previous step used, and multiplies
    :math:`\mu` by 10 until the Cholesky factorization of :math:`H + \mu I` succeeds (from
    :math:`\mu = 0`, the first increase is to 1e-3). So an indefinite Hessian (a saddle, a
    non-convex region) still gives a descent direction, and once the Hessian is positive
    definite again the damping falls back to ``damping`` within a few steps. :math:`\mu` is
    absolute: it is added to every diagonal entry, not scaled by :math:`\mathrm{diag}(H)` as
    in Marquardt's scaled variant. If no :math:`\mu \le` ``max_damping`` lets the
    factorization succeed, the step raises a ``ValueError`` that gives the Hessian's smallest
    eigenvalue and leaves the parameters unchanged. With ``lr=1`` and a tiny ``damping``, one
    step solves a strictly convex quadratic exactly.

    Cost per step: one forward, one backward with ``create_graph=True``, n Hessian-vector
    products (batched, 64 per backward call), and an :math:`O(n^3/3)` Cholesky factorization
    per damping tried; memory :math:`O(n^2)` for the Hessian. Hence ``max_params``: with the
    default 2,000 a float64 Hessian is 32 MB, and one step of a 1,941-parameter MLP took
    0.4 s (batch 32) to 1.1 s (batch 256) on one CPU thread. Use float64 parameters for
    ill-conditioned problems.

    The closure re-evaluates the model and returns the loss as a scalar tensor, WITHOUT
    calling ``backward()`` (Newton differentiates the loss twice itself). After a step each
    parameter's ``.grad`` holds the gradient :math:`g` at the pre-step parameters,
    overwritten rather than accumulated, as if the closure had called ``backward()`` after
    ``zero_grad()``; monitors that read ``.grad`` see it.

    Exactly one param group, as in torch.optim.LBFGS. Every parameter must require grad.
    State (group-shared, in ``optimizer.state["param_group_0"]``; ``state_dict`` and
    ``load_state_dict`` carry it, so a resumed run continues bit for bit): ``step``,
    ``damping`` (the :math:`\mu` the last step used) and ``newton_decrement``
    (:math:`\lambda = \sqrt{g^\top (H + \mu I)^{-1} g}`, a convergence measure: near a
    minimum :math:`\lambda^2/2` estimates :math:`f(\theta) - \min f`).

    Args:
        params: the parameters (or one param group dict), at most ``max_params`` elements.
        lr: the step length :math:`\eta`; 1 is the full Newton step.
        damping: the smallest :math:`\mu`, tried first; 0 is undamped Newton.
        max_damping: the largest :math:`\mu` tried before giving up.
        max_params: the most parameter elements (n) accepted, a guard against an n x n
            Hessian that does not fit in memory; raise it deliberately if it does.

    Example:
        >>> import torch
        >>> from gradwise.optim import Newton
        >>> model = torch.nn.Linear(3, 1)
        >>> x, y = torch.randn(16, 3), torch.randn(16, 1)
        >>> opt = Newton(model.parameters())
        >>> loss = opt.step(lambda: torch.nn.functional.mse_loss(model(x), y))
        >>> opt.state["param_group_0"]["step"]
        1

    Reference: Nocedal & Wright, "Numerical Optimization", 2nd ed., Springer 2006, ch. 3.4
    (modified Newton, Algorithm 3.3) and ch. 4 (trust regions, whose solution is a damped
    Newton step); Marquardt, "An Algorithm for Least-Squares Estimation of Nonlinear
    Parameters", SIAM J. Appl. Math. 1963; Boyd & Vandenberghe, "Convex Optimization",
    §9.5.1 (the Newton decrement).
    """

    #: Constraints on the hyperparameters, checked at construction and at every step.
    hyperparameter_constraints: ClassVar[Mapping[str, Constraint]] = {
        "lr": NON_NEGATIVE,
        "damping": NON_NEGATIVE,
        "max_damping": POSITIVE,
    }

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        damping: float = 1e-4,
        max_damping: float = 1e10,
        max_params: int = 2000,
    ) -> None:
        check("max_params", _OWNER, max_params, POSITIVE_INT)
        self.max_params = int(max_params)
        param_list: list[Any] = list(params)
        if len(param_list) > 1 and all(isinstance(group, dict) for group in param_list):
            raise _param_groups_error(f"Got {len(param_list)} groups instead.")
        # torch.compile(opt.step) failed in inductor (a mutation through as_strided): the
        # step runs eagerly inside compiled code, as the other gradwise optimizers' do.
        run_step_eagerly_under_torch_compile(Newton)
        super().__init__(param_list, {"lr": lr, "damping": damping, "max_damping": max_damping})

    def __setstate__(self, state: dict[str, Any]) -> None:
        run_step_eagerly_under_torch_compile(Newton)  # torch's __setstate__ wraps step too
        super().__setstate__(state)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add the one param group, checking its hyperparameters and its parameters."""
        if self.param_groups:
            raise _param_groups_error("It already has one; add_param_group cannot add another.")
        if isinstance(param_group, dict):
            merged = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
            _check_hyperparameters(merged)
            param_group = _without_repeats(param_group)
        super().add_param_group(param_group)
        _check_parameters(self.param_groups[0]["params"], self.max_params)

    # -- the step ----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """Take one damped Newton step; return the closure's loss (detached) before the step.

        Args:
            closure: re-evaluates the model and returns the loss as a scalar tensor, without
                calling ``backward()``.
        """
        if closure is None or not callable(closure):
            raise invalid_value_error(
                "closure",
                _STEP_OWNER,
                "a function that re-evaluates the model and returns the loss, e.g. "
                "opt.step(lambda: loss_fn(model(x), y))",
                closure,
            )
        group = self.param_groups[0]
        _check_hyperparameters(group)  # an LR scheduler may have changed lr since construction
        params: list[Tensor] = group["params"]
        with torch.enable_grad():
            loss = closure()
            _check_loss(loss)
            gradients, hessian = _gradients_and_hessian(loss, params)
        gradient = torch.cat([g.reshape(-1) for g in gradients])  # (n,)
        if not (torch.isfinite(gradient).all() and torch.isfinite(hessian).all()):
            raise RuntimeError(
                f"{_STEP_OWNER} got a non-finite gradient or Hessian (loss = {loss.item():.6g}); "
                "the parameters were left unchanged. Check the data and the model for "
                "overflow, or restart from the last finite state."
            )
        shared_state = cast(dict[str, dict[str, Any]], self.state)
        previous = shared_state[_STATE_KEY]
        first_damping = min(
            max(group["damping"], previous.get("damping", 0.0) / _DAMPING_FACTOR),
            group["max_damping"],
        )
        direction, damping = _solve_damped(hessian, gradient, first_damping, group["max_damping"])
        offset = 0
        for p, g in zip(params, gradients, strict=True):
            p.sub_(group["lr"] * direction[offset : offset + p.numel()].view_as(p))
            p.grad = g
            offset += p.numel()
        # A new dict each step, never mutated: torch's load_state_dict and state_dict share
        # group-level state by reference, so mutating it would alter a saved state_dict.
        shared_state[_STATE_KEY] = {
            "step": previous.get("step", 0) + 1,
            "damping": damping,
            "newton_decrement": math.sqrt(max(float(gradient @ direction), 0.0)),
        }
        return loss.detach()


def _param_groups_error(detail: str) -> ValueError:
    return ValueError(
        f"{_OWNER} supports exactly one param group: the Hessian couples all parameters, so "
        f"they share one lr and one damping. {detail} Pass all parameters in one group."
    )


def _check_hyperparameters(hyperparameters: Mapping[str, Any]) -> None:
    check_all(_OWNER, hyperparameters, Newton.hyperparameter_constraints)
    damping, max_damping = hyperparameters["damping"], hyperparameters["max_damping"]
    if max_damping < damping:
        raise invalid_value_error(
            "max_damping", _OWNER, f"a float >= damping ({damping!r})", max_damping
        )


def _without_repeats(param_group: dict[str, Any]) -> dict[str, Any]:
    """The group with its parameters in a list, checked for repeats before torch warns."""
    params = param_group["params"]
    if isinstance(params, Tensor | set):  # one tensor is fine; torch rejects a set itself
        return param_group
    entries = list(params)
    # torch.optim accepts (name, tensor) pairs as well as tensors.
    tensors = [entry[1] if isinstance(entry, tuple) else entry for entry in entries]
    if len({id(t) for t in tensors}) != len(tensors):
        raise ValueError(
            f"{_OWNER} got the same parameter more than once; pass each parameter once "
            "(the Hessian would count it twice)."
        )
    return {**param_group, "params": entries}


def _check_parameters(params: Sequence[Tensor], max_params: int) -> None:
    if not params:
        raise ValueError(f"{_OWNER} got an empty parameter list; pass the model's parameters.")
    for index, p in enumerate(params):
        if not p.requires_grad:
            raise ValueError(
                f"Parameter {index} of {_OWNER} (shape {tuple(p.shape)}) does not require grad. "
                "The Hessian couples all parameters, so Newton uses every one it is given: "
                "pass only trainable parameters, e.g. "
                "[p for p in model.parameters() if p.requires_grad]."
            )
        if not p.is_floating_point():
            raise ValueError(
                f"Parameter {index} of {_OWNER} has dtype {p.dtype}; Newton needs real "
                "floating-point parameters."
            )
    first = params[0]
    if any(p.dtype != first.dtype or p.device != first.device for p in params):
        kinds = sorted({f"{p.dtype} on {p.device}" for p in params})
        raise ValueError(
            f"{_OWNER} needs all parameters on one device with one dtype (the Hessian is one "
            f"matrix). Got {', '.join(kinds)}. Cast the model first, e.g. model.double()."
        )
    size = sum(p.numel() for p in params)
    if size > max_params:
        megabytes = size * size * first.element_size() / 1e6
        raise ValueError(
            f"The 'params' parameter of {_OWNER} must have at most max_params={max_params} "
            f"elements in total. Got {size} instead: the exact Hessian is n x n ({size}^2 "
            f"entries, {megabytes:,.0f} MB in {first.dtype}) and each step costs n Hessian-vector "
            "products and an O(n^3) Cholesky factorization. Raise max_params if that fits, or "
            "use a first-order optimizer."
        )


def _check_loss(loss: Any) -> None:
    expected = "a function whose result is the loss as a scalar tensor that requires grad"
    if not isinstance(loss, Tensor):
        hint = ": return the loss tensor itself, not loss.item()" if isinstance(loss, float) else ""
        raise ValueError(
            f"The 'closure' parameter of {_STEP_OWNER} must be {expected}. Got a closure that "
            f"returned {loss!r} ({type(loss).__name__}) instead{hint}."
        )
    if loss.numel() != 1 or not loss.is_floating_point():
        raise ValueError(
            f"The 'closure' parameter of {_STEP_OWNER} must be {expected}. Got a closure that "
            f"returned a {loss.dtype} tensor of shape {tuple(loss.shape)} instead: reduce it, "
            "e.g. with .mean() or .sum()."
        )
    if not loss.requires_grad:
        raise ValueError(
            f"The 'closure' parameter of {_STEP_OWNER} must be {expected}. Got a closure that "
            "returned a tensor with requires_grad=False instead: compute the loss from the "
            "parameters outside torch.no_grad() and do not detach it."
        )


def _gradients_and_hessian(loss: Tensor, params: list[Tensor]) -> tuple[list[Tensor], Tensor]:
    """The gradient of ``loss`` for each parameter (detached) and the exact (n, n) Hessian."""
    try:
        first = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    except RuntimeError as error:
        if "backward through the graph a second time" not in str(error):
            raise
        raise ValueError(
            f"The 'closure' parameter of {_STEP_OWNER} must return the loss without calling "
            "backward() on it. Got a closure whose loss graph was already freed by backward() "
            "instead: Newton differentiates the loss twice itself, so remove backward() from "
            "the closure."
        ) from error
    if all(g is None for g in first):
        raise ValueError(
            f"The 'closure' parameter of {_STEP_OWNER} must return a loss computed from the "
            "optimizer's parameters. Got a loss that depends on none of them instead."
        )
    gradients = [
        torch.zeros_like(p) if g is None else g for p, g in zip(params, first, strict=True)
    ]
    flat_gradient = torch.cat([g.reshape(-1) for g in gradients])  # (n,)
    size = flat_gradient.numel()
    hessian = flat_gradient.new_zeros((size, size))
    if flat_gradient.requires_grad:  # else the loss is linear in the parameters: H = 0
        for start in range(0, size, _HESSIAN_ROWS_PER_CALL):
            stop = min(start + _HESSIAN_ROWS_PER_CALL, size)
            _hessian_rows(flat_gradient, params, start, stop, out=hessian[start:stop])
    # The rows are computed independently, so H is symmetric only up to rounding; the
    # Cholesky factorization reads one triangle, so average the two.
    hessian = (hessian + hessian.mT) / 2
    return [g.detach() for g in gradients], hessian


def _hessian_rows(
    flat_gradient: Tensor, params: list[Tensor], start: int, stop: int, out: Tensor
) -> None:
    """Rows ``start:stop`` of the Hessian, as one batched backward of the gradient."""
    basis = flat_gradient.new_zeros((stop - start, flat_gradient.numel()))  # (rows, n)
    basis[:, start:stop].fill_diagonal_(1.0)
    blocks = torch.autograd.grad(
        flat_gradient,
        params,
        basis,
        retain_graph=stop < flat_gradient.numel(),
        is_grads_batched=True,
        allow_unused=True,
    )
    offset = 0
    for p, block in zip(params, blocks, strict=True):
        if block is not None:
            out[:, offset : offset + p.numel()] = block.reshape(stop - start, -1)
        offset += p.numel()


def _solve_damped(
    hessian: Tensor, gradient: Tensor, damping: float, max_damping: float
) -> tuple[Tensor, float]:
    """Solve ``(H + mu I) d = g`` by Cholesky, raising mu 10x until the factorization succeeds."""
    diagonal = hessian.diagonal()
    undamped_diagonal = diagonal.clone()
    while True:
        diagonal.copy_(undamped_diagonal + damping)  # in place: no n x n copy per try
        factor, info = torch.linalg.cholesky_ex(hessian)
        if info.item() == 0:
            return torch.cholesky_solve(gradient.unsqueeze(1), factor).squeeze(1), damping
        if damping >= max_damping:
            diagonal.copy_(undamped_diagonal)
            smallest = torch.linalg.eigvalsh(hessian)[0].item()
            raise ValueError(
                f"{_STEP_OWNER} could not make H + mu*I positive definite with mu <= "
                f"max_damping={max_damping!r}: the Hessian's smallest eigenvalue is "
                f"{smallest:.6g}. Raise max_damping above {-smallest:.3g}, rescale the loss, or "
                "start from another point."
            )
        damping = _FIRST_NONZERO_DAMPING if damping == 0 else damping * _DAMPING_FACTOR
        damping = min(damping, max_damping)
