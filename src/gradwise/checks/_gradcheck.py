"""The gradient check: analytic gradients against centred differences, kinks and unsettled
differences flagged."""

from __future__ import annotations

import copy
import math
import random
import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from gradwise._validation import (
    POSITIVE,
    Boolean,
    Constraint,
    Interval,
    Satisfies,
    check,
    invalid_value_error,
)
from gradwise.checks._fit import cannot_run_message, structure
from gradwise.diagnosis import Diagnosis, Finding

Verdict = Literal["zero", "good", "ok", "kink", "unstable", "suspicious", "wrong"]
Term = Literal["loss", "penalty"]

#: Best to worst: the order in which a tensor's or a report's worst verdict is taken.
VERDICTS: tuple[Verdict, ...] = ("zero", "good", "ok", "kink", "unstable", "suspicious", "wrong")

# The lectures' (cs231n) thresholds on the relative error: above 1e-2 the gradient is
# probably wrong, 1e-4..1e-2 is uncomfortable, 1e-7..1e-4 is fine for objectives with
# kinks (too high for smooth ones), below 1e-7 is good.
_GOOD, _OK, _SUSPICIOUS = 1e-7, 1e-4, 1e-2

# Rounding noise of a centred difference: f is computed with an error of a few ulps of
# |f|, so (f(x+h) - f(x-h)) / 2h is off by about eps * |f| / h. Measured on tanh and ReLU
# MLPs (cross-entropy and MSE, inputs up to 1e3): |numeric - analytic| stayed below
# 1.0 eps |f| / h on smooth coordinates at the 99th percentile and 4.3 at the maximum;
# 16 leaves a margin. |f| is floored at 1 for objectives that are small by cancellation.
_NOISE_ULPS = 16.0
_EPS = torch.finfo(torch.float64).eps

# A failing coordinate that is no kink is measured again at h / 10. The truncation error
# of a centred difference, h^2 f^(3) / 6 + O(h^4) once h is small enough, shrinks 100-fold
# from h to h / 10, while a wrong gradient's discrepancy |a - n| does not shrink at all.
# (1) So the h / 10 estimate replaces the first one when a passes against it and the
# discrepancy at least halved (1/2 rather than the ratio midpoint 1/10 leaves room for
# the 10-fold larger rounding error at h / 10; without that condition a wrong gradient
# within the rounding bound at h / 10, but not at h, would pass on rounding alone).
# (2) Otherwise let d = |n(h) - n(h/10)| less both rounding-noise bounds (the drift of the
# differences, the usual error estimate of n(h/10)) and e = |a - n(h/10)|. A wrong
# gradient gives d <= |h^2 f^(3) / 6|, the truncation error at h. A difference that has
# not converged (f's higher derivatives are huge: chaotic nets) gives
# d = |err(h) - err(h/10)|, of the order of e. So d >= e / 100 makes the coordinate a
# candidate for "unstable". The constant 1/100 is _OK / _SUSPICIOUS: a "wrong" gradient
# (relative error > 1e-2) is a candidate only when n moved by more than 1e-4 of |n| from
# h to h / 10, i.e. when the difference is not accurate enough to pass even a correct
# gradient as "ok". But a wrong gradient of a function with a large third derivative
# moves n that much too, converging regularly (a review found f(w) = w + c w^3 / 6 with
# its backward halved called "unstable" at h = 1e-3, c = 1e5). So a candidate is looked
# at a third time, at h / 100: a regular difference drifts 100x less from h / 10 to
# h / 100 than from h to h / 10; at least _REGULAR_SHRINK = 30x less is taken as regular
# (between O(h)'s 10x and O(h^2)'s 100x, room for the O(h^4) term); then a is judged
# against n(h / 100), and a wrong gradient is "wrong" there. A drift that shrinks less
# is "unstable": the finite differences did not settle and say nothing about the
# gradient (the chaotic net below shrank 12x on its plateau coordinate). Measured
# (h = 1e-6 .. 1e-8): on chaotic 20-layer tanh MLPs (width 128, N(0, 1) weights) d / e
# was 0.046..700 on the coordinates still failing at h / 10 but one, 0.0064 (n(h) and
# n(h/10) on a common plateau, converged only at h / 1000); on tanh and ReLU MLPs with a
# backward scaled by 0.5 or a ReLU backward without its mask, d <= 0 (the drift is within
# rounding). (3) Else both differences agree against a: the verdict at h stands.
_SETTLED_SHRINK = 0.5
_UNSTABLE_SPREAD = _OK / _SUSPICIOUS
_REGULAR_SHRINK = 30.0


@dataclass(frozen=True)
class CoordinateCheck:
    r"""One checked coordinate: the analytic and the centred-difference gradient.

    Attributes:
        term: "loss" (the data loss) or "penalty" (the regularization term, on its own).
        tensor: the parameter's name in ``model.named_parameters()``, or "inputs".
        index: the coordinate's index in the tensor.
        analytic: :math:`a`, the gradient from one backward pass, in float64.
        numeric: :math:`n = (f(x + h) - f(x - h)) / 2h`, or the same at :math:`h / 10`
            for a coordinate that failed at :math:`h` by truncation error alone and
            passed at :math:`h / 10` (see :func:`gradcheck`).
        relative_error: :math:`|a - n| / \max(|a|, |n|)`; 0 when both are within the
            rounding noise of the centred difference (verdict "zero").
        verdict: "zero", "good", "ok", "kink", "unstable", "suspicious" or "wrong" (see
            :func:`gradcheck`).

    Example:
        >>> import torch
        >>> from gradwise.checks import gradcheck
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(3, 2)
        >>> report = gradcheck(model, torch.nn.functional.cross_entropy,
        ...                    torch.randn(4, 3), torch.tensor([0, 1, 1, 0]))
        >>> first = report.coordinates[0]
        >>> first.tensor, first.verdict
        ('weight', 'good')
    """

    term: Term
    tensor: str
    index: tuple[int, ...]
    analytic: float
    numeric: float
    relative_error: float
    verdict: Verdict


@dataclass(frozen=True)
class TensorCheck:
    """The summary of one tensor's checked coordinates: a row of the gradient-check table.

    Attributes:
        term: "loss" or "penalty".
        name: the parameter's name, or "inputs".
        shape: the tensor's shape.
        checked: how many coordinates were checked.
        max_relative_error: the largest relative error over the checked coordinates that
            are neither kinks, unstable nor zero (None when there are none).
        median_relative_error: their median (None when there are none).
        verdict: the worst verdict of its coordinates.
        kinks: how many coordinates crossed a kink.
        failures: how many coordinates got the verdict "wrong".
        unstable: how many coordinates got the verdict "unstable" (their centred
            differences did not settle between h and h / 10). Last, and 0 unless given:
            rows built positionally in the order before it existed still construct,
            with ``failures`` where it was.

    Example:
        >>> import torch
        >>> from gradwise.checks import gradcheck
        >>> model = torch.nn.Linear(3, 2)
        >>> report = gradcheck(model, torch.nn.functional.mse_loss,
        ...                    torch.randn(4, 3), torch.randn(4, 2))
        >>> [(row.name, row.checked, row.failures) for row in report.tensors]
        [('weight', 6, 0), ('bias', 2, 0)]
    """

    term: Term
    name: str
    shape: tuple[int, ...]
    checked: int
    max_relative_error: float | None
    median_relative_error: float | None
    verdict: Verdict
    kinks: int
    failures: int
    unstable: int = 0


@dataclass(frozen=True)
class GradcheckReport:
    """What :func:`gradcheck` measured: a row per tensor and every checked coordinate.

    Attributes:
        tensors: one :class:`TensorCheck` per (term, tensor), data loss first.
        coordinates: every :class:`CoordinateCheck`, in the same order.
        h: the step of the centred differences.

    Example:
        >>> import torch
        >>> from gradwise.checks import gradcheck
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(),
        ...                             torch.nn.Linear(4, 2))
        >>> report = gradcheck(model, torch.nn.functional.cross_entropy,
        ...                    torch.randn(8, 3), torch.randint(0, 2, (8,)))
        >>> report.passed, report.findings()
        (True, [])
        >>> row = report.to_table()[0]  # a row of the report's table
        >>> row["term"], row["tensor"], row["shape"], row["checked"], row["kinks"]
        ('loss', '0.weight', '4x3', 10, 0)
    """

    tensors: tuple[TensorCheck, ...]
    coordinates: tuple[CoordinateCheck, ...]
    h: float

    @property
    def verdict(self) -> Verdict:
        """The worst verdict over every checked coordinate."""
        return _worst(row.verdict for row in self.tensors)

    @property
    def passed(self) -> bool:
        """True when no coordinate got the verdict "wrong" (kinks, "unstable" and
        "suspicious" pass)."""
        return all(row.failures == 0 for row in self.tensors)

    def findings(self) -> list[Diagnosis]:
        """A ``Finding.WRONG_GRADIENT`` per term (data loss, penalty) with a failing tensor.

        Its evidence names the failing tensors with their largest relative error and
        their count of failing and checked coordinates. Suspicious coordinates
        (1e-4..1e-2) and unstable ones make no finding: deep nets and kinks land there
        too, and an unstable coordinate says nothing about the gradient.
        """
        findings = []
        for term in ("loss", "penalty"):
            failing = [row for row in self.tensors if row.term == term and row.failures]
            if failing:
                findings.append(_wrong_gradient(term, failing, self.h))
        return findings

    def to_table(self) -> list[dict[str, Any]]:
        """The rows as plain dicts (JSON-serializable), for ``gradwise.report.Table``."""
        return [
            {
                "term": row.term,
                "tensor": row.name,
                "shape": "x".join(str(size) for size in row.shape) or "scalar",
                "checked": row.checked,
                "max_relative_error": row.max_relative_error,
                "median_relative_error": row.median_relative_error,
                "kinks": row.kinks,
                "unstable": row.unstable,
                "verdict": row.verdict,
            }
            for row in self.tensors
        ]


def gradcheck(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    penalty: Callable[[nn.Module], Tensor] | None = None,
    samples_per_tensor: int = 10,
    check_inputs: bool = False,
    h: float = 1e-6,
    kink_tolerance: float | None = 0.5,
    seed: int = 0,
) -> GradcheckReport:
    r"""Check the model's analytic gradient against centred differences, tensor by tensor.

    For a sample of coordinates :math:`x` of every trainable parameter tensor (and of the
    inputs with ``check_inputs=True``) it compares the analytic gradient :math:`a` (one
    backward pass) with the centred difference

    .. math:: n = \frac{f(x + h) - f(x - h)}{2h}

    by the relative error :math:`|a - n| / \max(|a|, |n|)`. Verdicts follow the
    lectures: above :math:`10^{-2}` "wrong"; :math:`10^{-4}` to :math:`10^{-2}`
    "suspicious" (deep nets and kinks land here too); :math:`10^{-7}` to
    :math:`10^{-4}` "ok" (fine for objectives with kinks, high for smooth ones); below
    :math:`10^{-7}` "good". Three refinements keep correct models from failing:

    * Rounding. :math:`n` carries a rounding error of about
      :math:`\epsilon |f| / h` (:math:`\approx 2 \times 10^{-10}` for a loss near 1 at
      :math:`h = 10^{-6}`). A coordinate where :math:`|a|` and :math:`|n|` are both
      within :math:`16\,\epsilon \max(|f|, 1) / h` is "zero" (passes), and one whose
      difference :math:`|a - n|` is within it is at worst "ok".
    * Kinks. A coordinate that would be "suspicious" or "wrong" is a "kink" instead (not
      a failure) when :math:`x - h` and :math:`x + h` lie on two sides of a
      non-differentiable point: its two forwards are run again with the side of every
      element of every operation with a kink recorded, and the two records differ. The
      recorder works on torch's operators, so it sees modules, functions called inside
      ``forward`` and the loss alike: ReLU and its relatives, hardtanh, clamp (the
      multiclass hinge loss), abs (L1), max/min and their indices, max pooling,
      maximum/minimum, hard sigmoid/swish/shrink, the multi-margin loss, comparisons and
      rounding. As a fallback for kinks the recorder cannot see (NumPy, C++ extensions),
      such a coordinate is also a kink when its one-sided differences :math:`d_\pm`
      differ by at least ``kink_tolerance`` :math:`\times 2|a - n|`: one kink inside
      :math:`[x - h, x + h]` gives :math:`|d_+ - d_-| = 2|a - n|` exactly, a smooth
      :math:`f` with a wrong gradient only :math:`h |f''|`. As that can still reach the
      threshold for a small :math:`|a - n|` or a large :math:`h`, the jump must persist
      at :math:`h / 10` (or the difference there pass: a kink no longer crossed).
    * Truncation. A coordinate that would still be "suspicious" or "wrong" is measured
      again at :math:`h / 10`, where the truncation error
      :math:`h^2 f^{(3)} / 6` is 100 times smaller but a wrong gradient's discrepancy
      the same. If :math:`a` passes against :math:`n(h / 10)` (rounding noise scaled
      for :math:`h / 10`) and the discrepancy at least halved, the verdict and numbers
      are those at :math:`h / 10`. Else, if the two differences disagree by at least
      :math:`10^{-2} |a - n(h / 10)|` beyond their rounding noise, a third difference
      at :math:`h / 100` tells regular convergence (a drift at least 30 times smaller:
      :math:`a` is judged against :math:`n(h / 100)`, and a wrong gradient is "wrong"
      there) from none: then the coordinate is "unstable" (not a failure), as on
      chaotic nets whose higher derivatives are huge, and says nothing about the
      gradient.

    The check runs on a float64 deep copy of the model in eval mode (dropout off,
    augmentation modules off, BatchNorm on its running statistics), so the user's model,
    its ``.grad``, its mode and the global RNG are untouched. Every evaluation reseeds
    the RNG (inside ``torch.random.fork_rng``), so a forward that draws random numbers
    anyway sees the same draws each time. The data loss and the penalty are checked
    separately, as the lectures advise: a penalty failure is reported as the penalty's.
    Cost: one backward pass, and two forwards per sampled coordinate (up to ten for one
    that would fail: the fallback's jump at :math:`h / 10`, the kink recorder, then
    :math:`h / 10` and :math:`h / 100`), against
    two forwards per parameter for ``torch.autograd.gradcheck``'s full Jacobian. For an
    ``nn.Sequential`` with a deterministic forward, a coordinate's forwards start at its
    own layer from cached activations (a ``Linear`` layer's change is applied to its
    cached output exactly), so early layers are not recomputed: on a 784-128-128-10 MLP
    this is faster than torch's ``fast_mode=True`` (benchmarks.md).

    Args:
        model: the network; hooks registered on it run on the copy too. Complex
            parameters are checked by real and imaginary part (the last index of
            ``torch.view_as_real``).
        loss_fn: ``loss_fn(model(inputs), targets)`` is the data loss, a scalar.
        inputs: a batch; a few samples keep kinks rare (the lectures' advice).
        targets: its targets.
        penalty: the regularization term as a function of the model, e.g.
            ``lambda m: gradwise.regularize.l2_penalty(m, 1e-4)``; it must compute from
            the module it is given (the copy), not from tensors captured beforehand.
        samples_per_tensor: coordinates checked per tensor (all of a smaller tensor),
            always including the one with the largest analytic gradient.
        check_inputs: also check the gradient with respect to the inputs.
        h: the step, in float64.
        kink_tolerance: the fallback kink test's threshold, a finite float > 0; None turns it off.
        seed: seeds the choice of coordinates and the RNG seen by each forward.

    Returns:
        A :class:`GradcheckReport`.

    Raises:
        TypeError: a model, function or tensor of the wrong type.
        ValueError: a bad setting, a model that ``copy.deepcopy`` refuses, a model that
            cannot run on the inputs or a loss on its outputs and the targets (their first
            call; torch's error chained), a loss that is not a finite scalar, or a penalty
            that does not depend on the model it is given.

    Example:
        >>> import torch
        >>> from gradwise.checks import gradcheck
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(),
        ...                             torch.nn.Linear(16, 3))
        >>> report = gradcheck(model, torch.nn.functional.cross_entropy,
        ...                    torch.randn(8, 2), torch.randint(0, 3, (8,)))
        >>> report.passed, [row.name for row in report.tensors]
        (True, ['0.weight', '0.bias', '2.weight', '2.bias'])

    Reference:
        CS231n, "Neural Networks Part 3: Gradient checks" (lecture 004 of this project).
    """
    _check_arguments(locals())
    settings = _Settings(samples_per_tensor, h, kink_tolerance, seed)
    probe = _float64_copy(model)
    tensors = [(name, p) for name, p in probe.named_parameters() if p.requires_grad]
    for _, parameter in tensors:
        parameter.grad = None
    x = _as_float64(inputs, requires_grad=check_inputs)
    y = _widened(targets.detach())
    if not tensors and not check_inputs:
        raise ValueError(
            "The 'model' parameter of gradcheck must have a parameter with "
            f"requires_grad=True (or pass check_inputs=True). Got {type(model).__name__} "
            "with none instead."
        )
    checked = tensors + [("inputs", x)] if check_inputs else tensors
    with _rng_fork(probe):
        _reseed(seed)
        # The first evaluation, before anything else runs the model: it says which of
        # the model and the loss cannot run on the data, if one cannot.
        value = _first_loss(probe, loss_fn, x, y)
        shortcuts = _Shortcuts.build(probe, loss_fn, x, y, seed)
        checks = _check_term(
            "loss",
            # Fresh copies each time: a forward or a loss that works in place on what it
            # receives (x.mul_(2) in a forward) must not compound over the evaluations.
            lambda: loss_fn(probe(x.clone()), y.clone()),
            checked,
            settings,
            shortcuts.objective if shortcuts is not None else None,
            value,
        )
        if penalty is not None:
            checks += _check_term("penalty", lambda: penalty(probe), tensors, settings)
    return GradcheckReport(
        tensors=tuple(_summarize(term, name, shape, group) for term, name, shape, group in checks),
        coordinates=tuple(c for *_, group in checks for c in group),
        h=h,
    )


# --- arguments -------------------------------------------------------------------------


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


_CONSTRAINTS: dict[str, Constraint] = {
    "samples_per_tensor": Satisfies(lambda v: _is_int(v, 1), "an int >= 1"),
    "check_inputs": Boolean(),
    "h": Interval(0.0, 1.0, low_closed=False),
    "seed": Satisfies(lambda v: _is_int(v, 0), "an int >= 0"),
}


def _check_arguments(values: dict[str, Any]) -> None:
    _require_type("model", values["model"], nn.Module, "a torch.nn.Module")
    _require_type("inputs", values["inputs"], Tensor, "a torch.Tensor")
    _require_type("targets", values["targets"], Tensor, "a torch.Tensor")
    if not callable(values["loss_fn"]):
        raise TypeError(str(invalid_value_error(
            "loss_fn", "gradcheck", "a callable (outputs, targets) -> scalar tensor",
            values["loss_fn"])))  # fmt: skip
    if values["penalty"] is not None and not callable(values["penalty"]):
        raise TypeError(str(invalid_value_error(
            "penalty", "gradcheck", "None or a callable model -> scalar tensor",
            values["penalty"])))  # fmt: skip
    for name, constraint in _CONSTRAINTS.items():
        check(name, "gradcheck", values[name], constraint)
    if values["kink_tolerance"] is not None:
        check("kink_tolerance", "gradcheck", values["kink_tolerance"], POSITIVE)
    if values["check_inputs"] and not values["inputs"].is_floating_point():
        raise ValueError(
            "The 'check_inputs' parameter of gradcheck must be False when the inputs are "
            f"not floating point. Got True with {values['inputs'].dtype} inputs instead."
        )


def _require_type(name: str, value: Any, kind: type, expected: str) -> None:
    if not isinstance(value, kind):
        raise TypeError(
            f"The '{name}' parameter of gradcheck must be {expected}. "
            f"Got {type(value).__name__} instead."
        )


def _float64_copy(model: nn.Module) -> nn.Module:
    try:
        probe = copy.deepcopy(model)
    except (RuntimeError, TypeError) as error:  # e.g. a non-leaf tensor attribute
        raise ValueError(
            "The 'model' parameter of gradcheck must support copy.deepcopy (the check "
            f"runs on a float64 copy). Got a {type(model).__name__} that does not: {error}"
        ) from error
    # Complex parameters and buffers to complex128, as .double() takes real ones to float64.
    return probe.double()._apply(_widened).eval()


# What torch raises when a model or a loss does not fit the data: a layer that takes
# another width (RuntimeError), a loss given another number of targets (ValueError), a
# target outside the outputs (IndexError), outputs a loss cannot take (TypeError).
_DOES_NOT_FIT = (TypeError, RuntimeError, IndexError, ValueError)


def _first_loss(
    probe: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor
) -> Tensor:
    """``loss_fn(probe(x), y)``, with the model's and the loss's call each guarded: one
    that cannot run on the data is a ValueError that names it and the shapes, chaining
    torch's error. Only these two calls are: the backward pass (a custom autograd
    Function's, which the check exists to test) raises as it is."""
    try:
        outputs = probe(x.clone())
    except _DOES_NOT_FIT as error:
        raise ValueError(cannot_run_message(
            "model", "gradcheck", f"inputs of shape {tuple(x.shape)}", error,
            "Check that the model takes inputs of that shape.",
        )) from error  # fmt: skip
    try:
        return loss_fn(outputs, y.clone())
    except _DOES_NOT_FIT as error:
        described = (
            f"of shape {tuple(outputs.shape)}" if isinstance(outputs, Tensor)
            else structure(outputs)
        )  # fmt: skip
        raise ValueError(cannot_run_message(
            "loss_fn", "gradcheck",
            f"the model's outputs ({described}) and the targets (of shape "
            f"{tuple(y.shape)})", error,
            "Check that the targets fit the outputs (one per input sample, of the kind the "
            "loss takes) and that loss_fn takes the outputs (a model that returns a tuple "
            "or dict needs a loss function that picks them).",
        )) from error  # fmt: skip


def _widened(tensor: Tensor) -> Tensor:
    """A real floating-point tensor in float64, a complex one in complex128, else as is."""
    if tensor.is_complex():
        return tensor.to(torch.complex128)
    return tensor.to(torch.float64) if tensor.is_floating_point() else tensor


def _as_float64(inputs: Tensor, requires_grad: bool) -> Tensor:
    if not inputs.is_floating_point():
        return _widened(inputs.detach())
    # A copy even when already float64: its coordinates are perturbed in place.
    return inputs.detach().to(torch.float64, copy=True).requires_grad_(requires_grad)


# --- RNG -------------------------------------------------------------------------------


@contextmanager
def _rng_fork(model: nn.Module) -> Iterator[None]:
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.is_cuda})
    with torch.random.fork_rng(devices=devices):
        yield


def _reseed(seed: int) -> None:
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed(seed)


# --- cheaper perturbed forwards ----------------------------------------------------------

Shortcut = Callable[[str, Tensor, tuple[int, ...]], Callable[[], Tensor] | None]


@dataclass(frozen=True)
class _Shortcuts:
    """Perturbed forwards of an ``nn.Sequential`` that skip what the perturbation cannot change.

    A coordinate of layer j leaves the outputs of layers 0..j-1 as they are, so the loss at
    x +- h is computed from layer j's cached input, not from the network's input. For a
    plain ``Linear`` layer (no subclass, no forward hooks) it goes further: moving
    ``W[i, k]`` by d moves output column i by ``d * input[:, k]`` (the bias ``b[i]``: by
    d), so only the layers after j run. On
    the benchmark's 784-128-128-10 MLP this cuts the cost of the sampled coordinates about
    tenfold; the values agree with a full forward to rounding (the perturbation is applied
    exactly instead of through a matmul). Used only when the forward is deterministic
    (two forwards under different seeds agree), so skipped layers draw no random numbers.
    """

    loss_fn: Callable[[Tensor, Tensor], Tensor]
    targets: Tensor
    children: tuple[nn.Module, ...]
    inputs: tuple[Tensor, ...]  # inputs[j]: what layer j receives, unperturbed
    outputs: tuple[Tensor, ...]  # outputs[j]: what layer j returns, unperturbed
    layer_of: dict[str, int]

    @classmethod
    def build(
        cls, probe: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor,
        y: Tensor, seed: int,
    ) -> _Shortcuts | None:  # fmt: skip
        if not isinstance(probe, nn.Sequential) or x.requires_grad or len(probe) < 2:
            return None
        with torch.no_grad():
            # Clones: a layer may work in place on what it receives (ReLU(inplace=True)).
            _reseed(seed)
            inputs, outputs, hidden = [], [], x.clone()
            for child in probe:
                inputs.append(hidden.clone())
                hidden = child(hidden)
                outputs.append(hidden.clone())
            _reseed(seed + 1)
            if not torch.equal(outputs[-1], probe(x.clone())):
                return None  # the forward draws random numbers: evaluate it whole
        layer_of = {
            f"{j}.{name}": j
            for j, child in enumerate(probe)
            for name, _ in child.named_parameters()
        }
        return cls(loss_fn, y, tuple(probe), tuple(inputs), tuple(outputs), layer_of)

    def objective(
        self, name: str, tensor: Tensor, index: tuple[int, ...]
    ) -> Callable[[], Tensor] | None:
        j = self.layer_of.get(name)
        if j is None:
            return None
        layer = self.children[j]
        linear = _plain_linear(layer) and self.inputs[j].dim() == 2
        if linear and tensor is layer.weight:
            return self._linear(j, tensor, index, self.inputs[j][:, index[1]])
        if linear and tensor is layer.bias:
            return self._linear(j, tensor, index, None)
        return lambda: self._finish(j + 1, layer(self.inputs[j].clone()))

    def _linear(
        self, j: int, tensor: Tensor, index: tuple[int, ...], column: Tensor | None
    ) -> Callable[[], Tensor]:
        original = float(tensor[index])
        row = index[0]

        def objective() -> Tensor:
            delta = float(tensor[index]) - original
            output = self.outputs[j].clone()
            output[:, row] += delta if column is None else delta * column
            return self._finish(j + 1, output)

        return objective

    def _finish(self, start: int, hidden: Tensor) -> Tensor:
        for child in self.children[start:]:
            hidden = child(hidden)
        return self.loss_fn(hidden, self.targets.clone())


def _plain_linear(layer: nn.Module) -> bool:
    """An ``nn.Linear`` whose call is its own ``F.linear`` and nothing else: not a subclass
    (its forward may differ), with no forward hooks or pre-hooks of its own or global ones
    (they may change what it receives or returns), so the column shortcut holds."""
    return (
        type(layer) is nn.Linear
        and not layer._forward_hooks
        and not layer._forward_pre_hooks
        and not nn.modules.module._global_forward_hooks
        and not nn.modules.module._global_forward_pre_hooks
    )


# --- one term --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    samples_per_tensor: int
    h: float
    kink_tolerance: float | None
    seed: int


@dataclass(frozen=True)
class _Probe:
    """The objective measured at x - h, x and x + h for one coordinate."""

    f_minus: float
    f_zero: float
    f_plus: float
    step_minus: float  # x - (x - h), in float64
    step_plus: float  # (x + h) - x
    crossed_kink: bool


_TermChecks = list[tuple[Term, str, tuple[int, ...], list[CoordinateCheck]]]


def _check_term(
    term: Term,
    objective: Callable[[], Tensor],
    tensors: Sequence[tuple[str, Tensor]],
    settings: _Settings,
    shortcut: Shortcut | None = None,
    value: Tensor | None = None,
) -> _TermChecks:
    if value is None:  # else the caller evaluated the objective at x (seeded) already
        _reseed(settings.seed)
        value = objective()
    f_zero = _scalar(term, value)
    gradients = _analytic_gradients(term, value, [tensor for _, tensor in tensors])
    sampler = random.Random(settings.seed)
    checks: _TermChecks = []
    with torch.no_grad():
        for (name, parameter), gradient in zip(tensors, gradients, strict=True):
            # A complex tensor's coordinates are its real and imaginary parts (the last
            # index of this view), each perturbed on its own; its gradient came as one.
            tensor = _real_view(parameter)
            group = [
                _check_coordinate(
                    term,
                    name,
                    tensor,
                    index,
                    float(gradient[index]),
                    (shortcut and shortcut(name, tensor, index)) or objective,
                    f_zero,
                    settings,
                )
                for index in _sample(gradient, settings.samples_per_tensor, sampler)
            ]
            checks.append((term, name, tuple(tensor.shape), group))
    return checks


def _scalar(term: Term, value: Any) -> float:
    owner = "loss_fn" if term == "loss" else "penalty"
    if not isinstance(value, Tensor) or value.numel() != 1:
        got = f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"The '{owner}' parameter of gradcheck must return a scalar tensor. Got {got} instead."
        )
    number = float(value.detach())
    if not math.isfinite(number):
        raise ValueError(
            f"The '{owner}' parameter of gradcheck must give a finite value at the model's "
            f"parameters. Got {number} instead."
        )
    return number


def _analytic_gradients(term: Term, value: Tensor, tensors: list[Tensor]) -> list[Tensor]:
    if not value.requires_grad:
        return [torch.zeros_like(t) for t in tensors]
    gradients = torch.autograd.grad(value.reshape(()), tensors, allow_unused=True)
    if term == "penalty" and all(g is None for g in gradients):
        raise ValueError(
            "The 'penalty' parameter of gradcheck must compute the penalty from the model "
            "it is given (gradcheck passes a float64 copy). Got a penalty that does not "
            "depend on it instead; write it as e.g. lambda m: l2_penalty(m, 1e-4)."
        )
    return [
        _real_view(torch.zeros_like(t) if g is None else g.detach().resolve_conj())
        for t, g in zip(tensors, gradients, strict=True)
    ]


def _real_view(tensor: Tensor) -> Tensor:
    """A complex tensor as its real and imaginary parts (``torch.view_as_real``, sharing
    its memory); a real one as it is. Of a real loss L, torch's gradient with respect to
    z = x + iy is dL/dx + i dL/dy, so the view of the gradient holds the partial derivatives
    with respect to the view's coordinates."""
    return torch.view_as_real(tensor) if tensor.is_complex() else tensor


def _sample(gradient: Tensor, count: int, sampler: random.Random) -> list[tuple[int, ...]]:
    """``count`` distinct coordinates, the largest |gradient| first, the rest at random."""
    size = gradient.numel()
    if size == 0:
        return []
    largest = int(gradient.abs().argmax())
    chosen = sampler.sample(range(size), min(count, size))
    if largest not in chosen:
        chosen[-1] = largest
    flat = [largest] + [i for i in chosen if i != largest]
    return [_unravel(i, tuple(gradient.shape)) for i in flat]


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        flat, position = divmod(flat, size)
        index.append(position)
    return tuple(reversed(index))


def _check_coordinate(
    term: Term,
    name: str,
    tensor: Tensor,
    index: tuple[int, ...],
    analytic: float,
    objective: Callable[[], Tensor],
    f_zero: float,
    settings: _Settings,
) -> CoordinateCheck:
    probe = _measure(tensor, index, objective, f_zero, settings, record=False)
    numeric, noise = _centred_difference(probe, settings.h)
    relative_error, verdict = _judge(analytic, numeric, noise)
    check = CoordinateCheck(term, name, index, analytic, numeric, relative_error, verdict)
    # Only a coordinate that would fail is looked at for kinks and then measured again at
    # h / 10: the recorder costs about half a forward (measured: 0.40 -> 0.61 ms on the
    # benchmark's MLP), the second difference two forwards, and a discrepancy that leaves
    # the error below 1e-4 changes no verdict. The passing path pays for neither.
    if verdict not in ("suspicious", "wrong"):
        return check

    def measure(step: float) -> _Probe:
        return _measure(tensor, index, objective, f_zero, replace(settings, h=step), False)

    if _kink_by_slopes(check, probe, measure, settings) or (
        _measure(tensor, index, objective, f_zero, settings, record=True).crossed_kink
    ):
        return replace(check, verdict="kink")
    return _settle(check, noise, measure, settings.h)


def _measure(
    tensor: Tensor,
    index: tuple[int, ...],
    objective: Callable[[], Tensor],
    f_zero: float,
    settings: _Settings,
    record: bool,
) -> _Probe:
    original = float(tensor[index])
    plus, minus = original + settings.h, original - settings.h
    try:
        tensor[index] = plus
        f_plus, pattern_plus = _evaluate(objective, settings.seed, record)
        tensor[index] = minus
        f_minus, pattern_minus = _evaluate(objective, settings.seed, record)
    finally:
        tensor[index] = original
    return _Probe(
        f_minus, f_zero, f_plus, original - minus, plus - original,
        crossed_kink=not _same_patterns(pattern_plus, pattern_minus),
    )  # fmt: skip


def _evaluate(
    objective: Callable[[], Tensor], seed: int, record: bool
) -> tuple[float, list[Tensor]]:
    _reseed(seed)
    if not record:
        return float(objective().detach()), []
    with _KinkRecorder() as recorder:
        value = objective()
    return float(value.detach()), recorder.patterns


def _centred_difference(probe: _Probe, h: float) -> tuple[float, float]:
    """The centred difference of a probe and its rounding-noise bound."""
    numeric = (probe.f_plus - probe.f_minus) / (probe.step_plus + probe.step_minus)
    scale = max(abs(probe.f_minus), abs(probe.f_zero), abs(probe.f_plus), 1.0)
    return numeric, _NOISE_ULPS * _EPS * scale / h


def _settle(
    check: CoordinateCheck, noise: float, measure: Callable[[float], _Probe], h: float
) -> CoordinateCheck:
    """A failing coordinate judged again with its centred differences at h / 10 and, if
    they moved, at h / 100 (``measure(step)`` probes at a step), by the rules stated
    above ``_SETTLED_SHRINK``."""
    numeric, finer_noise = _centred_difference(measure(h / 10), h / 10)
    relative_error, verdict = _judge(check.analytic, numeric, finer_noise)
    discrepancy = abs(check.analytic - check.numeric)
    finer_discrepancy = abs(check.analytic - numeric)
    if verdict not in ("suspicious", "wrong") and (
        finer_discrepancy <= _SETTLED_SHRINK * discrepancy
    ):  # (1) the discrepancy at h was truncation error
        return replace(check, numeric=numeric, relative_error=relative_error, verdict=verdict)
    spread = abs(check.numeric - numeric) - noise - finer_noise
    if spread < _UNSTABLE_SPREAD * finer_discrepancy:
        return check  # (3) both differences agree against the analytic gradient
    finest, finest_noise = _centred_difference(measure(h / 100), h / 100)
    finest_spread = abs(numeric - finest) - finer_noise - finest_noise
    if finest_spread * _REGULAR_SHRINK > spread:
        return replace(check, verdict="unstable")  # (2) the differences did not settle
    # They converge regularly: the analytic gradient is judged against the finest one.
    relative_error, verdict = _judge(check.analytic, finest, finest_noise)
    return replace(check, numeric=finest, relative_error=relative_error, verdict=verdict)


def _judge(analytic: float, numeric: float, noise: float) -> tuple[float, Verdict]:
    difference = abs(analytic - numeric)
    scale = max(abs(analytic), abs(numeric))
    if scale <= noise:
        return 0.0, "zero"
    relative_error = difference / scale
    verdict: Verdict = (
        "good" if relative_error <= _GOOD
        else "ok" if relative_error <= _OK
        else "suspicious" if relative_error <= _SUSPICIOUS
        else "wrong"
    )  # fmt: skip
    if difference <= noise and verdict in ("suspicious", "wrong"):
        verdict = "ok"  # the whole discrepancy is rounding: it cannot reveal a wrong gradient
    return relative_error, verdict


def _kink_by_slopes(
    check: CoordinateCheck,
    probe: _Probe,
    measure: Callable[[float], _Probe],
    settings: _Settings,
) -> bool:
    """The fallback kink test: the one-sided differences jump at h, and the jump is a kink's.

    A smooth f with a wrong gradient jumps by h |f''| too, at least the threshold
    whenever the gradient's error |a - n| is below about h |f''| (a halved backward near a
    minimum; any larger h): such a wrong gradient passed as a "kink". So the jump is
    measured again at h / 10, where h |f''| shrinks tenfold and |a - n| does not. A kink
    within h / 10 of x keeps its jump; one between h / 10 and h is no longer crossed, and
    the difference at h / 10 passes with the discrepancy at least halved (as in
    ``_settle``); a wrong gradient does neither.
    """
    tolerance = settings.kink_tolerance
    if tolerance is None or not _slopes_jump(probe, check.analytic, check.numeric, tolerance):
        return False
    step = settings.h / 10
    finer = measure(step)
    numeric, noise = _centred_difference(finer, step)
    _, verdict = _judge(check.analytic, numeric, noise)
    passes = verdict not in ("suspicious", "wrong") and (
        abs(check.analytic - numeric) <= _SETTLED_SHRINK * abs(check.analytic - check.numeric)
    )
    return passes or _slopes_jump(finer, check.analytic, numeric, tolerance)


def _slopes_jump(probe: _Probe, analytic: float, numeric: float, tolerance: float) -> bool:
    """Whether the one-sided differences differ by at least ``tolerance * 2|a - n|``: one
    kink inside the probe's interval gives exactly ``2|a - n|``."""
    slope_plus = (probe.f_plus - probe.f_zero) / probe.step_plus
    slope_minus = (probe.f_zero - probe.f_minus) / probe.step_minus
    return abs(slope_plus - slope_minus) >= tolerance * 2 * abs(analytic - numeric)


def _summarize(
    term: Term, name: str, shape: tuple[int, ...], group: list[CoordinateCheck]
) -> TensorCheck:
    errors = [c.relative_error for c in group if c.verdict not in ("kink", "unstable", "zero")]
    return TensorCheck(
        term=term,
        name=name,
        shape=shape,
        checked=len(group),
        max_relative_error=max(errors) if errors else None,
        median_relative_error=statistics.median(errors) if errors else None,
        verdict=_worst(c.verdict for c in group),
        kinks=sum(c.verdict == "kink" for c in group),
        failures=sum(c.verdict == "wrong" for c in group),
        unstable=sum(c.verdict == "unstable" for c in group),
    )


def _worst(verdicts: Iterable[Verdict]) -> Verdict:
    return max(verdicts, key=VERDICTS.index, default="zero")


def _wrong_gradient(term: str, rows: list[TensorCheck], h: float) -> Diagnosis:
    names = [row.name for row in rows]
    listed = ", ".join(
        f"'{row.name}' ({row.failures} of {row.checked} coordinates, max relative error "
        f"{row.max_relative_error:.2g})"
        for row in rows
    )
    if term == "penalty":
        summary = f"the penalty's analytic gradient disagrees with centred differences on {listed}"
        prescription = (
            "fix the gradient of the penalty function (the data loss was checked separately) "
            "until every relative error is below 1e-4"
        )
    else:
        summary = f"the analytic gradient disagrees with centred differences on {listed}"
        owner = "these tensors" if len(rows) > 1 else "this tensor"
        prescription = (
            f"fix the backward of the layer that owns {owner} (a custom autograd.Function "
            "or hand-written backward) until every relative error is below 1e-4"
        )
    evidence = {
        "term": term,
        "tensors": names,
        "max_relative_errors": {row.name: row.max_relative_error for row in rows},
        "failures": {row.name: row.failures for row in rows},
        "checked": {row.name: row.checked for row in rows},
        "h": h,
    }
    return Diagnosis(Finding.WRONG_GRADIENT, summary, prescription, evidence, severity="error")


# --- kinks -----------------------------------------------------------------------------


def _same_patterns(first: list[Tensor], second: list[Tensor]) -> bool:
    return len(first) == len(second) and all(
        a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, second, strict=True)
    )


class _KinkRecorder(TorchDispatchMode):
    """Records, for each operation with a kink, which side of it every element is on.

    Runs at the aten level, so it sees ``nn.ReLU`` and ``F.relu`` inside a ``forward``
    alike, and the clamp of a hinge loss. Two forwards cross a kink when their lists of
    patterns differ.
    """

    def __init__(self) -> None:
        super().__init__()
        self.patterns: list[Tensor] = []

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        packet = func.overloadpacket
        before = _INPUT_PATTERNS.get(packet)
        if before is not None:  # before the call: in-place variants overwrite the input
            self.patterns.extend(before(args, kwargs))
        out = func(*args, **kwargs)
        if packet in _DISCRETE_OUTPUTS:
            self.patterns.append(out)
        elif packet in _INDEX_OUTPUTS and isinstance(out, tuple | list) and len(out) > 1:
            self.patterns.append(out[1])  # (values, indices): the indices say who won
        return out


def _argument(args: tuple[Any, ...], kwargs: dict[str, Any], position: int, name: str,
              default: Any) -> Any:  # fmt: skip
    if len(args) > position:
        return args[position]
    return kwargs.get(name, default)


def _sides(x: Tensor, *breakpoints: Any) -> list[Tensor]:
    """Which side of each breakpoint (a number or a tensor) every element of x is on."""
    if x.is_complex():  # abs: |z| has one kink, at z = 0, and no sides
        return [x == 0]
    return [torch.sign(x - b).to(torch.int8) for b in breakpoints if b is not None]


def _zero_kink(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Tensor]:
    return _sides(args[0], 0.0)


def _threshold(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Tensor]:
    return _sides(args[0], _argument(args, kwargs, 1, "threshold", 0.0))


def _hardtanh(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Tensor]:
    low = _argument(args, kwargs, 1, "min_val", -1.0)
    return _sides(args[0], low, _argument(args, kwargs, 2, "max_val", 1.0))


def _clamp(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Tensor]:
    low = _argument(args, kwargs, 1, "min", None)
    return _sides(args[0], low, _argument(args, kwargs, 2, "max", None))


def _clamp_one_side(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Tensor]:
    return _sides(args[0], args[1] if len(args) > 1 else next(iter(kwargs.values())))


def _hard_sigmoid(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Tensor]:
    return _sides(args[0], -3.0, 3.0)


def _shrink(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Tensor]:
    lambd = _argument(args, kwargs, 1, "lambd", 0.5)
    return _sides(args[0], -lambd, lambd)


def _elementwise_pair(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Tensor]:
    return _sides(args[0], args[1])


def _max_or_min(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Tensor]:
    if len(args) == 1 and not kwargs:  # the full reduction: which element is the extreme
        return [torch.argmax(args[0]) if args[0].numel() else args[0]]
    if len(args) > 1 and isinstance(args[1], Tensor):  # max(a, b): elementwise
        return _sides(args[0], args[1])
    return []  # max(x, dim): its indices are recorded from the output


def _extreme(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Tensor]:
    dims = _argument(args, kwargs, 1, "dim", [])
    x = args[0]
    extreme = torch.amax(x, dims, keepdim=True) if x.numel() else x
    return [x == extreme]


def _multi_margin(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Tensor]:
    scores, target = args[0], args[1]
    margin = _argument(args, kwargs, 3, "margin", 1.0)
    scores = scores.unsqueeze(0) if scores.dim() == 1 else scores  # (batch, classes)
    correct = scores.gather(1, target.reshape(-1, 1))
    return _sides(scores - correct + margin, 0.0)


_aten = torch.ops.aten

_INPUT_PATTERNS: dict[Any, Callable[[tuple[Any, ...], dict[str, Any]], list[Tensor]]] = {
    **dict.fromkeys(
        [
            _aten.relu, _aten.relu_, _aten.leaky_relu, _aten.leaky_relu_, _aten.elu,
            _aten.elu_, _aten.celu, _aten.celu_, _aten.selu, _aten.selu_, _aten.abs,
            _aten.abs_, _aten.prelu, _aten._prelu_kernel, _aten.rrelu_with_noise,
        ],
        _zero_kink,
    ),
    _aten.threshold: _threshold,
    _aten.threshold_: _threshold,
    _aten.hardtanh: _hardtanh,
    _aten.hardtanh_: _hardtanh,
    _aten.clamp: _clamp,
    _aten.clamp_: _clamp,
    _aten.clip: _clamp,
    _aten.clip_: _clamp,
    **dict.fromkeys(
        [_aten.clamp_min, _aten.clamp_min_, _aten.clamp_max, _aten.clamp_max_],
        _clamp_one_side,
    ),
    **dict.fromkeys(
        [_aten.hardsigmoid, _aten.hardsigmoid_, _aten.hardswish, _aten.hardswish_],
        _hard_sigmoid,
    ),
    _aten.hardshrink: _shrink,
    _aten.softshrink: _shrink,
    **dict.fromkeys(
        [_aten.maximum, _aten.minimum, _aten.fmax, _aten.fmin], _elementwise_pair
    ),
    _aten.max: _max_or_min,
    _aten.min: _max_or_min,
    _aten.amax: _extreme,
    _aten.amin: _extreme,
    _aten.multi_margin_loss: _multi_margin,
}  # fmt: skip

# Operations returning (values, indices): the indices change where the argmax does.
_INDEX_OUTPUTS = frozenset(
    [
        _aten.max, _aten.min, _aten.kthvalue, _aten.median, _aten.nanmedian, _aten.mode,
        _aten.sort, _aten.topk, _aten.max_pool2d_with_indices,
        _aten.max_pool3d_with_indices, _aten.adaptive_max_pool2d, _aten.adaptive_max_pool3d,
    ]
)  # fmt: skip

# Operations whose output is piecewise constant: a change is a jump (masks of torch.where).
_DISCRETE_OUTPUTS = frozenset(
    [
        _aten.argmax, _aten.argmin, _aten.argsort, _aten.gt, _aten.ge, _aten.lt, _aten.le,
        _aten.eq, _aten.ne, _aten.sign, _aten.sgn, _aten.floor, _aten.ceil, _aten.round,
        _aten.trunc,
    ]
)  # fmt: skip
