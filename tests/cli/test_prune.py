"""``gradwise prune``: rounds as run folders, the summary report, continuing, Ctrl-C, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gradwise.cli._main import main
from gradwise.prune import Ticket
from tests.cli.helpers import PRUNE_CONFIG as CONFIG
from tests.cli.helpers import gradwise, interrupt_once_written, start

RUNS_1 = ["round-0", "round-1-ticket", "round-1-control"]


def _weights(folder: Path, run: str) -> dict[str, torch.Tensor]:
    return torch.load(folder / run / "final_weights.pt", weights_only=True)  # type: ignore[no-any-return]


def test_prune_writes_one_run_per_round_a_report_and_continues_with_more_rounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "small.yaml").write_text(CONFIG)
    runs_dir = tmp_path / "runs"
    arguments = ["prune", str(tmp_path / "small.yaml"), "--rate", "0.5", "--rewind-step", "3",
                 "--runs-dir", str(runs_dir), "--no-progress"]  # fmt: skip
    assert main([*arguments, "--rounds", "1"]) == 0
    folder = runs_dir / "prune-spirals-mlp"
    summary = json.loads((folder / "summary.json").read_text())
    assert [row["run"] for row in summary["runs"]] == RUNS_1
    assert [row["weights_remaining"] for row in summary["runs"]] == [1.0, 0.5, 0.5]
    assert all(row["status"] == "completed" for row in summary["runs"])
    assert all(0.0 <= row["test_accuracy"] <= 1.0 for row in summary["runs"])
    ticket = Ticket.load(folder / "tickets/round-1.pt")
    control = Ticket.load(folder / "tickets/round-1-control.pt")
    rewind = torch.load(folder / "rewind.pt", weights_only=True)
    assert ticket.weights is not None
    assert control.weights is not None
    assert all(torch.equal(ticket.weights[k], rewind[k]) for k in rewind)  # rewound to step 3
    assert not torch.equal(control.weights["1.weight"], rewind["1.weight"])
    trained = _weights(folder, "round-1-ticket")
    for name, mask in ticket.masks.items():
        assert bool((trained[name][~mask] == 0).all()), name
    assert json.loads((folder / "round-1-ticket/sparsity.json").read_text())["total"][
        "sparsity"
    ] == pytest.approx(0.5, abs=0.01)
    html = (folder / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert "round-1-control" in html
    before = {run: (folder / run / "final_weights.pt").stat().st_mtime_ns for run in RUNS_1}
    capsys.readouterr()

    assert main([*arguments, "--rounds", "2"]) == 0  # the same command, one more round
    said = capsys.readouterr().err
    assert all(f"{run}: done already" in said for run in RUNS_1)
    assert "round-2-ticket: training" in said
    assert before == {run: (folder / run / "final_weights.pt").stat().st_mtime_ns for run in RUNS_1}
    summary = json.loads((folder / "summary.json").read_text())
    assert [row["weights_remaining"] for row in summary["runs"]][3:] == [0.25, 0.25]


def test_ctrl_c_mid_round_then_the_same_command_ends_like_an_uninterrupted_prune(
    tmp_path: Path,
) -> None:
    config = CONFIG.replace("epochs: 3", "epochs: 12") + "checkpoint: {every_steps: 2}\n"
    for name in ("whole", "split"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "small.yaml").write_text(config)
    arguments = ["prune", "small.yaml", "--rounds", "1", "--rate", "0.7", "--no-control",
                 "--no-progress"]  # fmt: skip
    whole = tmp_path / "whole"
    assert main([*arguments[:1], str(whole / "small.yaml"), *arguments[2:],
                 "--runs-dir", str(whole / "runs")]) == 0  # fmt: skip

    process = start(*arguments, cwd=tmp_path / "split")
    folder = tmp_path / "split/runs/prune-spirals-mlp"
    checkpoint = folder / "round-1-ticket/checkpoints/last.pt"
    stdout, _ = interrupt_once_written(process, checkpoint)
    assert "run the same command again to continue" in stdout
    assert not (folder / "round-1-ticket/final_weights.pt").exists()

    again = gradwise(*arguments, cwd=tmp_path / "split")
    assert again.returncode == 0, again.stderr
    assert "round-0: done already" in again.stderr
    assert "round-1-ticket: resuming" in again.stderr
    reference = tmp_path / "whole/runs/prune-spirals-mlp"
    for run in ("round-0", "round-1-ticket"):
        expected, final = _weights(reference, run), _weights(folder, run)
        assert all(torch.equal(final[name], expected[name]) for name in expected), run


def test_bad_arguments_and_folders_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "small.yaml").write_text(CONFIG)
    base = ["prune", str(tmp_path / "small.yaml"), "--runs-dir", str(tmp_path / "runs"),
            "--no-progress"]  # fmt: skip
    cases = [
        (["--rounds", "2", "--rate", "1.5"], "--rate must be a float in (0, 1). Got 1.5 instead."),
        (["--rounds", "0", "--rate", "0.2"], "--rounds must be an int >= 1. Got 0 instead."),
        (["--rounds", "1", "--rate", "0.2", "--output-rate", "0"], "--output-rate must be"),
        (["--rounds", "1", "--rate", "0.2", "--rewind-step", "5000"],
         "--rewind-step must be smaller than the run's 42 steps. Got 5000 instead."),
        (["--rounds", "1", "--rate", "0.2", "--set", "prune.ticket=x.pt"],
         "gradwise prune starts from a dense run"),
        (["--rounds", "1", "--rate", "0.2", "--set", "optimizer.lrr=1"], "unknown key 'lrr'"),
    ]  # fmt: skip
    for extra, message in cases:
        assert main([*base, *extra]) == 2, extra
        error = capsys.readouterr().err
        assert error.startswith("gradwise prune: error: "), error
        assert message in error, error
    assert not (tmp_path / "runs").exists()
    folder = tmp_path / "runs/prune-spirals-mlp"
    folder.mkdir(parents=True)
    (folder / "prune.json").write_text(json.dumps({"rate": 0.9}))
    assert main([*base, "--rounds", "1", "--rate", "0.2"]) == 2
    error = capsys.readouterr().err
    assert "holds a prune with other settings (config was not set, now {" in error
    assert "; rate was 0.9, now 0.2; rewind_step was not set, now 0; and 3 more)" in error


def test_a_prune_with_other_settings_names_the_keys_that_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # QA: the refusal said "(config differ)", leaving the user to find which key changed.
    (tmp_path / "small.yaml").write_text(CONFIG.replace("epochs: 3", "epochs: 1"))
    base = ["prune", str(tmp_path / "small.yaml"), "--runs-dir", str(tmp_path / "runs"),
            "--rounds", "1", "--no-control", "--no-progress"]  # fmt: skip
    assert main([*base, "--rate", "0.5"]) == 0
    capsys.readouterr()
    assert main([*base, "--rate", "0.5", "--set", "optimizer.lr=0.02",
                 "--set", "data.batch_size=8"]) == 2  # fmt: skip
    error = capsys.readouterr().err
    assert error == (
        f"gradwise prune: error: {tmp_path / 'runs/prune-spirals-mlp'} holds a prune with "
        "other settings (config.data.batch_size was 16, now 8; config.optimizer.lr was 0.01, "
        "now 0.02); use another name (--set name=...) or remove that folder\n"
    )


def test_prune_refuses_a_training_runs_folder_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # QA: a prune named like a training run wrote into its folder, replacing the run's
    # summary.json and report.html.
    (tmp_path / "small.yaml").write_text(CONFIG.replace("epochs: 3", "epochs: 1"))
    runs = tmp_path / "runs"
    assert main(["train", str(tmp_path / "small.yaml"), "--runs-dir", str(runs),
                 "--set", "name=base", "--no-progress"]) == 0  # fmt: skip
    before = {path: path.read_bytes() for path in (runs / "base").rglob("*") if path.is_file()}
    capsys.readouterr()
    assert main(["prune", str(tmp_path / "small.yaml"), "--runs-dir", str(runs),
                 "--rounds", "1", "--rate", "0.5", "--no-progress",
                 "--set", "name=base"]) == 2  # fmt: skip
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err == (
        f"gradwise prune: error: {runs / 'base'} already exists and is not a prune folder (it "
        "has no prune.json); a prune would overwrite its files. Choose another name (--set "
        "name=...), or remove that folder.\n"
    )
    assert {p: p.read_bytes() for p in (runs / "base").rglob("*") if p.is_file()} == before


def test_prune_refuses_a_name_taken_by_a_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # QA: a FileExistsError traceback.
    (tmp_path / "small.yaml").write_text(CONFIG)
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "pfile").write_text("not a folder\n")
    assert main(["prune", str(tmp_path / "small.yaml"), "--runs-dir", str(runs),
                 "--rounds", "1", "--rate", "0.5", "--no-progress",
                 "--set", "name=pfile"]) == 2  # fmt: skip
    printed = capsys.readouterr()
    assert printed.err == (
        f"gradwise prune: error: {runs / 'pfile'} is a file, not a prune folder. Choose "
        "another name (--set name=...), or move that file.\n"
    )
    assert (runs / "pfile").read_text() == "not a folder\n"
    assert [path.name for path in runs.iterdir()] == ["pfile"]


def test_ctrl_c_before_the_dense_run_finished_says_so_instead_of_an_empty_table(
    tmp_path: Path,
) -> None:
    # The table of finished runs was printed with no rows: a title and a header, nothing else.
    config = CONFIG.replace("epochs: 3", "epochs: 200") + "checkpoint: {every_steps: 2}\n"
    (tmp_path / "small.yaml").write_text(config)
    process = start("prune", "small.yaml", "--rounds", "1", "--rate", "0.5", "--no-progress",
                    cwd=tmp_path)  # fmt: skip
    folder = tmp_path / "runs/prune-spirals-mlp"
    stdout, _ = interrupt_once_written(process, folder / "round-0/checkpoints/last.pt")
    lines = stdout.splitlines()
    assert lines[0] == "no run finished: the prune stopped before round-0 (the dense run) ended"
    assert "Lottery-ticket rounds" not in stdout
    assert not [line for line in lines if line.startswith("round ")]  # no table header
    assert lines[-1] == "interrupted; run the same command again to continue"
    assert json.loads((folder / "summary.json").read_text())["runs"] == []
    html = (folder / "report.html").read_text()
    assert "No run finished yet" in html
    assert "<table" not in html


def test_bidi_controls_in_the_prune_name_are_escaped_in_its_reports_title(
    tmp_path: Path,
) -> None:
    # Outside a table cell a right-to-left override reordered the rest of the title.
    (tmp_path / "small.yaml").write_text(CONFIG)
    name = "evil\u202egnp"
    assert main(["prune", str(tmp_path / "small.yaml"), "--rounds", "1", "--rate", "0.5",
                 "--no-control", "--no-progress", "--runs-dir", str(tmp_path / "runs"),
                 "--set", f"name={name}"]) == 0  # fmt: skip
    html = (tmp_path / "runs" / name / "report.html").read_text()
    assert "<title>evil\\u202egnp - gradwise prune</title>" in html
    assert "<h1>evil\\u202egnp <span" in html
    assert "\u202e" not in html
