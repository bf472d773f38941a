"""The detectors on synthetic series: each fires on its symptom and stays quiet otherwise."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from gradwise import Finding, monitor
from gradwise.monitor import History, Series, Thresholds

DEFAULTS = Thresholds()


def series(pairs: list[tuple[int, float]]) -> Series:
    result = Series()
    for step, value in pairs:
        result.append(step, value)
    return result


def ramp(start: int, stop: int, every: int, value: object) -> Series:
    """Values at start, start + every, ... < stop; ``value`` is a number or step -> number."""
    get = value if callable(value) else (lambda step: value)
    return series([(s, float(get(s))) for s in range(start, stop, every)])  # type: ignore[operator]


def steps_loss(stop: int, value: object) -> Series:
    return ramp(1, stop + 1, 1, value)


def healthy(stop: int = 400) -> History:
    """A run whose loss decays from 2.3 towards 0.05, with healthy ratios and gradients."""
    curve = lambda s: 0.05 + 2.25 * math.exp(-s / 60)  # noqa: E731
    history = History(
        initial_loss=2.3, chance_loss=2.3026, chance_accuracy=0.11, learning_rate=1e-3
    )
    history.loss = steps_loss(stop, curve)
    history.smoothed_loss = ramp(10, stop + 1, 10, curve)
    history.peak_loss = ramp(10, stop + 1, 10, lambda s: curve(s) * 1.1)
    history.monitor_loss = ramp(0, stop + 1, 50, curve)
    history.monitor_accuracy = ramp(0, stop + 1, 50, lambda s: 1 - curve(s) / 2.5)
    for layer in ("0.weight", "2.weight", "4.weight"):
        history.update_ratio[layer] = ramp(10, stop + 1, 10, 3e-3)
        history.layer_grad_norm[layer] = ramp(10, stop + 1, 10, 0.5)
    history.grad_norm = ramp(10, stop + 1, 10, 1.0)
    history.first_last_grad_ratio = ramp(10, stop + 1, 10, 1.0)
    history.dead_fraction["1"] = ramp(0, stop + 1, 50, 0.05)
    history.saturated_fraction["3"] = ramp(0, stop + 1, 50, 0.02)
    return history


def kind(finding: object) -> Finding | None:
    return None if finding is None else finding.kind  # type: ignore[attr-defined]


@pytest.mark.parametrize("detect", monitor.DETECTORS)
def test_every_detector_is_quiet_on_an_empty_and_on_a_healthy_history(detect: object) -> None:
    assert detect(History(), DEFAULTS) is None  # type: ignore[operator]
    assert detect(healthy(), DEFAULTS) is None  # type: ignore[operator]


def test_the_registry_holds_every_public_detector() -> None:
    public = {getattr(monitor, name) for name in monitor.__all__ if name.startswith("detect_")}
    assert set(monitor.DETECTORS) == public


# -- learning rate -------------------------------------------------------------------------


def test_an_early_blow_up_is_a_learning_rate_too_high_with_the_first_update_factor() -> None:
    history = healthy(30)
    history.peak_loss = series([(10, 30.0), (20, 2.0), (30, 1.9)])
    for layer in history.update_ratio:
        history.update_ratio[layer] = series([(1, 0.5), (10, 0.01), (20, 0.01), (30, 0.01)])
    finding = monitor.detect_learning_rate_too_high(history, DEFAULTS)
    assert kind(finding) is Finding.LEARNING_RATE_TOO_HIGH
    assert finding is not None
    # factor = first ratio / (target * band) = 0.5 / 1e-2 = 50
    assert finding.evidence["factor"] == pytest.approx(50)
    assert finding.fix == {"optimizer.lr": pytest.approx(1e-3 / 50)}


def test_a_peak_below_the_blow_up_factor_is_not_divergence() -> None:
    history = healthy(30)
    history.peak_loss = series([(10, 1.9 * 2.3)])
    assert monitor.detect_learning_rate_too_high(history, DEFAULTS) is None


def test_a_trained_models_loss_doubling_near_zero_is_not_divergence() -> None:
    # A watch attached to a trained digits MLP (Adam 1e-3): the monitoring loss 0.0012,
    # the first step's 0.0014, and the median of 3 step losses at 0.0029 by step 60. Twice
    # a loss near 0 is batch noise; divergence goes back up towards chance (2.30).
    history = History(initial_loss=0.00115, chance_loss=2.3026, learning_rate=1e-3)
    history.loss = steps_loss(60, lambda s: 0.0014 if s == 1 else 0.001)
    history.peak_loss = series([(10, 0.0015), (60, 0.0029)])
    history.smoothed_loss = ramp(10, 61, 10, lambda s: 0.001 if s < 50 else 0.0018)
    assert monitor.detect_learning_rate_too_high(history, DEFAULTS) is None
    history.peak_loss.append(70, 1.5)  # above 2x a quarter of the chance loss
    finding = monitor.detect_learning_rate_too_high(history, DEFAULTS)
    assert kind(finding) is Finding.LEARNING_RATE_TOO_HIGH
    # Without a chance loss (a regression), the initial loss is the only reference.
    history = History(initial_loss=0.00115, learning_rate=1e-3)
    history.peak_loss = series([(10, 0.0029)])
    assert kind(monitor.detect_learning_rate_too_high(history, DEFAULTS)) is not None


def test_update_ratios_far_above_1e_3_mean_the_learning_rate_is_too_high() -> None:
    history = healthy()
    history.update_ratio = {name: ramp(10, 401, 10, 0.3) for name in ("a", "b", "c")}
    finding = monitor.detect_learning_rate_too_high(history, DEFAULTS)
    assert kind(finding) is Finding.LEARNING_RATE_TOO_HIGH
    assert finding is not None
    assert finding.evidence["factor"] == pytest.approx(30)  # 0.3 / 1e-2


def test_a_sustained_climb_of_the_smoothed_loss_is_divergence_and_one_bump_is_not() -> None:
    history = healthy()
    values = [v for _, v in history.smoothed_loss]
    # Best 0.05; gave back more than half of the progress (2.3 - 0.05) at the last checks.
    climbed = values[:-2] + [1.3, 1.4]
    history.smoothed_loss = series(list(zip(history.smoothed_loss.steps, climbed, strict=True)))
    assert kind(monitor.detect_learning_rate_too_high(history, DEFAULTS)) is (
        Finding.LEARNING_RATE_TOO_HIGH
    )
    bumped = values[:-2] + [1.4, 0.06]
    history.smoothed_loss = series(list(zip(history.smoothed_loss.steps, bumped, strict=True)))
    assert monitor.detect_learning_rate_too_high(history, DEFAULTS) is None


def slow_run(ratio: float) -> History:
    history = healthy()
    linear = lambda s: 2.3 - 0.0005 * s  # noqa: E731
    history.loss = steps_loss(400, linear)
    history.smoothed_loss = ramp(10, 401, 10, linear)
    history.peak_loss = ramp(10, 401, 10, linear)
    history.monitor_loss = ramp(0, 401, 50, linear)
    history.update_ratio = {name: ramp(10, 401, 10, ratio) for name in ("a", "b")}
    return history


def test_tiny_update_ratios_with_a_slow_linear_decline_mean_the_learning_rate_is_too_low() -> None:
    finding = monitor.detect_learning_rate_too_low(slow_run(1e-4), DEFAULTS)
    assert kind(finding) is Finding.LEARNING_RATE_TOO_LOW
    assert finding is not None
    assert finding.evidence["factor"] == pytest.approx(100)  # 1e-2 / 1e-4
    assert finding.fix == {"optimizer.lr": pytest.approx(1e-3 * 100)}


def test_a_slow_decline_with_healthy_ratios_or_a_converged_loss_is_not_too_low() -> None:
    assert monitor.detect_learning_rate_too_low(slow_run(3e-3), DEFAULTS) is None
    converged = healthy()
    converged.update_ratio = {name: ramp(10, 401, 10, 1e-5) for name in ("a", "b")}
    assert monitor.detect_learning_rate_too_low(converged, DEFAULTS) is None


def test_the_median_update_ratio_is_the_median_over_layers_of_window_medians() -> None:
    history = healthy()
    history.update_ratio = {
        "a": ramp(10, 401, 10, lambda s: 1e-3 * (1 + s % 3)),
        "b": ramp(10, 401, 10, 5e-3),
        "c": ramp(10, 401, 10, lambda s: 1e-2 if s > 300 else 1.0),
    }
    start = 400 - DEFAULTS.window_steps + 1
    expected = statistics.median(
        statistics.median(s.since(start)) for s in history.update_ratio.values()
    )
    assert monitor.median_update_ratio(history, DEFAULTS) == pytest.approx(expected)


# -- oscillation, plateau, no learning signal ------------------------------------------------


def with_monitor(values: list[float], every: int = 25, start: int = 50) -> History:
    history = healthy(start + every * (len(values) - 1))
    history.monitor_loss = series(
        [(0, 2.3)] + [(start + every * i, v) for i, v in enumerate(values)]
    )
    return history


def test_a_loss_that_swings_up_and_down_without_progress_oscillates() -> None:
    history = with_monitor([1.0, 1.6, 0.9, 1.5, 1.0, 1.7, 0.95, 1.6, 1.0])
    assert kind(monitor.detect_oscillation(history, DEFAULTS)) is Finding.OSCILLATION


@pytest.mark.parametrize(
    "values",
    [
        [1.6, 1.4, 1.2, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5],  # steady progress
        [0.02, 0.05, 0.02, 0.06, 0.02, 0.05, 0.03, 0.06, 0.02],  # converged, near zero
        [1.0, 1.02, 0.99, 1.01, 1.0, 1.02, 0.99, 1.01, 1.0],  # swings of 2%
    ],
)
def test_progress_small_swings_or_a_converged_loss_are_not_oscillation(values: list[float]) -> None:
    assert monitor.detect_oscillation(with_monitor(values), DEFAULTS) is None


def test_probes_denser_than_the_window_allows_are_thinned_before_judging() -> None:
    # Probes every 5 steps zigzag, but the ones 25 steps apart (the spacing a 200-step
    # window of 8 probes calls for; counted back from the last) decrease steadily.
    values = [1.5 - 0.002 * i + (0.3 if i % 5 != 4 and i % 2 else 0.0) for i in range(60)]
    history = with_monitor(values, every=5)
    spaced = [v for i, v in enumerate(values) if i % 5 == 4]
    assert all(b < a for a, b in zip(spaced, spaced[1:], strict=False))
    assert monitor.detect_oscillation(history, DEFAULTS) is None
    dense = DEFAULTS.replace(window_steps=40)  # spacing 5: every probe counts
    assert kind(monitor.detect_oscillation(history, dense)) is Finding.OSCILLATION


def flat(level: float) -> History:
    history = healthy()
    history.monitor_loss = ramp(0, 401, 50, lambda s: 2.3 if s == 0 else level)
    history.smoothed_loss = ramp(10, 401, 10, level)
    return history


def test_a_loss_stuck_well_above_zero_is_a_plateau() -> None:
    history = flat(1.5)
    history.monitor_accuracy = ramp(0, 401, 50, 0.45)
    assert kind(monitor.detect_plateau(history, DEFAULTS)) is Finding.PLATEAU


def test_a_loss_stuck_at_chance_with_chance_accuracy_is_no_learning_signal() -> None:
    history = flat(2.29)
    history.val_accuracy = ramp(50, 401, 50, 0.12)
    assert kind(monitor.detect_plateau(history, DEFAULTS)) is Finding.NO_LEARNING_SIGNAL


def test_improving_or_converged_losses_are_not_plateaus() -> None:
    assert monitor.detect_plateau(healthy(), DEFAULTS) is None
    assert monitor.detect_plateau(flat(0.1), DEFAULTS) is None


def test_a_plateau_with_tiny_updates_is_left_to_the_learning_rate_detector() -> None:
    history = flat(1.5)
    history.update_ratio = {name: ramp(10, 401, 10, 1e-5) for name in ("a", "b")}
    assert monitor.detect_plateau(history, DEFAULTS) is None


# -- gradients -------------------------------------------------------------------------------


def test_vanishing_gradients_need_a_tiny_ratio_and_a_tiny_first_norm_at_two_checks() -> None:
    history = healthy(20)
    history.first_last_grad_ratio = series([(10, 1e-5), (20, 1e-5)])
    history.layer_grad_norm["0.weight"] = series([(10, 1e-6), (20, 1e-6)])
    assert kind(monitor.detect_vanishing_gradients(history, DEFAULTS)) is (
        Finding.VANISHING_GRADIENTS
    )
    history.layer_grad_norm["0.weight"] = series([(10, 1e-6), (20, 1e-2)])
    assert monitor.detect_vanishing_gradients(history, DEFAULTS) is None
    history.first_last_grad_ratio = series([(20, 1e-5)])
    history.layer_grad_norm["0.weight"] = series([(20, 1e-6)])
    assert monitor.detect_vanishing_gradients(history, DEFAULTS) is None


def test_a_first_layer_gradient_70x_the_last_explodes() -> None:
    history = healthy(20)
    history.first_last_grad_ratio = series([(10, 200.0), (20, 150.0)])
    assert kind(monitor.detect_exploding_gradients(history, DEFAULTS)) is (
        Finding.EXPLODING_GRADIENTS
    )


def test_a_gradient_norm_spike_explodes_and_ordinary_noise_does_not() -> None:
    history = healthy()
    history.grad_norm = ramp(10, 401, 10, lambda s: 1.0 + 0.3 * math.sin(s))
    assert monitor.detect_exploding_gradients(history, DEFAULTS) is None
    history.grad_norm.append(410, 500.0)
    finding = monitor.detect_exploding_gradients(history, DEFAULTS)
    assert kind(finding) is Finding.EXPLODING_GRADIENTS
    assert finding is not None
    assert finding.evidence["grad_norm"] == 500.0


def test_a_converged_run_whose_gradient_norm_returns_to_its_early_size_is_not_exploding() -> None:
    # Cross-entropy on separable data (moons) converges to a loss near 0, where the
    # gradient norm is ~1e-3 at most steps and a batch holding the hardest samples brings
    # it back to 0.4: 100x the recent median, but smaller than the norms the run had while
    # it learned (1.27 at step 1). Measured with Adam 1e-3 on moons (the detector fired at
    # step 1530 of a run with validation accuracy 1.0).
    history = healthy(2000)
    history.grad_norm = ramp(10, 2001, 10, lambda s: 1.27 * math.exp(-s / 150) + 3e-3)
    history.grad_norm.append(2010, 0.42)
    assert monitor.detect_exploding_gradients(history, DEFAULTS) is None
    # Above every earlier norm, it is a spike (a corrupted batch: 825 after at most 1.06).
    history.grad_norm.append(2020, 5.0)
    finding = monitor.detect_exploding_gradients(history, DEFAULTS)
    assert kind(finding) is Finding.EXPLODING_GRADIENTS
    assert finding is not None
    assert finding.evidence["grad_norm"] == 5.0


# -- units ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "detect", "expected"),
    [
        ("dead_fraction", monitor.detect_dead_units, Finding.DEAD_UNITS),
        ("saturated_fraction", monitor.detect_saturated_units, Finding.SATURATED_UNITS),
    ],
)
def test_unit_findings_need_the_fraction_at_two_consecutive_probes(
    table: str, detect: object, expected: Finding
) -> None:
    history = healthy(100)
    layers = getattr(history, table)
    layers["5"] = series([(0, 0.1), (50, 0.8), (100, 0.9)])
    finding = detect(history, DEFAULTS)  # type: ignore[operator]
    assert kind(finding) is expected
    assert finding.evidence["layer"] == "5"
    layers["5"] = series([(0, 0.9), (50, 0.9), (100, 0.2)])
    assert detect(history, DEFAULTS) is None  # type: ignore[operator]


# -- generalization and non-finite values ----------------------------------------------------


def overfit(gap: float, val_rise: float) -> History:
    history = healthy()
    steps = range(50, 401, 50)
    history.train_loss = series([(s, 1.0 / s) for s in steps])
    history.train_accuracy = series([(s, 1.0) for s in steps])
    history.val_accuracy = series([(s, 1.0 - gap) for s in steps])
    history.val_loss = series([(s, 0.6 if s <= 150 else 0.6 * (1 + val_rise)) for s in steps])
    return history


def test_a_train_validation_gap_with_a_rising_validation_loss_is_overfitting() -> None:
    assert kind(monitor.detect_overfitting(overfit(0.15, 0.1), DEFAULTS)) is Finding.OVERFITTING


@pytest.mark.parametrize(("gap", "rise"), [(0.05, 0.1), (0.15, 0.0), (0.15, 0.02)])
def test_a_small_gap_or_a_flat_validation_loss_is_not_overfitting(gap: float, rise: float) -> None:
    assert monitor.detect_overfitting(overfit(gap, rise), DEFAULTS) is None


def test_a_nonfinite_value_is_reported_at_its_step_with_its_layer() -> None:
    history = healthy(20)
    history.nonfinite = {"step": 17, "source": "loss", "where": "parameter", "layer": "3.weight"}
    finding = monitor.detect_nonfinite(history, DEFAULTS)
    assert kind(finding) is Finding.NONFINITE_LOSS
    assert finding is not None
    assert finding.step == 17
    assert finding.evidence["layer"] == "3.weight"
    assert finding.fix == {"optimizer.lr": pytest.approx(1e-4)}


# -- data ------------------------------------------------------------------------------------


def test_findings_are_json_data() -> None:
    history = slow_run(1e-4)
    finding = monitor.detect_learning_rate_too_low(history, DEFAULTS)
    assert finding is not None
    assert json.loads(json.dumps(finding.to_dict(), allow_nan=False))["kind"] == (
        "learning_rate_too_low"
    )


def test_a_history_round_trips_through_plain_data() -> None:
    history = healthy()
    history.nonfinite = {"step": 3, "layer": None}
    data = json.loads(json.dumps(history.to_dict()))
    assert History.from_dict(data) == history


def test_series_windows_select_by_step() -> None:
    values = series([(0, 1.0), (10, 2.0), (20, 3.0), (30, 4.0)])
    assert values.since(10) == [2.0, 3.0, 4.0]
    assert values.since(11) == [3.0, 4.0]
    assert values.between(10, 30) == [2.0, 3.0]
    assert (values.last, values.last_step, len(values)) == (4.0, 30, 4)


def blown_up(first_ratios: list[tuple[int, float]]) -> History:
    """An early blow-up whose update ratios were measured at ``first_ratios`` only."""
    history = healthy(30)
    history.peak_loss = series([(10, 30.0), (20, 2.0), (30, 1.9)])
    for layer in history.update_ratio:
        history.update_ratio[layer] = series(first_ratios)
    return history


def test_a_warmup_from_zero_takes_the_factor_from_the_first_update_that_moved() -> None:
    # A warmup that starts at lr 0 makes step 1's update (and its ratio) 0.
    finding = monitor.detect_learning_rate_too_high(blown_up([(1, 0.0), (10, 0.5)]), DEFAULTS)
    assert finding is not None
    assert finding.evidence["first_update_ratio"] == pytest.approx(0.5)
    assert finding.evidence["factor"] == pytest.approx(50)  # 0.5 / 1e-2, not the floor of 2
    assert finding.prescription == "lower the learning rate ~50x"


def test_the_first_update_under_a_warmup_is_taken_back_to_the_base_learning_rate() -> None:
    # Step 2's update was made at 1/50 of the configured rate (a linear warmup over 50
    # steps from 0): at the configured rate its ratio is 50x larger, and so is the factor.
    history = blown_up([(1, 0.0), (2, 0.01)])
    history.step_learning_rate = series([(1, 0.0), (2, 1e-3 / 50)])
    finding = monitor.detect_learning_rate_too_high(history, DEFAULTS)
    assert finding is not None
    assert finding.evidence["first_update_ratio"] == pytest.approx(0.5)
    assert finding.evidence["factor"] == pytest.approx(50)
    assert finding.fix == {"optimizer.lr": pytest.approx(1e-3 / 50)}


def test_an_optimizers_inflated_first_steps_are_taken_back_to_their_later_size() -> None:
    # RMSprop's step 1 is 1 / sqrt(1 - 0.99) = 10 times what the same gradients give once
    # its average of squares has filled: the factor is taken from a tenth of the ratio.
    history = blown_up([(1, 0.5), (10, 0.3)])
    history.step_learning_rate = series([(1, 1e-3), (10, 1e-3)])
    history.step_size_bias = series([(1, 10.0), (10, 1 / math.sqrt(1 - 0.99**10))])
    finding = monitor.detect_learning_rate_too_high(history, DEFAULTS)
    assert finding is not None
    assert finding.evidence["first_update_ratio"] == pytest.approx(0.05)
    assert finding.evidence["factor"] == pytest.approx(5)  # 0.05 / 1e-2
    assert finding.fix == {"optimizer.lr": pytest.approx(1e-3 / 5)}
    # The window's ratios too: a median of 0.2 made at a bias of 2 is 0.1 at the base rate.
    history = healthy()
    for name in history.update_ratio:
        history.update_ratio[name] = ramp(10, 401, 10, 0.2)
    history.step_learning_rate = ramp(10, 401, 10, 1e-3)
    history.step_size_bias = ramp(10, 401, 10, 2.0)
    finding = monitor.detect_learning_rate_too_high(history, DEFAULTS)
    assert finding is not None
    assert finding.evidence["median_update_ratio"] == pytest.approx(0.2)
    assert finding.evidence["median_update_ratio_at_base_rate"] == pytest.approx(0.1)


def test_a_blow_up_names_the_initial_loss_it_rose_from() -> None:
    # A blow-up is measured from the initial loss, a slower rise from the best loss.
    finding = monitor.detect_learning_rate_too_high(blown_up([(1, 0.5)]), DEFAULTS)
    assert finding is not None
    assert finding.evidence["initial_loss"] == pytest.approx(2.3)
    assert finding.evidence["peak_loss"] == pytest.approx(30.0)
    assert "best_loss" not in finding.evidence
    history = healthy()
    history.smoothed_loss = ramp(10, 401, 10, lambda s: 0.5 if s < 300 else 2.0)
    finding = monitor.detect_learning_rate_too_high(history, DEFAULTS)
    assert finding is not None
    assert finding.evidence["best_loss"] == pytest.approx(0.5)
    assert finding.evidence["peak_loss"] == pytest.approx(2.0)
    assert "initial_loss" not in finding.evidence


def test_a_high_median_ratio_gives_its_factor_at_the_base_learning_rate() -> None:
    # The window's updates were made at half the configured rate (a decay): the factor
    # that brings the configured rate's ratio to 1e-2 is twice what the ratios show.
    history = healthy()
    for name in history.update_ratio:
        history.update_ratio[name] = ramp(10, 401, 10, 0.2)
    history.step_learning_rate = ramp(10, 401, 10, 1e-3 / 2)
    finding = monitor.detect_learning_rate_too_high(history, DEFAULTS)
    assert finding is not None
    assert finding.evidence["median_update_ratio"] == pytest.approx(0.2)
    assert finding.evidence["median_update_ratio_at_base_rate"] == pytest.approx(0.4)
    assert finding.evidence["factor"] == pytest.approx(40)


def test_a_decayed_schedule_is_not_a_too_low_learning_rate() -> None:
    # Ratios of 1e-4 made at 1/30 of the configured rate: 3e-3 at that rate, healthy.
    history = slow_run(1e-4)
    history.step_learning_rate = ramp(10, 401, 10, 1e-3 / 30)
    assert monitor.detect_learning_rate_too_low(history, DEFAULTS) is None
    assert monitor.median_update_ratio_at_base_rate(history, DEFAULTS) == pytest.approx(3e-3)
    # At the configured rate itself the same ratios are too small, by the same measure.
    history.step_learning_rate = ramp(10, 401, 10, 1e-3)
    finding = monitor.detect_learning_rate_too_low(history, DEFAULTS)
    assert kind(finding) is Finding.LEARNING_RATE_TOO_LOW


def test_ratios_made_at_a_rate_of_zero_measure_no_step_size() -> None:
    history = slow_run(1e-4)
    history.step_learning_rate = ramp(10, 401, 10, lambda s: 0.0 if s < 300 else 1e-3 / 2)
    # Only steps 300..400 count, each 2e-4 at the configured rate.
    assert monitor.median_update_ratio_at_base_rate(history, DEFAULTS) == pytest.approx(2e-4)
    assert monitor.median_update_ratio(history, DEFAULTS) == pytest.approx(1e-4)


def test_without_a_nonzero_update_ratio_the_factor_is_the_documented_default_of_10() -> None:
    # Step 10's ratio is 0 too: the blow-up killed every unit, so nothing moved.
    finding = monitor.detect_learning_rate_too_high(blown_up([(1, 0.0), (10, 0.0)]), DEFAULTS)
    assert finding is not None
    assert finding.evidence["factor"] == pytest.approx(10)
    assert finding.fix == {"optimizer.lr": pytest.approx(1e-3 / 10)}


@pytest.mark.parametrize(
    "finding",
    [
        lambda: monitor.detect_learning_rate_too_high(blown_up([(1, 1.023)]), DEFAULTS),
        lambda: monitor.detect_learning_rate_too_low(slow_run(1e-2 / 102.3), DEFAULTS),
    ],
    ids=["too_high", "too_low"],
)
def test_the_factor_in_the_evidence_is_the_one_the_prescription_names(finding: object) -> None:
    diagnosis = finding()  # type: ignore[operator]
    assert diagnosis is not None
    assert diagnosis.evidence["factor"] == pytest.approx(102.3)  # not 100: 2 digits
    assert f"~{diagnosis.evidence['factor']:.0f}x" in diagnosis.prescription
