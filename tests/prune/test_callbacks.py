"""The Pruning callback lets go of the model and optimizer however fit() ends."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from gradwise import Trainer, optim
from gradwise.data import load_dataset
from gradwise.prune import Pruning, magnitude_masks
from gradwise.train import Callback, TrainingDiverged, TrainState


class _Raise(Callback):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def on_step_end(self, state: TrainState) -> None:
        if state.step == 3:
            raise self.error


def _nan_after_three_steps() -> object:
    steps = {"n": 0}

    def loss(outputs: Tensor, targets: Tensor) -> Tensor:
        steps["n"] += torch.is_grad_enabled()
        value = F.cross_entropy(outputs, targets)
        return value * math.nan if steps["n"] > 3 else value

    return loss


@pytest.mark.parametrize(
    ("error", "callbacks", "loss"),
    [
        (RuntimeError, [_Raise(RuntimeError("a callback failed"))], "cross_entropy"),
        (KeyboardInterrupt, [_Raise(KeyboardInterrupt())], "cross_entropy"),
        (TrainingDiverged, [], _nan_after_three_steps()),
    ],
    ids=["error", "keyboard_interrupt", "diverged"],
)
def test_pruning_detaches_its_hooks_when_fit_raises(
    error: type[BaseException], callbacks: list[Callback], loss: object
) -> None:
    # Before, only a divergence detached them: after any other error the pruned weights
    # stayed pinned at zero (and their gradients zeroed) for whatever used the model next.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    masks = magnitude_masks(model, 0.5)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(
        model, optimizer, load_dataset("spirals", seed=0), loss=loss,  # type: ignore[arg-type]
        steps=10, batch_size=64, callbacks=[Pruning(masks), *callbacks], progress=False,
    )  # fmt: skip
    with pytest.raises(error):
        trainer.fit()
    pruned = ~masks["0.weight"]
    optimizer.zero_grad()
    model(torch.ones(4, 2)).square().sum().backward()
    assert model[0].weight.grad is not None
    assert bool((model[0].weight.grad[pruned] != 0).any())  # no gradient hook
    optimizer.step()
    assert bool((model[0].weight[pruned] != 0).any())  # no step hooks
