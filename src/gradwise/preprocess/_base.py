"""The scikit-learn contract every preprocessor follows, written once.

:class:`Preprocessor` is the public face (``fit``, ``transform``, ``fit_transform``,
``inverse_transform``, ``state_dict``, ``get_params``): it turns the input into a float64
tensor and the result back into the input's kind. :class:`Transformer` is the template for
one step: it checks the fit data and the layout, and leaves the arithmetic to four hooks.
"""

from __future__ import annotations

import inspect
import math
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, Self

import numpy.typing as npt
import torch
from torch import Tensor

from gradwise._frames import stacklevel_outside
from gradwise._validation import Constraint, check_all
from gradwise.preprocess._arrays import ArrayT, as_float64, check_fit_data, format_indices, restore

#: A fitted transformer's state: ``{"name", "params", "tensors"}`` (pipelines add "steps").
StateDict = dict[str, Any]

_LEARNED_NAME = re.compile(r"[a-z][a-z0-9_]*_")


class NotFittedError(ValueError, AttributeError):
    """A transformer was used before ``fit`` (a ValueError, and an AttributeError so that
    ``hasattr(transformer, "n_features_in_")`` is False before fitting, as in scikit-learn)."""


class NoInverseError(ValueError):
    """A transformer that cannot undo its transform: it does not keep what it removed."""


class ConstantFeatureWarning(UserWarning):
    """Some features (channels, directions) do not vary in the fit data; they got scale 1."""


class Preprocessor(ABC):
    """Anything with the scikit-learn transformer contract: a transformer or a pipeline.

    ``fit(X)`` learns statistics from ``X`` only and returns ``self``; ``transform(X)``
    applies them and never refits; ``fit_transform(X)`` does both on one conversion of
    ``X``; ``inverse_transform(X)`` undoes ``transform`` where that is defined.

    ``X`` is a ``numpy.ndarray`` or a ``torch.Tensor`` of shape ``(N, D)`` or
    ``(N, C, ...)``. The result has the input's kind, device and dtype (integer and bool
    inputs give float32). All arithmetic runs in float64.
    """

    def fit(self, X: Tensor | npt.NDArray[Any]) -> Self:
        """Learn the statistics from ``X`` (the training data only) and return ``self``."""
        self._fit64(as_float64(X, f"{type(self).__name__}.fit"))
        return self

    def transform(self, X: ArrayT) -> ArrayT:
        """Apply the statistics learned in ``fit`` to ``X``."""
        return restore(self._transform64(as_float64(X, f"{type(self).__name__}.transform")), X)

    def fit_transform(self, X: ArrayT) -> ArrayT:
        """``fit(X)`` then ``transform(X)``, converting ``X`` once."""
        x = as_float64(X, f"{type(self).__name__}.fit_transform")
        return restore(self._fit_transform64(x), X)

    def inverse_transform(self, X: ArrayT) -> ArrayT:
        """Map transformed data back to the input space."""
        owner = f"{type(self).__name__}.inverse_transform"
        return restore(self._inverse64(as_float64(X, owner)), X)

    @abstractmethod
    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, by name, as given."""

    @abstractmethod
    def state_dict(self) -> StateDict:
        """Everything needed to rebuild this object: see :func:`from_state_dict`."""

    @abstractmethod
    def _fit64(self, x: Tensor) -> None: ...

    @abstractmethod
    def _fit_transform64(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def _transform64(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def _inverse64(self, x: Tensor) -> Tensor: ...


class Transformer(Preprocessor):
    """One preprocessing step: checks here, arithmetic in the hooks of each subclass.

    Subclasses store their constructor arguments unchanged, declare their constraints in
    ``parameter_constraints`` and set their learned tensors (names ending in ``_``) in
    ``_fit``; ``state_dict`` saves exactly those tensors.
    """

    #: The constraint on each constructor argument, checked when the object is made.
    parameter_constraints: ClassVar[Mapping[str, Constraint]] = {}

    #: The shape of one sample seen by ``fit``; set by ``fit``.
    sample_shape_: tuple[int, ...]

    def _check_parameters(self) -> None:
        check_all(type(self).__name__, self.get_params(), self.parameter_constraints)

    @property
    def n_features_in_(self) -> int:
        """The number of features (values per sample) seen by ``fit``."""
        self._check_fitted()
        return math.prod(self.sample_shape_)

    def get_params(self) -> dict[str, Any]:
        names = inspect.signature(type(self)).parameters
        return {name: getattr(self, name) for name in names}

    def state_dict(self) -> StateDict:
        """``{"name": class name, "params": constructor arguments, "tensors": learned}``.

        ``tensors`` is empty before ``fit``; after it, it holds a copy of every learned
        tensor and ``sample_shape_`` as an int64 tensor. No pickle is needed to store it.
        The copies share no memory with the transformer: editing the dict leaves the
        transformer alone, and refitting the transformer leaves a saved dict alone.
        """
        tensors: dict[str, Tensor] = {}
        if self._is_fitted():
            tensors["sample_shape_"] = torch.tensor(self.sample_shape_, dtype=torch.int64)
            for name, value in vars(self).items():
                if name.endswith("_") and isinstance(value, Tensor):
                    tensors[name] = value.detach().clone()
        return {"name": type(self).__name__, "params": self.get_params(), "tensors": tensors}

    def _load_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        """Set copies of the learned state saved by :meth:`state_dict` (nothing: unfitted).

        Copies, so that the loaded transformer and the state it came from stay independent.
        """
        if not tensors:
            return
        owner = type(self).__name__
        if "sample_shape_" not in tensors:
            raise ValueError(f"This {owner} state has tensors but no 'sample_shape_'.")
        for name, value in tensors.items():
            if not _LEARNED_NAME.fullmatch(name) or not isinstance(value, Tensor):
                raise ValueError(
                    f"A {owner} state holds learned tensors named like 'mean_'. "
                    f"Got {name!r}: {type(value).__name__} instead."
                )
        for name, value in tensors.items():
            if name != "sample_shape_":
                setattr(self, name, value.detach().clone())
        self.sample_shape_ = tuple(int(size) for size in tensors["sample_shape_"].tolist())

    def __repr__(self) -> str:
        defaults = inspect.signature(type(self)).parameters
        changed = [
            f"{name}={value!r}"
            for name, value in self.get_params().items()
            if value != defaults[name].default
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

    def _is_fitted(self) -> bool:
        return "sample_shape_" in vars(self)

    def _check_fitted(self) -> None:
        if not self._is_fitted():
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with the "
                "training data before using this transformer."
            )

    def _fit64(self, x: Tensor) -> None:
        vars(self).pop("sample_shape_", None)  # a failed refit leaves it unfitted
        check_fit_data(x, f"{type(self).__name__}.fit")
        self._fit(x.detach())
        self.sample_shape_ = tuple(x.shape[1:])

    def _fit_transform64(self, x: Tensor) -> Tensor:
        self._fit64(x)
        return self._transform64(x)

    def _transform64(self, x: Tensor) -> Tensor:
        self._check_fitted()
        self._check_layout(x, self._layout())
        return self._transform(x)

    def _inverse64(self, x: Tensor) -> Tensor:
        self._check_fitted()
        return self._inverse(x)

    def _check_layout(self, x: Tensor, layout: str) -> None:
        """Refuse data whose layout differs from what the statistics were learned on.

        ``"feature"``: the whole sample shape must match; ``"channel"``: the channel count
        (dim 1) must match, spatial sizes may differ; ``"any"``: nothing to check.
        """
        owner = type(self).__name__
        if layout == "channel" and x.shape[1] != self.sample_shape_[0]:
            raise ValueError(
                f"X has {_count(x.shape[1], 'channel')}, but this {owner} was fitted with "
                f"{_count(self.sample_shape_[0], 'channel')}."
            )
        if layout != "feature" or tuple(x.shape[1:]) == self.sample_shape_:
            return
        got, fitted = math.prod(x.shape[1:]), math.prod(self.sample_shape_)
        if got != fitted:
            raise ValueError(
                f"X has {_count(got, 'feature')}, but this {owner} was fitted with "
                f"{_count(fitted, 'feature')}."
            )
        raise ValueError(
            f"X has samples of shape {tuple(x.shape[1:])}, but this {owner} was fitted on "
            f"samples of shape {self.sample_shape_}."
        )

    @abstractmethod
    def _layout(self) -> str:
        """What ``transform`` input must share with the fit data: see ``_check_layout``."""

    @abstractmethod
    def _fit(self, x: Tensor) -> None:
        """Learn from ``x``: float64, detached, at least 2 samples, all finite."""

    @abstractmethod
    def _transform(self, x: Tensor) -> Tensor:
        """Transform ``x`` (float64, layout already checked)."""

    @abstractmethod
    def _inverse(self, x: Tensor) -> Tensor:
        """Undo ``_transform`` on ``x`` (float64); checks its own layout."""


#: How the warnings of the transformer running now name it, set by the pipeline running it
#: (``"Pipeline.fit at steps[1] 'standardize-2', Standardize()"``); None outside one.
_running_step: ContextVar[str | None] = ContextVar("gradwise_preprocess_step", default=None)


@contextmanager
def naming_warnings(label: str) -> Iterator[None]:
    """Within this block, :func:`warn_constant` names the transformer ``label``."""
    token = _running_step.set(label)
    try:
        yield
    finally:
        _running_step.reset(token)


def warn_constant(owner: str, constant: Tensor, noun: str, consequence: str) -> None:
    """Warn, naming them, about the constant features (channels, directions) in ``constant``.

    ``constant`` is a bool tensor with one entry per feature (any shape; 0-d for one
    global statistic). Feature indices of images are printed as tuples ``(c, h, w)``. The
    warning starts with ``owner``, or with the step's place in the pipeline fitting it.
    """
    if not bool(constant.any()):
        return
    if constant.ndim == 0:
        what = "X is constant in the fit data (all its values are equal)"
    else:
        rows = constant.nonzero().tolist()
        labels = [str(row[0]) if len(row) == 1 else str(tuple(row)) for row in rows]
        what = (
            f"{_count(len(labels), noun)} {'is' if len(labels) == 1 else 'are'} constant in "
            f"the fit data ({noun} {'index' if len(labels) == 1 else 'indices'} "
            f"{format_indices(labels)})"
        )
    warnings.warn(
        f"{_running_step.get() or owner}: {what}; {consequence}",
        ConstantFeatureWarning,
        stacklevel=stacklevel_outside(__file__),  # fit, fit_transform, pipelines
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
