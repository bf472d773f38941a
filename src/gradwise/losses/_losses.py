"""Training losses by name, with the value each takes at chance."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gradwise._validation import NON_NEGATIVE, POSITIVE_INT, OneOf, check

Loss = Callable[[Tensor, Tensor], Tensor]

LOSS_NAMES = ("cross_entropy", "hinge", "mse")


def multiclass_hinge(scores: Tensor, targets: Tensor, margin: float = 1.0) -> Tensor:
    r"""The multiclass SVM loss of the lectures (Weston & Watkins), averaged over the batch.

    .. math:: L_i = \sum_{j \ne y_i} \max(0,\; s_j - s_{y_i} + \Delta)

    With all scores equal (a network at initialization) every term is :math:`\Delta`, so
    the loss at chance is :math:`(C - 1)\Delta`.

    Args:
        scores: (batch, classes) raw class scores.
        targets: (batch,) class indices, of any integer dtype (the loss has no form for
            probability targets).
        margin: :math:`\Delta`, a finite float >= 0; default 1.

    Example:
        >>> import torch
        >>> from gradwise.losses import multiclass_hinge
        >>> multiclass_hinge(torch.zeros(4, 10), torch.zeros(4, dtype=torch.long)).item()
        9.0
    """
    check("margin", "multiclass_hinge", margin, NON_NEGATIVE)
    _check_class_indices("multiclass_hinge", scores, targets)
    targets = targets.long()  # any integer dtype of class indices (gather needs int64)
    correct = scores.gather(1, targets.unsqueeze(1))  # (batch, 1)
    # relu, not clamp_min: at the kink (a margin met exactly) its gradient is 0, as in the
    # lectures' "margins > 0" and torch's multi_margin_loss; clamp_min's is 1.
    margins = F.relu(scores - correct + margin)
    margins = margins.scatter(1, targets.unsqueeze(1), 0.0)
    return margins.sum(dim=1).mean()


def _check_class_indices(owner: str, scores: Tensor, targets: Tensor) -> None:
    if scores.dim() != 2:
        raise ValueError(
            f"The 'scores' parameter of {owner} must be a (batch, classes) tensor. "
            f"Got shape {tuple(scores.shape)} instead."
        )
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(
            f"The 'targets' parameter of {owner} must be integer class indices (call "
            f".long() on integral labels; probability targets have no hinge loss). "
            f"Got a {targets.dtype} tensor instead."
        )
    if targets.shape != scores.shape[:1]:
        raise ValueError(
            f"The 'targets' parameter of {owner} must be one class index per row of "
            f"scores, shape ({scores.shape[0]},). Got shape {tuple(targets.shape)} instead."
        )


def mean_squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error; class-index targets are compared as one-hot vectors.

    For regression the outputs may be (batch, 1) against (batch,) targets; other shapes
    must match (no broadcasting).

    Example:
        >>> import torch
        >>> from gradwise.losses import mean_squared_error
        >>> mean_squared_error(torch.zeros(2, 4), torch.tensor([0, 3])).item()
        0.25
    """
    shape = outputs.shape  # for the error: what the caller passed, before any squeeze
    class_indices = not targets.is_floating_point()
    if not class_indices and outputs.dim() == targets.dim() + 1 and outputs.shape[-1] == 1:
        outputs = outputs.squeeze(-1)
    expected = outputs.shape[:-1] if class_indices else outputs.shape
    if targets.shape != expected:  # F.mse_loss would broadcast, with only a warning
        raise ValueError(
            f"The 'targets' parameter of mean_squared_error must be class indices of shape "
            f"{tuple(shape[:-1])} or float values of the outputs' shape {tuple(shape)}. "
            f"Got a {targets.dtype} tensor of shape {tuple(targets.shape)} instead."
        )
    if class_indices:
        targets = F.one_hot(targets.long(), outputs.shape[-1]).to(outputs.dtype)
    return F.mse_loss(outputs, targets)


def cross_entropy(scores: Tensor, targets: Tensor) -> Tensor:
    """``F.cross_entropy``, taking class indices of any integer dtype (torch wants int64)."""
    if targets.dtype != torch.int64 and not targets.is_floating_point():
        targets = targets.long()  # the call costs ~0.5 us even when it changes nothing
    return F.cross_entropy(scores, targets)


def get_loss(name: str, margin: float = 1.0) -> Loss:
    """The loss called ``name``: "cross_entropy", "hinge" (multiclass SVM) or "mse".

    Example:
        >>> import torch
        >>> from gradwise.losses import get_loss
        >>> get_loss("hinge")(torch.zeros(1, 3), torch.tensor([0])).item()
        2.0
    """
    check("name", "get_loss", name, OneOf(LOSS_NAMES))
    check("margin", "get_loss", margin, NON_NEGATIVE)
    if name == "cross_entropy":
        return cross_entropy
    if name == "hinge":
        # A partial, not a lambda: it pickles (spawned workers, checkpoints of a trainer)
        # like the two module-level losses.
        return functools.partial(multiclass_hinge, margin=margin)
    return mean_squared_error


def chance_loss(name: str, num_classes: int, margin: float = 1.0) -> float:
    r"""The loss of a classifier whose scores are all equal: the sanity value at init.

    Cross-entropy :math:`\ln C`; hinge :math:`(C - 1)\Delta`; MSE against one-hot targets
    with zero outputs :math:`1 / C`.

    Example:
        >>> from gradwise.losses import chance_loss
        >>> round(chance_loss("cross_entropy", 10), 4), chance_loss("hinge", 10)
        (2.3026, 9.0)
    """
    check("name", "chance_loss", name, OneOf(LOSS_NAMES))
    check("num_classes", "chance_loss", num_classes, POSITIVE_INT)
    check("margin", "chance_loss", margin, NON_NEGATIVE)
    if name == "cross_entropy":
        return math.log(num_classes)
    if name == "hinge":
        return (num_classes - 1) * margin
    return 1.0 / num_classes


def accuracy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Fraction of samples whose highest score is the target class (a 0-d tensor).

    Targets are class indices (batch,), or one-hot or probability rows (batch, classes)
    (Mixup's), whose class is their argmax.

    Example:
        >>> import torch
        >>> from gradwise.losses import accuracy
        >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 0])).item()
        0.5
    """
    if targets.shape == outputs.shape:  # one-hot or probability rows
        targets = targets.argmax(dim=1)
    elif targets.shape != outputs.shape[:1]:  # == would broadcast
        raise ValueError(
            f"The 'targets' parameter of accuracy must be class indices of shape "
            f"({outputs.shape[0]},) or rows of the outputs' shape {tuple(outputs.shape)}. "
            f"Got shape {tuple(targets.shape)} instead."
        )
    return (outputs.argmax(dim=1) == targets).to(torch.float32).mean()
