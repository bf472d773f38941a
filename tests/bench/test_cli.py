"""``python -m gradwise bench``: passes once cli/_main.py registers gradwise.cli._bench."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradwise.cli import main


def test_bench_unit_tests_prints_the_table_and_writes_the_grid(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "gradwise", "bench", "unit-tests", "--optimizers", "SGD,Adam",
        "--tests", "absolute/none/scale=1/dim=1", "--steps", "5", "--runs", "2",
        "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "absolute/none/scale=1/dim=1" in done.stdout
    assert (tmp_path / "scores.png").read_bytes()[:4] == b"\x89PNG"
    table = json.loads((tmp_path / "scores.json").read_text())
    assert table["columns"] == ["test", "SGD lr", "SGD", "Adam"]
    assert table["values"][0][2] == 1.0  # tuned SGD against itself


def test_bench_refuses_an_unknown_optimizer_in_one_line() -> None:
    command = [sys.executable, "-m", "gradwise", "bench", "surfaces", "--optimizers", "Nope"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "The '--optimizers' option" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tau-max", "0.5"], "The '--tau-max' option of gradwise bench profiles must be a "
         "finite float > 1. Got 0.5 instead."),
        (["--quadratic-deep-gaps", "abc"], "The '--quadratic-deep-gaps' option must be "
         "comma-separated numbers. Got 'abc' instead."),
        (["--quadratic-deep-gaps", "2"], "The '--quadratic-deep-gaps' option of gradwise bench "
         "profiles must be numbers in (0, 1). Got '2' instead: a target is floor + gap"),
        (["--quadratic-deep-gaps", "-0.5"], "must be numbers in (0, 1). Got '-0.5' instead:"),
        (["--quadratic-deep-epochs", "-1"], "The '--quadratic-deep-epochs' option of gradwise "
         "bench profiles must be an int >= 0. Got -1 instead."),
    ],
)  # fmt: skip
def test_bench_profiles_checks_its_options_before_any_benchmark_runs(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.perf_counter()
    code = main(["bench", "profiles", *args])
    printed = capsys.readouterr()
    assert code == 2
    assert printed.out == ""
    assert len(printed.err.strip().splitlines()) == 1, printed.err
    assert message in printed.err
    assert time.perf_counter() - started < 1.0  # the surface benchmark took ~10 s


def test_bench_unit_tests_names_the_flag_in_its_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "unit-tests", "--steps", "0"]) == 2
    assert "The '--steps' option of gradwise bench unit-tests must be an int >= 1. Got 0 " \
        "instead." in capsys.readouterr().err  # fmt: skip


def test_bench_unit_tests_says_when_tests_matches_no_test(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "unit-tests", "--tests", "no-such-test"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "The '--tests' option of gradwise bench unit-tests" in err
    assert "'no-such-test'" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["surfaces", "--tolerance", "0"], "The '--tolerance' option of gradwise bench surfaces "
         "must be a finite float > 0. Got 0.0 instead."),
        (["surfaces", "--max-steps", "0"], "The '--max-steps' option of gradwise bench surfaces "
         "must be an int >= 1. Got 0 instead."),
        (["surfaces", "--optimizers", "SGD,Foo"], "The '--optimizers' option of gradwise bench "
         "surfaces must be comma-separated names from SGD, Momentum, Nesterov, Adam, AMSGrad, "
         "RMSprop, Adagrad, NAdam, RAdam. Got 'SGD,Foo' instead (unknown: Foo)."),
        (["unit-tests", "--optimizers", ","], "The '--optimizers' option of gradwise bench "
         "unit-tests must be comma-separated names from SGD,"),
        (["profiles", "--surfaces", "nope"], "The '--surfaces' option of gradwise bench profiles "
         "must be comma-separated names from quadratic, rosenbrock, beale, himmelblau, saddle, "
         "monkey_saddle, styblinski_tang. Got 'nope' instead (unknown: nope)."),
        (["profiles", "--optimizers", "Foo"], "The '--optimizers' option of gradwise bench "
         "profiles must be comma-separated names from SGD,"),
    ],
)  # fmt: skip
def test_bench_errors_name_the_flag_and_the_command_not_the_library_function(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # QA: these named surface_benchmark's or tuned_optimizers' parameters.
    started = time.perf_counter()
    assert main(["bench", *args]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err.startswith(f"gradwise bench: error: {message}")
    assert len(printed.err.strip().splitlines()) == 1, printed.err
    assert "parameter" not in printed.err
    assert time.perf_counter() - started < 1.0  # before any benchmark ran
