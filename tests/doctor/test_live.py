"""gradwise train raises findings live: printed once each, recorded in the run folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gradwise import Finding, Trainer, monitor, optim
from gradwise.config import RunConfig, load_config
from gradwise.data import load_dataset
from gradwise.doctor import LiveDoctor
from gradwise.runs import RunFolder, read_records, read_summary
from gradwise.train import Callback, TrainingDiverged, TrainState, train
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
    # 140 steps: too short for the trend checks (250), so the report does not vouch for it.
    assert result.steps < 250
    page = result.run.report_path.read_text()
    assert f"No findings, but the run took {result.steps} steps, fewer than the 250" in page


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


class _FailAtStep3(Callback):
    def on_step_end(self, state: TrainState) -> None:
        if state.step == 3:
            raise RuntimeError("a callback failed")


@pytest.mark.parametrize("with_run", [False, True], ids=["no run folder", "run folder"])
def test_a_failed_fit_leaves_no_watch_hooks_and_no_open_findings_log(
    tmp_path: Path, with_run: bool
) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    data = load_dataset("spirals", seed=0)
    watch = monitor.watch(model, optimizer, monitor_data=data.train, every=1)
    run = RunFolder.create(tmp_path, "failed") if with_run else None
    doctor = LiveDoctor(watch, run, say=lambda message: None)
    trainer = Trainer(
        model, optimizer, data, steps=10, batch_size=64,
        callbacks=[doctor, _FailAtStep3()], progress=False,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="a callback failed"):
        trainer.fit()
    # Before, only a divergence released them: the watch kept measuring every later step
    # of the model and optimizer, and the findings log stayed open.
    assert not optimizer._optimizer_step_pre_hooks
    assert not model._forward_pre_hooks
    if run is not None:
        descriptors = Path("/proc/self/fd")
        open_files = {str(link.readlink()) for link in descriptors.iterdir() if link.is_symlink()}
        assert str(run.findings_path.resolve()) not in open_files
