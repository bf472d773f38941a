"""Curvature of the loss: Hessian-vector products, spectra, and the stable learning rate.

:class:`Hessian` is the Hessian of a model's loss on one batch (or averaged over several)
as a linear operator, by double backward; it never changes the model. On it:
:func:`eigenvalues` by Lanczos with full reorthogonalization, :func:`trace` by Hutchinson
or Hutch++, :func:`eigenvalue_density` by stochastic Lanczos quadrature,
:func:`condition_number`, :func:`find_negative_curvature` (saddle points), and
:func:`max_stable_lr`, the 2 / lambda_max bound of lecture 3 (2 (1 + momentum) /
lambda_max with heavy ball), which :func:`check_learning_rate` turns into a
LEARNING_RATE_TOO_HIGH diagnosis.
"""

from gradwise.curvature._functions import (
    condition_number,
    eigenvalue_density,
    eigenvalues,
    find_negative_curvature,
    trace,
)
from gradwise.curvature._hessian import Hessian, hessian_vector_product
from gradwise.curvature._learning_rate import check_learning_rate, max_stable_lr, stable_lr_bound
from gradwise.curvature._spectrum import EigenvalueDensity, NegativeCurvature

__all__ = [
    "EigenvalueDensity",
    "Hessian",
    "NegativeCurvature",
    "check_learning_rate",
    "condition_number",
    "eigenvalue_density",
    "eigenvalues",
    "find_negative_curvature",
    "hessian_vector_product",
    "max_stable_lr",
    "stable_lr_bound",
    "trace",
]
