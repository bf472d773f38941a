"""`gradwise search` stopped by SIGTERM (kill, timeout, a scheduler) or SIGHUP (the terminal
closed) as by a Ctrl-C: its workers stop after their step with a checkpoint, none is left
running, and the same command resumes the study. And `gradwise search show` on a study
that a search runs, and its counts of interrupted attempts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from gradwise.search import SearchResult, finish, search
from gradwise.search._study import AskLock
from tests.cli.helpers import COMMAND, environment, gradwise, start
from tests.search.helpers import epochs_logged, load, storage_of, wait_for, write_config

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")

# A model entry point whose training step HELD_STEP holds, while the file hold-step
# exists, until the worker has received the stop signals listed in expect-signals (60 s
# at most); it then writes the ones received to held-PID and ends the step. A signal taken
# as a second request raises inside the step instead, and no held-PID is written.
HELD_STEP = 3  # of 14 in the first epoch: before the first checkpoint
HELD_MODEL = f"""\
import os
import pathlib
import time

import torch

from gradwise.train import _interrupt


class Model(torch.nn.Sequential):
    def __init__(self):
        super().__init__(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        self.steps = 0

    def forward(self, inputs):
        if self.training:
            self.steps += 1
            if self.steps == {HELD_STEP} and pathlib.Path("hold-step").is_file():
                pid = os.getpid()
                expected = set(map(int, pathlib.Path("expect-signals").read_text().split()))
                pathlib.Path(f"holding-{{pid}}").touch()
                received = set()
                deadline = time.monotonic() + 60
                while not expected <= received and time.monotonic() < deadline:
                    time.sleep(0.05)
                    requests = _interrupt._STOP_REQUESTS
                    received = set() if requests is None else set(requests.received)
                pathlib.Path(f"held-{{pid}}").write_text(" ".join(map(str, sorted(received))))
        return super().forward(inputs)


def build(**options):
    return Model()
"""
EPOCHS = 2


def _held_config(tmp_path: Path, name: str) -> Path:
    (tmp_path / "held_model.py").write_text(HELD_MODEL)
    config = write_config(tmp_path, name, epochs=EPOCHS)
    config.write_text(config.read_text().replace("name: mlp,", "name: 'held_model:build',"))
    return config


@contextlib.contextmanager
def _sighup_not_ignored() -> Iterator[None]:
    """SIGHUP's default action for the processes started within (a test runner under
    nohup ignores it, and so would they)."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stop_held_search(
    tmp_path: Path, name: str, signum: signal.Signals, *, to_group: bool, expect: set[int]
) -> tuple[subprocess.CompletedProcess[str], int]:
    """Start `gradwise search` (a worker, a trial) in a process group of its own, as a
    terminal's job or a batch job; once its worker holds a step, send ``signum`` to the
    search alone, or as ``timeout`` does (the search, then its whole group) or a terminal
    that closes (the whole group). Returns the search's outcome and the worker's pid."""
    config = _held_config(tmp_path, name)
    (tmp_path / "hold-step").touch()
    (tmp_path / "expect-signals").write_text(" ".join(map(str, sorted(expect))))
    args = [*COMMAND, "search", str(config), "--trials", "1"]
    with _sighup_not_ignored():
        driver = subprocess.Popen(
            args, cwd=tmp_path, env=environment(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(lambda: list(tmp_path.glob("holding-*")), 120, "the held step")
        (holding,) = tmp_path.glob("holding-*")
        worker = int(holding.name.removeprefix("holding-"))
        if signum == signal.SIGTERM or not to_group:
            driver.send_signal(signum)
        if to_group:
            os.killpg(driver.pid, signum)
        stdout, stderr = driver.communicate(timeout=120)
        return subprocess.CompletedProcess(args, driver.returncode, stdout, stderr), worker
    finally:
        # Whatever is left of the group (workers the search left running) goes.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
        if driver.poll() is None:
            driver.communicate()


CASES = [
    # (signal, to the whole group, the signals each worker must have received)
    pytest.param(signal.SIGTERM, False, {signal.SIGINT}, id="kill -TERM search"),
    pytest.param(signal.SIGTERM, True, {signal.SIGINT, signal.SIGTERM}, id="timeout"),
    pytest.param(signal.SIGHUP, False, {signal.SIGTERM}, id="kill -HUP search"),
    pytest.param(signal.SIGHUP, True, {signal.SIGHUP, signal.SIGTERM}, id="terminal closed"),
]


@pytest.mark.parametrize(("signum", "to_group", "expect"), CASES)
def test_a_stop_signal_stops_the_workers_after_their_step_and_the_study_resumes(
    tmp_path, signum, to_group, expect
) -> None:
    # QA: SIGTERM or SIGHUP killed `gradwise search` at once, and its workers went on
    # running, orphaned, writing into the study.
    done, worker = _stop_held_search(tmp_path, "stopped", signum, to_group=to_group,
                                      expect={int(s) for s in expect})  # fmt: skip
    assert done.returncode == 128 + signum, done.stderr
    assert f"stopped by {signum.name}" in done.stdout, done.stdout
    assert "the study was interrupted with budget left (1 interrupted trial(s) to finish)" in (
        done.stdout
    )
    assert not _alive(worker), "the worker was left running"
    folder = tmp_path / "studies" / "stopped"
    # The worker heard one request (the search's signal is another than the one that may
    # have reached it too) and ended its step.
    held = tmp_path / f"held-{worker}"
    assert held.is_file(), (folder / "workers/worker-0.log").read_text()
    assert set(map(int, held.read_text().split())) == {int(s) for s in expect}
    url = storage_of(folder)
    (trial,) = load(url, "stopped")
    assert (trial.state, trial.user_attrs.get("fail_reason")) == (TrialState.FAIL, None)
    run = folder / trial.user_attrs["run"]
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    assert (run / "checkpoints/last.pt").is_file()

    (tmp_path / "hold-step").unlink()
    resumed = gradwise("search", str(tmp_path / "stopped.yaml"), "--trials", "1", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 1 interrupted trial(s) queued again" in resumed.stderr
    _, retry = load(url, "stopped")
    assert (retry.state, retry.system_attrs["failed_trial"]) == (TrialState.COMPLETE, 0)
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], len(summary["resumed"])) == ("completed", 1)
    assert epochs_logged(run) == list(range(1, EPOCHS + 1))


def test_interrupted_attempts_count_alike_while_their_retries_are_queued(tmp_path) -> None:
    # QA: with the retries of interrupted trials queued (or running), the search's
    # sentence on why there is no best trial counted no interrupted trial ("0 failed, 0
    # pruned"), while the leaderboard and the report counted the interrupted attempts.
    done, _ = _stop_held_search(tmp_path, "queued", signal.SIGTERM, to_group=False,
                                expect={signal.SIGINT})  # fmt: skip
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    folder = tmp_path / "studies" / "queued"
    url = storage_of(folder)
    storage = RDBStorage(url)
    try:
        study = optuna.load_study(study_name="queued", storage=storage)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=3)
        for trial in study.get_trials():
            retry(study, trial)  # as a resume queues them
    finally:
        storage.engine.dispose()
    assert [t.state for t in load(url, "queued")] == [TrialState.FAIL, TrialState.WAITING]

    shown = gradwise("search", "show", str(folder), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    said = "no trial has completed yet (0 failed, 0 pruned, 1 interrupted attempt(s))"
    assert said in shown.stdout, shown.stdout
    assert "interrupted; retried as trial 1" in shown.stdout  # the leaderboard's attempt
    # The report counts it so too: in its summary, and in the search's sentence.
    report = (folder / "report.html").read_text()
    assert "<td>interrupted</td><td>1</td>" in report
    assert "so far 0 failed, 0 pruned, 1 interrupted)" in report
    assert said in report


def test_show_calls_a_study_that_a_search_runs_running_before_its_trial(tmp_path) -> None:
    # QA: `gradwise search show` said "the study was interrupted with budget left" of a
    # study that a search ran, when no trial was running (a worker between two trials, or
    # not yet at its first).
    config = write_config(tmp_path, "busy", epochs=1)
    folder = tmp_path / "studies" / "busy"
    folder.mkdir(parents=True)
    storage = RDBStorage(f"sqlite:///{(folder / 'study.db').resolve()}")
    # The study's ask lock, held as a worker checking the budget holds it: the search's
    # worker waits for it before its trial.
    lock = AskLock(storage, "busy")
    lock.acquire()
    running = None
    try:
        running = start("search", str(config), "--trials", "1", cwd=tmp_path)
        children = Path(f"/proc/{running.pid}/task/{running.pid}/children")
        wait_for(lambda: children.read_text().split(), 60, "the search's worker")
        shown = gradwise("search", "show", str(folder), cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert "trials 0/1 done · 0 running" in shown.stdout, shown.stdout
        assert "the study is running" in shown.stdout, shown.stdout
        assert "interrupted" not in shown.stdout, shown.stdout
    finally:
        lock.release()
        storage.engine.dispose()
        if running is not None:
            _, stderr = running.communicate(timeout=120)
    assert running.returncode == 0, stderr
    # Once nothing runs it, the study is no longer called running.
    result = finish(folder, storage_of(folder), "busy")
    assert (result.progress.complete, result.running) == (1, False)


def _custom_handler(signum: int, frame: object) -> None:
    raise AssertionError(f"signal {signum} reached the test's own handler")


def test_in_process_the_handlers_are_taken_over_while_it_runs_and_given_back(tmp_path) -> None:
    config = write_config(tmp_path, "inside", epochs=1)
    seen: list[tuple[object, object]] = []

    def say(line: str) -> None:  # called by the search while its workers run
        seen.append((signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)))

    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGTERM, _custom_handler)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup: stays ignored
    try:
        result = search(config, trials=1, studies_dir=tmp_path / "studies", say=say)
        assert signal.getsignal(signal.SIGTERM) is _custom_handler
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    assert not result.interrupted
    assert seen
    assert all(term is not _custom_handler for term, _ in seen), seen
    assert all(hup == signal.SIG_IGN for _, hup in seen), seen


def test_outside_the_main_thread_it_runs_without_signal_handlers(tmp_path) -> None:
    config = write_config(tmp_path, "thread", epochs=1)
    outcome: list[SearchResult | BaseException] = []

    def run() -> None:
        try:
            outcome.append(search(config, trials=1, studies_dir=tmp_path / "studies"))
        except BaseException as error:  # reported by the test's thread
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive()
    (result,) = outcome
    assert isinstance(result, SearchResult), result
    assert result.progress.complete == 1


def test_a_stop_a_destructor_swallowed_still_stops_the_search(tmp_path, monkeypatch) -> None:
    # CI: the SIGTERM handler raised inside a WeakKeyDictionary callback, where Python
    # prints the exception and drops it ("Exception ignored in"): the search ran its budget
    # and exited 0, and the signals after it counted as the same request.
    from gradwise.search._driver import _Stopped

    config = write_config(tmp_path, "swallowed", epochs=1)
    dropped: list[object] = []
    monkeypatch.setattr(
        sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_type)
    )

    class SignalsWhenCollected:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs here, inside the destructor
                pass

    def say(line: str) -> None:  # called by the search's loop
        if not dropped:
            SignalsWhenCollected()  # collected at once

    result = search(config, trials=1, studies_dir=tmp_path / "studies", say=say)
    assert dropped == [_Stopped]
    assert result.interrupted
    assert result.stop_signal == signal.SIGTERM
