"""Averaging in configured runs: metrics, the averaged checkpoint, the report, exact resume."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from gradwise import Trainer, optim
from gradwise.averaging import (
    ExponentialMovingAverage,
    PolyakAverage,
    StochasticWeightAverage,
    WeightAverage,
)
from gradwise.config import ConfigError, RunConfig, config_to_dict, load_config
from gradwise.data import iterate_once, load_dataset
from gradwise.regularize import EarlyStopping
from gradwise.report import build_report
from gradwise.runs import MetricsLog, RunFolder, read_records, write_config
from gradwise.train import load_checkpoint, make_trainer, prepare_run, train
from tests.train.stop_at import StopAt

# spirals, an MLP with batch norm and dropout: 14 steps per epoch, 4 epochs, about a second.
SMALL_RUN = [
    "data.dataset=spirals",
    "data.batch_size=16",
    "model.name=mlp",
    "model.width=32",
    "model.depth=2",
    "model.norm=batch",
    "model.dropout=0.1",
    "epochs=4",
    "log_every=3",
    "optimizer.lr=0.01",
]
EMA = ["averaging.method=ema", "averaging.decay=0.9", "averaging.decay_warmup=true"]
SWA = [
    "averaging.method=swa",
    "averaging.start=0.25",
    "averaging.swa_lr=0.002",
    "averaging.cycle_steps=5",
]


def _config(tmp_path: Path, *extra: str) -> RunConfig:
    return load_config(overrides=[*SMALL_RUN, *extra, f"runs_dir={tmp_path}"])


def _records_without_time(run: RunFolder) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "time"} for r in read_records(run)]


def test_a_run_evaluates_and_saves_the_averaged_weights(tmp_path: Path) -> None:
    result = train(_config(tmp_path, *EMA, "name=ema"), progress=False)
    assert result.run is not None
    epochs = [r for r in read_records(result.run) if r["kind"] == "epoch"]
    assert len(epochs) == 4
    for record in epochs:
        assert {"val_loss", "val_accuracy", "avg_val_loss", "avg_val_accuracy"} <= record.keys()
    assert {"test_loss", "avg_test_loss", "avg_test_accuracy"} <= result.test.keys()
    assert result.summary["final"]["avg_val_loss"] == epochs[-1]["avg_val_loss"]
    # checkpoints/averaged.pt holds the weights that were evaluated: load them into the
    # run's own model and the test loss comes out the same.
    saved = load_checkpoint(result.run.checkpoint_dir / "averaged.pt")
    assert saved["averaging"] == "ExponentialMovingAverage"
    assert saved["num_averaged"] == saved["step"] == 56
    prepared = prepare_run(_config(tmp_path, *EMA))
    model = prepared.model
    model.load_state_dict(saved["model"])
    model.eval()
    test = prepared.data.test
    assert test is not None
    with torch.no_grad():
        losses = [
            torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
            for x, y in iterate_once(test, 1024)
        ]
    assert float(sum(losses)) / len(test) == pytest.approx(result.test["avg_test_loss"], rel=1e-6)
    raw = load_checkpoint(result.run.last_checkpoint)["model"]
    assert not torch.equal(raw["1.weight"], saved["model"]["1.weight"])  # really an average


def test_averaging_leaves_the_raw_weights_alone(tmp_path: Path) -> None:
    # EMA changes no learning rate: the raw run must be bit for bit the run without it (the
    # batch-norm pass uses no random numbers and touches only the averaged copy).
    plain = train(_config(tmp_path, "name=plain"), progress=False)
    averaged = train(_config(tmp_path, *EMA, "name=averaged"), progress=False)
    assert plain.run is not None
    assert averaged.run is not None
    first = load_checkpoint(plain.run.last_checkpoint)["model"]
    second = load_checkpoint(averaged.run.last_checkpoint)["model"]
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    raw_keys = ("train_loss", "val_loss", "val_accuracy", "lr")
    for a, b in zip(read_records(plain.run), read_records(averaged.run), strict=True):
        assert [a.get(k) for k in raw_keys] == [b.get(k) for k in raw_keys]


def test_swa_learning_rate_cycles_from_start(tmp_path: Path) -> None:
    result = train(_config(tmp_path, *SWA, "name=swa", "schedule=null"), progress=False)
    assert result.run is not None
    steps = {r["step"]: r["lr"] for r in read_records(result.run) if r["kind"] == "step"}
    # The lr recorded at step s is the one step s used: cycles of 5 from step 15 (the
    # schedule's step 14), falling linearly from the run's lr (0.01) to swa_lr (0.002).
    for step, lr in steps.items():
        j = step - 15
        expected = 0.01 if j < 0 else 0.01 + (0.002 - 0.01) * ((j % 5) + 1) / 5
        assert lr == pytest.approx(expected, rel=1e-9), step
    saved = load_checkpoint(result.run.checkpoint_dir / "averaged.pt")
    assert saved["num_averaged"] == 8  # after steps 19, 24, ..., 54


@pytest.mark.parametrize("averaging", [EMA, SWA], ids=["ema", "swa"])
def test_resume_restores_the_average_exactly(tmp_path: Path, averaging: list[str]) -> None:
    whole = train(_config(tmp_path, *averaging, "name=whole"), progress=False)
    assert whole.run is not None

    config = _config(tmp_path, *averaging, "name=split")
    folder = RunFolder.create(config.runs_dir, "split")
    write_config(folder, config_to_dict(config))
    trainer = make_trainer(prepare_run(config), folder, progress=False)
    trainer.callbacks.append(StopAt(step=20))  # mid-epoch 2, with 4 and 1 averages in
    assert trainer.fit().status == "stopped"
    resumed = make_trainer(prepare_run(config), folder, progress=False).fit(resume=True)
    assert resumed.status == "completed"

    final = load_checkpoint(folder.last_checkpoint)
    reference = load_checkpoint(whole.run.last_checkpoint)
    assert reference["averaging"]["averaged_model"]["n_averaged"] > 0
    for name, tensor in reference["averaging"]["averaged_model"].items():
        assert torch.equal(tensor, final["averaging"]["averaged_model"][name]), name
    averaged = load_checkpoint(folder.checkpoint_dir / "averaged.pt")["model"]
    for name, tensor in load_checkpoint(whole.run.checkpoint_dir / "averaged.pt")["model"].items():
        assert torch.equal(tensor, averaged[name]), name
    assert _records_without_time(folder) == _records_without_time(whole.run)


def test_the_report_draws_the_averaged_curves(tmp_path: Path) -> None:
    result = train(_config(tmp_path, *EMA, "name=report"), progress=False)
    assert result.run is not None
    with_average = result.run.report_path.read_text()
    # The same run folder without the averaged metrics draws different loss and
    # accuracy plots: the averaged curves are in them.
    copy = RunFolder(tmp_path / "copy")
    shutil.copytree(result.run.path, copy.path)
    records = read_records(copy)
    copy.metrics_path.unlink()
    with MetricsLog(copy.metrics_path) as log:
        for record in records:
            log.append({k: v for k, v in record.items() if not k.startswith("avg_")})
    without_average = build_report(copy).read_text()
    images = [page.split('<img src="')[1:] for page in (with_average, without_average)]
    assert len(images[0]) == len(images[1]) >= 2
    assert images[0][0] != images[1][0]  # loss
    assert images[0][1] != images[1][1]  # accuracy


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["averaging.decay=1.0"],
            "The 'decay' key in 'train.averaging' must be a float in (0, 1). Got 1.0 instead.",
        ),
        (
            ["averaging.method=swag"],
            "The 'method' key in 'train.averaging' must be one of 'ema', 'polyak', 'swa'",
        ),
        (
            ["averaging.start=2.5"],
            "The 'start' key in 'train.averaging' must be a fraction of the run (< 1) or a whole step count. Got 2.5 instead.",
        ),
        (
            ["averaging.start=56"],
            "The 'start' key in 'train.averaging' must come before the end of the run (56 steps): a fraction < 1 or a step count < 56. Got 56 instead.",
        ),
        (["averaging.method=swa"], "method swa in 'train.averaging' needs exactly one of 'every'"),
        (
            [
                "averaging.method=swa",
                "averaging.every=5",
                "averaging.cycle_steps=5",
                "averaging.swa_lr=0.01",
            ],
            "needs exactly one of 'every'",
        ),
        (
            ["averaging.method=swa", "averaging.cycle_steps=5"],
            "'cycle_steps' in 'train.averaging' needs 'swa_lr'",
        ),
        (
            [
                "averaging.method=swa",
                "averaging.cycle_steps=5",
                "averaging.swa_lr=0.01",
                "averaging.anneal_steps=3",
            ],
            "'anneal_steps' in 'train.averaging' applies to a constant SWA learning rate",
        ),
        (
            ["averaging.method=swa", "averaging.every=5", "averaging.anneal_steps=3"],
            "'anneal_steps' in 'train.averaging' needs 'swa_lr'",
        ),
        (
            ["averaging.method=swa", "averaging.start=0.9", "averaging.every=10"],
            "method swa in 'train.averaging' would average nothing: its first average comes after step 60",
        ),
        (
            ["averaging.method=ema", "averaging.swa_lr=0.01"],
            "'swa_lr' in 'train.averaging' applies to method swa only (method is ema)",
        ),
        (
            ["averaging.method=ema", "averaging.start=0.9", "averaging.every=10"],
            "method ema in 'train.averaging' would average nothing: its first average comes "
            "after step 60 (start 50 + every 10) but the run has 56 steps",
        ),
        (
            ["averaging.method=polyak", "averaging.swa_lr=0.0"],  # a zero was let through
            "'swa_lr' in 'train.averaging' applies to method swa only (method is polyak)",
        ),
        (
            ["averaging.mehtod=ema"],
            "unknown key 'mehtod' in 'train.averaging'; did you mean 'method'?",
        ),
    ],
)
def test_bad_averaging_settings_fail_before_the_run(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        prepare_run(_config(tmp_path, *overrides))
    assert message in str(error.value)
    assert not any(tmp_path.iterdir())  # no run folder was made


def _trainer(make_average: Any, steps: int, **options: Any) -> tuple[Trainer, WeightAverage]:
    """A Trainer on spirals with the average ``make_average(model)``, built from the API."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    average = make_average(model)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    data = load_dataset("spirals", seed=0)
    trainer = Trainer(
        model, optimizer, data, steps=steps, batch_size=64, averaging=average, progress=False,
        **options,
    )  # fmt: skip
    return trainer, average


@pytest.mark.parametrize(
    ("make_average", "message"),
    [
        (
            lambda model: ExponentialMovingAverage(model, start=8, every=5),
            "The ExponentialMovingAverage given to Trainer as 'averaging' would average "
            "nothing: its first average comes after step 13 (start 8 + every 5) but the run "
            "has 10 steps; start earlier or average more often.",
        ),
        (
            lambda model: PolyakAverage(model, start=10),
            "The PolyakAverage given to Trainer as 'averaging' would average nothing: its "
            "first average comes after step 11 (start 10 + every 1) but the run has 10 steps",
        ),
        (
            lambda model: StochasticWeightAverage(model, start=5, cycle_steps=6),
            "its first average comes after step 11 (start 5 + anneal_steps 0 + cycle_steps "
            "6) but the run has 10 steps",
        ),
        (
            lambda model: StochasticWeightAverage(model, start=2, every=4, anneal_steps=5),
            "its first average comes after step 11 (start 2 + anneal_steps 5 + every 4) but "
            "the run has 10 steps",
        ),
    ],
)
def test_a_trainer_refuses_an_average_that_would_average_nothing(
    make_average: Any, message: str
) -> None:
    # The config's check (test_bad_averaging_settings_fail_before_the_run), for an
    # average given to the Trainer directly: before, the run trained without a word.
    with pytest.raises(ValueError, match=re.escape(message)):
        _trainer(make_average, steps=10)


def test_a_trainer_takes_an_average_whose_first_step_is_the_last() -> None:
    trainer, average = _trainer(lambda model: PolyakAverage(model, start=5, every=5), steps=10)
    result = trainer.fit()  # warnings are errors: no "averaged nothing" warning either
    assert average.num_averaged == 1
    assert "avg_val_loss" in result.metrics


def test_a_run_early_stopped_before_the_first_average_warns_that_it_averaged_nothing() -> None:
    # No epoch improves by 1e9: early stopping ends the run after its second epoch (the
    # first it may stop at), at step 8.
    trainer, average = _trainer(
        lambda model: ExponentialMovingAverage(model, start=10),
        steps=20,
        early_stopping=EarlyStopping(min_delta=1e9),
    )
    message = (
        "The run ended (early_stopped) after step 8, before the first average of its "
        "ExponentialMovingAverage (after step 11): nothing was averaged"
    )
    with pytest.warns(UserWarning, match=re.escape(message)) as caught:
        result = trainer.fit()
    assert caught[0].filename == __file__  # it points at the call of fit()
    assert result.status == "early_stopped"
    assert average.num_averaged == 0
    assert not any(name.startswith("avg_") for name in result.metrics)


def test_a_run_stopped_before_the_first_average_does_not_warn_and_resumes_into_it(
    tmp_path: Path,
) -> None:
    # A stop request (a callback's) is not an end: the resumed run reaches the average.
    run = RunFolder.create(tmp_path, "stopped")
    trainer, _ = _trainer(
        lambda model: ExponentialMovingAverage(model, start=10),
        steps=20,
        callbacks=[StopAt(3)],
        run=run,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert trainer.fit().status == "stopped"
    resumed, average = _trainer(
        lambda model: ExponentialMovingAverage(model, start=10), steps=20, run=run
    )
    assert resumed.fit(resume=True).status == "completed"
    assert average.num_averaged == 10


@pytest.mark.parametrize("steps", [6, 8], ids=["mid_epoch", "last_step_of_an_epoch"])
def test_a_run_stopped_mid_epoch_writes_the_average_it_ended_with(
    tmp_path: Path, steps: int
) -> None:
    # Before, a stop between epoch ends left averaged.pt at the last epoch end (step 4),
    # though the run ends with the average of every step up to the stop. (A stop on an
    # epoch's last step comes before that epoch's end: its resume runs it.)
    run = RunFolder.create(tmp_path, "stopped")
    trainer, average = _trainer(
        lambda model: ExponentialMovingAverage(model, decay=0.9),
        steps=20,
        callbacks=[StopAt(steps)],  # 4 steps per epoch
        run=run,
    )
    assert trainer.fit().status == "stopped"
    saved = load_checkpoint(run.checkpoint_dir / "averaged.pt")
    assert saved["step"] == saved["num_averaged"] == average.num_averaged == steps
    for name, tensor in average.module.state_dict().items():
        assert torch.equal(saved["model"][name], tensor), name
