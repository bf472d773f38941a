"""How torch.optim wraps an algorithm's scaling: maximize, weight decay, learning rate."""

from __future__ import annotations

from gradwise.optim._learning_rate import scale, scale_by_learning_rate
from gradwise.optim._transform import GradientTransform, chain
from gradwise.optim._weight_decay import add_decayed_weights, add_l2
from gradwise.schedules import Schedule


def torch_optim_chain(
    *scaling: GradientTransform,
    lr: float | Schedule,
    weight_decay: float = 0.0,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> GradientTransform:
    """``scaling`` between torch.optim's standard steps, as one chain.

    ``maximize`` negates the gradient first; ``weight_decay`` is L2 added to the gradient
    before the scaling (torch's default) or, with ``decoupled_weight_decay``, added to the
    update after it (AdamW's form); the learning rate comes last. Transforms whose
    coefficient is zero are left out, so the reference path does no useless work.
    """
    transforms = [scale(-1.0)] if maximize else []
    if weight_decay != 0 and not decoupled_weight_decay:
        transforms.append(add_l2(weight_decay))
    transforms.extend(scaling)
    if weight_decay != 0 and decoupled_weight_decay:
        transforms.append(add_decayed_weights(weight_decay))
    transforms.append(scale_by_learning_rate(lr))
    return chain(*transforms)
