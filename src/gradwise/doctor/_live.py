"""Findings raised live during ``gradwise train``: printed once each, recorded in the run."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

from gradwise.diagnosis import Diagnosis
from gradwise.monitor import Watch
from gradwise.monitor._callback import WatchCallback, replace_probe_files
from gradwise.runs import MetricsLog, RunFolder
from gradwise.train import TrainState


def announce(message: str) -> None:
    """Print above the progress bar (tqdm keeps the bar intact), else to stderr."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


class LiveDoctor(WatchCallback):
    """A watch inside the Trainer that prints each new finding once and records them all.

    Findings go to the run folder's ``findings.jsonl`` as they are raised; the per-layer
    measurements and histograms go to ``probes.jsonl`` and ``histograms.jsonl`` at each
    epoch's end, before its checkpoint, and when the run ends (rewritten from the
    checkpointed watch when ``--resume`` starts, see :class:`WatchCallback`), so
    ``report.html`` shows them.
    """

    def __init__(
        self,
        watch: Watch,
        run: RunFolder | None,
        *,
        say: Callable[[str], None] = announce,
    ) -> None:
        super().__init__(watch, run)
        self.say = say
        self._log: MetricsLog | None = None

    def on_fit_start(self, state: TrainState) -> None:
        if self.run is not None:
            self._log = MetricsLog(self.run.findings_path)
            self._log.truncate_after(state.step)  # a resumed run re-raises what came after
        self.start_probe_files()
        self._report(self.watch.findings() if state.step == 0 else [])

    def on_step_end(self, state: TrainState) -> None:
        self._report(self.watch.step(state.loss))

    def on_epoch_end(self, state: TrainState) -> None:
        self._report(self.watch.observe(state.metrics, step=state.step))
        self.append_probe_files()

    def on_fit_end(self, state: TrainState) -> None:
        if self._log is not None:
            self._log.close()
        super().on_fit_end(state)  # the probe files' last records
        self.watch.close()

    def on_diverged(self, state: TrainState, loss: float) -> None:
        # The Trainer stops before the bad update: give the watch the non-finite loss so
        # it names the step and the first layer, then keep what was measured.
        self._report(self.watch.step(loss))
        self.on_fit_end(state)

    def on_exception(self, state: TrainState, error: BaseException) -> None:
        # A failure or a second Ctrl-C: the watch's hooks come off the model and the
        # findings log and probe files are closed (all idempotent, after on_diverged too).
        # The probe files hold the last checkpoint's measurements (a resume drops any after).
        if self._log is not None:
            self._log.close()
        super().on_exception(state, error)
        self.watch.close()

    def _report(self, findings: Iterable[Diagnosis]) -> None:
        for finding in findings:
            self.say(f"gradwise: {finding}")
            if self._log is not None:
                self._log.append(finding.to_dict())
                self._log.sync()


def write_probe_files(watch: Watch, run: RunFolder) -> None:
    """The watch's per-layer records and histograms, in the run folder's formats: replaces
    ``probes.jsonl`` and ``histograms.jsonl`` atomically (what ``gradwise train`` appends
    to them during the run)."""
    replace_probe_files(watch, run)
