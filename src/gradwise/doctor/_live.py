"""Findings raised live during ``gradwise train``: printed once each, recorded in the run."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from gradwise.diagnosis import Diagnosis
from gradwise.monitor import Watch
from gradwise.monitor._callback import WatchCallback
from gradwise.runs import MetricsLog, RunFolder, replace_atomically
from gradwise.train import TrainState


def announce(message: str) -> None:
    """Print above the progress bar (tqdm keeps the bar intact), else to stderr."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


class LiveDoctor(WatchCallback):
    """A watch inside the Trainer that prints each new finding once and records them all.

    Findings go to the run folder's ``findings.jsonl`` as they are raised; the per-layer
    measurements and histograms are written to ``probes.jsonl`` and ``histograms.jsonl``
    when the run ends (and rebuilt from the checkpointed watch after ``--resume``), so
    ``report.html`` shows them.
    """

    def __init__(
        self,
        watch: Watch,
        run: RunFolder | None,
        *,
        say: Callable[[str], None] = announce,
    ) -> None:
        super().__init__(watch)
        self.run = run
        self.say = say
        self._log: MetricsLog | None = None

    def on_fit_start(self, state: TrainState) -> None:
        if self.run is not None:
            self._log = MetricsLog(self.run.findings_path)
            self._log.truncate_after(state.step)  # a resumed run re-raises what came after
        self._report(self.watch.findings() if state.step == 0 else [])

    def on_step_end(self, state: TrainState) -> None:
        self._report(self.watch.step(state.loss))

    def on_epoch_end(self, state: TrainState) -> None:
        self._report(self.watch.observe(state.metrics, step=state.step))

    def on_fit_end(self, state: TrainState) -> None:
        if self._log is not None:
            self._log.close()
        if self.run is not None:
            write_probe_files(self.watch, self.run)
        self.watch.close()

    def on_diverged(self, state: TrainState, loss: float) -> None:
        # The Trainer stops before the bad update: give the watch the non-finite loss so
        # it names the step and the first layer, then keep what was measured.
        self._report(self.watch.step(loss))
        self.on_fit_end(state)

    def on_exception(self, state: TrainState, error: BaseException) -> None:
        # A failure or a second Ctrl-C: the watch's hooks come off the model and the
        # findings log is closed (both idempotent, after on_diverged too). The measurements
        # are in the last checkpoint; a resume writes the probe files.
        if self._log is not None:
            self._log.close()
        self.watch.close()

    def _report(self, findings: Iterable[Diagnosis]) -> None:
        for finding in findings:
            self.say(f"gradwise: {finding}")
            if self._log is not None:
                self._log.append(finding.to_dict())
                self._log.sync()


def write_probe_files(watch: Watch, run: RunFolder) -> None:
    """The watch's per-layer records and histograms, in the run folder's formats."""
    probes = [
        {key: value for key, value in record.items() if key != "kind"}
        for record in watch.records()
        if record.get("kind") in ("weight", "activation")
    ]
    histograms = []
    for kind, plural in (("activation", "activations"), ("gradient", "gradients")):
        for step, layers in sorted(watch.histograms(plural).items()):  # type: ignore[arg-type]
            for layer, histogram in layers.items():
                histograms.append(
                    {
                        "step": step,
                        "layer": layer,
                        "kind": kind,
                        "edges": list(histogram.edges),
                        "counts": list(histogram.counts),
                        "nonfinite": histogram.nan + histogram.posinf + histogram.neginf,
                    }
                )
    _write_lines(run.probes_path, probes)
    _write_lines(run.histograms_path, histograms)


def _write_lines(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    text = "".join(json.dumps(record, allow_nan=True) + "\n" for record in records)
    replace_atomically(path, lambda file: file.write(text.encode("utf-8")))
