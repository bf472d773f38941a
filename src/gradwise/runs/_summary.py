"""summary.json and config.yaml: files replaced whole, atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from gradwise._validation import OneOf, Satisfies, check
from gradwise.runs._files import (
    RunFolderError,
    describe_os_error,
    to_json,
    write_atomically,
)
from gradwise.runs._folder import RunFolder

#: The values of a summary's ``"status"``.
STATUSES = ("running", "completed", "early_stopped", "stopped", "interrupted", "diverged", "failed")

FolderLike = RunFolder | str | os.PathLike[str]

_FOLDER = Satisfies(
    lambda value: isinstance(value, RunFolder | str | os.PathLike), "a RunFolder or a path"
)
_MAPPING = Satisfies(lambda value: isinstance(value, Mapping), "a mapping")


def write_summary(folder: FolderLike, summary: Mapping[str, Any]) -> None:
    """Write ``summary.json`` atomically: readers see the old summary or the new one.

    The trainer rewrites the summary at the start (status ``"running"``), at checkpoints
    and at the end. Keys, all optional: ``name``, ``status`` (one of :data:`STATUSES`),
    ``dataset``, ``model``, ``optimizer``, ``num_parameters``, ``epochs``, ``steps``,
    ``duration_s`` (seconds spent training, summed over a resumed run's sessions),
    ``started`` and ``finished`` (POSIX seconds from ``time.time()``, or ISO 8601
    strings; ``started`` is the first start, which a resumed run keeps), ``resumed`` (a
    list of the times the run was resumed, in the same forms), ``best`` (a mapping
    with ``monitor``, ``mode``, ``value``, ``epoch``, ``step``), ``final`` and ``test``
    (mappings of metric name to value) and ``message`` (a str or None). Other keys are
    kept. Non-finite floats are written as ``NaN``/``Infinity``, as in metrics.jsonl.

    Args:
        folder: a :class:`RunFolder` or the path of one.
        summary: the summary.

    Raises:
        ValueError: ``summary`` is not a mapping of JSON values, or its status is not one
            of :data:`STATUSES`.
        RunFolderError: the file could not be written (the old summary is intact).

    Example:
        >>> import tempfile
        >>> from gradwise.runs import RunFolder, read_summary, write_summary
        >>> run = RunFolder.create(tempfile.mkdtemp(), "demo", min_free_bytes=0)
        >>> write_summary(run, {"name": "demo", "status": "running"})
        >>> read_summary(run)["status"]
        'running'
    """
    run = _folder(folder, "write_summary")
    check("summary", "write_summary", summary, _MAPPING)
    if "status" in summary:
        check("status", "write_summary", summary["status"], OneOf(STATUSES))
    text = to_json(summary, "write_summary", indent=2, name="summary") + "\n"
    _write(run.summary_path, text.encode("ascii"), "summary")


def read_summary(folder: FolderLike) -> dict[str, Any]:
    """The run's ``summary.json`` as a dict.

    Raises:
        RunFolderError: the run has no summary (yet) or it cannot be read.
        ValueError: the file is not a JSON object (it was edited by hand), or not UTF-8;
            the message names the file.
    """
    run = _folder(folder, "read_summary")
    return _read_json_object(run.summary_path)


def write_config(folder: FolderLike, config: Mapping[str, Any] | str) -> None:
    """Write the resolved config to ``config.yaml``, atomically.

    Args:
        folder: a :class:`RunFolder` or the path of one.
        config: a mapping (written with ``yaml.safe_dump`` in its own key order; tuples
            become lists, paths strings, enums their values, numpy scalars numbers) or
            YAML text written as it is.

    Raises:
        ValueError: a config value YAML cannot represent.
        RunFolderError: the file could not be written.

    Example:
        >>> import tempfile
        >>> from gradwise.runs import RunFolder, read_config, write_config
        >>> run = RunFolder.create(tempfile.mkdtemp(), "demo", min_free_bytes=0)
        >>> write_config(run, {"model": "cnn1d", "optimizer": {"name": "adam", "lr": 1e-3}})
        >>> read_config(run)["optimizer"]["lr"]
        0.001
    """
    run = _folder(folder, "write_config")
    check("config", "write_config", config, Satisfies(
        lambda value: isinstance(value, Mapping | str), "a mapping or YAML text"))  # fmt: skip
    if isinstance(config, str):
        text = config
    else:
        text = _yaml().safe_dump(
            _plain(config, "config"), sort_keys=False, default_flow_style=False,
            allow_unicode=True,
        )  # fmt: skip
    _write(run.config_path, text.encode("utf-8"), "config")


def read_config(folder: FolderLike) -> dict[str, Any]:
    """The run's ``config.yaml`` as a dict (``yaml.safe_load``).

    Raises:
        RunFolderError: the run has no config or it cannot be read.
        ValueError: the file is not a YAML mapping, or not UTF-8; the message names the
            file.
    """
    yaml = _yaml()
    run = _folder(folder, "read_config")
    text = _read_text(run.config_path, "config")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{run.config_path} is not valid YAML: {error}") from None
    except RecursionError:  # a damaged file such as "[[[[..." thousands deep
        raise ValueError(
            f"{run.config_path} is not valid YAML: it is nested too deeply to read."
        ) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(
            f"{run.config_path} must hold a YAML mapping; it holds a {type(value).__name__}."
        )
    return value


def _yaml() -> Any:
    # PyYAML is imported on first use, so importing gradwise.runs stays cheap.
    import yaml

    return yaml


def _folder(folder: FolderLike, owner: str) -> RunFolder:
    check("folder", owner, folder, _FOLDER)
    return folder if isinstance(folder, RunFolder) else RunFolder(Path(folder))


def _write(path: Path, data: bytes, what: str) -> None:
    try:
        write_atomically(path, data)
    except OSError as error:
        raise RunFolderError(
            f"Could not write the {what} file {path}: {describe_os_error(error)}. "
            "Check that the run folder exists and is writable."
        ) from error


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFolderError(
            f"{path.parent} has no {path.name}: the run has not written its {what} yet, "
            "or this is not a run folder."
        ) from None
    except OSError as error:
        raise RunFolderError(f"Could not read {path}: {describe_os_error(error)}.") from error
    except UnicodeDecodeError as error:  # a ValueError that would not name the file
        raise ValueError(
            f"{path} is not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
            f"{error.start}): it is damaged or was saved in another encoding. Save it as UTF-8 "
            "or restore it from a copy."
        ) from None


def _read_json_object(path: Path) -> dict[str, Any]:
    text = _read_text(path, "summary")
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON: {error}.") from None
    except RecursionError:  # a damaged file such as "[[[[..." thousands deep
        raise ValueError(f"{path} is not valid JSON: it is nested too deeply to read.") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object; it holds a {type(value).__name__}.")
    return value


def _plain(value: Any, where: str) -> Any:
    """``value`` with only dicts, lists, str, int, float, bool and None, for YAML."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(key): _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Enum):
        return _plain(value.value, where)
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _plain(item(), where)
        except (ValueError, RuntimeError):
            pass
    raise ValueError(
        f"The '{where}' value of the config must be a str, number, bool, None, list or "
        f"mapping. Got {value!r} of type {type(value).__name__} instead."
    )
