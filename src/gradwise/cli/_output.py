"""Output paths checked before a command's work starts, so a bad one is a one-line error."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from gradwise.config import ConfigError
from gradwise.runs._files import describe_os_error


def check_output_folder(
    path: Path, option: str, command: str, *, fix: str = "Pick another folder."
) -> None:
    """Check that the folder ``path`` exists or can be made, and can be written.

    ``option`` names where the path came from: a flag (``--out``), a config setting
    (``runs_dir``, when no flag gave the path) or a positional argument (``RUN``); ``fix``
    ends the message.

    Raises:
        ConfigError: ``path`` is a file, cannot be made, or cannot be written.
    """
    problem = "it is a file" if path.exists() and not path.is_dir() else _make_folder(path)
    if problem is not None:
        raise ConfigError(
            f"The '{option}' {_kind(option)} of gradwise {command} must be a folder that can "
            f"be written. Got {str(path)!r} instead: {problem}. {fix}"
        )


def check_output_file(path: Path, option: str, command: str) -> None:
    """Check that the file ``path`` can be written, making its folder if missing.

    Raises:
        ConfigError: ``path`` is a folder, or its folder is a file, cannot be made or
            cannot be written.
    """
    problem = None
    if path.is_dir():
        problem = f"it is a folder. Name a file in it, e.g. {str(path / 'plot.png')!r}"
    elif path.parent.exists() and not path.parent.is_dir():
        problem = f"{str(path.parent)!r} is a file, not a folder"
    else:
        problem = _make_folder(path.parent)
        if problem is None and path.exists() and not os.access(path, os.W_OK):
            problem = "permission denied"
        elif problem is not None:
            problem = f"its folder {str(path.parent)!r}: {problem}"
    if problem is not None:
        raise ConfigError(
            f"The '{option}' {_kind(option)} of gradwise {command} must be a file path that "
            f"can be written. Got {str(path)!r} instead: {problem}."
        )


def _kind(option: str) -> str:
    """What ``option`` is on the command line: ``--out`` an option, ``RUN`` an argument,
    ``runs_dir`` a config setting (set in CONFIG or with --set)."""
    if option.startswith("-"):
        return "option"
    return "argument" if option.isupper() else "setting"


def _make_folder(path: Path) -> str | None:
    """Why ``path`` cannot be made or written as a folder; None if it can.

    A folder made here to find out is removed again: the command makes it when it writes,
    and a command refused later (a bad config) leaves nothing behind.
    """
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        writable = os.access(path, os.W_OK | os.X_OK)
    except OSError as error:
        return f"cannot make it ({describe_os_error(error)})"
    finally:
        for folder in missing:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
    return None if writable else "permission denied"
