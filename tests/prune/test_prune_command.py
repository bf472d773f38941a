"""``gradwise prune``'s own files: written all or nothing, and an honest report status."""

from __future__ import annotations

import errno
import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from gradwise.cli._main import main
from tests.cli.helpers import PRUNE_CONFIG as CONFIG
from tests.cli.helpers import interrupt_once_written, start
from tests.runs.killed_write import kill_mid_write

ARGUMENTS = ["--rounds", "1", "--rate", "0.5", "--no-control", "--no-progress"]


@pytest.mark.parametrize(
    ("failing", "path"),
    [(1, "rewind.pt"), (2, "round-0/final_weights.pt")],
    ids=["rewind", "final-weights"],
)
def test_a_write_cut_short_never_leaves_a_file_that_marks_a_step_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: int, path: str
) -> None:
    # The disk fills up half way through writing rewind.pt or final_weights.pt (the files
    # whose presence tells a re-run the dense run is done): neither may exist afterwards,
    # truncated, or a re-run would skip the run and then fail to load it.
    real_save = torch.save
    plain_saves = 0

    def save_until_the_disk_is_full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal plain_saves
        if not (isinstance(obj, dict) and "format" not in obj):  # checkpoints and tickets
            real_save(obj, f, *args, **kwargs)
            return
        plain_saves += 1
        if plain_saves != failing:
            real_save(obj, f, *args, **kwargs)
            return
        buffer = io.BytesIO()
        real_save(obj, buffer)
        half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        if isinstance(f, str | Path):
            Path(f).write_bytes(half)
        else:
            f.write(half)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    (tmp_path / "small.yaml").write_text(CONFIG)
    with pytest.raises(OSError, match="No space left on device"):
        main(["prune", str(tmp_path / "small.yaml"), *ARGUMENTS,
              "--runs-dir", str(tmp_path / "runs")])  # fmt: skip
    folder = tmp_path / "runs/prune-spirals-mlp"
    assert plain_saves == failing
    assert not (folder / path).exists()
    assert not list(folder.rglob("*.tmp"))


def test_an_interrupted_prune_reports_interrupted_not_completed(tmp_path: Path) -> None:
    # Ctrl-C in round 1, after the dense run finished: the report used to call the prune
    # "completed" as soon as it had a finished run to show.
    config = CONFIG.replace("epochs: 3", "epochs: 12") + "checkpoint: {every_steps: 2}\n"
    (tmp_path / "small.yaml").write_text(config)
    process = start("prune", "small.yaml", *ARGUMENTS, cwd=tmp_path)
    folder = tmp_path / "runs/prune-spirals-mlp"
    checkpoint = folder / "round-1-ticket/checkpoints/last.pt"
    stdout, _ = interrupt_once_written(process, checkpoint)
    assert "run the same command again to continue" in stdout
    summary = json.loads((folder / "summary.json").read_text())
    assert [(row["run"], row["status"]) for row in summary["runs"]] == [("round-0", "completed")]
    assert summary["status"] == "interrupted"
    html = (folder / "report.html").read_text()
    assert '<span class="status status-interrupted">interrupted</span>' in html
    assert 'class="status status-completed"' not in html


def test_the_next_prune_removes_what_writes_killed_mid_way_left(tmp_path: Path) -> None:
    (tmp_path / "small.yaml").write_text(CONFIG)
    folder = tmp_path / "runs/prune-spirals-mlp"
    (folder / "tickets").mkdir(parents=True)
    left = [kill_mid_write(folder / "rewind.pt"), kill_mid_write(folder / "tickets/round-1.pt")]
    assert main(["prune", str(tmp_path / "small.yaml"), *ARGUMENTS,
                 "--runs-dir", str(tmp_path / "runs")]) == 0  # fmt: skip
    assert not any(path.exists() for path in left)
    assert not list(folder.rglob("*.tmp"))


def test_fewer_rounds_than_a_prune_holds_are_refused_and_keep_its_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A 2-round prune re-run with --rounds 1 used to rewrite prune.json and summary.json
    # for one round: round 2's results dropped out of the summary and the report, though
    # its runs were still in the folder.
    (tmp_path / "small.yaml").write_text(CONFIG.replace("epochs: 3", "epochs: 1"))
    arguments = ["prune", str(tmp_path / "small.yaml"), *ARGUMENTS[2:],
                 "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    assert main([*arguments, "--rounds", "2"]) == 0
    folder = tmp_path / "runs/prune-spirals-mlp"
    before = {name: (folder / name).read_bytes() for name in ("prune.json", "summary.json")}
    capsys.readouterr()
    assert main([*arguments, "--rounds", "1"]) == 2
    error = capsys.readouterr().err
    assert "holds 2 rounds" in error
    assert "--rounds 2" in error
    assert {name: (folder / name).read_bytes() for name in before} == before
