"""`gradwise search` end to end, with real worker processes on a SQLite study."""

from __future__ import annotations

import dataclasses
import html
import json
import math
import signal

import optuna
import pytest
from optuna.trial import TrialState

from gradwise.cli import main
from gradwise.config import ConfigError, load_config, read_file
from gradwise.search import Parameter, grid_points, parse_search
from gradwise.search import search as run_search
from tests.cli.helpers import gradwise, start
from tests.search.helpers import (
    SPACE,
    epochs_logged,
    load,
    read_metrics,
    storage_of,
    wait_for,
    write_config,
)


def test_random_search_with_two_workers_writes_trials_report_and_best_config(tmp_path) -> None:
    config = write_config(tmp_path, "tiny")
    done = gradwise("search", str(config), "--trials", "4", "--workers", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "studies" / "tiny"
    trials = load(storage_of(folder), "tiny")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for trial in trials:
        assert 1e-3 <= trial.params["optimizer.lr"] <= 3e-1
        assert 4 <= trial.params["model.width"] <= 32
        run = folder / trial.user_attrs["run"]
        assert (run / "report.html").is_file()
        assert (run / "checkpoints" / "last.pt").is_file()
        # The trial's value is its best epoch's validation loss, read back from its run.
        losses = [r["val_loss"] for r in read_metrics(run) if r["kind"] == "epoch"]
        assert math.isclose(trial.value, min(losses), rel_tol=1e-9)
    logs = sorted((folder / "workers").glob("worker-*.log"))
    assert len(logs) == 2
    assert "Traceback" not in "".join(log.read_text() for log in logs)
    html = (folder / "report.html").read_text()
    assert "optimizer.lr" in html
    assert "best -" not in done.stderr.splitlines()[-1]
    assert "best config" in done.stdout

    best = min(trials, key=lambda t: t.value)
    best_config = load_config(folder / "best.yaml")
    assert best_config.optimizer["lr"] == best.params["optimizer.lr"]
    assert best_config.model.width == best.params["model.width"]
    rerun = gradwise(
        "train", str(folder / "best.yaml"), "--runs-dir", "again", "--no-progress", cwd=tmp_path
    )
    assert rerun.returncode == 0, rerun.stderr

    shown = gradwise("search", "show", str(folder), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"{best.value:.4g}"[:5] in shown.stdout
    assert shown.stdout.index(f"{best.number}") >= 0


def test_a_diverging_trial_is_recorded_as_failed_and_the_search_goes_on(tmp_path) -> None:
    search = """\
  space:
    optimizer.name: {grid: [SGD]}
    optimizer.lr: {grid: [0.05, 1.0e+12]}
"""
    config = write_config(tmp_path, "nan", search=search)
    done = gradwise("search", str(config), "--strategy", "grid", "--trials", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    trials = load(storage_of(tmp_path / "studies" / "nan"), "nan")
    by_lr = {t.params["optimizer.lr"]: t for t in trials}
    assert by_lr[0.05].state == TrialState.COMPLETE
    assert by_lr[1e12].state == TrialState.FAIL
    assert "diverged" in by_lr[1e12].user_attrs["fail_reason"]
    assert "1 failed" in done.stderr


def test_an_invalid_space_is_rejected_before_any_trial_runs(tmp_path) -> None:
    search = """\
  space:
    optimizer.lr: {log_uniform: [0, 0.1]}
"""
    config = write_config(tmp_path, "bad", search=search)
    done = gradwise("search", str(config), cwd=tmp_path)
    assert done.returncode == 2
    assert "log-scale distribution needs low > 0" in done.stderr
    assert not (tmp_path / "studies").exists()
    typo = write_config(tmp_path, "typo", search="  space:\n    model.widht: {int: [4, 8]}\n")
    done = gradwise("search", str(typo), cwd=tmp_path)
    assert done.returncode == 2
    assert "did you mean 'width'" in done.stderr


def test_a_model_option_the_model_does_not_take_is_refused_before_any_study(tmp_path) -> None:
    # QA: the study was made and every trial failed ("build_model got an unknown option
    # 'foo'"), exit 1, where `gradwise train --set model.options.foo=0.5` exits 2.
    search = "  space:\n    model.options.foo: {uniform: [0.1, 1]}\n"
    config = write_config(tmp_path, "foo", search=search)
    done = gradwise("search", str(config), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert (
        "'train.search.space.model.options.foo' = 0.1 does not make a valid run config: in "
        "'train.model': build_model got an unknown option 'foo' for 'mlp'"
    ) in done.stderr
    assert not (tmp_path / "studies").exists()


def test_a_grid_larger_than_the_budget_says_it_runs_a_seeded_subset(tmp_path) -> None:
    # QA: 6 grid points with --trials 4 ran 4 and said nothing (a smaller grid says so).
    search = "  pruner: none\n  space:\n    model.activation: [relu, tanh, gelu]\n"
    config = write_config(tmp_path, "subset", epochs=1, search=search)
    done = gradwise("search", str(config), "--strategy", "grid", "--trials", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (
        "the grid has 3 points: this study runs 1 of them, a random subset drawn with its "
        "seed (it was made with --trials 1, and a study keeps its grid); a new study "
        "(--study NAME) with --trials 3 runs them all"
    ) in done.stdout + done.stderr
    trials = load(storage_of(tmp_path / "studies" / "subset"), "subset")
    assert len(trials) == 1
    spec = parse_search(read_file(config))
    # The seeded shuffled order's first point (the default seed is 0), not the declared first.
    (point,) = grid_points(spec, 1, seed=0)
    assert trials[0].params == point


def test_a_trial_whose_config_does_not_build_points_to_no_run_folder(tmp_path) -> None:
    # QA: the failed trial's row and "the first failure" named trials/trial-0000, which
    # was never made (the path was recorded before the config was built).
    search = "  space:\n    model.name: {grid: [cnn2d]}\n"  # spirals has no image shape
    config = write_config(tmp_path, "shape", epochs=1, search=search)
    done = gradwise("search", str(config), "--strategy", "grid", "--trials", "1", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    folder = tmp_path / "studies" / "shape"
    (trial,) = load(storage_of(folder), "shape")
    assert trial.user_attrs["run"] is None
    assert not (folder / "trials" / "trial-0000").exists()
    assert (
        "the first failure, trial 0 (no run folder: the config did not build): config error: "
        "in 'train.model'"
    ) in done.stdout
    assert "trials/trial-0000" not in done.stdout


def test_rerunning_resumes_the_study_and_a_changed_space_is_an_error(tmp_path) -> None:
    config = write_config(tmp_path, "again")
    first = gradwise("search", str(config), "--trials", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    url = storage_of(tmp_path / "studies" / "again")
    before = load(url, "again")
    more = gradwise("search", str(config), "--trials", "3", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    after = load(url, "again")
    assert len(after) == 3
    assert [t.params for t in after[:2]] == [t.params for t in before]
    assert [t.value for t in after[:2]] == [t.value for t in before]
    # gradwise's own lines only: optuna logged "[I ...] A new study created in RDB ..."
    # and "Using an existing study ..." in its own format.
    for done in (first, more):
        assert "A new study created" not in done.stderr
        assert "Using an existing study" not in done.stderr

    narrowed = SPACE.replace("3.0e-1", "1.0e-1")
    write_config(tmp_path, "again", search=narrowed)
    # The two refused commands run side by side (neither may change the study).
    refused = start("search", str(config), "--trials", "3", cwd=tmp_path)
    other = gradwise("search", str(config), "--trials", "3", "--strategy", "tpe", cwd=tmp_path)
    _, stderr = refused.communicate(timeout=300)
    assert refused.returncode == 2
    assert "space of optimizer.lr was" in stderr
    assert "--study NEW_NAME" in stderr
    assert other.returncode == 2
    assert len(load(url, "again")) == 3


def test_coarse_to_fine_runs_its_stages_with_their_epochs_and_tightened_ranges(tmp_path) -> None:
    search = (
        SPACE
        + """\
  stages:
    - {epochs: 1, trials: 4, keep: 2}
    - {epochs: 3, trials: 3}
"""
    )
    config = write_config(tmp_path, "c2f", search=search, epochs=3)
    done = gradwise(
        "search", str(config), "--strategy", "coarse-to-fine", "--workers", "2", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "studies" / "c2f"
    trials = load(storage_of(folder), "c2f")
    assert [t.user_attrs["stage"] for t in trials] == [0] * 4 + [1] * 3
    assert [t.user_attrs["epochs"] for t in trials] == [1] * 4 + [3] * 3
    kept = sorted(trials[:4], key=lambda t: t.value)[:2]
    kept_lrs = [t.params["optimizer.lr"] for t in kept]
    span = math.log(3e-1) - math.log(1e-3)
    low = max(1e-3, math.exp(math.log(min(kept_lrs)) - 0.1 * span))
    high = min(3e-1, math.exp(math.log(max(kept_lrs)) + 0.1 * span))
    for trial in trials[4:]:
        assert low * (1 - 1e-9) <= trial.params["optimizer.lr"] <= high * (1 + 1e-9)
    assert "Coarse-to-fine" in (folder / "report.html").read_text()


def test_median_pruner_stops_hopeless_trials(tmp_path) -> None:
    search = """\
  space:
    optimizer.lr: {grid: [3.0e-2, 1.0e-2, 2.0e-2, 5.0e-2, 4.0e-2, 1.0e-7, 2.0e-7, 3.0e-7]}
  pruner: median
"""
    config = write_config(tmp_path, "prune", search=search, epochs=6)
    done = gradwise("search", str(config), "--strategy", "grid", "--trials", "8", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    trials = load(storage_of(tmp_path / "studies" / "prune"), "prune")
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.params, t.state) for t in trials]
    # Only the hopeless rates are pruned, before their last epoch.
    assert all(t.params["optimizer.lr"] < 1e-6 for t in pruned)
    assert all(max(t.intermediate_values) < 5 for t in pruned)
    # The epoch it was pruned at, counted from 1 everywhere: the leaderboard's note, the
    # trial's run (its summary and its last epoch record).
    folder = tmp_path / "studies" / "prune"
    printed = done.stdout
    for trial in pruned:
        run = folder / trial.user_attrs["run"]
        last_epoch = epochs_logged(run)[-1]
        assert last_epoch == max(trial.intermediate_values) + 1
        summary = json.loads((run / "summary.json").read_text())
        assert summary["message"] == f"pruned by the search at epoch {last_epoch}"
        assert f"pruned at epoch {last_epoch}" in printed


def test_ctrl_c_stops_the_search_and_the_same_command_resumes_it(tmp_path) -> None:
    config = write_config(tmp_path, "stop", epochs=40)
    search = start("search", str(config), "--trials", "2", cwd=tmp_path)
    folder = tmp_path / "studies" / "stop"
    wait_for(
        lambda: list(folder.glob("trials/trial-0000/checkpoints/last.pt")),
        120,
        "the first checkpoint",
    )
    # About 7 s of the search are left at this point on an idle machine; once (the
    # machine running two other test sessions) it had ended before the signal was sent.
    assert search.poll() is None, "the search ended before the test could interrupt it"
    search.send_signal(signal.SIGINT)
    stdout, stderr = search.communicate(timeout=120)
    assert search.returncode == 130, stderr
    url = storage_of(folder)
    stopped = load(url, "stop")
    assert stopped[0].state == TrialState.FAIL
    # QA: the report of a study interrupted with budget left read "every trial ended".
    said = (
        "the study was interrupted with budget left (1 of its 2 trials not started, 1 "
        "interrupted trial(s) to finish); run the same gradwise search command again to "
        "resume it"
    )
    shown = gradwise("search", "show", str(folder), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for output in (stdout, shown.stdout):
        assert said in output
        assert output.count("run the same") == 1
    page = html.unescape((folder / "report.html").read_text())
    assert said in page
    assert "every trial ended" not in page
    assert ">interrupted</" in page  # the page's status
    resumed = gradwise("search", str(config), "--trials", "2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 1 interrupted trial" in resumed.stderr
    trials = load(url, "stop")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.params == stopped[0].params
    assert retry.user_attrs["run"] == "trials/trial-0000"
    epochs = epochs_logged(folder / "trials/trial-0000")
    assert epochs == list(range(1, 41))  # continued from its checkpoint, not restarted


def test_a_one_worker_search_is_reproducible_from_its_seed(tmp_path) -> None:
    config = write_config(tmp_path, "seeded", epochs=1)
    # The three searches run side by side (each study has its own folder and SQLite file):
    # one worker leaves the second core idle.
    searches = {
        study: start(
            "search",
            str(config),
            "--trials",
            "3",
            "--study",
            study,
            "--seed",
            seed,
            "--strategy",
            "tpe",
            cwd=tmp_path,
        )
        for study, seed in (("a", "3"), ("b", "3"), ("c", "4"))
    }
    params = {}
    for study, search in searches.items():
        _, stderr = search.communicate(timeout=300)
        assert search.returncode == 0, stderr
        params[study] = [t.params for t in load(storage_of(tmp_path / "studies" / study), study)]
    assert params["a"] == params["b"]
    assert params["a"] != params["c"]


@pytest.mark.parametrize("storage", ["sqlite:///new.db", "sqlite:///sub/new.db"])
def test_a_worker_on_a_missing_sqlite_file_leaves_no_database_behind(
    tmp_path, monkeypatch, capsys, storage: str
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["worker", "--storage", storage, "--study", "s"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "gradwise worker: error: no SQLite database at " in error
    assert "new.db" in error
    assert list(tmp_path.iterdir()) == []


def test_trials_and_best_config_pick_the_best_epoch_in_the_search_direction(tmp_path) -> None:
    # QA: trials ran with checkpoint.mode auto (so an explicit direction was ignored when
    # picking a trial's best epoch) and best.yaml kept the base config's checkpoint.mode
    # (max, for val_accuracy) next to the searched metric val_loss.
    base = "checkpoint: {monitor: val_accuracy, mode: max}\n"
    space = "    optimizer.lr: {grid: [1.0e-2]}\n"
    configs = {
        "lossy": "  metric: val_loss\n  space:\n" + space,
        "upside": "  metric: val_accuracy\n  direction: minimize\n  space:\n" + space,
    }
    searches = {}
    for name, search in configs.items():
        config = write_config(tmp_path, name, epochs=3, search=search)
        config.write_text(config.read_text().replace("search:\n", base + "search:\n"))
        searches[name] = start("search", str(config), "--strategy", "grid", "--trials", "1",
                               cwd=tmp_path)  # fmt: skip
    for name, search in searches.items():
        _, stderr = search.communicate(timeout=300)
        assert search.returncode == 0, stderr
        folder = tmp_path / "studies" / name
        (trial,) = load(storage_of(folder), name)
        metric = "val_loss" if name == "lossy" else "val_accuracy"
        values = [r[metric] for r in read_metrics(folder / trial.user_attrs["run"])
                  if r["kind"] == "epoch"]  # fmt: skip
        assert math.isclose(trial.value, min(values), rel_tol=1e-9), (name, values)
        checkpoint = load_config(folder / "best.yaml").checkpoint
        assert (checkpoint.monitor, checkpoint.mode) == (metric, "min")


def test_a_trial_that_crashes_is_failed_with_its_reason_and_the_search_goes_on(tmp_path) -> None:
    # The second model built in a worker raises (as CUDA running out of memory would): the
    # worker dies, is replaced, and the trial is failed for good with the error as its
    # reason. Without a reason it counted as interrupted, and a coarse-to-fine stage
    # waited for a retry that only the next `gradwise search` would queue.
    (tmp_path / "crashy.py").write_text(
        "import torch\n"
        "built = 0\n"
        "def build(**options):\n"
        "    global built\n"
        "    built += 1\n"
        "    if built == 2:\n"
        "        raise RuntimeError('out of memory (planted)')\n"
        "    return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(),\n"
        "                               torch.nn.Linear(8, 3))\n"
    )
    search = """\
  space:
    optimizer.lr: {grid: [0.01, 0.02]}
"""
    config = write_config(tmp_path, "crash", epochs=1, search=search)
    config.write_text(config.read_text().replace("name: mlp,", "name: 'crashy:build',"))
    done = gradwise("search", str(config), "--strategy", "grid", "--trials", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    trials = load(storage_of(tmp_path / "studies" / "crash"), "crash")
    states = sorted(trial.state.name for trial in trials)
    assert states == ["COMPLETE", "FAIL"]
    (failed,) = [trial for trial in trials if trial.state == TrialState.FAIL]
    assert failed.user_attrs["fail_reason"] == "crashed: RuntimeError: out of memory (planted)"


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_out_of_the_configs_seed_range_is_refused_before_any_study(
    tmp_path, monkeypatch, capsys, seed
) -> None:
    # --seed -1 was accepted (gradwise train refuses seed: -1 in its config).
    config = write_config(tmp_path, "seeded")
    monkeypatch.chdir(tmp_path)
    assert main(["search", str(config), "--seed", seed, "--trials", "1"]) == 2
    assert capsys.readouterr().err == (
        f"gradwise search: error: --seed must be an int in [0, 4294967295]. Got {seed} instead.\n"
    )
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize("argument", ["trials", "workers", "heartbeat"])
def test_a_boolean_count_is_refused_before_any_study(tmp_path, monkeypatch, argument) -> None:
    # QA: search(trials=True) passed the int check (a bool is an int) and ran one trial.
    config = write_config(tmp_path, "counted")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"--{argument} must be an int >= 1. Got True instead"):
        run_search(config, **{argument: True})
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize("storage", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_storage_is_refused_before_any_trial(
    tmp_path, monkeypatch, storage
) -> None:
    # QA: each process opened its own empty database: the search made the study twice and
    # ended with "no study 'tiny' in the storage (studies there: none)" or "no SQLite
    # database at .../:memory:".
    config = write_config(tmp_path, "tiny")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="in-memory SQLite database") as raised:
        run_search(config, trials=1, storage=storage)
    assert "sqlite:///PATH/study.db" in str(raised.value)
    assert not (tmp_path / ":memory:").exists()


def test_a_study_where_no_trial_completed_says_so_and_why_ranks_none_and_fails(tmp_path) -> None:
    # QA: with every trial failed, the leaderboard still ranked them (rank 1, 2: "failed")
    # as if one were the best, and nothing said that no trial had completed; the search
    # exited 0 (gradwise train exits 1 when its run fails) and report.html still ranked them.
    search = """\
  space:
    optimizer.name: {grid: [SGD]}
    optimizer.lr: {grid: [1.0e+12, 1.0e+13]}
"""
    config = write_config(tmp_path, "doomed", epochs=1, search=search)
    done = gradwise("search", str(config), "--strategy", "grid", "--trials", "2", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    folder = tmp_path / "studies" / "doomed"
    trials = load(storage_of(folder), "doomed")
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    first = trials[0]
    shown = gradwise("search", "show", str(folder), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr  # it only shows the study
    for output in (done.stdout, shown.stdout):
        lines = output.splitlines()
        assert lines[0] == "Trials (none completed, so none is ranked)"
        assert lines[1].split()[:3] == ["trial", "state", "val_loss"]
        assert "Leaderboard" not in output
        (said,) = [line for line in lines if line.startswith("no trial completed")]
        assert said.startswith(
            "no trial completed (2 failed, 0 pruned), so there is no best trial and no best "
            f"config; the first failure, trial {first.number} (run "
        )
        assert said.endswith(f"{first.user_attrs['run']}): {first.user_attrs['fail_reason']}")
        assert "diverged" in first.user_attrs["fail_reason"]
        assert "best config:" not in output
    assert not (folder / "best.yaml").exists()
    page = (folder / "report.html").read_text()
    leaderboard = page[page.index("<h2>Leaderboard</h2>") :]
    leaderboard = html.unescape(leaderboard[: leaderboard.index("</table>")])
    assert leaderboard.startswith(f"<h2>Leaderboard</h2>\n<p>{said}</p>\n<table")
    assert "<caption>Trials (none completed, so none is ranked)</caption>" in leaderboard
    assert ">rank</th>" not in leaderboard


def _add_complete_trials(url: str, name: str, values: list[float]) -> None:
    """Add complete trials with these values and the first trial's parameters to a study
    (Optuna keeps inf and -inf: another tool's ask and tell, or an older gradwise)."""
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        first = study.trials[0]
        for value in values:
            study.add_trial(
                optuna.trial.create_trial(
                    params=first.params,
                    distributions=first.distributions,
                    value=value,
                    user_attrs={"epochs": 1},
                )
            )
    finally:
        storage.engine.dispose()


def test_a_complete_trial_with_an_infinite_value_is_no_best_trial_in_any_output(
    tmp_path, monkeypatch, capsys
) -> None:
    # QA: a complete trial whose value was inf was ranked #1 by the leaderboard, was the
    # progress line's best and best.yaml's trial (and the search exited 0), while the
    # report's summary said there was no best trial; beside a finite result, -inf was the
    # progress line's best and best.yaml's. A non-finite value is no valid result.
    search = """\
  space:
    optimizer.name: {grid: [SGD]}
    optimizer.lr: {grid: [1.0e+12]}
"""
    config = write_config(tmp_path, "inf", epochs=1, search=search)
    args = ["search", str(config), "--strategy", "grid", "--trials", "1"]
    made = gradwise(*args, cwd=tmp_path)
    assert made.returncode == 1, made.stderr  # its one trial diverged: failed
    folder = tmp_path / "studies" / "inf"
    url = storage_of(folder)
    _add_complete_trials(url, "inf", [math.inf])
    monkeypatch.chdir(tmp_path)
    assert main(args) == 1  # resumed, nothing left to run: no best trial
    searched = capsys.readouterr().out
    assert main(["search", "show", "inf"]) == 0
    shown = capsys.readouterr().out
    for output in (searched, shown):
        lines = output.splitlines()
        assert lines[0] == "Trials (none completed with a finite val_loss, so none is ranked)"
        assert lines[1].split()[:3] == ["trial", "state", "val_loss"]
        assert lines[4].split()[:3] == ["1", "complete", "inf"]
        assert "not finite (a diverged run?): no valid result, not ranked" in lines[4]
        assert "· best -" in output
        (said,) = [line for line in lines if line.startswith("no trial completed")]
        assert said.startswith(
            "no trial completed with a finite val_loss (1 failed, 0 pruned, 1 complete with a "
            "val_loss that is not finite), so there is no best trial and no best config"
        )
        assert "best config:" not in output
    assert not (folder / "best.yaml").exists()
    page = html.unescape((folder / "report.html").read_text())
    assert "No trial completed with a finite val_loss" in page
    assert "best trial<" not in page

    # Beside a finite result, -inf (the lowest loss) is neither ranked nor the best.
    _add_complete_trials(url, "inf", [0.7, -math.inf])
    assert main(["search", "show", "inf"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "Leaderboard: val_loss, lower is better (4 finished trials; 2 with a val_loss that is "
        "not finite, unranked)"
    )
    assert [line.split()[:4] for line in lines[3:7]] == [
        ["1", "2", "complete", "0.7"],
        ["2", "0", "failed", "-"],
        ["-", "1", "complete", "inf"],
        ["-", "3", "complete", "-inf"],
    ]
    assert "· best val_loss 0.7 (trial 2)" in lines[7]
    assert (folder / "best.yaml").read_text().startswith("# The best trial (2, val_loss 0.7)")
    page = html.unescape((folder / "report.html").read_text())
    assert "<td>best trial</td><td>2</td>" in page


def test_a_stale_best_config_is_removed_when_the_study_has_no_best_trial(
    tmp_path, monkeypatch, capsys
) -> None:
    # QA: best.yaml was written when there was a best trial and never removed: one from an
    # earlier finish (an older gradwise took inf for the best value) stayed beside a
    # summary that said there was no best config.
    search = """\
  space:
    optimizer.name: {grid: [SGD]}
    optimizer.lr: {grid: [1.0e+12]}
"""
    config = write_config(tmp_path, "stale", epochs=1, search=search)
    made = gradwise("search", str(config), "--strategy", "grid", "--trials", "1", cwd=tmp_path)
    assert made.returncode == 1, made.stderr  # its one trial diverged: failed
    folder = tmp_path / "studies" / "stale"
    _add_complete_trials(storage_of(folder), "stale", [math.inf])
    (folder / "best.yaml").write_text("# The best trial (1, val_loss inf) of this study\n")
    monkeypatch.chdir(tmp_path)
    assert main(["search", "show", "stale"]) == 0
    out = capsys.readouterr().out
    assert not (folder / "best.yaml").exists()
    assert "so there is no best trial and no best config" in out
    assert "best.yaml" not in out


def test_a_resume_with_another_seed_or_heartbeat_is_refused_naming_both(
    tmp_path, monkeypatch, capsys
) -> None:
    # QA: the seed and heartbeat stored with a study silently won over the ones given
    # when it resumed (its workers read the study's); another space or strategy is refused.
    config = write_config(tmp_path, "kept", epochs=1)
    made = gradwise("search", str(config), "--trials", "1", "--seed", "3", "--heartbeat", "5",
                    cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    monkeypatch.chdir(tmp_path)
    refusals = {
        ("--seed", "4"): "--seed 3, not --seed 4, and keeps it (the seed: it decided the "
        "sampler's draws and the grid's order); pass --seed 3 or leave it out to resume",
        ("--heartbeat", "7"): "--heartbeat 5, not --heartbeat 7, and keeps it (the heartbeat: "
        "every worker judges the others' trials stale by it); pass --heartbeat 5 or leave it "
        "out to resume the study, or pass --study NEW_NAME to start another with --heartbeat 7",
        ("--seed", "0", "--heartbeat", "10"): "--seed 3 --heartbeat 5, not --seed 0 "
        "--heartbeat 10, and keeps them (the seed: it decided the sampler's draws and the grid's "
        "order; the heartbeat: every worker judges the others' trials stale by it); pass --seed "
        "3 --heartbeat 5 or leave them out",
    }
    for given, message in refusals.items():
        assert main(["search", str(config), "--trials", "2", *given]) == 2
        error = capsys.readouterr().err
        assert error.startswith("gradwise search: error: study 'kept' was made with "), error
        assert message in error
    url = storage_of(tmp_path / "studies" / "kept")
    assert len(load(url, "kept")) == 1  # nothing ran
    # The stored values given again, or left out, resume it.
    resumed = gradwise("search", str(config), "--trials", "2", "--seed", "3", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert len(load(url, "kept")) == 2
    stored = _stored_settings(url, "kept")
    assert (stored["seed"], stored["heartbeat"], stored["trials"]) == (3, 5, 2)


def _stored_settings(url: str, name: str) -> dict:
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).user_attrs["gradwise"]
    finally:
        storage.engine.dispose()


def test_a_float_range_written_with_ints_resumes_either_way_even_from_an_older_study(
    tmp_path,
) -> None:
    # QA: {uniform: [0, 1]} and {uniform: [0.0, 1.0]} are one space, but a study made with
    # one refused a resume with the other ("space of regularization.l2 was {'uniform': [0,
    # 1]}, now {'uniform': [0.0, 1.0]}"). A study stored by a version that kept the ints
    # (and their fingerprint) resumes too.
    space = "  space:\n    regularization.l2: {uniform: [%s, %s]}\n"
    config = write_config(tmp_path, "ranged", epochs=1, search=space % (0, 1))
    made = gradwise("search", str(config), "--trials", "1", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    url = storage_of(tmp_path / "studies" / "ranged")
    stored = _stored_settings(url, "ranged")
    assert stored["spec"]["space"] == {"regularization.l2": {"uniform": [0.0, 1.0]}}
    old_spec = dataclasses.replace(
        parse_search(read_file(config)),
        parameters=(Parameter("regularization.l2", "uniform", 0, 1),),
    )
    assert old_spec.fingerprint() != stored["fingerprint"]
    old = {**stored, "spec": old_spec.to_mapping(), "fingerprint": old_spec.fingerprint()}
    _store_settings(url, "ranged", old)

    write_config(tmp_path, "ranged", epochs=1, search=space % ("0.0", "1.0"))
    resumed = gradwise("search", str(config), "--trials", "2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert len(load(url, "ranged")) == 2


def _store_settings(url: str, name: str, settings: dict) -> None:
    storage = optuna.storages.RDBStorage(url)
    try:
        optuna.load_study(study_name=name, storage=storage).set_user_attr("gradwise", settings)
    finally:
        storage.engine.dispose()


def test_a_resume_without_trials_keeps_the_budget_and_trials_n_replaces_it(
    tmp_path, monkeypatch, capsys
) -> None:
    # QA: a resume without --trials reset the stored budget to the default 20: a study
    # made with --trials 50 shrank to 20, and one made with --trials 2 grew to 20 (and ran
    # 18 more trials). An explicit --trials N still makes the budget N, more or fewer.
    config = write_config(tmp_path, "budget", epochs=1)
    made = gradwise("search", str(config), "--trials", "2", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    url = storage_of(tmp_path / "studies" / "budget")
    monkeypatch.chdir(tmp_path)
    # A budget below the trials run reads "trials 3 done (budget 1 used up)", not "3/1".
    for given, budget, trials, done in [
        ([], 2, 2, "trials 2/2 done ·"),
        (["--trials", "3"], 3, 3, "trials 3/3 done ·"),
        ([], 3, 3, "trials 3/3 done ·"),
        (["--trials", "1"], 1, 3, "trials 3 done (budget 1 used up) ·"),
    ]:
        assert main(["search", str(config), *given]) == 0
        assert done in capsys.readouterr().out
        assert _stored_settings(url, "budget")["trials"] == budget
        assert len(load(url, "budget")) == trials  # a smaller budget keeps the trials run


def test_a_coarse_to_fine_resume_without_trials_keeps_the_stages_trials_made(
    tmp_path, monkeypatch, capsys
) -> None:
    # QA: --trials N splits the default stages in halves; resumed without it, the stages
    # were the default 2 x 25, another search: "study 'halves' exists with a different search".
    config = write_config(tmp_path, "halves", epochs=1)
    args = ["search", str(config), "--strategy", "coarse-to-fine"]
    made = gradwise(*args, "--trials", "2", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    url = storage_of(tmp_path / "studies" / "halves")
    monkeypatch.chdir(tmp_path)
    assert main(args) == 0, capsys.readouterr().err
    assert "trials 2/2 done" in capsys.readouterr().out
    assert _stored_settings(url, "halves")["trials"] == 2
    assert len(load(url, "halves")) == 2
    # Another --trials is still another search (its stages differ): refused, as before.
    assert main([*args, "--trials", "4"]) == 2
    assert "exists with a different search" in capsys.readouterr().err
