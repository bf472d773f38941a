"""Resuming a run that early stopping ended, killed before its summary said so.

Early stopping decides at an epoch end, whose checkpoint then holds the stopped early
stopping; the run's end (best weights, the test split, the summary) comes after it. A kill
in between leaves a run that is not finished, and its resume must do that end only, as the
uninterrupted run did, not train on to the budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gradwise import Trainer, optim
from gradwise.config import load_config
from gradwise.data import load_dataset
from gradwise.regularize import EarlyStopping
from gradwise.runs import RunFolder, read_records, read_summary, write_summary
from gradwise.train import Callback, FitResult, TrainState, load_checkpoint, resume, train
from tests.train.conftest import SMALL_RUN


def _trainer(
    run: RunFolder,
    *,
    restore_best_weights: bool,
    epochs: int = 40,
    callbacks: Sequence[Callback] = (),
) -> Trainer:
    """Spirals with a small MLP, which early stopping ends after 3 epochs of 4 steps."""
    torch.manual_seed(0)
    data = load_dataset("spirals", seed=0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    stopping = EarlyStopping(
        monitor="val_loss", patience=1, min_delta=0.05, restore_best_weights=restore_best_weights
    )
    return Trainer(
        model,
        optim.Adam(model.parameters(), lr=0.05),
        data,
        epochs=epochs,
        batch_size=64,
        early_stopping=stopping,
        callbacks=callbacks,
        run=run,
        log_every=5,
        progress=False,
    )


def _records_without_time(run: RunFolder) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if k != "time"} for r in read_records(run)]


def _uninterrupted(tmp_path: Path, *, restore_best_weights: bool, epochs: int = 40) -> Trainer:
    trainer = _trainer(
        RunFolder.create(tmp_path, "whole"),
        restore_best_weights=restore_best_weights,
        epochs=epochs,
    )
    result = trainer.fit()
    assert result.status == "early_stopped"
    assert result.epochs == 3  # stopped at epoch 2 ...
    assert trainer.early_stopping is not None
    assert trainer.early_stopping.best_epoch == 1  # ... after the best epoch, whose weights differ
    return trainer


def _resume(
    run: RunFolder, *, restore_best_weights: bool, epochs: int = 40
) -> tuple[Trainer, FitResult]:
    trainer = _trainer(run, restore_best_weights=restore_best_weights, epochs=epochs)
    return trainer, trainer.fit(resume=True)


def _assert_same_end(resumed: Trainer, result: FitResult, whole: Trainer) -> None:
    assert whole.run is not None
    assert resumed.run is not None
    assert result.status == "early_stopped"
    assert (result.epochs, result.steps) == (3, 12)
    assert read_summary(resumed.run)["status"] == "early_stopped"
    assert read_summary(resumed.run)["steps"] == read_summary(whole.run)["steps"]
    assert _records_without_time(resumed.run) == _records_without_time(whole.run)
    assert [r["kind"] for r in read_records(resumed.run)].count("test") == 1
    for (name, expected), actual in zip(
        whole.module.state_dict().items(), resumed.module.state_dict().values(), strict=True
    ):
        assert torch.equal(expected, actual), name


class _KillAtFitEnd(Callback):
    """Ctrl-C (or a crash) in the run's end: after the last checkpoint, before the test split."""

    def on_fit_end(self, state: TrainState) -> None:
        raise KeyboardInterrupt("killed at the end of the run, for the test")


@pytest.mark.parametrize("restore_best_weights", [True, False])
def test_a_run_killed_after_early_stopping_before_its_summary_resumes_into_its_end_only(
    tmp_path: Path, restore_best_weights: bool
) -> None:
    # What a kill after the test record, before the final summary, leaves: every file of
    # the finished run, but a summary that still says "running".
    whole = _uninterrupted(tmp_path, restore_best_weights=restore_best_weights)
    killed = _trainer(
        RunFolder.create(tmp_path, "killed"), restore_best_weights=restore_best_weights
    )
    assert killed.fit().status == "early_stopped"
    assert killed.run is not None
    write_summary(killed.run, {**read_summary(killed.run), "status": "running"})
    assert load_checkpoint(killed.run.last_checkpoint)["early_stopping"]["stopped_epoch"] == 2
    resumed, result = _resume(killed.run, restore_best_weights=restore_best_weights)
    _assert_same_end(resumed, result, whole)


@pytest.mark.parametrize("restore_best_weights", [True, False])
def test_a_run_killed_in_its_end_after_early_stopping_evaluates_the_test_split_once(
    tmp_path: Path, restore_best_weights: bool
) -> None:
    whole = _uninterrupted(tmp_path, restore_best_weights=restore_best_weights)
    run = RunFolder.create(tmp_path, "killed")
    killed = _trainer(run, restore_best_weights=restore_best_weights, callbacks=[_KillAtFitEnd()])
    with pytest.raises(KeyboardInterrupt, match="killed at the end"):
        killed.fit()
    assert "test" not in [r["kind"] for r in read_records(run)]
    resumed, result = _resume(run, restore_best_weights=restore_best_weights)
    _assert_same_end(resumed, result, whole)


def test_early_stopping_at_the_budgets_last_epoch_resumes_as_early_stopped(tmp_path: Path) -> None:
    # Early stopping ends the last epoch of the budget: the resume has no step left to
    # train, and must still end the run as early stopped (with the best weights), not
    # as completed.
    whole = _uninterrupted(tmp_path, restore_best_weights=True, epochs=3)
    killed = _trainer(RunFolder.create(tmp_path, "killed"), restore_best_weights=True, epochs=3)
    assert killed.fit().status == "early_stopped"
    assert killed.run is not None
    write_summary(killed.run, {**read_summary(killed.run), "status": "running"})
    resumed, result = _resume(killed.run, restore_best_weights=True, epochs=3)
    _assert_same_end(resumed, result, whole)


class _KillAtEpochEnd(Callback):
    """A crash at the end of epoch ``epoch``: after its record, before its checkpoint."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch == self.epoch:
            raise RuntimeError(f"crash at the end of epoch {self.epoch}, for the test")


def test_a_crash_between_the_stopping_epochs_record_and_its_checkpoint_resumes_to_the_same_end(
    tmp_path: Path,
) -> None:
    # The previous epoch's checkpoint is the last: the resume trains the stopping epoch
    # again (its record dropped), and early stopping stops it again.
    whole = _uninterrupted(tmp_path, restore_best_weights=True)
    run = RunFolder.create(tmp_path, "killed")
    killed = _trainer(run, restore_best_weights=True, callbacks=[_KillAtEpochEnd(2)])
    with pytest.raises(RuntimeError, match="crash at the end of epoch 2"):
        killed.fit()
    assert load_checkpoint(run.last_checkpoint)["position"]["epoch"] == 2
    resumed, result = _resume(run, restore_best_weights=True)
    _assert_same_end(resumed, result, whole)


def test_gradwise_train_resume_of_an_early_stopped_run_killed_before_its_summary(
    tmp_path: Path,
) -> None:
    # The configured path (gradwise train --resume): the same end as without the kill.
    config = load_config(
        overrides=[
            *SMALL_RUN,
            f"runs_dir={tmp_path}",
            "epochs=50",
            "optimizer.lr=0.05",
            "regularization.early_stopping={monitor: val_loss, patience: 2, min_delta: 0.5}",
        ]
    )
    whole = train(replace(config, name="whole"), progress=False)
    assert whole.status == "early_stopped"
    assert whole.epochs < 50
    killed = train(replace(config, name="killed"), progress=False)
    assert killed.run is not None
    assert whole.run is not None
    write_summary(killed.run, {**read_summary(killed.run), "status": "running"})
    resumed = resume(killed.run.path, progress=False)
    assert resumed.status == "early_stopped"
    assert (resumed.epochs, resumed.steps) == (whole.epochs, whole.steps)
    # The test record and summary are of the final weights: the best epoch's, restored.
    assert _records_without_time(killed.run) == _records_without_time(whole.run)
    assert resumed.summary["test"] == whole.summary["test"]
