"""load_dataset: built-in datasets by name, the user's files by suffix, then the splits."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradwise._validation import HALF_OPEN_UNIT_INTERVAL, Constraint, check_all
from gradwise.data import _builtin, _files, _synthetic
from gradwise.data._dataset import Dataset, DataSplits, describe
from gradwise.data._seeding import TEST_STREAM, VALIDATION_STREAM, mix_seed
from gradwise.data._source import Source
from gradwise.data._split import SEED, hold_out

_CONSTRAINTS: dict[str, Constraint] = {
    "validation_split": HALF_OPEN_UNIT_INTERVAL,
    "test_split": HALF_OPEN_UNIT_INTERVAL,
    "seed": SEED,
}


@dataclass(frozen=True)
class _Entry:
    """A loader and its keyword options (every option has a constraint)."""

    load: Callable[..., Source]
    options: Mapping[str, Constraint]


_REGISTRY: dict[str, _Entry] = {
    "mnist1d": _Entry(_builtin.load_mnist1d, {}),
    "digits": _Entry(_builtin.load_digits, {}),
    "mnist5k": _Entry(_builtin.load_mnist5k, {}),
    "spirals": _Entry(_synthetic.load_spirals, _synthetic.OPTIONS["spirals"]),
    "moons": _Entry(_synthetic.load_moons, _synthetic.OPTIONS["moons"]),
    "circles": _Entry(_synthetic.load_circles, _synthetic.OPTIONS["circles"]),
    "blobs": _Entry(_synthetic.load_blobs, _synthetic.OPTIONS["blobs"]),
    "xor": _Entry(_synthetic.load_xor, _synthetic.OPTIONS["xor"]),
    "sine": _Entry(_synthetic.load_sine, _synthetic.OPTIONS["sine"]),
}

_FILE_LOADERS: dict[str, _Entry] = {
    ".npz": _Entry(_files.load_npz, _files.OPTIONS[".npz"]),
    ".npy": _Entry(_files.load_npy, _files.OPTIONS[".npy"]),
    ".csv": _Entry(_files.load_csv, _files.OPTIONS[".csv"]),
}


def available_datasets() -> list[str]:
    """The names of the built-in datasets, sorted.

    Example:
        >>> from gradwise.data import available_datasets
        >>> "mnist1d" in available_datasets()
        True
    """
    return sorted(_REGISTRY)


def load_dataset(
    name: str | os.PathLike[str],
    *,
    validation_split: float = 0.1,
    test_split: float = 0.2,
    seed: int = 0,
    **options: Any,
) -> DataSplits:
    """Load a built-in dataset by name, or the user's data from a file, already split.

    A ``name`` ending in ``.npz``, ``.npy`` or ``.csv`` is a file path; any other name is
    looked up among :func:`available_datasets`. The test split is held out first
    (``test_split`` of all samples, unless the data ships its own: mnist1d, or ``x_test``
    in an ``.npz`` file); then ``validation_split`` of the remaining samples is held out
    for validation. Classification splits are stratified. ``0`` gives no split (``None``).

    Every seeded step is a pure function of ``seed``: the synthetic sets are generated
    from it, and the test and validation splits draw from their own streams of it, so
    the same arguments give identical splits in any process.

    Args:
        name: a built-in name (``"mnist1d"``, ``"digits"``, ``"spirals"``, ...) or a path.
        validation_split: the share of the non-test samples held out, in [0, 1).
        test_split: the share of all samples held out for testing, in [0, 1).
        seed: an int in [0, 2**32 - 1].
        **options: the loader's options, such as ``noise=0.1`` for ``spirals`` or
            ``target="label"`` for a CSV file (see docs/data.md for each loader's list).

    Raises:
        ValueError: an unknown name (with the closest match), an unknown option, a bad
            value, or a malformed file.
        FileNotFoundError: a path that is not a file.

    Example:
        >>> from gradwise.data import load_dataset
        >>> splits = load_dataset("spirals", seed=0)
        >>> splits.num_classes, splits.input_shape, len(splits.test)
        (3, (2,), 60)
    """
    check_all(
        "load_dataset",
        {"validation_split": validation_split, "test_split": test_split, "seed": seed},
        _CONSTRAINTS,
    )
    if not isinstance(name, str | os.PathLike):
        raise TypeError(
            "The 'name' parameter of load_dataset must be a dataset name or a file path. "
            f"Got {name!r} instead."
        )
    label = os.fspath(name)
    source = _load_source(label, int(seed), options)
    test = source.test
    data = source.data
    owner = f"load_dataset({label!r})"
    if test is None and test_split > 0:
        data, test = hold_out(
            data, test_split, mix_seed(int(seed), TEST_STREAM), owner=owner, parameter="test_split"
        )
    validation = None
    if validation_split > 0:
        data, validation = hold_out(
            data,
            validation_split,
            mix_seed(int(seed), VALIDATION_STREAM),
            owner=owner,
            parameter="validation_split",
            remaining=" left after the test split" if test is not None else "",
        )
    return _splits(label, source, data, validation, test)


def _load_source(name: str, seed: int, options: dict[str, Any]) -> Source:
    suffix = Path(name).suffix.lower()
    if suffix in _FILE_LOADERS:
        entry = _FILE_LOADERS[suffix]
        _check_options(name, entry, options)
        return entry.load(Path(name), **options)
    if name not in _REGISTRY:
        raise ValueError(_unknown_name_message(name))
    entry = _REGISTRY[name]
    _check_options(name, entry, options)
    return entry.load(seed, **options)


def _check_options(name: str, entry: _Entry, options: dict[str, Any]) -> None:
    owner = f"load_dataset({name!r})"
    for option in options:
        if option not in entry.options:
            valid = ", ".join(entry.options) or "none"
            close = difflib.get_close_matches(option, list(entry.options), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"{owner} got an unknown option {option!r}; its options are: {valid}.{hint}"
            )
    check_all(owner, options, entry.options)


def _unknown_name_message(name: str) -> str:
    names = available_datasets()
    close = difflib.get_close_matches(name.lower(), names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"The 'name' parameter of load_dataset must be one of {', '.join(names)}, or a path "
        f"ending in .npz, .npy or .csv. Got {name!r} instead.{hint}"
    )


def _splits(
    name: str, source: Source, train: Dataset, validation: Dataset | None, test: Dataset | None
) -> DataSplits:
    return DataSplits(
        train=train,
        validation=validation,
        test=test,
        num_classes=source.num_classes,
        input_shape=tuple(train.inputs.shape[1:]),
        task=source.task,
        name=name,
        description=describe(name, source.source, train, validation, test, source.num_classes),
        class_labels=source.class_labels,
    )
