"""Killed workers, several workers on one SQLite file, PostgreSQL across workers, and
searches interrupted at awkward moments then resumed."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import time
import warnings
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from gradwise.search import grid_points, parse_search
from tests.cli.helpers import COMMAND, environment, gradwise, start
from tests.postgres_server import new_database
from tests.search.helpers import (
    SPACE,
    epochs_logged,
    load,
    storage_of,
    wait_for,
    write_config,
)

KILL_EPOCHS = 30
MAX_ATTEMPTS = 4  # a trial and its 3 retries


def _kill_a_worker_mid_trial(tmp_path, storage: str | None) -> None:
    """SIGKILL the worker of trial 0 after its first checkpoint; the study must still end
    with every trial complete, trial 0 retried with its parameters from its checkpoint."""
    config = write_config(tmp_path, "kill", epochs=KILL_EPOCHS)
    args = ["search", str(config), "--trials", "2", "--heartbeat", "1"]
    if storage is not None:
        args += ["--storage", storage]
    search = start(*args, cwd=tmp_path)
    folder = tmp_path / "studies" / "kill"
    wait_for(lambda: (folder / "study.json").is_file(), 60, "the study")
    url = storage_of(folder)

    def running_trial_with_checkpoint():
        trials = load(url, "kill")
        ready = (folder / "trials/trial-0000/checkpoints/last.pt").is_file()
        if trials and trials[0].state == TrialState.RUNNING and ready:
            return trials[0]
        return None

    victim = wait_for(running_trial_with_checkpoint, 120, "trial 0 to checkpoint")
    host, pid = victim.user_attrs["worker"].rsplit(":", 1)
    os.kill(int(pid), signal.SIGKILL)

    stdout, stderr = search.communicate(timeout=300)
    assert search.returncode == 0, stderr
    trials = load(url, "kill")
    assert trials[0].state == TrialState.FAIL
    assert "fail_reason" not in trials[0].user_attrs  # killed, not failed on its own
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2, [(t.number, t.state) for t in trials]
    retry = next(t for t in complete if t.system_attrs.get("failed_trial") == 0)
    assert retry.params == trials[0].params
    assert retry.user_attrs["run"] == "trials/trial-0000"
    epochs = epochs_logged(folder / "trials/trial-0000")
    # Resumed from the last checkpoint: no epoch was run twice, none is missing.
    assert epochs == list(range(1, KILL_EPOCHS + 1))


def test_a_killed_worker_is_replaced_and_its_trial_resumed_on_sqlite(tmp_path) -> None:
    _kill_a_worker_mid_trial(tmp_path, storage=None)


def test_a_killed_worker_is_replaced_and_its_trial_resumed_on_postgresql(
    tmp_path, postgres_url
) -> None:
    _kill_a_worker_mid_trial(tmp_path, new_database(postgres_url, "kill_test"))


def test_four_workers_share_one_sqlite_file_without_lock_errors(tmp_path) -> None:
    config = write_config(tmp_path, "busy", epochs=1)
    done = gradwise("search", str(config), "--trials", "12", "--workers", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "studies" / "busy"
    trials = load(storage_of(folder), "busy")
    assert len(trials) == 12
    assert all(t.state == TrialState.COMPLETE for t in trials)
    logs = "".join(path.read_text() for path in (folder / "workers").glob("*.log"))
    assert "locked" not in logs
    assert "Traceback" not in logs
    assert len({t.user_attrs["worker"] for t in trials}) >= 2


@pytest.mark.parametrize(("strategy", "budget"), [("tpe", 6), ("grid", 4)])
def test_a_worker_from_another_machine_joins_a_postgresql_study(
    tmp_path, postgres_url, strategy, budget
) -> None:
    url = new_database(postgres_url, f"join_{strategy}")
    config = write_config(tmp_path, "joined", epochs=3)
    search = start(
        "search",
        str(config),
        "--strategy",
        strategy,
        "--trials",
        str(budget),
        "--storage",
        url,
        cwd=tmp_path,
    )
    wait_for(lambda: (tmp_path / "studies" / "joined" / "study.json").is_file(), 60, "the study")
    # "Another machine": another folder, knowing only the storage URL and the study name.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    joined = gradwise("worker", "--storage", url, "--study", "joined", cwd=elsewhere)
    assert joined.returncode == 0, joined.stderr
    _, stderr = search.communicate(timeout=300)
    assert search.returncode == 0, stderr
    trials = load(url, "joined")
    assert len(trials) == budget  # the grid of 2 x 2 points fits a budget of 4
    # (the default median pruner may stop the last trials)
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    here = {
        t.number for t in trials if (tmp_path / "studies/joined" / t.user_attrs["run"]).is_dir()
    }
    there = {
        t.number for t in trials if (elsewhere / "studies/joined" / t.user_attrs["run"]).is_dir()
    }
    assert here
    assert there
    assert not here & there
    if strategy == "grid":  # each grid point ran exactly once across the two workers
        points = [tuple(sorted(t.params.items())) for t in trials]
        assert len(set(points)) == len(points)
    assert "ran " in joined.stderr


C2F_STAGES = """\
  stages:
    - {epochs: 40, trials: 1, keep: 1}
    - {epochs: 1, trials: 1}
  margin: 0.0
"""


def _stop_while_the_second_stage_waits(tmp_path, name: str, stop) -> tuple[object, str]:
    """Run a two-worker coarse-to-fine search until trial 0 (stage 0) has checkpointed and
    trial 1 (stage 1) waits for it, then ``stop(search, trial 0)``; returns the search."""
    config = write_config(tmp_path, name, search=SPACE + C2F_STAGES)
    args = ["search", str(config), "--strategy", "coarse-to-fine", "--workers", "2"]
    search = start(*args, "--heartbeat", "1", cwd=tmp_path)
    folder = tmp_path / "studies" / name
    wait_for(lambda: (folder / "study.json").is_file(), 60, "the study")
    url = storage_of(folder)

    def second_stage_waiting():
        trials = load(url, name)
        ready = (folder / "trials/trial-0000/checkpoints/last.pt").is_file()
        running = [t.state for t in trials] == [TrialState.RUNNING] * 2
        return trials if running and ready else None

    trials = wait_for(second_stage_waiting, 120, "trial 0 to checkpoint while trial 1 waits")
    stop(search, trials[0])
    return search, url


def _finished(search, hang: str) -> tuple[str, str]:
    """(stdout, stderr) of a ``gradwise search`` process that must end within 120 s; one
    that does not is interrupted and the test fails with ``hang``."""
    try:
        return search.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        search.send_signal(signal.SIGINT)
        search.communicate(timeout=120)
        raise AssertionError(hang) from None


def test_a_killed_worker_is_replaced_while_another_waits_for_its_stage(tmp_path) -> None:
    # QA: a dead worker was restarted only once every worker had exited; here the other
    # worker waits for stage 0 to end, so the study hung with trial 0's retry queued.
    def kill(search, trial) -> None:
        os.kill(int(trial.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)

    search, url = _stop_while_the_second_stage_waits(tmp_path, "hang", kill)
    _, stderr = _finished(search, "the search hung after a worker was killed")
    assert search.returncode == 0, stderr
    trials = load(url, "hang")
    assert [(t.state, t.user_attrs["stage"]) for t in trials] == [
        (TrialState.FAIL, 0),
        (TrialState.COMPLETE, 1),
        (TrialState.COMPLETE, 0),
    ]
    assert trials[2].system_attrs["failed_trial"] == 0
    assert epochs_logged(tmp_path / "studies/hang/trials/trial-0000") == list(range(1, 41))


def test_a_resumed_trial_of_a_later_stage_waits_for_the_stage_before(tmp_path) -> None:
    # QA: the retry of a stage-1 trial interrupted while it waited for stage 0 started at
    # once on resume, before stage 0's retry ended: it drew from the declared range, not
    # from the range around the best stage-0 trial (one point here: keep 1, margin 0).
    def interrupt(search, trial) -> None:
        search.send_signal(signal.SIGINT)

    search, url = _stop_while_the_second_stage_waits(tmp_path, "wait", interrupt)
    _, stderr = search.communicate(timeout=120)
    assert search.returncode == 130, stderr
    config = tmp_path / "wait.yaml"
    resumed = gradwise(
        "search", str(config), "--strategy", "coarse-to-fine", "--workers", "2", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    trials = load(url, "wait")
    complete = {t.user_attrs["stage"]: t for t in trials if t.state == TrialState.COMPLETE}
    best, second = complete[0], complete[1]
    assert second.system_attrs["failed_trial"] == 1
    for path, value in best.params.items():
        assert math.isclose(second.params[path], value, rel_tol=1e-9), path
    assert second.datetime_complete > best.datetime_complete


# About 2 ms a point on SQLite: a grid of 1972 points takes seconds to queue.
GRID_TRIALS = 2000


def _trials_in(database: Path) -> int:
    """How many trials a study's SQLite file holds (0 before Optuna has made its tables)."""
    if not database.is_file():  # connecting would make an empty file
        return 0
    try:
        with contextlib.closing(sqlite3.connect(database, timeout=60)) as db:
            return int(db.execute("SELECT count(*) FROM trials").fetchone()[0])
    except sqlite3.OperationalError:  # no tables yet
        return 0


def test_a_grid_interrupted_while_queueing_its_points_queues_each_point_once(tmp_path) -> None:
    # QA: Ctrl-C while a grid search queued its points, then the same command, queued the
    # whole grid again after the points already queued: they ran twice.
    config = write_config(tmp_path, "grid", epochs=40)
    grid = grid_points(parse_search(yaml.safe_load(config.read_text())), GRID_TRIALS, 0)
    args = ["search", str(config), "--strategy", "grid", "--trials", str(GRID_TRIALS)]
    folder = tmp_path / "studies" / "grid"
    first = start(*args, cwd=tmp_path)
    wait_for(lambda: _trials_in(folder / "study.db") >= 100, 120, "the first grid points")
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    queued = _trials_in(folder / "study.db")
    assert 0 < queued < len(grid), f"not interrupted while queueing: {queued} of {len(grid)}"

    resumed = start(*args, cwd=tmp_path)
    # Stopped in its first trial's training.
    wait_for(lambda: list(folder.glob("trials/*/checkpoints/last.pt")), 120, "a checkpoint")
    assert resumed.poll() is None, "the resumed search ended before the test could stop it"
    resumed.send_signal(signal.SIGINT)
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 130, stderr
    trials = load(storage_of(folder), "grid")
    points = sorted(tuple(sorted(t.system_attrs["fixed_params"].items())) for t in trials)
    assert len(trials) == len(grid)
    assert points == sorted(tuple(sorted(point.items())) for point in grid)


def _leave_interrupted_trials(url: str, name: str, attempts: list[int]) -> None:
    """Add trials to a study as Ctrl-C leaves them: trial k failed, without a reason,
    ``attempts[k]`` times, each retry queued by Optuna's callback as a resume queues it."""
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        distributions = study.trials[0].distributions
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=None)
        for count in attempts:
            trial = study.ask(distributions)
            for attempt in range(count):
                study.tell(trial, state=TrialState.FAIL)
                if attempt + 1 < count:
                    retry(study, study.trials[trial.number])
                    trial = study.ask()  # pops the queued retry, as a worker does
    finally:
        storage.engine.dispose()


def test_the_resume_message_counts_only_the_trials_queued_again(tmp_path) -> None:
    # QA: a trial interrupted on each of its 4 attempts (the first and 3 retries) is not
    # queued again, but "resuming: N interrupted trial(s) queued again" counted it.
    config = write_config(tmp_path, "tired", epochs=1)
    made = gradwise("search", str(config), "--trials", "1", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    url = storage_of(tmp_path / "studies" / "tired")
    _leave_interrupted_trials(url, "tired", attempts=[4, 1])
    before = len(load(url, "tired"))
    exhausted, once = 1, before - 1  # trial numbers: 1 to 4 are the first chain's attempts

    resumed = gradwise("search", str(config), "--trials", "3", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    trials = load(url, "tired")
    retries = [t.system_attrs["failed_trial"] for t in trials[before:]]
    assert retries == [once]
    assert exhausted not in retries
    said = re.search(r"resuming: (\d+) interrupted trial\(s\) queued again", resumed.stderr)
    assert said is not None, resumed.stderr
    assert int(said.group(1)) == len(retries)
    assert trials[-1].state == TrialState.COMPLETE
    # Nothing will retry the exhausted trial: it has failed for good and counts as done.
    assert "trials 3/3 done · 0 running · 0 pruned · 1 failed" in resumed.stdout


C2F_LONG_FIRST_STAGE = """\
  stages:
    - {epochs: 300, trials: 1, keep: 1}
    - {epochs: 1, trials: 1}
"""


def _stop_again(url: str, name: str, number: int, count: int) -> None:
    """Add ``count`` attempts to trial ``number``'s retry chain, each queued by Optuna's
    callback as a resume queues it, taken as a worker takes it and failed, without a
    reason, as Ctrl-C fails it."""
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=None)
        latest = study.trials[number]
        for _ in range(count):
            retry(study, latest)
            trial = study.ask()
            study.tell(trial, state=TrialState.FAIL)
            latest = study.trials[trial.number]
    finally:
        storage.engine.dispose()


def test_a_trial_stopped_on_its_last_attempt_fails_for_good_and_the_next_stage_runs(
    tmp_path,
) -> None:
    # QA: the last attempt of a trial (3 retries) stopped by Ctrl-C stayed failed with no
    # reason: it did not count as done, and the next coarse-to-fine stage waited forever.
    config = write_config(tmp_path, "spent", search=SPACE + C2F_LONG_FIRST_STAGE)
    args = ["search", str(config), "--strategy", "coarse-to-fine"]
    folder = tmp_path / "studies" / "spent"
    checkpoint = folder / "trials/trial-0000/checkpoints/last.pt"
    first = start(*args, cwd=tmp_path)
    wait_for(checkpoint.is_file, 120, "trial 0 to checkpoint")
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    url = storage_of(folder)
    _stop_again(url, "spent", 0, count=MAX_ATTEMPTS - 2)  # its 2nd and 3rd attempts
    saved = checkpoint.stat().st_mtime_ns

    last = start(*args, cwd=tmp_path)
    wait_for(lambda: checkpoint.stat().st_mtime_ns > saved, 120, "the last attempt to train")
    last.send_signal(signal.SIGINT)
    _, stderr = last.communicate(timeout=120)
    assert last.returncode == 130, stderr
    assert "resuming: 1 interrupted trial(s) queued again" in stderr
    trials = load(url, "spent")
    assert [t.state for t in trials] == [TrialState.FAIL] * MAX_ATTEMPTS
    assert trials[-1].system_attrs["retry_history"] == list(range(MAX_ATTEMPTS - 1))
    reasons = [t.user_attrs.get("fail_reason") for t in trials]
    assert reasons[:-1] == [None] * (MAX_ATTEMPTS - 1)  # retried: not failed for good
    assert reasons[-1] == (
        f"interrupted on all {MAX_ATTEMPTS} attempts (Ctrl-C or a killed worker): not retried again"
    )

    resumed = start(*args, cwd=tmp_path)
    stdout, stderr = _finished(resumed, "stage 1 waited forever for trial 0, out of retries")
    assert resumed.returncode == 0, stderr
    assert "resuming" not in stderr  # nothing to retry
    trials = load(url, "spent")
    assert [(t.state, t.user_attrs["stage"]) for t in trials[MAX_ATTEMPTS:]] == [
        (TrialState.COMPLETE, 1)
    ]
    assert "trials 2/2 done · 0 running · 0 pruned · 1 failed" in stdout
    assert "interrupted on all 4 attempts" in stdout  # the leaderboard's note


LATE_CTRL_C_EPOCHS = 3

# A model entry point that presses Ctrl-C on `gradwise search` (its worker's parent) at
# the evaluation named in ctrl-c-at-evaluation, once: with LATE_CTRL_C_EPOCHS, the last
# epoch's validation (the trainer evaluates each epoch, then the test split). It holds
# that evaluation 3 s, so the search's Ctrl-C reaches the worker during it.
CTRL_C_AT_EVALUATION = """\
import os
import pathlib
import signal
import time

import torch


class Model(torch.nn.Sequential):
    def __init__(self):
        super().__init__(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        self.evaluations = 0

    def train(self, mode=True):
        marker = pathlib.Path("ctrl-c-at-evaluation")
        if not mode:
            self.evaluations += 1
            if marker.is_file() and self.evaluations == int(marker.read_text()):
                marker.unlink()
                os.kill(os.getppid(), signal.SIGINT)
                time.sleep(3)
        return super().train(mode)


def build(**options):
    return Model()
"""


def test_a_ctrl_c_as_a_trial_ends_stops_its_worker_before_the_next_trial(tmp_path) -> None:
    # QA: a Ctrl-C that reached a worker during a trial's last epoch end was lost (the
    # trainer had no step left to stop after): the worker took the next trial, and
    # gradwise search waited 120 s before killing it.
    (tmp_path / "late.py").write_text(CTRL_C_AT_EVALUATION)
    (tmp_path / "ctrl-c-at-evaluation").write_text(str(LATE_CTRL_C_EPOCHS))
    config = write_config(tmp_path, "late", epochs=LATE_CTRL_C_EPOCHS)
    config.write_text(config.read_text().replace("name: mlp,", "name: 'late:build',"))
    args = ["search", str(config), "--trials", "2"]
    done = gradwise(*args, cwd=tmp_path)
    assert done.returncode == 130, done.stderr
    assert not (tmp_path / "ctrl-c-at-evaluation").exists()
    folder = tmp_path / "studies" / "late"
    url = storage_of(folder)
    # Trial 0 ended as its run folder says (complete) and no other trial was started.
    (trial,) = load(url, "late")
    run = folder / trial.user_attrs["run"]
    summary = json.loads((run / "summary.json").read_text())
    assert (trial.state, summary["status"]) == (TrialState.COMPLETE, "completed")
    assert math.isclose(trial.value, summary["best"]["value"], rel_tol=1e-12)
    assert epochs_logged(run) == list(range(1, LATE_CTRL_C_EPOCHS + 1))
    log = (folder / "workers/worker-0.log").read_text()
    assert "worker interrupted" in log
    assert "worker done" not in log

    resumed = gradwise(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" not in resumed.stderr  # trial 0 is complete, not retried
    trials = load(url, "late")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert epochs_logged(run) == list(range(1, LATE_CTRL_C_EPOCHS + 1))  # not run again


def test_a_ctrl_c_after_the_budget_was_used_says_nothing_is_left_to_resume(tmp_path) -> None:
    # QA: a Ctrl-C as the last trial of the budget ended said "interrupted; run the same
    # command again to resume the study", though a resume had nothing left to run.
    (tmp_path / "late.py").write_text(CTRL_C_AT_EVALUATION)
    (tmp_path / "ctrl-c-at-evaluation").write_text(str(LATE_CTRL_C_EPOCHS))
    config = write_config(tmp_path, "used", epochs=LATE_CTRL_C_EPOCHS)
    config.write_text(config.read_text().replace("name: mlp,", "name: 'late:build',"))
    args = ["search", str(config), "--trials", "1"]
    done = gradwise(*args, cwd=tmp_path)
    assert done.returncode == 130, done.stderr
    assert not (tmp_path / "ctrl-c-at-evaluation").exists()
    assert "interrupted after the study's budget was used: nothing is left to resume" in (
        done.stdout
    )
    assert "again to resume" not in done.stdout
    # True: the same command again runs nothing.
    resumed = gradwise(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    (trial,) = load(storage_of(tmp_path / "studies" / "used"), "used")
    assert trial.state == TrialState.COMPLETE


def _children(pid: int) -> set[int]:
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
def test_a_ctrl_c_that_leaves_a_killed_workers_trial_running_says_when_it_is_retried(
    tmp_path,
) -> None:
    # QA: with a killed worker's trial still marked running (its heartbeat not yet stale),
    # a Ctrl-C said only "run the same command again to resume the study".
    config = write_config(tmp_path, "stale", epochs=KILL_EPOCHS)
    args = ["search", str(config), "--trials", "1", "--heartbeat", "5"]
    search = start(*args, cwd=tmp_path)
    folder = tmp_path / "studies" / "stale"
    wait_for(lambda: (folder / "study.json").is_file(), 60, "the study")
    url = storage_of(folder)

    def running_trial_with_checkpoint():
        trials = load(url, "stale")
        ready = (folder / "trials/trial-0000/checkpoints/last.pt").is_file()
        return trials[0] if trials and trials[0].state == TrialState.RUNNING and ready else None

    victim = int(wait_for(running_trial_with_checkpoint, 120, "trial 0 to checkpoint")
                 .user_attrs["worker"].rsplit(":", 1)[1])  # fmt: skip
    os.kill(victim, signal.SIGKILL)
    # The replacement waits for the trial's heartbeat to go stale (15 s): stop it before.
    wait_for(lambda: _children(search.pid) - {victim}, 30, "the worker's replacement")
    search.send_signal(signal.SIGINT)
    stdout, stderr = search.communicate(timeout=120)
    assert search.returncode == 130, stderr
    assert [t.state for t in load(url, "stale")] == [TrialState.RUNNING]
    assert (
        "interrupted with 1 trial(s) still marked running (a killed worker's, or one on another "
        "machine): run the same command again to resume the study; a killed worker's trial is "
        "retried from its last checkpoint once its heartbeat times out"
    ) in stdout
    # True: the same command again retries it, from its checkpoint.
    resumed = gradwise(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    trials = load(url, "stale")
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].system_attrs["failed_trial"] == 0
    assert epochs_logged(folder / "trials/trial-0000") == list(range(1, KILL_EPOCHS + 1))


def test_a_trial_stopped_before_its_stage_was_recorded_is_retried_in_its_stage(tmp_path) -> None:
    # QA: a coarse-to-fine trial stopped just after Optuna asked for it (before its worker
    # recorded its stage) was retried on resume in the stage of the retry's own, later,
    # number: the last stage-0 slot trained with stage 1's epochs and stage 0 ended without it.
    stages = "  stages: [{epochs: 1, trials: 3}, {epochs: 2, trials: 2}]\n"
    config = write_config(tmp_path, "early", search=SPACE + stages)
    spec = parse_search(yaml.safe_load(config.read_text()))
    folder = tmp_path / "studies" / "early"
    folder.mkdir(parents=True)
    study = optuna.create_study(
        storage=f"sqlite:///{folder / 'study.db'}", study_name="early", direction="minimize"
    )
    for value, lr in ((0.9, 1e-2), (0.8, 3e-2)):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                value=value,
                params={"optimizer.lr": lr, "model.width": 16},
                distributions=spec.distributions(),
                user_attrs={"stage": 0, "epochs": 1},
            )
        )
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))  # asked, then stopped
    done = gradwise("search", str(config), "--strategy", "coarse-to-fine", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resuming: 1 interrupted trial(s) queued again" in done.stderr
    trials = load(storage_of(folder), "early")
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 2)
    assert (retry.state, retry.user_attrs["stage"], retry.user_attrs["epochs"]) == (
        TrialState.COMPLETE, 0, 1,
    )  # fmt: skip
    assert epochs_logged(folder / "trials/trial-0002") == [1]
    later = [t for t in trials if t.number > retry.number]
    assert [(t.user_attrs["stage"], t.user_attrs["epochs"]) for t in later] == [(1, 2)] * 2


# A model entry point that holds the training step named in hold-step (its forward sleeps
# HOLD_S seconds, after touching holding-step), once: a Ctrl-C sent meanwhile, and the
# signal `gradwise search` sends its worker after it, both reach the worker mid-step.
HOLD_S = 6
HELD_STEP = f"""\
import pathlib
import time

import torch


class Model(torch.nn.Sequential):
    def __init__(self):
        super().__init__(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        self.steps = 0

    def forward(self, inputs):
        if self.training:
            self.steps += 1
            marker = pathlib.Path("hold-step")
            if marker.is_file() and self.steps == int(marker.read_text()):
                marker.unlink()
                pathlib.Path("holding-step").touch()
                time.sleep({HOLD_S})
                pathlib.Path("held-step").touch()
        return super().forward(inputs)


def build(**options):
    return Model()
"""
HELD_EPOCHS = 2
HELD_STEP_NUMBER = 3  # of 14 in the first epoch: before the first checkpoint


def _ctrl_c_mid_step(tmp_path, name: str, presses: int, to_group: bool):
    """Start `gradwise search` in a process group of its own, as a terminal's foreground
    job, and press Ctrl-C ``presses`` times (1 s apart) while its worker holds a step:
    SIGINT to the whole group, or with ``to_group`` False to the search alone (kill -INT
    PID). Returns the search's (stdout, stderr), the study URL and the trial's run folder."""
    (tmp_path / f"{name}.py").write_text(HELD_STEP)
    (tmp_path / "hold-step").write_text(str(HELD_STEP_NUMBER))
    config = write_config(tmp_path, name, epochs=HELD_EPOCHS)
    config.write_text(config.read_text().replace("name: mlp,", f"name: '{name}:build',"))
    search = subprocess.Popen(
        [*COMMAND, "search", str(config), "--trials", "1"],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, which Ctrl-C signals as a whole
    )
    try:
        wait_for(lambda: (tmp_path / "holding-step").is_file(), 120, "the held step")
        for press in range(presses):
            if press:
                time.sleep(1)
            if not to_group:
                search.send_signal(signal.SIGINT)
                continue
            # The search reacts to this Ctrl-C only once its worker has taken it: Python
            # handles two signals that come before its handler runs as one, so without
            # the pause the search's signal sometimes went unseen as a second one.
            os.kill(search.pid, signal.SIGSTOP)
            os.killpg(search.pid, signal.SIGINT)
            time.sleep(0.5)
            os.kill(search.pid, signal.SIGCONT)
        stdout, stderr = search.communicate(timeout=120)
    finally:
        if search.poll() is None:
            os.killpg(search.pid, signal.SIGKILL)
            search.communicate()
    folder = tmp_path / "studies" / name
    return (stdout, stderr), storage_of(folder), folder / "trials/trial-0000"


@pytest.mark.parametrize("to_group", [True, False], ids=["terminal ctrl-c", "kill -INT search"])
def test_one_ctrl_c_stops_a_trial_after_its_step_with_a_checkpoint_and_it_resumes(
    tmp_path, to_group
) -> None:
    # QA: a terminal's Ctrl-C reached the worker (SIGINT to the process group), then the
    # search forwarded a second SIGINT to it: a second Ctrl-C to the trainer, which raised
    # KeyboardInterrupt inside the step. The trial had no checkpoint, and its retry started
    # over. One Ctrl-C must stop the trial once, after its step, with a checkpoint.
    (stdout, _), url, run = _ctrl_c_mid_step(tmp_path, "held", presses=1, to_group=to_group)
    assert (tmp_path / "held-step").is_file()  # the held step went on to its end
    # The leaderboard agrees with the progress line: the trial is interrupted, not failed.
    assert "trials 0/1 done · 0 running · 0 pruned · 0 failed" in stdout, stdout
    assert "interrupted; retried on resume" in stdout
    log = (tmp_path / "studies/held/workers/worker-0.log").read_text()
    assert "worker interrupted" in log, log
    assert "_trainer.py" not in log, log  # no traceback from inside the trainer's step
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted", (summary, log)
    assert (run / "checkpoints/last.pt").is_file()
    (trial,) = load(url, "held")
    assert (trial.state, trial.user_attrs.get("fail_reason")) == (TrialState.FAIL, None)

    resumed = gradwise("search", str(tmp_path / "held.yaml"), "--trials", "1", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 1 interrupted trial(s) queued again" in resumed.stderr
    first, retry = load(url, "held")
    assert (retry.state, retry.system_attrs["failed_trial"]) == (TrialState.COMPLETE, 0)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert len(summary["resumed"]) == 1  # continued from the checkpoint, not started over
    assert epochs_logged(run) == list(range(1, HELD_EPOCHS + 1))
    assert "(1 finished trials; 1 interrupted attempt(s), unranked)" in resumed.stdout
    assert "interrupted; retried as trial 1" in resumed.stdout


@pytest.mark.parametrize("to_group", [True, False], ids=["terminal ctrl-c", "kill -INT search"])
def test_a_second_ctrl_c_stops_a_trial_at_once(tmp_path, to_group) -> None:
    # The first Ctrl-C asks the worker to stop after its step; a second one stops it inside
    # the step: the held step never ends (the trial is interrupted, retried on resume).
    _, url, run = _ctrl_c_mid_step(tmp_path, "twice", presses=2, to_group=to_group)
    assert not (tmp_path / "held-step").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["message"]) == ("failed", "KeyboardInterrupt: ")
    (trial,) = load(url, "twice")
    assert (trial.state, trial.user_attrs.get("fail_reason")) == (TrialState.FAIL, None)
