"""Rendering of run results: tables for the terminal, HTML and JSON, and report.html.

Every result is formatted once into a :class:`Table` that renders as aligned text
(:meth:`Table.render_text`), HTML (:meth:`Table.render_html`) and JSON
(:meth:`Table.to_json`). :func:`build_report` writes a run's self-contained
``report.html``. matplotlib is imported only when a report is built, and draws on its
Agg canvas (no pyplot, no global backend change); importing this package stays cheap.
"""

from gradwise.report._diagnosis import learning_curves_png
from gradwise.report._html import Section, build_report, png_html, render_report
from gradwise.report._study import build_study_report, leaderboard_table
from gradwise.report._table import (
    Cell,
    Table,
    format_duration,
    format_time,
    format_value,
    runs_table,
    summary_table,
)

__all__ = [
    "Cell",
    "Section",
    "Table",
    "build_report",
    "build_study_report",
    "format_duration",
    "format_time",
    "format_value",
    "leaderboard_table",
    "learning_curves_png",
    "png_html",
    "render_report",
    "runs_table",
    "summary_table",
]
