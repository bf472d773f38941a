"""Transformers chained into one: fit each on what the previous ones output."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, final

from torch import Tensor

from gradwise._validation import Satisfies, check
from gradwise.preprocess._base import (
    NoInverseError,
    NotFittedError,
    Preprocessor,
    StateDict,
    naming_warnings,
)

Step = Preprocessor | tuple[str, Preprocessor]


def _is_step(step: Any) -> bool:
    if isinstance(step, tuple):
        return len(step) == 2 and isinstance(step[0], str) and isinstance(step[1], Preprocessor)
    return isinstance(step, Preprocessor)


def _is_step_list(steps: Any) -> bool:
    return isinstance(steps, list | tuple) and len(steps) > 0 and all(map(_is_step, steps))


STEPS = Satisfies(_is_step_list, "a non-empty list of transformers or (name, transformer) pairs")


def _named(steps: Sequence[Step]) -> list[tuple[str, Preprocessor]]:
    """Explicit names as given; unnamed steps are named after their class, like
    scikit-learn's ``make_pipeline``: ``"standardize"``, or ``"standardize-1"``,
    ``"standardize-2"`` when the class appears more than once."""
    automatic = [type(step).__name__.lower() for step in steps if not isinstance(step, tuple)]
    repeated = {name for name, count in Counter(automatic).items() if count > 1}
    seen: Counter[str] = Counter()
    named = []
    for step in steps:
        if isinstance(step, tuple):
            named.append(step)
            continue
        name = type(step).__name__.lower()
        seen[name] += 1
        named.append((f"{name}-{seen[name]}" if name in repeated else name, step))
    return named


@final
class Pipeline(Preprocessor):
    """Preprocessing steps applied in order, fitted and saved as one.

    ``fit(X)`` fits the first step on ``X``, the second on the first one's output, and so
    on; ``transform`` chains the steps' ``transform``; ``inverse_transform`` chains their
    ``inverse_transform`` in reverse order. An error of a step, and a
    :class:`ConstantFeatureWarning` it issues, name the step by position and name
    (``"Pipeline.fit failed at steps[1] 'standardize-2', Standardize(): ..."``), through
    nested pipelines; the error keeps the step's error type. Between steps the data stay
    float64 tensors, rounded once to the output dtype at the end, so a float32 pipeline is
    as precise as its float64 twin. Pipelines nest.

    Fit on the training split only: statistics computed on validation or test data leak
    information about them into training.

    Args:
        steps: a non-empty list of transformers (or pipelines), each bare or as a
            ``(name, transformer)`` pair; unnamed steps are named after their class.

    Example:
        >>> import torch
        >>> from gradwise.preprocess import Pipeline, Rescale, Standardize
        >>> images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
        >>> pipeline = Pipeline([Rescale(1 / 255), ("normalize", Standardize(per="channel"))])
        >>> out = pipeline.fit_transform(images)
        >>> out.dtype, list(pipeline.named_steps)
        (torch.float32, ['rescale', 'normalize'])
    """

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = steps
        check("steps", "Pipeline", steps, STEPS)
        names = [name for name, _ in _named(steps)]
        if len(set(names)) != len(names):
            repeated = sorted({name for name in names if names.count(name) > 1})
            raise ValueError(
                f"The 'steps' parameter of Pipeline must name each step once. Got "
                f"{', '.join(map(repr, repeated))} more than once instead."
            )

    @property
    def named_steps(self) -> dict[str, Preprocessor]:
        """The steps by name, in order."""
        return dict(_named(self.steps))

    def get_params(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def state_dict(self) -> StateDict:
        """``{"name": "Pipeline", "params": {"names": [...]}, "tensors": {}, "steps": [...]}``
        with one state dict per step in ``"steps"``."""
        named = _named(self.steps)
        return {
            "name": "Pipeline",
            "params": {"names": [name for name, _ in named]},
            "tensors": {},
            "steps": [step.state_dict() for _, step in named],
        }

    def __repr__(self) -> str:
        steps = ", ".join(f"({name!r}, {step!r})" for name, step in _named(self.steps))
        return f"Pipeline([{steps}])"

    def _fit64(self, x: Tensor) -> None:
        self._run("fit", x, _fit_step)

    def _fit_transform64(self, x: Tensor) -> Tensor:
        return self._run("fit_transform", x, lambda step, x, _: step._fit_transform64(x))

    def _transform64(self, x: Tensor) -> Tensor:
        return self._run("transform", x, lambda step, x, _: step._transform64(x))

    def _inverse64(self, x: Tensor) -> Tensor:
        return self._run("inverse_transform", x, lambda step, x, _: step._inverse64(x))

    def _run(self, method: str, x: Tensor, call: StepCall) -> Tensor:
        """``x`` through ``call(step, x, last)`` for every transformer, backwards for
        ``inverse_transform``. Nested pipelines are flattened, so that an error or a
        warning names the innermost step (by :func:`naming_steps`' label, where set)."""
        leaves = self._leaves()
        positions = range(len(leaves))
        order = positions[::-1] if method == "inverse_transform" else positions
        label = _step_label.get()
        for count, position in enumerate(order):
            where, index, step = leaves[position]
            last = count == len(leaves) - 1
            running, failed = _labels(method, where, step, label(index, step) if label else None)
            with naming_warnings(running):
                try:
                    x = call(step, x, last)
                except ValueError as error:
                    hint = _hint(error, method, index, len(self.steps), first=count == 0)
                    raise _step_error(error, failed, hint) from None
        return x

    def _leaves(self) -> list[tuple[str, int, Preprocessor]]:
        """Every transformer in order, nested pipelines flattened: ``(where, index of the
        top-level step holding it, transformer)``, ``where`` like
        ``"steps[1] 'inner' > steps[0] 'meansubtract'"``."""
        named = _named(self.steps)
        leaves: list[tuple[str, int, Preprocessor]] = []
        for index, (name, step) in enumerate(named):
            where = f"steps[{index}] {name!r}"
            if isinstance(step, Pipeline):
                leaves += [(f"{where} > {inner}", index, leaf) for inner, _, leaf in step._leaves()]
            else:
                leaves.append((where, index, step))
        return leaves


#: What :meth:`Pipeline._run` does with one transformer: ``(step, x, last) -> output``.
StepCall = Callable[[Preprocessor, Tensor, bool], Tensor]

#: How errors and warnings name a pipeline's step instead of ``"Pipeline.fit at steps[1]
#: 'name', Step()"``: ``(index of the top-level step, transformer) -> label``.
StepLabel = Callable[[int, Preprocessor], str]

_step_label: ContextVar[StepLabel | None] = ContextVar("gradwise_preprocess_label", default=None)


@contextmanager
def naming_steps(label: StepLabel) -> Iterator[None]:
    """Within this block, a pipeline's errors and warnings name the step at fault
    ``label(index, step)``: its caller's name for it, such as the configuration entry the
    step came from (``gradwise train``: ``"in 'train.data.preprocess[1]', PCA()"``).
    ``index`` is the step's place in the top-level ``steps``."""
    token = _step_label.set(label)
    try:
        yield
    finally:
        _step_label.reset(token)


def _fit_step(step: Preprocessor, x: Tensor, last: bool) -> Tensor:
    """Fit ``step`` on ``x`` and return its output for the next step (the last one has
    none: it is fitted, not applied)."""
    if last:
        step._fit64(x)
        return x
    return step._fit_transform64(x)


def _describe(where: str, step: Preprocessor) -> str:
    """How errors and warnings name a step: ``steps[1] 'center', MeanSubtract()``."""
    return f"{where}, {step!r}"


def _labels(method: str, where: str, step: Preprocessor, given: str | None) -> tuple[str, str]:
    """What a step's warnings and its error start with: the ``given`` label (set by
    :func:`naming_steps`) for both, else ``"Pipeline.fit at steps[1] 'center',
    MeanSubtract()"`` and ``"Pipeline.fit failed at ..."``."""
    if given is not None:
        return given, given
    described = _describe(where, step)
    return f"Pipeline.{method} at {described}", f"Pipeline.{method} failed at {described}"


def _step_error(error: ValueError, failed: str, hint: str) -> ValueError:
    """``error``, raised by a step, after ``failed`` (the step, named) and before the fix,
    ``hint``; of the same type where that type takes a message."""
    message = f"{failed}: {error}{hint}"
    try:
        return type(error)(message)
    except TypeError:  # a ValueError subclass with another signature
        return ValueError(message)


def _hint(error: ValueError, method: str, index: int, num_steps: int, first: bool) -> str:
    """How to get around a failed ``inverse_transform`` (nothing for the other methods)."""
    if method != "inverse_transform":
        return ""
    if isinstance(error, NoInverseError) and index + 1 < num_steps:
        return (
            f" To undo only the steps after steps[{index}], call "
            f"Pipeline(pipeline.steps[{index + 1}:]).inverse_transform(X)."
        )
    if first and not isinstance(error, NotFittedError | NoInverseError):
        # X itself is refused: it is not shaped like what transform returns.
        return " inverse_transform takes what this pipeline's transform returns."
    return ""


def make_pipeline(*steps: Preprocessor) -> Pipeline:
    """A :class:`Pipeline` of ``steps``, each named after its class.

    Example:
        >>> from gradwise.preprocess import MeanSubtract, ZCAWhiten, make_pipeline
        >>> make_pipeline(MeanSubtract(per="global"), ZCAWhiten(eps=0.1))
        Pipeline([('meansubtract', MeanSubtract(per='global')), ('zcawhiten', ZCAWhiten(eps=0.1))])
    """
    return Pipeline(list(steps))
