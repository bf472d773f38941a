"""Where a run's numbers go: the metrics log, TensorBoard, the progress bar, the summary."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

from gradwise.runs import MetricsLog, RunFolder, write_summary


class RunOutputs:
    """Every sink of a run; with no run folder, only the progress bar.

    TensorBoard's writer is created lazily (importing it costs about a second) and, on
    resume, purges events past the checkpoint's step so curves do not double back.
    """

    def __init__(
        self,
        folder: RunFolder | None,
        total_steps: int,
        *,
        progress: bool,
        resume_step: int | None,
        tensorboard: bool = True,
    ) -> None:
        self.folder = folder
        self.metrics: MetricsLog | None = None
        self._writer: Any = None
        if folder is not None:
            self.metrics = MetricsLog(folder.metrics_path)  # repairs a torn last line
            if resume_step is not None:
                try:
                    # The test split is evaluated after the last checkpoint, at its step: a
                    # run killed before its final summary evaluates it again on resume.
                    self.metrics.truncate_after(resume_step, after_checkpoint=("test",))
                except BaseException:
                    self.metrics.close()  # a damaged file: do not leak the descriptor
                    raise
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(
                    str(folder.tensorboard_dir), purge_step=resume_step or None
                )
        self._bar: Any = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total_steps,
                initial=resume_step or 0,
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
                leave=True,
            )

    def record(self, record: Mapping[str, Any]) -> None:
        """One metrics record to the log and to TensorBoard."""
        if self.metrics is not None:
            self.metrics.append(record)
        if self._writer is not None:
            kind, step = record["kind"], record["step"]
            for key, value in record.items():
                if key in ("kind", "step", "epoch", "time") or not isinstance(value, float):
                    continue
                if math.isfinite(value):
                    self._writer.add_scalar(f"{kind}/{key}", value, step)

    def advance_to(self, step: int, postfix: Mapping[str, Any] | None = None) -> None:
        """Move the progress bar to ``step`` (steps done). By the step, not by a count of
        steps since the last move: a resumed run starts the bar at its checkpoint's step,
        between two records, and counted from the record before it counted steps twice."""
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            if postfix is not None:
                self._bar.set_postfix(postfix, refresh=False)

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(text, refresh=False)

    def sync(self) -> None:
        """Make everything recorded so far durable (before a checkpoint)."""
        if self.metrics is not None:
            self.metrics.sync()
        if self._writer is not None:
            self._writer.flush()

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        if self.folder is not None:
            write_summary(self.folder, summary)

    def close(self, step: int | None = None) -> None:
        """Close every sink; the progress bar at ``step`` first (the steps after the last
        record: a run stopped between records showed fewer steps than it had done)."""
        if self._bar is not None:
            if step is not None:
                self.advance_to(step)
            self._bar.close()
        if self.metrics is not None:
            self.metrics.sync()
            self.metrics.close()
        if self._writer is not None:
            self._writer.close()
