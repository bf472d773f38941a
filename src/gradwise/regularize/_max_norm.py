"""The max-norm constraint (Srivastava et al. 2014): cap each unit's incoming weight norm."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, final

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from gradwise._step_hooks import constraint
from gradwise._validation import NON_NEGATIVE_INT, POSITIVE, check
from gradwise.regularize._penalties import Parameters, _resolve


def max_norm_(parameters: Parameters, max_norm: float, dim: int = 0) -> None:
    r"""Project each unit's weight vector onto the ball of radius ``max_norm``, in place.

    For every slice :math:`w_j` of a tensor along ``dim`` (a row of a ``Linear`` weight,
    one output channel of a convolution kernel: the weights coming into unit :math:`j`)

    .. math::
        w_j \leftarrow w_j \cdot \frac{c}{\lVert w_j \rVert_2 + 10^{-7}}
        \quad \text{if } \lVert w_j \rVert_2 > c, \qquad \text{else unchanged,}

    which is ``torch.renorm(w, p=2, dim=dim, maxnorm=c)`` (used here): slices under the cap
    keep their exact bits, and a capped slice ends with norm
    :math:`c/(1 + 10^{-7}/\lVert w_j \rVert)`, just under :math:`c` (in float32 the norm
    recomputed from the stored weights can round a few ulps above it). Keras' ``MaxNorm``
    instead multiplies every slice, capped or not, by
    :math:`\min(\lVert w_j\rVert, c) / (\lVert w_j\rVert + 10^{-7})`, and its ``axis`` names
    the dimensions the norm runs over, the complement of ``dim`` here. A slice with a NaN
    norm is left as it is; in one with an infinite norm the infinite entries become NaN
    and the others 0.

    Args:
        parameters: the tensors to constrain, or a module, whose
            :func:`penalized_parameters` are used (weights, not biases or normalization).
        max_norm: :math:`c`, a finite float > 0 (Srivastava et al. found 3 to 4 good with dropout).
        dim: the dimension that indexes units, an int >= 0; default 0, the output
            dimension of torch's ``Linear`` and ``Conv`` weights.

    Reference:
        Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov, "Dropout: A Simple Way to
        Prevent Neural Networks from Overfitting", JMLR 2014, section 5.1.

    Example:
        >>> import torch
        >>> from gradwise.regularize import max_norm_
        >>> weight = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
        >>> max_norm_([weight], max_norm=1.0)
        >>> weight
        tensor([[0.6000, 0.8000],
                [0.3000, 0.4000]])
    """
    check("max_norm", "max_norm_", max_norm, POSITIVE)
    check("dim", "max_norm_", dim, NON_NEGATIVE_INT)
    tensors = _resolve("max_norm_", parameters)
    _check_dim("max_norm_", dim, tensors)
    with torch.no_grad():
        for tensor in tensors:
            tensor.renorm_(p=2, dim=dim, maxnorm=max_norm)


@final
class MaxNorm:
    """The max-norm constraint, applied after every step of an optimizer.

    ``MaxNorm(c).attach(optimizer, model)`` registers a step post-hook
    (``optimizer.register_step_post_hook``) that runs :func:`max_norm_` on the parameters
    after each ``optimizer.step()``, as Srivastava et al. do after each update. Weights are
    not projected at attach time; call :func:`max_norm_` once if the initial weights may
    exceed the cap.

    Args:
        max_norm: :math:`c`, a finite float > 0.
        dim: the dimension that indexes units, an int >= 0; default 0.

    Example:
        >>> import torch
        >>> from gradwise.regularize import MaxNorm
        >>> model = torch.nn.Linear(4, 3)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=10.0)
        >>> handle = MaxNorm(2.0).attach(optimizer, model)
        >>> model(torch.ones(8, 4)).sum().backward()
        >>> optimizer.step()
        >>> bool((model.weight.norm(dim=1) <= 2.0).all())
        True
        >>> handle.remove()  # stop constraining
    """

    def __init__(self, max_norm: float, dim: int = 0) -> None:
        check("max_norm", "MaxNorm", max_norm, POSITIVE)
        check("dim", "MaxNorm", dim, NON_NEGATIVE_INT)
        self.max_norm = max_norm
        self.dim = dim

    def __call__(self, parameters: Parameters) -> None:
        """Apply the constraint now (see :func:`max_norm_`)."""
        max_norm_(parameters, self.max_norm, self.dim)

    def attach(
        self, optimizer: torch.optim.Optimizer, parameters: Iterable[Tensor] | nn.Module
    ) -> RemovableHandle:
        """Constrain ``parameters`` after every ``optimizer.step()``; returns the hook's handle.

        Args:
            optimizer: any ``torch.optim.Optimizer`` (gradwise's included).
            parameters: the tensors to constrain, or a module (its
                :func:`penalized_parameters`). Each must be one the optimizer updates.
        """
        tensors = _resolve("MaxNorm.attach", parameters)
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for tensor in tensors:
            if id(tensor) not in optimized:
                raise ValueError(
                    "The 'parameters' parameter of MaxNorm.attach must hold tensors the "
                    f"optimizer updates. Got a tensor of shape {tuple(tensor.shape)} that is "
                    "in none of its param groups instead."
                )
        _check_dim("MaxNorm", self.dim, tensors)

        def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            max_norm_(tensors, self.max_norm, self.dim)

        return optimizer.register_step_post_hook(constraint(hook))

    def __repr__(self) -> str:
        return f"MaxNorm(max_norm={self.max_norm!r}, dim={self.dim!r})"


def _check_dim(owner: str, dim: int, tensors: list[Tensor]) -> None:
    for tensor in tensors:
        if tensor.ndim <= dim:
            raise ValueError(
                f"The 'dim' parameter of {owner} must be a dimension of every tensor. "
                f"Got {dim!r} instead, for a tensor of shape {tuple(tensor.shape)}."
            )
        if tensor.ndim < 2:  # torch.renorm's own refusal, with what to pass instead
            raise ValueError(
                f"The 'parameters' parameter of {owner} must hold weight matrices or kernels "
                f"(2 or more dimensions: a unit's weights are a slice). Got a tensor of shape "
                f"{tuple(tensor.shape)} instead; pass a module (its weights, not its biases or "
                "normalization parameters) or only its weight tensors."
            )
