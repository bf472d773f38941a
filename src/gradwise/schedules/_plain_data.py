"""Schedules as plain data, so that a checkpoint holding one loads with ``weights_only=True``.

A gradwise schedule is its kind and its constructor arguments (and, for a stateful one
such as :class:`ReduceOnPlateau`, its ``state_dict()``): strings, numbers, tuples, lists
and dicts, which ``torch.load`` reads without unpickling any class. Reading rebuilds the
schedule by looking its kind up among gradwise's own schedule classes, never by import.
"""

from __future__ import annotations

import inspect
from numbers import Integral, Real
from typing import Any, Protocol, TypeGuard

from gradwise.schedules._base import StepFunction

#: The key that marks a dict as a schedule written by :func:`schedule_to_data`.
KIND_KEY = "gradwise_schedule"
_NOT_DATA = object()  # a value with no plain-data form (a function of the user's own)


def schedule_to_data(schedule: Any, *, include_state: bool = True) -> dict[str, Any] | None:
    """``schedule`` as plain data, or None if it is not made of gradwise schedules only.

    ``{"gradwise_schedule": kind, "arguments": {...}}``, plus ``"state"`` for a schedule
    with ``state_dict`` / ``load_state_dict`` (unless ``include_state`` is False). A
    schedule nested in a combinator is written the same way; a function of your own,
    anywhere inside, has no such form (None).
    """
    kind = type(schedule)
    if not isinstance(schedule, StepFunction) or schedule_kinds().get(kind.__name__) is not kind:
        return None
    arguments = {}
    for name in _argument_names(schedule):
        value = _value_to_data(getattr(schedule, name, _NOT_DATA), include_state)
        if value is _NOT_DATA:
            return None
        arguments[name] = value
    data: dict[str, Any] = {KIND_KEY: kind.__name__, "arguments": arguments}
    if include_state and is_stateful(schedule):
        data["state"] = schedule.state_dict()
    return data


def is_schedule_data(value: Any) -> bool:
    """Whether ``value`` is what :func:`schedule_to_data` writes."""
    return isinstance(value, dict) and KIND_KEY in value


def schedule_from_data(data: dict[str, Any]) -> StepFunction:
    """The schedule :func:`schedule_to_data` wrote (a new one, its state restored)."""
    kinds = schedule_kinds()
    kind = kinds.get(data[KIND_KEY])
    if kind is None:
        raise ValueError(
            f"Cannot rebuild the schedule {data[KIND_KEY]!r}: gradwise has no schedule of that "
            f"name (it has {', '.join(sorted(kinds))}). The checkpoint was written by another "
            "gradwise version, or the module that defines it has not been imported yet."
        )
    schedule = kind(**{name: _value_from_data(v) for name, v in data["arguments"].items()})
    if "state" in data and is_stateful(schedule):
        schedule.load_state_dict(data["state"])
    return schedule


def keep_current_schedule(current: Any, loaded: Any) -> Any:
    """``current`` given ``loaded``'s state if the two are the same schedule, else ``loaded``.

    The same schedule: gradwise schedules of the same kinds and arguments. Then the state
    of every :class:`ReduceOnPlateau` inside ``loaded`` is loaded into its twin in
    ``current``, so that the code holding ``current`` (calling ``observe``) keeps driving
    what is used after a checkpoint is loaded.
    """
    if current is loaded:
        return loaded
    expected = schedule_to_data(current, include_state=False)
    if expected is None or expected != schedule_to_data(loaded, include_state=False):
        return loaded
    _copy_state(loaded, current)
    return current


def _copy_state(source: Any, target: Any) -> None:
    """Give every stateful schedule in ``target`` the state of its twin in ``source``."""
    if isinstance(target, tuple | list):
        for source_item, target_item in zip(source, target, strict=True):
            _copy_state(source_item, target_item)
    elif isinstance(target, StepFunction):
        if is_stateful(target):
            target.load_state_dict(source.state_dict())
        for name in _argument_names(target):
            _copy_state(getattr(source, name), getattr(target, name))


def _value_to_data(value: Any, include_state: bool) -> Any:
    if isinstance(value, StepFunction):
        data = schedule_to_data(value, include_state=include_state)
        return _NOT_DATA if data is None else data
    if isinstance(value, tuple | list):
        items = [_value_to_data(item, include_state) for item in value]
        return _NOT_DATA if any(item is _NOT_DATA for item in items) else type(value)(items)
    # The builtin type itself (not a numpy number, which weights_only refuses; validation
    # takes numpy's ints and floats as numbers, so they are written as numbers).
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)  # a StrEnum member would be refused by weights_only
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    return None if value is None else _NOT_DATA


def _value_from_data(value: Any) -> Any:
    if is_schedule_data(value):
        return schedule_from_data(value)
    if isinstance(value, tuple | list):
        return type(value)(_value_from_data(item) for item in value)
    return value


def _argument_names(schedule: StepFunction) -> list[str]:
    """The constructor's parameters: every schedule keeps each one as an attribute."""
    return list(inspect.signature(type(schedule)).parameters)


class _Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


def is_stateful(schedule: Any) -> TypeGuard[_Stateful]:
    """Whether ``schedule`` keeps state (``state_dict`` / ``load_state_dict``)."""
    return callable(getattr(schedule, "state_dict", None)) and callable(
        getattr(schedule, "load_state_dict", None)
    )


def schedule_kinds() -> dict[str, type[StepFunction]]:
    """Every schedule class gradwise defines (imported so far), by class name."""
    kinds: dict[str, type[StepFunction]] = {}
    pending = list(StepFunction.__subclasses__())
    while pending:
        kind = pending.pop()
        if kind.__module__.startswith("gradwise."):
            kinds.setdefault(kind.__name__, kind)
        pending.extend(kind.__subclasses__())
    return kinds
