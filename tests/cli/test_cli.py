"""The command line, run as a user runs it: in a subprocess, from a working directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from gradwise.cli import main
from gradwise.config import RunConfig, config_to_dict
from gradwise.train import load_checkpoint, save_checkpoint
from tests.cli.helpers import SMALL_CONFIG, gradwise


def test_config_prints_the_resolved_default_config(tmp_path: Path) -> None:
    result = gradwise("config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout) == config_to_dict(RunConfig())


def test_config_resolves_a_file_with_overrides(tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text("epochs = 3\n[optimizer]\nlr = 0.1\n")
    result = gradwise("config", "run.toml", "--set", "data.batch_size=64", cwd=tmp_path)
    resolved = yaml.safe_load(result.stdout)
    assert resolved["epochs"] == 3
    assert resolved["optimizer"] == {"name": "AdamW", "lr": 0.1, "weight_decay": 0.05}
    assert resolved["data"]["batch_size"] == 64


def test_config_errors_are_one_line_each(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("optimiser:\n  lr: 0.1\n")
    cases = {
        ("train", "bad.yaml"): "unknown key 'optimiser' in 'train'; did you mean 'optimizer'?",
        ("train", "--set", "data.batch_size=-1"): (
            "The 'batch_size' key in 'train.data' must be an int >= 1. Got -1 instead."
        ),
        ("train", "--set", "optimizer.name=Adamw"): "unknown optimizer 'Adamw' in "
        "'train.optimizer.name'; did you mean 'AdamW'? valid names: SGD, Adagrad",
        ("train", "--set", "data.dataset=mnist"): "unknown dataset 'mnist' in "
        "'train.data.dataset';",
        ("train", "--set", "optimizer.lrr=0.1"): "unknown key 'lrr' in 'train.optimizer'; "
        "did you mean 'lr'?",
        ("train", "--set", "optimizer.lr=-1"): "The 'lr' parameter of AdamW must be",
    }
    # Two commands at a time (each a one-thread process on this two-core machine).
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda args: gradwise(*args, cwd=tmp_path), cases))
    for (args, message), result in zip(cases.items(), results, strict=True):
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (args, result.stderr)
        assert message in lines[0], (args, result.stderr)
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was written


def test_an_unwritable_runs_folder_fails_before_training(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    result = gradwise("train", "--runs-dir", "a_file/runs", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "gradwise train: error: The '--runs-dir' option of gradwise train must be a folder "
        "that can be written. Got 'a_file/runs' instead: cannot make it (Not a directory). "
        "Pick another folder.\n"
    )


def test_train_runs_list_and_report(tmp_path: Path) -> None:
    (tmp_path / "small.yaml").write_text(SMALL_CONFIG)
    result = gradwise("train", "small.yaml", "--set", "epochs=3", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "run folder: runs/small" in result.stdout
    assert "test" in result.stdout  # the summary table
    summary = json.loads((tmp_path / "runs/small/summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["epochs"] == 3

    listing = gradwise("runs", cwd=tmp_path)
    assert listing.returncode == 0
    assert "small" in listing.stdout

    report = tmp_path / "runs/small/report.html"
    report.unlink()
    rebuilt = gradwise("report", "runs/small", cwd=tmp_path)
    assert rebuilt.returncode == 0
    assert report.is_file()


def test_the_default_run_reaches_90_percent_on_mnist1d(tmp_path: Path) -> None:
    # The README's main job, with no configuration at all (about 15 s on a 2-core CPU).
    result = gradwise("train", cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "epoch 20/20" in result.stderr  # the progress bar
    run = Path(tmp_path / result.stdout.split("run folder: ")[1].split()[0])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dataset"] == "mnist1d"
    assert summary["model"] == "cnn1d"
    assert summary["test"]["test_accuracy"] >= 0.90
    assert summary["duration_s"] < 180


def _tiny_run(tmp_path: Path) -> Path:
    code = main(
        ["train", "--no-progress", "--runs-dir", str(tmp_path), "--set", "name=tiny"]
        + ["--set", "data.dataset=spirals", "--set", "model.name=mlp", "--set", "epochs=1"]
    )
    assert code == 0
    return tmp_path / "tiny"


def test_resuming_with_another_process_count_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _tiny_run(tmp_path)
    # As if two processes had written it and been interrupted.
    contents = load_checkpoint(run / "checkpoints" / "last.pt")
    contents["ranks"] = contents["ranks"] * 2
    save_checkpoint(
        run / "checkpoints" / "last.pt", {k: v for k, v in contents.items() if k != "format"}
    )
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    capsys.readouterr()
    assert main(["train", "--no-progress", "--resume", str(run)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "written by 2 process(es); resume it with the same number (--nproc 2), not 1" in error


def test_ctrl_c_outside_training_exits_130_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradwise.train

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(gradwise.train, "train", interrupted)  # e.g. while loading the data
    assert main(["train", "--no-progress", "--runs-dir", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "gradwise train: interrupted\n"


def test_resuming_from_a_damaged_checkpoint_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _tiny_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    last = run / "checkpoints" / "last.pt"
    for damaged in (last.read_bytes()[: last.stat().st_size // 2], b"not a checkpoint"):
        last.write_bytes(damaged)
        capsys.readouterr()
        assert main(["train", "--no-progress", "--resume", str(run)]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1
        assert "cannot be read as a checkpoint" in error
        assert "truncated or damaged" in error


@pytest.mark.parametrize(
    "override", ["data.dataset=spiralz", "model.name=mlpp", "optimizer.name=Adamz"]
)
def test_nproc_gives_the_one_process_error_for_a_config_that_cannot_be_built(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    override: str,
) -> None:
    # Parsing accepts these names; building the run rejects them.
    args = ["train", "--no-progress", "--runs-dir", str(tmp_path / "runs"), "--set", override]
    assert main(args) == 2
    one_process = capsys.readouterr().err
    assert one_process.startswith("gradwise train: error: unknown ")
    assert one_process.count("\n") == 1
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    assert main([*args, "--nproc", "2"]) == 2
    assert capsys.readouterr().err == one_process  # and no resume hint
    assert not (tmp_path / "runs").exists()
    # Found before the launch: torch's launcher makes a log folder there for each one.
    assert list(temp.iterdir()) == []


def _interrupted(run: Path, processes: int = 1) -> Path:
    """Mark ``run`` as interrupted, as if ``processes`` processes had written its checkpoint."""
    contents = load_checkpoint(run / "checkpoints" / "last.pt")
    contents["ranks"] = contents["ranks"] * processes
    save_checkpoint(
        run / "checkpoints" / "last.pt", {k: v for k, v in contents.items() if k != "format"}
    )
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    return run


def test_resuming_with_another_nproc_names_the_runs_own_process_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _interrupted(_tiny_run(tmp_path), processes=2)
    capsys.readouterr()
    assert main(["train", "--no-progress", "--resume", str(run), "--nproc", "3"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "written by 2 process(es); resume it with the same number (--nproc 2), not 3" in error
    assert "--nproc 3" not in error


def test_resuming_a_completed_run_with_nproc_is_the_one_process_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _tiny_run(tmp_path)
    capsys.readouterr()
    assert main(["train", "--no-progress", "--resume", str(run)]) == 2
    one_process = capsys.readouterr().err
    assert "has completed: there is nothing to resume" in one_process
    assert main(["train", "--no-progress", "--resume", str(run), "--nproc", "2"]) == 2
    assert capsys.readouterr().err == one_process


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.dataset=spiralz", "unknown dataset 'spiralz' in 'train.data.dataset'"),
        ("model.name=mlpp", "unknown model 'mlpp' in 'train.model.name'"),
        ("optimizer.name=Adamz", "unknown optimizer 'Adamz' in 'train.optimizer.name'"),
        ("optimizer.lr=-1", "The 'lr' parameter of AdamW must be"),
    ],
)
def test_config_refuses_what_train_refuses_with_the_same_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    base = ["--set", "data.dataset=spirals", "--set", "model.name=mlp", "--set", override]
    assert main(["train", "--no-progress", "--runs-dir", str(tmp_path), *base]) == 2
    train_error = capsys.readouterr().err
    assert main(["config", *base]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err == train_error.replace("gradwise train:", "gradwise config:")
    assert printed.err.count("\n") == 1
    assert message in printed.err


def test_config_refuses_an_unknown_name_in_a_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "run.yaml").write_text("data:\n  dataset: spiralz\n")
    assert main(["config", str(tmp_path / "run.yaml")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(
        f"gradwise config: error: config file {tmp_path / 'run.yaml'}, line 2: "
        "unknown dataset 'spiralz'"
    )
    assert "did you mean 'spirals'?" in error


@pytest.mark.parametrize("command", ["train", "config"])
def test_a_folder_given_as_config_is_named_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    assert main([command, f"{folder}/"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"{folder} is a folder, not a config file" in error
    assert "does not exist" not in error


def test_runs_in_a_missing_folder_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nonexistent"
    assert main(["runs", "--runs-dir", str(missing)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"gradwise runs: error: no runs folder at {missing}" in error
    assert "--runs-dir" in error
    assert not missing.exists()


def test_runs_in_an_empty_folder_lists_no_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"no runs in {tmp_path}\n"


def test_runs_before_the_first_run_lists_no_runs_in_the_default_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no runs/ yet: not an error, only --runs-dir's typos are
    assert main(["runs"]) == 0
    assert capsys.readouterr().out == "no runs in runs\n"
    assert not (tmp_path / "runs").exists()


def test_runs_when_the_default_folder_is_a_file_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # QA: a file named runs said "no runs in runs" and exited 0.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("not a folder\n")
    assert main(["runs"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "gradwise runs: error: no runs folder at runs: it is a file." in captured.err
    assert "Move that file out of the way, or pass the folder" in captured.err
    assert "--runs-dir DIR" in captured.err


_TINY_RUN = (
    "seed: 0\ndata:\n  dataset: spirals\n  batch_size: 32\nmodel:\n  name: mlp\n  width: 8\n"
)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lr-find", "run.yaml", "--steps", "3", "--sweeps", "1", "--out", "a_file/plot.png"],
         "The '--out' option of gradwise lr-find must be a file path that can be written. "
         "Got 'a_file/plot.png' instead: 'a_file' is a file, not a folder."),
        (["lr-find", "run.yaml", "--steps", "3", "--sweeps", "1", "--out", "folder"],
         "Got 'folder' instead: it is a folder. Name a file in it"),
        (["viz", "--steps", "2", "--out", "a_file/out"],
         "The '--out' option of gradwise viz must be a folder that can be written. "
         "Got 'a_file/out' instead: cannot make it (Not a directory)."),
        (["viz", "--steps", "2", "--out", "a_file"], "Got 'a_file' instead: it is a file."),
        (["bench", "surfaces", "--max-steps", "2", "--out", "a_file"],
         "The '--out' option of gradwise bench surfaces must be a folder that can be written."),
        (["bench", "unit-tests", "--steps", "2", "--runs", "1", "--out", "a_file/x"],
         "The '--out' option of gradwise bench unit-tests must be a folder"),
        (["bench", "profiles", "--max-steps", "2", "--out", "a_file"],
         "The '--out' option of gradwise bench profiles must be a folder"),
        (["prune", "run.yaml", "--rounds", "1", "--rate", "0.5", "--runs-dir", "a_file/runs"],
         "The '--runs-dir' option of gradwise prune must be a folder that can be written."),
        (["prune", "run.yaml", "--rounds", "1", "--rate", "0.5", "--set", "runs_dir=a_file"],
         "The 'runs_dir' setting of gradwise prune must be a folder that can be written. "
         "Got 'a_file' instead: it is a file. Pick another folder."),
        # QA: the default plot path came from runs_dir, yet the error named --out.
        (["lr-find", "run.yaml", "--steps", "3", "--sweeps", "1", "--set", "runs_dir=a_file"],
         "The 'runs_dir' setting of gradwise lr-find must be a folder that can be written. "
         "Got 'a_file' instead: it is a file. Pick another folder."),
        # QA: doctor ran every check first, and train built the run; both then said "Cannot
        # write to run folder a_file/<run>: File exists", naming neither a file nor a flag.
        (["doctor", "run.yaml", "--runs-dir", "a_file"],
         "The '--runs-dir' option of gradwise doctor must be a folder that can be written. "
         "Got 'a_file' instead: it is a file. Pick another folder."),
        (["train", "run.yaml", "--runs-dir", "a_file"],
         "The '--runs-dir' option of gradwise train must be a folder that can be written. "
         "Got 'a_file' instead: it is a file. Pick another folder."),
        (["train", "run.yaml", "--set", "runs_dir=a_file/runs"],
         "The 'runs_dir' setting of gradwise train must be a folder that can be written. "
         "Got 'a_file/runs' instead: cannot make it (Not a directory). Pick another folder."),
    ],
)  # fmt: skip
def test_an_output_path_that_cannot_be_written_is_a_one_line_error_before_any_work(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    (tmp_path / "run.yaml").write_text(_TINY_RUN)
    code = main(args)
    printed = capsys.readouterr()
    assert code == 2
    assert printed.out == ""  # nothing ran
    assert len(printed.err.strip().splitlines()) == 1, printed.err
    assert message in printed.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "folder", "run.yaml"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lr-find", "run.yaml", "--end", "inf"],
         "The '--end' parameter of gradwise lr-find must be a finite float > 1e-07. Got inf "
         "instead."),
        (["lr-find", "run.yaml", "--start", "inf"],
         "The '--start' parameter of gradwise lr-find must be a finite float > 0. Got inf instead."),
        (["viz", "--lr", "inf"], "--lr must be one positive number, or one per optimizer (2). "
         "Got 'inf' instead."),
        (["viz", "--start=1e400,1"], "--start must be two numbers X,Y. Got '1e400,1' "
         "instead."),
        (["viz", "--optimizers", "SGD,SGD"], "--optimizers names SGD twice; name each "
         "optimizer once (give one lr per optimizer with --lr to compare rates)."),
        (["landscape", "missing", "--span", "inf"],
         "--span must be a finite float > 0. Got inf instead."),
        (["landscape", "run.yaml"], "run.yaml is a file, not a run folder"),
        (["landscape", "missing"], "No run folder at missing: the folder does not exist."),
    ],
)  # fmt: skip
def test_option_errors_name_the_flag_and_the_path(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text(_TINY_RUN)
    code = main(args)
    printed = capsys.readouterr()
    assert code == 2
    assert printed.out == ""
    assert len(printed.err.strip().splitlines()) == 1, printed.err
    assert message in printed.err


def test_importing_gradwise_leaves_torch_dynamo_unloaded() -> None:
    # Making any torch optimizer imports torch._dynamo (1.3 s); gradwise made one at import
    # time, which every command paid, `gradwise --help` and a search's driver included.
    probe = (
        "import sys, gradwise, gradwise.cli, gradwise.optim, gradwise.train, gradwise.monitor;"
        "print('torch._dynamo' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data:\n  dataset: spirals\noptimizer:\n  name: SGD\n  1: 0.1\n",
         "line 5: The keys of 'train.optimizer' must be strings. Got 1 (an int) instead"),
        ("epochs: 3\naveraging: false\n",
         "line 2: 'train.averaging' must be a mapping of keys to values, or null to switch it off"),
        ("epochs: 3\nepochs: 5\n", "found the key 'epochs' a second time (first on line 1)"),
    ],
)  # fmt: skip
def test_train_names_the_file_and_line_of_a_bad_key_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    # The int key was an AttributeError traceback; 'averaging: false' trained with EMA
    # averaging on; the first 'epochs' was silently dropped.
    (tmp_path / "run.yaml").write_text(text)
    runs = tmp_path / "runs"
    argv = ["train", str(tmp_path / "run.yaml"), "--no-progress", "--runs-dir", str(runs)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"gradwise train: error: config file {tmp_path / 'run.yaml'}")
    assert error.count("\n") == 1
    assert message in error
    assert not runs.exists()


def _interrupted_tiny_run(tmp_path: Path) -> Path:
    """A finished one-epoch run whose summary says interrupted: a resume has one step to
    redo (nothing), then completes it."""
    run = _tiny_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    return run


def test_resume_finds_a_run_given_by_name_in_the_runs_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # --runs-dir was ignored: 'No run folder at tiny: the folder does not exist'.
    runs = tmp_path / "runs"
    run = _interrupted_tiny_run(runs)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["train", "--no-progress", "--resume", "tiny", "--runs-dir", str(runs)]) == 0
    assert f"run folder: {run}" in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert list(elsewhere.iterdir()) == []


def test_resume_of_a_path_with_another_runs_dir_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    run = _interrupted_tiny_run(runs)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    argv = ["train", "--no-progress", "--resume", str(run), "--runs-dir", "other"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error == (
        f"gradwise train: error: --resume {run} is a path, which --runs-dir other does not "
        "hold; --runs-dir finds a run given by name: give the name (--resume tiny --runs-dir "
        "other) or drop --runs-dir.\n"
    )
    # The same folder said both ways is not a conflict.
    assert main(["train", "--no-progress", "--resume", "runs/tiny", "--runs-dir", "runs"]) == 0
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


_SMALL_RUN = "data: {dataset: spirals}\nmodel: {name: mlp}\n"


@pytest.mark.parametrize(
    ("command", "text", "message"),
    [
        ("config", f"{_SMALL_RUN}optimizer:\n  name: Adamw\n",
         "line 4: unknown optimizer 'Adamw' in 'train.optimizer.name'; did you mean 'AdamW'?"),
        ("train", f"{_SMALL_RUN}optimizer:\n  name: SGD\n  lr: -1\n",
         "line 5: in 'train.optimizer': The 'lr' parameter of SGD must be"),
        ("doctor", f"{_SMALL_RUN}optimizer:\n  name: SGD\n  lr: 0.1\n  mom: 3\n",
         "line 6: unknown key 'mom' in 'train.optimizer'; valid keys: dampening"),
        ("train", f"{_SMALL_RUN}schedule:\n  warmup: 0\n  name: cosin\n",
         "line 5: unknown schedule 'cosin' in 'train.schedule.name'"),
        ("lr-find", "model: {name: mlp}\ndata:\n  dataset: spirals\n  preprocess: [{name: pca, n_components: -1}]\n",
         "line 4: in 'train.data.preprocess[0]': The 'n_components' parameter of PCA must be"),
    ],
)  # fmt: skip
def test_an_error_building_the_run_names_the_config_files_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, text: str, message: str
) -> None:
    # Parse-time errors named the line; these, found building the optimizer, schedule or
    # preprocessing, did not.
    path = tmp_path / "run.yaml"
    path.write_text(text)
    runs = tmp_path / "runs"
    extra = ["--runs-dir", str(runs)] if command in ("train", "doctor") else []
    assert main([command, str(path), *extra]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"gradwise {command}: error: config file {path}, {message}")
    assert error.count("\n") == 1
    assert not runs.exists()


def test_an_error_building_the_run_from_an_override_does_not_blame_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(f"{_SMALL_RUN}optimizer:\n  name: SGD\n  lr: 0.1\n")
    assert main(["config", str(path), "--set", "optimizer.lr=-1"]) == 2
    assert capsys.readouterr().err.startswith(
        "gradwise config: error: in 'train.optimizer': The 'lr' parameter of SGD must be"
    )
    # A key the file does not give: no line to name.
    assert main(["config", str(path), "--set", "model.name=nope"]) == 2
    assert capsys.readouterr().err.startswith("gradwise config: error: unknown model 'nope'")


def test_values_that_were_tracebacks_are_one_line_usage_errors(tmp_path: Path) -> None:
    # Each was a traceback with exit 1: the YAML float resolver took '-e5' for a float
    # (ValueError), an epoch count beyond int64 reached the schedules (OverflowError), and
    # tomllib refused a byte order mark as an invalid statement on line 1.
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbfepochs = 3\n[data]\nbatchsize = 2\n")
    cases = {
        ("train", "--set", "data.dataset=-e5"): "unknown dataset '-e5' in 'train.data.dataset'",
        ("config", "--set", f"epochs={2**63}"): "The 'epochs' key in 'train' must be an int "
        "<= 1099511627776 (2**40).",
        ("config", "bom.toml"): "config file bom.toml: unknown key 'batchsize' in 'train.data'",
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda args: gradwise(*args, cwd=tmp_path), cases))
    for (args, message), result in zip(cases.items(), results, strict=True):
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (args, result.stderr)
        assert message in lines[0], (args, result.stderr)


def test_the_new_run_a_finished_runs_resume_suggests_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It suggested `gradwise train RUN/config.yaml`, which failed: that config names the
    # finished run's folder, which exists.
    run = _tiny_run(tmp_path)
    capsys.readouterr()
    assert main(["train", "--no-progress", "--resume", str(run)]) == 2
    suggested = re.search(r"\(gradwise train (.+?): the config", capsys.readouterr().err)
    assert suggested is not None
    assert main(["train", "--no-progress", *suggested[1].split()]) == 0
    assert len([path for path in run.parent.iterdir() if path.is_dir()]) == 2


def test_ctrl_c_after_a_distributed_run_finished_suggests_no_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C while the ranks were shutting down, after the run completed: it printed
    # "interrupted; resume with: ...", and that resume was refused (nothing to resume).
    import gradwise.distributed

    run = _tiny_run(tmp_path)
    capsys.readouterr()

    def launch(function: object, arguments: tuple[object, ...], nproc: int) -> object:
        Path(str(arguments[-1])).write_text(str(run))  # the run folder, as rank 0 announces
        raise KeyboardInterrupt

    monkeypatch.setattr(gradwise.distributed, "launch", launch)
    code = main(["train", "--no-progress", "--nproc", "2", "--set", "data.dataset=spirals",
                 "--set", "model.name=mlp", "--set", "epochs=1"])  # fmt: skip
    assert code == 130
    error = capsys.readouterr().err
    assert (
        error == f"gradwise train: interrupted after the run ended (completed); run folder: {run}\n"
    )


def test_output_to_a_reader_that_went_away_ends_quietly(tmp_path: Path) -> None:
    # QA: `gradwise search show NAME | head -c0` and `gradwise runs | ...` ended in a
    # 17-line BrokenPipeError traceback, exit 1.
    from tests.cli.helpers import COMMAND, environment

    (tmp_path / "runs").mkdir()
    reader, writer = os.pipe()
    os.close(reader)  # gone before the command prints its first line
    try:
        done = subprocess.run(
            [*COMMAND, "runs", "--runs-dir", "runs"],
            cwd=tmp_path,
            env=environment(),
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(writer)
    assert done.returncode == 128 + 13, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr == ""
