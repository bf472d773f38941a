"""The PNG and the animated GIF: valid images that show the contours and the trajectories."""

import io

import numpy as np
from PIL import Image

from gradwise import optim
from gradwise.viz import animate_trajectories, get_surface, plot_trajectories, run_optimizers


def _runs(surface, num_steps=40):
    return run_optimizers(
        surface,
        {
            "GD": optim.chain(optim.scale_by_learning_rate(surface.learning_rate)),
            "Adam": lambda params: optim.Adam(params, lr=0.1),
        },
        num_steps=num_steps,
    )


def test_the_png_is_non_blank_and_shows_the_trajectories(tmp_path):
    surface = get_surface("rosenbrock")
    data = plot_trajectories(surface, _runs(surface), tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes() == data
    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int64)
    assert image.std() > 10
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50
    contours_only = np.asarray(
        Image.open(io.BytesIO(plot_trajectories(surface, []))).convert("RGB")
    ).astype(np.int64)
    assert contours_only.shape == image.shape
    assert (np.abs(image - contours_only).sum(axis=-1) > 0).sum() > 200  # the drawn lines


def test_the_gif_is_a_valid_animation_whose_frames_change(tmp_path):
    surface = get_surface("himmelblau")
    path = animate_trajectories(surface, _runs(surface), tmp_path / "runs.gif", frames=6, fps=5)
    assert path == tmp_path / "runs.gif"
    with Image.open(path) as gif:
        assert gif.format == "GIF"
        assert gif.is_animated
        assert gif.n_frames == 6
        frames = []
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB")).astype(np.int64))
        assert gif.info["duration"] == 200
    assert frames[0].std() > 10
    assert all(np.abs(a - b).sum() > 0 for a, b in zip(frames, frames[1:], strict=False))


def test_saddles_and_diverged_runs_plot_and_animate(tmp_path):
    surface = get_surface("monkey_saddle")
    runs = _runs(surface, num_steps=300)
    assert any(run.diverged for run in runs)
    assert plot_trajectories(surface, runs)[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(animate_trajectories(surface, runs, tmp_path / "s.gif", frames=3)) as gif:
        assert gif.n_frames == 3
