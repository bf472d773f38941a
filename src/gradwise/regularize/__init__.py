"""Regularization: weight penalties, max-norm, early stopping, augmentation, layer choice.

Penalties (:func:`l1_penalty`, :func:`l2_penalty`, :class:`Penalty`) are added to the
loss; :func:`max_norm_` and :class:`MaxNorm` project weights after optimizer steps;
:class:`EarlyStopping` watches a metric across epochs; the augmentations are seeded
``nn.Module``\\ s for image (N, C, H, W) and signal (N, C, L) batches, off in eval mode;
:func:`normalization` and :func:`dropout` pick torch.nn layers by name for model builders.
"""

from gradwise.regularize._augmentation import (
    GaussianNoise,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRotation,
    RandomShift,
)
from gradwise.regularize._early_stopping import EarlyStopping
from gradwise.regularize._layers import NORMALIZATION_KINDS, dropout, normalization
from gradwise.regularize._max_norm import MaxNorm, max_norm_
from gradwise.regularize._mixup import Mixup
from gradwise.regularize._penalties import Penalty, l1_penalty, l2_penalty, penalized_parameters

__all__ = [
    "NORMALIZATION_KINDS",
    "EarlyStopping",
    "GaussianNoise",
    "MaxNorm",
    "Mixup",
    "Penalty",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomRotation",
    "RandomShift",
    "dropout",
    "l1_penalty",
    "l2_penalty",
    "max_norm_",
    "normalization",
    "penalized_parameters",
]
