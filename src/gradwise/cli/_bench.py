"""``gradwise bench unit-tests|surfaces|profiles``: the optimizer benchmarks, as tables."""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradwise.bench import Tuned

EXIT_OK = 0


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``bench`` with its ``unit-tests``, ``surfaces`` and ``profiles`` forms."""
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
    _add_profiles_parser(kinds)


def _add_profiles_parser(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    profiles = kinds.add_parser(
        "profiles",
        help="performance profiles of steps-to-target (Dolan & More; AlgoPerf's score)",
        description="Steps to the target on the classic surfaces and on quadratic_deep "
        "(one problem per test-loss target), each optimizer at its best rate of the grid, "
        "summarized as performance profiles rho(tau) and AlgoPerf's area score.",
    )
    _add_optimizers(profiles)
    profiles.add_argument(
        "--surfaces", default=None,
        help="comma-separated gradwise.viz surfaces (default: the six of bench surfaces, "
        "gradwise.bench.BENCHMARK_SURFACES; '' for none)",
    )  # fmt: skip
    profiles.add_argument("--tolerance", type=float, default=1e-3, help="default 1e-3")
    profiles.add_argument("--max-steps", type=int, default=2000, help="default 2000")
    profiles.add_argument(
        "--quadratic-deep-epochs", type=int, default=20,
        help="epochs of quadratic_deep (7 steps each; default 20, 0 to skip it); its rates "
        "are tuned on 1e-4 to 1, two per decade",
    )  # fmt: skip
    profiles.add_argument(
        "--quadratic-deep-gaps", default="0.1,0.03,0.01",
        help="targets as floor + gap x (initial loss - floor), comma-separated "
        "(default 0.1,0.03,0.01)",
    )  # fmt: skip
    profiles.add_argument("--tau-max", type=float, default=4.0, help="default 4 (AlgoPerf)")
    profiles.add_argument("--out", type=Path, help="folder for profiles.png and profiles.json")
    profiles.set_defaults(handler=run_profiles)


def _add_optimizers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--optimizers", default="SGD,Momentum,Adam",
        help="comma-separated names (default SGD,Momentum,Adam), from "
        "gradwise.bench.OPTIMIZER_NAMES",
    )  # fmt: skip


def _optimizers(args: argparse.Namespace, benchmark: str) -> dict[str, Tuned]:
    from gradwise.bench import tuned_optimizers

    _check_optimizers(args, benchmark)
    return dict(tuned_optimizers(_names(args.optimizers)))


def _check_optimizers(args: argparse.Namespace, benchmark: str) -> None:
    from gradwise.bench import OPTIMIZER_NAMES

    names = _names(args.optimizers)
    _check_names("--optimizers", benchmark, names, OPTIMIZER_NAMES, args.optimizers)
    if not names:
        _refuse_names("--optimizers", benchmark, OPTIMIZER_NAMES, args.optimizers, "none")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _check_names(
    option: str, benchmark: str, names: list[str], known: tuple[str, ...], text: str
) -> None:
    """ConfigError naming the flag when ``names`` holds one not in ``known``."""
    unknown = [name for name in names if name not in known]
    if unknown:
        _refuse_names(option, benchmark, known, text, "unknown: " + ", ".join(unknown))


def _refuse_names(
    option: str, benchmark: str, known: tuple[str, ...], text: str, problem: str
) -> None:
    from gradwise.config import ConfigError

    raise ConfigError(
        f"The '{option}' option of gradwise bench {benchmark} must be comma-separated names "
        f"from {', '.join(known)}. Got {text!r} instead ({problem})."
    )


def run_unit_tests(args: argparse.Namespace) -> int:
    """Score the optimizers on the unit tests; print the table, write the grid."""
    from gradwise.bench import UNIT_TEST_NAMES, score_optimizers
    from gradwise.config import ConfigError

    _check_options(
        "unit-tests",
        {"--steps": (args.steps, 1), "--runs": (args.runs, 1), "--seed": (args.seed, 0)},
    )
    optimizers = _optimizers(args, "unit-tests")
    tests = [name for name in UNIT_TEST_NAMES if args.tests in name]
    if not tests:
        raise ConfigError(
            "The '--tests' option of gradwise bench unit-tests must be part of a test name "
            f"(e.g. 'dim=2'; the names are gradwise.bench.UNIT_TEST_NAMES). Got {args.tests!r} "
            "instead, which is part of none."
        )
    _check_out(args, "unit-tests")
    with _as_config_errors():
        result = score_optimizers(
            optimizers,
            tests,
            num_steps=args.steps,
            num_runs=args.runs,
            seed=args.seed,
        )
    _show_table(result.to_table(), args.out, "scores.json")
    if args.out is not None:
        print(f"grid: {result.write_grid(args.out / 'scores.png')}")
    return EXIT_OK


def run_surfaces(args: argparse.Namespace) -> int:
    """Count the optimizers' steps to the surfaces' minima; print the table."""
    from gradwise.bench import surface_benchmark

    _check_options("surfaces", {"--max-steps": (args.max_steps, 1)})
    _check_tolerance(args.tolerance, "surfaces")
    optimizers = _optimizers(args, "surfaces")
    _check_out(args, "surfaces")
    with _as_config_errors():
        result = surface_benchmark(
            optimizers,
            tolerance=args.tolerance,
            max_steps=args.max_steps,
        )
    _show_table(result.to_table(), args.out, "surfaces.json")
    return EXIT_OK


def _check_options(benchmark: str, ints: dict[str, tuple[int, int]]) -> None:
    """Each ``option: (value, low)`` an int >= low, named by its flag (before any work)."""
    from gradwise.config import ConfigError

    for option, (value, low) in ints.items():
        if value < low:
            raise ConfigError(
                f"The '{option}' option of gradwise bench {benchmark} must be an int >= {low}. "
                f"Got {value} instead."
            )


def _check_profile_options(args: argparse.Namespace) -> None:
    """Every option of ``bench profiles``, before the surface benchmark runs (~10 s)."""
    from gradwise.config import ConfigError

    owner = "gradwise bench profiles"
    epochs = args.quadratic_deep_epochs
    _check_options(
        "profiles", {"--max-steps": (args.max_steps, 1), "--quadratic-deep-epochs": (epochs, 0)}
    )
    if not (args.tau_max > 1 and math.isfinite(args.tau_max)):
        raise ConfigError(
            f"The '--tau-max' option of {owner} must be a finite float > 1. "
            f"Got {args.tau_max} instead."
        )
    _check_tolerance(args.tolerance, "profiles")
    if args.surfaces is not None:
        from gradwise.viz import SURFACE_NAMES

        _check_names("--surfaces", "profiles", _names(args.surfaces), SURFACE_NAMES, args.surfaces)
    _check_optimizers(args, "profiles")
    gaps = _numbers("--quadratic-deep-gaps", args.quadratic_deep_gaps)
    if args.quadratic_deep_epochs > 0 and not (gaps and all(0 < gap < 1 for gap in gaps)):
        raise ConfigError(
            f"The '--quadratic-deep-gaps' option of {owner} must be numbers in (0, 1). Got "
            f"{args.quadratic_deep_gaps!r} instead: a target is floor + gap x (initial loss - "
            "floor), so 1 or more is reached at step 0 and 0 or less never."
        )
    if args.quadratic_deep_epochs > 0 and len(set(gaps)) != len(gaps):
        raise ConfigError(
            f"The '--quadratic-deep-gaps' option of {owner} must be distinct numbers (each "
            f"is a problem). Got {args.quadratic_deep_gaps!r} instead."
        )


def _check_tolerance(tolerance: float, benchmark: str) -> None:
    from gradwise.config import ConfigError

    if not (tolerance > 0 and math.isfinite(tolerance)):
        raise ConfigError(
            f"The '--tolerance' option of gradwise bench {benchmark} must be a finite float "
            f"> 0. Got {tolerance} instead."
        )


def _check_out(args: argparse.Namespace, benchmark: str) -> None:
    """``--out``, made and checked before the benchmark runs (not after)."""
    from gradwise.cli._output import check_output_folder

    if args.out is not None:
        check_output_folder(args.out, "--out", f"bench {benchmark}")


@contextlib.contextmanager
def _as_config_errors() -> Iterator[None]:
    """A bad argument found by the benchmark (a ValueError) is a one-line CLI error."""
    from gradwise.config import ConfigError

    try:
        yield
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _show_table(table: Any, out: Path | None, json_name: str) -> None:
    """Print ``table``; with ``--out``, also write it as JSON there."""
    print(table.render_text())
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / json_name).write_text(table.to_json(indent=1))


def _numbers(option: str, text: str) -> list[float]:
    from gradwise.config import ConfigError

    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"The '{option}' option must be comma-separated numbers. Got {text!r} instead."
        ) from None


def _profile_steps(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Problem -> optimizer -> steps to the target, from the surfaces and quadratic_deep."""
    from gradwise.bench import (
        BENCHMARK_SURFACES,
        make_quadratic_deep,
        quadratic_deep_steps,
        surface_benchmark,
        surface_steps,
    )

    optimizers = _optimizers(args, "profiles")
    steps: dict[str, dict[str, float]] = {}
    surfaces = list(BENCHMARK_SURFACES) if args.surfaces is None else _names(args.surfaces)
    if surfaces:
        results = surface_benchmark(
            optimizers, surfaces, tolerance=args.tolerance, max_steps=args.max_steps
        )
        steps.update(surface_steps(results))
    if args.quadratic_deep_epochs > 0:
        problem = make_quadratic_deep(num_epochs=args.quadratic_deep_epochs)
        initial, floor = problem.test_loss(problem.start), problem.noise_floor
        gaps = _numbers("--quadratic-deep-gaps", args.quadratic_deep_gaps)
        targets = [floor + gap * (initial - floor) for gap in gaps]
        grid = tuple(10.0 ** (k / 2) for k in range(-8, 1))  # 1e-4 to 1, 2 per decade
        steps.update(
            quadratic_deep_steps(optimizers, targets, problem=problem, learning_rates=grid)
        )
    return steps


def run_profiles(args: argparse.Namespace) -> int:
    """Steps to the targets, then the performance profiles; print both tables."""
    from gradwise.bench import PROFILE_TAUS, performance_profiles
    from gradwise.config import ConfigError

    _check_profile_options(args)
    _check_out(args, "profiles")
    with _as_config_errors():
        steps = _profile_steps(args)
        if not steps:
            raise ConfigError(
                "The '--surfaces' option and '--quadratic-deep-epochs' leave no problem: "
                "name a surface or give quadratic_deep epochs > 0."
            )
        taus = tuple(tau for tau in PROFILE_TAUS if tau <= args.tau_max)
        profiles = performance_profiles(steps, taus=taus or (1.0,), tau_max=args.tau_max)
    print(profiles.ratio_table().render_text())
    print()
    _show_table(profiles.to_table(), args.out, "profiles.json")
    if args.out is not None:
        print(f"plot: {profiles.write_plot(args.out / 'profiles.png')}")
    return EXIT_OK
