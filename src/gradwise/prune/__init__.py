"""Magnitude pruning with masks that stay applied, and the lottery ticket procedure.

:func:`magnitude_masks` prunes the smallest weights (globally or per layer) of the tensors
:func:`prunable_parameters` picks; :class:`Masks` holds the result by parameter name;
:func:`attach_masks` (or the :class:`Pruning` callback) keeps pruned weights and their
optimizer state at exactly zero under any optimizer; :func:`iterative_magnitude_pruning`
runs Frankle & Carbin's train-prune-rewind rounds with the random-reinit control, and
``gradwise prune`` does the same with one run folder per round.
"""

from gradwise.prune._callbacks import SPARSITY_FILE, Pruning, WeightSnapshot, sparsity_report
from gradwise.prune._enforce import MaskHandle, attach_masks
from gradwise.prune._lottery import RoundResult, iterative_magnitude_pruning, prune_round
from gradwise.prune._masks import Masks, magnitude_masks, prunable_parameters
from gradwise.prune._ticket import Ticket

__all__ = [
    "SPARSITY_FILE",
    "MaskHandle",
    "Masks",
    "Pruning",
    "RoundResult",
    "Ticket",
    "WeightSnapshot",
    "attach_masks",
    "iterative_magnitude_pruning",
    "magnitude_masks",
    "prunable_parameters",
    "prune_round",
    "sparsity_report",
]
