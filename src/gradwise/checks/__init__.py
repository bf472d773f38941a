"""Checks to run before training: the gradient check and the sanity checks of the lectures.

:func:`gradcheck` compares the analytic gradient with centred differences on sampled
coordinates of every parameter tensor, with kinks told apart from failures.
:func:`sanity` runs the lectures' sanity checks (loss at chance, regularization raises the
loss, a tiny subset can be overfitted, every parameter gets a gradient, samples do not mix,
some learning rate lowers the loss), each also a ``check_*`` function of its own.
"""

from gradwise.checks._gradcheck import CoordinateCheck, GradcheckReport, TensorCheck, gradcheck
from gradwise.checks._sanity import (
    CHECK_NAMES,
    CheckResult,
    OptimizerFactory,
    PenaltyFactory,
    SanityReport,
    check_all_parameters_get_gradients,
    check_initial_loss,
    check_learning_rate_sweep,
    check_overfit_tiny_subset,
    check_regularization_raises_loss,
    check_samples_do_not_mix,
    sanity,
)

__all__ = [
    "CHECK_NAMES",
    "CheckResult",
    "CoordinateCheck",
    "GradcheckReport",
    "OptimizerFactory",
    "PenaltyFactory",
    "SanityReport",
    "TensorCheck",
    "check_all_parameters_get_gradients",
    "check_initial_loss",
    "check_learning_rate_sweep",
    "check_overfit_tiny_subset",
    "check_regularization_raises_loss",
    "check_samples_do_not_mix",
    "gradcheck",
    "sanity",
]
