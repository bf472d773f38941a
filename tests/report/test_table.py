"""Table: one set of cell texts, rendered for the terminal, HTML and JSON."""

import json
import math
import os
import re
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gradwise.report import (
    Cell,
    Table,
    format_duration,
    format_time,
    format_value,
    runs_table,
    summary_table,
)
from gradwise.runs import RunFolder, RunInfo, list_runs, read_summary, write_summary


class CellCollector(HTMLParser):
    """The caption and the text of every th/td, row by row."""

    def __init__(self):
        super().__init__()
        self.rows, self.caption, self._in = [], "", None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        if tag in ("th", "td", "caption"):
            self._in = tag
            if tag != "caption":
                self.rows[-1].append("")

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "caption":
            self.caption += data
        elif self._in:
            self.rows[-1][-1] += data


def text_cells(text):
    title, header, rule, *rows = text.splitlines()
    widths = [len(dashes) for dashes in rule.split("  ")]

    def split(line):  # noqa: E306 - cut at the rule's column boundaries
        cells, start = [], 0
        for width in widths:
            cells.append(line[start : start + width].strip())
            start += width + 2
        return cells

    return title, [split(header), *(split(row) for row in rows)]


def sample_table():
    return Table(
        "Results <b>&",
        ["name", "loss", "ok", "when"],
        [
            ["run <script>", 0.123456, True, Cell(75.0, format_duration(75.0))],
            ["b & c", math.nan, None, Cell(None, "-")],
            ["d", 12, False, Cell(4000.0, "1 h 06 min")],
        ],
    )


def test_text_html_and_json_show_the_same_cells():
    table = sample_table()
    expected = [
        ["name", "loss", "ok", "when"],
        ["run <script>", "0.1235", "yes", "1 min 15 s"],
        ["b & c", "nan", "-", "-"],
        ["d", "12", "no", "1 h 06 min"],
    ]
    title, from_text = text_cells(table.render_text())
    parser = CellCollector()
    parser.feed(table.render_html())
    data = json.loads(table.to_json())
    assert from_text == parser.rows == [data["columns"], *data["rows"]] == expected
    assert title == parser.caption == data["title"] == "Results <b>&"


def test_json_carries_raw_values_as_strict_json():
    data = json.loads(sample_table().to_json(indent=2))
    assert data["values"] == [
        ["run <script>", 0.123456, True, 75.0],
        ["b & c", None, None, None],  # NaN becomes null: strict JSON
        ["d", 12, False, 4000.0],
    ]
    assert "NaN" not in sample_table().to_json()


def test_html_escapes_every_text():
    html = sample_table().render_html()
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "Results &lt;b&gt;&amp;" in html


def test_number_columns_align_right_in_text_and_html():
    table = Table("", ["name", "value"], [["a", 1.5], ["bbbbbb", 100], ["c", None]])
    assert table.render_text().splitlines() == [
        "name    value",
        "------  -----",
        "a         1.5",
        "bbbbbb    100",
        "c           -",
    ]
    assert table.numeric_columns() == (False, True)
    assert '<td class="num">100</td>' in table.render_html()


def test_multiline_text_stays_on_one_terminal_line():
    table = Table("t", ["message"], [["line one\nline two"]])
    assert table.render_text().splitlines()[-1] == "line one line two"


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.98123, "0.9812"), (2.302585, "2.303"), (1e-4, "0.0001"), (12345.6, "1.235e+04"),
     (7, "7"), (None, "-"), (True, "yes"), (False, "no"), (math.inf, "inf"), ("x", "x")],
)  # fmt: skip
def test_format_value(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0 s"), (45.24, "45.2 s"), (59.96, "60.0 s"), (60, "1 min 00 s"),
     (725, "12 min 05 s"), (3599.6, "1 h 00 min"), (7380, "2 h 03 min"), (None, "-"),
     (math.nan, "-")],
)  # fmt: skip
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_format_time_is_local_time():
    import time

    stamp = 1795334400.0
    assert format_time(stamp) == time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))
    assert format_time(None) == "-"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("t", ["a", "b"], [["only one"]]), "The 'rows' parameter of Table must be a sequence "
                                            "of rows of 2 cells"),
        (("t", "ab", []), "The 'columns' parameter of Table must be a sequence of str"),
        ((3, ["a"], []), "The 'title' parameter of Table must be a str. Got 3 instead."),
        (("t", ["a"], [[object()]]), "The 'rows' parameter of Table must be"),
    ],
)  # fmt: skip
def test_bad_tables_are_refused(arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Table(*arguments)


SUMMARY = {
    "name": "demo",
    "status": "completed",
    "dataset": "mnist1d",
    "model": "cnn1d",
    "optimizer": {"name": "adam", "lr": 0.001},
    "num_parameters": 1234567,
    "epochs": 20,
    "steps": 4000,
    "duration_s": 3725.0,
    "best": {"monitor": "val_accuracy", "mode": "max", "value": 0.9134, "epoch": 17,
             "step": 3600},
    "final": {"train_loss": 0.2, "val_loss": 0.31, "train_accuracy": 0.95, "val_accuracy": 0.9},
    "test": {"test_loss": 0.3, "test_accuracy": 0.9},
    "message": None,
}  # fmt: skip


def test_summary_table_rows():
    table = summary_table(SUMMARY)
    assert table.title == "Run demo"
    assert table.to_dict()["rows"] == [
        ["status", "completed"],
        ["dataset", "mnist1d"],
        ["model", "cnn1d"],
        ["optimizer", "adam"],
        ["parameters", "1,234,567"],
        ["epochs", "20"],
        ["steps", "4000"],
        ["duration", "1 h 02 min"],
        ["best val_accuracy", "0.9134 (epoch 17, step 3600)"],
        ["final train_loss", "0.2"],
        ["final val_loss", "0.31"],
        ["final train_accuracy", "0.95"],
        ["final val_accuracy", "0.9"],
        ["test_loss", "0.3"],
        ["test_accuracy", "0.9"],
    ]
    assert table.to_dict()["values"][4] == ["parameters", 1234567]


def test_summary_table_of_a_partial_run_has_only_what_is_known():
    summary = {"status": "diverged", "message": "loss is nan at step 3", "steps": 3,
               "best": {"monitor": "val_loss", "mode": "min"}, "final": {}, "test": {}}  # fmt: skip
    table = summary_table(summary)
    assert table.title == "Run summary"
    assert table.to_dict()["rows"] == [
        ["status", "diverged"],
        ["message", "loss is nan at step 3"],
        ["steps", "3"],
    ]
    assert summary_table({}).to_dict()["rows"] == []


def test_runs_table():
    runs = [
        RunInfo("a", Path("runs/a"), "completed", dataset="mnist1d", model="mlp",
                optimizer="sgd", monitor="val_accuracy", best_value=0.91234, best_epoch=3,
                test_accuracy=0.9, duration_s=65.0, started=1795334400.0),
        RunInfo("b", Path("runs/b"), "unknown"),
    ]  # fmt: skip
    table = runs_table(runs)
    assert table.columns == (
        "name", "status", "started", "dataset", "model", "optimizer", "monitor", "best",
        "test accuracy", "duration",
    )  # fmt: skip
    assert table.to_dict()["rows"] == [
        ["a", "completed", format_time(1795334400.0), "mnist1d", "mlp", "sgd", "val_accuracy",
         "0.9123", "0.9", "1 min 05 s"],
        ["b", "unknown", "-", "-", "-", "-", "-", "-", "-", "-"],
    ]  # fmt: skip
    with pytest.raises(ValueError, match="The 'runs' parameter of runs_table must be a sequence"):
        runs_table([{"name": "a"}])  # type: ignore[list-item]


def test_wide_and_combining_characters_keep_terminal_columns_aligned(tmp_path):
    # A CJK character takes two terminal cells, a combining accent none: columns padded
    # by len() started one cell late per CJK character and one early per accent.
    for name in ("中文名字", "e\u0301te\u0301", "plain"):  # "été" with combining accents
        run = RunFolder.create(tmp_path, name, min_free_bytes=0)
        write_summary(run, {"status": "completed", "dataset": "数据", "started": 1795334400.0})
    lines = runs_table(list_runs(tmp_path)).render_text().splitlines()
    header = lines[1]
    rows = {line.split()[0]: line for line in lines[3:]}
    assert header.startswith("name      status ")  # "中文名字" is 8 cells wide
    assert rows["中文名字"].startswith("中文名字  completed ")
    assert rows["e\u0301te\u0301"].startswith("e\u0301te\u0301       completed ")
    assert rows["plain"].startswith("plain     completed ")
    dataset = header.index("dataset")  # the same cell on every line
    assert rows["plain"][dataset:].startswith("数据     -")
    assert rows["中文名字"][dataset - 4 :].startswith("数据     -")


def test_control_characters_cannot_steer_the_terminal(tmp_path):
    # A tab broke the columns; an escape sequence from a summary recoloured (or cleared)
    # the terminal of whoever ran `gradwise runs`.
    run = RunFolder.create(tmp_path, "r", min_free_bytes=0)
    write_summary(run, {"status": "completed", "dataset": "a\tb\x1b[2J\x1b[31mred\x07"})
    table = runs_table(list_runs(tmp_path))
    text = table.render_text()
    assert not [char for char in text if char != "\n" and unicodedata.category(char) == "Cc"]
    assert "a b\\x1b[2J\\x1b[31mred\\x07" in text
    assert table.to_dict()["rows"][0][3] == "a\tb\x1b[2J\x1b[31mred\x07"  # JSON keeps it
    assert Table("t\x1b[2J", ["a\x1b"], []).render_text().splitlines()[:2] == [
        "t\\x1b[2J",
        "a\\x1b",
    ]


@pytest.mark.parametrize(
    "char", [*map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))]
)
def test_bidi_controls_cannot_reorder_the_terminal_line(tmp_path, char):
    # A right-to-left override in a run name, key or message reversed the rest of the
    # line as the terminal drew it: "evil\u202egnp.exe" showed as "evilexe.png".
    name = f"evil{char}gnp.exe"
    run = RunFolder.create(tmp_path, name, min_free_bytes=0)
    write_summary(run, {"status": "completed", "message": f"m{char}x", "final": {f"k{char}": 1}})
    escape = f"\\u{ord(char):04x}"
    text = runs_table(list_runs(tmp_path)).render_text()
    assert f"evil{escape}gnp.exe" in text
    summary = summary_table({**read_summary(run), "name": name}).render_text()
    assert f"Run evil{escape}gnp.exe" in summary
    assert f"m{escape}x" in summary
    assert f"final k{escape}" in summary
    assert char not in text + summary
    assert Table(char, [char], [[char]]).render_text().split() == [escape, escape, "-" * 6, escape]
    assert Table("t", ["c"], [[char]]).to_dict()["rows"] == [[char]]  # JSON keeps the text


def test_a_folder_name_that_is_not_utf8_can_be_printed(tmp_path):
    # os.listdir gives the byte 0xff as the lone surrogate \udcff, which a UTF-8 terminal
    # (strict errors) refused to print: `gradwise runs` crashed on the whole listing.
    name = os.fsdecode(b"run-\xff")
    RunFolder.create(tmp_path, name, min_free_bytes=0).config_path.write_text("model: mlp\n")
    text = runs_table(list_runs(tmp_path)).render_text()
    text.encode("utf-8")  # strict: no surrogate left
    assert "run-\\udcff  unknown" in text


def test_a_duration_beyond_the_float_range_is_shown_as_unknown():
    # The listing already showed such a hand-edited summary; summary_table (the terminal
    # summary and report.html) raised OverflowError.
    table = summary_table({"status": "failed", "duration_s": 10**400})
    assert table.to_dict()["rows"] == [["status", "failed"], ["duration", "-"]]
    assert json.loads(table.to_json())["values"][1] == ["duration", None]
