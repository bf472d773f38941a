"""Crash-safe file writes and the JSON encoding shared by every run file."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Collection, Mapping
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

from gradwise._validation import invalid_value_error


class RunFolderError(OSError):
    """A run folder or one of its files cannot be created, written or read.

    One clear line says what failed and how to fix it; the CLI prints it as it is.
    """


def to_json(
    value: Mapping[str, Any], owner: str, indent: int | None = None, *, name: str = "record"
) -> str:
    """JSON for ``value`` (one line unless ``indent``); NaN and +-inf become ``NaN``/``Infinity``.

    Python's ``json`` and ``pandas.read_json`` read those tokens back (strict JSON parsers
    such as ``jq`` refuse them). Numpy scalars and one-element tensors become numbers,
    paths strings, datetimes ISO 8601 strings, enums their value, any mapping an object.
    A value it cannot encode is a ValueError naming ``owner``'s parameter ``name``.
    """
    try:
        return json.dumps(value, default=_encode, allow_nan=True, ensure_ascii=True, indent=indent)
    except (TypeError, ValueError) as error:
        expected = (
            "a mapping of str to JSON values (numbers, str, bool, None, lists, mappings, "
            f"numpy scalars, one-element tensors) [{error}]"
        )
        raise invalid_value_error(name, owner, expected, _short(value)) from None


def _encode(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Mapping):  # json encodes only dicts (MappingProxyType, ChainMap...)
        return dict(obj)
    item = getattr(obj, "item", None)
    if callable(item):
        try:
            return item()
        except (ValueError, RuntimeError) as error:  # a tensor or array of many elements
            raise TypeError(f"{type(obj).__name__} with more than one element") from error
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _short(value: Any, limit: int = 200) -> Any:
    text = repr(value)
    return value if len(text) <= limit else _Abbreviated(text[: limit - 3] + "...")


class _Abbreviated(str):
    def __repr__(self) -> str:
        return str(self)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` so a reader sees either the old file or the new one."""

    def write(file: BinaryIO) -> None:
        file.write(data)

    replace_atomically(path, write)


def replace_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` by what ``write`` writes to a file, all or nothing.

    ``write`` fills a temporary file in the same folder, which is fsynced, renamed over
    ``path`` with ``os.replace`` (atomic on POSIX and Windows), and the folder fsynced so
    the new name survives a power loss. On any error the temporary file is removed and
    ``path`` is untouched. A process killed mid-write (SIGKILL, power loss) cannot remove
    it: the hidden ``.<name>.<8 random characters>.tmp`` stays until
    :func:`remove_leftover_temporaries` removes it.
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, _mode_for(path))  # mkstemp makes 0o600; keep the file's mode
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    sync_folder(path.parent)


# The temporary files of replace_atomically: mkstemp's 8 random characters (a-z, 0-9, _)
# between ".<name>." and ".tmp".
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


def remove_leftover_temporaries(folder: Path, names: Collection[str] | None = None) -> list[Path]:
    """Remove the temporary files that killed :func:`replace_atomically` calls left in ``folder``.

    Only the temporaries of the files in ``names`` (all files when None) are removed, in
    ``folder`` itself (not in its subfolders); a file that cannot be removed is skipped.
    Returns the paths removed.

    A live writer's temporary file has the same name as a dead one's, and removing it
    makes that write fail: call this only where no other process can be writing those
    files (a run folder has one writer: the run itself, when it starts or resumes).
    """
    try:
        entries = sorted(os.listdir(folder))
    except OSError:  # no folder (yet): nothing to remove
        return []
    removed = []
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry)
        if match is None or (names is not None and match["name"] not in names):
            continue
        path = folder / entry
        if not path.is_file() or path.is_symlink():
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def _mode_for(path: Path) -> int:
    """The permissions of the file at ``path``, or 0o644 for a new file."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o644


def sync_folder(folder: Path) -> None:
    """fsync a folder so that entries just created or renamed in it are durable."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def describe_os_error(error: OSError) -> str:
    """The reason part of an OSError, without the errno number and file name."""
    return error.strerror or str(error) or type(error).__name__
