"""Configs and study readers shared by the search tests (which run the real command)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

# About 0.1 s per epoch on spirals (216 training samples, batches of 16).
TINY = """\
seed: 0
epochs: {epochs}
monitor: null
schedule: null
log_every: 5
data: {{dataset: spirals, batch_size: 16, preprocess: [standardize]}}
model: {{name: mlp, width: 16, depth: 1, norm: none}}
optimizer: {{name: Adam, lr: 0.01}}
search:
{search}
"""

SPACE = """\
  space:
    optimizer.lr: {log_uniform: [1.0e-3, 3.0e-1]}
    model.width: {int: [4, 32], log: true}
"""


def write_config(folder: Path, name: str, *, epochs: int = 2, search: str = SPACE) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(TINY.format(epochs=epochs, search=search.rstrip("\n")))
    return path


def storage_of(folder: Path) -> str:
    return str(json.loads((folder / "study.json").read_text())["storage"])


def load(url: str, name: str) -> list[FrozenTrial]:
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()


def read_metrics(run: Path) -> list[dict]:
    """A run's metrics log, record by record."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def epochs_logged(run: Path) -> list[int]:
    """The epochs of a run's metrics log, in the order they were recorded."""
    return [record["epoch"] for record in read_metrics(run) if record["kind"] == "epoch"]


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
