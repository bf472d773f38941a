"""``python -m gradwise bench``: passes once cli/_main.py registers gradwise.cli._bench."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


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
