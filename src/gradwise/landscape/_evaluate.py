"""Evaluating a model's loss at many points of parameter space, the model left untouched."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from gradwise.data import Dataset, iterate_once
from gradwise.losses import LOSS_NAMES, get_loss

LossFunction = Callable[[Tensor, Tensor], Tensor]
Batch = tuple[Tensor, Tensor]
Data = Dataset | tuple[Tensor, Tensor] | Sequence[tuple[Tensor, Tensor]]
# (start, stop) -> each parameter stacked for the points start..stop-1: (points, *shape)
PointMaker = Callable[[int, int], dict[str, Tensor]]


def as_loss(loss_fn: object, owner: str) -> LossFunction:
    """A callable ``(outputs, targets) -> scalar``, or a loss name for get_loss."""
    if isinstance(loss_fn, str):
        if loss_fn not in LOSS_NAMES:
            names = ", ".join(repr(name) for name in LOSS_NAMES)
            raise ValueError(
                f"The 'loss_fn' parameter of {owner} must be one of {names} or a callable. "
                f"Got {loss_fn!r} instead."
            )
        return get_loss(loss_fn)
    if not callable(loss_fn):
        raise TypeError(
            f"The 'loss_fn' parameter of {owner} must be a callable (outputs, targets) -> "
            f"loss or a loss name. Got {type(loss_fn).__name__} instead."
        )
    return loss_fn


def as_batches(data: object, batch_size: int | None, model: nn.Module, owner: str) -> list[Batch]:
    """The evaluation batches on the model's device: a Dataset, one (inputs, targets) pair,
    or a list of pairs. Floating-point inputs take the model's dtype (a Dataset holds
    float32; a float64 model gets float64 inputs)."""
    batches: Sequence[Batch]
    if isinstance(data, Dataset):
        size = len(data) if batch_size is None else batch_size
        batches = list(iterate_once(data, max(size, 1)))
    elif _is_pair(data):
        batches = [data]  # type: ignore[list-item]
    elif isinstance(data, Sequence) and data and all(_is_pair(batch) for batch in data):
        batches = data
    else:
        raise TypeError(
            f"The 'data' parameter of {owner} must be a gradwise.data.Dataset, an (inputs, "
            f"targets) pair of tensors or a non-empty list of such pairs. Got "
            f"{type(data).__name__} instead."
        )
    reference = next(iter(model.parameters()))
    return [(_to_model(x, reference), y.to(reference.device)) for x, y in batches]


def _to_model(inputs: Tensor, reference: Tensor) -> Tensor:
    if inputs.is_floating_point():
        return inputs.to(device=reference.device, dtype=reference.dtype)
    return inputs.to(reference.device)


def _is_pair(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(item, Tensor) for item in value)
        and len(value[0]) == len(value[1])
    )


@contextlib.contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Eval mode and a forked RNG for the duration; every module's mode restored after.

    Parameters, buffers and ``.grad`` are never written: the points are evaluated with
    ``torch.func.functional_call`` on separate tensors, under ``torch.no_grad``, and eval
    mode keeps BatchNorm's running statistics (and num_batches_tracked) as they are.
    """
    modes = [(module, module.training) for module in model.modules()]
    devices = sorted({t.device.index or 0 for t in model.parameters() if t.is_cuda})
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            model.eval()
            yield
    finally:
        for module, training in modes:
            module.training = training


def evaluate_points(
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Sequence[Batch],
    make_points: PointMaker,
    num_points: int,
    points_per_batch: int,
) -> Tensor:
    """The mean loss over ``batches`` at each of ``num_points`` parameter sets, in float64.

    Points are evaluated ``points_per_batch`` at a time with ``torch.func.vmap`` over
    ``functional_call`` (one batched forward per data batch instead of one forward per
    point); ``points_per_batch=1`` is the plain loop, the reference the tests compare the
    batched path with. Batch losses are weighted by batch size (``loss_fn`` is a mean).
    """
    total = sum(len(targets) for _, targets in batches)
    losses = []
    with untouched(model):
        for start in range(0, num_points, points_per_batch):
            stop = min(start + points_per_batch, num_points)
            params = make_points(start, stop)
            chunk = torch.zeros(stop - start, dtype=torch.float64)
            for inputs, targets in batches:
                batch_losses = _batch_losses(model, loss_fn, params, inputs, targets)
                chunk += batch_losses.detach().to("cpu", torch.float64) * len(targets)
            losses.append(chunk / total)
    return torch.cat(losses)


def _batch_losses(
    model: nn.Module,
    loss_fn: LossFunction,
    params: dict[str, Tensor],
    inputs: Tensor,
    targets: Tensor,
) -> Tensor:
    """(points,) losses of one data batch at the stacked parameter sets ``params``."""

    def loss_at(point: dict[str, Tensor]) -> Tensor:
        return loss_fn(functional_call(model, point, (inputs,)), targets)

    num_points = next(iter(params.values())).shape[0]
    if num_points == 1:
        return loss_at({name: value[0] for name, value in params.items()}).reshape(1)
    return vmap(loss_at)(params)
