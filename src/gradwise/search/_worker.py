"""A search worker: takes trials from a study until its budget is used, one run each.

Each trial is a normal ``gradwise train`` run in ``<study folder>/trials/trial-NNNN``,
with the sampled values set in its config; its per-epoch validation metric feeds Optuna's
pruner. A trial that diverges (NaN loss) or whose config cannot be built is recorded as
failed, with the reason in its ``fail_reason`` attribute, and the search goes on. A retry
of a killed trial continues the original trial's run folder from its last checkpoint.
A Ctrl-C (SIGINT), a SIGTERM or a SIGHUP stops the worker: during a trial's training,
after its current step; whenever else it reaches the worker during a trial, once that
trial has ended. They are one request (a terminal's Ctrl-C or hang-up reaches the worker,
and then ``gradwise search`` stops it with another of them); the same signal again stops
it at once.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, Trial, TrialState

from gradwise.config import ConfigError, parse_config
from gradwise.search._space import Parameter
from gradwise.search._stages import (
    EPOCHS_ATTR,
    FAIL_REASON_ATTR,
    MAX_RETRIES,
    RUN_ATTR,
    STAGE_ATTR,
    is_last_attempt,
    original_number,
    stage_finished,
    stage_of,
)
from gradwise.search._strategies import make_pruner, make_sampler
from gradwise.search._study import (
    AskLock,
    StudySettings,
    heartbeats_allowed,
    load_settings,
    load_study,
    open_storage,
    progress,
    running_lock,
)
from gradwise.train import Callback, TrainingDiverged, TrainState, resume, train
from gradwise.train._interrupt import stop_requests

TRIALS_FOLDER = "trials"
_POLL_S = 0.5
# The reason of a trial whose last attempt failed without one of its own.
_OUT_OF_RETRIES = (
    f"interrupted on all {MAX_RETRIES + 1} attempts (Ctrl-C or a killed worker): not retried again"
)

# What stops a worker, as one request (stop_requests; see stop_signals).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

Say = Callable[[str], None]


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop this worker, as one request: SIGINT, SIGTERM and SIGHUP, less
    SIGHUP where it is ignored (``nohup``: the worker is to outlive its terminal)."""
    ignored = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    return tuple(signum for signum in _STOP_SIGNALS if not (ignored and signum == signal.SIGHUP))


class TrialFailed(Exception):
    """A trial that failed for a reason of its own (recorded; the search goes on)."""


def run_worker(
    storage_url: str,
    study_name: str,
    folder: Path,
    *,
    say: Say | None = None,
    poll_s: float = _POLL_S,
) -> int:
    """Run trials of a study until its budget is used; returns how many this worker ran.

    Args:
        storage_url: the study's storage (``sqlite:///...`` or ``postgresql://...``).
        study_name: the study, made by ``gradwise search``.
        folder: the study folder on this machine (trial run folders go in ``trials/``).
        say: where to report each finished trial (nothing when None).
        poll_s: seconds between looks at the study while waiting for other workers.
    """
    study = load_study(open_storage(storage_url, heartbeat=None), study_name)
    settings = load_settings(study)
    storage = open_storage(storage_url, heartbeat=settings.heartbeat)
    study = optuna.load_study(
        study_name=study_name,
        storage=storage,
        sampler=make_sampler(settings.strategy, settings.spec, _worker_seed(settings, study)),
        pruner=make_pruner(settings.spec.pruner, _max_epochs(settings)),
    )
    lock = AskLock(storage, study_name)
    objective = _Objective(settings, folder, lock, poll_s)
    with running_lock(folder), stop_requests(stop_signals()):
        return _take_trials(study, settings, objective, lock, say, poll_s)


def _take_trials(
    study: optuna.Study,
    settings: StudySettings,
    objective: _Objective,
    lock: AskLock,
    say: Say | None,
    poll_s: float,
) -> int:
    ran = 0
    while True:
        lock.acquire()
        try:
            action = _next_action(study, settings)
        except BaseException:
            lock.release()
            raise
        if action == "done":
            lock.release()
            return ran
        if action == "wait":
            lock.release()
            time.sleep(poll_s)
            continue
        interrupted = _run_trial(study, objective, lock)
        ran += 1
        if say is not None:
            say(_describe(study.trials[objective.last_number], settings))
        if interrupted:
            # A Ctrl-C that came as the trial's training ended (after its last step) found
            # nothing left to stop: the run and the trial completed (or were pruned), and
            # stand so. The worker stops now instead of taking the next trial.
            if say is not None:
                say(f"interrupted as trial {objective.last_number} ended: it keeps its result")
            raise KeyboardInterrupt


def _run_trial(study: optuna.Study, objective: _Objective, lock: AskLock) -> bool:
    """Run one trial (the ask lock is held until Optuna asks for it); returns whether a
    Ctrl-C reached this process meanwhile. A Ctrl-C that stopped the trial is raised."""
    try:
        with heartbeats_allowed(), _InterruptWatch() as watch:
            study.optimize(objective, n_trials=1, catch=(TrialFailed,))
    finally:
        lock.release()
    return watch.heard


class _InterruptWatch:
    """Hears every SIGINT (Ctrl-C), SIGTERM or SIGHUP that reaches the process within the
    block.

    The trainer takes a Ctrl-C as a request to stop after the current step and forgets it
    when training ends, so one that comes after the last step (while the last epoch
    ends) leaves no trace. Python writes the number of every signal it handles to the
    wakeup fd (``signal.set_wakeup_fd``), whichever handler is installed, so the worker
    reads it there after the trial. Only the main thread can set the fd, and only it gets
    signals handled; elsewhere, or where the fd has another owner (an event loop), the
    watch hears nothing.
    """

    def __init__(self) -> None:
        self.heard = False
        self._sockets: tuple[socket.socket, socket.socket] | None = None

    def __enter__(self) -> _InterruptWatch:
        if threading.current_thread() is not threading.main_thread():
            return self
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        if previous != -1:
            signal.set_wakeup_fd(previous)
            reader.close()
            writer.close()
            return self
        self._sockets = (reader, writer)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._sockets is None:
            return
        reader, writer = self._sockets
        self._sockets = None
        signal.set_wakeup_fd(-1)
        try:
            while chunk := reader.recv(4096):
                self.heard = self.heard or any(signum in chunk for signum in _STOP_SIGNALS)
        except BlockingIOError:  # read all there was
            pass
        finally:
            reader.close()
            writer.close()


def _next_action(study: optuna.Study, settings: StudySettings) -> str:
    """``run`` a trial, ``wait`` for others (a stage to end, a stale trial), or ``done``."""
    with heartbeats_allowed():
        fail_stale_trials(study)  # re-queues trials of killed workers (heartbeat)
    trials = study.get_trials(deepcopy=False)
    state = progress(trials, settings.trials, settings.spec.direction)
    if state.waiting:
        return "run"
    if state.slots_used < settings.trials:
        return "run"
    return "wait" if state.running else "done"


def _worker_seed(settings: StudySettings, study: optuna.Study) -> int:
    """The sampler seed: reproducible for local workers, distinct between workers.

    A local worker (started by ``gradwise search``, which numbers them) derives it from
    the study's seed, its number and how many trials the study had when it started, so a
    fresh one-worker search is reproducible and a restarted worker does not repeat the
    draws of its first life. A worker joined by hand is salted by machine and process.
    """
    started = len(study.get_trials(deepcopy=False))
    index = os.environ.get("GRADWISE_WORKER_INDEX")
    if index is None:
        return hash((settings.seed, socket.gethostname(), os.getpid(), started)) % 2**31
    return (settings.seed + 7919 * int(index) + 104729 * started) % 2**31


def _max_epochs(settings: StudySettings) -> int:
    if settings.strategy == "coarse-to-fine":
        return max(stage.epochs for stage in settings.spec.stages)
    return settings.spec.epochs


class _Objective:
    """One trial: wait for its stage, sample, train (or resume), report, return the best."""

    def __init__(self, settings: StudySettings, folder: Path, lock: AskLock, poll_s: float):
        self.settings = settings
        self.folder = folder
        self.lock = lock
        self.poll_s = poll_s
        self.last_number = -1

    def __call__(self, trial: Trial) -> float:
        self.lock.release()  # Optuna has asked for the trial: the next worker may ask.
        self.last_number = trial.number
        frozen = _frozen(trial)
        if is_last_attempt(frozen):
            # Recorded now, since a killed worker cannot write it at the end; read only if
            # this attempt fails too (another failure replaces it with its own reason).
            trial.set_user_attr(FAIL_REASON_ATTR, _OUT_OF_RETRIES)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        spec = self.settings.spec
        epochs = spec.epochs
        if self.settings.strategy == "coarse-to-fine":
            stage = self._stage(trial)
            epochs = spec.stages[stage].epochs
        params = {parameter.path: _suggest(trial, parameter) for parameter in spec.parameters}
        run_name = f"trial-{original_number(frozen):04d}"
        trial.set_user_attr(EPOCHS_ATTR, epochs)
        trial.set_user_attr(RUN_ATTR, f"{TRIALS_FOLDER}/{run_name}")
        content = spec.trial_config(
            params,
            epochs=epochs,
            steps=None,
            runs_dir=str(self.folder / TRIALS_FOLDER),
            name=run_name,
            **spec.checkpoint_settings,
        )
        return self._train(trial, content)

    def _stage(self, trial: Trial) -> int:
        """The trial's stage; waits (heartbeat running) until the previous stage ended."""
        frozen = _frozen(trial)
        study = trial.study
        stages = self.settings.spec.stages
        # A retry keeps its stage (its first attempt's slot's, when that attempt was stopped
        # before recording it) and, like any trial of it, waits for the stage before: one
        # interrupted while waiting has not been sampled yet.
        stage = stage_of(stages, study.get_trials(deepcopy=False), frozen)
        if STAGE_ATTR not in frozen.user_attrs:
            trial.set_user_attr(STAGE_ATTR, stage)
        while stage > 0 and not stage_finished(stages, study.get_trials(deepcopy=False), stage - 1):
            with heartbeats_allowed():
                fail_stale_trials(study)
            time.sleep(self.poll_s)
        return stage

    def _train(self, trial: Trial, content: dict[str, Any]) -> float:
        reporter = _Reporter(trial, self.settings.spec.metric)
        run = self.folder / TRIALS_FOLDER / str(content["name"])
        try:
            if (run / "checkpoints" / "last.pt").is_file():
                result = resume(run, progress=False, callbacks=[reporter])
            else:
                if run.exists():  # a killed attempt that left no checkpoint: start over
                    shutil.rmtree(run)
                result = train(parse_config(content), progress=False, callbacks=[reporter])
        except TrainingDiverged as error:
            raise _failed(trial, f"diverged: {error}") from None
        except ConfigError as error:
            if not run.exists():
                # The config did not build, so no run folder was made: the leaderboard
                # and the first failure must not point to one.
                trial.set_user_attr(RUN_ATTR, None)
            raise _failed(trial, f"config error: {error}") from None
        except Exception as error:
            # Anything else (CUDA out of memory, a bug in an entry point) still ends the
            # worker, with its traceback in the worker's log, but the trial is failed for
            # good: without a reason it would count as interrupted, and a coarse-to-fine
            # stage would wait for a retry that only the next `gradwise search` queues.
            trial.set_user_attr(FAIL_REASON_ATTR, f"crashed: {type(error).__name__}: {error}")
            raise
        if result.status == "interrupted":
            raise KeyboardInterrupt
        if reporter.pruned:
            raise optuna.TrialPruned(f"pruned at epoch {reporter.last_epoch + 1}")
        value = result.best.get("value")
        if value is None or not math.isfinite(float(value)):
            raise _failed(trial, f"{self.settings.spec.metric} is {value} (not a finite number)")
        return float(value)


class _Reporter(Callback):
    """Feeds the pruner one value per epoch and stops the run when it says prune.

    Optuna's step is the callbacks' epoch, from 0; what a user reads counts epochs from 1,
    as the run's records do."""

    def __init__(self, trial: Trial, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.pruned = False
        self.last_epoch = -1

    def on_epoch_end(self, state: TrainState) -> None:
        value = state.metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        self.last_epoch = state.epoch
        self.trial.report(float(value), state.epoch)
        if self.trial.should_prune():
            self.pruned = True
            state.request_stop(f"pruned by the search at epoch {state.epoch + 1}")


def _suggest(trial: Trial, parameter: Parameter) -> Any:
    if parameter.kind == "int":
        return trial.suggest_int(
            parameter.path, int(parameter.low), int(parameter.high), log=parameter.log
        )
    if parameter.is_numeric:
        return trial.suggest_float(parameter.path, parameter.low, parameter.high, log=parameter.log)
    return trial.suggest_categorical(parameter.path, list(parameter.choices))


def _frozen(trial: Trial) -> FrozenTrial:
    """The stored record of a running trial (its retry link lives in system attributes)."""
    return trial.study.get_trials(deepcopy=False)[trial.number]


def _failed(trial: Trial, reason: str) -> TrialFailed:
    trial.set_user_attr(FAIL_REASON_ATTR, reason)
    return TrialFailed(reason)


def _describe(trial: FrozenTrial, settings: StudySettings) -> str:
    params = ", ".join(f"{path}={_short(value)}" for path, value in trial.params.items())
    if trial.state == TrialState.COMPLETE:
        outcome = f"{settings.spec.metric} {trial.value:.4g}"
    elif trial.state == TrialState.FAIL:
        outcome = f"failed: {trial.user_attrs.get(FAIL_REASON_ATTR, 'interrupted')}"
    else:
        outcome = trial.state.name.lower()
    return f"trial {trial.number}: {outcome} ({params})"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def worker_main_say(message: str) -> None:
    """Print one line of a worker's log, at once."""
    print(message, file=sys.stderr, flush=True)
