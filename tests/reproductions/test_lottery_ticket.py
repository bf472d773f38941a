"""Frankle & Carbin's lottery tickets, tiny: LeNet-300-100 on MNIST-1D, 2 rounds, 1 seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reproductions._scripts import load_script

script = load_script("lottery_ticket")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("lottery_ticket")
    arguments = ["--rounds", "3", "--epochs", "3", "--seeds", "0", "--datasets", "mnist5k"]
    return {"out": out, **script.main([*arguments, "--out", str(out)])}


def test_every_round_has_a_ticket_and_a_control_at_the_same_sparsity(results: dict) -> None:
    summary = results["summary"]
    assert summary["mnist5k", 0, "dense"]["remaining"] == 1.0
    for round_ in (1, 2, 3):
        ticket, control = (
            summary["mnist5k", round_, "ticket"],
            summary["mnist5k", round_, "control"],
        )
        assert ticket["remaining"] == control["remaining"]
        # hidden layers halve per round, the output layer (1,000 of 266,200) loses 25%
        assert ticket["remaining"] == pytest.approx(0.5**round_, abs=0.005)


def test_the_winning_ticket_keeps_dense_accuracy_and_beats_random_reinit(results: dict) -> None:
    summary = results["summary"]
    dense = summary["mnist5k", 0, "dense"]["accuracy"]
    ticket = summary["mnist5k", 3, "ticket"]["accuracy"]  # 12.5% of the weights
    control = summary["mnist5k", 3, "control"]["accuracy"]
    assert ticket > dense - 0.02
    assert ticket > control


def test_the_figure_is_written(results: dict) -> None:
    assert (Path(results["out"]) / "lottery_ticket.png").stat().st_size > 1000
