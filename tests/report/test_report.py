"""build_report: one self-contained report.html for complete and partial runs."""

import base64
import math
import os
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gradwise.report import Section, build_report, render_report, summary_table
from gradwise.runs import (
    MetricsLog,
    RunFolder,
    RunFolderError,
    write_config,
    write_summary,
)

IMAGE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">')


class PageParser(HTMLParser):
    """Section headings, table cells and every attribute value of a page."""

    def __init__(self):
        super().__init__()
        self.headings, self.cells, self.attributes, self._tag = [], [], [], None

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        self.attributes.extend(value or "" for _, value in attrs)
        if tag == "tr":
            self.cells.append([])
        if tag == "td":
            self.cells[-1].append("")

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        if self._tag == "h2":
            self.headings.append(data)
        elif self._tag == "td":
            self.cells[-1][-1] += data


def parse(page):
    parser = PageParser()
    parser.feed(page)
    parser.close()
    return parser


def make_run(tmp_path, name="demo", *, steps=30, steps_per_epoch=10, validation=True,
             accuracy=True, test=True, summary=True, loss=lambda s: 2.3 / s):  # fmt: skip
    run = RunFolder.create(tmp_path, name, min_free_bytes=0)
    write_config(run, {"model": {"name": "mlp", "hidden": [64, 64]}, "epochs": 3})
    with MetricsLog(run.metrics_path) as log:
        for step in range(1, steps + 1):
            record = {"kind": "step", "step": step, "epoch": (step - 1) // steps_per_epoch,
                      "loss": loss(step), "accuracy": 0.5 if accuracy else None, "lr": 0.1,
                      "time": step * 0.01}  # fmt: skip
            log.append(record)
            if step % steps_per_epoch == 0:
                log.append(epoch_record(step, step // steps_per_epoch, validation, accuracy))
        if test:
            log.append({"kind": "test", "step": steps, "test_loss": 0.3,
                        **({"test_accuracy": 0.9} if accuracy else {})})  # fmt: skip
    if summary:
        write_summary(run, {
            "name": name, "status": "completed", "dataset": "mnist1d", "model": "mlp",
            "optimizer": "adam", "steps": steps, "epochs": steps // steps_per_epoch,
            "duration_s": 12.0, "started": 1795334400.0,
            "best": {"monitor": "val_loss", "mode": "min", "value": 0.4, "epoch": 2, "step": 30},
            "final": {"train_loss": 0.3}, "test": {"test_loss": 0.3},
        })  # fmt: skip
    return run


def epoch_record(step, epoch, validation, accuracy):
    record = {"kind": "epoch", "step": step, "epoch": epoch, "train_loss": 1.0 / epoch,
              "lr": 0.1, "time": step * 0.01}  # fmt: skip
    if accuracy:
        record["train_accuracy"] = 0.5 + 0.1 * epoch
    if validation:
        record["val_loss"] = 1.1 / epoch
        if accuracy:
            record["val_accuracy"] = 0.45 + 0.1 * epoch
    return record


def images(page):
    found = IMAGE.findall(page)
    for data, _ in found:
        assert base64.b64decode(data, validate=True).startswith(b"\x89PNG\r\n\x1a\n")
    return [alt for _, alt in found]


def assert_self_contained(page):
    assert page.startswith("<!DOCTYPE html>")
    for needle in ("http://", "https://", "<script", "<link", "@import", "url(", "<iframe"):
        assert needle not in page.lower(), needle
    attributes = parse(page).attributes
    assert not [a for a in attributes if a.startswith("//") or "://" in a]


def test_complete_run(tmp_path):
    run = make_run(tmp_path)
    path = build_report(run)
    assert path == run.report_path
    page = path.read_text(encoding="utf-8")
    assert_self_contained(page)
    parsed = parse(page)
    assert parsed.headings == ["Summary", "Loss", "Accuracy", "Learning rate", "Config"]
    assert images(page) == [
        "Loss against optimizer steps",
        "Accuracy against optimizer steps",
        "Learning rate against optimizer steps",
    ]
    # The summary in the page is the one the terminal prints: the same rendering.
    summary_rows = summary_table(
        {"name": "demo", "status": "completed", "dataset": "mnist1d", "model": "mlp",
         "optimizer": "adam", "steps": 30, "epochs": 3, "duration_s": 12.0,
         "started": 1795334400.0,
         "best": {"monitor": "val_loss", "mode": "min", "value": 0.4, "epoch": 2, "step": 30},
         "final": {"train_loss": 0.3}, "test": {"test_loss": 0.3}}
    ).to_dict()["rows"]  # fmt: skip
    assert [row for row in parsed.cells if row] == summary_rows
    assert '<span class="status status-completed">completed</span>' in page
    assert "hidden:\n  - 64\n  - 64" in page  # the config, as YAML
    assert sorted(p.name for p in run.path.iterdir()) == [
        "checkpoints", "config.yaml", "metrics.jsonl", "report.html", "summary.json"
    ]  # fmt: skip


def test_a_path_works_as_well_as_a_run_folder(tmp_path):
    run = make_run(tmp_path)
    assert build_report(str(run.path)) == run.report_path
    assert build_report(run.path) == run.report_path


def test_run_that_died_after_three_steps(tmp_path):
    run = make_run(tmp_path, steps=3, steps_per_epoch=100, accuracy=False, test=False,
                   summary=False)  # fmt: skip
    page = build_report(run).read_text()
    assert_self_contained(page)
    assert parse(page).headings == ["Summary", "Loss", "Learning rate", "Config"]
    assert '<span class="status status-unknown">unknown</span>' in page


def test_run_without_validation(tmp_path):
    run = make_run(tmp_path, validation=False)
    page = build_report(run).read_text()
    assert parse(page).headings == ["Summary", "Loss", "Accuracy", "Learning rate", "Config"]


def test_regression_run_without_accuracy(tmp_path):
    run = make_run(tmp_path, accuracy=False)
    page = build_report(run).read_text()
    assert parse(page).headings == ["Summary", "Loss", "Learning rate", "Config"]


def test_run_without_metrics(tmp_path):
    run = RunFolder.create(tmp_path, "empty", min_free_bytes=0)
    write_config(run, {"model": "mlp"})
    page = build_report(run).read_text()
    assert parse(page).headings == ["Summary", "Metrics", "Config"]
    assert "No metrics recorded yet." in page
    assert "data:image/png" not in page


def test_diverged_run_with_non_finite_losses(tmp_path):
    run = make_run(tmp_path, steps=40, loss=lambda s: math.inf if s == 25 else
                   (math.nan if s > 25 else 10.0**s))  # fmt: skip
    page = build_report(run).read_text()
    assert "Loss against optimizer steps" in images(page)


def test_run_that_crashed_mid_line(tmp_path):
    run = make_run(tmp_path)
    with open(run.metrics_path, "ab") as file:
        file.write(b'{"kind": "step", "st')
    page = build_report(run).read_text()
    assert "Loss against optimizer steps" in images(page)


def test_damaged_metrics_are_reported_not_raised(tmp_path):
    run = make_run(tmp_path)
    run.metrics_path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    page = build_report(run).read_text()
    assert "metrics.jsonl could not be read: Line 2 of" in page


def test_every_text_is_escaped(tmp_path):
    name = "x<script>alert(1)</script>"  # no '/' may appear in a folder name; in text it can
    run = make_run(tmp_path, "x<script>y", summary=False)
    write_summary(run, {"name": name, "status": "completed", "dataset": "<b>data</b>",
                        "message": "<img src=x onerror=alert(1)>"})  # fmt: skip
    write_config(run, "note: <script>alert(2)</script>\n")
    page = build_report(run).read_text()
    assert "<script" not in page.lower()
    assert "<b>" not in page
    assert "onerror" not in parse(page).attributes
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "note: &lt;script&gt;alert(2)&lt;/script&gt;" in page


def test_unknown_status_gets_no_styling_hook(tmp_path):
    run = make_run(tmp_path, summary=False)
    run.summary_path.write_text('{"status": "x\\" onclick=\\"alert(1)"}')
    page = build_report(run).read_text()
    assert 'class="status status-unknown"' in page
    assert "onclick" not in parse(page).attributes


def test_extra_sections_come_after_the_plots(tmp_path):
    run = make_run(tmp_path)
    diagnosis = Section("Diagnosis", "<p>LEARNING_RATE_TOO_HIGH</p>")
    notes = Section.from_text("Notes", "a < b")
    page = build_report(run, extra_sections=[diagnosis, notes]).read_text()
    assert parse(page).headings == [
        "Summary", "Loss", "Accuracy", "Learning rate", "Diagnosis", "Notes", "Config"
    ]  # fmt: skip
    assert "<p>LEARNING_RATE_TOO_HIGH</p>" in page
    assert "<pre>a &lt; b</pre>" in page
    assert render_report(run, [diagnosis]).count("<h2>Diagnosis</h2>") == 1


def test_png_sections(tmp_path):
    section = Section.from_png("Histogram", b"\x89PNG\r\n\x1a\nrest", alt='a "quoted" alt')
    assert section.html == (
        '<img src="data:image/png;base64,iVBORw0KGgpyZXN0" alt="a &quot;quoted&quot; alt">'
    )


def test_missing_folders_and_bad_arguments_fail_clearly(tmp_path):
    with pytest.raises(RunFolderError, match=r"^No run folder at .*missing"):
        build_report(tmp_path / "missing")
    with pytest.raises(RunFolderError, match=r"is not a run folder: it has no config\.yaml"):
        build_report(tmp_path)
    run = make_run(tmp_path)
    with pytest.raises(ValueError, match=r"'extra_sections' parameter of build_report must be"):
        build_report(run, extra_sections=["<p>x</p>"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"The 'html' parameter of Section must be a str"):
        Section("t", None)  # type: ignore[arg-type]


def test_report_of_a_long_run_is_fast(tmp_path):
    build_report(make_run(tmp_path, "warm", steps=3))  # import matplotlib outside the clock
    run = make_run(tmp_path, "long", steps=5000, steps_per_epoch=100,
                   loss=lambda s: 2.3 * math.exp(-s / 1000) + 0.01 * (s % 7))  # fmt: skip
    start = time.perf_counter()
    page = build_report(run).read_text()
    elapsed = time.perf_counter() - start
    assert len(images(page)) == 3
    assert elapsed < 3.0, f"{elapsed:.2f} s for 5,000 steps"
    assert len(page) < 400_000  # the step series is drawn as a band, not 5,000 segments


def test_a_folder_name_that_is_not_utf8_gets_a_report(tmp_path):
    # The byte 0xff reaches Python as the lone surrogate \udcff (in the run's name, the
    # summary the trainer writes from it, the footer's path), which strict UTF-8 refused
    # to encode: build_report raised UnicodeEncodeError, and gradwise train (which builds
    # the report however a run ends) with it.
    name = os.fsdecode(b"run-\xff")
    run = make_run(tmp_path, name)
    page = build_report(run).read_bytes().decode("utf-8")  # strict: valid UTF-8
    assert "<h1>run-\\udcff <span" in page
    assert parse(page).headings[:2] == ["Summary", "Loss"]


def test_a_summary_with_an_int_beyond_the_float_range_gets_a_report(tmp_path):
    # gradwise runs lists such a hand-edited summary (tests/runs/test_listing.py); its
    # report raised OverflowError in the summary table.
    run = make_run(tmp_path, summary=False)
    write_summary(run, {"name": "demo", "status": "failed", "duration_s": 10**400})
    page = build_report(run).read_text()
    assert ["duration", "-"] in parse(page).cells


def test_a_record_with_a_step_beyond_the_float_range_is_left_out_of_the_plots(tmp_path):
    run = make_run(tmp_path)
    with MetricsLog(run.metrics_path) as log:
        log.append({"kind": "step", "step": 10**400, "loss": 0.1, "lr": 0.1})
    page = build_report(run).read_text()
    assert images(page) == ["Loss against optimizer steps", "Accuracy against optimizer steps",
                            "Learning rate against optimizer steps"]  # fmt: skip


def test_the_log_scale_rule_is_the_one_the_docs_state(tmp_path, monkeypatch):
    # docs/runs.md said "when the positive values span more than two decades", so a
    # warmup from lr 0 (positive values over four decades) should have been log; the
    # plots keep any series with a 0 linear, as a log axis cannot show the 0.
    from matplotlib.figure import Figure

    docs = " ".join((Path(__file__).parents[2] / "docs" / "runs.md").read_text().split())
    assert (
        "The y axis turns logarithmic when every value is above 0 and the largest is more "
        "than 100 times the smallest (two decades); a series with a 0 or a negative value "
        "stays linear"
    ) in docs
    scales = {}
    savefig = Figure.savefig

    def recording_savefig(self, *args, **kwargs):
        scales.update({axes.get_ylabel(): axes.get_yscale() for axes in self.axes})
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    cases = [  # (loss, lr) at steps 1..30, and the y scales they get
        (lambda s: 10.0 / s**2, lambda s: 0.1 * (s - 1) / 29, {"loss": "log", "learning rate": "linear"}),
        (lambda s: 2.0 / s, lambda s: 0.1 * 0.7**s, {"loss": "linear", "learning rate": "log"}),
        (lambda s: 10.0 / s**2 if s < 30 else 0.0, lambda s: 0.1, {"loss": "linear"}),
    ]  # fmt: skip
    for index, (loss, lr, expected) in enumerate(cases):
        run = RunFolder.create(tmp_path, f"run-{index}", min_free_bytes=0)
        write_config(run, {"model": "mlp"})
        with MetricsLog(run.metrics_path) as log:
            for step in range(1, 31):
                log.append({"kind": "step", "step": step, "loss": loss(step), "lr": lr(step)})
        scales.clear()
        build_report(run)
        assert {label: scales[label] for label in expected} == expected, index


def test_landscape_plots_in_the_run_folder_are_embedded_after_the_metric_plots(tmp_path):
    # gradwise landscape writes landscape-*.png into the run folder; the report left them out.
    import numpy as np

    from gradwise.landscape import Landscape1D, Landscape2D

    run = make_run(tmp_path)
    axis = np.linspace(-1.0, 1.0, 5)
    line = Landscape1D(axis, axis**2).plot_png()
    contour = Landscape2D(axis, axis, axis[:, None] ** 2 + axis[None, :] ** 2).plot_contour_png()
    (run.path / "landscape-1d.png").write_bytes(line)
    (run.path / "landscape-2d-contour.png").write_bytes(contour)
    page = build_report(run).read_text()
    assert_self_contained(page)
    assert parse(page).headings == [
        "Summary", "Loss", "Accuracy", "Learning rate", "Loss landscape", "Config"
    ]  # fmt: skip
    section = page[page.index("<h2>Loss landscape</h2>") : page.index("<h2>Config</h2>")]
    embedded = [base64.b64decode(data) for data, _ in IMAGE.findall(section)]
    assert embedded == [line, contour]  # in the order the command writes them
    assert "(landscape-1d.png)" in section
    assert "(landscape-2d-contour.png)" in section
    # A file there that is no PNG is named, not embedded as a broken image.
    (run.path / "landscape-2d-surface.png").write_text("not a picture")
    section = render_report(run).split("<h2>Loss landscape</h2>")[1].split("</section>")[0]
    assert len(IMAGE.findall(section)) == 2
    assert "landscape-2d-surface.png is not a PNG image; left out" in section


@pytest.mark.parametrize("char", ["\u202e", "\u2067"])
def test_bidi_controls_outside_table_cells_are_escaped(tmp_path, char):
    # A table cell confines a bidi override to itself; in the <title>, the heading and a
    # list item it reordered the rest of the line: "evil\u202egnp.exe - gradwise run"
    # read "evilnur esidarg - exe.png". They get the escapes the terminal's tables use.
    import json

    name = f"evil{char}gnp.exe"
    escape = f"\\u{ord(char):04x}"
    run = make_run(tmp_path, name, summary=False)
    write_summary(run, {"name": name, "status": "completed", "dataset": f"d{char}x",
                        "preprocessing_warnings": [f"feature{char}7 is constant"]})  # fmt: skip
    finding = {"kind": f"dead{char}units", "severity": "warning", "step": 3,
               "summary": f"layer{char}1 is dead", "prescription": f"lower{char}the lr"}  # fmt: skip
    run.findings_path.write_text(json.dumps(finding) + "\n")
    page = build_report(run).read_text()
    title = page.split("<title>")[1].split("</title>")[0]
    assert title == f"evil{escape}gnp.exe - gradwise run"
    assert f"<h1>evil{escape}gnp.exe <span" in page
    assert f"<li>feature{escape}7 is constant</li>" in page
    assert f"<b>DEAD{escape}UNITS</b> (step 3): layer{escape}1 is dead" in page
    assert f"<i>Fix:</i> lower{escape}the lr" in page
    assert f"d{escape}x" in page  # the subtitle
    # Only the table's cells and caption keep the character (the Summary's run name).
    outside = re.sub(r"<(td|caption)>[^<]*</\1>", "", page)
    assert char not in outside
    assert f"<caption>Run {name}</caption>" in page


@pytest.mark.parametrize("char", ["\u202e", "\u2067"])
def test_bidi_controls_in_the_no_findings_paragraph_are_escaped(tmp_path, char):
    # Before, the status went into the Findings' <p> as it was ("run status: ..."). One
    # write_summary refuses: a summary.json from elsewhere (another version, a hand edit).
    import json

    run = make_run(tmp_path, "demo", summary=False)
    run.summary_path.write_text(json.dumps({"name": "demo", "status": f"killed{char}by oom"}))
    run.findings_path.write_text("")
    page = build_report(run).read_text()
    assert f"(run status: killed\\u{ord(char):04x}by oom)" in page
    outside = re.sub(r"<(td|caption)>[^<]*</\1>", "", page)
    assert char not in outside
