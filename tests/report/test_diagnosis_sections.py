"""The doctor's sections of report.html: findings first, per-layer plots, histograms, checks."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from gradwise import Finding, monitor
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
    write_summary(run, {"name": "healthy", "status": "completed"})
    run.findings_path.write_text("")
    assert "looks healthy" in build_report(run).read_text()


def png_size(page: str, alt: str) -> tuple[int, int]:
    """(width, height) in pixels of the page's image with this alt text (PNG's IHDR)."""
    data = re.search(rf'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="{alt}">', page)
    assert data is not None, alt
    png = base64.b64decode(data.group(1))
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def png_pixels(page: str, alt: str) -> np.ndarray:
    data = re.search(rf'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="{alt}">', page)
    assert data is not None, alt
    return np.asarray(imread(io.BytesIO(base64.b64decode(data.group(1))), format="png"))


def test_a_layer_with_no_finite_value_gets_a_note_not_a_crash(tmp_path: Path) -> None:
    # A diverged model: every activation of the layer is NaN, and the monitor's histogram
    # of it has no bins (it bins finite values only). `gradwise train` builds the report
    # in a `finally`, so a crash here replaced the divergence message with a traceback.
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    with torch.no_grad():
        model[0].weight.fill_(math.nan)
    data = (torch.randn(32, 4), torch.zeros(32).long())
    with monitor.watch(model, monitor_data=data) as watch:
        histograms = watch.histograms("activations")
    run = make_doctored_run(tmp_path)
    with MetricsLog(run.histograms_path) as log:
        for step, layers in histograms.items():
            for layer, histogram in layers.items():
                log.append({"step": step + 50, "layer": layer, "kind": "activation",
                            "edges": list(histogram.edges), "counts": list(histogram.counts),
                            "nonfinite": histogram.nan + histogram.posinf + histogram.neginf})  # fmt: skip
    assert histograms[0]["1"].edges == []  # the case at hand
    page = build_report(run).read_text()
    assert "activation histograms" in IMAGE.findall(page)


def test_layer_names_are_legend_entries_and_plain_text(tmp_path: Path) -> None:
    def page_with(root: Path, names: tuple[str, str]) -> str:
        run = make_doctored_run(root)
        run.probes_path.write_text("")
        with MetricsLog(run.probes_path) as log:
            for step in (10, 20, 30):
                for scale, layer in enumerate(names, start=1):
                    log.append({"step": step, "layer": layer, "grad_norm": scale * step})
        with MetricsLog(run.histograms_path) as log:
            log.append({"step": 50, "layer": names[0], "kind": "gradient",
                        "edges": [0.0, 1.0, 2.0], "counts": [3, 4], "nonfinite": 0})  # fmt: skip
        return build_report(run).read_text()

    # torch.compile names every layer "_orig_mod...": matplotlib drops labels that start
    # with "_" from a legend it gathers, so the legend was missing. The same names with
    # the "_" moved to the end give a legend of the same size in the same place: the
    # coloured pixels (the curves and the legend's line samples; text is black) match.
    def coloured(names: tuple[str, str], root: Path) -> np.ndarray:
        rgb = png_pixels(page_with(root, names), "gradient norm")[..., :3]
        return rgb.max(axis=-1) - rgb.min(axis=-1) > 0.2

    underscored = coloured(("_orig_mod.0", "_orig_mod.2"), tmp_path / "a")
    assert np.array_equal(underscored, coloured(("orig_mod.0_", "orig_mod.2_"), tmp_path / "b"))
    # A "$" in a name is not TeX: "$\frac$" made matplotlib raise while drawing.
    page = page_with(tmp_path / "c", ("cost $\\frac$", "x"))
    assert {"gradient norm", "gradient histograms"} <= set(IMAGE.findall(page))


def test_histograms_of_a_deep_model_fit_the_page(tmp_path: Path) -> None:
    run = make_doctored_run(tmp_path)
    rng = np.random.default_rng(0)
    run.histograms_path.write_text("")
    with MetricsLog(run.histograms_path) as log:
        for step in (10, 20, 30):
            for layer in range(12):
                counts, edges = np.histogram(rng.normal(size=200), bins=20)
                log.append({"step": step, "layer": str(layer), "kind": "activation",
                            "edges": edges.tolist(), "counts": counts.tolist(), "nonfinite": 0})  # fmt: skip
    page = build_report(run).read_text()
    # The page's column is 60rem (960 px): a wider image is shrunk to it. One column per
    # layer made this one 2,808 px wide, each histogram shrunk to a third.
    width, height = png_size(page, "activation histograms")
    assert width <= png_size(page, "gradient norm")[0] < 960
    assert height > 12 * 150  # a row of histograms per layer, each as tall as before


@pytest.mark.parametrize(
    ("file_name", "title", "damage"),
    [
        ("findings.jsonl", "Findings", '{"kind": "dead_units"}\nnot json\n'),
        ("probes.jsonl", "Per-layer probes", 'not json\n{"step": 1}\n'),
        ("histograms.jsonl", "Histograms", "\x00\x00\n{}\n"),
        ("checks.json", "Checks", '{"gradcheck": ['),
    ],
)
def test_a_damaged_doctor_file_is_reported_in_the_page(
    tmp_path: Path, file_name: str, title: str, damage: str
) -> None:
    run = make_doctored_run(tmp_path)
    (run.path / file_name).write_text(damage)
    page = build_report(run).read_text()
    assert f"<h2>{title}</h2>\n<pre>{file_name} could not be read: " in page
    assert "<h2>Summary</h2>" in page  # and the rest of the report is there


@pytest.mark.parametrize("status", ["running", "interrupted", "stopped", "failed", None])
def test_no_findings_in_a_run_cut_short_is_not_called_healthy(
    tmp_path: Path, status: str | None
) -> None:
    # The live doctor creates findings.jsonl when training starts: a run that fails at
    # step 3 has an empty one, and its trend findings need 250 steps at the least.
    run = RunFolder.create(tmp_path, "short", min_free_bytes=0)
    write_config(run, {"model": "mlp"})
    if status is not None:
        write_summary(run, {"name": "short", "status": status})
    run.findings_path.write_text("")
    page = build_report(run).read_text()
    assert "<h2>Findings</h2>" in page
    assert "looks healthy" not in page
    assert f"No findings so far (run status: {status or 'unknown'})" in page
