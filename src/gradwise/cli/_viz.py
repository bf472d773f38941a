"""``gradwise viz``: optimizers' trajectories on a 2-D test surface, as a PNG and a GIF."""

from __future__ import annotations

import argparse
import inspect
import math
from functools import partial
from pathlib import Path

import torch

from gradwise import optim
from gradwise.cli._output import check_output_folder
from gradwise.config import ConfigError

DEFAULT_OPTIMIZERS = "SGD,Adam"


def optimizer_names() -> tuple[str, ...]:
    """The gradwise.optim classes that ``--optimizers`` accepts (gradient-based, lr first)."""
    names = []
    for name in optim.__all__:
        value = getattr(optim, name)
        if (
            inspect.isclass(value)
            and issubclass(value, torch.optim.Optimizer)
            and value is not optim.Optimizer
            and "lr" in inspect.signature(value).parameters
        ):
            names.append(name)
    return tuple(sorted(names))


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``gradwise viz`` on the CLI's subcommands."""
    from gradwise.viz import SURFACE_NAMES

    viz = commands.add_parser(
        "viz",
        help="plot optimizers' trajectories on a 2-D test surface (PNG, and a GIF with --gif)",
        description="Run gradwise optimizers from one start point on a test surface and draw "
        "their trajectories over its contour lines.",
    )
    viz.add_argument("--surface", default="rosenbrock", choices=SURFACE_NAMES,
                     help="the test surface (default: rosenbrock)")  # fmt: skip
    viz.add_argument(
        "--optimizers",
        default=DEFAULT_OPTIMIZERS,
        metavar="NAMES",
        help=f"comma-separated gradwise.optim classes (default: {DEFAULT_OPTIMIZERS}); "
        f"one of {', '.join(optimizer_names())}",
    )
    viz.add_argument(
        "--lr",
        default=None,
        metavar="LR[,LR...]",
        help="one learning rate for all, or one per optimizer (default: the surface's stable "
        "gradient-descent step)",
    )
    viz.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    viz.add_argument("--start", default=None, metavar="X,Y", help="start point (default: the "
                     "surface's); write a negative one with '=': --start=-1.2,1")  # fmt: skip
    viz.add_argument("--out", type=Path, default=Path("."), help="output folder (default: .)")
    viz.add_argument("--gif", action="store_true", help="also write an animated GIF")
    viz.set_defaults(handler=run_viz)


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"{option} must be comma-separated numbers. Got {text!r} instead."
        ) from None


def _optimizer_factories(
    names_text: str, lr_text: str | None, default_lr: float
) -> dict[str, partial[torch.optim.Optimizer]]:
    names = [name.strip() for name in names_text.split(",") if name.strip()]
    allowed = optimizer_names()
    unknown = [name for name in names if name not in allowed]
    if not names or unknown:
        raise ConfigError(
            f"--optimizers must name gradwise.optim classes, one of {', '.join(allowed)}. "
            f"Got {names_text!r} instead."
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(
            f"--optimizers names {', '.join(repeated)} twice; name each optimizer once (give "
            "one lr per optimizer with --lr to compare rates)."
        )
    rates = [default_lr] if lr_text is None else _floats(lr_text, "--lr")
    if len(rates) not in (1, len(names)) or any(
        not (rate > 0 and math.isfinite(rate)) for rate in rates
    ):
        raise ConfigError(
            f"--lr must be one positive number, or one per optimizer ({len(names)}). "
            f"Got {lr_text!r} instead."
        )
    rates = rates * len(names) if len(rates) == 1 else rates
    return {
        f"{name} (lr={rate:g})": partial(getattr(optim, name), lr=rate)
        for name, rate in zip(names, rates, strict=True)
    }


def run_viz(args: argparse.Namespace) -> int:
    """Run the optimizers, write ``<surface>_trajectories.png`` (and ``.gif``), print where."""
    from gradwise.viz import animate_trajectories, get_surface, plot_trajectories, run_optimizers

    surface = get_surface(args.surface)
    optimizers = _optimizer_factories(args.optimizers, args.lr, surface.learning_rate)
    start = surface.start if args.start is None else _floats(args.start, "--start")
    if len(start) != 2 or not all(math.isfinite(value) for value in start):
        raise ConfigError(f"--start must be two numbers X,Y. Got {args.start!r} instead.")
    if args.steps < 1:
        raise ConfigError(f"--steps must be an integer >= 1. Got {args.steps} instead.")
    check_output_folder(args.out, "--out", "viz")
    try:
        trajectories = run_optimizers(surface, optimizers, start=start, num_steps=args.steps)
    except ValueError as error:  # a hyperparameter the optimizer rejects
        raise ConfigError(str(error)) from None
    args.out.mkdir(parents=True, exist_ok=True)
    for trajectory in trajectories:
        x, y = trajectory.final_point
        ending = f"; stopped: {trajectory.stop_reason}" if trajectory.diverged else ""
        print(f"{trajectory.name}: ({x:.6g}, {y:.6g}), f = {trajectory.final_value:.6g}{ending}")
    png = args.out / f"{surface.name}_trajectories.png"
    plot_trajectories(surface, trajectories, png)
    print(f"plot: {png}")
    if args.gif:
        gif = animate_trajectories(
            surface, trajectories, args.out / f"{surface.name}_trajectories.gif"
        )
        print(f"animation: {gif}")
    return 0
