"""Weight decay, decoupled or as an L2 term, and the usual mask of what to decay."""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn

from gradwise._validation import NON_NEGATIVE, check
from gradwise.optim._transform import GradientTransform, stateless

_NORMALIZATION_LAYERS = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


def add_decayed_weights(weight_decay: float | Tensor) -> GradientTransform:
    r"""Decoupled weight decay: :math:`u \leftarrow u + \lambda w`.

    Placed after the adaptive scaling and before :func:`scale_by_learning_rate`, the
    parameters shrink by :math:`\eta\lambda w` per step, independently of the gradient's
    scaling, as in AdamW (Loshchilov & Hutter 2019; torch.optim.AdamW scales the decay by
    the learning rate the same way).
    """
    if not isinstance(weight_decay, Tensor):
        check("weight_decay", "add_decayed_weights", weight_decay, NON_NEGATIVE)
    return stateless(
        "add_decayed_weights",
        lambda updates, params: [
            u + weight_decay * p for u, p in zip(updates, params, strict=True)
        ],
    )


def add_l2(weight_decay: float | Tensor) -> GradientTransform:
    r"""L2 regularization added to the gradient: :math:`g \leftarrow g + \lambda w`.

    Placed first in a chain, this is torch.optim's ``weight_decay`` for SGD, Adam and the
    others: the decay term then goes through the adaptive scaling like the gradient does.
    """
    if not isinstance(weight_decay, Tensor):
        check("weight_decay", "add_l2", weight_decay, NON_NEGATIVE)
    return stateless(
        "add_l2",
        lambda updates, params: [
            g + weight_decay * p for g, p in zip(updates, params, strict=True)
        ],
    )


class WeightDecayMask:
    """Predicate on parameters: True for the ones weight decay should apply to.

    Built by :func:`weight_decay_mask`; use it with :func:`gradwise.optim.masked`.
    """

    def __init__(self, decayed: Iterable[Tensor], not_decayed: Iterable[Tensor]) -> None:
        self._decayed_ids = frozenset(id(p) for p in decayed)
        self.num_decayed = len(self._decayed_ids)
        self.num_not_decayed = len({id(p) for p in not_decayed})

    def __call__(self, param: Tensor) -> bool:
        # A complex parameter reaches the transforms as its view_as_real view.
        return id(param) in self._decayed_ids or (
            param._base is not None and id(param._base) in self._decayed_ids
        )

    def __repr__(self) -> str:
        return (
            f"WeightDecayMask(decayed={self.num_decayed} tensors, "
            f"not_decayed={self.num_not_decayed} tensors)"
        )


def weight_decay_mask(model: nn.Module) -> WeightDecayMask:
    """Decay weight matrices and kernels; spare biases, normalization parameters and 1-D tensors.

    The convention of most large-scale recipes (BERT, ViT, GPT-2): decay shrinks the
    weights that multiply activations; decaying a bias or a normalization scale only
    fights the normalization.

    Example:
        >>> import torch
        >>> from gradwise.optim import add_decayed_weights, masked, weight_decay_mask
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8))
        >>> decay = masked(add_decayed_weights(1e-2), weight_decay_mask(model))
        >>> weight_decay_mask(model)
        WeightDecayMask(decayed=1 tensors, not_decayed=3 tensors)
    """
    decayed: list[Tensor] = []
    not_decayed: list[Tensor] = []
    for module in model.modules():
        is_normalization = isinstance(module, _NORMALIZATION_LAYERS)
        for param in module.parameters(recurse=False):
            if is_normalization or param.ndim <= 1:
                not_decayed.append(param)
            else:
                decayed.append(param)
    return WeightDecayMask(decayed, not_decayed)
