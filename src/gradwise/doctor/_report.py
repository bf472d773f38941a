"""The doctor's verdict for the terminal, rendered through gradwise.report.Table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gradwise.doctor._doctor import TREND_STEPS, DoctorResult
from gradwise.report import Table


def findings_table(result: DoctorResult, title: str = "Findings") -> Table:
    """One row per finding: kind, severity, step, what was measured, the prescription."""
    rows = [
        [f.kind.name, f.severity, "" if f.step is None else f.step, f.summary, f.prescription]
        for f in result.findings
    ]
    return Table(title, ["finding", "severity", "step", "evidence", "prescription"], rows)


def comparison_table(result: DoctorResult) -> Table:
    """Before and after ``--fix``: the findings and the probe run's validation numbers (the
    "after" column names how far a probe cut short got)."""
    after = result.after
    assert after is not None  # noqa: S101 - only called with a fixed run
    keys = ("val_accuracy", "val_loss", "train_loss")
    rows: list[list[Any]] = [
        ["findings", ", ".join(f.kind.name for f in result.findings) or "none",
         ", ".join(f.kind.name for f in after.findings) or "none"],
    ]  # fmt: skip
    for key in keys:
        rows.append([key, result.probe.metrics.get(key), after.probe.metrics.get(key)])
    rows.append(["applied", "", ", ".join(f"{k}={v}" for k, v in result.applied.items())])
    label = "after"
    if after.probe_incomplete:  # a shorter run's numbers: say so where they are read
        label = f"after ({after.probe_status} at {after.probe.steps} of {after.probe_steps} steps)"
    return Table("Before and after --fix", ["", "before", label], rows)


#: The fix made the probe worse when validation accuracy fell by more than this ...
WORSE_ACCURACY_DROP = 0.02
#: ... or, with accuracy no better, the validation loss rose by more than this fraction.
WORSE_LOSS_RISE = 0.05


def fix_verdict(before: Mapping[str, Any], after: Mapping[str, Any]) -> str | None:
    """A sentence when the probe after ``--fix`` is clearly worse than before, else None.

    Worse: validation accuracy fell by more than 2 points, or (accuracy no better) the
    validation loss rose by more than 5% or stopped being finite.
    """
    acc_before, acc_after = _number(before, "val_accuracy"), _number(after, "val_accuracy")
    loss_before, loss_after = _number(before, "val_loss"), _number(after, "val_loss")
    accuracy_better = False
    if acc_before is not None and acc_after is not None and math.isfinite(acc_before):
        if not acc_after >= acc_before - WORSE_ACCURACY_DROP:  # NaN counts as worse
            return _worse(f"val_accuracy {acc_before:.4g} -> {acc_after:.4g}")
        accuracy_better = acc_after > acc_before + WORSE_ACCURACY_DROP
    if accuracy_better or loss_before is None or loss_after is None:
        return None
    if math.isfinite(loss_before) and not loss_after <= loss_before * (1 + WORSE_LOSS_RISE):
        return _worse(f"val_loss {loss_before:.4g} -> {loss_after:.4g}")
    return None


def _worse(evidence: str) -> str:
    return f"the fix made the probe worse: {evidence}; do not apply it, keep the original config"


def _number(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if isinstance(value, int | float) else None


def print_result(result: DoctorResult) -> None:
    """Print the findings (and the comparison after --fix) and where the report is.

    A probe run that did not finish (Ctrl-C, a stop, a divergence) is never reported as
    healthy: a line says how far it got. Nor is a fix judged by a probe after it that did
    not finish: its numbers are those of a shorter run.
    """
    outcome = result.probe_outcome()
    skipped = result.gradcheck is None or result.sanity is None
    if result.findings:
        print(findings_table(result).render_text())
    elif outcome is None and result.probe.steps < TREND_STEPS:
        print(
            f"No findings, but the probe ran {result.probe.steps} steps, fewer than the "
            f"{TREND_STEPS} the monitor's trend checks need, so this is no sign that the run "
            "is healthy; probe longer with --epochs (and as many epochs in the config) "
            + ("(the checks were skipped)." if skipped else "(the checks passed).")
        )
    elif outcome is None and skipped:
        print("No findings: the probe run looks healthy (the checks were skipped).")
    elif outcome is None:
        print("No findings: the checks passed and the probe run looks healthy.")
    if outcome is not None:
        print(outcome)
    print(f"report: {result.run.report_path}")
    if result.after is not None:
        _print_after(result, result.after)
    elif result.applied == {} and any(f.fix for f in result.findings):
        print("run with --fix to apply the fixes marked as confident")


def _print_after(result: DoctorResult, after: DoctorResult) -> None:
    """The before/after table, how the probe after the fix ended, and the fix's verdict."""
    print()
    print(comparison_table(result).render_text())
    print(f"report after the fix: {after.run.report_path}")
    after_outcome = after.probe_outcome()
    if after_outcome is not None:
        print(after_outcome.replace("the probe run", "the probe run after the fix", 1))
    if after.probe_incomplete:
        return  # no verdict on the fix from a probe cut short
    verdict = fix_verdict(result.probe.metrics, after.probe.metrics)
    if after.probe_status == "diverged" and result.probe_status != "diverged":
        verdict = _worse("the probe diverged after the fix")
    if verdict is not None:
        print(verdict)
