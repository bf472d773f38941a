"""Masks stay exact under every optimizer: pruned weights and their state stay zero."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from gradwise import optim
from gradwise.prune import Masks, attach_masks, magnitude_masks
from gradwise.train._components import OPTIMIZERS, build_optimizer

# Weight decay and momentum wherever the optimizer takes them, so that both would move
# pruned weights if the masks were not enforced after every step.
SETTINGS: dict[str, dict[str, Any]] = {
    "SGD": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1, "nesterov": True},
    "Adagrad": {"lr": 0.1, "weight_decay": 0.1, "initial_accumulator_value": 0.1},
    "RMSprop": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.1, "centered": True},
    "Adadelta": {"lr": 1.0, "weight_decay": 0.1},
    "Adam": {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True},
    "AdamW": {"lr": 0.01, "weight_decay": 0.1},
    "NAdam": {"lr": 0.01, "weight_decay": 0.1},
    "RAdam": {"lr": 0.01, "weight_decay": 0.1},
    "LARS": {"lr": 1.0, "momentum": 0.9, "weight_decay": 0.1},
    "LAMB": {"lr": 0.01, "weight_decay": 0.1},
    # a loose tolerance so that it switches to SGD with momentum within the test's steps
    "SWATS": {"lr": 0.01, "weight_decay": 0.1, "switch_tolerance": 10.0},
    "SignSGD": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.1, "error_feedback": True},
    "OneBitSGD": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.1},
    "OneBitAdam": {"lr": 0.01, "weight_decay": 0.1, "freeze_step": 4},  # frozen variance after 4
}
CHAIN = {
    "chain": [
        {"name": "add_noise", "eta": 1.0, "seed": 3},
        "scale_by_adam",
        {"name": "add_decayed_weights", "weight_decay": 0.1},
        "scale_by_learning_rate",
    ],
    "lr": 0.01,
}
NUM_STEPS = 12


def test_every_registered_optimizer_has_settings() -> None:
    assert set(SETTINGS) == set(OPTIMIZERS)


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
    )


def _loss(model: nn.Module, step: int) -> Tensor:
    generator = torch.Generator().manual_seed(step)
    inputs = torch.randn(32, 6, generator=generator)
    targets = torch.randint(0, 3, (32,), generator=generator)
    return nn.functional.cross_entropy(model(inputs), targets)


def _assert_pruned_entries_are_zero(
    model: nn.Module, optimizer: torch.optim.Optimizer, masks: Masks, step: int
) -> None:
    parameters = dict(model.named_parameters())
    for name, mask in masks.items():
        parameter = parameters[name]
        assert bool((parameter[~mask] == 0).all()), f"{name} moved at step {step}"
        for key, value in optimizer.state.get(parameter, {}).items():
            if isinstance(value, Tensor) and value.shape == parameter.shape:
                assert bool((value[~mask] == 0).all()), f"state {key} of {name}, step {step}"


def _train_with_masks(make: Callable[[nn.Module], torch.optim.Optimizer]) -> None:
    model = _model()
    optimizer = make(model)
    for step in range(3):  # dense steps first: momentum and moments exist when pruning starts
        optimizer.zero_grad()
        _loss(model, step).backward()
        optimizer.step()
    masks = magnitude_masks(model, 0.7, scope="layer", include_output=True, include_biases=True)
    kept_before = {name: p.detach().clone() for name, p in model.named_parameters()}
    attach_masks(model, optimizer, masks)
    _assert_pruned_entries_are_zero(model, optimizer, masks, 0)
    for step in range(3, 3 + NUM_STEPS):
        optimizer.zero_grad()
        _loss(model, step).backward()
        for name, parameter in model.named_parameters():  # the gradient is masked already
            assert parameter.grad is not None
            assert bool((parameter.grad[~masks[name]] == 0).all()), name
        optimizer.step()
        _assert_pruned_entries_are_zero(model, optimizer, masks, step)
    changed = [
        name
        for name, p in model.named_parameters()
        if not torch.equal(p[masks[name]], kept_before[name][masks[name]])
    ]
    assert changed, "the kept weights should train"


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_pruned_weights_and_their_state_stay_zero_under_every_gradwise_optimizer(
    name: str,
) -> None:
    _train_with_masks(lambda model: build_optimizer({"name": name, **SETTINGS[name]}, model))


def test_pruned_weights_stay_zero_under_a_chain_with_noise_and_decayed_weights() -> None:
    _train_with_masks(lambda model: build_optimizer(CHAIN, model))


@pytest.mark.parametrize(
    "make",
    [
        lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1),
        lambda m: torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1),
        lambda m: torch.optim.Adam(m.parameters(), lr=0.01, weight_decay=0.1, foreach=False),
    ],
    ids=["torch-SGD", "torch-AdamW", "torch-Adam"],
)
def test_pruned_weights_stay_zero_under_torch_optimizers(
    make: Callable[[nn.Module], torch.optim.Optimizer],
) -> None:
    _train_with_masks(make)


def test_clipping_and_trust_ratios_see_the_sparse_gradient() -> None:
    # Oracle: the same optimizer without hooks, with the gradients, weights and state
    # masked by hand. Global-norm clipping then scales by the sparse gradient's norm.
    def make(model: nn.Module) -> torch.optim.Optimizer:
        return optim.Optimizer(
            model.parameters(),
            optim.chain(optim.clip_by_global_norm(0.05), optim.scale_by_learning_rate(0.5)),
        )

    hooked, manual = _model(), _model()
    masks = magnitude_masks(hooked, 0.8, include_output=True)
    hooked_optimizer, manual_optimizer = make(hooked), make(manual)
    attach_masks(hooked, hooked_optimizer, masks)
    masks.apply_(manual)
    manual_parameters = dict(manual.named_parameters())
    for step in range(5):
        for model, optimizer in ((hooked, hooked_optimizer), (manual, manual_optimizer)):
            optimizer.zero_grad()
            _loss(model, step).backward()
        with torch.no_grad():
            for name, mask in masks.items():
                manual_parameters[name].grad.mul_(mask)  # type: ignore[union-attr]
        hooked_optimizer.step()
        manual_optimizer.step()
        masks.apply_(manual)
    for (name, a), b in zip(hooked.named_parameters(), manual.parameters(), strict=True):
        assert torch.equal(a, b), name
    # and the mask did matter: without it, clipping would have used the dense norm
    dense = _model()
    dense_optimizer = make(dense)
    dense_optimizer.zero_grad()
    _loss(dense, 0).backward()
    dense_optimizer.step()
    masks.apply_(dense)
    first_hooked = _model()
    first_optimizer = make(first_hooked)
    attach_masks(first_hooked, first_optimizer, masks)
    first_optimizer.zero_grad()
    _loss(first_hooked, 0).backward()
    first_optimizer.step()
    assert not torch.equal(dense[0].weight, first_hooked[0].weight)


def test_a_nan_in_a_pruned_weight_state_is_written_over_with_exact_zeros() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    masks = magnitude_masks(model, 0.5)
    with torch.no_grad():
        model[0].weight[~masks["0.weight"]] = float("nan")
    attach_masks(model, optimizer, masks)
    assert bool((model[0].weight[~masks["0.weight"]] == 0).all())


def test_the_handle_detaches_every_hook() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.5)
    masks = magnitude_masks(model, 0.5)
    handle = attach_masks(model, optimizer, masks)
    assert handle.attached
    handle.remove()
    assert not handle.attached
    optimizer.zero_grad()
    _loss(model, 0).backward()
    assert bool((model[0].weight.grad[~masks["0.weight"]] != 0).any())  # type: ignore[index]
    optimizer.step()
    assert bool((model[0].weight[~masks["0.weight"]] != 0).any())


def test_attach_refuses_masks_for_parameters_the_optimizer_does_not_update() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model[0].parameters(), lr=0.1)
    with pytest.raises(ValueError, match="Got '2.weight', which is in none of its param groups"):
        attach_masks(model, optimizer, magnitude_masks(model, 0.5))
    with pytest.raises(ValueError, match="'optimizer' parameter of attach_masks must be a torch"):
        attach_masks(model, "sgd", {})  # type: ignore[arg-type]


def test_masks_attach_to_a_frozen_layer_the_optimizer_holds() -> None:
    # torch optimizers accept parameters with requires_grad=False (they skip them); the
    # tensor hook used to make attach_masks fail with "cannot register a hook on a tensor
    # that doesn't require gradient".
    model = _model()
    model[0].weight.requires_grad_(False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    masks = magnitude_masks(model, 0.5)
    frozen = model[0].weight.detach().clone()
    handle = attach_masks(model, optimizer, masks)
    for step in range(3):
        optimizer.zero_grad()
        _loss(model, step).backward()
        optimizer.step()
        _assert_pruned_entries_are_zero(model, optimizer, masks, step)
    kept = masks["0.weight"]
    assert torch.equal(model[0].weight[kept], frozen[kept])  # frozen: only the pruning moved it
    assert bool((model[0].weight[~kept] == 0).all())
    handle.remove()
    assert not handle.attached
