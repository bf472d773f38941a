"""watch(model, optimizer): babysit a training run from a plain loop or the Trainer."""

from __future__ import annotations

import math
import numbers
import statistics
import sys
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from gradwise._validation import (
    POSITIVE_INT,
    Boolean,
    Either,
    OneOf,
    Satisfies,
    check,
    invalid_value_error,
)
from gradwise.checks._fit import cannot_run_message
from gradwise.diagnosis import Diagnosis, Finding
from gradwise.losses import LOSS_NAMES, chance_loss, get_loss
from gradwise.monitor._columns import ChunkedPacker, unpack_chunks, unpack_state
from gradwise.monitor._detectors import DETECTORS, sharing_measurements
from gradwise.monitor._history import History, Series
from gradwise.monitor._probes import (
    GradientMeasurement,
    GradientProbe,
    Histogram,
    HistogramBatch,
    LayerActivations,
    LossFunction,
    WeightSnapshot,
    bin_histograms,
    evaluate,
    first_nonfinite_module,
    first_nonfinite_parameter,
    run_activation_probe,
    watched_modules,
)
from gradwise.monitor._thresholds import Thresholds
from gradwise.monitor._units import UnitAxes
from gradwise.optim import RMSprop, next_step_lr

if TYPE_CHECKING:
    from gradwise.data import Dataset
    from gradwise.train import Callback

Batch = tuple[Tensor, Tensor]
MonitorBatch = tuple[Tensor, Tensor | None]
HistogramKind = Literal["activations", "gradients"]

_OWNER = "watch"
#: The monitoring subset taken from the first training batch when none is given.
CAPTURED_SAMPLES = 256
#: Histogram samples wait to be binned until this many probes have taken some, or until
#: they may hold this many values (4 MiB in float32).
BINNING_PROBES, BINNING_VALUES = 16, 2**20


def _is_batch(value: object) -> bool:
    if value is None:
        return True
    if hasattr(value, "inputs") and hasattr(value, "targets"):
        value = (value.inputs, value.targets)
    return (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, Tensor) for v in value)
        and len(value[0]) == len(value[1])
        and len(value[0]) > 0
    )


_BATCH = Satisfies(
    _is_batch, "an (inputs, targets) pair of tensors of equal length, a Dataset, or None"
)
_LOSS = Either((OneOf(LOSS_NAMES), Satisfies(callable, "a function (outputs, targets) -> loss")))
_OPTIMIZER = Satisfies(lambda v: v is None or isinstance(v, Optimizer), "a torch Optimizer or None")
_MODEL = Satisfies(lambda v: isinstance(v, nn.Module), "a torch nn.Module")
_THRESHOLDS = Satisfies(lambda v: isinstance(v, Thresholds), "a Thresholds")
_METRICS = Satisfies(
    lambda v: isinstance(v, Mapping),
    "a mapping of metric names to numbers or 1-element tensors",
)


class Watch:
    """Measures a training run every few steps and names what goes wrong.

    Made by :func:`watch`; see there for the arguments. Call :meth:`step` after every
    ``optimizer.step()``; read :meth:`findings`, :meth:`records`, :meth:`histograms` and
    :attr:`history` at any time; :meth:`close` removes the hooks (a ``with`` block does it
    for you). For the gradwise Trainer, pass ``callbacks=[watch.callback()]``.

    Example:
        >>> import torch
        >>> from gradwise import monitor
        >>> w = monitor.watch(torch.nn.Linear(4, 2))
        >>> w.step(torch.tensor(0.7)), w.num_steps
        ([], 1)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer | None,
        *,
        monitor_data: Batch | Dataset | None,
        validation_data: Batch | Dataset | None,
        loss_fn: str | LossFunction,
        every: int,
        cheap_every: int,
        histograms: bool,
        num_bins: int,
        histogram_values: int,
        thresholds: Thresholds,
    ) -> None:
        self.model = model
        # The probes' forwards run the module that torch.compile wrapped, eagerly: their
        # temporary hooks would make the compiled model recompile at every probe.
        self._probed_model = _uncompiled(model)
        self.optimizer = optimizer
        self.loss_name = loss_fn if isinstance(loss_fn, str) else None
        self.loss_fn: LossFunction = get_loss(loss_fn) if isinstance(loss_fn, str) else loss_fn
        self.every = every
        self.cheap_every = cheap_every
        self.num_bins = num_bins if histograms else 0
        self.histogram_values = histogram_values
        self.thresholds = thresholds
        # The param group whose rate stands for the optimizer's: the first with a positive
        # configured rate (a backbone group kept at rate 0 says nothing of the schedule).
        self._rate_group = _rate_group(optimizer)
        self.history = History(learning_rate=_base_learning_rate(optimizer, self._rate_group))
        # The data as given (or captured), and as the model takes it now: re-cast at a
        # probe when the model has been moved or cast since (``model.double()``).
        self._monitor_source: MonitorBatch | None = _as_pair(monitor_data)
        # Without monitor_data the first training inputs are kept (and saved in
        # state_dict, so that a resumed watch probes on them again).
        self._captures_inputs = self._monitor_source is None
        self._validation_source: Batch | None = _as_pair(validation_data)
        self._placement = _placement(model)
        self._monitor: MonitorBatch | None = _as_batch(self._monitor_source, *self._placement)
        self._validation = cast(
            "Batch | None", _as_batch(self._validation_source, *self._placement)
        )
        self._gradients = GradientProbe(model)
        self._modules = watched_modules(model)
        self._unit_axes = UnitAxes(model, per_unit=any(m.per_unit for m in self._modules))
        self._records: list[dict[str, Any]] = []
        self._histograms: dict[str, dict[int, dict[str, Histogram]]] = {
            "activations": {},
            "gradients": {},
        }
        self._findings: dict[Finding, Diagnosis] = {}
        # Probes' histogram samples not binned yet, with their steps (see _bin_histograms).
        self._unbinned: list[tuple[int, HistogramBatch]] = []
        self._packer = ChunkedPacker()
        self._step = 0
        self._pending: GradientMeasurement | None = None
        # The weights copied before a measured step that takes a closure (see
        # _before_optimizer_step): its gradients are measured after it.
        self._snapshot: WeightSnapshot | None = None
        # The rate of the step being measured, read before the optimizer steps (a
        # scheduler changes it after), and whether an update that moved the weights has
        # been measured yet: a warmup from 0 makes step 1's update 0, so the first step
        # with a positive rate is measured too, whatever the cadence.
        self._pending_rate: float | None = None
        self._awaiting_moving_update = optimizer is not None
        # Whether the optimizer's step pre-hook ran since the previous step() call: when it
        # did not, the optimizer skipped the step (GradScaler does, on overflowed gradients).
        self._optimizer_stepped = False
        self._skipped_steps = 0  # consecutive steps the optimizer skipped, up to this one
        # Whether a skipped step is still checked for a misplaced step() call (see
        # _check_skipped_step): until the first warning, or the first skip that GradScaler
        # made (its gradients are not finite).
        self._checks_skipped_steps = True
        self._closed = False
        self._sample_positions: dict[Any, Tensor] = {}
        self._handles: list[RemovableHandle] = []
        self._capture_handle: RemovableHandle | None = None
        if self._monitor is not None:
            self._set_chance(self._monitor[1])
            first_histograms = self._histogram_batch(True)
            try:
                self._probe(0, first_histograms)
            except (TypeError, RuntimeError, IndexError) as error:
                raise ValueError(self._cannot_run_message(error)) from error
            except TargetsRefused:
                raise  # the validation data's, named
            except ValueError as error:  # the loss's own check of the targets, say
                raise TargetsRefused("monitor_data", error) from error
            self._record_histograms(0, first_histograms)
        if self._validation is not None:
            self._set_chance(self._validation[1])
        # The hooks come last: a watch whose first probe fails leaves none behind.
        if optimizer is not None:
            self._handles.append(optimizer.register_step_pre_hook(self._before_optimizer_step))
        if self._monitor is None:
            self._capture_handle = model.register_forward_pre_hook(self._capture_inputs)

    # -- the loop's side -----------------------------------------------------------------

    @property
    def num_steps(self) -> int:
        """Optimizer steps seen so far (calls to :meth:`step`)."""
        return self._step

    def step(self, loss: Tensor | float) -> list[Diagnosis]:
        """Record one optimizer step's training loss; probe at the cadence steps.

        Call it after ``optimizer.step()`` and before the next ``zero_grad()``. Returns the
        findings first raised at this step (usually none), so a loop can print them live.
        Raises RuntimeError after :meth:`close`.
        """
        if self._closed:
            raise RuntimeError(
                f"Watch.step was called after close() (or the end of the watch's `with` "
                f"block), at step {self._step + 1}: a closed watch has removed its hooks and "
                "records nothing more. Call step() before close(), or make a new watch with "
                "gradwise.monitor.watch(...) (its load_state_dict(old.state_dict()) carries "
                "the measurements over)."
            )
        value = _as_number(loss)
        if value is None:
            raise invalid_value_error("loss", "Watch.step", "a number or a 1-element tensor", loss)
        self._step += 1
        step = self._step
        if self.optimizer is not None and not self._optimizer_stepped:
            self._skipped_steps += 1
            if self._checks_skipped_steps:
                self._check_skipped_step(step)
        else:
            self._skipped_steps = 0
        self._optimizer_stepped = False
        history = self.history
        history.loss.append(step, value)
        if history.initial_loss is None and math.isfinite(value):
            history.initial_loss = value
        if not math.isfinite(value):
            self._note_nonfinite_loss(step)
        cheap, expensive = self._cadence(step)
        if not (cheap or expensive):
            nonfinite = history.nonfinite is not None
            fresh = nonfinite and Finding.NONFINITE_LOSS not in self._findings
            return self._diagnose(step) if fresh else []
        histograms = self._measure_gradients(step)
        if expensive:
            if histograms is None:
                histograms = self._histogram_batch(True)
            self._probe(step, histograms)
        self._record_histograms(step, histograms)
        self._smooth(step)
        return self._diagnose(step)

    def observe(
        self, metrics: Mapping[str, float | Tensor], step: int | None = None
    ) -> list[Diagnosis]:
        """Record evaluation metrics (``train_loss``, ``train_accuracy``, ``val_loss``,
        ``val_accuracy``), e.g. at the end of an epoch, for the overfitting detector.

        Without ``validation_data`` these are the watch's train/validation series; with
        it the watch measures its own and only keeps these in :meth:`records`. Every
        metric (these and any other) is kept in the epoch's record, as a float: each must
        be a number or a 1-element tensor.
        """
        check("metrics", "Watch.observe", metrics, _METRICS)
        step = self._step if step is None else step
        values: dict[str, float] = {}
        for key, value in metrics.items():
            number = _as_number(value)
            if number is None:
                raise invalid_value_error(
                    "metrics", "Watch.observe", _METRICS.description, {key: value}
                )
            values[key] = number
        self._records.append({"kind": "epoch", "step": step, **values})
        if self._validation is None:
            history = self.history
            for key, series in (
                ("train_loss", history.train_loss),
                ("train_accuracy", history.train_accuracy),
                ("val_loss", history.val_loss),
                ("val_accuracy", history.val_accuracy),
            ):
                if key in values:
                    series.append(step, values[key])
        val_loss = values.get("val_loss")
        if val_loss is not None and not math.isfinite(val_loss) and self.history.nonfinite is None:
            # The training loss can stay finite while the weights have grown so large that
            # the evaluation overflows (it did at SGD lr 1e6): a blow-up all the same.
            self._locate_nonfinite(self._step, "validation loss")
        # The steps since the last measurement are judged for a blow-up too: a run of
        # fewer steps than cheap_every (6 steps of a loss climbing to 1e25) was never
        # measured, and ended with no finding.
        self._track_peak(self._step)
        return self._diagnose(step)

    # -- results -------------------------------------------------------------------------

    def findings(self) -> list[Diagnosis]:
        """The findings so far, one per kind, in the order they were first raised."""
        return list(self._findings.values())

    def records(self) -> list[dict[str, Any]]:
        """Every measurement as plain data, in step order (see docs/monitor.md).

        ``{"kind": "step", "step", "loss"}`` for every step; ``"gradients"`` (global
        norm, first/last ratio), ``"weight"`` (per weight tensor: gradient norm, weight
        norm, update norm and ratio), ``"probe"`` (monitoring and validation loss and
        accuracy, their gap), ``"activation"`` (per module: mean, std, dead and saturated
        fractions) and ``"epoch"`` (metrics passed to :meth:`observe`) at their cadence.
        """
        steps = [{"kind": "step", "step": s, "loss": v} for s, v in self.history.loss]
        merged = steps + [dict(record) for record in self._records]
        return sorted(merged, key=lambda record: record["step"])

    def histograms(self, kind: HistogramKind = "activations") -> dict[int, dict[str, Histogram]]:
        """Histogram snapshots ``{step: {layer: Histogram}}`` of activations or gradients."""
        check("kind", "Watch.histograms", kind, OneOf(("activations", "gradients")))
        self._bin_histograms()
        return {step: dict(layers) for step, layers in self._histograms[kind].items()}

    def callback(self) -> Callback:
        """This watch as a gradwise Trainer callback (``Trainer(..., callbacks=[...])``)."""
        from gradwise.monitor._callback import WatchCallback

        return WatchCallback(self)

    def close(self) -> None:
        """Remove every hook this watch registered (idempotent). The results and
        :meth:`state_dict` stay readable; :meth:`step` raises from now on."""
        self._closed = True
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._capture_handle is not None:
            self._capture_handle.remove()
            self._capture_handle = None

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def state_dict(self) -> dict[str, Any]:
        """Everything measured so far (for the Trainer's checkpoints): tensors and plain
        data, the measurements packed into chunks of three tensors, each save packing only
        what is new since the previous one (see ``_columns``)."""
        self._bin_histograms()
        state: dict[str, Any] = {
            "step": self._step,
            "packed_chunks": self._packer.pack(self.history, self._records, self._histograms),
            "findings": [finding.to_dict() for finding in self._findings.values()],
        }
        if self._captures_inputs and self._monitor_source is not None:
            # Kept from training (given monitor_data is given again on resuming).
            state["captured_inputs"] = self._monitor_source[0]
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`: the watch continues as if it had never stopped.
        (Also reads the lists and dicts that checkpoints held before the packing.)

        Raises:
            ValueError: ``state`` is no watch's state (a model's ``state_dict``, say);
                nothing is changed.
        """
        _check_watch_state(state)
        self._step = int(state["step"])
        if "packed_chunks" in state:
            history, records, histograms = unpack_chunks(state["packed_chunks"])
        elif "packed" in state:  # one chunk, as before the chunks
            history, records, histograms = unpack_state(state["packed"])
        else:  # the former state: lists and dicts
            history, records = state["history"], state["records"]
            histograms = {
                kind: {
                    int(step): {layer: Histogram(*values) for layer, values in layers.items()}
                    for step, layers in by_step.items()
                }
                for kind, by_step in state["histograms"].items()
            }
        learning_rate = self.history.learning_rate
        self.history = History.from_dict(history)
        self.history.learning_rate = learning_rate
        self._records = [dict(record) for record in records]
        self._histograms = histograms
        self._unbinned = []
        self._packer.reset()
        self._findings = {}
        for data in state["findings"]:
            finding = Diagnosis.from_dict(data)
            self._findings.setdefault(finding.kind, finding)
        captured = state.get("captured_inputs")  # absent from older states: capture anew
        if captured is not None and self._captures_inputs:
            inputs = captured.to(self._placement[0], copy=True)
            self._monitor = self._monitor_source = (inputs, None)
            if self._capture_handle is not None:
                self._capture_handle.remove()
                self._capture_handle = None
        self._pending = None
        self._snapshot = None
        # Waiting while every measured update was made at a rate of 0 (none measured yet
        # included); a checkpoint from before the rates were recorded has updates but no
        # rates, and was past its first step.
        rates = self.history.step_learning_rate
        measured = max((len(series) for series in self.history.update_ratio.values()), default=0)
        self._awaiting_moving_update = (
            self.optimizer is not None
            and measured == len(rates)
            and all(rate <= 0 for rate in rates.values)
        )

    # -- measurements ----------------------------------------------------------------------

    def _cadence(self, step: int) -> tuple[bool, bool]:
        # Step 1 is always measured: the first update shows the step size before a too
        # large learning rate has had time to distort the weights.
        # Under a warmup from rate 0, so is the first step with a positive rate (until the
        # cadence's own first measurement: a group kept at rate 0 must not make every step
        # a measured one).
        first_move = self._awaiting_moving_update and step < self.cheap_every
        return step == 1 or step % self.cheap_every == 0 or first_move, step % self.every == 0

    def _before_optimizer_step(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        self._optimizer_stepped = True
        upcoming = self._step + 1
        cheap, expensive = self._cadence(upcoming)
        # A step that takes a closure (LBFGS, Newton; any torch optimizer may) makes its
        # gradients inside the closure, LBFGS several times: the gradients here are the
        # previous step's or none (none at step 1, which then had no update ratio). The
        # weights are copied now and the step's gradients measured after it, in step().
        closure = kwargs.get("closure", args[0] if args else None)
        if cheap or expensive:
            self._pending_rate = _current_learning_rate(optimizer, self._rate_group)
            optimized, stepped = _optimized_parameters(optimizer)
            if closure is None:
                self._pending = self._gradients.measure(
                    upcoming,
                    snapshot=True,
                    histograms=self._histogram_batch(expensive),
                    optimized=optimized,
                    stepped=stepped,
                )
                finite = self._pending is None or self._pending.first_nonfinite is None
            else:
                self._pending = None
                self._snapshot = self._gradients.snapshot(upcoming, optimized, stepped)
                finite = self._gradients.gradients_finite()
        else:
            finite = self._gradients.gradients_finite()
        if self.history.nonfinite is None and not finite:
            # Every gradient is checked at every step: one call over all of them (or the
            # gradient norms, where they are measured) finds a NaN/inf before the update
            # writes it into the weights, while they still show where it came from, even
            # one confined to a middle parameter's own gradient, which neither the loss
            # nor the first layer's gradient shows. (Labelled "loss" by step() if the
            # loss is not finite either.)
            self._locate_nonfinite(upcoming, "gradient")

    def _note_nonfinite_loss(self, step: int) -> None:
        history = self.history
        if history.nonfinite is None:
            self._locate_nonfinite(step, "loss")
        elif history.nonfinite["step"] == step:
            # The optimizer's pre-hook saw the gradients first; the loss is the cause.
            history.nonfinite["source"] = "loss"

    def _check_skipped_step(self, step: int) -> None:
        """Warn once when the optimizer did not step since the previous step() call and
        the gradients are finite: GradScaler, the one thing expected to skip steps, skips
        only on non-finite gradients, so step() was called before optimizer.step() or
        twice for one. Off the per-step path: the optimizer's pre-hook, which did not run,
        would have checked the gradients as this does."""
        parameters = self._gradients.parameters
        if not any(parameter.grad is not None for parameter in parameters):
            return  # zeroed since (set_to_none): no evidence either way; the next skip tells
        # Once: after the warning, or after a loss scaler's skip (it will skip again).
        self._checks_skipped_steps = False
        if not self._gradients.gradients_finite():
            return
        since = "the previous step() call" if step > 1 else "the watch was made"
        warnings.warn(
            f"watch: no optimizer.step() ran since {since} (step {step}), and the gradients "
            "are finite, so it was not a step that GradScaler skipped. Call watch.step(loss) "
            "once per optimizer step, after optimizer.step() and before the next zero_grad(): "
            "called before optimizer.step() or twice for one step, it counts steps the "
            "optimizer did not take and measures them at the wrong step. A loop that skips "
            "optimizer.step() on purpose can ignore this warning (it is given once).",
            UserWarning,
            stacklevel=3,
        )

    def _capture_inputs(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self._monitor is not None or not args or not isinstance(args[0], Tensor):
            return
        self._monitor = self._monitor_source = (args[0].detach()[:CAPTURED_SAMPLES].clone(), None)
        if self._capture_handle is not None:
            self._capture_handle.remove()
            self._capture_handle = None

    def _histogram_batch(self, wanted: bool) -> HistogramBatch | None:
        if not wanted or not self.num_bins:
            return None
        return HistogramBatch(self.num_bins, self.histogram_values, self._sample_positions)

    def _record_step_size(self, step: int, rate: float) -> None:
        """The rate that made ``step``'s measured updates, and how much the optimizer's
        start inflated them (see ``History.step_size_bias``)."""
        self.history.step_learning_rate.append(step, rate)
        bias = _square_average_bias(self.optimizer, self._rate_group)
        if bias >= 1.0 + RECORDED_BIAS:
            self.history.step_size_bias.append(step, bias)

    def _measure_gradients(self, step: int) -> HistogramBatch | None:
        """Record the gradient measurement of ``step``; returns its histogram samples."""
        pending, self._pending = self._pending, None
        snapshot, self._snapshot = self._snapshot, None
        measurement = pending
        if measurement is None or measurement.step != step:
            _, expensive = self._cadence(step)
            # (After a step with a closure, only the weights of the optimizer, as before it.)
            measurement = self._gradients.measure(
                step,
                snapshot=False,
                histograms=self._histogram_batch(expensive),
                optimized=snapshot.optimized if snapshot is not None else (),
            )
            if (
                0 < self._skipped_steps < self.thresholds.sustained_steps
                and measurement is not None
                and measurement.first_nonfinite is not None
            ):
                # The optimizer did not step on these gradients (GradScaler skips a step
                # whose scaled gradients overflowed, then lowers its scale): they are not
                # training's, and not a NaN in it. The next step is measured instead while
                # no update has been (step 1's, usually). After `sustained_steps` skips in
                # a row, a NaN that GradScaler keeps skipping is named as any other.
                return None
        if measurement is None:
            return None
        self._gradients.add_snapshot(measurement, snapshot)
        history = self.history
        history.grad_norm.append(step, measurement.global_norm)
        names = measurement.weight_names
        norms = measurement.weight_grad_norms
        ratio = norms[0] / norms[-1] if norms and norms[-1] > 0 else math.nan
        if norms:
            history.first_last_grad_ratio.append(step, ratio)
        self._records.append(
            {
                "kind": "gradients",
                "step": step,
                "grad_norm": measurement.global_norm,
                "first_last_grad_ratio": ratio,
            }
        )
        # Per weight the optimizer stepped: (||update||, ||w|| before the step, the ratio).
        updates: dict[str, tuple[float, float, float]] = {}
        if measurement.before is not None and measurement.weight_norms is not None:
            update_norms = self._gradients.update_norms(measurement)
            updates = {
                name: (update, weight, _ratio(update, weight))
                for name, update, weight in zip(
                    measurement.updated_names, update_norms, measurement.weight_norms, strict=True
                )
            }
            rate = self._pending_rate
            if rate is not None and updates:
                self._record_step_size(step, rate)
            # Until an update measures a step size: one at rate 0 does not, and neither
            # does one whose finite ratios are all 0 (a zero-initialized output layer: its
            # own ratios are inf, and the layers behind it get no gradient at step 1).
            self._awaiting_moving_update = (rate is not None and rate <= 0) or not _moved(
                [ratio for _, _, ratio in updates.values()]
            )
        self._place_new_layers(names)
        for name, norm in zip(names, norms, strict=True):
            history.layer_grad_norm[name].append(step, norm)
            record: dict[str, Any] = {
                "kind": "weight",
                "step": step,
                "layer": name,
                "grad_norm": norm,
            }
            if name in updates:
                update, weight, update_ratio = updates[name]
                history.layer(history.update_ratio, name).append(step, update_ratio)
                record.update(weight_norm=weight, update_norm=update, update_ratio=update_ratio)
            self._records.append(record)
        if measurement.first_nonfinite is not None and history.nonfinite is None:
            self._locate_nonfinite(step, "gradient")
        return measurement.histograms

    def _place_new_layers(self, names: list[str]) -> None:
        """A layer measured for the first time (unfrozen, or added to the optimizer) takes
        its place in registration order: the detectors' first and last layers are the
        first and last of the table, as the first/last ratio's are."""
        table = self.history.layer_grad_norm
        if all(name in table for name in names):
            return
        order = self._gradients.registration_order
        for name in names:
            table.setdefault(name, Series())
        ranked = sorted(table, key=lambda name: order.get(name, len(order)))
        self.history.layer_grad_norm = {name: table[name] for name in ranked}

    def _follow_model(self) -> None:
        """Re-cast the data when the model was moved or cast since they last were."""
        placement = _placement(self.model)
        if placement != self._placement:
            self._placement = placement
            self._monitor = _as_batch(self._monitor_source, *placement)
            self._validation = cast("Batch | None", _as_batch(self._validation_source, *placement))

    def _cannot_run_message(self, error: Exception) -> str:
        shapes = " and ".join(
            f"{name} (inputs of shape {tuple(batch[0].shape)})"
            for name, batch in (
                ("monitor_data", self._monitor),
                ("validation_data", self._validation),
            )
            if batch is not None
        )
        return cannot_run_message(
            "model and loss_fn",
            "watch",
            shapes,
            error,
            "Check that the model takes inputs of that shape and that loss_fn takes its "
            "outputs and the targets (a regression needs loss_fn='mse' or a function; a model "
            "that returns a tuple or dict, a function that picks the outputs).",
        )

    def _probe(self, step: int, histograms: HistogramBatch | None) -> None:
        if self._monitor is None:
            return
        self._follow_model()
        inputs, targets = self._monitor
        probe = run_activation_probe(
            self._probed_model,
            inputs,
            targets,
            self.loss_fn,
            modules=self._modules,
            histograms=histograms,
            saturation_share=self.thresholds.saturation_share,
            unit_axes=self._unit_axes,
            custom_loss=self.loss_name is None,
        )
        if step == 0 and targets is not None and probe.loss is None:
            # At creation (the first probe with targets): a named loss got no tensor.
            warnings.warn(
                f"watch: the model returns a {probe.output_type!r} object, not a tensor, so the "
                f"named loss {self.loss_name!r} cannot score it: no monitoring or "
                "validation loss or accuracy will be recorded. Pass loss_fn=a function "
                "(outputs, targets) -> loss that takes what the model returns.",
                UserWarning,
                stacklevel=4,
            )
        if step == 0 and self.loss_name in ("cross_entropy", "hinge") and probe.num_outputs == 1:
            # Over one class both are 0 whatever the weights: a regression (or a binary
            # classifier's single logit) would be watched with a loss that never moves.
            raise invalid_value_error(
                "loss_fn",
                _OWNER,
                "a loss for the model's outputs: a class loss over 1 output is 0 whatever "
                "the weights (a regression needs loss_fn='mse' or a function)",
                self.loss_name,
            )
        record = self._record_losses(step, probe.loss, probe.accuracy, probe.num_outputs)
        self._records.append(record)
        self._record_layers(step, probe.layers)

    def _record_losses(
        self, step: int, loss: float | None, accuracy: float | None, num_outputs: int | None
    ) -> dict[str, Any]:
        history = self.history
        record: dict[str, Any] = {"kind": "probe", "step": step}
        if loss is not None:
            history.monitor_loss.append(step, loss)
            record["monitor_loss"] = loss
            if step == 0:
                history.initial_loss = loss
        if accuracy is not None:
            history.monitor_accuracy.append(step, accuracy)
            record["monitor_accuracy"] = accuracy
        if (
            num_outputs is not None
            and history.chance_loss is None
            and self.loss_name
            and self._class_targets()
        ):
            history.chance_loss = chance_loss(self.loss_name, num_outputs)
        if self._validation is not None:
            record.update(self._validate(step, self._validation, loss, accuracy))
        return record

    def _record_histograms(self, step: int, histograms: HistogramBatch | None) -> None:
        if histograms is None:
            return
        # A step's gradients and activations are binned together, and with those of the
        # next probes: one host copy and numpy calls shared by them all (see
        # bin_histograms), whenever the histograms are read or saved, or enough wait.
        self._unbinned.append((step, histograms))
        most = sum(len(batch.keys) for _, batch in self._unbinned) * self.histogram_values
        if len(self._unbinned) >= BINNING_PROBES or most >= BINNING_VALUES:
            self._bin_histograms()

    def _bin_histograms(self) -> None:
        """Bin the waiting histogram samples into ``self._histograms``."""
        if not self._unbinned:
            return
        steps = [step for step, _ in self._unbinned]
        binned = bin_histograms([batch for _, batch in self._unbinned])
        self._unbinned = []
        for step, histograms in zip(steps, binned, strict=True):
            for (kind, name), histogram in histograms.items():
                self._histograms[kind].setdefault(step, {})[name] = histogram

    def _record_layers(self, step: int, layers: list[LayerActivations]) -> None:
        history = self.history
        for layer in layers:
            self._records.append(
                {
                    "kind": "activation",
                    "step": step,
                    "layer": layer.name,
                    "module": layer.module,
                    "mean": layer.mean,
                    "std": layer.std,
                    "dead_fraction": layer.dead_fraction,
                    "saturated_fraction": layer.saturated_fraction,
                }
            )
            if layer.dead_fraction is not None:
                history.layer(history.dead_fraction, layer.name).append(step, layer.dead_fraction)
            if layer.saturated_fraction is not None:
                series = history.layer(history.saturated_fraction, layer.name)
                series.append(step, layer.saturated_fraction)

    def _validate(
        self,
        step: int,
        validation: Batch,
        train_loss: float | None,
        train_accuracy: float | None,
    ) -> dict[str, Any]:
        inputs, targets = validation
        try:
            val_loss, val_accuracy = evaluate(
                self._probed_model,
                inputs,
                targets,
                self.loss_fn,
                custom_loss=self.loss_name is None,
            )
        except ValueError as error:  # the loss's own check of the targets, say
            raise TargetsRefused("validation_data", error) from error
        history = self.history
        result: dict[str, Any] = {}
        if train_loss is not None and val_loss is not None:
            history.train_loss.append(step, train_loss)
            history.val_loss.append(step, val_loss)
            result["val_loss"] = val_loss
        if train_accuracy is not None and val_accuracy is not None:
            history.train_accuracy.append(step, train_accuracy)
            history.val_accuracy.append(step, val_accuracy)
            result.update(val_accuracy=val_accuracy, gap=train_accuracy - val_accuracy)
        return result

    def _smooth(self, step: int) -> None:
        history = self.history
        recent = _finite(history.loss.since(step - self.thresholds.smoothing_steps + 1))
        if recent:
            history.smoothed_loss.append(step, statistics.median(recent))
        self._track_peak(step)

    def _track_peak(self, step: int) -> None:
        """The peak since the previous check of the median of 3 consecutive losses: a
        blow-up lasting a few steps, robust to one unlucky batch."""
        history = self.history
        previous = history.peak_loss.last_step or 0
        if previous >= step:
            return
        values = history.loss.since(previous - 1)
        peaks = _finite([statistics.median(values[i : i + 3]) for i in range(len(values) - 2)])
        if peaks:
            history.peak_loss.append(step, max(peaks))

    def _locate_nonfinite(self, step: int, source: str) -> None:
        """Where the first NaN/inf is: a weight, a module's output on the monitoring
        subset, or (failing both) a gradient; the first in registration/forward order."""
        self._follow_model()
        located = {
            "parameter": first_nonfinite_parameter(self.model),
            "activation": (
                first_nonfinite_module(self._probed_model, self._monitor[0])
                if self._monitor is not None
                else None
            ),
            "gradient": self._gradients.first_nonfinite_gradient(),
        }
        where = next((kind for kind, name in located.items() if name is not None), None)
        finite = [(s, v) for s, v in self.history.loss if math.isfinite(v)]
        self.history.nonfinite = {
            "step": step,
            "source": source,
            "where": where,
            "layer": located[where] if where is not None else None,
            **{f"first_nonfinite_{kind}": name for kind, name in located.items()},
            "last_finite_step": finite[-1][0] if finite else None,
            "last_finite_loss": finite[-1][1] if finite else None,
        }

    def _class_targets(self) -> bool:
        """Whether the monitoring targets are class indices: only then is there a loss at
        chance (a regression's MSE has none)."""
        targets = self._monitor[1] if self._monitor is not None else None
        return targets is not None and not targets.is_floating_point()

    def _set_chance(self, targets: Tensor | None) -> None:
        if targets is None or targets.is_floating_point() or targets.numel() == 0:
            return
        labels = targets.reshape(-1).long()
        # Negative labels are left out, as cross-entropy leaves out its ignore_index -100
        # (bincount refused them: the watch could not be made).
        labels = labels[labels >= 0]
        if labels.numel() == 0:
            return
        counts = torch.bincount(labels)
        majority = float(counts.max()) / labels.numel()
        history = self.history
        history.chance_accuracy = max(history.chance_accuracy or 0.0, majority)

    def _diagnose(self, step: int) -> list[Diagnosis]:
        new = []
        with sharing_measurements():
            for detect in DETECTORS:
                finding = detect(self.history, self.thresholds)
                if finding is not None and finding.kind not in self._findings:
                    self._findings[finding.kind] = finding
                    new.append(finding)
        return new


def _check_optimizer_steps_model(model: nn.Module, optimizer: Optimizer | None) -> None:
    """Refuse an optimizer that steps none of the model's parameters (another model's):
    the watch would record no update ratio, and its learning-rate findings no evidence."""
    if optimizer is None:
        return
    own = {id(parameter) for parameter in model.parameters()}
    held = [p for group in optimizer.param_groups for p in group["params"]]
    if held and own and not any(id(parameter) in own for parameter in held):
        raise ValueError(
            f"The 'optimizer' parameter of {_OWNER} must step parameters of 'model'. Got an "
            f"optimizer of {len(held)} tensor(s), none of them the model's, instead: pass "
            "the optimizer that trains this model (or the model it trains)."
        )


def watch(
    model: nn.Module,
    optimizer: Optimizer | None = None,
    *,
    monitor_data: Batch | Dataset | None = None,
    validation_data: Batch | Dataset | None = None,
    loss_fn: str | LossFunction = "cross_entropy",
    every: int = 50,
    cheap_every: int = 10,
    histograms: bool = True,
    num_bins: int = 30,
    histogram_values: int = 4096,
    thresholds: Thresholds | None = None,
) -> Watch:
    """Start watching a training run: the lectures' babysitting, measured and diagnosed.

    Call ``watch.step(loss)`` after every ``optimizer.step()``; ``watch.findings()``
    returns what it found (:class:`gradwise.diagnosis.Diagnosis`, one per kind).

    What it measures, and when (steps count ``step`` calls, i.e. optimizer steps):

    - every step: the training loss (one float);
    - every ``cheap_every`` steps: the global gradient norm, each weight's gradient norm,
      the first-to-last-layer gradient-norm ratio, and each weight's update-to-weight
      ratio :math:`\\lVert W_{t+1} - W_t \\rVert / \\lVert W_t \\rVert` (healthy near
      1e-3). With ``optimizer`` given, a step pre-hook reads the gradients and copies the
      weights just before those steps only; without it, gradients are read in ``step``
      and there are no update ratios.
    - every ``every`` steps (and once at the start): one eval-mode, no-grad forward on the
      fixed monitoring subset with temporary forward hooks: its loss and accuracy; per
      activation module (ReLU, tanh, ...) and Linear/Conv output: mean and std; the
      fraction of dead ReLU units (never > 0 on the subset) and of saturated tanh/sigmoid
      units; histograms of activations and weight gradients; the validation loss and
      accuracy when ``validation_data`` is given. Each call of a module in the forward
      is a layer of its own (``act``, then ``act#2``, ... for a reused ``act``).

    After each measurement the detectors (:data:`gradwise.monitor.DETECTORS`) run over the
    recorded :class:`History` with ``thresholds``; each finding kind is reported once.
    Probes leave the model as they found it (parameters, buffers, every module's
    train/eval mode, gradients) and restore the global RNG state.

    Args:
        model: the network being trained.
        optimizer: its optimizer (needed for update ratios and the learning-rate fixes).
        monitor_data: the fixed monitoring subset, an ``(inputs, targets)`` batch or a
            :class:`gradwise.data.Dataset` (e.g. 256 training samples). None: the first
            256 inputs the model sees in training are kept (activation statistics only;
            trends then use the training loss). Floating inputs are cast to the model's
            floating dtype, integer class targets to int64.
        validation_data: held-out ``(inputs, targets)`` evaluated at every probe for the
            generalization gap (keep it small; or call :meth:`Watch.observe` with your own
            metrics instead).
        loss_fn: "cross_entropy", "hinge", "mse" or a function (outputs, targets) -> loss,
            for the monitoring loss (a named loss also gives the chance level). A function
            gets whatever the model returns (a tuple or dict too); a named loss needs a
            tensor of outputs, else there is no monitoring loss (the watch warns once).
        every: steps between the expensive probes (activations, histograms, monitoring
            and validation loss).
        cheap_every: steps between gradient-norm and update-ratio measurements.
        histograms: record activation and gradient histograms at the expensive probes.
        num_bins: bins per histogram.
        histogram_values: bin at most this many values per tensor (a fixed pseudo-random
            sample of its entries); non-finite values are counted over the whole tensor.
        thresholds: the detectors' :class:`Thresholds` (default: the calibrated ones).

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from gradwise import monitor
        >>> _ = torch.manual_seed(0)
        >>> inputs, targets = torch.randn(512, 20), torch.randint(0, 3, (512,))
        >>> model = torch.nn.Sequential(
        ...     torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3)
        ... )
        >>> optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        >>> with monitor.watch(model, optimizer, monitor_data=(inputs[:256], targets[:256])) as w:
        ...     for step in range(100):
        ...         batch = torch.randint(0, 512, (64,))
        ...         loss = F.cross_entropy(model(inputs[batch]), targets[batch])
        ...         optimizer.zero_grad()
        ...         loss.backward()
        ...         optimizer.step()
        ...         _ = w.step(loss)
        >>> w.findings()
        []
        >>> sorted(w.histograms("activations"))
        [0, 50, 100]

    References:
        Karpathy, cs231n "Neural Networks Part 3: babysitting the learning process";
        Grosse & Ba, CSC421 lectures 7-8 (the table of symptoms and workarounds); Zhang et
        al. 2021, AutoTrainer (gradient-norm thresholds); Schneider et al. 2021, Cockpit.
    """
    check("model", _OWNER, model, _MODEL)
    check("optimizer", _OWNER, optimizer, _OPTIMIZER)
    check("monitor_data", _OWNER, monitor_data, _BATCH)
    check("validation_data", _OWNER, validation_data, _BATCH)
    check("loss_fn", _OWNER, loss_fn, _LOSS)
    for name, value in (
        ("every", every),
        ("cheap_every", cheap_every),
        ("num_bins", num_bins),
        ("histogram_values", histogram_values),
    ):
        check(name, _OWNER, value, POSITIVE_INT)
    check("histograms", _OWNER, histograms, Boolean())
    _check_optimizer_steps_model(model, optimizer)
    thresholds = Thresholds() if thresholds is None else thresholds
    check("thresholds", _OWNER, thresholds, _THRESHOLDS)
    return Watch(
        model,
        optimizer,
        monitor_data=monitor_data,
        validation_data=validation_data,
        loss_fn=loss_fn,
        every=int(every),
        cheap_every=int(cheap_every),
        histograms=histograms,
        num_bins=int(num_bins),
        histogram_values=int(histogram_values),
        thresholds=thresholds,
    )


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _ratio(update: float, weight: float) -> float:
    """||update|| / ||w||: NaN when not finite, and for a zero weight that did not move
    (no step size to measure: all-zero layers would otherwise read as tiny updates)."""
    if not (math.isfinite(update) and math.isfinite(weight)):
        return math.nan
    if weight > 0:
        return update / weight
    return math.inf if update > 0 else math.nan


#: The keys of a watch's state: always, and one of the forms its measurements took.
_STATE_KEYS = ("step", "findings")
_MEASUREMENT_FORMS = (("packed_chunks",), ("packed",), ("history", "records", "histograms"))


class TargetsRefused(ValueError):
    """The loss refused the targets of the watch's ``argument`` (labels out of range, say):
    its message, led by the argument that holds them."""

    def __init__(self, argument: str, error: ValueError) -> None:
        super().__init__(
            f"The '{argument}' parameter of watch must hold targets that loss_fn takes. {error}"
        )
        self.argument = argument


def _moved(ratios: list[float]) -> bool:
    """Whether an update measured a step size: the median of its finite update ratios is
    > 0, as :func:`~gradwise.monitor._detectors.first_update_ratio` asks of it."""
    finite = [ratio for ratio in ratios if math.isfinite(ratio)]
    return bool(finite) and statistics.median(finite) > 0


def _check_watch_state(state: object) -> None:
    """Refuse, before anything is loaded, what is no :meth:`Watch.state_dict` result."""
    keys = set(state) if isinstance(state, Mapping) else set()
    if set(_STATE_KEYS) <= keys and any(set(form) <= keys for form in _MEASUREMENT_FORMS):
        return
    shown_keys = sorted(map(str, keys))[:6]
    got = f"a mapping with keys {shown_keys}" if keys else type(state).__name__
    raise ValueError(
        "The 'state' parameter of Watch.load_state_dict must be what Watch.state_dict() "
        f"returned (keys 'step', 'findings' and 'packed_chunks'). Got {got} instead: load "
        "the watch's own state (a Trainer's checkpoint keeps it under its callbacks, not "
        "under 'model'); nothing was changed."
    )


def _as_number(value: object) -> float | None:
    """A real number (a NumPy scalar too: ``np.float32`` is no ``float``) or a 1-element
    tensor or array as a float; None for anything else (a bool too)."""
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        return float(value.item())
    return None


def _uncompiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile``'d model wraps (the model itself otherwise)."""
    # Only a compiled model's module can be one, and compiling imported it.
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    if eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
        inner = model._orig_mod
        return inner if isinstance(inner, nn.Module) else model
    return model


def _as_pair(data: Batch | Dataset | None) -> Batch | None:
    """``(inputs, targets)`` of a batch or a ``Dataset``, detached."""
    if data is None:
        return None
    inputs, targets = (data.inputs, data.targets) if not isinstance(data, tuple | list) else data
    return inputs.detach(), targets.detach()


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype | None]:
    """The model's device (its first parameter's) and floating dtype (its first floating
    parameter's), which the data must follow."""
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    floating = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    return device, floating


def _as_batch(
    data: MonitorBatch | None, device: torch.device, floating: torch.dtype | None
) -> MonitorBatch | None:
    """The batch on ``device``, floating inputs in the model's ``floating`` dtype and integer
    class targets int64 (as ``Dataset`` makes them), so that int32 targets and a float64
    model work as they do in ``checks.sanity``."""
    if data is None:
        return None
    inputs, targets = data
    dtype = floating if floating is not None and inputs.is_floating_point() else inputs.dtype
    if targets is not None and not (targets.is_floating_point() or targets.is_complex()):
        targets = targets.to(torch.int64)
    return inputs.to(device, dtype), None if targets is None else targets.to(device)


def _number(value: object) -> float | None:
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _configured_rate(group: Mapping[str, Any]) -> float | None:
    # LR schedulers keep the configured rate in "initial_lr"; "lr" is the current one.
    return _number(group.get("initial_lr", group.get("lr")))


def _rate_group(optimizer: Optimizer | None) -> int | None:
    """The first param group with a positive configured rate, or a schedule (whose rates
    are read at the measured steps; None: no group has either)."""
    if optimizer is None:
        return None
    for index, group in enumerate(optimizer.param_groups):
        rate = _configured_rate(group)
        # A schedule that a gradwise Optimizer evaluates counts even at 0 (a warmup).
        schedule = callable(group.get("lr")) and next_step_lr(optimizer, index) is not None
        if schedule or (rate is not None and rate > 0):
            return index
    return None


def _current_learning_rate(optimizer: Optimizer, index: int | None) -> float | None:
    """The rate param group ``index``'s next step uses (None when it has none, or not a
    number); a schedule in a gradwise Optimizer's group at the group's step count."""
    if index is None or index >= len(optimizer.param_groups):
        return None
    return next_step_lr(optimizer, index)


#: ``history.step_size_bias`` is recorded while it exceeds 1 by this much (RMSprop's, at
#: alpha 0.99, until step 618).
RECORDED_BIAS = 1e-3


def _square_average_bias(optimizer: Optimizer | None, index: int | None) -> float:
    """How many times larger param group ``index``'s last step was than the same gradients
    give once the optimizer's running average of squared gradients has filled: ``1 /
    sqrt(1 - alpha^t)`` after step ``t`` of RMSprop (torch's or gradwise's; the average
    starts at 0 and, unlike Adam's, is not bias-corrected, so step 1 divides by
    ``sqrt(1 - alpha) |g|``), 1 for other optimizers. Read after the step."""
    if not isinstance(optimizer, torch.optim.RMSprop | RMSprop) or index is None:
        return 1.0
    if index >= len(optimizer.param_groups):
        return 1.0
    group = optimizer.param_groups[index]
    alpha = group.get("alpha")
    steps = next(
        (state["step"] for p in group["params"] if "step" in (state := optimizer.state.get(p, {}))),
        None,
    )
    if not isinstance(alpha, int | float) or not 0 < alpha < 1 or steps is None:
        return 1.0
    filled = 1.0 - float(alpha) ** float(steps)
    return 1.0 / math.sqrt(filled) if filled > 0 else 1.0


def _optimized_parameters(optimizer: Optimizer) -> tuple[set[int], set[int]]:
    """Ids of the optimizer's parameters, and of those it steps now: in a group whose rate
    is positive (or unknown: a fixed transform keeps its rate inside)."""
    optimized: set[int] = set()
    stepped: set[int] = set()
    for index, group in enumerate(optimizer.param_groups):
        ids = {id(p) for p in group["params"]}
        optimized |= ids
        rate = next_step_lr(optimizer, index)
        if rate is None or rate > 0:
            stepped |= ids
    return optimized, stepped


def _base_learning_rate(optimizer: Optimizer | None, index: int | None) -> float | None:
    if optimizer is None or index is None or index >= len(optimizer.param_groups):
        return None
    configured = _configured_rate(optimizer.param_groups[index])
    # A schedule's first rate; its peak, if later, is found as the steps are measured.
    return configured if configured is not None else next_step_lr(optimizer, index)
