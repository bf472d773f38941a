"""The doctor's sections of report.html: findings first, per-layer plots, histograms, checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from gradwise import Finding
from gradwise.diagnosis import Diagnosis
from gradwise.report import build_report
from gradwise.runs import MetricsLog, RunFolder, write_config, write_summary

IMAGE = re.compile(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="([^"]*)">')


def make_doctored_run(root: Path) -> RunFolder:
    """A small run folder with every file the doctor writes (used by the browser test too)."""
    run = RunFolder.create(root, "doctored", min_free_bytes=0)
    write_config(run, {"model": "mlp"})
    with MetricsLog(run.metrics_path) as log:
        for step in range(1, 41):
            log.append(
                {"kind": "step", "step": step, "loss": 2.3 / step, "accuracy": 0.5, "lr": 0.1}
            )
        log.append({"kind": "epoch", "step": 40, "epoch": 0, "train_loss": 0.1, "val_loss": 0.2})
    write_summary(run, {"name": "doctored", "status": "completed"})
    findings = [
        Diagnosis(
            Finding.DEAD_UNITS,
            "62% of units in 1 <never> fire",
            "lower the lr",
            {"layer": "1"},
            step=20,
        ),
        Diagnosis(
            Finding.NONFINITE_LOSS,
            "loss became nan at step 30",
            "lower the lr ~10x",
            severity="error",
            step=30,
        ),
    ]
    run.findings_path.write_text("".join(json.dumps(f.to_dict()) + "\n" for f in findings))
    with MetricsLog(run.probes_path) as log:
        for step in (10, 20, 30, 40):
            for layer, scale in (("0", 1.0), ("2", 0.1)):
                log.append({"step": step, "layer": layer, "update_ratio": 1e-3 * scale,
                            "grad_norm": scale, "dead_fraction": 0.1 * step / 40})  # fmt: skip
    rng = np.random.default_rng(0)
    with MetricsLog(run.histograms_path) as log:
        for step in (10, 20, 30, 40):
            for layer in ("0", "2"):
                for kind in ("activation", "gradient"):
                    counts, edges = np.histogram(rng.normal(size=500), bins=20)
                    log.append({"step": step, "layer": layer, "kind": kind, "edges": edges.tolist(),
                                "counts": counts.tolist(), "nonfinite": 0})  # fmt: skip
    checks = {
        "gradcheck": [
            {"tensor": "0.weight", "checked": 10, "max_rel_error": 1e-9, "verdict": "good"}
        ],
        "sanity": [{"check": "initial_loss", "passed": True, "message": "2.30 vs ln 10 = 2.30"}],
    }
    run.checks_path.write_text(json.dumps(checks))
    return run


def test_findings_come_first_and_every_section_is_drawn(tmp_path: Path) -> None:
    page = build_report(make_doctored_run(tmp_path)).read_text()
    headings = re.findall(r"<h2[^>]*>(.*?)</h2>", page)
    assert headings[0] == "Findings"
    assert headings.index("Findings") < headings.index("Summary")
    for title in ("Per-layer probes", "Histograms", "Gradient check", "Sanity checks"):
        assert title in headings, title
    # The error comes before the warning, and text is escaped.
    assert page.index("NONFINITE_LOSS") < page.index("DEAD_UNITS")
    assert "&lt;never&gt;" in page
    assert "<never>" not in page
    alts = IMAGE.findall(page)
    for alt in ("update / weight ratio", "gradient norm", "fraction of dead units",
                "activation histograms", "gradient histograms"):  # fmt: skip
        assert alt in alts, alt


def test_a_run_without_doctor_files_has_no_doctor_sections(tmp_path: Path) -> None:
    run = RunFolder.create(tmp_path, "plain", min_free_bytes=0)
    write_config(run, {"model": "mlp"})
    page = build_report(run).read_text()
    for title in ("Findings", "Per-layer probes", "Histograms", "Gradient check"):
        assert f">{title}</h2>" not in page


def test_an_empty_findings_file_says_the_run_looks_healthy(tmp_path: Path) -> None:
    run = RunFolder.create(tmp_path, "healthy", min_free_bytes=0)
    write_config(run, {"model": "mlp"})
    run.findings_path.write_text("")
    assert "looks healthy" in build_report(run).read_text()
