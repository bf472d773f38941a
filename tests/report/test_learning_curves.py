"""The report draws the train and validation curves behind UNDERFITTING and OVERFITTING."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.image import imread

from gradwise import Finding
from gradwise.diagnosis import Diagnosis
from gradwise.report import build_report, learning_curves_png
from gradwise.runs import MetricsLog, RunFolder, write_config

STEPS = (100, 200, 300, 400, 500, 600)


def epochs(train_loss: float = 1.7, val_loss: float = 1.68) -> list[dict[str, Any]]:
    return [
        {"kind": "epoch", "step": s, "epoch": i, "train_loss": train_loss + 1 / s,
         "val_loss": val_loss + 1 / s, "train_accuracy": 0.33, "val_accuracy": 0.34}
        for i, s in enumerate(STEPS)
    ]  # fmt: skip


UNDERFIT = Diagnosis(
    Finding.UNDERFITTING,
    "the training error is high",
    "use a bigger model",
    {
        "train_loss": 1.70,
        "train_accuracy": 0.33,
        "train_step": 600,
        "val_loss": 1.68,
        "val_accuracy": 0.34,
        "val_step": 600,
        "window": [400, 600],
    },  # fmt: skip
    step=600,
)
OVERFIT = Diagnosis(
    Finding.OVERFITTING,
    "train accuracy 1.0 vs validation 0.7",
    "add regularization",
    {
        "train_loss": 0.01,
        "val_loss": 1.5,
        "val_step": 600,
        "train_step": 600,
        "best_val_loss": 1.1,
        "best_val_step": 200,
    },  # fmt: skip
    step=600,
)


def run_with(root: Path, findings: list[Diagnosis], records: list[dict[str, Any]]) -> RunFolder:
    run = RunFolder.create(root, "curves", min_free_bytes=0)
    write_config(run, {"model": "mlp"})
    with MetricsLog(run.metrics_path) as log:
        for record in records:
            log.append(record)
    run.findings_path.write_text("".join(json.dumps(f.to_dict()) + "\n" for f in findings))
    return run


def finding_items(page: str) -> dict[str, str]:
    items = re.findall(r'<li class="finding[^"]*">(.*?)</li>', page, flags=re.DOTALL)
    return {re.search(r"<b>(\w+)</b>", item).group(1): item for item in items}  # type: ignore[union-attr]


def test_the_curves_are_drawn_next_to_underfitting_and_overfitting_only(tmp_path: Path) -> None:
    dead = Diagnosis(Finding.DEAD_UNITS, "62% dead", "lower the lr", {"layer": "1"}, step=20)
    page = build_report(run_with(tmp_path, [UNDERFIT, OVERFIT, dead], epochs())).read_text()
    items = finding_items(page)
    assert set(items) == {"UNDERFITTING", "OVERFITTING", "DEAD_UNITS"}
    for kind in ("UNDERFITTING", "OVERFITTING"):
        assert f'alt="train and validation curves behind {kind}"' in items[kind]
    assert "<img" not in items["DEAD_UNITS"]


def test_without_epoch_metrics_the_finding_is_listed_without_curves(tmp_path: Path) -> None:
    steps_only = [{"kind": "step", "step": s, "loss": 2.0} for s in STEPS]
    page = build_report(run_with(tmp_path, [UNDERFIT], steps_only)).read_text()
    item = finding_items(page)["UNDERFITTING"]
    assert "the training error is high" in item
    assert "<img" not in item
    assert learning_curves_png(steps_only, UNDERFIT.to_dict()) is None


def pixels(png: bytes | None) -> np.ndarray:
    assert png is not None
    return np.asarray(imread(io.BytesIO(png), format="png"))


def test_the_evidence_is_marked_on_the_curves() -> None:
    records = epochs()
    marked = pixels(learning_curves_png(records, UNDERFIT.to_dict()))
    bare = {**UNDERFIT.to_dict(), "evidence": {}}
    unmarked = pixels(learning_curves_png(records, bare))
    assert marked.shape == unmarked.shape
    # The circled points and the shaded window change the picture.
    assert np.abs(marked - unmarked).sum() > 100
    # Both panels (loss, accuracy) are drawn: wider than tall.
    assert marked.shape[1] > 2 * marked.shape[0]


def test_a_target_is_drawn() -> None:
    records = epochs()
    without = pixels(learning_curves_png(records, UNDERFIT.to_dict()))
    target = UNDERFIT.to_dict()
    target["evidence"] = {**target["evidence"], "target_accuracy": 0.9}
    assert np.abs(pixels(learning_curves_png(records, target)) - without).sum() > 50


def test_a_dollar_in_the_finding_kind_is_drawn_as_text() -> None:
    # The kind comes from findings.jsonl, which may be edited by hand: "$\frac$" in the
    # title was read as mathtext and raised ValueError while the figure was drawn.
    finding = {**UNDERFIT.to_dict(), "kind": "$\\frac$"}
    assert pixels(learning_curves_png(epochs(), finding)).shape[1] > 0
