"""A constant feature in the training data is said once per run and kept in its summary:
not swallowed, and not repeated by every process or every build of the run."""

from __future__ import annotations

import html
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from gradwise.config import ConfigError, load_config
from gradwise.preprocess import ConstantFeatureWarning
from gradwise.runs import RunFolder, read_summary
from gradwise.train import prepare_run, resume, train
from tests.cli.helpers import gradwise
from tests.train.stop_at import StopAt

EXPECTED = (
    "in 'train.data.preprocess[0]', Standardize(): 1 feature is constant in the fit data "
    "(feature index 2); their scale is set to 1 (they are only centered). Drop them or check "
    "the data."
)


def write_data(path: Path, *, constant: bool = True) -> None:
    """Four features, three classes; feature 2 is the same in every sample if ``constant``."""
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 200)
    inputs = rng.normal(size=(200, 4)) + targets[:, None]
    if constant:
        inputs[:, 2] = 7.0
    np.savez(path, x=inputs.astype(np.float32), y=targets)


def overrides(tmp_path: Path) -> list[str]:
    return [
        f"data.dataset={tmp_path / 'data.npz'}", "data.batch_size=32",
        "data.preprocess=[standardize]", "model.name=mlp", "model.width=8", "model.depth=1",
        "model.norm=none", "epochs=2", "schedule=null", f"runs_dir={tmp_path / 'runs'}",
        "name=run", "monitor=null",
    ]  # fmt: skip


def test_a_run_warns_once_and_records_the_constant_feature(tmp_path: Path) -> None:
    write_data(tmp_path / "data.npz")
    with pytest.warns(ConstantFeatureWarning) as caught:
        train(load_config(overrides=overrides(tmp_path)), progress=False)
    messages = [str(w.message) for w in caught if w.category is ConstantFeatureWarning]
    assert messages == [EXPECTED]
    assert caught[0].filename == __file__  # points at the call of train()
    summary = read_summary(RunFolder.open(tmp_path / "runs" / "run"))
    assert summary["preprocessing_warnings"] == [EXPECTED]
    # The report says it at the top, before the summary and the plots it is true of.
    page = (tmp_path / "runs" / "run" / "report.html").read_text()
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert headings[:2] == ["Data warnings", "Summary"]
    assert f"<li>{html.escape(EXPECTED)}</li>" in page


def test_building_a_run_keeps_the_warning_without_issuing_it(tmp_path: Path) -> None:
    # prepare_run runs once per rank and in the launcher's check (and per probe or seed in
    # the doctor and pruning): the command that trains issues the warning, once.
    write_data(tmp_path / "data.npz")
    config = load_config(overrides=overrides(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepared = [prepare_run(config) for _ in range(2)]
    assert [p.preprocessing_warnings for p in prepared] == [(EXPECTED,), (EXPECTED,)]


def test_the_warning_names_the_entry_that_issued_it(tmp_path: Path) -> None:
    # Two standardize entries; only the second scales, so only it warns, named by its
    # config path (not by the pipeline's own "steps[1] 'standardize-2'").
    write_data(tmp_path / "data.npz")
    preprocess = "data.preprocess=[{name: standardize, with_std: false}, standardize]"
    config = load_config(overrides=[*overrides(tmp_path), preprocess])
    with pytest.warns(ConstantFeatureWarning) as caught:
        train(config, progress=False)
    expected = EXPECTED.replace("'train.data.preprocess[0]'", "'train.data.preprocess[1]'")
    assert [str(w.message) for w in caught] == [expected]
    summary = read_summary(RunFolder.open(tmp_path / "runs" / "run"))
    assert summary["preprocessing_warnings"] == [expected]


def test_a_failing_entry_is_named(tmp_path: Path) -> None:
    write_data(tmp_path / "data.npz")
    preprocess = "data.preprocess=[pca, {name: pca, n_components: 5}]"
    config = load_config(overrides=[*overrides(tmp_path), preprocess])
    message = (
        "in 'train.data.preprocess[1]', PCA(n_components=5): The 'n_components' parameter of "
        "PCA must be an int <= 4 (the number of features) or a float in (0, 1). Got 5 instead."
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        prepare_run(config)


def test_a_run_without_constant_features_records_nothing(tmp_path: Path) -> None:
    write_data(tmp_path / "data.npz", constant=False)
    train(load_config(overrides=overrides(tmp_path)), progress=False)  # warnings are errors
    assert "preprocessing_warnings" not in read_summary(RunFolder.open(tmp_path / "runs" / "run"))


def test_a_resumed_run_keeps_the_record_and_does_not_warn_again(tmp_path: Path) -> None:
    write_data(tmp_path / "data.npz")
    with pytest.warns(ConstantFeatureWarning):
        stopped = train(
            load_config(overrides=overrides(tmp_path)), progress=False, callbacks=[StopAt(3)]
        )
    assert stopped.status == "stopped"
    folder = RunFolder.open(tmp_path / "runs" / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        finished = resume(folder.path, progress=False)
    assert finished.status == "completed"
    assert read_summary(folder)["preprocessing_warnings"] == [EXPECTED]


def test_two_processes_warn_once(tmp_path: Path) -> None:
    write_data(tmp_path / "data.npz")
    sets = [arg for override in overrides(tmp_path) for arg in ("--set", override)]
    result = gradwise("train", "--no-progress", "--nproc", "2", *sets, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # The launcher's check and both ranks fitted the preprocessing; rank 0 says it.
    assert result.stderr.count("ConstantFeatureWarning") == 1, result.stderr
    assert EXPECTED in result.stderr
    summary = read_summary(RunFolder.open(tmp_path / "runs" / "run"))
    assert summary["preprocessing_warnings"] == [EXPECTED]


@pytest.mark.parametrize(
    "command",
    [
        ["config"],
        ["lr-find", "--steps", "8", "--sweeps", "1"],
        ["doctor", "--epochs", "1", "--no-checks"],
    ],
    ids=lambda command: command[0],
)
def test_every_command_that_fits_the_preprocessing_says_so_once(
    tmp_path: Path, command: list[str]
) -> None:
    # Not only train: a constant feature is as wrong for the doctor's probe, an lr sweep or
    # a checked config. (gradwise prune trains its runs with train(): once per run.)
    write_data(tmp_path / "data.npz")
    sets = [arg for override in overrides(tmp_path) for arg in ("--set", override)]
    result = gradwise(*command, *sets, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("ConstantFeatureWarning") == 1, result.stderr
    assert EXPECTED in result.stderr
