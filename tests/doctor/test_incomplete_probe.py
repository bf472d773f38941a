"""gradwise doctor never reports a probe that did not finish as healthy; --epochs is checked;
a fix that makes the probe worse says so."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import gradwise.doctor._doctor as doctor_module
import gradwise.train._trainer as trainer_module
from gradwise import Finding
from gradwise.cli import main
from gradwise.config import load_config
from gradwise.doctor import diagnose
from gradwise.doctor._report import fix_verdict, print_result
from gradwise.train import Callback, TrainState, make_trainer
from gradwise.train._interrupt import InterruptFlag

SMALL = [
    "data.dataset=spirals",
    "data.batch_size=16",
    "model.name=mlp",
    "model.width=32",
    "model.norm=none",
    "optimizer.lr=0.01",
]


class CtrlCAt(Callback):
    """Does what the first Ctrl-C does (sets the trainer's interrupt flag) after ``step``."""

    def __init__(self, step: int, flag: InterruptFlag) -> None:
        self.step = step
        self.flag = flag

    def on_step_end(self, state: TrainState) -> None:
        if state.step == self.step:
            self.flag.requested = True


@pytest.fixture
def ctrl_c_at_step_3(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe run is interrupted after its third step, as by one Ctrl-C."""
    flag = InterruptFlag()

    @contextmanager
    def graceful_interrupt(signals: Any = ()) -> Iterator[InterruptFlag]:
        yield flag

    def with_ctrl_c(prepared: Any, run: Any, **options: Any) -> Any:
        return make_trainer(prepared, run, callbacks=[CtrlCAt(3, flag)], **options)

    monkeypatch.setattr(trainer_module, "graceful_interrupt", graceful_interrupt)
    monkeypatch.setattr(doctor_module, "make_trainer", with_ctrl_c)


def test_an_interrupted_probe_is_reported_as_incomplete(
    tmp_path: Path, ctrl_c_at_step_3: None
) -> None:
    config = load_config(overrides=[*SMALL, f"runs_dir={tmp_path}"])
    result = diagnose(config, fix=True, checks=False, probe_epochs=2)
    assert result.probe_status == "interrupted"
    assert result.probe.steps == 3
    assert result.probe_steps > 3
    assert result.after is None  # a Ctrl-C does not go on to fix and probe again
    outcome = result.probe_outcome()
    assert outcome is not None
    assert f"interrupted after 3 of {result.probe_steps} steps" in outcome
    assert "incomplete" in outcome


def test_the_doctor_command_exits_130_after_ctrl_c_and_does_not_say_healthy(
    tmp_path: Path,
    ctrl_c_at_step_3: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    overrides = [argument for override in SMALL for argument in ("--set", override)]
    code = main(["doctor", *overrides, "--epochs", "2", "--no-checks"])
    out = capsys.readouterr().out
    assert code == 130, out
    assert "healthy" not in out
    assert "No findings" not in out
    assert "the probe run was interrupted after 3 of " in out
    assert "the findings are incomplete" in out


@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_doctor_epochs_below_one_is_a_usage_error_before_anything_runs(
    epochs: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["doctor", "--epochs", epochs])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.strip().splitlines() == [
        f"gradwise doctor: error: --epochs must be an int >= 1. Got {epochs} instead."
    ]
    assert not (tmp_path / "runs").exists()  # no half-written doctor-* folder


def test_diagnose_checks_probe_epochs_before_creating_the_run_folder(tmp_path: Path) -> None:
    config = load_config(overrides=[*SMALL, f"runs_dir={tmp_path / 'runs'}"])
    with pytest.raises(ValueError, match=r"'probe_epochs' parameter of diagnose must be an int"):
        diagnose(config, checks=False, probe_epochs=0)
    assert not (tmp_path / "runs").exists()


def test_a_diverging_probe_ends_the_diagnosis_with_its_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(
        overrides=[
            *SMALL,
            "optimizer={name: SGD, lr: 1.0e+8}",
            "schedule=null",
            f"runs_dir={tmp_path}",
        ]  # fmt: skip
    )
    result = diagnose(config, checks=False, probe_epochs=1)  # no TrainingDiverged
    assert result.probe_status == "diverged"
    assert Finding.NONFINITE_LOSS in {finding.kind for finding in result.findings}
    outcome = result.probe_outcome()
    assert outcome is not None
    assert "diverged after" in outcome
    assert result.run.report_path.is_file()


def test_a_fix_that_hurts_the_probe_says_so() -> None:
    verdict = fix_verdict(
        {"val_accuracy": 0.93, "val_loss": 0.21}, {"val_accuracy": 0.14, "val_loss": 2.3}
    )
    assert verdict is not None
    assert verdict.startswith("the fix made the probe worse: val_accuracy 0.93 -> 0.14;")
    assert "do not apply it" in verdict
    # Accuracy unchanged, the validation loss up a lot: worse too.
    verdict = fix_verdict(
        {"val_accuracy": 0.90, "val_loss": 0.30}, {"val_accuracy": 0.90, "val_loss": 0.60}
    )
    assert verdict is not None
    assert "val_loss 0.3 -> 0.6" in verdict
    # A non-finite validation loss after the fix is worse.
    verdict = fix_verdict({"val_loss": 0.30}, {"val_loss": float("nan")})
    assert verdict is not None
    assert "val_loss 0.3 -> nan" in verdict


def test_a_fix_that_helps_or_changes_little_gets_no_warning() -> None:
    assert fix_verdict({"val_accuracy": 0.5, "val_loss": 1.2}, {"val_accuracy": 0.9}) is None
    assert fix_verdict({"val_accuracy": 0.90}, {"val_accuracy": 0.89}) is None  # within noise
    # Accuracy clearly up: a higher validation loss alone does not make it worse.
    assert (
        fix_verdict({"val_accuracy": 0.5, "val_loss": 1.0}, {"val_accuracy": 0.8, "val_loss": 1.2})
        is None
    )


def test_the_before_and_after_output_says_when_the_fix_made_the_probe_worse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(overrides=[*SMALL, f"runs_dir={tmp_path}"])
    before = diagnose(config, checks=False, probe_epochs=1)
    before.probe.metrics.update(val_accuracy=0.93, val_loss=0.21)
    hurt = replace(before.probe, metrics={"val_accuracy": 0.14, "val_loss": 2.3})
    planted = replace(before, applied={"optimizer.lr": 10.0}, after=replace(before, probe=hurt))
    print_result(planted)
    out = capsys.readouterr().out
    assert "Before and after --fix" in out
    assert "the fix made the probe worse: val_accuracy 0.93 -> 0.14; do not apply it" in out


def test_a_fix_is_not_judged_by_an_after_probe_cut_short(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The probe after the fix was interrupted after 3 steps: its numbers are those of a
    # shorter run, so they neither condemn the fix nor stand unlabelled beside the others.
    config = load_config(overrides=[*SMALL, f"runs_dir={tmp_path}"])
    before = diagnose(config, checks=False, probe_epochs=1)
    before.probe.metrics.update(val_accuracy=0.93, val_loss=0.21)
    cut = replace(
        before.probe,
        status="interrupted",
        steps=3,
        metrics={"val_accuracy": 0.14, "val_loss": 2.3},
        summary={**before.probe.summary, "status": "interrupted", "steps": 3},
    )
    planted = replace(before, applied={"optimizer.lr": 1e-3}, after=replace(before, probe=cut))
    print_result(planted)
    out = capsys.readouterr().out
    assert "the probe run after the fix was interrupted after 3 of " in out
    assert "made the probe worse" not in out
    assert f"after (interrupted at 3 of {before.probe_steps} steps)" in out


def test_doctor_without_checks_does_not_say_the_checks_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    overrides = [argument for override in SMALL for argument in ("--set", override)]
    # 20 epochs of 14 steps: past the 250 steps the trend checks need (a shorter probe is
    # not called healthy at all: see the test below).
    code = main(["doctor", *overrides, "--epochs", "20", "--no-checks", "--fix"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "checks passed" not in out
    assert "No findings: the probe run looks healthy (the checks were skipped)." in out
    # --fix with nothing to apply says so instead of staying silent.
    assert "--fix: no finding carries a fix the doctor is confident in; nothing was changed" in out
    assert "Before and after" not in out


def test_a_probe_too_short_for_the_trend_checks_is_not_called_healthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1 epoch of spirals at batch 16 is a few dozen steps; the trend checks need 250.
    monkeypatch.chdir(tmp_path)
    overrides = [argument for override in SMALL for argument in ("--set", override)]
    code = main(["doctor", *overrides, "--epochs", "1", "--no-checks"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "looks healthy" not in out
    assert "No findings, but the probe ran " in out
    assert "fewer than the 250 the monitor's trend checks need" in out
    assert "(the checks were skipped)" in out
