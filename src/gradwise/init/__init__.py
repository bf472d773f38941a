"""Weight initialization: schemes for one tensor, and ``initialize`` for a whole model.

An :class:`Initializer` fills a tensor in place (``he_normal()(weight, generator=g)``); the
factories (:func:`he_normal`, :func:`xavier_uniform`, :func:`orthogonal`, ...) make them.
:func:`initialize` applies one scheme to every Linear and Conv layer of a model, takes each
layer's gain from the activation after it, sets normalization layers to weight 1 and bias
0, warns when constant weights would leave hidden units symmetric, and reports what it
did. :func:`lsuv` rescales layers to unit output variance on a batch of data.
"""

from gradwise.init._gain import calculate_gain, fan_in_and_fan_out
from gradwise.init._initialize import LayerInitialization, SymmetryWarning, initialize
from gradwise.init._initializers import (
    Initializer,
    constant,
    he_normal,
    he_uniform,
    lecun_normal,
    lecun_uniform,
    normal,
    ones,
    orthogonal,
    uniform,
    xavier_normal,
    xavier_uniform,
    zeros,
)
from gradwise.init._lsuv import lsuv

__all__ = [
    "Initializer",
    "LayerInitialization",
    "SymmetryWarning",
    "calculate_gain",
    "constant",
    "fan_in_and_fan_out",
    "he_normal",
    "he_uniform",
    "initialize",
    "lecun_normal",
    "lecun_uniform",
    "lsuv",
    "normal",
    "ones",
    "orthogonal",
    "uniform",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]
