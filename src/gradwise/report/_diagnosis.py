"""The training doctor's part of report.html: findings, per-layer probes, histograms, checks.

Each section is built from a file of the run folder (``findings.jsonl``, ``probes.jsonl``,
``histograms.jsonl``, ``checks.json``) and left out when its file is absent, so
``gradwise report RUN`` rebuilds the same page from disk at any time.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gradwise.diagnosis import SEVERITY_ORDER
from gradwise.report._html import Section, png_html
from gradwise.report._plots import _figure, _finish, _png
from gradwise.report._table import Table
from gradwise.runs import RunFolder, read_records

#: At most this many snapshots of histograms are drawn (the first, the last, and evenly
#: spaced ones between), each as one row of small plots per layer.
MAX_HISTOGRAM_STEPS = 3
HEALTHY_UPDATE_RATIO = 1e-3


def findings_section(run: RunFolder) -> Section | None:
    """The findings, most severe first, each with its evidence; None without findings.jsonl."""
    if not run.findings_path.is_file():
        return None
    findings = read_records(run.findings_path)
    if not findings:
        return Section("Findings", '<p class="healthy">No findings: the run looks healthy.</p>')
    findings = sorted(
        findings, key=lambda f: (SEVERITY_ORDER.get(f.get("severity", ""), 3), f.get("step") or 0)
    )
    items = []
    for finding in findings:
        evidence = json.dumps(finding.get("evidence", {}), indent=1, allow_nan=True)
        step = finding.get("step")
        where = f" (step {step})" if step is not None else ""
        items.append(
            f'<li class="finding {html.escape(str(finding.get("severity", "")))}">'
            f"<b>{html.escape(str(finding.get('kind', '')).upper())}</b>{html.escape(where)}: "
            f"{html.escape(str(finding.get('summary', '')))}<br>"
            f"<i>Fix:</i> {html.escape(str(finding.get('prescription', '')))}"
            f"<details><summary>evidence</summary><pre>{html.escape(evidence)}</pre></details>"
            "</li>"
        )
    return Section("Findings", f'<ul class="findings">{"".join(items)}</ul>')


def probe_sections(run: RunFolder) -> list[Section]:
    """Per-layer plots over time: update-to-weight ratio, gradient norm, dead fraction."""
    if not run.probes_path.is_file():
        return []
    records = read_records(run.probes_path)
    plots = [
        ("update_ratio", "update / weight ratio", True, HEALTHY_UPDATE_RATIO),
        ("grad_norm", "gradient norm", True, None),
        ("dead_fraction", "fraction of dead units", False, None),
        ("saturated_fraction", "fraction of saturated units", False, None),
    ]
    images = []
    for key, label, log, reference in plots:
        png = _per_layer_png(records, key, label, log=log, reference=reference)
        if png is not None:
            images.append(png_html(png, label))
    return [Section("Per-layer probes", "\n".join(images))] if images else []


def histogram_section(run: RunFolder) -> Section | None:
    """Activation and gradient histograms per layer at a few chosen steps."""
    if not run.histograms_path.is_file():
        return None
    records = read_records(run.histograms_path)
    steps = sorted({int(r["step"]) for r in records if "step" in r})
    if not steps:
        return None
    chosen = _spread(steps, MAX_HISTOGRAM_STEPS)
    images = []
    for kind in ("activation", "gradient"):
        rows = [r for r in records if r.get("kind") == kind and r.get("step") in chosen]
        png = _histogram_grid(rows, chosen, kind)
        if png is not None:
            images.append(png_html(png, f"{kind} histograms"))
    return Section("Histograms", "\n".join(images)) if images else None


def checks_sections(run: RunFolder) -> list[Section]:
    """The gradient-check and sanity-check tables of ``gradwise doctor``."""
    if not run.checks_path.is_file():
        return []
    checks = json.loads(run.checks_path.read_text())
    sections = []
    for key, title in (("gradcheck", "Gradient check"), ("sanity", "Sanity checks")):
        rows = checks.get(key)
        if rows:
            columns = list(rows[0])
            table = Table(title, columns, [[row.get(c) for c in columns] for row in rows])
            sections.append(Section.from_table(title, table))
    return sections


def _spread(values: Sequence[int], count: int) -> list[int]:
    if len(values) <= count:
        return list(values)
    indices = np.linspace(0, len(values) - 1, count).round().astype(int)
    return [values[i] for i in sorted(set(indices.tolist()))]


def _per_layer_png(
    records: Sequence[Mapping[str, Any]],
    key: str,
    label: str,
    *,
    log: bool,
    reference: float | None,
) -> bytes | None:
    layers: dict[str, tuple[list[float], list[float]]] = {}
    for record in records:
        value = record.get(key)
        if isinstance(value, int | float) and "layer" in record and "step" in record:
            steps, values = layers.setdefault(str(record["layer"]), ([], []))
            steps.append(float(record["step"]))
            values.append(float(value))
    if not layers:
        return None
    figure, axes = _figure()
    for layer, (steps, values) in layers.items():
        axes.plot(steps, values, marker=".", linewidth=1.2, label=layer)
    if reference is not None:
        axes.axhline(reference, color="0.3", linestyle="--", linewidth=1, label="healthy ~1e-3")
    positive = [v for _, values in layers.values() for v in values if v > 0]
    if log and positive:
        axes.set_yscale("log")
    _finish(axes, label)
    return _png(figure)


def _histogram_grid(
    rows: Sequence[Mapping[str, Any]], steps: Sequence[int], kind: str
) -> bytes | None:
    layers = list(dict.fromkeys(str(r["layer"]) for r in rows))  # in first-seen order
    if not layers:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2.6 * len(layers), 1.9 * len(steps)), dpi=90)
    FigureCanvasAgg(figure)
    axes_grid = figure.subplots(len(steps), len(layers), squeeze=False)
    index = {(int(r["step"]), str(r["layer"])): r for r in rows}
    for row, step in enumerate(steps):
        for column, layer in enumerate(layers):
            axes = axes_grid[row][column]
            record = index.get((step, layer))
            if record is not None:
                edges = np.asarray(record["edges"], dtype=np.float64)
                counts = np.asarray(record["counts"], dtype=np.float64)
                axes.stairs(counts, edges, fill=True, alpha=0.7)
                nonfinite = record.get("nonfinite", 0)
                if nonfinite:
                    axes.text(0.98, 0.9, f"{nonfinite} non-finite", transform=axes.transAxes,
                              ha="right", fontsize=7, color="red")  # fmt: skip
            axes.set_title(f"{layer} @ {step}", fontsize=8)
            axes.tick_params(labelsize=6)
    figure.suptitle(f"{kind} histograms", fontsize=10)
    figure.tight_layout()
    return _png(figure)
