"""A ticket: masks and the weights to start from, in one file a run config can name."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from gradwise._validation import Satisfies, check
from gradwise.prune._masks import TICKET_FORMAT, Masks, read_tensor_file, same_tensors
from gradwise.runs import replace_atomically


@final
@dataclass(frozen=True)
class Ticket:
    """Masks plus the start weights of a sparse run (a "winning ticket" or its control).

    ``weights`` is a model ``state_dict`` (parameters and buffers) to load before training,
    e.g. the dense run's weights at initialization or at the rewind step; ``None`` keeps
    the model's own initialization. A run config names a ticket file with
    ``prune: {ticket: PATH}``.

    A ticket never changes: the weights are copied on construction into a read-only
    mapping whose ``weights[name]`` hands out a copy, as :class:`Masks` does for the masks.
    Tickets are equal when their masks are and their weights hold the same tensors.

    Args:
        masks: the :class:`Masks` to enforce.
        weights: the start weights, or None.

    Example:
        >>> import tempfile, torch
        >>> from gradwise.prune import Ticket, magnitude_masks
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        >>> ticket = Ticket(magnitude_masks(model, 0.5), model.state_dict())
        >>> path = tempfile.mkdtemp() + "/ticket.pt"
        >>> ticket.save(path)
        >>> loaded = Ticket.load(path)
        >>> loaded.apply_(model)
        >>> int((model[0].weight == 0).sum())
        8
    """

    masks: Masks
    weights: Mapping[str, Tensor] | None = None

    def __post_init__(self) -> None:
        check("masks", "Ticket", self.masks, Satisfies(lambda v: isinstance(v, Masks), "a Masks"))
        if self.weights is not None:
            if not isinstance(self.weights, Mapping) or not all(
                isinstance(v, Tensor) for v in _plain(self.weights).values()
            ):
                raise ValueError(
                    "The 'weights' parameter of Ticket must be None or a model state_dict "
                    f"(names to tensors). Got {type(self.weights).__name__} instead."
                )
            weights = _plain(self.weights).items()
            copied = {name: value.detach().to("cpu", copy=True) for name, value in weights}
            object.__setattr__(self, "weights", _ReadOnlyTensors(copied))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the ticket with ``torch.save`` (plain tensors: ``weights_only=True`` loads it).

        The file is replaced atomically (:func:`gradwise.runs.replace_atomically`): a crash
        mid-write leaves the old file or none, never a truncated ticket.
        """
        contents: dict[str, Any] = {
            "format": TICKET_FORMAT,
            "masks": self.masks.state_dict(),
            "weights": _plain(self.weights) if self.weights is not None else None,
        }
        replace_atomically(Path(path), lambda file: torch.save(contents, file))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Ticket:
        """Read a ticket written by :meth:`save`; ValueError if the file is not one."""
        expected = (
            "a ticket file (gradwise.prune.Ticket.save writes them; gradwise prune writes one "
            "per round)"
        )
        contents = read_tensor_file(path, expected)
        if not isinstance(contents, dict) or contents.get("format") != TICKET_FORMAT:
            raise ValueError(
                f"{os.fspath(path)} is not a ticket file (gradwise.prune.Ticket.save writes "
                "them; gradwise prune writes one per round)."
            )
        return cls(Masks(contents["masks"]), contents["weights"])

    def apply_(self, model: nn.Module) -> None:
        """Load the start weights (if any), then zero the pruned ones; ValueError on misfit."""
        self.masks.check_fits(model, "Ticket.apply_")
        if self.weights is not None:
            # Checked before loading: load_state_dict copies every tensor that fits before
            # it raises, which would leave the model half overwritten.
            misfit = _misfit(model.state_dict(), _plain(self.weights))
            if misfit:
                raise ValueError(f"The weights of Ticket.apply_ must fit the model: {misfit}.")
            try:
                model.load_state_dict(_plain(self.weights))
            except RuntimeError as error:
                first = str(error).strip().splitlines()
                raise ValueError(
                    "The weights of Ticket.apply_ must fit the model: "
                    + " ".join(line.strip() for line in first[:3])
                ) from None
        self.masks.apply_(model)


@final
class _ReadOnlyTensors(Mapping[str, Tensor]):
    """Tensors by name that hand out copies (torch has no read-only tensors), so changing
    what ``ticket.weights[name]`` returns in place cannot change the ticket."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self._tensors = tensors

    def __getitem__(self, name: str) -> Tensor:
        return self._tensors[name].clone()

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        return f"<state_dict of {len(self)} tensors>"

    def __eq__(self, other: object) -> bool:
        """The same names, each with the same dtype, shape and values (so tickets compare)."""
        if not isinstance(other, Mapping):
            return NotImplemented
        theirs = _plain(other)
        if not all(isinstance(value, Tensor) for value in theirs.values()):
            return False
        return same_tensors(self._tensors, theirs)

    __hash__ = None  # type: ignore[assignment]


#: The batch-norm buffer whose absence or (1,) shape torch's load_state_dict accepts.
BATCH_COUNTER = "num_batches_tracked"


def _misfit(model: Mapping[str, Any], weights: Mapping[str, Tensor]) -> str:
    """What keeps ``weights`` from loading into a model with state_dict ``model`` ("" if
    nothing): missing and unexpected names, different shapes (a few of each)."""

    def some(names: list[str]) -> str:
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    problems = []
    # As torch's load_state_dict allows: a batch norm's num_batches_tracked may be missing
    # (old checkpoints; BatchNorm fills it in) or of shape (1,) for its 0-d counter.
    missing = [name for name in model if name not in weights and not name.endswith(BATCH_COUNTER)]
    unexpected = [name for name in weights if name not in model]
    if missing:
        problems.append(f"the ticket has no {some(missing)}")
    if unexpected:
        problems.append(f"the model has no {some(unexpected)}")
    shapes = [
        f"{name} is {tuple(weights[name].shape)} in the ticket, {tuple(value.shape)} in the model"
        for name, value in model.items()
        if name in weights
        and isinstance(value, Tensor)
        and not is_lazy(value)
        and weights[name].shape != value.shape
        and not (name.endswith(BATCH_COUNTER) and value.dim() == 0 and weights[name].numel() == 1)
    ]
    if shapes:
        problems.append("; ".join(shapes[:5]) + ("; ..." if len(shapes) > 5 else ""))
    return "; ".join(problems)


def _plain(weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The ticket's own tensors, for save and load_state_dict, which only read them."""
    return weights._tensors if isinstance(weights, _ReadOnlyTensors) else dict(weights)
