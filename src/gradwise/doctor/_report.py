"""The doctor's verdict for the terminal, rendered through gradwise.report.Table."""

from __future__ import annotations

from typing import Any

from gradwise.doctor._doctor import DoctorResult
from gradwise.report import Table


def findings_table(result: DoctorResult, title: str = "Findings") -> Table:
    """One row per finding: kind, severity, step, what was measured, the prescription."""
    rows = [
        [f.kind.name, f.severity, "" if f.step is None else f.step, f.summary, f.prescription]
        for f in result.findings
    ]
    return Table(title, ["finding", "severity", "step", "evidence", "prescription"], rows)


def comparison_table(result: DoctorResult) -> Table:
    """Before and after ``--fix``: the findings and the probe run's validation numbers."""
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
    return Table("Before and after --fix", ["", "before", "after"], rows)


def print_result(result: DoctorResult) -> None:
    """Print the findings (and the comparison after --fix) and where the report is."""
    if result.findings:
        print(findings_table(result).render_text())
    else:
        print("No findings: the checks passed and the probe run looks healthy.")
    print(f"report: {result.run.report_path}")
    if result.after is not None:
        print()
        print(comparison_table(result).render_text())
        print(f"report after the fix: {result.after.run.report_path}")
    elif result.applied == {} and any(f.fix for f in result.findings):
        print("run with --fix to apply the fixes marked as confident")
