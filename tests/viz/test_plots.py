"""The PNG and the animated GIF: valid images that show the contours and the trajectories."""

import io
from pathlib import Path

import numpy as np
import pytest
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


def test_the_contours_show_the_valley_around_beales_minimum():
    # Beale spans 1.8e5 on its box but only ~0 to 40 between the usual start (1, 1.5) and
    # the minimum (3, 0.5): lines spaced from 1e-4 of the span left that basin blank.
    surface = get_surface("beale")
    image = np.asarray(Image.open(io.BytesIO(plot_trajectories(surface, []))).convert("RGB"))
    (x_low, x_high), (y_low, y_high) = surface.domain

    def pixel(x, y):  # the axes fill (0.1, 0.1) to (0.97, 0.92) of the 480 x 400 figure
        column = 480 * (0.1 + 0.87 * (x - x_low) / (x_high - x_low))
        row = 400 * (1 - (0.1 + 0.82 * (y - y_low) / (y_high - y_low)))
        return int(round(row)), int(round(column))

    assert image.shape[:2] == (400, 480)
    top, left = pixel(1.5, 0.9)
    bottom, right = pixel(2.7, 0.1)  # the basin left of the minimum, its marker excluded
    drawn = (image[top:bottom, left:right].min(axis=-1) < 200).sum()
    assert drawn > 100


def test_trajectories_must_be_a_sequence_not_one_run_or_a_generator(tmp_path):
    surface = get_surface("quadratic")
    runs = _runs(surface, num_steps=5)
    message = r"^The 'trajectories' parameter of plot_trajectories must be a sequence of Tra"
    with pytest.raises(TypeError, match=message + r".*\[trajectory\]"):
        plot_trajectories(surface, runs[0])
    with pytest.raises(TypeError, match=message):  # a generator drew an empty plot
        plot_trajectories(surface, (run for run in runs))
    with pytest.raises(TypeError, match=r"^The 'trajectories' parameter of animate_traj"):
        animate_trajectories(surface, iter(runs), tmp_path / "runs.gif")


def test_the_png_and_the_gif_go_into_folders_that_do_not_exist_yet(tmp_path):
    surface = get_surface("saddle")
    runs = _runs(surface, num_steps=3)
    png = tmp_path / "new" / "plots" / "runs.png"
    assert plot_trajectories(surface, runs, png) == png.read_bytes()
    gif = animate_trajectories(surface, runs, tmp_path / "other" / "runs.gif", frames=2)
    with Image.open(gif) as image:
        assert image.format == "GIF"


def test_run_names_are_drawn_as_written_whatever_their_characters(tmp_path):
    # legend() skipped a label starting with "_" (and warned when none was left), and a
    # name between two "$" went to mathtext: "$\foo$" failed to draw with a ValueError.
    surface = get_surface("quadratic")
    for names in (["_warmup"], ["_warmup", "GD"], [r"$\foo$ run", "cost $5", "50% lr"]):
        runs = run_optimizers(
            surface,
            {name: optim.chain(optim.scale_by_learning_rate(0.05)) for name in names},
            num_steps=3,
        )
        assert plot_trajectories(surface, runs)[:8] == b"\x89PNG\r\n\x1a\n"
        animate_trajectories(surface, runs, tmp_path / "runs.gif", frames=2)


def test_a_failed_save_leaves_the_previous_image_whole(tmp_path, monkeypatch):
    # The GIF was written in place: a save that failed part-way (a full disk) left a
    # truncated file where the previous animation had been.
    surface = get_surface("quadratic")
    runs = _runs(surface, num_steps=3)
    path = animate_trajectories(surface, runs, tmp_path / "runs.gif", frames=2)
    previous = path.read_bytes()

    def save_half_then_fail(image, target, *args, **kwargs):  # as a full disk would
        if isinstance(target, str | Path):
            with open(target, "wb") as file:
                file.write(b"GIF89a")
        else:
            target.write(b"GIF89a")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        animate_trajectories(surface, _runs(surface, num_steps=6), path, frames=3)
    assert path.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.gif"]  # no temporary left
