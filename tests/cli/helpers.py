"""Running the real ``gradwise`` command in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

COMMAND = [sys.executable, "-m", "gradwise"]

# A run small enough to prune in seconds: 3 epochs of a 2-layer MLP on spirals.
PRUNE_CONFIG = """\
seed: 0
epochs: 3
log_every: 5
data: {dataset: spirals, batch_size: 16}
model: {name: mlp, norm: none, options: {width: [24, 16]}}
optimizer: {name: Adam, lr: 0.01}
schedule: null
monitor: null
"""


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # the project's machines: 2 shared cores
    env["PYTHONUNBUFFERED"] = "1"
    return env


def gradwise(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*COMMAND, *args],
        cwd=cwd,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


SMALL_CONFIG = """\
name: small
seed: 0
epochs: 60
log_every: 1
data:
  dataset: spirals
  batch_size: 8
model:
  name: mlp
  width: 32
  depth: 2
  norm: none
  dropout: 0.1
optimizer:
  lr: 0.01
checkpoint:
  every_steps: 7
"""


def interrupt_once_written(process: subprocess.Popen[str], path: Path) -> tuple[str, str]:
    """Ctrl-C ``process`` as soon as ``path`` exists (at most 240 s on); its output, once it
    has exited with 130, as a Ctrl-C'd gradwise command does."""
    deadline = time.monotonic() + 240
    while not path.is_file() and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    return stdout, stderr
