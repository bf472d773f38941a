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


def histograms_page(root: Path, layers: list[str], kinds: tuple[str, ...] = ("activation",)) -> str:
    """The report of a run with histograms of these layers at 3 steps."""
    run = make_doctored_run(root)
    rng = np.random.default_rng(0)
    run.histograms_path.write_text("")
    with MetricsLog(run.histograms_path) as log:
        for step in (10, 20, 30):
            for layer in layers:
                for kind in kinds:
                    counts, edges = np.histogram(rng.normal(size=200), bins=20)
                    log.append({"step": step, "layer": layer, "kind": kind, "edges": edges.tolist(),
                                "counts": counts.tolist(), "nonfinite": 0})  # fmt: skip
    return build_report(run).read_text()


NOTE = re.compile(
    r"<p>The (\w+) histograms show (\d+) of (\d+) layers, the first, the last and evenly "
    r"spaced ones: (.*?)\. histograms\.jsonl holds them all\.</p>"
)


def test_histograms_of_a_deeper_model_show_24_layers_and_say_which(tmp_path: Path) -> None:
    # A row per layer: a 50-layer net drew a 9,000 px image in 4 s (an Axes per cell).
    pages = {count: histograms_page(tmp_path / str(count), [str(i) for i in range(count)])
             for count in (12, 24, 30)}  # fmt: skip
    heights = {count: png_size(page, "activation histograms")[1] for count, page in pages.items()}
    assert heights[12] < heights[24] == heights[30]  # rows grow with layers up to 24
    assert NOTE.search(pages[24]) is None  # every layer shown: no note
    note = NOTE.search(pages[30])
    assert note is not None
    assert note.group(1, 2, 3) == ("activation", "24", "30")
    shown = [int(name) for name in note.group(4).split(", ")]
    assert len(shown) == 24
    assert (shown[0], shown[-1]) == (0, 29)  # the first and the last
    assert set(np.diff(shown).tolist()) <= {1, 2}  # evenly spaced, in order


def test_a_layer_name_with_dollars_and_tags_is_text_in_the_note(tmp_path: Path) -> None:
    names = [f"cost $\\frac$ <{i}>" for i in range(30)]
    page = histograms_page(tmp_path, names, kinds=("activation", "gradient"))
    assert {"activation histograms", "gradient histograms"} <= set(IMAGE.findall(page))
    notes = NOTE.findall(page)
    assert [note[0] for note in notes] == ["activation", "gradient"]
    shown = notes[0][3].split(", ")
    assert shown[0] == "cost $\\frac$ &lt;0&gt;"  # escaped in the page
    assert shown[-1] == "cost $\\frac$ &lt;29&gt;"


@pytest.mark.parametrize(
    ("edges", "counts"),
    [
        ([0.0, 1.0, 2.0], [math.nan, 3.0]),  # a count the JSON file holds as NaN
        ([-math.inf, 1.0, 2.0], [3.0, 4.0]),  # an edge at -inf
        ([0.0, 1.0, math.nan], [3.0, 4.0]),
    ],
)
def test_a_histogram_with_non_finite_bins_is_drawn_as_no_finite_value(
    tmp_path: Path, edges: list[float], counts: list[float]
) -> None:
    # Drawn the same as the monitor's record of a tensor with no finite value (no bins),
    # which says "no finite value"; a finite histogram in its place draws otherwise.
    def image(root: Path, edges: list[float], counts: list[float]) -> np.ndarray:
        run = make_doctored_run(root)
        with MetricsLog(run.histograms_path) as log:
            log.append({"step": 50, "layer": "0", "kind": "gradient", "edges": edges,
                        "counts": counts, "nonfinite": 7})  # fmt: skip
        return png_pixels(build_report(run).read_text(), "gradient histograms")

    no_bins = image(tmp_path / "empty", [], [])
    assert np.array_equal(image(tmp_path / "nonfinite", edges, counts), no_bins)
    finite = image(tmp_path / "finite", [0.0, 1.0, 2.0], [3.0, 4.0])
    assert finite.shape == no_bins.shape
    assert not np.array_equal(finite, no_bins)


def test_a_deep_model_s_per_layer_lines_have_distinct_colours() -> None:
    from matplotlib.colors import to_rgba

    from gradwise.report._diagnosis import _layer_colors

    # matplotlib's cycle has 10 colours: the 11th layer took the first one's.
    for count in (2, 10, 15, 50):
        colours = [to_rgba(colour) for colour in _layer_colors(count)]
        assert len(set(colours)) == count, count
    assert _layer_colors(3) == ["C0", "C1", "C2"]  # a shallow model's plots are as before


def test_a_deep_model_s_legend_is_below_its_plot(tmp_path: Path) -> None:
    def page_with(root: Path, count: int) -> str:
        run = make_doctored_run(root)
        run.probes_path.write_text("")
        with MetricsLog(run.probes_path) as log:
            for step in (10, 20, 30):
                for layer in range(count):
                    log.append({"step": step, "layer": f"block.{layer}", "grad_norm": layer + 1.0})
        return build_report(run).read_text()

    # 15 entries over the axes covered most of the lines; in columns under the axes the
    # image grows by the legend's height and the axes keep theirs.
    shallow = png_size(page_with(tmp_path / "a", 2), "gradient norm")
    deep = png_size(page_with(tmp_path / "b", 15), "gradient norm")
    deeper = png_size(page_with(tmp_path / "c", 40), "gradient norm")
    assert shallow[0] == deep[0] == deeper[0]
    assert shallow[1] < deep[1] < deeper[1]


@pytest.mark.parametrize(
    ("file_name", "title", "contents"),
    [
        ("findings.jsonl", "Findings", '{"kind": "dead_units", "severity": ["error"]}\n'),
        ("probes.jsonl", "Per-layer probes", '{"step": null, "layer": "0", "grad_norm": 1}\n'),
        ("histograms.jsonl", "Histograms", '{"kind": "activation", "step": null, "layer": "0"}\n'),
        ("checks.json", "Checks", "[1, 2]"),
        ("checks.json", "Checks", '{"sanity": [["not", "a", "row"]]}'),
        ("checks.json", "Checks", "[" * 100_000),
    ],
)
def test_a_doctor_file_of_another_shape_is_reported_in_the_page(
    tmp_path: Path, file_name: str, title: str, contents: str
) -> None:
    # Files that parse but hold other shapes than the doctor writes (a hand edit, another
    # version): a list where a mapping belongs, a null step, JSON nested past Python's
    # recursion limit. build_report raised TypeError, AttributeError or RecursionError,
    # and gradwise train builds the report however a run ends.
    run = make_doctored_run(tmp_path)
    (run.path / file_name).write_text(contents)
    page = build_report(run).read_text()
    assert f"<h2>{title}</h2>\n<pre>{file_name} could not be read: " in page
    assert "<h2>Summary</h2>" in page
    assert "<h2>Loss</h2>" in page


def test_a_sparsity_file_of_another_shape_leaves_the_section_out(tmp_path: Path) -> None:
    run = make_doctored_run(tmp_path)
    layer = {"name": {"not": "a name"}, "size": 4, "remaining": 2, "sparsity": 0.5}
    total = {"size": 4, "remaining": 2, "sparsity": 0.5}
    (run.path / "sparsity.json").write_text(json.dumps({"layers": [layer], "total": total}))
    page = build_report(run).read_text()
    assert "<h2>Sparsity</h2>" not in page
    assert "<h2>Summary</h2>" in page


def test_no_findings_in_a_run_too_short_for_the_trend_checks_is_not_called_healthy(
    tmp_path: Path,
) -> None:
    # A completed 6-step run (spirals, SGD at lr 1e6, train loss 2.7e18) raised nothing: the
    # trend findings need the monitor's warmup plus one window, 250 steps.
    run = RunFolder.create(tmp_path, "short", min_free_bytes=0)
    write_config(run, {"model": "mlp"})
    write_summary(run, {"name": "short", "status": "completed", "steps": 6})
    run.findings_path.write_text("")
    page = build_report(run).read_text()
    assert "looks healthy" not in page
    assert "No findings, but the run took 6 steps, fewer than the 250 the monitor" in page
    write_summary(run, {"name": "short", "status": "completed", "steps": 250})
    assert "No findings: the run looks healthy." in build_report(run).read_text()


def test_the_histograms_left_out_note_escapes_bidi_controls_in_layer_names(
    tmp_path: Path,
) -> None:
    # Module names (add_module takes any string) went into the note's <p> as they were: a
    # U+202E reversed the rest of the paragraph.
    layers = [f"block{i}\u202e" for i in range(30)]
    page = histograms_page(tmp_path, layers)
    note = NOTE.search(page)
    assert note is not None
    assert "\u202e" not in note.group(0)
    assert "block0\\u202e" in note.group(4)
