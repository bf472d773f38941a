"""Losses by name (cross-entropy, the lectures' multiclass hinge, MSE) and their chance values."""

from gradwise.losses._losses import (
    LOSS_NAMES,
    Loss,
    accuracy,
    chance_loss,
    get_loss,
    mean_squared_error,
    multiclass_hinge,
)

__all__ = [
    "LOSS_NAMES",
    "Loss",
    "accuracy",
    "chance_loss",
    "get_loss",
    "mean_squared_error",
    "multiclass_hinge",
]
