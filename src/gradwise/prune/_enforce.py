"""Keeping pruned weights at exactly zero through training, under any torch optimizer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, final

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from gradwise._step_hooks import constraint
from gradwise._validation import Satisfies, check
from gradwise.prune._masks import Masks


@final
class MaskHandle:
    """What :func:`attach_masks` returns: the masks it enforces, and :meth:`remove`.

    Example:
        >>> import torch
        >>> from gradwise.prune import attach_masks, magnitude_masks
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> handle = attach_masks(model, optimizer, magnitude_masks(model, 0.5))
        >>> handle.masks.fraction_remaining(), handle.attached
        (0.5, True)
        >>> handle.remove()
        >>> handle.attached
        False
    """

    def __init__(self, masks: Masks, handles: list[RemovableHandle]) -> None:
        self.masks = masks
        self._handles = handles

    def remove(self) -> None:
        """Stop enforcing the masks (the weights keep their current values)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def attached(self) -> bool:
        """Whether the hooks are still in place."""
        return bool(self._handles)


def attach_masks(
    model: nn.Module, optimizer: torch.optim.Optimizer, masks: Mapping[str, Tensor]
) -> MaskHandle:
    r"""Keep the pruned weights of ``model`` exactly zero while ``optimizer`` trains it.

    At attach time the pruned weights, and their optimizer state, are set to zero. Then, for any
    ``torch.optim.Optimizer`` (gradwise's and torch's):

    1. each masked parameter's gradient is multiplied by its mask as autograd computes it
       (a tensor hook), and again before every ``optimizer.step()`` (a step pre-hook, for
       gradients set by hand), so whatever reads the gradient (global-norm clipping, the
       trust ratios of LARS and LAMB, monitors) sees the sparse gradient;
    2. after every step the pruned weights are set to zero again, and so is every entry of
       the optimizer's state tensors that have the parameter's shape (momentum, Adam's
       moments, Adagrad's sums, ...) at the pruned positions. Weight decay, momentum built
       before pruning and gradient noise therefore cannot move a pruned weight, and its
       state cannot carry anything into later steps.

    ``torch.nn.utils.prune`` is not used for this: its reparametrization renames the
    parameter to ``weight_orig`` (so optimizer state, checkpoints and names no longer line
    up), multiplies by the mask only in the forward pass, and leaves ``weight_orig`` and
    the optimizer's state for pruned entries free to grow under weight decay or momentum.

    Args:
        model: the model the masks' names refer to (``model.module`` under DDP).
        optimizer: the optimizer that updates the masked parameters.
        masks: ``{parameter name: bool tensor}``, e.g. a :class:`Masks`.

    Returns:
        A :class:`MaskHandle`; ``handle.remove()`` detaches every hook.

    Example:
        >>> import torch
        >>> from gradwise import optim
        >>> from gradwise.prune import attach_masks, magnitude_masks
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
        >>> optimizer = optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
        >>> handle = attach_masks(model, optimizer, magnitude_masks(model, 0.5))
        >>> for _ in range(3):
        ...     optimizer.zero_grad()
        ...     model(torch.randn(16, 4)).square().mean().backward()
        ...     optimizer.step()
        >>> int((model[0].weight == 0).sum())
        16
        >>> handle.remove()
    """
    owner = "attach_masks"
    check("model", owner, model, Satisfies(lambda v: isinstance(v, nn.Module), "an nn.Module"))
    check(
        "optimizer",
        owner,
        optimizer,
        Satisfies(lambda v: isinstance(v, torch.optim.Optimizer), "a torch.optim.Optimizer"),
    )
    masks = masks if isinstance(masks, Masks) else Masks(masks)
    parameters = masks.check_fits(model, owner)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for name, parameter in parameters.items():
        if id(parameter) not in optimized:
            raise ValueError(
                f"The masks of {owner} must be for parameters the optimizer updates. Got "
                f"{name!r}, which is in none of its param groups."
            )
    # (parameter, pruned entries) pairs; masked_fill_ writes exact zeros even over inf/NaN.
    on_device = [(p, ~masks[name].to(p.device)) for name, p in parameters.items()]
    _zero_pruned(optimizer, on_device)  # state built before pruning goes too
    # A frozen parameter gets no gradient (and register_hook refuses it); the step hooks
    # below still hold its pruned entries at zero.
    handles = [_gradient_hook(p, pruned) for p, pruned in on_device if p.requires_grad]

    def mask_gradients(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            for parameter, pruned in on_device:
                if parameter.grad is not None:
                    parameter.grad.masked_fill_(pruned, 0.0)

    def zero_pruned(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        _zero_pruned(optimizer, on_device)

    handles.append(optimizer.register_step_pre_hook(constraint(mask_gradients)))
    handles.append(optimizer.register_step_post_hook(constraint(zero_pruned)))
    return MaskHandle(masks, handles)


def _gradient_hook(parameter: nn.Parameter, pruned: Tensor) -> RemovableHandle:
    def hook(gradient: Tensor) -> Tensor:
        return gradient.masked_fill(pruned, 0.0)

    return parameter.register_hook(hook)


@torch.no_grad()
def _zero_pruned(
    optimizer: torch.optim.Optimizer, on_device: list[tuple[nn.Parameter, Tensor]]
) -> None:
    for parameter, pruned in on_device:
        parameter.masked_fill_(pruned, 0.0)
        state = optimizer.state.get(parameter)
        if not state:
            continue
        for value in state.values():
            if (
                isinstance(value, Tensor)
                and value.shape == parameter.shape
                and (value.is_floating_point() or value.is_complex())
            ):
                value.masked_fill_(pruned, 0.0)
