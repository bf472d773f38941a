"""Neelakantan et al.'s gradient noise on a 20-layer ReLU MLP: what holds at a tiny size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.reproductions._scripts import load_script

script = load_script("gradient_noise")
SETTINGS = {setting.name: setting for setting in script.SETTINGS}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("gradient_noise")
    argv = ["--seeds", "0", "--epochs", "6", "--out", str(out), "--settings"]
    return {"out": out, **script.main([*argv, "He init, clip 10", "zero init, clip 10"])}


def accuracies(results: dict, setting: str, noise: bool) -> list[float]:
    return results["accuracies"][(setting, noise)]


def test_zero_init_without_noise_stays_at_chance(results: dict) -> None:
    # Table 1: 11.4% best, 10.1% average. All-zero weights give zero hidden activations, so
    # only the read-out bias can learn: the net predicts one class for every digit.
    assert max(accuracies(results, "zero init, clip 10", noise=False)) < 0.15


def zero_init_model_after(steps: int, eta: float) -> torch.nn.Module:
    """The zero-init network after ``steps`` steps on 100 digits with annealed noise ``eta``."""
    data = script.mnist()
    setting = SETTINGS["zero init, clip 10"]
    model = script.network(data, setting, seed=0)
    opt = script.optimizer(list(model.parameters()), setting.clip, eta, 0.1, seed=0)
    inputs, targets = data.train.inputs[:100], data.train.targets[:100]
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        opt.step()
    return model


def test_zero_init_weights_never_move_without_noise() -> None:
    model = zero_init_model_after(3, eta=0.0)
    weights = [p.detach() for name, p in model.named_parameters() if name.endswith("weight")]
    assert all(bool((w == 0).all()) for w in weights)


def test_noise_breaks_the_symmetry_of_zero_init() -> None:
    model = zero_init_model_after(1, eta=0.01)
    first = model[1].weight.detach()  # the first hidden layer, after the flatten
    # One step moves each weight by -lr * N(0, eta): std 0.1 * sqrt(0.01) = 0.01.
    assert float(first.std()) == pytest.approx(0.01, rel=0.05)
    assert int(torch.unique(first, dim=0).shape[0]) == first.shape[0]


def test_he_init_trains_with_and_without_noise(results: dict) -> None:
    # Table 1, experiment 5: with a good initialization noise changes little (97.4 / 97.2).
    without = max(accuracies(results, "He init, clip 10", noise=False))
    with_noise = max(accuracies(results, "He init, clip 10", noise=True))
    # 216 steps here (the test's size): far from 97%, far above zero init's chance level.
    assert without > 0.3
    assert with_noise > 0.3
    assert abs(without - with_noise) < 0.15


def test_figure_is_written(results: dict) -> None:
    assert (Path(results["out"]) / "gradient_noise.png").stat().st_size > 1000
