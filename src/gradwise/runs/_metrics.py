"""metrics.jsonl: an append-only JSON Lines log that a crash cannot corrupt."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Collection, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, final

from gradwise._validation import NON_NEGATIVE_INT, Satisfies, check
from gradwise.runs._files import RunFolderError, describe_os_error, to_json, write_atomically
from gradwise.runs._folder import RunFolder

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]

RunOrPath = RunFolder | str | os.PathLike[str]

# Blocks read backwards when looking for the end of the last complete line.
_BLOCK = 64 * 1024

_MAPPING = Satisfies(lambda value: isinstance(value, Mapping), "a mapping of str to values")


@final
class MetricsLog:
    r"""Append records to a JSON Lines file, one complete line per record.

    Each :meth:`append` serializes the whole record first, then hands the line and its
    newline to the operating system in one ``write`` on an unbuffered ``O_APPEND``
    descriptor: once ``append`` returns, the line is in the OS page cache (a killed
    process loses nothing), and :meth:`sync` makes it durable against power loss. A
    failed write (a full disk) is rolled back with ``ftruncate``, so the file still ends
    with a complete line.

    Opening repairs a file a crash left mid-line: an unterminated last line that parses
    as a JSON object gets its newline; one that does not (a partial record, the zero
    bytes a power loss can leave) is cut off, with a ``UserWarning`` that says so.
    Appends then continue from a valid file.

    Non-finite floats are written as ``NaN``, ``Infinity`` and ``-Infinity``, which
    Python's ``json``, :func:`read_records` and ``pandas.read_json(path, lines=True)``
    read back as floats, so a diverged loss stays distinct from a missing one (``null``).

    Args:
        path: the file; created if missing (its folder must exist).

    Example:
        >>> import math, tempfile
        >>> from pathlib import Path
        >>> from gradwise.runs import MetricsLog, read_records
        >>> path = Path(tempfile.mkdtemp()) / "metrics.jsonl"
        >>> with MetricsLog(path) as log:
        ...     log.append({"kind": "step", "step": 1, "loss": 2.3})
        ...     log.append({"kind": "step", "step": 2, "loss": math.nan})
        >>> [record["loss"] for record in read_records(path)]
        [2.3, nan]
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        check("path", "MetricsLog", path, Satisfies(_is_path, "a str or a path"))
        self.path = Path(path)
        try:
            cut = repair_metrics_file(self.path)
            self._descriptor: int | None = self._open()
        except OSError as error:
            raise _failed("open", self.path, error) from error
        if cut:
            _warn_dropped(self.path, f"{cut} bytes that are not a complete JSON object", 3)

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        descriptor = os.open(self.path, flags, 0o644)
        self._size = os.fstat(descriptor).st_size
        return descriptor

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._descriptor is None

    def append(self, record: Mapping[str, Any]) -> None:
        """Write ``record`` as one JSON line.

        Keys are kept as they are, unknown ones included. Values may be numbers, strings,
        bools, None, lists and mappings of those, numpy scalars or one-element tensors.

        Raises:
            ValueError: ``record`` is not a mapping or holds a value JSON cannot encode;
                nothing is written.
            RunFolderError: the write failed (e.g. the disk is full); the file is left as
                it was before this record.
        """
        check("record", "MetricsLog.append", record, _MAPPING)
        data = (to_json(record, "MetricsLog.append") + "\n").encode("ascii")
        descriptor = self._require_open()
        try:
            written = os.write(descriptor, data)
            while written < len(data):  # only on a full disk or a signal; then one more
                written += os.write(descriptor, data[written:])
        except OSError as error:
            self._roll_back(descriptor)
            raise _failed("append to", self.path, error) from error
        self._size += len(data)

    def _roll_back(self, descriptor: int) -> None:
        # If even this fails, the repair on the next open cuts the partial line instead.
        with contextlib.suppress(OSError):
            os.ftruncate(descriptor, self._size)

    def sync(self) -> None:
        """fsync the file: records appended so far survive a power loss."""
        descriptor = self._require_open()
        try:
            os.fsync(descriptor)
        except OSError as error:
            raise _failed("sync", self.path, error) from error

    def truncate_after(self, step: int, *, after_checkpoint: Collection[str] = ()) -> None:
        """Drop every record whose ``"step"`` is greater than ``step``, atomically.

        For resuming from a checkpoint taken at ``step``: the records written after it
        would otherwise appear twice. Records without a step are kept. Records whose
        ``"kind"`` is in ``after_checkpoint`` are written after the checkpoint of their own
        step (a run's test evaluation follows its last checkpoint): those at ``step`` are
        dropped too. The file is
        rewritten to a temporary file and renamed over the old one, so a crash leaves
        either the old or the new file, never a mix.

        A damaged line (one that is not a JSON object, as a crash in the middle of a
        write or a power loss leaves it) is dropped with a ``UserWarning`` when it is the
        last line (it was written after the checkpoint's fsync, so the resumed run writes
        it again) or when it comes after a record this drops (the file is appended in
        order, so it was written after the checkpoint too).

        Args:
            step: the optimizer step of the checkpoint, an int >= 0.
            after_checkpoint: record kinds written after the checkpoint of their step.

        Raises:
            RunFolderError: a damaged line before the last comes before every record
                written after the checkpoint, so it may hold one up to ``step`` (the
                message gives its number); the file is left as it was.
        """
        check("step", "MetricsLog.truncate_after", step, NON_NEGATIVE_INT)
        descriptor = self._require_open()
        kept = _records_to_keep(self.path, step, after_checkpoint)  # fails before any change
        os.close(descriptor)
        self._descriptor = None
        try:
            lines = "".join(to_json(r, "MetricsLog.truncate_after") + "\n" for r in kept)
            write_atomically(self.path, lines.encode("ascii"))
        except OSError as error:
            raise _failed("rewrite", self.path, error) from error
        finally:  # the old file or the new one: either way, keep appending to it
            self._reopen()

    def _reopen(self) -> None:
        try:
            self._descriptor = self._open()
        except OSError as error:
            raise _failed("reopen", self.path, error) from error

    @classmethod
    def truncate_file_after(cls, path: str | os.PathLike[str], step: int) -> None:
        """:meth:`truncate_after` on the file at ``path`` (repaired first), then close it.

        For a resume that has not opened the log yet.
        """
        with cls(path) as log:
            log.truncate_after(step)

    def close(self) -> None:
        """fsync and close the file. Closing twice is harmless."""
        if self._descriptor is None:
            return
        descriptor, self._descriptor = self._descriptor, None
        try:
            os.fsync(descriptor)
        except OSError as error:
            raise _failed("sync", self.path, error) from error
        finally:
            os.close(descriptor)

    def _require_open(self) -> int:
        if self._descriptor is None:
            raise ValueError(
                f"This MetricsLog for {self.path} is closed. "
                "Open a new MetricsLog(path) to append more records."
            )
        return self._descriptor

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"MetricsLog({str(self.path)!r}, {state})"


def repair_metrics_file(path: str | os.PathLike[str]) -> int:
    """Make ``path`` end with a complete line; return the number of bytes cut off.

    An unterminated last line that parses as a JSON object gets its newline (nothing is
    cut); any other unterminated tail is removed. A missing file is left missing.
    :class:`MetricsLog` calls this when it opens a file.
    """
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "r+b") as file:
        size = file.seek(0, os.SEEK_END)
        end = _end_of_last_line(file, size)
        if end == size:
            return 0
        file.seek(end)
        tail = file.read(size - end)
        if _parse_line(tail) is not None:
            file.write(b"\n")
            cut = 0
        else:
            file.truncate(end)
            cut = size - end
        file.flush()
        os.fsync(file.fileno())
    return cut


def _end_of_last_line(file: Any, size: int) -> int:
    """The offset just past the last newline in ``file``, 0 if there is none."""
    position = size
    while position > 0:
        start = max(0, position - _BLOCK)
        file.seek(start)
        block = file.read(position - start)
        index = block.rfind(b"\n")
        if index >= 0:
            return start + index + 1
        position = start
    return 0


def read_records(run_or_path: RunOrPath) -> list[dict[str, Any]]:
    """The records of a metrics file, in order, as dicts; no pandas needed.

    Accepts a :class:`RunFolder`, a run folder's path, or the path of a ``.jsonl`` file.
    Tolerates a file another process is writing or a crash left mid-line: an
    unterminated last line is read if it is a complete JSON object and skipped if not.
    Blank lines are skipped. A missing file has no records.

    Raises:
        ValueError: a complete line (ended by a newline) is not a JSON object; the
            message gives its line number.
    """
    path = metrics_file(run_or_path)
    data = _read_bytes(path)
    *lines, tail = data.split(b"\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = _parse_line(line)
        if record is None:
            raise ValueError(
                f"Line {number} of {path} is not a JSON object: {line[:80]!r}. The file "
                "was edited or damaged; delete that line to read the rest."
            )
        records.append(record)
    last = _parse_line(tail) if tail.strip() else None
    if last is not None:
        records.append(last)
    return records


def _read_bytes(path: Path) -> bytes:
    """The file's bytes; none for a missing file (it has no records)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as error:
        raise _failed("read", path, error) from error


def _records_to_keep(
    path: Path, step: int, after_checkpoint: Collection[str]
) -> list[dict[str, Any]]:
    """The records of ``path`` that :meth:`MetricsLog.truncate_after` keeps.

    Unlike :func:`read_records`, a damaged line is dropped with a warning when it is the
    last (a resume after a crash must go on) or comes after a record written after the
    checkpoint (that record is dropped, and the file is appended in order). Any other
    damaged line is a :class:`RunFolderError`: it may hold a record up to the checkpoint
    that a rewrite would lose, and only the user can tell what it was.
    """

    def written_after_checkpoint(record: Mapping[str, Any]) -> bool:
        value = record.get("step")
        return _after(value, step) or (record.get("kind") in after_checkpoint and value == step)

    data = _read_bytes(path)
    numbered = [(n, line) for n, line in enumerate(data.split(b"\n"), start=1) if line.strip()]
    kept: list[dict[str, Any]] = []
    dropped: list[tuple[int, bytes]] = []
    past_checkpoint = False  # a record before this line was written after the checkpoint
    for index, (number, line) in enumerate(numbered):
        record = _parse_line(line)
        if record is None:
            if not past_checkpoint and index < len(numbered) - 1:
                raise RunFolderError(
                    f"Line {number} of {path} is not a JSON object: {line[:80]!r}. It comes "
                    f"before any record written after the checkpoint (step {step}), so it "
                    "may be one up to that step, which resuming would lose; the file was "
                    "edited or damaged: delete or repair that line, then resume again."
                )
            dropped.append((number, line))
        elif written_after_checkpoint(record):
            past_checkpoint = True
        else:
            kept.append(record)
    if dropped and dropped == numbered[-1:]:
        _warn_dropped(path, f"line {dropped[0][0]}, {dropped[0][1][:40]!r}", 4)
    elif dropped:
        lines = ", ".join(str(number) for number, _ in dropped[:10])
        warnings.warn(
            f"{path} has damaged lines ({lines}{', ...' if len(dropped) > 10 else ''}) "
            "after records written after the checkpoint; dropped them with those records.",
            UserWarning,
            stacklevel=4,
        )
    return kept


def _warn_dropped(path: Path, what: str, stacklevel: int) -> None:
    warnings.warn(
        f"{path} ended with a damaged line ({what}), as a crash in the middle of a write "
        "leaves it; dropped that line and kept the records before it.",
        UserWarning,
        stacklevel=stacklevel,
    )


def read_metrics(run_or_path: RunOrPath) -> pd.DataFrame:
    """The records of a metrics file as a pandas DataFrame, one row per record.

    Columns are the union of the records' keys, in order of first appearance; a record
    without a key has NaN (or None) there. Tolerant as :func:`read_records` is.

    Example:
        >>> import tempfile
        >>> from gradwise.runs import MetricsLog, RunFolder, read_metrics
        >>> run = RunFolder.create(tempfile.mkdtemp(), "demo", min_free_bytes=0)
        >>> with MetricsLog(run.metrics_path) as log:
        ...     log.append({"kind": "step", "step": 1, "loss": 2.3})
        ...     log.append({"kind": "epoch", "step": 1, "val_loss": 2.1})
        >>> read_metrics(run).columns.tolist()
        ['kind', 'step', 'loss', 'val_loss']
    """
    # pandas is needed to analyse metrics, never to write them: import it only here.
    import pandas as pd

    records = read_records(run_or_path)
    return pd.DataFrame.from_records(records) if records else pd.DataFrame()


def metrics_file(run_or_path: RunOrPath) -> Path:
    """The metrics file of a RunFolder, of a folder, or the file itself."""
    if isinstance(run_or_path, RunFolder):
        return run_or_path.metrics_path
    check("run_or_path", "read_records", run_or_path, Satisfies(_is_path, "a RunFolder or path"))
    path = Path(run_or_path)
    return RunFolder(path).metrics_path if path.is_dir() else path


def _parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError; deep nesting
        return None
    return value if isinstance(value, dict) else None


def _after(value: Any, step: int) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > step


def _is_path(value: Any) -> bool:
    return isinstance(value, str | os.PathLike)


def _failed(action: str, path: Path, error: OSError) -> RunFolderError:
    return RunFolderError(
        f"Could not {action} the metrics file {path}: {describe_os_error(error)}."
        + (" The file was left as it was before this record." if action == "append to" else "")
    )
