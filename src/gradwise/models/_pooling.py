"""Max pooling over 2 (or 2x2) windows with stride 2, as elementwise maxima of strided views.

On the CPU, torch's ``max_pool1d``/``max_pool2d`` record an argmax index per output
through a generic kernel that is slower than the convolution before it: on the default
``cnn1d`` the three pools took 1.35 ms of a 3.5 ms training step, and ``max_pool2d``
over a (128, 32, 28, 28) batch takes longer than its 3x3 convolution
(``benchmarks/max_pool.py``). A window of 2 needs no kernel: its output is the
elementwise maximum of two strided views of the input, and its gradient goes to the
first of the two where it is maximal, which a boolean mask records. A 2x2 window is a
pair of rows, each pooled first.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import forward_ad

__all__ = ["HalvingMaxPool"]


class HalvingMaxPool(nn.Module):
    """``nn.MaxPool1d(2)`` or ``nn.MaxPool2d(2)``, faster on the CPU, same values and gradients.

    Each output is the maximum of a window of 2 (``spatial_dims=1``, input ``(N, C, L)``
    or ``(C, L)``) or 2x2 (``spatial_dims=2``, input ``(N, C, H, W)`` or ``(C, H, W)``)
    inputs, windows taken with stride 2; an odd last row or column is dropped, as torch
    does. The gradient of an output goes to the first of its window's maximal inputs in
    row-major order (torch's choice among ties, such as a window of ReLU zeros), so a model
    trains to the same bits as with torch's pooling layer.

    On other devices it calls torch's ``max_pool1d``/``max_pool2d``. Double backward
    (Hessian-vector products) and ``torch.func`` transforms work. A window holding a NaN
    outputs NaN, as torch does; its gradient may go to another element of the window than
    torch's (every gradient downstream of a NaN is NaN anyway).

    Args:
        spatial_dims: 1 or 2.

    Example:
        >>> import torch
        >>> from gradwise.models import HalvingMaxPool
        >>> HalvingMaxPool(1)(torch.tensor([[[1.0, 3.0, 2.0, 0.0, 5.0]]]))
        tensor([[[3., 2.]]])
    """

    def __init__(self, spatial_dims: Literal[1, 2]) -> None:
        super().__init__()
        # A type test first: True and 2.0 compare equal to 1 and 2, and 2.0 then failed in
        # forward (slice indices must be integers).
        value: object = spatial_dims
        if isinstance(value, bool) or not isinstance(value, Integral) or value not in (1, 2):
            raise ValueError(
                f"The 'spatial_dims' parameter of HalvingMaxPool must be 1 or 2. "
                f"Got {spatial_dims!r} instead."
            )
        self.spatial_dims: Literal[1, 2] = 1 if spatial_dims == 1 else 2

    def extra_repr(self) -> str:
        return f"spatial_dims={self.spatial_dims}, kernel_size=2, stride=2"

    def forward(self, inputs: Tensor) -> Tensor:
        if inputs.dim() not in (self.spatial_dims + 1, self.spatial_dims + 2):
            raise ValueError(
                f"HalvingMaxPool({self.spatial_dims}) takes inputs of "
                f"{self.spatial_dims + 1} or {self.spatial_dims + 2} dimensions "
                f"(channels{', length' if self.spatial_dims == 1 else ', height, width'}, "
                f"with or without a batch). Got shape {tuple(inputs.shape)}."
            )
        sizes = tuple(inputs.shape[-self.spatial_dims :])
        if min(sizes) < 2:  # torch's pooling refuses it too ("Invalid computed output size")
            raise ValueError(
                f"HalvingMaxPool({self.spatial_dims}) needs at least 2 positions along each "
                f"pooled dimension to take one maximum. Got shape {tuple(inputs.shape)}: "
                "pool earlier in the network, or leave this pooling out for inputs this small."
            )
        if inputs.device.type != "cpu":
            pool = F.max_pool1d if self.spatial_dims == 1 else F.max_pool2d
            return pool(inputs, 2)
        # A 2x2 window's first maximum in row-major order is the first (upper) of the
        # first maxima of its two rows: pool along the width, then along the height.
        outputs = _pair_max(inputs, -1)
        return _pair_max(outputs, -2) if self.spatial_dims == 2 else outputs


def _pair_max(inputs: Tensor, dim: int) -> Tensor:
    """Max over pairs of neighbours along ``dim`` (negative), stride 2."""
    if torch.compiler.is_compiling():
        # Dynamo cannot trace a Function that defines jvp (fullgraph=True fails), and
        # compiled code runs no forward mode.
        if torch.is_grad_enabled() and inputs.requires_grad:
            outputs, _ = _PairMax.apply(inputs, dim)
            return outputs
    # Forward mode (a dual tensor: jvp, jacfwd) needs the function too: the derivative of
    # torch.maximum splits a tie's tangent half and half, torch's pooling does not.
    elif (torch.is_grad_enabled() and inputs.requires_grad) or (
        forward_ad.unpack_dual(inputs).tangent is not None
    ):
        outputs, _ = _PairMaxForwardMode.apply(inputs, dim)
        return outputs
    first, second = _pairs(inputs, dim)
    return torch.maximum(first, second)


def _pairs(inputs: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """The first and second elements of each pair along ``dim``, as strided views.

    An odd last element is in no pair, as in torch's pooling.
    """
    pairs = inputs.shape[dim] // 2
    windows = inputs.narrow(dim, 0, 2 * pairs).unflatten(dim, (pairs, 2))
    return windows.select(dim, 0), windows.select(dim, 1)


class _PairMax(torch.autograd.Function):
    """Max over pairs along a dimension; the gradient goes to the first of a tied pair.

    Returns the maxima and the route: two masks shaped like the maxima, in the inputs'
    dtype, 1 where the pair's first (second) element takes the gradient (a NaN pair's
    goes to its second element).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(inputs: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        first, second = _pairs(inputs, dim)
        takes_first = first >= second
        # Masks in the inputs' dtype: multiplying by a boolean mask converts it each time.
        route = torch.stack((takes_first, ~takes_first)).to(inputs.dtype)
        return torch.maximum(first, second), route

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        source, dim = inputs
        ctx.dim = dim
        ctx.length = source.shape[dim]
        ctx.save_for_backward(output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, output_grad: Tensor, _route_grad: Tensor | None) -> tuple[Tensor, None]:
        (route,) = ctx.saved_tensors
        to_first, to_second = output_grad * route[0], output_grad * route[1]
        if ctx.dim == -1 and output_grad.dtype in _COMPLEX_OF:
            # Interleaving two tensors along the last dimension (stack) copies with an
            # inner loop of 2; a complex number is such an interleaved pair, built by a
            # vectorized kernel (3x faster on (128, 32, 20)).
            grad = torch.view_as_real(torch.complex(to_first, to_second)).flatten(-2)
        else:
            grad = torch.stack((to_first, to_second), ctx.dim).flatten(ctx.dim - 1, ctx.dim)
        if ctx.length % 2:  # the odd last element, in no pair
            padding = [0, 0] * (-ctx.dim - 1) + [0, 1]
            grad = F.pad(grad, padding)
        return grad, None


class _PairMaxForwardMode(_PairMax):
    """:class:`_PairMax` with forward mode (jvp, jacfwd, hessian = jacfwd(jacrev)).

    A subclass because Dynamo refuses to trace a Function that defines ``jvp``: compiled
    code uses :class:`_PairMax`.
    """

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        _PairMax.setup_context(ctx, inputs, output)
        ctx.save_for_forward(output[1])

    @staticmethod
    def jvp(ctx: Any, input_tangent: Tensor, _dim_tangent: None) -> tuple[Tensor, None]:
        # An output moves with the element its gradient goes to (selected, not multiplied
        # by the route: a tangent of inf times 0 would be NaN).
        (route,) = ctx.saved_tensors
        first, second = _pairs(input_tangent, ctx.dim)
        return torch.where(route[0] != 0, first, second), None


_COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}
