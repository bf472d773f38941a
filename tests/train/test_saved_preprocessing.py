"""A run keeps the preprocessing it was trained with: resuming it, or looking at it, uses
the run folder's preprocess.npz, not a new fit on the data file as it is now."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gradwise import preprocess
from gradwise.config import ConfigError, load_config
from gradwise.runs import RunFolder, RunFolderError, read_records
from gradwise.train import load_checkpoint, prepare_run, resume, train
from gradwise.train._from_config import saved_preprocessing
from tests.train.stop_at import StopAt


def write_data(path: Path, shift: float) -> None:
    """Four features, three classes; ``shift`` moves the training inputs' statistics."""
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 300)
    inputs = rng.normal(size=(300, 4)) * [1.0, 10.0, 0.1, 3.0] + targets[:, None]
    inputs[:, 1] += shift * rng.random(300)  # not an affine change: a refit differs
    np.savez(path, x=inputs.astype(np.float32), y=targets)


def config(tmp_path: Path) -> object:
    return load_config(
        overrides=[
            f"data.dataset={tmp_path / 'data.npz'}", "data.batch_size=32",
            "model.name=mlp", "model.width=16", "model.depth=1", "model.norm=none",
            "epochs=2", "schedule=null", f"runs_dir={tmp_path / 'runs'}", "name=run",
        ]
    )  # fmt: skip


def test_a_resumed_run_normalizes_with_the_statistics_it_was_trained_with(tmp_path: Path) -> None:
    write_data(tmp_path / "data.npz", shift=0.0)
    run_config = config(tmp_path)
    stopped = train(run_config, progress=False, callbacks=[StopAt(5)])
    assert stopped.status == "stopped"
    folder = RunFolder.open(tmp_path / "runs" / "run")
    saved = preprocess.load(folder.preprocess_path)
    write_data(tmp_path / "data.npz", shift=40.0)  # the file changed meanwhile
    resume(folder.path, progress=False)
    # Oracle: the final validation loss recorded by the resumed run is that of the final
    # weights on the validation split normalized with the saved statistics.
    prepared = prepare_run(run_config, preprocessing=preprocess.load(folder.preprocess_path))
    model = prepared.model
    model.load_state_dict(load_checkpoint(folder.last_checkpoint)["model"])
    model.eval()
    validation = prepared.data.validation
    assert validation is not None
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(validation.inputs), validation.targets)
    (last,) = [r for r in read_records(folder) if r["kind"] == "epoch"][-1:]
    assert last["val_loss"] == pytest.approx(float(expected), rel=1e-5)
    # ... and not a refit on the changed file, which normalizes differently.
    refit = prepare_run(run_config).data.validation
    assert refit is not None
    assert not torch.allclose(refit.inputs, validation.inputs)
    sample = torch.randn(5, 4)
    after = preprocess.load(folder.preprocess_path)
    assert torch.equal(after.transform(sample), saved.transform(sample))  # not rewritten


def test_a_damaged_preprocess_file_is_named(tmp_path: Path) -> None:
    write_data(tmp_path / "data.npz", shift=0.0)
    train(config(tmp_path), progress=False, callbacks=[StopAt(2)])
    folder = RunFolder.open(tmp_path / "runs" / "run")
    folder.preprocess_path.write_bytes(b"not an archive")
    with pytest.raises(RunFolderError, match="cannot read the run's preprocessing from"):
        saved_preprocessing(folder)


def test_a_data_file_that_changed_shape_before_a_resume_is_a_config_error(
    tmp_path: Path,
) -> None:
    write_data(tmp_path / "data.npz", shift=0.0)
    stopped = train(config(tmp_path), progress=False, callbacks=[StopAt(5)])
    assert stopped.status == "stopped"
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(300, 5)).astype(np.float32)  # a fifth feature appeared
    np.savez(tmp_path / "data.npz", x=inputs, y=rng.integers(0, 3, 300))
    message = (
        r"^in 'train\.data\.preprocess\[0\]', Standardize\(\): X has 5 features, .*"
        r"\(the run's preprocess\.npz was fitted on inputs of another shape"
    )
    with pytest.raises(ConfigError, match=message):
        resume(tmp_path / "runs" / "run", progress=False)
