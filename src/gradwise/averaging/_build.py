"""From a run config's ``averaging`` section to a weight average, checked against the run."""

from __future__ import annotations

from typing import Any

from torch import nn

from gradwise.averaging._average import (
    ExponentialMovingAverage,
    PolyakAverage,
    StochasticWeightAverage,
    WeightAverage,
    why_nothing_averaged,
)
from gradwise.config import ConfigError

PATH = "train.averaging"
_SWA_ONLY = ("swa_lr", "cycle_steps", "anneal_steps")


def averaging_for_run(settings: Any, model: nn.Module, total_steps: int) -> WeightAverage | None:
    """The average a config asks for (None when the section is null), or a ConfigError.

    ``settings`` is the config's ``averaging`` section (an ``AveragingConfig``); the checks
    that need the run's length are made here, before any run folder exists.
    """
    if settings is None:
        return None
    start = start_step(settings.start, total_steps)
    if settings.method == "swa":
        _check_swa(settings)
    else:
        _check_not_swa(settings)
    average = _construct(settings, model, start)
    reason = why_nothing_averaged(average, total_steps)
    if reason is not None:
        raise ConfigError(f"method {settings.method} in '{PATH}' would average nothing: {reason}")
    return average


def _construct(settings: Any, model: nn.Module, start: int) -> WeightAverage:
    every = settings.every if settings.every is not None else 1
    try:
        if settings.method == "ema":
            return ExponentialMovingAverage(
                model, settings.decay, decay_warmup=settings.decay_warmup, start=start,
                every=every, use_buffers=settings.use_buffers,
            )  # fmt: skip
        if settings.method == "polyak":
            return PolyakAverage(model, start=start, every=every, use_buffers=settings.use_buffers)
        return StochasticWeightAverage(
            model, start=start, every=settings.every, cycle_steps=settings.cycle_steps,
            anneal_steps=settings.anneal_steps, use_buffers=settings.use_buffers,
        )  # fmt: skip
    except ValueError as error:
        raise ConfigError(f"in '{PATH}': {error}") from None


def start_step(start: float, total_steps: int) -> int:
    """``start`` as a step: a fraction (< 1) of ``total_steps``, or a whole step count."""
    if start >= 1 and float(start) != int(start):
        raise ConfigError(
            f"The 'start' key in '{PATH}' must be a fraction of the run (< 1) or a whole "
            f"step count. Got {start!r} instead."
        )
    step = int(round(start * total_steps)) if start < 1 else int(start)
    if step >= total_steps:
        raise ConfigError(
            f"The 'start' key in '{PATH}' must come before the end of the run ({total_steps} "
            f"steps): a fraction < 1 or a step count < {total_steps}. Got {start!r} instead."
        )
    return step


def _check_not_swa(settings: Any) -> None:
    for key in _SWA_ONLY:
        value = getattr(settings, key)
        if value is not None and not (key == "anneal_steps" and value == 0):  # its default
            raise ConfigError(
                f"'{key}' in '{PATH}' applies to method swa only (method is "
                f"{settings.method}); remove it or set method: swa"
            )


def _check_swa(settings: Any) -> None:
    if (settings.every is None) == (settings.cycle_steps is None):
        raise ConfigError(
            f"method swa in '{PATH}' needs exactly one of 'every' (average every k steps "
            "with a constant learning rate) and 'cycle_steps' (a cyclical learning rate, "
            f"averaged at the end of each cycle). Got every={settings.every!r}, "
            f"cycle_steps={settings.cycle_steps!r}"
        )
    if settings.cycle_steps is not None and settings.swa_lr is None:
        raise ConfigError(
            f"'cycle_steps' in '{PATH}' needs 'swa_lr', the learning rate at the end of "
            "each cycle (each cycle falls from the run's rate at 'start' to it)"
        )
    if settings.cycle_steps is not None and settings.anneal_steps:
        raise ConfigError(
            f"'anneal_steps' in '{PATH}' applies to a constant SWA learning rate, not to "
            "'cycle_steps'; set it to 0"
        )
    if settings.anneal_steps and settings.swa_lr is None:
        raise ConfigError(f"'anneal_steps' in '{PATH}' needs 'swa_lr', the rate to anneal to")
