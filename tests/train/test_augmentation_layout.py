"""Flips, shifts, crops and rotations move values between the positions of an image or a
signal: a config whose inputs have no such positions when the augmentation runs (after a
pca step, or in the data file) is refused before the run starts, naming the entries; one
whose inputs keep them trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gradwise.config import ConfigError, load_config
from gradwise.train import train

MOVING = {
    "flip": "flip",
    "shift": "{name: shift, max_shift: 1}",
    "crop": "{name: crop, padding: 1}",
    "rotation": "{name: rotation, degrees: 10}",
}


def write_inputs(path: Path, sample_shape: tuple[int, ...]) -> Path:
    rng = np.random.default_rng(0)
    inputs = rng.uniform(0, 1, size=(120, *sample_shape)).astype(np.float32)
    np.savez(path, x=inputs, y=rng.integers(0, 3, 120))
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return write_inputs(tmp_path / "images.npz", (2, 6, 6))


def config_overrides(tmp_path: Path, dataset: Path, preprocess: str, augment: str) -> list[str]:
    return [
        f"data.dataset={dataset}", f"data.preprocess={preprocess}", f"data.augment=[{augment}]",
        "data.batch_size=32", "model.name=mlp", "model.width=8", "model.depth=1",
        "model.norm=none", "steps=3", "schedule=null", "monitor=null",
        f"runs_dir={tmp_path / 'runs'}", "name=run",
    ]  # fmt: skip


def test_pca_before_a_shift_is_refused_naming_both_entries(tmp_path: Path, images: Path) -> None:
    overrides = config_overrides(tmp_path, images, "[standardize, pca]", MOVING["shift"])
    with pytest.raises(ConfigError) as error:
        train(load_config(overrides=overrides), progress=False)
    assert str(error.value) == (
        "'train.data.augment[0]' (shift) moves values between the positions of each image or "
        "signal, but 'train.data.preprocess[1]' (pca) turns each sample into a flat vector of "
        "principal-component scores, which has no positions; the run would fail at its first "
        "step. Drop the augmentation, or replace pca by a step that keeps the inputs' layout "
        "(standardize, mean_subtract, min_max_scale or zca_whiten)."
    )
    assert not (tmp_path / "runs").exists()  # refused before the run folder was made


@pytest.mark.parametrize(
    ("step", "name"), [("{name: pca, n_components: 5}", "pca"), ("pca_whiten", "pca_whiten")]
)
@pytest.mark.parametrize("augment", sorted(MOVING))
def test_every_flattening_step_and_moving_augmentation_is_refused(
    tmp_path: Path, images: Path, step: str, name: str, augment: str
) -> None:
    # The moving augmentation comes second, after noise (which takes any batch).
    augments = f"{{name: noise, std: 0.1}}, {MOVING[augment]}"
    overrides = config_overrides(tmp_path, images, f"[{step}]", augments)
    with pytest.raises(ConfigError) as error:
        train(load_config(overrides=overrides), progress=False)
    assert str(error.value).startswith(
        f"'train.data.augment[1]' ({augment}) moves values between the positions of each "
        f"image or signal, but 'train.data.preprocess[0]' ({name}) turns each sample"
    )


@pytest.mark.parametrize(
    "preprocess", ["[zca_whiten]", "[{name: standardize, per: channel}, zca_whiten]", "[]"]
)
def test_steps_that_keep_the_layout_train_with_every_moving_augmentation(
    tmp_path: Path, images: Path, preprocess: str
) -> None:
    # ZCA whitening mixes positions but gives back the inputs' shape: the augmentations
    # have positions to move values between.
    overrides = config_overrides(tmp_path, images, preprocess, ", ".join(MOVING.values()))
    result = train(load_config(overrides=overrides), progress=False)
    assert result.status == "completed"
    assert result.steps == 3


def test_pca_trains_with_augmentations_of_any_shape(tmp_path: Path, images: Path) -> None:
    augments = "{name: noise, std: 0.1}, {name: mixup, alpha: 0.4}"
    overrides = config_overrides(tmp_path, images, "[{name: pca, n_components: 8}]", augments)
    result = train(load_config(overrides=overrides), progress=False)
    assert result.status == "completed"


@pytest.mark.parametrize(
    ("sample_shape", "augment", "message"),
    [
        ((4,), "shift",
         "'train.data.augment[0]' (shift) takes batches of signals (N, C, L) or images "
         "(N, C, H, W), but the dataset's inputs have shape (N, 4); the run would fail at its "
         "first step. Drop it (noise and mixup take inputs of any shape)."),
        ((1, 12), "rotation",
         "'train.data.augment[0]' (rotation) takes batches of images (N, C, H, W), but the "
         "dataset's inputs have shape (N, 1, 12); the run would fail at its first step."),
    ],
)  # fmt: skip
def test_inputs_without_the_layout_an_augmentation_needs_are_refused(
    tmp_path: Path, sample_shape: tuple[int, ...], augment: str, message: str
) -> None:
    data = write_inputs(tmp_path / "data.npz", sample_shape)
    overrides = config_overrides(tmp_path, data, "[standardize]", MOVING[augment])
    with pytest.raises(ConfigError) as error:
        train(load_config(overrides=overrides), progress=False)
    assert str(error.value).startswith(message)
    assert not (tmp_path / "runs").exists()
