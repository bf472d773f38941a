"""The range test's plot, drawn with matplotlib's Agg canvas into PNG bytes (reporting layer).

matplotlib is imported inside the function, through ``FigureCanvasAgg`` rather than
pyplot, as in gradwise.report: no global backend is switched and no window opens.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from gradwise.lr_finder._result import LRFinderResult


def range_test_png(result: LRFinderResult) -> bytes:
    """Raw (light) and smoothed loss against the lr on a log axis, with both rules marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.8), dpi=96)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.1, right=0.98, top=0.9, bottom=0.14)
    axes = figure.add_subplot()
    lrs = np.asarray(result.lrs)
    raw = np.asarray(result.losses)
    smoothed = np.asarray(result.smoothed)
    finite = np.isfinite(raw) & np.isfinite(smoothed)
    label = f"loss (mean of {len(result.sweeps)} sweeps)" if len(result.sweeps) > 1 else "loss"
    axes.plot(lrs[finite], raw[finite], color="C7", alpha=0.5, linewidth=0.8, label=label)
    axes.plot(lrs[finite], smoothed[finite], color="C0", linewidth=1.6, label="smoothed loss")
    for lr, name, color in (
        (result.steepest_lr, "steepest descent", "C3"),
        (result.min_loss_lr, "min loss / 10", "C2"),
    ):
        chosen = " (suggested)" if name.startswith(result.suggested_by.split("_")[0]) else ""
        axes.axvline(lr, color=color, linestyle="--", linewidth=1.2,
                     label=f"{name}: {lr:.3g}{chosen}")  # fmt: skip
    if result.rose_at is not None:
        axes.axvline(result.lrs[result.rose_at], color="C1", linestyle=":", linewidth=1,
                     label="first rise: analysis ends")  # fmt: skip
    if result.diverged_at is not None:
        axes.axvline(result.lrs[result.diverged_at], color="k", linestyle=":", linewidth=1,
                     label="diverged")  # fmt: skip
    if finite.any():
        best = float(min(np.min(smoothed[finite]), np.min(raw[finite])))
        top = float(np.max(smoothed[finite][: max(1, int(np.argmin(smoothed[finite])) + 1)]))
        axes.set_ylim(best - 0.1 * (top - best + 1e-12), top + 0.6 * (top - best + 1e-12))
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.set_title(f"LR range test: suggested lr {result.suggestion:.3g}", fontsize="medium")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", framealpha=0.8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
