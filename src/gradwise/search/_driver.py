"""``gradwise search``: make or resume a study, run K workers, show progress, write results.

The study folder (``studies/<name>/`` by default) holds:

- ``study.db``: the SQLite storage (unless ``--storage`` names another);
- ``study.json``: the storage URL and study name, so ``gradwise search show`` finds them;
- ``trials/trial-NNNN/``: each trial's normal run folder (config, metrics, checkpoints,
  report);
- ``workers/worker-K.log``: what each local worker printed;
- ``running.lock``: locked (shared) by ``gradwise search`` and each local worker while
  they run, so ``gradwise search show`` can tell a running study from an interrupted one;
- ``report.html``: the study report; ``best.yaml``: the best trial's config, which
  ``gradwise train best.yaml`` runs as is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import IO, Any

from optuna.trial import FrozenTrial, TrialState

from gradwise.config import ConfigError, RunConfig, dump_config, parse_config, read_file
from gradwise.runs._files import write_atomically
from gradwise.search._space import SearchSpec, parse_search
from gradwise.search._stages import EPOCHS_ATTR, FAIL_REASON_ATTR, RUN_ATTR, stage_ranges
from gradwise.search._strategies import STRATEGIES, enqueue_grid
from gradwise.search._study import (
    DEFAULT_HEARTBEAT,
    DEFAULT_SEED,
    Progress,
    StudySettings,
    create_or_load,
    load_settings,
    load_study,
    masked,
    open_storage,
    progress,
    requeue_interrupted,
    running_elsewhere,
    running_lock,
    sqlite_url,
    stored_settings,
)

DEFAULT_TRIALS = 20
STUDY_FILE = "study.json"
REPORT_FILE = "report.html"
BEST_CONFIG_FILE = "best.yaml"
_MAX_RESTARTS_PER_WORKER = 3
# Signals that stop a search as a Ctrl-C (SIGINT, Python's KeyboardInterrupt) does.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
# After a Ctrl-C: how long the workers have to stop before they are killed, and how long a
# second Ctrl-C waits before it stops them at once (see _stop).
_STOP_GRACE_S = 120.0
_SECOND_STOP_DELAY_S = 1.0
# The range a run config's seed must be in (gradwise train's): one rule for both.
_SEED = next(f for f in dataclasses.fields(RunConfig) if f.name == "seed").metadata["constraint"]

Say = Callable[[str], None]


@dataclass(frozen=True)
class SearchResult:
    """How a search ended: its folder, progress, the best trial and the files written.

    ``none_completed`` is set when trials ended but none completed with a finite value
    (all failed, were pruned, or ended with an inf or -inf value, so there is no best
    trial): a sentence saying so, with the first failure's reason. None otherwise.

    ``unfinished`` is set when nothing runs, yet the study has budget left or interrupted
    trials to retry (it was interrupted): a sentence saying so and how to resume it.
    None otherwise.

    ``stop_signal`` is the signal that stopped the search when ``interrupted``: SIGINT
    (Ctrl-C), SIGTERM or SIGHUP. ``running`` is set when a ``gradwise search`` or
    ``gradwise worker`` on this machine still runs the study (it holds the study folder's
    ``running.lock``): nothing is interrupted then, though no trial may be running.
    """

    folder: Path
    study_name: str
    storage: str
    progress: Progress
    best: FrozenTrial | None
    report: Path | None
    best_config: Path | None
    interrupted: bool = False
    none_completed: str | None = None
    unfinished: str | None = None
    stop_signal: signal.Signals | None = None
    running: bool = False


def search(
    config_path: str | Path,
    *,
    strategy: str = "random",
    trials: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    studies_dir: str | Path = "studies",
    seed: int | None = None,
    heartbeat: int | None = None,
    say: Say | None = None,
) -> SearchResult:
    """Run (or resume) a search declared in the ``search`` section of a run config.

    Args:
        config_path: a run config (.yaml/.toml) with a ``search`` section.
        strategy: ``grid``, ``random``, ``coarse-to-fine`` or ``tpe``.
        trials: the trial budget (default 20; coarse-to-fine: its stages' total). None
            resuming a study: the budget it has; another number replaces that budget (a
            larger one runs more trials, a smaller one stops the study sooner).
        workers: worker processes on this machine (each takes an equal share of the cores).
        storage: an Optuna storage URL; default a SQLite file in the study folder.
        study_name: default the config file's stem.
        studies_dir: where study folders go.
        seed: seeds the samplers and the grid's order; an int in [0, 2**32 - 1], as a
            run config's seed. None: 0 for a new study, the stored one when resuming (a
            study keeps the seed it was made with: another is refused).
        heartbeat: seconds between a running trial's heartbeats; a trial silent for three
            is failed and retried. None: 10 for a new study, the stored one when resuming
            (as with the seed, another is refused).
        say: where progress lines go (nothing when None).

    Raises:
        ConfigError: a bad space, strategy, seed, storage, or a study that exists with another
            search, seed or heartbeat; nothing has run then.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"--strategy must be one of {', '.join(STRATEGIES)}. Got {strategy!r} instead."
        )
    for name, value in (("trials", trials), ("workers", workers), ("heartbeat", heartbeat)):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ConfigError(f"--{name} must be an int >= 1. Got {value!r} instead.")
    if seed is not None and not _SEED.is_satisfied_by(seed):
        raise ConfigError(f"--seed must be {_SEED.description}. Got {seed!r} instead.")
    config_path = Path(config_path)
    content = read_file(config_path)
    name = study_name or config_path.stem
    folder = Path(studies_dir) / name
    url = storage or sqlite_url(folder / "study.db")
    stages_trials = _stages_trials(content, strategy, trials, url, name)
    spec = parse_search(content, stages_trials=stages_trials)
    budget = trials or DEFAULT_TRIALS
    if strategy == "coarse-to-fine":
        budget = sum(stage.trials for stage in spec.stages)
    folder.mkdir(parents=True, exist_ok=True)
    settings = StudySettings(
        spec,
        strategy,
        budget,
        DEFAULT_SEED if seed is None else seed,
        DEFAULT_HEARTBEAT if heartbeat is None else heartbeat,
    )
    given = {"trials": trials, "seed": seed, "heartbeat": heartbeat}
    chosen = [key for key, value in given.items() if value is not None]
    study, settings = create_or_load(
        open_storage(url, heartbeat=None, create=True), name, settings, chosen=chosen
    )
    if strategy == "grid":
        budget = settings.trials  # the stored budget when resuming without --trials
        size, whole = enqueue_grid(study, spec, budget, settings.seed)
        if say is not None:
            _say_grid_size(say, size, whole, budget)
        settings = replace(settings, trials=min(budget, size))
        create_or_load(
            open_storage(url, heartbeat=None, create=True), name, settings, chosen=["trials"]
        )
    write_atomically(folder / STUDY_FILE, json.dumps({"storage": url, "study": name}).encode())
    requeued = requeue_interrupted(study)
    if requeued and say is not None:
        say(f"resuming: {requeued} interrupted trial(s) queued again with the same parameters")
    stop_signal = _run_workers(folder, url, name, workers, settings, say)
    result = finish(folder, url, name, interrupted=stop_signal is not None)
    return replace(result, stop_signal=stop_signal)


def _say_grid_size(say: Say, size: int, whole: int, budget: int) -> None:
    """Say when the grid's points and the budget differ: a grid smaller than --trials runs
    fewer trials, a larger one a seeded random subset of its points (a resume too: a study
    keeps the points it queued first, so only a new study runs more of them)."""
    if whole > size:
        say(
            f"the grid has {whole} points: this study runs {size} of them, a random subset "
            f"drawn with its seed (it was made with --trials {size}, and a study keeps its "
            f"grid); a new study (--study NAME) with --trials {whole} runs them all"
        )
    elif size < budget:
        say(f"the grid has {size} points: running {size} trials instead of {budget}")


def _stages_trials(
    content: Mapping[str, Any], strategy: str, trials: int | None, url: str, name: str
) -> int | None:
    """The total that coarse-to-fine's default stages split: ``--trials``, or resuming
    without it, the budget the study was made with (its stages are part of its search)."""
    if strategy != "coarse-to-fine":
        return None
    section = content.get("search")
    if trials is not None or not isinstance(section, Mapping) or "stages" in section:
        return trials
    stored = stored_settings(url, name)
    if stored is None or stored.get("strategy") != strategy:
        return None
    return int(stored["trials"])


def finish(folder: Path, url: str, name: str, *, interrupted: bool = False) -> SearchResult:
    """Write the study report and the best config; return where the study stands."""
    study = load_study(open_storage(url, heartbeat=None), name)
    settings = load_settings(study)
    trials = study.get_trials(deepcopy=False)
    state = progress(trials, settings.trials, settings.spec.direction)
    best = None if state.best_number is None else trials[state.best_number]
    best_config = None
    if best is not None:
        best_config = _write_best_config(folder, settings, best)
    else:
        # An earlier finish's best.yaml (from an older gradwise, which took a value that is
        # not finite for a result) is no best config of this study: the summary says so.
        (folder / BEST_CONFIG_FILE).unlink(missing_ok=True)
    from gradwise.report import build_study_report

    stages = stage_ranges(settings.spec, trials) if settings.strategy == "coarse-to-fine" else []
    none_completed = _none_completed(folder, trials, state, settings.spec)
    # Between two trials nothing runs, yet a search that runs its study is no interrupted one.
    running = running_elsewhere(folder)
    unfinished = None if running else _unfinished(state)
    report = build_study_report(
        folder,
        trials,
        settings.spec,
        title=f"study {name}",
        stages=stages,
        extra={
            "strategy": settings.strategy,
            "budget": str(settings.trials),
            "storage": masked(url),
            "seed": str(settings.seed),
        },
        none_completed=none_completed,
        unfinished=unfinished,
        running=running,
    )
    return SearchResult(
        folder, name, url, state, best, report, best_config, interrupted, none_completed,
        unfinished, running=running,
    )  # fmt: skip


def _none_completed(
    folder: Path, trials: list[FrozenTrial], state: Progress, spec: SearchSpec
) -> str | None:
    """Why there is no best trial, when trials ended but none completed with a finite
    value (None otherwise)."""
    if state.best_number is not None:
        return None
    ended = [trial for trial in trials if trial.state in (TrialState.FAIL, TrialState.PRUNED)]
    # With no best trial, each complete trial's value is inf or -inf (a diverged run's
    # loss): no valid result.
    invalid = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    if not ended and not invalid:
        return None
    finite = f" with a finite {spec.metric}" if invalid else ""
    over = state.done and not state.interrupted_with_budget_left
    lead = f"no trial completed{finite}" if over else f"no trial has completed{finite} yet"
    counts = f"{state.failed} failed, {state.pruned} pruned"
    if state.interrupted_attempts:
        # Attempts, as the leaderboard and the report count them; a queued or running retry
        # continues some, and a resume queues one for each trial that none continues yet.
        counts += f", {state.interrupted_attempts} interrupted attempt(s)"
        if state.interrupted:
            counts += f" ({state.interrupted} trial(s) retried on resume)"
    if invalid:
        counts += f", {len(invalid)} complete with a {spec.metric} that is not finite"
    failures = [trial for trial in ended if FAIL_REASON_ATTR in trial.user_attrs]
    if failures:
        first = failures[0]
        run = first.user_attrs.get(RUN_ATTR)
        where = "" if run is None else f" (run {folder / str(run)})"
        if RUN_ATTR in first.user_attrs and run is None:  # see the worker's _train
            where = " (no run folder: the config did not build)"
        why = (
            f"the first failure, trial {first.number}{where}: {first.user_attrs[FAIL_REASON_ATTR]}"
        )
    elif state.pruned:
        why = f"the {spec.pruner} pruner stopped each one (the first: trial {ended[0].number})"
    elif invalid:
        first = invalid[0]
        why = f"the first complete one, trial {first.number}, has {spec.metric} {first.value}"
    else:
        why = f"each one was interrupted (the first: trial {ended[0].number})"
    return f"{lead} ({counts}), so there is no best trial and no best config; {why}"


def _unfinished(state: Progress) -> str | None:
    """That the study was interrupted with budget left, and how to resume it (None when
    it was not: its budget is used, or trials still run)."""
    if not state.interrupted_with_budget_left:
        return None
    left = []
    if state.slots_used < state.budget:
        left.append(f"{state.budget - state.slots_used} of its {state.budget} trials not started")
    if state.interrupted:
        left.append(f"{state.interrupted} interrupted trial(s) to finish")
    return (
        f"the study was interrupted with budget left ({', '.join(left)}); run the same "
        "gradwise search command again to resume it (interrupted trials continue from "
        "their last checkpoint)"
    )


def load_trials(url: str, name: str) -> tuple[list[FrozenTrial], SearchSpec]:
    """A study's trials and the search spec stored with it."""
    study = load_study(open_storage(url, heartbeat=None), name)
    return study.get_trials(deepcopy=False), load_settings(study).spec


def open_study_folder(
    study: str | Path, studies_dir: str | Path = "studies"
) -> tuple[Path, str, str]:
    """The folder, storage URL and study name of ``study`` (a folder, or a name in studies_dir)."""
    candidates = [Path(study), Path(studies_dir) / str(study)]
    for folder in candidates:
        if (folder / STUDY_FILE).is_file():
            stored = json.loads((folder / STUDY_FILE).read_text())
            return folder, str(stored["storage"]), str(stored["study"])
    raise ConfigError(
        f"no study at {candidates[0]} or {candidates[1]} (a study folder holds {STUDY_FILE}; "
        f"gradwise search CONFIG makes one)"
    )


def _write_best_config(folder: Path, settings: StudySettings, best: FrozenTrial) -> Path:
    epochs = int(best.user_attrs.get(EPOCHS_ATTR, settings.spec.epochs))
    content = settings.spec.trial_config(
        best.params, epochs=epochs, steps=None, **settings.spec.checkpoint_settings
    )
    config = replace(parse_config(content), name=None, search={})
    header = (
        f"# The best trial ({best.number}, {settings.spec.metric} {best.value:.6g}) of this "
        f"study, as a run config: gradwise train {BEST_CONFIG_FILE}\n"
    )
    path = folder / BEST_CONFIG_FILE
    write_atomically(path, (header + dump_config(config)).encode())
    return path


# -- local workers ---------------------------------------------------------------------------


def _run_workers(
    folder: Path, url: str, name: str, count: int, settings: StudySettings, say: Say | None
) -> signal.Signals | None:
    """Run ``count`` worker processes until the study is done; returns the signal that
    stopped them (SIGINT for a Ctrl-C, SIGTERM, SIGHUP), None when the study is done."""
    logs = folder / "workers"
    logs.mkdir(exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // count)
    study = load_study(open_storage(url, heartbeat=None), name)
    workers: list[_Worker] = []
    shown = ""
    with running_lock(folder), _StopSignals() as stops:
        try:
            # Started within the try: a stop while they start stops those started.
            for index in range(count):
                workers.append(_Worker(index, url, name, folder, threads, logs))
            while True:
                time.sleep(0.5)
                stops.raise_if_swallowed()
                state = progress(study.get_trials(deepcopy=False), settings.trials,
                                 settings.spec.direction)  # fmt: skip
                line = state.line(settings.spec.metric)
                if say is not None and line != shown:
                    say(line)
                    shown = line
                stopped = [worker for worker in workers if not worker.running()]
                everyone = len(stopped) == len(workers)
                if everyone and state.done:
                    return None
                # A worker that died is replaced at once, not when the others have exited
                # too: they may be waiting for its trial (a coarse-to-fine stage). One that
                # exited cleanly saw the budget used; it is started again only if every
                # worker has exited and work remains.
                due = stopped if everyone else [worker for worker in stopped if worker.crashed()]
                spent = [worker for worker in due if worker.restarts >= _MAX_RESTARTS_PER_WORKER]
                if everyone and spent:
                    raise ConfigError(_crash_message(spent))
                for worker in due:
                    worker.restart()
        except KeyboardInterrupt as stop:
            signum = stops.heard(stop)
            _stop(workers, _forwarded(signum))
            return signum


class _Stopped(KeyboardInterrupt):
    """A SIGTERM or a SIGHUP that stops the search, as a Ctrl-C does."""

    def __init__(self, signum: signal.Signals) -> None:
        super().__init__(f"stopped by {signum.name}")
        self.signum = signum


class _StopSignals:
    """Within the block, SIGTERM (``kill``, ``timeout``, a scheduler's preemption) and
    SIGHUP (the terminal closed) stop the search as a Ctrl-C does: they raise
    :class:`_Stopped`, a KeyboardInterrupt.

    Each asks once: the same signal again, or the other one, is the same request (``timeout``
    sends its SIGTERM to the search and then to its process group, the search included;
    a shell that hangs up may send SIGHUP twice). A Ctrl-C after it is a second request,
    as a second Ctrl-C is. A signal that is ignored (``nohup`` ignores SIGHUP) stays
    ignored. Only the main thread can set handlers: elsewhere the block changes nothing.
    The handlers in place before the block are back after it.
    """

    def __init__(self) -> None:
        self.received: set[int] = set()
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in _STOP_SIGNALS:
            handler = signal.getsignal(signum)
            # None: a handler set outside Python, which cannot be put back.
            if handler is not None and handler != signal.SIG_IGN:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received:
            return
        self.received.add(signum)
        raise _Stopped(signal.Signals(signum))

    def raise_if_swallowed(self) -> None:
        """Raise the stop a signal asked for, if it has not reached the loop: the handler
        raises where the signal finds the main thread, and inside a weakref callback or a
        ``__del__`` Python prints the exception and drops it ("Exception ignored in"), so
        the search went on and ran its budget while later signals counted as the same
        request. The loop calls this at each turn."""
        if self.received:
            raise _Stopped(signal.Signals(min(self.received)))

    def heard(self, stop: KeyboardInterrupt) -> signal.Signals:
        """The signal of a stop (a KeyboardInterrupt of its own is a Ctrl-C), recorded:
        a SIGTERM or SIGHUP after it is the same request."""
        signum = stop.signum if isinstance(stop, _Stopped) else signal.SIGINT
        self.received.add(signum)
        return signum


def _forwarded(signum: signal.Signals) -> signal.Signals:
    """The signal that stops the workers after the search got ``signum``.

    A worker takes SIGINT, SIGTERM and SIGHUP as one request and only the same signal
    again as a second (one that stops it at once, inside its step). The signal that
    stopped the search may have reached the workers too: a terminal's Ctrl-C or hang-up
    signals the whole foreground process group, and ``timeout`` or a batch scheduler sends
    SIGTERM to every process of the job. So the workers get another one: SIGTERM, or
    SIGINT when the search got SIGTERM.
    """
    return signal.SIGINT if signum == signal.SIGTERM else signal.SIGTERM


def _stop(workers: Sequence[_Worker], signum: signal.Signals = signal.SIGTERM) -> None:
    """Stop the workers after a Ctrl-C (or a SIGTERM, a SIGHUP): each after its current
    step, with a checkpoint; at once after a second Ctrl-C; killed when still running
    after the grace period.

    The workers are stopped with ``signum`` (:func:`_forwarded`: after a Ctrl-C, SIGTERM),
    which a worker takes as the same request as the signal that stopped the search: a
    terminal's Ctrl-C reaches the workers too, and a second SIGINT would stop them at
    once, inside a step, losing the steps since their last checkpoint. The same signal
    again is a second request, so a second Ctrl-C gives each worker ``signum`` again (a
    terminal's gives them a second SIGINT as well).
    """
    for worker in workers:
        worker.interrupt(signum)
    try:
        _wait(workers, _STOP_GRACE_S)
        return
    except KeyboardInterrupt:
        pass
    try:
        # A terminal's second Ctrl-C stops its workers by itself: a moment for them to
        # record their trial as interrupted, before a signal more would cut that short.
        _wait(workers, _SECOND_STOP_DELAY_S, kill=False)
        for worker in workers:
            worker.interrupt(signum)
        _wait(workers, _STOP_GRACE_S)
    except KeyboardInterrupt:
        _wait(workers, 0.0)  # a third Ctrl-C: kill them


def _wait(workers: Sequence[_Worker], timeout: float, *, kill: bool = True) -> None:
    """Wait up to ``timeout`` seconds in all for the workers to exit; then kill (SIGKILL)
    those still running, unless not ``kill``."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        worker.wait(max(0.0, deadline - time.monotonic()), kill=kill)


class _Worker:
    """One local ``gradwise worker`` process, its log, and its restarts."""

    def __init__(
        self, index: int, url: str, name: str, folder: Path, threads: int, logs: Path
    ) -> None:
        self.index = index
        self.command = [
            sys.executable, "-m", "gradwise", "worker", "--storage", url, "--study", name,
            "--folder", str(folder), "--threads", str(threads),
        ]  # fmt: skip
        self.log_path = logs / f"worker-{index}.log"
        self.restarts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._start()

    def _start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed when the process ends
        environment = {**os.environ, "GRADWISE_WORKER_INDEX": str(self.index)}
        self.process = subprocess.Popen(
            self.command, stdout=self._log, stderr=subprocess.STDOUT, env=environment
        )

    def running(self) -> bool:
        assert self.process is not None  # noqa: S101 - started in __init__
        if self.process.poll() is None:
            return True
        if self._log is not None:
            self._log.close()
            self._log = None
        return False

    def crashed(self) -> bool:
        """Exited with an error or a signal (a clean exit means the budget was used)."""
        return self.process is not None and self.process.returncode not in (None, 0)

    def restart(self) -> bool:
        """Start again after an exit while work remains; False when it keeps failing."""
        if self.restarts >= _MAX_RESTARTS_PER_WORKER:
            return False
        self.restarts += 1
        self._start()
        return True

    def interrupt(self, signum: signal.Signals = signal.SIGTERM) -> None:
        """Ask the worker to stop with ``signum`` (SIGINT, SIGTERM and SIGHUP are one
        request to a worker; see _stop)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self, timeout: float, *, kill: bool = True) -> None:
        """Wait up to ``timeout`` seconds for the worker to exit; then kill it (SIGKILL),
        unless not ``kill``."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            if not kill:
                return
            self.process.kill()
            self.process.wait()
        self.running()

    def log_tail(self, lines: int = 15) -> str:
        if not self.log_path.is_file():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _crash_message(crashed: Sequence[_Worker]) -> str:
    worker = crashed[0]
    return (
        f"worker {worker.index} kept exiting before the study was done "
        f"({worker.restarts} restarts); the end of {worker.log_path}:\n{worker.log_tail()}"
    )
