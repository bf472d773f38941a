"""Findings: what the training doctor says about a run, as data (STYLE.md §12).

A :class:`Diagnosis` is a :class:`Finding` kind, one sentence with the measured evidence,
the prescribed fix, the numbers behind both, and optionally a config change the doctor is
confident enough to apply (``gradwise doctor --fix``).
"""

from gradwise.diagnosis._finding import REMEDIES, SEVERITY_ORDER, Diagnosis, Finding, Severity

__all__ = ["REMEDIES", "SEVERITY_ORDER", "Diagnosis", "Finding", "Severity"]
