"""UNDERFITTING through the doctor and gradwise train: the live finding, the monitor
config's targets, and the "bigger model" fix that --fix applies."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradwise import Finding
from gradwise.config import ConfigError, load_config
from gradwise.diagnosis import Diagnosis
from gradwise.doctor import diagnose, fixes_from, with_changes, with_config_fix
from gradwise.runs import read_records
from gradwise.train import train

# A one-hidden-layer MLP of 4 units on MNIST-1D: about 35% accuracy, where a CNN gets 90%+.
NARROW_MLP = (
    "model.name=mlp",
    "model.depth=1",
    "model.width=4",
    "model.norm=none",
    "data.batch_size=32",
    "schedule=null",
    "optimizer={name: Adam, lr: 0.01}",
)


def underfitting(**evidence: float) -> Diagnosis:
    return Diagnosis(Finding.UNDERFITTING, "s", "p", evidence)


def test_underfitting_widens_a_built_in_model() -> None:
    narrow = load_config(overrides=["model.name=mlp", "model.width=8"])
    assert with_config_fix(underfitting(), narrow).fix == {"model.width": 32}
    # No width configured: the builder's default (cnn1d: 32 channels) is widened.
    assert with_config_fix(underfitting(), load_config()).fix == {"model.width": 128}
    fixed = with_changes(narrow, fixes_from([with_config_fix(underfitting(), narrow)]))
    assert fixed.model.width == 32


def test_a_model_of_the_users_own_gets_no_automatic_fix() -> None:
    custom = load_config(overrides=["model.name=benchmarks.doctor_setups:wrong_backward_mlp"])
    assert with_config_fix(underfitting(), custom).fix == {}


def test_the_doctor_names_underfitting_and_widening_repairs_it(tmp_path: Path) -> None:
    config = load_config(overrides=[*NARROW_MLP, f"runs_dir={tmp_path}"])
    result = diagnose(config, fix=True, checks=False, probe_epochs=5)
    kinds = [finding.kind for finding in result.findings]
    assert Finding.UNDERFITTING in kinds
    assert Finding.OVERFITTING not in kinds
    assert result.applied == {"model.width": 16}
    assert result.after is not None
    assert Finding.UNDERFITTING not in [finding.kind for finding in result.after.findings]
    before = result.probe.metrics["val_accuracy"]
    after = result.after.probe.metrics["val_accuracy"]
    assert after > before + 0.03, (before, after)
    report = result.run.report_path.read_text()
    assert 'alt="train and validation curves behind UNDERFITTING"' in report


def test_gradwise_train_raises_it_live_and_a_reached_target_silences_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(overrides=[*NARROW_MLP, f"runs_dir={tmp_path}", "epochs=5"])
    result = train(config, progress=False)
    assert result.run is not None
    recorded = read_records(result.run.findings_path)
    assert [r["kind"] for r in recorded] == [Finding.UNDERFITTING.value]
    evidence = recorded[0]["evidence"]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= set(evidence)
    assert "gradwise: UNDERFITTING" in capsys.readouterr().err
    # The same run against a target it reaches (~35% training accuracy > 25%): quiet.
    reached = load_config(
        overrides=[*NARROW_MLP, f"runs_dir={tmp_path}", "epochs=5", "monitor.target_accuracy=0.25"]
    )
    quiet = train(reached, progress=False)
    assert quiet.run is not None
    assert read_records(quiet.run.findings_path) == []


def test_a_bad_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'target_accuracy' key in 'train.monitor'"):
        load_config(overrides=["monitor.target_accuracy=90"])
