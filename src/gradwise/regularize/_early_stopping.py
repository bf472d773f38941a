"""Early stopping on a monitored metric, with Keras 3's ``EarlyStopping`` semantics."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, final

from torch import Tensor, nn

from gradwise._validation import (
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    Boolean,
    Constraint,
    Either,
    Interval,
    OneOf,
    Satisfies,
    check,
    check_all,
)

# Keras 3 decides "auto" from the metric objects it compiled ("up" for accuracy, AUC,
# precision, recall, F-scores, IoU, R2, ...). Without metric objects the name has to do;
# these tokens give Keras 3's answer for the names of Keras' built-in metrics.
_MAXIMIZED_TOKENS = ("acc", "auc", "precision", "recall", "f1", "fbeta", "iou", "r2",
                     "sensitivity", "specificity", "cosine_similarity")  # fmt: skip
_MINIMIZED_TOKENS = ("error", "mse", "mae", "mape", "msle", "crossentropy", "hinge",
                     "divergence", "poisson", "logcosh", "log_cosh", "perplexity")  # fmt: skip


@final
class EarlyStopping:
    r"""Stop training when a monitored metric has stopped improving (Keras 3 semantics).

    Call :meth:`on_epoch_end` after each epoch with the epoch's metrics; it returns True
    when training should stop. With :math:`\delta` = ``min_delta``, the epoch's value
    :math:`m` improves on the best so far when

    .. math:: m + \delta < m_{\text{best}} \ (\text{"min"}) \qquad
              m - \delta > m_{\text{best}} \ (\text{"max"})

    (:math:`\delta` is absolute; :math:`m_{\text{best}}` starts at :math:`\pm\infty`).
    Each monitored epoch adds 1 to ``wait``; an improvement records the new best and resets
    ``wait`` to 0, but only if :math:`m` also improves on ``baseline`` when one is given.
    An epoch that does not improve stops training when ``wait >= patience``, unless it is
    the first monitored epoch, which has nothing to improve on. So ``patience=0`` stops at
    the first epoch without improvement, ``patience=3`` after three in a row. An improving
    epoch never stops training, even one that misses the baseline. Epochs before
    ``start_from_epoch`` are ignored. Epochs count from 0, as in Keras.

    A NaN is never an improvement and never the best: it counts as an epoch without
    improvement, so a run of NaNs stops after ``patience`` epochs (two at least, as the
    first monitored epoch does not stop), and the first finite value after leading NaNs
    becomes the best (and its weights the ones restored, with ``restore_best_weights``). Keras 3
    differs here: its first monitored value is always the best, a NaN included, and no
    later value can then improve on it. Likewise a first value of :math:`+\infty`
    (:math:`-\infty` in "max" mode) is not an improvement here.

    ``mode="auto"`` minimizes a name (without its ``val_`` prefix) that ends in ``loss``,
    maximizes one that contains ``acc``, ``auc``, ``precision``, ``recall``, ``f1``,
    ``fbeta``, ``iou``, ``r2``, ``sensitivity``, ``specificity`` or
    ``cosine_similarity``, minimizes one that contains ``error``, ``mse``, ``mae``,
    ``mape``, ``msle``, ``crossentropy``, ``hinge``, ``divergence``, ``poisson``,
    ``logcosh`` or ``perplexity``, and refuses any other name: pass ``mode`` then (Keras 3
    refuses what its metric objects cannot tell, too).

    With ``restore_best_weights=True`` the model's ``state_dict`` (parameters and buffers)
    is copied to the CPU at the first monitored epoch and at each improvement, and loaded
    back when :meth:`on_epoch_end` stops training. Call :meth:`on_train_end` when training
    ends: like Keras 3, it restores the best weights even when training ran out of epochs
    without stopping. Unlike Keras, a metric missing from ``metrics`` (or whose value is not
    one number: None, a per-sample loss tensor) is an error, not a warning, and a bad
    argument raises instead of falling back to a default.

    Args:
        monitor: the key of the monitored metric; default ``"val_loss"``.
        mode: ``"auto"`` (default), ``"min"`` or ``"max"``.
        min_delta: the least change that counts as an improvement, a finite float >= 0.
        patience: epochs without improvement to tolerate, an int >= 0; default 0.
        restore_best_weights: whether to restore the best epoch's weights; default False.
        baseline: a value to beat, a float or None; until an epoch beats it, ``wait``
            keeps counting.
        start_from_epoch: the first epoch to monitor, an int >= 0; default 0.

    Attributes:
        direction: ``"min"`` or ``"max"``, ``mode`` resolved.
        best: the best value seen (:math:`\pm\infty` before the first).
        best_epoch: the epoch of ``best`` (None before the first monitored epoch).
        wait: the counter compared with ``patience``.
        stopped_epoch: the epoch at which training was stopped, or None.

    Example:
        >>> from gradwise.regularize import EarlyStopping
        >>> stopper = EarlyStopping(monitor="val_loss", patience=2)
        >>> for epoch, val_loss in enumerate([0.9, 0.7, 0.8, 0.75, 0.6]):
        ...     if stopper.on_epoch_end(epoch, {"val_loss": val_loss}):
        ...         break
        >>> stopper.stopped_epoch, stopper.best, stopper.best_epoch
        (3, 0.7, 1)
    """

    constraints: ClassVar[dict[str, Constraint]] = {
        "monitor": Satisfies(lambda v: isinstance(v, str) and v != "", "a non-empty str"),
        "mode": OneOf(("auto", "min", "max")),
        "min_delta": NON_NEGATIVE,
        "patience": NON_NEGATIVE_INT,
        "restore_best_weights": Boolean(),
        "baseline": Either((Interval(), Satisfies(lambda v: v is None, "None"))),
        "start_from_epoch": NON_NEGATIVE_INT,
    }

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: Literal["auto", "min", "max"] = "auto",
        min_delta: float = 0.0,
        patience: int = 0,
        restore_best_weights: bool = False,
        baseline: float | None = None,
        start_from_epoch: int = 0,
    ) -> None:
        self.monitor = monitor
        self.mode = mode
        self.min_delta = min_delta
        self.patience = patience
        self.restore_best_weights = restore_best_weights
        self.baseline = baseline
        self.start_from_epoch = start_from_epoch
        check_all("EarlyStopping", vars(self), self.constraints)
        self.direction = _resolve_direction(monitor, mode)
        self.best = math.inf if self.direction == "min" else -math.inf
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.best_weights: dict[str, Tensor] | None = None

    @property
    def should_stop(self) -> bool:
        """Whether an epoch has stopped training."""
        return self.stopped_epoch is not None

    def on_epoch_end(
        self,
        epoch: int,
        metrics: Mapping[str, float | Tensor],
        model: nn.Module | None = None,
    ) -> bool:
        """Record the epoch's metrics; True when training should stop now.

        Args:
            epoch: the epoch just finished, counted from 0.
            metrics: the epoch's metrics by name; must contain ``monitor``.
            model: the model being trained; required with ``restore_best_weights``.
        """
        check("epoch", "EarlyStopping.on_epoch_end", epoch, NON_NEGATIVE_INT)
        current = self._monitored_value(metrics)
        if epoch < self.start_from_epoch:
            return False
        # Every monitored epoch sets best_epoch (an improvement, or the weights snapshot
        # below) or leaves wait > 0, so this holds only before the first one, resumed or not.
        first_monitored = self.best_epoch is None and self.wait == 0
        if self.restore_best_weights and self.best_weights is None:
            # Keras: until an epoch improves, the first monitored epoch's weights are the best.
            self.best_weights = _snapshot(self._require_model(model))
            self.best_epoch = epoch
        self.wait += 1
        if self._improves(current, self.best):
            self._record_best(epoch, current, model)
            return False
        # Keras tests epoch > 0; its first monitored epoch always improves, so that is the
        # same there. Here a NaN (or the wrong infinity) can come first, at any epoch.
        if self.wait >= self.patience and not first_monitored:
            self.stopped_epoch = epoch
            self._restore(model)
            return True
        return False

    def on_train_end(self, model: nn.Module | None = None) -> None:
        """At the end of training, restore the best weights (with ``restore_best_weights``)."""
        self._restore(model)

    def state_dict(self) -> dict[str, Any]:
        """The counters and the best weights, so that a resumed run continues counting."""
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s result into an instance built with the same arguments."""
        missing = sorted(set(self.state_dict()) - set(state_dict))
        if missing:
            raise ValueError(
                "The 'state_dict' parameter of EarlyStopping.load_state_dict must be a dict "
                f"from EarlyStopping.state_dict(). Got one without {missing} instead."
            )
        self.best = float(state_dict["best"])
        self.best_epoch = state_dict["best_epoch"]
        self.wait = int(state_dict["wait"])
        self.stopped_epoch = state_dict["stopped_epoch"]
        weights = state_dict["best_weights"]
        self.best_weights = None if weights is None else dict(weights)

    def _monitored_value(self, metrics: Mapping[str, float | Tensor]) -> float:
        if not isinstance(metrics, Mapping):
            raise TypeError(
                "The 'metrics' parameter of EarlyStopping.on_epoch_end must be a mapping "
                f"from metric names to numbers. Got {type(metrics).__name__} instead."
            )
        if self.monitor not in metrics:
            available = ", ".join(repr(key) for key in metrics) or "none"
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r}, which is not among the metrics "
                f"passed to on_epoch_end (available: {available}). Log {self.monitor!r} "
                "every epoch or pass one of the available names as 'monitor'."
            )
        value: Any = metrics[self.monitor]  # checked here: callers pass what they logged
        if isinstance(value, Tensor):
            if value.numel() == 1:
                return float(value.detach())
        elif not isinstance(value, str | bytes):
            try:
                return float(value)  # a float, an int or a NumPy scalar
            except (TypeError, ValueError):
                pass
        got = repr(value)
        if isinstance(value, Tensor):
            got = f"a tensor of shape {tuple(value.shape)}"
        raise ValueError(
            "The 'metrics' parameter of EarlyStopping.on_epoch_end must map "
            f"{self.monitor!r} to a number (a float or a one-element tensor). Got {got} instead."
        )

    def _improves(self, current: float, reference: float) -> bool:
        # Every comparison with a NaN is False: a NaN never improves nor becomes the best.
        if self.direction == "min":
            return current + self.min_delta < reference
        return current - self.min_delta > reference

    def _record_best(self, epoch: int, current: float, model: nn.Module | None) -> None:
        self.best = current
        self.best_epoch = epoch
        if self.restore_best_weights:
            self.best_weights = _snapshot(self._require_model(model))
        if self.baseline is None or self._improves(current, self.baseline):
            self.wait = 0

    def _restore(self, model: nn.Module | None) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self._require_model(model).load_state_dict(self.best_weights)

    def _require_model(self, model: nn.Module | None) -> nn.Module:
        if not isinstance(model, nn.Module):
            raise TypeError(
                "The 'model' parameter of EarlyStopping must be the torch.nn.Module being "
                f"trained when restore_best_weights=True. Got {model!r} instead."
            )
        return model

    def __repr__(self) -> str:
        arguments = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.constraints)
        return f"EarlyStopping({arguments})"


def _resolve_direction(monitor: str, mode: str) -> Literal["min", "max"]:
    if mode == "min":
        return "min"
    if mode == "max":
        return "max"
    name = monitor.lower().removeprefix("val_")
    if name.endswith("loss"):
        return "min"
    if any(token in name for token in _MAXIMIZED_TOKENS):
        return "max"
    if any(token in name for token in _MINIMIZED_TOKENS):
        return "min"
    raise ValueError(
        f"The 'mode' parameter of EarlyStopping must be 'min' or 'max' for monitor="
        f"{monitor!r}, whose direction cannot be inferred from its name. Got 'auto' instead."
    )


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    # Copies, not references: the optimizer keeps updating the model's tensors in place.
    return {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
