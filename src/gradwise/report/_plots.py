"""The report's plots, drawn with matplotlib's Agg canvas into PNG bytes.

matplotlib is imported inside these functions, never at module level, and through
``FigureCanvasAgg`` rather than pyplot: no global backend is switched, no window opens,
and nothing leaks between figures.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, TypeGuard

import numpy as np
from numpy.typing import NDArray

# A step series longer than this is drawn as a min-max band over this many buckets (so
# spikes stay visible) and its moving average thinned to this many points. Measured on
# this project's 2-core machine, timing the three plot functions on synthetic records:
# 5,000 steps 0.50 s against 0.64 s drawn in full; 200,000 steps 1.1 s against 1.6 s.
# Agg's path simplification keeps full drawing cheap; the band mainly keeps the PNG
# small and the picture readable. tests/report/test_report.py keeps the time bound.
MAX_POINTS = 1000

Records = Sequence[dict[str, Any]]
Array = NDArray[np.float64]


def series(records: Records, kind: str, key: str) -> tuple[Array, Array]:
    """(steps, values) of ``key`` in the records of one kind; NaN and inf are kept."""
    steps, values = [], []
    for record in records:
        if record.get("kind") != kind:
            continue
        step, value = record.get("step"), record.get(key)
        if _is_number(step) and _is_number(value):
            try:
                x, y = float(step), float(value)
            except OverflowError:  # an int beyond the float range (JSON allows any int)
                continue
            steps.append(x)
            values.append(y)
    return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def loss_png(records: Records) -> bytes | None:
    """Training loss per step (light, with its moving average), train, validation and test
    loss per epoch, and those of the averaged weights when the run averages them
    (gradwise.averaging); None if there is no finite loss to draw."""
    lines = [
        ("epoch", "train_loss", "train (epoch)", "C0"),
        ("epoch", "val_loss", "validation", "C1"),
        ("epoch", "avg_val_loss", "validation, averaged weights", "C4"),
        ("test", "test_loss", "test", "C2"),
        ("test", "avg_test_loss", "test, averaged weights", "C4"),
    ]
    return _metric_png(records, "loss", "loss", lines)


def accuracy_png(records: Records) -> bytes | None:
    """Accuracy per step (if recorded) and per epoch, train, validation and test; None
    without any accuracy (a regression run)."""
    lines = [
        ("epoch", "train_accuracy", "train (epoch)", "C0"),
        ("epoch", "val_accuracy", "validation", "C1"),
        ("epoch", "avg_val_accuracy", "validation, averaged weights", "C4"),
        ("test", "test_accuracy", "test", "C2"),
        ("test", "avg_test_accuracy", "test, averaged weights", "C4"),
    ]
    return _metric_png(records, "accuracy", "accuracy", lines)


def learning_rate_png(records: Records) -> bytes | None:
    """The learning rate per step (per epoch if steps have none); None without any."""
    steps, values = series(records, "step", "lr")
    if not np.isfinite(values).any():
        steps, values = series(records, "epoch", "lr")
    finite = np.isfinite(values)
    if not finite.any():
        return None
    figure, axes = _figure()
    x, y = _thin(steps[finite], values[finite])
    axes.plot(x, y, color="C3", drawstyle="steps-post")
    _log_if_wide(axes, y)
    _finish(axes, "learning rate")
    return _png(figure)


def _metric_png(
    records: Records, step_key: str, label: str, lines: Sequence[tuple[str, str, str, str]]
) -> bytes | None:
    step_x, step_y = series(records, "step", step_key)
    epoch_series = [(series(records, kind, key), name, color) for kind, key, name, color in lines]
    plotted = [step_y[np.isfinite(step_y)]] + [y[np.isfinite(y)] for (_, y), _, _ in epoch_series]
    if not any(values.size for values in plotted):
        return None
    figure, axes = _figure()
    _draw_steps(axes, step_x, step_y, label)
    for (x, y), name, color in epoch_series:
        finite = np.isfinite(y)
        if not finite.any():
            continue
        if name.startswith("test"):
            axes.plot(x[finite], y[finite], "*", color=color, markersize=12, label=name)
        else:
            axes.plot(x[finite], y[finite], "o-", color=color, markersize=4, label=name)
    _mark_first_non_finite(axes, step_x, step_y, label)
    _log_if_wide(axes, np.concatenate(plotted))
    _finish(axes, label)
    return _png(figure)


def _draw_steps(axes: Any, steps: Array, values: Array, label: str) -> None:
    finite = np.isfinite(values)
    x, y = steps[finite], values[finite]
    if x.size == 0:
        return
    if x.size > MAX_POINTS:
        centers, low, high = _envelope(x, y, MAX_POINTS)
        axes.fill_between(centers, low, high, color="C7", alpha=0.3, linewidth=0,
                          label=f"{label} per step (min-max)")  # fmt: skip
    else:
        axes.plot(x, y, color="C7", alpha=0.45, linewidth=0.8, label=f"{label} per step")
    window = max(1, min(x.size // 50, 500))
    if window > 1:
        average = np.convolve(y, np.full(window, 1.0 / window), mode="valid")
        ax, ay = _thin(x[window - 1 :], average)
        axes.plot(ax, ay, color="k", linewidth=1.2, label=f"moving average ({window} steps)")


def _mark_first_non_finite(axes: Any, steps: Array, values: Array, label: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        first = steps[bad][0]
        axes.axvline(first, color="C3", linestyle="--", linewidth=1,
                     label=f"{label} not finite from step {first:.0f}")  # fmt: skip


def _envelope(x: Array, y: Array, buckets: int) -> tuple[Array, Array, Array]:
    """Per-bucket mean step, min and max: spikes stay visible however long the run."""
    edges = np.linspace(0, x.size, buckets + 1).astype(np.int64)
    starts = edges[:-1]
    counts = np.diff(edges)
    low = np.minimum.reduceat(y, starts)
    high = np.maximum.reduceat(y, starts)
    centers = np.add.reduceat(x, starts) / counts
    return centers, low, high


def _thin(x: Array, y: Array) -> tuple[Array, Array]:
    """At most about MAX_POINTS evenly spaced points, the last one included."""
    if x.size <= MAX_POINTS:
        return x, y
    index = np.unique(np.linspace(0, x.size - 1, MAX_POINTS).round().astype(np.int64))
    return x[index], y[index]


def _log_if_wide(axes: Any, values: Array) -> None:
    """Log scale when every finite value is > 0 and they span more than two decades.

    A series with a 0 or a negative value stays linear (a log axis cannot show those
    points; a warmup from lr 0 would lose its start), as docs/runs.md says.
    """
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        axes.set_yscale("log")


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins: constrained layout measured at half the drawing time of a report.
    figure = Figure(figsize=(8, 3.4), dpi=96)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.1, right=0.98, top=0.96, bottom=0.15)
    return figure, figure.add_subplot()


def _finish(axes: Any, label: str) -> None:
    axes.set_xlabel("step")
    axes.set_ylabel(label)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small", framealpha=0.8)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _no_mathtext(text: object) -> str:
    """``text`` for a matplotlib title, label or tick label, drawn as it is.

    matplotlib reads text between two ``$`` as mathtext: ``$x$`` is drawn as an italic x,
    and a span that is not valid TeX (``$\\frac$``) raises ValueError while the figure is
    drawn. Each ``$`` escaped (``\\$``) is drawn as a plain ``$``. User text only:
    names, values, paths.
    """
    return str(text).replace("$", r"\$")


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
