"""``gradwise lr-find CONFIG``: the LR range test on a configured run (no schedule)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

EXIT_OK = 0


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the ``lr-find`` subcommand."""
    parser = commands.add_parser(
        "lr-find",
        help="LR range test: sweep the learning rate up and suggest one",
        description="Build the run of CONFIG (data, model, optimizer; no schedule), sweep the "
        "learning rate exponentially over training minibatches (Smith 2017), print the "
        "steepest-descent and min-loss/10 rates with the suggestion, and write the plot.",
    )
    parser.add_argument("config", nargs="?", type=Path, help="a .yaml or .toml run config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--start", type=float, default=1e-7, help="first lr (default 1e-7)")
    parser.add_argument("--end", type=float, default=10.0, help="last lr (default 10)")
    parser.add_argument("--steps", type=int, default=100, help="sweep steps (default 100)")
    parser.add_argument(
        "--sweeps",
        type=int,
        default=5,
        help="sweeps averaged, in different batch orders (default 5)",
    )
    parser.add_argument(
        "--out", type=Path, help="the plot's PNG path (default runs/lr-find-<name>.png)"
    )
    parser.set_defaults(handler=run_lr_find)


def run_lr_find(args: argparse.Namespace) -> int:
    """Run the sweep of ``args.config``; ConfigError for a bad config or sweep setting."""
    from gradwise.cli._output import check_output_file, check_output_folder
    from gradwise.config import ConfigError, load_config
    from gradwise.lr_finder import lr_find
    from gradwise.train import prepare_run

    _check_sweep(args)
    config = load_config(args.config, args.overrides)
    out = args.out
    if out is None:
        name = config.name or Path(config.data.dataset).stem + "-" + config.model.name
        out = Path(config.runs_dir) / f"lr-find-{name}.png"
        # The default path's folder came from runs_dir: a problem there is named so.
        check_output_folder(out.parent, "runs_dir", "lr-find")
    check_output_file(out, "--out", "lr-find")  # before the sweep, not after it
    _check_plot_suffix(out)
    prepared = prepare_run(replace(config, schedule=None))
    prepared.warn_preprocessing()
    try:
        result = lr_find(
            prepared.model,
            prepared.optimizer,
            prepared.data.train,
            loss_fn=config.loss,
            start_lr=args.start,
            end_lr=args.end,
            num_steps=args.steps,
            seed=config.seed,
            num_sweeps=args.sweeps,
            batch_size=config.data.batch_size,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    print(result.to_table().render_text())
    print()
    print(result.reasoning)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(result.plot_png())
    print(f"suggested lr: {result.suggestion:.3g}")
    print(f"plot: {out}")
    return EXIT_OK


def _check_plot_suffix(out: Path) -> None:
    """The plot is PNG bytes (LRFinderResult.plot_png): a file named otherwise would hold a
    PNG that its name calls something else."""
    from gradwise.config import ConfigError

    if out.suffix.lower() != ".png":
        what = f"its suffix is {out.suffix!r}" if out.suffix else "it has no suffix"
        raise ConfigError(
            f"The '--out' option of gradwise lr-find must be a path ending in .png (the plot "
            f"is written as a PNG image). Got {str(out)!r} instead: {what}. Use e.g. "
            f"{str(out.with_name(out.stem.rstrip('.') + '.png'))!r}."
        )


def _check_sweep(args: argparse.Namespace) -> None:
    """The sweep's options, checked before anything is built (one line on the terminal)."""
    from gradwise._validation import POSITIVE, Interval, check
    from gradwise.config import ConfigError

    owner = "gradwise lr-find"
    try:
        check("--start", owner, args.start, POSITIVE)
        check("--end", owner, args.end, Interval(low=args.start, low_closed=False, finite=True))
        check("--steps", owner, args.steps, Interval(low=3, kind="int"))
        check("--sweeps", owner, args.sweeps, Interval(low=1, kind="int"))
    except ValueError as error:
        raise ConfigError(str(error)) from None
