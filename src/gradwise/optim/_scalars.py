"""Per-step scalar arithmetic (bias corrections, momentum schedules) done once, not per element.

Eager on the CPU, scalars are Python floats computed in double precision exactly as
torch.optim computes them. When traced (torch.compile, or eagerly on an accelerator where
``.item()`` would synchronize), they are computed for the whole group as one float64
vector. Under torch.compile that vector is materialized before the element-wise kernels:
otherwise inductor inlines the scalar formula into every vectorized loop and re-evaluates
``pow`` once per 16 elements. Measured on this project's CPU machine, compiled Adam on 10M
parameters in 100 tensors: 26 ms per step with the inlined formula, 8 ms materialized.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor


@torch.library.custom_op("gradwise::materialize", mutates_args=())
def _materialize(values: Tensor) -> Tensor:
    """An opaque copy: inductor cannot inline through it, so ``values`` is computed once."""
    return values.clone()


@_materialize.register_fake
def _(values: Tensor) -> Tensor:
    return torch.empty_like(values)


def scalar(value: Tensor | float) -> Tensor | float:
    """A 0-d tensor as a number fit for scalar arithmetic (see the module docstring)."""
    if not isinstance(value, Tensor):
        return value
    if _eager_on_cpu([value]):
        return value.item()
    return value.to(_scalar_dtype(value))


def per_step(steps: Sequence[Tensor], formula: Callable[[Any], Any]) -> list[Any]:
    """``formula(t)`` for each parameter's step count ``t``, evaluated once per step.

    ``formula`` must work on a Python float and on a float64 tensor of steps alike
    (arithmetic, ``**``, comparisons). Returns one float (eager on the CPU) or one 0-d
    tensor (traced) per parameter.

    Example:
        >>> import torch
        >>> per_step([torch.tensor(1.0), torch.tensor(2.0)], lambda t: 1 - 0.9**t)
        [0.09999999999999998, 0.18999999999999995]
    """
    if not steps:
        return []
    if _eager_on_cpu(steps):
        values: dict[float, Any] = {}
        out = []
        for step in steps:
            t = step.item()
            if t not in values:
                values[t] = formula(t)
            out.append(values[t])
        return out
    return per_parameter([formula(step.to(_scalar_dtype(step))) for step in steps])


def per_parameter(values: Sequence[Any]) -> list[Any]:
    """Materialize one traced 0-d scalar per parameter as a single vector (see module docstring)."""
    tensors = [v for v in values if isinstance(v, Tensor)]
    if len(tensors) != len(values) or len({t.device for t in tensors}) > 1:
        return list(values)
    stacked = torch.stack([torch.as_tensor(v) for v in tensors])
    if torch.compiler.is_compiling():
        stacked = _materialize(stacked)
    return list(stacked.unbind())


def _eager_on_cpu(tensors: Sequence[Tensor]) -> bool:
    return not torch.compiler.is_compiling() and all(t.device.type == "cpu" for t in tensors)


def _scalar_dtype(tensor: Tensor) -> torch.dtype:
    return torch.float32 if tensor.device.type == "mps" else torch.float64
