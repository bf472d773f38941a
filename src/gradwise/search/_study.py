"""Studies: the storage (SQLite file or PostgreSQL), the settings stored with a study, progress.

A study stores everything a worker needs under the user attribute ``gradwise``: the
search spec (space, metric, stages, the run config searched around), the strategy, the
trial budget, the seed and the heartbeat. So ``gradwise worker --storage URL --study NAME``
on another machine needs nothing else.

Reliability settings (REFERENCE.md, "Hyperparameter search on Optuna 5"):

- heartbeats: a worker records one every ``heartbeat`` seconds while a trial runs; a
  trial silent for 3 heartbeats is failed and re-queued with the same parameters by
  Optuna's RetryHeartbeatStaleTrialCallback (the retry resumes from the trial's last
  checkpoint);
- SQLite: write-ahead logging and a 120 s busy timeout, so parallel workers wait for the
  write lock instead of failing with "database is locked" (optuna#820).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import sqlite3
import warnings
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from gradwise.config import ConfigError
from gradwise.search._space import SearchSpec, parse_search
from gradwise.search._stages import (
    MAX_RETRIES,
    failed_for_good,
    is_interrupted_attempt,
    is_retry,
    original_number,
)

SETTINGS_ATTR = "gradwise"
DEFAULT_SEED = 0
DEFAULT_HEARTBEAT = 10
# Settings a resumed study keeps, and why another value cannot simply replace the stored one.
_KEPT_SETTINGS = {
    "seed": "it decided the sampler's draws and the grid's order",
    "heartbeat": "every worker judges the others' trials stale by it",
}
_SQLITE_BUSY_TIMEOUT_S = 120
# In the study folder: held (a shared lock) by whatever runs the study on this machine.
RUNNING_LOCK_FILE = "running.lock"


@dataclass(frozen=True)
class StudySettings:
    """What a study was made with; stored in the study, read by every worker."""

    spec: SearchSpec
    strategy: str
    trials: int
    seed: int = DEFAULT_SEED
    heartbeat: int = DEFAULT_HEARTBEAT

    def to_mapping(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_mapping(),
            "fingerprint": self.spec.fingerprint(),
            "strategy": self.strategy,
            "trials": self.trials,
            "seed": self.seed,
            "heartbeat": self.heartbeat,
        }

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> StudySettings:
        stored = dict(mapping["spec"])
        base = stored.pop("base")
        spec = parse_search({**base, "search": stored})
        return cls(
            spec,
            str(mapping["strategy"]),
            int(mapping["trials"]),
            int(mapping["seed"]),
            int(mapping["heartbeat"]),
        )


@contextlib.contextmanager
def heartbeats_allowed() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning for the heartbeat API (stable since 2.9)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def sqlite_url(path: Path) -> str:
    """The storage URL of a SQLite file."""
    return f"sqlite:///{path.resolve()}"


def open_storage(
    url: str, heartbeat: int | None = DEFAULT_HEARTBEAT, *, create: bool = False
) -> RDBStorage:
    """An Optuna RDB storage with heartbeats and retries (``heartbeat=None``: neither).

    A SQLite file is made only with ``create`` (``gradwise search`` starting a study);
    opening a missing one is an error, since SQLite would otherwise leave an empty
    database behind at a mistyped path.
    """
    if _in_memory_sqlite(url):
        raise ConfigError(
            f"the storage {url} is an in-memory SQLite database, which every process (the "
            "search and each worker) would open empty; give a file, "
            "sqlite:///PATH/study.db, or leave --storage out for studies/NAME/study.db"
        )
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.is_file():
            raise ConfigError(
                f"no SQLite database at {path.resolve()}; give the storage URL of a study "
                "made by 'gradwise search' (its study folder's study.json names it), or "
                "start one with 'gradwise search CONFIG'"
            )
        # WAL is a property of the database file: set once, every connection gets it.
        with contextlib.closing(sqlite3.connect(path, timeout=_SQLITE_BUSY_TIMEOUT_S)) as db:
            db.execute("PRAGMA journal_mode=WAL")
        engine_kwargs["connect_args"] = {"timeout": _SQLITE_BUSY_TIMEOUT_S}
    elif url.startswith("postgresql"):
        engine_kwargs["pool_pre_ping"] = True
    options: dict[str, Any] = {}
    if heartbeat is not None:
        with heartbeats_allowed():
            retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
        options = {
            "heartbeat_interval": heartbeat,
            "grace_period": 3 * heartbeat,
            "heartbeat_stale_trial_callback": retry,
        }
    try:
        with heartbeats_allowed():
            return RDBStorage(url, engine_kwargs=engine_kwargs, **options)
    except ImportError as error:
        raise ConfigError(
            f"the storage {masked(url)} needs a database driver that is not installed "
            f"({error}); for PostgreSQL: pip install 'gradwise[postgres]'"
        ) from None
    except Exception as error:  # sqlalchemy's errors: a bad URL, a server that is down
        raise ConfigError(f"cannot open the storage {masked(url)}: {_first_line(error)}") from None


def _in_memory_sqlite(url: str) -> bool:
    """``sqlite://``, ``sqlite:///:memory:`` and the like: no file to share."""
    if not url.startswith("sqlite"):
        return False
    from sqlalchemy.engine import make_url

    try:
        database = make_url(url).database
    except Exception:  # not a URL sqlalchemy can read: RDBStorage says why
        return False
    return not database or database == ":memory:" or database.startswith("file::memory:")


def masked(url: str) -> str:
    """The URL with its password hidden (for messages and reports)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy can read: show it as given
        return url


def create_or_load(
    storage: RDBStorage, name: str, settings: StudySettings, *, chosen: Collection[str] = ()
) -> tuple[optuna.Study, StudySettings]:
    """The study ``name``: made with ``settings``, or loaded when its settings match.

    Returns the study and the settings it runs with: a resumed study keeps its stored seed
    and heartbeat, and its trial budget unless another was chosen (which replaces it).

    Args:
        chosen: which of ``trials``, ``seed`` and ``heartbeat`` the user gave (the others
            in ``settings`` are defaults, which a resumed study's stored values replace).

    Raises:
        ConfigError: the study exists with another space, metric, base config or strategy
            (the message lists what differs), or with another seed or heartbeat than the
            one chosen (the message names both).
    """
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction=settings.spec.direction,
        load_if_exists=True,
    )
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, settings.to_mapping())
        return study, settings
    differences = _differences(stored, settings.to_mapping())
    if differences:
        raise ConfigError(
            f"study '{name}' exists with a different search ({'; '.join(differences)}); "
            f"re-run with the original config to resume it, or pass --study NEW_NAME"
        )
    _check_kept_settings(name, stored, settings, chosen)
    trials = int(stored["trials"])
    if "trials" in chosen and trials != settings.trials:
        study.set_user_attr(SETTINGS_ATTR, {**stored, "trials": settings.trials})
        trials = settings.trials
    seed, heartbeat = int(stored["seed"]), int(stored["heartbeat"])
    return study, replace(settings, trials=trials, seed=seed, heartbeat=heartbeat)


def _check_kept_settings(
    name: str, stored: Mapping[str, Any], settings: StudySettings, chosen: Collection[str]
) -> None:
    """Refuse a chosen seed or heartbeat other than the stored one (as another space is
    refused: the study was made with it, and its trials and workers depend on it)."""
    changed = [
        key for key in _KEPT_SETTINGS if key in chosen and getattr(settings, key) != stored[key]
    ]
    if not changed:
        return
    made = " ".join(f"--{key} {stored[key]}" for key in changed)
    given = " ".join(f"--{key} {getattr(settings, key)}" for key in changed)
    why = "; ".join(f"the {key}: {_KEPT_SETTINGS[key]}" for key in changed)
    them = "it" if len(changed) == 1 else "them"
    raise ConfigError(
        f"study '{name}' was made with {made}, not {given}, and keeps {them} ({why}); pass "
        f"{made} or leave {them} out to resume the study, or pass --study NEW_NAME to start "
        f"another with {given}"
    )


def load_settings(study: optuna.Study) -> StudySettings:
    """The settings stored with a study made by ``gradwise search``."""
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        raise ConfigError(
            f"study '{study.study_name}' was not made by gradwise search (no settings stored)"
        )
    return StudySettings.from_mapping(stored)


def load_study(storage: RDBStorage, name: str) -> optuna.Study:
    """An existing study, with a clear error when it is not in the storage."""
    names = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise ConfigError(f"no study '{name}' in the storage (studies there: {known})")
    return optuna.load_study(study_name=name, storage=storage)


def stored_settings(url: str, name: str) -> Mapping[str, Any] | None:
    """The settings stored with study ``name`` (:meth:`StudySettings.to_mapping`); None
    when there is no such study (or storage) yet. Makes nothing."""
    try:
        study = load_study(open_storage(url, heartbeat=None), name)
    except ConfigError:
        return None
    stored = study.user_attrs.get(SETTINGS_ATTR)
    return stored if isinstance(stored, Mapping) else None


def _differences(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    same_space = stored.get("fingerprint") == new["fingerprint"] or (
        _refingerprint(stored) == new["fingerprint"]
    )
    if same_space and stored["strategy"] == new["strategy"]:
        return []
    out = []
    if stored["strategy"] != new["strategy"]:
        out.append(f"strategy was {stored['strategy']}, now {new['strategy']}")
    old_spec, new_spec = stored["spec"], new["spec"]
    old_space, new_space = old_spec["space"], new_spec["space"]
    for path in sorted(set(old_space) | set(new_space)):
        before, after = old_space.get(path), new_space.get(path)
        if before != after:
            out.append(f"space of {path} was {_show(before)}, now {_show(after)}")
    for key in ("metric", "direction", "stages", "margin", "pruner", "base"):
        if old_spec.get(key) != new_spec.get(key):
            label = "the run config outside 'search'" if key == "base" else key
            out.append(f"{label} changed")
    return out or ["the stored search differs"]


def _refingerprint(stored: Mapping[str, Any]) -> str | None:
    """The stored search's fingerprint as this version computes it (a study made by an
    earlier one stored e.g. a uniform range written [1, 10] with int bounds; the range is
    [1.0, 10.0] now, the same space). None when the stored search no longer parses."""
    try:
        return StudySettings.from_mapping(stored).spec.fingerprint()
    except ConfigError:
        return None


def _show(value: Any) -> str:
    return "absent" if value is None else str(value)


# -- progress -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """Where a study stands: trials by state, slots of the budget used, the best so far.

    ``complete`` counts every complete trial; the best is the best one with a finite
    value (a complete trial whose value is inf or -inf, a diverged run, is no valid
    result). ``interrupted_attempts`` counts every attempt stopped by a Ctrl-C or a
    killed worker that a retry continues or will (the leaderboard's and the report's
    ``interrupted``); ``interrupted`` counts the trials a resume queues again: those of
    them that no retry continues yet (a queued or running retry continues its trial).
    """

    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int
    slots_used: int
    budget: int
    best_value: float | None
    best_number: int | None
    interrupted: int = 0
    interrupted_attempts: int = 0

    @property
    def finished(self) -> int:
        """Trials that ended for good (complete, pruned, failed for good: with a reason of
        their own, or stopped on their last attempt)."""
        return self.complete + self.pruned + self.failed

    @property
    def done(self) -> bool:
        """The budget is used and nothing is running or queued."""
        return self.slots_used >= self.budget and self.running == 0 and self.waiting == 0

    @property
    def interrupted_with_budget_left(self) -> bool:
        """Nothing runs or waits, yet budget is left or an interrupted trial awaits its
        retry: the study was stopped (Ctrl-C, killed workers), and ``gradwise search``
        again resumes it."""
        stopped = self.running == 0 and self.waiting == 0
        return stopped and (self.slots_used < self.budget or self.interrupted > 0)

    def line(self, metric: str) -> str:
        """``trials 3/20 done · 1 running · 0 pruned · 1 failed · best val_loss 0.31 (trial 2)``.

        A study resumed with a smaller ``--trials`` than the trials it has run keeps them:
        ``trials 3 done (budget 1 used up)``, not ``3/1``.
        """
        best = (
            "best -"
            if self.best_value is None
            else f"best {metric} {self.best_value:.4g} (trial {self.best_number})"
        )
        done = (
            f"{self.finished}/{self.budget} done"
            if self.finished <= self.budget
            else f"{self.finished} done (budget {self.budget} used up)"
        )
        return (
            f"trials {done} · {self.running} running · "
            f"{self.pruned} pruned · {self.failed} failed · {best}"
        )


def progress(trials: list[FrozenTrial], budget: int, direction: str) -> Progress:
    """Count a study's trials (``study.get_trials()``)."""
    states = [trial.state for trial in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    valid = [t for t in complete if math.isfinite(float(t.value))]  # type: ignore[arg-type]
    best = None
    if valid:
        pick = min if direction == "minimize" else max
        best = pick(valid, key=lambda t: float(t.value))  # type: ignore[arg-type]
    return Progress(
        complete=len(complete),
        pruned=states.count(TrialState.PRUNED),
        failed=sum(1 for trial in trials if failed_for_good(trial)),
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
        slots_used=sum(1 for trial in trials if not is_retry(trial)),
        budget=budget,
        best_value=None if best is None else best.value,
        best_number=None if best is None else best.number,
        interrupted=len(_interrupted(trials)),
        interrupted_attempts=sum(1 for trial in trials if is_interrupted_attempt(trial)),
    )


def _interrupted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials a resume queues again: the latest attempt of each retry chain, where it
    failed without a reason of its own and has retries left (earlier attempts have theirs)."""
    latest: dict[int, FrozenTrial] = {}
    for trial in trials:
        latest[original_number(trial)] = trial
    return [trial for trial in latest.values() if is_interrupted_attempt(trial)]


def requeue_interrupted(study: optuna.Study) -> int:
    """Queue a retry of each trial that a Ctrl-C or a crash left failed without a reason.

    Killed workers' trials are re-queued by the heartbeat; trials stopped by Ctrl-C are
    failed by Optuna at once and need this (run by ``gradwise search`` when it starts).
    A trial whose retries are used up (``MAX_RETRIES``) is failed for good and not queued
    again. Returns how many retries were queued.
    """
    trials = study.get_trials(deepcopy=False)
    interrupted = _interrupted(trials)
    if not interrupted:
        return 0
    with heartbeats_allowed():
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
        for trial in interrupted:
            retry(study, trial)
    # Count the retries in the storage: the callback silently skips a trial out of retries.
    chains = {original_number(trial) for trial in interrupted}
    newest = trials[-1].number
    return sum(
        1
        for trial in study.get_trials(deepcopy=False)
        if trial.number > newest and is_retry(trial) and original_number(trial) in chains
    )


# -- a study running on this machine -------------------------------------------------------


@contextlib.contextmanager
def running_lock(folder: Path) -> Iterator[None]:
    """Hold a shared lock on the study folder's ``running.lock`` within the block.

    ``gradwise search`` and each worker hold it while they run the study, so
    :func:`running_elsewhere` sees a study that runs even between two trials, when none is
    marked running. The kernel lets the lock go when its process ends, killed or not.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / RUNNING_LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def running_elsewhere(folder: Path) -> bool:
    """Whether a ``gradwise search`` or worker on this machine runs the study in ``folder``
    (holds its :func:`running_lock`). Workers on other machines are not seen."""
    try:
        descriptor = os.open(folder / RUNNING_LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # lets the lock taken here go
    return False


# -- one trial at a time --------------------------------------------------------------------


class AskLock:
    """The study's "ask" lock: one worker at a time checks the budget and starts a trial.

    Without it two workers can both see one slot left and both start a trial. The lock is
    taken before the check and released by the objective, once Optuna has asked for the
    trial. SQLite: an advisory file lock next to the database (workers share a machine);
    PostgreSQL: a session advisory lock on the server.
    """

    def __init__(self, storage: RDBStorage, study_name: str) -> None:
        self._url = str(storage.url)
        self._storage = storage
        self._key = _key(study_name)
        self._release: Any = None

    def acquire(self) -> None:
        if self._release is not None:
            return
        if self._url.startswith("sqlite:///"):
            handle = open(self._url.removeprefix("sqlite:///") + f".{self._key}.lock", "a")  # noqa: SIM115 - released in release()
            fcntl.flock(handle, fcntl.LOCK_EX)

            def release_file() -> None:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()

            self._release = release_file
        elif self._url.startswith("postgresql"):
            from sqlalchemy import text

            connection = self._storage.engine.connect()
            key = {"key": int(self._key, 16) & 0x7FFFFFFFFFFFFFFF}
            connection.execute(text("SELECT pg_advisory_lock(:key)"), key)

            def release_advisory() -> None:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)
                connection.close()

            self._release = release_advisory
        else:
            self._release = lambda: None

    def release(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            release()


def _key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:15]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
