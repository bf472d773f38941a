"""Averages of the weights along a run: EMA, Polyak-Ruppert, SWA, on torch's AveragedModel."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, final

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import AveragedModel, get_swa_avg_fn, get_swa_multi_avg_fn

try:  # torch's private list, the one AveragedModel.update_parameters itself reads
    from torch.utils._foreach_utils import _get_foreach_kernels_supported_devices
except ImportError:  # pragma: no cover - a torch that moved it

    def _get_foreach_kernels_supported_devices() -> list[str]:
        return ["cuda", "xpu"]


from gradwise._modes import module_modes, restore_modes
from gradwise._validation import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    Boolean,
    Either,
    Interval,
    Satisfies,
    check,
    invalid_value_error,
)

_MODULE = Satisfies(lambda value: isinstance(value, nn.Module), "an nn.Module")
_OPEN_UNIT_INTERVAL = Interval(low=0.0, high=1.0, low_closed=False, high_closed=False)
_OPTIONAL_POSITIVE_INT = Either((POSITIVE_INT, Satisfies(lambda value: value is None, "None")))

_Tensors = tuple[Tensor, ...] | list[Tensor]
#: What WeightAverage.state_dict writes and load_state_dict needs ("settings" may be absent).
_STATE_KEYS = ("kind", "first", "every", "averaged_model")
#: AveragedModel's ``multi_avg_fn``: fold one (device, dtype) group of the live tensors
#: into the averaged ones in place, given how many iterates the average already holds.
MultiAverageFn = Callable[[_Tensors, _Tensors, Tensor | int], None]


class WeightAverage:
    """An average of a model's weights along training, updated every ``every`` steps.

    The average lives in a :class:`torch.optim.swa_utils.AveragedModel` (``averaged_model``;
    its copy of the network is :attr:`module`). :meth:`update` is called after every
    optimizer step with the number of steps taken so far, :math:`s`; it folds the model's
    current weights in when :math:`s > \\text{first}` and :math:`s - \\text{first}` is a
    multiple of ``every``. The first iterate folded in is copied (AveragedModel's rule).
    A model moved after its average was made (``model.cuda()``, ``model.double()``, or one
    layer of it: ``model[0].half()``) takes the averaged copy along at the next update,
    tensor by tensor. A model that gained, lost (tied to another) or reshaped a parameter
    or buffer after its average was made is refused with a ValueError that names them
    (AveragedModel pairs the two models' tensors by position and would leave a new layer
    out).

    Buffers: with ``use_buffers=False`` (the default) the averaged copy's buffers follow
    the live model's, and :meth:`recompute_batch_norm` gives the batch-norm layers the
    statistics of the averaged weights before they are evaluated (the live model's running
    statistics belong to other weights). With ``use_buffers=True`` the floating-point
    buffers are averaged like the parameters (torch's alternative, with no extra pass
    over the data) and integer buffers (batch counts) follow the live model.

    Use :class:`ExponentialMovingAverage`, :class:`PolyakAverage` or
    :class:`StochasticWeightAverage`; this base class holds what they share.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        first: int,
        every: int,
        use_buffers: bool,
        multi_avg_fn: MultiAverageFn | None,
    ) -> None:
        # multi_avg_fn averages floating-point (and complex) groups only; None is torch's
        # running mean. Integer groups never reach it: see _average_group.
        owner = type(self).__name__
        check("model", owner, model, _MODULE)
        check("use_buffers", owner, use_buffers, Boolean())
        self.first = int(first)
        self.every = int(every)
        self.use_buffers = use_buffers
        self._average_floating: MultiAverageFn = multi_avg_fn or _running_mean
        self.averaged_model = AveragedModel(
            model, multi_avg_fn=self._average_group, use_buffers=use_buffers
        )
        # The live model's _layout when the copy last matched it; None: not checked yet.
        self._matched_layout: list[_TensorLayout] | None = None

    @property
    def module(self) -> nn.Module:
        """The averaged network: a copy of the model holding the averaged weights."""
        return self.averaged_model.module

    @property
    def num_averaged(self) -> int:
        """How many iterates the average holds (0 before the first update)."""
        return int(self.averaged_model.n_averaged)

    @property
    def first_average_step(self) -> int:
        """The step after which the first iterate joins the average: ``first + every``."""
        return self.first + self.every

    def _first_average_terms(self) -> str:
        """What :attr:`first_average_step` adds up, in the constructor's words."""
        return f"start {self.first} + every {self.every}"

    def should_update(self, step: int) -> bool:
        """Whether the iterate after ``step`` optimizer steps joins the average."""
        return step > self.first and (step - self.first) % self.every == 0

    def update(self, model: nn.Module, step: int) -> bool:
        """Fold ``model``'s weights in if ``step`` (steps taken so far) is an averaging step.

        Returns whether it did.
        """
        # A float step (2.5) was silently never an averaging step, a string or None a bare
        # TypeError, and a model that is not a Module an AttributeError from deep inside.
        # The two checks cost ~0.7 us, against ~9 us for the layout below.
        owner = f"{type(self).__name__}.update"
        check("model", owner, model, _MODULE)
        check("step", owner, step, NON_NEGATIVE_INT)
        if not self.should_update(step):
            return False
        # The full check by name costs ~75 us on cnn1d, 2% of a training step at every
        # update; the layout costs ~9 us and changes only when the model does.
        layout = _layout(model)
        if layout != self._matched_layout:
            self._follow_the_model(model)
            self._matched_layout = layout
        self.averaged_model.update_parameters(model)
        return True

    @torch.no_grad()
    def _follow_the_model(self, model: nn.Module) -> None:
        """Check that ``model`` still has the averaged copy's tensors, and move each copy
        to its original's device and dtype where the model moved after the average was
        made (``model.cuda()``, ``model.double()``, ``model[0].half()``): torch's
        AveragedModel pairs the tensors by position, so it would leave a tensor added
        since out of the average, and cast each new iterate into the old copy, whose
        forward then refuses the model's inputs, or fail across devices."""
        originals = dict(itertools.chain(model.named_parameters(), model.named_buffers()))
        copies = dict(itertools.chain(self.module.named_parameters(), self.module.named_buffers()))
        if list(originals) != list(copies) or any(
            original.shape != copies[name].shape for name, original in originals.items()
        ):
            raise self._changed_model_error(originals, copies)
        moved = False
        for name, original in originals.items():
            copy = copies[name]
            if (copy.device, copy.dtype) != (original.device, original.dtype):
                copy.data = copy.data.to(original.device, original.dtype)
                moved = True
        if moved:
            counter = self.averaged_model.n_averaged
            first = next(iter(originals.values()))
            self.averaged_model.n_averaged = counter.to(first.device)

    def _changed_model_error(
        self, originals: Mapping[str, Tensor], copies: Mapping[str, Tensor]
    ) -> ValueError:
        """What differs between the model's tensors and the averaged copy's, and the fix."""
        added = [name for name in originals if name not in copies]
        lost = [name for name in copies if name not in originals]
        reshaped = [
            f"{name!r} {tuple(copies[name].shape)} -> {tuple(original.shape)}"
            for name, original in originals.items()
            if name in copies and original.shape != copies[name].shape
        ]
        findings = [
            f"has {_tensors(added)} that the average lacks: {_quoted(added)}" if added else "",
            f"lost {_tensors(lost)} that the average holds: {_quoted(lost)}" if lost else "",
            f"has {_tensors(reshaped)} of another shape than the average's: "
            f"{', '.join(reshaped)}" if reshaped else "",
        ]  # fmt: skip
        found = "; ".join(finding for finding in findings if finding)
        return ValueError(
            f"The model given to {type(self).__name__}.update "
            f"{found or 'registers its tensors in another order than the average'}. The "
            "average holds a copy of the model as it was when the average was made and "
            "averages only what that copy has. Make the average once the model is "
            "complete, or make a new average of the model as it is now."
        )

    @torch.no_grad()
    def _average_group(
        self, averaged: _Tensors, current: _Tensors, num_averaged: Tensor | int
    ) -> None:
        # AveragedModel calls this once per (device, dtype) group of tensors. With
        # use_buffers=True a group may hold integer buffers (BatchNorm's num_batches_tracked):
        # counts, copied from the live model. torch would average them as integers: on the
        # CPU with truncation (averaged every step, a count stays at its first value), on
        # CUDA with an integer addcdiv, which torch refuses.
        if averaged[0].is_floating_point() or averaged[0].is_complex():
            self._average_floating(averaged, current, num_averaged)
            return
        for mine, theirs in zip(averaged, current, strict=True):
            mine.copy_(theirs)

    def recompute_batch_norm(self, batches: Iterable[Any]) -> None:
        """Give the averaged copy's batch-norm layers the statistics of its own weights.

        One pass over ``batches`` (tensors, or tuples whose first item is the input) with
        fresh running statistics accumulated as a plain mean (``momentum=None``), as
        :func:`torch.optim.swa_utils.update_bn` does, except that only the batch-norm
        layers are in training mode: dropout and other noise layers stay off, so the pass
        uses no random numbers, leaves the run's RNG untouched, and gives statistics that
        match evaluation-mode activations (Li et al., "Understanding the Disharmony between
        Dropout and Batch Normalization by Variance Shift", CVPR 2019). Without dropout it
        equals ``update_bn``. A model without batch norm is left as it is. No batches (an
        empty or exhausted iterable) is a ValueError, the statistics left as they were
        (``update_bn`` would leave them at mean 0, variance 1).

        Give training-sized batches in a shuffled order: the statistics are the mean of
        per-batch means and variances, so batches of one class each (a split sorted by
        class) would miss the variance between classes.
        """
        _recompute_batch_norm(self.module, batches)

    def _settings(self) -> dict[str, Any]:
        """What else shapes the average than its kind and cadence (checked on load)."""
        return {"use_buffers": self.use_buffers}

    def state_dict(self) -> dict[str, Any]:
        """The average (weights, buffers, count), its cadence and settings, for checkpoints."""
        return {
            "kind": type(self).__name__,
            "first": self.first,
            "every": self.every,
            "settings": self._settings(),
            "averaged_model": self.averaged_model.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (the same kind of average, same cadence,
        same settings; a state saved before the settings were kept is not checked on them)."""
        missing = [key for key in _STATE_KEYS if not isinstance(state, Mapping) or key not in state]
        if missing:
            # Another dict (the averaged module's own state_dict, say) read as "The saved
            # average is a None first averaged after step None every None steps".
            raise ValueError(
                f"{type(self).__name__}.load_state_dict needs the keys "
                f"{', '.join(map(repr, _STATE_KEYS))} (what state_dict() returns); the state "
                f"given lacks {', '.join(map(repr, missing))}."
            )
        saved = (state.get("kind"), state.get("first"), state.get("every"))
        mine = (type(self).__name__, self.first, self.every)
        if saved != mine:
            raise ValueError(
                f"The saved average is a {saved[0]} first averaged after step {saved[1]} "
                f"every {saved[2]} steps; this one is a {mine[0]} after step {mine[1]} "
                f"every {mine[2]}. Resume with the settings the run started with."
            )
        saved_settings = state.get("settings") or {}  # absent from older states
        differ = [
            f"{key}={saved_settings[key]!r} (this one: {value!r})"
            for key, value in self._settings().items()
            if key in saved_settings and saved_settings[key] != value
        ]
        if differ:
            raise ValueError(
                f"The saved {saved[0]} was made with {', '.join(differ)}. Resume with the "
                "settings the run started with."
            )
        self.averaged_model.load_state_dict(state["averaged_model"])


@final
class ExponentialMovingAverage(WeightAverage):
    r"""An exponential moving average (EMA) of the weights.

    .. math::
        \bar w_1 = w_{s_1}, \qquad
        \bar w_{t+1} = \beta_t \bar w_t + (1 - \beta_t)\, w_{s_{t+1}},

    where :math:`s_1 < s_2 < \dots` are the averaging steps (every ``every`` steps after
    ``start``). Without warmup :math:`\beta_t = \beta` (``decay``), which is torch's
    ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))``. With
    ``decay_warmup=True``, :math:`\beta_t = \min(\beta, (1 + t)/(10 + t))` where :math:`t`
    counts the iterates already averaged: the early average forgets the initial weights
    quickly instead of being dominated by them for :math:`\sim 1/(1-\beta)` steps. The form
    is TensorFlow's ``tf.train.ExponentialMovingAverage(decay, num_updates=t)``.

    Args:
        model: the network whose weights are averaged (copied at construction).
        decay: :math:`\beta`, a float in (0, 1); default 0.999.
        decay_warmup: use :math:`\min(\beta, (1 + t)/(10 + t))`; default False.
        start: the first average is taken after step ``start + every``; an int >= 0.
        every: steps between averaged iterates; default 1.
        use_buffers: average floating-point buffers too (see :class:`WeightAverage`).

    Example:
        >>> import torch
        >>> from gradwise.averaging import ExponentialMovingAverage
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> ema = ExponentialMovingAverage(model, decay=0.5)
        >>> for step, value in enumerate([1.0, 2.0, 4.0], start=1):
        ...     _ = model.weight.data.fill_(value)
        ...     _ = ema.update(model, step)
        >>> ema.module.weight.item()  # 0.5 * (0.5 * 1 + 0.5 * 2) + 0.5 * 4
        2.75

    Reference:
        Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", 1992;
        TensorFlow, ``tf.train.ExponentialMovingAverage`` (the decay warmup).
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.999,
        *,
        decay_warmup: bool = False,
        start: int = 0,
        every: int = 1,
        use_buffers: bool = False,
    ) -> None:
        owner = "ExponentialMovingAverage"
        check("decay", owner, decay, _OPEN_UNIT_INTERVAL)
        check("decay_warmup", owner, decay_warmup, Boolean())
        check("start", owner, start, NON_NEGATIVE_INT)
        check("every", owner, every, POSITIVE_INT)
        self.decay = float(decay)
        self.decay_warmup = decay_warmup
        super().__init__(
            model,
            first=start,
            every=every,
            use_buffers=use_buffers,
            multi_avg_fn=self._average_into,
        )

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "decay": self.decay, "decay_warmup": self.decay_warmup}

    def decay_at(self, num_averaged: int) -> float:
        """:math:`\\beta_t` for the update that joins the next iterate to ``t`` averaged."""
        if not self.decay_warmup:
            return self.decay
        return min(self.decay, (1.0 + num_averaged) / (10.0 + num_averaged))

    @torch.no_grad()
    def _average_into(
        self, averaged: _Tensors, current: _Tensors, num_averaged: Tensor | int
    ) -> None:
        # One floating-point (device, dtype) group; WeightAverage copies the integer ones.
        weight = 1.0 - self.decay_at(int(num_averaged))
        for mine, theirs in zip(averaged, current, strict=True):
            mine.lerp_(theirs, weight)


@final
class PolyakAverage(WeightAverage):
    r"""The uniform (Polyak-Ruppert) average of the iterates from step ``start`` on.

    .. math::
        \bar w_n = \frac{1}{n} \sum_{i=1}^{n} w_{s_i},
        \qquad s_i = \text{start} + i \cdot \text{every},

    kept as a running mean (torch's ``AveragedModel`` with its default averaging). With a
    constant learning rate SGD's iterates fluctuate around a minimum; their average has a
    variance about :math:`1/n` times smaller, and on a quadratic it converges at the
    optimal rate (Polyak & Juditsky 1992). The lectures prescribe "iterate averaging" for a
    fluctuating training curve.

    Args:
        model: the network whose weights are averaged (copied at construction).
        start: the first iterate averaged is the one after step ``start + every``; an
            int >= 0 (leave out the early, far-from-converged iterates).
        every: steps between averaged iterates; default 1.
        use_buffers: average floating-point buffers too (see :class:`WeightAverage`).

    Example:
        >>> import torch
        >>> from gradwise.averaging import PolyakAverage
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> average = PolyakAverage(model, start=1)
        >>> for step, value in enumerate([100.0, 1.0, 2.0, 6.0], start=1):
        ...     _ = model.weight.data.fill_(value)
        ...     _ = average.update(model, step)  # step 1 (100.0) is before the start
        >>> average.module.weight.item(), average.num_averaged
        (3.0, 3)

    Reference:
        Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", SIAM J.
        Control and Optimization, 1992; Ruppert, "Efficient Estimations from a Slowly
        Convergent Robbins-Monro Process", 1988.
    """

    def __init__(
        self, model: nn.Module, *, start: int = 0, every: int = 1, use_buffers: bool = False
    ) -> None:
        check("start", "PolyakAverage", start, NON_NEGATIVE_INT)
        check("every", "PolyakAverage", every, POSITIVE_INT)
        super().__init__(model, first=start, every=every, use_buffers=use_buffers,
                         multi_avg_fn=None)  # fmt: skip


@final
class StochasticWeightAverage(WeightAverage):
    r"""Stochastic weight averaging (SWA): a uniform average of points along SGD's path.

    Izmailov et al. (2018) run SGD with a learning rate that stays high from step
    ``start`` on, and average the weights it visits:

    * cyclical (``cycle_steps=c``): the learning rate falls linearly from high to low
      within each cycle of :math:`c` steps (:func:`swa_schedule`) and the average takes
      the weights at the end of each cycle, where the rate is lowest: after steps
      :math:`\text{start} + c, \text{start} + 2c, \dots`;
    * constant (``every=k``): after an optional anneal of ``anneal_steps`` steps to the
      constant SWA rate, the average takes the weights every :math:`k` steps: after steps
      :math:`\text{start} + \text{anneal} + k, \dots` (the paper: once per epoch).

    The average is the running mean of torch's ``AveragedModel`` (default averaging).
    :meth:`schedule` gives the matching learning rate.

    Args:
        model: the network whose weights are averaged (copied at construction).
        start: the step the SWA phase begins; an int >= 0.
        every: steps between averaged weights with a constant learning rate.
        cycle_steps: the length of a learning-rate cycle (give this or ``every``).
        anneal_steps: constant rate only: steps of the cosine anneal from the run's rate
            at ``start`` to the SWA rate; default 0 (switch at once).
        use_buffers: average floating-point buffers too (see :class:`WeightAverage`).

    Example:
        >>> import torch
        >>> from gradwise.averaging import StochasticWeightAverage
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> swa = StochasticWeightAverage(model, start=2, cycle_steps=3)
        >>> [step for step in range(1, 12) if swa.should_update(step)]
        [5, 8, 11]

    Reference:
        Izmailov, Podoprikhin, Garipov, Vetrov & Wilson, "Averaging Weights Leads to Wider
        Optima and Better Generalization", UAI 2018.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        start: int,
        every: int | None = None,
        cycle_steps: int | None = None,
        anneal_steps: int = 0,
        use_buffers: bool = False,
    ) -> None:
        owner = "StochasticWeightAverage"
        check("start", owner, start, NON_NEGATIVE_INT)
        check("every", owner, every, _OPTIONAL_POSITIVE_INT)
        check("cycle_steps", owner, cycle_steps, _OPTIONAL_POSITIVE_INT)
        check("anneal_steps", owner, anneal_steps, NON_NEGATIVE_INT)
        if (every is None) == (cycle_steps is None):
            raise invalid_value_error(
                "every", owner, "given when 'cycle_steps' is None and None otherwise: average "
                "every k steps with a constant learning rate, or at the end of each cycle",
                every,
            )  # fmt: skip
        if cycle_steps is not None and anneal_steps:
            raise invalid_value_error(
                "anneal_steps", owner, "0 with 'cycle_steps' (each cycle starts at the high "
                "rate; anneal applies to a constant SWA rate)", anneal_steps,
            )  # fmt: skip
        self.start = int(start)
        self.cycle_steps = cycle_steps
        self.anneal_steps = int(anneal_steps)
        period = cycle_steps if cycle_steps is not None else every
        super().__init__(model, first=self.start + self.anneal_steps, every=int(period or 1),
                         use_buffers=use_buffers, multi_avg_fn=None)  # fmt: skip

    def _settings(self) -> dict[str, Any]:
        # first = start + anneal_steps and every = the period hide how they were split: a
        # cyclical SWA loaded into a constant-rate one (or start 10 + anneal 5 into start
        # 15) went on silently with another learning rate.
        return {
            **super()._settings(),
            "start": self.start,
            "cycle_steps": self.cycle_steps,
            "anneal_steps": self.anneal_steps,
        }

    def _first_average_terms(self) -> str:
        period = "cycle_steps" if self.cycle_steps is not None else "every"
        return f"start {self.start} + anneal_steps {self.anneal_steps} + {period} {self.every}"

    def schedule(self, schedule: Any, swa_lr: float) -> Any:
        """The learning rate for this average: ``schedule`` until ``start``, then SWA's.

        See :func:`swa_schedule`; ``start``, ``cycle_steps`` and ``anneal_steps`` are this
        average's.
        """
        from gradwise.averaging._schedule import swa_schedule

        return swa_schedule(
            schedule,
            start=self.start,
            swa_lr=swa_lr,
            cycle_steps=self.cycle_steps,
            anneal_steps=self.anneal_steps,
        )


def why_nothing_averaged(average: WeightAverage, total_steps: int) -> str | None:
    """Why ``average`` would take no average in a run of ``total_steps`` steps (None if it
    takes one): the one check behind a run config's ``averaging`` section and
    ``Trainer(averaging=...)``, which prefix it with what they are."""
    first = average.first_average_step
    if first <= total_steps:
        return None
    return (
        f"its first average comes after step {first} ({average._first_average_terms()}) but "
        f"the run has {total_steps} steps; start earlier or average more often"
    )


#: What a parameter or buffer must keep for the averaged copy to pair with it: the tensor
#: itself (``id``), its dtype, device and shape; ``None`` for an unset one (``bias=None``)
#: and after a module's parameters and after its buffers.
_TensorLayout = tuple[int, torch.dtype, torch.device, torch.Size] | None


def _layout(model: nn.Module) -> list[_TensorLayout]:
    """Each parameter's and buffer's identity, dtype, device and shape, module by module.

    A fingerprint of the model, read at every update: equal to the last one, the model
    has not changed. It reads the modules' tensor dicts directly, ~9 us on cnn1d:
    ``parameters()`` and ``buffers()`` build a name for every tensor and take 18 us
    before reading any attribute. A module shared by two parents is read once. The
    tensors' identities catch what shapes do not: a weight tied to another of its shape
    (``parameters()`` then yields it once, and AveragedModel would pair every later
    tensor with the wrong one) or a parameter that became a buffer.
    """
    modules = [model]
    seen = {id(model)}
    tensors: list[Tensor | None] = []
    for module in modules:
        tensors += module._parameters.values()
        tensors.append(None)
        tensors += module._buffers.values()
        tensors.append(None)
        for child in module._modules.values():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                modules.append(child)
    return [
        None if tensor is None else (id(tensor), tensor.dtype, tensor.device, tensor.shape)
        for tensor in tensors
    ]


def _tensors(names: list[str]) -> str:
    return f"{len(names)} tensor{'s' if len(names) != 1 else ''}"


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names)


@torch.no_grad()
def _running_mean(averaged: _Tensors, current: _Tensors, num_averaged: Tensor | int) -> None:
    """AveragedModel's default average, ``avg + (w - avg) / (n + 1)``, bit for bit.

    Its ``update_parameters`` takes torch's foreach lerp on devices with foreach kernels
    (CUDA) and the per-tensor formula elsewhere (the CPU); the two round differently, so
    the same split keeps Polyak and SWA identical to ``AveragedModel(model)``.
    """
    if averaged[0].device.type in _get_foreach_kernels_supported_devices():
        get_swa_multi_avg_fn()(averaged, current, num_averaged)
        return
    mean = get_swa_avg_fn()
    for mine, theirs in zip(averaged, current, strict=True):
        mine.copy_(mean(mine, theirs, num_averaged))


#: What an iterable without batches gives (a batch may be anything, None included).
_NO_BATCH = object()


@torch.no_grad()
def _recompute_batch_norm(model: nn.Module, batches: Iterable[Any]) -> None:
    layers = [module for module in model.modules() if isinstance(module, _BatchNorm)]
    if not layers:
        return
    batch_iterator = iter(batches)
    first = next(batch_iterator, _NO_BATCH)
    if first is _NO_BATCH:
        # update_bn would reset the statistics and leave them at mean 0, variance 1.
        raise ValueError(
            "recompute_batch_norm got no batches (an empty or exhausted iterable): the "
            "batch-norm statistics are left as they were. Pass the training batches, for "
            "instance a DataLoader over the training split."
        )
    modes = module_modes(model)
    momenta = {layer: layer.momentum for layer in layers}
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative mean over the batches
    model.eval()
    for layer in layers:
        layer.train()
    try:
        for batch in itertools.chain((first,), batch_iterator):
            inputs = batch[0] if isinstance(batch, list | tuple) else batch
            model(inputs)
    finally:
        for layer, momentum in momenta.items():
            layer.momentum = momentum
        restore_modes(modes)
