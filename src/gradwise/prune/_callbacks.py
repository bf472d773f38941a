"""Trainer callbacks: keep masks applied (saved in checkpoints), and snapshot rewind weights."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, final

import torch
from torch import Tensor, nn

from gradwise._validation import NON_NEGATIVE_INT, check
from gradwise.prune._enforce import MaskHandle, attach_masks
from gradwise.prune._masks import Masks
from gradwise.runs import RunFolder
from gradwise.runs._files import write_atomically
from gradwise.train._callbacks import Callback, TrainState

#: The file :class:`Pruning` writes into a run folder.
SPARSITY_FILE = "sparsity.json"


def sparsity_report(model: nn.Module, masks: Masks) -> dict[str, Any]:
    """The masks' report (per tensor and total) plus the whole model's nonzero count.

    ``{"layers": [...], "total": {...}, "model": {"parameters": n, "nonzero": k,
    "fraction_nonzero": k / n}}``; "total" counts the masked tensors only (the fraction of
    prunable weights remaining, the x axis of lottery-ticket plots).

    Example:
        >>> import torch
        >>> from gradwise.prune import magnitude_masks, sparsity_report
        >>> model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 2))
        >>> masks = magnitude_masks(model, 0.8)
        >>> masks.apply_(model)
        >>> sparsity_report(model, masks)["total"]
        {'size': 100, 'remaining': 20, 'sparsity': 0.8}
    """
    report = masks.report()
    parameters = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    report["model"] = {
        "parameters": parameters,
        "nonzero": nonzero,
        "fraction_nonzero": nonzero / parameters if parameters else 1.0,
    }
    return report


@final
class Pruning(Callback):
    """Train with pruned weights held at zero: :func:`attach_masks` as a Trainer callback.

    On fit start (also when resuming) the masks are attached to the trainer's model and
    optimizer; when the fit ends, however it ends (an error included), they are detached.
    The masks are the callback's state, so every checkpoint holds them and ``--resume``
    restores them. With a run folder, the sparsity report (:func:`sparsity_report`) is
    written to ``sparsity.json`` at the start and the end; ``report.html`` shows it.

    Args:
        masks: the masks (e.g. from :func:`magnitude_masks` or a :class:`Ticket`).
        run: the run folder to write ``sparsity.json`` into, or None.

    Example:
        >>> import torch
        >>> from gradwise import Trainer, optim
        >>> from gradwise.data import load_dataset
        >>> from gradwise.prune import Pruning, magnitude_masks
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(
        ...     torch.nn.Linear(2, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3)
        ... )
        >>> masks = magnitude_masks(model, 0.9, scope="layer", include_output=True)
        >>> optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> data = load_dataset("spirals", seed=0)
        >>> trainer = Trainer(
        ...     model, optimizer, data, epochs=1, callbacks=[Pruning(masks)], progress=False
        ... )
        >>> _ = trainer.fit()
        >>> int(torch.count_nonzero(model[0].weight)), int(torch.count_nonzero(model[2].weight))
        (13, 19)
    """

    def __init__(self, masks: Mapping[str, Tensor], *, run: RunFolder | None = None) -> None:
        self.masks = masks if isinstance(masks, Masks) else Masks(masks)
        self.run = run
        self._handle: MaskHandle | None = None

    def on_fit_start(self, state: TrainState) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle = attach_masks(state.model, state.optimizer, self.masks)
        self._write(state.model)

    def on_fit_end(self, state: TrainState) -> None:
        self._write(state.model)
        self._detach()

    def on_exception(self, state: TrainState, error: BaseException) -> None:
        # Any error (a divergence, Ctrl-C twice) ends the fit: hooks left behind would
        # keep zeroing gradients and weights for whatever uses the model next.
        self._detach()

    def _detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def state_dict(self) -> dict[str, Any]:
        return {"masks": self.masks.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.masks = Masks(state["masks"])

    def _write(self, model: nn.Module) -> None:
        if self.run is None:
            return
        report = sparsity_report(model, self.masks)
        data = json.dumps(report, indent=1).encode("utf-8")
        write_atomically(Path(self.run.path) / SPARSITY_FILE, data)


@final
class WeightSnapshot(Callback):
    """Copy the model's state (parameters and buffers) at step ``step`` and at the end.

    The rewind point of iterative magnitude pruning: ``step=0`` keeps the initialization
    (Frankle & Carbin 2019), a small ``step=k`` the weights after k optimizer steps (late
    rewinding, Frankle et al. 2020). The step's copy is the callback's state, so it survives
    ``--resume``; ``final_weights`` is taken on fit end (after early stopping restored its
    best weights).

    Args:
        step: the optimizer step to copy at, an int >= 0.

    Attributes:
        weights: the copy at ``step`` (None until the run gets there).
        final_weights: the copy at the end of the run (None before).
        final_step: the optimizer step of ``final_weights`` (None before); ``weights``
            rewinds anything only if ``step`` is smaller.

    Example:
        >>> import torch
        >>> from gradwise import Trainer, optim
        >>> from gradwise.data import load_dataset
        >>> from gradwise.prune import WeightSnapshot
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Linear(8, 3))
        >>> snapshot = WeightSnapshot(step=0)
        >>> start = {k: v.clone() for k, v in model.state_dict().items()}
        >>> optimizer = optim.SGD(model.parameters(), lr=0.1)
        >>> data = load_dataset("spirals", seed=0)
        >>> _ = Trainer(model, optimizer, data, epochs=1, callbacks=[snapshot],
        ...             progress=False).fit()
        >>> all(torch.equal(start[k], snapshot.weights[k]) for k in start)
        True
    """

    def __init__(self, step: int = 0) -> None:
        check("step", "WeightSnapshot", step, NON_NEGATIVE_INT)
        self.step = step
        self.weights: dict[str, Tensor] | None = None
        self.final_weights: dict[str, Tensor] | None = None
        self.final_step: int | None = None

    def on_fit_start(self, state: TrainState) -> None:
        if state.step == self.step and self.weights is None:
            self.weights = _copy(state.model)

    def on_step_end(self, state: TrainState) -> None:
        if state.step == self.step and self.weights is None:
            self.weights = _copy(state.model)

    def on_fit_end(self, state: TrainState) -> None:
        self.final_weights = _copy(state.model)
        self.final_step = state.step

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "weights": self.weights}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the copy; ValueError if it was taken for another step (a resume with
        another ``step`` would otherwise pass it off as this step's)."""
        saved = state.get("step", self.step)
        if saved != self.step:
            raise ValueError(
                f"The saved WeightSnapshot is for step {saved}; this one is for step "
                f"{self.step}. Resume with the step the run started with."
            )
        self.weights = state["weights"]


def _copy(model: nn.Module) -> dict[str, Tensor]:
    return {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}
