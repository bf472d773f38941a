"""Random-number-generator state, saved in checkpoints so a resumed run draws the same numbers."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn


def get_rng_state(device: torch.device, modules: Iterable[nn.Module | None]) -> dict[str, Any]:
    """torch's global generators (dropout draws from them), each augmentation's own, and
    the global ones of Python's ``random`` and ``np.random``."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), **_global_states()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    state["modules"] = [_module_states(module) for module in modules]
    return state


def set_rng_state(
    state: Mapping[str, Any], device: torch.device, modules: Iterable[nn.Module | None]
) -> None:
    """Restore what :func:`get_rng_state` saved (the modules in the same order)."""
    torch.set_rng_state(state["torch"])
    _set_global_states(state)
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    for module, saved in zip(modules, state["modules"], strict=True):
        if module is None:
            continue
        for (_, child), child_state in zip(_seeded(module), saved, strict=True):
            child.set_rng_state(child_state)


def _module_states(module: nn.Module | None) -> list[Any]:
    if module is None:
        return []
    return [child.get_rng_state() for _, child in _seeded(module)]


def _seeded(module: nn.Module) -> list[tuple[str, Any]]:
    return [
        (name, child)
        for name, child in module.named_modules()
        if callable(getattr(child, "get_rng_state", None))
    ]


def _global_states() -> dict[str, Any]:
    """The global generators of Python's ``random`` and NumPy's ``np.random``, as tensors
    and plain data (checkpoints load with ``weights_only=True``). The Trainer draws from
    neither, but a model, loss or callback may, and a resume must continue them as well."""
    version, internal, gauss_next = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": {
            "version": version,
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
    }


def _set_global_states(state: Mapping[str, Any]) -> None:
    """Restore what :func:`_global_states` saved (older checkpoints hold neither)."""
    python = state.get("python")
    if python is not None:
        internal = tuple(int(value) for value in python["internal"].tolist())
        random.setstate((python["version"], internal, python["gauss_next"]))
    numpy_state = state.get("numpy")
    if numpy_state is not None:
        np.random.set_state({
            "bit_generator": numpy_state["bit_generator"],
            "state": {
                "key": numpy_state["key"].numpy().astype(np.uint32),
                "pos": numpy_state["pos"],
            },
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        })  # fmt: skip
