"""Killing a run with SIGKILL or Ctrl-C, then resuming it: a real subprocess, a real signal."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch

from gradwise.runs import read_records
from gradwise.train import load_checkpoint
from tests.cli.helpers import SMALL_CONFIG, gradwise, start


def _wait_for_step(run: Path, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        checkpoint = run / "checkpoints/last.pt"
        metrics = run / "metrics.jsonl"
        if checkpoint.is_file() and metrics.is_file():
            records = read_records(metrics)
            if records and records[-1]["step"] >= step:
                return
        time.sleep(0.02)
    raise TimeoutError(f"the run never reached step {step}")


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints/last.pt")["model"]  # type: ignore[no-any-return]


def test_sigkill_mid_epoch_then_resume_gives_bit_identical_parameters(tmp_path: Path) -> None:
    # The uninterrupted reference run trains side by side with the one killed (one thread
    # each on two cores); they share nothing but the config.
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "small.yaml").write_text(SMALL_CONFIG)
    uninterrupted = start("train", "small.yaml", "--no-progress", cwd=tmp_path / "reference")
    reference = tmp_path / "reference" / "runs/small"

    (tmp_path / "small.yaml").write_text(SMALL_CONFIG)
    process = start("train", "small.yaml", "--no-progress", cwd=tmp_path)
    run = tmp_path / "runs/small"
    _wait_for_step(run, 200)  # 27 steps per epoch: well into the run, mid-epoch
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(run / "checkpoints/last.pt")["position"]
    assert 0 < killed_at["step"] < 60 * 27

    resumed = gradwise("train", "--resume", "runs/small", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    _, stderr = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, stderr
    final, expected = _final_weights(run), _final_weights(reference)
    assert final.keys() == expected.keys()
    for name in expected:
        assert torch.equal(final[name], expected[name]), name

    # The metrics match the uninterrupted run's record for record (except wall time).
    def without_time(path: Path) -> list[dict[str, object]]:
        return [{k: v for k, v in r.items() if k != "time"} for r in read_records(path)]

    assert without_time(run / "metrics.jsonl") == without_time(reference / "metrics.jsonl")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_checkpoints_and_exits_cleanly_then_resumes(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # SIGTERM (a scheduler's preemption) killed a single-process run at once: no checkpoint
    # of the steps since the last epoch's end, and a summary left "running".
    (tmp_path / "small.yaml").write_text(SMALL_CONFIG)
    process = start("train", "small.yaml", "--no-progress", cwd=tmp_path)
    run = tmp_path / "runs/small"
    _wait_for_step(run, 100)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "resume with: gradwise train --resume runs/small" in stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    stopped_at = load_checkpoint(run / "checkpoints/last.pt")["position"]["step"]
    assert read_records(run / "metrics.jsonl")[-1]["step"] == stopped_at

    resumed = gradwise("train", "--resume", "runs/small", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
