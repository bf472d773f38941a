"""Mixup (Zhang et al. 2018): train on convex combinations of pairs of examples."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, final

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gradwise._validation import POSITIVE, POSITIVE_INT, Either, Satisfies, check
from gradwise.regularize._augmentation import _Augmentation


@final
class Mixup(_Augmentation):
    r"""Mix each example and its target with another example of the batch.

    .. math::
        \tilde x = \lambda x + (1 - \lambda) x_{\pi}, \qquad
        \tilde y = \lambda y + (1 - \lambda) y_{\pi}, \qquad
        \lambda \sim \mathrm{Beta}(\alpha, \alpha)

    with one :math:`\lambda` per batch and :math:`\pi` a random permutation of the batch,
    as in the paper. ``mixup(x, y)`` returns ``(x_mixed, targets)``: integer class labels
    of shape (N,) become one-hot rows over ``num_classes`` before mixing, so ``targets`` are
    class probabilities of shape (N, num_classes), which ``torch.nn.functional.cross_entropy``
    takes as they are. That equals the paper's
    :math:`\lambda\,\mathrm{CE}(f(\tilde x), y) + (1 - \lambda)\,\mathrm{CE}(f(\tilde x), y_\pi)`,
    since cross-entropy is linear in its target. Floating-point targets (soft labels,
    regression values) with N rows are mixed as they are.

    In eval mode ``x`` is returned unchanged, with the same target form (one-hot rows for
    integer labels), so a training loop needs no branch. :math:`\lambda` and :math:`\pi`
    come from the module's own NumPy generator; :math:`\pi` is moved to ``x``'s device.

    Args:
        alpha: :math:`\alpha`, a finite float > 0 (the paper uses 0.1 to 0.4 on ImageNet, 1 on
            CIFAR-10; small values mix little).
        num_classes: the number of classes, an int >= 1; required for integer labels.
        seed: seeds the module's own generator, an int >= 0; None (default) draws it once
            from torch's global generator at construction.

    Reference:
        Zhang, Cisse, Dauphin & Lopez-Paz, "mixup: Beyond Empirical Risk Minimization",
        ICLR 2018.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from gradwise.regularize import Mixup
        >>> mixup = Mixup(alpha=0.2, num_classes=10, seed=0)
        >>> images, labels = torch.rand(8, 3, 32, 32), torch.randint(10, (8,))
        >>> mixed, targets = mixup(images, labels)
        >>> logits = torch.randn(8, 10)
        >>> loss = F.cross_entropy(logits, targets)
        >>> targets.shape, bool(torch.allclose(targets.sum(dim=1), torch.ones(8)))
        (torch.Size([8, 10]), True)
    """

    def __init__(self, alpha: float, num_classes: int | None = None, seed: int | None = None):
        check("alpha", "Mixup", alpha, POSITIVE)
        check("num_classes", "Mixup", num_classes, _NUM_CLASSES)
        super().__init__(seed)
        self.alpha = alpha
        self.num_classes = num_classes
        self._rng = np.random.default_rng(self._seed)

    def get_rng_state(self) -> dict[str, Any]:
        """The NumPy generator's state (plain ints and strings), for checkpoints."""
        return {"numpy": self._rng.bit_generator.state}

    def set_rng_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`get_rng_state`'s result."""
        self._rng.bit_generator.state = dict(state["numpy"])

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        self._check_batch(x, ndims=None)
        self._check_floating(x)
        targets = self._targets(x, y)
        if not self.training:
            return x, targets
        lam = float(self._rng.beta(self.alpha, self.alpha))
        permutation = torch.as_tensor(self._rng.permutation(x.shape[0]), device=x.device)
        mixed = lam * x + (1.0 - lam) * x[permutation]
        return mixed, lam * targets + (1.0 - lam) * targets[permutation]

    def _targets(self, x: Tensor, y: Tensor) -> Tensor:
        if not isinstance(y, Tensor) or y.ndim == 0 or y.shape[0] != x.shape[0]:
            got = f"a tensor of shape {tuple(y.shape)}" if isinstance(y, Tensor) else repr(y)
            raise ValueError(
                f"The 'y' parameter of Mixup must be a tensor with one row per example "
                f"({x.shape[0]}). Got {got} instead."
            )
        if y.is_floating_point():
            return y
        return self._one_hot(y, x.dtype)

    def _one_hot(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        if y.ndim != 1 or y.dtype == torch.bool or y.is_complex():
            raise ValueError(
                "The 'y' parameter of Mixup must be integer class labels of shape (N,) or "
                f"floating-point targets. Got a {y.dtype} tensor of shape {tuple(y.shape)} "
                "instead."
            )
        if self.num_classes is None:
            raise ValueError(
                "The 'num_classes' parameter of Mixup must be an int >= 1 to mix integer "
                "class labels. Got None instead."
            )
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(
                f"The 'y' parameter of Mixup must hold class labels in [0, {self.num_classes}). "
                f"Got labels from {int(y.min())} to {int(y.max())} instead."
            )
        return F.one_hot(y.long(), self.num_classes).to(dtype)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha!r}, num_classes={self.num_classes!r}, seed={self.seed!r}"


_NUM_CLASSES = Either((POSITIVE_INT, Satisfies(lambda v: v is None, "None")))
