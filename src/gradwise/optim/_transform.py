"""The gradient-transform protocol and the combinators that compose transforms.

A gradient transform is a pair of pure functions::

    state = transform.init(params)
    updates, state = transform.update(updates, state, params)

``params`` and ``updates`` are lists of tensors in the same order. ``updates`` are added to
the parameters at the end of a chain, so a chain that descends ends in a negative scale
(``scale_by_learning_rate`` does that). ``update`` never modifies its inputs: it returns
new update tensors and a new state. The adapter :class:`gradwise.optim.Optimizer` is the
one place that writes into parameters and stored state.

State convention. A state is a ``dict``. A value that is a ``list`` holds one entry per
parameter, in the order of ``params``; an entry is ``None`` where the parameter has no such
state (not created yet, or excluded by :func:`masked`). A value that is a ``Tensor`` is one
quantity shared by all the parameters the transform sees (a step count, a switching
phase). Per-parameter entries use torch.optim's names where torch has the same quantity
(``step``, ``exp_avg``, ``momentum_buffer``, ...), so ``optimizer.state[p]`` reads the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NamedTuple

import torch
from torch import Tensor

State = dict[str, Any]
Params = Sequence[Tensor]
Updates = list[Tensor]
InitFn = Callable[[Params], State]
UpdateFn = Callable[[Sequence[Tensor], State, Params], tuple[Updates, State]]
ParameterMask = Callable[[Tensor], bool] | Sequence[bool]


_PARAM_GROUP: ContextVar[int] = ContextVar("gradwise_param_group", default=0)


def current_param_group() -> int:
    """The index of the param group whose update is running (0 outside an Optimizer).

    Each param group runs its own instance of the transform, so a transform that draws
    random numbers mixes this into its seed: otherwise every group would draw the same.
    """
    return _PARAM_GROUP.get()


@contextmanager
def running_param_group(index: int) -> Iterator[None]:
    """Set :func:`current_param_group` for the updates run inside (the Optimizer's step)."""
    token = _PARAM_GROUP.set(index)
    try:
        yield
    finally:
        _PARAM_GROUP.reset(token)


class GradientTransform(NamedTuple):
    """A pure ``init`` / ``update`` pair; ``name`` prefixes its state keys when they collide."""

    init: InitFn
    update: UpdateFn
    name: str = "transform"


def stateless(name: str, fn: Callable[[Sequence[Tensor], Params], Updates]) -> GradientTransform:
    """Wrap ``fn(updates, params) -> updates`` as a transform with empty state."""

    def init(params: Params) -> State:
        return {}

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        return fn(updates, params), state

    return GradientTransform(init, update, name)


def identity() -> GradientTransform:
    """Leave updates unchanged."""
    return stateless("identity", lambda updates, params: list(updates))


def chain(*transforms: GradientTransform) -> GradientTransform:
    """Compose transforms left to right into one transform.

    The chain's state is one flat dict: each transform's keys appear as they are, except
    keys that two transforms share, which become ``"<name>.<key>"`` (and
    ``"<name><position>.<key>"`` if the names clash too).

    Example:
        >>> from gradwise.optim import chain, clip_by_global_norm, scale_by_adam
        >>> from gradwise.optim import scale_by_learning_rate
        >>> adam_with_clipping = chain(
        ...     clip_by_global_norm(1.0), scale_by_adam(), scale_by_learning_rate(1e-3)
        ... )
    """
    key_maps = _chain_key_maps(transforms)

    def init(params: Params) -> State:
        state: State = {}
        for transform, key_map in zip(transforms, key_maps, strict=True):
            for key, value in transform.init(params).items():
                state[key_map[key]] = value
        return state

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        new_state: State = {}
        current: Sequence[Tensor] = updates
        for transform, key_map in zip(transforms, key_maps, strict=True):
            inner = {key: state[flat] for key, flat in key_map.items()}
            current, inner = transform.update(current, inner, params)
            for key, value in inner.items():
                new_state[key_map[key]] = value
        return list(current), new_state

    return GradientTransform(init, update, "chain")


def _chain_key_maps(transforms: Sequence[GradientTransform]) -> list[dict[str, str]]:
    """Map each transform's own state keys to the chain's flat keys."""
    own_keys = [list(transform.init([])) for transform in transforms]
    key_counts = Counter(key for keys in own_keys for key in keys)
    name_counts = Counter(transform.name for transform in transforms)
    key_maps = []
    for position, (transform, keys) in enumerate(zip(transforms, own_keys, strict=True)):
        prefix = (
            transform.name if name_counts[transform.name] == 1 else f"{transform.name}{position}"
        )
        key_maps.append({key: key if key_counts[key] == 1 else f"{prefix}.{key}" for key in keys})
    return key_maps


def masked(transform: GradientTransform, mask: ParameterMask) -> GradientTransform:
    """Apply ``transform`` only to the parameters selected by ``mask``; pass the rest through.

    ``mask`` is a predicate on a parameter tensor (for example
    :func:`gradwise.optim.weight_decay_mask`) or a sequence of booleans aligned with the
    parameters. A predicate is the robust choice: the adapter hands transforms only the
    parameters that have a gradient, and a predicate selects correctly from any subset.
    The inner state of unselected parameters is ``None``.

    Example:
        >>> import torch
        >>> from gradwise.optim import add_decayed_weights, masked
        >>> no_decay_on_vectors = masked(add_decayed_weights(1e-2), lambda p: p.ndim > 1)
    """

    def selection(params: Params) -> list[int]:
        if callable(mask):
            return [i for i, p in enumerate(params) if mask(p)]
        # No parameters: chain() and the Optimizer ask init([]) for the state's layout,
        # which any mask has (a list mask failed there, so could never be used in them).
        if not params:
            return []
        if len(mask) != len(params):
            raise ValueError(
                f"The mask of masked() has {len(mask)} entries but there are {len(params)} "
                "parameters. Pass a predicate on tensors, or one boolean per parameter (an "
                "Optimizer hands a transform one param group's parameters that have a "
                "gradient, so a predicate is the robust choice there)."
            )
        return [i for i, keep in enumerate(mask) if keep]

    def init(params: Params) -> State:
        chosen = selection(params)
        inner = transform.init([params[i] for i in chosen])
        return {key: _expand(value, chosen, len(params)) for key, value in inner.items()}

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        chosen = selection(params)
        inner_state = {key: _select(value, chosen) for key, value in state.items()}
        inner_updates, inner_state = transform.update(
            [updates[i] for i in chosen], inner_state, [params[i] for i in chosen]
        )
        new_updates = list(updates)
        for i, value in zip(chosen, inner_updates, strict=True):
            new_updates[i] = value
        new_state = {
            key: _merge_selected(state[key], value, chosen) for key, value in inner_state.items()
        }
        return new_updates, new_state

    return GradientTransform(init, update, transform.name)


def _expand(value: Any, chosen: list[int], size: int) -> Any:
    if not isinstance(value, list):
        return value
    full: list[Any] = [None] * size
    for i, entry in zip(chosen, value, strict=True):
        full[i] = entry
    return full


def _select(value: Any, chosen: list[int]) -> Any:
    return [value[i] for i in chosen] if isinstance(value, list) else value


def _merge_selected(old: Any, new: Any, chosen: list[int]) -> Any:
    if not isinstance(new, list):
        return new
    merged = list(old)
    for i, entry in zip(chosen, new, strict=True):
        merged[i] = entry
    return merged


def zeros_like_each(params: Params) -> list[Tensor]:
    """One zero buffer per parameter, same shape, dtype, device and memory format."""
    return [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]


def step_counters(params: Params) -> list[Tensor]:
    """One step counter per parameter, as torch.optim keeps them.

    float32 (float64 when that is torch's default dtype), on the parameter's device so that
    torch's fused kernels and compiled code read it without a host round trip.
    """
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return [torch.zeros((), dtype=dtype, device=p.device) for p in params]
