"""The training doctor's part of report.html: findings, per-layer probes, histograms, checks.

Each section is built from a file of the run folder (``findings.jsonl``, ``probes.jsonl``,
``histograms.jsonl``, ``checks.json``) and left out when its file is absent, so
``gradwise report RUN`` rebuilds the same page from disk at any time.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from gradwise.diagnosis import SEVERITY_ORDER
from gradwise.report._html import Section, png_html
from gradwise.report._plots import _figure, _finish, _no_mathtext, _png, series
from gradwise.report._table import Table, _terminal_text
from gradwise.runs import RunFolder, read_records

#: At most this many snapshots of histograms are drawn (the first, the last, and evenly
#: spaced ones between), each as one column of small plots, one row per layer.
MAX_HISTOGRAM_STEPS = 3
#: At most this many layers get a row of histograms (the first, the last, and evenly
#: spaced ones between); the title says how many, a line under the figure names them. A
#: row is 1.9 in high, as tall as a histogram must be to be read at the page's width: 24
#: rows are already 4,100 px.
MAX_HISTOGRAM_LAYERS = 24
HEALTHY_UPDATE_RATIO = 1e-3
#: Past this many layers matplotlib's colour cycle repeats (two layers share a colour):
#: the per-layer plots then colour layers by depth and list them in columns below.
MAX_CYCLE_COLORS = 10

T = TypeVar("T")


#: The statuses of a run watched to its end: only there does "no findings" mean healthy.
#: The others (running, stopped, interrupted, diverged, failed, or no summary) were cut
#: short, often before the monitor's trend windows (50 steps of warmup, then 200) filled.
FINISHED_STATUSES = ("completed", "early_stopped")


def trend_steps() -> int:
    """The optimizer steps the monitor's trend findings need: its warmup plus one window.

    A run shorter than this was never judged for a too-low learning rate, a plateau, slow
    progress or underfitting, however it ended.
    """
    from gradwise.monitor import Thresholds  # gradwise.monitor imports gradwise.train

    thresholds = Thresholds()
    return thresholds.warmup_steps + thresholds.window_steps


def no_findings_text(status: str, steps: int | None) -> str | None:
    """What "no findings" means for a run that ended with ``status`` after ``steps``.

    None when the run "looks healthy": its status is one of :data:`FINISHED_STATUSES` and
    it ran at least :func:`trend_steps` steps (or its step count is unknown).
    """
    if status not in FINISHED_STATUSES:
        return (
            f"No findings so far (run status: {status}): the run was not watched to its "
            "end, so this is no sign that it is healthy."
        )
    needed = trend_steps()
    if steps is not None and steps < needed:
        return (
            f"No findings, but the run took {steps} steps, fewer than the {needed} the "
            "monitor's trend checks (learning rate too low, plateau, underfitting) need: "
            "they never ran, so this is no sign that it is healthy."
        )
    return None


def findings_section(
    run: RunFolder, status: str = "completed", steps: int | None = None
) -> Section | None:
    """The findings, most severe first, each with its evidence; None without findings.jsonl.

    Without findings, the run "looks healthy" only when its ``status`` is one of
    :data:`FINISHED_STATUSES` and it ran ``steps`` >= :func:`trend_steps` (or ``steps``
    is unknown); a run cut short is said to have raised none so far, and a run too short
    for the trend checks says so.
    """
    if not run.findings_path.is_file():
        return None
    try:
        findings = read_records(run.findings_path)
    except (OSError, ValueError) as error:
        return _unreadable("Findings", run.findings_path.name, error)
    if not findings:
        text = no_findings_text(status, steps)
        if text is None:
            return Section("Findings", '<p class="healthy">No findings: the run looks healthy.</p>')
        return Section("Findings", f"<p>{html.escape(_terminal_text(text))}</p>")
    findings = sorted(
        findings, key=lambda f: (SEVERITY_ORDER.get(f.get("severity", ""), 3), f.get("step") or 0)
    )
    metrics = _metric_records(run)
    items = []
    for finding in findings:
        evidence = json.dumps(finding.get("evidence", {}), indent=1, allow_nan=True)
        step = finding.get("step")
        where = f" (step {step})" if step is not None else ""
        # Bidi controls escaped, as in the terminal's tables: in a list item they reorder
        # the rest of it (the kind, the fix) instead of staying in a table cell.
        kind, summary, fix = (
            html.escape(_terminal_text(text))
            for text in (
                str(finding.get("kind", "")).upper(),
                str(finding.get("summary", "")),
                str(finding.get("prescription", "")),
            )
        )
        items.append(
            f'<li class="finding {html.escape(str(finding.get("severity", "")))}">'
            f"<b>{kind}</b>{html.escape(where)}: {summary}<br><i>Fix:</i> {fix}"
            f"<details><summary>evidence</summary><pre>{html.escape(evidence)}</pre></details>"
            f"{_curves_html(metrics, finding)}</li>"
        )
    return Section("Findings", f'<ul class="findings">{"".join(items)}</ul>')


#: The findings whose evidence is the learning curves: drawn next to them in the report.
CURVE_FINDINGS = ("underfitting", "overfitting")


def learning_curves_png(
    records: Sequence[dict[str, Any]], finding: Mapping[str, Any]
) -> bytes | None:
    """Train and validation loss and accuracy per evaluation, with the finding's evidence.

    The points the finding quotes (the latest train and validation numbers, the best
    validation loss for OVERFITTING) are circled, the window over which UNDERFITTING
    judged the training curve flat is shaded, and a target accuracy or loss is drawn as a
    dashed line. None when ``records`` (metrics.jsonl) hold no train or validation loss.

    Example:
        >>> from gradwise.report import learning_curves_png
        >>> records = [{"kind": "epoch", "step": s, "train_loss": 1.7, "val_loss": 1.68}
        ...            for s in (100, 200, 300)]
        >>> finding = {"kind": "underfitting", "evidence": {"train_loss": 1.7,
        ...            "train_step": 300, "val_loss": 1.68, "val_step": 300, "window": [100, 300]}}
        >>> learning_curves_png(records, finding)[:4]
        b'\\x89PNG'
    """
    panels = [
        (key, [(split, series(records, "epoch", f"{split}_{key}")) for split in ("train", "val")])
        for key in ("loss", "accuracy")
    ]
    panels = [(key, lines) for key, lines in panels if any(y.size for _, (_, y) in lines)]
    if not panels or panels[0][0] != "loss":
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 2.8), dpi=90)
    FigureCanvasAgg(figure)
    evidence = finding.get("evidence") or {}
    for index, (key, lines) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for (split, (x, y)), color in zip(lines, ("C0", "C1"), strict=True):
            label = "train" if split == "train" else "validation"
            axes.plot(x, y, "o-", color=color, markersize=3, linewidth=1.2, label=label)
        _mark_evidence(axes, key, evidence)
        axes.set_xlabel("step")
        axes.set_ylabel(key)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="x-small", framealpha=0.8)
    kind = _no_mathtext(str(finding.get("kind", "")).upper())  # findings.jsonl may be edited
    figure.suptitle(f"{kind}: the curves behind it", fontsize=9)
    figure.tight_layout()
    return _png(figure)


def _mark_evidence(axes: Any, key: str, evidence: Mapping[str, Any]) -> None:
    """Circle the quoted points, shade the judged window, draw the target."""
    points = [
        ("train", evidence.get(f"train_{key}"), evidence.get("train_step"), "C0"),
        ("validation", evidence.get(f"val_{key}"), evidence.get("val_step"), "C1"),
    ]
    if key == "loss":
        points.append(
            ("best validation", evidence.get("best_val_loss"), evidence.get("best_val_step"), "C3")
        )
    for name, value, step, color in points:
        if _number(value) and _number(step):
            axes.plot([step], [value], "o", markersize=11, markerfacecolor="none",
                      markeredgecolor=color, markeredgewidth=1.8,
                      label=f"{name} (evidence)")  # fmt: skip
    window = evidence.get("window")
    if (
        key == "loss"
        and isinstance(window, list | tuple)
        and len(window) == 2
        and all(_number(bound) for bound in window)
    ):
        axes.axvspan(window[0], window[1], color="0.85", alpha=0.5, label="window judged")
    target = evidence.get(f"target_{key}")
    if _number(target):
        axes.axhline(target, color="0.3", linestyle="--", linewidth=1, label=f"target {target:g}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _metric_records(run: RunFolder) -> list[dict[str, Any]]:
    try:
        return read_records(run)
    except (OSError, ValueError):
        return []


def _curves_html(records: Sequence[dict[str, Any]], finding: Mapping[str, Any]) -> str:
    if finding.get("kind") not in CURVE_FINDINGS:
        return ""
    png = learning_curves_png(records, finding)
    if png is None:
        return ""
    kind = str(finding.get("kind", "")).upper()
    return png_html(png, f"train and validation curves behind {kind}")


def probe_sections(run: RunFolder) -> list[Section]:
    """Per-layer plots over time: update-to-weight ratio, gradient norm, dead fraction."""
    if not run.probes_path.is_file():
        return []
    try:
        records = read_records(run.probes_path)
    except (OSError, ValueError) as error:
        return [_unreadable("Per-layer probes", run.probes_path.name, error)]
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
    try:
        records = read_records(run.histograms_path)
    except (OSError, ValueError) as error:
        return _unreadable("Histograms", run.histograms_path.name, error)
    images = []
    for kind in ("activation", "gradient"):
        # Each kind at its own steps: gradients have none at step 0 (before training).
        of_kind = [r for r in records if r.get("kind") == kind and "step" in r]
        chosen = _spread(sorted({int(r["step"]) for r in of_kind}), MAX_HISTOGRAM_STEPS)
        rows = [r for r in of_kind if r.get("step") in chosen]
        layers = list(dict.fromkeys(str(r["layer"]) for r in rows))  # in first-seen order
        shown = _spread(layers, MAX_HISTOGRAM_LAYERS)
        png = _histogram_grid(rows, chosen, shown, f"{kind} histograms{_of_layers(shown, layers)}")
        if png is not None:
            images.append(png_html(png, f"{kind} histograms"))
        if png is not None and len(shown) < len(layers):
            note = _terminal_text(_left_out_note(kind, layers, shown))  # module names
            images.append(f"<p>{html.escape(note)}</p>")
    return Section("Histograms", "\n".join(images)) if images else None


def checks_sections(run: RunFolder) -> list[Section]:
    """The gradient-check and sanity-check tables of ``gradwise doctor``."""
    if not run.checks_path.is_file():
        return []
    try:
        checks = json.loads(run.checks_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError
        return [_unreadable("Checks", run.checks_path.name, error)]
    sections = []
    for key, title in (("gradcheck", "Gradient check"), ("sanity", "Sanity checks")):
        rows = checks.get(key)
        if rows:
            columns = list(rows[0])
            table = Table(title, columns, [[row.get(c) for c in columns] for row in rows])
            sections.append(Section.from_table(title, table))
    return sections


def _unreadable(title: str, file_name: str, error: Exception) -> Section:
    """A damaged file is reported in the page, as a damaged metrics.jsonl is: the rest
    of the report (and ``gradwise train``, which builds it however a run ends) goes on."""
    return Section.from_text(title, f"{file_name} could not be read: {error}")


def _spread(values: Sequence[T], count: int) -> list[T]:
    """At most ``count`` of the values: the first, the last and evenly spaced ones."""
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
    # Handles and labels given explicitly: matplotlib leaves a label that starts with "_"
    # out of a legend it collects itself, and module names do (torch.compile's
    # "_orig_mod.0", a private attribute's "_encoder.0").
    handles = [axes.plot(steps, values, marker=".", linewidth=1.2, color=color)[0]
               for (steps, values), color in zip(layers.values(), _layer_colors(len(layers)),
                                                 strict=True)]  # fmt: skip
    names = list(layers)
    if reference is not None:
        handles.append(axes.axhline(reference, color="0.3", linestyle="--", linewidth=1))
        names.append("healthy ~1e-3")
    positive = [v for _, values in layers.values() for v in values if v > 0]
    if log and positive:
        axes.set_yscale("log")
    _finish(axes, label)
    if len(layers) > MAX_CYCLE_COLORS:
        legend = _legend_below(figure, handles, names)
    else:
        legend = axes.legend(handles, names, fontsize="small", framealpha=0.8)
    for text in legend.get_texts():
        text.set_parse_math(False)  # a name with "$" is text, not TeX to typeset
    return _png(figure)


def _layer_colors(count: int) -> list[Any]:
    """The colours of ``count`` layers' lines, first layer to last.

    matplotlib's cycle (C0 to C9) up to :data:`MAX_CYCLE_COLORS` layers; past that it
    repeats, so the colours run along a sequential colormap by depth instead (viridis,
    dark purple to green, stopping short of its yellow, faint on white).
    """
    if count <= MAX_CYCLE_COLORS:
        return [f"C{i}" for i in range(count)]
    from matplotlib import colormaps

    return [tuple(rgba) for rgba in colormaps["viridis"](np.linspace(0.0, 0.85, count))]


def _legend_below(figure: Any, handles: Sequence[Any], names: Sequence[str]) -> Any:
    """A legend in columns under the axes, the figure taller by its height: over the
    axes, a legend of many layers hid the lines."""
    columns = max(1, min(5, int(7.6 / (0.5 + 0.065 * max(len(n) for n in names)))))
    legend_height = 0.2 + 0.17 * -(-len(names) // columns)  # inches, rows rounded up
    width, height = figure.get_size_inches()
    bottom, top = figure.subplotpars.bottom, figure.subplotpars.top
    new_height = height + legend_height
    figure.set_size_inches(width, new_height)
    # The axes keep their size in inches; the legend fills the new band at the bottom.
    figure.subplots_adjust(
        bottom=(bottom * height + legend_height) / new_height,
        top=1 - (1 - top) * height / new_height,
    )
    return figure.legend(handles, names, loc="lower center", ncol=columns, fontsize="x-small",
                         frameon=False, bbox_to_anchor=(0.5, 0.01))  # fmt: skip


def _histogram_grid(
    rows: Sequence[Mapping[str, Any]], steps: Sequence[int], layers: Sequence[str], title: str
) -> bytes | None:
    if not layers:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.figure import Figure

    # One row per layer, one column per step: the width stays that of the other plots
    # however deep the model (a row per step grew 2.6 in per layer, and the page shrank
    # the image to its 60rem column: each histogram of a 20-layer net ~20 px high).
    # All cells are drawn on ONE axes, in cell units (column j spans x in [j, j + 1], row
    # i spans y in [i, i + 1] from the top), the bars as one PolyCollection and the axis
    # lines as one LineCollection, not one Axes per cell: an Axes with its ticks cost
    # ~13 ms to create and draw. The histogram section (activations and gradients) of a
    # 50-layer, 3-step run took 3.8 s with an Axes per cell and 0.47 s now, at its 24 rows;
    # of a 24-layer run 1.9 s and 0.46 s (one thread, best of 5, see docs/doctor.md).
    # The rest is mostly drawing text: a title and two range labels per cell.
    width, height = 2.6 * len(steps), 1.9 * len(layers)
    figure = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(figure)
    top = 1 - 0.45 / height
    axes = figure.add_axes((0.05 / width, 0.05 / height, 1 - 0.1 / width, top - 0.05 / height))
    axes.set_xlim(0, len(steps))
    axes.set_ylim(len(layers), 0)  # row 0, the first layer, at the top
    axes.set_axis_off()
    index = {(int(r["step"]), str(r["layer"])): r for r in rows}
    bars: list[Any] = []  # a filled outline per histogram, (points, 2)
    rules: list[tuple[Any, str, float]] = []  # (segment, colour, width): axes, zero marks
    for row, layer in enumerate(layers):
        for column, step in enumerate(steps):
            # parse_math off: a layer's name with "$" is text, not TeX to typeset.
            axes.text(column + 0.5, row + 0.05, f"{layer} @ {step}", ha="center", va="top",
                      fontsize=8, parse_math=False, clip_on=False)  # fmt: skip
            record = index.get((step, layer))
            if record is not None:
                _draw_histogram(axes, record, column, row, bars, rules)
    axes.add_collection(PolyCollection(bars, facecolors="C0", alpha=0.7, linewidths=0))
    if rules:
        segments, colors, widths = zip(*rules, strict=True)
        axes.add_collection(LineCollection(segments, colors=colors, linewidths=widths))
    figure.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    return _png(figure)


def _of_layers(shown: Sequence[str], layers: Sequence[str]) -> str:
    return f", {len(shown)} of {len(layers)} layers" if len(shown) < len(layers) else ""


def _left_out_note(kind: str, layers: Sequence[str], shown: Sequence[str]) -> str:
    """Which layers the histograms show; in the page, not the figure: the list is
    wider than the figure once it names more than a few layers."""
    return (
        f"The {kind} histograms show {len(shown)} of {len(layers)} layers, the first, the "
        f"last and evenly spaced ones: {', '.join(shown)}. histograms.jsonl holds them all."
    )


def _draw_histogram(
    axes: Any,
    record: Mapping[str, Any],
    column: int,
    row: int,
    bars: list[Any],
    rules: list[tuple[Any, str, float]],
) -> None:
    """One histogram in its cell (column, row), its value range and its count of
    non-finite values; its outline goes to ``bars`` and its axis line and zero mark to
    ``rules``, drawn as one collection each. A tensor with no finite value has no bins
    (the monitor writes ``edges: []``): it gets a note."""
    edges = np.asarray(record.get("edges") or [], dtype=np.float64)
    counts = np.asarray(record.get("counts") or [], dtype=np.float64)
    drawable = counts.size and edges.size == counts.size + 1
    left, right, base, peak = column + 0.05, column + 0.95, row + 0.78, row + 0.22
    if drawable and np.isfinite(edges).all() and np.isfinite(counts).all():
        low, high = float(edges[0]), float(edges[-1])
        span = high - low if high > low else 1.0
        x = left + (edges - low) / span * (right - left)
        heights = counts / counts.max() if counts.max() > 0 else counts
        y = base + heights * (peak - base)
        # A filled step outline, as Axes.stairs(fill=True) draws it.
        outline = np.column_stack([np.repeat(x, 2)[1:-1], np.repeat(y, 2)])
        bars.append(np.vstack([[x[0], base], outline, [x[-1], base]]))
        rules.append(([(left, base), (right, base)], "0.6", 0.6))
        if low < 0 < high:  # where zero is: centred, shifted, or one-sided at a glance
            zero = left + (0 - low) / span * (right - left)
            rules.append(([(zero, base), (zero, base + 0.04)], "0.3", 0.8))
        for value, where, align in ((low, left, "left"), (high, right, "right")):
            axes.text(where, base + 0.03, f"{value:.3g}", ha=align, va="top", fontsize=6)
    else:
        axes.text(column + 0.5, row + 0.5, "no finite value", ha="center", va="center",
                  fontsize=7, color="0.4")  # fmt: skip
    nonfinite = record.get("nonfinite", 0)
    if nonfinite:
        axes.text(right, row + 0.2, f"{nonfinite} non-finite", ha="right", va="bottom",
                  fontsize=7, color="red")  # fmt: skip
