"""``gradwise search CONFIG``, ``gradwise search show STUDY`` and ``gradwise worker``."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gradwise.search._study import Progress

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
# Stopped by a signal: this plus its number (EXIT_INTERRUPTED for SIGINT).
EXIT_SIGNALLED = 128
_STOPPED_BY = {
    signal.SIGINT: "Ctrl-C (SIGINT)",
    signal.SIGHUP: "SIGHUP (the terminal closed?)",
}
_STRATEGIES = ("grid", "random", "coarse-to-fine", "tpe")


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the ``search`` and ``worker`` subcommands."""
    parser = commands.add_parser(
        "search",
        help="hyperparameter search over the 'search' section of CONFIG (or: search show STUDY)",
        description="Search the space declared in CONFIG's 'search' section with K worker "
        "processes; each trial is a normal run folder. Re-running the same command resumes "
        "the study. 'gradwise search show STUDY' prints a study's leaderboard.",
    )
    parser.add_argument("config", type=Path, help="a run config with a 'search' section, or 'show'")
    parser.add_argument("study_folder", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", choices=_STRATEGIES, default="random", help="default: random")
    parser.add_argument("--trials", type=int, help="trial budget (default 20; coarse-to-fine: "
                        "its stages' total, 2 x 25 by default). A resumed study keeps its "
                        "budget; --trials N makes it N, more or fewer")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="local worker processes")
    parser.add_argument("--storage", help="Optuna storage URL (default: a SQLite file in the "
                        "study folder; postgresql://... for several machines)")  # fmt: skip
    parser.add_argument("--study", help="study name (default: the config file's name)")
    parser.add_argument(
        "--studies-dir", type=Path, default=Path("studies"), help="default: studies"
    )
    parser.add_argument("--seed", type=int, help="sampler and grid-order seed (default 0; a "
                        "resumed study keeps the one it was made with)")  # fmt: skip
    parser.add_argument("--heartbeat", type=int, help="seconds between trial heartbeats "
                        "(default 10; a resumed study keeps the one it was made with)")  # fmt: skip
    parser.set_defaults(handler=run_search)

    worker = commands.add_parser(
        "worker",
        help="join a running study (from this or another machine)",
        description="Take trials of a study made by 'gradwise search' until its budget is "
        "used. Trial run folders go to FOLDER/trials (default studies/NAME).",
    )
    worker.add_argument("--storage", required=True, help="the study's storage URL")
    worker.add_argument("--study", required=True, help="the study's name")
    worker.add_argument("--folder", type=Path, help="the study folder on this machine")
    worker.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    worker.set_defaults(handler=run_worker_command)


def run_search(args: argparse.Namespace) -> int:
    """``gradwise search CONFIG ...`` or ``gradwise search show STUDY``."""
    import optuna

    from gradwise.config import ConfigError

    # gradwise says what happens in its own lines ("resuming: ...", the progress line):
    # optuna's "[I ...] A new study created in RDB" is noise in another format.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if str(args.config) == "show":
        if args.study_folder is None:
            raise ConfigError("'gradwise search show' needs a STUDY (a study folder or name)")
        return _show(args.study_folder, args.studies_dir)
    if args.study_folder is not None:
        raise ConfigError(f"unexpected argument {args.study_folder!r} after CONFIG")
    from gradwise.search import search

    result = search(
        args.config,
        strategy=args.strategy,
        trials=args.trials,
        workers=args.workers,
        storage=args.storage,
        study_name=args.study,
        studies_dir=args.studies_dir,
        seed=args.seed,
        heartbeat=args.heartbeat,
        say=_say,
    )
    stop_signal = result.stop_signal or signal.SIGINT
    if result.interrupted:
        print(f"stopped by {_STOPPED_BY.get(stop_signal, stop_signal.name)}; its workers were "
              "stopped too")  # fmt: skip
    _print_result(result)
    if result.interrupted:
        if result.unfinished is None:  # else _print_result said it, with what is left
            print(_interrupted(result.progress))
        # The shell's status of a process a signal ended: 130 for a Ctrl-C, 143 for SIGTERM.
        return EXIT_SIGNALLED + stop_signal
    if result.none_completed is not None:
        # Like `gradwise train` when its run fails: the search ended with no best trial.
        return EXIT_FAILED
    return EXIT_OK


def _interrupted(progress: Progress) -> str:
    """What a Ctrl-C left of a study, when there is no budget left to say so
    (``SearchResult.unfinished``): a trial still running, queued ones, or nothing."""
    if progress.running:
        # A worker killed (by the 120 s wait after the Ctrl-C, or before it) leaves its trial
        # running until a worker's fail_stale_trials finds its heartbeat stale.
        return (
            f"interrupted with {progress.running} trial(s) still marked running (a killed "
            "worker's, or one on another machine): run the same command again to resume the "
            "study; a killed worker's trial is retried from its last checkpoint once its "
            "heartbeat times out (3 x the study's --heartbeat seconds)"
        )
    if progress.waiting:
        return "interrupted; run the same command again to resume the study"
    return "interrupted after the study's budget was used: nothing is left to resume"


def run_worker_command(args: argparse.Namespace) -> int:
    """``gradwise worker --storage URL --study NAME``."""
    from gradwise.config import ConfigError
    from gradwise.search import run_worker
    from gradwise.search._worker import stop_signals
    from gradwise.train._interrupt import stop_requests

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be an int >= 1. Got {args.threads} instead.")
        import torch

        torch.set_num_threads(args.threads)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the worker says its own lines
    folder = args.folder or Path("studies") / args.study
    # A Ctrl-C (or hang-up) and the signal of `gradwise search` are one request until the
    # worker has said how it ended: the SIGTERM that follows a terminal's Ctrl-C must not
    # kill it.
    with stop_requests(stop_signals()):
        try:
            ran = run_worker(args.storage, args.study, folder, say=_say)
        except KeyboardInterrupt:
            _say(
                "worker interrupted; a trial it left unfinished keeps its checkpoint and is "
                "retried on resume"
            )
            return EXIT_INTERRUPTED
        _say(f"worker done: ran {ran} trial(s); the study's budget is used")
        return EXIT_OK


def _show(study: str, studies_dir: Path) -> int:
    """Print a study's leaderboard. Exits 0 whatever the trials did: it only shows them."""
    from gradwise.search import finish, open_study_folder

    folder, url, name = open_study_folder(study, studies_dir)
    _print_result(finish(folder, url, name), limit=None)
    return EXIT_OK


def _print_result(result: object, limit: int | None = 10) -> None:
    from gradwise.report import leaderboard_table
    from gradwise.search import SearchResult, load_trials

    assert isinstance(result, SearchResult)  # noqa: S101 - internal
    trials, spec = load_trials(result.storage, result.study_name)
    # With no trial completed, the table lists the trials by number, without ranks.
    print(leaderboard_table(trials, spec, limit=limit).render_text())
    print(result.progress.line(spec.metric))
    if result.running:
        print(
            "the study is running: a gradwise search or worker on this machine runs it (it "
            f"holds {result.folder / 'running.lock'})"
        )
    if result.unfinished is not None:
        print(result.unfinished)
    if result.none_completed is not None:
        print(result.none_completed)
    print(f"study folder: {result.folder}")
    if result.best_config is not None:
        print(f"best config:  {result.best_config}   (gradwise train {result.best_config})")
    if result.report is not None:
        print(f"report:       {result.report}")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
