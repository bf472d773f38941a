"""A resume loads all of the checkpoint or none of it: a callback that cannot take its
state leaves everything as it was; states saved by place go only to the same callbacks."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from gradwise import Trainer, optim
from gradwise.data import load_dataset
from gradwise.regularize import GaussianNoise, Mixup
from gradwise.runs import RunFolder, RunFolderError, read_summary
from gradwise.train import Callback, load_checkpoint, save_checkpoint
from tests.train.stop_at import StopAt
from tests.train.test_callback_state import Counter, Tally

DATA = load_dataset("spirals", seed=0)


class Capped(Counter):
    """A Counter that refuses a saved count above ``limit`` (after taking it, as a load
    that checks late would)."""

    def __init__(self, limit: int = 1000) -> None:
        super().__init__()
        self.limit = limit

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if self.count > self.limit:
            raise ValueError(f"a count of {self.count} is over the limit of {self.limit}")


class Broken(Counter):
    """A Counter whose load fails on any state, its own included."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.count = -1
        raise KeyError("version")


class Filling(nn.Module):
    """An identity augmentation with a fill (as shift, crop and rotation have)."""

    def __init__(self, fill: float) -> None:
        super().__init__()
        self.fill = torch.tensor([fill, fill])

    def forward(self, x: Tensor) -> Tensor:
        return x


class Sent:
    """A rank's own state (as gradient compression's): a count."""

    def __init__(self, count: int = 0) -> None:
        self.count = count

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.count = state["count"]


def _trainer(
    run: RunFolder,
    callbacks: Sequence[Callback],
    fill: float = 0.5,
    sent: int = 0,
    augment: nn.Module | None = None,
) -> Trainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3))
    augment = Filling(fill) if augment is None else augment
    return Trainer(
        model, optim.Adam(model.parameters(), lr=1e-2), DATA, steps=40, batch_size=16,
        callbacks=callbacks, run=run, progress=False, augment=augment,
        mixup=Mixup(0.2, num_classes=3, seed=1), rank_state=Sent(sent),
    )  # fmt: skip


def _stopped_run(
    tmp_path: Path, callbacks: Sequence[Callback], augment: nn.Module | None = None
) -> RunFolder:
    """A run folder whose last checkpoint was written by a stop at step 20 (mid-epoch)."""
    run = RunFolder.create(tmp_path, "stopped")
    trainer = _trainer(run, [*callbacks, StopAt(20)], sent=7, augment=augment)
    assert trainer.fit().status == "stopped"
    return run


def _global_rng_states() -> tuple[Tensor, Any, dict[str, Any]]:
    return torch.get_rng_state(), random.getstate(), np.random.get_state(legacy=False)


def test_a_callback_failing_to_load_leaves_everything_as_it_was(tmp_path: Path) -> None:
    # Before, the RNG states, the fills, the rank's state and the callbacks loaded before
    # the failing one kept the checkpoint's values; only the model, optimizer, scheduler,
    # weight average and early stopping were put back.
    run = _stopped_run(tmp_path, [Counter(), Capped()])
    counter, capped = Counter(), Capped(limit=5)
    trainer = _trainer(run, [counter, capped], fill=2.0)
    mixup = trainer.mixup
    assert mixup is not None
    torch.manual_seed(123)  # a new process: the global generators are anywhere
    np.random.seed(123)
    random.seed(123)
    before = _global_rng_states()
    mixup_before = mixup.get_rng_state()
    weights_before = {k: v.clone() for k, v in trainer.module.state_dict().items()}
    message = (
        f"The callback Capped could not load its state from {run.last_checkpoint}: "
        "ValueError: a count of 20 is over the limit of 5. Nothing was loaded"
    )
    with pytest.raises(RunFolderError, match=re.escape(message)) as raised:
        trainer.fit(resume=True)
    assert isinstance(raised.value.__cause__, ValueError)
    torch_state, python_state, numpy_state = _global_rng_states()
    assert torch.equal(torch_state, before[0])
    assert python_state == before[1]
    assert np.array_equal(numpy_state["state"]["key"], before[2]["state"]["key"])
    assert numpy_state["state"]["pos"] == before[2]["state"]["pos"]
    assert mixup.get_rng_state() == mixup_before
    assert (counter.count, capped.count) == (0, 0)
    assert isinstance(trainer.augment, Filling)
    assert torch.equal(trainer.augment.fill, torch.tensor([2.0, 2.0]))
    assert trainer.rank_state.count == 0
    after = trainer.module.state_dict()
    assert all(torch.equal(tensor, after[name]) for name, tensor in weights_before.items())
    assert read_summary(run)["status"] == "stopped"


def test_a_failed_resume_leaves_an_augmentation_without_the_generator_it_loaded(
    tmp_path: Path,
) -> None:
    # Before, the augmentation had no generator yet, so the state put back ({}) removed
    # nothing: the checkpoint's generator stayed, and the next run drew its noise.
    run = _stopped_run(tmp_path, [Counter(), Capped()], augment=GaussianNoise(0.01, seed=3))
    noise = GaussianNoise(0.01, seed=3)
    trainer = _trainer(run, [Counter(), Capped(limit=5)], augment=noise)
    assert noise.get_rng_state() == {}
    with pytest.raises(RunFolderError, match="The callback Capped could not load"):
        trainer.fit(resume=True)
    assert noise.get_rng_state() == {}


def test_a_callback_that_cannot_be_put_back_is_a_note_and_the_others_are(
    tmp_path: Path,
) -> None:
    run = _stopped_run(tmp_path, [Counter(), Broken()])
    counter = Counter()
    trainer = _trainer(run, [counter, Broken()])
    with pytest.raises(RunFolderError, match="The callback Broken could not load") as raised:
        trainer.fit(resume=True)
    assert counter.count == 0
    assert raised.value.__notes__ == ["Broken could not be put back as it was: KeyError: 'version'"]


def _written_by_place(tmp_path: Path, states: list[dict[str, Any]]) -> RunFolder:
    """A checkpoint as gradwise wrote it before it named the states: one per callback, by
    place (this one from a run with a Counter, a Tally and a StopAt)."""
    run = _stopped_run(tmp_path, [Counter(), Tally()])
    contents = load_checkpoint(run.last_checkpoint)
    contents["callbacks"] = states
    save_checkpoint(run.last_checkpoint, contents)
    return run


BY_PLACE_REFUSALS = {
    # Before, the two took the first two states, and the run went on without a word.
    "fewer callbacks": (
        lambda: [Counter(), Tally()],
        "callbacks Counter, Tally in order, but it holds 3 state(s), one per callback, for 2 "
        "here. Resume with the callbacks the run started with: the same classes in the same "
        "order, those without state included.",
    ),
    # Before, StopAt dropped the Counter's state and the Counter failed on the Tally's.
    "another order": (
        lambda: [StopAt(1000), Counter(), Tally()],
        "but the state at place 1 would go to StopAt, which keeps no state.",
    ),
    # Before, the second Counter failed on the empty state with a KeyError.
    "an empty state for a callback with state": (
        lambda: [Counter(), Tally(), Counter()],
        "but the state at place 3 is empty, and Counter#2 has state.",
    ),
}


@pytest.mark.parametrize("case", list(BY_PLACE_REFUSALS))
def test_states_by_place_for_other_callbacks_are_refused_before_loading(
    tmp_path: Path, case: str
) -> None:
    run = _written_by_place(tmp_path, [{"count": 9}, {"count": 5}, {}])
    build, message = BY_PLACE_REFUSALS[case]
    callbacks = build()
    with pytest.raises(RunFolderError, match=re.escape(message)):
        _trainer(run, callbacks).fit(resume=True)
    assert all(c.count == 0 for c in callbacks if isinstance(c, Counter))
    assert read_summary(run)["status"] == "stopped"


def test_states_by_place_of_stateless_callbacks_let_other_stateless_ones_resume(
    tmp_path: Path,
) -> None:
    run = _written_by_place(tmp_path, [{}, {}])
    assert _trainer(run, []).fit(resume=True).status == "completed"
