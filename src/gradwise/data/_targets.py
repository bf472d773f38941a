"""Checks and encodings shared by the file loaders: finiteness, task inference, class indices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gradwise.data._dataset import Task


@dataclass(frozen=True)
class Targets:
    """Targets of the data (and of its shipped test split) in the Dataset contract."""

    train: np.ndarray
    test: np.ndarray | None
    task: Task
    num_classes: int | None
    class_labels: tuple[Any, ...] | None


def check_numeric(array: np.ndarray, what: str, where: str) -> None:
    """Raise a TypeError unless ``array`` holds numbers."""
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"The {what} in {where} must be numbers. Got an array of dtype {array.dtype} instead."
        )


def check_finite(array: np.ndarray, what: str, where: str) -> None:
    """Raise a ValueError naming the count and the first row of NaN or infinite values."""
    if array.dtype.kind != "f" or array.size == 0:
        return
    bad = ~np.isfinite(array.reshape(len(array), -1))
    count = int(bad.sum())
    if count:
        row = int(np.argmax(bad.any(axis=1)))
        raise ValueError(
            f"The {what} in {where} contain {count} NaN or infinite values (the first in "
            f"row {row}, counting from 0). Drop or fill those rows before training."
        )


def check_same_length(inputs: np.ndarray, targets: np.ndarray, names: str, where: str) -> None:
    """Raise a ValueError when inputs and targets disagree on the number of samples."""
    if len(inputs) != len(targets):
        first, second = names.split("/")
        raise ValueError(
            f"The '{first}' and '{second}' arrays in {where} must have one row per sample. "
            f"Got {len(inputs)} rows in '{first}' and {len(targets)} in '{second}' instead."
        )


def encode_targets(
    targets: np.ndarray, test_targets: np.ndarray | None, task: Task | None, where: str
) -> Targets:
    """Infer the task unless given, and encode the targets for it.

    Whole-number (or text) 1-D targets mean classification, anything else regression.
    Class labels that are not exactly ``0..K-1`` are re-encoded as the index of the label
    in the sorted list of distinct labels, which becomes ``class_labels``.
    """
    arrays = [targets] if test_targets is None else [targets, test_targets]
    if task is None:
        task = "classification" if all(_is_label_array(a) for a in arrays) else "regression"
    if task == "regression":
        for array in arrays:
            if array.dtype.kind not in "biuf":
                raise ValueError(
                    f"The targets in {where} must be numbers for regression. Got text "
                    f"labels such as {_first(array)!r} instead; use task='classification'."
                )
        encoded = [array.astype(np.float32) for array in arrays]
        test = encoded[1] if len(encoded) > 1 else None
        return Targets(encoded[0], test, task, None, None)
    return _encode_classes(arrays, where)


def _is_label_array(array: np.ndarray) -> bool:
    if array.ndim > 2 or (array.ndim == 2 and array.shape[1] != 1):
        return False
    if array.dtype.kind in "biuOUS":  # S: byte strings (np.char, h5py), text like U
        return True
    return array.dtype.kind == "f" and bool(np.all(np.mod(array, 1) == 0))


def _encode_classes(arrays: list[np.ndarray], where: str) -> Targets:
    flat = [_label_column(array, where) for array in arrays]
    labels = np.unique(np.concatenate(flat))
    if labels.dtype.kind in "iub" and np.array_equal(labels, np.arange(len(labels))):
        encoded = [array.astype(np.int64) for array in flat]
        class_labels = None
    else:
        encoded = [np.searchsorted(labels, array).astype(np.int64) for array in flat]
        class_labels = tuple(labels.tolist())
    return Targets(
        encoded[0],
        encoded[1] if len(encoded) > 1 else None,
        "classification",
        len(labels),
        class_labels,
    )


def _label_column(array: np.ndarray, where: str) -> np.ndarray:
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"The targets in {where} must be one class label per sample for classification. "
            f"Got an array of shape {array.shape} instead."
        )
    if array.dtype.kind == "f":
        fractional = np.flatnonzero(np.mod(array, 1) != 0)
        if fractional.size:
            row = int(fractional[0])
            raise ValueError(
                f"The targets in {where} must be whole numbers for classification. Got "
                f"{array[row].item()!r} in row {row} instead; use task='regression'."
            )
        if np.all(np.abs(array) < 2.0**63):
            return array.astype(np.int64)
        # Whole numbers beyond int64 (1e20): the cast made them all -2**63, one class.
        # Kept as floats, they are re-encoded like any labels other than 0..K-1.
        return array
    if array.dtype.kind == "O":
        return array.astype(str)
    return array


def _first(array: np.ndarray) -> Any:
    value = array.ravel()[0]
    return value.item() if isinstance(value, np.generic) else value
