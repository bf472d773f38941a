"""A watched Trainer run keeps its probes.jsonl and histograms.jsonl up with its checkpoints.

The files are appended at each epoch's end (before its checkpoint) and when the fit ends,
so a run killed mid-way leaves them valid and complete up to its last checkpoint; a
resume rewrites them from the checkpointed watch, dropping what was written after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradwise import Trainer, monitor, optim
from gradwise.data import load_dataset
from gradwise.monitor._callback import WatchCallback
from gradwise.runs import RunFolder
from gradwise.train import Callback, TrainState, load_checkpoint
from tests.train.stop_at import StopAt

DATA = load_dataset("spirals", seed=0)  # 216 training samples: 14 steps per epoch of 16
STEPS_PER_EPOCH = 14
EPOCHS = 4


def _trainer(run: RunFolder, *callbacks: Callback) -> tuple[Trainer, monitor.Watch]:
    """A fresh model, optimizer and watch (as a new process makes them) on ``run``."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
    )
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    subset = (DATA.train.inputs[:64], DATA.train.targets[:64])
    watch = monitor.watch(model, optimizer, monitor_data=subset, every=5, cheap_every=2)
    trainer = Trainer(
        model,
        optimizer,
        DATA,
        epochs=EPOCHS,
        batch_size=16,
        log_every=5,
        progress=False,
        run=run,
        callbacks=[WatchCallback(watch, run), *callbacks],
    )
    return trainer, watch


def _lines(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` as JSON: each must be complete (ended by a newline)."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path.name} ends mid-line"
    return [json.loads(line) for line in data.decode("ascii").splitlines()]


def _up_to(records: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    return [record for record in records if record["step"] <= step]


def _expected(watch: monitor.Watch) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The two files' records from the watch's public results: the per-layer records in
    step order, and the histograms of each step (activations, then gradients)."""
    probes = [
        {key: value for key, value in record.items() if key != "kind"}
        for record in watch.records()
        if record["kind"] in ("weight", "activation")
    ]
    by_kind = {
        "activation": watch.histograms("activations"),
        "gradient": watch.histograms("gradients"),
    }
    steps = sorted({step for by_step in by_kind.values() for step in by_step})
    histograms = [
        {
            "step": step,
            "layer": layer,
            "kind": kind,
            "edges": list(histogram.edges),
            "counts": list(histogram.counts),
            "nonfinite": histogram.nan + histogram.posinf + histogram.neginf,
        }
        for step in steps
        for kind, by_step in by_kind.items()
        for layer, histogram in by_step.get(step, {}).items()
    ]
    return probes, histograms


class FilesAtEpochEnds(Callback):
    """What the probe files hold at each epoch's end, after the watch's callback appended
    and before the Trainer's checkpoint; and whether they were ever replaced."""

    def __init__(self, run: RunFolder) -> None:
        self.run = run
        self.seen: list[tuple[int, list[dict[str, Any]], list[dict[str, Any]]]] = []
        self.inodes: set[tuple[int, int]] = set()

    def on_epoch_end(self, state: TrainState) -> None:
        run = self.run
        self.inodes.add((run.probes_path.stat().st_ino, run.histograms_path.stat().st_ino))
        self.seen.append((state.step, _lines(run.probes_path), _lines(run.histograms_path)))


def test_each_epochs_records_are_appended_before_its_checkpoint(tmp_path: Path) -> None:
    run = RunFolder.create(tmp_path, "run", min_free_bytes=0)
    files = FilesAtEpochEnds(run)
    trainer, watch = _trainer(run, files)
    assert trainer.fit().status == "completed"

    probes, histograms = _expected(watch)
    assert {record["step"] for record in histograms} >= {0, 5, 55}  # creation, every 5 steps
    assert _lines(run.probes_path) == probes
    assert _lines(run.histograms_path) == histograms
    assert [step for step, _, _ in files.seen] == [14, 28, 42, 56]
    for step, probes_then, histograms_then in files.seen:
        assert probes_then == _up_to(probes, step), step
        assert histograms_then == _up_to(histograms, step), step
    # Appended to, never replaced: each epoch writes its own records, not the whole run's.
    assert len(files.inodes) == 1
    assert (run.probes_path.stat().st_ino, run.histograms_path.stat().st_ino) in files.inodes


def test_a_resume_drops_what_was_written_after_the_checkpoint(tmp_path: Path) -> None:
    whole = RunFolder.create(tmp_path, "whole", min_free_bytes=0)
    assert _trainer(whole)[0].fit().status == "completed"

    split = RunFolder.create(tmp_path, "split", min_free_bytes=0)
    assert _trainer(split, StopAt(20))[0].fit().status == "stopped"  # mid-epoch 2
    assert load_checkpoint(split.last_checkpoint)["position"]["step"] == 20
    for name in ("probes.jsonl", "histograms.jsonl"):
        # Up to the checkpoint, as an uninterrupted run wrote them, and nothing after.
        assert _lines(split.path / name) == _up_to(_lines(whole.path / name), 20)
        # As a run killed after appending epoch 2's records, before its checkpoint,
        # leaves them: later records, then a line cut short by a power loss.
        later = (whole.path / name).read_bytes().splitlines(keepends=True)[-3:]
        with open(split.path / name, "ab") as file:
            file.write(b"".join(later) + later[0][:25])

    resumed, _ = _trainer(split)
    assert resumed.fit(resume=True).status == "completed"
    for name in ("probes.jsonl", "histograms.jsonl"):
        assert (split.path / name).read_bytes() == (whole.path / name).read_bytes(), name


# A watched run in a process that SIGKILLs itself at the first step after epoch 2's
# checkpoint: no Python cleanup runs, as with the OOM killer.
_KILLED = """
import os, signal, sys
from pathlib import Path
from gradwise.runs import RunFolder
from gradwise.train import Callback
from tests.monitor.test_probe_files import _trainer

class KillAfterEpoch(Callback):
    def on_step_end(self, state):
        if state.epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)

run = RunFolder.create(Path(sys.argv[1]), "killed", min_free_bytes=0)
_trainer(run, KillAfterEpoch())[0].fit()
"""


def test_a_killed_run_leaves_the_records_up_to_its_last_checkpoint(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _KILLED, str(tmp_path)],
        capture_output=True,
        timeout=300,
        check=False,
        cwd=Path(__file__).parents[2],  # the repository: the script imports this module
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    killed = RunFolder(tmp_path / "killed")
    checkpoint = load_checkpoint(killed.last_checkpoint)["position"]["step"]
    assert checkpoint == 2 * STEPS_PER_EPOCH

    # What the checkpoint holds: a watch restored from it, as a resume restores it.
    _, watch = _trainer(RunFolder.create(tmp_path, "restored", min_free_bytes=0))
    watch.load_state_dict(load_checkpoint(killed.last_checkpoint)["callbacks"]["WatchCallback"])
    for name, expected in zip(("probes.jsonl", "histograms.jsonl"), _expected(watch), strict=True):
        left = _lines(killed.path / name)
        assert left == expected, name
        assert {record["step"] for record in left} > {0, 2 * STEPS_PER_EPOCH - 3}
