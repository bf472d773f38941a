"""Keskar & Socher (2017): Adam, SGD and SWATS on digits; where and whether SWATS switched."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reproductions._scripts import load_script

script = load_script("swats")
LOOSE = "SWATS tol 0.01"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("swats")
    return {"out": out, "runs": script.main(["--epochs", "4", "--out", str(out)])}


def test_every_optimizer_learns_the_task(results: dict) -> None:
    for result in results["runs"].values():
        assert result["validation"][-1] > 0.9
        assert result["test_accuracy"] > 0.9


def test_only_swats_reports_a_switch(results: dict) -> None:
    runs = results["runs"]
    assert runs["Adam"]["switch"] is None
    assert runs["SGD"]["switch"] is None
    assert runs["SWATS"]["switch"] is not None


def test_the_papers_tolerance_never_switches_on_minibatches(results: dict) -> None:
    switch = results["runs"]["SWATS"]["switch"]
    assert not switch.switched
    assert switch.step is None


def test_a_loose_tolerance_switches_to_a_positive_sgd_rate(results: dict) -> None:
    switch = results["runs"][LOOSE]["switch"]
    steps = 4 * results["runs"][LOOSE]["steps_per_epoch"]
    assert switch.switched
    assert 1 < switch.step < steps
    assert switch.lr > 0


def test_figure_is_written(results: dict) -> None:
    assert (Path(results["out"]) / "swats.png").stat().st_size > 1000
