"""Compressed gradient methods: signSGD / Signum / EF-signSGD and 1-bit SGD."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from gradwise._validation import HALF_OPEN_UNIT_INTERVAL, NON_NEGATIVE, Boolean, check
from gradwise.optim._learning_rate import LEARNING_RATE, scale_by_learning_rate
from gradwise.optim._optimizer import Implementation, Optimizer
from gradwise.optim._sgd import scale_by_momentum
from gradwise.optim._transform import (
    GradientTransform,
    Params,
    State,
    Updates,
    chain,
    stateless,
    zeros_like_each,
)
from gradwise.optim._weight_decay import add_decayed_weights, add_l2
from gradwise.schedules import Schedule


def scale_by_sign(error_feedback: bool = False) -> GradientTransform:
    r"""Compress each update to its sign; optionally with error feedback (EF-signSGD).

    Without error feedback (signSGD, Bernstein et al. 2018): :math:`u \leftarrow
    \operatorname{sign}(u)` element-wise, with :math:`\operatorname{sign}(0) = 0`.

    With error feedback (EF-signSGD, Karimireddy et al. 2019), per tensor of :math:`d`
    elements:

    .. math::
        p = u + e, \qquad
        u \leftarrow \frac{\lVert p\rVert_1}{d}\operatorname{sign}(p), \qquad
        e \leftarrow p - u

    The error memory :math:`e` (state ``error``, per parameter, zeros at first) keeps what
    compression dropped and adds it back next step, so the running sum of the compressed
    updates tracks the running sum of the inputs up to :math:`e`, which stays bounded. A
    ``None`` entry (state made while error feedback was off) is a memory of zeros.

    Where the learning rate enters: this transform sees the gradient before any learning
    rate, so :math:`e` is in gradient units and the learning rate multiplies the output
    (as in the issue's formula). Karimireddy et al.'s algorithm compresses
    :math:`\gamma_t g + e` instead; the two give the same steps while the learning rate is
    constant (the compressor is positively homogeneous), and differ after it changes:
    here, error carried over from before the change is applied at the new rate.

    Example:
        >>> from gradwise.optim import chain, scale_by_learning_rate, scale_by_sign
        >>> ef_sign_sgd = chain(scale_by_sign(error_feedback=True), scale_by_learning_rate(0.01))
    """
    check("error_feedback", "scale_by_sign", error_feedback, Boolean())
    if not error_feedback:
        return stateless("scale_by_sign", lambda updates, params: [torch.sign(u) for u in updates])

    def init(params: Params) -> State:
        return {"error": zeros_like_each(params)}

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        out, errors = [], []
        for g, e in zip(updates, state["error"], strict=True):
            p = g if e is None else g + e
            u = p.abs().mean() * torch.sign(p)
            out.append(u)
            errors.append(p - u)
        return out, {"error": errors}

    return GradientTransform(init, update, "scale_by_sign")


def scale_by_one_bit() -> GradientTransform:
    r"""1-bit quantization with error feedback (Seide et al. 2014).

    Per tensor:

    .. math::
        p = u + e, \qquad
        u_i \leftarrow \begin{cases} \mu_+ & p_i \ge 0 \\ \mu_- & p_i < 0 \end{cases}, \qquad
        e \leftarrow p - u

    with :math:`\mu_+` the mean of the :math:`p_i \ge 0` and :math:`\mu_-` the mean of the
    :math:`p_i < 0`: each element is sent as one bit, and the two reconstruction values
    (per tensor; the paper takes them per matrix column) minimize the squared
    quantization error given the bits. Zeros fall in the :math:`\ge 0` bin. The error
    memory :math:`e` (state ``error``, per parameter) is in gradient units, as for
    :func:`scale_by_sign` with error feedback.

    Example:
        >>> from gradwise.optim import chain, scale_by_learning_rate, scale_by_one_bit
        >>> one_bit_sgd = chain(scale_by_one_bit(), scale_by_learning_rate(0.1))
    """

    def init(params: Params) -> State:
        return {"error": zeros_like_each(params)}

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        out, errors = [], []
        for g, e in zip(updates, state["error"], strict=True):
            p = g + e
            num_positive, sum_positive, sum_negative = _bin_sums(p)
            # clamp(min=1): an empty bin's mean is never used, so 0 / 1 instead of 0 / 0.
            mean_positive = sum_positive / num_positive.clamp(min=1)
            mean_negative = sum_negative / (p.numel() - num_positive).clamp(min=1)
            u = torch.where(p >= 0, mean_positive, mean_negative)
            out.append(u)
            errors.append(p - u)
        return out, {"error": errors}

    return GradientTransform(init, update, "scale_by_one_bit")


#: Elements per row when the compiled path sums the 1-bit statistics row by row: a row of
#: the gradient and the error (8 KiB in float32) stays in the L1 cache while all three
#: statistics read it.
_ROW = 1024


def _bin_sums(p: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The number of ``p >= 0`` (int64), the sum of ``p >= 0`` and the sum of ``p < 0``.

    Under torch.compile the sums run row by row, as one reduction over (rows, 3, _ROW):
    inductor reads each row from memory once and from cache for the other two statistics.
    As three separate sums they take three passes over the gradient and the error (inductor
    gives every reduction a loop of its own, see _compiled.py). OneBitSGD on
    benchmarks/optim_step.py: 13.5 to 14.5 ms per step with three passes, 10 to 11 ms
    with one.
    """
    if not torch.compiler.is_compiling():
        nonnegative = p >= 0
        return (
            nonnegative.sum(),
            torch.where(nonnegative, p, 0).sum(),
            torch.where(nonnegative, 0, p).sum(),
        )
    flat = p.reshape(-1)
    in_whole_rows = flat.numel() // _ROW * _ROW
    totals = torch.zeros(3, dtype=torch.float64, device=p.device)
    if in_whole_rows > 0:
        totals = totals + _row_sums(flat[:in_whole_rows].reshape(-1, 1, _ROW))
    if in_whole_rows < flat.numel():
        totals = totals + _row_sums(flat[in_whole_rows:].reshape(1, 1, -1))
    return totals[0].to(torch.int64), totals[1].to(p.dtype), totals[2].to(p.dtype)


def _row_sums(rows: Tensor) -> Tensor:
    """[count of >= 0, sum of >= 0, sum of < 0] over ``rows`` (rows, 1, n), in float64."""
    nonnegative = rows >= 0
    statistic = torch.arange(3, device=rows.device).reshape(1, 3, 1)
    # (rows, 3, n) by broadcasting, never stored: inductor computes each entry in the loop.
    values = torch.where(
        statistic == 0,
        nonnegative.to(rows.dtype),
        torch.where(
            statistic == 1, torch.where(nonnegative, rows, 0), torch.where(nonnegative, 0, rows)
        ),
    )
    # Exact counts: at most n per row in the row sums, any number in float64.
    row_dtype = torch.promote_types(rows.dtype, torch.float32)
    return values.sum(-1, dtype=row_dtype).sum(0, dtype=torch.float64)


def _scale_by_signum_momentum(momentum: float) -> GradientTransform:
    r"""Signum's momentum, an average from zero: :math:`m \leftarrow \beta m + (1-\beta) g`.

    A ``None`` buffer (state made while momentum was off) is zero, as at construction.
    """

    def init(params: Params) -> State:
        return {"momentum_buffer": zeros_like_each(params)}

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        buffers = [
            (1 - momentum) * g if m is None else momentum * m + (1 - momentum) * g
            for m, g in zip(state["momentum_buffer"], updates, strict=True)
        ]
        return list(buffers), {"momentum_buffer": buffers}

    return GradientTransform(init, update, "scale_by_signum_momentum")


def _sign_sgd(
    lr: float | Schedule, momentum: float, error_feedback: bool, weight_decay: float
) -> GradientTransform:
    transforms = [_scale_by_signum_momentum(momentum)] if momentum != 0 else []
    transforms.append(scale_by_sign(error_feedback))
    if weight_decay != 0:
        transforms.append(add_decayed_weights(weight_decay))
    transforms.append(scale_by_learning_rate(lr))
    return chain(*transforms)


class SignSGD(Optimizer):
    r"""signSGD and Signum, optionally with error feedback (EF-signSGD).

    .. math::
        m \leftarrow \beta m + (1-\beta) g \ \text{(if momentum)}, \qquad
        w \leftarrow w - \eta_t\,\bigl(C(m) + \lambda w\bigr)

    with :math:`C = \operatorname{sign}` (signSGD; Signum with momentum), or with
    ``error_feedback=True`` the scaled sign with error memory of :func:`scale_by_sign`.

    Conventions:

    - Momentum is Signum's: an exponential moving average started at zero, kept across
      steps (never reset), and it is the momentum that is compressed.
    - ``weight_decay`` is decoupled and added after compression (as in Lion): the decay
      term is computed from the local weights and needs no compression; added to the
      gradient before the sign it would only flip signs.
    - The error memory is in gradient units and the learning rate multiplies the output;
      see :func:`scale_by_sign` for how that relates to Karimireddy et al.'s form.
    - :math:`\operatorname{sign}(0) = 0`: a zero gradient leaves the parameter unchanged.
    - Momentum or error feedback switched on mid-run (by editing the param group, as a
      scheduler may) starts its momentum buffer or error memory at zero, as at
      construction.

    Chain: ``Signum momentum``, ``scale_by_sign(error_feedback)``,
    ``add_decayed_weights(weight_decay)``, ``scale_by_learning_rate(lr)``. State per
    parameter: ``momentum_buffer`` (with momentum), ``error`` (with error feedback).

    Example:
        >>> import torch
        >>> from gradwise.optim import SignSGD
        >>> opt = SignSGD(torch.nn.Linear(4, 2).parameters(), lr=1e-3, momentum=0.9)

    References: Bernstein, Wang, Azizzadenesheli & Anandkumar, "signSGD: Compressed
    Optimisation for Non-Convex Problems", ICML 2018; Karimireddy, Rebjock, Stich & Jaggi,
    "Error Feedback Fixes SignSGD and other Gradient Compression Schemes", ICML 2019.
    """

    hyperparameter_constraints = {
        "lr": LEARNING_RATE,
        "momentum": HALF_OPEN_UNIT_INTERVAL,
        "error_feedback": Boolean(),
        "weight_decay": NON_NEGATIVE,
    }

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Schedule = 1e-3,
        momentum: float = 0.0,
        error_feedback: bool = False,
        weight_decay: float = 0.0,
        *,
        implementation: Implementation = "auto",
    ) -> None:
        super().__init__(
            params,
            _sign_sgd,
            implementation=implementation,
            lr=lr,
            momentum=momentum,
            error_feedback=error_feedback,
            weight_decay=weight_decay,
        )


def _one_bit_sgd(lr: float | Schedule, momentum: float, weight_decay: float) -> GradientTransform:
    transforms = [scale_by_one_bit()]
    if weight_decay != 0:
        transforms.append(add_l2(weight_decay))
    if momentum != 0:
        transforms.append(scale_by_momentum(momentum))
    transforms.append(scale_by_learning_rate(lr))
    return chain(*transforms)


class OneBitSGD(Optimizer):
    r"""1-bit SGD: SGD (with momentum) on gradients quantized to one bit with error feedback.

    .. math::
        \tilde g = Q(g + e),\quad e \leftarrow g + e - \tilde g, \quad
        b \leftarrow \mu b + \tilde g + \lambda w\ (b_1 = \tilde g_1 + \lambda w), \quad
        w \leftarrow w - \eta_t b

    with :math:`Q` the per-tensor 1-bit quantizer of :func:`scale_by_one_bit`. As in the
    paper's data-parallel setting, the gradient is what is quantized (what a worker would
    send); everything after is torch.optim.SGD applied to the reconstructed gradient:
    ``weight_decay`` is L2 added there (computed from the local weights, not quantized),
    and momentum is torch's (first buffer = the input, learning rate outside).

    Chain: ``scale_by_one_bit()``, ``add_l2(weight_decay)``, ``scale_by_momentum(momentum)``,
    ``scale_by_learning_rate(lr)``. State per parameter: ``error``, and
    ``momentum_buffer`` with momentum.

    Example:
        >>> import torch
        >>> from gradwise.optim import OneBitSGD
        >>> opt = OneBitSGD(torch.nn.Linear(4, 2).parameters(), lr=0.05, momentum=0.9)

    Reference: Seide, Fu, Droppo, Li & Yu, "1-Bit Stochastic Gradient Descent and its
    Application to Data-Parallel Distributed Training of Speech DNNs", Interspeech 2014.
    """

    hyperparameter_constraints = {
        "lr": LEARNING_RATE,
        "momentum": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
    }

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Schedule = 1e-3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        *,
        implementation: Implementation = "auto",
    ) -> None:
        super().__init__(
            params,
            _one_bit_sgd,
            implementation=implementation,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
        )
