"""Fitted preprocessors as plain tensors plus parameters: state dicts and ``.npz`` files.

No pickle anywhere: a file is a NumPy ``.npz`` archive of the learned arrays plus one 0-d
string array holding the structure and constructor arguments as JSON, and it loads with
``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch

from gradwise.preprocess._base import Preprocessor, StateDict, Transformer
from gradwise.preprocess._pca import PCA, PCAWhiten, ZCAWhiten
from gradwise.preprocess._pipeline import Pipeline
from gradwise.preprocess._scaling import MeanSubtract, MinMaxScale, Rescale, Standardize

_CLASSES: dict[str, type[Transformer]] = {
    cls.__name__: cls
    for cls in (Rescale, MeanSubtract, Standardize, MinMaxScale, PCA, PCAWhiten, ZCAWhiten)
}
_FORMAT = "gradwise.preprocess/1"
_HEADER = "__gradwise_preprocess__"


def from_state_dict(state: Mapping[str, Any]) -> Preprocessor:
    """Rebuild a transformer or pipeline from its ``state_dict()``.

    The result transforms exactly as the original did (bit for bit on the same machine),
    and, like any transformer, returns the kind of its input (array or tensor) whatever it
    was fitted on. Pipeline steps come back as ``(name, transformer)`` pairs. The result
    holds copies of the state's tensors: editing one leaves the other alone.

    Example:
        >>> import numpy as np
        >>> from gradwise.preprocess import Standardize, from_state_dict
        >>> scaler = Standardize().fit(np.array([[1.0], [3.0]]))
        >>> from_state_dict(scaler.state_dict()).transform(np.array([[5.0]]))
        array([[3.]])
    """
    if not isinstance(state, Mapping) or not {"name", "params", "tensors"} <= state.keys():
        raise ValueError(
            "from_state_dict expects a mapping with keys 'name', 'params' and 'tensors', as "
            f"returned by state_dict(). Got {type(state).__name__} instead."
        )
    name = state["name"]
    if name == "Pipeline":
        names, steps = state["params"]["names"], state.get("steps", [])
        return Pipeline([(n, from_state_dict(s)) for n, s in zip(names, steps, strict=True)])
    if name not in _CLASSES:
        known = ", ".join(sorted([*_CLASSES, "Pipeline"]))
        raise ValueError(f"from_state_dict knows {known}. Got a state of {name!r} instead.")
    transformer = _CLASSES[name](**state["params"])
    transformer._load_tensors(state["tensors"])
    return transformer


def save(preprocessor: Preprocessor, path: str | os.PathLike[str]) -> None:
    """Write a transformer or pipeline (fitted or not) to ``path`` as a ``.npz`` archive.

    The archive holds the learned arrays and one JSON string with the structure and
    constructor arguments; :func:`load` reads it back without pickle. ``path`` is used
    exactly as given (no ``.npz`` suffix is added).

    Example:
        >>> import tempfile, torch
        >>> from gradwise.preprocess import ZCAWhiten, load, save
        >>> data = torch.randn(100, 4)
        >>> zca = ZCAWhiten().fit(data)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     save(zca, f"{folder}/zca.npz")
        ...     loaded = load(f"{folder}/zca.npz")
        >>> torch.equal(loaded.transform(data), zca.transform(data))
        True
    """
    if not isinstance(preprocessor, Preprocessor):
        raise TypeError(
            "save expects a gradwise.preprocess transformer or pipeline. "
            f"Got {type(preprocessor).__name__} instead."
        )
    arrays: dict[str, npt.NDArray[Any]] = {}
    header = _pack(preprocessor.state_dict(), "", arrays)
    header["format"] = _FORMAT
    arrays[_HEADER] = np.array(json.dumps(header, default=_plain))
    with open(path, "wb") as file:
        # (numpy < 2.1 has no allow_pickle= here; every array is float64, int64 or str.)
        np.savez(file, **cast(dict[str, Any], arrays))


def load(path: str | os.PathLike[str]) -> Preprocessor:
    """Read a transformer or pipeline written by :func:`save` (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as archive:
        if _HEADER not in archive.files:
            raise ValueError(
                f"{os.fspath(path)!r} is not a gradwise.preprocess file: it has no "
                f"{_HEADER!r} entry. Write such files with gradwise.preprocess.save."
            )
        header = json.loads(archive[_HEADER].item())
        if header.get("format") != _FORMAT:
            raise ValueError(
                f"{os.fspath(path)!r} has format {header.get('format')!r}; this version of "
                f"gradwise reads {_FORMAT!r}."
            )
        state = _unpack(header, archive)
    return from_state_dict(state)


def _pack(state: StateDict, prefix: str, arrays: dict[str, npt.NDArray[Any]]) -> StateDict:
    """The state with each tensor replaced by the archive name it is stored under."""
    packed: StateDict = {"name": state["name"], "params": state["params"], "tensors": {}}
    for key, tensor in state["tensors"].items():
        packed["tensors"][key] = prefix + key
        arrays[prefix + key] = tensor.detach().cpu().numpy()
    if "steps" in state:
        packed["steps"] = [
            _pack(step, f"{prefix}{index}.", arrays) for index, step in enumerate(state["steps"])
        ]
    return packed


def _unpack(packed: StateDict, archive: Any) -> StateDict:
    params = packed["params"]
    if packed["name"] != "Pipeline":
        # JSON has no tuples; the one list-valued argument, feature_range, was a pair.
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    state: StateDict = {
        "name": packed["name"],
        "params": params,
        "tensors": {
            key: torch.from_numpy(np.array(archive[stored]))
            for key, stored in packed["tensors"].items()
        },
    }
    if "steps" in packed:
        state["steps"] = [_unpack(step, archive) for step in packed["steps"]]
    return state


def _plain(value: Any) -> Any:
    """JSON for NumPy scalars given as constructor arguments (``np.int64(10)``, say)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(
        f"save stores constructor arguments as JSON; {value!r} ({type(value).__name__}) "
        "is not a number, string, bool, None or list of those."
    )
