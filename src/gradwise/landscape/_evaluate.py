"""Evaluating a model's loss at many points of parameter space, the model left untouched."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vmap

from gradwise._functional import Slots, call_with, tensor_slots
from gradwise._modes import module_modes, restore_modes
from gradwise._objective import Objective, held_parameters_error, parameters_reached
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
    _check_samples(batches, owner, listed=not isinstance(data, Dataset | tuple))
    reference = next(iter(model.parameters()))
    return [(_to_model(x, reference), y.to(reference.device)) for x, y in batches]


def _check_samples(batches: Sequence[Batch], owner: str, *, listed: bool) -> None:
    """The error for a batch whose inputs and targets differ in number (``listed``: the
    batches were given as a list, so the message says which), for data without samples,
    or a batch without any: its mean loss is 0 / 0, and its weight 0 times that NaN made
    every point's loss NaN."""
    for index, (inputs, targets) in enumerate(batches):
        if len(inputs) != len(targets):
            where = f" in batch {index + 1} of {len(batches)}" if listed else ""
            raise ValueError(
                f"The 'data' parameter of {owner} must pair each input with one target. Got "
                f"{len(inputs)} inputs and {len(targets)} targets{where} instead; pass as "
                "many targets as inputs."
            )
    sizes = [len(targets) for _, targets in batches]
    if sizes and all(sizes):
        return
    if not sizes:
        found, fix = "a Dataset without samples", "pass the samples to evaluate the loss on"
    else:
        found, fix = f"batch {sizes.index(0) + 1} of {len(sizes)} empty", "leave it out"
    raise ValueError(
        f"The 'data' parameter of {owner} must hold at least one sample in each batch. Got "
        f"{found} instead; {fix}."
    )


def _to_model(inputs: Tensor, reference: Tensor) -> Tensor:
    if inputs.is_floating_point():
        return inputs.to(device=reference.device, dtype=reference.dtype)
    return inputs.to(reference.device)


def _is_pair(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(item, Tensor) for item in value)
    )


@contextlib.contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Eval mode and a forked RNG for the duration; every module's mode restored after.

    Parameters, buffers and ``.grad`` are never written: the points are evaluated with
    ``torch.func.functional_call`` on separate tensors, under ``torch.no_grad`` (autograd
    is on inside ``loss_fn`` for the first points, to check it; nothing is differentiated),
    and eval mode keeps BatchNorm's running statistics (and num_batches_tracked) as they are.
    """
    modes = module_modes(model)
    devices = sorted({t.device.index or 0 for t in model.parameters() if t.is_cuda})
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            model.eval()
            yield
    finally:
        restore_modes(modes)


def evaluate_points(
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Sequence[Batch],
    make_points: PointMaker,
    num_points: int,
    points_per_batch: int,
    owner: str,
) -> Tensor:
    """The mean loss over ``batches`` at each of ``num_points`` parameter sets, in float64.

    Points are evaluated ``points_per_batch`` at a time with ``torch.func.vmap`` over
    ``functional_call`` (one batched forward per data batch instead of one forward per
    point); ``points_per_batch=1`` is the plain loop, the reference the tests compare the
    batched path with. Batch losses are weighted by batch size (``loss_fn`` is a mean).
    ``loss_fn`` runs inside the same parameter swap as the forward pass (``Objective``),
    so a penalty in it that reads the parameters from the model is taken at each point
    (``l2_penalty(model, ...)`` vmapped too, unless the model has frozen weights: see
    ``_check_flags``).
    """
    objective = Objective(model, loss_fn)
    # For the first points loss_fn runs with autograd on, the forward pass still without:
    # its graph then shows a penalty on tensors held from before the call (_check_reached)
    # for the price of recording the penalty. Recording the forward pass too made the first
    # point of a conv net 2.3x slower: a 21-point slice_1d of bench_evaluation.py's cnn1d
    # took 24% longer (48.8 -> 60.3 ms, one thread); this way, no change beyond noise.
    recording = Objective(model, _with_autograd(loss_fn, owner))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    # One path per module attribute: a submodule registered twice is swapped once.
    slots = tensor_slots(model, prefix="model.")
    total = sum(len(targets) for _, targets in batches)
    losses = []
    with untouched(model):
        for start in range(0, num_points, points_per_batch):
            stop = min(start + points_per_batch, num_points)
            params = make_points(start, stop)
            chunk = torch.zeros(stop - start, dtype=torch.float64)
            for batch in batches:
                if start == 0:
                    batch_losses = _batch_losses(recording, params, slots, trainable, *batch)
                    _check_reached(batch_losses, model, owner)
                else:
                    batch_losses = _batch_losses(objective, params, slots, trainable, *batch)
                # (reshaped here: under no_grad a reshape in _batch_losses cuts the graph)
                chunk += batch_losses.detach().to("cpu", torch.float64).reshape(-1) * len(batch[1])
            if start == 0 and stop > 1:  # the first of the vmapped chunks
                _check_flags(objective, params, slots, trainable, batches[0], owner, stop)
            losses.append(chunk / total)
    return torch.cat(losses)


def _batch_losses(
    objective: Objective,
    params: dict[str, Tensor],
    slots: Slots,
    trainable: set[str] | None,
    inputs: Tensor,
    targets: Tensor,
) -> Tensor:
    """(points,) losses of one data batch at the stacked parameter sets ``params`` (for one
    point, the loss as ``loss_fn`` returns it).

    One point alone gets, for a parameter in ``trainable``, a tensor that requires grad
    and, for a frozen one, an ``nn.Parameter`` that does not, so a loss that tells them
    apart (``l2_penalty(model, ...)`` leaves frozen weights out) sees them as in the model;
    under ``no_grad`` that records nothing. ``trainable=None`` gives every parameter as
    vmap does: a plain tensor that reports ``requires_grad=False`` (see ``_check_flags``).
    """

    def loss_at(state: dict[str, Tensor]) -> Tensor:
        return call_with(objective, slots, state, (inputs, targets, False))[0]

    num_points = next(iter(params.values())).shape[0]
    if num_points == 1:
        if trainable is None:
            return loss_at({name: value[0] for name, value in params.items()})
        # Flagging the views is 4 us a point for 10 tensors; detaching first was 16 us.
        # A frozen one's Parameter costs about 8 us more (measured on the 2-core VM).
        return loss_at({
            name: value[0].requires_grad_(True)
            if name in trainable
            else nn.Parameter(value[0], requires_grad=False)
            for name, value in params.items()
        })  # fmt: skip
    return vmap(loss_at)(params)


def _with_autograd(loss_fn: LossFunction, owner: str) -> LossFunction:
    """``loss_fn`` with autograd on, and the error for a value that is not one number
    (under vmap the shape seen is one point's)."""

    def loss(outputs: Tensor, targets: Tensor) -> Tensor:
        with torch.enable_grad():
            value = loss_fn(outputs, targets)
        if not isinstance(value, Tensor) or value.numel() != 1:
            shown = (
                f"a tensor of shape {tuple(value.shape)}"
                if isinstance(value, Tensor)
                else f"a {type(value).__name__}"
            )
            raise ValueError(
                f"The 'loss_fn' parameter of {owner} must return a scalar tensor (a "
                f"mean-reduced loss). Got {shown} instead."
            )
        return value

    return loss


def _check_reached(losses: Tensor, model: nn.Module, owner: str) -> None:
    """The error for a loss whose graph reaches the model's own parameters: it does so only
    through tensors held from before the call (a penalty on a list of
    ``model.parameters()``), which keep their values at every point. A walk over the
    graph's nodes, once per data batch."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    reached = parameters_reached(losses, [p for _, p in named])
    if reached:
        consequence = "which would keep their values at every point of the landscape"
        raise held_parameters_error(owner, [named[i][0] for i in reached], consequence)


def _check_flags(
    objective: Objective,
    params: dict[str, Tensor],
    slots: Slots,
    trainable: set[str],
    batch: Batch,
    owner: str,
    points_per_batch: int,
) -> None:
    """The error for a loss that depends on which parameters are frozen, when points go
    through vmap: there every parameter is a plain tensor that reports
    ``requires_grad=False``, frozen or not. ``l2_penalty(model, ...)`` chooses its tensors
    by the module's structure and gives the same value either way unless the model has
    frozen weights (which vmap would have it penalize); a loss that filters by
    ``p.requires_grad`` itself would leave everything out. Two one-point evaluations of
    the first point, once per call."""
    first = {name: value[:1] for name, value in params.items()}
    with_flags = _batch_losses(objective, first, slots, trainable, *batch)
    as_model, as_vmap = (
        float(with_flags),
        float(_batch_losses(objective, first, slots, None, *batch)),
    )
    tolerance = 100 * torch.finfo(with_flags.dtype).eps
    both_nan = math.isnan(as_model) and math.isnan(as_vmap)
    if not (both_nan or math.isclose(as_model, as_vmap, rel_tol=tolerance)):
        raise ValueError(
            f"The 'loss_fn' parameter of {owner} must not depend on which parameters are "
            f"frozen when points are evaluated {points_per_batch} at a time "
            "(points_per_batch): under torch.func.vmap every parameter reports "
            "requires_grad=False, so the frozen ones cannot be told apart (l2_penalty(model, "
            "...) would penalize frozen weights; a loss that filters by p.requires_grad "
            f"would leave out all). Got {as_model:.6g} at the first point with the model's "
            f"frozen parameters and {as_vmap:.6g} as vmap sees them; pass "
            "points_per_batch=1, or name the penalized tensors in loss_fn "
            "(l2_penalty([model.fc.weight], ...))."
        )
