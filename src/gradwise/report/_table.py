"""A small table model: each result is formatted once and rendered as text, HTML or JSON."""

from __future__ import annotations

import html
import json
import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast, final

from gradwise._validation import Satisfies, check
from gradwise.runs import RunInfo

Scalar = str | int | float | bool | None


@final
@dataclass(frozen=True)
class Cell:
    """One table entry: the value (for JSON) and its text (for the terminal and HTML).

    Tables make cells from plain values with :func:`format_value`; build one by hand when
    a value needs other words, e.g. ``Cell(3725.0, "1 h 02 min")``.
    """

    value: Scalar
    text: str

    @property
    def is_number(self) -> bool:
        """Whether the value is an int or float (not a bool)."""
        return isinstance(self.value, int | float) and not isinstance(self.value, bool)


def format_value(value: Scalar) -> str:
    """The one text form of a value: floats to 4 significant digits, None as ``-``.

    Example:
        >>> from gradwise.report import format_value
        >>> [format_value(v) for v in (0.98123, 2.302585, 1e-4, 12345.6, 7, None, True)]
        ['0.9812', '2.303', '0.0001', '1.235e+04', '7', '-', 'yes']
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_duration(seconds: float | None) -> str:
    """``45.2 s``, ``12 min 05 s``, ``2 h 03 min``; ``-`` for None or a non-finite time."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def format_time(timestamp: float | None) -> str:
    """POSIX seconds as local ``YYYY-mm-dd HH:MM``; ``-`` for None."""
    if timestamp is None or not math.isfinite(timestamp):
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def _is_scalar(value: Any) -> bool:
    return isinstance(value, Cell | str | int | float | bool) or value is None


@final
@dataclass(frozen=True)
class Table:
    """A titled table rendered once into terminal text, HTML and JSON.

    Every output shows the same cell texts (:class:`Cell`; plain values are formatted by
    :func:`format_value`), so the terminal, ``report.html`` and ``--json`` agree. JSON
    also carries the raw values (non-finite floats as ``null``, so it is strict JSON).

    Args:
        title: a line above the table.
        columns: the column names.
        rows: one sequence of cells or plain values (str, int, float, bool, None) per
            row, as many as there are columns.

    Example:
        >>> from gradwise.report import Table
        >>> table = Table("Runs", ["name", "best"], [["a", 0.98123], ["b", None]])
        >>> print(table.render_text())
        Runs
        name    best
        ----  ------
        a     0.9812
        b          -
        >>> table.to_dict()["rows"]
        [['a', '0.9812'], ['b', '-']]
    """

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Cell | Scalar]]

    def __post_init__(self) -> None:
        check("title", "Table", self.title, Satisfies(lambda v: isinstance(v, str), "a str"))
        check("columns", "Table", self.columns, Satisfies(
            lambda v: isinstance(v, Sequence) and not isinstance(v, str)
            and all(isinstance(c, str) for c in v), "a sequence of str"))  # fmt: skip
        width = len(self.columns)
        check("rows", "Table", self.rows, Satisfies(
            lambda v: isinstance(v, Sequence) and all(
                isinstance(r, Sequence) and not isinstance(r, str) and len(r) == width
                and all(_is_scalar(c) for c in r) for r in v),
            f"a sequence of rows of {width} cells (str, int, float, bool, None or Cell)",
        ))  # fmt: skip
        rows = tuple(
            tuple(c if isinstance(c, Cell) else Cell(c, format_value(c)) for c in row)
            for row in self.rows
        )
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "rows", rows)

    @property
    def cells(self) -> tuple[tuple[Cell, ...], ...]:
        """The rows as cells."""
        return cast(tuple[tuple[Cell, ...], ...], self.rows)  # __post_init__ made them cells

    def numeric_columns(self) -> tuple[bool, ...]:
        """Per column, whether it holds numbers (and blanks) only; those align right."""
        return tuple(
            any(row[i].is_number for row in self.cells)
            and all(row[i].is_number or row[i].value is None for row in self.cells)
            for i in range(len(self.columns))
        )

    def render_text(self) -> str:
        """Aligned columns for the terminal: number columns right, others left.

        Each text is one line, its control characters shown as escapes (``\\x1b``: a
        name or message cannot move the cursor or recolour the terminal; a bidi override
        or isolate as ``\\u202e``: it cannot reorder the line; a lone surrogate from a
        folder name that is not UTF-8 as ``\\udcff``), and columns
        are as wide as the terminal draws their texts (a CJK character or an emoji
        takes two cells, a combining accent none).
        """
        texts = [[_terminal_text(cell.text) for cell in row] for row in self.cells]
        columns = [_terminal_text(column) for column in self.columns]
        widths = [
            max([_width(column), *(_width(row[i]) for row in texts)])
            for i, column in enumerate(columns)
        ]
        right = self.numeric_columns()
        lines = [_terminal_text(self.title)] if self.title else []
        lines.append(_join(_align(c, w, r) for c, w, r in zip(columns, widths, right, strict=True)))
        lines.append(_join("-" * w for w in widths))
        for row in texts:
            lines.append(_join(_align(t, w, r) for t, w, r in zip(row, widths, right, strict=True)))
        return "\n".join(lines)

    def render_html(self) -> str:
        """A ``<table>`` with the title as its caption; every text is escaped."""
        right = self.numeric_columns()
        parts = ['<table class="gw-table">']
        if self.title:
            parts.append(f"<caption>{html.escape(self.title)}</caption>")
        header = "".join(
            f"<th{_NUM if r else ''}>{html.escape(c)}</th>"
            for c, r in zip(self.columns, right, strict=True)
        )
        parts.append(f"<thead><tr>{header}</tr></thead><tbody>")
        for row in self.cells:
            cells = "".join(
                f"<td{_NUM if r else ''}>{html.escape(c.text)}</td>"
                for c, r in zip(row, right, strict=True)
            )
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</tbody></table>")
        return "".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """``{"title", "columns", "rows": cell texts, "values": raw values}``."""
        return {
            "title": self.title,
            "columns": list(self.columns),
            "rows": [[cell.text for cell in row] for row in self.cells],
            "values": [[_json_value(cell.value) for cell in row] for row in self.cells],
        }

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`to_dict` as strict JSON."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


_NUM = ' class="num"'


def _align(text: str, width: int, right: bool) -> str:
    padding = " " * (width - _width(text))
    return padding + text if right else text + padding


def _json_value(value: Scalar) -> Scalar:
    return None if isinstance(value, float) and not math.isfinite(value) else value


# The bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): they reorder
# what follows them on the line, so a name could show as another name, or move its
# neighbours' cells ("Trojan Source", CVE-2021-42574).
_BIDI_CONTROLS = frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))


def _terminal_text(text: str) -> str:
    """``text`` on one line, tabs as spaces, other control characters and bidi controls as
    escapes, and lone surrogates (a folder name that is not UTF-8) as escapes a terminal
    can print."""
    one_line = " ".join(text.splitlines()).replace("\t", " ")
    return "".join(
        repr(char)[1:-1]
        if unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI_CONTROLS
        else char
        for char in one_line
    )


def _width(text: str) -> int:
    """How many terminal cells ``text`` takes: 2 for wide (East Asian) characters, 0 for
    combining marks and invisible format characters, 1 for the rest."""
    return sum(
        0 if unicodedata.category(char) in ("Mn", "Me", "Cf")
        else 2 if unicodedata.east_asian_width(char) in ("W", "F")
        else 1
        for char in text
    )  # fmt: skip


def _join(parts: Any) -> str:
    return "  ".join(parts).rstrip()


def summary_table(summary: Mapping[str, Any]) -> Table:
    """The end-of-run summary: status, size, time, best, final and test metrics.

    Rows appear only for what the summary has (a regression run has no accuracy, an
    interrupted run no test metrics). Accepts the mapping :func:`gradwise.runs
    .write_summary` writes.

    Example:
        >>> from gradwise.report import summary_table
        >>> summary = {"name": "demo", "status": "completed", "steps": 500,
        ...            "duration_s": 75.0, "final": {"val_loss": 0.4213}}
        >>> print(summary_table(summary).render_text())
        Run demo
        metric          value
        --------------  ----------
        status          completed
        steps           500
        duration        1 min 15 s
        final val_loss  0.4213
    """
    check("summary", "summary_table", summary, Satisfies(
        lambda v: isinstance(v, Mapping), "a mapping"))  # fmt: skip
    rows: list[list[Cell | Scalar]] = []
    for key, label in (("status", "status"), ("message", "message"), ("dataset", "dataset"),
                       ("model", "model"), ("optimizer", "optimizer")):  # fmt: skip
        if summary.get(key) is not None:
            rows.append([label, _name(summary[key])])
    rows.extend(_size_rows(summary))
    rows.extend(_best_rows(summary.get("best")))
    for group, prefix in (("final", "final "), ("test", "")):
        metrics = summary.get(group)
        if isinstance(metrics, Mapping):
            rows.extend([f"{prefix}{k}", _scalar(v)] for k, v in metrics.items() if v is not None)
    name = summary.get("name")
    return Table(f"Run {name}" if name else "Run summary", ["metric", "value"], rows)


def _size_rows(summary: Mapping[str, Any]) -> list[list[Cell | Scalar]]:
    rows: list[list[Cell | Scalar]] = []
    parameters = summary.get("num_parameters")
    if isinstance(parameters, int):
        rows.append(["parameters", Cell(parameters, f"{parameters:,}")])
    for key in ("epochs", "steps"):
        if summary.get(key) is not None:
            rows.append([key, _scalar(summary[key])])
    duration = summary.get("duration_s")
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        seconds = _float_or_none(duration)  # JSON allows ints beyond the float range
        rows.append(["duration", Cell(seconds, format_duration(seconds))])
    return rows


def _float_or_none(value: int | float) -> float | None:
    try:
        return float(value)
    except OverflowError:
        return None


def _best_rows(best: Any) -> list[list[Cell | Scalar]]:
    if not isinstance(best, Mapping) or best.get("value") is None:
        return []
    value = _scalar(best["value"])
    where = [f"{k} {best[k]}" for k in ("epoch", "step") if best.get(k) is not None]
    text = format_value(value) + (f" ({', '.join(where)})" if where else "")
    return [[f"best {best.get('monitor') or 'value'}", Cell(value, text)]]


def _scalar(value: Any) -> Scalar:
    return value if _is_scalar(value) and not isinstance(value, Cell) else str(value)


def _name(value: Any) -> Scalar:
    if isinstance(value, Mapping):  # e.g. {"name": "adam", "lr": 0.001}
        return str(value.get("name", value))
    return _scalar(value)


def runs_table(runs: Sequence[RunInfo]) -> Table:
    """The table ``gradwise runs`` prints: one row per :class:`gradwise.runs.RunInfo`.

    Example:
        >>> from pathlib import Path
        >>> from gradwise.report import runs_table
        >>> from gradwise.runs import RunInfo
        >>> info = RunInfo("a", Path("runs/a"), "completed", monitor="val_loss", best_value=0.42)
        >>> runs_table([info]).to_dict()["rows"][0][:2]
        ['a', 'completed']
    """
    check("runs", "runs_table", runs, Satisfies(
        lambda v: isinstance(v, Sequence) and all(isinstance(r, RunInfo) for r in v),
        "a sequence of RunInfo"))  # fmt: skip
    columns = ["name", "status", "started", "dataset", "model", "optimizer", "monitor",
               "best", "test accuracy", "duration"]  # fmt: skip
    rows = [
        [
            run.name,
            run.status,
            Cell(run.started, format_time(run.started)),
            run.dataset,
            run.model,
            run.optimizer,
            run.monitor,
            run.best_value,
            run.test_accuracy,
            Cell(run.duration_s, format_duration(run.duration_s)),
        ]
        for run in runs
    ]
    return Table("Runs", columns, rows)
