"""Goyal et al. (2017): at k times the batch and k times the rate, warmup tames the start."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reproductions._scripts import load_script

script = load_script("warmup")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("warmup")
    argv = ["--epochs", "8", "--warmup-epochs", "3", "--out", str(out)]
    result = script.main(argv)
    small, plain, warm = (result["curves"][name] for name in result["names"])
    return {"out": out, "small": small, "plain": plain, "warm": warm, **result}


# At k * lr = 0.48 with momentum 0.9 the large-batch runs are chaotic: the same code gave
# the no-warmup run a final loss of 1.11 and of 0.71 on two machines of this project (its
# lowest 0.59; the warmed-up run 0.27 and 0.36). The margins below hold for both; the
# claims are the direction of the effect, not its size (docs/reproductions.md, section 6).


def test_without_warmup_the_large_batch_run_is_unstable(results: dict) -> None:
    plain = results["plain"]
    lowest = min(range(len(plain)), key=lambda epoch: plain[epoch])
    assert lowest < len(plain) - 1
    assert plain[-1] > 1.1 * plain[lowest]  # the loss climbs back up


def test_warmup_ends_lower_than_no_warmup(results: dict) -> None:
    assert results["warm"][-1] < 0.6 * results["plain"][-1]
    names = results["names"]
    accuracy = results["test_accuracy"]
    assert accuracy[names[2]] > accuracy[names[1]]


def test_small_batch_is_still_best_at_this_size(results: dict) -> None:
    # The mismatch the docs report: warmup does not reach the small-batch curve here.
    assert results["small"][-1] < results["warm"][-1]


def test_figure_is_written(results: dict) -> None:
    assert (Path(results["out"]) / "warmup.png").stat().st_size > 1000
