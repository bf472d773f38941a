"""Checkpoints: written atomically, read without executing code from the file."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from gradwise.runs import RunFolderError, replace_atomically

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, contents: Mapping[str, Any]) -> None:
    """Write ``contents`` to ``path`` so that a crash leaves either the old or the new file.

    The file is written next to its destination, flushed to disk, then renamed over it
    (:func:`gradwise.runs.replace_atomically`); a SIGKILL or power loss mid-write never
    leaves a truncated checkpoint behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda file: torch.save({"format": FORMAT_VERSION, **contents}, file))


def copy_checkpoint(source: str | Path, destination: str | Path) -> None:
    """Copy a written checkpoint's bytes to ``destination``, as atomically as
    :func:`save_checkpoint` writes."""
    data = Path(source).read_bytes()
    replace_atomically(Path(destination), lambda file: file.write(data))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: tensors and plain data, never code.

    A gradwise optimizer writes a schedule in its param groups (``lr=cosine_decay(...)``)
    as plain data, which ``torch.load`` reads as it is. Checkpoints written before that
    hold the schedule objects themselves; gradwise's own schedule classes are allowed
    here so that they still load. A user's function or class still needs torch's own
    allowlisting.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with torch.serialization.safe_globals(_schedule_classes()):
            contents = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, KeyError) as error:
        if "Unsupported global" in str(error):
            raise  # readable, but it names classes or code: torch's message says what to do
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise RunFolderError(
            f"{path} cannot be read as a checkpoint ({type(error).__name__}: {first_line}); "
            "the file is truncated or damaged. Resume from an earlier copy, or start the run "
            "again."
        ) from error
    if not isinstance(contents, dict) or contents.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"{path} is not a gradwise checkpoint of format {FORMAT_VERSION}; "
            "it was written by another program or another gradwise version."
        )
    return contents


def _schedule_classes() -> list[Callable[..., Any] | tuple[Callable[..., Any], str]]:
    """Every schedule class gradwise defines, for checkpoints that hold schedule objects."""
    from gradwise.schedules._plain_data import schedule_kinds

    return list(schedule_kinds().values())
