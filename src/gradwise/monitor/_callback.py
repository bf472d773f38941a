"""The Trainer side of a watch: a Callback that forwards steps and epoch metrics, and
keeps a run folder's ``probes.jsonl`` and ``histograms.jsonl`` up with its checkpoints.

Imported lazily by :meth:`Watch.callback`, so that ``gradwise.monitor`` does not import
``gradwise.train`` (and ``gradwise.train`` may import ``gradwise.monitor``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from gradwise.runs import MetricsLog, RunFolder
from gradwise.runs._files import to_json, write_atomically
from gradwise.train import Callback, TrainState

if TYPE_CHECKING:
    from gradwise.monitor._watch import Watch

# The record kinds of probes.jsonl (the rest of watch.records() is in metrics.jsonl or
# findings.jsonl), and the histogram kinds of histograms.jsonl with their names in a watch.
PROBE_KINDS = ("weight", "activation")
HISTOGRAM_KINDS = (("activation", "activations"), ("gradient", "gradients"))


class WatchCallback(Callback):
    """Runs a :class:`Watch` inside :class:`gradwise.Trainer`.

    ``on_step_end`` calls ``watch.step(state.loss)``; ``on_epoch_end`` passes the epoch's
    metrics (``train_accuracy``, ``val_loss``, ...) to ``watch.observe``; the watch's
    state is saved in the Trainer's checkpoints.

    With a ``run`` folder the per-layer records and histograms go to its ``probes.jsonl``
    and ``histograms.jsonl`` as the run goes (:class:`ProbeFiles`): written whole when the
    fit starts (a resume drops what a killed run wrote after its checkpoint), then what is
    new appended at each epoch's end and just before every checkpoint (those within an
    epoch too), and when the fit ends.
    """

    def __init__(self, watch: Watch, run: RunFolder | None = None) -> None:
        self.watch = watch
        self.run = run
        self._probe_files: ProbeFiles | None = None

    def on_fit_start(self, state: TrainState) -> None:
        self.start_probe_files()

    def on_step_end(self, state: TrainState) -> None:
        self.watch.step(state.loss)

    def on_epoch_end(self, state: TrainState) -> None:
        self.watch.observe(state.metrics, step=state.step)
        self.append_probe_files()

    def on_checkpoint(self, state: TrainState) -> None:
        # Also the checkpoints within an epoch (checkpoint_every): a run killed after one
        # resumes from it, and its files must hold what it holds.
        self.append_probe_files()

    def on_fit_end(self, state: TrainState) -> None:
        self.append_probe_files()
        self.close_probe_files()

    def on_exception(self, state: TrainState, error: BaseException) -> None:
        # Nothing more is written: the files hold what the last checkpoint holds, or a
        # little more (an epoch's records, appended just before its checkpoint failed),
        # which a resume drops.
        self.close_probe_files()

    def start_probe_files(self) -> None:
        """Write the run's probe files with everything the watch holds (with a run)."""
        if self.run is not None and _is_main_process():
            self.close_probe_files()
            self._probe_files = ProbeFiles(self.watch, self.run)

    def append_probe_files(self) -> None:
        """Append what the watch measured since the last write (after
        :meth:`start_probe_files`; otherwise nothing)."""
        if self._probe_files is not None:
            self._probe_files.append()

    def close_probe_files(self) -> None:
        """Close the probe files (idempotent)."""
        files, self._probe_files = self._probe_files, None
        if files is not None:
            files.close()

    def state_dict(self) -> dict[str, Any]:
        return self.watch.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.watch.load_state_dict(state)


class ProbeFiles:
    """A run folder's ``probes.jsonl`` and ``histograms.jsonl``, kept up with a watch.

    Made, it replaces both files atomically with every record the watch holds (a resumed
    watch holds those up to its checkpoint: what a killed run appended after it goes);
    :meth:`append` then adds what the watch measured since, through :class:`MetricsLog`
    (one ``write`` per line), so its cost is that of the new records, not of the whole
    run. Lines are in step order, and within a step as the watch recorded them
    (histograms: activations, then gradients), so where the writes fell does not change
    the files: a resumed run ends with the files of an uninterrupted one.
    """

    def __init__(self, watch: Watch, run: RunFolder) -> None:
        self.watch = watch
        self.run = run
        self._num_records, self._step = 0, -1
        probes, histograms = self._new_lines()
        write_atomically(run.probes_path, "".join(probes).encode("ascii"))
        write_atomically(run.histograms_path, "".join(histograms).encode("ascii"))
        self._probes = MetricsLog(run.probes_path)
        try:
            self._histograms = MetricsLog(run.histograms_path)
        except BaseException:
            self._probes.close()
            raise

    def append(self) -> None:
        """Append the records and histograms measured since the last write.

        Once this returns, the lines are in the operating system's cache: a killed process
        loses none. They are fsynced only on closing: on the default ``gradwise train``
        run (20 epochs) an append took 0.9 ms an epoch (median), 10.5 ms with an fsync of
        each file, and a power cut loses nothing a resume needs (it writes the files
        again from its checkpoint).
        """
        probes, histograms = self._new_records()
        for log, records in ((self._probes, probes), (self._histograms, histograms)):
            for record in records:
                log.append(record)

    def close(self) -> None:
        """fsync and close both files (idempotent)."""
        try:
            self._probes.close()
        finally:
            self._histograms.close()

    def _new_lines(self) -> tuple[list[str], list[str]]:
        probes, histograms = self._new_records()
        return _lines(probes), _lines(histograms)

    def _new_records(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The probe and histogram records measured since the last call, and move on."""
        watch = self.watch
        # The watch's own list and dicts (this package's), read from where the last call
        # stopped: watch.records() and watch.histograms() copy (and sort) the whole run at
        # every call, which would make each epoch's write cost more than the last. A
        # watch records in step order, and a step's records are complete once step()
        # returns.
        records = watch._records
        probes = [
            {key: value for key, value in record.items() if key != "kind"}
            for record in records[self._num_records :]
            if record.get("kind") in PROBE_KINDS
        ]
        self._num_records = len(records)
        watch._bin_histograms()  # as the checkpoint's state_dict() would, right after
        by_kind = {kind: watch._histograms[plural] for kind, plural in HISTOGRAM_KINDS}
        steps = sorted(
            {step for by_step in by_kind.values() for step in _since(by_step, self._step)}
        )
        histograms = [
            _histogram_record(step, layer, kind, histogram)
            for step in steps
            for kind, by_step in by_kind.items()
            for layer, histogram in by_step.get(step, {}).items()
        ]
        self._step = max(self._step, watch.num_steps, *steps)
        return probes, histograms


def replace_probe_files(watch: Watch, run: RunFolder) -> None:
    """Replace the run folder's ``probes.jsonl`` and ``histograms.jsonl`` atomically with
    the watch's per-layer records and histograms (what :class:`ProbeFiles` starts with)."""
    ProbeFiles(watch, run).close()


def _since(by_step: dict[int, Any], step: int) -> list[int]:
    """The keys greater than ``step``, newest first, without a pass over the older ones:
    the steps a watch added since ``step`` come last in its dicts, in step order."""
    newer = []
    for key in reversed(by_step):
        if key <= step:
            break
        newer.append(key)
    return newer


def _histogram_record(step: int, layer: str, kind: str, histogram: Any) -> dict[str, Any]:
    return {
        "step": step,
        "layer": layer,
        "kind": kind,
        "edges": list(histogram.edges),
        "counts": list(histogram.counts),
        "nonfinite": histogram.nan + histogram.posinf + histogram.neginf,
    }


def _lines(records: Iterable[Mapping[str, Any]]) -> list[str]:
    return [to_json(record, "ProbeFiles") + "\n" for record in records]


def _is_main_process() -> bool:
    """Whether this process writes the run folder: rank 0 of a distributed run (every
    rank runs the watch, and appends from each would repeat every line)."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
