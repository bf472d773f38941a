"""A model's loss as one module for ``torch.func.functional_call``, and the check that
``loss_fn`` reads the parameters it penalizes from the model.

Shared by gradwise.curvature (the Hessian differentiates the loss in swapped-in leaves)
and gradwise.landscape (the loss at swapped-in points of parameter space): both swap the
parameters for the model's forward pass and ``loss_fn`` alike, and both refuse a loss
that reaches the parameters through tensors held from before the call, which do not
follow the swap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

LossFunction = Callable[[Any, Any], Tensor]


class Objective(nn.Module):
    """``loss_fn(model(inputs), targets)`` as one module, so that ``functional_call`` swaps
    the parameters for the model's forward pass and ``loss_fn`` alike."""

    def __init__(self, model: nn.Module, loss_fn: LossFunction) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = (loss_fn,)  # in a tuple: a loss that is a Module stays unregistered

    def forward(self, inputs: Tensor, targets: Any, cut_outputs: bool) -> tuple[Any, Any]:
        outputs = self.model(inputs)
        if cut_outputs:
            if not isinstance(outputs, Tensor):
                return None, outputs
            outputs = outputs.detach().requires_grad_(True)
        return self.loss_fn[0](outputs, targets), outputs


def parameters_reached(loss: Tensor, parameters: Sequence[Tensor]) -> list[int]:
    """The indices of ``parameters`` that ``loss``'s autograd graph reaches (as leaves).

    A walk over the graph's nodes, not a backward pass: cheap next to the forward pass."""
    if loss.grad_fn is None:
        return []
    wanted = {id(parameter): index for index, parameter in enumerate(parameters)}
    found: set[int] = set()
    seen = set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # an AccumulateGrad node: a leaf
        if variable is not None and id(variable) in wanted:
            found.add(wanted[id(variable)])
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return sorted(found)


def held_parameters_error(owner: str, names: Sequence[str], consequence: str) -> ValueError:
    """The error for a ``loss_fn`` whose graph reaches the parameters ``names`` through
    tensors held from before the call (found by :func:`parameters_reached`), which do not
    follow the parameters swapped in; ``consequence`` says what that would spoil."""
    return ValueError(
        f"The 'loss_fn' parameter of {owner} must read the model's parameters from the model "
        "when it is called (model.parameters(), model.<name>, l2_penalty(model, ...)). Got a "
        f"loss that reaches {', '.join(map(repr, names))} through tensors held from before "
        "the call (a list of model.parameters(), a gradwise.regularize.Penalty), "
        f"{consequence}; read them from the model inside loss_fn instead."
    )
