"""Data preprocessing with the scikit-learn transformer contract, on arrays and tensors.

Transformers learn their statistics in ``fit`` (from the training split only: statistics
computed on validation or test data leak information about them) and apply them in
``transform``, which never refits. They accept NumPy arrays and torch tensors of shape
``(N, D)`` or ``(N, C, ...)`` and return the same kind, device and dtype (integer inputs
give float32); all arithmetic is float64. :class:`Pipeline` chains them, and
:func:`save` / :func:`load` store fitted ones without pickle.
"""

from gradwise.preprocess._base import ConstantFeatureWarning, NotFittedError, Preprocessor
from gradwise.preprocess._io import from_state_dict, load, save
from gradwise.preprocess._pca import PCA, PCAWhiten, ZCAWhiten
from gradwise.preprocess._pipeline import Pipeline, make_pipeline
from gradwise.preprocess._scaling import MeanSubtract, MinMaxScale, Rescale, Standardize

__all__ = [
    "PCA",
    "ConstantFeatureWarning",
    "MeanSubtract",
    "MinMaxScale",
    "NotFittedError",
    "PCAWhiten",
    "Pipeline",
    "Preprocessor",
    "Rescale",
    "Standardize",
    "ZCAWhiten",
    "from_state_dict",
    "load",
    "make_pipeline",
    "save",
]
