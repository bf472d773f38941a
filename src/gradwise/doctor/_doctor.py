"""``gradwise doctor``: checks, a monitored probe run, findings, and optionally the fixes."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from gradwise import preprocess
from gradwise.checks import GradcheckReport, SanityReport, gradcheck, sanity
from gradwise.config import (
    MonitorConfig,
    RunConfig,
    config_to_dict,
    parse_config,
)
from gradwise.diagnosis import SEVERITY_ORDER, Diagnosis
from gradwise.doctor._fixes import DEFERRED_BY_STRUCTURE, with_config_fix
from gradwise.doctor._inputs import check_input_scale
from gradwise.losses import get_loss
from gradwise.monitor import Thresholds
from gradwise.regularize import l2_penalty, penalized_parameters
from gradwise.runs import (
    MetricsLog,
    RunFolder,
    read_records,
    read_summary,
    replace_atomically,
    write_config,
)
from gradwise.runs._folder import check_runs_dir
from gradwise.train import FitResult, PreparedRun, TrainingDiverged, make_trainer, prepare_run

#: The probe run: this many epochs at least, unless the configured run is shorter...
PROBE_EPOCHS = 3
#: ...and at least this many optimizer steps past the monitor's warmup and trend window
#: (``Thresholds.warmup_steps + window_steps``), plus a probe interval (``monitor.every``):
#: the trend findings (a too-low learning rate, a plateau, slow progress) need a full
#: window; a 3-epoch probe of the default run is 87 steps.
TREND_STEPS = Thresholds().warmup_steps + Thresholds().window_steps
#: Samples of the training split the gradient check runs on.
GRADCHECK_SAMPLES = 16


@dataclass
class DoctorResult:
    """What ``gradwise doctor`` found, with the run folder holding its report.

    Attributes:
        config: the configuration that was examined.
        findings: every finding, most severe first (checks, inputs, the probe run).
        gradcheck, sanity: the check reports (None when checks were skipped).
        probe: the probe run's result (after a divergence: its numbers up to the last good
            step, with ``status`` "stopped"; :attr:`probe_status` says "diverged").
        run: the run folder with ``report.html``, ``findings.jsonl`` and ``checks.json``.
        applied: the config changes ``fix=True`` applied (empty without).
        after: the doctor's result on the fixed config (None without ``fix``).
        probe_steps: the optimizer steps the probe run was planned to take.
    """

    config: RunConfig
    findings: list[Diagnosis]
    gradcheck: GradcheckReport | None
    sanity: SanityReport | None
    probe: FitResult
    run: RunFolder
    applied: dict[str, Any] = field(default_factory=dict)
    after: DoctorResult | None = None
    probe_steps: int = 0

    @property
    def probe_status(self) -> str:
        """How the probe run ended: "completed", "interrupted", "stopped" or "diverged"."""
        return str(self.probe.summary.get("status", self.probe.status))

    @property
    def probe_incomplete(self) -> bool:
        """The probe run was cut short (Ctrl-C, a callback), so the findings may miss some."""
        return self.probe_status in ("interrupted", "stopped")

    def probe_outcome(self) -> str | None:
        """None when the probe ran to its end; else what happened, and what to do."""
        status, steps = self.probe_status, f"{self.probe.steps} of {self.probe_steps} steps"
        if status == "interrupted":
            return (
                f"the probe run was interrupted after {steps}, so the findings are "
                "incomplete; run gradwise doctor again and let the probe finish"
            )
        if status == "stopped":
            return (
                f"the probe run stopped early after {steps}, so the findings are "
                "incomplete; remove what stopped it and run gradwise doctor again"
            )
        if status == "diverged" and self.findings:
            return (
                f"the probe run diverged after {steps}, so later problems may be missing; "
                "apply the fixes above (--fix) and run gradwise doctor again"
            )
        if status == "diverged":
            return f"the probe run diverged after {steps}: {self.probe.summary.get('message')}"
        return None


def diagnose(
    config: RunConfig,
    *,
    fix: bool = False,
    checks: bool = True,
    probe_epochs: int | None = None,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
) -> DoctorResult:
    """Examine a configured run: gradient check, sanity checks, a monitored probe run.

    The probe trains the configured model for ``min(epochs, probe_epochs)`` epochs with the
    monitor on (the config's ``monitor`` section, or its defaults). By default
    (``probe_epochs=None``) that is :data:`PROBE_EPOCHS` epochs, or more where they are
    fewer than ``TREND_STEPS + monitor.every`` optimizer steps (300 with the defaults; the
    monitor's trend findings need that many), never more than the configured run; an int
    is taken as it is. The probe runs in a run folder named ``doctor-...`` whose
    ``report.html`` gains the findings and the check tables. With ``fix=True`` the fixes
    the doctor is confident in (each finding's ``fix``: a measured learning-rate change,
    He initialization, input standardization, ...) are applied to the config and the
    probe runs again; ``result.after`` holds that second diagnosis. A probe cut short
    (Ctrl-C) is not fixed and run again: ``result.probe_outcome()`` says so. A probe whose
    loss became non-finite ends the diagnosis (``probe_status`` "diverged", usually with a
    NONFINITE_LOSS finding) instead of raising.
    """
    # The probe's folder is made after the checks (a Ctrl-C during them leaves none behind):
    # whether it can be made is found out before them.
    check_runs_dir(config.runs_dir)
    probe_config, prepared = _prepared_probe(config, probe_epochs)
    prepared.warn_preprocessing()
    findings: list[Diagnosis] = []
    scale = check_input_scale(prepared.data.train.inputs)
    if scale is not None:
        findings.append(scale)
    stability = _stability_check(probe_config, prepared)
    if stability is not None:
        findings.append(stability)
    grad_report = sanity_report = None
    if checks:
        grad_report, sanity_report = _run_checks(prepared.model, probe_config, prepared)
        findings += grad_report.findings() + sanity_report.findings()
    folder = RunFolder.create(probe_config.runs_dir, probe_config.name, prefix=_prefix(config))
    probe_config = replace(probe_config, name=folder.path.name)
    prepared.config = probe_config
    write_config(folder, config_to_dict(probe_config))
    if prepared.preprocessing is not None:  # the run folder's layout, as gradwise train's
        preprocess.save(prepared.preprocessing, folder.preprocess_path)
    _write_findings(folder, findings)
    _write_checks(folder, grad_report, sanity_report)
    trainer = make_trainer(prepared, folder, progress=progress)
    try:
        probe = trainer.fit()
    except TrainingDiverged:
        probe = _diverged_probe(folder)
    finally:
        from gradwise.report import build_report

        build_report(folder)
    findings = _unique(
        findings + [Diagnosis.from_dict(r) for r in read_records(folder.findings_path)]
    )
    findings = [with_config_fix(finding, config) for finding in findings]
    result = DoctorResult(
        config, findings, grad_report, sanity_report, probe, folder,
        probe_steps=prepared.total_steps,
    )  # fmt: skip
    if fix and not result.probe_incomplete:
        applied = fixes_from(findings)
        if applied:
            if say is not None:
                say(f"applying: {', '.join(f'{k}={v}' for k, v in applied.items())}")
            result.applied = applied
            result.after = diagnose(
                with_changes(config, applied), checks=checks, probe_epochs=probe_epochs,
                progress=progress,
            )  # fmt: skip
    return result


def fixes_from(findings: list[Diagnosis]) -> dict[str, Any]:
    """The config changes of the findings that carry one; the most severe wins a key,
    except the learning rate, where the lowest wins.

    Two rules on top: a learning-rate change (``DEFERRED_BY_STRUCTURE``: too high, too
    low, oscillation, a non-finite loss) waits while the model, its initialization or the
    data are being changed (its factor was measured on the broken setup, e.g. a net whose
    gradients vanish or inputs 1000x too large; the fixed config's probe measures it
    again, and ``result.after`` reports it); the initializer comes from the fix that
    changes the activation, if one does; and changing ``init.weights`` resets
    ``init.options`` unless a fix sets them (the old scheme's arguments, such as ``std``,
    do not fit the new one).
    """
    ordered = sorted(findings, key=lambda f: SEVERITY_ORDER.get(f.severity, 3))
    structural = any(
        key.split(".")[0] in ("model", "init", "data")
        for finding in ordered
        if finding.kind not in DEFERRED_BY_STRUCTURE
        for key in finding.fix
    )
    applied: dict[str, Any] = {}
    for finding in ordered:
        if structural and finding.kind in DEFERRED_BY_STRUCTURE:
            continue
        for key, value in finding.fix.items():
            applied.setdefault(key, value)
    # Of several learning rates, the lowest: a non-finite loss's generic tenfold cut (an
    # error, so the most severe) must not undo a blow-up's measured factor (10^7 at lr 1e6).
    rates = [
        finding.fix["optimizer.lr"]
        for finding in ordered
        if "optimizer.lr" in finding.fix
        and not (structural and finding.kind in DEFERRED_BY_STRUCTURE)
        and isinstance(finding.fix["optimizer.lr"], int | float)
    ]
    if rates:
        applied["optimizer.lr"] = min(rates)
    # The initializer goes with the activation it was chosen for: a fix that changes the
    # activation brings its own (He with a new ReLU), whichever finding came first with
    # an initializer for the old activation (Xavier for a tanh net's initial loss).
    for finding in ordered:
        if finding.fix.get("model.activation", object()) == applied.get("model.activation"):
            applied.update((k, v) for k, v in finding.fix.items() if k.startswith("init."))
            break
    if "init.weights" in applied:
        applied.setdefault("init.options", {})
    return applied


def with_changes(config: RunConfig, changes: Mapping[str, Any]) -> RunConfig:
    """``config`` with dotted-path changes (``{"optimizer.lr": 3e-4}``) applied."""
    content = config_to_dict(config)
    for path, value in changes.items():
        node = content
        *parents, last = path.split(".")
        for key in parents:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[last] = copy.deepcopy(value)
    return parse_config(content)


# -- the pieces ----------------------------------------------------------------------------


def _prepared_probe(config: RunConfig, probe_epochs: int | None) -> tuple[RunConfig, PreparedRun]:
    """The probe's config and its prepared run (see :func:`diagnose` for its length)."""
    if probe_epochs is not None and (
        isinstance(probe_epochs, bool) or not isinstance(probe_epochs, int) or probe_epochs < 1
    ):
        raise ValueError(
            "The 'probe_epochs' parameter of diagnose must be an int >= 1 or None (as long "
            f"as the monitor's trend window needs). Got {probe_epochs!r} instead."
        )
    probe_config = _probe_config(config, probe_epochs or PROBE_EPOCHS)
    prepared = prepare_run(probe_config)
    resized = _resized_probe(config, probe_config, prepared.total_steps, probe_epochs is None)
    if resized is not None:
        probe_config, prepared = resized, prepare_run(resized)
    return probe_config, prepared


def _resized_probe(
    config: RunConfig, probe_config: RunConfig, probe_steps: int, trend_window: bool
) -> RunConfig | None:
    """The probe with a new length (``epochs``, or ``steps`` for a run configured in
    steps), or None to keep it: with ``trend_window``, long enough for ``TREND_STEPS``
    plus a monitoring interval; never longer than the configured run."""
    epochs = probe_config.epochs
    assert epochs is not None  # noqa: S101 - _probe_config sets it
    assert probe_config.monitor is not None  # noqa: S101 - and the monitor
    per_epoch = max(-(-probe_steps // epochs), 1)
    wanted_steps = probe_steps
    if trend_window:
        wanted_steps = max(wanted_steps, TREND_STEPS + probe_config.monitor.every)
    if config.steps is not None and wanted_steps >= config.steps:
        # A run of `steps` optimizer steps: the probe is that run, to the step.
        return replace(probe_config, steps=config.steps) if config.steps != probe_steps else None
    wanted = -(-wanted_steps // per_epoch)
    if config.epochs is not None:
        wanted = min(wanted, config.epochs)
    return replace(probe_config, epochs=wanted) if wanted != epochs else None


def _probe_config(config: RunConfig, probe_epochs: int) -> RunConfig:
    epochs = min(config.epochs or probe_epochs, probe_epochs)
    return replace(
        config,
        epochs=epochs,
        steps=None,
        name=None,
        monitor=config.monitor or MonitorConfig(),
        regularization=replace(config.regularization, early_stopping=None),
    )


def _diverged_probe(folder: RunFolder) -> FitResult:
    """The probe's result from the summary the trainer wrote when the loss became non-finite."""
    summary = read_summary(folder)
    return FitResult(
        status="stopped",
        epochs=int(summary.get("epochs", 0)),
        steps=int(summary.get("steps", 0)),
        metrics=dict(summary.get("final") or {}),
        best=dict(summary.get("best") or {}),
        test={},
        run=folder,
        summary=summary,
    )


def _prefix(config: RunConfig) -> str:
    name = Path(config.data.dataset.split(":")[-1]).stem
    return f"doctor-{name}-{Path(config.model.name.split(':')[-1]).stem}"


def _run_checks(
    model: Any, config: RunConfig, prepared: Any
) -> tuple[GradcheckReport, SanityReport]:
    # Some splits are ordered by class: a seeded random subset, the monitor's first samples.
    sample = prepared.data.train.sample(GRADCHECK_SAMPLES, config.seed)
    inputs, targets = sample.inputs, sample.targets
    penalty = None
    strength = config.regularization.l2
    if strength > 0:
        penalty = lambda m: l2_penalty(penalized_parameters(m), strength)  # noqa: E731
    grad_report = gradcheck(model, get_loss(config.loss), inputs, targets, penalty=penalty)
    sanity_report = sanity(model, config.loss, prepared.data, seed=config.seed)
    return grad_report, sanity_report


#: Samples of the training split the top Hessian eigenvalue is measured on.
CURVATURE_SAMPLES = 256


# Layers that make the weights before them scale-invariant.
NORMALIZATION_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def _stability_check(config: RunConfig, prepared: Any) -> Diagnosis | None:
    """For SGD: is the learning rate above the stability bound 2(1 + momentum) / lambda_max?

    The bound is exact for (heavy-ball) gradient descent on the local quadratic model;
    adaptive optimizers rescale each coordinate, so they are not judged by it. Nor are
    networks with normalization layers: weights followed by batch, layer or group norm
    are scale-invariant, and as a large step grows them their effective learning rate
    shrinks (lr / ||w||^2), so the curvature at initialization bounds nothing (SGD at lr
    3.0 trains a BatchNorm MLP on digits to 93% validation accuracy, 1,700x over the
    bound; the bound's 0.00088 left it at 14% after the doctor's probe).
    """
    spec = config.optimizer
    if spec.get("name") != "SGD" or "lr" not in spec:
        return None
    if any(isinstance(module, NORMALIZATION_LAYERS) for module in prepared.model.modules()):
        return None
    from gradwise.curvature import check_learning_rate, eigenvalues

    # mnist5k's first 256 samples are all zeros: lambda_max ~30 there, ~5.6 on random ones.
    sample = prepared.data.train.sample(CURVATURE_SAMPLES, config.seed)
    batch = (sample.inputs, sample.targets)
    lambda_max = float(eigenvalues(prepared.model, get_loss(config.loss), batch, k=1)[0])
    return check_learning_rate(
        float(spec["lr"]),
        lambda_max,
        float(spec.get("momentum", 0.0)),
        nesterov=bool(spec.get("nesterov", False)),
        dampening=float(spec.get("dampening", 0.0)),
    )


def _write_findings(folder: RunFolder, findings: list[Diagnosis]) -> None:
    with MetricsLog(folder.findings_path) as log:
        for finding in findings:
            log.append(finding.to_dict())


def _write_checks(
    folder: RunFolder, grad_report: GradcheckReport | None, sanity_report: SanityReport | None
) -> None:
    content: dict[str, Any] = {}
    if grad_report is not None:
        content["gradcheck"] = grad_report.to_table()
    if sanity_report is not None:
        table = sanity_report.to_table()
        content["sanity"] = [
            dict(zip(table.columns, row, strict=True)) for row in table.to_dict()["rows"]
        ]
    text = json.dumps(content, allow_nan=True, default=str)
    replace_atomically(folder.checks_path, lambda file: file.write(text.encode("utf-8")))


def _unique(findings: list[Diagnosis]) -> list[Diagnosis]:
    seen: dict[tuple[str, str], Diagnosis] = {}
    for finding in findings:
        seen.setdefault((finding.kind.value, finding.summary), finding)
    return sorted(seen.values(), key=lambda f: SEVERITY_ORDER.get(f.severity, 3))
