"""Sanity checks before training: the lectures' list, each check a function with a verdict.

Every check works on a deep copy of the model (or, when the model cannot be deep-copied,
on the model itself, restored exactly afterwards), draws its random numbers from a forked
RNG seeded with ``seed``, and never sees the user's optimizer: the model, its gradients,
its train/eval mode and torch's global RNG state are as they were when a check returns.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradwise._validation import (
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    Interval,
    Satisfies,
    check,
)
from gradwise.checks._fit import cannot_run_message, structure
from gradwise.data import Dataset, DataSplits
from gradwise.diagnosis import REMEDIES, Diagnosis, Finding
from gradwise.losses import LOSS_NAMES, Loss, chance_loss, get_loss
from gradwise.optim import Adam
from gradwise.regularize import l2_penalty

if TYPE_CHECKING:
    from gradwise.report import Table

#: ``optimizer_factory(params, lr)``: a fresh optimizer over the trainable parameters.
OptimizerFactory = Callable[[list[nn.Parameter], float], torch.optim.Optimizer]
#: ``penalty_factory(strength)(model)``: the regularization term at that strength.
PenaltyFactory = Callable[[float], Callable[[nn.Module], Tensor | float]]
#: The data a check draws its batches from: the training split is used.
Data = DataSplits | Dataset | tuple[Tensor, Tensor]
#: A loss name from :data:`gradwise.losses.LOSS_NAMES` or ``loss(outputs, targets)``.
LossArgument = str | Loss

#: The checks :func:`sanity` runs, in order; ``checks=`` takes any subset of them.
CHECK_NAMES: tuple[str, ...] = (
    "initial_loss",
    "regularization_raises_loss",
    "overfit_tiny_subset",
    "all_parameters_get_gradients",
    "samples_do_not_mix",
    "learning_rate_sweep",
)

# The defaults, shared by sanity() and the check functions (calibration: docs/checks.md).
_INITIAL_RTOL, _INITIAL_ATOL = 0.75, 1.0
_STRENGTHS = (0.0, 1e-3, 1e-1, 10.0)
_OVERFIT_LEARNING_RATES = (1e-2, 1e-1, 1e-3)
_OVERFIT_STEPS = 500
_LEARNING_RATES = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
_SWEEP_STEPS = 50
# Weights (and their gradients) count as identical rows within this relative tolerance.
_SYMMETRY_RTOL = 1e-6
# A gradient leak into another sample's input below this fraction of the sample's own
# input gradient is rounding, not mixing.
_MIXING_RTOL = 1e-9
# Two identical forward passes whose outputs differ by more than this fraction of their
# largest value hold random draws (functional dropout); less is rounding (GPU atomics).
_NOISE_RTOL = 1e-4
# The named losses whose targets index the columns of the outputs.
_CLASS_INDEX_LOSSES = ("cross_entropy", "hinge")


def _is_sequence_of(constraint: Interval, minimum_length: int) -> Callable[[Any], bool]:
    def predicate(value: Any) -> bool:
        return (
            isinstance(value, Sequence)
            and not isinstance(value, str)
            and len(value) >= minimum_length
            and all(constraint.is_satisfied_by(v) for v in value)
        )

    return predicate


_LEARNING_RATE_LIST = Satisfies(
    _is_sequence_of(POSITIVE, 1), "a non-empty sequence of finite floats > 0"
)
_STRENGTH_LIST = Satisfies(
    _is_sequence_of(NON_NEGATIVE, 2), "a sequence of at least two finite floats >= 0"
)
# A repeated strength gives the same total twice, which can never rise strictly: the check
# failed with REGULARIZATION_NOT_APPLIED whatever the penalty did.
_DISTINCT_STRENGTHS = Satisfies(
    lambda v: len({float(s) for s in v}) == len(v),
    "a sequence of distinct strengths (the total loss must rise strictly from one to the "
    "next; drop the repeats)",
)
_FRACTION = Interval(low=0.0, high=1.0, low_closed=False, high_closed=False)
_OPTIONAL_CLASSES = Satisfies(
    lambda v: v is None or (POSITIVE_INT.is_satisfied_by(v) and isinstance(v, int)),
    "an int >= 1 or None",
)
_LOSS = Satisfies(
    lambda v: v in LOSS_NAMES if isinstance(v, str) else callable(v),
    "one of " + ", ".join(repr(name) for name in LOSS_NAMES) + " or a callable",
)
_OPTIONAL_CALLABLE = Satisfies(lambda v: v is None or callable(v), "a callable or None")
_CHECKS = Satisfies(
    lambda v: (
        isinstance(v, Sequence)
        and not isinstance(v, str)
        and len(v) > 0
        and all(isinstance(name, str) and name in CHECK_NAMES for name in v)
    ),
    "a non-empty sequence of names from " + ", ".join(repr(name) for name in CHECK_NAMES),
)
_SEED = Satisfies(
    lambda v: isinstance(v, int) and NON_NEGATIVE_INT.is_satisfied_by(v), "an int >= 0"
)


@final
@dataclass(frozen=True)
class CheckResult:
    """The verdict of one sanity check.

    Attributes:
        name: the check, one of :data:`CHECK_NAMES`.
        passed: whether the model passed (a skipped check counts as passed).
        measured: the numbers the verdict rests on (losses, learning rates, tensor names).
        message: one sentence with the measured numbers, or why the check was skipped.
        findings: the :class:`gradwise.diagnosis.Diagnosis` objects a failure maps to;
            empty when it passed.
        skipped: whether the check could not run on this model (``message`` says why).
    """

    name: str
    passed: bool
    measured: Mapping[str, Any]
    message: str
    findings: list[Diagnosis] = field(default_factory=list)
    skipped: bool = False


@final
@dataclass(frozen=True)
class SanityReport:
    """The results of :func:`sanity`, one :class:`CheckResult` per check run, in order.

    Example:
        >>> import torch
        >>> from gradwise.checks import sanity
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(
        ...     torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
        ... )
        >>> inputs, targets = torch.randn(60, 4), torch.arange(60) % 3
        >>> report = sanity(
        ...     model, "cross_entropy", (inputs, targets),
        ...     checks=["initial_loss", "samples_do_not_mix"],
        ... )
        >>> report.passed, report.findings()
        (True, [])
        >>> report["initial_loss"].passed
        True
    """

    results: list[CheckResult]

    @property
    def passed(self) -> bool:
        """Whether every check passed (skipped ones count as passed)."""
        return all(result.passed for result in self.results)

    def findings(self) -> list[Diagnosis]:
        """Every finding of every check, in check order."""
        return [finding for result in self.results for finding in result.findings]

    def __getitem__(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        ran = ", ".join(repr(result.name) for result in self.results)
        raise KeyError(f"No sanity check named {name!r} was run. Checks run: {ran}.")

    def to_table(self) -> Table:
        """One row per check: name, verdict ("pass", "FAIL", "skipped"), findings, message.

        Render it with :meth:`gradwise.report.Table.render_text`, ``render_html`` or
        ``to_json`` (one rendering path for the terminal, the report and JSON).
        """
        from gradwise.report import Table

        rows = [
            [
                result.name,
                "skipped" if result.skipped else "pass" if result.passed else "FAIL",
                ", ".join(finding.kind.name for finding in result.findings),
                result.message,
            ]
            for result in self.results
        ]
        return Table("Sanity checks", ["check", "result", "findings", "message"], rows)


def sanity(
    model: nn.Module,
    loss: LossArgument,
    data: Data,
    *,
    num_classes: int | None = None,
    optimizer_factory: OptimizerFactory | None = None,
    penalty_factory: PenaltyFactory | None = None,
    checks: Sequence[str] = CHECK_NAMES,
    seed: int = 0,
) -> SanityReport:
    """Run the lectures' sanity checks on an untrained model; report every verdict.

    The checks, each also a function of its own with its tolerances as arguments:
    :func:`check_initial_loss` (the loss at init is near its value at chance),
    :func:`check_regularization_raises_loss`, :func:`check_overfit_tiny_subset` (20
    samples can be fitted to near-zero loss), :func:`check_all_parameters_get_gradients`
    (and no layer is stuck with identical units), :func:`check_samples_do_not_mix` and
    :func:`check_learning_rate_sweep` (some learning rate makes the loss go down). Here
    each runs with its default tolerances. None changes ``model`` or torch's RNG state.

    Args:
        model: the network, mapping a batch of inputs to outputs (class scores); with a
            callable ``loss`` it may return a tuple, list or dict of tensors (the first
            tensor counts as the class scores).
        loss: "cross_entropy", "hinge", "mse", or ``loss(outputs, targets)`` averaged
            over the batch.
        data: :class:`gradwise.data.DataSplits` (its training split is used), a
            :class:`gradwise.data.Dataset`, or a pair ``(inputs, targets)``.
        num_classes: the number of classes; default: the data's, else the model's
            output width. Ignored for regression (float targets, except 0/1 targets
            under a binary cross-entropy, which are binary or multi-label classification).
        optimizer_factory: ``factory(params, lr)`` for the training checks; default
            :class:`gradwise.optim.Adam`.
        penalty_factory: ``factory(strength)(model)`` gives the regularization term;
            default the L2 penalty of :func:`gradwise.regularize.l2_penalty`.
        checks: the names (from :data:`CHECK_NAMES`) to run, in that order.
        seed: an int >= 0; seeds the batches drawn and the RNG the probes run under.

    Returns:
        A :class:`SanityReport`.

    Example:
        >>> import torch
        >>> from gradwise.checks import sanity
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(
        ...     torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)
        ... )
        >>> inputs, targets = torch.randn(90, 4), torch.arange(90) % 3
        >>> report = sanity(model, "cross_entropy", (inputs, targets))
        >>> [result.name for result in report.results if not result.passed]
        []

    Reference: the sanity checks and babysitting notes of CS231n (Karpathy), "Neural
    Networks Part 3"; Karpathy, "A Recipe for Training Neural Networks" (2019).
    """
    check("checks", "sanity", checks, _CHECKS)
    problem = _resolve("sanity", model, loss, data, num_classes, seed)
    check("optimizer_factory", "sanity", optimizer_factory, _OPTIONAL_CALLABLE)
    check("penalty_factory", "sanity", penalty_factory, _OPTIONAL_CALLABLE)
    runners: dict[str, Callable[[], CheckResult]] = {
        "initial_loss": lambda: _initial_loss(model, problem, 256, _INITIAL_RTOL, _INITIAL_ATOL),
        "regularization_raises_loss": lambda: _regularization(
            model, problem, penalty_factory or _default_penalty, _STRENGTHS, 256
        ),
        "overfit_tiny_subset": lambda: _overfit(
            model,
            problem,
            optimizer_factory or _default_optimizer,
            20,
            _OVERFIT_STEPS,
            _OVERFIT_LEARNING_RATES,
            0.01,
        ),
        "all_parameters_get_gradients": lambda: _gradients(model, problem, 64),
        "samples_do_not_mix": lambda: _mixing(model, problem, 8),
        "learning_rate_sweep": lambda: _sweep(
            model,
            problem,
            optimizer_factory or _default_optimizer,
            _LEARNING_RATES,
            _SWEEP_STEPS,
            64,
            0.1,
        ),
    }
    return SanityReport([runners[name]() for name in checks])


# ---------------------------------------------------------------------------------------
# The checks


def check_initial_loss(
    model: nn.Module,
    loss: LossArgument,
    data: Data,
    *,
    num_classes: int | None = None,
    batch_size: int = 256,
    rtol: float = _INITIAL_RTOL,
    atol: float = _INITIAL_ATOL,
    seed: int = 0,
) -> CheckResult:
    r"""Check that the loss at initialization is near its value at chance.

    A classifier whose scores are all equal has the loss at chance :math:`L_0`
    (:func:`gradwise.losses.chance_loss`: :math:`\ln C` for softmax cross-entropy,
    :math:`C - 1` for the multiclass hinge loss; for a callable loss, its value on
    all-zero outputs, or on log-probabilities :math:`-\ln C` or probabilities :math:`1/C`
    where the outputs are those, as from a LogSoftmax for ``nll_loss``; a binary
    cross-entropy (``BCEWithLogitsLoss``, ``BCELoss``, their functions) on float 0/1
    targets is binary or multi-label classification, at chance with logit 0 or
    probability 1/2 for every label: :math:`\ln 2`). The mean loss
    :math:`L` on a batch at init passes when

    .. math:: |L - L_0| \le \text{rtol}\, L_0 + \text{atol}

    (numpy.isclose's convention with :math:`L_0` as the reference). The defaults were
    calibrated on healthy He, Xavier and torch-default initializations of MLPs and CNNs
    (whose logits have a standard deviation near 1 and whose loss lies up to 0.8 above
    :math:`L_0` for 2 classes and 1.0 above for 10) against weights 10x too large (loss
    10 to 1e3 times :math:`L_0`). A failure reports
    :attr:`gradwise.Finding.INITIAL_LOSS_MISMATCH` with the factor :math:`s` by which the
    outputs would have to shrink to bring the loss within half the tolerance (found by
    bisection on :math:`L(s\,z)`). Regression (float targets, other than 0/1 targets
    under a binary cross-entropy) is skipped: it has no value at chance.

    Args:
        model, loss, data, num_classes: as for :func:`sanity`.
        batch_size: samples in the batch the loss is measured on (forward in train
            mode, dropout off).
        rtol: the relative tolerance, a finite float >= 0.
        atol: the absolute tolerance in the loss's units, a finite float >= 0.
        seed: an int >= 0; picks the batch.

    Example:
        >>> import torch
        >>> from gradwise.checks import check_initial_loss
        >>> model = torch.nn.Linear(5, 4)
        >>> with torch.no_grad():
        ...     _ = model.weight.mul_(100.0)
        >>> inputs, targets = torch.randn(64, 5), torch.arange(64) % 4
        >>> result = check_initial_loss(model, "cross_entropy", (inputs, targets))
        >>> result.passed, result.findings[0].kind.name
        (False, 'INITIAL_LOSS_MISMATCH')

    Reference: CS231n, "Neural Networks Part 3", sanity checks: "look for correct loss
    at chance performance".
    """
    owner = "check_initial_loss"
    problem = _resolve(owner, model, loss, data, num_classes, seed)
    check("batch_size", owner, batch_size, POSITIVE_INT)
    check("rtol", owner, rtol, NON_NEGATIVE)
    check("atol", owner, atol, NON_NEGATIVE)
    return _initial_loss(model, problem, batch_size, rtol, atol)


def check_regularization_raises_loss(
    model: nn.Module,
    loss: LossArgument,
    data: Data,
    *,
    penalty_factory: PenaltyFactory | None = None,
    strengths: Sequence[float] = _STRENGTHS,
    batch_size: int = 256,
    seed: int = 0,
) -> CheckResult:
    r"""Check that the total loss rises with the regularization strength, and can train.

    The total loss :math:`L + R_\alpha(w)` on one batch at init, with
    :math:`R_\alpha` = ``penalty_factory(alpha)(model)``, must rise strictly from each
    strength to the next (sorted), and by at least 0.1% of the loss at the smallest
    strength over the whole range; the default strengths 0, 1e-3, 0.1 and 10 run from
    none to about 1e4 times a typical L2 strength. The penalty at the largest strength
    must also have a nonzero gradient with respect to some parameter: a penalty computed
    on detached weights raises the loss but never regularizes. A failure is a
    ``Finding.REGULARIZATION_NOT_APPLIED``; a penalty that is 0 at every strength is also
    what all-zero weights give, and the message says so.

    Args:
        model, loss, data: as for :func:`sanity`.
        penalty_factory: ``factory(strength)(model)`` returns the penalty, a scalar
            tensor or number; default the L2 penalty on the weights
            (:func:`gradwise.regularize.l2_penalty`).
        strengths: at least two distinct strengths >= 0 (a repeat is a ValueError).
        batch_size: samples in the batch.
        seed: an int >= 0; picks the batch.

    Example:
        >>> import torch
        >>> from gradwise.checks import check_regularization_raises_loss
        >>> model = torch.nn.Linear(5, 3)
        >>> data = (torch.randn(32, 5), torch.arange(32) % 3)
        >>> check_regularization_raises_loss(model, "cross_entropy", data).passed
        True
        >>> forgotten = lambda strength: (lambda model: 0.0)
        >>> check_regularization_raises_loss(
        ...     model, "cross_entropy", data, penalty_factory=forgotten
        ... ).passed
        False

    Reference: CS231n, "Neural Networks Part 3"; Sarkar, CS60010 "Training": "loss goes
    up as you increase regularization".
    """
    owner = "check_regularization_raises_loss"
    problem = _resolve(owner, model, loss, data, None, seed)
    check("penalty_factory", owner, penalty_factory, _OPTIONAL_CALLABLE)
    check("strengths", owner, strengths, _STRENGTH_LIST)
    check("strengths", owner, strengths, _DISTINCT_STRENGTHS)
    check("batch_size", owner, batch_size, POSITIVE_INT)
    factory = penalty_factory or _default_penalty
    return _regularization(model, problem, factory, strengths, batch_size)


def check_overfit_tiny_subset(
    model: nn.Module,
    loss: LossArgument,
    data: Data,
    *,
    optimizer_factory: OptimizerFactory | None = None,
    num_samples: int = 20,
    num_steps: int = _OVERFIT_STEPS,
    learning_rates: Sequence[float] = _OVERFIT_LEARNING_RATES,
    tolerance: float = 0.01,
    seed: int = 0,
) -> CheckResult:
    r"""Check that the model can fit a tiny subset to near-zero loss.

    ``num_samples`` training samples (stratified by class: each class in turn), no
    penalty, dropout off (``p = 0`` on the copy's Dropout modules; BatchNorm keeps its
    training mode), full-batch steps with each learning rate from the same init. It
    passes when, for some learning rate, the loss falls to at most ``tolerance`` times
    the loss at chance (regression: times the initial loss) and, for classification with
    a score per class, every sample is classified correctly (``measured["accuracy"]`` is
    None for one logit per sample, under a binary cross-entropy, say); training stops as
    soon as that happens. Any network with a working gradient and enough capacity
    memorizes 20 samples, even with shuffled labels. A failure reports
    :attr:`gradwise.Finding.NO_LEARNING_SIGNAL`: frozen parameters, a wrong gradient, too
    little capacity, or a learning rate outside those tried; a gradient that turns
    non-finite under a finite loss stops training and reports
    :attr:`gradwise.Finding.WRONG_GRADIENT` naming the tensors.

    Under a label-smoothed cross-entropy (``nn.CrossEntropyLoss(label_smoothing=eps)`` or
    ``functools.partial(F.cross_entropy, label_smoothing=eps)``) the loss cannot go below
    its floor :math:`F`, the entropy of the smoothed targets (``measured["loss_floor"]``;
    see ``docs/checks.md``), and the target is :math:`F` plus ``tolerance`` of the way from
    :math:`F` to chance. When the subset is not fitted and two identical forward passes
    differ (``F.dropout`` in ``forward``, which the check cannot switch off), the verdict
    is not blamed on the learning signal: randomness in eval mode too fails with no
    finding, randomness in training mode only skips the check; the message says which.

    Args:
        model, loss, data, num_classes: as for :func:`sanity`.
        optimizer_factory: ``factory(params, lr)``; default :class:`gradwise.optim.Adam`.
        num_samples: the size of the subset, an int >= 1.
        num_steps: full-batch steps per learning rate, at most.
        learning_rates: tried in order until one passes; the best one is reported.
        tolerance: the target loss as a fraction of the loss at chance, in (0, 1).
        seed: an int >= 0; picks the subset.

    Example:
        >>> import torch
        >>> from gradwise.checks import check_overfit_tiny_subset
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(
        ...     torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)
        ... )
        >>> data = (torch.randn(100, 8), torch.randint(0, 4, (100,)))  # random labels
        >>> check_overfit_tiny_subset(model, "cross_entropy", data).passed
        True

    Reference: CS231n, "Neural Networks Part 3": "before training on the full dataset
    try to train on a tiny portion of the data and make sure you can achieve zero cost".
    """
    owner = "check_overfit_tiny_subset"
    problem = _resolve(owner, model, loss, data, None, seed)
    check("optimizer_factory", owner, optimizer_factory, _OPTIONAL_CALLABLE)
    check("num_samples", owner, num_samples, POSITIVE_INT)
    check("num_steps", owner, num_steps, POSITIVE_INT)
    check("learning_rates", owner, learning_rates, _LEARNING_RATE_LIST)
    check("tolerance", owner, tolerance, _FRACTION)
    factory = optimizer_factory or _default_optimizer
    return _overfit(model, problem, factory, num_samples, num_steps, learning_rates, tolerance)


def check_all_parameters_get_gradients(
    model: nn.Module,
    loss: LossArgument,
    data: Data,
    *,
    batch_size: int = 64,
    seed: int = 0,
) -> CheckResult:
    """Check that every trainable tensor gets a nonzero gradient, and no layer is symmetric.

    One forward and backward pass of the data loss (no penalty, dropout off) on a batch,
    its per-sample losses weighted by seeded random weights in [0.5, 1.5] so that they
    cannot cancel by coincidence (a class-balanced batch under the hinge loss gives the
    output bias exactly zero gradient). Every parameter with ``requires_grad`` must get
    a finite gradient that is not exactly zero everywhere. A ``None`` gradient means the
    tensor is not on the loss's graph (an unused layer, a detached path); an all-zero one
    means no signal reaches it (dead units, zero weights downstream); a NaN or infinite
    one is :attr:`gradwise.Finding.WRONG_GRADIENT` naming the tensors. A bias just before
    a BatchNorm, whose gradient vanishes only up to rounding, is not flagged. Either
    failure reports :attr:`gradwise.Finding.NO_LEARNING_SIGNAL` with the tensor names.
    Frozen parameters are left out (listed in ``measured``).

    Symmetry: a Linear or Conv layer (``groups=1``) whose output units have identical
    weights, identical biases and identical gradients can never make them differ, so
    its units stay copies of each other: that reports
    :attr:`gradwise.Finding.SYMMETRIC_INIT` naming the layer (all-zero or constant
    init), with the all-zero gradients as its evidence (constant weights starve the
    layers around them of gradient, so these are not diagnosed again). An output layer
    initialized to zero is fine: its rows get different gradients, and the layers
    before it, which get no gradient until it has taken a step, are checked again with
    the zero layer filled with small random weights (``measured["starved_at_init"]``).

    Args:
        model, loss, data: as for :func:`sanity`.
        batch_size: samples in the batch.
        seed: an int >= 0; picks the batch.

    Example:
        >>> import torch
        >>> from gradwise.checks import check_all_parameters_get_gradients
        >>> class TwoHeads(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.used, self.unused = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
        ...     def forward(self, x):
        ...         return self.used(x)
        >>> data = (torch.randn(8, 3), torch.arange(8) % 2)
        >>> result = check_all_parameters_get_gradients(TwoHeads(), "cross_entropy", data)
        >>> result.passed, result.measured["unused"]
        (False, ['unused.weight', 'unused.bias'])
    """
    owner = "check_all_parameters_get_gradients"
    problem = _resolve(owner, model, loss, data, None, seed)
    check("batch_size", owner, batch_size, POSITIVE_INT)
    return _gradients(model, problem, batch_size)


def check_samples_do_not_mix(
    model: nn.Module,
    loss: LossArgument,
    data: Data,
    *,
    batch_size: int = 8,
    seed: int = 0,
) -> CheckResult:
    r"""Check that one sample's loss does not depend on another sample's input.

    For each sample :math:`i` of a batch, the gradient of :math:`L_i` (the loss of
    sample :math:`i` alone, from one forward pass of the whole batch) with respect to
    every other sample's input must be zero:
    :math:`\max_{j \ne i} |\partial L_i / \partial x_j| \le 10^{-9} \max_i |\partial
    L_i / \partial x_i|`. A reshape or transpose across the batch axis, or statistics
    over the batch computed by hand, fails.

    BatchNorm mixes samples by design in training mode. Here BatchNorm layers run in
    eval mode (running statistics) on the copy while every other module stays in
    training mode (dropout off), so the rest of the network is still checked; a
    BatchNorm without running statistics (``track_running_stats=False``) normalizes
    over the batch in both modes, and then the check is skipped with that reason, as it is
    for data of a single sample (no pair to check). A failure is a
    ``Finding.SAMPLES_MIX``.

    Args:
        model, loss, data: as for :func:`sanity`.
        batch_size: samples in the batch, an int >= 2 (each gets one backward pass).
        seed: an int >= 0; picks the batch.

    Example:
        >>> import torch
        >>> from gradwise.checks import check_samples_do_not_mix
        >>> class Centered(torch.nn.Module):
        ...     def forward(self, x):
        ...         return x - x.mean(dim=0)  # statistics over the batch: mixes samples
        >>> data = (torch.randn(16, 3), torch.arange(16) % 3)
        >>> check_samples_do_not_mix(torch.nn.Linear(3, 3), "cross_entropy", data).passed
        True
        >>> check_samples_do_not_mix(Centered(), "cross_entropy", data).passed
        False

    Reference: Karpathy, "A Recipe for Training Neural Networks" (2019): "use backprop
    to chart dependencies".
    """
    owner = "check_samples_do_not_mix"
    problem = _resolve(owner, model, loss, data, None, seed)
    check("batch_size", owner, batch_size, Interval(low=2.0, kind="int"))
    return _mixing(model, problem, int(batch_size))


def check_learning_rate_sweep(
    model: nn.Module,
    loss: LossArgument,
    data: Data,
    *,
    optimizer_factory: OptimizerFactory | None = None,
    learning_rates: Sequence[float] = _LEARNING_RATES,
    num_steps: int = _SWEEP_STEPS,
    batch_size: int = 64,
    min_decrease: float = 0.1,
    seed: int = 0,
) -> CheckResult:
    r"""Check that some learning rate in a short sweep makes the loss go down.

    From the same init, each learning rate trains ``num_steps`` steps on the same
    sequence of minibatches (no penalty, dropout off). The loss :math:`L` on a fixed
    evaluation batch of up to 512 training samples is measured before and after; the
    check passes when some learning rate lowers it by at least ``min_decrease``
    relatively, :math:`(L_\text{before} - L_\text{after}) / L_\text{before} \ge`
    ``min_decrease``. ``measured`` holds ``best_lr`` (the largest decrease), the loss
    after each learning rate, and each run's minibatch-loss curve; a learning rate whose
    loss turned non-finite stops there and counts as no decrease. A failure reports
    :attr:`gradwise.Finding.NO_LEARNING_SIGNAL`.

    Args:
        model, loss, data: as for :func:`sanity`.
        optimizer_factory: ``factory(params, lr)``; default :class:`gradwise.optim.Adam`.
        learning_rates: the sweep; default one per decade from 1e-5 to 1.
        num_steps: steps per learning rate.
        batch_size: samples per minibatch.
        min_decrease: the relative decrease that counts as learning, in (0, 1).
        seed: an int >= 0; picks the minibatches and the evaluation batch.

    Example:
        >>> import torch
        >>> from gradwise.checks import check_learning_rate_sweep
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> inputs = torch.randn(256, 4)
        >>> targets = (inputs[:, 0] > 0).long()
        >>> data = (inputs, targets)
        >>> result = check_learning_rate_sweep(torch.nn.Linear(4, 2), "cross_entropy", data)
        >>> result.passed, result.measured["best_lr"] >= 1e-2
        (True, True)

    Reference: CS231n, "Neural Networks Part 3"; Sarkar, CS60010 "Training": "find a
    learning rate that makes the loss go down".
    """
    owner = "check_learning_rate_sweep"
    problem = _resolve(owner, model, loss, data, None, seed)
    check("optimizer_factory", owner, optimizer_factory, _OPTIONAL_CALLABLE)
    check("learning_rates", owner, learning_rates, _LEARNING_RATE_LIST)
    check("num_steps", owner, num_steps, POSITIVE_INT)
    check("batch_size", owner, batch_size, POSITIVE_INT)
    check("min_decrease", owner, min_decrease, _FRACTION)
    factory = optimizer_factory or _default_optimizer
    return _sweep(model, problem, factory, learning_rates, num_steps, batch_size, min_decrease)


# ---------------------------------------------------------------------------------------
# Arguments


@dataclass(frozen=True)
class _Problem:
    """The validated arguments every check shares."""

    loss_name: str | None
    loss_fn: Loss
    inputs: Tensor  # (N, ...) the training inputs
    targets: Tensor  # (N,) class indices, or (N, ...) regression targets
    num_classes: int | None  # None: take the model's output width (classification)
    seed: int
    # "logits" or "probabilities": a binary cross-entropy on float 0/1 targets (binary or
    # multi-label classification, one output per label); None: class indices or regression.
    binary: str | None = None

    @property
    def classification(self) -> bool:
        return self.binary is not None or not self.targets.is_floating_point()


def _resolve(
    owner: str,
    model: object,
    loss: object,
    data: object,
    num_classes: int | None,
    seed: int,
) -> _Problem:
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"The 'model' parameter of {owner} must be a torch.nn.Module. "
            f"Got {type(model).__name__} instead."
        )
    check("loss", owner, loss, _LOSS)
    check("num_classes", owner, num_classes, _OPTIONAL_CLASSES)
    check("seed", owner, seed, _SEED)
    dataset, data_classes = _as_dataset(owner, data)
    if len(dataset) == 0:
        raise ValueError(f"The 'data' parameter of {owner} must hold samples. Got 0 instead.")
    classes = num_classes if num_classes is not None else data_classes
    if classes is not None and dataset.task == "classification":
        _check_targets_fit(owner, dataset.targets, classes)
    name = loss if isinstance(loss, str) else None
    loss_fn = get_loss(name) if name is not None else cast(Loss, loss)
    if name in _CLASS_INDEX_LOSSES and dataset.task == "classification":
        loss_fn = _checking_targets_fit_outputs(owner, loss_fn, dataset.targets)
    _check_model_runs(owner, model, loss_fn, dataset, seed)
    return _Problem(
        loss_name=name,
        loss_fn=loss_fn,
        inputs=dataset.inputs,
        targets=dataset.targets,
        num_classes=classes,
        seed=seed,
        binary=_binary_outputs(loss_fn, dataset.targets),
    )


_BINARY_LOSSES: dict[Any, str] = {
    nn.BCEWithLogitsLoss: "logits",
    F.binary_cross_entropy_with_logits: "logits",
    nn.BCELoss: "probabilities",
    F.binary_cross_entropy: "probabilities",
}


def _binary_outputs(loss_fn: Loss, targets: Tensor) -> str | None:
    """What a binary cross-entropy on float targets that are all 0 or 1 (binary or
    multi-label classification) takes: "logits" or "probabilities"; else None.

    Recognized: ``nn.BCEWithLogitsLoss``, ``nn.BCELoss`` (and subclasses),
    ``F.binary_cross_entropy_with_logits``, ``F.binary_cross_entropy`` and
    ``functools.partial`` of them; one wrapped in a function of one's own is invisible
    here (its float targets read as regression). Soft targets (0.3, label smoothing) stay
    regression: no sample is right or wrong.
    """
    function = loss_fn.func if isinstance(loss_fn, functools.partial) else loss_fn
    kind = next(
        (
            kind
            for loss, kind in _BINARY_LOSSES.items()
            if function is loss or (isinstance(loss, type) and isinstance(function, loss))
        ),
        None,
    )
    if kind is None or not targets.is_floating_point():
        return None
    return kind if bool(((targets == 0) | (targets == 1)).all()) else None


def _check_model_runs(
    owner: str, model: nn.Module, loss_fn: Loss, dataset: Dataset, seed: int
) -> None:
    """One forward and loss on two samples in eval mode, then in training mode (the mode
    the checks run in), so that a model that does not fit the data (another input width,
    outputs a named loss cannot take, in either mode) fails here with what to check, not
    as torch's error from deep inside one of the checks."""
    device, dtype = _placement(model)
    inputs = _inputs_for(dataset.inputs[:2], device, dtype)
    targets = dataset.targets[:2].to(device)
    kinds: dict[str, str] = {}
    with _probe(model, seed) as work, torch.no_grad():
        for mode in ("eval", "training"):
            work.train(mode == "training")
            for module in work.modules():  # the structure of the outputs is what counts
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()  # batch statistics of one sample would raise
            try:
                outputs = work(inputs)
                kinds[mode] = structure(outputs)
                loss_fn(outputs, targets)
            except (TypeError, RuntimeError, IndexError) as error:
                raise ValueError(_cannot_run_message(owner, dataset, mode, kinds, error)) from error


def _cannot_run_message(
    owner: str, dataset: Dataset, mode: str, kinds: Mapping[str, str], error: Exception
) -> str:
    differs = ""
    if mode == "training" and kinds.get("training", kinds["eval"]) != kinds["eval"]:
        differs = (
            f"; the model returns {kinds['training']} in training mode but {kinds['eval']} "
            "in eval mode, and the checks run it in training mode (dropout off)"
        )
    return cannot_run_message(
        "model and loss",
        owner,
        f"the data (inputs of shape {tuple(dataset.inputs.shape)}) in {mode} mode{differs}",
        error,
        "Check that the model takes inputs of that shape and that the loss takes its outputs "
        "in both modes (a model that returns a tuple or dict needs a loss function that "
        "picks the outputs).",
    )


def _as_dataset(owner: str, data: object) -> tuple[Dataset, int | None]:
    if isinstance(data, DataSplits):
        return data.train, data.num_classes
    if isinstance(data, Dataset):
        return data, None
    if isinstance(data, tuple | list) and len(data) == 2:
        return Dataset(data[0], data[1]), None
    raise TypeError(
        f"The 'data' parameter of {owner} must be a gradwise.data.DataSplits, a "
        f"gradwise.data.Dataset or a pair (inputs, targets). Got {type(data).__name__} instead."
    )


def _check_targets_fit(owner: str, targets: Tensor, num_classes: int) -> None:
    low, high = int(targets.min()), int(targets.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"The 'num_classes' parameter of {owner} must exceed every class index in the "
            f"targets ({low}..{high}). Got {num_classes} instead."
        )


def _checking_targets_fit_outputs(owner: str, loss_fn: Loss, targets: Tensor) -> Loss:
    """``loss_fn``, first checking that every target indexes a column of the outputs.

    A named classification loss indexes the outputs with the targets, so a target outside
    the model's output width would surface as torch's bare IndexError deep in the loss.
    The targets' range is read once here; each call only compares two ints.
    """
    low, high = int(targets.min()), int(targets.max())

    def checked(outputs: Any, batch_targets: Tensor) -> Tensor:
        if not isinstance(outputs, Tensor):
            return loss_fn(outputs, batch_targets)  # the loss says what it cannot take
        width = int(outputs.shape[-1]) if outputs.dim() >= 2 else None  # (batch, classes)
        if width is not None and (low < 0 or high >= width):
            raise ValueError(
                f"The targets given to {owner} must be class indices in 0..{width - 1}, one "
                f"per output of the model ({width} outputs). Got target "
                f"{low if low < 0 else high} instead. Fix the targets, or give the model "
                "one output per class."
            )
        return loss_fn(outputs, batch_targets)

    return checked


def _default_optimizer(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    return Adam(params, lr=lr)


def _default_penalty(strength: float) -> Callable[[nn.Module], Tensor]:
    return lambda model: l2_penalty(model, strength)


# ---------------------------------------------------------------------------------------
# Probes: a copy of the model, or the model restored exactly


@contextlib.contextmanager
def _probe(model: nn.Module, seed: int) -> Iterator[nn.Module]:
    """A working model in training mode with dropout off, under a forked, seeded RNG."""
    devices = sorted({p.device.index or 0 for p in _tensors(model) if p.device.type == "cuda"})
    # The probes need autograd even when called under torch.no_grad() or inference_mode().
    with torch.random.fork_rng(devices=devices), torch.inference_mode(False), torch.enable_grad():
        torch.default_generator.manual_seed(seed)
        for device in devices:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        work, restore = _working_copy(model)
        try:
            for parameter in work.parameters():
                parameter.grad = None  # the probe's own backward passes start from nothing
            work.train()
            for module in work.modules():
                if isinstance(module, nn.modules.dropout._DropoutNd):
                    module.p = 0.0
            yield work
        finally:
            restore()


def _working_copy(model: nn.Module) -> tuple[nn.Module, Callable[[], None]]:
    try:
        work = copy.deepcopy(model)
    except (RuntimeError, TypeError, copy.Error):
        # Some modules cannot be deep-copied (a non-leaf tensor attribute, say): probe the
        # model itself and put back everything a probe can change.
        return model, _snapshot(model)
    return work, lambda: None


def _snapshot(model: nn.Module) -> Callable[[], None]:
    """Save parameters, buffers, gradients, modes and dropout rates; return the restorer."""
    state = {name: t.detach().clone() for name, t in model.state_dict(keep_vars=True).items()}
    grads = {p: (None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()}
    modes = {module: module.training for module in model.modules()}
    rates = {
        module: module.p
        for module in model.modules()
        if isinstance(module, nn.modules.dropout._DropoutNd)
    }

    def restore() -> None:
        with torch.no_grad():
            for name, tensor in model.state_dict(keep_vars=True).items():
                tensor.copy_(state[name])
        for parameter, grad in grads.items():
            parameter.grad = grad
        for module, training in modes.items():
            module.training = training
        for module, rate in rates.items():
            module.p = rate

    return restore


def _tensors(model: nn.Module) -> Iterator[Tensor]:
    return itertools.chain(model.parameters(), model.buffers())


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    device, dtype = torch.device("cpu"), torch.float32
    for index, tensor in enumerate(_tensors(model)):
        if index == 0:
            device = tensor.device
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return device, dtype


def _batch(model: nn.Module, problem: _Problem, indices: Tensor) -> tuple[Tensor, Tensor]:
    device, dtype = _placement(model)
    inputs = _inputs_for(problem.inputs.index_select(0, indices), device, dtype)
    return inputs, problem.targets.index_select(0, indices).to(device)


def _inputs_for(inputs: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``inputs`` on the model's device; floating ones in its dtype, integer ones (token
    ids for an nn.Embedding) left integers."""
    if inputs.is_floating_point():
        return inputs.to(device=device, dtype=dtype)
    return inputs.to(device)


def _order(problem: _Problem, seed_offset: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(problem.seed + seed_offset)
    return torch.randperm(len(problem.targets), generator=generator)


def _stratified(problem: _Problem, count: int) -> Tensor:
    """``count`` indices that take the classes in turn, each in a seeded random order."""
    order = _order(problem)
    labels = problem.targets[order]
    if problem.binary is not None:  # (N,) or (N, 1) 0/1 labels; multi-label rows: no classes
        if labels[0].numel() != 1:
            return order[:count]
        labels = labels.reshape(-1).long()
    elif not problem.classification:
        return order[:count]
    rank = torch.zeros_like(labels)
    for label in labels.unique():
        members = labels == label
        rank[members] = torch.arange(int(members.sum()))
    interleaved = torch.argsort(rank * (int(labels.max()) + 1) + labels, stable=True)
    return order[interleaved[:count]]


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _make_optimizer(
    factory: OptimizerFactory, params: list[nn.Parameter], lr: float
) -> torch.optim.Optimizer:
    optimizer = factory(params, lr)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            "The 'optimizer_factory' parameter must return a torch.optim.Optimizer. "
            f"Got {type(optimizer).__name__} instead."
        )
    return optimizer


def _as_scalar(value: object, owner: str) -> Tensor:
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.reshape(())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return torch.tensor(float(value))
    raise TypeError(
        f"The '{owner}' must return a scalar (a one-element tensor or a number). "
        f"Got {type(value).__name__} instead."
    )


def _finite(value: float) -> float | None:
    """A float for JSON evidence: non-finite values become None."""
    return value if math.isfinite(value) else None


def _accuracy(outputs: Any, targets: Tensor, binary: str | None = None) -> float | None:
    """The fraction of samples whose highest score is their class; None without a score per
    class (one logit per sample under a loss of one's own has no argmax to take). Under a
    recognized binary cross-entropy, the fraction of 0/1 labels whose output is on their
    side of the threshold (logit 0, probability 1/2)."""
    scores = _scores(outputs)
    if binary is not None and scores is not None and scores.numel() == targets.numel():
        threshold = 0.0 if binary == "logits" else 0.5
        predicted = scores.detach().reshape(targets.shape) > threshold
        return float((predicted == (targets > 0.5)).float().mean())
    if scores is None or scores.dim() != 2 or scores.shape[-1] < 2:
        return None
    return float((scores.detach().argmax(dim=-1) == targets).float().mean())


def _num_classes(problem: _Problem, outputs: Any) -> int:
    """The given class count, else the width of the scores (one score per sample: 2)."""
    if problem.num_classes is not None:
        return problem.num_classes
    scores = _scores(outputs)
    if scores is not None and scores.dim() >= 2 and scores.shape[-1] >= 2:
        return int(scores.shape[-1])
    return 2


# ---------------------------------------------------------------------------------------
# Outputs: a tensor, or a tuple, list or dict of tensors for a loss that picks them


def _map_tensors(function: Callable[[Tensor], Tensor], outputs: Any) -> Any:
    """``outputs`` with ``function`` applied to every tensor in it (tuples, lists, dicts)."""
    if isinstance(outputs, Tensor):
        return function(outputs)
    if isinstance(outputs, Mapping):
        return {key: _map_tensors(function, value) for key, value in outputs.items()}
    if isinstance(outputs, tuple | list):
        items = [_map_tensors(function, item) for item in outputs]
        return type(outputs)(*items) if hasattr(outputs, "_fields") else type(outputs)(items)
    return outputs


def _tensors_in(outputs: Any) -> list[Tensor]:
    found: list[Tensor] = []

    def collect(tensor: Tensor) -> Tensor:
        found.append(tensor)
        return tensor

    _map_tensors(collect, outputs)
    return found


def _scores(outputs: Any) -> Tensor | None:
    """The class scores: the outputs, or the first tensor in a tuple or dict of them."""
    tensors = _tensors_in(outputs)
    return tensors[0] if tensors else None


def _sample(outputs: Any, index: int, batch_size: int) -> Any:
    """Sample ``index``'s row of every tensor in the outputs that has one row per sample."""
    return _map_tensors(
        lambda t: t[index : index + 1] if t.dim() > 0 and t.shape[0] == batch_size else t,
        outputs,
    )


def _output_kind(tensor: Tensor) -> str:
    """What the rows of ``tensor`` hold: "log_probabilities" (each logsumexp is 0, as after
    a LogSoftmax for NLLLoss), "probabilities" (non-negative, each sums to 1) or "scores"."""
    if not tensor.is_floating_point() or tensor.dim() < 2 or tensor.shape[-1] < 2:
        return "scores"
    rows = tensor.detach().double()
    tolerance = max(1e-4, 8 * torch.finfo(tensor.dtype).eps)
    if bool((rows.logsumexp(dim=-1).abs() <= tolerance).all()):
        return "log_probabilities"
    if bool((rows >= 0).all()) and bool(((rows.sum(dim=-1) - 1).abs() <= tolerance).all()):
        return "probabilities"
    return "scores"


def _uninformative(tensor: Tensor) -> Tensor:
    """What a classifier that knows nothing outputs, in the units of ``tensor``: all-zero
    scores, log-probabilities of -ln C or probabilities of 1/C."""
    kind = _output_kind(tensor)
    if kind == "log_probabilities":
        return torch.full_like(tensor, -math.log(tensor.shape[-1]))
    if kind == "probabilities":
        return torch.full_like(tensor, 1.0 / tensor.shape[-1])
    return torch.zeros_like(tensor) if tensor.is_floating_point() else tensor


def _scaled(tensor: Tensor, scale: float) -> Tensor:
    """``tensor`` as if the logits behind it were multiplied by ``scale``."""
    kind = _output_kind(tensor)
    if kind == "log_probabilities":
        return torch.log_softmax(tensor * scale, dim=-1)
    if kind == "probabilities":
        return torch.softmax(tensor.clamp_min(torch.finfo(tensor.dtype).tiny).log() * scale, -1)
    return tensor * scale if tensor.is_floating_point() else tensor


# ---------------------------------------------------------------------------------------
# Initial loss


def _initial_loss(
    model: nn.Module, problem: _Problem, batch_size: int, rtol: float, atol: float
) -> CheckResult:
    name = "initial_loss"
    if not problem.classification:
        return _skipped(name, "skipped: a regression loss has no value at chance")
    with _probe(model, problem.seed) as work, torch.no_grad():
        inputs, targets = _batch(work, problem, _order(problem)[:batch_size])
        outputs = work(inputs)  # (batch, classes), or a tuple or dict for the loss to pick
        measured = float(problem.loss_fn(outputs, targets))
        num_classes = _num_classes(problem, outputs)
        chance = _chance(problem, outputs, targets, num_classes)
        bound = rtol * chance + atol
        scale = _scale_to_chance(problem.loss_fn, outputs, targets, chance, bound)
        scores = _scores(outputs)
        logit_std = (
            float(scores.float().std()) if scores is not None and scores.numel() > 1 else 0.0
        )
    numbers = {
        "loss": measured,
        "chance": chance,
        "num_classes": num_classes,
        "tolerance": bound,
        "logit_std": logit_std,
        "output_scale_to_chance": scale,
    }
    counted = f"{num_classes} classes"
    if problem.binary is not None:
        labels = targets[0].numel() if targets.dim() > 1 else 1
        counted = f"{labels} binary label{'s' if labels > 1 else ''}"
    summary = (
        f"initial loss {measured:.4g} vs {chance:.4g} at chance ({counted}); tolerance {bound:.3g}"
    )
    if math.isfinite(measured) and abs(measured - chance) <= bound:
        return CheckResult(name, True, numbers, summary)
    finding = Diagnosis(
        Finding.INITIAL_LOSS_MISMATCH,
        summary,
        _initial_loss_prescription(measured, chance, scale),
        _evidence(numbers),
        severity="warning",
    )
    return CheckResult(name, False, numbers, summary, [finding])


def _chance(problem: _Problem, outputs: Any, targets: Tensor, num_classes: int) -> float:
    if problem.loss_name is not None:
        return chance_loss(problem.loss_name, num_classes)
    if problem.binary is not None:
        # Logit 0 or probability 1/2 for every label: ln 2 per label under the default
        # mean, and what the loss's weight, pos_weight or reduction make of it.
        value = 0.0 if problem.binary == "logits" else 0.5
        uninformed = _map_tensors(lambda t: torch.full_like(t, value), outputs)
        return float(problem.loss_fn(uninformed, targets))
    return float(problem.loss_fn(_map_tensors(_uninformative, outputs), targets))


def _scale_to_chance(
    loss_fn: Loss, outputs: Any, targets: Tensor, chance: float, bound: float
) -> float:
    """The largest factor s in (0, 1] that brings loss(s * logits) within bound / 2 of chance."""

    def too_far(log_scale: float) -> bool:
        scaled = _map_tensors(lambda tensor: _scaled(tensor, math.exp(log_scale)), outputs)
        value = float(loss_fn(scaled, targets))
        return not abs(value - chance) <= bound / 2

    finite = all(bool(torch.isfinite(t).all()) for t in _tensors_in(outputs))
    if not too_far(0.0) or not finite:
        return 1.0
    low, high = math.log(1e-12), 0.0  # outputs scaled by 1e-12 give the loss at chance
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (low, middle) if too_far(middle) else (middle, high)
    return math.exp(low)


def _initial_loss_prescription(measured: float, chance: float, scale: float) -> str:
    remedy = REMEDIES[Finding.INITIAL_LOSS_MISMATCH]
    if not math.isfinite(measured):
        return f"the loss at init is not finite; {remedy}"
    direction = "above" if measured > chance else "below"
    return (
        f"{remedy}: the loss is {direction} chance; scaling the outputs at init by "
        f"~{scale:.2g} (the last layer's weights and bias) would bring it to chance. Use "
        "He/Xavier initialization with zero biases on standardized inputs"
        + ("" if measured > chance else ", and check that the inputs do not leak the labels")
    )


def _skipped(name: str, reason: str) -> CheckResult:
    return CheckResult(name, True, {}, reason, skipped=True)


# ---------------------------------------------------------------------------------------
# Regularization


def _regularization(
    model: nn.Module,
    problem: _Problem,
    factory: PenaltyFactory,
    strengths: Sequence[float],
    batch_size: int,
) -> CheckResult:
    name = "regularization_raises_loss"
    ordered = sorted(float(s) for s in strengths)
    with _probe(model, problem.seed) as work:
        inputs, targets = _batch(work, problem, _order(problem)[:batch_size])
        with torch.no_grad():
            data_loss = float(problem.loss_fn(work(inputs), targets))
        penalties = [
            float(_as_scalar(factory(s)(work), "penalty_factory").detach()) for s in ordered[:-1]
        ]
        strongest = _as_scalar(factory(ordered[-1])(work), "penalty_factory")
        penalties.append(float(strongest.detach()))
        has_gradient = _has_gradient(strongest, _trainable(work))
    totals = [data_loss + penalty for penalty in penalties]
    numbers = {"strengths": ordered, "total_losses": totals, "data_loss": data_loss}
    rises = all(b > a for a, b in itertools.pairwise(totals))
    rises = rises and totals[-1] - totals[0] >= 1e-3 * max(abs(totals[0]), 1e-12)
    shown = ", ".join(f"{total:.4g}" for total in totals)
    strengths_shown = ", ".join(f"{s:g}" for s in ordered)
    if not rises:
        hint = (
            " (the penalty is 0 at every strength: it is not applied, or the penalized "
            "weights are all zero)"
            if all(p == 0 for p in penalties)
            else ""
        )
        message = (
            f"the total loss did not rise with the regularization strength: {shown} at "
            f"strengths {strengths_shown}{hint}"
        )
        return CheckResult(name, False, numbers, message, [_not_applied(message, numbers)])
    if not has_gradient:
        message = (
            f"the penalty raises the loss ({shown}) but has no gradient with respect to the "
            "parameters (computed on detached weights?), so it cannot regularize training"
        )
        return CheckResult(name, False, numbers, message, [_not_applied(message, numbers)])
    message = f"the total loss rose {shown} at strengths {strengths_shown}"
    return CheckResult(name, True, numbers, message)


def _not_applied(message: str, numbers: Mapping[str, Any]) -> Diagnosis:
    return Diagnosis(
        Finding.REGULARIZATION_NOT_APPLIED,
        message,
        REMEDIES[Finding.REGULARIZATION_NOT_APPLIED],
        dict(numbers),
        "error",
    )


def _has_gradient(penalty: Tensor, params: list[nn.Parameter]) -> bool:
    if not penalty.requires_grad or not params:
        return False
    grads = torch.autograd.grad(penalty, params, allow_unused=True)
    return any(g is not None and bool((g != 0).any()) for g in grads)


# ---------------------------------------------------------------------------------------
# Overfitting a tiny subset


def _overfit(
    model: nn.Module,
    problem: _Problem,
    factory: OptimizerFactory,
    num_samples: int,
    num_steps: int,
    learning_rates: Sequence[float],
    tolerance: float,
) -> CheckResult:
    name = "overfit_tiny_subset"
    with _probe(model, problem.seed) as work:
        inputs, targets = _batch(work, problem, _stratified(problem, num_samples))
        params = _trainable(work)
        if not params:
            return _no_trainable_parameters(name)
        with torch.no_grad():
            outputs = work(inputs)
            reference = (
                _chance(problem, outputs, targets, _num_classes(problem, outputs))
                if problem.classification
                else float(problem.loss_fn(outputs, targets))
            )
        floor = _loss_floor(problem.loss_fn, outputs, targets)
        target = floor.value + tolerance * (reference - floor.value)
        initial = {key: value.detach().clone() for key, value in work.state_dict().items()}
        spread = _forward_spread(work, inputs)  # before the training that restores initial
        runs = []
        for lr in learning_rates:
            work.load_state_dict(initial)
            optimizer = _make_optimizer(factory, params, float(lr))
            runs.append(_fit(work, optimizer, problem, inputs, targets, num_steps, target))
            if runs[-1]["passed"]:
                break
        eval_spread = 0.0
        if spread > 0 and not runs[-1]["passed"]:
            work.load_state_dict(initial)
            work.eval()
            eval_spread = _forward_spread(work, inputs)
            work.train()
    if spread > 0 and not runs[-1]["passed"]:
        return _noisy_result(name, len(targets), runs, spread, eval_spread)
    result = _overfit_result(name, problem, runs, learning_rates, len(targets), target, params)
    if floor.value == 0.0 and floor.reason is None:
        return result
    return _with_floor(result, floor)


@dataclass(frozen=True)
class _Floor:
    """The smallest value a loss can take on a batch, and why it is not 0."""

    value: float = 0.0
    reason: str | None = None  # None: a loss that can reach 0


def _label_smoothing(loss_fn: Loss) -> tuple[float, Tensor | None, str, int] | None:
    """(eps, class weights, reduction, ignore_index) of a label-smoothed cross-entropy,
    else None.

    Recognized: ``nn.CrossEntropyLoss(label_smoothing=eps)`` and
    ``functools.partial(F.cross_entropy, label_smoothing=eps)``; a smoothing applied inside
    a function of one's own is invisible here.
    """
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        eps, weight, reduction = loss_fn.label_smoothing, loss_fn.weight, loss_fn.reduction
        ignore_index = loss_fn.ignore_index
    elif isinstance(loss_fn, functools.partial) and loss_fn.func is F.cross_entropy:
        keywords = loss_fn.keywords
        eps = keywords.get("label_smoothing", 0.0)
        weight, reduction = keywords.get("weight"), keywords.get("reduction", "mean")
        ignore_index = keywords.get("ignore_index", -100)
    else:
        return None
    return (float(eps), weight, reduction, int(ignore_index)) if eps > 0 else None


def _loss_floor(loss_fn: Loss, outputs: Any, targets: Tensor) -> _Floor:
    r"""The minimum over all outputs of a label-smoothed cross-entropy on ``targets``.

    With smoothing :math:`\varepsilon` over :math:`C` classes, torch's loss of sample
    :math:`i` is :math:`-\sum_c a_c \ln p_c` with
    :math:`a_c = (1-\varepsilon) w_{y_i} [c = y_i] + (\varepsilon / C) w_c` (class weights
    :math:`w`, all 1 by default), the mean dividing by :math:`\sum_i w_{y_i}`. Gibbs'
    inequality puts its minimum at :math:`p = a / A`, :math:`A = \sum_c a_c`:
    :math:`-\sum_c a_c \ln(a_c / A)`; unweighted, the entropy of the smoothed target
    :math:`-(1-\varepsilon+\varepsilon/C)\ln(1-\varepsilon+\varepsilon/C) - (C-1)
    (\varepsilon/C)\ln(\varepsilon/C)`. Samples whose label is ``ignore_index`` add
    nothing, to the loss or to the mean's divisor.
    """
    smoothing = _label_smoothing(loss_fn)
    if smoothing is None or not isinstance(outputs, Tensor) or outputs.dim() < 2:
        return _Floor()
    eps, weight, reduction, ignore_index = smoothing
    num_classes = int(outputs.shape[1])  # (batch, classes, ...)
    if outputs.dim() > 2 or reduction not in ("mean", "sum"):
        return _Floor(0.0, f"label smoothing {eps:g} (its minimum is above 0)")
    weights = (
        torch.ones(num_classes, dtype=torch.float64)
        if weight is None
        else weight.detach().double().cpu()
    )
    labels = targets.cpu()
    labels = labels[labels != ignore_index]  # torch leaves these samples out
    if not len(labels):  # every sample ignored: the loss is 0 (sum) or NaN (mean)
        return _Floor()
    share = torch.outer(weights[labels], torch.ones(num_classes, dtype=torch.float64))
    mass = (eps / num_classes) * weights.expand(len(labels), -1).clone()  # (batch, classes)
    mass[torch.arange(len(labels)), labels] += (1 - eps) * share[:, 0]
    total = mass.sum(dim=1, keepdim=True)
    per_sample = -(mass * torch.log(mass / total)).nan_to_num().sum(dim=1)  # 0 ln 0 = 0
    value = per_sample.sum() / (weights[labels].sum() if reduction == "mean" else 1.0)
    return _Floor(
        float(value), f"label smoothing {eps:g} over {num_classes} classes keeps the loss above"
    )


def _with_floor(result: CheckResult, floor: _Floor) -> CheckResult:
    """``result`` with the loss's floor in ``measured`` and said in the message."""
    if floor.value > 0:
        said = f"{floor.reason} {floor.value:.4g}; the target lies that far above 0"
    else:
        said = (
            f"{floor.reason}, not computed for this loss: the target assumes 0, so a healthy "
            "model may fail; run the check with the loss without smoothing"
        )
    measured = {**result.measured, "loss_floor": floor.value}
    message = f"{result.message} ({said})"
    findings = [
        replace(finding, summary=f"{finding.summary} ({said})") for finding in result.findings
    ]
    return replace(result, measured=measured, message=message, findings=findings)


def _forward_spread(model: nn.Module, inputs: Tensor) -> float:
    """The largest difference between the outputs of two identical forward passes: 0 for
    a deterministic model, > 0 under random draws the probe cannot switch off
    (``F.dropout`` in ``forward``), ``inf`` when their shapes or structure differ."""
    with torch.no_grad():
        first, second = _tensors_in(model(inputs)), _tensors_in(model(inputs))
    if len(first) != len(second) or any(
        a.shape != b.shape for a, b in zip(first, second, strict=True)
    ):
        return math.inf
    spread = 0.0
    for a, b in zip(first, second, strict=True):
        if a.is_floating_point() and a.numel() and not torch.equal(a, b):
            same = (a == b) | (a.isnan() & b.isnan())
            difference = float((a - b).abs().masked_fill(same, 0.0).max())
            # Non-deterministic GPU kernels differ in the last bits; dropout by O(1).
            if difference > _NOISE_RTOL * float(a.abs().nan_to_num(0.0, 0.0, 0.0).max()):
                spread = max(spread, difference)
    return spread


def _noisy_result(
    name: str, num_samples: int, runs: list[dict[str, Any]], spread: float, eval_spread: float
) -> CheckResult:
    """The tiny subset was not fitted, and two identical forward passes differ."""
    best = min(runs, key=lambda run: run["loss"] if math.isfinite(run["loss"]) else math.inf)
    numbers = {
        "num_samples": num_samples,
        "loss": best["loss"],
        "output_spread": spread,
        "output_spread_eval": eval_spread,
        "runs": runs,
    }
    evidence = (
        f"two identical forward passes on the same {num_samples} samples differ by up to "
        f"{spread:.3g} in training mode"
    )
    cause = (
        "random draws the check cannot switch off (it sets p = 0 on nn.Dropout modules, but "
        "cannot reach F.dropout or torch.rand calls in forward)"
    )
    if eval_spread > 0:
        message = (
            f"cannot judge overfitting: {evidence}, and by up to {eval_spread:.3g} in eval "
            f"mode: {cause}. A model that is random in eval mode gives random predictions; "
            "look for F.dropout(x, p, training=True) hard-coded and pass "
            "training=self.training, or use an nn.Dropout module"
        )
        return CheckResult(name, False, numbers, message)
    message = (
        f"skipped: {evidence} (not in eval mode), {cause}, so the loss cannot be driven to ~0 "
        "and a failure would say nothing; use an nn.Dropout module instead of "
        "F.dropout(x, p, self.training) for the check to run"
    )
    return CheckResult(name, True, numbers, message, skipped=True)


def _fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    problem: _Problem,
    inputs: Tensor,
    targets: Tensor,
    num_steps: int,
    target: float,
) -> dict[str, Any]:
    """Full-batch steps until the loss is below ``target`` (and every sample is right)."""
    steps, value, all_right = 0, math.inf, False
    accuracy: float | None = 0.0
    for steps in range(num_steps + 1):
        optimizer.zero_grad(set_to_none=True)
        outputs = model(inputs)
        loss = problem.loss_fn(outputs, targets)
        value = float(loss.detach())
        # No score per class (one logit): the loss alone, a mean at most 1% of chance.
        accuracy = _accuracy(outputs, targets, problem.binary) if problem.classification else 1.0
        all_right = accuracy is None or accuracy == 1.0
        if not math.isfinite(value) or (value <= target and all_right):
            break
        if steps < num_steps:
            loss.backward()
            if nonfinite := _nonfinite_gradients(model):
                break
            optimizer.step()
    passed = math.isfinite(value) and value <= target and all_right and not nonfinite
    return {
        "lr": float(optimizer.param_groups[0]["lr"]),
        "loss": value,
        "accuracy": accuracy,
        "steps": steps,
        "passed": passed,
        "nonfinite_gradient": nonfinite,
    }


def _nonfinite_gradients(model: nn.Module) -> list[str]:
    """The names of the parameters whose gradient holds a NaN or an infinity."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads or bool(torch.stack([g.isfinite().all() for g in grads]).all()):
        return []  # one device sync per step, not one per tensor
    return [
        name
        for name, parameter in model.named_parameters()
        if parameter.grad is not None and not bool(parameter.grad.isfinite().all())
    ]


def _nonfinite_gradient_finding(names: list[str], step: int, loss: float) -> Diagnosis:
    shown = ", ".join(repr(name) for name in names)
    return Diagnosis(
        Finding.WRONG_GRADIENT,
        f"the gradient of {shown} holds NaN or infinite values at step {step}, with the "
        f"loss finite ({loss:.4g})",
        f"{REMEDIES[Finding.WRONG_GRADIENT]}: look for sqrt, log, pow or a division at 0 on "
        f"the path to {shown} (torch.autograd.set_detect_anomaly(True) names the operation)",
        {"nonfinite_gradient": names, "step": step, "loss": _finite(loss)},
        severity="error",
        step=step,
    )


def _overfit_result(
    name: str,
    problem: _Problem,
    runs: list[dict[str, Any]],
    learning_rates: Sequence[float],
    num_samples: int,
    target: float,
    params: list[nn.Parameter],
) -> CheckResult:
    best = min(runs, key=lambda run: run["loss"] if math.isfinite(run["loss"]) else math.inf)
    numbers = {
        "num_samples": num_samples,
        "target_loss": target,
        "best_lr": best["lr"],
        "loss": best["loss"],
        "accuracy": best["accuracy"],
        "steps": best["steps"],
        "runs": runs,
    }
    accuracy = (
        f", train accuracy {best['accuracy']:.0%}"
        if problem.classification and best["accuracy"] is not None
        else ""
    )
    summary = (
        f"on {num_samples} samples the loss reached {best['loss']:.3g} (target {target:.3g})"
        f"{accuracy} after {best['steps']} full-batch steps at lr {best['lr']:g}"
    )
    if best["passed"]:
        return CheckResult(name, True, numbers, summary)
    broken = next((run for run in runs if run["nonfinite_gradient"]), None)
    if broken is not None:
        finding = _nonfinite_gradient_finding(
            broken["nonfinite_gradient"], broken["steps"], broken["loss"]
        )
        message = f"{summary}; training stopped: {finding.summary}"
        return CheckResult(name, False, numbers, message, [finding])
    tried = ", ".join(f"{lr:g}" for lr in learning_rates)
    # Every sample right and the loss still above the target: the loss did not go to ~0.
    all_right = problem.classification and best["accuracy"] == 1.0
    finding = Diagnosis(
        Finding.NO_LEARNING_SIGNAL,
        f"cannot overfit a tiny subset: {summary}"
        + (", every sample classified right but the loss not near 0" if all_right else ""),
        (
            "a working network drives the loss on a few samples to ~0"
            if all_right
            else "a working network memorizes a few samples"
        )  # fmt: skip
        + ": check for frozen parameters "
        f"({sum(p.numel() for p in params)} trainable values), a wrong gradient (run "
        "gradwise.checks.gradcheck), too little capacity, and learning rates outside "
        f"those tried ({tried})"
        + (
            "; a loss whose minimum is above 0 (label smoothing, a penalty added to it) "
            "cannot reach the target: run the check with the plain loss"
            if all_right
            else ""
        ),
        _evidence(numbers),
        severity="error",
    )
    return CheckResult(name, False, numbers, summary, [finding])


def _no_trainable_parameters(name: str) -> CheckResult:
    message = "the model has no trainable parameters (every requires_grad is False)"
    finding = Diagnosis(
        Finding.NO_LEARNING_SIGNAL,
        message,
        "unfreeze the parameters to train (requires_grad=True)",
        {"num_trainable": 0},
        severity="error",
    )
    return CheckResult(name, False, {"num_trainable": 0}, message, [finding])


def _evidence(numbers: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-ready numbers: non-finite floats become None, recursively."""

    def clean(value: Any) -> Any:
        if isinstance(value, float):
            return _finite(value)
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    cleaned: dict[str, Any] = clean(numbers)
    return cleaned


# ---------------------------------------------------------------------------------------
# Gradients reach every parameter


def _gradients(model: nn.Module, problem: _Problem, batch_size: int) -> CheckResult:
    name = "all_parameters_get_gradients"
    with _probe(model, problem.seed) as work:
        if not _trainable(work):
            return _no_trainable_parameters(name)
        batch = _batch(work, problem, _order(problem)[:batch_size])
        loss = _weighted_backward(work, problem, batch)
        unused, zero, nonfinite, frozen = _gradient_status(work)
        symmetric = _symmetric_layers(work)
        zero_layers: list[str] = []
        starved: list[str] = []
        if zero and not symmetric:
            zero_layers, starved = _starved_by_zero_layers(work, problem, batch, zero)
    zero = [tensor for tensor in zero if tensor not in starved]
    numbers = {
        "unused": unused,
        "zero_gradient": zero,
        "nonfinite_gradient": nonfinite,
        "frozen": frozen,
        "symmetric_layers": symmetric,
        "zero_weight_layers": zero_layers,
        "starved_at_init": starved,
    }
    findings = []
    if symmetric:
        findings.append(_symmetric_finding(symmetric, zero))
    # Constant weights starve whole stretches of the network of gradient (zero weights
    # downstream, zero activations upstream): with symmetric layers, the zero gradients are
    # that finding's evidence rather than a second diagnosis.
    unexplained = [] if symmetric else zero
    if unused or unexplained:
        findings.append(_missing_gradient_finding(unused, unexplained))
    if nonfinite:
        findings.append(_nonfinite_gradient_finding(nonfinite, 0, loss))
    failed = bool(findings or nonfinite)
    message = _gradient_message(unused, zero, nonfinite, symmetric)
    if starved and not failed:
        message += (
            f" ({', '.join(starved)} only after the all-zero layer(s) "
            f"{', '.join(zero_layers)} take a first step)"
        )
    return CheckResult(name, not failed, numbers, message, findings)


def _starved_by_zero_layers(
    model: nn.Module, problem: _Problem, batch: tuple[Tensor, Tensor], zero: list[str]
) -> tuple[list[str], list[str]]:
    """The all-zero layers that move on the first step, and the zero gradients they cause.

    A zero-initialized output layer blocks every gradient before it until its own
    gradient has moved it; fill such layers with small random weights (on the probe's
    copy) and see which zero gradients come alive.
    """
    layers = {
        name: module.weight
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)
        and module.weight.requires_grad
        and not bool(module.weight.detach().any())
        and module.weight.grad is not None
        and bool(module.weight.grad.any())
    }
    if not layers:
        return [], []
    with torch.no_grad():
        for weight in layers.values():
            weight.normal_(0.0, 1e-3)
    for parameter in model.parameters():
        parameter.grad = None
    _weighted_backward(model, problem, batch)
    grads = {name: parameter.grad for name, parameter in model.named_parameters()}
    alive = [name for name in zero if (grad := grads[name]) is not None and bool(grad.any())]
    return list(layers), alive


def _weighted_backward(model: nn.Module, problem: _Problem, batch: tuple[Tensor, Tensor]) -> float:
    """Backward of the batch's per-sample losses weighted by seeded random weights in [0.5, 1.5].

    The per-sample gradients then cannot cancel by coincidence (under the hinge loss a
    class-balanced batch gives the output bias exactly zero gradient), while a tensor
    that no sample's loss reaches still gets exactly zero.
    """
    inputs, targets = batch
    outputs = model(inputs)
    size = len(targets)
    losses = torch.stack(
        [problem.loss_fn(_sample(outputs, i, size), targets[i : i + 1]) for i in range(size)]
    )
    generator = torch.Generator().manual_seed(problem.seed)
    weights = 0.5 + torch.rand(len(targets), generator=generator, dtype=torch.float64)
    total = (weights.to(losses.device, losses.dtype) * losses).mean()
    total.backward()
    return float(total.detach())


def _gradient_status(model: nn.Module) -> tuple[list[str], list[str], list[str], list[str]]:
    unused, zero, nonfinite, frozen = [], [], [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            frozen.append(name)
        elif parameter.grad is None:
            unused.append(name)
        elif not bool(torch.isfinite(parameter.grad).all()):
            nonfinite.append(name)
        elif not bool((parameter.grad != 0).any()):
            zero.append(name)
    return unused, zero, nonfinite, frozen


def _symmetric_layers(model: nn.Module) -> list[str]:
    """Linear/Conv layers whose output units are identical and get identical gradients."""
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            continue
        if getattr(module, "groups", 1) != 1 or module.weight.shape[0] < 2:
            continue
        if not module.weight.requires_grad:  # frozen on purpose: listed, not flagged
            continue
        tensors = [module.weight, module.bias] if module.bias is not None else [module.weight]
        if all(_rows_identical(t) and _rows_identical(t.grad) for t in tensors):
            layers.append(name)
    return layers


def _rows_identical(tensor: Tensor | None) -> bool:
    if tensor is None:  # no gradient: every row's gradient is the same nothing
        return True
    rows = tensor.detach().reshape(tensor.shape[0], -1)
    spread = (rows - rows[:1]).abs().max()
    return bool(spread <= _SYMMETRY_RTOL * rows.abs().max())


def _symmetric_finding(symmetric: list[str], zero: list[str]) -> Diagnosis:
    layers = ", ".join(repr(layer) for layer in symmetric)
    return Diagnosis(
        Finding.SYMMETRIC_INIT,
        f"every output unit of layer(s) {layers} has the same weights and gets the same "
        "gradient, so the units can never become different",
        f"{REMEDIES[Finding.SYMMETRIC_INIT]}; re-initialize {layers}",
        {"layers": symmetric, "zero_gradient": zero},
        severity="error",
        fix={"init.weights": "he_normal"},
    )


def _missing_gradient_finding(unused: list[str], zero: list[str]) -> Diagnosis:
    parts = []
    if unused:
        parts.append(f"{len(unused)} tensor(s) get no gradient at all ({', '.join(unused)})")
    if zero:
        parts.append(f"{len(zero)} get an all-zero gradient ({', '.join(zero)})")
    return Diagnosis(
        Finding.NO_LEARNING_SIGNAL,
        "; ".join(parts),
        "connect or remove unused layers (a None gradient means the tensor is not on the "
        "loss's graph: an unused layer or a detached path); for all-zero gradients look "
        "for dead ReLUs (biases too negative), zero weights downstream or a detach()",
        {"unused": unused, "zero_gradient": zero},
        severity="error",
    )


def _gradient_message(
    unused: list[str], zero: list[str], nonfinite: list[str], symmetric: list[str]
) -> str:
    problems = [
        f"{label}: {', '.join(names)}"
        for label, names in (
            ("no gradient", unused),
            ("all-zero gradient", zero),
            ("non-finite gradient", nonfinite),
            ("symmetric layers", symmetric),
        )
        if names
    ]
    return "; ".join(problems) if problems else "every trainable tensor got a nonzero gradient"


# ---------------------------------------------------------------------------------------
# Samples do not mix


def _mixing(model: nn.Module, problem: _Problem, batch_size: int) -> CheckResult:
    name = "samples_do_not_mix"
    if len(problem.targets) < 2:
        return _skipped(
            name,
            f"skipped: the data hold {len(problem.targets)} sample, and mixing needs a pair "
            "of samples to check; give at least 2 samples",
        )
    with _probe(model, problem.seed) as work:
        norms = [m for m in work.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if any(not m.track_running_stats for m in norms):
            return _skipped(
                name,
                "skipped: a BatchNorm layer without running statistics normalizes over the "
                "batch in every mode, so samples mix by design",
            )
        for norm in norms:
            norm.eval()  # running statistics: the rest of the network is still checked
        inputs, targets = _batch(work, problem, _order(problem)[:batch_size])
        if not inputs.is_floating_point():
            return _skipped(
                name,
                "skipped: integer inputs (token ids) have no gradient to trace a sample's "
                "loss back to the others' inputs with",
            )
        inputs.requires_grad_(True)
        outputs = work(inputs)
        shape = [] if (scores := _scores(outputs)) is None else list(scores.shape)
        if not shape or shape[0] != inputs.shape[0]:
            return CheckResult(
                name,
                False,
                {"batch_size": int(inputs.shape[0]), "output_shape": shape},
                f"the outputs {tuple(shape)} do not have one row per sample of the "
                f"batch ({inputs.shape[0]})",
            )
        leaks = _input_gradients(problem, inputs, outputs, targets)
    if leaks is None:
        return _skipped(name, "skipped: the loss does not depend on the inputs differentiably")
    return _mixing_result(name, leaks, bool(norms))


def _input_gradients(
    problem: _Problem, inputs: Tensor, outputs: Any, targets: Tensor
) -> Tensor | None:
    """(batch, batch) matrix: entry (i, j) is max |d loss_i / d x_j|."""
    size = inputs.shape[0]
    leaks = torch.zeros(size, size, dtype=torch.float64)
    for i in range(size):
        loss_i = problem.loss_fn(_sample(outputs, i, size), targets[i : i + 1])
        if not loss_i.requires_grad:
            return None
        grads = torch.autograd.grad(loss_i, inputs, retain_graph=True, allow_unused=True)
        grad: Tensor | None = grads[0]  # None when the inputs are not on the graph
        if grad is None:
            return None
        leaks[i] = grad.detach().reshape(size, -1).abs().amax(dim=1).double().cpu()
    return leaks


def _mixing_result(name: str, leaks: Tensor, batch_norm: bool) -> CheckResult:
    own = float(leaks.diagonal().max())
    off_diagonal = leaks.clone()
    off_diagonal.fill_diagonal_(0.0)
    leak = float(off_diagonal.max())
    pairs = [[int(i), int(j)] for i, j in (off_diagonal > _MIXING_RTOL * own).nonzero()]
    if own == 0.0:
        pairs = [[int(i), int(j)] for i, j in (off_diagonal > 0).nonzero()]
    size = int(leaks.shape[0])
    numbers = {"batch_size": size, "max_own": own, "max_leak": leak, "pairs": pairs}
    if pairs:
        message = (
            f"samples mix: in {len(pairs)} of {size * (size - 1)} pairs (i, j) the loss of "
            f"sample i has a gradient w.r.t. the input of sample j, up to {leak:.3g} (own "
            f"inputs: up to {own:.3g}); look for a reshape or transpose across the batch "
            "axis, or statistics over the batch computed by hand"
        )
        finding = Diagnosis(
            Finding.SAMPLES_MIX, message, REMEDIES[Finding.SAMPLES_MIX], numbers, "error"
        )
        return CheckResult(name, False, numbers, message, [finding])
    message = f"no sample's loss depends on another's input ({size} samples)"
    if batch_norm:
        message += "; BatchNorm ran on its running statistics (it mixes samples by design)"
    return CheckResult(name, True, numbers, message)


# ---------------------------------------------------------------------------------------
# Learning-rate sweep


def _sweep(
    model: nn.Module,
    problem: _Problem,
    factory: OptimizerFactory,
    learning_rates: Sequence[float],
    num_steps: int,
    batch_size: int,
    min_decrease: float,
) -> CheckResult:
    name = "learning_rate_sweep"
    with _probe(model, problem.seed) as work:
        params = _trainable(work)
        if not params:
            return _no_trainable_parameters(name)
        order = _order(problem)
        evaluation = _batch(work, problem, _order(problem, seed_offset=1)[:512])
        batches = [
            _batch(work, problem, order.roll(-step * batch_size)[:batch_size])
            for step in range(num_steps)
        ]
        before = _evaluate(work, problem, evaluation)
        initial = {key: value.detach().clone() for key, value in work.state_dict().items()}
        curves, after, broken = [], [], []
        for lr in learning_rates:
            work.load_state_dict(initial)
            optimizer = _make_optimizer(factory, params, float(lr))
            curve, nonfinite = _train_steps(work, optimizer, problem, batches)
            curves.append(curve)
            after.append(
                _evaluate(work, problem, evaluation)
                if math.isfinite(curve[-1]) and not nonfinite
                else math.inf
            )
            if nonfinite:
                broken.append(_nonfinite_gradient_finding(nonfinite, len(curve) - 1, curve[-1]))
    result = _sweep_result(name, learning_rates, before, after, curves, min_decrease, num_steps)
    if result.passed or not broken:
        return result
    # A NaN gradient stops every learning rate at the same step: that is the diagnosis.
    message = f"training stopped before any learning rate could lower the loss: {broken[0].summary}"
    return replace(result, message=message, findings=[broken[0]])


def _evaluate(model: nn.Module, problem: _Problem, batch: tuple[Tensor, Tensor]) -> float:
    with torch.no_grad():
        return float(problem.loss_fn(model(batch[0]), batch[1]))


def _train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    problem: _Problem,
    batches: list[tuple[Tensor, Tensor]],
) -> tuple[list[float], list[str]]:
    """The minibatch losses, and the parameters whose gradient turned non-finite (which
    stops the run, the loss still finite)."""
    curve: list[float] = []
    for inputs, targets in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = problem.loss_fn(model(inputs), targets)
        curve.append(float(loss.detach()))
        if not math.isfinite(curve[-1]):
            break
        loss.backward()
        if nonfinite := _nonfinite_gradients(model):
            return curve, nonfinite
        optimizer.step()
    return curve, []


def _sweep_result(
    name: str,
    learning_rates: Sequence[float],
    before: float,
    after: list[float],
    curves: list[list[float]],
    min_decrease: float,
    num_steps: int,
) -> CheckResult:
    decreases = [
        (before - value) / abs(before) if math.isfinite(value) and before != 0 else -math.inf
        for value in after
    ]
    best = max(range(len(decreases)), key=lambda k: decreases[k])
    best_lr = float(learning_rates[best])
    numbers = {
        "learning_rates": [float(lr) for lr in learning_rates],
        "initial_loss": before,
        "final_losses": after,
        "decreases": decreases,
        "best_lr": best_lr,
        "curves": curves,
    }
    summary = (
        f"after {num_steps} steps the best learning rate {best_lr:g} took the loss from "
        f"{before:.4g} to {after[best]:.4g} ({-decreases[best]:+.0%})"
    )
    if decreases[best] >= min_decrease:
        return CheckResult(name, True, numbers, summary)
    finding = Diagnosis(
        Finding.NO_LEARNING_SIGNAL,
        f"no learning rate from {min(learning_rates):g} to {max(learning_rates):g} lowered "
        f"the loss by {min_decrease:.0%}: {summary}",
        f"{REMEDIES[Finding.NO_LEARNING_SIGNAL]}; check for frozen parameters and the "
        "gradient (gradwise.checks.gradcheck)",
        _evidence({k: v for k, v in numbers.items() if k != "curves"}),
        severity="error",
    )
    return CheckResult(name, False, numbers, summary, [finding])
