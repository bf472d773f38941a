"""Performance profiles against their definition (Dolan & More 2002; AlgoPerf's area score)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradwise.bench import (
    make_quadratic_deep,
    performance_profiles,
    quadratic_deep_steps,
    run_quadratic_deep,
    surface_benchmark,
    surface_steps,
    tuned_optimizers,
)
from gradwise.cli import main
from gradwise.optim import SGD

# 4 problems x 3 optimizers: a tie on p1, a failure of C on p2, nobody solves p4.
STEPS = {
    "p1": {"A": 10, "B": 10, "C": 40},
    "p2": {"A": 30, "B": 20, "C": math.inf},
    "p3": {"A": 100, "B": 300, "C": 50},
    "p4": {"A": None, "B": math.inf, "C": None},
}
# ratios by hand:     p1      p2    p3   p4
RATIOS = {"A": (1.0, 1.5, 2.0, math.inf),
          "B": (1.0, 1.0, 6.0, math.inf),
          "C": (4.0, math.inf, 1.0, math.inf)}  # fmt: skip


def _rho(ratios: tuple[float, ...], tau: float) -> float:
    """The definition: the fraction of problems with ratio <= tau."""
    return sum(1 for ratio in ratios if ratio <= tau) / len(ratios)


def _area(ratios: tuple[float, ...], tau_max: float) -> float:
    """The normalized integral of rho over [1, tau_max] by a fine midpoint rule."""
    num = 200_000
    taus = 1.0 + (np.arange(num) + 0.5) * (tau_max - 1.0) / num
    values = np.array([(np.asarray(ratios)[:, None] <= taus[None, :]).mean(axis=0)])
    return float(values.mean())


def test_ratios_match_the_hand_computed_ones() -> None:
    profiles = performance_profiles(STEPS)
    assert profiles.problems == ("p1", "p2", "p3", "p4")
    assert profiles.optimizers == ("A", "B", "C")
    for j, name in enumerate(profiles.optimizers):
        assert tuple(profiles.ratios[:, j]) == RATIOS[name]


@pytest.mark.parametrize("tau", [1.0, 1.2, 1.5, 1.99, 2.0, 3.0, 4.0, 5.9, 6.0, 1e9])
def test_rho_is_the_fraction_within_tau(tau: float) -> None:
    profiles = performance_profiles(STEPS)
    for name, ratios in RATIOS.items():
        assert profiles.fraction_within(name, tau) == _rho(ratios, tau)


def test_hand_computed_values_at_a_few_taus() -> None:
    profiles = performance_profiles(STEPS)
    assert profiles.fraction_within("A", 1.0) == 0.25  # fastest (tied) on p1 only
    assert profiles.fraction_within("B", 1.0) == 0.5  # the tie on p1 counts for both
    assert profiles.fraction_within("C", 4.0) == 0.5
    assert profiles.fraction_within("B", 1e12) == 0.75  # p4 never counts


@pytest.mark.parametrize("tau_max", [4.0, 2.0, 10.0])
def test_score_is_the_normalized_area_under_the_profile(tau_max: float) -> None:
    profiles = performance_profiles(STEPS, tau_max=tau_max)
    for name, ratios in RATIOS.items():
        assert profiles.score(name) == pytest.approx(_area(ratios, tau_max), abs=1e-4)


def test_score_by_hand_at_algoperf_tau_max() -> None:
    scores = performance_profiles(STEPS).scores  # tau_max 4: (4 - r) / 3 per solved problem
    assert scores["A"] == pytest.approx((1 + 2.5 / 3 + 2 / 3 + 0) / 4)
    assert scores["B"] == pytest.approx((1 + 1 + 0 + 0) / 4)  # ratio 6 is past tau_max
    assert scores["C"] == pytest.approx((0 + 0 + 1 + 0) / 4)  # ratio 4 adds no area


def test_profiles_do_not_change_when_a_problem_is_rescaled() -> None:
    scaled = {name: dict(row) for name, row in STEPS.items()}
    scaled["p3"] = {name: 7 * value for name, value in STEPS["p3"].items()}  # type: ignore[operator]
    assert performance_profiles(scaled).scores == performance_profiles(STEPS).scores


def test_one_optimizer_scores_the_fraction_it_solves() -> None:
    profiles = performance_profiles({"a": {"SGD": 5}, "b": {"SGD": None}, "c": {"SGD": 9.5}})
    assert profiles.fraction_within("SGD", 1.0) == pytest.approx(2 / 3)
    assert profiles.score("SGD") == pytest.approx(2 / 3)


def test_all_failing_gives_zero_everywhere() -> None:
    profiles = performance_profiles({"a": {"x": None, "y": math.inf}})
    assert profiles.scores == {"x": 0.0, "y": 0.0}
    assert profiles.fraction_within("x", 1e6) == 0.0
    assert np.isinf(profiles.ratios).all()


def test_identical_optimizers_tie_at_one() -> None:
    profiles = performance_profiles({"a": {"x": 3, "y": 3}, "b": {"x": 8, "y": 8}})
    assert profiles.scores == {"x": 1.0, "y": 1.0}


def test_tables_and_plot(tmp_path: Path) -> None:
    profiles = performance_profiles(STEPS, taus=(1.0, 2.0))
    table = profiles.to_table().to_dict()
    assert table["columns"] == ["optimizer", "rho(1)", "rho(2)", "score (tau_max 4)"]
    assert table["values"][1][:3] == ["B", 0.5, 0.5]
    ratios = profiles.ratio_table()
    assert "failed" in ratios.render_text()
    path = profiles.write_plot(tmp_path / "sub" / "profiles.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("steps", "words"),
    [
        ({}, "The 'steps' parameter of performance_profiles must be a non-empty mapping"),
        ({"a": {}}, "non-empty mapping optimizer -> steps"),
        ({"a": {"x": 1, "y": 2}, "b": {"x": 1}}, "same optimizers for every problem"),
        ({"a": {"x": 0}}, "The 'steps['a']['x']' parameter of performance_profiles must be"),
        ({"a": {"x": -3}}, "a number > 0, or math.inf or None"),
        ({"a": {"x": math.nan}}, "Got nan instead"),
        ({"a": {"x": True}}, "Got True instead"),
        ({"a": {"x": "10"}}, "Got '10' instead"),
    ],
)
def test_bad_steps_are_refused_in_the_one_format(steps: object, words: str) -> None:
    with pytest.raises(ValueError, match="must") as raised:
        performance_profiles(steps)  # type: ignore[arg-type]
    assert words in str(raised.value)


def test_bad_taus_and_tau_max_are_refused() -> None:
    with pytest.raises(ValueError, match="The 'tau_max' parameter of performance_profiles"):
        performance_profiles(STEPS, tau_max=1.0)
    with pytest.raises(ValueError, match="must be finite"):
        performance_profiles(STEPS, tau_max=math.inf)
    with pytest.raises(ValueError, match="The 'taus' parameter .* floats >= 1"):
        performance_profiles(STEPS, taus=(0.5, 2.0))
    with pytest.raises(ValueError, match="The 'optimizer' parameter of PerformanceProfiles"):
        performance_profiles(STEPS).score("D")


def test_surface_steps_are_the_benchmark_steps() -> None:
    results = surface_benchmark(tuned_optimizers(["SGD", "Adam"]), ["saddle"], max_steps=3)
    steps = surface_steps(results)
    for name in ("SGD", "Adam"):
        measured = results.get("saddle", name).steps
        assert steps["saddle"][name] == (math.inf if measured is None else measured)


def test_quadratic_deep_steps_are_the_first_epoch_below_the_target() -> None:
    problem = make_quadratic_deep(num_epochs=4)
    run = run_quadratic_deep(problem, lambda params: SGD(params, lr=0.01))
    losses = run.test_losses  # measured oracle: the test loss after each epoch
    targets = [losses[2] + 1e-9, losses[-1] - 1.0]  # reached after epoch 2; never
    steps = quadratic_deep_steps(
        {"SGD": lambda params: SGD(params, lr=0.01)}, targets, problem=problem
    )
    first, never = steps.values()
    assert losses[1] > targets[0]
    assert first == {"SGD": 2.0 * problem.steps_per_epoch}
    assert never == {"SGD": math.inf}
    with pytest.raises(ValueError, match="The 'targets' parameter .* finite floats"):
        quadratic_deep_steps(tuned_optimizers(["SGD"]), [math.nan], problem=problem)
    with pytest.raises(ValueError, match="values below the initial test loss"):
        quadratic_deep_steps(tuned_optimizers(["SGD"]), [losses[0]], problem=problem)


def test_bench_profiles_command(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "gradwise", "bench", "profiles", "--optimizers", "SGD,Adam",
        "--surfaces", "saddle", "--max-steps", "10", "--quadratic-deep-epochs", "2",
        "--quadratic-deep-gaps", "0.5", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "saddle" in done.stdout
    assert "quadratic_deep<=" in done.stdout
    assert (tmp_path / "profiles.png").read_bytes()[:4] == b"\x89PNG"
    table = json.loads((tmp_path / "profiles.json").read_text())
    assert [row[0] for row in table["values"]] == ["SGD", "Adam"]
    assert all(0.0 <= row[-1] <= 1.0 for row in table["values"])


def test_bench_profiles_refuses_no_problem() -> None:
    command = [sys.executable, "-m", "gradwise", "bench", "profiles", "--surfaces", "",
               "--quadratic-deep-epochs", "0"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "leave no problem" in done.stderr


def test_quadratic_deep_steps_refuses_targets_that_name_the_same_problem() -> None:
    problem = make_quadratic_deep(num_epochs=1)
    sgd = {"SGD": lambda params: SGD(params, lr=0.01)}
    for targets in ([150.0, 150.0], [150.0, 150.001]):  # one name: quadratic_deep<=150
        with pytest.raises(ValueError, match=r"^The 'targets' parameter of quadratic_deep_st"
                           r"eps must be .*distinct.* Got \[150\.0, 150\.0"):  # fmt: skip
            quadratic_deep_steps(sgd, targets, problem=problem)


def test_bench_profiles_refuses_gaps_that_name_the_same_problem(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["bench", "profiles", "--surfaces", "", "--quadratic-deep-epochs", "1",
                 "--quadratic-deep-gaps", "0.5,0.5", "--optimizers", "SGD"])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 2
    assert len(printed.err.strip().splitlines()) == 1, printed.err
    assert "distinct" in printed.err
    assert "zip()" not in printed.err
