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
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gradwise.config import ConfigError, RunConfig, config_to_dict
from gradwise.config._schema import PruneConfig
from gradwise.prune._callbacks import WeightSnapshot
from gradwise.prune._lottery import prune_round
from gradwise.prune._masks import Masks
from gradwise.prune._ticket import Ticket
from gradwise.runs import RunFolder, read_records, read_summary
from gradwise.runs._files import (
    remove_leftover_temporaries,
    replace_atomically,
    write_atomically,
)

FINAL_WEIGHTS = "final_weights.pt"
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
        differ = [key for key in wanted if key != "rounds" and existing.get(key) != wanted[key]]
        if differ:
            raise ConfigError(
                f"{folder} holds a prune with other settings ({', '.join(differ)} differ); "
                "use another name (--set name=...) or remove that folder"
            )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tickets").mkdir(exist_ok=True)
    # The prune command is the folder's one writer: what a killed write left is nobody's.
    remove_leftover_temporaries(folder, (_SETTINGS_FILE, REWIND_WEIGHTS, *_REPORT_FILES))
    remove_leftover_temporaries(folder / "tickets")
    write_atomically(path, json.dumps(wanted, indent=1).encode("utf-8"))


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
        from gradwise.train import resume, train

        run = RunFolder(self.folder / name)
        final_path = run.path / FINAL_WEIGHTS
        snapshot = snapshot if snapshot is not None else WeightSnapshot(0)
        if not final_path.is_file():
            if run.path.exists() and not run.last_checkpoint.is_file():
                shutil.rmtree(run.path)  # it never checkpointed: start it again
            if run.last_checkpoint.is_file():
                self.say(f"{name}: resuming from {run.last_checkpoint}")
                result = resume(run.path, progress=self.progress, callbacks=[snapshot])
            else:
                self.say(f"{name}: training")
                config = replace(
                    self.config,
                    runs_dir=str(self.folder),
                    name=name,
                    prune=None if ticket is None else PruneConfig(ticket=str(ticket.resolve())),
                )
                result = train(config, progress=self.progress, callbacks=[snapshot])
            if result.status == "interrupted":
                return None
            if name == "round-0":
                self._check_rewind(name, snapshot)
                _save_atomically(snapshot.weights, self.folder / REWIND_WEIGHTS)
            assert snapshot.final_weights is not None  # noqa: S101 - set by on_fit_end
            remove_leftover_temporaries(run.path, (FINAL_WEIGHTS,))  # from a killed re-run
            _save_atomically(snapshot.final_weights, final_path)  # last: marks the run finished
        else:
            self.say(f"{name}: done already")
        self.rows.append(self._row(name, run))
        weights: dict[str, Tensor] = torch.load(final_path, map_location="cpu", weights_only=True)
        return weights

    def _check_rewind(self, name: str, snapshot: WeightSnapshot) -> None:
        """ConfigError unless the dense run trained past --rewind-step (an early stop may
        end it sooner than its budget, which find_tickets checked)."""
        rewind_step = self.settings.rewind_step
        if snapshot.weights is None:
            raise ConfigError(f"{name} stopped before --rewind-step; nothing to rewind to")
        if snapshot.final_step is not None and snapshot.final_step <= rewind_step:
            raise ConfigError(
                f"{name} stopped at step {snapshot.final_step}, so --rewind-step {rewind_step} "
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


def _save_atomically(weights: Mapping[str, Tensor] | None, path: Path) -> None:
    """``torch.save`` to ``path`` all or nothing: these files mark a step of a prune done."""
    replace_atomically(path, lambda file: torch.save(weights, file))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
