"""The study report of ``gradwise search``: a leaderboard and one self-contained report.html.

Every trial of a study is a normal run in the study folder; this module renders the
study as a whole from Optuna's :class:`~optuna.trial.FrozenTrial` records: which trials
won (:func:`leaderboard_table`), how the search progressed, how each hyperparameter
relates to the metric, and, for coarse-to-fine, how the ranges narrowed stage by stage
(:func:`build_study_report`).

gradwise.search imports this package, so the search types are imported here only for
the type checker, and its attribute names only inside the functions that read them.
matplotlib is imported only inside the figure functions and draws on its Agg canvas.
"""

from __future__ import annotations

import html
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

import gradwise
from gradwise._validation import POSITIVE_INT, Boolean, Either, Satisfies, check
from gradwise.report._html import _CSS, _PAGE, Section, _render_section, png_html, utf8
from gradwise.report._plots import _no_mathtext, _png
from gradwise.report._table import (
    Cell,
    Scalar,
    Table,
    _scalar,
    _terminal_text,
    format_time,
    format_value,
)
from gradwise.runs import STATUSES
from gradwise.runs._files import RunFolderError, describe_os_error, write_atomically

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from optuna.trial import FrozenTrial

    from gradwise.search._space import Parameter, SearchSpec
    from gradwise.search._stages import StageRanges

#: Rows of the leaderboard in the study report.
REPORT_LEADERBOARD_ROWS = 25

# Trial states by their optuna.trial.TrialState name (optuna is imported only when used).
_STATE_NAMES = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "waiting",
}
# Finished trials in leaderboard order; running and waiting trials are left out. A
# complete trial whose value is not finite (inf or -inf: a diverged run) is no valid
# result: it comes after the ranked trials, unranked (_INVALID); an interrupted attempt
# (_is_interrupted) is no finished trial: it comes last, unranked.
_FINISHED = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2}
_INVALID = len(_FINISHED)
_NO_EXTRA: Mapping[str, Scalar] = MappingProxyType({})


# -- validation ----------------------------------------------------------------------------


def _is_trials(value: Any) -> bool:
    from optuna.trial import FrozenTrial

    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and all(isinstance(trial, FrozenTrial) for trial in value)
    )


def _is_spec(value: Any) -> bool:
    from gradwise.search._space import SearchSpec

    return isinstance(value, SearchSpec)


def _is_stages(value: Any) -> bool:
    from gradwise.search._stages import StageRanges

    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and all(isinstance(stage, StageRanges) for stage in value)
    )


def _is_extra(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(key, str) and (isinstance(item, str | int | float | bool) or item is None)
        for key, item in value.items()
    )


_TRIALS = Satisfies(_is_trials, "a sequence of optuna FrozenTrial")
_SPEC = Satisfies(_is_spec, "a SearchSpec (from gradwise.search.parse_search)")
_LIMIT = Either((Satisfies(lambda value: value is None, "None"), POSITIVE_INT))
_FOLDER = Satisfies(
    lambda value: isinstance(value, str | os.PathLike) and Path(value).is_dir(),
    "an existing folder",
)
_TITLE = Satisfies(lambda value: isinstance(value, str), "a str")
_STAGES = Satisfies(_is_stages, "a sequence of StageRanges (from gradwise.search.stage_ranges)")
_EXTRA = Satisfies(_is_extra, "a mapping of str to str, numbers, booleans or None")
_OPTIONAL_STR = Either((Satisfies(lambda value: value is None, "None"), _TITLE))


# -- trials --------------------------------------------------------------------------------


def _last_value(trial: FrozenTrial) -> float | None:
    """The value reported for the trial's last epoch (None without any)."""
    if not trial.intermediate_values:
        return None
    return float(trial.intermediate_values[max(trial.intermediate_values)])


def _ranking_value(trial: FrozenTrial) -> float | None:
    if trial.state.name == "COMPLETE":
        return None if trial.value is None else float(trial.value)
    if trial.state.name == "PRUNED":
        return _last_value(trial)
    return None


def _is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _is_valid(trial: FrozenTrial) -> bool:
    """A complete trial with a finite value: a result the best trial can be."""
    return trial.state.name == "COMPLETE" and _is_finite(trial.value)


def _is_invalid(trial: FrozenTrial) -> bool:
    """A complete trial whose value is not finite (inf or -inf: a diverged run)."""
    return trial.state.name == "COMPLETE" and not _is_finite(trial.value)


def _is_interrupted(trial: FrozenTrial) -> bool:
    """An attempt stopped by a Ctrl-C or a killed worker that a retry continues (or, on
    resume, will): it did not finish, and the search's progress counts it neither finished
    nor failed (:func:`~gradwise.search._stages.is_interrupted_attempt`)."""
    from gradwise.search._stages import is_interrupted_attempt

    return is_interrupted_attempt(trial)


def _is_failed(trial: FrozenTrial) -> bool:
    """Failed for good (for a reason of its own, or stopped on its last attempt)."""
    return trial.state.name == "FAIL" and not _is_interrupted(trial)


def _retried_as(trial: FrozenTrial, trials: Sequence[FrozenTrial]) -> int | None:
    """The number of the attempt that continues an interrupted one (None before the
    resume that queues it)."""
    from gradwise.search._stages import is_retry, original_number

    chain = original_number(trial)
    later = [t.number for t in trials if t.number > trial.number and is_retry(t)
             and original_number(t) == chain]  # fmt: skip
    return min(later, default=None)


def _ranked(trials: Sequence[FrozenTrial], direction: str) -> list[FrozenTrial]:
    """Finished trials best first: complete, then pruned, then failed, then complete
    without a finite value (ties by number). Interrupted attempts are left out."""
    sign = 1.0 if direction == "minimize" else -1.0

    def key(trial: FrozenTrial) -> tuple[int, int, float, int]:
        group = _INVALID if _is_invalid(trial) else _FINISHED[trial.state.name]
        value = _ranking_value(trial)
        if value is None or not math.isfinite(value):
            return (group, 1, 0.0, trial.number)
        return (group, 0, sign * value, trial.number)

    finished = (t for t in trials if t.state.name in _FINISHED and not _is_interrupted(t))
    return sorted(finished, key=key)


def _listed(trials: Sequence[FrozenTrial], direction: str) -> list[FrozenTrial]:
    """The leaderboard's trials: the finished ones (:func:`_ranked`), then the interrupted
    attempts by number."""
    interrupted = sorted((t for t in trials if _is_interrupted(t)), key=lambda t: t.number)
    return [*_ranked(trials, direction), *interrupted]


def _completed(trials: Sequence[FrozenTrial], direction: str) -> list[FrozenTrial]:
    """Complete trials with a finite value, best first."""
    return [trial for trial in _ranked(trials, direction) if _is_valid(trial)]


def _stage_of(trial: FrozenTrial) -> int | None:
    from gradwise.search._stages import STAGE_ATTR

    stage = trial.user_attrs.get(STAGE_ATTR)
    return stage if isinstance(stage, int) and not isinstance(stage, bool) else None


def _note(trial: FrozenTrial, metric: str, trials: Sequence[FrozenTrial]) -> str | None:
    from gradwise.search._stages import FAIL_REASON_ATTR

    if _is_invalid(trial):
        return (
            f"{metric} {trial.value} is not finite (a diverged run?): no valid result, not ranked"
        )
    if _is_interrupted(trial):
        retry = _retried_as(trial, trials)
        return "interrupted; " + (
            "retried on resume" if retry is None else f"retried as trial {retry}"
        )
    if trial.state.name == "FAIL":
        reason = trial.user_attrs.get(FAIL_REASON_ATTR)
        return str(reason) if reason else "no reason recorded (worker killed or interrupted?)"
    if trial.state.name == "PRUNED":
        if not trial.intermediate_values:
            return "pruned before its first epoch ended"
        # Its steps are the epochs from 0 (gradwise reports them so); runs count from 1.
        return f"pruned at epoch {max(trial.intermediate_values) + 1}"
    return None


def _count(trials: Sequence[FrozenTrial], state: str) -> int:
    """How many trials are in ``state`` (a TrialState name; ``FAIL``: failed for good)."""
    if state == "FAIL":
        return sum(1 for trial in trials if _is_failed(trial))
    return sum(1 for trial in trials if trial.state.name == state)


def _count_interrupted(trials: Sequence[FrozenTrial]) -> int:
    return sum(1 for trial in trials if _is_interrupted(trial))


# -- the leaderboard -----------------------------------------------------------------------


def leaderboard_table(
    trials: Sequence[FrozenTrial], spec: SearchSpec, *, limit: int | None = None
) -> Table:
    """The study's trials as a table, best first.

    Only finished trials are ranked (running and waiting trials are left out): complete
    trials by their value (the metric at their best epoch) in the search's direction,
    then pruned trials by the metric of the last epoch they reported, then failed
    trials; within each group a missing or non-finite value comes last and ties go to
    the lower trial number. ``rank`` is the row's place in this order. A complete trial
    whose value is not finite (inf or -inf: a diverged run) is no valid result: it is
    listed after the ranked trials, without a rank (``-``), with a note that says so.
    An interrupted attempt (stopped by a Ctrl-C or a killed worker, without a reason of
    its own, with retries left) did not finish: it is listed last, by number, in state
    ``interrupted``, without a rank and with the trial that retries it (``interrupted;
    retried as trial 7``, or ``retried on resume`` before the resume that queues it), and
    the title does not count it among the finished trials. A trial stopped on its last
    attempt is failed for good (``failed``).

    When trials finished but none completed with a finite value (all failed, were
    pruned, or ended with inf or -inf), none is a best trial: the table is titled
    ``Trials (none completed, so none is ranked)`` (``none completed with a finite
    METRIC`` when some completed with inf or -inf), has no ``rank`` column and lists
    them by number.

    Columns: ``rank``, ``trial`` (its number), ``state``, the metric (``spec.metric``;
    for a pruned trial its last reported value), one column per searched parameter
    (headed by its config path), ``epochs`` (the trial's epoch budget), ``stage`` (only
    when some trial carries one: coarse-to-fine), ``run`` (the trial's run folder,
    relative to the study folder) and ``note`` (why a trial failed, when it was
    pruned, or which trial retries an interrupted one).

    Args:
        trials: the study's trials (``study.get_trials()``).
        spec: the search they come from (:func:`gradwise.search.parse_search`).
        limit: keep the first ``limit`` rows; None keeps them all.

    Raises:
        ValueError: a bad argument, in the one error format.

    Example:
        >>> import optuna
        >>> from gradwise.report import leaderboard_table
        >>> from gradwise.search import parse_search
        >>> spec = parse_search({"search": {"space": {"optimizer.lr": {
        ...     "log_uniform": [1e-4, 1e-1]}}}, "epochs": 2})
        >>> space = spec.distributions()
        >>> trials = [optuna.trial.create_trial(params={"optimizer.lr": lr},
        ...     distributions=space, value=loss) for lr, loss in [(0.05, 0.9), (0.003, 0.4)]]
        >>> for number, trial in enumerate(trials):
        ...     trial.number = number
        >>> table = leaderboard_table(trials, spec)
        >>> table.columns[:5]
        ('rank', 'trial', 'state', 'val_loss', 'optimizer.lr')
        >>> [row[:5] for row in table.to_dict()["rows"]]
        [['1', '1', 'complete', '0.4', '0.003'], ['2', '0', 'complete', '0.9', '0.05']]
    """
    check("trials", "leaderboard_table", trials, _TRIALS)
    check("spec", "leaderboard_table", spec, _SPEC)
    check("limit", "leaderboard_table", limit, _LIMIT)
    listed = _listed(trials, spec.direction)
    with_stage = any(_stage_of(trial) is not None for trial in trials)
    columns = [
        "trial", "state", spec.metric,
        *(parameter.path for parameter in spec.parameters),
        "epochs", *(["stage"] if with_stage else []), "run", "note",
    ]  # fmt: skip
    invalid = sum(1 for trial in listed if _is_invalid(trial))
    if _none_completed(listed):
        by_number = sorted(listed, key=lambda trial: trial.number)
        shown = by_number if limit is None else by_number[:limit]
        rows = [_leaderboard_row(trial, spec, with_stage, trials) for trial in shown]
        limit_cut = len(shown) < len(listed)
        first = f"; the first {len(shown)} of {len(listed)} by number"
        finite = f" with a finite {spec.metric}" if invalid else ""
        title = f"Trials (none completed{finite}, so none is ranked{first if limit_cut else ''})"
        return Table(title, columns, rows)
    shown = listed if limit is None else listed[:limit]
    rows = [
        [
            None if _is_invalid(trial) or _is_interrupted(trial) else rank,
            *_leaderboard_row(trial, spec, with_stage, trials),
        ]
        for rank, trial in enumerate(shown, 1)
    ]
    better = "lower" if spec.direction == "minimize" else "higher"
    finished = sum(1 for trial in listed if not _is_interrupted(trial))
    shown_finished = sum(1 for trial in shown if not _is_interrupted(trial))
    count = f"top {shown_finished} of {finished}" if shown_finished < finished else finished
    unranked = f"; {invalid} with a {spec.metric} that is not finite, unranked" if invalid else ""
    interrupted = len(listed) - finished
    if interrupted:
        unranked += f"; {interrupted} interrupted attempt(s), unranked"
        if len(shown) - shown_finished < interrupted:
            unranked += f" ({len(shown) - shown_finished} shown)"
    title = f"Leaderboard: {spec.metric}, {better} is better ({count} finished trials{unranked})"
    return Table(title, ["rank", *columns], rows)


def _none_completed(finished: Sequence[FrozenTrial]) -> bool:
    """Trials finished, but none completed with a finite value: there is no best trial
    to rank the others by."""
    return bool(finished) and not any(_is_valid(trial) for trial in finished)


def _leaderboard_row(
    trial: FrozenTrial, spec: SearchSpec, with_stage: bool, trials: Sequence[FrozenTrial]
) -> list[Cell | Scalar]:
    from gradwise.search._stages import EPOCHS_ATTR, RUN_ATTR

    epochs = trial.user_attrs.get(EPOCHS_ATTR)
    run = trial.user_attrs.get(RUN_ATTR)
    return [
        trial.number,
        "interrupted" if _is_interrupted(trial) else _STATE_NAMES[trial.state.name],
        _ranking_value(trial),
        *(_scalar(trial.params.get(parameter.path)) for parameter in spec.parameters),
        _scalar(epochs),
        *([_stage_of(trial)] if with_stage else []),
        None if run is None else str(run),
        _note(trial, spec.metric, trials),
    ]


# -- the page ------------------------------------------------------------------------------


def build_study_report(
    folder: str | os.PathLike[str],
    trials: Sequence[FrozenTrial],
    spec: SearchSpec,
    *,
    title: str,
    stages: Sequence[StageRanges] = (),
    extra: Mapping[str, Scalar] = _NO_EXTRA,
    none_completed: str | None = None,
    unfinished: str | None = None,
    running: bool = False,
) -> Path:
    """Write the study's ``report.html`` into ``folder`` and return its path.

    ``running``: a search or worker runs the study now, though no trial may be marked
    running (between two trials): the page's status is ``running``, not ``completed``.

    One self-contained page (inline CSS, plots as base64 PNG, no links, no JavaScript),
    written atomically so a browser may read it while a search rewrites it:

    1. **Summary**: the metric and direction, the trials by state, the best trial (its
       number, value, parameters and run folder: the best complete trial with a finite
       value), and ``extra`` as a small table. With no such trial, a sentence instead of
       the best trial says whether none has completed yet (some trial is running or
       waiting, or the study was interrupted with budget left: ``unfinished``) or every
       trial ended and none completed, with the counts. ``unfinished`` is shown too
       (and the page's status is ``interrupted``).
    2. **Leaderboard**: :func:`leaderboard_table`, top 25. When trials finished but none
       completed with a finite value, the trials unranked, by number, under a sentence
       that says so (``none_completed``).
    3. **Optimization history**: each complete trial's value against its number, the
       best value so far, pruned trials at their last reported value (another marker)
       and failed trials as ticks on the x axis; the y axis is logarithmic when every
       value is > 0 and they span more than a decade.
    4. **Hyperparameters**: one scatter of the metric against each parameter, on a log
       x axis where the parameter is log-scaled and on a categorical axis (positions
       0..k-1 labelled with the values) for categorical and grid parameters; in
       coarse-to-fine the points are coloured by stage and each later stage's range is
       shaded in its colour.
    5. **Parallel coordinates**: one vertical axis per parameter and one for the metric,
       each mapped to [0, 1] (through log10 for log-scaled parameters and a metric that
       spans more than a decade; categorical values by their index), one line per
       complete trial coloured by its value, the best trials drawn on top, and the real
       values written at the ends of each axis.
    6. **Coarse-to-fine stages** (when ``stages`` is given): a table per stage (epochs,
       trials, the trials its ranges were tightened around, each parameter's range)
       and the ranges of every stage as horizontal bars.

    Sections with nothing to draw (no complete trial) say so instead of plotting;
    each image's ``alt`` text names its axes and their scales.

    Args:
        folder: the study folder (must exist); ``report.html`` is written there.
        trials: the study's trials (``study.get_trials()``).
        spec: the search (:func:`gradwise.search.parse_search`).
        title: the page's heading, e.g. the study name.
        stages: the coarse-to-fine stages (:func:`gradwise.search.stage_ranges`).
        extra: more facts for the summary (strategy, storage URL, ...), by label.
        none_completed: why no trial completed (``SearchResult.none_completed``), shown
            above the unranked trials when none did; None says only that none did.
        unfinished: that the study was interrupted with budget left, and how to resume
            it (``SearchResult.unfinished``); None: it was not (or this is not known).

    Raises:
        ValueError: a bad argument, in the one error format.
        RunFolderError: the report cannot be written.

    Example:
        >>> import tempfile
        >>> import optuna
        >>> from gradwise.report import build_study_report
        >>> from gradwise.search import parse_search
        >>> spec = parse_search({"search": {"space": {"optimizer.lr": {
        ...     "log_uniform": [1e-4, 1e-1]}}}, "epochs": 2})
        >>> trial = optuna.trial.create_trial(params={"optimizer.lr": 0.003},
        ...     distributions=spec.distributions(), value=0.4, user_attrs={"epochs": 2})
        >>> trial.number = 0
        >>> path = build_study_report(tempfile.mkdtemp(), [trial], spec, title="demo",
        ...                           extra={"strategy": "random"})
        >>> path.name
        'report.html'
    """
    owner = "build_study_report"
    check("folder", owner, folder, _FOLDER)
    check("trials", owner, trials, _TRIALS)
    check("spec", owner, spec, _SPEC)
    check("title", owner, title, _TITLE)
    check("stages", owner, stages, _STAGES)
    check("extra", owner, extra, _EXTRA)
    check("none_completed", owner, none_completed, _OPTIONAL_STR)
    check("unfinished", owner, unfinished, _OPTIONAL_STR)
    check("running", owner, running, Boolean())
    path = Path(folder) / "report.html"
    leaderboard = _leaderboard_section(trials, spec, none_completed)
    summary = _summary_section(trials, spec, extra, unfinished, running)
    page = _render_study(
        path.parent, trials, spec, title, stages, summary, leaderboard, bool(unfinished), running
    )
    try:
        write_atomically(path, utf8(page))
    except OSError as error:
        raise RunFolderError(
            f"Could not write the study report {path}: {describe_os_error(error)}."
        ) from error
    return path


def _render_study(
    folder: Path,
    trials: Sequence[FrozenTrial],
    spec: SearchSpec,
    title: str,
    stages: Sequence[StageRanges],
    summary: Section,
    leaderboard: Section,
    interrupted: bool,
    running: bool,
) -> str:
    active = running or _is_active(trials)
    # A trial may still complete: running or waiting, or after a resume.
    later = active or interrupted
    sections = [
        summary,
        leaderboard,
        _figure_section("Optimization history", _history_figure(trials, spec), active=later),
        _figure_section("Hyperparameters", _parameter_figure(trials, spec, stages), active=later),
        _figure_section("Parallel coordinates", _parallel_figure(trials, spec), active=later),
        *([_stages_section(trials, spec, stages)] if stages else []),
    ]
    if active or interrupted:
        status = "running" if active else "interrupted"
    else:
        status = "completed" if trials else "empty"
    better = "lower" if spec.direction == "minimize" else "higher"
    subtitle = f"gradwise search · {spec.metric}, {better} is better · {len(trials)} trials"
    footer = (
        f"Generated by gradwise {gradwise.__version__} on {format_time(time.time())} from {folder}"
    )
    # Bidi controls outside a table cell escaped, as in the run report (_html.py): a study
    # "evil\u202egnp.exe" read "evilexe.png" and reordered what follows it.
    return _PAGE.format(
        title=html.escape(_terminal_text(f"{title} - gradwise search")),
        css=_CSS,
        name=html.escape(_terminal_text(title)),
        status=html.escape(_terminal_text(status)),
        status_class=status if status in STATUSES else "unknown",
        subtitle=html.escape(_terminal_text(subtitle)),
        body="\n".join(_render_section(section) for section in sections),
        footer=html.escape(_terminal_text(footer)),
    )


def _leaderboard_section(
    trials: Sequence[FrozenTrial], spec: SearchSpec, none_completed: str | None
) -> Section:
    table = leaderboard_table(trials, spec, limit=REPORT_LEADERBOARD_ROWS)
    if not _none_completed(_listed(trials, spec.direction)):
        return Section.from_table("Leaderboard", table)
    finite = f" with a finite {spec.metric}" if _count(trials, "COMPLETE") else ""
    said = none_completed or (
        f"No trial completed{finite} ({_ended_counts(trials, spec.metric)}), so there is no "
        "best trial and none is ranked: they are listed by number."
    )
    return Section(
        "Leaderboard", f"<p>{html.escape(_terminal_text(said))}</p>\n{table.render_html()}"
    )


def _summary_section(
    trials: Sequence[FrozenTrial],
    spec: SearchSpec,
    extra: Mapping[str, Scalar],
    unfinished: str | None,
    running: bool,
) -> Section:
    rows: list[list[Cell | Scalar]] = [
        ["metric", Cell(spec.metric, f"{spec.metric} ({spec.direction})")],
        ["trials", len(trials)],
    ]
    for state, name in _STATE_NAMES.items():
        if state != "WAITING" or _count(trials, state):
            rows.append([name, _count(trials, state)])
        if state == "FAIL" and _count_interrupted(trials):
            # Attempts a retry continues: neither finished nor failed (the progress line's).
            rows.append(["interrupted", _count_interrupted(trials)])
    invalid = sum(1 for trial in trials if _is_invalid(trial))
    if invalid:
        rows.append([f"complete, {spec.metric} not finite (unranked)", invalid])
    rows.extend(_time_rows(trials))
    completed = _completed(trials, spec.direction)
    if completed:
        rows.extend(_best_rows(completed[0], spec))
    parts = [Table("Study", ["", "value"], rows).render_html()]
    if not completed:
        said = _none_completed_summary(
            trials, spec.metric, interrupted=bool(unfinished), running=running
        )
        parts.append(f"<p>{html.escape(_terminal_text(said))}</p>")
    if unfinished:
        parts.append(f"<p>{html.escape(_terminal_text(unfinished))}</p>")
    if extra:
        settings = Table("Settings", ["", "value"], [[key, value] for key, value in extra.items()])
        parts.append(settings.render_html())
    return Section("Summary", "\n".join(parts))


def _is_active(trials: Sequence[FrozenTrial]) -> bool:
    """Some trial is running or waiting: the study may still complete one."""
    return bool(_count(trials, "RUNNING") + _count(trials, "WAITING"))


def _none_completed_summary(
    trials: Sequence[FrozenTrial], metric: str, *, interrupted: bool, running: bool = False
) -> str:
    """Why the summary has no best trial: none ran yet, none has completed yet (trials are
    running or waiting, or the study was interrupted with budget left), or every trial
    ended and none completed."""
    if not trials:
        return "No trial has run yet."
    counts = _ended_counts(trials, metric)
    finite = f" with a finite {metric}" if _count(trials, "COMPLETE") else ""
    if _is_active(trials):
        active = f"{_count(trials, 'RUNNING')} running, {_count(trials, 'WAITING')} waiting"
        return f"No trial has completed{finite} yet ({active}; so far {counts})."
    if interrupted or running:
        return f"No trial has completed{finite} yet (so far {counts})."
    return (
        f"No trial completed{finite}: every trial ended ({len(trials)} in all: {counts}), "
        "so there is no best trial."
    )


def _ended_counts(trials: Sequence[FrozenTrial], metric: str) -> str:
    """``2 failed, 1 pruned`` (and ``, 1 interrupted``, ``, 1 complete without a finite
    val_loss``): failed counts the trials failed for good, as the search's progress does."""
    counts = f"{_count(trials, 'FAIL')} failed, {_count(trials, 'PRUNED')} pruned"
    interrupted = _count_interrupted(trials)
    if interrupted:
        counts += f", {interrupted} interrupted"
    # A complete trial whose value is not finite (optuna keeps inf) is no best trial either.
    invalid = sum(1 for trial in trials if _is_invalid(trial))
    if invalid:
        counts += f", {invalid} complete without a finite {metric}"
    return counts


def _time_rows(trials: Sequence[FrozenTrial]) -> list[list[Cell | Scalar]]:
    started = [t.datetime_start.timestamp() for t in trials if t.datetime_start is not None]
    ended = [t.datetime_complete.timestamp() for t in trials if t.datetime_complete is not None]
    rows: list[list[Cell | Scalar]] = []
    if started:
        rows.append(["first trial started", Cell(min(started), format_time(min(started)))])
    if ended:
        rows.append(["last trial ended", Cell(max(ended), format_time(max(ended)))])
    return rows


def _best_rows(best: FrozenTrial, spec: SearchSpec) -> list[list[Cell | Scalar]]:
    from gradwise.search._stages import RUN_ATTR

    run = best.user_attrs.get(RUN_ATTR)
    rows: list[list[Cell | Scalar]] = [
        ["best trial", best.number],
        [f"best {spec.metric}", best.value],
    ]
    rows.extend([f"best {p.path}", _scalar(best.params.get(p.path))] for p in spec.parameters)
    rows.append(["best run", None if run is None else str(run)])
    return rows


def _figure_section(title: str, figure: Figure | None, *, active: bool) -> Section:
    if figure is None:
        said = "No trial has completed yet." if active else "No trial completed."
        return Section(title, f"<p>{said} Nothing to plot.</p>")
    return Section(title, png_html(_png(figure), _describe(title, figure)))


def _describe(title: str, figure: Figure) -> str:
    """The alt text of a figure: each plot's title and axis scales, read from its Axes."""
    if figure.get_label():  # a figure that describes itself (parallel coordinates)
        return f"{title}: {figure.get_label()}"
    plots = [
        f"{_axes_name(axes)} ({axes.get_xscale()} x axis, {axes.get_yscale()} y axis)"
        for axes in figure.axes
        if axes.get_visible() and axes.axison
    ]
    return f"{title}: {'; '.join(plots)}"


def _axes_name(axes: Axes) -> str:
    titles = [axes.get_title(loc=loc) for loc in ("center", "left", "right")]
    name = next((title for title in titles if title), axes.get_ylabel())
    return name.replace(r"\$", "$")  # as drawn: the figures escape "$" (_no_mathtext)


def _stages_section(
    trials: Sequence[FrozenTrial], spec: SearchSpec, stages: Sequence[StageRanges]
) -> Section:
    parts = [_stage_table(stage, trials).render_html() for stage in stages]
    figure = _stages_figure(stages, spec)
    if figure is not None:
        parts.append(png_html(_png(figure), _describe("Ranges per stage", figure)))
    return Section("Coarse-to-fine stages", "\n".join(parts))


def _stage_table(stage: StageRanges, trials: Sequence[FrozenTrial]) -> Table:
    members = [trial for trial in trials if _stage_of(trial) == stage.index]
    kept = ", ".join(str(number) for number in stage.kept)
    rows: list[list[Cell | Scalar]] = [
        ["epochs", stage.stage.epochs],
        ["trials planned", stage.stage.trials],
        ["trials run", len(members)],
        ["complete", _count(members, "COMPLETE")],
        ["tightened around trials", Cell(kept or None, kept or "- (the declared space)")],
    ]
    rows.extend([parameter.path, parameter.describe()] for parameter in stage.parameters)
    return Table(f"Stage {stage.index}", ["", "value"], rows)


# -- figures -------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=96)
    FigureCanvasAgg(figure)
    return figure


def _is_wide(values: Sequence[float]) -> bool:
    """Every value > 0 and the largest more than ten times the smallest."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 10


def _history_figure(trials: Sequence[FrozenTrial], spec: SearchSpec) -> Figure | None:
    """Each trial's metric against its number, with the best so far; None with nothing to draw."""
    from matplotlib.ticker import MaxNLocator

    completed = sorted(_completed(trials, spec.direction), key=lambda trial: trial.number)
    pruned = [(t.number, _last_value(t)) for t in trials if t.state.name == "PRUNED"]
    pruned = [(number, value) for number, value in pruned if _is_finite(value)]
    if not completed and not pruned:
        return None
    figure = _new_figure(8, 3.4)
    figure.subplots_adjust(left=0.1, right=0.98, top=0.96, bottom=0.15)
    axes = figure.add_subplot()
    values = [float(trial.value or 0.0) for trial in completed]
    if completed:
        numbers = [trial.number for trial in completed]
        accumulate = np.minimum if spec.direction == "minimize" else np.maximum
        axes.plot(numbers, values, "o", color="C0", markersize=5, label="complete")
        axes.plot(numbers, accumulate.accumulate(values), color="C1", drawstyle="steps-post",
                  label="best so far")  # fmt: skip
    if pruned:
        axes.plot(*zip(*pruned, strict=True), "v", color="C7", markersize=5,
                  label="pruned (last epoch)")  # fmt: skip
    _mark_failed(axes, trials)
    if _is_wide(values + [float(value or 0.0) for _, value in pruned]):
        axes.set_yscale("log")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("trial")
    axes.set_ylabel(_no_mathtext(spec.metric))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", framealpha=0.8)
    return figure


def _mark_failed(axes: Axes, trials: Sequence[FrozenTrial]) -> None:
    failed = [trial.number for trial in trials if _is_failed(trial)]
    if failed:
        # x in data coordinates, y in axes coordinates: ticks sit on the x axis.
        axes.plot(failed, [0.0] * len(failed), "|", color="C3", markersize=14,
                  markeredgewidth=2, clip_on=False, transform=axes.get_xaxis_transform(),
                  label="failed")  # fmt: skip


def _choice_index(parameter: Parameter, value: Any) -> int | None:
    """The position of a categorical value among the choices (``1`` is not ``True``)."""
    for index, choice in enumerate(parameter.choices):
        if type(choice) is type(value) and choice == value:
            return index
    return None


def _positions(parameter: Parameter, trials: Sequence[FrozenTrial]) -> list[float]:
    """Each trial's x for ``parameter``: the value, or the choice's index; NaN if missing."""
    positions = []
    for trial in trials:
        value = trial.params.get(parameter.path)
        if parameter.is_numeric:
            number = value if isinstance(value, int | float) else None
        else:
            number = _choice_index(parameter, value)
        positions.append(math.nan if number is None else float(number))
    return positions


def _parameter_figure(
    trials: Sequence[FrozenTrial], spec: SearchSpec, stages: Sequence[StageRanges]
) -> Figure | None:
    """One scatter of the metric against each parameter; None without complete trials."""
    completed = _completed(trials, spec.direction)
    if not completed:
        return None
    count = len(spec.parameters)
    columns = min(3, count)
    rows = math.ceil(count / columns)
    width, height = 2.9 * columns + 0.6, 2.4 * rows + 0.2
    figure = _new_figure(width, height)
    # Margins in inches (title above, tick labels below), whatever the grid's size.
    figure.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, top=1 - 0.3 / height,
                           bottom=0.4 / height, wspace=0.35, hspace=0.55)  # fmt: skip
    grid = figure.subplots(rows, columns, squeeze=False)
    log_y = _is_wide([float(trial.value or 0.0) for trial in completed])
    for index, axes in enumerate(grid.flat):
        if index >= count:
            axes.set_axis_off()
            continue
        _draw_parameter(axes, spec.parameters[index], completed, stages)
        if log_y:
            axes.set_yscale("log")
        if index % columns == 0:
            axes.set_ylabel(_no_mathtext(spec.metric))
        if index == 0 and axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="x-small", framealpha=0.8)
    return figure


def _draw_parameter(
    axes: Axes, parameter: Parameter, trials: Sequence[FrozenTrial], stages: Sequence[StageRanges]
) -> None:
    x = np.asarray(_positions(parameter, trials))
    y = np.asarray([float(trial.value or 0.0) for trial in trials])
    trial_stages = [_stage_of(trial) for trial in trials]
    for stage in sorted(set(trial_stages), key=lambda s: -1 if s is None else s):
        chosen = np.asarray([s == stage for s in trial_stages])
        axes.scatter(x[chosen], y[chosen], s=16, alpha=0.8, color=f"C{stage or 0}",
                     label=None if stage is None else f"stage {stage}")  # fmt: skip
    if parameter.is_numeric:
        if parameter.log:
            axes.set_xscale("log")
        axes.set_xlim(*_padded(parameter.low, parameter.high, log=parameter.log))
    else:
        axes.set_xticks(range(len(parameter.choices)), [_no_mathtext(c) for c in parameter.choices])
        axes.set_xlim(-0.5, len(parameter.choices) - 0.5)
    _shade_stages(axes, parameter, stages)
    axes.set_title(_no_mathtext(parameter.path), fontsize="small")
    axes.tick_params(labelsize="x-small")
    axes.grid(alpha=0.3)


def _padded(low: float, high: float, *, log: bool) -> tuple[float, float]:
    """``[low, high]`` widened by 5% on each side (in log10 space for a log axis)."""
    if log:
        low_exponent, high_exponent = math.log10(low), math.log10(high)
        pad = 0.05 * (high_exponent - low_exponent) or 0.5
        return 10 ** (low_exponent - pad), 10 ** (high_exponent + pad)
    pad = 0.05 * (high - low) or max(0.5, 0.05 * abs(low))
    return low - pad, high + pad


def _shade_stages(axes: Axes, parameter: Parameter, stages: Sequence[StageRanges]) -> None:
    """Each later stage's range of ``parameter``, shaded in the stage's colour."""
    for stage in stages:
        narrowed = _find(stage.parameters, parameter.path)
        if stage.index == 0 or narrowed is None:
            continue
        color = f"C{stage.index}"
        if not parameter.is_numeric:
            for value in narrowed.choices:
                index = _choice_index(parameter, value)
                if index is not None:
                    axes.axvspan(index - 0.35, index + 0.35, color=color, alpha=0.12, lw=0)
        elif narrowed.low < narrowed.high:
            axes.axvspan(narrowed.low, narrowed.high, color=color, alpha=0.12, lw=0)
        else:
            axes.axvline(narrowed.low, color=color, alpha=0.5)


def _find(parameters: Sequence[Parameter], path: str) -> Parameter | None:
    return next((parameter for parameter in parameters if parameter.path == path), None)


@dataclass(frozen=True)
class _Axis:
    """One axis of the parallel coordinates: positions in [0, 1] and labelled ticks."""

    name: str
    positions: list[float]
    ticks: list[tuple[float, str]]
    log: bool = False
    categorical: bool = False

    def describe(self) -> str:
        """``optimizer.lr from 0.0001 to 0.1 (log scale)``, ``model.depth: 1, 2, 3``."""
        if self.categorical or len(self.ticks) == 1:
            return f"{self.name}: {', '.join(text for _, text in self.ticks)}"
        scale = " (log scale)" if self.log else ""
        return f"{self.name} from {self.ticks[0][1]} to {self.ticks[-1][1]}{scale}"


def _scaled_axis(name: str, values: Sequence[float], low: float, high: float, log: bool) -> _Axis:
    """``values`` mapped linearly (or through log10) from ``[low, high]`` to ``[0, 1]``."""
    transform = math.log10 if log else float
    if not high > low:  # one value: the middle of the axis
        positions = [math.nan if math.isnan(v) else 0.5 for v in values]
        return _Axis(name, positions, [(0.5, format_value(float(low)))], log)
    span = transform(high) - transform(low)
    positions = [math.nan if math.isnan(v) else (transform(v) - transform(low)) / span
                 for v in values]  # fmt: skip
    return _Axis(name, positions, [(0.0, format_value(low)), (1.0, format_value(high))], log)


def _parameter_axis(parameter: Parameter, trials: Sequence[FrozenTrial]) -> _Axis:
    positions = _positions(parameter, trials)
    if not parameter.is_numeric:
        texts = [str(choice) for choice in parameter.choices]
        if len(texts) == 1:  # one value: the middle of the axis (NaN stays missing)
            positions = [p + 0.5 for p in positions]
            return _Axis(parameter.path, positions, [(0.5, texts[0])], categorical=True)
        last = len(texts) - 1
        ticks = [(index / last, text) for index, text in enumerate(texts)]
        return _Axis(parameter.path, [p / last for p in positions], ticks, categorical=True)
    seen = [p for p in positions if not math.isnan(p)]
    low, high = min([parameter.low, *seen]), max([parameter.high, *seen])
    if parameter.kind != "int":
        low, high = float(low), float(high)
    return _scaled_axis(parameter.path, positions, low, high, parameter.log)


def _parallel_figure(trials: Sequence[FrozenTrial], spec: SearchSpec) -> Figure | None:
    """Parallel coordinates of the complete trials; None without any.

    The figure's label describes each axis (its range or values, its scale) for the
    image's alt text.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection

    completed = _completed(trials, spec.direction)[::-1]  # worst first: the best on top
    if not completed:
        return None
    values = [float(trial.value or 0.0) for trial in completed]
    metric = _scaled_axis(spec.metric, values, min(values), max(values), _is_wide(values))
    axes_data = [*(_parameter_axis(p, completed) for p in spec.parameters), metric]
    xs = np.arange(len(axes_data), dtype=np.float64)
    lines = [np.column_stack([xs, [axis.positions[i] for axis in axes_data]])
             for i in range(len(completed))]  # fmt: skip
    figure = _new_figure(max(6.0, 1.5 * len(axes_data) + 2.0), 3.8)
    figure.set_label("; ".join(axis.describe() for axis in axes_data)
                     + f"; {len(completed)} complete trials")  # fmt: skip
    axes = figure.add_axes((0.04, 0.14, 0.8, 0.8))
    colorbar_axes = figure.add_axes((0.9, 0.14, 0.02, 0.8))
    cmap = colormaps["viridis" if spec.direction == "minimize" else "viridis_r"]
    norm = _color_norm(values, log=metric.log)
    axes.add_collection(
        LineCollection(lines, colors=cmap(norm(values)), linewidths=1.2, alpha=0.85)
    )
    axes.vlines(xs, 0, 1, color="k", linewidth=0.8)
    for x, axis in zip(xs, axes_data, strict=True):
        for position, text in axis.ticks:
            axes.text(
                x + 0.04,
                position,
                _no_mathtext(text),
                fontsize=7,
                va="center",
                ha="left",
                bbox={"facecolor": "white", "alpha": 0.75, "pad": 0.5, "lw": 0},
            )
    axes.set_xticks(xs, [_no_mathtext(axis.name) for axis in axes_data], fontsize="small")
    axes.set_yticks([])
    axes.set_xlim(-0.15, len(axes_data) - 0.6)
    axes.set_ylim(-0.06, 1.06)
    for side in ("left", "right", "top"):
        axes.spines[side].set_visible(False)
    figure.colorbar(
        ScalarMappable(norm=norm, cmap=cmap), cax=colorbar_axes, label=_no_mathtext(spec.metric)
    )
    return figure


def _color_norm(values: Sequence[float], *, log: bool) -> Any:
    from matplotlib.colors import LogNorm, Normalize

    low, high = min(values), max(values)
    if log:
        return LogNorm(low, high)
    if low == high:  # one colour; a colorbar needs a range
        pad = max(abs(low) * 0.05, 0.5)
        low, high = low - pad, high + pad
    return Normalize(low, high)


def _stages_figure(stages: Sequence[StageRanges], spec: SearchSpec) -> Figure | None:
    """Each parameter's range per stage as horizontal bars; None without stages."""
    if not stages:
        return None
    count = len(spec.parameters)
    height = 0.3 * len(stages) + 0.75
    figure = _new_figure(7, height * count + 0.3)
    figure.subplots_adjust(left=0.14, right=0.97, top=1 - 0.35 / (height * count + 0.3),
                           bottom=0.45 / (height * count + 0.3), hspace=1.0)  # fmt: skip
    for axes, parameter in zip(figure.subplots(count, 1, squeeze=False)[:, 0],
                               spec.parameters, strict=True):  # fmt: skip
        _draw_ranges(axes, parameter, stages)
    return figure


def _draw_ranges(axes: Axes, parameter: Parameter, stages: Sequence[StageRanges]) -> None:
    if parameter.is_numeric and parameter.log:
        axes.set_xscale("log")
    for stage in stages:
        narrowed = _find(stage.parameters, parameter.path)
        if narrowed is None:
            continue
        color = f"C{stage.index}"
        if not parameter.is_numeric:
            indices = [_choice_index(parameter, value) for value in narrowed.choices]
            for index in (i for i in indices if i is not None):
                axes.barh(stage.index, 0.7, left=index - 0.35, height=0.6, color=color)
        elif narrowed.low < narrowed.high:
            axes.barh(stage.index, narrowed.high - narrowed.low, left=narrowed.low, height=0.6,
                      color=color)  # fmt: skip
        else:
            axes.plot([narrowed.low], [stage.index], "D", color=color)
    if parameter.is_numeric:
        axes.set_xlim(*_padded(parameter.low, parameter.high, log=parameter.log))
    else:
        axes.set_xticks(range(len(parameter.choices)), [_no_mathtext(c) for c in parameter.choices])
        axes.set_xlim(-0.5, len(parameter.choices) - 0.5)
    axes.set_yticks([stage.index for stage in stages], [f"stage {s.index}" for s in stages])
    axes.set_ylim(max(stage.index for stage in stages) + 0.6, min(s.index for s in stages) - 0.6)
    axes.set_title(_no_mathtext(parameter.path), fontsize="small", loc="left")
    axes.tick_params(labelsize="x-small")
    axes.grid(alpha=0.3, axis="x")
