"""Distributed training: DDP equals one process, --nproc, crashes, resume, torchrun nodes."""

from __future__ import annotations

import gc
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gradwise import Trainer
from gradwise.cli import main
from gradwise.config import ConfigError, load_config, parse_config
from gradwise.data import Dataset, DataSplits
from gradwise.regularize import Penalty
from gradwise.train import Callback, TrainState, load_checkpoint, prepare_run
from gradwise.train._distributed import _backend, _check_defaults_chose_as_the_run, train_rank
from tests.cli.helpers import environment, gradwise, start
from tests.distributed.multiprocess import run_on_ranks
from tests.search.helpers import wait_for

# 100 samples in batches of 24: the last batch of each epoch (4 samples) splits 2 + 2,
# and 24 splits 12 + 12.
SAMPLES, BATCH, EPOCHS = 100, 24, 3


class _Float64(nn.Module):
    """Casts inputs to float64 (gradwise datasets hold float32)."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs.double()


def _data() -> DataSplits:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(SAMPLES, 6, generator=generator)
    labels = torch.randint(0, 3, (SAMPLES,), generator=generator)
    return DataSplits.from_datasets(Dataset(inputs, labels))


def _model() -> nn.Module:
    torch.manual_seed(1)
    layers = [_Float64(), nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)]
    return nn.Sequential(*layers).double()


def _fit(model: nn.Module) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    Trainer(model, optimizer, _data(), batch_size=BATCH, epochs=EPOCHS, progress=False).fit()


def _rank(rank: int, size: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=size)
    model = DistributedDataParallel(_model())
    _fit(model)
    torch.save(model.module.state_dict(), f"{out}.{rank}")
    dist.barrier()
    del model  # it holds the process group: destroyed with it, not at interpreter exit
    gc.collect()
    dist.destroy_process_group()


def test_two_processes_equal_one_process_with_the_whole_batch(tmp_path) -> None:
    out = str(tmp_path / "weights")
    mp.spawn(_rank, args=(2, f"file://{tmp_path / 'init'}", out), nprocs=2)
    single = _model()
    _fit(single)
    expected = single.state_dict()
    for rank in (0, 1):
        weights = torch.load(f"{out}.{rank}")
        for name, value in expected.items():
            torch.testing.assert_close(weights[name], value, rtol=1e-12, atol=1e-12)
    assert not torch.equal(expected["1.weight"], _model().state_dict()["1.weight"])


# 50 samples in batches of 24 on 3 ranks: the last batch of each epoch holds 2 samples, so
# rank 0's shard of it is empty (ranks 1 and 2 get one each). (A last batch of 1 sample is
# dropped, so 2 ranks never see an empty shard.)
TINY_SAMPLES = 50


class _StepLosses(Callback):
    """Records each step's loss (the whole batch's, as the Trainer checks and logs it)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step_end(self, state: TrainState) -> None:
        self.losses.append(state.loss)


def _fit_tiny_batches(model: nn.Module) -> dict[str, object]:
    generator = torch.Generator().manual_seed(0)
    data = DataSplits.from_datasets(
        Dataset(
            torch.randn(TINY_SAMPLES, 6, generator=generator),
            torch.randint(0, 3, (TINY_SAMPLES,), generator=generator),
        )
    )
    module = getattr(model, "module", model)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.2, momentum=0.9)
    steps = _StepLosses()
    result = Trainer(
        model,
        optimizer,
        data,
        batch_size=BATCH,
        epochs=2,
        penalty=Penalty(module, l2=1e-3),  # weighted by the shard's share too
        callbacks=[steps],
        log_every=1,
        progress=False,
    ).fit()
    return {
        "weights": module.state_dict(),
        "losses": steps.losses,
        "metrics": result.metrics,
    }


def _tiny_batches_rank(rank: int) -> dict[str, object]:
    model = DistributedDataParallel(_model())
    try:
        return _fit_tiny_batches(model)
    finally:
        del model  # it holds the process group: let it go before the group is destroyed
        gc.collect()


def test_a_batch_smaller_than_the_world_trains_like_one_process(tmp_path) -> None:
    ranks = run_on_ranks(_tiny_batches_rank, (), tmp_path, world_size=3)
    single = _fit_tiny_batches(_model())
    losses = single["losses"]
    assert len(losses) == 6
    assert all(math.isfinite(loss) for loss in losses)
    for rank in ranks:
        assert rank["losses"] == pytest.approx(losses, rel=1e-12, abs=1e-12)
        assert rank["metrics"] == pytest.approx(single["metrics"], rel=1e-12, abs=1e-12)
        for name, value in single["weights"].items():
            torch.testing.assert_close(rank["weights"][name], value, rtol=1e-12, atol=1e-12)


class _StopOnRankZero(Callback):
    """Rank 0's asks for a stop at the end of the first epoch; the other ranks' never do."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def on_epoch_end(self, state: TrainState) -> None:
        if self.rank == 0:
            state.request_stop("rank 0 has seen enough")


def _stop_on_one_rank(rank: int) -> dict[str, object]:
    model = DistributedDataParallel(_model())
    try:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
        result = Trainer(
            model, optimizer, _data(), batch_size=BATCH, epochs=EPOCHS, progress=False,
            callbacks=[_StopOnRankZero(rank)],
        ).fit()  # fmt: skip
        return {
            "status": result.status,
            "message": result.summary.get("message"),
            "step": result.steps,
        }
    finally:
        del model
        gc.collect()


def test_a_stop_one_rank_asks_for_at_an_epoch_end_stops_every_rank_there(tmp_path) -> None:
    # Before, rank 0 stopped and rank 1 trained on, waiting for rank 0 in its next
    # gradient allreduce until the group's timeout.
    ranks = run_on_ranks(_stop_on_one_rank, (), tmp_path, timeout=60.0)
    steps_per_epoch = math.ceil(SAMPLES / BATCH)
    assert ranks[0] == {
        "status": "stopped",
        "message": "rank 0 has seen enough",
        "step": steps_per_epoch,
    }
    assert ranks[1] == {
        "status": "stopped", "message": "a callback of another process requested a stop",
        "step": steps_per_epoch,
    }  # fmt: skip


CONFIG = """\
seed: 0
epochs: {epochs}
monitor: null
log_every: 2
data: {{dataset: spirals, batch_size: 32, preprocess: [standardize]}}
model: {{name: mlp, width: 32, depth: 2, norm: none}}
optimizer: {{name: SGD, lr: 0.1, momentum: 0.9}}
"""


def _config(folder: Path, epochs: int) -> Path:
    path = folder / "ddp.yaml"
    path.write_text(CONFIG.format(epochs=epochs))
    return path


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def _assert_same_weights(first: Path, second: Path) -> None:
    a, b = _weights(first), _weights(second)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-6)


def test_nproc_2_trains_like_one_process_and_rank_0_writes_one_run(tmp_path, monkeypatch) -> None:
    config = _config(tmp_path, epochs=3)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the launch leaves no torchelastic_* folder
    two = gradwise(
        "train", str(config), "--nproc", "2", "--runs-dir", "two", "--no-progress", cwd=tmp_path
    )
    assert two.returncode == 0, two.stderr
    assert not list(temp.glob("torchelastic_*"))
    assert not list(temp.glob("gradwise-launch-*"))
    one = gradwise("train", str(config), "--runs-dir", "one", "--no-progress", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    (run_two,) = (tmp_path / "two").iterdir()
    (run_one,) = (tmp_path / "one").iterdir()
    _assert_same_weights(run_one, run_two)
    assert (run_two / "report.html").is_file()
    lines = (run_two / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len((run_one / "metrics.jsonl").read_text().splitlines())
    assert two.stdout.count("run folder:") == 1


def _rank_processes(launcher: int) -> list[int]:
    """The launcher's children that run a rank (multiprocessing spawn workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher and b"spawn_main" in command:
            pids.append(int(entry.name))
    return sorted(pids)


def test_a_crashed_rank_stops_the_others_and_the_run_resumes(tmp_path) -> None:
    config = _config(tmp_path, epochs=60)
    launcher = start(
        "train", str(config), "--nproc", "2", "--runs-dir", "runs", "--no-progress", cwd=tmp_path
    )
    runs = tmp_path / "runs"
    wait_for(lambda: list(runs.glob("*/checkpoints/last.pt")), 120, "the first checkpoint")
    ranks = _rank_processes(launcher.pid)
    assert len(ranks) == 2, ranks
    os.kill(ranks[-1], signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = launcher.communicate(timeout=120)
    assert time.monotonic() - killed_at < 30, "the other rank hung"
    assert launcher.returncode == 1, stderr
    assert "failed" in stderr
    assert "the other ranks were stopped" in stderr
    assert "--resume" in stderr
    (run,) = runs.iterdir()
    assert f"--resume runs/{run.name} --nproc 2" in stderr
    stopped_at = load_checkpoint(run / "checkpoints" / "last.pt")["position"]["step"]
    assert stopped_at < 60 * 7

    resumed = gradwise("train", "--resume", str(run), "--nproc", "2", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    whole = gradwise(
        "train", str(config), "--nproc", "2", "--runs-dir", "whole", "--no-progress", cwd=tmp_path
    )
    assert whole.returncode == 0, whole.stderr
    (uninterrupted,) = (tmp_path / "whole").iterdir()
    _assert_same_weights(run, uninterrupted)


def _resume_rank(rank: int, port: int, runs: list[str]) -> None:
    """One of two ranks resuming ``runs[rank]`` (rank 1's path may not exist)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
    )  # fmt: skip
    torch.set_num_threads(1)
    train_rank(None, resume=runs[rank], progress=False)


def test_a_machine_that_cannot_see_the_run_folder_resumes_with_rank_0s(tmp_path) -> None:
    # Rank 0 sends the config, the checkpoint and the preprocessing (standardize, fitted
    # when the run started): another machine needs none of the run's files.
    config = _config(tmp_path, epochs=2)
    first = gradwise(
        "train", str(config), "--nproc", "2", "--runs-dir", "first", "--no-progress", cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    (run,) = (tmp_path / "first").iterdir()
    assert (run / "preprocess.npz").is_file()
    resumed = {}
    for name, rank_1_sees in (("seen", True), ("unseen", False)):
        copy = tmp_path / name
        shutil.copytree(run, copy)
        saved = copy / "config.yaml"  # one more epoch to train after the resume
        saved.write_text(saved.read_text().replace("epochs: 2", "epochs: 3"))
        elsewhere = str(copy) if rank_1_sees else str(tmp_path / "not-on-this-machine")
        mp.spawn(_resume_rank, args=(_free_port(), [str(copy), elsewhere]), nprocs=2)
        checkpoint = load_checkpoint(copy / "checkpoints" / "last.pt")
        assert checkpoint["position"]["epoch"] == 3
        resumed[name] = checkpoint["model"]
    for key, value in resumed["seen"].items():
        assert torch.equal(resumed["unseen"][key], value), key


def test_defaults_that_chose_another_backend_than_the_runs_are_named() -> None:
    # What a machine that cannot see the run folder checks once rank 0's config arrives.
    run = parse_config({"distributed": {"backend": "nccl"}, "device": "cuda"})
    with pytest.raises(ConfigError, match=r"this machine cannot see runs/r/config.yaml, so it "
                       r"chose the backend and the device from the defaults \(gloo, cpu\) "
                       r"before rank 0 sent the run's config, which trains with nccl on cuda\. "
                       r"Copy the run's config.yaml"):  # fmt: skip
        _check_defaults_chose_as_the_run(run, "gloo", torch.device("cpu"), "runs/r")
    same = parse_config({"device": "cpu"})  # gloo on the CPU, as the defaults chose
    _check_defaults_chose_as_the_run(same, "gloo", torch.device("cpu"), "runs/r")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_two_torchrun_nodes_on_loopback_train_like_one_process(tmp_path) -> None:
    config = _config(tmp_path, epochs=2)
    port = str(_free_port())
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node-rank={rank}",
                "--nproc-per-node=1",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                "-m",
                "gradwise",
                "train",
                str(config),
                "--runs-dir",
                str(tmp_path / "nodes"),
                "--no-progress",
            ],
            cwd=tmp_path / ("." if rank == 0 else ""),
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, stderr
    assert "run folder:" in outputs[0][0]
    assert "run folder:" not in outputs[1][0]
    one = gradwise("train", str(config), "--runs-dir", "one", "--no-progress", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    (run_nodes,) = (tmp_path / "nodes").iterdir()
    (run_one,) = (tmp_path / "one").iterdir()
    _assert_same_weights(run_one, run_nodes)


def scheduled_rates(overrides: list[str], steps: int) -> list[float]:
    """The first param group's lr at each of the first ``steps`` steps of the run."""
    prepared = prepare_run(load_config(None, overrides))
    optimizer, scheduler = prepared.optimizer, prepared.scheduler
    assert scheduler is not None
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("schedule", [None, "cosine"])
def test_linear_scaling_rule_scales_the_lr_and_ramps_up_to_it(schedule) -> None:
    overrides = [
        "data.batch_size=256",
        "distributed.reference_batch_size=64",
        "distributed.scaling_warmup_steps=10",
        "optimizer.lr=0.01",
        "epochs=40",
        f"schedule={'null' if schedule is None else '{name: cosine}'}",
    ]
    lrs = scheduled_rates(overrides, 12)
    # Goyal et al.: from the reference lr to 4x (256 / 64) in 10 steps, linearly.
    expected = [0.01 + (0.04 - 0.01) * step / 10 for step in range(11)]
    assert lrs[:11] == pytest.approx(expected, rel=1e-6)
    assert lrs[11] <= 0.04 + 1e-12


def test_a_decaying_schedule_after_the_scaling_ramp_still_decays_to_its_end() -> None:
    overrides = [
        "data.batch_size=256",
        "distributed.reference_batch_size=64",
        "distributed.scaling_warmup_steps=20",
        "optimizer={name: SGD, lr: 0.01}",
        "steps=100",
        "schedule={name: cosine}",
    ]
    lrs = scheduled_rates(overrides, 100)
    # Goyal et al.'s ramp from 0.01 to 0.04 over 20 steps, then a cosine from 0.04 to 0
    # over the remaining 80 (as build_schedule's own warmup leaves its decay).
    expected = [
        0.01 + 0.03 * step / 20 if step < 20 else 0.02 * (1 + math.cos(math.pi * (step - 20) / 80))
        for step in range(100)
    ]
    assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert lrs[-1] < 0.04 * 1e-3


def test_compression_state_of_every_rank_goes_into_the_checkpoint(tmp_path) -> None:
    config = _config(tmp_path, epochs=1)
    done = gradwise(
        "train",
        str(config),
        "--nproc",
        "2",
        "--runs-dir",
        "runs",
        "--no-progress",
        "--set",
        "distributed.compression=one_bit",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (run,) = (tmp_path / "runs").iterdir()
    ranks = load_checkpoint(run / "checkpoints" / "last.pt")["ranks"]
    assert len(ranks) == 2
    memories = [rank["rank_state"]["worker_error"] for rank in ranks]
    assert memories[0].keys() == memories[1].keys() != set()
    name = next(iter(memories[0]))
    assert not torch.equal(memories[0][name], memories[1][name])  # each rank its own


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["distributed.compression=one_bit_adam"],
            "'train.distributed.compression: one_bit_adam' needs 'train.optimizer.name: "
            "OneBitAdam'",
        ),
        (
            [
                "optimizer={name: SGD, lr: 0.01, momentum: 0.9}",
                "distributed.compression=one_bit",
                "distributed.compression_options={momentum: 0.9}",
            ],
            "the optimizer must not add its own; SGD has momentum 0.9. Set "
            "'train.optimizer.momentum: 0', or drop the hook's momentum.",
        ),
        (
            # QA: AdamW was told to set 'train.optimizer.momentum', a key it does not have.
            [
                "optimizer={name: AdamW, lr: 0.001}",
                "distributed.compression=one_bit",
                "distributed.compression_options={momentum: 0.9}",
            ],
            "AdamW has beta1 0.9 (its momentum, betas[0]). Use 'train.optimizer.name: SGD' "
            "with momentum 0, or drop the hook's momentum.",
        ),
        (
            ["distributed.compression=powersgd", "distributed.compression_options={rank: 2}"],
            "in 'train.distributed': The 'options' parameter of register_compression must be",
        ),
    ],
    ids=[
        "one_bit_adam_without_its_optimizer",
        "momentum_in_hook_and_optimizer",
        "momentum_in_hook_and_adams_beta1",
        "unknown_option",
    ],
)
def test_inconsistent_compression_settings_fail_with_a_clear_message(
    tmp_path, capsys, overrides: list[str], message: str
) -> None:
    config = _config(tmp_path, epochs=1)
    settings = [item for override in overrides for item in ("--set", override)]
    runs = tmp_path / "runs"
    args = ["train", str(config), "--nproc", "2", "--runs-dir", str(runs), "--no-progress"]
    assert main([*args, *settings]) == 2  # a config error, found before any rank starts
    error = capsys.readouterr().err
    assert error.startswith("gradwise train: error: ")
    assert error.count("\n") == 1
    assert message in error
    assert not runs.exists()


ONE_BIT_ADAM = "optimizer={name: OneBitAdam, lr: 0.001, freeze_step: 5}"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["distributed.compression=bogus"],
            "unknown compression 'bogus' in 'train.distributed.compression'; valid names: none, "
            "fp16, powersgd, one_bit, sign_majority, one_bit_two_phase, one_bit_adam",
        ),
        ([ONE_BIT_ADAM], "'train.optimizer.name: OneBitAdam' needs 'train.distributed."),
        (["distributed.compression=one_bit_adam"], "needs 'train.optimizer.name: OneBitAdam'"),
        (
            [
                ONE_BIT_ADAM,
                "distributed.compression=one_bit_adam",
                "distributed.compression_options={freeze_step: 10, bogus: 1}",
            ],
            "must be empty with compression one_bit_adam, which takes no options (1-bit Adam's "
            "own settings, such as freeze_step, go in 'train.optimizer'). Got bogus, freeze_step",
        ),
        (
            ["distributed.compression_options={granularity: row}"],
            "The 'options' parameter of register_compression must be empty ('none' takes no "
            "options). Got ['granularity']",
        ),
        (
            ["distributed.compression=one_bit", "distributed.compression_options={rank: 2}"],
            "must be options of 'one_bit' (error_feedback, granularity, two_level, momentum)",
        ),
        (
            ["distributed.scaling_warmup_steps=50"],
            "needs 'train.distributed.reference_batch_size'",
        ),
        (
            [ONE_BIT_ADAM, "distributed.compression=one_bit_adam", "clip_grad_norm=1.0"],
            "'train.clip_grad_norm' (1.0) cannot be used with OneBitAdam",
        ),
    ],
    ids=[
        "unknown_compression",
        "one_bit_adam_optimizer_without_its_compression",
        "one_bit_adam_compression_without_its_optimizer",
        "options_for_one_bit_adam",
        "options_for_none",
        "unknown_option",
        "scaling_ramp_without_reference_batch",
        "one_bit_adam_with_clipping",
    ],
)
def test_one_process_checks_the_distributed_section(
    tmp_path, capsys, overrides: list[str], message: str
) -> None:
    config = _config(tmp_path, epochs=1)
    settings = [item for override in overrides for item in ("--set", override)]
    runs = tmp_path / "runs"
    assert main(["train", str(config), "--runs-dir", str(runs), "--no-progress", *settings]) == 2
    error = capsys.readouterr().err
    assert error.startswith("gradwise train: error: ")
    assert error.count("\n") == 1
    assert message in error
    assert not runs.exists()


def test_one_process_trains_alone_with_a_valid_distributed_section(tmp_path) -> None:
    config = _config(tmp_path, epochs=1)
    compression = ["--set", "distributed.compression=one_bit"]
    options = ["--set", "distributed.compression_options={granularity: tensor}"]
    args = ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    assert main([*args, *compression, *options]) == 0


def test_a_rank_that_cannot_make_the_run_folder_gives_the_one_process_error(
    tmp_path, capsys
) -> None:
    # The config builds and the runs folder can be written, so the ranks start; rank 0
    # then cannot create the run folder: its name is taken by a file.
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs/ddp").write_text("not a folder")
    config = _config(tmp_path, epochs=1)
    args = ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    args += ["--set", "name=ddp"]
    assert main(args) == 2
    one = capsys.readouterr().err
    assert "runs/ddp already exists" in one
    assert main([*args, "--nproc", "2"]) == 2
    assert capsys.readouterr().err == one  # one line, no resume hint: the run never began


def test_batch_norm_with_a_shard_of_one_sample_is_refused_before_training(tmp_path, capsys) -> None:
    # spirals: 216 training samples in batches of 71, so the last batch of each epoch
    # holds 3 and one of 2 ranks would normalize 1 sample ("Expected more than 1 value
    # per channel" from torch, after the first epoch's full batches).
    config = _config(tmp_path, epochs=1)
    runs = tmp_path / "runs"
    args = ["train", str(config), "--nproc", "2", "--runs-dir", str(runs), "--no-progress"]
    settings = ["--set", "model.norm=batch", "--set", "data.batch_size=71"]
    assert main([*args, *settings]) == 2
    error = capsys.readouterr().err
    assert error.startswith("gradwise train: error: the model has batch norm (layer ")
    assert error.count("\n") == 1
    assert "the last batch of each epoch (216 training samples, batch_size 71) holds 3" in error
    assert "Use batch_size 70 (every batch then holds 4 or more), fewer processes" in error
    assert not runs.exists()


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (more processes than GPUs)"
)
def test_more_processes_than_gpus_is_a_usage_error(tmp_path, capsys) -> None:
    gpus = torch.cuda.device_count()
    runs = tmp_path / "runs"
    args = ["train", "--runs-dir", str(runs), "--no-progress", "--set", "epochs=1"]
    assert main([*args, "--set", "device=cuda", "--nproc", str(gpus + 1)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(
        f"gradwise train: error: process {gpus} is number {gpus} on its machine, which has "
        f"{gpus} GPU(s): each process needs its own. Start at most {gpus} process(es)"
    )
    assert not runs.exists()


UNUSED_PARAMETER_MODULE = """
import torch


class SpareHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh())
        self.head = torch.nn.Linear(16, 3)
        self.spare_head = torch.nn.Linear(16, 3)  # never used in forward

    def forward(self, inputs):
        return self.head(self.body(inputs))


def build():
    return {"model": SpareHead()}
"""


def test_a_parameter_unused_in_forward_needs_find_unused_parameters(tmp_path) -> None:
    (tmp_path / "spare_head_model.py").write_text(UNUSED_PARAMETER_MODULE)
    config = _config(tmp_path, epochs=1)
    args = ["train", str(config), "--nproc", "2", "--no-progress"]
    model = ["--set", "model.name=spare_head_model:build"]
    failed = gradwise(*args, "--runs-dir", "failed", *model, cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    # The cause (DDP's first line, and a later one), not only its last line, and the key
    # that fixes it.
    assert "set 'train.distributed.find_unused_parameters: true'" in failed.stderr
    assert "Expected to have finished reduction in the prior iteration" in failed.stderr
    assert "\n  Parameter indices which did not receive grad for rank" in failed.stderr
    # It failed at its second step, before any checkpoint: nothing to resume.
    (run,) = (tmp_path / "failed").iterdir()
    assert not (run / "checkpoints" / "last.pt").exists()
    assert "--resume" not in failed.stderr
    assert f"no checkpoint was written: failed/{run.name} has nothing to resume" in failed.stderr

    unused = ["--set", "distributed.find_unused_parameters=true"]
    trained = gradwise(*args, "--runs-dir", "trained", *model, *unused, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr


def test_ctrl_c_on_the_launcher_stops_every_rank_at_one_checkpointed_step(tmp_path) -> None:
    config = _config(tmp_path, epochs=2000)
    launcher = start(
        "train", str(config), "--nproc", "2", "--runs-dir", "runs", "--no-progress", cwd=tmp_path
    )
    runs = tmp_path / "runs"
    wait_for(lambda: list(runs.glob("*/checkpoints/last.pt")), 120, "the first checkpoint")
    time.sleep(1.0)
    launcher.send_signal(signal.SIGINT)
    interrupted_at = time.monotonic()
    _, stderr = launcher.communicate(timeout=120)
    # About 2 s here. The ranks, done, used to wait for the stopping agent to read their
    # results until its 30-second grace period ran out and it killed them.
    assert time.monotonic() - interrupted_at < 20, "the ranks outlived their checkpoint"
    assert launcher.returncode == 130, stderr
    # torch's agent logs "Received 2 death signal, shutting down workers": gradwise's own
    # message says what happened, once.
    assert "death signal" not in stderr
    (run,) = runs.iterdir()
    assert f"--resume runs/{run.name} --nproc 2" in stderr
    summary = (run / "summary.json").read_text()
    assert '"status": "interrupted"' in summary
    position = load_checkpoint(run / "checkpoints" / "last.pt")["position"]
    assert 0 < position["step"] < 2000 * 7


@pytest.mark.parametrize(
    ("overrides", "on_a_gpu_machine", "on_a_cpu_machine"),
    [
        (["device=auto"], "nccl", "gloo"),  # backend auto: the GPUs where there are some
        ([], "gloo", "gloo"),  # the default device is cpu
        (["device=cpu"], "gloo", "gloo"),
        (["distributed.backend=gloo"], "gloo", "gloo"),
        (["device=cpu", "distributed.backend=nccl"], "nccl", "nccl"),  # as asked
    ],
)
def test_the_backend_follows_where_the_ranks_train(
    overrides: list[str], on_a_gpu_machine: str, on_a_cpu_machine: str
) -> None:
    config = load_config(None, overrides)
    expected = on_a_gpu_machine if torch.cuda.is_available() else on_a_cpu_machine
    assert _backend(config) == expected


def _doubled(value: int) -> int:
    return 2 * value


def test_a_launch_gives_back_the_signal_handlers_it_found() -> None:
    # torch's process context installs its own SIGINT/SIGTERM handler and leaves it: a
    # later Ctrl-C in the launching process raised torch's SignalException.
    from gradwise.distributed import launch

    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    assert launch(_doubled, (21,), 1) == 42
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_the_first_rank_alone_prints_and_records_the_live_findings(tmp_path) -> None:
    # Every rank's live doctor printed each finding and appended it to findings.jsonl.
    args = ["--set", "epochs=3", "--set", "optimizer.lr=3"]  # a rate that blows up
    run = gradwise("train", "--nproc", "2", *args, "--runs-dir", "runs", "--no-progress",
                   cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    printed = [line for line in run.stderr.splitlines() if line.startswith("gradwise: ")]
    assert printed, run.stderr
    assert len(printed) == len(set(printed)), printed
    (folder,) = (tmp_path / "runs").iterdir()
    recorded = (folder / "findings.jsonl").read_text().splitlines()
    assert len(recorded) == len(printed)
