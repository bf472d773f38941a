"""The smoothing, the lr grid and the two suggestion rules against closed forms."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from gradwise.lr_finder import analyze_sweep, default_smoothing, exponential_lrs, smooth_losses


def test_smoothing_is_the_normalized_exponentially_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    losses = list(rng.uniform(0.5, 3.0, size=40))
    beta = 0.9
    for i, value in enumerate(smooth_losses(losses, beta)):
        weights = np.array([beta ** (i - j) for j in range(i + 1)])
        assert value == pytest.approx(float(weights @ losses[: i + 1] / weights.sum()), rel=1e-12)


def test_zero_smoothing_returns_the_losses() -> None:
    assert smooth_losses([3.0, 1.0, 2.0], 0.0) == [3.0, 1.0, 2.0]


def test_debiased_smoothing_and_torch_lr_finder_recursion_agree_once_the_start_fades() -> None:
    # torch-lr-finder: s_0 = l_0, s_i = f l_i + (1 - f) s_{i-1}, f = 0.05; ours: beta = 0.95.
    losses = [2.0 + math.sin(i / 7.0) for i in range(300)]
    theirs = [losses[0]]
    for loss in losses[1:]:
        theirs.append(0.05 * loss + 0.95 * theirs[-1])
    ours = smooth_losses(losses, 0.95)
    assert ours[0] == theirs[0]
    assert abs(ours[20] - theirs[20]) > 1e-3  # the start weights differ ...
    assert ours[-1] == pytest.approx(theirs[-1], abs=1e-6)  # ... and fade as 0.95^i


def test_exponential_lrs_are_log_spaced_from_start_to_end() -> None:
    lrs = exponential_lrs(1e-7, 10.0, 100)
    np.testing.assert_allclose(lrs, np.logspace(-7, 1, 100), rtol=1e-12)


def _sigmoid_curve(x0: float, lrs: list[float]) -> list[float]:
    """Loss falls from 2 to 0.4 around log10 lr = x0, then explodes past 10 ** (x0 + 1.5)."""
    x = np.log10(lrs)
    loss = 2.0 - 1.6 / (1.0 + np.exp(-(x - x0) / 0.3))
    return list(np.where(x > x0 + 1.5, 50.0, loss))


def test_steepest_descent_and_min_loss_rule_on_a_known_curve() -> None:
    lrs = exponential_lrs(1e-6, 10.0, 141)  # 20 steps per decade
    result = analyze_sweep(lrs, _sigmoid_curve(-3.0, lrs), smoothing=0.0)
    spacing = 1 / 20
    assert abs(math.log10(result.steepest_lr) + 3.0) <= spacing + 1e-9
    first_bad = int(np.argmax(np.log10(lrs) > -1.5))
    assert result.diverged_at == first_bad
    assert result.lr_at_min_loss == lrs[first_bad - 1]  # the loss keeps falling until then
    assert result.min_loss_lr == pytest.approx(lrs[first_bad - 1] / 10)
    assert result.suggested_by == "steepest"
    assert result.suggestion == result.steepest_lr
    assert "Steepest descent" in result.reasoning
    assert "Min-loss/10" in result.reasoning


def test_a_flat_curve_with_a_noise_dip_falls_back_to_the_min_loss_rule() -> None:
    lrs = exponential_lrs(1e-6, 1.0, 121)
    losses = [2.0] * 121
    losses[30] = 1.8  # a dip in the flat start, steeper than the real (slow) descent
    losses[80:] = [2.0 - 0.006 * k for k in range(1, 41)] + [90.0]
    result = analyze_sweep(lrs, losses, smoothing=0.0)
    assert result.steepest_lr < result.min_loss_lr / 10
    assert result.suggested_by == "min_loss"
    assert result.suggestion == result.min_loss_lr


@pytest.mark.parametrize("noise", [0.0, 1e-6])
def test_a_curve_that_never_falls_says_so_and_offers_only_a_fallback(noise: float) -> None:
    # A model whose loss no learning rate changes (dead units, frozen layers): the
    # reasoning must not claim the loss fell, nor a steepest descent in rounding noise.
    lrs = exponential_lrs(1e-7, 10.0, 81)
    rng = np.random.default_rng(0)
    result = analyze_sweep(lrs, list(0.6854 + noise * rng.standard_normal(81)))
    assert result.suggested_by == "min_loss"
    assert "never fell below its first value" in result.reasoning
    assert "fell from" not in result.reasoning
    assert "Fallback" in result.reasoning


def test_a_suggestion_below_the_swept_range_is_flagged_as_untested() -> None:
    lrs = exponential_lrs(1e-3, 1.0, 61)
    losses = [1.0, 0.8] + [0.8 + 0.01 * k for k in range(59)]  # the minimum at the 2nd lr
    result = analyze_sweep(lrs, losses, smoothing=0.0)
    assert result.suggested_by == "min_loss"
    assert result.suggestion < lrs[0]
    assert "below the swept range" in result.reasoning
    normal = analyze_sweep(lrs, [1.0 / (1.0 + 10.0 * lr) for lr in lrs], smoothing=0.0)
    assert "below the swept range" not in normal.reasoning


def test_divergence_uses_the_factor_on_the_smoothed_loss() -> None:
    lrs = exponential_lrs(1e-3, 1.0, 10)
    losses = [1.0, 0.5, 0.5, 1.9, 2.1, 2.2]
    assert analyze_sweep(lrs, losses, smoothing=0.0, diverge_factor=4.0).diverged_at == 4
    assert analyze_sweep(lrs, losses, smoothing=0.0, diverge_factor=5.0).diverged_at is None
    assert analyze_sweep(lrs, [1.0, float("nan")], smoothing=0.0).diverged_at == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"smoothing": 1.0}, "The 'smoothing' parameter of analyze_sweep must be a float in [0, 1)"),
        ({"diverge_factor": 1.0}, "The 'diverge_factor' parameter of analyze_sweep must be a finite float > 1"),
        ({"rise_factor": 0.9}, "The 'rise_factor' parameter of analyze_sweep must be a finite float > 1"),
        ({"diverge_factor": float("inf")}, "The 'diverge_factor' parameter of analyze_sweep must be a finite float > 1. Got inf instead."),
        ({"planned_steps": -5}, "The 'planned_steps' parameter of analyze_sweep must be an int >= 2. Got -5 instead."),
        ({"planned_steps": "many"}, "The 'planned_steps' parameter of analyze_sweep must be an int >= 2. Got 'many' instead."),
    ],
)  # fmt: skip
def test_bad_settings_raise_the_standard_error(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        analyze_sweep([1e-3, 1e-2], [1.0, 0.5], **kwargs)  # type: ignore[arg-type]


def test_bad_grids_raise() -> None:
    with pytest.raises(ValueError, match="The 'lrs' parameter of analyze_sweep"):
        analyze_sweep([1e-2, 1e-3], [1.0, 0.5])
    with pytest.raises(ValueError, match="The 'end_lr' parameter of exponential_lrs"):
        exponential_lrs(1.0, 0.1, 10)
    with pytest.raises(ValueError, match="The 'num_steps' parameter of exponential_lrs"):
        exponential_lrs(1e-3, 1.0, 2)


def test_default_smoothing_spans_half_a_decade_of_the_grid() -> None:
    # 100 steps over 8 decades: 99 / 8 steps per decade, window 1 / (1 - beta) = half of it.
    beta = default_smoothing(exponential_lrs(1e-7, 10.0, 100))
    assert 1.0 / (1.0 - beta) == pytest.approx(99 / 8 / 2, rel=1e-12)
    assert default_smoothing(exponential_lrs(1e-3, 1.0, 4)) == 0.0  # 1 step per decade
    lrs = exponential_lrs(1e-4, 1.0, 41)
    losses = [1.0 + 0.1 * math.sin(k) for k in range(41)]
    implicit, explicit = (
        analyze_sweep(lrs, losses),
        analyze_sweep(lrs, losses, smoothing=default_smoothing(lrs)),
    )
    assert implicit.smoothed == explicit.smoothed
    assert implicit.smoothing == explicit.smoothing == default_smoothing(lrs)
    assert f"smoothing {implicit.smoothing:.3g}" in implicit.to_table().title


def test_steepest_point_of_an_evenly_falling_valley_is_its_middle_despite_noise() -> None:
    # Flat at 2 up to lr 1e-4, a straight fall to 1 at lr 1e-1, then divergence: every
    # slope on the fall is the same up to the noise, so the argmin of the slopes lands
    # anywhere on it; the steepest point reported is the middle, 10 ** -2.5.
    lrs = exponential_lrs(1e-6, 1.0, 121)
    x = np.log10(lrs)
    clean = np.where(x < -4, 2.0, 2.0 - (x + 4) / 3)
    clean = np.where(x > -1, 50.0, clean)
    argmins = []
    for seed in range(10):
        losses = clean + np.random.default_rng(seed).normal(0.0, 0.01, size=len(lrs))
        result = analyze_sweep(lrs, list(losses), smoothing=0.0)
        assert abs(math.log10(result.steepest_lr) + 2.5) <= 0.2, seed
        window = 121 // 20  # the same least-squares slopes, read by their argmin
        slopes = [np.polyfit(x[i - window : i + window + 1], losses[i - window : i + window + 1],
                             1)[0] for i in range(40, 100)]  # fmt: skip
        argmins.append(x[40 + int(np.argmin(slopes))])
    assert max(argmins) - min(argmins) > 0.5  # the argmin alone would wander over the fall


def test_steepest_point_is_the_centre_of_the_fall_not_the_middle_of_the_stretch() -> None:
    # A sharp fall (-2 per decade) over lr 1e-5 to 1e-4, then a long shoulder that falls
    # just over half as fast (-1.05 per decade) to lr 1e-2, where the loss turns up: one
    # stretch at least half as steep, from 10**-5 to 10**-2, whose middle is 10**-3.5. Its
    # fall is 2 in the first decade and 2.1 over the next two, so the centre of the fall
    # (the mean log lr weighted by the slope) is (2 * -4.5 + 2.1 * -3) / 4.1 = -3.73.
    lrs = exponential_lrs(1e-6, 1.0, 121)
    x = np.log10(lrs)
    clean = np.where(x < -5, 6.0, 6.0 - 2.0 * (x + 5))
    clean = np.where(x >= -4, 4.0 - 1.05 * (x + 4), clean)
    clean = np.where(x >= -2, 1.9 + 3.0 * (x + 2), clean)
    centre = (2.0 * -4.5 + 2.1 * -3.0) / 4.1
    for seed in range(5):
        losses = clean + np.random.default_rng(seed).normal(0.0, 0.003, size=len(lrs))
        result = analyze_sweep(lrs, list(losses), smoothing=0.0)
        assert abs(math.log10(result.steepest_lr) - centre) <= 0.1, (seed, result.steepest_lr)


def test_steepest_point_is_in_the_first_fall_when_a_steeper_one_follows_a_pause() -> None:
    # The shape of spirals with Adam on some seeds: a fall from 2.0 to 1.4 over lr 1e-4 to
    # 1e-3 (slope -0.6 per decade), a pause, then a steeper fall (-1.0 per decade) from
    # 1.4 to 0.9 over lr 10**-1.5 to 10**-1 before divergence. The sweep trains as it
    # goes, so the first fall (at least half as steep) is what the lr does; the answer is
    # its middle, 10 ** -3.5, not the second fall's 10 ** -1.25 (the argmin of the slopes).
    lrs = exponential_lrs(1e-6, 1.0, 121)
    x = np.log10(lrs)
    clean = np.where(x < -4, 2.0, 2.0 - 0.6 * (x + 4))
    clean = np.where(x >= -3, 1.4, clean)
    clean = np.where(x >= -1.5, 1.4 - 1.0 * (x + 1.5), clean)
    clean = np.where(x > -1, 50.0, clean)
    for seed in range(5):
        losses = clean + np.random.default_rng(seed).normal(0.0, 0.01, size=len(lrs))
        result = analyze_sweep(lrs, list(losses), smoothing=0.0)
        assert abs(math.log10(result.steepest_lr) + 3.5) <= 0.2, (seed, result.steepest_lr)


def test_the_analysis_ends_at_the_first_rise_of_the_smoothed_loss() -> None:
    # The shape of circles with SGD + momentum on some seeds: a fall from 0.69 to 0.40 over
    # lr 10**-1 to 10**-0.4 (slope -0.48 per decade), a bump to 1.1, then a steeper fall to
    # 0.1 (-1.5 per decade) over lr 10**-0.2 to 10**0.4 before divergence. Read past the
    # bump, the second fall is steeper by more than 2x and is taken (10 ** 0.1); cut at the
    # first rise (1.5x the best), the answer is the middle of the first fall, 10 ** -0.7.
    lrs = exponential_lrs(1e-4, 10.0, 101)
    x = np.log10(lrs)
    clean = np.where(x < -1, 0.69, 0.69 - 0.48 * (x + 1))
    clean = np.where(x >= -0.4, 1.1, clean)
    clean = np.where(x >= -0.2, 1.1 - 1.5 * (x + 0.2), clean)
    clean = np.where(x > 0.4, 50.0, clean)
    for seed in range(5):
        losses = list(clean + np.random.default_rng(seed).normal(0.0, 0.005, size=len(lrs)))
        cut = analyze_sweep(lrs, losses, smoothing=0.0)
        assert cut.rose_at is not None
        assert abs(math.log10(lrs[cut.rose_at]) + 0.4) <= 0.05
        assert abs(math.log10(cut.suggestion) + 0.7) <= 0.2, (seed, cut.suggestion)
        assert f"first rose to {cut.smoothed[cut.rose_at]:.4g}" in cut.reasoning
        uncut = analyze_sweep(lrs, losses, smoothing=0.0, rise_factor=4.0)
        assert uncut.rose_at is None
        assert abs(math.log10(uncut.suggestion) - 0.1) <= 0.2, (seed, uncut.suggestion)


def test_a_loss_whose_best_is_at_most_zero_diverges_on_a_rise_relative_to_its_scale() -> None:
    # Best > 0: fastai's rule, unchanged (stop above 4x the best). Best <= 0: a rise above
    # the best by 3x the larger of the fall so far and |best|.
    lrs = [10 ** (-4 + k / 10) for k in range(12)]
    positive = [2.0, 1.5, 1.0, 0.5, 0.5, 1.9, 2.1, 2.1, 2.1, 2.1, 2.1, 2.1]
    assert analyze_sweep(lrs, positive, smoothing=0.0).diverged_at == 6  # 2.1 > 4 * 0.5
    shifted = [v - 5.0 for v in positive]  # best -4.5: stop when above -4.5 + 3 * 4.5
    assert analyze_sweep(lrs, shifted, smoothing=0.0).diverged_at is None
    exploding = [-3.0, -3.5, -4.0, -4.0, 8.5, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0]
    assert analyze_sweep(lrs, exploding, smoothing=0.0).diverged_at == 4  # 12.5 > 3 * 4
    noisy_start = [-3.0, -3.01, -2.9, -3.05, -2.95, -3.1, -3.0, -3.2, -3.3, -3.4, -3.5, -3.6]
    assert analyze_sweep(lrs, noisy_start, smoothing=0.0).diverged_at is None


def test_the_table_pairs_the_min_loss_lr_with_its_own_smoothed_loss() -> None:
    # A fall to 0.40, a bump (the first rise ends the analysis), then a deeper fall to 0.2:
    # lr_at_min_loss is the minimum before the cut, so its row must show the smoothed loss
    # there (the oracle: the minimum of smoothed[:rose_at]), not the later, lower one.
    lrs = exponential_lrs(1e-4, 10.0, 101)
    x = np.log10(lrs)
    clean = np.where(x < -1, 0.69, 0.69 - 0.48 * (x + 1))
    clean = np.where(x >= -0.4, 1.1, clean)
    clean = np.where(x >= -0.2, 1.1 - 1.5 * (x + 0.2), clean)
    clean = np.where(x > 0.4, 50.0, clean)
    result = analyze_sweep(lrs, list(clean), smoothing=0.0)
    assert result.rose_at is not None
    before_cut = result.smoothed[: result.rose_at]
    assert result.lr_at_min_loss == lrs[int(np.argmin(before_cut))]
    assert min(before_cut) > min(result.smoothed)  # the later fall goes deeper
    values = {row[0]: row[1:] for row in result.to_table().to_dict()["values"]}
    assert values["min loss (reference)"][:2] == [result.lr_at_min_loss, min(before_cut)]


@pytest.mark.parametrize("first", [math.nan, math.inf])
def test_a_sweep_whose_first_loss_is_not_finite_renders_and_says_so(first: float) -> None:
    lrs = exponential_lrs(1e-4, 1.0, 41)
    result = analyze_sweep(lrs, [first], smoothing=0.0)
    assert result.diverged_at == 0
    text = result.to_table().render_text()  # min() of no finite loss raised here
    assert "stopped at step 0" in text
    assert "not finite" in result.reasoning
    assert "never fell" not in result.reasoning  # a NaN at the first lr is not "no fall"
    assert result.plot_png()[:4] == b"\x89PNG"


def test_a_recorded_sweep_in_numpy_is_analyzed_as_the_same_floats_in_a_list() -> None:
    # A recorded sweep is usually a numpy array (or a list of numpy scalars): it was
    # refused as "must be a sequence of floats". The oracle: the same numbers as Python
    # floats in lists, the form that was always accepted.
    lrs = exponential_lrs(1e-4, 1.0, 41)
    losses = [2.0 / (1.0 + 100.0 * lr) for lr in lrs]
    expected = analyze_sweep(lrs, losses)
    as_arrays = analyze_sweep(np.asarray(lrs), np.asarray(losses, dtype=np.float32))
    assert as_arrays.suggestion == pytest.approx(expected.suggestion, rel=1e-6)
    scalars = [np.float32(v) for v in losses]
    assert analyze_sweep(lrs, scalars).suggestion == pytest.approx(expected.suggestion, rel=1e-6)
    assert smooth_losses(np.asarray([1.0, 0.0, 0.0]), 0.5) == pytest.approx([1.0, 1 / 3, 1 / 7])
    assert default_smoothing(np.asarray(lrs)) == default_smoothing(lrs)
    with pytest.raises(ValueError, match="'losses' parameter of analyze_sweep must be"):
        analyze_sweep(lrs, np.ones((41, 1)))


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.84, 0.98, 0.999])
def test_smooth_losses_is_bitwise_the_formula_on_a_long_random_sequence(beta: float) -> None:
    # smooth_losses (and the sweep's stop rule, which shares its moving average) fold one
    # loss at a time; the values must be the formula's floats exactly, not approximately.
    losses = list(np.random.default_rng(0).lognormal(0.0, 2.0, size=20_000))
    average, expected = 0.0, []
    for step, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        expected.append(average / (1 - beta ** (step + 1)))
    assert smooth_losses(losses, smoothing=beta) == expected
