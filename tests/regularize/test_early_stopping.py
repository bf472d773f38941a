"""EarlyStopping against stop epochs worked out by hand from Keras 3's rules."""

import io
import math
import re

import pytest
import torch
from torch import nn

from gradwise.regularize import EarlyStopping


def stop_epoch(stopper, values, monitor="val_loss", model=None):
    """Feed one value per epoch; the epoch at which training stops, or None."""
    for epoch, value in enumerate(values):
        if stopper.on_epoch_end(epoch, {monitor: value, "other": 0.0}, model):
            return epoch
    return None


def test_keras_docstring_example_runs_four_epochs():
    # Keras: EarlyStopping(monitor='loss', patience=3) on a diverging loss stops after 4 epochs.
    stopper = EarlyStopping(monitor="loss", patience=3)
    assert stop_epoch(stopper, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], monitor="loss") == 3
    assert (stopper.best, stopper.best_epoch, stopper.wait) == (1.0, 0, 3)


@pytest.mark.parametrize(
    ("patience", "values", "expected"),
    [
        (0, [5.0, 4.0, 4.5, 3.0], 2),  # the first epoch without improvement stops
        (0, [5.0, 5.0], 1),  # equal is not better
        (2, [1.0, 0.9, 0.95, 0.8, 0.85, 0.86], 5),  # the counter resets on improvement
        (3, [1.0, 1.1, 1.2, 0.5, 0.6, 0.7, 0.8, 0.1], 6),
        (2, [3.0, 2.0, 1.0, 0.5], None),  # never two bad epochs in a row
    ],
)
def test_stops_when_wait_reaches_patience(patience, values, expected):
    assert stop_epoch(EarlyStopping(patience=patience), values) == expected


def test_never_stops_at_epoch_zero_and_nan_never_improves():
    stopper = EarlyStopping(patience=0)
    assert not stopper.on_epoch_end(0, {"val_loss": math.nan})  # wait 1 >= 0, but epoch 0
    assert stopper.best_epoch is None
    assert stopper.wait == 1
    assert not stopper.on_epoch_end(1, {"val_loss": 1.0})
    assert stopper.on_epoch_end(2, {"val_loss": math.nan})
    assert (stopper.stopped_epoch, stopper.best, stopper.should_stop) == (2, 1.0, True)


def keras3_stop_epoch(values, patience):
    """Keras 3's on_epoch_end written out for "min" mode without min_delta, baseline or
    start_from_epoch: ``best`` starts as None and anything improves on None."""
    best, wait = None, 0
    for epoch, value in enumerate(values):
        wait += 1
        if best is None or value < best:
            best, wait = value, 0
            continue
        if wait >= patience and epoch > 0:
            return epoch
    return None


@pytest.mark.parametrize(("leading", "patience"), [(1, 0), (1, 1), (1, 2), (2, 3), (3, 4)])
def test_after_leading_nans_the_first_finite_value_is_the_best(leading, patience):
    # Too few NaNs to exhaust patience; from the first finite value on, Keras 3's rules hold
    # as if the run had started there (Keras 3 itself would keep the NaN as its best).
    finite = [0.5, 0.6, 0.4, 0.45, 0.47, 0.49, 0.3, 0.9, 0.9, 0.9, 0.9, 0.9]
    model = nn.Linear(2, 2)
    stopper = EarlyStopping(patience=patience, restore_best_weights=True)
    stopped = None
    for epoch, value in enumerate([math.nan] * leading + finite):
        set_weights(model, float(epoch))
        if stopper.on_epoch_end(epoch, {"val_loss": value}, model):
            stopped = epoch
            break
        if epoch == leading:
            assert (stopper.best, stopper.best_epoch, stopper.wait) == (0.5, leading, 0)
    assert keras3_stop_epoch(finite, patience) is not None
    assert stopped == leading + keras3_stop_epoch(finite, patience)
    best = min(finite[: stopped - leading + 1])
    assert stopper.best == best
    assert stopper.best_epoch == leading + finite.index(best)
    assert torch.all(model.weight == float(stopper.best_epoch))  # restored on stopping


@pytest.mark.parametrize("start_from_epoch", [0, 2])
@pytest.mark.parametrize("patience", [0, 1, 2, 3, 5])
def test_an_all_nan_run_stops_after_patience_epochs(patience, start_from_epoch):
    # Each NaN epoch is an epoch without improvement; the first monitored one never stops.
    stopper = EarlyStopping(patience=patience, start_from_epoch=start_from_epoch)
    values = [1.0] * start_from_epoch + [math.nan] * 10
    assert stop_epoch(stopper, values) == start_from_epoch + max(patience, 2) - 1
    assert (stopper.best, stopper.best_epoch) == (math.inf, None)


def test_a_nan_at_the_first_monitored_epoch_never_stops_training():
    # Not only at epoch 0: after start_from_epoch, after a resume, or when validation runs
    # every few epochs. (Keras' own test, epoch > 0, only covers the first case.)
    stopper = EarlyStopping(patience=0, start_from_epoch=3)
    for epoch in range(3):
        assert not stopper.on_epoch_end(epoch, {"val_loss": 0.1})
    resumed = EarlyStopping(patience=0, start_from_epoch=3)
    resumed.load_state_dict(stopper.state_dict())
    assert stop_epoch(resumed, [0.1] * 3 + [math.nan, 1.0, 0.9, 0.95]) == 6
    assert (resumed.best, resumed.best_epoch) == (0.9, 5)

    stopper = EarlyStopping(patience=1)
    outcomes = [
        stopper.on_epoch_end(epoch, {"val_loss": value})
        for epoch, value in [(4, math.nan), (9, 1.0), (14, 0.8), (19, 0.9)]
    ]
    assert outcomes == [False, False, False, True]
    assert (stopper.best, stopper.best_epoch, stopper.stopped_epoch) == (0.8, 14, 19)


def test_min_delta_is_an_absolute_amount():
    stopper = EarlyStopping(min_delta=0.1, patience=1)
    # 0.95 is not 0.1 below 1.0 (wait 1, stop: patience 1); 0.85 would have been.
    assert stop_epoch(stopper, [1.0, 0.95, 0.85]) == 1
    stopper = EarlyStopping(min_delta=0.1, patience=2)
    assert stop_epoch(stopper, [1.0, 0.95, 0.85, 0.84, 0.80]) == 4
    assert (stopper.best, stopper.best_epoch) == (0.85, 2)


def test_max_mode_with_min_delta():
    stopper = EarlyStopping(monitor="val_accuracy", min_delta=0.01, patience=1)
    assert stopper.direction == "max"
    assert stop_epoch(stopper, [0.5, 0.6, 0.605, 0.7], monitor="val_accuracy") == 2
    assert stopper.best == 0.6


def test_baseline_keeps_wait_counting_until_beaten():
    # Epochs 0 and 1 improve on the best but not on the baseline 0.5: wait reaches 2 and
    # is not reset, and the first epoch that does not improve stops training.
    stopper = EarlyStopping(baseline=0.5, patience=2)
    assert stop_epoch(stopper, [0.9, 0.8, 0.85, 0.7]) == 2
    assert (stopper.best, stopper.best_epoch) == (0.8, 1)
    # Beating the baseline resets the counter like any improvement.
    stopper = EarlyStopping(baseline=0.5, patience=2)
    assert stop_epoch(stopper, [0.6, 0.4, 0.45, 0.45, 0.45]) == 3


def test_an_improving_epoch_never_stops_even_below_the_baseline():
    stopper = EarlyStopping(baseline=0.0, patience=1)
    assert stop_epoch(stopper, [5.0, 4.0, 3.0, 2.0, 1.0]) is None
    assert stopper.wait == 5


def test_epochs_before_start_from_epoch_are_ignored():
    stopper = EarlyStopping(patience=0, start_from_epoch=2)
    assert stop_epoch(stopper, [1.0, 2.0, 3.0, 4.0]) == 3
    assert (stopper.best, stopper.best_epoch) == (3.0, 2)


@pytest.mark.parametrize(
    ("monitor", "direction"),
    [
        ("val_loss", "min"),
        ("loss", "min"),
        ("val_accuracy", "max"),
        ("acc", "max"),
        ("val_sparse_categorical_accuracy", "max"),
        ("val_auc", "max"),
        ("f1_score", "max"),
        ("mean_squared_error", "min"),
        ("val_mae", "min"),
        ("val_iou_loss", "min"),
    ],
)
def test_auto_mode_reads_the_metric_name(monitor, direction):
    assert EarlyStopping(monitor=monitor).direction == direction


def test_auto_mode_refuses_an_unknown_name_and_explicit_mode_wins():
    with pytest.raises(
        ValueError,
        match=r"^The 'mode' parameter of EarlyStopping must be 'min' or 'max' for "
        r"monitor='throughput'",
    ):
        EarlyStopping(monitor="throughput")
    assert EarlyStopping(monitor="throughput", mode="max").direction == "max"
    assert EarlyStopping(monitor="val_accuracy", mode="min").direction == "min"


def set_weights(model, value):
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.fill_(value)


def test_restores_exactly_the_best_epochs_weights_when_stopping():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    stopper = EarlyStopping(patience=2, restore_best_weights=True)
    losses = [0.9, 0.5, 0.7, 0.6, 0.8]
    for epoch, loss in enumerate(losses):
        set_weights(model, float(epoch))  # the "training" of this epoch
        snapshot = {k: v.clone() for k, v in model.state_dict().items()}
        if epoch == 1:
            best_snapshot = snapshot
        if stopper.on_epoch_end(epoch, {"val_loss": loss}, model):
            break
    assert stopper.stopped_epoch == 3
    assert stopper.best_epoch == 1
    restored = model.state_dict()
    assert restored.keys() == best_snapshot.keys()
    for key, value in best_snapshot.items():  # weights and buffers (running statistics)
        assert torch.equal(restored[key], value), key


def test_on_train_end_restores_the_best_weights_without_a_stop():
    model = nn.Linear(2, 2)
    stopper = EarlyStopping(patience=5, restore_best_weights=True)
    for epoch, loss in enumerate([0.9, 0.3, 0.5]):
        set_weights(model, float(epoch))
        assert not stopper.on_epoch_end(epoch, {"val_loss": loss}, model)
    assert torch.all(model.weight == 2.0)
    stopper.on_train_end(model)
    assert torch.all(model.weight == 1.0)
    assert torch.all(model.bias == 1.0)


def test_without_any_improvement_the_first_monitored_epoch_is_the_best():
    model = nn.Linear(2, 2)
    stopper = EarlyStopping(patience=2, restore_best_weights=True, start_from_epoch=1)
    for epoch, loss in enumerate([0.1, math.nan, math.nan, math.nan]):
        set_weights(model, float(epoch))
        if stopper.on_epoch_end(epoch, {"val_loss": loss}, model):
            break
    assert stopper.stopped_epoch == 2
    assert stopper.best_epoch == 1
    assert torch.all(model.weight == 1.0)


def test_best_weights_are_copies_not_references():
    model = nn.Linear(2, 2)
    stopper = EarlyStopping(restore_best_weights=True)
    set_weights(model, 1.0)
    stopper.on_epoch_end(0, {"val_loss": 1.0}, model)
    set_weights(model, 7.0)  # in place, as an optimizer step
    assert torch.all(stopper.best_weights["weight"] == 1.0)


def test_a_resumed_run_continues_counting():
    values = [1.0, 0.8, 0.9, 0.7, 0.75, 0.76, 0.74, 0.9]
    uninterrupted = EarlyStopping(patience=3, restore_best_weights=True)
    model = nn.Linear(2, 1)
    expected = stop_epoch(uninterrupted, values, model=model)
    assert expected == 6

    first = EarlyStopping(patience=3, restore_best_weights=True)
    for epoch, value in enumerate(values[:5]):
        set_weights(model, float(epoch))
        assert not first.on_epoch_end(epoch, {"val_loss": value}, model)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = EarlyStopping(patience=3, restore_best_weights=True)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert (resumed.best, resumed.best_epoch, resumed.wait) == (0.7, 3, 1)
    stopped = None
    for epoch in range(5, len(values)):
        set_weights(model, float(epoch))
        if resumed.on_epoch_end(epoch, {"val_loss": values[epoch]}, model):
            stopped = epoch
            break
    assert stopped == expected
    assert torch.all(model.weight == 3.0)  # the best epoch's weights, saved before the resume


def test_metric_values_may_be_tensors():
    stopper = EarlyStopping(patience=0)
    loss = torch.tensor(1.0, requires_grad=True) * 2
    stopper.on_epoch_end(0, {"val_loss": loss})
    assert stopper.best == 2.0


@pytest.mark.parametrize(
    ("value", "got"),
    [
        (torch.tensor([0.5, 0.7]), "a tensor of shape (2,)"),  # per-sample losses, not averaged
        (None, "None"),
        ("0.5", "'0.5'"),
    ],
)
def test_a_metric_that_is_not_one_number_is_refused_clearly(value, got):
    # Before, torch's "only one element tensors can be converted to Python scalars" or
    # float()'s TypeError surfaced, without saying which metric or what was expected.
    stopper = EarlyStopping(patience=0)
    message = (
        "The 'metrics' parameter of EarlyStopping.on_epoch_end must map 'val_loss' to a "
        f"number (a float or a one-element tensor). Got {got} instead."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        stopper.on_epoch_end(0, {"val_loss": value})
    assert (stopper.wait, stopper.best_epoch) == (0, None)


def test_a_missing_metric_is_an_error_that_lists_the_available_ones():
    stopper = EarlyStopping(monitor="val_loss")
    with pytest.raises(
        ValueError,
        match=r"'val_loss', which is not among the metrics passed to on_epoch_end \(available: "
        r"'loss', 'accuracy'\)",
    ):
        stopper.on_epoch_end(0, {"loss": 1.0, "accuracy": 0.5})


def test_restore_best_weights_needs_the_model():
    stopper = EarlyStopping(restore_best_weights=True)
    with pytest.raises(TypeError, match="must be the torch.nn.Module being trained"):
        stopper.on_epoch_end(0, {"val_loss": 1.0})


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"patience": -1},
            "The 'patience' parameter of EarlyStopping must be an int >= 0. Got -1 instead.",
        ),
        (
            {"mode": "minimum"},
            "The 'mode' parameter of EarlyStopping must be one of 'auto', 'min', 'max'. Got "
            "'minimum' instead.",
        ),
        (
            {"min_delta": -0.1},
            "The 'min_delta' parameter of EarlyStopping must be a finite float >= 0. Got -0.1 instead.",
        ),
        (
            {"baseline": "low"},
            "The 'baseline' parameter of EarlyStopping must be a finite float or None. Got "
            "'low' instead.",
        ),
        (
            {"restore_best_weights": 1},
            "The 'restore_best_weights' parameter of EarlyStopping must be a bool. Got 1 instead.",
        ),
    ],
)
def test_bad_arguments_raise_in_the_one_format(arguments, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        EarlyStopping(**arguments)


def test_load_state_dict_checks_its_input():
    with pytest.raises(ValueError, match=r"Got one without \['best_weights', 'wait'\] instead"):
        EarlyStopping().load_state_dict({"best": 1.0, "best_epoch": 0, "stopped_epoch": None})
