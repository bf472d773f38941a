"""Config entries that name library pieces: preprocessing, augmentation, optimizers, schedules."""

from __future__ import annotations

import pytest
import torch

from gradwise import optim
from gradwise.config import ConfigError, load_config
from gradwise.train import prepare_run
from tests.train.conftest import SMALL_RUN


def _prepare(*overrides: str):  # type: ignore[no-untyped-def]
    return prepare_run(load_config(overrides=[*SMALL_RUN, *overrides]))


def test_preprocessing_is_fitted_on_the_training_split_only() -> None:
    prepared = _prepare("data.preprocess=[standardize]")
    train_inputs = prepared.data.train.inputs
    assert torch.allclose(train_inputs.mean(dim=0), torch.zeros(2), atol=1e-6)
    assert torch.allclose(train_inputs.std(dim=0, unbiased=False), torch.ones(2), atol=1e-5)
    # The test split is transformed with the training statistics, so it is not exactly
    # centred itself.
    assert prepared.data.test is not None
    assert not torch.allclose(prepared.data.test.inputs.mean(dim=0), torch.zeros(2), atol=1e-6)


def test_a_chain_optimizer_is_built_from_transforms() -> None:
    prepared = _prepare(
        "optimizer={lr: 0.01, chain: [{name: clip_by_global_norm, max_norm: 1.0}, "
        "scale_by_adam, {name: add_decayed_weights, weight_decay: 0.1}, scale_by_learning_rate]}"
    )
    assert isinstance(prepared.optimizer, optim.Optimizer)
    assert prepared.optimizer.param_groups[0]["lr"] == pytest.approx(0.0)  # warmup starts at 0


def test_the_schedule_warms_up_then_decays_to_the_end_of_the_run() -> None:
    prepared = _prepare("schedule={name: cosine, warmup: 10}", "optimizer.lr=0.1")
    scheduler, optimizer = prepared.scheduler, prepared.optimizer
    assert scheduler is not None
    lrs = []
    for _ in range(prepared.total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.0
    assert lrs[10] == pytest.approx(0.1)
    assert lrs[-1] < 0.01


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.preprocess=[whiten]", "unknown preprocessing 'whiten' in 'train.data.preprocess[0]'"),
        ("data.preprocess=[{name: standardize, axis: 0}]", "unknown key 'axis' in 'train.data.preprocess[0]'"),
        ("data.augment=[flipp]", "unknown augmentation 'flipp' in 'train.data.augment[0]'; did you mean 'flip'?"),
        ("optimizer={name: SGD, lr: 0.1, momentun: 0.9}", "unknown key 'momentun' in 'train.optimizer'; did you mean 'momentum'?"),
        ("optimizer={chain: [scale_by_adam]}", "must end with scale_by_learning_rate"),
        ("optimizer={chain: [scale_by_adm, scale_by_learning_rate]}", "did you mean 'scale_by_adam'?"),
        ("schedule.name=cosin", "unknown schedule 'cosin' in 'train.schedule.name'; did you mean 'cosine'?"),
        ("schedule.options={gama: 0.5}", "unknown key 'gama' in 'train.schedule.options'"),
        ("schedule.name=step", "'train.schedule.options' needs 'step_size' (step_decay has no default for it; the keys not given: step_size, gamma=0.1); add it there"),
        ("schedule={name: step, options: {step_size: 3}}", None),
        ("data.augment=[noise]", "'train.data.augment[0]' needs 'std' (GaussianNoise has no default for it; the keys not given: std); add it there"),
        ("optimizer={chain: [clip_by_norm, scale_by_learning_rate]}", "'train.optimizer.chain[0]' needs 'max_norm' (clip_by_norm has no default"),
        ("model.name=resnet", "unknown model 'resnet' in 'train.model.name'; valid names: mlp, cnn1d, cnn2d"),
        ("model.name=MLP", "did you mean 'mlp'?"),
        ("model.name=cnn2d", "in 'train.model' for dataset spirals with inputs (2,)"),
        ("init.weights=kaiming", "in 'train.init'"),
        ("loss=hinge", None),
    ],
)  # fmt: skip
def test_bad_entries_fail_before_anything_runs(override: str, message: str | None) -> None:
    if message is None:  # a valid combination, for contrast
        _prepare(override)
        return
    with pytest.raises(ConfigError) as error:
        _prepare(override)
    assert message in str(error.value)
