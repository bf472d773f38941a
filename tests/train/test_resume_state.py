"""What a resume restores beyond the weights, what it refuses, and a stop's recorded reason."""

from __future__ import annotations

import os
import random
import re
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradwise import Trainer, optim
from gradwise.averaging import PolyakAverage
from gradwise.data import load_dataset
from gradwise.regularize import EarlyStopping, Mixup
from gradwise.runs import RunFolder, RunFolderError, read_records, read_summary
from gradwise.train import (
    Callback,
    TrainingDiverged,
    TrainState,
    load_checkpoint,
    save_checkpoint,
)
from tests.train.stop_at import StopAt
from tests.train.test_callback_state import Counter

DATA = load_dataset("spirals", seed=0)  # 216 training samples: 14 steps per epoch of 16


class GlobalNoise(nn.Module):
    """A user's layer drawing from the global generators of NumPy and Python's random."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        return x * (1.0 + 0.1 * float(np.random.standard_normal())) + 0.01 * random.random()


class CtrlC(Callback):
    """Sends this process a real SIGINT after step ``step``, as a Ctrl-C would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, state: TrainState) -> None:
        if state.step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def _model(width: int = 16) -> nn.Sequential:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    return nn.Sequential(
        nn.Linear(2, width), nn.ReLU(), nn.Dropout(0.1), GlobalNoise(), nn.Linear(width, 3)
    )


def _trainer(run: RunFolder, model: nn.Module | None = None, **options: Any) -> Trainer:
    model = _model() if model is None else model
    settings: dict[str, Any] = {
        "epochs": 3, "batch_size": 16, "log_every": 5, "progress": False, "run": run,
        "mixup": Mixup(0.2, num_classes=3, seed=1), **options,
    }  # fmt: skip
    return Trainer(model, optim.Adam(model.parameters(), lr=1e-2), DATA, **settings)


def _weights(run: RunFolder) -> dict[str, Tensor]:
    return load_checkpoint(run.last_checkpoint)["model"]


def _without_time(run: RunFolder) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "time"} for r in read_records(run)]


def test_a_run_interrupted_by_ctrl_c_resumes_numpy_and_python_random_bit_identically(
    tmp_path: Path,
) -> None:
    whole = RunFolder.create(tmp_path, "whole")
    assert _trainer(whole).fit().status == "completed"

    split = RunFolder.create(tmp_path, "split")
    assert _trainer(split, callbacks=[CtrlC(20)]).fit().status == "interrupted"  # mid-epoch 2
    assert read_summary(split)["status"] == "interrupted"
    assert load_checkpoint(split.last_checkpoint)["position"]["step"] == 20
    model = _model()
    np.random.seed(123)  # a new process: the global generators are anywhere
    random.seed(123)
    assert _trainer(split, model).fit(resume=True).status == "completed"

    reference, resumed = _weights(whole), _weights(split)
    for name, tensor in reference.items():
        assert torch.equal(tensor, resumed[name]), name
    assert _without_time(split) == _without_time(whole)


def test_a_stop_request_records_its_reason_as_the_summarys_message(tmp_path: Path) -> None:
    class Stop(Callback):
        def on_epoch_end(self, state: TrainState) -> None:
            state.request_stop(f"enough after epoch {state.epoch}")

    run = RunFolder.create(tmp_path, "epoch-end")
    result = _trainer(run, callbacks=[Stop()]).fit()
    assert result.status == "stopped"
    assert read_summary(run)["message"] == result.summary["message"] == "enough after epoch 0"

    run = RunFolder.create(tmp_path, "mid-epoch")
    assert _trainer(run, callbacks=[StopAt(5)]).fit().status == "stopped"
    assert read_summary(run)["message"] == "stopped at step 5 for the test"
    assert _trainer(run, model=_model()).fit(resume=True).status == "completed"
    assert read_summary(run)["message"] is None


def _stopped(tmp_path: Path, **options: Any) -> RunFolder:
    run = RunFolder.create(tmp_path, "stopped")
    assert _trainer(run, callbacks=[StopAt(20)], **options).fit().status == "stopped"
    return run


def _decaying_schedule(optimizer: torch.optim.Optimizer) -> Any:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))


def test_a_resume_without_the_early_stopping_the_run_had_is_refused(tmp_path: Path) -> None:
    run = _stopped(tmp_path, early_stopping=EarlyStopping(patience=1))
    saved = load_checkpoint(run.last_checkpoint)
    model = _model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(RunFolderError, match="holds the state of early stopping, but this"):
        _trainer(run, model).fit(resume=True)
    # Refused before anything was loaded or written.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert read_summary(run)["status"] == "stopped"
    kept = load_checkpoint(run.last_checkpoint)["model"]
    assert all(torch.equal(tensor, kept[name]) for name, tensor in saved["model"].items())
    # A run that started without early stopping may resume with a fresh one (documented).
    other = RunFolder.create(tmp_path, "other")
    assert _trainer(other, callbacks=[StopAt(20)]).fit().status == "stopped"
    stopping = EarlyStopping(patience=5)
    assert _trainer(other, early_stopping=stopping).fit(resume=True).status == "completed"


@pytest.mark.parametrize("saved_with_scheduler", [True, False])
def test_a_resume_with_another_scheduler_setup_is_refused(
    tmp_path: Path, saved_with_scheduler: bool
) -> None:
    def scheduled(run: RunFolder, with_scheduler: bool, **options: Any) -> Trainer:
        model = _model()
        optimizer = optim.Adam(model.parameters(), lr=1e-2)
        scheduler = _decaying_schedule(optimizer) if with_scheduler else None
        return Trainer(
            model, optimizer, DATA, epochs=3, batch_size=16, progress=False, run=run,
            scheduler=scheduler, **options,
        )  # fmt: skip

    run = RunFolder.create(tmp_path, "run")
    trainer = scheduled(run, saved_with_scheduler, callbacks=[StopAt(20)])
    assert trainer.fit().status == "stopped"
    expected = "a run with a scheduler, but" if saved_with_scheduler else "without a scheduler"
    with pytest.raises(RunFolderError, match=expected):
        scheduled(run, not saved_with_scheduler).fit(resume=True)
    assert scheduled(run, saved_with_scheduler).fit(resume=True).status == "completed"


def test_a_checkpoint_of_another_model_shape_is_refused_naming_the_entry(tmp_path: Path) -> None:
    run = _stopped(tmp_path)
    with pytest.raises(RunFolderError) as refused:
        _trainer(run, _model(width=8)).fit(resume=True)
    message = str(refused.value)
    assert str(run.last_checkpoint) in message
    assert "'0.weight' has shape (16, 2) there and (8, 2) in this model" in message
    assert "(2 more entries differ)" in message


def _nan_from_call(call: int) -> Callable[[Tensor, Tensor], Tensor]:
    """Cross-entropy that becomes NaN from its ``call``-th training call on (a loss blowing
    up), counting only calls with gradients (evaluation runs under no_grad)."""
    calls = 0

    def loss(outputs: Tensor, targets: Tensor) -> Tensor:
        nonlocal calls
        value = F.cross_entropy(outputs, targets)
        if torch.is_grad_enabled():
            calls += 1
            if calls >= call:
                return value * float("nan")
        return value

    return loss


class Losses(Callback):
    """The training loss each hook saw, by hook."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[int, float]]] = {"start": [], "step": []}

    def on_fit_start(self, state: TrainState) -> None:
        self.seen["start"].append((state.step, state.loss))

    def on_step_end(self, state: TrainState) -> None:
        self.seen["step"].append((state.step, state.loss))


def test_a_resume_keeps_the_last_finite_loss_for_hooks_and_a_divergence(tmp_path: Path) -> None:
    run = RunFolder.create(tmp_path, "run")
    before = Losses()
    assert _trainer(run, callbacks=[before, StopAt(20)]).fit().status == "stopped"
    step, last_loss = before.seen["step"][-1]
    assert step == 20

    after = Losses()
    with pytest.raises(TrainingDiverged) as diverged:
        _trainer(run, _model(), loss=_nan_from_call(1), callbacks=[after]).fit(resume=True)
    assert after.seen["start"] == [(20, last_loss)]  # TrainState.loss: the last step's
    # The checkpoint's step 20: its loss, numbered as the records number it.
    assert f"the last finite loss was {last_loss:.4g} at step 20" in str(diverged.value)


def _regression_trainer(run: RunFolder, **options: Any) -> Trainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
    data = load_dataset("sine", seed=0)
    return Trainer(
        model, optim.Adam(model.parameters(), lr=1e-2), data, loss="mse", epochs=2,
        batch_size=32, progress=False, run=run, **options,
    )  # fmt: skip


def test_the_default_monitor_follows_the_data_and_best_pt_is_written(tmp_path: Path) -> None:
    run = RunFolder.create(tmp_path, "regression")
    result = _regression_trainer(run).fit()  # no accuracy: val_loss picks the best
    assert result.best["monitor"] == "val_loss"
    assert result.best["mode"] == "min"
    assert result.best["value"] == min(
        r["val_loss"] for r in read_records(run) if r["kind"] == "epoch"
    )
    assert run.best_checkpoint.is_file()

    no_validation = replace(DATA, validation=None)
    model = _model()
    trainer = Trainer(model, optim.Adam(model.parameters()), no_validation, epochs=1)
    assert trainer.monitor == "train_accuracy"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"monitor": "val_acc"}, r"'monitor' parameter of Trainer .* Got 'val_acc' instead"),
        (  # regression targets: no accuracy to monitor
            {"monitor": "val_accuracy"},
            r"records at each epoch's end: 'train_loss', 'val_loss'\. Got 'val_accuracy'",
        ),
        (
            {"early_stopping": EarlyStopping(monitor="val_accuracy")},
            r"'monitor' parameter of the EarlyStopping given to Trainer .* Got 'val_accuracy'",
        ),
    ],
)
def test_a_monitor_the_run_does_not_record_is_refused_before_training(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    run = RunFolder.create(tmp_path, "refused")
    with pytest.raises(ValueError, match=message):
        _regression_trainer(run, **options)
    assert not run.last_checkpoint.exists()


class StopAtStart(Callback):
    """Requests a stop in on_fit_start; ``steps`` lists the steps it saw end."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_fit_start(self, state: TrainState) -> None:
        state.request_stop("not today")

    def on_step_end(self, state: TrainState) -> None:
        self.steps.append(state.step)


def test_a_stop_requested_in_on_fit_start_ends_the_run_before_its_first_step(
    tmp_path: Path,
) -> None:
    # Before, the request was never read: the run trained to its end as if none was made.
    whole = RunFolder.create(tmp_path, "whole")
    assert _trainer(whole).fit().status == "completed"

    run = RunFolder.create(tmp_path, "run")
    for resume in (False, True):  # a fresh run, then a resumed one
        model, stopper = _model(), StopAtStart()
        before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
        result = _trainer(run, model, callbacks=[stopper]).fit(resume=resume)
        assert (result.status, result.epochs, result.steps) == ("stopped", 0, 0)
        assert stopper.steps == []
        assert read_summary(run)["message"] == result.summary["message"] == "not today"
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert load_checkpoint(run.last_checkpoint)["position"] == {
            "epoch": 0, "batch": 0, "step": 0,
        }  # fmt: skip
    # The checkpoint of the stop resumes into the run an uninterrupted one is.
    assert _trainer(run, _model()).fit(resume=True).status == "completed"
    reference, resumed = _weights(whole), _weights(run)
    assert all(torch.equal(tensor, resumed[name]) for name, tensor in reference.items())
    assert _without_time(run) == _without_time(whole)


def test_a_resume_with_another_batch_size_is_refused_saying_which_to_use(
    tmp_path: Path,
) -> None:
    # Before, the batch size was not saved: the resumed run went on in another data order
    # with another number of steps per epoch, without a word.
    run = _stopped(tmp_path)
    assert load_checkpoint(run.last_checkpoint)["batch_size"] == 16
    message = (
        f"{run.last_checkpoint} was written by a run with batch_size 16, but this Trainer has "
        "batch_size 32: the data order and the steps per epoch would differ from the run's. "
        "Resume with batch_size=16 (data.batch_size in the run's config)."
    )
    with pytest.raises(RunFolderError, match=re.escape(message)):
        _trainer(run, batch_size=32).fit(resume=True)
    assert _trainer(run).fit(resume=True).status == "completed"


def test_a_checkpoint_written_before_checkpoints_kept_the_batch_size_still_resumes(
    tmp_path: Path,
) -> None:
    run = _stopped(tmp_path)
    contents = load_checkpoint(run.last_checkpoint)
    del contents["batch_size"]
    save_checkpoint(run.last_checkpoint, contents)
    assert _trainer(run).fit(resume=True).status == "completed"


class Filling(nn.Module):
    """An identity augmentation with a fill (as shift, crop and rotation have)."""

    def __init__(self) -> None:
        super().__init__()
        self.fill = 0.5

    def forward(self, x: Tensor) -> Tensor:
        return x


def _with_extra_layer() -> nn.Sequential:
    return nn.Sequential(*_model(), nn.Linear(3, 3))  # entries the checkpoint lacks


def _stepping_part_of_the_model(run: RunFolder) -> Trainer:
    model = _model()
    optimizer = optim.Adam(list(model.parameters())[:2], lr=1e-2)  # another param group
    return Trainer(model, optimizer, DATA, epochs=3, batch_size=16, progress=False, run=run)


REFUSED_RESUMES: dict[str, tuple[Callable[[RunFolder], Trainer], type[Exception], str]] = {
    "a stateful callback the run had not": (
        lambda run: _trainer(run, callbacks=[Counter()]),
        RunFolderError,
        "Counter has no saved state",
    ),
    "a weight average the run had not": (
        lambda run: _trainer(run, averaging=PolyakAverage(_model())),
        ValueError,
        "holds no weight average",
    ),
    "augmentations with other fills": (
        lambda run: _trainer(run, augment=Filling()),
        RunFolderError,
        "holds the fills of 0 augmentation",
    ),
    "another batch size": (
        lambda run: _trainer(run, batch_size=32),
        RunFolderError,
        "batch_size 16, but this Trainer has batch_size 32",
    ),
    "model entries the checkpoint lacks": (
        lambda run: _trainer(run, _with_extra_layer()),
        RuntimeError,
        r"Missing key\(s\)",
    ),
    "another optimizer": (
        _stepping_part_of_the_model,
        ValueError,
        "parameter group",
    ),
}


def test_a_resume_without_the_weight_average_the_run_had_is_refused(tmp_path: Path) -> None:
    # Before, the average was silently dropped: the run went on without it.
    model = _model()
    run = RunFolder.create(tmp_path, "averaged")
    trainer = _trainer(run, model, averaging=PolyakAverage(model), callbacks=[StopAt(20)])
    assert trainer.fit().status == "stopped"
    assert load_checkpoint(run.last_checkpoint)["averaging"] is not None
    with pytest.raises(RunFolderError, match="holds a weight average, but this Trainer has no"):
        _trainer(run).fit(resume=True)


@pytest.mark.parametrize("case", list(REFUSED_RESUMES))
def test_a_refused_resume_leaves_the_model_and_optimizer_as_they_were(
    tmp_path: Path, case: str
) -> None:
    # Before, the callbacks', the average's and the fills' refusals (and torch's own, from
    # load_state_dict) came after the checkpoint's weights were loaded into the model.
    run = _stopped(tmp_path)
    build, error, message = REFUSED_RESUMES[case]
    trainer = build(run)
    model = trainer.module
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    optimizer_before = trainer.optimizer.state_dict()
    with pytest.raises(error, match=message):
        trainer.fit(resume=True)
    after = model.state_dict()
    assert all(torch.equal(tensor, after[name]) for name, tensor in before.items())
    assert trainer.optimizer.state_dict() == optimizer_before  # empty: nothing loaded
    assert read_summary(run)["status"] == "stopped"


def test_a_refused_resume_leaves_the_weight_average_as_it_was(tmp_path: Path) -> None:
    # The average loads first (it checks itself before it changes); an optimizer the
    # checkpoint does not fit, found wrong after it, left the checkpoint's average in place.
    model = _model()
    run = RunFolder.create(tmp_path, "averaged")
    trainer = _trainer(run, model, averaging=PolyakAverage(model), callbacks=[StopAt(20)])
    assert trainer.fit().status == "stopped"
    model = _model()
    average = PolyakAverage(model)
    before = {k: v.clone() for k, v in average.state_dict()["averaged_model"].items()}
    optimizer = optim.Adam(list(model.parameters())[:2], lr=1e-2)  # another param group
    resumed = Trainer(
        model, optimizer, DATA, epochs=3, batch_size=16, progress=False, run=run,
        averaging=average, mixup=Mixup(0.2, num_classes=3, seed=1),
    )  # fmt: skip
    with pytest.raises(ValueError, match="parameter group"):
        resumed.fit(resume=True)
    after = average.state_dict()["averaged_model"]
    assert int(after["n_averaged"]) == 0
    assert all(torch.equal(tensor, after[name]) for name, tensor in before.items())
