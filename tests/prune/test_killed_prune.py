"""A ``gradwise prune`` killed between two of its writes continues to the same result."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from gradwise.cli._main import main
from gradwise.prune import Masks
from tests.cli.helpers import PRUNE_CONFIG as CONFIG

ARGUMENTS = ["--rounds", "1", "--rate", "0.5", "--rewind-step", "3", "--no-progress"]
RUNS = ["round-0", "round-1-ticket", "round-1-control"]
# Every file whose content the next steps (or the user) depend on.
RESULTS = [
    "rewind.pt",
    "tickets/round-1.pt",
    "tickets/round-1-control.pt",
    *(f"{run}/final_weights.pt" for run in RUNS),
]


class Killed(BaseException):
    """The process dying at that moment (no ``except Exception`` catches it)."""


def _prune(folder: Path) -> int:
    (folder / "small.yaml").write_text(CONFIG)
    return main(["prune", str(folder / "small.yaml"), *ARGUMENTS,
                 "--runs-dir", str(folder / "runs")])  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    assert _prune(root) == 0
    return root / "runs/prune-spirals-mlp"


def _kill_before(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """Die just before ``target`` appears: its atomic write's final rename never happens."""
    real_replace = os.replace

    def replace(source: Any, destination: Any) -> None:
        if Path(destination) == target:
            raise Killed(f"killed before {target} was written")
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)


def _assert_same_results(folder: Path, reference: Path) -> None:
    for name in RESULTS:
        expected = torch.load(reference / name, weights_only=True)
        got = torch.load(folder / name, weights_only=True)
        if name.startswith("tickets/"):
            assert got["format"] == expected["format"]
            got = {**got["masks"], **{f"w.{k}": v for k, v in got["weights"].items()}}
            expected = {
                **expected["masks"],
                **{f"w.{k}": v for k, v in expected["weights"].items()},
            }
        assert list(got) == list(expected), name
        assert all(torch.equal(got[key], expected[key]) for key in expected), name
    rows = json.loads((folder / "summary.json").read_text())["runs"]
    expected_rows = json.loads((reference / "summary.json").read_text())["runs"]
    assert [row["run"] for row in rows] == RUNS
    for row, expected_row in zip(rows, expected_rows, strict=True):
        assert row["test_accuracy"] == expected_row["test_accuracy"], row["run"]
        assert row["status"] == "completed", row["run"]


@pytest.mark.parametrize(
    ("run", "killed_before"),
    [
        ("round-0", "rewind.pt"),
        ("round-0", "round-0/final_weights.pt"),
        ("round-1-ticket", "round-1-ticket/final_weights.pt"),
        ("round-1-control", "round-1-control/final_weights.pt"),
    ],
)
def test_a_prune_killed_after_a_run_finished_takes_its_final_weights_without_retraining(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    uninterrupted: Path,
    run: str,
    killed_before: str,
) -> None:
    # The run's summary says completed, but the prune died before it wrote what marks the
    # run done. The re-run used to try to resume the run, which resume() refuses for a
    # completed run: the prune could never go on.
    folder = tmp_path / "runs/prune-spirals-mlp"
    with monkeypatch.context() as patch:
        _kill_before(patch, folder / killed_before)
        with pytest.raises(Killed):
            _prune(tmp_path)
    assert json.loads((folder / run / "summary.json").read_text())["status"] == "completed"
    assert not (folder / run / "final_weights.pt").exists()
    if run != "round-0":  # the summary keeps up with the runs finished before the kill
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "interrupted"
        assert [row["run"] for row in summary["runs"]] == RUNS[: RUNS.index(run)]
    metrics = (folder / run / "metrics.jsonl").read_bytes()
    capsys.readouterr()

    assert _prune(tmp_path) == 0
    said = capsys.readouterr().err
    assert f"{run}: finished before the prune stopped" in said
    assert f"{run}: training" not in said
    assert f"{run}: resuming" not in said
    assert (folder / run / "metrics.jsonl").read_bytes() == metrics  # not trained again
    _assert_same_results(folder, uninterrupted)
    assert not list(folder.rglob("*.tmp"))


def test_a_finished_run_without_its_end_of_fit_weights_is_trained_again(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    uninterrupted: Path,
) -> None:
    # A prune folder from a gradwise that did not keep the weights at the fit's end: the
    # only exact final weights are the ones a new training of the run gives.
    folder = tmp_path / "runs/prune-spirals-mlp"
    with monkeypatch.context() as patch:
        _kill_before(patch, folder / "round-1-ticket/final_weights.pt")
        with pytest.raises(Killed):
            _prune(tmp_path)
    for path in (folder / "round-1-ticket").glob("fit_end*"):
        path.unlink()
    capsys.readouterr()

    assert _prune(tmp_path) == 0
    said = capsys.readouterr().err
    assert "round-1-ticket: finished, but its final weights were never written" in said
    assert "round-1-ticket: training" in said
    _assert_same_results(folder, uninterrupted)


def test_a_prune_folder_moved_mid_run_resumes_with_the_ticket_where_it_is_now(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    uninterrupted: Path,
) -> None:
    # The run's config named its ticket by the absolute path it had when the run started;
    # after the folder moved, resuming the run could not find it.
    first = tmp_path / "first"
    checkpoint = first / "runs/prune-spirals-mlp/round-1-ticket/checkpoints/last.pt"
    real_replace = os.replace
    writes = []

    def replace(source: Any, destination: Any) -> None:
        if Path(destination) == checkpoint:
            writes.append(destination)
            if len(writes) == 2:  # the first checkpoint is on disk: the run resumes
                raise Killed("killed while round-1-ticket trained")
        real_replace(source, destination)

    first.mkdir()
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", replace)
        with pytest.raises(Killed):
            _prune(first)
    moved = tmp_path / "moved"
    first.rename(moved)
    capsys.readouterr()

    assert _prune(moved) == 0
    said = capsys.readouterr().err
    assert "round-1-ticket: resuming from" in said
    _assert_same_results(moved / "runs/prune-spirals-mlp", uninterrupted)


def test_a_masks_write_cut_short_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "masks.pt"
    old = Masks({"0.weight": torch.tensor([[True, False], [True, True]])})
    old.save(path)
    real_save = torch.save

    def save_until_the_disk_is_full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        buffer = io.BytesIO()
        real_save(obj, buffer)
        half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        if isinstance(f, str | os.PathLike):
            Path(f).write_bytes(half)
        else:
            f.write(half)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    new = Masks({"0.weight": torch.tensor([[False, False], [True, True]])})
    with pytest.raises(OSError, match="No space left on device"):
        new.save(path)
    monkeypatch.undo()
    assert Masks.load(path) == old  # used to be half a file, which load refused
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks.pt"]
    new.save(path)
    assert Masks.load(path) == new
