"""What a shift, crop or rotation brings in from outside the image is set in the units of
the dataset's inputs, whatever the preprocessing that runs before the augmentation; a
resumed run fills with what the run started with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gradwise.config import ConfigError, load_config, parse_config, read_file
from gradwise.preprocess import load as load_preprocessing
from gradwise.regularize import RandomCrop, RandomRotation, RandomShift
from gradwise.runs import RunFolder
from gradwise.train import (
    PreparedRun,
    load_checkpoint,
    prepare_run,
    resume,
    save_checkpoint,
    train,
)
from tests.train.stop_at import StopAt

PREPROCESSING = [
    "[standardize]",  # 0 is each pixel's mean there
    "[{name: standardize, per: channel}]",
    "[{name: min_max_scale, feature_range: [-1, 1]}]",  # 0 is the middle of each range
    "[{name: rescale, factor: 0.25}]",
]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Two-channel 6x6 images, every pixel in [2, 10] (no pixel is ever 0)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npz"
    inputs = rng.uniform(2, 10, size=(150, 2, 6, 6)) + np.arange(36).reshape(6, 6) / 6
    np.savez(path, x=inputs.astype(np.float32), y=rng.integers(0, 3, 150))
    return path


def prepare(images: Path, preprocess: str, augment: str) -> PreparedRun:
    overrides = [
        f"data.dataset={images}", "model.name=cnn2d", f"data.preprocess={preprocess}",
        f"data.augment=[{augment}]", "monitor=null",
    ]  # fmt: skip
    return prepare_run(load_config(overrides=overrides))


def border(prepared: PreparedRun) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch augmented, back in raw units, and where it came from outside."""
    (module,) = prepared.augment  # type: ignore[misc]
    inputs = prepared.data.train.inputs[:64]
    out = prepared.augment(inputs)  # type: ignore[misc]
    # The same draws on ones with a zero fill: 0 where the output came from outside.
    if isinstance(module, RandomShift):
        twin = RandomShift(module.max_shift, seed=module.seed)
    elif isinstance(module, RandomCrop):
        twin = RandomCrop(module.padding, seed=module.seed)
    else:
        twin = RandomRotation(module.degrees, "nearest", seed=module.seed)
    outside = twin(torch.ones_like(inputs)) == 0
    assert outside.any()
    raw = out if prepared.preprocessing is None else prepared.preprocessing.inverse_transform(out)
    return raw, outside


@pytest.mark.parametrize("preprocess", [*PREPROCESSING, "[]"])
@pytest.mark.parametrize(
    "augment", ["{name: shift, max_shift: 2}", "{name: crop, padding: 2}",
                "{name: crop, padding: 2, padding_mode: zeros}"],
)  # fmt: skip
def test_the_border_is_the_inputs_zero_whatever_the_preprocessing(
    images: Path, preprocess: str, augment: str
) -> None:
    raw, outside = border(prepare(images, preprocess, augment))
    torch.testing.assert_close(raw[outside], torch.zeros_like(raw[outside]), rtol=0, atol=1e-4)
    assert (raw[~outside] > 1).all()  # the rest is the images' own pixels


@pytest.mark.parametrize("preprocess", PREPROCESSING)
def test_rotation_corners_are_the_inputs_zero(images: Path, preprocess: str) -> None:
    raw, outside = border(
        prepare(images, preprocess, "{name: rotation, degrees: [45, 45], interpolation: nearest}")
    )
    torch.testing.assert_close(raw[outside], torch.zeros_like(raw[outside]), rtol=0, atol=1e-4)


def test_after_whitening_the_border_is_the_whitened_black_image_there(images: Path) -> None:
    # ZCA mixes positions, so the inverse of a batch is no check: the border holds, at each
    # position, what whitening makes of an all-zero image.
    prepared = prepare(images, "[zca_whiten]", "{name: shift, max_shift: 2}")
    (shift,) = prepared.augment  # type: ignore[misc]
    inputs = prepared.data.train.inputs[:64]
    out = prepared.augment(inputs)  # type: ignore[misc]
    outside = RandomShift(2, seed=shift.seed)(torch.ones_like(inputs)) == 0
    black = prepared.preprocessing.transform(torch.zeros(1, 2, 6, 6))  # type: ignore[union-attr]
    expected = black.expand(out.shape)
    torch.testing.assert_close(out[outside], expected[outside], rtol=0, atol=1e-5)
    assert not torch.allclose(expected[outside], torch.zeros(1))


@pytest.mark.parametrize("preprocess", PREPROCESSING)
def test_fill_sets_the_border_in_the_inputs_units(images: Path, preprocess: str) -> None:
    raw, outside = border(prepare(images, preprocess, "{name: shift, max_shift: 2, fill: 6.5}"))
    torch.testing.assert_close(raw[outside], torch.full_like(raw[outside], 6.5), rtol=0, atol=1e-4)


def test_fill_mean_is_the_training_mean_input_and_zero_after_standardizing(images: Path) -> None:
    prepared = prepare(images, "[standardize]", "{name: crop, padding: 2, fill: mean}")
    (crop,) = prepared.augment  # type: ignore[misc]
    assert torch.allclose(crop.fill, torch.zeros(2, 6, 6, dtype=torch.float64), atol=1e-6)
    raw, outside = border(prepared)
    # The mean Standardize learned from the training split, at each position.
    mean = prepared.preprocessing.named_steps["standardize"].mean_  # type: ignore[union-attr]
    expected = mean.float().expand(raw.shape)
    torch.testing.assert_close(raw[outside], expected[outside], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("augment", "message"),
    [
        ("{name: shift, max_shift: 1, fill: black}",
         "'train.data.augment[0].fill' must be a number in the units of the dataset's inputs "
         "(0: black, silence) or 'mean' (the training split's mean input). Got 'black' instead."),
        ("{name: crop, padding: 1, padding_mode: zeros, fill: 3}",
         "'train.data.augment[0]' has padding_mode zeros, which pads with 0, and fill 3; use "
         "padding_mode: constant with that fill"),
        ("{name: crop, padding: 1, padding_mode: reflect, fill: 3}",
         "The 'fill' parameter of RandomCrop is the border of padding_mode='constant'"),
    ],
)  # fmt: skip
def test_a_bad_fill_fails_before_anything_runs(images: Path, augment: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        prepare(images, "[standardize]", augment)
    assert message in str(error.value)


def stopped_run(tmp_path: Path, images: Path) -> RunFolder:
    """A run with a crop filling with the training mean, stopped (with a checkpoint) after
    2 steps."""
    overrides = [
        f"data.dataset={images}", "data.batch_size=32", "data.preprocess=[standardize]",
        "data.augment=[{name: crop, padding: 2, fill: mean}]", "model.name=mlp",
        "model.width=8", "model.depth=1", "model.norm=none", "epochs=2", "schedule=null",
        "monitor=null", f"runs_dir={tmp_path / 'runs'}", "name=run",
    ]  # fmt: skip
    stopped = train(load_config(overrides=overrides), progress=False, callbacks=[StopAt(2)])
    assert stopped.status == "stopped"
    assert stopped.run is not None
    return stopped.run


def test_a_resumed_run_fills_with_the_mean_of_the_data_it_started_on(
    tmp_path: Path, images: Path
) -> None:
    folder = stopped_run(tmp_path, images)
    with np.load(images) as data:
        inputs, targets = data["x"], data["y"]
    np.savez(images, x=inputs + 3.0, y=targets)  # the data file changed: a brighter mean
    # The mean of the changed file, through the run's standardize, is 3 / std, not 0: what
    # the resumed run would fill with if it computed the mean again.
    config = parse_config(read_file(folder.config_path))
    saved = load_preprocessing(folder.preprocess_path)
    rebuilt = prepare_run(config, resuming=True, preprocessing=saved)
    (crop,) = rebuilt.augment  # type: ignore[misc]
    assert bool((crop.fill > 0.5).all())
    assert resume(folder.path, progress=False).status == "completed"
    # Standardize fitted on the first data maps their training mean to 0 at every position:
    # the fill the run started with, kept by the resumed run's crop to its last checkpoint.
    (fill,) = load_checkpoint(folder.last_checkpoint)["augment_fills"]
    assert fill.shape == (2, 6, 6)
    torch.testing.assert_close(fill, torch.zeros_like(fill), rtol=0, atol=1e-6)


def test_a_checkpoint_without_fills_resumes_with_a_warning_and_the_fill_computed_again(
    tmp_path: Path, images: Path
) -> None:
    # Checkpoints written before they kept the fills: the resume computes the fill again
    # (from the data file as it is now, unchanged here) and says so.
    folder = stopped_run(tmp_path, images)
    contents = load_checkpoint(folder.last_checkpoint)
    del contents["augment_fills"]
    save_checkpoint(folder.last_checkpoint, contents)
    with pytest.warns(UserWarning, match=r"holds no fills of the augmentations .*fill: mean"):
        assert resume(folder.path, progress=False).status == "completed"
    (fill,) = load_checkpoint(folder.last_checkpoint)["augment_fills"]
    torch.testing.assert_close(fill, torch.zeros_like(fill), rtol=0, atol=1e-6)
