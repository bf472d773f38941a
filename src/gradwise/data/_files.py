"""The user's own data from .npz, .npy and .csv files.

Each loader's keyword options, with their constraints, are in ``OPTIONS`` (by suffix);
load_dataset checks them before calling the loader.
"""

from __future__ import annotations

import csv
import itertools
import os
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from gradwise._validation import Boolean, Constraint, Either, OneOf, Satisfies
from gradwise.data._dataset import TASKS, Dataset, Task
from gradwise.data._source import Source
from gradwise.data._targets import (
    check_finite,
    check_numeric,
    check_same_length,
    encode_targets,
)

_HEADER_SAMPLE_ROWS = 100
_NPZ_KEYS = (("x", "y", "x_test", "y_test"), ("inputs", "targets", "inputs_test", "targets_test"))


def _is_column_index(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_shape(value: Any) -> bool:
    return isinstance(value, tuple | list) and all(
        _is_column_index(size) and size >= 1 for size in value
    )


NONE = Satisfies(lambda v: v is None, "None")
COLUMN_INDEX = Satisfies(_is_column_index, "an int (a column index; -1 is the last column)")
_COMMON: dict[str, Constraint] = {
    "task": Either((NONE, OneOf(TASKS))),
    "input_shape": Either((NONE, Satisfies(_is_shape, "a tuple of ints >= 1"))),
}
OPTIONS: dict[str, dict[str, Constraint]] = {
    ".npz": _COMMON,
    ".npy": {
        **_COMMON,
        "target": COLUMN_INDEX,
        "targets_path": Either(
            (NONE, Satisfies(lambda v: isinstance(v, str | os.PathLike), "a path"))
        ),
    },
    ".csv": {
        **_COMMON,
        "target": Either((COLUMN_INDEX, Satisfies(lambda v: isinstance(v, str), "a column name"))),
        "header": Either((NONE, Boolean())),
        "delimiter": Satisfies(lambda v: isinstance(v, str) and len(v) == 1, "one character"),
    },
}


def load_npz(
    path: Path, *, task: Task | None = None, input_shape: tuple[int, ...] | None = None
) -> Source:
    """Arrays ``x`` and ``y`` (or ``inputs`` and ``targets``) from an ``.npz`` archive.

    Optional ``x_test`` and ``y_test`` (or ``inputs_test`` and ``targets_test``) become the
    test split. Loaded with ``allow_pickle=False``.
    """
    arrays = _read_npz(path)
    for keys in _NPZ_KEYS:
        if keys[0] in arrays and keys[1] in arrays:
            return _source(path, arrays, keys, task, input_shape)
    found = ", ".join(repr(key) for key in arrays) or "none"
    raise ValueError(
        f"The archive {path} must hold arrays 'x' and 'y' (or 'inputs' and 'targets'), with "
        f"optional 'x_test' and 'y_test'. Got keys {found} instead."
    )


def load_npy(
    path: Path,
    *,
    task: Task | None = None,
    input_shape: tuple[int, ...] | None = None,
    target: int = -1,
    targets_path: str | os.PathLike[str] | None = None,
) -> Source:
    """A 2-D ``.npy`` array whose column ``target`` (the last by default) holds the targets.

    With ``targets_path``, the array (of any shape) holds only the inputs and the targets
    come from that second ``.npy`` file.
    """
    array = _read_npy(path)
    if targets_path is not None and target != -1:
        raise ValueError(
            f"The 'target' option for {path} must be left out when 'targets_path' is given "
            f"(the array then holds only inputs). Got target={target!r} instead."
        )
    if targets_path is not None:
        arrays = {"inputs": array, "targets": _read_npy(Path(targets_path))}
        return _source(path, arrays, ("inputs", "targets", "", ""), task, input_shape)
    if array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(
            f"The array in {path} must be 2-D with the targets in one column (features, "
            f"then the target). Got shape {array.shape} instead; pass targets_path= to read "
            "the targets from a second file."
        )
    column = _column_index(target, array.shape[1], path)
    arrays = {"inputs": np.delete(array, column, axis=1), "targets": array[:, column]}
    return _source(path, arrays, ("inputs", "targets", "", ""), task, input_shape)


def load_csv(
    path: Path,
    *,
    task: Task | None = None,
    input_shape: tuple[int, ...] | None = None,
    target: int | str = -1,
    header: bool | None = None,
    delimiter: str = ",",
) -> Source:
    """A table with one sample per row; column ``target`` (the last by default) is the target.

    ``header=None`` detects a header row: the first row is a header when one of its cells
    is text while the rest of that column (in the first 100 rows) is numbers. Features
    must be numbers; a text target column is read as class labels, as written: "NA",
    "None", "null", "nan" or "N/A" there is a class (pandas' default missing values are
    missing only among numbers), and only an empty cell is a missing label.

    A row index is dropped, in the two forms that libraries write it: a header whose first
    cell is empty over distinct whole numbers or names (pandas' ``to_csv()`` with its
    index, R's ``write.csv``), and a header one name shorter than the rows (R's
    ``write.table``: row names in the first column). ``target`` then counts the columns
    after it. An unnamed first column of other numbers is a feature.
    """
    _require_file(path)
    header, row_index = _header_layout(path, delimiter, header)
    layout = {"header": 0 if header else None, "index_col": 0 if row_index else None}
    frame = _read_table(path, delimiter, **layout)
    names = [str(name).strip() for name in frame.columns] if header else None
    if frame.empty or frame.shape[1] < 2:
        raise ValueError(
            f"The CSV table {path} must have at least one data row and two columns (features "
            f"and a target). Got {frame.shape[0]} rows and {frame.shape[1]} columns instead."
        )
    column = _target_column(target, names, frame.shape[1], path)
    frame.isetitem(column, _label_cells(frame.iloc[:, column], column, path, delimiter, layout))
    _check_missing(frame, path)
    features = [j for j in range(frame.shape[1]) if j != column]
    arrays = {
        "inputs": _feature_matrix(frame, features, names, path),
        "targets": _target_values(frame.iloc[:, column]),
    }
    source = _source(path, arrays, ("inputs", "targets", "", ""), task, input_shape)
    if not row_index:
        return source
    return replace(source, source=f"{source.source} (its first column, the row index, dropped)")


def _header_layout(path: Path, delimiter: str, header: bool | None) -> tuple[bool, bool]:
    """(has a header row, has a row-index column), from the first rows."""
    rows = _first_rows(path, delimiter, _HEADER_SAMPLE_ROWS)
    first, second = (*rows, [], [])[:2]
    # R's write.table: the header has no cell above the row names. The rows do not parse
    # as a table without that, so it is checked before the header detection reads them.
    short_header = len(second) == len(first) + 1 and not all(map(_is_number, first))
    # An empty first name over a column of row numbers or names (pandas writes its index
    # 0, 1, 2, ..., in any order after a shuffle; R "1", "2", ... or names). Over other
    # numbers (0.5, 1.5, or repeated values) it is a feature that has no name.
    unnamed_first = (
        bool(first)
        and first[0].strip() == ""
        and len(first) == len(second)
        and _is_row_index([row[0] for row in rows[1:] if row])
    )
    if header is False and short_header:
        raise ValueError(
            f"The CSV table {path} has a first row one cell shorter than the rows below it: "
            "a header over row names, as R's write.table writes it. Got header=False; leave "
            "'header' out (or pass header=True) to read that row as the header and drop the "
            "row names."
        )
    if header is None:
        # pandas names the columns of an array 0, 1, 2, ...: numbers, so only the empty
        # cell over its index tells that header from a data row.
        numbered = [cell.strip() for cell in first[1:]] == [str(j) for j in range(len(first) - 1)]
        header = (
            short_header
            or (unnamed_first and numbered)
            or _has_header(
                _read_table(path, delimiter, header=None, nrows=_HEADER_SAMPLE_ROWS, dtype=str)
            )
        )
    return header, header and (short_header or unnamed_first)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _is_row_index(cells: list[str]) -> bool:
    """Whether a column's cells (below the header) are row names or distinct row numbers."""
    given = [cell.strip() for cell in cells if cell.strip()]
    if not all(map(_is_number, given)):
        return True
    return all(cell.lstrip("+-").isdigit() for cell in given) and len(set(given)) == len(given)


def _first_rows(path: Path, delimiter: str, count: int) -> list[list[str]]:
    # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not the first cell's text.
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as file:
        return list(
            itertools.islice(csv.reader(file, delimiter=delimiter, skipinitialspace=True), count)
        )


def _source(
    path: Path,
    arrays: dict[str, np.ndarray],
    keys: tuple[str, str, str, str],
    task: Task | None,
    input_shape: tuple[int, ...] | None,
) -> Source:
    x_key, y_key, x_test_key, y_test_key = keys
    x, y = arrays[x_key], arrays[y_key]
    x_test, y_test = arrays.get(x_test_key), arrays.get(y_test_key)
    if (x_test is None) != (y_test is None):
        raise ValueError(
            f"The archive {path} must hold both '{x_test_key}' and '{y_test_key}' for a test "
            "split, or neither. Got only one of them."
        )
    where = str(path)
    _check_pair(x, y, f"{x_key}/{y_key}", where)
    if x_test is not None and y_test is not None:
        _check_pair(x_test, y_test, f"{x_test_key}/{y_test_key}", where)
    targets = encode_targets(y, y_test, task, where)
    data = Dataset.from_arrays(_reshape(x, input_shape, where), targets.train)
    test = None
    if x_test is not None and targets.test is not None:
        test = Dataset.from_arrays(_reshape(x_test, input_shape, where), targets.test)
    return Source(
        data=data,
        test=test,
        task=targets.task,
        num_classes=targets.num_classes,
        class_labels=targets.class_labels,
        source=f"file {path.name}",
    )


def _check_pair(inputs: np.ndarray, targets: np.ndarray, names: str, where: str) -> None:
    x_name, y_name = names.split("/")
    check_numeric(inputs, f"inputs ('{x_name}')", where)
    if inputs.ndim == 0 or targets.ndim == 0:
        raise ValueError(
            f"The '{x_name}' and '{y_name}' arrays in {where} must have one row per sample. "
            "Got a 0-d array instead."
        )
    check_same_length(inputs, targets, names, where)
    check_finite(inputs, f"inputs ('{x_name}')", where)
    check_finite(targets, f"targets ('{y_name}')", where)


def _reshape(inputs: np.ndarray, shape: tuple[int, ...] | None, where: str) -> np.ndarray:
    if shape is None:
        return inputs
    sample_shape = inputs.shape[1:]
    if int(np.prod(sample_shape)) != int(np.prod(shape)):
        raise ValueError(
            f"The 'input_shape' option for {where} must have as many values as one sample "
            f"({int(np.prod(sample_shape))}, shape {sample_shape}). Got {tuple(shape)} instead."
        )
    return inputs.reshape(len(inputs), *shape)


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"No such data file: '{path}' (looked for '{path.resolve()}'). Relative paths "
            "start from the current directory."
        )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    _require_file(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, AttributeError) as error:
        raise ValueError(
            f"Could not read {path} as a .npz archive of numeric arrays: {error}"
        ) from None


def _read_npy(path: Path) -> np.ndarray:
    _require_file(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ValueError(f"Could not read {path} as a .npy array of numbers: {error}") from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"The file {path} must hold one array. Got an .npz archive instead.")
    return array


def _column_index(target: int, num_columns: int, path: Path) -> int:
    if not -num_columns <= target < num_columns:
        raise ValueError(
            f"The 'target' option for {path} must be a column index in "
            f"[{-num_columns}, {num_columns - 1}]. Got {target} instead."
        )
    return int(target) % num_columns


def _read_table(path: Path, delimiter: str, **options: Any) -> Any:
    pd = _pandas()
    try:
        return pd.read_csv(path, sep=delimiter, skipinitialspace=True, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"Could not read {path} as a CSV table: {error}") from None


def _has_header(sample: Any) -> bool:
    text = sample.notna() & sample.apply(_pandas().to_numeric, errors="coerce").isna()
    numbers_below = ~text.iloc[1:].any()
    return bool((text.iloc[0] & numbers_below).any())


def _target_column(target: int | str, names: list[str] | None, num_columns: int, path: Path) -> int:
    if not isinstance(target, str):
        return _column_index(target, num_columns, path)
    if names is None:
        raise ValueError(
            f"The 'target' option for {path} must be a column index: the table has no "
            f"header row. Got {target!r} instead."
        )
    if target not in names:
        raise ValueError(
            f"The 'target' option for {path} must name a column of its header "
            f"({', '.join(names)}). Got {target!r} instead."
        )
    return names.index(target)


def _column_label(j: int, names: list[str] | None) -> str:
    return f"'{names[j]}' (column {j})" if names is not None else f"column {j}"


def _feature_matrix(
    frame: Any, features: list[int], names: list[str] | None, path: Path
) -> np.ndarray:
    pd = _pandas()
    for j in features:
        cells = frame.iloc[:, j]
        if pd.api.types.is_numeric_dtype(cells):
            continue
        values = pd.to_numeric(cells, errors="coerce")
        row = int(np.argmax((cells.notna() & values.isna()).to_numpy()))
        raise ValueError(
            f"The feature {_column_label(j, names)} in {path} must be numbers. Got "
            f"{cells.iloc[row]!r} in row {row} instead; encode it as numbers or drop it."
        )
    return frame.iloc[:, features].to_numpy(dtype=np.float64)


def _label_cells(
    cells: Any, column: int, path: Path, delimiter: str, layout: dict[str, Any]
) -> Any:
    """The target column with text labels as written, empty cells missing (NaN).

    pandas reads "NA", "None", "null", "nan", "N/A" and the like as missing values: right
    among numbers (a target column of numbers keeps them missing), wrong among class names.
    Only a text column with such cells is read again, as text: only its empty cells miss.
    """
    pd = _pandas()
    if pd.api.types.is_numeric_dtype(cells) or not cells.isna().any():
        return cells
    raw = _read_table(path, delimiter, dtype=str, keep_default_na=False, **layout)
    text = raw.iloc[:, column].str.strip()
    return text.where(text != "").to_numpy(dtype=object)


def _check_missing(frame: Any, path: Path) -> None:
    missing = frame.isna().to_numpy()
    count = int(missing.sum())
    if count:
        row = int(np.argmax(missing.any(axis=1)))
        raise ValueError(
            f"The table {path} contains {count} empty or NaN cells (the first in row {row}, "
            "counting data rows from 0). Drop or fill those rows before training."
        )


def _target_values(cells: Any) -> np.ndarray:
    if _pandas().api.types.is_numeric_dtype(cells):
        return cells.to_numpy(dtype=np.float64)
    return cells.astype(str).str.strip().to_numpy(dtype=str)  # text labels: classes


def _pandas() -> Any:
    # Imported on use: pandas takes ~0.5 s to import and only CSV files need it.
    import pandas  # type: ignore[import-untyped]

    return pandas
