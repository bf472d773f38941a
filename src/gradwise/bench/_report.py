"""The unit tests' coloured score grid, drawn on matplotlib's Agg canvas into PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

# Scores are ratios to tuned SGD; the colour is log10 of the ratio clipped to +-LOG_RANGE,
# green below 1 (better than SGD), red above, white where the score is undefined.
LOG_RANGE = 2.0


def score_grid_png(
    scores: NDArray[np.float64], tests: Sequence[str], optimizers: Sequence[str]
) -> bytes:
    """Rows tests, columns optimizers, colour log10(score); each cell shows its score."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, columns = scores.shape
    figure = Figure(figsize=(3.5 + 1.0 * columns, 1.2 + 0.24 * rows), dpi=96)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.clip(np.log10(scores), -LOG_RANGE, LOG_RANGE)
    image = axes.imshow(
        np.ma.masked_invalid(logs), cmap="RdYlGn_r", vmin=-LOG_RANGE, vmax=LOG_RANGE,
        aspect="auto", interpolation="nearest",
    )  # fmt: skip
    for i in range(rows):
        for j in range(columns):
            text = f"{scores[i, j]:.2g}" if np.isfinite(scores[i, j]) else "-"
            axes.text(j, i, text, ha="center", va="center", fontsize=6)
    axes.set_xticks(range(columns), list(optimizers), rotation=30, ha="right", fontsize=8)
    axes.set_yticks(range(rows), list(tests), fontsize=6)
    colorbar = figure.colorbar(image, ax=axes, fraction=0.04)
    colorbar.set_label("log10(median loss / tuned SGD's)", fontsize=8)
    axes.set_title("Unit tests (Schaul et al. 2014): lower is better", fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def performance_profile_png(
    ratios: NDArray[np.float64], optimizers: Sequence[str], tau_max: float
) -> bytes:
    """Each optimizer's rho(tau) as a step curve over a log tau axis; tau_max dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    num_problems = ratios.shape[0]
    finite = ratios[np.isfinite(ratios)]
    right = 1.1 * max(tau_max, float(finite.max()) if finite.size else tau_max)
    figure = Figure(figsize=(5.5, 3.6), dpi=96)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    styles = ("-", "--", ":", "-.")
    for j, name in enumerate(optimizers):
        solved = np.sort(ratios[:, j][np.isfinite(ratios[:, j])])
        # rho jumps by 1/|P| at each solved ratio and stays flat to the right edge
        taus = np.concatenate([[1.0], solved, [right]])
        rho = np.concatenate([[0.0], np.arange(1, solved.size + 1), [solved.size]])
        axes.step(taus, rho / num_problems, where="post", label=name, linewidth=1.5,
                  linestyle=styles[j % len(styles)])  # fmt: skip
    axes.axvline(tau_max, color="0.5", linestyle="--", linewidth=0.8)
    axes.set_xscale("log")
    axes.set_xlim(1.0, right)
    ticks = [t for t in (1, 1.5, 2, 3, 4, 6, 10, 20, 50, 100, 1000) if t <= right]
    axes.set_xticks(ticks, [f"{t:g}" for t in ticks])
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("tau (steps / best optimizer's steps)", fontsize=8)
    axes.set_ylabel("fraction of problems within tau", fontsize=8)
    axes.set_title(f"Performance profiles, {num_problems} problems (dashed: tau_max)", fontsize=9)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
