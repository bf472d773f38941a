"""Callbacks' state in checkpoints (matched to its callback on resume), and on_exception."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from gradwise import Trainer, optim
from gradwise.data import load_dataset
from gradwise.runs import RunFolder, RunFolderError
from gradwise.train import Callback, TrainState, load_checkpoint, save_checkpoint
from tests.train.stop_at import StopAt


class Counter(Callback):
    """Counts the steps it saw; the count is its state."""

    def __init__(self) -> None:
        self.count = 0

    def on_step_end(self, state: TrainState) -> None:
        self.count += 1

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.count = state["count"]


class Tally(Counter):
    """Counts every other step, with a state of the same shape as Counter's."""

    def on_step_end(self, state: TrainState) -> None:
        self.count += state.step % 2


def _trainer(run: RunFolder, callbacks: Sequence[Callback], steps: int = 40) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    data = load_dataset("spirals", seed=0)
    return Trainer(
        model, optimizer, data, steps=steps, batch_size=64, callbacks=callbacks, run=run,
        progress=False,
    )  # fmt: skip


def _stopped_run(tmp_path: Path, callbacks: Sequence[Callback]) -> RunFolder:
    """A run folder whose last checkpoint was written by a stop at step 9 (mid-epoch)."""
    run = RunFolder.create(tmp_path, "stopped")
    assert _trainer(run, [*callbacks, StopAt(9)]).fit().status == "stopped"
    return run


def test_reordered_callbacks_each_get_their_own_state(tmp_path: Path) -> None:
    # Before, states were restored by position: Tally got Counter's count and vice versa.
    run = _stopped_run(tmp_path, [Counter(), Tally()])
    counter, tally = Counter(), Tally()
    _trainer(run, [tally, counter]).fit(resume=True)
    assert (counter.count, tally.count) == (40, 20)


def test_a_resume_with_another_stateful_callback_is_refused_naming_both(tmp_path: Path) -> None:
    # Before, the Tally took the Counter's state without a word.
    run = _stopped_run(tmp_path, [Counter()])
    tally = Tally()
    message = (
        f"{run.last_checkpoint} holds the state of the callbacks Counter, but this run's "
        "callbacks are Tally: the saved state of Counter has no callback to go to. Resume "
        "with the callbacks the run started with (the same classes, in the same order)."
    )
    with pytest.raises(RunFolderError, match=re.escape(message)):
        _trainer(run, [tally]).fit(resume=True)
    assert tally.count == 0


def test_a_resume_without_a_stateful_callback_is_refused(tmp_path: Path) -> None:
    run = _stopped_run(tmp_path, [Counter(), Counter()])
    message = (
        "holds the state of the callbacks Counter, Counter#2, but this run's callbacks are "
        "Counter: the saved state of Counter#2 has no callback to go to."
    )
    with pytest.raises(RunFolderError, match=re.escape(message)):
        _trainer(run, [Counter()]).fit(resume=True)


def test_a_resume_with_a_stateful_callback_the_run_did_not_have_is_refused(
    tmp_path: Path,
) -> None:
    run = _stopped_run(tmp_path, [])
    message = (
        "holds the state of the callbacks (none), but this run's callbacks are Counter: "
        "Counter has no saved state (the run started without it)."
    )
    with pytest.raises(RunFolderError, match=re.escape(message)):
        _trainer(run, [Counter()]).fit(resume=True)


def test_stateless_callbacks_may_come_and_go_on_resume(tmp_path: Path) -> None:
    run = _stopped_run(tmp_path, [Counter()])  # with a StopAt, which has no state
    counter = Counter()
    assert _trainer(run, [StopAt(1000), counter]).fit(resume=True).status == "completed"
    assert counter.count == 40


def test_a_checkpoint_holding_a_plain_list_of_states_still_resumes(tmp_path: Path) -> None:
    # What gradwise wrote before it named each callback's state: the states by position.
    run = _stopped_run(tmp_path, [Counter(), Tally()])
    contents = load_checkpoint(run.last_checkpoint)
    contents["callbacks"] = [{"count": 9}, {"count": 5}, {}]
    save_checkpoint(run.last_checkpoint, contents)
    counter, tally = Counter(), Tally()
    _trainer(run, [counter, tally, StopAt(1000)]).fit(resume=True)
    assert (counter.count, tally.count) == (40, 20)


class _Releases(Callback):
    """Records the error on_exception saw; fails in on_exception when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.seen: list[BaseException] = []

    def on_exception(self, state: TrainState, error: BaseException) -> None:
        self.seen.append(error)
        if self.fail:
            raise ValueError("cleanup failed")


class _Raise(Callback):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def on_step_end(self, state: TrainState) -> None:
        if state.step == 3:
            raise self.error


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_every_callback_hears_of_an_error_that_ends_fit(tmp_path: Path, error: Exception) -> None:
    first, second = _Releases(fail=True), _Releases()
    trainer = _trainer(RunFolder.create(tmp_path, "failed"), [first, _Raise(error), second])
    with pytest.raises(type(error)) as raised:
        trainer.fit()
    assert raised.value is error  # the original, not on_exception's failure
    assert first.seen == [error]
    assert second.seen == [error]
    notes = getattr(error, "__notes__", [])
    assert notes == ["_Releases.on_exception failed too: ValueError: cleanup failed"]
