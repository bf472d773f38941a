"""The LR range test (Smith 2017): sweep the learning rate up exponentially, read the loss.

:func:`lr_find` trains a model for a few dozen minibatches with a learning rate growing
from ``start_lr`` to ``end_lr``, smooths the losses, stops when they diverge, and returns
an :class:`LRFinderResult` with the steepest-descent and min-loss/10 learning rates, the
suggested one and why. The model and optimizer are restored exactly afterwards.
:func:`analyze_sweep` re-analyzes a recorded sweep; ``gradwise lr-find CONFIG`` runs the
test on a configured run.
"""

from gradwise.lr_finder._result import (
    LRFinderResult,
    analyze_sweep,
    default_smoothing,
    smooth_losses,
)
from gradwise.lr_finder._sweep import exponential_lrs, lr_find

__all__ = [
    "LRFinderResult",
    "analyze_sweep",
    "default_smoothing",
    "exponential_lrs",
    "lr_find",
    "smooth_losses",
]
