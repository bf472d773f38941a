"""What a callback sees, and the hooks it can implement."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.optim import Optimizer


@dataclass
class TrainState:
    """The small typed state every hook receives (not the trainer itself).

    Attributes:
        epoch: the epoch, from 0: the one in progress (``on_step_end``), the one that just
            ended (``on_epoch_end``), the last one run (``on_fit_end``).
        step: optimizer steps taken so far in the whole run.
        batch_index: the batch just finished within the epoch (on_step_end), from 0.
        steps_per_epoch: batches per epoch.
        loss: the training loss of the last step, as a float.
        lr: the first param group's learning rate used by the last step (None when the
            group holds none: a gradwise Optimizer with a fixed transform).
        metrics: the latest epoch's metrics (``train_loss``, ``val_accuracy``, ...).
        model, optimizer: the live objects, for monitors that read weights, gradients or
            optimizer state. A hook must not replace them.
        stop_reason: set by :meth:`request_stop`; the trainer stops after the current
            step (in ``on_fit_start``: before the first) and records the reason as the
            summary's ``message``.
    """

    epoch: int
    step: int
    batch_index: int
    steps_per_epoch: int
    loss: float
    lr: float | None
    metrics: Mapping[str, float]
    model: nn.Module
    optimizer: Optimizer
    stop_reason: str | None = field(default=None)

    def request_stop(self, reason: str) -> None:
        """Ask the trainer to stop cleanly after the current step (with a checkpoint); from
        ``on_fit_start``, before the first step."""
        self.stop_reason = reason


class Callback:
    """Base class of trainer callbacks: every hook is a no-op until overridden.

    Hooks run in the order the callbacks were given. A callback with state that must
    survive ``--resume`` implements :meth:`state_dict` and :meth:`load_state_dict`
    (tensors, numbers, strings, lists and dicts only: checkpoints load with
    ``weights_only=True``). Checkpoints keep each state under its callback's class name
    (``"Pruning"``, then ``"Pruning#2"`` for a second one), and a resume gives it back to
    the callback of that class and place; a saved state without its callback, or a
    callback with state and none saved, is refused. A callback whose ``state_dict`` is
    empty may come and go between the start and a resume. A :meth:`load_state_dict` that
    raises refuses the resume, naming the callback, with nothing of the checkpoint loaded
    (every callback gets its own :meth:`state_dict` from before back).
    """

    def on_fit_start(self, state: TrainState) -> None:
        """Before the first step (also when resuming); a stop requested here ends the run
        before that step."""

    def on_step_end(self, state: TrainState) -> None:
        """After each optimizer step."""

    def on_epoch_end(self, state: TrainState) -> None:
        """After each epoch's evaluation; ``state.metrics`` holds the epoch's metrics."""

    def on_fit_end(self, state: TrainState) -> None:
        """After the last step, however the run ended (completed, stopped, interrupted)."""

    def on_checkpoint(self, state: TrainState) -> None:
        """Just before a checkpoint is written (with a run folder: at each epoch's end
        after ``on_epoch_end``, every ``checkpoint_every`` steps, and when a run stops or
        is interrupted): bring files the callback keeps up to what the checkpoint will
        hold, so that a run killed after it resumes with both in step. Its
        :meth:`state_dict` is taken right after."""

    def on_diverged(self, state: TrainState, loss: float) -> None:
        """The loss of step ``state.step`` became ``loss`` (NaN or inf); the run stops.

        Called before :class:`TrainingDiverged` is raised; the bad step's update was not
        applied. ``on_fit_end`` is not called after it; :meth:`on_exception` is.
        """

    def on_exception(self, state: TrainState, error: BaseException) -> None:
        """``fit()`` is ending with ``error`` (a failure, a divergence, a second Ctrl-C),
        which it raises next: release what :meth:`on_fit_start` took (hooks on the model
        or optimizer, open files).

        Every callback hears it, also one whose ``on_fit_start`` did not run (an earlier
        callback's failed) or whose ``on_fit_end`` did (the test evaluation failed), so
        make it safe to call at any time. An error raised here is added to ``error`` as a
        note, and ``error`` is still the one raised.
        """

    def state_dict(self) -> dict[str, Any]:
        """What to save in checkpoints (nothing by default)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
