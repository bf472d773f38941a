"""Trajectories over contour lines: a PNG, and an animated GIF.

The reporting layer of gradwise.viz: matplotlib (Agg canvas, no pyplot) and Pillow are
imported inside these functions, never at module level, so the numeric core and
``import gradwise.viz`` stay free of them.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from numpy.typing import NDArray

from gradwise._validation import POSITIVE, Interval, check
from gradwise.viz._surfaces import Surface
from gradwise.viz._trajectory import Trajectory

_GRID = 200
_LEVELS = 30
_MARKERS = {"global minimum": "*", "local minimum": "*", "saddle point": "X", "local maximum": "^"}


def plot_trajectories(
    surface: Surface,
    trajectories: Sequence[Trajectory],
    path: str | Path | None = None,
) -> bytes:
    """Draw the trajectories over the surface's contour lines; the PNG's bytes.

    Contours are log-spaced above the lowest value on the grid for a surface with minima
    (so the valleys of Rosenbrock and Beale show), evenly spaced for the saddles; the known
    critical points are marked (stars: minima, crosses: saddles, triangles: maxima).
    With ``path`` the PNG is also written there (replaced atomically).

    Example:
        >>> from gradwise import optim
        >>> from gradwise.viz import get_surface, plot_trajectories, run_optimizers
        >>> surface = get_surface("saddle")
        >>> runs = run_optimizers(surface, {"GD": optim.chain(optim.scale_by_learning_rate(0.05))})
        >>> plot_trajectories(surface, runs)[:4]
        b'\\x89PNG'
    """
    _check_inputs("plot_trajectories", surface, trajectories)
    figure, axes = _contour_figure(surface)
    lines = []
    for index, trajectory in enumerate(trajectories):
        line = _trajectory_line(axes, trajectory, index)
        line.set_data(trajectory.points[:, 0], trajectory.points[:, 1])
        lines.append(line)
    _legend(axes, lines, trajectories)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    data = buffer.getvalue()
    if path is not None:
        _write(Path(path), lambda file: file.write(data))
    return data


def animate_trajectories(
    surface: Surface,
    trajectories: Sequence[Trajectory],
    path: str | Path,
    *,
    frames: int = 60,
    fps: float = 12.0,
) -> Path:
    """Write an animated GIF of the optimizers moving over the contours; its path.

    Each frame draws every trajectory up to the same step (``frames`` frames spread evenly
    over the longest run; the last frame shows the whole runs), as in the lectures'
    optimizer animations. A moving dot marks each optimizer's current point; the GIF
    loops.

    Example:
        >>> import tempfile, pathlib
        >>> from gradwise import optim
        >>> from gradwise.viz import animate_trajectories, get_surface, run_optimizers
        >>> surface = get_surface("quadratic")
        >>> runs = run_optimizers(surface, {"GD": optim.chain(optim.scale_by_learning_rate(0.09))},
        ...                       num_steps=30)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     gif = animate_trajectories(surface, runs, pathlib.Path(folder) / "gd.gif", frames=5)
        ...     gif.read_bytes()[:6]
        b'GIF89a'
    """
    _check_inputs("animate_trajectories", surface, trajectories)
    check("frames", "animate_trajectories", frames, Interval(low=2.0, kind="int"))
    check("fps", "animate_trajectories", fps, POSITIVE)
    from PIL import Image

    figure, axes = _contour_figure(surface)
    lines = [_trajectory_line(axes, t, index) for index, t in enumerate(trajectories)]
    heads = [axes.plot([], [], "o", color=line.get_color(), markersize=6)[0] for line in lines]
    counter = axes.text(0.02, 0.97, "", transform=axes.transAxes, va="top", fontsize="small")
    moving = [*lines, *heads, counter]
    for artist in moving:
        artist.set_animated(True)
    _legend(axes, lines, trajectories)
    # Blitting: the contours are drawn once and each frame redraws only the moving
    # artists (measured: 40 frames of Rosenbrock in 0.8 s against 3.3 s redrawn in full).
    canvas = figure.canvas
    canvas.draw()
    background = canvas.copy_from_bbox(figure.bbox)
    longest = max((len(t.points) for t in trajectories), default=1)
    stops = np.unique(np.linspace(1, longest, int(frames)).round().astype(np.int64))
    images = []
    for stop in stops:
        canvas.restore_region(background)
        for trajectory, line, head in zip(trajectories, lines, heads, strict=True):
            shown = trajectory.points[: int(stop)]
            line.set_data(shown[:, 0], shown[:, 1])
            head.set_data(shown[-1:, 0], shown[-1:, 1])
        counter.set_text(f"step {int(stop) - 1}")
        for artist in moving:
            axes.draw_artist(artist)
        rgba = np.asarray(canvas.buffer_rgba())
        images.append(Image.fromarray(rgba[..., :3].copy()).quantize(colors=128))
    if len(images) == 1:  # a single point: still an animation of two identical frames
        images.append(images[0].copy())
    target = Path(path)
    _write(target, lambda file: images[0].save(
        file,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=int(round(1000 / float(fps))),
        loop=0,
    ))  # fmt: skip
    return target


def _write(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """Replace ``target`` all or nothing (a viewer or a failed save never sees half an
    image, and a failed save leaves the old one); its folder is made if missing, as the
    bench's write_plot does."""
    from gradwise.runs import replace_atomically

    target.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(target, write)


def _check_inputs(owner: str, surface: Surface, trajectories: Sequence[Trajectory]) -> None:
    if not isinstance(surface, Surface):
        raise TypeError(
            f"The 'surface' parameter of {owner} must be a Surface (see get_surface). "
            f"Got {type(surface).__name__} instead."
        )
    # A sequence, not any iterable: checking a generator here would use it up and leave an
    # empty plot; a single run is told to go in a list.
    if not isinstance(trajectories, Sequence) or not all(
        isinstance(t, Trajectory) for t in trajectories
    ):
        raise TypeError(
            f"The 'trajectories' parameter of {owner} must be a sequence of Trajectory "
            "(from run_optimizers; one run as [trajectory]). "
            f"Got {trajectories!r} instead."
        )


def _grid(surface: Surface) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    (x_low, x_high), (y_low, y_high) = surface.domain
    xs = torch.linspace(x_low, x_high, _GRID, dtype=torch.float64)
    ys = torch.linspace(y_low, y_high, _GRID, dtype=torch.float64)
    grid_x, grid_y = torch.meshgrid(xs, ys, indexing="xy")
    with torch.no_grad():
        values = surface(torch.stack([grid_x, grid_y], dim=-1))  # (grid, grid)
    return grid_x.numpy(), grid_y.numpy(), values.numpy()


def _levels(values: NDArray[np.float64], bounded_below: bool) -> NDArray[np.float64]:
    low, high = float(values.min()), float(values.max())
    span = max(high - low, 1e-12)
    if bounded_below:
        # Log spacing above the lowest grid value: the valleys near a minimum get lines.
        # The lowest line sits at most at the 1st percentile of the grid's values, so it
        # encloses about 1% of the box or less: span * 1e-4 alone left Beale's whole basin
        # (values up to ~18 of a span of 1.8e5) without a line.
        gaps = values[values > low] - low
        floor = min(span * 1e-4, float(np.percentile(gaps, 1))) if gaps.size else span * 1e-4
        return low + np.logspace(np.log10(floor), np.log10(span), _LEVELS)
    return np.linspace(low, high, _LEVELS)


def _contour_figure(surface: Surface) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 5), dpi=80)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.1, right=0.97, top=0.92, bottom=0.1)
    axes = figure.add_subplot()
    grid_x, grid_y, values = _grid(surface)
    levels = _levels(values, bool(surface.minima))
    axes.contour(grid_x, grid_y, values, levels=levels, cmap="viridis", linewidths=0.8)
    for point in surface.critical_points:
        axes.plot(*point.location, _MARKERS[point.kind], color="k", markersize=11,
                  markerfacecolor="w", zorder=3)  # fmt: skip
    (x_low, x_high), (y_low, y_high) = surface.domain
    axes.set_xlim(x_low, x_high)
    axes.set_ylim(y_low, y_high)
    axes.set_xlabel("x")
    axes.set_ylabel("y")
    axes.set_title(surface.name, fontsize="medium", parse_math=False)
    return figure, axes


def _trajectory_line(axes: Any, trajectory: Trajectory, index: int) -> Any:
    color = f"C{index % 10}"
    start_x, start_y = trajectory.points[0]
    axes.plot(start_x, start_y, "o", color=color, markersize=5, markerfacecolor="none")
    return axes.plot([], [], "-", color=color, linewidth=1.6, zorder=4)[0]


def _legend(axes: Any, lines: Sequence[Any], trajectories: Sequence[Trajectory]) -> None:
    """One entry per run, its name shown as written: handed over explicitly, since
    ``legend()`` skips a label that starts with "_", and without math parsing, since a
    name between two "$" was drawn as mathtext ("$\\foo$" failed to draw)."""
    if not trajectories:
        return
    labels = [t.name + (" (diverged)" if t.diverged else "") for t in trajectories]
    legend = axes.legend(lines, labels, loc="upper right", fontsize="small", framealpha=0.85)
    for text in legend.get_texts():
        text.set_parse_math(False)
