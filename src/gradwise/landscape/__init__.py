"""Loss landscapes: linear interpolation between parameter sets and random-direction slices.

:func:`interpolate` evaluates the loss on the line between two parameter sets (Goodfellow
et al. 2015); :func:`random_directions` draws filter-normalized directions (Li et al.
2018) for :func:`slice_1d` and :func:`slice_2d`. Grid points are evaluated many at a time
with ``torch.func.vmap`` over ``functional_call``, on separate tensors: the model keeps
its parameters, buffers, train/eval modes and ``.grad``, and torch's RNG state is
restored. The results plot themselves as PNG bytes (:meth:`Landscape1D.plot_png`,
:meth:`Landscape2D.plot_contour_png`, :meth:`Landscape2D.plot_surface_png`); matplotlib is
imported only then.
"""

from gradwise.landscape._directions import random_directions
from gradwise.landscape._landscape import (
    Landscape1D,
    Landscape2D,
    interpolate,
    slice_1d,
    slice_2d,
)

__all__ = [
    "Landscape1D",
    "Landscape2D",
    "interpolate",
    "random_directions",
    "slice_1d",
    "slice_2d",
]
