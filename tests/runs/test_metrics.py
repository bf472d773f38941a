"""MetricsLog: append-only JSON Lines that a crash never leaves corrupt."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections import ChainMap
from types import MappingProxyType

import numpy as np
import pandas as pd
import pytest
import torch

from gradwise.runs import (
    MetricsLog,
    RunFolder,
    RunFolderError,
    metrics_file,
    read_metrics,
    read_records,
    repair_metrics_file,
)

STEP = {"kind": "step", "step": 1, "epoch": 0, "loss": 2.3, "accuracy": None, "lr": 0.1,
        "time": 0.5}  # fmt: skip
EPOCH = {"kind": "epoch", "step": 10, "epoch": 1, "train_loss": 1.9, "train_accuracy": 0.4,
         "val_loss": 2.0, "val_accuracy": 0.38, "lr": 0.1, "time": 5.0}  # fmt: skip


def write_records(path, records):
    with MetricsLog(path) as log:
        for record in records:
            log.append(record)


def test_records_round_trip_with_python_json(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_records(path, [STEP, EPOCH])
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [STEP, EPOCH]
    assert read_records(path) == [STEP, EPOCH]


def test_pandas_reads_the_file_directly(tmp_path):
    path = tmp_path / "metrics.jsonl"
    test = {"kind": "test", "step": 10, "epoch": 1, "test_loss": 2.1, "test_accuracy": 0.37}
    write_records(path, [STEP, EPOCH, test])
    oracle = pd.read_json(path, lines=True)
    frame = read_metrics(path)
    assert list(frame.columns) == list(dict.fromkeys([*STEP, *EPOCH, *test]))
    assert len(frame) == 3
    for column in ("step", "loss", "val_loss", "test_accuracy"):
        np.testing.assert_array_equal(
            frame[column].to_numpy(dtype=float), oracle[column].to_numpy(dtype=float)
        )
    assert frame["kind"].tolist() == ["step", "epoch", "test"]


def test_non_finite_floats_round_trip_as_floats(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_records(path, [
        {"step": 1, "loss": math.nan}, {"step": 2, "loss": math.inf},
        {"step": 3, "loss": -math.inf}, {"step": 4, "loss": None},
    ])  # fmt: skip
    losses = [record["loss"] for record in read_records(path)]
    assert math.isnan(losses[0])
    assert losses[1:] == [math.inf, -math.inf, None]
    oracle = pd.read_json(path, lines=True)["loss"].to_numpy(dtype=float)
    assert np.isnan(oracle[0])
    assert oracle[1] == np.inf
    assert oracle[2] == -np.inf
    assert np.isnan(oracle[3])  # null: missing, and pandas cannot tell it from NaN


def test_unknown_keys_are_kept_and_columns_are_the_union(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_records(path, [{"step": 1, "a": 1.0}, {"step": 2, "grad_norm": 3.5, "note": "x"}])
    frame = read_metrics(path)
    assert list(frame.columns) == ["step", "a", "grad_norm", "note"]
    assert math.isnan(frame["a"][1])
    assert frame["grad_norm"][1] == 3.5


def test_numpy_and_tensor_scalars_are_written_as_numbers(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_records(path, [{"step": np.int64(3), "loss": np.float32(0.5), "lr": torch.tensor(0.25)}])
    assert read_records(path) == [{"step": 3, "loss": 0.5, "lr": 0.25}]


def test_a_bad_record_writes_nothing(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path) as log:
        log.append(STEP)
        with pytest.raises(ValueError, match=r"The 'record' parameter of MetricsLog.append must"):
            log.append({"step": 2, "weights": torch.ones(3)})
        with pytest.raises(ValueError, match=r"must be a mapping of str to values\. Got \[1\]"):
            log.append([1])  # type: ignore[arg-type]
        log.append(EPOCH)
    assert read_records(path) == [STEP, EPOCH]


def test_lines_are_complete_as_soon_as_append_returns(tmp_path):
    # A process killed without closing the log loses nothing it appended: each record
    # reaches the OS in one write, with no buffer in between.
    path = tmp_path / "metrics.jsonl"
    script = textwrap.dedent(f"""
        import os, signal
        from gradwise.runs import MetricsLog
        log = MetricsLog({str(path)!r})
        for step in range(1, 101):
            log.append({{"kind": "step", "step": step, "loss": 1.0 / step}})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    process = subprocess.run([sys.executable, "-c", script], check=False)
    assert process.returncode == -signal.SIGKILL
    records = read_records(path)
    assert [record["step"] for record in records] == list(range(1, 101))


def test_partial_last_line_is_tolerated_by_readers_and_cut_by_the_writer(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_records(path, [STEP, EPOCH])
    complete = path.read_bytes()
    with open(path, "ab") as file:  # a crash in the middle of a write
        file.write(b'{"kind": "step", "step": 11, "lo')
    assert read_records(path) == [STEP, EPOCH]
    assert len(read_metrics(path)) == 2
    with pytest.warns(UserWarning, match=r"ended with a damaged line \(32 bytes that are not"):
        log = MetricsLog(path)  # opening repairs, and says so
    with log:
        assert path.read_bytes() == complete
        log.append({"kind": "step", "step": 11, "loss": 1.5})
    assert read_records(path)[-1] == {"kind": "step", "step": 11, "loss": 1.5}
    assert len(pd.read_json(path, lines=True)) == 3


def test_zero_bytes_left_by_a_power_loss_are_cut(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_records(path, [STEP])
    with open(path, "ab") as file:
        file.write(b"\0" * 4096)
    assert repair_metrics_file(path) == 4096
    assert read_records(path) == [STEP]


def test_complete_record_without_newline_is_kept(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(STEP) + "\n" + json.dumps(EPOCH))  # written by hand
    assert read_records(path) == [STEP, EPOCH]
    assert repair_metrics_file(path) == 0
    assert path.read_text().endswith("}\n")
    write_records(path, [{"step": 20}])
    assert read_records(path) == [STEP, EPOCH, {"step": 20}]


def test_repair_of_a_file_that_is_only_a_partial_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"kind": "st')
    assert repair_metrics_file(path) == len(b'{"kind": "st')
    assert path.read_bytes() == b""
    assert repair_metrics_file(tmp_path / "missing.jsonl") == 0


def test_repair_reads_long_files_backwards_in_blocks(tmp_path):
    # The last newline sits more than one 64 KiB block before the end.
    path = tmp_path / "metrics.jsonl"
    write_records(path, [STEP])
    with open(path, "ab") as file:
        file.write(b'{"note": "' + b"x" * 200_000)
    assert read_records(path) == [STEP]
    assert repair_metrics_file(path) == 200_010
    assert read_records(path) == [STEP]


def test_a_damaged_line_in_the_middle_is_reported_with_its_number(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(STEP) + "\n" + "garbage\n" + json.dumps(EPOCH) + "\n")
    with pytest.raises(ValueError, match=r"^Line 2 of .*metrics\.jsonl is not a JSON object"):
        read_records(path)


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(STEP) + "\n\n" + json.dumps(EPOCH) + "\n")
    assert read_records(path) == [STEP, EPOCH]


def steps_file(path, steps):
    write_records(path, [{"kind": "step", "step": s, "loss": 1.0 / (s + 1)} for s in steps])


def test_truncate_after_keeps_exactly_the_records_up_to_the_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    steps_file(path, range(1, 21))
    with MetricsLog(path) as log:
        log.append({"kind": "note", "text": "no step"})
        log.truncate_after(12)
        log.append({"kind": "step", "step": 13, "loss": 0.5})  # appending goes on
    records = read_records(path)
    assert [r.get("step") for r in records] == [*range(1, 13), None, 13]
    expected = [{"kind": "step", "step": s, "loss": 1.0 / (s + 1)} for s in range(1, 13)]
    assert records[:12] == expected
    assert len(pd.read_json(path, lines=True)) == 14
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]  # no temporary file left


def test_truncate_after_drops_a_partial_line_and_keeps_non_finite_values(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_records(path, [{"step": 1, "loss": math.inf}, {"step": 2, "loss": 1.0}])
    with open(path, "ab") as file:
        file.write(b'{"step": 3, "lo')
    with pytest.warns(UserWarning, match=r"metrics\.jsonl ended with a damaged line"):
        MetricsLog.truncate_file_after(path, 1)
    assert read_records(path) == [{"step": 1, "loss": math.inf}]
    assert path.read_bytes().endswith(b"\n")


@pytest.mark.parametrize(
    "tail",
    [b'{"step": 3, "lo', b'{"step": 3, "lo\n', b"\0" * 64 + b"\n\n"],
    ids=["cut-mid-line", "cut-then-newline", "zero-bytes-then-blank-lines"],
)
def test_truncate_after_drops_a_damaged_last_line_with_a_warning(tmp_path, tail):
    # Resuming after a crash mid-write: the damaged last line is dropped and reported.
    path = tmp_path / "metrics.jsonl"
    steps_file(path, [1, 2])
    with open(path, "ab") as file:
        file.write(tail)
    with pytest.warns(UserWarning, match=r"metrics\.jsonl ended with a damaged line"):
        MetricsLog.truncate_file_after(path, 5)
    assert [r["step"] for r in read_records(path)] == [1, 2]
    assert path.read_bytes().endswith(b"}\n")


def test_truncate_after_refuses_a_damaged_line_before_the_last(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(STEP) + "\n" + "garbage\n" + json.dumps(EPOCH) + "\n")
    before = path.read_bytes()
    with (
        MetricsLog(path) as log,
        pytest.raises(RunFolderError, match=(
            rf"^Line 2 of {re.escape(str(path))} is not a JSON object: b'garbage'\. .*delete "
            r"or repair that line"
        )),
    ):  # fmt: skip
        log.truncate_after(5)
    assert path.read_bytes() == before
    with MetricsLog(path) as log:  # the file is as usable as before
        log.append({"step": 11})
    assert path.read_bytes() == before + b'{"step": 11}\n'


def _with_damaged_line(path, steps, after_line):
    """A metrics file of step records with a damaged line after line ``after_line``."""
    lines = [json.dumps({"kind": "step", "step": s}) for s in steps]
    lines.insert(after_line, '{"kind": "step", "st')
    path.write_text("\n".join(lines) + "\n")


def test_truncate_after_drops_damaged_lines_among_the_records_after_the_step(tmp_path):
    # The run went on past its checkpoint at step 3; a line written after that got damaged.
    # The truncation drops those records anyway, so the damaged line goes with them.
    path = tmp_path / "metrics.jsonl"
    _with_damaged_line(path, [1, 2, 3, 4, 5, 6], after_line=4)
    with pytest.warns(UserWarning, match=r"metrics\.jsonl has damaged lines \(5\) after records"):
        MetricsLog.truncate_file_after(path, 3)
    assert [r["step"] for r in read_records(path)] == [1, 2, 3]


def test_truncate_after_drops_a_damaged_line_after_a_record_written_after_the_checkpoint(
    tmp_path,
):
    # A test record follows the checkpoint of its own step: a damaged line after it too.
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"kind": "step", "step": 2}\n{"kind": "test", "step": 2}\ngarbage\n{"kind": "note"}\n'
    )
    with MetricsLog(path) as log, pytest.warns(UserWarning, match=r"damaged lines \(3\)"):
        log.truncate_after(2, after_checkpoint=("test",))
    assert read_records(path) == [{"kind": "step", "step": 2}, {"kind": "note"}]


@pytest.mark.parametrize("after_line", [2, 3], ids=["before-the-step", "just-after-the-step"])
def test_truncate_after_refuses_a_damaged_line_that_may_hold_a_record_up_to_the_step(
    tmp_path, after_line
):
    # Between the records of steps 3 and 4 a damaged line may be a record of step 3.
    path = tmp_path / "metrics.jsonl"
    _with_damaged_line(path, [1, 2, 3, 4, 5], after_line=after_line)
    before = path.read_bytes()
    with pytest.raises(RunFolderError) as raised:
        MetricsLog.truncate_file_after(path, 3)
    message = str(raised.value)
    assert message.startswith(f"Line {after_line + 1} of {path} is not a JSON object: ")
    assert "(step 3)" in message
    assert "delete or repair that line, then resume again." in message
    assert path.read_bytes() == before


def test_truncate_after_zero_and_beyond_the_end(tmp_path):
    path = tmp_path / "metrics.jsonl"
    steps_file(path, [0, 1, 2])
    MetricsLog.truncate_file_after(path, 5)
    assert [r["step"] for r in read_records(path)] == [0, 1, 2]
    MetricsLog.truncate_file_after(path, 0)
    assert [r["step"] for r in read_records(path)] == [0]


def test_truncate_after_rejects_a_negative_step(tmp_path):
    with (
        MetricsLog(tmp_path / "m.jsonl") as log,
        pytest.raises(ValueError, match=r"'step' parameter of MetricsLog.truncate_after must"),
    ):
        log.truncate_after(-1)


def test_closed_log_refuses_appends_and_close_is_idempotent(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    log.sync()
    log.close()
    log.close()
    assert log.closed
    with pytest.raises(ValueError, match=r"This MetricsLog for .* is closed\. Open a new"):
        log.append(STEP)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RunFolderError, match=r"^Could not open the metrics file .*: No such"):
        MetricsLog(tmp_path / "nope" / "metrics.jsonl")


def test_readers_accept_a_run_folder_its_path_or_the_file(tmp_path):
    run = RunFolder.create(tmp_path, "r", min_free_bytes=0)
    write_records(run.metrics_path, [STEP])
    assert metrics_file(run) == metrics_file(run.path) == metrics_file(run.metrics_path)
    assert read_records(run) == read_records(run.path) == read_records(str(run.metrics_path))
    assert read_records(tmp_path / "empty") == []
    assert read_metrics(tmp_path / "empty").empty


@pytest.fixture
def file_size_limit():
    """Set RLIMIT_FSIZE for the test's duration: writes past it fail with EFBIG, like a
    full disk, and a write that crosses it is cut short."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill

    def limit(size):
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)


def test_a_write_that_fails_half_way_is_rolled_back(tmp_path, file_size_limit):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for step in range(100):
        log.append({"kind": "step", "step": step, "loss": 0.5})
    before = path.read_bytes()
    file_size_limit(len(before) + 100)  # the next record crosses the limit
    with pytest.raises(RunFolderError) as caught:
        log.append({"kind": "step", "step": 100, "note": "x" * 500})
    assert str(caught.value) == (
        f"Could not append to the metrics file {path}: File too large. "
        "The file was left as it was before this record."
    )
    assert path.read_bytes() == before
    file_size_limit(10**9)
    log.append({"kind": "step", "step": 100, "loss": 0.25})
    log.close()
    assert [r["step"] for r in read_records(path)] == list(range(101))


def test_truncate_after_keeps_the_file_permissions(tmp_path):
    path = tmp_path / "metrics.jsonl"
    steps_file(path, range(5))
    os.chmod(path, 0o640)
    MetricsLog.truncate_file_after(path, 2)
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_record_may_be_any_mapping(tmp_path):
    # append's check and type accept any Mapping, and a record holds mappings; json
    # itself encodes only dicts.
    path = tmp_path / "metrics.jsonl"
    record = MappingProxyType({"kind": "epoch", "step": 3, "extra": ChainMap({"a": 1.5})})
    write_records(path, [record])
    assert read_records(path) == [{"kind": "epoch", "step": 3, "extra": {"a": 1.5}}]


def test_a_line_nested_too_deeply_is_a_damaged_line(tmp_path):
    # json.loads raised RecursionError for it, past every reader's "damaged line" handling.
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(STEP) + "\n" + "[" * 100_000 + "\n" + json.dumps(STEP) + "\n")
    with pytest.raises(ValueError, match=r"^Line 2 of .* is not a JSON object: b'\[\[\["):
        read_records(path)
    path.write_text(json.dumps(STEP) + "\n" + "[" * 100_000)  # as the unterminated last line
    assert read_records(path) == [STEP]
    with pytest.warns(UserWarning, match="ended with a damaged line"), MetricsLog(path):
        pass
    assert read_records(path) == [STEP]
