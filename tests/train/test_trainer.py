"""The Trainer: training, metrics, determinism, divergence, callbacks, checkpoints."""

from __future__ import annotations

import glob
import io
import math
import os
import pickle
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradwise import Trainer, optim
from gradwise.config import ConfigError, RunConfig, load_config
from gradwise.data import load_dataset
from gradwise.runs import (
    RunFolder,
    RunFolderError,
    list_runs,
    read_records,
    read_summary,
    write_summary,
)
from gradwise.train import (
    Callback,
    FitResult,
    TrainingDiverged,
    TrainState,
    load_checkpoint,
    make_trainer,
    prepare_run,
    resume,
    save_checkpoint,
    train,
)
from tests.runs.killed_write import kill_mid_write
from tests.train.conftest import SMALL_RUN
from tests.train.stop_at import StopAt


def _records_without_time(run: RunFolder) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if k != "time"} for r in read_records(run)]


def test_a_configured_run_learns_and_writes_its_run_folder(small_config: RunConfig) -> None:
    result = train(replace(small_config, epochs=20), progress=False)
    assert result.status == "completed"
    assert result.run is not None
    records = read_records(result.run)
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 20
    assert epochs[-1]["train_loss"] < 0.5 * epochs[0]["train_loss"]
    assert result.test["test_accuracy"] > 0.8
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == sorted(steps)
    assert len(set(steps)) == len(steps)
    for path in (
        result.run.config_path,
        result.run.summary_path,
        result.run.last_checkpoint,
        result.run.best_checkpoint,
        result.run.report_path,
        result.run.preprocess_path,
    ):
        assert path.is_file(), path
    assert any(result.run.tensorboard_dir.iterdir())
    summary = read_summary(result.run)
    assert summary["status"] == "completed"
    assert summary["best"]["monitor"] == "val_accuracy"
    assert summary["best"]["value"] == max(r["val_accuracy"] for r in epochs)


def test_best_pt_holds_the_state_of_the_best_epoch(small_config: RunConfig) -> None:
    result = train(replace(small_config, epochs=8), progress=False)
    assert result.run is not None
    best = load_checkpoint(result.run.best_checkpoint)
    summary = read_summary(result.run)["best"]
    assert best["position"]["epoch"] == summary["epoch"]  # the epochs ended, counted from 1
    assert best["epoch_metrics"][summary["monitor"]] == summary["value"]
    if summary["epoch"] == 8:  # the last epoch was the best: the same bytes as last.pt
        assert result.run.best_checkpoint.read_bytes() == result.run.last_checkpoint.read_bytes()


def test_every_record_and_the_summary_count_epochs_from_1_as_the_progress_bar(
    small_config: RunConfig,
) -> None:
    result = train(replace(small_config, epochs=2), progress=False)
    assert result.run is not None
    records = read_records(result.run)
    steps_per_epoch = result.summary["steps"] // 2
    for record in records:
        if record["kind"] == "step":  # the epoch it belongs to, the first being 1
            assert record["epoch"] == (record["step"] - 1) // steps_per_epoch + 1, record
    ends = [(r["epoch"], r["step"]) for r in records if r["kind"] == "epoch"]
    assert ends == [(1, steps_per_epoch), (2, 2 * steps_per_epoch)]
    (test,) = [r for r in records if r["kind"] == "test"]
    assert test["epoch"] == 2  # the last epoch trained
    best = read_summary(result.run)["best"]
    assert (best["epoch"], best["step"]) in ends  # "best (epoch 2)" names the second epoch


def test_the_same_config_and_seed_give_identical_metrics(small_config: RunConfig) -> None:
    first = train(replace(small_config, name="first"), progress=False)
    second = train(replace(small_config, name="second"), progress=False)
    assert first.run is not None
    assert second.run is not None
    assert _records_without_time(first.run) == _records_without_time(second.run)
    third = train(replace(small_config, name="third", seed=1), progress=False)
    assert third.run is not None
    assert _records_without_time(third.run) != _records_without_time(first.run)


def test_resume_after_a_mid_epoch_stop_is_bit_identical(small_config: RunConfig) -> None:
    # In-process version of the SIGKILL test in test_resume.py: stop mid-epoch, rebuild
    # everything from the config, resume, and compare with an uninterrupted run.
    config = replace(small_config, name="whole")
    whole = train(config, progress=False)
    assert whole.run is not None

    config = replace(small_config, name="split")
    prepared = prepare_run(config)
    folder = RunFolder.create(config.runs_dir, "split")
    from gradwise.config import config_to_dict
    from gradwise.runs import write_config

    write_config(folder, config_to_dict(config))
    stopper = StopAt(step=20)  # 14 steps per epoch: mid-epoch 2
    trainer = make_trainer(prepared, folder, progress=False)
    trainer.callbacks.append(stopper)
    assert trainer.fit().status == "stopped"
    position = load_checkpoint(folder.last_checkpoint)["position"]
    assert position == {"epoch": 1, "batch": 6, "step": 20}

    resumed = make_trainer(prepare_run(config), folder, progress=False).fit(resume=True)
    assert resumed.status == "completed"
    final = load_checkpoint(folder.last_checkpoint)
    reference = load_checkpoint(whole.run.last_checkpoint)
    for name, tensor in reference["model"].items():
        assert torch.equal(tensor, final["model"][name]), name
    assert _records_without_time(folder) == _records_without_time(whole.run)


def test_a_resumed_run_continues_every_augmentations_random_stream(tmp_path: Path) -> None:
    # Each augmentation draws from its own generator: the checkpoint holds their states, so
    # the batches after the resume are augmented as in an uninterrupted run, and the
    # weights end bit-identical (a restarted stream would repeat the first draws instead).
    augment = (
        "data.augment=[flip, {name: shift, max_shift: 1}, {name: crop, padding: 1}, "
        "{name: rotation, degrees: 10}, {name: noise, std: 0.1}, {name: mixup, alpha: 0.4}]"
    )
    overrides = [
        "data.dataset=digits", "data.batch_size=128", "data.preprocess=[{name: rescale, factor: 0.0625}]",
        augment, "model.name=mlp", "model.width=16", "model.depth=1", "model.norm=none",
        "model.dropout=0", "epochs=2", "schedule=null", "monitor=null", f"runs_dir={tmp_path}",
    ]  # fmt: skip
    whole = train(load_config(overrides=[*overrides, "name=whole"]), progress=False)
    assert whole.run is not None
    stopped = train(
        load_config(overrides=[*overrides, "name=split"]), progress=False, callbacks=[StopAt(15)]
    )
    assert stopped.run is not None
    assert load_checkpoint(stopped.run.last_checkpoint)["position"]["epoch"] == 1  # mid-epoch 2
    resumed = resume(stopped.run.path, progress=False)
    assert resumed.status == "completed"
    final = load_checkpoint(stopped.run.last_checkpoint)["model"]
    for name, tensor in load_checkpoint(whole.run.last_checkpoint)["model"].items():
        assert torch.equal(tensor, final[name]), name
    assert _records_without_time(stopped.run) == _records_without_time(whole.run)


def _split_run(config: RunConfig, name: str, callback: Callback) -> tuple[RunFolder, Trainer]:
    """A run folder and a trainer for ``config`` with ``callback`` added."""
    from gradwise.config import config_to_dict
    from gradwise.runs import write_config

    config = replace(config, name=name)
    folder = RunFolder.create(config.runs_dir, name)
    write_config(folder, config_to_dict(config))
    trainer = make_trainer(prepare_run(config), folder, progress=False)
    trainer.callbacks.append(callback)
    return folder, trainer


def test_a_stop_on_the_last_step_resumes_into_the_last_epoch_end(small_config: RunConfig) -> None:
    whole = train(replace(small_config, name="whole"), progress=False)
    assert whole.run is not None
    folder, trainer = _split_run(small_config, "split", StopAt(step=56))  # 4 epochs x 14
    assert trainer.fit().status == "stopped"
    assert load_checkpoint(folder.last_checkpoint)["position"] == {
        "epoch": 3, "batch": 14, "step": 56,
    }  # fmt: skip
    config = replace(small_config, name="split")
    resumed = make_trainer(prepare_run(config), folder, progress=False).fit(resume=True)
    assert resumed.status == "completed"
    assert resumed.epochs == 4
    assert _records_without_time(folder) == _records_without_time(whole.run)
    assert folder.best_checkpoint.is_file()


def test_resuming_a_finished_run_is_refused_and_changes_nothing(small_config: RunConfig) -> None:
    done = train(replace(small_config, name="done"), progress=False)
    assert done.run is not None
    before = {p.name: p.read_bytes() for p in done.run.path.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=r"has completed: there is nothing to resume"):
        resume(done.run.path, progress=False)
    after = {p.name: p.read_bytes() for p in done.run.path.iterdir() if p.is_file()}
    assert after == before


def test_a_run_killed_after_its_test_record_resumes_without_a_second_one(
    small_config: RunConfig,
) -> None:
    # The test split is evaluated after the last checkpoint, at its step: a kill between
    # that record and the final summary leaves a "running" run whose resume evaluates the
    # test split again. Its first test record must go, as records after the checkpoint do.
    whole = train(replace(small_config, name="whole"), progress=False)
    assert whole.run is not None
    killed = train(replace(small_config, name="killed"), progress=False)
    assert killed.run is not None
    summary = read_summary(killed.run)
    write_summary(killed.run, {**summary, "status": "running"})
    assert [r["kind"] for r in read_records(killed.run)].count("test") == 1
    resumed = resume(killed.run.path, progress=False)
    assert resumed.summary["status"] == "completed"
    assert [r["kind"] for r in read_records(killed.run)].count("test") == 1
    assert _records_without_time(killed.run) == _records_without_time(whole.run)


@pytest.mark.parametrize("loss", ["cross_entropy", "hinge"])
def test_a_classification_loss_on_regression_targets_is_refused_before_training(
    small_config: RunConfig, loss: str
) -> None:
    # Cross-entropy over one output is 0 whatever the weights: the run "completed" with a
    # perfect loss and learned nothing (hinge crashed in gather).
    data = replace(small_config.data, dataset="sine", preprocess=[])
    config = replace(small_config, data=data, loss=loss, name="regression")
    with pytest.raises(ConfigError, match=r"classification loss, but the dataset's targets"):
        prepare_run(config)
    assert prepare_run(replace(config, loss="mse")).data.task == "regression"


def test_an_accuracy_monitor_with_mode_max_on_regression_targets_is_refused(
    small_config: RunConfig,
) -> None:
    # Regression data turns a monitored accuracy into the loss; with mode max (a search's
    # direction for an accuracy metric) best.pt was the epoch of the highest loss.
    data = replace(small_config.data, dataset="sine", preprocess=[])
    config = replace(small_config, data=data, loss="mse", name="regression")
    for mode in ("max", "min", "auto"):
        checkpoint = replace(config.checkpoint, monitor="val_accuracy", mode=mode)
        if mode == "max":
            with pytest.raises(ConfigError, match=r"replaces with 'val_loss', but .*mode' is max"):
                prepare_run(replace(config, checkpoint=checkpoint))
        else:
            assert prepare_run(replace(config, checkpoint=checkpoint)).data.task == "regression"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"checkpoint.monitor": "val_acc"}, r"'train.checkpoint.monitor' is 'val_acc'"),
        (
            {"regularization.early_stopping": {"monitor": "val_acc"}},
            r"early_stopping.monitor' is 'val_acc', which this run does not record; it "
            r"records 'train_loss', 'train_accuracy', 'val_loss', 'val_accuracy'$",
        ),
        (
            {"regularization.early_stopping": {}, "data.validation_split": 0},
            r"early_stopping.monitor' is 'val_loss'.*\(no validation split\)$",
        ),
    ],
)
def test_a_monitored_metric_the_run_does_not_record_is_refused_before_anything_runs(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    settings = [*SMALL_RUN, f"runs_dir={tmp_path}", "name=monitored"]
    settings += [f"{key}={value}" for key, value in overrides.items()]
    with pytest.raises(ConfigError, match=message):
        train(load_config(overrides=settings), progress=False)
    assert not (tmp_path / "monitored").exists()


def test_the_default_checkpoint_monitor_follows_the_data(tmp_path: Path) -> None:
    # No validation split: val_accuracy is read as train_accuracy, and best.pt is written.
    settings = [*SMALL_RUN, f"runs_dir={tmp_path}", "data.validation_split=0", "epochs=1"]
    result = train(load_config(overrides=settings), progress=False)
    assert result.run is not None
    assert result.best["monitor"] == "train_accuracy"
    assert result.run.best_checkpoint.is_file()


class _CrashAtEpochEnd(Callback):
    """Raise after the second epoch's record is written, before its checkpoint."""

    def __init__(self) -> None:
        self.calls = 0

    def on_epoch_end(self, state: TrainState) -> None:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("crash at the end of the second epoch, for the test")


def test_a_crash_at_an_epoch_end_with_step_checkpoints_resumes_without_duplicates(
    small_config: RunConfig,
) -> None:
    # checkpoint.every_steps = 14 lands on every epoch's last step: that checkpoint, taken
    # before the epoch's record, used to resume into the same epoch end a second time.
    config = replace(small_config, checkpoint=replace(small_config.checkpoint, every_steps=14))
    whole = train(replace(config, name="whole"), progress=False)
    assert whole.run is not None
    folder, trainer = _split_run(config, "split", _CrashAtEpochEnd())
    with pytest.raises(RuntimeError, match="crash at the end"):
        trainer.fit()
    resumed = make_trainer(prepare_run(replace(config, name="split")), folder, progress=False).fit(
        resume=True
    )
    assert resumed.status == "completed"
    assert _records_without_time(folder) == _records_without_time(whole.run)


def _stopped_run(config: RunConfig, name: str) -> tuple[RunFolder, RunConfig]:
    """A one-epoch run stopped at step 10 of 14 (step records at 3, 6, 9), and its config."""
    config = replace(config, epochs=1, name=name)
    folder, trainer = _split_run(config, name, StopAt(step=10))
    assert trainer.fit().status == "stopped"
    return folder, config


def _resume(folder: RunFolder, config: RunConfig) -> FitResult:
    """What ``gradwise train --resume`` runs, without the report (slow, and not tested here)."""
    return make_trainer(prepare_run(config), folder, progress=False).fit(resume=True)


@pytest.mark.parametrize(
    "tail",
    [b'{"kind": "step", "step": 12, "lo', b'{"kind": "step", "step": 12, "lo\n', b"\0" * 64],
    ids=["cut-mid-line", "cut-then-newline", "zero-bytes"],
)
def test_a_damaged_last_metrics_line_is_dropped_with_a_warning_and_the_run_resumes(
    small_config: RunConfig, tail: bytes
) -> None:
    # What a crash in the middle of a write (or a power loss) leaves at the end of the log.
    folder, config = _stopped_run(small_config, "split")
    with open(folder.metrics_path, "ab") as file:
        file.write(tail)
    with pytest.warns(UserWarning, match=r"metrics\.jsonl ended with a damaged line"):
        resumed = _resume(folder, config)
    assert resumed.status == "completed"
    steps = [r["step"] for r in read_records(folder) if r["kind"] == "step"]
    assert steps == [3, 6, 9, 12, 14]  # every 3rd step and the last: none lost or twice


def test_a_damaged_metrics_line_before_the_last_stops_the_resume_naming_the_line(
    small_config: RunConfig,
) -> None:
    folder, config = _stopped_run(small_config, "split")
    lines = folder.metrics_path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    lines[0] = b'{"kind": "step", "st\n'  # edited or damaged by hand
    folder.metrics_path.write_bytes(b"".join(lines))
    before = {p.name: p.read_bytes() for p in folder.path.iterdir() if p.is_file()}
    open_files = _open_metrics_descriptors(folder)
    with pytest.raises(RunFolderError) as raised:
        _resume(folder, config)
    assert _open_metrics_descriptors(folder) == open_files  # the log was closed again
    message = str(raised.value)
    assert message.startswith(f"Line 1 of {folder.metrics_path} is not a JSON object")
    assert "delete or repair that line" in message
    assert "\n" not in message  # the CLI prints it as one line
    after = {p.name: p.read_bytes() for p in folder.path.iterdir() if p.is_file()}
    assert after == before  # metrics and summary as they were


def test_a_damaged_metrics_line_after_the_checkpoint_step_is_dropped_and_the_run_resumes(
    small_config: RunConfig,
) -> None:
    # Killed at step 13 after its checkpoint at step 10, with a line damaged since: the
    # resume drops the records after step 10 anyway, and the damaged line with them.
    folder, config = _stopped_run(small_config, "split")
    with open(folder.metrics_path, "ab") as file:
        file.write(b'{"kind": "step", "step": 12, "loss": 1.0}\n{"kind": "step", "st\n')
        file.write(b'{"kind": "step", "step": 13, "loss": 1.0}\n')
    with pytest.warns(UserWarning, match=r"metrics\.jsonl has damaged lines \(5\)"):
        resumed = _resume(folder, config)
    assert resumed.status == "completed"
    steps = [r["step"] for r in read_records(folder) if r["kind"] == "step"]
    assert steps == [3, 6, 9, 12, 14]


def test_a_damaged_metrics_line_between_the_checkpoint_step_and_the_next_record_stops_it(
    small_config: RunConfig,
) -> None:
    # Between step 9 and step 12 the damaged line may be a record up to the checkpoint's
    # step 10, which only the user can restore.
    folder, config = _stopped_run(small_config, "split")
    with open(folder.metrics_path, "ab") as file:
        file.write(b'{"kind": "step", "st\n{"kind": "step", "step": 12, "loss": 1.0}\n')
    with pytest.raises(RunFolderError, match=r"^Line 4 of .*metrics\.jsonl is not a JSON object"):
        _resume(folder, config)


def test_a_resume_removes_what_writes_killed_mid_way_left_in_the_run_folder(
    small_config: RunConfig,
) -> None:
    folder, config = _stopped_run(small_config, "split")
    size = folder.last_checkpoint.stat().st_size
    checkpoint_left = kill_mid_write(folder.last_checkpoint, size=size // 2)
    summary_left = kill_mid_write(folder.summary_path)
    report_left = kill_mid_write(folder.report_path)  # 'gradwise report' may be writing it
    assert _resume(folder, config).status == "completed"
    assert not checkpoint_left.exists()
    assert not summary_left.exists()
    assert report_left.exists()
    assert sorted(p.name for p in folder.checkpoint_dir.iterdir()) == ["best.pt", "last.pt"]


def _open_metrics_descriptors(folder: RunFolder) -> int:
    """How many of this process's file descriptors are open on ``folder``'s metrics.jsonl."""
    target = str(folder.metrics_path.resolve())
    return sum(os.path.realpath(fd) == target for fd in glob.glob("/proc/self/fd/*"))


def test_a_resumed_run_keeps_its_start_time_and_its_place_in_the_listing(
    small_config: RunConfig,
) -> None:
    old, config = _stopped_run(small_config, "old")
    started = read_summary(old)["started"]
    newer = RunFolder.create(small_config.runs_dir, "newer")
    newer_config = replace(config, name="newer")
    assert (
        make_trainer(prepare_run(newer_config), newer, progress=False).fit().status == "completed"
    )
    assert _resume(old, config).status == "completed"
    summary = read_summary(old)
    assert summary["started"] == started
    assert len(summary["resumed"]) == 1
    assert summary["resumed"][0] > read_summary(newer)["started"] > started
    assert [info.name for info in list_runs(small_config.runs_dir)] == ["old", "newer"]


def _spirals_trainer(loss: object, **kwargs: object) -> Trainer:
    torch.manual_seed(0)
    data = load_dataset("spirals", seed=0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    options = {"batch_size": 16, "progress": False, **kwargs}
    return Trainer(model, optimizer, data, loss=loss, **options)  # type: ignore[arg-type]


def test_a_nan_loss_stops_the_run_naming_the_step_and_last_finite_loss(tmp_path: Path) -> None:
    calls = {"n": 0}

    def poisoned(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        calls["n"] += torch.is_grad_enabled()  # count training steps, not evaluations
        loss = F.cross_entropy(outputs, targets)
        return loss * math.nan if calls["n"] > 20 else loss

    run = RunFolder.create(tmp_path, "nan")
    trainer = _spirals_trainer(poisoned, epochs=5, run=run)
    weights_before_nan: dict[str, torch.Tensor] = {}

    class Snapshot(Callback):
        def on_step_end(self, state: TrainState) -> None:
            weights_before_nan.update({k: v.clone() for k, v in state.model.state_dict().items()})

    trainer.callbacks.append(Snapshot())
    # The 21st step's loss, numbered as the records number steps (steps done, it included).
    expected = r"loss became nan at step 21 .*last finite loss was [0-9.]+ at step 20"
    with pytest.raises(TrainingDiverged, match=expected):
        trainer.fit()
    # The NaN step's update was never applied, and the epoch-end checkpoint stays valid.
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, weights_before_nan[name])
        assert torch.isfinite(tensor).all()
    checkpoint = load_checkpoint(run.last_checkpoint)
    assert checkpoint["position"]["step"] == 14  # the end of epoch 0
    assert read_summary(run)["status"] == "diverged"
    assert "step 21" in read_summary(run)["message"]
    assert f"the last good checkpoint is {run.last_checkpoint}" in read_summary(run)["message"]


def test_a_nan_before_the_first_checkpoint_names_none(tmp_path: Path) -> None:
    calls = {"n": 0}

    def poisoned(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        calls["n"] += torch.is_grad_enabled()
        loss = F.cross_entropy(outputs, targets)
        return loss * math.nan if calls["n"] > 3 else loss

    run = RunFolder.create(tmp_path, "nan")
    # It named runs/.../last.pt, which did not exist.
    expected = r"at step 4 \(epoch 1\).*; no checkpoint was written before it\."
    with pytest.raises(TrainingDiverged, match=expected):
        _spirals_trainer(poisoned, epochs=5, run=run).fit()
    assert not run.last_checkpoint.exists()


def test_trainer_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="'batch_size' parameter of Trainer must be an int >= 1"):
        _spirals_trainer("cross_entropy", epochs=1, batch_size=0)
    with pytest.raises(ValueError, match="needs 'epochs' or 'steps'"):
        _spirals_trainer("cross_entropy")


class _ClipFirst(torch.optim.SGD):
    """The oracle: torch's clip_grad_norm_ over every parameter, then SGD's own step."""

    max_norm = 0.05

    def step(self, closure: object = None) -> None:  # type: ignore[override]
        params = [p for group in self.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        super().step()


def _two_group_run(optimizer_class: type[torch.optim.SGD], **kwargs: object) -> list[torch.Tensor]:
    torch.manual_seed(0)
    data = load_dataset("spirals", seed=0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    groups = [
        {"params": model[0].parameters()},
        {"params": model[2].parameters(), "lr": 0.02},
    ]
    optimizer = optimizer_class(groups, lr=0.1)
    Trainer(model, optimizer, data, batch_size=16, epochs=2, progress=False, **kwargs).fit()  # type: ignore[arg-type]
    return [p.detach().clone() for p in model.parameters()]


def test_clip_grad_norm_clips_the_norm_over_every_param_group_before_the_step() -> None:
    clipped = _two_group_run(torch.optim.SGD, clip_grad_norm=_ClipFirst.max_norm)
    oracle = _two_group_run(_ClipFirst)
    unclipped = _two_group_run(torch.optim.SGD)
    assert all(torch.equal(a, b) for a, b in zip(clipped, oracle, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(clipped, unclipped, strict=True))
    for bad in (0.0, math.inf):  # None, not inf, turns clipping off
        with pytest.raises(
            ValueError,
            match=rf"^The 'clip_grad_norm' parameter of Trainer must be a finite float > 0 or "
            rf"None\. Got {bad} instead\.$",
        ):
            _spirals_trainer("cross_entropy", epochs=1, clip_grad_norm=bad)


def test_clipping_leaves_a_nan_gradient_where_it_started() -> None:
    # torch's clip_grad_norm_ turns every gradient into NaN when one is NaN (the total is
    # NaN): the monitor and the divergence message would then blame the wrong layer.
    torch.manual_seed(0)
    data = load_dataset("spirals", seed=0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    poisoned = {"on": False}
    model[2].bias.register_hook(lambda grad: grad * math.nan if poisoned["on"] else grad)
    seen: dict[str, bool] = {}

    class PoisonStepThree(Callback):
        def on_step_end(self, state: TrainState) -> None:
            poisoned["on"] = state.step == 2  # the next step's backward
            if state.step == 3:
                seen.update(
                    (name, bool(torch.isfinite(p.grad).all()))
                    for name, p in model.named_parameters()
                )

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(
        model, optimizer, data, batch_size=16, steps=3, progress=False,
        clip_grad_norm=0.05, callbacks=[PoisonStepThree()],
    )  # fmt: skip
    trainer.fit()
    assert seen == {"0.weight": True, "0.bias": True, "2.weight": True, "2.bias": False}


def test_clip_grad_norm_in_the_config_reaches_the_trainer(small_config: RunConfig) -> None:
    config = replace(small_config, clip_grad_norm=0.5)
    assert make_trainer(prepare_run(config), None, progress=False).clip_grad_norm == 0.5
    with pytest.raises(ConfigError, match="clip_grad_norm"):
        load_config(overrides=["clip_grad_norm=-1"])


def test_an_optimizer_with_a_fixed_transform_trains_and_records_no_lr(tmp_path: Path) -> None:
    # Its param groups hold no "lr" (the rate is inside the transform): the run trains,
    # the same as with a factory at that rate, and its records carry no rate.
    def run(fixed: bool, name: str) -> tuple[list[torch.Tensor], RunFolder]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
        if fixed:
            transform = optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(1e-2))
            optimizer = optim.Optimizer(model.parameters(), transform)
        else:
            optimizer = optim.Optimizer(
                model.parameters(),
                lambda lr: optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(lr)),
                lr=1e-2,
            )
        folder = RunFolder.create(tmp_path, name)
        data = load_dataset("spirals", seed=0)
        Trainer(model, optimizer, data, epochs=2, batch_size=16, progress=False, run=folder).fit()
        return [p.detach().clone() for p in model.parameters()], folder

    fixed, folder = run(True, "fixed")
    factory, _ = run(False, "factory")
    assert all(torch.equal(a, b) for a, b in zip(fixed, factory, strict=True))
    records = read_records(folder)
    assert {r["lr"] for r in records if r["kind"] == "step"} == {None}
    assert all("lr" not in r for r in records if r["kind"] == "epoch")


def test_an_optimizer_whose_lr_is_a_gradwise_schedule_resumes_bit_identically(
    tmp_path: Path,
) -> None:
    # The schedule object sits in the optimizer's param groups, so the checkpoint holds it:
    # the weights-only reader must take gradwise's schedules as data.
    from gradwise.schedules import cosine_decay, linear_warmup

    def fit(run: RunFolder, *, stop: int | None, resume: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        schedule = linear_warmup(cosine_decay(1e-2, num_steps=40), num_steps=5)
        optimizer = optim.Adam(model.parameters(), lr=schedule)
        callbacks = [StopAt(stop)] if stop is not None else []
        data = load_dataset("spirals", seed=0)
        trainer = Trainer(
            model, optimizer, data, epochs=3, batch_size=16, progress=False, run=run,
            callbacks=callbacks,
        )  # fmt: skip
        trainer.fit(resume=resume)
        return [p.detach().clone() for p in model.parameters()]

    uninterrupted = fit(RunFolder.create(tmp_path, "whole"), stop=None, resume=False)
    run = RunFolder.create(tmp_path, "stopped")
    fit(run, stop=7, resume=False)
    resumed = fit(run, stop=None, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(resumed, uninterrupted, strict=True))


def test_the_lr_of_a_schedule_inside_a_gradwise_optimizer_is_recorded(tmp_path: Path) -> None:
    # The group's lr is the schedule object (no torch scheduler): step k used
    # schedule(k - 1), the records, the hooks and the epoch records show it.
    from gradwise.schedules import step_decay

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    schedule = step_decay(0.1, step_size=3, gamma=0.5)
    optimizer = optim.SGD(model.parameters(), lr=schedule)
    seen: list[float | None] = []

    class Seen(Callback):
        def on_step_end(self, state: TrainState) -> None:
            seen.append(state.lr)

    folder = RunFolder.create(tmp_path, "lrs")
    data = load_dataset("spirals", seed=0)
    Trainer(
        model, optimizer, data, steps=8, batch_size=16, log_every=1, progress=False,
        run=folder, callbacks=[Seen()],
    ).fit()  # fmt: skip
    expected = [schedule(k - 1) for k in range(1, 9)]
    records = read_records(folder)
    assert [r["lr"] for r in records if r["kind"] == "step"] == pytest.approx(expected)
    assert seen == pytest.approx(expected)
    assert [r["lr"] for r in records if r["kind"] == "epoch"][-1] == pytest.approx(expected[-1])


def test_steps_budget_ends_mid_epoch_with_a_final_evaluation() -> None:
    result = _spirals_trainer("cross_entropy", steps=20).fit()
    assert result.steps == 20
    assert result.epochs == 2
    assert "val_accuracy" in result.metrics
    assert "test_accuracy" in result.test


def test_hinge_and_mse_losses_train(small_config: RunConfig) -> None:
    for loss in ("hinge", "mse"):
        result = train(replace(small_config, loss=loss, name=loss, epochs=20), progress=False)
        assert result.test["test_accuracy"] > 0.55, loss  # chance is 1/3


def test_callback_hooks_see_the_typed_state() -> None:
    events: list[tuple[str, int, int]] = []

    class Recorder(Callback):
        def on_fit_start(self, state: TrainState) -> None:
            events.append(("start", state.epoch, state.step))

        def on_epoch_end(self, state: TrainState) -> None:
            assert "val_loss" in state.metrics
            events.append(("epoch", state.epoch, state.step))

        def on_fit_end(self, state: TrainState) -> None:
            events.append(("end", state.epoch, state.step))

    _spirals_trainer("cross_entropy", epochs=2, callbacks=[Recorder()]).fit()
    assert events == [("start", 0, 0), ("epoch", 0, 14), ("epoch", 1, 28), ("end", 1, 28)]


def test_early_stopping_from_the_config_stops_and_records_it(tmp_path: Path) -> None:
    config = load_config(
        overrides=[
            *SMALL_RUN,
            f"runs_dir={tmp_path}",
            "epochs=200",
            "optimizer.lr=0.05",
            "regularization.early_stopping={monitor: val_loss, patience: 2, min_delta: 0.5}",
        ]
    )
    result = train(config, progress=False)
    assert result.status == "early_stopped"
    assert result.epochs < 200


def test_checkpoints_load_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "step": 3})
    assert load_checkpoint(path)["step"] == 3

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("this would run on load",))

    buffer = io.BytesIO()
    torch.save({"format": 1, "payload": Evil()}, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)


ENTRY_POINT_MODULE = """
import torch
from gradwise.data import Dataset

def build():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(200, 3, generator=generator)
    targets = (inputs.sum(dim=1) > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    return {"model": model, "data": (Dataset(inputs[:160], targets[:160]), Dataset(inputs[160:], targets[160:]))}
"""


def test_a_user_entry_point_supplies_model_and_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "user_task_for_gradwise.py").write_text(ENTRY_POINT_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = load_config(
        overrides=[
            "data.dataset=user_task_for_gradwise:build",
            "model.name=user_task_for_gradwise:build",
            "init.weights=none",
            "epochs=30",
            "data.batch_size=32",
            "optimizer.lr=0.01",
            f"runs_dir={tmp_path / 'runs'}",
        ]
    )
    result = train(config, progress=False)
    assert result.status == "completed"
    assert result.test["test_accuracy"] > 0.85


TOKEN_ENTRY_POINT_MODULE = """
import torch
from gradwise.data import Dataset

class Bag(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.EmbeddingBag(10, 8)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, ids):
        return self.head(self.embed(ids))

def build():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 10, (200, 6), generator=generator)
    targets = ((ids < 5).sum(dim=1) > 3).long()
    return {"model": Bag(), "data": (Dataset(ids[:160], targets[:160]), Dataset(ids[160:], targets[160:]))}
"""


def test_token_ids_reach_an_entry_point_model_as_integers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "user_tokens_for_gradwise.py").write_text(TOKEN_ENTRY_POINT_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = "user_tokens_for_gradwise:build"
    overrides = [
        f"data.dataset={spec}", f"model.name={spec}", "data.preprocess=[]",
        "init.weights=none", "epochs=2", "data.batch_size=32", f"runs_dir={tmp_path / 'runs'}",
    ]  # fmt: skip
    assert train(load_config(overrides=overrides), progress=False).status == "completed"
    # Noise (or a shift, a flip, mixup) would make floats of the ids.
    with pytest.raises(ConfigError, match=r"'train.data.augment' changes input values") as error:
        prepare_run(load_config(overrides=[*overrides, "data.augment=[noise]"]))
    assert error.value.key == ("data", "augment")


def test_integer_inputs_feed_a_built_in_model_as_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An entry point's int64 tensor stays int64 in its Dataset (ids); a built-in model's
    # first layer takes floats, so the run reads them as features (without preprocessing
    # to do so, it failed with "mat1 and mat2 must have the same dtype").
    (tmp_path / "user_tokens_for_gradwise.py").write_text(TOKEN_ENTRY_POINT_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = load_config(
        overrides=[
            "data.dataset=user_tokens_for_gradwise:build", "data.preprocess=[]",
            "model.name=mlp", "epochs=1", f"runs_dir={tmp_path / 'runs'}",
        ]
    )  # fmt: skip
    assert train(config, progress=False).status == "completed"
    # An integer NumPy file is features from the start.
    features = np.random.default_rng(0).integers(0, 10, size=(300, 5))
    np.savez(tmp_path / "counts.npz", x=features, y=(features.sum(axis=1) > 22).astype(np.int64))
    config = load_config(
        overrides=[
            f"data.dataset={tmp_path / 'counts.npz'}", "data.preprocess=[]", "model.name=mlp",
            "epochs=1", f"runs_dir={tmp_path / 'runs'}",
        ]
    )  # fmt: skip
    assert train(config, progress=False).status == "completed"


def test_step_records_and_hooks_show_the_lr_each_step_used(tmp_path: Path) -> None:
    # A scheduler sets the next step's lr right after a step; the lr recorded for step k
    # (and the hooks' state.lr) is the one step k used: schedule(k - 1), ScheduleLR
    # counting from 0.
    from gradwise.schedules import ScheduleLR, step_decay

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = step_decay(0.1, step_size=3, gamma=0.5)
    seen: list[float | None] = []

    class Seen(Callback):
        def on_step_end(self, state: TrainState) -> None:
            seen.append(state.lr)

    folder = RunFolder.create(tmp_path, "lrs")
    Trainer(
        model, optimizer, load_dataset("spirals", seed=0), steps=8, batch_size=16,
        scheduler=ScheduleLR(optimizer, schedule), log_every=1, progress=False, run=folder,
        callbacks=[Seen()],
    ).fit()  # fmt: skip
    expected = [schedule(k - 1) for k in range(1, 9)]
    records = read_records(folder)
    assert [r["lr"] for r in records if r["kind"] == "step"] == pytest.approx(expected)
    assert seen == pytest.approx(expected)


def test_the_summary_follows_each_checkpoint(tmp_path: Path) -> None:
    # Written at the start and at the end only, the summary of a run killed in between
    # (SIGKILL) said 0 steps and 0 epochs beside metrics of several epochs.
    class ReadSummary(Callback):
        def __init__(self) -> None:
            self.seen: list[tuple[int, int, str]] = []

        def on_step_end(self, state: TrainState) -> None:
            summary = read_summary(folder)
            self.seen.append((summary["epochs"], summary["steps"], summary["status"]))

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    folder = RunFolder.create(tmp_path, "summary")
    reader = ReadSummary()
    data = load_dataset("spirals", seed=0)
    Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), data, epochs=3, batch_size=64,
        progress=False, run=folder, callbacks=[reader],
    ).fit()  # fmt: skip
    per_epoch = len(reader.seen) // 3
    assert reader.seen[0] == (0, 0, "running")
    assert reader.seen[per_epoch] == (1, per_epoch, "running")  # after epoch 1's checkpoint
    assert reader.seen[2 * per_epoch] == (2, 2 * per_epoch, "running")
    assert read_summary(folder)["status"] == "completed"


def test_the_progress_bar_counts_the_steps_done_when_stopped_and_after_a_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Stopped at step 23 (records every 10 steps), the bar showed 20; resumed, each move
    # counted the steps since the record before the checkpoint again, and the bar ran past
    # its total (spirals: 14 steps an epoch, 3 epochs).
    run = RunFolder.create(tmp_path, "bar")

    def shown() -> list[tuple[int, int]]:
        text = capsys.readouterr().err
        return [(int(done), int(total)) for done, total in re.findall(r"(\d+)/(\d+) \[", text)]

    stopped = _spirals_trainer(
        F.cross_entropy, epochs=3, run=run, log_every=10, progress=True, callbacks=[StopAt(23)]
    )
    assert stopped.fit().status == "stopped"
    assert shown()[-1] == (23, 42)
    resumed = _spirals_trainer(F.cross_entropy, epochs=3, run=run, log_every=10, progress=True)
    assert resumed.fit(resume=True).status == "completed"
    bars = shown()
    assert bars[0] == (23, 42)
    assert [done for done, _ in bars] == sorted(done for done, _ in bars)
    assert bars[-1] == (42, 42)


@pytest.mark.parametrize("restore", [True, False])
def test_an_early_stop_says_when_and_whose_weights_the_model_has(
    tmp_path: Path, restore: bool
) -> None:
    # The summary said early_stopped and nothing else: not when, nor that the test split
    # was evaluated on an earlier epoch's weights.
    from gradwise.regularize import EarlyStopping

    run = RunFolder.create(tmp_path, "early")
    # A min_delta no epoch can beat: epoch 1 is the best, epoch 2 stops.
    stopper = EarlyStopping("val_loss", patience=0, min_delta=100.0, restore_best_weights=restore)
    trainer = _spirals_trainer(F.cross_entropy, epochs=5, run=run, early_stopping=stopper)
    assert trainer.fit().status == "early_stopped"
    message = read_summary(run)["message"]
    assert message.startswith(
        "early stopping after epoch 2: val_loss did not improve by more than 100 on epoch 1's"
    )
    weights = "epoch 1's weights" if restore else "epoch 2's weights (the best were epoch 1's"
    assert weights in message
