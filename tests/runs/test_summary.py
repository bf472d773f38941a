"""summary.json and config.yaml: whole-file atomic rewrites that round-trip."""

import enum
import json
import math
import os
import re
from collections import ChainMap
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
import yaml

from gradwise.runs import (
    STATUSES,
    RunFolder,
    RunFolderError,
    read_config,
    read_summary,
    write_config,
    write_summary,
)

SUMMARY = {
    "name": "mnist1d-cnn1d-20261122-081500",
    "status": "completed",
    "dataset": "mnist1d",
    "model": "cnn1d",
    "optimizer": "adam",
    "num_parameters": 12_345,
    "epochs": 20,
    "steps": 4000,
    "duration_s": 61.5,
    "started": 1795334400.0,
    "finished": 1795334461.5,
    "best": {"monitor": "val_accuracy", "mode": "max", "value": 0.91, "epoch": 17, "step": 3600},
    "final": {"train_loss": 0.2, "val_loss": 0.31, "train_accuracy": 0.95, "val_accuracy": 0.9},
    "test": {"test_loss": 0.3, "test_accuracy": 0.9},
    "message": None,
}


@pytest.fixture
def run(tmp_path):
    return RunFolder.create(tmp_path, "r", min_free_bytes=0)


def test_summary_round_trips(run):
    write_summary(run, SUMMARY)
    assert read_summary(run) == SUMMARY
    assert json.loads(run.summary_path.read_text()) == SUMMARY  # plain JSON on disk
    assert read_summary(run.path) == read_summary(str(run.path)) == SUMMARY


def test_summary_rewrite_replaces_the_file_atomically(run):
    write_summary(run, {"status": "running"})
    inode = run.summary_path.stat().st_ino
    write_summary(run, {**SUMMARY, "status": "diverged", "best": {"value": math.nan}})
    assert read_summary(run)["status"] == "diverged"
    assert math.isnan(read_summary(run)["best"]["value"])
    assert run.summary_path.stat().st_ino != inode  # a new file renamed over the old one
    assert sorted(p.name for p in run.path.iterdir()) == ["checkpoints", "summary.json"]


def test_a_failed_summary_write_leaves_the_old_summary(run):
    write_summary(run, SUMMARY)
    with pytest.raises(ValueError, match=r"^The 'summary' parameter of write_summary must"):
        write_summary(run, {"status": "running", "bad": object()})
    assert read_summary(run) == SUMMARY
    assert sorted(p.name for p in run.path.iterdir()) == ["checkpoints", "summary.json"]


@pytest.mark.parametrize("status", STATUSES)
def test_every_documented_status_is_accepted(run, status):
    write_summary(run, {"status": status})
    assert read_summary(run) == {"status": status}


def test_an_unknown_status_is_refused(run):
    with pytest.raises(
        ValueError,
        match=r"^The 'status' parameter of write_summary must be one"
        r" of 'running', .*'failed'\. Got 'done' instead\.$",
    ):
        write_summary(run, {"status": "done"})
    assert not run.summary_path.exists()


def test_missing_and_damaged_summaries_fail_clearly(run):
    with pytest.raises(RunFolderError, match=r"has no summary\.json: the run has not written"):
        read_summary(run)
    run.summary_path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"must hold a JSON object; it holds a list"):
        read_summary(run)
    run.summary_path.write_text("{")
    with pytest.raises(ValueError, match=r"is not valid JSON"):
        read_summary(run)


def test_summary_in_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RunFolderError, match=r"^Could not write the summary file .*: No such"):
        write_summary(tmp_path / "gone", {"status": "running"})


class Color(enum.Enum):
    RED = "red"


def test_config_round_trips_through_yaml(run):
    config = {
        "model": {"name": "cnn1d", "channels": (16, 32)},
        "optimizer": {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999]},
        "data": {"root": Path("/data/mnist1d"), "color": Color.RED, "seed": np.int64(7)},
        "epochs": 20,
        "note": None,
    }
    write_config(run, config)
    expected = {
        "model": {"name": "cnn1d", "channels": [16, 32]},
        "optimizer": {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999]},
        "data": {"root": "/data/mnist1d", "color": "red", "seed": 7},
        "epochs": 20,
        "note": None,
    }
    assert read_config(run) == expected
    assert yaml.safe_load(run.config_path.read_text()) == expected
    assert run.config_path.read_text().startswith("model:")  # the config's own key order


def test_config_text_is_written_as_given(run):
    text = "# resolved by gradwise\nmodel: mlp\n"
    write_config(run, text)
    assert run.config_path.read_text() == text
    assert read_config(run) == {"model": "mlp"}


def test_config_values_yaml_cannot_hold_are_refused(run):
    with pytest.raises(ValueError, match=r"^The 'config\.model\.layer' value of the config must"):
        write_config(run, {"model": {"layer": object()}})
    assert not run.config_path.exists()
    with pytest.raises(ValueError, match=r"'config' parameter of write_config must be a mapping"):
        write_config(run, 3)  # type: ignore[arg-type]


def test_damaged_config_fails_clearly(run):
    run.config_path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match=r"must hold a YAML mapping; it holds a list"):
        read_config(run)
    run.config_path.write_text("a: [1\n")
    with pytest.raises(ValueError, match=r"is not valid YAML"):
        read_config(run)
    run.config_path.write_text("")
    assert read_config(run) == {}
    os.remove(run.config_path)
    with pytest.raises(RunFolderError, match=r"has no config\.yaml"):
        read_config(run)


def test_rewritten_files_are_readable_by_others_as_usual(run):
    # The temporary file behind an atomic write is private (0o600) until it is renamed.
    write_summary(run, {"status": "running"})
    write_config(run, {"a": 1})
    assert run.summary_path.stat().st_mode & 0o777 == 0o644
    assert run.config_path.stat().st_mode & 0o777 == 0o644


def test_a_summary_may_be_any_mapping(run):
    # write_summary accepts any Mapping (as its check says); json encodes only dicts.
    metadata = MappingProxyType({"dataset": "mnist1d", "optimizer": {"name": "adam"}})
    write_summary(run, ChainMap({"status": "running"}, {"meta": metadata}))
    assert read_summary(run) == {
        "status": "running", "meta": {"dataset": "mnist1d", "optimizer": {"name": "adam"}},
    }  # fmt: skip


@pytest.mark.parametrize("name", ["summary.json", "config.yaml"])
def test_a_file_that_is_not_utf8_is_an_error_naming_it(run, name):
    data = b'{"status": "completed", "model": "caf\xe9"}\n'  # Latin-1, as an editor may save
    (run.path / name).write_bytes(data)
    read = read_summary if name == "summary.json" else read_config
    expected = (
        f"{run.path / name} is not UTF-8 text (byte 0xe9 at offset {data.index(0xE9)}): it "
        "is damaged or was saved in another encoding. Save it as UTF-8 or restore it from a "
        "copy."
    )
    with pytest.raises(ValueError, match=rf"^{re.escape(expected)}$"):
        read(run)


@pytest.mark.parametrize("name", ["summary.json", "config.yaml"])
def test_a_file_nested_too_deeply_is_an_error_naming_it(run, name):
    # "[[[[..." past Python's recursion limit (a damaged file) raised RecursionError,
    # which no caller expects: `gradwise runs` and the report crashed instead of calling
    # the summary unreadable.
    (run.path / name).write_text("[" * 100_000)
    read = read_summary if name == "summary.json" else read_config
    kind = "JSON" if name == "summary.json" else "YAML"
    expected = f"{run.path / name} is not valid {kind}: it is nested too deeply to read."
    with pytest.raises(ValueError, match=rf"^{re.escape(expected)}$"):
        read(run)
