"""Drive any torch.optim optimizer with gradwise schedules, through torch's LR-scheduler API."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, final

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from gradwise._validation import invalid_value_error
from gradwise.schedules._check import Schedule, TwoSchedulesError, check_schedule
from gradwise.schedules._plain_data import is_stateful


@final
class ScheduleLR(LRScheduler):
    """A torch LR scheduler that sets each param group's lr to ``schedule(last_epoch)``.

    ``last_epoch`` counts ``scheduler.step()`` calls, so the lr used by the k-th
    ``optimizer.step()`` (counting from 0) is ``schedule(k)``, and the schedule's step 0 is
    applied as soon as the scheduler is made. Every lr is computed in closed form, never
    from the previous lr, so changing a group's lr by hand lasts only until the next
    ``step()``.

    ``schedule`` is one schedule for every param group (one added later with
    ``add_param_group`` too), or a list with one schedule per group; each is checked once,
    here, for negative, infinite or NaN values. A schedule with state
    (:class:`ReduceOnPlateau`, or anything with ``state_dict`` / ``load_state_dict``) is
    saved in :meth:`state_dict` and restored by :meth:`load_state_dict`, given here
    directly or nested inside gradwise's combinators (a warmup, :class:`join`).

    Resuming: build the optimizer and the scheduler as for a fresh run, then load both
    state dicts (in either order: :meth:`load_state_dict` sets each group's lr to
    ``schedule(last_epoch)``). The run then continues exactly; torch's ``SequentialLR``
    has known resume bugs (pytorch#162591), which a closed-form schedule cannot have.

    Args:
        optimizer: any ``torch.optim.Optimizer``.
        schedule: a schedule, or a list of one schedule per param group.
        last_epoch: as in every torch LR scheduler; leave it at -1 and resume through
            :meth:`load_state_dict` instead.

    Example:
        >>> import torch
        >>> from gradwise.schedules import ScheduleLR, cosine_decay, linear_warmup
        >>> model = torch.nn.Linear(2, 1)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> scheduler = ScheduleLR(optimizer, linear_warmup(cosine_decay(0.1, 90), 10))
        >>> for step in range(100):
        ...     model(torch.ones(2)).sum().backward()
        ...     optimizer.step()
        ...     optimizer.zero_grad()
        ...     scheduler.step()
        >>> scheduler.get_last_lr()
        [0.0]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: Schedule | Sequence[Schedule],
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        _refuse_schedules_in_groups(optimizer)
        self.schedules = _one_schedule_per_group(schedule, len(optimizer.param_groups))
        self._one_for_all = callable(schedule)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        """Each group's lr at the current ``last_epoch``, from its schedule."""
        return [float(schedule(self.last_epoch)) for schedule in self._group_schedules()]

    def _group_schedules(self) -> list[Any]:
        """One schedule per param group, the one schedule also for groups added since."""
        num_groups = len(self.optimizer.param_groups)
        if len(self.schedules) != num_groups:
            if not self._one_for_all:
                raise ValueError(
                    f"The optimizer has {num_groups} param groups, but ScheduleLR was given a "
                    f"list of {len(self.schedules)} schedule(s), one per param group when it "
                    "was made; give one schedule for every group, or make a new ScheduleLR "
                    "after add_param_group."
                )
            self.schedules = [self.schedules[0]] * num_groups
        return self.schedules

    def _get_closed_form_lr(self) -> list[float | Tensor]:
        return self.get_lr()

    def state_dict(self) -> dict[str, Any]:
        """torch's scheduler state, without the schedules themselves but with their state:
        ``schedule_states`` for a group's schedule that has state itself,
        ``nested_schedule_states`` (a list, depth first) for one whose state is in the
        schedules it combines."""
        self._group_schedules()  # groups added since the last step have one too
        state = {
            key: value
            for key, value in super().state_dict().items()
            if key not in ("schedules", "_one_for_all")
        }
        state["schedule_states"] = {
            index: schedule.state_dict()
            for index, schedule in enumerate(self.schedules)
            if is_stateful(schedule)
        }
        nested = {
            index: [part.state_dict() for part in stateful_parts(schedule)]
            for index, schedule in enumerate(self.schedules)
            if not is_stateful(schedule)
        }
        state["nested_schedule_states"] = {index: parts for index, parts in nested.items() if parts}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s result and set each group's lr to match it."""
        self._group_schedules()  # a resumed run adds its groups before it loads
        state = dict(state_dict)
        schedule_states = state.pop("schedule_states", {})
        nested_states = state.pop("nested_schedule_states", {})  # absent in older states
        # Check that every saved state has a schedule to go to before loading any of it.
        for index in schedule_states:
            schedule = self._saved_group_schedule(index)
            if not is_stateful(schedule):
                raise ValueError(
                    f"The saved state holds the state of param group {index}'s schedule, but "
                    f"this scheduler's schedule for it, {schedule!r}, has none; build the "
                    "scheduler as the run that saved it did."
                )
        nested_parts: dict[Any, list[Any]] = {}
        for index, part_states in nested_states.items():
            parts = stateful_parts(self._saved_group_schedule(index))
            if len(parts) != len(part_states):
                raise ValueError(
                    f"The saved state holds {len(part_states)} stateful schedule(s) inside "
                    f"param group {index}'s schedule, but this one has {len(parts)}; build "
                    "the scheduler as the run that saved it did."
                )
            nested_parts[index] = parts
        super().load_state_dict(state)
        for index, schedule_state in schedule_states.items():
            self.schedules[int(index)].load_state_dict(schedule_state)
        for index, part_states in nested_states.items():
            for part, part_state in zip(nested_parts[index], part_states, strict=True):
                part.load_state_dict(part_state)
        self.refresh()

    def _saved_group_schedule(self, index: Any) -> Any:
        """The schedule of the param group a saved state names (by int, or str from JSON)."""
        if not 0 <= int(index) < len(self.schedules):
            raise ValueError(
                f"The saved state holds the state of param group {index}'s schedule, but this "
                f"scheduler drives {len(self.schedules)} param group(s); build the scheduler "
                "as the run that saved it did."
            )
        return self.schedules[int(index)]

    def refresh(self) -> None:
        """Set each group's lr to its schedule's value at the current step now, not at the
        next :meth:`step`: after :meth:`ReduceOnPlateau.observe` cut it, say."""
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            if isinstance(group["lr"], Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._last_lr = [
            group["lr"].clone() if isinstance(group["lr"], Tensor) else group["lr"]
            for group in self.optimizer.param_groups
        ]


def _refuse_schedules_in_groups(optimizer: Optimizer) -> None:
    """A gradwise optimizer given ``lr=cosine_decay(...)`` evaluates that schedule itself;
    ScheduleLR would overwrite it with a number, silently, from the first step on."""
    for index, group in enumerate(optimizer.param_groups):
        lr = group.get("lr")
        if callable(lr) and not isinstance(lr, Tensor):
            raise TwoSchedulesError(
                f"The 'optimizer' parameter of ScheduleLR must have a number as each param "
                f"group's lr. Got param group {index} with lr={lr!r} instead, a schedule the "
                "optimizer already follows, which ScheduleLR would replace. Keep one of the "
                "two: the optimizer's schedule, or ScheduleLR with a float lr."
            )


def _one_schedule_per_group(schedule: Any, num_groups: int) -> list[Any]:
    if callable(schedule):
        schedules = [schedule] * num_groups
    elif (
        isinstance(schedule, Sequence)
        and len(schedule) == num_groups
        and all(callable(item) for item in schedule)
    ):
        schedules = list(schedule)
    else:
        expected = f"a schedule or a list of one schedule per param group ({num_groups} here)"
        raise invalid_value_error("schedule", "ScheduleLR", expected, schedule)
    for item in {id(item): item for item in schedules}.values():
        check_schedule(item, name="schedule", owner="ScheduleLR")
    return schedules


def stateful_parts(schedule: Any) -> list[Any]:
    """The schedules with state inside ``schedule`` (not ``schedule`` itself), depth first
    through the arguments of gradwise's combinators (frozen dataclasses), each once:
    a :class:`ReduceOnPlateau` under a warmup, say.

    Example:
        >>> from gradwise.schedules import ReduceOnPlateau, linear_warmup, stateful_parts
        >>> plateau = ReduceOnPlateau(0.1, patience=2)
        >>> stateful_parts(linear_warmup(plateau, num_steps=100)) == [plateau]
        True
    """
    found: list[Any] = []
    seen: set[int] = {id(schedule)}

    def visit(item: Any) -> None:
        # Every argument is checked for state, an element of join's tuple of schedules
        # included (only direct fields were: a plateau inside a join went unsaved, and a
        # run config's plateau metric never reached a plateau joined with SWA's rate).
        if isinstance(item, list | tuple):
            for element in item:
                visit(element)
        elif id(item) in seen:
            return
        elif is_stateful(item):
            seen.add(id(item))
            found.append(item)
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            seen.add(id(item))
            for field in dataclasses.fields(item):
                visit(getattr(item, field.name))

    if dataclasses.is_dataclass(schedule) and not isinstance(schedule, type):
        for field in dataclasses.fields(schedule):
            visit(getattr(schedule, field.name))
    return found
