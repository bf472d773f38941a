"""report.html: one self-contained page per run, with no links, scripts or fonts to fetch."""

from __future__ import annotations

import base64
import html
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

import gradwise
from gradwise._validation import Satisfies, check
from gradwise.report._table import Table, _terminal_text, format_time, summary_table
from gradwise.runs import STATUSES, RunFolder, read_records, read_summary, to_timestamp
from gradwise.runs._files import RunFolderError, describe_os_error, write_atomically


@final
@dataclass(frozen=True)
class Section:
    """One titled part of a report: a heading and a block of HTML.

    ``html`` is inserted as it is, so escape any text in it (``html.escape``) or build it
    with :meth:`from_text`, :meth:`from_table` or :meth:`from_png`, which do. Later parts
    of gradwise (the training doctor's diagnosis, histograms) pass their sections to
    :func:`build_report` through ``extra_sections``.

    Example:
        >>> from gradwise.report import Section
        >>> Section.from_text("Notes", "loss < 0.1 <script>").html
        '<pre>loss &lt; 0.1 &lt;script&gt;</pre>'
    """

    title: str
    html: str

    def __post_init__(self) -> None:
        for name in ("title", "html"):
            check(name, "Section", getattr(self, name), Satisfies(
                lambda value: isinstance(value, str), "a str"))  # fmt: skip

    @classmethod
    def from_text(cls, title: str, text: str) -> Section:
        """Preformatted text, escaped."""
        return cls(title, f"<pre>{html.escape(text)}</pre>")

    @classmethod
    def from_table(cls, title: str, table: Table) -> Section:
        """A :class:`Table`, rendered by :meth:`Table.render_html`."""
        return cls(title, table.render_html())

    @classmethod
    def from_png(cls, title: str, png: bytes, alt: str = "") -> Section:
        """A PNG image embedded as a base64 ``data:`` URI."""
        return cls(title, png_html(png, alt or title))


_RUN = Satisfies(lambda v: isinstance(v, RunFolder | str | os.PathLike), "a RunFolder or a path")
_SECTIONS = Satisfies(
    lambda v: isinstance(v, Sequence) and all(isinstance(s, Section) for s in v),
    "a sequence of Section",
)


def png_html(png: bytes, alt: str) -> str:
    """An ``<img>`` that carries its PNG inline (``data:image/png;base64,...``)."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def build_report(
    run: RunFolder | str | os.PathLike[str], extra_sections: Sequence[Section] = ()
) -> Path:
    """Write the run's ``report.html`` from its files and return its path.

    Reads ``config.yaml``, ``metrics.jsonl`` and ``summary.json`` and writes one
    self-contained page (inline CSS, plots as base64 PNG, no external links, no
    JavaScript) with a header (run name, status), the summary table, plots of the loss,
    the accuracy and the learning rate, the ``landscape-*.png`` plots of ``gradwise
    landscape`` when the folder holds them, any ``extra_sections``, and the resolved config.
    Works on any run at any time: a missing summary reads as status ``"unknown"``, and a
    plot without data (no epochs yet, no validation split, no accuracy in a regression
    run) is left out. The page is written atomically, so rebuilding it while a browser
    reads it is safe.

    Plots: (1) training loss per step, light, with a moving average (a min-max band once
    a run has more than 1,000 steps), train and validation loss per epoch, test loss,
    with a log y axis when every value is > 0 and they span more than two decades (a
    series with a 0 stays linear: a log axis cannot show it) and a dashed line where
    the loss first became NaN or infinite; (2) accuracy per epoch (and per step when
    recorded); (3) the learning rate per step. The x axis is the optimizer step. A run
    that averages its weights (gradwise.averaging) gets the averaged weights' validation
    and test curves in (1) and (2) too.

    Args:
        run: a :class:`gradwise.runs.RunFolder` or the path of a run folder.
        extra_sections: sections added after the plots.

    Raises:
        RunFolderError: the run folder does not exist or has no config.yaml, or the
            report cannot be written.

    Example:
        >>> import tempfile
        >>> from gradwise.report import build_report
        >>> from gradwise.runs import MetricsLog, RunFolder, write_config, write_summary
        >>> run = RunFolder.create(tempfile.mkdtemp(), "demo", min_free_bytes=0)
        >>> write_config(run, {"model": "mlp"})
        >>> with MetricsLog(run.metrics_path) as log:
        ...     for step in range(1, 4):
        ...         log.append({"kind": "step", "step": step, "loss": 1 / step, "lr": 0.1})
        >>> write_summary(run, {"name": "demo", "status": "running"})
        >>> build_report(run).name
        'report.html'
    """
    check("run", "build_report", run, _RUN)
    check("extra_sections", "build_report", extra_sections, _SECTIONS)
    folder = RunFolder.open(run.path if isinstance(run, RunFolder) else run)
    page = render_report(folder, extra_sections)
    try:
        write_atomically(folder.report_path, utf8(page))
    except OSError as error:
        raise RunFolderError(
            f"Could not write the report {folder.report_path}: {describe_os_error(error)}."
        ) from error
    return folder.report_path


def render_report(run: RunFolder, extra_sections: Sequence[Section] = ()) -> str:
    """The HTML of :func:`build_report`, without writing it."""
    summary = _summary_or_empty(run)
    name = str(summary.get("name") or run.name)
    status = str(summary.get("status") or "unknown")
    from gradwise.report import _diagnosis  # the doctor's sections; imports this module

    def findings() -> list[Section]:
        steps = summary.get("steps")
        known = steps if isinstance(steps, int) and not isinstance(steps, bool) else None
        return _listed(_diagnosis.findings_section(run, status, known))

    def histograms() -> list[Section]:
        return _listed(_diagnosis.histogram_section(run))

    sections = [
        *_guarded("Findings", run.findings_path, findings),
        *_data_warnings_section(summary),
        Section.from_table("Summary", summary_table({**summary, "name": name})),
        *_metric_sections(run),
        *_sparsity_section(run),
        *_landscape_section(run),
        *_guarded("Per-layer probes", run.probes_path, lambda: _diagnosis.probe_sections(run)),
        *_guarded("Histograms", run.histograms_path, histograms),
        *_guarded("Checks", run.checks_path, lambda: _diagnosis.checks_sections(run)),
        *extra_sections,
        _config_section(run),
    ]
    body = "\n".join(_render_section(section) for section in sections)
    footer = (
        f"Generated by gradwise {gradwise.__version__} on {format_time(time.time())} "
        f"from {run.path}"
    )
    # Text outside a table cell (a <td> confines a bidi control to itself) has its bidi
    # controls escaped, as the terminal's tables have them: a name "evil\u202egnp.exe" read
    # "evilexe.png" and reordered what follows it (" - gradwise run", the status badge).
    return _PAGE.format(
        title=html.escape(_terminal_text(f"{name} - gradwise run")),
        css=_CSS,
        name=html.escape(_terminal_text(name)),
        status=html.escape(_terminal_text(status)),
        status_class=status if status in STATUSES else "unknown",
        subtitle=html.escape(_terminal_text(_subtitle(summary))),
        body=body,
        footer=html.escape(_terminal_text(footer)),
    )


def utf8(page: str) -> bytes:
    """The page's UTF-8 bytes; a lone surrogate is written as its escape (``\\udcff``).

    A folder name that is not UTF-8 (``run-\\xff``, made on another system) reaches
    Python as such a surrogate, in the run's name, its summary and the footer's path;
    strict UTF-8 refused to write the page at all.
    """
    return page.encode("utf-8", errors="backslashreplace")


# What a file that parses but holds other shapes than gradwise writes (a hand edit, another
# version's file: a list where a mapping belongs, a null step) raises while its section is
# built from it.
_UNEXPECTED_CONTENTS = (
    AttributeError, IndexError, KeyError, OverflowError, RecursionError, TypeError, ValueError,
)  # fmt: skip


def _guarded(title: str, path: Path, build: Callable[[], list[Section]]) -> list[Section]:
    """The sections ``build`` makes from the file at ``path``; if its contents are not
    what gradwise writes, one section that says so. build_report runs however a run
    ended (gradwise train calls it in a ``finally``): one odd file must not stop it."""
    try:
        return build()
    except _UNEXPECTED_CONTENTS as error:
        what = f"{type(error).__name__}: {error}"
        return [
            Section.from_text(title, f"{path.name} could not be read: unexpected contents ({what})")
        ]


def _listed(section: Section | None) -> list[Section]:
    return [] if section is None else [section]


def _summary_or_empty(run: RunFolder) -> dict[str, Any]:
    try:
        return read_summary(run)
    except (RunFolderError, ValueError):
        return {}


def _data_warnings_section(summary: Mapping[str, Any]) -> list[Section]:
    """What the preprocessing said about the training data (``gradwise train``'s
    ConstantFeatureWarnings, kept in the summary), near the top: easy to miss in a
    terminal, and true of every number below."""
    warnings = summary.get("preprocessing_warnings")
    if not isinstance(warnings, list) or not warnings:
        return []
    items = "".join(f"<li>{html.escape(_terminal_text(str(message)))}</li>" for message in warnings)
    return [Section("Data warnings", f"<ul>{items}</ul>")]


def _metric_sections(run: RunFolder) -> list[Section]:
    from gradwise.report._plots import accuracy_png, learning_rate_png, loss_png

    try:
        records = read_records(run)
    except (OSError, ValueError) as error:
        return [Section.from_text("Metrics", f"metrics.jsonl could not be read: {error}")]
    plots = [("Loss", loss_png), ("Accuracy", accuracy_png), ("Learning rate", learning_rate_png)]
    sections = []
    for title, draw in plots:
        png = draw(records)
        if png is not None:
            sections.append(Section.from_png(title, png, f"{title} against optimizer steps"))
    if not sections:
        text = "No metrics recorded yet." if not records else "No loss, accuracy or lr to plot."
        sections.append(Section("Metrics", f"<p>{html.escape(text)}</p>"))
    return sections


def _sparsity_section(run: RunFolder) -> list[Section]:
    """A pruned run's sparsity.json (gradwise.prune.Pruning): weights kept per tensor."""
    try:
        report = json.loads((run.path / "sparsity.json").read_text(encoding="utf-8"))
        rows = [
            [layer["name"], layer["size"], layer["remaining"], layer["sparsity"]]
            for layer in [*report["layers"], {"name": "total", **report["total"]}]
        ]
        # In the try: a value that is no table cell (a mapping) is a ValueError here.
        table = Table("Pruned weights", ["tensor", "weights", "remaining", "sparsity"], rows)
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return []
    return [Section.from_table("Sparsity", table)]


#: The plots ``gradwise landscape`` writes into a run folder, in the report's order, each
#: with the line the report shows above it.
LANDSCAPE_PLOTS = (
    ("landscape-interpolate.png", "Loss on the line from the initialization to the final weights"),
    ("landscape-1d.png", "Loss along a random direction around the final weights"),
    ("landscape-2d-contour.png", "Loss on a plane of two random directions: contours"),
    ("landscape-2d-surface.png", "Loss on a plane of two random directions: surface"),
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _landscape_section(run: RunFolder) -> list[Section]:
    """The landscape plots of ``gradwise landscape`` that the run folder holds, if any."""
    parts = []
    for file_name, caption in LANDSCAPE_PLOTS:
        path = run.path / file_name
        if not path.exists():
            continue
        try:
            png = path.read_bytes()
        except OSError as error:
            note = f"{file_name} could not be read: {describe_os_error(error)}"
            parts.append(f"<p>{html.escape(note)}</p>")
            continue
        if not png.startswith(_PNG_SIGNATURE):
            parts.append(f"<p>{html.escape(f'{file_name} is not a PNG image; left out')}</p>")
            continue
        parts.append(f"<p>{html.escape(caption)} ({html.escape(file_name)})</p>")
        parts.append(png_html(png, caption))
    return [Section("Loss landscape", "\n".join(parts))] if parts else []


def _config_section(run: RunFolder) -> Section:
    try:
        text = run.config_path.read_text(encoding="utf-8")
    except OSError as error:
        text = f"config.yaml could not be read: {describe_os_error(error)}"
    return Section.from_text("Config", text)


def _subtitle(summary: Mapping[str, Any]) -> str:
    parts = [str(summary[key]) for key in ("dataset", "model") if summary.get(key)]
    optimizer = summary.get("optimizer")
    if isinstance(optimizer, Mapping):
        optimizer = optimizer.get("name")
    if optimizer:
        parts.append(str(optimizer))
    started = to_timestamp(summary.get("started"))
    if started is not None:
        parts.append(f"started {format_time(started)}")
    return " · ".join(parts)


def _render_section(section: Section) -> str:
    return f"<section>\n<h2>{html.escape(section.title)}</h2>\n{section.html}\n</section>"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>{name} <span class="status status-{status_class}">{status}</span></h1>
<p class="subtitle">{subtitle}</p>
</header>
<main>
{body}
</main>
<footer>{footer}</footer>
</body>
</html>
"""

_CSS = """
ul.findings { padding-left: 1.2rem; }
li.finding { margin-bottom: 0.6rem; }
li.finding.error b { color: #b00020; }
li.finding.warning b { color: #a15c00; }
p.healthy { color: #1b7f3b; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 60rem; padding: 1rem 1.5rem; color: #1d1d1f; background: #fff; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; word-break: break-all; }
h2 { font-size: 1.15rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.subtitle { color: #555; margin-top: 0; }
.status { font-size: 0.8rem; padding: 0.15rem 0.5rem; border-radius: 0.6rem;
          vertical-align: middle; background: #e8e8e8; }
.status-completed { background: #d8f3dc; } .status-early_stopped { background: #d8f3dc; }
.status-running { background: #dbe9ff; } .status-interrupted { background: #fff3c4; }
.status-diverged, .status-failed { background: #ffd6d6; }
table.gw-table { border-collapse: collapse; font-size: 0.9rem; }
table.gw-table caption { text-align: left; font-weight: 600; padding-bottom: 0.3rem; }
table.gw-table th, table.gw-table td { padding: 0.2rem 0.8rem; border-bottom: 1px solid #eee;
                                       text-align: left; }
table.gw-table .num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
pre { background: #f6f8fa; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
footer { color: #888; font-size: 0.8rem; margin-top: 2rem; }
"""
