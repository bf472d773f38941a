"""list_runs: the runs under a root, with their best metrics, oldest first."""

import os
import time

import pytest

from gradwise.report import runs_table
from gradwise.runs import RunFolder, RunInfo, list_runs, to_timestamp, write_summary


def make_run(root, name, summary=None, config=True):
    run = RunFolder.create(root, name, min_free_bytes=0)
    if config:
        run.config_path.write_text("model: mlp\n")
    if summary is not None:
        write_summary(run, summary)
    return run


def test_runs_are_listed_with_their_summary_fields_in_start_order(tmp_path):
    make_run(tmp_path, "b-later", {
        "status": "completed", "dataset": "mnist1d", "model": "cnn1d",
        "optimizer": {"name": "adam", "lr": 0.001}, "started": 2000.0, "duration_s": 12.5,
        "best": {"monitor": "val_accuracy", "mode": "max", "value": 0.9, "epoch": 4, "step": 40},
        "test": {"test_loss": 0.3, "test_accuracy": 0.88},
    })  # fmt: skip
    make_run(tmp_path, "a-earlier", {"status": "interrupted", "started": 1000.0})
    make_run(tmp_path, "c-iso", {"status": "running", "started": "1970-01-01T00:50:00+00:00"})
    runs = list_runs(tmp_path)
    assert [run.name for run in runs] == ["a-earlier", "b-later", "c-iso"]
    later = runs[1]
    assert later == RunInfo(
        name="b-later", path=tmp_path / "b-later", status="completed", dataset="mnist1d",
        model="cnn1d", optimizer="adam", monitor="val_accuracy", best_value=0.9,
        best_epoch=4, test_accuracy=0.88, duration_s=12.5, started=2000.0,
    )  # fmt: skip
    assert later.summary["optimizer"] == {"name": "adam", "lr": 0.001}
    assert runs[2].started == 3000.0


def test_folders_without_a_summary_or_config(tmp_path):
    config_only = make_run(tmp_path, "config-only")
    make_run(tmp_path, "summary-only", {"status": "failed", "started": 0.0}, config=False)
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "stray.txt").write_text("")
    damaged = make_run(tmp_path, "damaged")
    damaged.summary_path.write_text("{")
    os.utime(config_only.path, (10.0, 10.0))  # started unknown: sorted by folder time
    os.utime(damaged.path, (20.0, 20.0))
    runs = list_runs(tmp_path)
    assert [(run.name, run.status) for run in runs] == [
        ("summary-only", "failed"),
        ("config-only", "unknown"),
        ("damaged", "unknown"),
    ]
    assert runs[1].best_value is None
    assert runs[1].test_accuracy is None


def test_a_missing_root_has_no_runs(tmp_path):
    assert list_runs(tmp_path / "nowhere") == []


def test_bad_root_is_refused():
    with pytest.raises(ValueError, match=r"The 'root' parameter of list_runs must be a str or"):
        list_runs(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(12.5, 12.5), (7, 7.0), ("1970-01-01T00:00:10+00:00", 10.0), ("soon", None),
     (None, None), (True, None), (float("nan"), None)],
)  # fmt: skip
def test_to_timestamp(value, expected):
    assert to_timestamp(value) == expected


@pytest.fixture
def local_time_not_utc(monkeypatch):
    """The process in a time zone 5 h 30 min east of UTC (no daylight saving time)."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("local_time_not_utc")
def test_an_iso_time_without_an_offset_is_read_as_utc(tmp_path):
    # It was read as local time: the same summary listed 5.5 h apart on two machines, and
    # a naive start sorted among runs written with "+00:00" by the reader's time zone.
    assert time.localtime(0).tm_hour == 5  # the zone took effect
    assert to_timestamp("1970-01-01T01:00:00") == 3600.0
    assert to_timestamp("1970-01-01T01:00:00") == to_timestamp("1970-01-01T01:00:00+00:00")
    assert to_timestamp("1970-01-01T06:30:00+05:30") == 3600.0
    make_run(tmp_path, "aware", {"status": "completed", "started": "1970-01-01T02:00:00Z"})
    make_run(tmp_path, "naive", {"status": "completed", "started": "1970-01-01T01:00:00"})
    runs = list_runs(tmp_path)
    assert [(run.name, run.started) for run in runs] == [("naive", 3600.0), ("aware", 7200.0)]


def test_start_times_that_datetime_cannot_show_are_not_timestamps():
    milliseconds = 1_700_000_000_000.0  # time.time() * 1000: year ~55,800
    for value in (milliseconds, 1e300, -1e18, "9999-12-31T23:59:59-14:00", 10**400):
        assert to_timestamp(value) is None, value
    assert to_timestamp(1_700_000_000.0) == 1_700_000_000.0


def test_a_summary_with_out_of_range_numbers_is_listed_and_printed(tmp_path):
    # Summaries edited by hand or written by another tool: a start in milliseconds, ints
    # beyond the float range. The listing and `gradwise runs` show them instead of failing.
    make_run(tmp_path, "millis", {"status": "completed", "started": 1_700_000_000_000})
    make_run(tmp_path, "huge", {
        "status": "failed", "started": 1000.0, "duration_s": 10**400,
        "best": {"monitor": "val_loss", "value": -(10**400), "epoch": 2},
    })  # fmt: skip
    os.utime(tmp_path / "millis", (5000.0, 5000.0))
    runs = list_runs(tmp_path)
    assert [(run.name, run.status, run.started) for run in runs] == [
        ("huge", "failed", 1000.0),
        ("millis", "completed", None),  # sorted by its folder's time
    ]
    assert runs[0].duration_s is None
    assert runs[0].best_value is None
    assert runs[0].best_epoch == 2
    text = runs_table(runs).render_text()
    assert "millis" in text
    assert "huge" in text


def test_a_summary_nested_too_deeply_is_listed_as_unknown(tmp_path):
    make_run(tmp_path, "good", {"status": "completed", "started": 1000.0})
    deep = make_run(tmp_path, "deep")
    deep.summary_path.write_text("[" * 100_000)
    assert [(run.name, run.status) for run in list_runs(tmp_path)] == [
        ("good", "completed"),
        ("deep", "unknown"),
    ]
