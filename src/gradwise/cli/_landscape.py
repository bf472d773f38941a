"""``gradwise landscape RUN``: loss-landscape plots of a trained run, written into its folder."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

KINDS = ("interpolate", "1d", "2d", "all")


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``gradwise landscape`` on the CLI's subcommands."""
    landscape = commands.add_parser(
        "landscape",
        help="plot a run's loss landscape (interpolation from init, random-direction slices)",
        description="Rebuild RUN's model from its config (the initialization, by its seed), "
        "load its last checkpoint (the final weights), and plot the training loss on a fixed "
        "subset of the training split: along the line from init to final (--kind "
        "interpolate), along one or two filter-normalized random directions around the final "
        "weights (1d, 2d). Writes landscape-*.png into RUN, rebuilds RUN's report.html "
        "(which shows them), and prints their paths and the report's.",
    )
    landscape.add_argument("run", type=Path, help="a run folder")
    landscape.add_argument("--kind", choices=KINDS, default="all", help="default: all")
    landscape.add_argument(
        "--resolution", type=int, default=None,
        help="points per axis (default: 25 for interpolate, 21 for 1d and 2d)",
    )  # fmt: skip
    landscape.add_argument(
        "--subset", type=int, default=512, help="training samples the loss is averaged over"
    )
    landscape.add_argument("--span", type=float, default=1.0, help="slice half-width (1d, 2d)")
    landscape.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    landscape.set_defaults(handler=run_landscape)


def run_landscape(args: argparse.Namespace) -> int:
    """Compute the requested landscapes of ``args.run``, write their PNGs and rebuild the
    run's report, which shows them."""
    import torch

    from gradwise.config import ConfigError
    from gradwise.report import build_report
    from gradwise.runs import RunFolder, RunFolderError
    from gradwise.runs._files import describe_os_error

    for name, low in (("resolution", 2), ("subset", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise ConfigError(f"--{name} must be an int >= {low}. Got {value} instead.")
    if not 0 < args.span < math.inf:
        raise ConfigError(f"--span must be a finite float > 0. Got {args.span} instead.")
    if not 0 <= args.seed < 2**64:
        raise ConfigError(f"--seed must be an int in [0, 2**64 - 1]. Got {args.seed} instead.")
    folder, model, init, data, loss = _load_run(args.run, args.subset)
    # Past its dtype's range a grid coordinate would be inf, and every loss NaN.
    largest = min((torch.finfo(p.dtype).max for p in model.parameters()), default=math.inf)
    if args.span > largest:
        raise ConfigError(
            f"--span must be at most {largest:.4g}, the largest value of the model's "
            f"parameters' dtype. Got {args.span} instead; use a span of a few units."
        )
    paths = []
    for file_name, png in _landscapes(args, model, init, data, loss):
        path = folder / file_name
        try:
            path.write_bytes(png)
        except OSError as error:  # the folder was checked; this is what changed since
            raise RunFolderError(
                f"Could not write the landscape plot {path}: {describe_os_error(error)}."
            ) from error
        paths.append(path)
    for path in paths:
        print(path)
    print(build_report(RunFolder.open(folder)))
    return 0


def _load_run(run: Path, subset: int) -> tuple[Path, Any, dict[str, Any], Any, Any]:
    """The run's model at its final weights, its init state_dict, a data subset, the loss."""
    import torch

    from gradwise.cli._output import check_output_folder
    from gradwise.config import ConfigError, parse_config, read_file
    from gradwise.losses import get_loss
    from gradwise.runs import RunFolder
    from gradwise.train import load_checkpoint, prepare_run
    from gradwise.train._from_config import saved_preprocessing

    if run.exists() and not run.is_dir():
        raise ConfigError(
            f"{run} is a file, not a run folder. Pass the folder of a run, e.g. runs/<name> "
            "(gradwise runs lists them)."
        )
    folder = RunFolder.open(run)
    if not folder.last_checkpoint.is_file():
        raise ConfigError(
            f"{folder.path} has no final weights to plot (no {folder.last_checkpoint}); "
            "train it first."
        )
    # The plots go into the run folder: find out now, not after computing them.
    check_output_folder(
        folder.path, "RUN", "landscape",
        fix="Make it writable: the plots and report.html are written into it.",
    )  # fmt: skip
    config = parse_config(read_file(folder.config_path))
    # The model at its initialization (config.seed), fed as it was trained.
    prepared = prepare_run(config, preprocessing=saved_preprocessing(folder))
    model = prepared.model
    # The whole state (batch norm's running statistics too), so that the line starts at
    # the init's loss; its parameters alone would be evaluated with the final statistics.
    init = {name: value.detach().clone() for name, value in model.state_dict().items()}
    try:
        contents = load_checkpoint(folder.last_checkpoint, map_location=prepared.device)
        model.load_state_dict(contents["model"])
    except (ValueError, KeyError, RuntimeError) as error:
        raise ConfigError(f"cannot load the final weights of {folder.path}: {error}") from error
    train = prepared.data.train
    # A fixed, seeded random subset: some splits are ordered by class.
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed))
    data = train.subset(order[:subset])
    return folder.path, model, init, data, get_loss(config.loss)


def _landscapes(
    args: argparse.Namespace, model: Any, init: dict[str, Any], data: Any, loss: Any
) -> list[tuple[str, bytes]]:
    from gradwise.landscape import interpolate, random_directions, slice_1d, slice_2d

    kinds = ("interpolate", "1d", "2d") if args.kind == "all" else (args.kind,)
    final = {name: value.detach().clone() for name, value in model.state_dict().items()}
    resolution = args.resolution
    pictures = []
    if "interpolate" in kinds:
        line = interpolate(model, init, final, loss, data, num_points=resolution or 25)
        pictures.append(("landscape-interpolate.png", line.plot_png()))
    if "1d" in kinds:
        (direction,) = random_directions(model, num=1, seed=args.seed)
        curve = slice_1d(model, loss, data, direction, args.span, resolution or 21)
        pictures.append(("landscape-1d.png", curve.plot_png()))
    if "2d" in kinds:
        directions = random_directions(model, num=2, seed=args.seed)
        surface = slice_2d(model, loss, data, directions, args.span, resolution or 21)
        pictures.append(("landscape-2d-contour.png", surface.plot_contour_png()))
        pictures.append(("landscape-2d-surface.png", surface.plot_surface_png()))
    return pictures
