"""``gradwise bench unit-tests|surfaces``: the optimizer benchmarks, printed as tables."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gradwise.bench import Tuned

EXIT_OK = 0


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the ``bench`` subcommand with its ``unit-tests`` and ``surfaces`` forms."""
    parser = commands.add_parser(
        "bench",
        help="optimizer benchmarks: Schaul et al.'s unit tests, classic surfaces",
        description="Score optimizers (each with its learning rate tuned on a log grid) on "
        "Schaul et al.'s (2014) unit tests against tuned SGD, or count their steps to a "
        "known minimum of the classic 2-D surfaces.",
    )
    kinds = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    units = kinds.add_parser("unit-tests", help="Schaul et al. (2014) unit tests")
    _add_optimizers(units)
    units.add_argument("--tests", default="", help="only tests whose name contains this")
    units.add_argument("--steps", type=int, default=100, help="steps per run (default 100)")
    units.add_argument("--runs", type=int, default=10, help="runs per test (default 10)")
    units.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    units.add_argument("--out", type=Path, help="folder for scores.png and scores.json")
    units.set_defaults(handler=run_unit_tests)
    surfaces = kinds.add_parser("surfaces", help="steps to a known minimum on 2-D surfaces")
    _add_optimizers(surfaces)
    surfaces.add_argument("--tolerance", type=float, default=1e-3, help="default 1e-3")
    surfaces.add_argument("--max-steps", type=int, default=2000, help="default 2000")
    surfaces.add_argument("--out", type=Path, help="folder for surfaces.json")
    surfaces.set_defaults(handler=run_surfaces)


def _add_optimizers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--optimizers", default="SGD,Momentum,Adam",
        help="comma-separated names (default SGD,Momentum,Adam), from "
        "gradwise.bench.OPTIMIZER_NAMES",
    )  # fmt: skip


def _optimizers(args: argparse.Namespace) -> dict[str, Tuned]:
    from gradwise.bench import tuned_optimizers
    from gradwise.config import ConfigError

    names = [name.strip() for name in args.optimizers.split(",") if name.strip()]
    try:
        return dict(tuned_optimizers(names))
    except ValueError as error:
        raise ConfigError(
            str(error).replace("'names' parameter", "'--optimizers' option")
        ) from None


def run_unit_tests(args: argparse.Namespace) -> int:
    """Score the optimizers on the unit tests; print the table, write the grid."""
    from gradwise.bench import UNIT_TEST_NAMES, score_optimizers
    from gradwise.config import ConfigError

    optimizers = _optimizers(args)
    tests = [name for name in UNIT_TEST_NAMES if args.tests in name]
    try:
        result = score_optimizers(
            optimizers,
            tests,
            num_steps=args.steps,
            num_runs=args.runs,
            seed=args.seed,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    table = result.to_table()
    print(table.render_text())
    if args.out is not None:
        print(f"grid: {result.write_grid(args.out / 'scores.png')}")
        (args.out / "scores.json").write_text(table.to_json(indent=1))
    return EXIT_OK


def run_surfaces(args: argparse.Namespace) -> int:
    """Count the optimizers' steps to the surfaces' minima; print the table."""
    from gradwise.bench import surface_benchmark
    from gradwise.config import ConfigError

    optimizers = _optimizers(args)
    try:
        result = surface_benchmark(
            optimizers,
            tolerance=args.tolerance,
            max_steps=args.max_steps,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    table = result.to_table()
    print(table.render_text())
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "surfaces.json").write_text(table.to_json(indent=1))
    return EXIT_OK
