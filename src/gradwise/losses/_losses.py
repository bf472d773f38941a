"""Training losses by name, with the value each takes at chance."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gradwise._validation import NON_NEGATIVE, POSITIVE_INT, Interval, OneOf, check

Loss = Callable[[Tensor, Tensor], Tensor]

LOSS_NAMES = ("cross_entropy", "hinge", "mse")

#: The class index that cross-entropy leaves out (``F.cross_entropy``'s default, kept).
_IGNORE_INDEX = -100


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
    _check_class_range("multiclass_hinge", targets, scores, class_dim=1)
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


def _check_class_range(
    owner: str,
    targets: Tensor,
    scores: Tensor,
    class_dim: int,
    ignore_index: int | None = None,
    scores_name: str = "scores",
) -> None:
    """Refuse integer targets outside ``[0, C)``, C the size of ``scores``' class dimension.

    Torch's own errors for these are "index 10 is out of bounds" (CPU) or a device-side
    assert that ends the CUDA context (GPU), neither naming the labels as the cause.
    """
    # The check reads the batch's min and max on the host. For a CUDA tensor that read
    # waits for the GPU to finish all queued work: a sync on every call, which torch's own
    # losses avoid (their kernels assert on the device instead). So only CPU targets are
    # checked; elsewhere torch's device assert remains (docs/losses.md says so).
    # is_cpu, not device.type: 0.05 us against 0.25 us (one thread).
    if not targets.is_cpu or targets.numel() == 0:  # aminmax refuses an empty tensor
        return
    low, high = _bounds(targets)
    if ignore_index is not None and ignore_index in (low, high):
        kept = targets[targets != ignore_index]  # a second pass only when some are ignored
        if kept.numel() == 0:
            return
        low, high = _bounds(kept)
    num_classes = scores.shape[class_dim]
    if low >= 0 and high < num_classes:
        return
    allowed = f"[0, {num_classes - 1}]"
    if ignore_index is not None:
        allowed += f" or {ignore_index} (ignored)"
    raise ValueError(
        f"The 'targets' parameter of {owner} must be class indices in {allowed}, as the "
        f"{scores_name} have {num_classes} classes (dimension {class_dim}). Got targets "
        f"with min {low} and max {high} instead, so check the label encoding (indices "
        "0..C-1, not 1..C, nor -1 for unlabeled) or the model's output width (one column "
        "per class)."
    )


def _bounds(targets: Tensor) -> tuple[int, int]:
    # One pass for both: 1.4 us for (128,) int64 labels, one thread; min() and max() with
    # two item() calls take 1.9 us.
    minimum, maximum = torch.aminmax(targets)
    return int(minimum), int(maximum)


def mean_squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error; class-index targets are compared as one-hot vectors.

    For regression the outputs may be (batch, 1) against (batch,) targets; other shapes
    must match (no broadcasting). Against a single output column, integer targets are
    regression values (counts, ratings), not class indices: one class has no one-hot
    reading.

    Example:
        >>> import torch
        >>> from gradwise.losses import mean_squared_error
        >>> mean_squared_error(torch.zeros(2, 4), torch.tensor([0, 3])).item()
        0.25
    """
    shape = outputs.shape  # for the error: what the caller passed, before any squeeze
    class_indices = not targets.is_floating_point() and shape[-1:] != (1,)
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
        _check_class_range(
            "mean_squared_error", targets, outputs, outputs.dim() - 1, scores_name="outputs"
        )
        # One-hot rows by scatter, straight in the outputs' dtype: F.one_hot(...).to(dtype)
        # re-reads min and max on the CPU (checked above) and converts; 3.6 us against
        # 5.0 us for (128, 10), one thread.
        index = targets.long().unsqueeze(-1)
        targets = torch.zeros_like(outputs).scatter_(-1, index, 1.0)
    elif not targets.is_floating_point():
        targets = targets.to(outputs.dtype)  # integer regression values
    return F.mse_loss(outputs, targets)


def cross_entropy(scores: Tensor, targets: Tensor) -> Tensor:
    """``F.cross_entropy``, taking class indices of any integer dtype (torch wants int64).

    Class indices must lie in ``[0, C)`` or be -100 (torch's ``ignore_index``), whose
    samples are left out; the scores' class dimension is 1, or 0 for one unbatched row.
    """
    if not targets.is_floating_point():
        if targets.dtype != torch.int64:
            targets = targets.long()  # the call costs ~0.5 us even when it changes nothing
        # Anything but a tensor of at least one dimension goes to torch unchecked: its
        # TypeError for a tuple of outputs is what the sanity checks recognize.
        if isinstance(scores, Tensor) and scores.dim() > 0:
            class_dim = 1 if scores.dim() > 1 else 0
            _check_class_range("cross_entropy", targets, scores, class_dim, _IGNORE_INDEX)
    return F.cross_entropy(scores, targets, ignore_index=_IGNORE_INDEX)


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


def accuracy(outputs: Tensor, targets: Tensor, *, ignore_index: int = _IGNORE_INDEX) -> Tensor:
    """Fraction of samples whose highest score is the target class (a 0-d tensor).

    Targets are class indices (batch,), or one-hot or probability rows (batch, classes)
    (Mixup's), whose class is their argmax. A class index equal to ``ignore_index`` (-100,
    cross-entropy's default) leaves its sample out of the hits and of the count, as
    cross-entropy leaves it out of its mean; with every sample left out the accuracy is
    NaN, as that mean is. Rows are never left out.

    Example:
        >>> import torch
        >>> from gradwise.losses import accuracy
        >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 0])).item()
        0.5
        >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 1.0]]), torch.tensor([0, -100])).item()
        1.0
    """
    check("ignore_index", "accuracy", ignore_index, Interval(kind="int"))
    if outputs.dim() < 2:  # argmax over dim 1 would raise a bare IndexError
        raise ValueError(
            f"The 'outputs' parameter of accuracy must be (batch, classes) scores. Got "
            f"shape {tuple(outputs.shape)} instead; for one logit per sample (a binary "
            "classifier), compare (outputs > 0) with the targets."
        )
    if targets.shape == outputs.shape:  # one-hot or probability rows
        return (outputs.argmax(dim=1) == targets.argmax(dim=1)).to(torch.float32).mean()
    if targets.shape != outputs.shape[:1]:  # == would broadcast
        raise ValueError(
            f"The 'targets' parameter of accuracy must be class indices of shape "
            f"({outputs.shape[0]},) or rows of the outputs' shape {tuple(outputs.shape)}. "
            f"Got shape {tuple(targets.shape)} instead."
        )
    correct, counted = count_correct(outputs, targets, ignore_index)
    return correct.to(torch.float32) / counted  # 0 / 0 is NaN


def count_correct(
    outputs: Tensor, targets: Tensor, ignore_index: int = _IGNORE_INDEX
) -> tuple[Tensor, Tensor]:
    """The right argmax predictions and the samples counted, as 0-d int64 tensors left on
    the device (no host sync): class-index ``targets`` (batch,) equal to ``ignore_index``
    are left out of both, as cross-entropy leaves them out of its mean. Sums of both over
    batches give the accuracy of them all (a mean of batch accuracies would not)."""
    counted = targets != ignore_index  # (batch,)
    hits = outputs.argmax(dim=1) == targets
    if ignore_index >= 0:  # an argmax never equals a negative index: no second pass then
        hits &= counted
    return hits.sum(), counted.sum()


def count_loss_samples(outputs: object, targets: Tensor, ignore_index: int) -> Tensor | None:
    """The number of targets a mean cross-entropy averages over, as a 0-d int64 tensor left
    on the device (no host sync): for class indices (integer ``targets`` with one dimension
    less than the ``outputs``, whose class dimension is 1, or 0 unbatched), those not equal
    to ``ignore_index``. None for other targets (probability rows, regression values, one
    output column), whose mean counts every sample. A batch's mean loss weighted by this
    count sums to the mean over the samples of many batches; with none counted the mean is
    NaN (0 / 0) and its gradients zero, and the weight is 0."""
    if not isinstance(outputs, Tensor) or targets.is_floating_point() or targets.is_complex():
        return None
    if targets.dtype == torch.bool:
        return None
    class_dim = 1 if outputs.dim() > 1 else 0
    if outputs.dim() != targets.dim() + 1 or outputs.shape[class_dim] == 1:
        return None
    return (targets != ignore_index).sum()


def ignore_index_of(loss_fn: object) -> int:
    """The class index ``loss_fn`` leaves out, for an accuracy that leaves out the same
    samples: its ``ignore_index`` attribute (``nn.CrossEntropyLoss``, ``nn.NLLLoss``) or
    keyword (a ``functools.partial`` of ``F.cross_entropy`` or ``F.nll_loss``), else -100,
    torch's default (a plain function's own setting is invisible here)."""
    if isinstance(loss_fn, functools.partial):
        ignore_index = loss_fn.keywords.get("ignore_index")
    else:
        ignore_index = getattr(loss_fn, "ignore_index", None)
    if isinstance(ignore_index, int) and not isinstance(ignore_index, bool):
        return ignore_index
    return _IGNORE_INDEX
