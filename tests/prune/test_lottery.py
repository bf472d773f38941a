"""Iterative magnitude pruning: what is rewound, and the lottery-ticket result at a small size."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from gradwise import Trainer, optim
from gradwise.data import DataSplits, load_dataset
from gradwise.models import mlp
from gradwise.preprocess import ConstantFeatureWarning, Standardize
from gradwise.prune import WeightSnapshot, iterative_magnitude_pruning, prune_round
from gradwise.train import Callback


def _standardized(name: str, seed: int) -> DataSplits:
    data = load_dataset(name, seed=seed)
    with warnings.catch_warnings():  # digits has 3 constant pixels; they are only centered
        warnings.simplefilter("ignore", ConstantFeatureWarning)
        scaler = Standardize().fit(data.train.inputs)

    def scaled(split: Any) -> Any:
        return None if split is None else replace(split, inputs=scaler.transform(split.inputs))

    return replace(
        data, train=scaled(data.train), validation=scaled(data.validation), test=scaled(data.test)
    )


def test_prune_round_prunes_the_output_layer_at_its_own_rate() -> None:
    torch.manual_seed(0)
    model = mlp((20,), 10, width=[40, 30])
    masks = prune_round(model, 0.2, output_rate=0.1)
    kept = {name: int(m.sum()) for name, m in masks.items()}
    assert list(kept) == ["1.weight", "3.weight", "5.weight"]
    assert kept["1.weight"] + kept["3.weight"] == 2000 - 400  # global: 20% of 800 + 1,200
    assert kept["5.weight"] == 270  # the output layer on its own: 10% of 300
    assert kept["1.weight"] != 640  # global, not 20% of each layer
    again = prune_round(model, 0.2, masks=masks, output_rate=0.1)
    assert int(again["5.weight"].sum()) == 270 - round(0.1 * 270)
    assert "5.weight" not in prune_round(model, 0.2)


def test_tickets_start_from_the_rewound_weights_and_controls_from_a_fresh_init() -> None:
    data = load_dataset("spirals", seed=0)

    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))

    starts: list[dict[str, Tensor]] = []
    steps: dict[int, dict[str, Tensor]] = {}

    class Record(Callback):
        def on_step_end(self, state: Any) -> None:
            if not starts[1:]:  # the dense run
                steps[state.step] = {k: v.clone() for k, v in state.model.state_dict().items()}

    def train(model: nn.Module, callbacks: Sequence[Callback]) -> Mapping[str, Any]:
        starts.append({k: v.clone() for k, v in model.state_dict().items()})
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        trainer = Trainer(model, optimizer, data, epochs=1, batch_size=32, progress=False,
                          callbacks=[*callbacks, Record()])  # fmt: skip
        return trainer.fit().test

    results = iterative_magnitude_pruning(build, train, rounds=2, rate=0.5, rewind_step=3)
    assert [(r.round, r.kind) for r in results] == [
        (0, "dense"), (1, "ticket"), (1, "control"), (2, "ticket"), (2, "control"),
    ]  # fmt: skip
    assert [r.fraction_remaining for r in results] == [1.0, 0.5, 0.5, 0.25, 0.25]
    for index, result in enumerate(results[1:], start=1):
        assert result.masks is not None
        source = steps[3] if result.kind == "ticket" else build(1000 * result.round).state_dict()
        for name, tensor in source.items():
            expected = tensor * result.masks[name] if name in result.masks else tensor
            assert torch.equal(starts[index][name], expected), (result.kind, name)


def test_rewind_step_must_be_reached_by_the_dense_run() -> None:
    data = load_dataset("spirals", seed=0)

    def train(model: nn.Module, callbacks: Sequence[Callback]) -> Mapping[str, Any]:
        optimizer = optim.SGD(model.parameters(), lr=0.1)
        Trainer(model, optimizer, data, steps=5, callbacks=callbacks, progress=False).fit()
        return {}

    with pytest.raises(ValueError, match="'rewind_step' parameter of iterative_magnitude_pruning"):
        iterative_magnitude_pruning(lambda s: nn.Linear(2, 3), train, rounds=1, rate=0.5,
                                    rewind_step=9)  # fmt: skip
    with pytest.raises(ValueError, match="'rate' parameter of iterative_magnitude_pruning must"):
        iterative_magnitude_pruning(lambda s: nn.Linear(2, 3), train, rounds=1, rate=1.0)
    with pytest.raises(ValueError, match="'step' parameter of WeightSnapshot must be an int"):
        WeightSnapshot(step=-1)


def test_a_rewind_step_at_the_dense_runs_last_step_is_refused() -> None:
    # Documented as "smaller than the dense run's steps": the weights after the last step
    # are the trained ones, so the "rewound" tickets would start out trained.
    data = load_dataset("spirals", seed=0)
    trained: list[int] = []

    def train(model: nn.Module, callbacks: Sequence[Callback]) -> Mapping[str, Any]:
        optimizer = optim.SGD(model.parameters(), lr=0.1)
        Trainer(model, optimizer, data, steps=5, callbacks=callbacks, progress=False).fit()
        trained.append(1)
        return {}

    message = (
        r"^The 'rewind_step' parameter of iterative_magnitude_pruning must be smaller than the "
        r"dense run's number of steps \(5\)\. Got 5 instead: .* Pass a smaller rewind_step"
    )
    with pytest.raises(ValueError, match=message):
        iterative_magnitude_pruning(lambda s: nn.Linear(2, 3), train, rounds=1, rate=0.5,
                                    rewind_step=5)  # fmt: skip
    assert trained == [1]  # refused after the dense run, before any round

    def build(seed: int) -> nn.Module:
        return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))

    results = iterative_magnitude_pruning(build, train, rounds=1, rate=0.5, rewind_step=4)
    assert [r.kind for r in results] == ["dense", "ticket", "control"]


def test_winning_tickets_beat_random_reinit_at_high_sparsity_on_digits() -> None:
    # Frankle & Carbin's qualitative result, small: MLP 64-100-50-10 on the 8x8 digits, 4
    # rounds at 60% (output layer 30%), down to 3.5% of the weights.
    data = _standardized("digits", seed=0)

    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return mlp(data.input_shape, data.output_size, width=[100, 50])

    def train(model: nn.Module, callbacks: Sequence[Callback]) -> Mapping[str, Any]:
        optimizer = optim.Adam(model.parameters(), lr=0.003)
        result = Trainer(model, optimizer, data, batch_size=64, epochs=8, callbacks=callbacks,
                         progress=False, log_every=1000).fit()  # fmt: skip
        return result.test

    results = iterative_magnitude_pruning(build, train, rounds=4, rate=0.6, output_rate=0.3)
    accuracy = {(r.round, r.kind): r.metrics["test_accuracy"] for r in results}
    remaining = {r.round: r.fraction_remaining for r in results}
    assert remaining[4] == pytest.approx(0.035, abs=0.005)
    dense = accuracy[0, "dense"]
    assert dense > 0.93
    assert accuracy[2, "ticket"] > dense - 0.03  # 17% of the weights: as good as dense
    for round_ in (3, 4):  # 7.6% and 3.5%: the ticket clearly beats the random reinit
        assert accuracy[round_, "ticket"] > accuracy[round_, "control"] + 0.05


def test_prune_round_prunes_a_single_layer_model_at_the_output_rate() -> None:
    torch.manual_seed(0)
    model = nn.Linear(10, 4)  # logistic regression: the output layer is all there is
    masks = prune_round(model, 0.5, output_rate=0.25)
    assert list(masks) == ["weight"]
    assert int(masks["weight"].sum()) == 30
    again = prune_round(model, 0.5, masks=masks, output_rate=0.25)
    assert int(again["weight"].sum()) == 30 - round(0.25 * 30)
    with pytest.raises(ValueError, match="pass output_rate=... to prune its output layer"):
        prune_round(model, 0.5)  # nothing but the output layer, and no output_rate
