"""A user's ``module:function`` that returns a model and/or data, so gradwise trains anything."""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from gradwise.data._dataset import Dataset, DataSplits

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_SPEC = re.compile(rf"^(?P<module>{_DOTTED}):(?P<attribute>{_DOTTED})$")
_DICT_KEYS = ("model", "data")
_DATA_FORMS = (
    "a DataSplits; a Dataset, TensorDataset or (inputs, targets) pair (the training data); "
    "or a tuple (train, test) or (train, validation, test) of those"
)
_ACCEPTED = f"an nn.Module; {_DATA_FORMS}; or a dict with keys among 'model', 'data'"


@dataclass(frozen=True)
class EntryPoint:
    """What a user entry point returned: a model, data, or both (``None`` where absent)."""

    model: nn.Module | None
    data: DataSplits | None


def load_entry_point(spec: str, **kwargs: Any) -> EntryPoint:
    """Import ``"package.module:function"``, call ``function(**kwargs)``, and read its result.

    The current working directory goes first on ``sys.path``, as with ``python -m``, so a
    file ``my_task.py`` next to the config is ``"my_task:build"``. The function may return:

    * an ``nn.Module`` (the model);
    * data: a :class:`DataSplits`; a :class:`Dataset`, a ``TensorDataset`` of two tensors,
      or an ``(inputs, targets)`` pair of tensors or arrays (the training data, with no
      validation or test split); or a tuple ``(train, test)`` or
      ``(train, validation, test)`` of those (``None`` for a missing split);
    * a dict with keys among ``"model"`` and ``"data"``.

    Splits built here take their task from the training targets (integers mean
    classification) and ``num_classes`` from the largest class index plus one.

    Args:
        spec: ``"module:function"``; the function may be a dotted path (``"m:Class.make"``).
        **kwargs: passed to the function.

    Raises:
        ValueError: a malformed spec, a module that cannot be found, a missing attribute.
        TypeError: something that is not callable, or an unexpected return value.

    Example:
        >>> from gradwise.data import load_entry_point
        >>> result = load_entry_point("torch.nn:Linear", in_features=2, out_features=1)
        >>> type(result.model).__name__, result.data
        ('Linear', None)
    """
    function = _resolve(spec)
    return _interpret(function(**kwargs), spec)


def _resolve(spec: Any) -> Any:
    match = _SPEC.match(spec) if isinstance(spec, str) else None
    if match is None or match["module"].endswith(".py"):
        hint = ""
        if isinstance(spec, str) and ".py:" in spec:
            hint = " Use the module name (my_task:build), not the file name (my_task.py:build)."
        raise ValueError(
            "The 'spec' parameter of load_entry_point must be 'module:function' (dotted "
            f"names, e.g. 'my_package.tasks:build'). Got {spec!r} instead.{hint}"
        )
    module = _import(match["module"], spec)
    target: Any = module
    for part in match["attribute"].split("."):
        if not hasattr(target, part):
            raise ValueError(
                f"The entry point {spec!r} names {part!r}, which {target.__name__!r} does not "
                "define. Check the spelling after the colon."
            )
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(
            f"The entry point {spec!r} must name a function (or other callable). Got a "
            f"{type(target).__name__} instead."
        )
    return target


def _import(module_name: str, spec: str) -> Any:
    directory = os.getcwd()
    if directory not in sys.path:
        sys.path.insert(0, directory)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise ValueError(
                f"The entry point {spec!r} names module {module_name!r}, which was not found "
                f"in the current directory ({directory}) or on sys.path."
            ) from None
        raise  # the user's module imports something that is missing: keep the traceback


def _interpret(result: Any, spec: str) -> EntryPoint:
    if isinstance(result, nn.Module):
        return EntryPoint(model=result, data=None)
    if isinstance(result, dict):
        return _interpret_dict(result, spec)
    if _is_data(result):
        return EntryPoint(model=None, data=_as_splits(result, spec))
    raise TypeError(
        f"The entry point {spec!r} must return {_ACCEPTED}. Got {_describe(result)} instead."
    )


def _interpret_dict(result: dict[Any, Any], spec: str) -> EntryPoint:
    unknown = [key for key in result if key not in _DICT_KEYS]
    if unknown:
        raise TypeError(
            f"The dict returned by entry point {spec!r} must have keys among 'model', 'data'. "
            f"Got {', '.join(repr(key) for key in unknown)} instead."
        )
    model, data = result.get("model"), result.get("data")
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(
            f"The 'model' returned by entry point {spec!r} must be an nn.Module. "
            f"Got {_describe(model)} instead."
        )
    if data is not None and not _is_data(data):
        raise TypeError(
            f"The 'data' returned by entry point {spec!r} must be {_DATA_FORMS}. "
            f"Got {_describe(data)} instead."
        )
    return EntryPoint(model=model, data=None if data is None else _as_splits(data, spec))


def _is_array(value: Any) -> bool:
    return isinstance(value, Tensor | np.ndarray)


def _is_dataset(value: Any) -> bool:
    if isinstance(value, Dataset):
        return True
    if isinstance(value, TensorDataset):
        return len(value.tensors) == 2
    return isinstance(value, tuple | list) and len(value) == 2 and all(map(_is_array, value))


def _is_data(value: Any) -> bool:
    if isinstance(value, DataSplits) or _is_dataset(value):
        return True
    if not isinstance(value, tuple | list) or len(value) not in (2, 3):
        return False
    return _is_dataset(value[0]) and all(v is None or _is_dataset(v) for v in value[1:])


def _as_dataset(value: Any) -> Dataset:
    if isinstance(value, Dataset):
        return value
    inputs, targets = value.tensors if isinstance(value, TensorDataset) else value
    return Dataset.from_arrays(inputs, targets)


def _as_named_dataset(value: Any, split: str, spec: str) -> Dataset:
    """:func:`_as_dataset`, its errors (non-finite values, say) naming the split and spec."""
    try:
        return _as_dataset(value)
    except ValueError as error:
        raise ValueError(f"The {split} data returned by entry point {spec!r}: {error}") from None


def _as_splits(data: Any, spec: str) -> DataSplits:
    if isinstance(data, DataSplits):
        return data
    if _is_dataset(data):
        parts: list[Any] = [data, None, None]
    elif len(data) == 2:
        parts = [data[0], None, data[1]]
    else:
        parts = list(data)
    train, validation, test = (
        None if part is None else _as_named_dataset(part, split, spec)
        for part, split in zip(parts, ("train", "validation", "test"), strict=True)
    )
    if train is None:  # _is_data guarantees a training set; this keeps the types honest
        raise TypeError(f"The entry point {spec!r} returned no training data.")
    return DataSplits.from_datasets(
        train, validation, test, name=spec, source=f"entry point {spec}"
    )


def _describe(value: Any) -> str:
    if isinstance(value, tuple | list):
        inner = ", ".join(type(item).__name__ for item in value[:4])
        return f"a {type(value).__name__} of {len(value)} ({inner})"
    return f"a {type(value).__name__}"
