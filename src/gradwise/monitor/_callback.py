"""The Trainer side of a watch: a Callback that forwards steps and epoch metrics.

Imported lazily by :meth:`Watch.callback`, so that ``gradwise.monitor`` does not import
``gradwise.train`` (and ``gradwise.train`` may import ``gradwise.monitor``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gradwise.train import Callback, TrainState

if TYPE_CHECKING:
    from gradwise.monitor._watch import Watch


class WatchCallback(Callback):
    """Runs a :class:`Watch` inside :class:`gradwise.Trainer`.

    ``on_step_end`` calls ``watch.step(state.loss)``; ``on_epoch_end`` passes the epoch's
    metrics (``train_accuracy``, ``val_loss``, ...) to ``watch.observe``; the watch's
    state is saved in the Trainer's checkpoints.
    """

    def __init__(self, watch: Watch) -> None:
        self.watch = watch

    def on_step_end(self, state: TrainState) -> None:
        self.watch.step(state.loss)

    def on_epoch_end(self, state: TrainState) -> None:
        self.watch.observe(state.metrics, step=state.step)

    def state_dict(self) -> dict[str, Any]:
        return self.watch.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.watch.load_state_dict(state)
