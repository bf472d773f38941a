"""Landscape plots, drawn with matplotlib's Agg canvas into PNG bytes.

The reporting layer of this package: matplotlib is imported inside these functions (and
this module only when a ``plot_*_png`` method is called), through ``FigureCanvasAgg``
rather than pyplot, so no global backend is switched and no window opens.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from gradwise.landscape._landscape import Landscape1D, Landscape2D

Array = NDArray[np.float64]


def curve_png(curve: Landscape1D) -> bytes:
    """The loss along the line, with the marked points (A and B, or the model)."""
    figure = _figure((6.4, 4.0))
    axes = figure.add_subplot()
    finite = np.isfinite(curve.losses)
    axes.plot(curve.coordinates[finite], curve.losses[finite], "o-", color="C0", markersize=3)
    for position, label in curve.marks:
        axes.axvline(position, color="C7", linestyle="--", linewidth=1)
        axes.annotate(label, (position, 1.0), xycoords=("data", "axes fraction"),
                      ha="center", va="bottom")  # fmt: skip
    if _is_wide(curve.losses):
        axes.set_yscale("log")
    axes.set_xlabel("alpha (0 = A, 1 = B)" if curve.kind == "interpolation" else "step along d")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _png(figure)


def contour_png(surface: Landscape2D) -> bytes:
    """Filled contours and labelled contour lines; the center is starred."""
    from matplotlib.colors import LogNorm

    figure = _figure((5.6, 4.8))
    axes = figure.add_subplot()
    losses = np.ma.masked_invalid(surface.losses.T)  # rows: betas, columns: alphas
    levels, norm = _levels(surface.losses), None
    if _is_wide(surface.losses):
        norm = LogNorm(vmin=levels[0], vmax=levels[-1])
    filled = axes.contourf(surface.alphas, surface.betas, losses, levels=levels,
                           cmap="viridis", norm=norm, extend="both")  # fmt: skip
    lines = axes.contour(surface.alphas, surface.betas, losses, levels=levels,
                         colors="k", linewidths=0.5, norm=norm)  # fmt: skip
    axes.clabel(lines, fontsize=6, fmt="%.3g")
    figure.colorbar(filled, ax=axes, label="loss")
    axes.plot([0.0], [0.0], "*", color="C3", markersize=12)
    axes.set_xlabel("alpha (direction 1)")
    axes.set_ylabel("beta (direction 2)")
    axes.set_aspect("equal")
    return _png(figure)


def surface_png(surface: Landscape2D) -> bytes:
    """The loss as a 3-D surface; non-finite values drawn at the largest finite one."""
    figure = _figure((6.4, 5.2))
    axes: Any = figure.add_subplot(projection="3d")
    finite = surface.losses[np.isfinite(surface.losses)]
    ceiling = finite.max() if finite.size else 0.0
    losses = np.where(np.isfinite(surface.losses), surface.losses, ceiling)
    alphas, betas = np.meshgrid(surface.alphas, surface.betas, indexing="ij")
    axes.plot_surface(alphas, betas, losses, cmap="viridis", linewidth=0, antialiased=True)
    axes.set_xlabel("alpha")
    axes.set_ylabel("beta")
    axes.set_zlabel("loss")
    return _png(figure)


def _levels(losses: Array, count: int = 20) -> Array:
    finite = losses[np.isfinite(losses)]
    if finite.size == 0:
        return np.linspace(0.0, 1.0, count)
    low, high = float(finite.min()), float(finite.max())
    if _is_wide(losses):
        return np.geomspace(low, high, count)
    if high <= low:
        high = low + max(abs(low), 1.0) * 1e-6
    return np.linspace(low, high, count)


def _is_wide(losses: Array) -> bool:
    """Log scale when positive finite values span more than two decades."""
    finite = losses[np.isfinite(losses)]
    return bool(finite.size and finite.min() > 0 and finite.max() / finite.min() > 100)


def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=96)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
