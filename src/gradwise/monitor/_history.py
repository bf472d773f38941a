"""The recorded time series a watch keeps, as plain data the detectors read."""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple


@dataclass
class Series:
    """Values indexed by optimizer step, in step order.

    Example:
        >>> from gradwise.monitor import Series
        >>> series = Series()
        >>> for step, value in [(10, 2.3), (20, 1.9), (30, 1.2)]:
        ...     series.append(step, value)
        >>> series.since(20), series.last, len(series)
        ([1.9, 1.2], 1.2, 3)
    """

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    # Running aggregates of the finite values, extended when asked (see _Running).
    _running: _Running | None = field(default=None, init=False, repr=False, compare=False)

    def append(self, step: int, value: float) -> None:
        """Add ``value`` at ``step`` (steps must not decrease)."""
        self.steps.append(step)
        self.values.append(value)

    def finite_since(self, step: int) -> list[float]:
        """The finite values recorded at ``step`` or later (as ``since``, without NaN
        and infinities; no filtering pass when the running count shows none)."""
        start = bisect.bisect_left(self.steps, step)
        recent = self.values[start:]
        if self._running_aggregates().finite_count_since(start) == len(recent):
            return recent
        return [value for value in recent if math.isfinite(value)]

    def count_since(self, step: int) -> int:
        """How many values (finite or not) were recorded at ``step`` or later."""
        return len(self.values) - bisect.bisect_left(self.steps, step)

    def finite_min(self, *, before: int | None = None, since: int | None = None) -> float:
        """The smallest finite value recorded before step ``before`` (all when None), or
        at step ``since`` or later; NaN when there is none. Each call costs O(log n) plus
        the values added since the last call (the detectors ask every step)."""
        return self._aggregate(before, since).minimum

    def finite_max(self, *, before: int | None = None, since: int | None = None) -> float:
        """The largest finite value, as :meth:`finite_min`."""
        return self._aggregate(before, since).maximum

    def finite_count(self, *, before: int | None = None) -> int:
        """How many finite values were recorded before step ``before`` (all when None)."""
        return self._aggregate(before, None).num_finite

    def last_finite(self, *, before: int | None = None) -> float:
        """The latest finite value recorded before step ``before`` (all when None); NaN
        when there is none."""
        return self._aggregate(before, None).last

    def _running_aggregates(self) -> _Running:
        running = self._running
        if running is None or running.values is not self.values or running.stale():
            running = self._running = _Running(self.values)
        return running

    def _aggregate(self, before: int | None, since: int | None) -> _Summary:
        if before is not None and since is not None:
            raise ValueError("Series: give 'before' or 'since', not both.")
        running = self._running_aggregates()
        if since is not None:
            return running.since(bisect.bisect_left(self.steps, since))
        end = len(self.values) if before is None else bisect.bisect_left(self.steps, before)
        return running.prefix(end)

    def since(self, step: int) -> list[float]:
        """The values recorded at ``step`` or later."""
        return self.values[bisect.bisect_left(self.steps, step) :]

    def between(self, start: int, stop: int) -> list[float]:
        """The values recorded at steps in ``[start, stop)``."""
        low = bisect.bisect_left(self.steps, start)
        return self.values[low : bisect.bisect_left(self.steps, stop)]

    @property
    def last(self) -> float | None:
        """The latest value, or None before the first."""
        return self.values[-1] if self.values else None

    @property
    def last_step(self) -> int | None:
        """The step of the latest value, or None before the first."""
        return self.steps[-1] if self.steps else None

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[tuple[int, float]]:
        return zip(self.steps, self.values, strict=True)

    def to_dict(self) -> dict[str, list[Any]]:
        """``{"steps": [...], "values": [...]}``."""
        return {"steps": list(self.steps), "values": list(self.values)}


class _Summary(NamedTuple):  # made several times a step: cheaper than a frozen dataclass
    minimum: float
    maximum: float
    last: float
    num_finite: int


class _Running:
    """Prefix minimum, maximum, last finite value and count of finite values of a growing
    list, extended on demand, plus the same from a few fixed start indices onward. A
    Series only grows (through ``append``), so each value is folded in once: the
    detectors' whole-history questions ("the best loss so far") stay O(log n) a step
    instead of O(n). (A list replaced by assignment starts afresh; editing a recorded
    value in place is not supported.)"""

    MAX_STARTS = 8

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.minimum = array("d")
        self.maximum = array("d")
        self.last = array("d")
        self.count = array("q")
        self.suffixes: dict[int, list[float]] = {}  # start -> [end, min, max, last, count]

    def stale(self) -> bool:
        return len(self.minimum) > len(self.values)

    def extend(self) -> None:
        """Fold in the values appended since the last call."""
        done = len(self.minimum)
        low, high, last, count = (
            (self.minimum[-1], self.maximum[-1], self.last[-1], float(self.count[-1]))
            if done
            else (math.nan, math.nan, math.nan, 0.0)
        )
        for value in self.values[done:]:
            low, high, last, count = _fold(low, high, last, count, value)
            self.minimum.append(low)
            self.maximum.append(high)
            self.last.append(last)
            self.count.append(int(count))

    def prefix(self, end: int) -> _Summary:
        """Over ``values[:end]``."""
        if end <= 0:
            return _Summary(math.nan, math.nan, math.nan, 0)
        self.extend()
        index = end - 1
        return _Summary(
            self.minimum[index], self.maximum[index], self.last[index], self.count[index]
        )

    def finite_count_since(self, start: int) -> int:
        """How many finite values ``values[start:]`` holds (as ``since(start).num_finite``,
        without a summary: the detectors ask it of several series every step)."""
        self.extend()
        total = self.count[-1] if self.count else 0
        return total - self.count[start - 1] if start > 0 else total

    def since(self, start: int) -> _Summary:
        """Over ``values[start:]``."""
        if start <= 0:
            return self.prefix(len(self.values))
        if start not in self.suffixes:
            if len(self.suffixes) >= self.MAX_STARTS:
                self.suffixes.clear()
            self.suffixes[start] = [float(start), math.nan, math.nan, math.nan, 0.0]
        state = self.suffixes[start]
        end, low, high, last, count = state
        for value in self.values[int(end) :]:
            low, high, last, count = _fold(low, high, last, count, value)
        state[:] = [float(max(len(self.values), start)), low, high, last, count]
        return _Summary(low, high, last, int(count))


def _fold(
    low: float, high: float, last: float, count: float, value: float
) -> tuple[float, float, float, float]:
    """The running (min, max, last finite, count of finite) with ``value`` added; NaN
    bounds mean none yet (``not nan <= value`` takes the value)."""
    if not math.isfinite(value):
        return low, high, last, count
    return (
        value if not low <= value else low,
        value if not high >= value else high,
        value,
        count + 1,
    )


def _layers() -> dict[str, Series]:
    return {}


@dataclass
class History:
    """Everything a watch has measured, as series the detectors read.

    Loss-like series are per step (``loss``: the training loss passed to ``step``) or per
    probe (``monitor_loss`` on the fixed monitoring subset; ``train_*`` and ``val_*`` from
    the validation probe or from the Trainer's epoch metrics). Per-layer series are keyed
    by layer name: weight tensors (``"1.weight"``) for gradients and updates, activation
    modules (``"2"``) for activation statistics. Layers are in registration order, which
    is forward order for ``nn.Sequential`` models.

    Attributes:
        loss: the training loss at every step.
        smoothed_loss: the median of the recent training losses, at each check.
        peak_loss: at each check, the largest median of 3 consecutive training losses
            since the previous check.
        monitor_loss, monitor_accuracy: on the fixed monitoring subset, in eval mode.
        train_loss, train_accuracy, val_loss, val_accuracy: for the generalization gap.
        grad_norm: the global gradient norm over every parameter.
        first_last_grad_ratio: first weight's gradient norm / last weight's.
        layer_grad_norm, update_ratio: per weight tensor.
        step_learning_rate: the first param group's learning rate at each step whose
            update ratios were measured: the rate that made those updates (a schedule's
            warmup or decay moves it away from ``learning_rate``).
        dead_fraction, saturated_fraction: per ReLU / tanh-sigmoid module.
        initial_loss: the loss before training (monitoring subset) or at step 1.
        chance_loss: the loss of a classifier at chance, when known.
        chance_accuracy: the majority-class frequency, when known.
        learning_rate: the base learning rate of the first parameter group (the
            configured one, before a schedule scales it), when known.
        nonfinite: where the first NaN/inf appeared (step, what, layer), or None.
        step_size_bias: at the steps of ``step_learning_rate``, how many times larger
            the optimizer's steps are than they will be once its running average of
            squared gradients has filled: ``1 / sqrt(1 - alpha^t)`` at step ``t`` of
            RMSprop, whose average starts at 0 without Adam's bias correction (10 at step
            1 with alpha 0.99). Recorded only where it exceeds 1; the detectors divide
            update ratios by it, as by the rate.

    Example:
        >>> from gradwise.monitor import History
        >>> history = History(initial_loss=2.3, chance_loss=2.3026)
        >>> history.loss.append(1, 2.29)
        >>> history.loss.last
        2.29
    """

    loss: Series = field(default_factory=Series)
    smoothed_loss: Series = field(default_factory=Series)
    peak_loss: Series = field(default_factory=Series)
    monitor_loss: Series = field(default_factory=Series)
    monitor_accuracy: Series = field(default_factory=Series)
    train_loss: Series = field(default_factory=Series)
    train_accuracy: Series = field(default_factory=Series)
    val_loss: Series = field(default_factory=Series)
    val_accuracy: Series = field(default_factory=Series)
    grad_norm: Series = field(default_factory=Series)
    first_last_grad_ratio: Series = field(default_factory=Series)
    layer_grad_norm: dict[str, Series] = field(default_factory=_layers)
    update_ratio: dict[str, Series] = field(default_factory=_layers)
    step_learning_rate: Series = field(default_factory=Series)
    dead_fraction: dict[str, Series] = field(default_factory=_layers)
    saturated_fraction: dict[str, Series] = field(default_factory=_layers)
    initial_loss: float | None = None
    chance_loss: float | None = None
    chance_accuracy: float | None = None
    learning_rate: float | None = None
    nonfinite: dict[str, Any] | None = None
    # Last, after the fields it came later than (positional construction keeps working).
    step_size_bias: Series = field(default_factory=Series)

    def layer(self, table: dict[str, Series], name: str) -> Series:
        """The series of layer ``name`` in ``table``, created on first use."""
        if name not in table:
            table[name] = Series()
        return table[name]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, numbers, strings): for checkpoints and JSON."""
        data: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Series):
                data[item.name] = value.to_dict()
            elif isinstance(value, dict) and item.name != "nonfinite":
                data[item.name] = {name: series.to_dict() for name, series in value.items()}
            else:
                data[item.name] = dict(value) if isinstance(value, dict) else value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Inverse of :meth:`to_dict`."""
        history = cls()
        for item in fields(cls):
            if item.name not in data:
                continue
            value = data[item.name]
            current = getattr(history, item.name)
            if isinstance(current, Series):
                setattr(history, item.name, _series(value))
            elif isinstance(current, dict):
                setattr(history, item.name, {k: _series(v) for k, v in value.items()})
            else:
                setattr(history, item.name, dict(value) if isinstance(value, dict) else value)
        return history


def _series(data: dict[str, Any]) -> Series:
    return Series([int(s) for s in data["steps"]], [float(v) for v in data["values"]])
