"""An epoch's last training batch of 1 sample is dropped; one of 2 or more trains as before."""

from __future__ import annotations

import gc
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gradwise.config import ConfigError, load_config
from gradwise.data import Dataset, DataSplits
from gradwise.distributed import World
from gradwise.runs import RunFolder
from gradwise.train import Trainer, load_checkpoint, make_trainer, prepare_run
from gradwise.train._distributed import _check_batch_norm_shards
from tests.distributed.multiprocess import run_on_ranks
from tests.train.conftest import SMALL_RUN
from tests.train.stop_at import StopAt

BATCH = 64


def _splits(samples: int) -> DataSplits:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(samples, 4, generator=generator)
    targets = torch.randint(0, 3, (samples,), generator=generator)
    return DataSplits(Dataset(inputs, targets), None, None, 3, (4,), "classification", "t", "t")


def _model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _trainer(model: nn.Module, samples: int, epochs: int, **options: object) -> Trainer:
    module = getattr(model, "module", model)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    return Trainer(
        model,
        optimizer,
        _splits(samples),
        batch_size=BATCH,
        epochs=epochs,
        seed=3,
        progress=False,
        **options,  # type: ignore[arg-type]
    )


def test_a_last_batch_of_one_sample_is_dropped_and_batch_norm_trains() -> None:
    # 129 = 2 x 64 + 1: torch's batch norm raised "Expected more than 1 value per channel"
    # on the third step.
    trainer = _trainer(_model(), 129, epochs=3)
    assert trainer.steps_per_epoch == len(trainer.batches) == 2
    assert trainer.total_steps == 6
    result = trainer.fit()
    assert (result.status, result.epochs, result.steps) == ("completed", 3, 6)
    assert all(torch.isfinite(p).all() for p in trainer.module.parameters())
    # Each epoch leaves out another sample: the last of its own order.
    left_out = {int(trainer.batches.order(epoch)[-1]) for epoch in range(3)}
    assert len(left_out) > 1


def _by_hand(samples: int, epochs: int) -> nn.Module:
    """The Trainer's steps written out: SGD on batches of 64 of each epoch's documented
    order (``Batches.order``), the short last batch included."""
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = _splits(samples).train
    order_of = _trainer(_model(), samples, epochs=1).batches.order  # (seed, epoch) -> order
    model.train()
    for epoch in range(epochs):
        order = order_of(epoch)
        for begin in range(0, samples, BATCH):
            index = order[begin : begin + BATCH]
            inputs, targets = (
                data.inputs.index_select(0, index),
                data.targets.index_select(0, index),
            )
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
    return model


@pytest.mark.parametrize("samples", [130, 128, 191])  # last batch 2, none, 63
def test_a_last_batch_of_two_or_more_trains_exactly_as_before(samples: int) -> None:
    model = _model()
    result = _trainer(model, samples, epochs=2).fit()
    assert result.steps == 2 * -(-samples // BATCH)
    expected = _by_hand(samples, epochs=2).state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, expected[name]), name


@pytest.mark.parametrize("stop", [1, 2, 3])  # mid-epoch, the epoch's last step, the next
def test_a_run_stopped_and_resumed_around_the_dropped_batch_is_bit_identical(
    tmp_path, stop: int
) -> None:
    whole_model = _model()
    whole = _trainer(whole_model, 129, epochs=3, run=RunFolder.create(tmp_path, "whole")).fit()
    assert whole.steps == 6

    folder = RunFolder.create(tmp_path, "split")
    stopped = _trainer(_model(), 129, epochs=3, run=folder, callbacks=[StopAt(stop)]).fit()
    assert stopped.status == "stopped"
    position = load_checkpoint(folder.last_checkpoint)["position"]
    assert position["step"] == stop
    assert position["epoch"] * 2 + position["batch"] == stop
    model = _model()
    resumed = _trainer(model, 129, epochs=3, run=folder).fit(resume=True)
    assert (resumed.status, resumed.steps, resumed.epochs) == ("completed", 6, 3)
    for name, value in whole_model.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name


def test_a_configured_run_counts_its_steps_without_the_dropped_batch(tmp_path) -> None:
    # spirals: 216 training samples, 5 x 43 + 1; batch norm in the model.
    overrides = [*SMALL_RUN, "data.batch_size=43", "model.norm=batch", "epochs=2"]
    config = load_config(overrides=[*overrides, f"runs_dir={tmp_path}", "schedule.name=cosine"])
    prepared = prepare_run(config)
    assert prepared.total_steps == 10
    trainer = make_trainer(prepared, None, progress=False)
    assert (trainer.steps_per_epoch, trainer.total_steps) == (5, 10)
    result = trainer.fit()
    assert (result.status, result.steps, result.epochs) == ("completed", 10, 2)
    # The cosine schedule was built for the steps the run takes: it ends at its end.
    assert trainer.scheduler is not None
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)


def test_a_training_split_of_one_sample_is_refused_before_training(tmp_path) -> None:
    # Its one batch would be dropped: no step could be taken.
    path = tmp_path / "four.csv"
    path.write_text("1.0,2.0,0\n2.0,1.0,1\n3.0,0.5,0\n0.1,0.2,1\n")
    data = [f"data.dataset={path}", "data.validation_split=0.25", "data.test_split=0.5"]
    data.append("data.preprocess=[]")  # (standardize refuses 1 sample on its own)
    config = load_config(overrides=[*SMALL_RUN, *data, f"runs_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"the training split holds 1 sample, and a batch"):
        prepare_run(config)


def test_distributed_batch_norm_is_not_refused_for_a_dropped_last_batch(tmp_path) -> None:
    # 216 = 5 x 43 + 1: the dropped last batch no longer counts; 71 leaves a last batch of 3
    # (some rank of 2 gets 1 sample), still refused.
    prepared = prepare_run(
        load_config(overrides=[*SMALL_RUN, "data.batch_size=43", "model.norm=batch", "runs_dir=x"])
    )
    _check_batch_norm_shards(prepared, World(0, 2), synced=False)
    prepared.config = replace(prepared.config, data=replace(prepared.config.data, batch_size=71))
    with pytest.raises(ConfigError, match=r"the last batch of each epoch .* holds 3 sample"):
        _check_batch_norm_shards(prepared, World(0, 2), synced=False)


def _rank_with_batch_norm(rank: int) -> dict[str, object]:
    # 129 samples, 2 ranks: the last batch's 1 sample (rank 0's shard empty, rank 1's of 1
    # sample) made batch norm raise; dropped, every shard holds 32.
    model = DistributedDataParallel(_model())
    try:
        result = _trainer(model, 129, epochs=2).fit()
        # (Not the running statistics: each rank's are its own shards'.)
        weights = {name: p.detach() for name, p in model.module.named_parameters()}
        return {"status": result.status, "steps": result.steps, "weights": weights}
    finally:
        del model  # it holds the process group: let it go before the group is destroyed
        gc.collect()


def test_two_processes_with_batch_norm_drop_the_last_batch_of_one_sample(tmp_path) -> None:
    ranks = run_on_ranks(_rank_with_batch_norm, (), tmp_path)
    for rank in ranks:
        assert (rank["status"], rank["steps"]) == ("completed", 4)
    for name, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][name]), name
