"""``gradwise prune``: the lottery-ticket rounds as ordinary, resumable run folders.

Layout of a prune folder (``<runs_dir>/<name>/``)::

    prune.json                the settings (a re-run must match them) and the rows so far
    summary.json, report.html accuracy vs weights remaining, per run
    rewind.pt                 the dense run's weights at the rewind step
    tickets/round-<r>.pt      the winning ticket of round r (masks + rewound weights)
    tickets/round-<r>-control.pt   the same masks with a fresh initialization
    round-0/                  the dense run (a normal run folder)
    round-<r>-ticket/, round-<r>-control/   one normal run folder each

A run folder is finished when it holds ``final_weights.pt``; a re-run skips finished runs,
resumes interrupted ones from their last checkpoint and restarts the ones that never
checkpointed. The files whose presence marks a step done (``rewind.pt``, the tickets,
``final_weights.pt``) are written atomically, so a kill never leaves a truncated one.

A run's fit writes ``fit_end.pt`` (its final weights, final step and, for round 0, the
rewind weights) before the Trainer writes the summary that says the run finished. A prune
killed between that summary and ``final_weights.pt`` (which ``resume()`` would refuse to
continue: the run is finished) takes the final weights from there on the next start,
without training again; a finished run without it (a folder from an older gradwise) is
trained again. ``summary.json`` is rewritten, status ``interrupted``, after every run that
finishes, so a kill leaves it listing the runs done so far.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, final

import torch
from torch import Tensor, nn

from gradwise.config import ConfigError, RunConfig, config_to_dict
from gradwise.config._schema import PruneConfig
from gradwise.prune._callbacks import WeightSnapshot
from gradwise.prune._lottery import prune_round
from gradwise.prune._masks import Masks
from gradwise.prune._ticket import Ticket
from gradwise.runs import (
    RunFolder,
    RunFolderError,
    read_config,
    read_records,
    read_summary,
    write_config,
)
from gradwise.runs._files import (
    describe_os_error,
    remove_leftover_temporaries,
    replace_atomically,
    write_atomically,
)
from gradwise.train._callbacks import Callback, TrainState

FINAL_WEIGHTS = "final_weights.pt"
#: A round's run folder: what its fit ended with, until final_weights.pt is written.
FIT_END_WEIGHTS = "fit_end.pt"
_FIT_END_FORMAT = "gradwise.prune.fit_end/1"
# The statuses of a run that ended by itself: the prune goes on from its final weights.
_FINISHED = ("completed", "early_stopped", "stopped")
REWIND_WEIGHTS = "rewind.pt"
_SETTINGS_FILE = "prune.json"
_REPORT_FILES = ("summary.json", "report.html")
_CONTROL_SEED_STRIDE = 1000  # control of round r: seed + 1000 r


@dataclass(frozen=True)
class PruneSettings:
    """The arguments of ``gradwise prune`` (checked by :func:`check_settings`)."""

    rounds: int
    rate: float
    rewind_step: int = 0
    scope: str = "global"
    output_rate: float | None = None
    control: bool = True


@dataclass(frozen=True)
class PruneResult:
    """What :func:`find_tickets` returns."""

    folder: Path
    rows: list[dict[str, Any]]
    interrupted: bool
    report: Path | None


def check_settings(settings: PruneSettings) -> None:
    """ConfigError in the one format for a bad argument of ``gradwise prune``."""
    problems = [
        ("--rounds", settings.rounds, "an int >= 1",
         isinstance(settings.rounds, int) and settings.rounds >= 1),
        ("--rate", settings.rate, "a float in (0, 1)", 0.0 < settings.rate < 1.0),
        ("--rewind-step", settings.rewind_step, "an int >= 0",
         isinstance(settings.rewind_step, int) and settings.rewind_step >= 0),
        ("--scope", settings.scope, "one of 'global', 'layer'",
         settings.scope in ("global", "layer")),
        ("--output-rate", settings.output_rate, "a float in (0, 1)",
         settings.output_rate is None or 0.0 < settings.output_rate < 1.0),
    ]  # fmt: skip
    for flag, value, expected, ok in problems:
        if not ok:
            raise ConfigError(f"{flag} must be {expected}. Got {value!r} instead.")


def find_tickets(
    config: RunConfig,
    settings: PruneSettings,
    *,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> PruneResult:
    """Run (or continue) the lottery-ticket rounds of ``settings`` for a dense ``config``."""
    from gradwise.train import prepare_run
    from gradwise.train._from_config import run_prefix

    check_settings(settings)
    if config.prune is not None:
        raise ConfigError(
            "gradwise prune starts from a dense run; set 'train.prune' to null in CONFIG "
            "(each round's run gets its own ticket)"
        )
    prepared = prepare_run(config)  # every config error surfaces before a file is written
    if settings.rewind_step >= prepared.total_steps:
        raise ConfigError(
            f"--rewind-step must be smaller than the run's {prepared.total_steps} steps. "
            f"Got {settings.rewind_step} instead."
        )
    folder = Path(config.runs_dir) / (config.name or f"prune-{run_prefix(config)}")
    _claim(folder, config, settings)
    study = _Study(folder, config, settings, prepared.model, progress, say)
    return study.run()


def _claim(folder: Path, config: RunConfig, settings: PruneSettings) -> None:
    """Create the folder, or check that an existing one holds the same procedure."""
    wanted = {"config": config_to_dict(config), **_settings_dict(settings)}
    path = folder / _SETTINGS_FILE
    if path.is_file():
        existing = json.loads(path.read_text(encoding="utf-8"))
        differ = [
            change
            for key in wanted
            if key != "rounds"
            for change in _changes(
                _procedure(existing, key) if key in existing else _UNSET,
                _procedure(wanted, key),
                key,
            )
        ]
        if differ:
            shown = "; ".join(differ[:_CHANGES_SHOWN])
            more = len(differ) - _CHANGES_SHOWN
            raise ConfigError(
                f"{folder} holds a prune with other settings ({shown}"
                f"{f'; and {more} more' if more > 0 else ''}); "
                "use another name (--set name=...) or remove that folder"
            )
        _refuse_dropping_rounds(folder, settings.rounds)
    elif folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"{folder} is a file, not a prune folder. Choose another name (--set name=...), "
            "or move that file."
        )
    elif folder.is_dir() and not _only_prune_leftovers(folder):
        raise ConfigError(
            f"{folder} already exists and is not a prune folder (it has no {_SETTINGS_FILE}); "
            "a prune would overwrite its files. Choose another name (--set name=...), or "
            "remove that folder."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tickets").mkdir(exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"Cannot make the prune folder {folder}: {describe_os_error(error)}. Choose "
            "another name (--set name=...) or runs folder (--runs-dir)."
        ) from error
    # The prune command is the folder's one writer: what a killed write left is nobody's.
    remove_leftover_temporaries(folder, (_SETTINGS_FILE, REWIND_WEIGHTS, *_REPORT_FILES))
    remove_leftover_temporaries(folder / "tickets")
    write_atomically(path, json.dumps(wanted, indent=1).encode("utf-8"))


def _only_prune_leftovers(folder: Path) -> bool:
    """True if ``folder`` is empty, or holds only what a prune killed before it wrote
    prune.json left: an empty ``tickets/`` and temporary files of its own writes."""
    for entry in folder.iterdir():
        if entry.name == "tickets" and entry.is_dir():
            if not all(_is_temporary(ticket) for ticket in entry.iterdir()):
                return False
        elif not _is_temporary(entry):
            return False
    return True


def _is_temporary(path: Path) -> bool:
    """A ``.<name>.<random>.tmp`` file of :func:`write_atomically`."""
    return path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file()


_CHANGES_SHOWN = 3
_UNSET = object()  # a key one side does not have


def _changes(saved: Any, wanted: Any, key: str) -> list[str]:
    """How ``saved`` became ``wanted``, per dotted key: "config.optimizer.lr was 0.1, now
    0.2" (an empty list when they are equal)."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        keys = [*wanted, *(name for name in saved if name not in wanted)]
        return [
            change
            for name in keys
            for change in _changes(
                saved.get(name, _UNSET), wanted.get(name, _UNSET), f"{key}.{name}"
            )
        ]
    if saved == wanted:
        return []
    return [f"{key} was {_shown(saved)}, now {_shown(wanted)}"]


def _shown(value: Any) -> str:
    if value is _UNSET:
        return "not set"
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _refuse_dropping_rounds(folder: Path, rounds: int) -> None:
    """ConfigError when ``folder`` holds rounds past ``rounds``: a re-run would rewrite its
    summary and report without them (a round is there once its ticket file is)."""
    held = rounds
    while (folder / "tickets" / f"round-{held + 1}.pt").is_file():
        held += 1
    if held > rounds:
        raise ConfigError(
            f"{folder} holds {held} rounds, but --rounds is {rounds}; a prune continues with "
            f"the rounds it holds or more: pass --rounds {held} (or more), or use another "
            "name (--set name=...) for a shorter prune"
        )


def _settings_dict(settings: PruneSettings) -> dict[str, Any]:
    return {
        "rounds": settings.rounds,
        "rate": settings.rate,
        "rewind_step": settings.rewind_step,
        "scope": settings.scope,
        "output_rate": settings.output_rate,
        "control": settings.control,
    }


class _Study:
    """The rounds of one prune folder, run in order."""

    def __init__(
        self,
        folder: Path,
        config: RunConfig,
        settings: PruneSettings,
        model: nn.Module,
        progress: bool,
        say: Callable[[str], None],
    ) -> None:
        self.folder = folder
        self.config = config
        self.settings = settings
        self.model = model  # a scratch model of the right architecture
        self.progress = progress
        self.say = say
        self.rows: list[dict[str, Any]] = []

    def run(self) -> PruneResult:
        final = self._train("round-0", None, WeightSnapshot(self.settings.rewind_step))
        if final is None:
            return self._finish(interrupted=True)
        masks: Masks | None = None
        for index in range(1, self.settings.rounds + 1):
            masks = self._write_tickets(index, final, masks)
            final = self._train(f"round-{index}-ticket", self._ticket_path(index, "ticket"))
            if final is None:
                return self._finish(interrupted=True)
            if self.settings.control:
                path = self._ticket_path(index, "control")
                if self._train(f"round-{index}-control", path) is None:
                    return self._finish(interrupted=True)
        return self._finish(interrupted=False)

    # -- one run ----------------------------------------------------------------------------

    def _train(
        self, name: str, ticket: Path | None, snapshot: WeightSnapshot | None = None
    ) -> dict[str, Tensor] | None:
        """Train (or resume, or skip) one run; its final weights, or None if interrupted."""
        run = RunFolder(self.folder / name)
        final_path = run.path / FINAL_WEIGHTS
        finished_now = not final_path.is_file()
        if not finished_now:
            self.say(f"{name}: done already")
        else:
            # From a killed re-run, or a fit end's write killed mid-way.
            remove_leftover_temporaries(run.path, (FINAL_WEIGHTS, FIT_END_WEIGHTS))
            snapshot = snapshot if snapshot is not None else WeightSnapshot(0)
            ended = self._recorded_end(name, run) or self._fit(name, run, ticket, snapshot)
            if ended is None:
                return None
            if name == "round-0":
                self._check_rewind(name, ended)
                _save_atomically(ended.rewind_weights, self.folder / REWIND_WEIGHTS)
            _save_atomically(ended.final_weights, final_path)  # last: marks the run finished
            (run.path / FIT_END_WEIGHTS).unlink(missing_ok=True)  # a copy of final_weights.pt
        self.rows.append(self._row(name, run))
        if finished_now:
            # A kill from here on leaves a summary that lists this run and says interrupted.
            self._finish(interrupted=True)
        weights: dict[str, Tensor] = torch.load(final_path, map_location="cpu", weights_only=True)
        return weights

    def _fit(
        self, name: str, run: RunFolder, ticket: Path | None, snapshot: WeightSnapshot
    ) -> _FitEnd | None:
        """Train or resume the run; what its fit ended with, or None if interrupted."""
        from gradwise.train import resume, train

        if run.path.exists() and not run.last_checkpoint.is_file():
            shutil.rmtree(run.path)  # it never checkpointed: start it again
        callbacks = [snapshot, _WriteFitEnd(snapshot, run.path / FIT_END_WEIGHTS)]
        if run.last_checkpoint.is_file():
            self.say(f"{name}: resuming from {run.last_checkpoint}")
            if ticket is not None:
                _name_the_ticket(run, ticket)
            result = resume(run.path, progress=self.progress, callbacks=callbacks)
        else:
            self.say(f"{name}: training")
            config = replace(
                self.config,
                runs_dir=str(self.folder),
                name=name,
                prune=None if ticket is None else PruneConfig(ticket=str(ticket.resolve())),
            )
            result = train(config, progress=self.progress, callbacks=callbacks)
        if result.status == "interrupted":
            return None
        assert snapshot.final_weights is not None  # noqa: S101 - set by on_fit_end
        return _FitEnd(snapshot.final_weights, snapshot.final_step, snapshot.weights)

    def _recorded_end(self, name: str, run: RunFolder) -> _FitEnd | None:
        """What a run that finished before the prune was killed ended with (its summary
        says finished, but final_weights.pt was never written), from ``fit_end.pt``, which
        the fit wrote before its summary. None for a run that did not finish; a finished run
        without a ``fit_end.pt`` of its last step is removed, to be trained again."""
        try:
            summary = read_summary(run) if run.summary_path.is_file() else {}
        except (RunFolderError, ValueError):
            return None  # a damaged summary: resume() says what it can
        if summary.get("status") not in _FINISHED:
            return None
        path = run.path / FIT_END_WEIGHTS
        ended = _read_fit_end(path)
        if ended is not None and ended.final_step == summary.get("steps"):
            self.say(f"{name}: finished before the prune stopped; final weights from {path}")
            return ended
        self.say(
            f"{name}: finished, but its final weights were never written (the prune stopped "
            f"first, and {path.name} holds no copy of them); training it again"
        )
        shutil.rmtree(run.path)
        return None

    def _check_rewind(self, name: str, ended: _FitEnd) -> None:
        """ConfigError unless the dense run trained past --rewind-step (an early stop may
        end it sooner than its budget, which find_tickets checked)."""
        rewind_step = self.settings.rewind_step
        if ended.rewind_weights is None:
            raise ConfigError(f"{name} stopped before --rewind-step; nothing to rewind to")
        if ended.final_step is not None and ended.final_step <= rewind_step:
            raise ConfigError(
                f"{name} stopped at step {ended.final_step}, so --rewind-step {rewind_step} "
                "is its final weights and rewinds nothing; pass a smaller --rewind-step"
            )

    def _row(self, name: str, run: RunFolder) -> dict[str, Any]:
        summary = read_summary(run)
        parts = name.split("-")
        epochs = [r for r in read_records(run) if r.get("kind") == "epoch"]
        losses = [(r["val_loss"], r["step"]) for r in epochs if _finite(r.get("val_loss"))]
        best = summary.get("best") or {}
        return {
            "round": int(parts[1]),
            "kind": parts[2] if len(parts) > 2 else "dense",
            "run": name,
            "weights_remaining": float(summary.get("weights_remaining", 1.0)),
            "status": summary.get("status"),
            "test_accuracy": (summary.get("test") or {}).get("test_accuracy"),
            "best_val_accuracy": best.get("value") if best.get("monitor") == "val_accuracy"
            else None,
            "best_step": best.get("step"),
            "early_stop_step": min(losses)[1] if losses else None,
            "steps": summary.get("steps"),
        }  # fmt: skip

    # -- tickets ----------------------------------------------------------------------------

    def _ticket_path(self, index: int, kind: str) -> Path:
        suffix = "" if kind == "ticket" else "-control"
        return self.folder / "tickets" / f"round-{index}{suffix}.pt"

    def _write_tickets(
        self, index: int, trained: Mapping[str, Tensor], masks: Masks | None
    ) -> Masks:
        """Prune the last trained ticket; write this round's ticket and control files."""
        ticket_path = self._ticket_path(index, "ticket")
        if ticket_path.is_file():
            return Ticket.load(ticket_path).masks
        self.model.load_state_dict(dict(trained))
        settings = self.settings
        masks = prune_round(
            self.model, settings.rate, masks=masks, scope=settings.scope,
            output_rate=settings.output_rate,
        )  # fmt: skip
        rewind = torch.load(self.folder / REWIND_WEIGHTS, map_location="cpu", weights_only=True)
        if settings.control:
            Ticket(masks, self._fresh_weights(index)).save(self._ticket_path(index, "control"))
        Ticket(masks, rewind).save(ticket_path)  # last: its presence means both are written
        return masks

    def _fresh_weights(self, index: int) -> dict[str, Tensor]:
        """The config's initialization drawn with another seed (the random-reinit control)."""
        from gradwise.train import prepare_run

        seed = self.config.seed + _CONTROL_SEED_STRIDE * index
        return dict(prepare_run(replace(self.config, seed=seed)).model.state_dict())

    def _finish(self, interrupted: bool) -> PruneResult:
        from gradwise.prune._report import write_prune_report

        settings = _settings_dict(self.settings)
        report = write_prune_report(self.folder, self.rows, settings, interrupted=interrupted)
        return PruneResult(self.folder, self.rows, interrupted, report)


@dataclass(frozen=True)
class _FitEnd:
    """What a round's run ended with: the WeightSnapshot's copies."""

    final_weights: dict[str, Tensor]
    final_step: int | None
    rewind_weights: dict[str, Tensor] | None


@final
class _WriteFitEnd(Callback):
    """Write the snapshot's copies to ``path`` when the fit ends (after ``snapshot``'s
    on_fit_end, so it must come after it among the callbacks).

    The Trainer writes the summary that says the run finished after on_fit_end: a prune
    killed after that, before it wrote final_weights.pt, finds the exact final weights
    here instead of in memory. An interrupted fit writes one too, which its resume replaces.
    """

    def __init__(self, snapshot: WeightSnapshot, path: Path) -> None:
        self.snapshot = snapshot
        self.path = path

    def on_fit_end(self, state: TrainState) -> None:
        snapshot = self.snapshot
        contents = {
            "format": _FIT_END_FORMAT,
            "final_weights": snapshot.final_weights,
            "final_step": snapshot.final_step,
            "rewind_weights": snapshot.weights,
        }
        replace_atomically(self.path, lambda file: torch.save(contents, file))


def _procedure(settings: Mapping[str, Any], key: str) -> Any:
    """``settings[key]`` as far as it defines the procedure: the config's runs_dir only says
    where the folder was (a moved prune folder is the same prune)."""
    value = settings.get(key)
    if key == "config" and isinstance(value, dict):
        return {name: entry for name, entry in value.items() if name != "runs_dir"}
    return value


def _name_the_ticket(run: RunFolder, ticket: Path) -> None:
    """Point the run's config at ``ticket`` where it names another path: the prune folder
    was moved (or copied) since the run started, and resume() reads the ticket the config
    names, which was the old folder's."""
    config = read_config(run)
    section = config.get("prune")
    path = str(ticket.resolve())
    if isinstance(section, dict) and section.get("ticket") != path:
        write_config(run, {**config, "prune": {**section, "ticket": path}})


def _read_fit_end(path: Path) -> _FitEnd | None:
    """The copies :class:`_WriteFitEnd` wrote to ``path``; None if there are none."""
    if not path.is_file():
        return None
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # written atomically, so only damaged by something else: train again
        return None
    if not isinstance(contents, dict) or contents.get("format") != _FIT_END_FORMAT:
        return None
    return _FitEnd(contents["final_weights"], contents["final_step"], contents["rewind_weights"])


def _save_atomically(weights: Mapping[str, Tensor] | None, path: Path) -> None:
    """``torch.save`` to ``path`` all or nothing: these files mark a step of a prune done."""
    replace_atomically(path, lambda file: torch.save(weights, file))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
