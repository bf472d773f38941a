"""How ``gradwise train --nproc N`` reports a rank that failed: its whole message, and a
``--resume`` hint only for a run with a checkpoint to resume."""

from __future__ import annotations

from pathlib import Path

from tests.cli.helpers import gradwise

# Every rank raises a two-line error in its first training step, before any checkpoint
# (every rank: which one torch's agent names first is then irrelevant).
FAILING_MODEL = """
import torch


class FailsInTraining(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 3)

    def forward(self, inputs):
        if self.training:
            raise ValueError("the first line says what failed\\nthe second line says why")
        return self.layer(inputs)


def build():
    return {"model": FailsInTraining()}
"""

CONFIG = """\
seed: 0
epochs: 1
monitor: null
data: {dataset: spirals, batch_size: 32}
model: {name: "failing_model:build"}
optimizer: {name: SGD, lr: 0.1}
"""


def test_a_failure_before_the_first_checkpoint_keeps_its_message_and_offers_no_resume(
    tmp_path: Path,
) -> None:
    (tmp_path / "failing_model.py").write_text(FAILING_MODEL)
    (tmp_path / "config.yaml").write_text(CONFIG)
    failed = gradwise(
        "train", "config.yaml", "--nproc", "2", "--runs-dir", "runs", "--no-progress",
        cwd=tmp_path,
    )  # fmt: skip
    assert failed.returncode == 1, failed.stderr
    assert "gradwise train: stopped: rank " in failed.stderr
    assert (
        " failed (the other ranks were stopped): ValueError: the first line says what "
        "failed\n  the second line says why\n"
    ) in failed.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert not (run / "checkpoints" / "last.pt").exists()
    assert "--resume" not in failed.stderr
    assert f"no checkpoint was written: runs/{run.name} has nothing to resume" in failed.stderr
