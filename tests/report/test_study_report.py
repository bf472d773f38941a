"""The study report of gradwise search: the leaderboard and report.html."""

import base64
import html
import math
import random
import re
import struct
from html.parser import HTMLParser

import pytest
from optuna.trial import TrialState, create_trial

from gradwise.report import build_study_report, leaderboard_table
from gradwise.search import parse_search, stage_ranges

SPACE = {
    "optimizer.lr": {"log_uniform": [1e-4, 1e-1]},
    "model.depth": {"grid": [1, 2, 3]},
    "data.batch_size": {"categorical": [32, 64]},
}
SECTIONS = ["Summary", "Leaderboard", "Optimization history", "Hyperparameters",
            "Parallel coordinates"]  # fmt: skip
IMAGE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">')
NOTHING_TO_PLOT = "Nothing to plot."


@pytest.fixture(scope="module")
def spec():
    return parse_search({"search": {"space": SPACE}, "epochs": 2})


@pytest.fixture(scope="module")
def accuracy_spec():
    return parse_search({"search": {"space": SPACE, "metric": "val_accuracy"}, "epochs": 2})


def make_trial(spec, number, state=TrialState.COMPLETE, value=None, intermediate=None,
               params=None, retry_of=None, **attrs):  # fmt: skip
    """A real FrozenTrial of ``spec``'s space (random params unless given).

    ``retry_of``: the numbers of the attempts before this one (its retry chain's first
    trial first), recorded as Optuna's RetryHeartbeatStaleTrialCallback records them.
    """
    rng = random.Random(number)
    if params is None:
        params = {"optimizer.lr": 10 ** rng.uniform(-4, -1), "model.depth": rng.choice([1, 2, 3]),
                  "data.batch_size": rng.choice([32, 64])}  # fmt: skip
    distributions = {path: spec.parameter(path).distribution() for path in params}
    first = number if retry_of is None else retry_of[0]
    user_attrs = {"epochs": 2, "run": f"trials/trial-{first:04d}", **attrs}
    system_attrs = {} if retry_of is None else {"failed_trial": first,
                                                "retry_history": list(retry_of)}  # fmt: skip
    trial = create_trial(state=state, value=value, params=params, distributions=distributions,
                         intermediate_values=intermediate or {}, user_attrs=user_attrs,
                         system_attrs=system_attrs)  # fmt: skip
    trial.number = number
    return trial


def mixed_trials(spec, seed=0, values=None):
    """Complete (random values), pruned, failed, interrupted (failed without a reason of
    its own: a Ctrl-C), running and waiting trials, shuffled."""
    rng = random.Random(seed)
    values = values or [rng.uniform(0.1, 2.0) for _ in range(8)]
    trials = [make_trial(spec, n, value=v) for n, v in enumerate(values)]
    count = len(trials)
    for n in range(count, count + 3):
        trials.append(make_trial(spec, n, TrialState.PRUNED, intermediate={
            1: rng.uniform(0.1, 2.0), 2: rng.uniform(0.1, 2.0)}))  # fmt: skip
    trials.append(make_trial(spec, count + 3, TrialState.FAIL, fail_reason="CUDA out of memory"))
    trials.append(make_trial(spec, count + 4, TrialState.FAIL))
    trials.append(make_trial(spec, count + 5, TrialState.RUNNING))
    trials.append(make_trial(spec, count + 6, TrialState.WAITING))
    rng.shuffle(trials)
    return trials


def rows_by_column(table):
    data = table.to_dict()
    return [dict(zip(data["columns"], row, strict=True)) for row in data["values"]]


# -- the leaderboard -----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["spec", "accuracy_spec"])
def test_leaderboard_ranks_complete_then_pruned_then_failed(which, request):
    spec = request.getfixturevalue(which)
    assert spec.direction == ("minimize" if which == "spec" else "maximize")
    trials = mixed_trials(spec)
    best_first = spec.direction == "maximize"
    by_state = {state: [t for t in trials if t.state == state] for state in TrialState}
    complete = sorted(by_state[TrialState.COMPLETE], key=lambda t: t.value, reverse=best_first)
    pruned = sorted(by_state[TrialState.PRUNED], key=lambda t: t.intermediate_values[2],
                    reverse=best_first)  # fmt: skip
    (failed,) = [t for t in by_state[TrialState.FAIL] if "fail_reason" in t.user_attrs]
    (interrupted,) = [t for t in by_state[TrialState.FAIL] if "fail_reason" not in t.user_attrs]
    expected = [t.number for t in complete + pruned + [failed, interrupted]]

    rows = rows_by_column(leaderboard_table(trials, spec))

    assert [row["trial"] for row in rows] == expected
    assert [row["rank"] for row in rows] == [*range(1, len(expected)), None]
    states = [row["state"] for row in rows]
    # No running or waiting trial; the interrupted attempt last, not ranked.
    assert states == ["complete"] * 8 + ["pruned"] * 3 + ["failed", "interrupted"]
    assert [row[spec.metric] for row in rows[:8]] == [t.value for t in complete]
    assert [row[spec.metric] for row in rows[8:11]] == [t.intermediate_values[2] for t in pruned]


def test_leaderboard_puts_missing_values_last_in_their_group_and_infinite_results_last(spec):
    trials = [
        make_trial(spec, 0, value=math.inf),
        make_trial(spec, 1, value=0.5),
        make_trial(spec, 2, TrialState.PRUNED),  # pruned before its first epoch ended
        make_trial(spec, 3, TrialState.PRUNED, intermediate={1: 0.4, 2: math.nan}),
        make_trial(spec, 4, TrialState.PRUNED, intermediate={1: 0.9}),
    ]
    rows = rows_by_column(leaderboard_table(trials, spec))
    assert [row["trial"] for row in rows] == [1, 4, 2, 3, 0]
    assert [row["rank"] for row in rows] == [1, 2, 3, 4, None]  # inf: no valid result
    assert rows[-1]["val_loss"] is None  # strict JSON: inf becomes null
    assert leaderboard_table(trials, spec).to_dict()["rows"][-1][:4] == [
        "-",
        "0",
        "complete",
        "inf",
    ]


@pytest.mark.parametrize("which", ["spec", "accuracy_spec"])
@pytest.mark.parametrize("infinite", [math.inf, -math.inf])
def test_a_complete_trial_with_an_infinite_value_is_never_ranked_nor_the_best(
    which, infinite, request, tmp_path
):
    # QA: a complete trial whose value was inf (a diverged run's loss) was ranked #1 when no
    # other trial completed, while the summary said there was no best trial; beside a
    # finite one, it was ranked too. The rule: a non-finite value is no valid result.
    spec = request.getfixturevalue(which)
    metric = spec.metric
    trials = [
        make_trial(spec, 0, TrialState.FAIL, fail_reason="CUDA out of memory"),
        make_trial(spec, 1, value=infinite),
        make_trial(spec, 2, TrialState.PRUNED, intermediate={1: 0.5}),
    ]
    table = leaderboard_table(trials, spec)
    assert table.title == f"Trials (none completed with a finite {metric}, so none is ranked)"
    assert "rank" not in table.columns
    rows = rows_by_column(table)
    assert [row["trial"] for row in rows] == [0, 1, 2]  # by number
    assert rows[1]["note"] == (
        f"{metric} {infinite} is not finite (a diverged run?): no valid result, not ranked"
    )
    page = report(tmp_path, trials, spec)
    assert "best trial" not in dict(Page(page).table("Study")["rows"][1:])
    summary = " ".join(section_text(page, "Summary").split())
    assert f"No trial completed with a finite {metric}: every trial ended" in summary
    leaderboard = " ".join(section_text(page, "Leaderboard").split())
    assert leaderboard.startswith(
        f"Leaderboard No trial completed with a finite {metric} (1 failed, 1 pruned, 1 complete "
        f"without a finite {metric}), so there is no best trial and none is ranked"
    )

    # Beside finite results, it comes after every ranked trial, unranked; the best trial of
    # the summary is the leaderboard's first.
    trials += [make_trial(spec, 3, value=0.4), make_trial(spec, 4, value=0.6)]
    table = leaderboard_table(trials, spec)
    assert table.title.endswith(
        f"(5 finished trials; 1 with a {metric} that is not finite, unranked)"
    )
    rows = rows_by_column(table)
    best = 3 if spec.direction == "minimize" else 4
    assert [row["trial"] for row in rows] == [best, 7 - best, 2, 0, 1]
    assert [row["rank"] for row in rows] == [1, 2, 3, 4, None]
    parsed = Page(report(tmp_path, trials, spec))
    study = dict(parsed.table("Study")["rows"][1:])
    assert study["best trial"] == str(best)
    assert study[f"complete, {metric} not finite (unranked)"] == "1"
    assert parsed.table("Leaderboard")["rows"][1][:2] == ["1", str(best)]


def test_leaderboard_limit_keeps_the_top_rows(spec):
    trials = mixed_trials(spec, seed=1)
    full = leaderboard_table(trials, spec).to_dict()
    top = leaderboard_table(trials, spec, limit=3).to_dict()
    assert top["rows"] == full["rows"][:3]
    assert (
        "top 3 of 12 finished trials; 1 interrupted attempt(s), unranked (0 shown)"
        in (top["title"])
    )
    assert leaderboard_table(trials, spec, limit=100).to_dict()["rows"] == full["rows"]


def test_leaderboard_columns_and_cells(spec):
    trials = mixed_trials(spec, seed=2)
    table = leaderboard_table(trials, spec)
    assert list(table.columns) == ["rank", "trial", "state", "val_loss", "optimizer.lr",
                                   "model.depth", "data.batch_size", "epochs", "run", "note"]  # fmt: skip
    by_number = {trial.number: trial for trial in trials}
    for row in rows_by_column(table):
        trial = by_number[row["trial"]]
        assert {path: row[path] for path in SPACE} == trial.params
        assert row["epochs"] == 2
        assert row["run"] == f"trials/trial-{trial.number:04d}"


def test_leaderboard_notes_say_why_a_trial_failed_or_when_it_was_pruned(spec):
    trials = [
        make_trial(spec, 0, value=0.3),
        make_trial(spec, 1, TrialState.FAIL, fail_reason="CUDA out of memory"),
        # The last attempt of trial 2, stopped (a study from before such attempts recorded
        # why): failed for good, without a reason.
        make_trial(spec, 5, TrialState.FAIL, retry_of=[2, 3, 4]),
        make_trial(spec, 6, TrialState.PRUNED, intermediate={1: 0.9, 3: 0.8}),
    ]
    notes = {row["trial"]: row["note"] for row in rows_by_column(leaderboard_table(trials, spec))}
    assert notes[0] is None
    assert notes[1] == "CUDA out of memory"
    assert "no reason recorded" in notes[5]
    assert notes[6] == "pruned at epoch 4"  # Optuna's step 3 is the fourth epoch
    assert "CUDA out of memory" in leaderboard_table(trials, spec).render_text()


def _ctrl_c_then_resume(spec):
    """A study of 5 trials whose trial 2 was stopped by a Ctrl-C: its trials after the
    Ctrl-C, and after the resume (trial 2 retried as trial 4, which was stopped too and
    retried as trial 5; one more new trial)."""
    before = [
        make_trial(spec, 0, value=0.5),
        make_trial(spec, 1, TrialState.FAIL, fail_reason="diverged at step 3"),
        make_trial(spec, 2, TrialState.FAIL),  # Ctrl-C: no reason of its own
        make_trial(spec, 3, value=0.4),
    ]
    after = [
        *before,
        make_trial(spec, 4, TrialState.FAIL, retry_of=[2]),
        make_trial(spec, 5, value=0.3, retry_of=[2, 4]),
        make_trial(spec, 6, value=0.6),
    ]
    return before, after


def test_an_interrupted_attempt_is_listed_as_interrupted_not_as_a_failed_finished_trial(spec):
    # QA: after a Ctrl-C the leaderboard read "(3 finished trials)" with a failed row "no
    # reason recorded" while the progress line said "0 failed"; after the resume, "(6
    # finished trials)" of a budget of 5, the attempt and its retry both in
    # trials/trial-0002. An interrupted attempt did not finish: it is listed last, unranked.
    before, after = _ctrl_c_then_resume(spec)
    table = leaderboard_table(before, spec)
    assert table.title == (
        "Leaderboard: val_loss, lower is better (3 finished trials; 1 interrupted attempt(s), "
        "unranked)"
    )
    rows = rows_by_column(table)
    assert [(row["rank"], row["trial"], row["state"]) for row in rows] == [
        (1, 3, "complete"), (2, 0, "complete"), (3, 1, "failed"), (None, 2, "interrupted"),
    ]  # fmt: skip
    assert rows[-1]["note"] == "interrupted; retried on resume"

    table = leaderboard_table(after, spec)
    assert table.title == (
        "Leaderboard: val_loss, lower is better (5 finished trials; 2 interrupted attempt(s), "
        "unranked)"
    )
    rows = rows_by_column(table)
    assert [(row["rank"], row["trial"], row["state"]) for row in rows] == [
        (1, 5, "complete"), (2, 3, "complete"), (3, 0, "complete"), (4, 6, "complete"),
        (5, 1, "failed"), (None, 2, "interrupted"), (None, 4, "interrupted"),
    ]  # fmt: skip
    notes = {row["trial"]: row["note"] for row in rows}
    assert notes[2] == "interrupted; retried as trial 4"
    assert notes[4] == "interrupted; retried as trial 5"
    assert {row["run"] for row in rows if row["trial"] in (2, 4, 5)} == {"trials/trial-0002"}


def test_an_attempt_stopped_with_no_retry_left_stays_failed(spec):
    trials = [
        make_trial(spec, 0, value=0.5),
        make_trial(spec, 1, TrialState.FAIL),
        *(make_trial(spec, n, TrialState.FAIL, retry_of=list(range(1, n))) for n in (2, 3)),
        make_trial(spec, 4, TrialState.FAIL, retry_of=[1, 2, 3],
                   fail_reason="interrupted on all 4 attempts (Ctrl-C or a killed worker)"),
    ]  # fmt: skip
    table = leaderboard_table(trials, spec)
    assert "(2 finished trials; 3 interrupted attempt(s), unranked)" in table.title
    rows = {row["trial"]: row for row in rows_by_column(table)}
    assert [rows[n]["state"] for n in range(5)] == ["complete", *["interrupted"] * 3, "failed"]
    assert rows[4]["note"].startswith("interrupted on all 4 attempts")
    assert rows[3]["note"] == "interrupted; retried as trial 4"


def test_the_summary_counts_interrupted_attempts_apart_from_failed_ones(spec, tmp_path):
    # The report's summary agreed with the leaderboard, not with the progress line: each
    # attempt stopped by a Ctrl-C counted as failed.
    before, after = _ctrl_c_then_resume(spec)
    for trials, interrupted in ((before, "1"), (after, "2")):
        study = dict(Page(report(tmp_path, trials, spec)).table("Study")["rows"][1:])
        assert (study["trials"], study["failed"], study["interrupted"]) == (
            str(len(trials)), "1", interrupted,
        )  # fmt: skip
    # None completed: the sentence counts them so too.
    trials = [make_trial(spec, 0, TrialState.FAIL, fail_reason="diverged"),
              make_trial(spec, 1, TrialState.FAIL)]  # fmt: skip
    page = report(tmp_path, trials, spec)
    summary = " ".join(section_text(page, "Summary").split())
    assert "every trial ended (2 in all: 1 failed, 0 pruned, 1 interrupted)" in summary
    table = leaderboard_table(trials, spec)
    assert table.title == "Trials (none completed, so none is ranked)"
    assert [row["state"] for row in rows_by_column(table)] == ["failed", "interrupted"]


def test_leaderboard_has_a_stage_column_only_in_coarse_to_fine(spec):
    assert "stage" not in leaderboard_table([make_trial(spec, 0, value=1.0)], spec).columns
    trials = [make_trial(spec, 0, value=1.0, stage=0), make_trial(spec, 1, value=0.5, stage=1)]
    table = leaderboard_table(trials, spec)
    assert table.columns[-4:] == ("epochs", "stage", "run", "note")
    assert [row["stage"] for row in rows_by_column(table)] == [1, 0]


def test_bad_arguments_raise_the_one_error_format(spec, tmp_path):
    trial = make_trial(spec, 0, value=1.0)
    with pytest.raises(ValueError, match=r"^The 'limit' parameter of leaderboard_table must "
                       r"be None or an int >= 1\. Got 0 instead\.$"):  # fmt: skip
        leaderboard_table([trial], spec, limit=0)
    with pytest.raises(ValueError, match="'trials' parameter of leaderboard_table"):
        leaderboard_table([{"value": 1.0}], spec)
    with pytest.raises(ValueError, match="'spec' parameter of leaderboard_table"):
        leaderboard_table([trial], {"metric": "val_loss"})
    with pytest.raises(ValueError, match="'folder' parameter of build_study_report must be an "
                       "existing folder"):  # fmt: skip
        build_study_report(tmp_path / "missing", [trial], spec, title="t")
    with pytest.raises(ValueError, match="'extra' parameter of build_study_report"):
        build_study_report(tmp_path, [trial], spec, title="t", extra={"storage": object()})
    with pytest.raises(ValueError, match=r"^The 'unfinished' parameter of build_study_report "
                       r"must be None or a str\. Got True instead\.$"):  # fmt: skip
        build_study_report(tmp_path, [trial], spec, title="t", unfinished=True)
    assert not (tmp_path / "report.html").exists()


# -- report.html ---------------------------------------------------------------------------


class Page(HTMLParser):
    """Section headings, tables (caption and cells) and image alt texts of a page."""

    def __init__(self, text):
        super().__init__()
        self.headings, self.tables, self._tag = [], [], None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        if tag == "table":
            self.tables.append({"caption": "", "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self.tables[-1]["rows"][-1].append("")

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        if self._tag == "h2":
            self.headings.append(data)
        elif self._tag == "caption":
            self.tables[-1]["caption"] += data
        elif self._tag in ("td", "th"):
            self.tables[-1]["rows"][-1][-1] += data

    def table(self, caption_start):
        return next(t for t in self.tables if t["caption"].startswith(caption_start))


def images(page):
    """(PNG width, height, alt) of every inline image, checking each is a real PNG."""
    found = []
    for data, alt in IMAGE.findall(page):
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        found.append((width, height, alt))
    return found


def report(tmp_path, trials, spec, **kwargs):
    path = build_study_report(tmp_path, trials, spec, title="lr-sweep", **kwargs)
    assert path == tmp_path / "report.html"
    return path.read_text(encoding="utf-8")


def test_report_is_one_self_contained_page(spec, tmp_path):
    trials = mixed_trials(spec, seed=3)
    page = report(tmp_path, trials, spec, extra={"strategy": "random",
                                                 "storage": "sqlite:///study.db"})  # fmt: skip
    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")
    assert not re.search(r"https?://|<script|<link|\bhref=", page)
    assert re.findall(r'\bsrc="([^"]{5})', page) == ["data:"] * page.count("<img")
    parsed = Page(page)
    assert parsed.headings == SECTIONS
    assert "lr-sweep" in page
    shown = images(page)
    assert len(shown) == 3  # history, hyperparameters, parallel coordinates
    assert all(width > 300 and height > 150 for width, height, _ in shown)
    for path in SPACE:
        assert path in shown[1][2]
        assert path in shown[2][2]

    study = dict(parsed.table("Study")["rows"][1:])
    best = min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert study["best trial"] == str(best.number)
    assert study["best run"] == best.user_attrs["run"]
    assert study["best optimizer.lr"] == f"{best.params['optimizer.lr']:.4g}"
    names = ("complete", "pruned", "failed", "interrupted", "running", "waiting")
    counts = {name: study[name] for name in names}
    assert counts == {"complete": "8", "pruned": "3", "failed": "1", "interrupted": "1",
                      "running": "1", "waiting": "1"}  # fmt: skip
    assert dict(parsed.table("Settings")["rows"][1:]) == {"strategy": "random",
                                                          "storage": "sqlite:///study.db"}  # fmt: skip
    leaderboard = parsed.table("Leaderboard")["rows"]
    assert leaderboard[1][1] == str(best.number)
    assert len(leaderboard) == 1 + 13
    assert "CUDA out of memory" in page


def test_report_leaderboard_is_capped_at_25_rows(spec, tmp_path):
    trials = [make_trial(spec, n, value=1.0 + n) for n in range(30)]
    rows = Page(report(tmp_path, trials, spec)).table("Leaderboard")["rows"]
    assert [row[1] for row in rows[1:]] == [str(n) for n in range(25)]


def test_axes_are_logarithmic_where_the_space_or_the_values_call_for_it(spec, tmp_path):
    """The alt texts are read back from the drawn Axes: log x for log_uniform only."""
    wide = [make_trial(spec, n, value=v) for n, v in enumerate([0.05, 0.3, 2.0, 0.1])]
    page = report(tmp_path, wide, spec)
    history, parameters, parallel = (alt for _, _, alt in images(page))
    for parameter in spec.parameters:
        scale = "log" if parameter.log else "linear"
        assert f"{parameter.path} ({scale} x axis, log y axis)" in parameters
    assert "(linear x axis, log y axis)" in history  # 40x: more than a decade
    assert "optimizer.lr from 0.0001 to 0.1 (log scale)" in parallel
    assert "model.depth: 1, 2, 3" in parallel
    assert "data.batch_size: 32, 64" in parallel
    assert "val_loss from 0.05 to 2 (log scale)" in parallel

    narrow = [make_trial(spec, n, value=v) for n, v in enumerate([0.3, 0.5, 2.0])]
    history, parameters, parallel = (alt for _, _, alt in images(report(tmp_path, narrow, spec)))
    assert "(linear x axis, linear y axis)" in history  # 6.7x
    assert "optimizer.lr (log x axis, linear y axis)" in parameters
    assert "val_loss from 0.3 to 2;" in parallel


def test_coarse_to_fine_report_shows_the_stages(tmp_path):
    search = {"space": SPACE, "stages": [{"epochs": 1, "trials": 6}, {"epochs": 2, "trials": 4}],
              "keep": 2}  # fmt: skip
    spec = parse_search({"search": search, "epochs": 2})
    trials = [make_trial(spec, n, value=0.1 * (n + 1), stage=0, epochs=1) for n in range(6)]
    stages = stage_ranges(spec, trials)
    assert len(stages) == 2
    assert stages[1].kept == (0, 1)
    trials += [make_trial(spec, n, value=0.05 * n, stage=1, params=dict(trials[n - 6].params))
               for n in range(6, 9)]  # fmt: skip

    page = report(tmp_path, trials, spec, stages=stages)
    parsed = Page(page)
    assert parsed.headings == [*SECTIONS, "Coarse-to-fine stages"]
    shown = images(page)
    assert len(shown) == 4
    assert "optimizer.lr (log x axis" in shown[3][2]
    for stage in stages:
        table = dict(parsed.table(f"Stage {stage.index}")["rows"][1:])
        assert table["epochs"] == str(stage.stage.epochs)
        assert table["trials run"] == str(6 if stage.index == 0 else 3)
        for parameter in stage.parameters:
            assert table[parameter.path] == parameter.describe()
    assert dict(parsed.table("Stage 1")["rows"][1:])["tightened around trials"] == "0, 1"
    assert parsed.table("Leaderboard")["rows"][0][-4:] == ["epochs", "stage", "run", "note"]


@pytest.mark.parametrize(
    "case",
    [
        "no trials",
        "only failed",
        "only running",
        "pruned without values",
        "all values equal",
        "one trial",
    ],  # fmt: skip
)
def test_degenerate_studies_still_make_a_report(case, spec, tmp_path):
    trials = {
        "no trials": [],
        "only failed": [make_trial(spec, n, TrialState.FAIL, fail_reason="boom") for n in range(3)],
        "only running": [make_trial(spec, 0, TrialState.RUNNING)],
        "pruned without values": [make_trial(spec, 0, TrialState.PRUNED),
                                  make_trial(spec, 1, TrialState.FAIL)],
        "all values equal": [make_trial(spec, n, value=0.7) for n in range(4)],
        "one trial": [make_trial(spec, 0, value=0.7)],
    }[case]  # fmt: skip
    page = report(tmp_path, trials, spec)
    assert Page(page).headings == SECTIONS
    completed = any(trial.state == TrialState.COMPLETE for trial in trials)
    assert len(images(page)) == (3 if completed else 0)
    assert (NOTHING_TO_PLOT in page) is not completed


def test_one_parameter_and_a_missing_value(tmp_path):
    spec = parse_search({"search": {"space": {"model.depth": {"int": [1, 8], "log": True}}},
                         "epochs": 1})  # fmt: skip
    trials = [make_trial(spec, n, value=0.2 * n + 0.1, params={"model.depth": 2 ** n})
              for n in range(4)]  # fmt: skip
    trials.append(make_trial(spec, 4, value=0.9, params={}))  # its parameter is missing
    page = report(tmp_path, trials, spec)
    history, parameters, parallel = (alt for _, _, alt in images(page))
    assert parameters.endswith("model.depth (log x axis, linear y axis)")
    assert "model.depth from 1 to 8 (log scale)" in parallel
    assert "5 complete trials" in parallel
    row = Page(page).table("Leaderboard")["rows"][-1]
    assert row[1] == "4"
    assert row[4] == "-"


def test_pruned_trials_alone_make_a_history_but_no_other_plot(spec, tmp_path):
    trials = [make_trial(spec, n, TrialState.PRUNED, intermediate={1: 0.5 + n}) for n in range(3)]
    page = report(tmp_path, trials, spec)
    (history,) = (alt for _, _, alt in images(page))
    assert history.startswith("Optimization history: val_loss")
    assert page.count(NOTHING_TO_PLOT) == 2  # hyperparameters, parallel coordinates
    assert "No trial completed: every trial ended" in section_text(page, "Summary")


def section_text(page, title):
    """The text of the section headed ``title``, tags stripped."""
    start = page.index(f"<h2>{title}</h2>")
    return re.sub(r"<[^>]+>", " ", page[start : page.index("</section>", start)])


@pytest.mark.parametrize(
    ("others", "said"),
    [
        ([], "No trial completed: every trial ended (3 in all: 2 failed, 1 pruned), so "
             "there is no best trial."),
        ([TrialState.RUNNING, TrialState.WAITING],
         "No trial has completed yet (1 running, 1 waiting; so far 2 failed, 1 pruned)."),
        ([TrialState.COMPLETE],
         "No trial completed with a finite val_loss: every trial ended (4 in all: 2 failed, "
         "1 pruned, 1 complete without a finite val_loss), so there is no best trial."),
    ],
    ids=["finished", "running", "infinite"],
)  # fmt: skip
def test_the_summary_without_a_completed_trial_says_whether_the_study_ended(
    others, said, spec, tmp_path
):
    # QA: a study whose trials all failed or were pruned, and that had ended, said "No
    # completed trials yet." in its summary, as if some trial might still complete.
    trials = [
        make_trial(spec, 0, TrialState.FAIL, fail_reason="diverged"),
        make_trial(spec, 1, TrialState.PRUNED, intermediate={1: 0.5}),
        make_trial(spec, 2, TrialState.FAIL, fail_reason="CUDA out of memory"),
        *(make_trial(spec, 3 + n, state, value=math.inf if state == TrialState.COMPLETE
                     else None) for n, state in enumerate(others)),
    ]  # fmt: skip
    page = report(tmp_path, trials, spec)
    summary = " ".join(section_text(page, "Summary").split())
    assert said in summary
    assert "No completed trials yet." not in page
    tense = "No trial has completed yet." if "running" in said else "No trial completed."
    assert f"{tense} {NOTHING_TO_PLOT}" in section_text(page, "Hyperparameters")


@pytest.mark.parametrize("complete", [False, True], ids=["none complete", "one complete"])
def test_the_report_of_an_interrupted_study_says_so_and_how_to_resume(complete, spec, tmp_path):
    # QA: a study interrupted with budget left read "No trial completed: every trial ended"
    # and its page's status was "completed".
    said = (
        "the study was interrupted with budget left (3 of its 5 trials not started); run the "
        "same gradwise search command again to resume it"
    )
    trials = [
        make_trial(spec, 0, TrialState.FAIL, fail_reason="diverged"),
        make_trial(spec, 1, TrialState.FAIL),  # stopped by Ctrl-C: no reason of its own
        *([make_trial(spec, 2, value=0.5)] if complete else []),
    ]
    page = report(tmp_path, trials, spec, unfinished=said)
    summary = " ".join(section_text(page, "Summary").split())
    assert "every trial ended" not in page
    assert said in summary
    assert 'class="status status-interrupted">interrupted<' in page
    if complete:
        assert "best trial 2" in summary
    else:
        # The Ctrl-C'd trial is interrupted, not failed, as the search's progress line says.
        assert "No trial has completed yet (so far 1 failed, 0 pruned, 1 interrupted)." in summary
        assert f"No trial has completed yet. {NOTHING_TO_PLOT}" in section_text(
            page, "Hyperparameters"
        )
    # Without it (a study that ended: its budget used), as before.
    page = report(tmp_path, trials, spec)
    assert ("No trial completed: every trial ended" in page) is not complete
    assert 'class="status status-completed">completed<' in page


def test_the_summary_of_a_study_without_trials_says_none_has_run(spec, tmp_path):
    assert "No trial has run yet." in section_text(report(tmp_path, [], spec), "Summary")


def test_a_dollar_in_a_value_is_drawn_as_text_not_mathtext(tmp_path, monkeypatch):
    # Two "$" made matplotlib typeset the text between them ("$x$" as an italic x), and
    # a span that is no valid TeX ("$\frac$") raised ValueError: no report at all.
    from matplotlib import cbook
    from matplotlib.text import Text

    choices = ["$\\frac$", "$x$ and $y$", "cost 5$", "a\\$b"]
    space = {
        "data.dataset": {"categorical": choices},
        "optimizer.lr": {"log_uniform": [1e-4, 1e-1]},
    }
    search = {"space": space, "stages": [{"epochs": 1, "trials": 4}, {"epochs": 2, "trials": 2}]}
    spec = parse_search({"search": search, "epochs": 2})
    trials = [make_trial(spec, n, value=0.1 * (n + 1), stage=0, epochs=1,
                         params={"data.dataset": choice, "optimizer.lr": 10.0 ** -(n + 1)})
              for n, choice in enumerate(choices)]  # fmt: skip
    drawn = []
    draw = Text.draw

    def recording_draw(self, renderer):
        drawn.append(self.get_text())
        return draw(self, renderer)

    monkeypatch.setattr(Text, "draw", recording_draw)
    page = report(tmp_path, trials, spec, stages=stage_ranges(spec, trials))
    # matplotlib's own tick labels of a log axis are mathtext ("$\\mathdefault{10^{-4}}$").
    with_dollars = [text for text in drawn if "$" in text and "\\mathdefault{" not in text]
    assert with_dollars
    assert not [text for text in with_dollars if cbook.is_math_text(text)]
    shown = {text.replace("\\$", "$") for text in with_dollars}
    assert set(choices) <= shown  # tick labels of the scatter, the axis and the stages
    history, parameters, parallel, ranges = (alt for _, _, alt in images(page))
    assert f"data.dataset: {', '.join(choices)}" in html.unescape(parallel)


def _failed_and_pruned(spec):
    return [
        make_trial(spec, 2, TrialState.FAIL, fail_reason="diverged at step 3"),
        make_trial(spec, 0, TrialState.PRUNED, intermediate={1: 0.2}),
        make_trial(spec, 3, TrialState.RUNNING),
        make_trial(spec, 1, TrialState.FAIL, fail_reason="CUDA out of memory"),
    ]


def test_a_leaderboard_with_no_completed_trial_lists_them_by_number_unranked(spec):
    # QA: with no trial completed, failed and pruned trials were still ranked (rank 1 a
    # pruned trial, as if it were the best).
    table = leaderboard_table(_failed_and_pruned(spec), spec)
    assert table.title == "Trials (none completed, so none is ranked)"
    assert table.columns[:3] == ("trial", "state", "val_loss")
    assert [(row["trial"], row["state"]) for row in rows_by_column(table)] == [
        (0, "pruned"), (1, "failed"), (2, "failed"),
    ]  # fmt: skip
    first = leaderboard_table(_failed_and_pruned(spec), spec, limit=2)
    assert first.title == "Trials (none completed, so none is ranked; the first 2 of 3 by number)"
    assert [row["trial"] for row in rows_by_column(first)] == [0, 1]


@pytest.mark.parametrize("said", [None, "no trial completed (2 failed, 1 pruned); <why>"])
def test_the_report_leaderboard_with_no_completed_trial_says_so_and_ranks_none(
    spec, tmp_path, said
):
    page = report(tmp_path, _failed_and_pruned(spec), spec, none_completed=said)
    assert Page(page).headings == SECTIONS
    section = page[page.index("<h2>Leaderboard</h2>") :]
    section = section[: section.index("</section>")]
    expected = said or (
        "No trial completed (2 failed, 1 pruned), so there is no best trial and none is "
        "ranked: they are listed by number."
    )
    assert section.startswith(f"<h2>Leaderboard</h2>\n<p>{html.escape(expected)}</p>\n<table")
    rows = Page(page).table("Trials (none completed")["rows"]
    assert rows[0][:3] == ["trial", "state", "val_loss"]
    assert [row[0] for row in rows[1:]] == ["0", "1", "2"]
    assert "rank" not in rows[0]
    # A completed trial makes the ranked leaderboard, and the sentence is not shown.
    page = report(tmp_path, [*_failed_and_pruned(spec), make_trial(spec, 4, value=0.5)], spec)
    assert Page(page).table("Leaderboard")["rows"][0][0] == "rank"
    assert "none is ranked" not in page


@pytest.mark.parametrize("char", ["\u202e", "\u2067"])
def test_bidi_controls_outside_table_cells_are_escaped(spec, tmp_path, char):
    # As in the run report: before, the study's name went into the <title> and the heading
    # as it was, and "evil\u202egnp.exe - gradwise search" read "evilhcraes esidarg - exe.png".
    escape = f"\\u{ord(char):04x}"
    folder = tmp_path / f"study{char}dir"
    folder.mkdir()
    trials = [make_trial(spec, 0, TrialState.FAIL)]
    path = build_study_report(
        folder, trials, spec, title=f"evil{char}gnp.exe", none_completed=f"none{char}ranked",
        unfinished=f"resume{char}it",
    )  # fmt: skip
    page = path.read_text(encoding="utf-8")
    title = page.split("<title>")[1].split("</title>")[0]
    assert title == f"evil{escape}gnp.exe - gradwise search"
    assert f"<h1>evil{escape}gnp.exe <span" in page
    assert f"<p>none{escape}ranked</p>" in page
    assert f"<p>resume{escape}it</p>" in page
    assert f"study{escape}dir" in page  # the footer
    outside = re.sub(r"<(td|caption)>[^<]*</\1>", "", page)
    assert char not in outside


@pytest.mark.parametrize("complete", [False, True], ids=["none complete", "one complete"])
def test_the_report_of_a_study_a_search_runs_between_two_trials_says_running(
    complete, spec, tmp_path
):
    # Between two trials no trial is marked running: the page of a study that a search
    # was still running read "completed" (or "every trial ended").
    trials = [
        make_trial(spec, 0, TrialState.FAIL, fail_reason="diverged"),
        *([make_trial(spec, 1, value=0.5)] if complete else []),
    ]
    page = report(tmp_path, trials, spec, running=True)
    assert 'class="status status-running">running<' in page
    assert "every trial ended" not in page
    if not complete:
        summary = " ".join(section_text(page, "Summary").split())
        assert "No trial has completed yet (so far 1 failed, 0 pruned)." in summary
