"""Random-number-generator state, saved in checkpoints so a resumed run draws the same numbers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn


def get_rng_state(device: torch.device, modules: Iterable[nn.Module | None]) -> dict[str, Any]:
    """torch's global generators (dropout draws from them) and each augmentation's own."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    state["modules"] = [_module_states(module) for module in modules]
    return state


def set_rng_state(
    state: Mapping[str, Any], device: torch.device, modules: Iterable[nn.Module | None]
) -> None:
    """Restore what :func:`get_rng_state` saved (the modules in the same order)."""
    torch.set_rng_state(state["torch"])
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
