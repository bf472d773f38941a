"""A `gradwise train` run SIGKILLed after a checkpoint keeps its probe files.

probes.jsonl and histograms.jsonl are appended just before each checkpoint (an epoch's
end's, or one of checkpoint.every_steps within an epoch): a killed run leaves them valid and holding exactly the records up to its last
checkpoint, and `--resume` ends with the files of an uninterrupted run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from gradwise.train import load_checkpoint
from tests.cli.helpers import environment, gradwise

CONFIG = """\
name: small
seed: 0
epochs: 4
log_every: 5
data: {dataset: spirals, batch_size: 16}
model: {name: mlp, width: 16, depth: 2, norm: none}
optimizer: {lr: 0.01}
monitor: {every: 5, cheap_every: 2}
"""
FILES = ("probes.jsonl", "histograms.jsonl")

# What `gradwise train small.yaml` runs, with one more callback: it SIGKILLs the process at
# the first step after epoch 2's checkpoint (no Python cleanup runs, as with the OOM killer).
_KILLED = """
import os, signal
from gradwise.config import load_config
from gradwise.train import Callback, train

class KillAfterSecondEpoch(Callback):
    def on_step_end(self, state):
        if state.epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)

train(load_config("small.yaml"), progress=False, callbacks=[KillAfterSecondEpoch()])
"""


def _lines(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` as JSON: each must be complete (ended by a newline)."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path.name} ends mid-line"
    return [json.loads(line) for line in data.decode("ascii").splitlines()]


def _whole_and_killed(tmp_path: Path, config: str, killer: str) -> tuple[Path, Path, Any]:
    """The run folders of ``config`` run uninterrupted and run by ``killer`` (a script
    that SIGKILLs it), and the killed run's checkpointed position."""
    (tmp_path / "whole").mkdir()
    (tmp_path / "whole" / "small.yaml").write_text(config)
    completed = gradwise("train", "small.yaml", "--no-progress", cwd=tmp_path / "whole")
    assert completed.returncode == 0, completed.stderr
    (tmp_path / "small.yaml").write_text(config)
    killed = subprocess.run(
        [sys.executable, "-c", killer],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = tmp_path / "runs/small"
    position = load_checkpoint(run / "checkpoints/last.pt")["position"]
    return tmp_path / "whole" / "runs/small", run, position


def _assert_files_up_to(run: Path, whole: Path, step: int) -> None:
    """The killed run's files hold exactly the uninterrupted run's lines up to ``step``."""
    for name in FILES:
        expected = [r for r in _lines(whole / name) if r["step"] <= step]
        assert _lines(run / name) == expected, name


def _assert_resumed_like_whole(tmp_path: Path, run: Path, whole: Path) -> None:
    resumed = gradwise("train", "--resume", "runs/small", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    for name in FILES:
        assert (run / name).read_bytes() == (whole / name).read_bytes(), name


def test_a_killed_run_keeps_its_probe_files_up_to_the_checkpoint_and_resumes_them(
    tmp_path: Path,
) -> None:
    whole, run, position = _whole_and_killed(tmp_path, CONFIG, _KILLED)
    assert position["epoch"] == 2
    _assert_files_up_to(run, whole, position["step"])
    for name in FILES:
        assert max(record["step"] for record in _lines(run / name)) > position["step"] // 2
    _assert_resumed_like_whole(tmp_path, run, whole)


# The same run with a checkpoint every 7 steps, SIGKILLed at the step after the first
# mid-epoch one past epoch 1 (spirals' 16-sample batches give more than 7 steps an epoch).
_KILLED_MID_EPOCH = """
import os, signal
from gradwise.config import load_config
from gradwise.train import Callback, train

class KillAfterAMidEpochCheckpoint(Callback):
    def on_step_end(self, state):
        if state.epoch >= 1 and state.step % 7 == 1 and state.batch_index > 1:
            os.kill(os.getpid(), signal.SIGKILL)

train(load_config("small.yaml"), progress=False, callbacks=[KillAfterAMidEpochCheckpoint()])
"""


def test_a_run_killed_after_a_mid_epoch_checkpoint_keeps_its_probe_files_up_to_it(
    tmp_path: Path,
) -> None:
    # Before, the files were appended at epoch ends only: a kill after a checkpoint of
    # checkpoint.every_steps left them at the last epoch's end, behind the checkpoint.
    config = CONFIG + "checkpoint: {every_steps: 7}\n"
    whole, run, position = _whole_and_killed(tmp_path, config, _KILLED_MID_EPOCH)
    assert position["batch"] > 0  # within an epoch
    assert position["step"] % 7 == 0
    _assert_files_up_to(run, whole, position["step"])
    # Records of the checkpoint's own epoch are there (monitor.cheap_every is 2).
    probes = _lines(run / "probes.jsonl")
    assert max(record["step"] for record in probes) > position["step"] - position["batch"]
    _assert_resumed_like_whole(tmp_path, run, whole)
