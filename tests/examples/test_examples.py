"""The example script runs as a user runs it (a fresh interpreter, the real command line)."""

import re
import runpy
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "examples" / "train_custom_module.py"
ACCURACY = re.compile(r"^test accuracy: (\d\.\d+)$", flags=re.MULTILINE)
EPOCH_LINE = re.compile(r"^epoch +\d+ +step +\d+ +lr .* val loss \S+ acc \S+$", re.MULTILINE)


def test_train_custom_module_learns_digits_and_prints_each_epoch():
    completed = subprocess.run(
        [sys.executable, str(EXAMPLE), "--epochs", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    accuracies = ACCURACY.findall(completed.stdout)
    assert len(accuracies) == 1, completed.stdout
    assert float(accuracies[0]) > 0.9, completed.stdout  # chance is 0.1
    epochs = EPOCH_LINE.findall(completed.stdout)
    assert 1 <= len(epochs) <= 5, completed.stdout  # early stopping may end it sooner
    assert re.search(r"^(completed|early_stopped) after \d+ epochs", completed.stdout, re.M)


def test_train_custom_module_quiet_prints_only_the_result(monkeypatch, capsys):
    # In-process (runpy) to skip a second interpreter start; the flags are parsed the same.
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), "--epochs", "1", "--quiet"])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2, lines
    assert lines[0] == "completed after 1 epochs (21 steps)"  # ceil(1294 / 64) steps
    assert ACCURACY.fullmatch(lines[1])
