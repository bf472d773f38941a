"""What the training doctor can say about a run: a finding kind, its evidence, its fix."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from gradwise._validation import (
    NON_NEGATIVE_INT,
    Either,
    OneOf,
    Satisfies,
    check,
    invalid_value_error,
)

Severity = Literal["info", "warning", "error"]

#: Most severe first: the order findings are listed and fixes are chosen in.
SEVERITY_ORDER: Mapping[str, int] = {"error": 0, "warning": 1, "info": 2}


class Finding(enum.StrEnum):
    """The kinds of problem the doctor names (STYLE.md §12: tests assert on these)."""

    LEARNING_RATE_TOO_HIGH = "learning_rate_too_high"
    LEARNING_RATE_TOO_LOW = "learning_rate_too_low"
    NONFINITE_LOSS = "nonfinite_loss"
    OSCILLATION = "oscillation"
    PLATEAU = "plateau"
    VANISHING_GRADIENTS = "vanishing_gradients"
    EXPLODING_GRADIENTS = "exploding_gradients"
    DEAD_UNITS = "dead_units"
    SATURATED_UNITS = "saturated_units"
    SYMMETRIC_INIT = "symmetric_init"
    UNNORMALIZED_INPUTS = "unnormalized_inputs"
    WRONG_GRADIENT = "wrong_gradient"
    INITIAL_LOSS_MISMATCH = "initial_loss_mismatch"
    OVERFITTING = "overfitting"
    UNDERFITTING = "underfitting"
    NO_LEARNING_SIGNAL = "no_learning_signal"
    REGULARIZATION_NOT_APPLIED = "regularization_not_applied"
    SAMPLES_MIX = "samples_mix"


#: The lectures' table of remedies, one line per kind: what to change. A diagnosis adds
#: the measured amount ("lower the learning rate ~10x") in its own prescription.
REMEDIES: Mapping[Finding, str] = {
    Finding.LEARNING_RATE_TOO_HIGH: "lower the learning rate",
    Finding.LEARNING_RATE_TOO_LOW: "raise the learning rate or add momentum",
    Finding.NONFINITE_LOSS: "lower the learning rate; clip gradients",
    Finding.OSCILLATION: "lower the learning rate or add momentum",
    Finding.PLATEAU: "decay the learning rate or average iterates; check the learning signal",
    Finding.VANISHING_GRADIENTS: "use He/Xavier initialization, normalization layers or ReLU",
    Finding.EXPLODING_GRADIENTS: "lower the initial weight scale, normalize, clip gradients",
    Finding.DEAD_UNITS: "lower the learning rate, fix the initial weight and bias scale, "
    "use leaky ReLU or normalization",
    Finding.SATURATED_UNITS: "lower the initial weight scale, use ReLU or normalization",
    Finding.SYMMETRIC_INIT: "initialize weights randomly (He for ReLU, Xavier for tanh)",
    Finding.UNNORMALIZED_INPUTS: "standardize the inputs with training-split statistics",
    Finding.WRONG_GRADIENT: "fix the backward pass; compare with finite differences",
    Finding.INITIAL_LOSS_MISMATCH: "check the initialization scale and the loss function",
    Finding.OVERFITTING: "add regularization (weight decay, dropout, augmentation), more data, "
    "or early stopping",
    Finding.UNDERFITTING: "use a bigger model (wider or deeper), train longer, or optimize "
    "better (a higher learning rate, Adam, normalization layers)",
    Finding.NO_LEARNING_SIGNAL: "check that labels match inputs and that the data are shuffled",
    Finding.REGULARIZATION_NOT_APPLIED: "add the penalty to the loss, computed from the live "
    "parameters (not detached copies)",
    Finding.SAMPLES_MIX: "remove reshapes, transposes or statistics across the batch axis",
}


_FINDING = Satisfies(
    lambda value: isinstance(value, Finding),
    "a gradwise.Finding (Finding.LEARNING_RATE_TOO_HIGH, or Finding('learning_rate_too_high'))",
)
_TEXT = Satisfies(lambda value: isinstance(value, str), "a str")
_STEP = Either((NON_NEGATIVE_INT, Satisfies(lambda value: value is None, "None")))
_MAPPING = Satisfies(lambda value: isinstance(value, Mapping), "a mapping (a dict)")


@dataclass(frozen=True)
class Diagnosis:
    """One finding about a run: what, the measured evidence, and the prescribed fix.

    Attributes:
        kind: the :class:`Finding`.
        summary: one sentence with the measured numbers ("loss rose from 2.31 to 9.8e4
            in 40 steps").
        prescription: what to change and by how much ("lower the learning rate ~10x").
        evidence: the numbers behind it (layers, steps, values), JSON-serializable.
        severity: "error" (the run cannot succeed), "warning", or "info".
        step: the optimizer step at which it was found (None for checks before training).
        fix: a machine-applicable change the doctor is confident in, as config overrides
            (``{"optimizer.lr": 3e-4}``), or empty when no automatic fix is safe.

    Example:
        >>> from gradwise import Finding
        >>> from gradwise.diagnosis import Diagnosis
        >>> d = Diagnosis(
        ...     Finding.LEARNING_RATE_TOO_HIGH,
        ...     "loss rose from 2.3 to 9.8e4 in 40 steps",
        ...     "lower the lr ~10x",
        ...     {"lr": 1.0, "factor": 10.0},
        ... )
        >>> d.kind is Finding.LEARNING_RATE_TOO_HIGH
        True
        >>> print(d)
        LEARNING_RATE_TOO_HIGH: loss rose from 2.3 to 9.8e4 in 40 steps; lower the lr ~10x
    """

    kind: Finding
    summary: str
    prescription: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    severity: Severity = "warning"
    step: int | None = None
    fix: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check("kind", "Diagnosis", self.kind, _FINDING)
        check("summary", "Diagnosis", self.summary, _TEXT)
        check("prescription", "Diagnosis", self.prescription, _TEXT)
        check("severity", "Diagnosis", self.severity, OneOf(get_args(Severity)))
        check("step", "Diagnosis", self.step, _STEP)
        # A list or None passed here failed only later, in to_dict.
        check("evidence", "Diagnosis", self.evidence, _MAPPING)
        check("fix", "Diagnosis", self.fix, _MAPPING)

    def __str__(self) -> str:
        return f"{self.kind.name}: {self.summary}; {self.prescription}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (the run folder's findings.jsonl and the report).

        Numpy scalars and tensors in the evidence and fix become Python numbers (and
        lists), tuples lists, mappings dicts, copied: a checkpoint holding the record
        loads with ``torch.load(weights_only=True)``, which refuses numpy scalars.
        """
        return {
            "kind": self.kind.value,
            "summary": self.summary,
            "prescription": self.prescription,
            "evidence": _plain(self.evidence),
            "severity": self.severity,
            "step": None if self.step is None else int(self.step),
            "fix": _plain(self.fix),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Diagnosis:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, Mapping):
            raise invalid_value_error("data", "Diagnosis.from_dict", "a mapping (a dict)", data)
        missing = [key for key in ("kind", "summary", "prescription") if key not in data]
        if missing:
            raise ValueError(
                f"A finding record needs 'kind', 'summary' and 'prescription'; this one has "
                f"no {', '.join(map(repr, missing))}. Got {dict(data)!r} instead."
            )
        # A str test first: an unhashable kind (a list) raised TypeError in the set lookup.
        if not isinstance(data["kind"], str) or data["kind"] not in _KIND_VALUES:
            raise invalid_value_error("kind", "Diagnosis.from_dict", _FINDING.description,
                                      data["kind"])  # fmt: skip
        for name in ("evidence", "fix"):  # dict(None) and dict([1]) raised TypeError
            check(name, "Diagnosis.from_dict", data.get(name, {}), _MAPPING)
        return cls(
            kind=Finding(data["kind"]),
            summary=data["summary"],
            prescription=data["prescription"],
            evidence=dict(data.get("evidence", {})),
            severity=data.get("severity", "warning"),
            step=data.get("step"),
            fix=dict(data.get("fix", {})),
        )


_KIND_VALUES = frozenset(member.value for member in Finding)


def _plain(value: Any) -> Any:
    """``value`` as plain JSON data: dicts, lists, and Python numbers for numpy and torch's."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, float) and type(value) is not float:
        return float(value)  # a numpy float64 (a float subclass)
    if value is None or isinstance(value, str | int | float):  # a str enum keeps its type
        return value
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, tensors
    return tolist() if callable(tolist) else value
