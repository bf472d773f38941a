"""schedule: plateau in a run config: the lr is cut when an epoch metric stops improving,
at the epoch's end, and a resumed run continues the plateau's counters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradwise.config import ConfigError, load_config
from gradwise.runs import RunFolder
from gradwise.train import Callback, TrainState, prepare_run, resume, train
from tests.train.conftest import SMALL_RUN
from tests.train.stop_at import StopAt

#: threshold 10 (relative): no observation improves on the best (inf * (1 - 10) = -inf),
#: so with patience 0 every epoch's end halves the lr.
NEVER_IMPROVES = (
    "schedule={name: plateau, warmup: 0, options: {patience: 0, factor: 0.5, threshold: 10}}"
)


def _epoch_lrs(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [record["lr"] for record in records if record["kind"] == "epoch"]


class LrUsed(Callback):
    """The lr each optimizer step used."""

    def __init__(self) -> None:
        self.lrs: list[float | None] = []

    def on_step_end(self, state: TrainState) -> None:
        self.lrs.append(state.lr)


def _config(tmp_path: Path, *overrides: str):
    return load_config(
        overrides=[*SMALL_RUN, f"runs_dir={tmp_path}", "name=run", "monitor=null", *overrides]
    )


def test_each_epoch_without_improvement_cuts_the_lr_at_its_end(tmp_path: Path) -> None:
    used = LrUsed()
    train(_config(tmp_path, NEVER_IMPROVES), progress=False, callbacks=[used])
    # The lr an epoch trained with, recorded at its end before the cut.
    assert _epoch_lrs(tmp_path / "run") == pytest.approx([0.01, 0.005, 0.0025, 0.00125])
    per_epoch = len(used.lrs) // 4
    # The cut applies from the next epoch's first step on, not one step late.
    assert used.lrs[per_epoch - 1] == pytest.approx(0.01)
    assert used.lrs[per_epoch] == pytest.approx(0.005)


def test_a_plateau_under_the_warmup_observes_too(tmp_path: Path) -> None:
    warmed = NEVER_IMPROVES.replace("warmup: 0", "warmup: 2")
    train(_config(tmp_path, warmed), progress=False)
    assert _epoch_lrs(tmp_path / "run") == pytest.approx([0.01, 0.005, 0.0025, 0.00125])


def test_a_resumed_run_continues_the_plateaus_counters(tmp_path: Path) -> None:
    # patience 1: a cut after two bad epochs; stopped after the first, the resumed run
    # must remember that one bad epoch was counted (or it would cut an epoch late).
    slow = NEVER_IMPROVES.replace("patience: 0", "patience: 1").replace("warmup: 0", "warmup: 2")
    whole = _config(tmp_path / "whole", slow)
    train(whole, progress=False)
    expected = _epoch_lrs(tmp_path / "whole" / "run")
    assert expected == pytest.approx([0.01, 0.01, 0.005, 0.005])
    interrupted = _config(tmp_path / "cut", slow)
    used = LrUsed()
    train(_config(tmp_path / "count", slow), progress=False, callbacks=[used])
    stopped = train(interrupted, progress=False, callbacks=[StopAt(len(used.lrs) // 4 + 1)])
    assert stopped.status == "stopped"
    resume(RunFolder.open(tmp_path / "cut" / "run").path, progress=False)
    assert _epoch_lrs(tmp_path / "cut" / "run") == pytest.approx(expected)


def test_the_observed_metric_must_be_one_the_run_records(tmp_path: Path) -> None:
    typo = "schedule={name: plateau, options: {metric: val_los}}"
    with pytest.raises(ConfigError, match=r"'train.schedule.options.metric' is 'val_los'"):
        prepare_run(_config(tmp_path, typo))
