"""The runs under a root folder, for ``gradwise runs``."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, final

from gradwise._validation import Satisfies, check
from gradwise.runs._summary import read_summary


@final
@dataclass(frozen=True)
class RunInfo:
    """One run as ``gradwise runs`` lists it: a few fields of its summary.

    A run folder without a readable ``summary.json`` has status ``"unknown"`` and None
    elsewhere. ``summary`` holds the whole summary for anything not lifted into a field.

    Attributes:
        name: the run folder's name.
        path: the run folder.
        status: the summary's status, or ``"unknown"``.
        dataset, model, optimizer: as the summary names them.
        monitor: the monitored metric (e.g. ``"val_accuracy"``).
        best_value: its best value; ``best_epoch`` the epoch that reached it.
        test_accuracy: the test accuracy, if the run was tested.
        duration_s: the run's wall time in seconds.
        started: when the run started, in POSIX seconds (the summary may hold POSIX
            seconds or an ISO 8601 string).
    """

    name: str
    path: Path
    status: str
    dataset: str | None = None
    model: str | None = None
    optimizer: str | None = None
    monitor: str | None = None
    best_value: float | None = None
    best_epoch: int | None = None
    test_accuracy: float | None = None
    duration_s: float | None = None
    started: float | None = None
    summary: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def list_runs(root: str | os.PathLike[str] = "runs") -> list[RunInfo]:
    """The runs in ``root``, oldest first.

    A run is a folder directly in ``root`` that holds ``summary.json`` or
    ``config.yaml``. Runs are ordered by their summary's ``started`` time; a run without
    one (or with one :func:`to_timestamp` cannot read) falls back to the time its folder
    was last modified. A missing ``root`` has no runs. Neither stops the listing: a
    summary that cannot be read (status ``"unknown"``), a field that is not a usable
    value (None).

    Example:
        >>> import tempfile
        >>> from gradwise.runs import RunFolder, list_runs, write_summary
        >>> root = tempfile.mkdtemp()
        >>> run = RunFolder.create(root, "first", min_free_bytes=0)
        >>> best = {"monitor": "val_loss", "mode": "min", "value": 0.3}
        >>> write_summary(run, {"status": "completed", "best": best})
        >>> [(info.name, info.status, info.best_value) for info in list_runs(root)]
        [('first', 'completed', 0.3)]
    """
    check("root", "list_runs", root, Satisfies(
        lambda value: isinstance(value, str | os.PathLike), "a str or a path"))  # fmt: skip
    root = Path(root)
    if not root.is_dir():
        return []
    infos = [_info(path) for path in root.iterdir() if _is_run(path)]
    infos.sort(key=lambda info: (_start_time(info), info.name))
    return infos


def _is_run(path: Path) -> bool:
    return path.is_dir() and ((path / "summary.json").is_file() or (path / "config.yaml").is_file())


def _info(path: Path) -> RunInfo:
    try:
        summary = read_summary(path)
    except (OSError, ValueError):
        return RunInfo(name=path.name, path=path, status="unknown")
    best = _mapping(summary.get("best"))
    test = _mapping(summary.get("test"))
    return RunInfo(
        name=path.name,
        path=path,
        status=str(summary.get("status") or "unknown"),
        dataset=_text(summary.get("dataset")),
        model=_text(summary.get("model")),
        optimizer=_text(summary.get("optimizer")),
        monitor=_text(best.get("monitor")),
        best_value=_number(best.get("value")),
        best_epoch=_integer(best.get("epoch")),
        test_accuracy=_number(test.get("test_accuracy", test.get("accuracy"))),
        duration_s=_number(summary.get("duration_s")),
        started=to_timestamp(summary.get("started")),
        summary=summary,
    )


def _start_time(info: RunInfo) -> float:
    if info.started is not None:
        return info.started
    try:
        return info.path.stat().st_mtime
    except OSError:
        return math.inf


def to_timestamp(value: Any) -> float | None:
    """POSIX seconds from POSIX seconds or an ISO 8601 string; None if neither.

    An ISO string without a UTC offset (``2026-01-01T12:00:00``) is read as UTC, not as
    the local time of whoever lists the runs: the same summary gives the same time on
    every machine. None too for a time ``datetime.fromtimestamp`` cannot show (beyond the
    years 1-9999, e.g. milliseconds written where seconds belong), so every timestamp
    returned here can be formatted.

    Example:
        >>> from gradwise.runs import to_timestamp
        >>> to_timestamp("1970-01-02T00:00:00"), to_timestamp("1970-01-02T00:00:00+01:00")
        (86400.0, 82800.0)
    """
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            seconds: float | None = moment.timestamp()
        except (ValueError, OverflowError, OSError):
            return None
    else:
        seconds = _number(value)
    if seconds is None or not math.isfinite(seconds):
        return None
    try:
        datetime.fromtimestamp(seconds)
    except (ValueError, OverflowError, OSError):  # the platform's errors for out-of-range times
        return None
    return seconds


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):  # e.g. {"name": "adam", "lr": 0.001}
        value = value.get("name", value)
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:  # an int beyond the float range (JSON allows any int)
        return None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value
