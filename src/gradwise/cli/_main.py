"""The ``gradwise`` command: thin commands over a validated configuration (STYLE.md §14)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from gradwise.cli._bench import add_parser as add_bench_parser
from gradwise.cli._landscape import add_parser as add_landscape_parser
from gradwise.cli._lr_find import add_parser as add_lr_find_parser
from gradwise.cli._prune import add_parser as add_prune_parser
from gradwise.cli._search import add_parsers as add_search_parsers
from gradwise.cli._viz import add_parser as add_viz_parser

if TYPE_CHECKING:
    from gradwise.config import ConfigError, RunConfig
    from gradwise.doctor import DoctorResult

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + 13  # as a shell reports a process that SIGPIPE ended


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from gradwise.config import ConfigError
    from gradwise.runs import RunFolderError

    try:
        return int(args.handler(args))
    except ConfigError as error:
        print(f"gradwise {args.command}: error: {_located(error, args)}", file=sys.stderr)
        return EXIT_USAGE
    except RunFolderError as error:
        print(f"gradwise {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # Training turns Ctrl-C into a checkpoint and a resume hint itself; this is one
        # outside it (loading data, building the run, the doctor's checks).
        print(f"gradwise {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of the output went away (`gradwise runs | head -1`): stop quietly,
        # as a process that SIGPIPE ended would, without a traceback. Python flushes
        # stdout once more at exit, which would raise again: it writes to devnull now.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _located(error: ConfigError, args: argparse.Namespace) -> ConfigError:
    """An error found building the run from CONFIG (with --set), at the file's line.

    The commands that read a run config with overrides; the line is found again by the
    key the error names, as load_config finds it for the errors of the schema.
    """
    from gradwise.config import locate_in_file

    config = getattr(args, "config", None)
    if config is None or not hasattr(args, "overrides"):
        return error  # no file; or not a run config with --set (gradwise search)
    overrides = list(args.overrides)
    if getattr(args, "runs_dir", None) is not None:
        overrides.append(f"runs_dir={args.runs_dir}")
    return locate_in_file(error, config, overrides)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradwise", description="Train deep networks well, and find out what went wrong."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a model (with no CONFIG: a CNN on MNIST-1D)",
        description="Train from a YAML/TOML config; every key has a default.",
    )
    train.add_argument("config", nargs="?", type=Path, help="a .yaml or .toml run config")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set optimizer.lr=3e-3 (repeatable)",
    )
    train.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="continue a run folder (its path; or its name, with --runs-dir)",
    )
    train.add_argument(
        "--runs-dir",
        type=Path,
        help="where run folders go, and where --resume finds a run by name (default: runs)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train in N processes on this machine (DDP; gloo on CPU, nccl on GPU)",
    )
    train.set_defaults(handler=_train)

    config = commands.add_parser(
        "config", help="print the fully resolved config (the default, or CONFIG with --set)"
    )
    config.add_argument("config", nargs="?", type=Path, help="a config file to resolve")
    config.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    config.set_defaults(handler=_config)

    doctor = commands.add_parser(
        "doctor",
        help="check a configured run and name what is wrong (gradient check, sanity, probe run)",
        description="Run the gradient check, the sanity checks and a short monitored probe run "
        "of a config (the default run without CONFIG); print the findings and write a report.",
    )
    doctor.add_argument("config", nargs="?", type=Path, help="a .yaml or .toml run config")
    doctor.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    doctor.add_argument(
        "--fix", action="store_true", help="apply the confident fixes, re-run, compare"
    )
    doctor.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="probe-run epochs (default: 3, or more to reach 300 steps, the monitor's trend "
        "window, within the configured run)",
    )
    doctor.add_argument("--no-checks", action="store_true", help="skip gradient and sanity checks")
    doctor.add_argument("--runs-dir", type=Path, help="where run folders go (default: runs)")
    doctor.set_defaults(handler=_doctor)

    add_lr_find_parser(commands)
    add_landscape_parser(commands)
    add_viz_parser(commands)
    add_search_parsers(commands)
    add_bench_parser(commands)
    add_prune_parser(commands)

    runs = commands.add_parser("runs", help="list runs with their best metrics")
    runs.add_argument("--runs-dir", type=Path, help="default: runs")
    runs.set_defaults(handler=_runs)

    report = commands.add_parser("report", help="rebuild a run's report.html")
    report.add_argument("run", type=Path, help="a run folder")
    report.set_defaults(handler=_report)
    return parser


def _train(args: argparse.Namespace) -> int:
    from gradwise.config import ConfigError, config_to_dict, load_config
    from gradwise.train import TrainingDiverged, resume, train
    from gradwise.train._distributed import in_launched_process

    progress = not args.no_progress
    if args.resume is not None and (args.config is not None or args.overrides):
        print(
            "gradwise train: error: --resume continues a run with its own config; "
            "drop CONFIG and --set (or start a new run).",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be an int >= 1. Got {args.nproc} instead.")
    if args.resume is not None and args.runs_dir is not None:
        args.resume = _run_in_runs_dir(args.resume, args.runs_dir)
    config = None
    if args.resume is None:
        overrides = list(args.overrides)
        if args.runs_dir is not None:
            overrides.append(f"runs_dir={args.runs_dir}")
        config = load_config(args.config, overrides)
        _check_runs_dir(args, config, "train")
    if args.nproc > 1 or in_launched_process():
        if not in_launched_process():
            _check_before_launch(config, args.resume, args.nproc)
        content = None if config is None else config_to_dict(config)
        return _train_distributed(content, args.resume, args.nproc, progress)
    try:
        result = (
            resume(args.resume, progress=progress)
            if config is None
            else train(config, progress=progress)
        )
    except TrainingDiverged as error:
        print(f"gradwise train: stopped: {error}", file=sys.stderr)
        return EXIT_FAILED
    assert result.run is not None  # noqa: S101 - train() always makes a run folder
    return _print_run(result.summary, result.run.path, result.status)


def _run_in_runs_dir(run: Path, runs_dir: Path) -> Path:
    """The run folder ``--resume RUN --runs-dir DIR`` means: DIR/RUN for a name, RUN for a
    path into DIR; a path elsewhere is a usage error (which folder was meant?)."""
    from gradwise.config import ConfigError

    if not run.is_absolute() and len(run.parts) == 1 and run.name not in (".", ".."):
        return runs_dir / run
    if run.parent.resolve() == runs_dir.resolve():
        return run
    raise ConfigError(
        f"--resume {run} is a path, which --runs-dir {runs_dir} does not hold; --runs-dir "
        f"finds a run given by name: give the name (--resume {run.name} --runs-dir "
        f"{runs_dir}) or drop --runs-dir."
    )


def _check_before_launch(config: RunConfig | None, resume: Path | None, nproc: int) -> None:
    """Every rank would find a bad config or run folder by itself, after all of them had
    started; find it here, once, and say it as one process does."""
    from gradwise.train._distributed import check_resume, check_run

    if config is not None:
        check_run(config)
    elif resume is not None:
        check_resume(resume, nproc)


def _train_distributed(
    content: dict[str, object] | None, resume: Path | None, nproc: int, progress: bool
) -> int:
    """Several processes: launched here (--nproc), or this is one of torchrun's."""
    from gradwise.config import ConfigError
    from gradwise.distributed import RankFailed, launch
    from gradwise.runs import RunFolder, RunFolderError
    from gradwise.train import TrainingDiverged
    from gradwise.train._distributed import in_launched_process, train_launched_rank, train_rank

    where = None if resume is None else str(resume)
    announce = Path(tempfile.mkdtemp(prefix="gradwise-")) / "run"
    try:
        if in_launched_process():
            result = train_rank(content, where, progress)
            if os.environ.get("RANK") != "0":  # torchrun: rank 0 alone reports
                return EXIT_OK
        else:
            result = launch(train_launched_rank, (content, where, progress, str(announce)), nproc)
    except KeyboardInterrupt:
        run = announce.read_text() if announce.is_file() else where
        ended = None if run is None else _ended_status(Path(run))
        if run is None or not RunFolder(Path(run)).last_checkpoint.is_file():
            # Stopped before the first checkpoint (or the run folder): nothing to resume.
            print("gradwise train: interrupted", file=sys.stderr)
        elif ended is not None:
            # Ctrl-C while the processes were shutting down: the run had ended already.
            print(f"gradwise train: interrupted after the run ended ({ended}); run folder: "
                  f"{run}", file=sys.stderr)  # fmt: skip
        else:
            print(f"interrupted; resume with: gradwise train --resume {run} --nproc {nproc}",
                  file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    except (RankFailed, TrainingDiverged) as error:
        if isinstance(error, RankFailed) and error.error_type in (
            ConfigError.__name__,
            RunFolderError.__name__,
        ):
            # What one process says as a usage error (main's), and no resume hint.
            print(f"gradwise train: error: {error.error}", file=sys.stderr)
            return EXIT_USAGE
        print(f"gradwise train: stopped: {error}", file=sys.stderr)
        run = announce.read_text() if announce.is_file() else where
        if run is not None and RunFolder(Path(run)).last_checkpoint.is_file():
            print(f"the last checkpoint stays; continue with: gradwise train --resume {run} "
                  f"--nproc {nproc}", file=sys.stderr)  # fmt: skip
        elif run is not None:  # failed before its first checkpoint: nothing to resume
            print(f"no checkpoint was written: {run} has nothing to resume", file=sys.stderr)
        return EXIT_FAILED
    finally:
        shutil.rmtree(announce.parent, ignore_errors=True)
    return _print_run(result["summary"], Path(result["run"]), result["status"])


def _ended_status(run: Path) -> str | None:
    """The run's final status when its summary says it finished (what ``--resume``
    refuses: completed, early stopped), else None."""
    from gradwise.runs import read_summary
    from gradwise.train._from_config import FINISHED

    try:
        status = read_summary(run).get("status")
    except (OSError, ValueError):
        return None
    return status if status in FINISHED else None


def _print_run(summary: dict[str, object], run: Path, status: str) -> int:
    from gradwise.report import summary_table
    from gradwise.runs import RunFolder

    print(summary_table(summary).render_text())
    print(f"run folder: {run}")
    print(f"report:     {RunFolder(run).report_path}")
    if status == "interrupted":
        print(f"interrupted; resume with: gradwise train --resume {run}")
        return EXIT_INTERRUPTED
    return EXIT_OK


def _doctor(args: argparse.Namespace) -> int:
    from gradwise.config import ConfigError, load_config
    from gradwise.doctor import diagnose
    from gradwise.doctor._report import print_result

    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be an int >= 1. Got {args.epochs} instead.")
    overrides = list(args.overrides)
    if args.runs_dir is not None:
        overrides.append(f"runs_dir={args.runs_dir}")
    config = load_config(args.config, overrides)
    _check_runs_dir(args, config, "doctor")  # before the checks, not after them
    result = diagnose(
        config,
        fix=args.fix,
        checks=not args.no_checks,
        probe_epochs=args.epochs,
        say=lambda message: print(message, file=sys.stderr),
    )
    print_result(result)
    if args.fix and result.after is None and not result.probe_incomplete:
        # --fix was asked for and changed nothing: say so, not silence.
        print("--fix: no finding carries a fix the doctor is confident in; nothing was changed")
    return _doctor_exit_code(result)


def _check_runs_dir(args: argparse.Namespace, config: RunConfig, command: str) -> None:
    """The run folder's parent, checked before any work, named as the user gave it."""
    from gradwise.cli._output import check_output_folder

    where = "--runs-dir" if args.runs_dir is not None else "runs_dir"
    check_output_folder(Path(config.runs_dir), where, command)


def _doctor_exit_code(result: DoctorResult) -> int:
    """Interrupted: as ``gradwise train``; a probe that did not finish and found nothing: 1."""
    for probe in (result, result.after):
        if probe is None:
            continue
        if probe.probe_status == "interrupted":
            return EXIT_INTERRUPTED
        if probe.probe_incomplete or (probe.probe_status == "diverged" and not probe.findings):
            return EXIT_FAILED
    return EXIT_OK


def _config(args: argparse.Namespace) -> int:
    from gradwise.config import dump_config, load_config
    from gradwise.train import prepare_run

    config = load_config(args.config, args.overrides)
    if args.config is not None or args.overrides:
        # Build it as gradwise train does (names, arguments, data), so that what is printed
        # is a config train accepts; on the CPU: the device is the machine's, not the
        # config's. The default config builds (it is the default run); building it would
        # only cost its data (MNIST-1D: ~2.4 s).
        prepare_run(replace(config, device="cpu")).warn_preprocessing()
    print(dump_config(config), end="")
    return EXIT_OK


def _runs(args: argparse.Namespace) -> int:
    from gradwise.report import runs_table
    from gradwise.runs import RunFolderError, list_runs

    # list_runs takes a missing folder as an empty one. A --runs-dir that is not a folder
    # is most likely mistyped (or the command was run from another folder), which "no
    # runs" would hide; the default folder is missing until the first run, but a file in
    # its place is an error too (list_runs would call it empty, and train cannot write there).
    runs_dir = args.runs_dir or Path("runs")
    given = args.runs_dir is not None
    if not runs_dir.is_dir() and (given or runs_dir.exists()):
        what = "it is a file" if runs_dir.exists() else "the folder does not exist"
        fix = "Pass" if given else "Move that file out of the way, or pass"
        raise RunFolderError(
            f"no runs folder at {runs_dir}: {what}. {fix} the folder that holds the run "
            "folders with --runs-dir DIR (gradwise train writes them to runs/ by default)."
        )
    runs = list_runs(runs_dir)
    if not runs:
        print(f"no runs in {runs_dir}")
        return EXIT_OK
    print(runs_table(runs).render_text())
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from gradwise.report import build_report
    from gradwise.runs import RunFolder

    print(build_report(RunFolder.open(args.run)))
    return EXIT_OK
