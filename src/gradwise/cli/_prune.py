"""``gradwise prune CONFIG --rounds N --rate p``: lottery tickets, one run folder per round."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_INTERRUPTED = 130


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the ``prune`` subcommand."""
    parser = commands.add_parser(
        "prune",
        help="iterative magnitude pruning: lottery tickets and random-reinit controls",
        description="Train CONFIG dense, then ROUNDS times: prune RATE of the remaining "
        "weights by magnitude, rewind the survivors to their values at --rewind-step, and "
        "retrain (the winning ticket), with the same masks on a fresh initialization as the "
        "control. Each run is a normal run folder; re-running the same command continues.",
    )
    parser.add_argument("config", nargs="?", type=Path, help="a .yaml or .toml run config")
    parser.add_argument("--rounds", type=int, required=True, help="pruning rounds (>= 1)")
    parser.add_argument(
        "--rate", type=float, required=True, help="fraction of remaining weights pruned per round"
    )
    parser.add_argument(
        "--rewind-step", type=int, default=0, metavar="K",
        help="rewind survivors to their values after K steps of the dense run (default 0: init)",
    )  # fmt: skip
    parser.add_argument(
        "--scope", choices=("global", "layer"), default="global",
        help="rank magnitudes over all layers or per layer (default global)",
    )  # fmt: skip
    parser.add_argument(
        "--output-rate", type=float, metavar="Q",
        help="also prune the output layer at this rate per round (default: keep it dense)",
    )  # fmt: skip
    parser.add_argument("--no-control", action="store_true", help="skip the random-reinit runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--runs-dir", type=Path, help="where the prune folder goes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run_prune)


def run_prune(args: argparse.Namespace) -> int:
    """Run (or continue) the rounds and print the table; the exit code."""
    from gradwise.cli._output import check_output_folder
    from gradwise.config import load_config
    from gradwise.prune._procedure import PruneSettings, check_settings, find_tickets
    from gradwise.prune._report import prune_table

    settings = PruneSettings(
        rounds=args.rounds,
        rate=args.rate,
        rewind_step=args.rewind_step,
        scope=args.scope,
        output_rate=args.output_rate,
        control=not args.no_control,
    )
    check_settings(settings)  # before the config is even read
    overrides = list(args.overrides)
    if args.runs_dir is not None:
        overrides.append(f"runs_dir={args.runs_dir}")
    config = load_config(args.config, overrides)
    where = "--runs-dir" if args.runs_dir is not None else "runs_dir"
    check_output_folder(Path(config.runs_dir), where, "prune")
    result = find_tickets(config, settings, progress=not args.no_progress, say=_say)
    if result.rows:
        print(prune_table(result.rows).render_text())
    else:  # stopped before its first run, the dense round-0, finished: no table to show
        print("no run finished: the prune stopped before round-0 (the dense run) ended")
    print(f"prune folder: {result.folder}")
    if result.report is not None:
        print(f"report:       {result.report}")
    if result.interrupted:
        print("interrupted; run the same command again to continue")
        return EXIT_INTERRUPTED
    return EXIT_OK


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
