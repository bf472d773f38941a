"""A small slice of benchmarks/doctor_suite.py: planted faults are named, healthy is quiet."""

from __future__ import annotations

from pathlib import Path

from benchmarks.doctor_suite import SETUPS, run_suite

from gradwise import Finding


def test_planted_faults_are_named_and_a_healthy_setup_raises_nothing(tmp_path: Path) -> None:
    names = ["lr-100x-high", "dead-relu-bias", "moons-tanh-mlp-xavier"]
    high, dead, healthy = run_suite(names, tmp_path, say=False)
    assert high.named, high.kinds
    assert dead.named, dead.kinds
    assert Finding.DEAD_UNITS in dead.kinds
    assert not healthy.alarm, healthy.kinds
    assert healthy.accuracy > 0.9


def test_fix_repairs_a_too_high_learning_rate(tmp_path: Path) -> None:
    (outcome,) = run_suite(["lr-100x-high"], tmp_path, fix=True, say=False)
    assert "optimizer.lr=0.1" in SETUPS["lr-100x-high"].overrides
    assert outcome.result.applied["optimizer.lr"] < 0.1 / 10  # lowered by a measured factor
    assert outcome.baseline_accuracy is not None
    assert outcome.repaired, (outcome.fixed_accuracy, outcome.baseline_accuracy)
