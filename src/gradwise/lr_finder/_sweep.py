"""lr_find: the exponential learning-rate sweep, run on a model that is restored afterwards."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gradwise._modes import restore_modes
from gradwise._step_hooks import is_constraint
from gradwise._validation import (
    HALF_OPEN_UNIT_INTERVAL,
    POSITIVE,
    POSITIVE_INT,
    Either,
    Interval,
    OneOf,
    Satisfies,
    check,
)
from gradwise.data import Batches, Dataset, DataSplits
from gradwise.losses import LOSS_NAMES, get_loss
from gradwise.lr_finder._result import (
    DIVERGE_FACTOR,
    LRFinderResult,
    StopRule,
    analyze_sweep,
    default_smoothing,
)

LossFn = Callable[[Tensor, Tensor], Tensor]
Batch = tuple[Tensor, Tensor]
_OWNER = "lr_find"
_SEED = Interval(low=0, high=2**32 - 1, kind="int")
_NUM_STEPS = Interval(low=3, kind="int")
_FINITE = Interval(finite=True)
_ABSENT = object()


def exponential_lrs(start_lr: float, end_lr: float, num_steps: int) -> list[float]:
    r"""The sweep's learning rates: :math:`\mathrm{lr}_i = \mathrm{start}\,
    (\mathrm{end} / \mathrm{start})^{i / (n - 1)}`, from ``start_lr`` to ``end_lr`` inclusive.

    Evenly spaced in :math:`\log` lr, as torch-lr-finder's ``ExponentialLR`` (fastai's
    ``SchedExp`` divides by :math:`n` instead, so it never reaches ``end_lr``).

    Example:
        >>> from gradwise.lr_finder import exponential_lrs
        >>> [f"{lr:.0e}" for lr in exponential_lrs(1e-3, 1.0, 4)]
        ['1e-03', '1e-02', '1e-01', '1e+00']
    """
    _check_range(start_lr, end_lr, num_steps, "exponential_lrs")
    ratio = float(end_lr) / float(start_lr)
    return [float(start_lr) * ratio ** (i / (num_steps - 1)) for i in range(int(num_steps))]


def lr_find(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Dataset | DataSplits | Batches | Iterable[Sequence[Tensor]],
    loss_fn: str | LossFn = "cross_entropy",
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smoothing: float | None = None,
    diverge_factor: float = 4.0,
    seed: int = 0,
    *,
    batch_size: int = 64,
    num_sweeps: int = 5,
    rise_factor: float = 1.5,
) -> LRFinderResult:
    r"""The LR range test (Smith 2017): train with an exponentially growing lr, watch the loss.

    Step :math:`i` sets every param group's lr to :func:`exponential_lrs`\ ``[i]``, takes
    one training minibatch, records its loss (before the update) and steps the optimizer.
    The losses are smoothed by :func:`smooth_losses`; the sweep stops after the first
    step whose smoothed loss exceeds ``diverge_factor`` times the best so far (for a loss
    whose best is <= 0, a rise above it by ``diverge_factor - 1`` times the larger of the
    fall so far and ``|best|``), or whose loss is not finite. ``num_sweeps`` sweeps run from
    the same starting point in different batch orders (each from the model and optimizer as
    given), and their losses are averaged step by step over the steps all of them reached:
    Smith's advice to run the test more than once, built in. :func:`analyze_sweep` then
    reads the mean curve up to its first rise (``rise_factor``) and reports both the
    steepest-descent and the min-loss/10 learning rates and which one it suggests, with the
    reasoning. One sweep (``num_sweeps=1``) costs a fifth as much and, on the built-in
    datasets, suggests rates up to 13x apart from seed to seed; five sweeps with the rise
    cut, repeated on one model with 16 seeds, stayed within 2.54x on all ten cases and eight
    inits measured (docs/lr_finder.md).

    The sweep trains each module in its own mode, as the Trainer does (a batch norm frozen
    with ``.eval()`` stays frozen); a model in eval mode as a whole is put in training
    mode first. Afterwards the model and optimizer are exactly as they were: every parameter and
    buffer (bitwise, the same tensor objects) of the model, of a ``loss_fn`` that is a
    module and every parameter the optimizer holds (a learnable temperature of the loss),
    each module's train/eval mode, every existing ``.grad``, the optimizer's
    ``state_dict`` (its state and every group's lr) in the same param group dicts holding
    the same objects (a tensor lr, a schedule you call ``observe`` on), torch's
    ``_opt_called`` flag (an LR scheduler's check of the call order), and torch's global
    RNG state (the sweep seeds dropout with ``seed`` inside :func:`torch.random.fork_rng`).
    The optimizer's own step pre- and post-hooks (an EMA, a monitor) are off during the
    sweep, whose steps are not training, and back afterwards, except gradwise's
    constraints (``MaxNorm.attach``, pruning masks), which shape the model swept; torch's
    global step hooks, process-wide, still see the sweep's steps (docs/lr_finder.md).

    Args:
        model: the network, on the device its batches should go to.
        optimizer: a first-order ``torch.optim.Optimizer`` over the model's parameters with
            an ``"lr"`` in every param group (torch's and gradwise's named optimizers, and
            a chain built by a factory of ``lr``:
            ``optim.Optimizer(params, lambda lr: chain(..., scale_by_learning_rate(lr)),
            lr=1e-3)``); its other settings are kept. A fixed transform (no ``lr`` to set)
            and :class:`~gradwise.optim.Newton` (its closure must not call ``backward()``)
            raise a ValueError, and so does an optimizer that holds none of the model's
            trainable parameters (one over another model's); holding only some (the head)
            or more (a learnable temperature of the loss) is fine.
        data: a :class:`~gradwise.data.Dataset`, :class:`~gradwise.data.DataSplits`
            (its training split), :class:`~gradwise.data.Batches`, or any iterable of
            ``(inputs, targets)`` batches (re-iterated when exhausted if it can be; an
            iterator that runs out ends the sweep early).
        loss_fn: a loss name of :func:`gradwise.losses.get_loss` or a callable
            ``(outputs, targets) -> scalar tensor``.
        start_lr: the first lr, > 0.
        end_lr: the last lr, > ``start_lr``.
        num_steps: steps of the sweep, >= 3.
        smoothing: :math:`\beta` of the bias-corrected moving average, in [0, 1); default
            :func:`default_smoothing` of the grid (a window of half a decade of lr: 0.84
            for the default 100 steps over 8 decades).
        diverge_factor: stop when the smoothed loss exceeds this times the best, > 1.
        seed: the batch order (for a Dataset) and dropout's random numbers of the first
            sweep; sweep ``j`` uses the ``j``-th seed spawned from it
            (``numpy.random.SeedSequence([seed, j])``), listed in ``result.seeds``.
        batch_size: samples per batch when ``data`` is a Dataset or DataSplits. Every
            step gets a full batch: the smaller last batch of each epoch is dropped (the
            next epoch reshuffles), and a dataset smaller than ``batch_size`` is one batch.
        num_sweeps: sweeps to average, >= 1. With a :class:`~gradwise.data.Batches` that
            shuffles, sweeps after the first shuffle with their own seed; an iterator that
            can be read only once gives one sweep.
        rise_factor: the analysis ends where the mean smoothed loss first rises to this
            times its best, > 1 (see :func:`analyze_sweep`).

    Example:
        >>> import torch
        >>> from gradwise.data import load_dataset
        >>> from gradwise.lr_finder import lr_find
        >>> from gradwise.models import build_model
        >>> data = load_dataset("spirals", seed=0)
        >>> model = build_model("mlp", data.input_shape, data.output_size, width=32, depth=2)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> before = {k: v.clone() for k, v in model.state_dict().items()}
        >>> result = lr_find(model, optimizer, data, start_lr=1e-4, end_lr=100, num_steps=60)
        >>> 1e-4 < result.suggestion < 100, result.suggested_by in ("steepest", "min_loss")
        (True, True)
        >>> all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
        True
        >>> optimizer.param_groups[0]["lr"]
        0.1

    Reference:
        Smith, "Cyclical learning rates for training neural networks", WACV 2017.
    """
    _check_range(start_lr, end_lr, num_steps, _OWNER)
    lrs = exponential_lrs(start_lr, end_lr, num_steps)
    if smoothing is None:
        smoothing = default_smoothing(lrs)
    _check_arguments(model, optimizer, data, loss_fn, smoothing, diverge_factor, seed)
    _check_sweepable(optimizer)
    _check_steps_the_model(model, optimizer)
    check("batch_size", _OWNER, batch_size, POSITIVE_INT)
    check("num_sweeps", _OWNER, num_sweeps, POSITIVE_INT)
    check("rise_factor", _OWNER, rise_factor, DIVERGE_FACTOR)
    loss = get_loss(loss_fn) if isinstance(loss_fn, str) else loss_fn
    device = _device_of(model)
    modules = [model, *([loss] if isinstance(loss, nn.Module) else [])]
    one_shot = isinstance(data, Iterator)
    seeds = sweep_seeds(int(seed), 1 if one_shot else int(num_sweeps))
    sweeps: list[list[float]] = []
    stops: list[bool] = []
    for index, sweep_seed in enumerate(seeds):
        with (
            _preserved(modules, optimizer),
            _step_hooks_suspended(optimizer),
            _forked_rng(device, sweep_seed),
        ):
            if not model.training:  # as a training loop starts; modules frozen in eval stay
                model.train()
            source = _reseeded(data, sweep_seed) if index else data
            batches = _batch_stream(source, int(batch_size), sweep_seed)
            stop_rule = StopRule(smoothing, diverge_factor)
            losses, stopped = _sweep(model, optimizer, batches, loss, lrs, device, stop_rule)
        if not losses:
            raise ValueError(f"The 'data' parameter of {_OWNER} must yield at least one batch.")
        sweeps.append(losses)
        stops.append(stopped)
    reached = min(len(losses) for losses in sweeps)
    mean = [math.fsum(losses[step] for losses in sweeps) / len(sweeps) for step in range(reached)]
    # A sweep shorter than the grid stopped on divergence (or its data ran out); the mean
    # ends at the shortest one, where one sweep diverged even if the mean stays under.
    stopped = stops[min(range(len(sweeps)), key=lambda index: len(sweeps[index]))]
    result = analyze_sweep(
        lrs,
        mean,
        smoothing=smoothing,
        diverge_factor=diverge_factor,
        rise_factor=rise_factor,
        stopped_at=reached - 1 if stopped else None,
    )
    if len(sweeps) == 1:
        return result
    return dataclasses.replace(
        result, sweeps=tuple(tuple(losses) for losses in sweeps), seeds=tuple(seeds)
    )


def sweep_seeds(seed: int, num_sweeps: int) -> list[int]:
    """``seed``, then the seeds numpy's SeedSequence spawns from ``[seed, j]`` for sweep j."""
    spawned = [
        int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        for index in range(1, num_sweeps)
    ]
    return [seed, *spawned]


def _reseeded(data: Any, seed: int) -> Any:
    """A Batches that shuffles, with ``seed`` instead of its own; anything else as is."""
    if isinstance(data, Batches) and data.shuffle:
        return Batches(
            data.dataset,
            data.batch_size,
            shuffle=True,
            drop_last=data.drop_last,
            min_last_batch_size=data.min_last_batch_size,
            seed=seed,
        )
    return data


def _sweep(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[Batch],
    loss_fn: LossFn,
    lrs: Sequence[float],
    device: torch.device,
    stop_rule: StopRule,
) -> tuple[list[float], bool]:
    """The losses of one sweep, and whether ``stop_rule`` ended it (not the grid or data)."""
    losses: list[float] = []
    for lr, (inputs, targets) in zip(lrs, batches, strict=False):
        _set_lr(optimizer, lr)
        inputs, targets = inputs.to(device), targets.to(device)

        # The closure is the step's one forward and backward (an optimizer that needs
        # more evaluations, L-BFGS, calls it again); its first value is the recorded loss.
        first: list[float] = []

        def closure(
            inputs: Tensor = inputs, targets: Tensor = targets, first: list[float] = first
        ) -> Any:
            optimizer.zero_grad(set_to_none=True)
            value = loss_fn(model(inputs), targets)
            value.backward()
            if not first:
                first.append(float(value.detach()))
            return value

        optimizer.step(closure)
        if not first:
            raise TypeError(
                f"The 'optimizer' parameter of {_OWNER} must call the closure passed to its "
                f"step(), as torch.optim optimizers do. {type(optimizer).__name__} did not."
            )
        losses.append(first[0])
        if stop_rule.diverged(first[0]):
            return losses, True
    return losses, False


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def _batch_stream(data: Any, batch_size: int, seed: int) -> Iterator[Batch]:
    if (
        isinstance(data, tuple | list)
        and len(data) == 2
        and all(isinstance(t, Tensor) and t.dim() > 0 for t in data)
    ):
        # One (inputs, targets) pair, as the curvature tools and gradcheck take: iterated,
        # it gave the inputs, then the targets, each "a batch of type Tensor".
        raise TypeError(
            f"The 'data' parameter of {_OWNER} must be a Dataset, DataSplits, Batches or "
            "batches of (inputs, targets). Got one (inputs, targets) pair of tensors "
            "instead: pass Dataset(inputs, targets) to sweep over shuffled batches of "
            "batch_size, or [(inputs, targets)] to reuse that one batch at every step."
        )
    if isinstance(data, DataSplits):
        data = data.train
    if isinstance(data, Dataset):
        # Every step a full batch: a ragged last batch (1 sample of 129 at batch 64) makes
        # BatchNorm raise in train mode, and a few samples' loss is a spike the stop and
        # rise rules read as divergence. A dataset smaller than a batch is one batch.
        drop_last = len(data) >= batch_size
        data = Batches(data, batch_size, shuffle=True, drop_last=drop_last, seed=seed)
    if isinstance(data, Batches):
        batches = data
        return itertools.chain.from_iterable(batches.epoch(e) for e in itertools.count())
    return _cycle(data)


def _cycle(data: Iterable[Sequence[Tensor]]) -> Iterator[Batch]:
    while True:
        iterator = iter(data)
        served = 0
        for batch in iterator:
            served += 1
            yield _as_batch(batch)
        if served == 0 or iterator is data:  # empty, or a one-shot iterator: no second pass
            return


def _as_batch(batch: Any) -> Batch:
    if (
        isinstance(batch, Sequence)
        and len(batch) == 2
        and all(isinstance(t, Tensor) for t in batch)
    ):
        return batch[0], batch[1]
    raise TypeError(
        f"The 'data' parameter of {_OWNER} must yield (inputs, targets) pairs of tensors. "
        f"Got a batch of type {type(batch).__name__} instead."
    )


@contextmanager
def _preserved(modules: Sequence[nn.Module], optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Put back every tensor, .grad, mode and the optimizer's state, however the body ends.

    The tensors are those of ``modules`` (the model, and the loss when it is a module)
    and every parameter the optimizer holds: a learnable temperature or margin of the loss
    is trained by the sweep as much as the model's weights. Each parameter and buffer goes
    back into its module's slot as well as to its value: a forward that reassigns a buffer
    (``self.mean = 0.9 * self.mean + ...``) leaves a new tensor there.

    The optimizer gets its ``state_dict`` back, and then its own param group dicts holding
    their own objects: ``load_state_dict`` alone would put in copies, so a tensor lr (filled
    in place by the sweep: its value is put back), a gradwise schedule the caller holds
    (``ReduceOnPlateau``, driven by ``observe``) or a group dict kept by other code would
    no longer be the optimizer's.
    """
    slots = [
        (module, name, tensor)
        for root in modules
        for module in root.modules()
        for name, tensor in itertools.chain(
            module.named_parameters(recurse=False), module.named_buffers(recurse=False)
        )
    ]
    held = [p for group in optimizer.param_groups for p in group["params"]]
    tensors = list({id(t): t for t in [*(t for _, _, t in slots), *held]}.values())
    values = [tensor.detach().clone() for tensor in tensors]
    parameters = [t for t in tensors if isinstance(t, nn.Parameter) or t.requires_grad]
    grads = [(p, p.grad, None if p.grad is None else p.grad.clone()) for p in parameters]
    modes = [(module, module.training) for root in modules for module in root.modules()]
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    # Set by the step() wrapper an LR scheduler installs; set, it would hide the warning
    # for a scheduler.step() before the first real optimizer.step().
    opt_called = vars(optimizer).get("_opt_called", _ABSENT)
    group_list = optimizer.param_groups
    groups = [(group, dict(group)) for group in group_list]
    group_tensors = [
        (value, value.clone())
        for _, entries in groups
        for key, value in entries.items()
        if key != "params" and isinstance(value, Tensor)
    ]
    try:
        yield
    finally:
        for module, name, tensor in slots:
            setattr(module, name, tensor)
        with torch.no_grad():
            for tensor, value in zip(tensors, values, strict=True):
                tensor.copy_(value)
            for tensor, value in group_tensors:
                tensor.copy_(value)
        for parameter, grad, saved in grads:
            if grad is not None and saved is not None:
                grad.copy_(saved)
            parameter.grad = grad
        restore_modes(modes)
        optimizer.load_state_dict(optimizer_state)
        for group, entries in groups:
            group.clear()
            group.update(entries)
        group_list[:] = [group for group, _ in groups]
        optimizer.param_groups = group_list
        if opt_called is _ABSENT:
            vars(optimizer).pop("_opt_called", None)
        else:
            optimizer._opt_called = opt_called  # type: ignore[attr-defined]


def _constraints(hooks: Mapping[int, Any]) -> OrderedDict[int, Any]:
    """The hooks that constrain the step (gradwise's max-norm and pruning masks), in order."""
    return OrderedDict((key, hook) for key, hook in hooks.items() if is_constraint(hook))


@contextmanager
def _step_hooks_suspended(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """The optimizer's own step pre- and post-hooks off for the body, then back as they were;
    gradwise's constraints on the step (``MaxNorm.attach``, pruning masks) stay on.

    The sweep's steps are not training: an EMA or averaged model updated by a post-hook, a
    monitor's pre-hook or a step counter would otherwise take in throwaway steps at up to
    ``end_lr`` that nothing restores. A constraint is part of the model being swept (a
    max-norm net is meant to take higher rates). The hook dicts are swapped out, so the
    caller's handles still remove their hooks and the order is kept. torch's global hooks
    (``torch.optim.optimizer.register_optimizer_step_pre_hook`` / ``..._post_hook``) are
    process-wide, for every optimizer of every thread, and are left to fire.
    """
    pre_hooks = optimizer._optimizer_step_pre_hooks
    post_hooks = optimizer._optimizer_step_post_hooks
    optimizer._optimizer_step_pre_hooks = _constraints(pre_hooks)
    optimizer._optimizer_step_post_hooks = _constraints(post_hooks)
    try:
        yield
    finally:
        optimizer._optimizer_step_pre_hooks = pre_hooks
        optimizer._optimizer_step_post_hooks = post_hooks


@contextmanager
def _forked_rng(device: torch.device, seed: int) -> Iterator[None]:
    """torch's CPU generator and the CUDA ones in use, forked and seeded with ``seed``.

    Only the generators the fork restores are seeded: ``torch.manual_seed`` also seeds
    CUDA when it is not initialized yet, lazily, at its first use after the sweep.
    """
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed_all(seed)
        yield


def _device_of(model: nn.Module) -> torch.device:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _check_range(start_lr: float, end_lr: float, num_steps: int, owner: str) -> None:
    check("start_lr", owner, start_lr, POSITIVE)
    finite = _FINITE.is_satisfied_by(end_lr)
    if not finite or float(end_lr) <= float(start_lr):
        # The bound is the other argument's value: name it, or "> 1e-07" reads as a rule.
        fix = (
            " The sweep grows the lr from start_lr to end_lr: pass an end_lr above "
            "start_lr, or a smaller start_lr."
            if finite
            else ""
        )
        raise ValueError(
            f"The 'end_lr' parameter of {owner} must be a finite float > start_lr "
            f"({float(start_lr)!r}). Got {end_lr!r} instead.{fix}"
        )
    check("num_steps", owner, num_steps, _NUM_STEPS)


def _check_sweepable(optimizer: torch.optim.Optimizer) -> None:
    """The sweep sets ``group["lr"]`` and steps with a closure that calls backward()."""
    from gradwise.optim import Newton

    name = type(optimizer).__name__
    if isinstance(optimizer, Newton):
        raise ValueError(
            f"The 'optimizer' parameter of {_OWNER} must be a first-order optimizer whose step "
            f"closure calls backward(). Got {name} instead: Newton differentiates the loss "
            "itself and its lr is a step length (1 the full Newton step), not a rate to sweep."
        )
    for index, group in enumerate(optimizer.param_groups):
        if "lr" not in group:
            raise ValueError(
                f"The 'optimizer' parameter of {_OWNER} must have an 'lr' in every param group "
                f"for the sweep to set. Got an {name} whose param group {index} has none "
                "instead. Build a chain from a factory of lr: optim.Optimizer(params, lambda "
                "lr: chain(..., scale_by_learning_rate(lr)), lr=1e-3)."
            )


def _check_steps_the_model(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The optimizer holds at least one of the model's trainable parameters.

    One that holds none (an optimizer over another model's parameters) leaves the model as
    it is at every lr, and the analysis reads the minibatches' noise as the loss's fall.
    Holding some of them (the head only, for fine-tuning) or more (a learnable temperature
    of the loss) is fine.
    """
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if trainable & held:
        return
    if not trainable:
        raise ValueError(
            f"The 'model' parameter of {_OWNER} must have a trainable parameter "
            f"(requires_grad=True) for the sweep to step. Got {type(model).__name__} with "
            "none instead: unfreeze the layers to be trained and build the optimizer over them."
        )
    raise ValueError(
        f"The 'optimizer' parameter of {_OWNER} must hold some of the model's trainable "
        f"parameters. Got an optimizer ({type(optimizer).__name__}) that steps none of them "
        f"instead (it holds {len(held)} other tensor{'s' if len(held) != 1 else ''}), so the "
        "sweep would not train the model and would read the loss's noise as its response to "
        "the lr. Build the optimizer over this model, e.g. "
        "torch.optim.SGD(model.parameters(), lr=0.1)."
    )


def _check_arguments(
    model: Any,
    optimizer: Any,
    data: Any,
    loss_fn: Any,
    smoothing: Any,
    diverge_factor: Any,
    seed: Any,
) -> None:
    check("model", _OWNER, model, Satisfies(lambda v: isinstance(v, nn.Module), "an nn.Module"))
    check("optimizer", _OWNER, optimizer, Satisfies(
        lambda v: isinstance(v, torch.optim.Optimizer), "a torch.optim.Optimizer"))  # fmt: skip
    check("data", _OWNER, data, Satisfies(
        lambda v: isinstance(v, Iterable | Dataset | DataSplits | Batches)
        and not isinstance(v, str),
        "a Dataset, DataSplits, Batches or an iterable of (inputs, targets)"))  # fmt: skip
    check("loss_fn", _OWNER, loss_fn, Either((OneOf(LOSS_NAMES), Satisfies(
        lambda v: callable(v) and not isinstance(v, str), "a callable"))))  # fmt: skip
    check("smoothing", _OWNER, smoothing, HALF_OPEN_UNIT_INTERVAL)
    check("diverge_factor", _OWNER, diverge_factor, DIVERGE_FACTOR)
    check("seed", _OWNER, seed, _SEED)
