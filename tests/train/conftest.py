"""Small runs: spirals with an MLP trains in well under a second per epoch."""

from __future__ import annotations

import pytest

from gradwise.config import RunConfig, load_config

SMALL_RUN = [
    "data.dataset=spirals",
    "data.batch_size=16",
    "data.preprocess=[standardize]",
    "model.name=mlp",
    "model.width=32",
    "model.depth=2",
    "model.norm=none",
    "model.dropout=0.1",
    "epochs=4",
    "log_every=3",
    "optimizer.lr=0.01",
]


@pytest.fixture
def small_config(tmp_path: object) -> RunConfig:
    return load_config(overrides=[*SMALL_RUN, f"runs_dir={tmp_path}"])
