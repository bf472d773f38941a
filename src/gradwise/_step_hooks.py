"""Optimizer step hooks that are part of what is trained, not observers of it.

gradwise's constraints (``MaxNorm.attach``, ``prune.attach_masks``) act through optimizer
step hooks, as observers do (an EMA, a monitor). Code that takes throwaway steps (the LR
range test) turns observers off and keeps constraints on: a constraint's hook is marked
here.
"""

from __future__ import annotations

from typing import TypeVar

Hook = TypeVar("Hook")

_MARK = "_gradwise_constrains_the_step"


def constraint(hook: Hook) -> Hook:
    """Mark ``hook`` (a function) as a constraint on the step; returns it."""
    setattr(hook, _MARK, True)
    return hook


def is_constraint(hook: object) -> bool:
    """Whether ``hook`` was marked by :func:`constraint`."""
    return getattr(hook, _MARK, False) is True
