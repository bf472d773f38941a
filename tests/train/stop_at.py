"""A callback that stops a run at a chosen step: how the resume tests interrupt a run."""

from __future__ import annotations

from gradwise.train import Callback, TrainState


class StopAt(Callback):
    """Request a stop after optimizer step ``step``; ``seen`` lists the steps it saw."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.seen: list[int] = []

    def on_step_end(self, state: TrainState) -> None:
        self.seen.append(state.step)
        if state.step == self.step:
            state.request_stop(f"stopped at step {self.step} for the test")
