"""gradwise train raises findings live: printed once each, recorded in the run folder."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gradwise import Finding
from gradwise.config import RunConfig, load_config
from gradwise.runs import read_records, read_summary
from gradwise.train import TrainingDiverged, train
from tests.train.conftest import SMALL_RUN


@pytest.fixture
def config(tmp_path: object) -> RunConfig:
    return load_config(overrides=[*SMALL_RUN, f"runs_dir={tmp_path}", "monitor.every=5"])


def test_a_healthy_run_records_no_findings(
    config: RunConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    result = train(replace(config, epochs=10), progress=False)
    assert result.run is not None
    assert read_records(result.run.findings_path) == []
    assert result.run.probes_path.is_file()
    assert "gradwise:" not in capsys.readouterr().err
    assert "looks healthy" in result.run.report_path.read_text()


def test_a_diverging_run_names_the_nonfinite_loss(
    config: RunConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    diverging = replace(config, name="nan", optimizer={"name": "SGD", "lr": 1e6}, schedule=None)
    with pytest.raises(TrainingDiverged):
        train(diverging, progress=False)
    run = config.runs_dir + "/nan"
    kinds = [record["kind"] for record in read_records(run + "/findings.jsonl")]
    assert Finding.NONFINITE_LOSS.value in kinds
    assert len(kinds) == len(set(kinds))  # each kind once
    printed = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("gradwise: ")
    ]
    assert len(printed) == len(kinds)
    assert read_summary(run)["status"] == "diverged"


def test_monitoring_can_be_switched_off(config: RunConfig) -> None:
    result = train(replace(config, monitor=None, name="off"), progress=False)
    assert result.run is not None
    assert not result.run.findings_path.exists()
