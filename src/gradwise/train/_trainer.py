"""The Trainer: minibatch training with evaluation, checkpoints, resume and callbacks."""

from __future__ import annotations

import math
import signal
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from gradwise._validation import POSITIVE, POSITIVE_INT, Either, OneOf, Satisfies, check
from gradwise.averaging import WeightAverage
from gradwise.averaging._average import why_nothing_averaged
from gradwise.data import Batches, Dataset, DataSplits
from gradwise.distributed._world import World
from gradwise.losses import get_loss
from gradwise.losses._losses import count_correct, count_loss_samples, ignore_index_of
from gradwise.optim import next_step_lr
from gradwise.regularize import EarlyStopping, Mixup
from gradwise.runs import RunFolder, RunFolderError, read_summary, to_timestamp
from gradwise.train._callbacks import Callback, TrainState
from gradwise.train._checkpoint import copy_checkpoint, load_checkpoint, save_checkpoint
from gradwise.train._evaluation import Accumulator, Hits, evaluate
from gradwise.train._interrupt import InterruptFlag, graceful_interrupt
from gradwise.train._outputs import RunOutputs
from gradwise.train._rng import get_rng_state, set_rng_state

Status = Literal["completed", "early_stopped", "stopped", "interrupted"]
LossFunction = Callable[[Tensor, Tensor], Tensor]

_OPTIONAL_INT = Either((POSITIVE_INT, Satisfies(lambda v: v is None, "None")))
_MODES = OneOf(("auto", "min", "max"))
_OPTIONAL_NORM = Either((POSITIVE, Satisfies(lambda v: v is None, "None")))
#: The averaged weights' file in a run's checkpoints/ (when the run averages its weights).
AVERAGED_CHECKPOINT = "averaged.pt"
_AVERAGE = Satisfies(
    lambda v: v is None or isinstance(v, WeightAverage), "a gradwise.averaging average or None"
)


#: The fewest samples an epoch's short last training batch may hold; a smaller one (1 sample)
#: is dropped: batch norm cannot normalize 1 sample in training, and one sample's loss is a
#: spike. The same in every process count, so N processes still train like one.
SMALLEST_LAST_BATCH = 2


def training_batches(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> Batches:
    """The Trainer's batches of ``dataset``: reshuffled each epoch, and an epoch's last batch
    dropped when it holds 1 sample (:data:`SMALLEST_LAST_BATCH`). ``len()`` of it is the
    Trainer's steps per epoch."""
    return Batches(
        dataset,
        batch_size,
        shuffle=True,
        min_last_batch_size=SMALLEST_LAST_BATCH,
        seed=seed,
        device=device,
    )


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message gives the step and the last finite loss."""


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns: how the run ended and its numbers."""

    status: Status
    epochs: int
    steps: int
    metrics: dict[str, float]
    best: dict[str, Any]
    test: dict[str, float]
    run: RunFolder | None
    summary: dict[str, Any] = field(repr=False)


@dataclass
class _Position:
    epoch: int = 0
    batch: int = 0
    step: int = 0

    @property
    def epoch_number(self) -> int:
        """The epoch as the user reads it, from 1, as the progress bar counts: the one in
        progress, or the one just ended at its end (0 before the first step). ``epoch``
        counts the epochs ended."""
        return self.epoch + (self.batch > 0)


class Trainer:
    """Train a model on in-memory data, the way ``gradwise train`` does, in a few lines.

    Each epoch reshuffles the training split with a generator seeded from ``(seed,
    epoch)``; each step runs augmentation, forward, loss (+ penalty), backward,
    ``optimizer.step()`` and ``scheduler.step()``. Every ``log_every`` steps the mean
    training loss and accuracy since the last record go to the metrics log; every epoch
    ends with an evaluation on the validation split, the "last" checkpoint, and the
    "best" one when the monitored metric improved. The test split is evaluated once, at
    the end.

    Reliability: checkpoints hold the model, optimizer, scheduler, RNG states (torch's,
    each augmentation's, and the global ones of Python's ``random`` and ``np.random``),
    early stopping, callbacks and the position in the data order, so ``fit(resume=True)``
    on a killed run ends with bit-identical parameters. Ctrl-C (or SIGTERM: a scheduler's
    preemption, ``kill``) finishes the current step, checkpoints and returns with status
    ``"interrupted"``. A NaN or infinite loss stops
    the run before the bad step's update is applied and raises :class:`TrainingDiverged`
    naming the step and the last finite loss; the last good checkpoint stays.

    Train and eval modes: each module trains in the mode it is in (the one it had when
    :meth:`fit` started, or that a callback gave it since), so a batch norm frozen with
    ``.eval()`` stays frozen: evaluations give every module its own mode back, never a
    blanket ``.train()`` (a callback that evaluates the model itself must do the same). A
    model whose root module is in eval mode when :meth:`fit` starts (evaluated, or loaded
    in eval mode, before) is first put in training mode as a whole: trained in eval mode,
    its dropout would do nothing and its batch norms would learn no statistics. So is one
    a callback left in eval mode at an epoch's start, with a warning.

    Args:
        model: any ``nn.Module`` mapping a batch of inputs to outputs.
        optimizer: any torch optimizer over the model's parameters.
        data: the splits (from :func:`gradwise.data.load_dataset` or your own tensors).
        loss: "cross_entropy", "hinge", "mse", or a function (outputs, targets) -> loss.
        batch_size: samples per step. An epoch's last batch is smaller when ``batch_size``
            does not divide the training split; a last batch of 1 sample is dropped (batch
            norm cannot train on it; the data are reshuffled each epoch, so no sample is
            left out for good), one of 2 or more is a step.
        epochs: passes over the training split; or give ``steps``.
        steps: total optimizer steps (wins over ``epochs``).
        scheduler: a torch LR scheduler, stepped after every optimizer step.
        clip_grad_norm: clip the gradients of every parameter the optimizer steps (all
            its param groups) to this total L2 norm before each step, with
            ``torch.nn.utils.clip_grad_norm_``; None: no clipping. (A
            :func:`gradwise.optim.clip_by_global_norm` in a transform chain sees one param
            group's gradients at a time.) Monitors see the clipped gradients.
        penalty: a function returning a scalar added to the loss (e.g.
            :class:`gradwise.regularize.Penalty`).
        augment: a module applied to training inputs (off in eval mode).
        mixup: a :class:`gradwise.regularize.Mixup`, applied after ``augment``.
        early_stopping: a :class:`gradwise.regularize.EarlyStopping` checked each epoch.
        callbacks: hooks (:class:`Callback`), run in order.
        run: a run folder (from :meth:`gradwise.runs.RunFolder.create`) for metrics,
            checkpoints, TensorBoard and the summary; None keeps everything in memory.
        seed: seeds the data order (and nothing else: seed the model yourself).
        device: where training runs; default: where the model's parameters are.
        log_every: steps per training-metrics record.
        checkpoint_every: also checkpoint every this many steps (epoch ends always do).
        monitor: the epoch metric that picks the best checkpoint ("val_accuracy",
            "val_loss", ...). Default: val_accuracy, or what the data record in its place
            (val_loss for regression targets, train_* without a validation split). A metric
            the run does not record is a ValueError (it would never write best.pt).
        monitor_mode: "min", "max" or "auto" (max for accuracy-like names).
        progress: show a progress bar on stderr.
        metadata: extra summary fields (dataset, model and optimizer names, ...).
        world: the training processes (default: the initialized process group, or one
            process). With several, ``model`` is a DistributedDataParallel; each step's
            batch of ``batch_size`` samples is split between the ranks (each gets its
            contiguous shard of the shared order), so the averaged gradient is the one
            a single process would compute on the whole batch; metrics are reduced over
            the ranks, and rank 0 alone writes the run folder.
        rank_state: state that differs between ranks and must survive a resume (the
            gradient compression's error feedback): an object with ``state_dict`` and
            ``load_state_dict``; checkpoints keep every rank's.
        averaging: a :mod:`gradwise.averaging` average of the weights, updated after
            every step. Each epoch then also evaluates the averaged weights, after
            recomputing their batch-norm statistics over the training split
            (``avg_val_loss``, ``avg_val_accuracy``; ``avg_test_*`` at the end), writes
            them to ``checkpoints/averaged.pt`` (``load_checkpoint(path)["model"]``; also
            at a stop between epoch ends, not at Ctrl-C), and
            checkpoints keep the average so a resumed run continues it exactly. An average
            whose first averaging step comes after the run's last is a ValueError here; a
            run that early stopping ends before it warns at the end of :meth:`fit` that
            nothing was averaged.

    Example:
        >>> import torch
        >>> from gradwise import Trainer, optim
        >>> from gradwise.data import load_dataset
        >>> data = load_dataset("spirals", seed=0)
        >>> model = torch.nn.Sequential(
        ...     torch.nn.Linear(2, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3)
        ... )
        >>> optimizer = optim.Adam(model.parameters(), lr=1e-2)
        >>> trainer = Trainer(model, optimizer, data, epochs=2, progress=False)
        >>> trainer.fit().status
        'completed'
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        data: DataSplits,
        *,
        loss: str | LossFunction = "cross_entropy",
        batch_size: int = 128,
        epochs: int | None = None,
        steps: int | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        clip_grad_norm: float | None = None,
        penalty: Callable[[], Tensor] | None = None,
        augment: nn.Module | None = None,
        mixup: Mixup | None = None,
        early_stopping: EarlyStopping | None = None,
        callbacks: Sequence[Callback] = (),
        run: RunFolder | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
        log_every: int = 10,
        checkpoint_every: int | None = None,
        monitor: str | None = None,
        monitor_mode: str = "auto",
        progress: bool = True,
        metadata: Mapping[str, Any] | None = None,
        world: World | None = None,
        rank_state: Any = None,
        averaging: WeightAverage | None = None,
    ) -> None:
        check("batch_size", "Trainer", batch_size, POSITIVE_INT)
        check("averaging", "Trainer", averaging, _AVERAGE)
        check("epochs", "Trainer", epochs, _OPTIONAL_INT)
        check("steps", "Trainer", steps, _OPTIONAL_INT)
        check("log_every", "Trainer", log_every, POSITIVE_INT)
        check("checkpoint_every", "Trainer", checkpoint_every, _OPTIONAL_INT)
        check("clip_grad_norm", "Trainer", clip_grad_norm, _OPTIONAL_NORM)
        check("monitor_mode", "Trainer", monitor_mode, _MODES)
        if epochs is None and steps is None:
            raise ValueError("Trainer needs 'epochs' or 'steps' (how long to train). Got neither.")
        self.model = model
        # The module itself (inside DistributedDataParallel): evaluation, checkpoints and
        # callbacks use it, so a checkpoint loads into a single-process run too.
        self.module: nn.Module = getattr(model, "module", model)
        self.world = world if world is not None else World.current()
        self.rank_state = rank_state
        self.optimizer = optimizer
        self.data = data
        self.loss_fn: LossFunction = get_loss(loss) if isinstance(loss, str) else loss
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
        self.scheduler = scheduler
        self.clip_grad_norm = clip_grad_norm
        self.penalty = penalty
        self.augment = augment
        self.mixup = mixup
        self.early_stopping = early_stopping
        self.callbacks = list(callbacks)
        self.averaging = averaging
        self.run = run
        self.device = torch.device(device) if device is not None else _device_of(self.module)
        self.batches = training_batches(data.train, batch_size, seed=seed, device=self.device)
        self.batch_size = batch_size
        self.steps_per_epoch = len(self.batches)
        self.total_steps = steps if steps is not None else (epochs or 0) * self.steps_per_epoch
        _check_averages_something(averaging, self.total_steps)
        self.log_every = log_every
        self.checkpoint_every = checkpoint_every
        averages = averaging is not None
        self.monitor = _checked_monitor(monitor, data, "Trainer", averaging=averages)
        if early_stopping is not None:
            owner = "the EarlyStopping given to Trainer"
            _checked_monitor(early_stopping.monitor, data, owner, averaging=averages)
        self.monitor_mode = _direction(self.monitor, monitor_mode)
        self.progress = progress
        self.metadata = dict(metadata or {})
        self.classification = data.task == "classification"
        self._position = _Position()
        self._best: dict[str, Any] = {"monitor": self.monitor, "mode": self.monitor_mode}
        self._epoch_metrics: dict[str, float] = {}
        self._totals = Accumulator(self.device, windows=("log", "epoch"))
        self._elapsed_before = 0.0
        self._started: float | None = None  # this fit() call's start: duration_s counts from it
        self._start_times: dict[str, Any] = {}  # the summary's "started" (and "resumed")
        self._last_finite: tuple[int, float] | None = None
        self._used_lr: float | None = None  # the lr the last step used (records, hooks)
        self._stop_reason: str | None = None  # a callback's request_stop: the summary's message
        self._outputs: RunOutputs | None = None

    # -- the run -------------------------------------------------------------------------

    def fit(self, *, resume: bool = False) -> FitResult:
        """Train until the step budget, early stopping, a stop request or Ctrl-C.

        With ``resume=True`` the run continues from its last checkpoint (the run folder's
        ``checkpoints/last.pt``): the model, optimizer, scheduler, RNG states, the
        augmentations' fills (one computed from the data stays what the run started with,
        even if the data changed since), early stopping, callbacks and data position are
        restored, and metrics recorded after the checkpoint are dropped so they are not
        counted twice. A checkpoint the Trainer cannot go on from as the run would have
        is refused with a :class:`gradwise.runs.RunFolderError` before anything is loaded:
        weights of other shapes (naming the entry), another ``batch_size`` (checkpoints of
        gradwise versions that did not keep it are not checked), a scheduler the run had
        not or had, early stopping's state without ``early_stopping`` (a checkpoint without
        it resumes with a fresh one), the fills of other augmentations, other callbacks with
        state; a weight average the run did not have is a ValueError. What only the loading
        finds wrong (entries the model lacks, the optimizer's parameter groups, a callback
        that cannot load its state: a RunFolderError naming it) leaves everything the
        resume would have loaded as it was too. A
        checkpoint whose early stopping had stopped the run (killed before its summary said
        so) trains no further: the
        run's end (best weights, test split, summary) is done as it was due then, with
        status ``"early_stopped"``. The
        summary keeps the run's first ``started`` time and lists the resumes' times in
        ``resumed``; its ``duration_s`` adds up the time spent training in each. Hidden
        temporary files that writes killed mid-way left in the run folder are removed
        (:meth:`gradwise.runs.RunFolder.remove_leftover_temporaries`). A stop requested by
        a callback ends with status ``"stopped"`` and its reason as the summary's
        ``message``; one requested in ``on_fit_start`` ends the run before its first step
        (of this call), with a checkpoint to resume from.
        """
        self._stop_reason = None
        if resume:
            self._restore()
        if self.run is not None and self.world.is_main:
            # This process is the run's one writer from here on: what a write killed
            # mid-way left (a checkpoint-sized .last.pt.*.tmp) is nobody's.
            self.run.remove_leftover_temporaries()
        self._started = time.time()
        self._start_times = {"started": self._started}
        if resume and self.world.is_main:
            self._start_times = _resumed_start_times(self.run, self._started)
        self._outputs = RunOutputs(
            self.run if self.world.is_main else None,
            self.total_steps,
            progress=self.progress and self.world.is_main,
            resume_step=self._position.step if resume else None,
        )
        self._write_summary("running", None)
        try:
            # SIGTERM too: a batch scheduler's preemption, `kill`, `timeout` (and, in a
            # distributed run, torch's launcher stopping its ranks) stop the run as a Ctrl-C
            # does, with a checkpoint of the step reached and the summary "interrupted".
            with graceful_interrupt((signal.SIGINT, signal.SIGTERM)) as interrupt:
                status = self._train(interrupt, resumed=resume)
            test = self._finish(status)
        except TrainingDiverged as error:
            self._tell_callbacks_of(error)
            self._write_summary("diverged", str(error))
            self._close()
            raise
        except BaseException as error:
            self._tell_callbacks_of(error)
            self._write_summary("failed", f"{type(error).__name__}: {error}")
            self._close()
            raise
        message = {"stopped": self._stop_reason, "early_stopped": self._early_stop_message()}
        summary = self._write_summary(status, message.get(status), test=test)
        self._close()
        self._warn_if_nothing_averaged(status)
        return FitResult(
            status=status,
            epochs=self._position.epoch,
            steps=self._position.step,
            metrics=dict(self._epoch_metrics),
            best=dict(self._best),
            test=test,
            run=self.run,
            summary=summary,
        )

    def _tell_callbacks_of(self, error: BaseException) -> None:
        """Every callback's ``on_exception``, so each can release its hooks; what fails
        there becomes a note on ``error`` (which fit() raises), never a new exception."""
        try:
            state = self._state()
        except Exception as failure:
            error.add_note(f"The callbacks' on_exception did not run: {failure!r}")
            return
        for callback in self.callbacks:
            try:
                callback.on_exception(state, error)
            except Exception as failure:
                error.add_note(
                    f"{type(callback).__name__}.on_exception failed too: "
                    f"{type(failure).__name__}: {failure}"
                )

    def _warn_if_nothing_averaged(self, status: Status) -> None:
        # Early stopping ends a run for good. An interrupted or stopped run can be resumed
        # and may average then; a completed one reached its first average (checked in
        # __init__).
        averaging = self.averaging
        if averaging is None or averaging.num_averaged or status != "early_stopped":
            return
        if self.world.is_main:
            warnings.warn(
                f"The run ended ({status}) after step {self._position.step}, before the "
                f"first average of its {type(averaging).__name__} (after step "
                f"{averaging.first_average_step}): nothing was averaged, so there are no "
                "avg_* metrics and no averaged weights (checkpoints/averaged.pt). Start the "
                "average earlier or average more often.",
                UserWarning,
                stacklevel=3,  # the caller of fit()
            )

    def _train(self, interrupt: InterruptFlag, *, resumed: bool) -> Status:
        if not self.module.training:
            # Evaluated, or loaded in eval mode, before fit(): trained so, its dropout would
            # do nothing and its batch norms would never learn their statistics.
            self.model.train()
        state = self._state()
        for callback in self.callbacks:
            callback.on_fit_start(state)
        # Every rank stops at the same place, or the others would wait for it forever.
        (stopped,) = self.world.any((state.stop_reason is not None,), self.device)
        if stopped:
            # Before any step: the checkpoint lets fit(resume=True) start where this left off.
            self._stop_reason = _stop_message(state.stop_reason, stopped)
            self._save_last()
            return "stopped"
        if resumed and self.early_stopping is not None and self.early_stopping.should_stop:
            # The checkpoint of the epoch at which early stopping ended the run (it was
            # killed before its summary said so): only the run's end is due, as it was then.
            return "early_stopped"
        while self._position.step < self.total_steps:
            stop = self._train_epoch(interrupt)
            if stop is not None:
                return stop
        if self._position.batch > 0:
            # Resumed from a checkpoint taken on the last step before its epoch ended (a
            # stop or Ctrl-C there): the epoch's end (metrics, validation, best.pt) is due.
            return self._end_epoch() or "completed"
        return "completed"

    def _train_epoch(self, interrupt: InterruptFlag) -> Status | None:
        position = self._position
        self._outputs_describe()
        if not self.module.training:
            # A callback put the whole model in eval mode and did not give it back: trained
            # so, dropout would do nothing and batch norms would learn no statistics.
            warnings.warn(
                f"The model was in eval mode at the start of epoch {position.epoch + 1} (a "
                "callback evaluated it and left it so); it is put back in training mode as "
                "a whole, which also unfreezes modules the user put in eval mode. A callback "
                "that evaluates the model should give each module its own mode back "
                "(record module.training for model.modules() before, and set it after).",
                UserWarning,
                stacklevel=2,
            )
            self.model.train()
        for inputs, targets in self.batches.epoch(position.epoch, start_batch=position.batch):
            self._step(inputs, targets)
            position.step += 1
            position.batch += 1
            state = self._after_step()
            # Every rank stops at the same step, or the others would wait for it forever.
            interrupted, stopped = self.world.any(
                (interrupt.requested, state.stop_reason is not None), self.device
            )
            if interrupted or stopped:
                self._stop_reason = _stop_message(state.stop_reason, stopped)
                self._save_last()
                return "interrupted" if interrupted else "stopped"
            if position.step >= self.total_steps:
                break
        return self._end_epoch()

    def _step(self, inputs: Tensor, targets: Tensor) -> None:
        labels = targets
        if self.augment is not None:
            inputs = self.augment(inputs)
        if self.mixup is not None:
            inputs, targets = self.mixup(inputs, targets)
        total = len(labels)
        if self.world.is_distributed:
            shard = self.world.shard(total)
            inputs, targets, labels = inputs[shard], targets[shard], labels[shard]
        outputs = self.model(inputs)
        loss = self.loss_fn(outputs, targets)
        objective = loss + self.penalty() if self.penalty is not None else loss
        if self.world.is_distributed:
            # DDP averages the ranks' gradients; weighting each rank's mean loss by its
            # share of the batch makes that average the gradient of the batch's mean loss,
            # as one process would compute it, also when shards differ in size. An empty
            # shard (a batch smaller than the world) weighs 0: its loss is NaN, but the
            # backward of NaN x 0 hands DDP zero gradients (the mean's 1/0 meets no element).
            objective = objective * (len(labels) * self.world.size / total)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        hits = _hits(outputs, labels, self.loss_fn) if self.classification else None
        loss_count = _loss_count(outputs, targets, hits, self.loss_fn)
        loss, hits, loss_count = self._batch_totals(
            loss.detach(), hits, loss_count, len(labels), total
        )
        if not self._check_finite(loss, loss_count):
            loss = torch.zeros_like(loss)  # its NaN would poison the sums (NaN x 0 is NaN)
        if self.clip_grad_norm is not None:
            self._clip_gradients(self.clip_grad_norm)
        used_lr = self._lr()  # a schedule in the group counts its steps in step()
        self.optimizer.step()
        self._used_lr = used_lr
        if self.scheduler is not None:
            self.scheduler.step()
        self._totals.add(loss, hits, total, loss_count)

    def _batch_totals(
        self, loss: Tensor, hits: Hits | None, loss_count: Tensor | None, count: int, total: int
    ) -> tuple[Tensor, Hits | None, Tensor | None]:
        """The whole batch's mean loss, correct count, count of samples that accuracy
        counts and count of samples the loss counts (None: all; the last three summed over
        the ranks): each rank's mean loss weighs the samples it counted.

        A rank whose loss counted nothing (an empty shard, a batch smaller than the world,
        or every target ignored) contributes 0 to all: its mean loss is NaN (a mean over
        no samples), and NaN x 0 would be NaN.
        """
        if not self.world.is_distributed:
            return loss, hits, loss_count
        loss = loss.to(torch.float64)
        if loss_count is None:  # every sample counted: new_full, not a copy from the host
            weight = loss.new_full((), float(count))
            loss_sum = loss * count if count else weight
        else:
            weight = loss_count.to(torch.float64)
            loss_sum = torch.where(loss_count > 0, loss, 0.0) * weight
        correct, counted = hits if hits is not None else (weight, weight)
        sums = [loss_sum, weight, correct.to(torch.float64), counted.to(torch.float64)]
        summed = self.world.sum(torch.stack(sums))
        mean = summed[0] / summed[1]  # NaN when the whole batch counted nothing
        loss_count = summed[1] if loss_count is not None else None
        if hits is None:
            return mean, None, loss_count
        correct, counted = summed[2:].round().to(torch.int64)
        return mean, (correct, counted), loss_count

    def _check_finite(self, loss: Tensor, loss_count: Tensor | None) -> bool:
        """Raise TrainingDiverged for a NaN or infinite loss; whether the loss counted any
        sample (False: every target ignored, a NaN mean over none and no divergence)."""
        # One host sync per step; on CPU it costs nothing measurable, and it lets the run
        # stop before a NaN reaches the weights.
        value = float(loss.detach())
        # The step this loss belongs to, as the records number it (steps done, this one
        # included): position.step counts it once it is done.
        step = self._position.step + 1
        if math.isfinite(value):
            self._last_finite = (step, value)
            return True
        if loss_count is not None and not bool(loss_count):  # a second read, only here
            # Every target of the batch ignored: its mean loss is 0 / 0, but its gradients
            # are zero and the weights as good as before. It weighs 0 in the means; the
            # state's loss stays the last finite one.
            return False
        state = self._state()
        for callback in self.callbacks:
            callback.on_diverged(state, value)
        last = self._last_finite
        history = (
            f"the last finite loss was {last[1]:.4g} at step {last[0]}"
            if last is not None
            else "no step had a finite loss"
        )
        where = ""
        if self.run is not None:
            checkpoint = self.run.last_checkpoint
            where = (
                f"; the last good checkpoint is {checkpoint}"
                if checkpoint.is_file()
                else "; no checkpoint was written before it"
            )
        raise TrainingDiverged(
            f"loss became {value} at step {step} (epoch {self._position.epoch + 1}); {history}"
            f"{where}. Lower the learning rate (try 10x smaller) or clip gradients."
        )

    def _after_step(self) -> TrainState:
        position = self._position
        if self.averaging is not None:
            self.averaging.update(self.module, position.step)
        lr = self._used_lr
        if position.step % self.log_every == 0 or position.step == self.total_steps:
            loss, accuracy = self._totals.take("log")
            self._record({"kind": "step", "loss": loss, "accuracy": accuracy, "lr": lr})
            self._progress(position.step, loss, accuracy, lr)
        state = self._state()
        for callback in self.callbacks:
            callback.on_step_end(state)
        ends_epoch = position.batch == self.steps_per_epoch or position.step >= self.total_steps
        if self.checkpoint_every and position.step % self.checkpoint_every == 0 and not ends_epoch:
            # (At an epoch's last step _end_epoch saves right after its record: a
            # checkpoint before it would resume into that epoch's end a second time.)
            self._save_last()
        return state

    def _end_epoch(self) -> Status | None:
        position = self._position
        train_loss, train_accuracy = self._totals.take("epoch")
        metrics: dict[str, float] = {"train_loss": train_loss}
        if train_accuracy is not None:
            metrics["train_accuracy"] = train_accuracy
        if self.data.validation is not None:
            metrics.update(self._evaluate(self.data.validation, "val"))
        metrics.update(self._averaged_metrics(self.data.validation, "avg_val"))
        lr = self._last_lr()
        if lr is not None:
            metrics["lr"] = lr
        self._epoch_metrics = metrics
        self._record({"kind": "epoch", **metrics})
        position.epoch += 1
        position.batch = 0
        improved = self._update_best(metrics)
        stop = self._early_stop(position.epoch - 1, metrics)
        state = self._state(epoch=position.epoch - 1)
        for callback in self.callbacks:
            callback.on_epoch_end(state)
        if self._save_last() and improved and self.run is not None:
            # The same state as last.pt: its bytes, not a second serialization (the
            # watch's records, the optimizer state...), and only where last.pt was written.
            copy_checkpoint(self.run.last_checkpoint, self.run.best_checkpoint)
        if stop:  # the same on every rank: the metrics are the whole split's
            return "early_stopped"
        # Every rank stops after the same epoch, or the others would wait for it forever.
        (stopped,) = self.world.any((state.stop_reason is not None,), self.device)
        if stopped:
            self._stop_reason = _stop_message(state.stop_reason, stopped)
            return "stopped"
        return None

    def _early_stop_message(self) -> str | None:
        """Why early stopping ended the run and which weights it ended with, its epochs
        counted from 1 as the records count them (EarlyStopping counts from 0)."""
        stopper = self.early_stopping
        if stopper is None or stopper.stopped_epoch is None or stopper.best_epoch is None:
            return None
        best, stopped = stopper.best_epoch + 1, stopper.stopped_epoch + 1
        improvement = f"by more than {stopper.min_delta:g} " if stopper.min_delta else ""
        weights = (
            f"the model has epoch {best}'s weights (restore_best_weights)"
            if stopper.restore_best_weights
            else f"the model has epoch {stopped}'s weights (the best were epoch {best}'s; "
            "restore_best_weights: true keeps those)"
        )
        return (
            f"early stopping after epoch {stopped}: {stopper.monitor} did not improve "
            f"{improvement}on epoch {best}'s {stopper.best:.4g} for {stopper.wait} epoch(s) "
            f"(patience {stopper.patience}); {weights}"
        )

    def _early_stop(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        if self.early_stopping is None:
            return False
        return self.early_stopping.on_epoch_end(epoch, metrics, self.module)

    def _update_best(self, metrics: Mapping[str, float]) -> bool:
        value = metrics.get(self.monitor)
        if value is None or not math.isfinite(value):
            return False
        best = self._best.get("value")
        better = best is None or (value > best if self.monitor_mode == "max" else value < best)
        if better:
            # (Called once the epoch has ended: position.epoch counts it.)
            self._best.update(value=value, epoch=self._position.epoch, step=self._position.step)
        return better

    def _finish(self, status: Status) -> dict[str, float]:
        if self.early_stopping is not None and status != "interrupted":
            self.early_stopping.on_train_end(self.module)
        position = self._position
        last_epoch = (
            position.epoch - 1 if position.batch == 0 and position.epoch else position.epoch
        )
        state = self._state(epoch=last_epoch)
        for callback in self.callbacks:
            callback.on_fit_end(state)
        if status == "stopped" and position.batch > 0:
            # A stop between epoch ends (or on an epoch's last step, before its end): the
            # average went on after the last epoch end's averaged.pt. (An interrupted run
            # skips this pass over the training split: Ctrl-C asks to stop now, and its
            # resume writes the file.)
            self._averaged_metrics(None, "avg_test")
        if status in ("interrupted", "stopped") or self.data.test is None:
            return {}
        test = self._evaluate(self.data.test, "test")
        test.update(self._averaged_metrics(self.data.test, "avg_test"))
        self._record({"kind": "test", **test})
        return test

    # -- evaluation, records, checkpoints -----------------------------------------------

    def _evaluate(
        self, dataset: Dataset, prefix: str, module: nn.Module | None = None
    ) -> dict[str, float]:
        # Every rank evaluates the whole split with the same weights: the same numbers on
        # every rank, so early stopping and the best checkpoint agree without messages.
        loss, accuracy = evaluate(
            self.module if module is None else module,
            dataset,
            self.loss_fn,
            device=self.device,
            classification=self.classification,
        )
        result = {f"{prefix}_loss": loss}
        if accuracy is not None:
            result[f"{prefix}_accuracy"] = accuracy
        return result

    def _averaged_metrics(self, dataset: Dataset | None, prefix: str) -> dict[str, float]:
        """Make the averaged weights ready (batch-norm statistics of their own), write them
        to checkpoints/averaged.pt and evaluate them; nothing before the first average."""
        averaging = self.averaging
        if averaging is None or averaging.num_averaged == 0:
            return {}
        if not averaging.use_buffers:
            # Training-sized batches in epoch 0's shuffled order (a pure function of the
            # seed; the same on every rank): splits sorted by class would otherwise give
            # single-class batches, whose mean variance misses the between-class part.
            averaging.recompute_batch_norm(self.batches.epoch(0))
        if self.run is not None and self.world.is_main:
            save_checkpoint(self.run.checkpoint_dir / AVERAGED_CHECKPOINT, {
                "model": averaging.module.state_dict(),
                "averaging": type(averaging).__name__,
                "num_averaged": averaging.num_averaged,
                "step": self._position.step,
            })  # fmt: skip
        return {} if dataset is None else self._evaluate(dataset, prefix, averaging.module)

    def _record(self, values: Mapping[str, Any]) -> None:
        if self._outputs is None:
            return
        record = {
            "kind": values["kind"],
            "step": self._position.step,
            "epoch": self._position.epoch_number,
            **{k: v for k, v in values.items() if k != "kind"},
            "time": round(self._elapsed(), 3),
        }
        self._outputs.record(record)

    def _progress(self, step: int, loss: float, accuracy: float | None, lr: float | None) -> None:
        if self._outputs is None:
            return
        postfix: dict[str, Any] = {"loss": f"{loss:.4f}"}
        if accuracy is not None:
            postfix["acc"] = f"{accuracy:.3f}"
        if lr is not None:
            postfix["lr"] = f"{lr:.2e}"
        self._outputs.advance_to(step, postfix)

    def _outputs_describe(self) -> None:
        if self._outputs is not None:
            epochs = math.ceil(self.total_steps / self.steps_per_epoch)
            self._outputs.describe(f"epoch {self._position.epoch + 1}/{epochs}")

    def _save_last(self) -> bool:
        """Write last.pt (rank 0 only); whether this process wrote it."""
        if self.run is None:
            return False
        state = self._state()
        for callback in self.callbacks:
            callback.on_checkpoint(state)
        contents = self._checkpoint()  # a collective with several ranks: all call it
        if not self.world.is_main:
            return False
        if self._outputs is not None:
            self._outputs.sync()
        save_checkpoint(self.run.last_checkpoint, contents)
        # The summary follows the checkpoint: a run killed (SIGKILL, power loss) before its
        # end shows the progress it can resume from, not its start's zero steps.
        self._write_summary("running", None)
        return True

    def _checkpoint(self) -> dict[str, Any]:
        position = self._position
        per_rank = self.world.gather(_on_cpu({
            "rng": get_rng_state(self.device, (self.augment, self.mixup)),
            "rank_state": self.rank_state.state_dict() if self.rank_state is not None else None,
        }))  # fmt: skip
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "position": {"epoch": position.epoch, "batch": position.batch, "step": position.step},
            "batch_size": self.batch_size,  # the position means another place in another one
            "used_lr": self._used_lr,  # the last step's, for the records after a resume
            "last_finite": self._last_finite,  # for a divergence's message after a resume
            "rng": per_rank[0]["rng"],
            "augment_fills": [_on_cpu(child.fill) for child in _filling(self.augment)],
            "early_stopping": (
                self.early_stopping.state_dict() if self.early_stopping is not None else None
            ),
            "callbacks": {key: callback.state_dict() for key, callback in _keyed(self.callbacks)},
            "best": dict(self._best),
            "epoch_metrics": dict(self._epoch_metrics),
            "totals": self._totals.state_dict(),
            "elapsed": self._elapsed(),
            "ranks": per_rank,
            "averaging": self.averaging.state_dict() if self.averaging is not None else None,
        }

    def _restore(self) -> None:
        if self.run is None:
            raise ValueError("Trainer.fit(resume=True) needs a run folder to resume from.")
        # Rank 0 reads the checkpoint and hands it to the others (other machines need not
        # see the run folder).
        contents = None
        if self.world.is_main:
            contents = load_checkpoint(self.run.last_checkpoint, map_location="cpu")
        contents = self.world.broadcast(contents)
        ranks = contents.get("ranks") or [{"rng": contents["rng"], "rank_state": None}]
        if len(ranks) != self.world.size:
            raise RunFolderError(
                f"{self.run.last_checkpoint} was written by {len(ranks)} process(es); resume it "
                f"with the same number (--nproc {len(ranks)}), not {self.world.size}."
            )
        self._refuse_another_setup(contents)
        # What only the loads themselves find wrong (model entries the checkpoint lacks,
        # the optimizer's parameter groups, a callback's own checks) leaves everything the
        # load changes as it was too: all of the checkpoint is loaded, or none of it.
        modules = (self.augment, self.mixup)
        rng = _Accessors(
            "the RNG states",
            lambda: get_rng_state(self.device, modules),
            lambda state: set_rng_state(state, self.device, modules),
        )
        fills = _Accessors(
            "the fills",
            lambda: [child.fill for child in _filling(self.augment)],
            self._restore_fills,
        )
        with _put_back_on_failure(
            self.module, self.optimizer, self.scheduler, self.averaging, self.early_stopping,
            rng, fills, self.rank_state, *self.callbacks, self._totals,
        ):  # fmt: skip
            self._load(contents, ranks[self.world.rank])

    def _load(self, contents: Mapping[str, Any], mine: Mapping[str, Any]) -> None:
        """Load a checkpoint that :meth:`_refuse_another_setup` let through."""
        if self.averaging is not None:
            # First: it checks the average's kind and settings before it changes anything.
            self.averaging.load_state_dict(contents["averaging"])
        self.module.load_state_dict(contents["model"])
        self.optimizer.load_state_dict(contents["optimizer"])
        if self.scheduler is not None and contents["scheduler"] is not None:
            self.scheduler.load_state_dict(contents["scheduler"])
        set_rng_state(mine["rng"], self.device, (self.augment, self.mixup))
        self._restore_fills(contents.get("augment_fills"))
        if self.rank_state is not None and mine["rank_state"] is not None:
            self.rank_state.load_state_dict(mine["rank_state"])
        if self.early_stopping is not None and contents["early_stopping"] is not None:
            self.early_stopping.load_state_dict(contents["early_stopping"])
        self._restore_callbacks(contents["callbacks"])
        # The plain values are all read before the first is set: nothing fails after it.
        position = _Position(**contents["position"])
        last_finite = contents.get("last_finite")  # absent from older checkpoints
        last_finite = (int(last_finite[0]), float(last_finite[1])) if last_finite else None
        best, epoch_metrics = dict(contents["best"]), dict(contents["epoch_metrics"])
        elapsed = float(contents["elapsed"])
        self._totals.load_state_dict(contents["totals"])
        self._position, self._last_finite, self._elapsed_before = position, last_finite, elapsed
        self._used_lr = contents.get("used_lr")  # absent from older checkpoints
        self._best, self._epoch_metrics = best, epoch_metrics

    def _refuse_another_setup(self, contents: Mapping[str, Any]) -> None:
        """Refuse, before anything is loaded, a checkpoint this Trainer would go on from in
        another state than the run's: weights of other shapes, another batch size (another
        data order and number of steps per epoch), a scheduler the run had not (it would
        start its schedule again at step 0) or had (the learning rate would stay where the
        checkpoint left it), early stopping's state with no early stopping to take it (the
        run would train past the epoch at which it stopped), other augmentations with a
        fill, other callbacks with state, or a weight average the run did not have or had."""
        checkpoint = self.run.last_checkpoint if self.run is not None else "the checkpoint"
        fix = "Resume with the model, scheduler and early stopping the run started with."
        shapes = _shape_mismatches(contents["model"], self.module.state_dict())
        if shapes:
            name, saved, present = shapes[0]
            more = f" ({len(shapes) - 1} more entries differ)" if len(shapes) > 1 else ""
            raise RunFolderError(
                f"{checkpoint} holds weights of another model: {name!r} has shape {saved} "
                f"there and {present} in this model{more}. {fix}"
            )
        self._refuse_another_batch_size(contents.get("batch_size"), checkpoint)
        saved_scheduler = contents["scheduler"] is not None
        if saved_scheduler != (self.scheduler is not None):
            raise RunFolderError(
                f"{checkpoint} was written by a run "
                f"{'with' if saved_scheduler else 'without'} a scheduler, but this Trainer has "
                f"{'none' if saved_scheduler else 'one'}. {fix}"
            )
        if contents["early_stopping"] is not None and self.early_stopping is None:
            raise RunFolderError(
                f"{checkpoint} holds the state of early stopping, but this Trainer has no "
                f"'early_stopping'. {fix}"
            )
        self._refuse_other_fills(contents.get("augment_fills"), checkpoint)
        self._refuse_other_callbacks(contents["callbacks"], checkpoint)
        if self.averaging is None and contents.get("averaging") is not None:
            raise RunFolderError(
                f"{checkpoint} holds a weight average, but this Trainer has no 'averaging': "
                "resumed so, the run would drop the average and its best weights. Resume it "
                "with the averaging it started with."
            )
        if self.averaging is not None and contents.get("averaging") is None:
            raise ValueError(
                f"{self.run.last_checkpoint if self.run else 'The checkpoint'} holds no weight "
                "average: the run started without one. Resume it without 'averaging'."
            )

    def _refuse_another_batch_size(self, saved: int | None, checkpoint: object) -> None:
        """Another batch size would shuffle the data into other batches, and the position
        (epoch, batch) would point elsewhere in them: the run could not go on as it would
        have. (Checkpoints written before they kept the batch size are not checked.)"""
        if saved is None or saved == self.batch_size:
            return
        raise RunFolderError(
            f"{checkpoint} was written by a run with batch_size {saved}, but this Trainer "
            f"has batch_size {self.batch_size}: the data order and the steps per epoch would "
            f"differ from the run's. Resume with batch_size={saved} (data.batch_size in the "
            "run's config)."
        )

    def _refuse_other_fills(
        self, saved: Sequence[float | Tensor] | None, checkpoint: object
    ) -> None:
        """Refuse fills for other augmentations than this run's (checkpoints written before
        they kept the fills are :meth:`_restore_fills`'s to warn about)."""
        filling = _filling(self.augment)
        if saved is not None and len(saved) != len(filling):
            raise RunFolderError(
                f"{checkpoint} holds the fills of {len(saved)} augmentation(s) with a fill, "
                f"but this run has {len(filling)}; resume it with the augmentations it "
                "started with."
            )

    def _refuse_other_callbacks(
        self, saved: list[Any] | Mapping[str, Any], checkpoint: object
    ) -> None:
        """Refuse a saved state without its callback, or a callback with state and none
        saved: either would train on with the wrong state. (Checkpoints written before they
        named the states keep them by place: :func:`_by_place_problem` checks those.)"""
        if isinstance(saved, list):
            problem = _by_place_problem(saved, self.callbacks)
            if problem is None:
                return
            raise RunFolderError(
                f"{checkpoint} holds the callbacks' states by place, without their classes "
                "(an older gradwise wrote it), to go to this run's callbacks "
                f"{', '.join(key for key, _ in _keyed(self.callbacks)) or '(none)'} in order, "
                f"but {problem}. Resume with the callbacks the run started with: the same "
                "classes in the same order, those without state included."
            )
        present = dict(_keyed(self.callbacks))
        lost = [key for key, state in saved.items() if state and key not in present]
        unsaved = [k for k, c in present.items() if k not in saved and c.state_dict()]
        if not (lost or unsaved):
            return
        problem = (
            f"the saved state of {lost[0]} has no callback to go to"
            if lost
            else f"{unsaved[0]} has no saved state (the run started without it)"
        )
        raise RunFolderError(
            f"{checkpoint} holds the state of the callbacks "
            f"{', '.join(key for key, state in saved.items() if state) or '(none)'}, but "
            f"this run's callbacks are {', '.join(present) or '(none)'}: {problem}. Resume "
            "with the callbacks the run started with (the same classes, in the same order)."
        )

    def _restore_fills(self, saved: Sequence[float | Tensor] | None) -> None:
        """Give the augmentations the fills the run started with: a fill computed from the
        training data (``gradwise train``'s ``fill: mean``) must not change with the data
        file between the start and a resume."""
        filling = _filling(self.augment)
        if saved is None:  # written before checkpoints kept the fills
            if any(isinstance(child.fill, Tensor) for child in filling):
                checkpoint = self.run.last_checkpoint if self.run else "the checkpoint"
                warnings.warn(
                    f"{checkpoint} holds no fills of the augmentations (an older gradwise "
                    "wrote it), so they keep the fills computed for this resume: a fill "
                    "computed from the training data (fill: mean) is that of the data as "
                    "they are now, which differs from the run's start if the data file "
                    "changed since. Restore the original data file to resume exactly.",
                    UserWarning,
                    stacklevel=5,  # the caller of fit()
                )
            return
        for child, fill in zip(filling, saved, strict=True):
            child.fill = fill

    def _restore_callbacks(self, saved: list[Any] | Mapping[str, Any]) -> None:
        """Give each callback the state saved under its key (its class name and place among
        the callbacks of its class), as :meth:`_refuse_other_callbacks` checked; a callback
        that cannot take it is named in the RunFolderError raised."""
        keyed = _keyed(self.callbacks)
        if isinstance(saved, list):  # written before checkpoints named the states: by place
            # (Of another length only when no callback has state: _by_place_problem.)
            places = zip(keyed, saved, strict=False)
            pairs = [(key, callback, state) for (key, callback), state in places]
        else:
            pairs = [(key, callback, saved[key]) for key, callback in keyed if key in saved]
        for key, callback, state in pairs:
            try:
                callback.load_state_dict(state)
            except Exception as error:
                checkpoint = self.run.last_checkpoint if self.run else "the checkpoint"
                raise RunFolderError(
                    f"The callback {key} could not load its state from {checkpoint}: "
                    f"{type(error).__name__}: {error}. Nothing was loaded (the model, "
                    "optimizer, RNG states and callbacks are as they were before the "
                    "resume); resume with the callbacks, and their settings, that the run "
                    "started with."
                ) from error

    # -- small helpers --------------------------------------------------------------------

    def _state(self, epoch: int | None = None) -> TrainState:
        return TrainState(
            epoch=self._position.epoch if epoch is None else epoch,
            step=self._position.step,
            batch_index=self._position.batch - 1,
            steps_per_epoch=self.steps_per_epoch,
            loss=self._last_finite[1] if self._last_finite is not None else math.nan,
            lr=self._last_lr(),
            metrics=dict(self._epoch_metrics),
            model=self.module,
            optimizer=self.optimizer,
        )

    def _clip_gradients(self, max_norm: float) -> None:
        """torch's clip over every parameter the optimizer steps, except that a NaN or inf
        total leaves the gradients as they are (torch's would turn every gradient into NaN,
        hiding the parameter where it started from the monitor and the error message).
        No host sync: the check stays on the device."""
        stepped = [p for group in self.optimizer.param_groups for p in group["params"]]
        grads = [p.grad for p in stepped if p.grad is not None]
        if not grads:
            return
        total = torch.nn.utils.get_total_norm(grads)
        # A total of 0 makes torch's factor max_norm / 1e-6, clamped to 1: no clipping.
        total = torch.where(torch.isfinite(total), total, torch.zeros_like(total))
        torch.nn.utils.clip_grads_with_norm_(stepped, max_norm, total)

    def _last_lr(self) -> float | None:
        """The learning rate the last step used (the current one before any step): a
        scheduler has already set the next step's in the optimizer."""
        return self._used_lr if self._used_lr is not None else self._lr()

    def _lr(self) -> float | None:
        """The rate the first param group's next step uses (a schedule in a gradwise
        Optimizer's group included); None when the group holds none (a gradwise Optimizer
        with a fixed transform keeps its rate inside the transform)."""
        return next_step_lr(self.optimizer)

    def _elapsed(self) -> float:
        since = 0.0 if self._started is None else time.time() - self._started
        return self._elapsed_before + since

    def _write_summary(
        self, status: str, message: str | None, *, test: Mapping[str, float] | None = None
    ) -> dict[str, Any]:
        summary = {
            **self.metadata,
            "status": status,
            "num_parameters": sum(p.numel() for p in self.module.parameters()),
            "epochs": self._position.epoch,
            "steps": self._position.step,
            "duration_s": round(self._elapsed(), 2),
            **self._start_times,
            "finished": time.time() if status != "running" else None,
            "best": dict(self._best),
            "final": dict(self._epoch_metrics),
            "test": dict(test or {}),
            "message": message,
        }
        if self._outputs is not None:
            self._outputs.write_summary(summary)
        return summary

    def _close(self) -> None:
        if self._outputs is not None:
            self._outputs.close(self._position.step)


def _check_averages_something(averaging: WeightAverage | None, total_steps: int) -> None:
    """ValueError when ``averaging`` would take no average in a run of ``total_steps``
    steps: the run config's check, for an average given to the Trainer directly."""
    reason = why_nothing_averaged(averaging, total_steps) if averaging is not None else None
    if reason is not None:
        raise ValueError(
            f"The {type(averaging).__name__} given to Trainer as 'averaging' would average "
            f"nothing: {reason}."
        )


def epoch_metric_names(data: DataSplits, *, averaging: bool = False) -> list[str]:
    """What the Trainer records at every epoch's end for ``data`` (with ``averaging``,
    ``avg_val_*`` too, once the first average exists)."""
    accuracy = data.task == "classification"
    names = ["train_loss", *(["train_accuracy"] if accuracy else [])]
    if data.validation is not None:
        names += ["val_loss", *(["val_accuracy"] if accuracy else [])]
        if averaging:
            names += ["avg_val_loss", *(["avg_val_accuracy"] if accuracy else [])]
    return [*names, "lr"]


def _checked_monitor(monitor: str | None, data: DataSplits, owner: str, *, averaging: bool) -> str:
    """``monitor``, refused unless the run records it; None: the data's accuracy (loss for
    regression targets), on the validation split if there is one."""
    recorded = epoch_metric_names(data, averaging=averaging)
    if monitor is None:
        split = "val" if data.validation is not None else "train"
        return f"{split}_accuracy" if data.task == "classification" else f"{split}_loss"
    if monitor not in recorded:
        names = ", ".join(repr(name) for name in recorded if name != "lr")
        missing = "" if data.validation is not None else "; the data have no validation split"
        raise ValueError(
            f"The 'monitor' parameter of {owner} must be a metric the run records at each "
            f"epoch's end: {names}{missing}. Got {monitor!r} instead, which the run never "
            "records (no best.pt would be written; early stopping would fail at the first "
            "epoch's end)."
        )
    return monitor


def _stop_message(reason: str | None, stopped: bool) -> str | None:
    """The summary's message for a stop: the callback's reason (another rank's callback
    asked when this rank's saw none)."""
    if reason is None and stopped:
        return "a callback of another process requested a stop"
    return reason


def _shape_mismatches(
    saved: Mapping[str, Any], present: Mapping[str, Any]
) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """The state-dict entries of both whose tensors differ in shape: (name, saved, present).
    (Entries only one side has are load_state_dict's to name.)"""
    return [
        (name, tuple(tensor.shape), tuple(present[name].shape))
        for name, tensor in saved.items()
        if isinstance(tensor, Tensor)
        and isinstance(present.get(name), Tensor)
        and tensor.shape != present[name].shape
    ]


def _keyed(callbacks: Sequence[Callback]) -> list[tuple[str, Callback]]:
    """Each callback with its key in checkpoints: its class name, and "#2", "#3", ... after
    the name of the second, third, ... callback of the same class."""
    seen: dict[str, int] = {}
    keyed = []
    for callback in callbacks:
        name = type(callback).__name__
        seen[name] = seen.get(name, 0) + 1
        keyed.append((name if seen[name] == 1 else f"{name}#{seen[name]}", callback))
    return keyed


def _by_place_problem(saved: Sequence[Any], callbacks: Sequence[Callback]) -> str | None:
    """Why the states of an older checkpoint, saved by place without the callbacks' classes
    (one per callback, ``{}`` for those without state), cannot go to ``callbacks`` in
    order: another number of callbacks, a state at the place of a callback that takes
    none, or no state at the place of one with state. None when they can."""
    if not any(saved) and not any(callback.state_dict() for callback in callbacks):
        return None  # nothing to give, nothing to take: callbacks without state may differ
    if len(saved) != len(callbacks):
        return f"it holds {len(saved)} state(s), one per callback, for {len(callbacks)} here"
    places = zip(_keyed(callbacks), saved, strict=True)
    for place, ((key, callback), state) in enumerate(places, 1):
        takes_state = type(callback).load_state_dict is not Callback.load_state_dict
        if state and not takes_state:
            return f"the state at place {place} would go to {key}, which keeps no state"
        if not state and callback.state_dict():
            return f"the state at place {place} is empty, and {key} has state"
    return None


def _resumed_start_times(run: RunFolder | None, now: float) -> dict[str, Any]:
    """``started`` and ``resumed`` for the summary of a run resumed at ``now``.

    The first start stays, so ``gradwise runs`` keeps the run in its place; a run without
    a readable summary (deleted, or edited by hand) counts as started now.
    """
    try:
        summary = read_summary(run) if run is not None else {}
    except (RunFolderError, ValueError):
        summary = {}
    started, resumed = summary.get("started"), summary.get("resumed")
    return {
        "started": started if to_timestamp(started) is not None else now,
        "resumed": [*(resumed if isinstance(resumed, list) else []), now],
    }


def _on_cpu(tree: Any, *, copy: bool = False) -> Any:
    """``tree`` with its tensors on the CPU (GPU tensors would be pickled for their device
    when ranks gather their state). ``copy``: CPU tensors are copied too, so that the tree
    keeps its values while the live tensors change. A module state dict keeps its
    ``_metadata`` (the versions its entries are loaded by)."""
    if isinstance(tree, Tensor):
        return tree.detach().to("cpu", copy=copy)
    if isinstance(tree, dict):
        moved = {key: _on_cpu(value, copy=copy) for key, value in tree.items()}
        metadata = getattr(tree, "_metadata", None)
        if metadata is None:
            return moved
        kept = OrderedDict(moved)
        kept._metadata = metadata  # type: ignore[attr-defined]
        return kept
    if isinstance(tree, list | tuple):
        return type(tree)(_on_cpu(value, copy=copy) for value in tree)
    return tree


@contextmanager
def _put_back_on_failure(*objects: Any) -> Iterator[None]:
    """Give each of ``objects`` (None, or with ``state_dict`` and ``load_state_dict``) its
    state back when the block fails, so that a refused resume changes none of them. The
    copies are on the CPU: a resume must not need twice the device memory. One that cannot
    take its state back (a callback whose load fails on any state) is a note on the error
    raised, after the others are put back."""
    saved = [
        (thing, _on_cpu(thing.state_dict(), copy=True)) for thing in objects if thing is not None
    ]
    try:
        yield
    except BaseException as error:
        for thing, state in saved:
            try:
                thing.load_state_dict(state)
            except Exception as failure:
                name = thing.what if isinstance(thing, _Accessors) else type(thing).__name__
                error.add_note(
                    f"{name} could not be put back as it was: {type(failure).__name__}: {failure}"
                )
        raise


@dataclass(frozen=True)
class _Accessors:
    """State without ``state_dict`` and ``load_state_dict`` of its own (the RNG states,
    the augmentations' fills), read and set through these two, for
    :func:`_put_back_on_failure`."""

    what: str
    state_dict: Callable[[], Any]
    load_state_dict: Callable[[Any], None]


def _filling(augment: nn.Module | None) -> list[Any]:
    """The augmentations in ``augment`` that fill what comes from outside the input (shift,
    crop, rotation: a ``fill`` attribute), in order."""
    if augment is None:
        return []
    return [child for child in augment.modules() if hasattr(child, "fill")]


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(iter(model.parameters()), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _direction(monitor: str, mode: str) -> Literal["min", "max"]:
    if mode in ("min", "max"):
        return mode  # type: ignore[return-value]
    accuracy_like = any(word in monitor for word in ("acc", "auc", "f1", "precision", "recall"))
    return "max" if accuracy_like else "min"


def _loss_count(
    outputs: Tensor, targets: Tensor, hits: Hits | None, loss_fn: LossFunction
) -> Tensor | None:
    """The samples the batch's mean loss is over (:func:`count_loss_samples`; None: all of
    them). When the loss saw the labels themselves (no mixup), the same labels that
    accuracy counts: their count is taken from ``hits``, at no further cost."""
    if hits is not None and not targets.is_floating_point():
        return hits[1]
    return count_loss_samples(outputs, targets, ignore_index_of(loss_fn))


def _hits(outputs: Tensor, labels: Tensor, loss_fn: LossFunction) -> Hits | None:
    """The batch's right predictions and its samples counted for accuracy: labels equal to
    the loss's ignore_index (-100 unless it has its own) are left out of both, as the loss
    leaves them out. No host sync: the accumulator reads the sums once per record."""
    if labels.is_floating_point() or outputs.dim() != 2:
        return None
    return count_correct(outputs.detach(), labels, ignore_index_of(loss_fn))
