"""distributed.sync_batch_norm: batch-norm statistics pooled over the ranks (GPUs only)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gradwise.cli import main
from gradwise.train import freeze
from gradwise.train._distributed import sync_batch_norm
from tests.distributed.multiprocess import run_on_ranks

BATCH, STEPS = 24, 6


def _model() -> nn.Module:
    torch.manual_seed(3)
    layers = [nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)]
    return nn.Sequential(*layers).double()


def test_live_batch_norm_layers_become_sync_batch_norm_on_the_same_tensors() -> None:
    model = nn.Sequential(_model(), nn.Sequential(nn.BatchNorm1d(3).double()))
    freeze(model, ["1.0.*"], freeze_statistics=True)  # keeps its stored statistics
    calls: list[str] = []
    model[0][1].register_forward_hook(lambda *_: calls.append("hooked"))
    tensors = {name: id(t) for name, t in model.state_dict(keep_vars=True).items()}
    keys = list(model.state_dict())

    converted = sync_batch_norm(model)

    assert converted is model
    assert type(model[0][1]) is nn.SyncBatchNorm
    assert type(model[1][0]) is nn.BatchNorm1d  # frozen: nothing to pool
    assert list(model.state_dict()) == keys  # checkpoints load into a one-process model
    assert {n: id(t) for n, t in model.state_dict(keep_vars=True).items()} == tensors
    model.eval()  # SyncBatchNorm evaluates on the CPU (running statistics, no pooling)
    model(torch.randn(4, 6, dtype=torch.float64))
    assert calls == ["hooked"]


def test_a_batch_norm_layer_given_alone_is_replaced() -> None:
    layer = nn.BatchNorm2d(4)
    assert type(sync_batch_norm(layer)) is nn.SyncBatchNorm
    assert type(layer) is nn.BatchNorm2d


@pytest.mark.parametrize("nproc", [[], ["--nproc", "2"]], ids=["one_process", "two_processes"])
def test_sync_batch_norm_on_the_cpu_is_refused_before_training(tmp_path, capsys, nproc) -> None:
    runs = tmp_path / "runs"
    args = ["train", "--runs-dir", str(runs), "--no-progress", "--set", "epochs=1"]
    settings = ["--set", "model.norm=batch", "--set", "distributed.sync_batch_norm=true"]
    assert main([*args, *nproc, *settings]) == 2
    error = capsys.readouterr().err
    assert error.startswith(
        "gradwise train: error: 'train.distributed.sync_batch_norm' pools batch-norm "
        "statistics with torch's SyncBatchNorm, which runs on CUDA GPUs only, but this run "
        "trains on the CPU (train.device: cpu). Set 'train.device: cuda'"
    )
    assert error.count("\n") == 1
    assert not runs.exists()


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(BATCH, 6, generator=generator, dtype=torch.float64) * 3 + 1,
            torch.randint(0, 3, (BATCH,), generator=generator),
        )
        for _ in range(STEPS)
    ]


def _train(model: nn.Module, rank: int, world: int) -> None:
    """SGD with momentum; each rank's mean loss weighted by its share of the batch, so that
    DDP's average is the whole batch's gradient."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for inputs, labels in _batches():
        share = BATCH // world
        rows = slice(rank * share, (rank + 1) * share)
        logits = model(inputs[rows].cuda())
        loss = F.cross_entropy(logits, labels[rows].cuda()) * world * share / BATCH
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _rank_weights(rank: int, synced: bool) -> dict[str, torch.Tensor]:
    # Both ranks on the one GPU this test needs: gloo moves CUDA tensors (nccl would want
    # a GPU per rank).
    module = (sync_batch_norm(_model()) if synced else _model()).cuda()
    model = DistributedDataParallel(module, device_ids=[0])
    _train(model, rank, world=2)
    return {name: value.cpu() for name, value in module.state_dict().items()}


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="SyncBatchNorm has GPU kernels only: run on a machine with a CUDA GPU",
)
def test_two_ranks_with_synced_batch_norm_train_like_one_process_on_the_whole_batch(
    tmp_path,
) -> None:
    one = _model().cuda()
    _train(one, rank=0, world=1)
    expected = {name: value.cpu() for name, value in one.state_dict().items()}
    (tmp_path / "synced").mkdir()
    (tmp_path / "per_rank").mkdir()
    for weights in run_on_ranks(_rank_weights, (True,), tmp_path / "synced"):
        assert weights.keys() == expected.keys()
        for name, value in expected.items():
            torch.testing.assert_close(weights[name], value, rtol=1e-10, atol=1e-12)
    # Each rank normalizing its own 12 samples trains another model.
    unsynced = run_on_ranks(_rank_weights, (False,), tmp_path / "per_rank")[0]
    assert not torch.allclose(unsynced["0.weight"], expected["0.weight"], rtol=1e-6, atol=0)
