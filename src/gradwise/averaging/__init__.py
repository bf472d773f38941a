"""Iterate averaging: an average of the weights along training, evaluated beside them.

The lectures' remedy for a fluctuating training curve is to decay the learning rate or to
average the iterates. :class:`ExponentialMovingAverage` (EMA, with an optional warmup of
its decay), :class:`PolyakAverage` (the uniform Polyak-Ruppert average from a chosen step)
and :class:`StochasticWeightAverage` (SWA, Izmailov et al. 2018, with
:func:`swa_schedule` for its cyclical or constant learning rate) keep their average in a
:class:`torch.optim.swa_utils.AveragedModel`. Call ``update(model, step)`` after each
optimizer step, :meth:`WeightAverage.recompute_batch_norm` before evaluating the average,
and save ``state_dict()`` with your checkpoints. ``Trainer(..., averaging=...)`` and a run
config's ``averaging`` section do all of that.
"""

from gradwise.averaging._average import (
    ExponentialMovingAverage,
    PolyakAverage,
    StochasticWeightAverage,
    WeightAverage,
)
from gradwise.averaging._schedule import swa_schedule

__all__ = [
    "ExponentialMovingAverage",
    "PolyakAverage",
    "StochasticWeightAverage",
    "WeightAverage",
    "swa_schedule",
]
