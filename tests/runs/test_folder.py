"""RunFolder: the layout, unique names, and clear failures before training starts."""

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from gradwise.runs import DEFAULT_MIN_FREE_BYTES, RunFolder, RunFolderError, format_bytes
from tests.runs.killed_write import kill_mid_write


def test_paths_follow_the_documented_layout(tmp_path):
    run = RunFolder(tmp_path / "r")
    assert run.name == "r"
    assert run.config_path == tmp_path / "r" / "config.yaml"
    assert run.metrics_path == tmp_path / "r" / "metrics.jsonl"
    assert run.summary_path == tmp_path / "r" / "summary.json"
    assert run.checkpoint_dir == tmp_path / "r" / "checkpoints"
    assert run.last_checkpoint == tmp_path / "r" / "checkpoints" / "last.pt"
    assert run.best_checkpoint == tmp_path / "r" / "checkpoints" / "best.pt"
    assert run.tensorboard_dir == tmp_path / "r" / "tensorboard"
    assert run.report_path == tmp_path / "r" / "report.html"
    assert run.preprocess_path == tmp_path / "r" / "preprocess.npz"


def test_str_path_becomes_a_path_and_the_folder_is_frozen(tmp_path):
    run = RunFolder(str(tmp_path))
    assert isinstance(run.path, Path)
    with pytest.raises(AttributeError):
        run.path = tmp_path  # type: ignore[misc]


def test_create_with_a_name_makes_the_folder_and_its_checkpoint_dir(tmp_path):
    run = RunFolder.create(tmp_path / "runs", "first", min_free_bytes=0)
    assert run.path == tmp_path / "runs" / "first"
    assert run.path.is_dir()
    assert run.checkpoint_dir.is_dir()
    assert list(run.path.iterdir()) == [run.checkpoint_dir]  # the probe file is gone


def test_create_refuses_an_existing_name_unless_exist_ok(tmp_path):
    RunFolder.create(tmp_path, "same", min_free_bytes=0)
    with pytest.raises(RunFolderError, match=r"^Run folder .*same already exists\. Choose"):
        RunFolder.create(tmp_path, "same", min_free_bytes=0)
    again = RunFolder.create(tmp_path, "same", exist_ok=True, min_free_bytes=0)
    assert again.path == tmp_path / "same"


def test_generated_name_is_prefix_and_local_timestamp(tmp_path):
    before = time.strftime("%Y%m%d-%H%M%S")
    run = RunFolder.create(tmp_path, prefix="mnist1d-cnn1d", min_free_bytes=0)
    after = time.strftime("%Y%m%d-%H%M%S")
    match = re.fullmatch(r"mnist1d-cnn1d-(\d{8}-\d{6})", run.name)
    assert match is not None
    assert before <= match.group(1) <= after


def test_generated_names_get_a_counter_when_taken(tmp_path):
    # Take the timestamped names of the next few seconds, and their "-2", so that create
    # must fall through to "-3" whichever second it runs in.
    now = time.time()
    stamps = [time.strftime("%Y%m%d-%H%M%S", time.localtime(now + s)) for s in range(4)]
    for stamp in stamps:
        (tmp_path / f"p-{stamp}").mkdir()
        (tmp_path / f"p-{stamp}-2").mkdir()
    run = RunFolder.create(tmp_path, prefix="p", min_free_bytes=0)
    assert run.name in {f"p-{stamp}-3" for stamp in stamps}
    second = RunFolder.create(tmp_path, prefix="p", min_free_bytes=0)
    assert second.name != run.name


def test_many_runs_in_the_same_second_get_distinct_folders(tmp_path):
    names = [RunFolder.create(tmp_path, prefix="x", min_free_bytes=0).name for _ in range(5)]
    assert len(set(names)) == 5


def test_unwritable_root_fails_with_one_clear_line(tmp_path):
    # A path below a regular file cannot be created, even by root (unlike chmod 0o500).
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    root = blocker / "runs"
    with pytest.raises(RunFolderError) as caught:
        RunFolder.create(root, "x", min_free_bytes=0)
    message = str(caught.value)
    assert message == (
        f"The 'runs_dir' setting must be a folder that can be written. Got {str(root)!r} "
        f"instead: {str(blocker)!r} is a file. Set runs_dir to another folder, or move that "
        "file."
    )
    assert "\n" not in message
    assert isinstance(caught.value, OSError)


def test_a_root_that_is_a_file_is_named_as_the_runs_dir_not_as_the_run_folder(tmp_path):
    # QA: "Cannot write to run folder afile/x: File exists. Choose another folder with
    # --runs-dir ...": the run folder named, not the file in the way, and a flag that a
    # train(config) call does not have.
    root = tmp_path / "afile"
    root.write_text("not a folder")
    with pytest.raises(RunFolderError) as caught:
        RunFolder.create(root, "x", min_free_bytes=0)
    assert str(caught.value) == (
        f"The 'runs_dir' setting must be a folder that can be written. Got {str(root)!r} "
        "instead: it is a file. Set runs_dir to another folder, or move that file."
    )
    assert root.read_text() == "not a folder"


def test_check_writable_fails_when_the_run_folder_is_not_writable(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(RunFolderError, match=r"^Cannot write to run folder .*file: Not a dir"):
        RunFolder(not_a_folder).check_writable(min_free_bytes=0)


def test_too_little_free_space_fails_and_leaves_nothing_behind(tmp_path):
    huge = 10**18  # an exabyte
    with pytest.raises(RunFolderError) as caught:
        RunFolder.create(tmp_path, "big", min_free_bytes=huge)
    free = shutil.disk_usage(tmp_path).free
    assert str(caught.value) == (
        f"Only {format_bytes(free)} free on the disk holding {tmp_path / 'big'}; a run "
        "needs at least 1000 PB (checkpoints and metrics). Free space or choose another "
        "folder."
    )
    assert not (tmp_path / "big").exists()


def test_failed_check_keeps_an_existing_folder(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.yaml").write_text("a: 1\n")
    with pytest.raises(RunFolderError, match="Only"):
        RunFolder.create(tmp_path, "old", exist_ok=True, min_free_bytes=10**18)
    assert (tmp_path / "old" / "config.yaml").read_text() == "a: 1\n"


def test_default_minimum_is_100_megabytes():
    assert DEFAULT_MIN_FREE_BYTES == 100 * 10**6


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (999, "999 B"), (3_100_000, "3.1 MB"), (200 * 10**6, "200 MB"),
     (12_345_678_901, "12 GB"), (10**18, "1000 PB")],
)  # fmt: skip
def test_format_bytes(count, text):
    assert format_bytes(count) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [(1000, "1.0 kB"), (9_949, "9.9 kB"), (9_999, "10 kB"), (999_499, "999 kB"),
     (999_500, "1.0 MB"), (999_999, "1.0 MB"), (999_999_999, "1.0 GB"),
     (999_999_999_999_999, "1.0 PB")],
)  # fmt: skip
def test_format_bytes_rolls_over_where_rounding_reaches_the_next_unit(count, text):
    # 999,999 B is 999.999 kB: shown with no decimal it rounds to "1000 kB", which df -H
    # and every reader calls 1.0 MB; 9,999 B rounds to 10.0 kB, which gets no decimal.
    assert format_bytes(count) == text


def test_leftovers_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    run = RunFolder.create(tmp_path, "run", min_free_bytes=0)
    run.last_checkpoint.write_bytes(b"the last good checkpoint")
    checkpoint_left = kill_mid_write(run.last_checkpoint, size=200_000)
    summary_left = kill_mid_write(run.summary_path)
    assert re.fullmatch(r"\.last\.pt\.\w{8}\.tmp", checkpoint_left.name)
    # report.html may be rewritten by 'gradwise report' while the run resumes; files that
    # merely look alike are the user's.
    report_left = kill_mid_write(run.report_path)
    others = [run.path / ".summary.json.tmp", run.path / "notes.tmp", run.path / "x.abcdefgh.tmp"]
    for path in others:
        path.write_text("mine")

    removed = run.remove_leftover_temporaries()

    assert sorted(removed) == sorted([checkpoint_left, summary_left])
    assert sorted(run.checkpoint_dir.iterdir()) == [run.last_checkpoint]
    assert run.last_checkpoint.read_bytes() == b"the last good checkpoint"
    assert all(path.exists() for path in [report_left, *others])
    assert run.remove_leftover_temporaries() == []


def test_open_an_existing_run(tmp_path):
    (tmp_path / "config.yaml").write_text("a: 1\n")
    assert RunFolder.open(tmp_path) == RunFolder(tmp_path)


def test_open_refuses_a_missing_folder_and_a_folder_without_config(tmp_path):
    with pytest.raises(RunFolderError, match=r"^No run folder at .*nope: the folder does not"):
        RunFolder.open(tmp_path / "nope")
    with pytest.raises(RunFolderError, match=r"is not a run folder: it has no config\.yaml\."):
        RunFolder.open(tmp_path)
    (tmp_path / "run.yaml").write_text("epochs: 1\n")  # a config given where a run goes
    with pytest.raises(RunFolderError, match=r"^No run folder at .*run\.yaml: it is a file\."):
        RunFolder.open(tmp_path / "run.yaml")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "a/b"}, "The 'name' parameter of RunFolder.create must be None or a non-empty"),
        ({"name": ".."}, "The 'name' parameter of RunFolder.create must be"),
        ({"prefix": ""}, "The 'prefix' parameter of RunFolder.create must be a non-empty"),
        ({"exist_ok": 1}, "The 'exist_ok' parameter of RunFolder.create must be a bool. Got 1"),
        ({"min_free_bytes": -1}, "The 'min_free_bytes' parameter of RunFolder.create must be an"
                                 " int >= 0. Got -1 instead."),
        ({"root": 3}, "The 'root' parameter of RunFolder.create must be a str or a path. Got 3"),
    ],
)  # fmt: skip
def test_bad_arguments_fail_in_the_house_format(tmp_path, kwargs, message):
    arguments = {"root": tmp_path, "min_free_bytes": 0, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        RunFolder.create(**arguments)
    assert os.listdir(tmp_path) == []


def test_a_file_where_the_checkpoint_folder_belongs_is_a_clear_error(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoints").write_text("")
    with pytest.raises(RunFolderError, match=r"^Cannot write to run folder .*r: File exists\."):
        RunFolder.create(tmp_path, "r", exist_ok=True, min_free_bytes=0)
