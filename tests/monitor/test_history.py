"""Series' running aggregates against a direct computation over the recorded values, and
the detectors' shared measurements against fresh ones."""

from __future__ import annotations

import math
import random
import threading

import pytest
import torch
from torch import nn

from gradwise import monitor
from gradwise.monitor import History, Series, Thresholds
from gradwise.monitor._detectors import (
    DETECTORS,
    _spaced_probes,
    loss_rise,
    median_update_ratio,
    sharing_measurements,
)
from tests.monitor.setups import sgd_step


def direct(values: list[float]) -> tuple[float, float, float, int]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, math.nan, 0
    return min(finite), max(finite), finite[-1], len(finite)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize("seed", range(5))
def test_the_aggregates_match_a_direct_computation_as_the_series_grows(seed: int) -> None:
    rng = random.Random(seed)
    series = Series()
    step = 0
    for _ in range(300):
        step += rng.choice((0, 1, 1, 5))  # repeated steps too
        value = rng.choice((math.nan, math.inf, -math.inf, rng.gauss(0, 1), rng.gauss(0, 1)))
        series.append(step, value)
        for _ in range(3):  # several questions between appends, in any order
            bound = rng.randint(-2, step + 2)
            before = [v for s, v in series if s < bound]
            since = [v for s, v in series if s >= bound]
            low, high, last, count = direct(before)
            assert same(series.finite_min(before=bound), low)
            assert same(series.finite_max(before=bound), high)
            assert same(series.last_finite(before=bound), last)
            assert series.finite_count(before=bound) == count
            low, high, _, _ = direct(since)
            assert same(series.finite_min(since=bound), low)
            assert same(series.finite_max(since=bound), high)
            assert series.count_since(bound) == len(since)
            assert series.finite_since(bound) == [v for v in since if math.isfinite(v)]
        low, high, last, count = direct(series.values)
        assert same(series.finite_min(), low)
        assert same(series.finite_max(), high)
        assert same(series.last_finite(), last)
        assert series.finite_count() == count


def test_a_series_whose_lists_are_replaced_answers_for_the_new_values() -> None:
    series = Series([1, 2, 3], [3.0, 1.0, 2.0])
    assert series.finite_min() == 1.0
    assert series.finite_max(since=2) == 2.0
    series.steps, series.values = [1, 2], [5.0, 7.0]
    assert series.finite_min() == 5.0
    assert series.finite_max(since=2) == 7.0
    assert Series([1], [1.0]) == Series([1], [1.0])  # the cache is not part of equality


def test_before_and_since_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        Series([1], [1.0]).finite_min(before=2, since=0)


def test_shared_measurements_are_taken_once_per_history_and_equal_fresh_ones() -> None:
    thresholds = Thresholds()
    histories = []
    for scale in (1e-4, 1e-2):
        history = History(initial_loss=2.3, learning_rate=0.1)
        steps = list(range(0, 401, 10))
        history.smoothed_loss = Series(steps, [2.3 - 0.001 * s for s in steps])
        history.peak_loss = Series(steps, [2.3] * len(steps))
        history.update_ratio["0.weight"] = Series(steps[1:], [scale] * (len(steps) - 1))
        histories.append(history)
    fresh = [(median_update_ratio(h, thresholds), loss_rise(h, thresholds)) for h in histories]
    assert fresh[0][0] != fresh[1][0]
    with sharing_measurements():
        shared = [(median_update_ratio(h, thresholds), loss_rise(h, thresholds)) for h in histories]
        findings = [[d(h, thresholds) for d in DETECTORS] for h in histories]
    assert shared == fresh
    assert findings == [[d(h, thresholds) for d in DETECTORS] for h in histories]


def test_a_long_every_step_watch_finds_what_the_direct_detectors_find() -> None:
    # Dead units (a large negative bias): the watch, sharing measurements and using the
    # running aggregates, must have raised what the detectors find on its final history.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs = torch.randn(128, 8)
    targets = (inputs[:, 0] > 0).long() + (inputs[:, 1] > 1).long()
    watch = monitor.watch(model, optimizer, monitor_data=(inputs, targets), every=1)
    for _ in range(300):
        watch.step(sgd_step(model, optimizer, (inputs, targets)))
    kinds = {finding.kind for finding in watch.findings()}
    direct_kinds = {
        finding.kind
        for detect in DETECTORS
        if (finding := detect(watch.history, watch.thresholds)) is not None
    }
    assert direct_kinds  # the planted fault shows
    assert direct_kinds <= kinds


def spaced_probes_by_walking(series: Series, thresholds: Thresholds) -> list[float]:
    """The detector's definition, one recorded value at a time."""
    spacing = thresholds.window_steps / thresholds.oscillation_probes
    picked: list[float] = []
    last_step = math.inf
    for step, value in zip(reversed(series.steps), reversed(series.values), strict=True):
        if step < thresholds.warmup_steps or len(picked) == thresholds.oscillation_probes:
            break
        if math.isfinite(value) and step <= last_step - spacing:
            picked.append(value)
            last_step = step
    return picked[::-1]


@pytest.mark.parametrize("seed", range(20))
def test_the_oscillation_probes_are_those_a_walk_back_picks(seed: int) -> None:
    rng = random.Random(seed)
    thresholds = Thresholds(
        window_steps=rng.choice((20, 100, 200)), warmup_steps=rng.choice((0, 10, 50))
    )
    series = Series()
    step = 0
    for _ in range(rng.randint(0, 400)):
        step += rng.choice((0, 1, 1, 3, 10))
        series.append(step, rng.choice((math.nan, math.inf, rng.random(), rng.random())))
    assert _spaced_probes(series, thresholds) == spaced_probes_by_walking(series, thresholds)


def test_measurements_shared_in_one_thread_are_not_seen_by_another() -> None:
    thresholds = Thresholds()
    history = History(initial_loss=2.3)
    steps = list(range(60, 260, 10))
    history.update_ratio["0.weight"] = Series(steps, [1e-3] * len(steps))
    inside, release = threading.Event(), threading.Event()
    seen: list[float | None] = []

    def watch_in_another_thread() -> None:
        with sharing_measurements():
            seen.append(median_update_ratio(history, thresholds))
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=watch_in_another_thread)
    thread.start()
    try:
        assert inside.wait(10)
        for step in range(260, 460, 10):  # the window now holds ratios of 1e-2 only
            history.update_ratio["0.weight"].append(step, 1e-2)
        history.loss.append(450, 1.0)
        fresh = median_update_ratio(History.from_dict(history.to_dict()), thresholds)
        assert median_update_ratio(history, thresholds) == fresh == 1e-2 != seen[0]
    finally:
        release.set()
        thread.join()


def test_fields_added_later_do_not_shift_positional_construction() -> None:
    # The fields as of 85d1eee, in order: a History built positionally with them keeps
    # each value where it was (step_size_bias came after, and goes last).
    import dataclasses

    from gradwise.monitor import History

    before = [
        "loss", "smoothed_loss", "peak_loss", "monitor_loss", "monitor_accuracy",
        "train_loss", "train_accuracy", "val_loss", "val_accuracy", "grad_norm",
        "first_last_grad_ratio", "layer_grad_norm", "update_ratio", "step_learning_rate",
        "dead_fraction", "saturated_fraction", "initial_loss", "chance_loss",
        "chance_accuracy", "learning_rate", "nonfinite",
    ]  # fmt: skip
    names = [item.name for item in dataclasses.fields(History)]
    assert names[: len(before)] == before
