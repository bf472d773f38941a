"""The modules' train/eval modes through fit(): the user's and the callbacks' are kept."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from gradwise import Trainer, monitor, optim
from gradwise.data import load_dataset
from gradwise.train import Callback, TrainState

DATA = load_dataset("spirals", seed=0)  # with validation and test splits


def _model() -> tuple[nn.Sequential, nn.BatchNorm1d]:
    torch.manual_seed(0)
    norm = nn.BatchNorm1d(16)
    return nn.Sequential(nn.Linear(2, 16), norm, nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3)), norm


def _fit(model: nn.Module, norm: nn.Module, **options: Any) -> list[bool]:
    """Fit ``model`` for 2 epochs; ``norm``'s mode at each training forward."""
    seen: list[bool] = []

    def record(module: nn.Module, inputs: Any) -> None:
        if torch.is_grad_enabled():  # a training step (evaluations run under no_grad)
            seen.append(module.training)

    norm.register_forward_pre_hook(record)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    trainer = Trainer(model, optimizer, DATA, epochs=2, batch_size=64, progress=False, **options)
    assert trainer.fit().status == "completed"
    return seen


def test_a_batch_norm_frozen_in_eval_mode_stays_so_through_training_and_evaluations() -> None:
    # Before, each epoch's model.train() and each evaluation's model.train(True) put it
    # back in training: it normalized with batch statistics and updated its running ones.
    model, norm = _model()
    norm.eval()
    seen = _fit(model, norm)
    assert seen
    assert not any(seen)
    assert [module.training for module in model] == [True, False, True, True, True]
    assert model.training
    assert int(norm.num_batches_tracked) == 0
    assert torch.equal(norm.running_mean, torch.zeros(16))


def test_a_model_in_eval_mode_as_a_whole_trains_in_training_mode() -> None:
    model, norm = _model()
    model.eval()  # evaluated before fit(), say
    seen = _fit(model, norm)
    assert seen
    assert all(seen)
    assert all(module.training for module in model.modules())


def test_a_mode_a_callback_sets_during_the_run_is_kept() -> None:
    class Unfreeze(Callback):
        def __init__(self, module: nn.Module) -> None:
            self.module = module

        def on_epoch_end(self, state: TrainState) -> None:
            self.module.train()

    model, norm = _model()
    norm.eval()
    seen = _fit(model, norm, callbacks=[Unfreeze(norm)])
    steps_per_epoch = len(seen) // 2
    assert seen == [False] * steps_per_epoch + [True] * steps_per_epoch
    assert int(norm.num_batches_tracked) == steps_per_epoch


def test_a_model_a_callback_left_in_eval_mode_trains_in_training_mode_with_a_warning() -> None:
    class EvaluateCarelessly(Callback):
        def __init__(self, model: nn.Module) -> None:
            self.model = model

        def on_epoch_end(self, state: TrainState) -> None:
            self.model.eval()  # and never back

    model, norm = _model()
    with pytest.warns(UserWarning, match="eval mode at the start of epoch 2"):
        seen = _fit(model, norm, callbacks=[EvaluateCarelessly(model)])
    assert seen
    assert all(seen)


class Merging(nn.Linear):
    """A LoRA-style layer: its own train() merges an update into the weight in eval mode
    and takes it out again in training mode."""

    def __init__(self) -> None:
        super().__init__(16, 16)
        self.merged = False

    def train(self, mode: bool = True) -> Merging:
        super().train(mode)
        self.merged = not mode
        return self


def test_a_module_with_its_own_train_is_switched_back_through_it() -> None:
    # evaluate() and the watch's probes gave the flags back without calling train(True):
    # such a layer stayed merged through the training steps after the first evaluation.
    torch.manual_seed(0)
    merging = Merging()
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), merging, nn.ReLU(), nn.Linear(16, 3))
    merged_in_steps: list[bool] = []

    def record(module: nn.Module, inputs: Any) -> None:
        if torch.is_grad_enabled():
            merged_in_steps.append(merging.merged)

    merging.register_forward_pre_hook(record)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    subset = (DATA.train.inputs[:128], DATA.train.targets[:128])
    watch = monitor.watch(model, optimizer, monitor_data=subset, every=3)
    trainer = Trainer(
        model, optimizer, DATA, epochs=3, batch_size=64, progress=False,
        callbacks=[watch.callback()],
    )  # fmt: skip
    assert trainer.fit().status == "completed"
    assert merged_in_steps
    assert not any(merged_in_steps)
    assert not merging.merged
